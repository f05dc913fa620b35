//! One entry file: its format on disk, its header, temporary names.

use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use super::dir::{FileId, Opened, Shard};

pub(super) const MAGIC: &[u8; 4] = b"HCCD";
pub(super) const VERSION: u8 = 1;
/// A streamed write's file (`write_stream.rs`): the blob's prefix is stored after its body, and
/// the header says how long it is (a `u32` after the CRC).
pub(super) const VERSION_STREAMED: u8 = 2;
/// magic, version, expires (u64 ms), key length (u16)
pub(super) const FIXED: usize = 4 + 1 + 8 + 2;
pub(super) const EXT: &str = "hcc";
pub(super) const TMP_PREFIX: &str = ".tmp-";

/// An entry file found by walking the directory.
pub(super) struct FileInfo {
    pub(super) shard: Arc<Shard>,
    pub(super) name: String,
    pub(super) len: u64,
    pub(super) modified: SystemTime,
    pub(super) id: FileId,
}

/// A name for a temporary file no other writer (thread, process, container) picks:
/// `.tmp-NAMESPACE-PID-COUNTER-RANDOM`, so that `cleanup` can tell a dead writer's file.
pub(super) fn tmp_name(namespace: u64, counter: u64) -> String {
    let random = crate::clock::unique_u64();
    format!(
        "{TMP_PREFIX}{namespace}-{}-{counter}-{random:016x}",
        std::process::id()
    )
}

/// The writer of a temporary file named by [`tmp_name`]; `None` for other names (older
/// releases wrote `.tmp-PID-COUNTER-RANDOM`).
pub(super) fn tmp_writer(name: &str) -> Option<super::record::Writer> {
    let mut parts = name.strip_prefix(TMP_PREFIX)?.split('-');
    let namespace = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let (_counter, _random, None) = (parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    Some(super::record::Writer { namespace, pid })
}

/// What a file header says.
pub(super) struct Header {
    pub(super) expires_ms: u64,
    pub(super) key: String,
    /// Where the file's blob bytes start.
    pub(super) blob_at: usize,
    /// The blob's length and CRC-32 (of its bytes in order: prefix first).
    pub(super) blob_len: u64,
    pub(super) crc: u32,
    /// In a streamed write's file, the length of the blob's prefix, stored after the body.
    pub(super) prefix_len: Option<u32>,
}

impl Header {
    /// Where the blob's bytes are in a file of `file_len` bytes, in the blob's order: offset
    /// and length of each of two ranges (the second empty in a whole write's file); `None`
    /// when the lengths the header gives do not fit the file.
    pub(super) fn ranges(&self, file_len: u64) -> Option<[(u64, u64); 2]> {
        let at = self.blob_at as u64;
        if file_len.checked_sub(at)? != self.blob_len {
            return None;
        }
        Some(match self.prefix_len {
            None => [(at, self.blob_len), (file_len, 0)],
            Some(prefix) => {
                let prefix = u64::from(prefix);
                let body = self.blob_len.checked_sub(prefix)?;
                [(at + body, prefix), (at, body)]
            }
        })
    }
}

/// The bytes before the blob: magic, version, expiry, the key (length first), the blob's length
/// and its CRC-32.
pub(super) fn encode_header(
    expires_ms: u64,
    key_len: u16,
    key: &[u8],
    blob: &[bytes::Bytes],
) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    for part in blob {
        crc.update(part);
        len += part.len() as u64;
    }
    let mut header = Vec::with_capacity(FIXED + key.len() + 12);
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.extend_from_slice(&expires_ms.to_be_bytes());
    header.extend_from_slice(&key_len.to_be_bytes());
    header.extend_from_slice(key);
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&crc.finalize().to_be_bytes());
    header
}

pub(super) fn parse_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < FIXED || &bytes[..4] != MAGIC {
        return None;
    }
    let streamed = match bytes[4] {
        VERSION => false,
        VERSION_STREAMED => true,
        _ => return None,
    };
    let expires_ms = u64::from_be_bytes(bytes[5..13].try_into().ok()?);
    let key_len = usize::from(u16::from_be_bytes(bytes[13..15].try_into().ok()?));
    let key = std::str::from_utf8(bytes.get(FIXED..FIXED + key_len)?).ok()?;
    let lengths_at = FIXED + key_len;
    let blob_len = u64::from_be_bytes(bytes.get(lengths_at..lengths_at + 8)?.try_into().ok()?);
    let crc = u32::from_be_bytes(
        bytes
            .get(lengths_at + 8..lengths_at + 12)?
            .try_into()
            .ok()?,
    );
    let (prefix_len, blob_at) = if streamed {
        let at = lengths_at + 12;
        let prefix_len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        (Some(prefix_len), at + 4)
    } else {
        (None, lengths_at + 12)
    };
    Some(Header {
        expires_ms,
        key: key.to_owned(),
        blob_at,
        blob_len,
        crc,
        prefix_len,
    })
}

/// The header of the entry file `name` of `shard`, reading no more of it than the header.
pub(super) fn read_header(shard: &Shard, name: &str) -> Option<Header> {
    let Ok(Opened::File(mut file, _)) = shard.open_entry(name) else {
        return None;
    };
    let mut buf = vec![0u8; FIXED + usize::from(u16::MAX) + 16];
    let mut filled = 0;
    while filled < FIXED {
        let n = file.read(&mut buf[filled..]).ok()?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    if filled >= FIXED {
        let key_len = usize::from(u16::from_be_bytes([buf[13], buf[14]]));
        while filled < FIXED + key_len + 16 {
            let n = file.read(&mut buf[filled..]).ok()?;
            if n == 0 {
                break;
            }
            filled += n;
        }
    }
    parse_header(&buf[..filled])
}
