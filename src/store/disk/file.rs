//! One entry file: its format on disk, opening it safely, and telling files apart.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub(super) const MAGIC: &[u8; 4] = b"HCCD";
pub(super) const VERSION: u8 = 1;
/// magic, version, expires (u64 ms), key length (u16)
pub(super) const FIXED: usize = 4 + 1 + 8 + 2;
pub(super) const EXT: &str = "hcc";
pub(super) const TMP_PREFIX: &str = ".tmp-";

/// An entry file found by walking the directory.
pub(super) struct FileInfo {
    pub(super) path: PathBuf,
    pub(super) len: u64,
    pub(super) modified: SystemTime,
    pub(super) id: FileId,
}

/// Which file a name pointed at: compared before removing, so that a file another process
/// renamed into place meanwhile is not removed in its stead.
#[derive(PartialEq, Eq)]
pub(super) struct FileId {
    #[cfg(unix)]
    inode: (u64, u64),
    pub(super) len: u64,
    modified: Option<SystemTime>,
}

impl FileId {
    pub(super) fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            #[cfg(unix)]
            inode: (meta.dev(), meta.ino()),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }

    /// Whether `path` still names this file.
    pub(super) fn is_at(&self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|now| Self::of(&now) == *self)
    }

    /// Removes the file at `path` if it is still this one (a narrow window remains between the
    /// check and the removal; the worst outcome is one lost entry). Whether it was removed.
    pub(super) fn remove_at(&self, path: &Path) -> bool {
        self.is_at(path) && fs::remove_file(path).is_ok()
    }
}

/// What is under an entry's name.
pub(super) enum Opened {
    Absent,
    /// Not a regular file (a symbolic link, a FIFO, a device, a directory): never read.
    Unusable(FileId),
    File(fs::File, fs::Metadata),
}

/// Opens an entry file for reading without following a symbolic link or blocking on a FIFO
/// (on Unix: `O_NOFOLLOW | O_NONBLOCK`; elsewhere a link is followed).
pub(super) fn open_entry(path: &Path) -> io::Result<Opened> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    match options.open(path) {
        Ok(file) => {
            let meta = file.metadata()?;
            Ok(if meta.is_file() {
                Opened::File(file, meta)
            } else {
                Opened::Unusable(FileId::of(&meta))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Opened::Absent),
        // `O_NOFOLLOW` on a link fails with an errno that differs between systems (ELOOP on
        // Linux, EMLINK on FreeBSD, EFTYPE on NetBSD); whatever it is, a name that is not a
        // regular file is unusable.
        Err(e) => match fs::symlink_metadata(path) {
            Ok(meta) if !meta.is_file() => Ok(Opened::Unusable(FileId::of(&meta))),
            _ => Err(e),
        },
    }
}

/// A name for a temporary file no other writer (thread, process, container) picks.
pub(super) fn tmp_name(counter: u64) -> String {
    let random = crate::clock::unique_u64();
    format!("{TMP_PREFIX}{}-{counter}-{random:016x}", std::process::id())
}

/// What a file header says.
pub(super) struct Header {
    pub(super) expires_ms: u64,
    pub(super) key: String,
    pub(super) blob_at: usize,
}

/// The bytes before the blob: magic, version, expiry, the key (length first), the blob's length
/// and its CRC-32.
pub(super) fn encode_header(expires_ms: u64, key_len: u16, key: &[u8], blob: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(FIXED + key.len() + 12);
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.extend_from_slice(&expires_ms.to_be_bytes());
    header.extend_from_slice(&key_len.to_be_bytes());
    header.extend_from_slice(key);
    header.extend_from_slice(&(blob.len() as u64).to_be_bytes());
    header.extend_from_slice(&crc32fast::hash(blob).to_be_bytes());
    header
}

pub(super) fn parse_header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < FIXED || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    let expires_ms = u64::from_be_bytes(bytes[5..13].try_into().ok()?);
    let key_len = usize::from(u16::from_be_bytes(bytes[13..15].try_into().ok()?));
    let key = std::str::from_utf8(bytes.get(FIXED..FIXED + key_len)?).ok()?;
    Some(Header {
        expires_ms,
        key: key.to_owned(),
        blob_at: FIXED + key_len + 8 + 4,
    })
}

/// The header of the entry file at `path`, reading no more of it than the header.
pub(super) fn read_header(path: &Path) -> Option<Header> {
    let Ok(Opened::File(mut file, _)) = open_entry(path) else {
        return None;
    };
    let mut buf = vec![0u8; FIXED + usize::from(u16::MAX)];
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
        while filled < FIXED + key_len {
            let n = file.read(&mut buf[filled..]).ok()?;
            if n == 0 {
                break;
            }
            filled += n;
        }
    }
    parse_header(&buf[..filled])
}
