//! Reading a large entry file as the cache needs it: the header first, then the blob in blocks of
//! 1 MiB, one block read ahead on tokio's blocking pool while the cache verifies the previous
//! one. A hit of any size holds two blocks of the file at a time, not the file.
//!
//! A streamed write's file holds the blob's prefix after its body (`file.rs`): the prefix is read
//! first, then the body, each from its own offset.
//!
//! The file's CRC-32 (of the whole blob, in its header) is computed along, on the blocking
//! thread, and checked at the end: a mismatch ends the stream with an error after the last block.
//! The cache's envelope has verified every segment by then (and speaks first), so this only
//! matters to blobs that are not the cache's.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;
use futures_util::stream;

use crate::store::BlobStream;

/// Files whose blob is larger than this are streamed; smaller ones are read whole.
pub(super) const STREAM_ABOVE: u64 = 1 << 20;
/// What one read takes from the file.
const BLOCK: usize = 1 << 20;

/// An entry file whose header was checked (key, expiry, length), and where its blob is.
pub(super) struct Positioned {
    pub(super) file: fs::File,
    /// Offset and length of the blob's bytes in the file, in the blob's order.
    pub(super) ranges: [(u64, u64); 2],
    pub(super) blob_len: u64,
    pub(super) crc: u32,
}

/// What is left to read: the file's ranges, in order.
type Ranges = [(u64, u64); 2];

type Read1 = io::Result<(fs::File, Ranges, Vec<u8>, crc32fast::Hasher)>;

/// Reads up to `BLOCK` bytes of the first range not yet read (fewer only at its end), and adds
/// them to `crc`.
fn read_block(mut file: fs::File, mut ranges: Ranges, mut crc: crc32fast::Hasher) -> Read1 {
    let Some(range) = ranges.iter_mut().find(|r| r.1 > 0) else {
        return Ok((file, ranges, Vec::new(), crc));
    };
    let want = usize::try_from(range.1).unwrap_or(BLOCK).min(BLOCK);
    file.seek(SeekFrom::Start(range.0))?;
    range.0 += want as u64;
    range.1 -= want as u64;
    let mut buf = Vec::with_capacity(want);
    // `read_to_end` fills the spare capacity without zeroing it first.
    let filled = (&file).take(want as u64).read_to_end(&mut buf)?;
    crc.update(&buf);
    if filled < want {
        // Entries are replaced by rename, never truncated in place: a shorter file is not one
        // this store wrote whole.
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "entry file shorter than its header says",
        ));
    }
    Ok((file, ranges, buf, crc))
}

fn spawn_read(
    file: fs::File,
    ranges: Ranges,
    crc: crc32fast::Hasher,
) -> Option<tokio::task::JoinHandle<Read1>> {
    let handle = crate::rt::handle()?;
    Some(handle.spawn_blocking(move || read_block(file, ranges, crc)))
}

struct State {
    next: Option<tokio::task::JoinHandle<Read1>>,
    left: u64,
    want_crc: u32,
    done: bool,
    /// The whole blob was read and does not match its checksum: said after the last block (so
    /// that the cache's own verification of that block speaks first).
    mismatch: bool,
}

/// The blob of `at` as a stream, one block read ahead.
pub(super) fn blob_stream(at: Positioned) -> BlobStream {
    let Positioned {
        file,
        ranges,
        blob_len,
        crc,
    } = at;
    let state = State {
        next: spawn_read(file, ranges, crc32fast::Hasher::new()),
        left: blob_len,
        want_crc: crc,
        done: blob_len == 0,
        mismatch: false,
    };
    let s = stream::unfold(state, |mut st| async move {
        if st.mismatch {
            st.mismatch = false;
            return Some((
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "entry file does not match its checksum",
                )),
                st,
            ));
        }
        if st.done {
            return None;
        }
        let Some(next) = st.next.take() else {
            st.done = true;
            return Some((Err(io::Error::other("DiskStore needs a tokio runtime")), st));
        };
        let read = match next.await {
            Ok(read) => read,
            Err(e) => Err(io::Error::other(format!("disk task failed: {e}"))),
        };
        let (file, ranges, buf, crc) = match read {
            Ok(read) => read,
            Err(e) => {
                st.done = true;
                return Some((Err(e), st));
            }
        };
        if buf.is_empty() {
            st.done = true;
            return Some((
                Err(io::Error::other("entry file ranges shorter than its blob")),
                st,
            ));
        }
        st.left = st.left.saturating_sub(buf.len() as u64);
        if st.left > 0 {
            // The next block is read while this one is verified.
            st.next = spawn_read(file, ranges, crc);
        } else {
            st.done = true;
            st.mismatch = crc.finalize() != st.want_crc;
        }
        Some((Ok(Bytes::from(buf)), st))
    });
    BlobStream::new(blob_len, s)
}
