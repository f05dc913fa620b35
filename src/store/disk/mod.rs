//! A store on the local file system: one file per entry, safe across processes.
//!
//! - `builder`: the settings a store is opened with.
//! - `dir`: the shard directories, opened without following links, and every file operation
//!   relative to them (on Unix); which file a name pointed at.
//! - `file`: one entry file: its on-disk format, its header, temporary names.
//! - `sweep`: walks over the whole directory: listing, eviction, clearing and cleanup.
//! - `record`: the directory's size record, shared by the processes that use it; who wrote a
//!   temporary file.

mod builder;
pub use builder::DiskStoreBuilder;
mod dir;
mod file;
mod record;
mod stream;
mod sweep;
mod write_stream;

use std::fmt;
use std::fs;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ring::digest;

use self::dir::{create_shard, open_shard, FileId, Opened, Shard};
use self::file::{encode_header, parse_header, tmp_name, EXT, FIXED};
use self::record::SizeRecord;
use super::{BlobParts, StoreRequest, StoreResponse};
use crate::clock::Clock;
use crate::CacheKey;

/// The largest entry file written or read (4 GiB; with a byte bound, also no more than 90% of
/// it): a larger file under an entry's name is removed unread.
const MAX_ENTRY_FILE: u64 = 4 << 30;

/// A store that keeps one file per entry under a directory.
///
/// - **Crash-safe writes.** A blob is written to a temporary file in the same directory,
///   `fsync`ed, then renamed over the entry's name: a crash leaves either the old entry or the new
///   one, never half of one under a real name. [`DiskStoreBuilder::sync`]`(false)` skips the
///   `fsync` (faster commits; after a machine crash an entry may read as a miss instead).
/// - **Shared by processes.** Several processes (or several `DiskStore`s) may use one directory:
///   renames are atomic, readers see whole files. Each file carries its key, its expiry and a
///   CRC-32 of the blob, so a torn or garbled file reads as absent and is removed.
/// - **Sharded** by the SHA-256 of the key into 256 sub-directories.
/// - **Optional byte bound** ([`DiskStoreBuilder::max_bytes`]): when the files exceed it, the
///   least recently used ones (by modification time, which writes and reads set from the store's
///   clock) are removed until the total is under 90% of the bound. An entry larger than 90% of
///   the bound is not stored (the key's previous entry is removed), so that one large response
///   does not empty the cache.
/// - **Only regular files are read** (on Unix): a symbolic link, a FIFO or a device under an
///   entry's name (in a directory others can write) is removed like a garbled file, never
///   followed or read.
/// - **Nothing below the directory is followed** (on Unix): shard directories are opened with
///   `O_DIRECTORY | O_NOFOLLOW` and every file operation is relative to them (`openat`,
///   `renameat`, `unlinkat`, `fstatat`), so a shard replaced by a symbolic link is never
///   written, read, listed, cleaned up or cleared through; reads answer a miss, and the next
///   write into that shard replaces the link (not its target) by a directory. The directory
///   given to the builder may itself be a link (`/var/cache` → `/data`): it is opened by its
///   path, as configured. A file larger than any entry the store writes (90% of the bound, and
///   at most 4 GiB) is removed unread; such entries are not stored either. On other
///   systems paths are used as they are (a linked entry or shard is followed), and reads may
///   not refresh recency.
/// - **Bounded reads**: a lookup's `max_len` is checked against the file's length before
///   anything is read; a larger entry is a miss, left in place (it may belong to a cache with
///   a larger bound sharing the directory).
/// - **Expiry**: expired files are removed when read, and by [`DiskStore::cleanup`].
/// - **Large entries are written as the body passes** ([`StoreRequest::PutStream`]), each on a
///   thread of the blocking pool; at most [`DiskStoreBuilder::max_streamed_writes`] at once.
///
/// File operations run on tokio's blocking pool, so the store must be used inside a tokio
/// runtime (outside one, every operation fails, which the cache treats as a miss).
///
/// # Clone
///
/// Cheap; clones share the directory, the settings and the size estimate.
///
/// # Example
///
/// ```no_run
/// use hyper_client_cache::{CacheLayer, DiskStore};
///
/// # fn main() -> std::io::Result<()> {
/// let store = DiskStore::builder("/var/cache/my-service/http")
///     .max_bytes(512 * 1024 * 1024)
///     .open()?;
/// let layer = CacheLayer::new(store);
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DiskStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    max_bytes: Option<u64>,
    clock: Arc<dyn Clock>,
    /// Bytes of entry files, shared by every process using the directory (`record.rs`);
    /// re-measured by every eviction pass.
    size: SizeRecord,
    /// This process's pid namespace, written into temporary names (`cleanup` removes those of
    /// writers that are gone).
    namespace: u64,
    tmp_counter: AtomicU64,
    /// `fsync` a written file before it gets its name (`DiskStoreBuilder::sync`).
    sync: bool,
    /// Streamed writes in progress, each on a thread of the blocking pool, and their cap
    /// (`DiskStoreBuilder::max_streamed_writes`).
    streams: AtomicUsize,
    max_streams: usize,
    /// One eviction pass at a time in this process: concurrent passes would each remove the
    /// whole excess.
    evicting: AtomicBool,
}

impl DiskStore {
    /// Settings for a store in `dir`.
    pub fn builder(dir: impl Into<PathBuf>) -> DiskStoreBuilder {
        DiskStoreBuilder::new(dir.into())
    }

    /// A store in `dir` with default settings (no byte bound, system clock).
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or read.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        Self::builder(dir).open()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The bytes of entry files: the directory's size record, which every process using the
    /// directory updates (on Unix; elsewhere, what this process measured and wrote).
    pub fn size_bytes(&self) -> u64 {
        self.inner.size.get()
    }

    /// Removes expired entries, unreadable files and temporary files left by crashed writers;
    /// returns how many files were removed.
    ///
    /// # Errors
    ///
    /// When the directory cannot be read, or outside a tokio runtime.
    pub async fn cleanup(&self) -> io::Result<usize> {
        let inner = self.inner.clone();
        blocking(move || inner.cleanup()).await
    }
}

impl fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.inner.dir)
            .field("max_bytes", &self.inner.max_bytes)
            .field("size_bytes", &self.size_bytes())
            .field(
                "size_shared_with_other_processes",
                &self.inner.size.shared(),
            )
            .finish()
    }
}

/// Runs file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let handle =
        crate::rt::handle().ok_or_else(|| io::Error::other("DiskStore needs a tokio runtime"))?;
    handle
        .spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("disk task failed: {e}")))?
}

/// What a read found.
enum Found {
    Whole(Bytes),
    /// A streamed write's file, read whole: its prefix and body.
    Parts(BlobParts),
    Stream(stream::Positioned),
}

/// Writes `parts` in order, with vectored writes.
fn write_parts(file: &mut fs::File, parts: &[Bytes]) -> io::Result<()> {
    for group in parts.chunks(64) {
        let mut slices: Vec<io::IoSlice<'_>> = group.iter().map(|p| io::IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = file.write_vectored(slices)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut slices, n);
        }
    }
    Ok(())
}

/// The length of the blob in a whole entry file of `file_len` bytes for `key` (what the file
/// holds besides its header).
fn blob_len_of(file_len: u64, key: &CacheKey) -> u64 {
    file_len.saturating_sub((FIXED + key.as_str().len() + 12) as u64)
}

/// What an eviction pass brings the total down to: 90% of the bound.
fn target(max: u64) -> u64 {
    max / 10 * 9
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Inner {
    /// The shard directory and the file name of `key`'s entry: `ab`, `ab….hcc`.
    fn name_for(key: &CacheKey) -> (String, String) {
        let digest = digest::digest(&digest::SHA256, key.as_str().as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        (hex[..2].to_owned(), format!("{hex}.{EXT}"))
    }

    /// The largest entry file this store writes or reads: 90% of the bound, and never more
    /// than [`MAX_ENTRY_FILE`].
    fn entry_limit(&self) -> u64 {
        self.max_bytes
            .map_or(MAX_ENTRY_FILE, |max| target(max).min(MAX_ENTRY_FILE))
    }

    fn expired(&self, expires_ms: u64) -> bool {
        expires_ms != 0 && expires_ms <= millis(self.clock.now())
    }

    /// Reads and checks an entry file: whole when small, else its header, the rest to be
    /// streamed. `Ok(None)`: absent, expired or unreadable (and then removed), or holding a blob
    /// larger than `max_len` (left in place, unread).
    fn read(&self, key: &CacheKey, max_len: usize) -> io::Result<Option<Found>> {
        let (shard, name) = Self::name_for(key);
        // Absent, or not a directory (a link): nothing of this store's is there.
        let Some(shard) = open_shard(&self.dir, &shard)? else {
            return Ok(None);
        };
        let path = shard.path_of(&name);
        let (file, meta) = match shard.open_entry(&name)? {
            Opened::Absent => return Ok(None),
            Opened::Unusable(id) => {
                tracing::warn!(path = %path.display(), "not a regular file under an entry's name; removed");
                self.remove_if_same(&shard, &name, &id);
                return Ok(None);
            }
            Opened::File(file, meta) => (file, meta),
        };
        if meta.len() > self.entry_limit() {
            // Larger than any entry this store writes (a planted or sparse file): never read
            // into memory.
            tracing::warn!(path = %path.display(), len = meta.len(), "entry file larger than any entry; removed");
            // Not counted in the size estimate by this process's writes: removed without
            // lowering it (the next eviction pass re-measures).
            shard.remove_if(&name, &FileId::of(&meta));
            return Ok(None);
        }
        let max_len = u64::try_from(max_len).unwrap_or(u64::MAX);
        // A streamed write's header is 4 bytes longer: the lower of the two lengths here, the
        // exact one once the header is read.
        let blob_len = blob_len_of(meta.len(), key).saturating_sub(4);
        if blob_len > max_len {
            // Over this request's bound, but within what the store writes: the entry of a
            // cache with a larger bound sharing the directory, perhaps. Not read, not removed.
            tracing::debug!(path = %path.display(), len = meta.len(), max_len, "entry file over the lookup's bound; not read");
            return Ok(None);
        }
        if blob_len > stream::STREAM_ABOVE {
            // Large: the header now, the blob as the cache reads it.
            let header_len = FIXED + key.as_str().len() + 16;
            let mut header = vec![0u8; header_len];
            let checked = (&file).read_exact(&mut header).ok().and_then(|()| {
                let parsed = parse_header(&header)?;
                if parsed.key != key.as_str() || self.expired(parsed.expires_ms) {
                    return None;
                }
                Some((parsed.ranges(meta.len())?, parsed.blob_len, parsed.crc))
            });
            let Some((ranges, blob_len, crc)) = checked else {
                self.remove_if_same(&shard, &name, &FileId::of(&meta));
                return Ok(None);
            };
            if blob_len > max_len {
                tracing::debug!(path = %path.display(), len = meta.len(), max_len, "entry file over the lookup's bound; not read");
                return Ok(None);
            }
            if self.max_bytes.is_some() {
                let _ = file.set_modified(self.clock.now());
            }
            return Ok(Some(Found::Stream(stream::Positioned {
                file,
                ranges,
                blob_len,
                crc,
            })));
        }
        // No more than the file held when opened (entries are replaced by rename, not grown).
        // An allocation that fails is an error (a miss), never an abort.
        let mut bytes = Vec::new();
        let len = usize::try_from(meta.len()).map_err(io::Error::other)?;
        bytes.try_reserve_exact(len).map_err(io::Error::other)?;
        (&file).take(meta.len()).read_to_end(&mut bytes)?;
        let Some(blob) = self.check(key, &bytes) else {
            self.remove_if_same(&shard, &name, &FileId::of(&meta));
            return Ok(None);
        };
        if (blob[0].len() + blob[1].len()) as u64 > max_len {
            tracing::debug!(path = %path.display(), len = meta.len(), max_len, "entry file over the lookup's bound; not read");
            return Ok(None);
        }
        if self.max_bytes.is_some() {
            // Recency for LRU eviction; failing to record it is harmless.
            let _ = file.set_modified(self.clock.now());
        }
        let bytes = Bytes::from(bytes);
        Ok(Some(match blob {
            [whole, rest] if rest.is_empty() => Found::Whole(bytes.slice(whole)),
            [prefix, body] => Found::Parts(BlobParts::from(vec![
                bytes.slice(prefix),
                bytes.slice(body),
            ])),
        }))
    }

    /// The blob's ranges in a file's bytes (in the blob's order: see `Header::ranges`), if the
    /// file is whole, for this key and not expired.
    fn check(&self, key: &CacheKey, bytes: &[u8]) -> Option<[std::ops::Range<usize>; 2]> {
        let header = parse_header(bytes)?;
        if header.key != key.as_str() || self.expired(header.expires_ms) {
            return None;
        }
        let ranges = header.ranges(bytes.len() as u64)?.map(|(at, len)| {
            let at = at as usize;
            at..at + len as usize
        });
        let mut crc = crc32fast::Hasher::new();
        for r in &ranges {
            crc.update(bytes.get(r.clone())?);
        }
        (crc.finalize() == header.crc).then_some(ranges)
    }

    /// Removes `name` if it is still the file `id` describes, and lowers the size estimate by
    /// its length.
    fn remove_if_same(&self, shard: &Shard, name: &str, id: &FileId) {
        if shard.remove_if(name, id) {
            self.shrink(id.len);
        }
    }

    /// Removes `key`'s entry file, whatever it holds; absent (or a shard that is not a
    /// directory) is fine.
    fn remove_key(&self, key: &CacheKey) -> io::Result<()> {
        let (shard, name) = Self::name_for(key);
        match open_shard(&self.dir, &shard)? {
            Some(shard) => self.remove_entry(&shard, &name),
            None => Ok(()),
        }
    }

    /// Removes the entry file `name`, whatever it holds; absent is fine.
    fn remove_entry(&self, shard: &Shard, name: &str) -> io::Result<()> {
        let len = shard.stat(name).ok().flatten().map_or(0, |id| id.len);
        match shard.remove(name) {
            Ok(()) => {
                self.shrink(len);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A write (or, with a zero TTL, a removal).
    fn put(
        &self,
        key: &CacheKey,
        blob: &BlobParts,
        ttl: Option<Duration>,
    ) -> io::Result<StoreResponse> {
        Ok(if ttl == Some(Duration::ZERO) {
            self.remove_key(key)?;
            StoreResponse::Done
        } else if self.write(key, blob, ttl)? {
            StoreResponse::Done
        } else {
            StoreResponse::NotStored
        })
    }

    fn shrink(&self, by: u64) {
        // Never wraps below zero, whatever runs concurrently.
        self.size.change(0, by);
    }

    /// The expiry written in a file for `ttl` (0: none).
    fn expires_ms(&self, ttl: Option<Duration>) -> u64 {
        match ttl {
            None => 0,
            Some(ttl) => self
                .clock
                .now()
                .checked_add(ttl)
                .map_or(u64::MAX, millis)
                .max(1),
        }
    }

    /// Writes the entry; `false` when it was refused (larger than any entry this store keeps).
    fn write(&self, key: &CacheKey, blob: &BlobParts, ttl: Option<Duration>) -> io::Result<bool> {
        let (shard, name) = Self::name_for(key);
        let shard = create_shard(&self.dir, &shard)?;
        let key_bytes = key.as_str().as_bytes();
        let key_len = u16::try_from(key_bytes.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "key too long"))?;
        let expires_ms = self.expires_ms(ttl);
        let new = (FIXED + key_bytes.len() + 12 + blob.len()) as u64;
        if new > self.entry_limit() {
            // With a bound, storing it would evict everything else, then itself. The key's
            // previous entry is an older response: not kept either.
            tracing::debug!(
                size = new,
                limit = self.entry_limit(),
                "entry larger than the disk store's entry limit; not stored"
            );
            return self.remove_entry(&shard, &name).map(|()| false);
        }
        let tmp = tmp_name(
            self.namespace,
            self.tmp_counter.fetch_add(1, Ordering::Relaxed),
        );
        let written = (|| -> io::Result<fs::File> {
            let mut file = shard.create_new(&tmp)?;
            file.write_all(&encode_header(expires_ms, key_len, key_bytes, blob.parts()))?;
            // The parts as they are (the origin's chunks): no copy into one buffer.
            write_parts(&mut file, blob.parts())?;
            Ok(file)
        })();
        match written {
            Ok(file) => self.install(&shard, &tmp, &name, &file, new)?,
            Err(e) => {
                let _ = shard.remove(&tmp);
                return Err(e);
            }
        }
        Ok(true)
    }
}

type DiskFuture = Pin<Box<dyn Future<Output = io::Result<StoreResponse>> + Send + 'static>>;

impl tower::Service<StoreRequest> for DiskStore {
    type Response = StoreResponse;
    type Error = io::Error;
    type Future = DiskFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: StoreRequest) -> DiskFuture {
        let inner = self.inner.clone();
        if let StoreRequest::PutStream { key, ttl, .. } = req {
            return write_stream::put_stream(inner, key, ttl);
        }
        Box::pin(blocking(move || {
            Ok(match req {
                StoreRequest::Get { key, max_len } => match inner.read(&key, max_len)? {
                    None => StoreResponse::Blob(None),
                    Some(Found::Whole(blob)) => StoreResponse::Blob(Some(blob)),
                    Some(Found::Parts(parts)) => StoreResponse::Parts(parts),
                    Some(Found::Stream(at)) => StoreResponse::Stream(stream::blob_stream(at)),
                },
                // No tag index: a purge by tag reads the entries' own (signed) tags.
                StoreRequest::Put { key, blob, ttl }
                | StoreRequest::PutTagged { key, blob, ttl, .. } => {
                    inner.put(&key, &BlobParts::from(blob), ttl)?
                }
                StoreRequest::PutParts {
                    key, parts, ttl, ..
                } => inner.put(&key, &parts, ttl)?,
                StoreRequest::Delete { key } => {
                    inner.remove_key(&key)?;
                    StoreResponse::Done
                }
                StoreRequest::Keys => StoreResponse::Keys(inner.keys()?),
                // One walk of the shards lists everything at once (see `keys`).
                StoreRequest::KeysPage { .. } | StoreRequest::PurgeTag { .. } => {
                    StoreResponse::Unsupported
                }
                // Answered above, without the blocking pool.
                StoreRequest::PutStream { .. } => StoreResponse::Unsupported,
                StoreRequest::Clear => {
                    inner.clear()?;
                    StoreResponse::Done
                }
            })
        }))
    }
}
