//! The settings a [`DiskStore`] is opened with.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use super::record::{self, SizeRecord};
use super::{DiskStore, Inner};
use crate::clock::{Clock, SystemClock};

/// Streamed writes in progress at once, by default (`DiskStoreBuilder::max_streamed_writes`).
const DEFAULT_MAX_STREAMS: usize = 16;

/// Settings for a [`DiskStore`].
#[must_use]
pub struct DiskStoreBuilder {
    dir: PathBuf,
    max_bytes: Option<u64>,
    clock: Arc<dyn Clock>,
    sync: bool,
    max_streams: usize,
}

impl DiskStoreBuilder {
    pub(super) fn new(dir: PathBuf) -> Self {
        DiskStoreBuilder {
            dir,
            max_bytes: None,
            clock: Arc::new(SystemClock),
            sync: true,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }

    /// Bound the total size of the entry files; least recently used entries are removed first.
    /// An entry larger than 90% of the bound is not stored.
    ///
    /// Recency is the files' modification time, which a read refreshes where this process may
    /// set it (on Unix, its own files; with several users sharing a directory, other users'
    /// entries age by their write time).
    ///
    /// Default: no bound (expired entries are still removed). With or without a bound, an entry
    /// file larger than 4 GiB is not stored.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The clock used for expiry and recency.
    ///
    /// Default: [`SystemClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Whether a written entry is made durable (`fsync`) before it gets its name.
    ///
    /// Default: `true`. After a crash of the machine (a power loss), an entry's name then holds
    /// the old entry or the new one. With `false`, a write is done once the file is in the
    /// system's page cache: a large entry's commit no longer waits for the disk (about 0.5 s per
    /// GiB on the disk measured in docs/benchmarks.md), and the caller's body ends that much
    /// sooner. A machine crash may then leave a torn or empty file under an entry's name: it
    /// reads as a miss (its CRC-32, and the entry's own checks, fail) and is removed, never
    /// served. A crash of the process alone loses nothing either way. A cache can usually
    /// afford to lose entries; choose `false` when the commit's wait matters more.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// The most streamed writes (large entries written as the body passes,
    /// [`StoreRequest::PutStream`](crate::StoreRequest::PutStream)) in progress at once. Each
    /// holds a thread of tokio's blocking pool, which the store's reads share, and up to 16 MiB
    /// the disk has not taken yet; past the cap a `PutStream` is answered `NotStored` at once:
    /// that entry is not stored (the cache counts it in `CacheMetrics::store_refused`, not as a
    /// write error), its response is not touched.
    ///
    /// Default: 16. `0` refuses every streamed write.
    pub fn max_streamed_writes(mut self, writes: usize) -> Self {
        self.max_streams = writes;
        self
    }

    /// Creates the directory if needed and measures what it holds.
    ///
    /// This walks the directory with blocking calls: on a large directory, call it before
    /// starting the runtime or inside `tokio::task::spawn_blocking`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or read.
    pub fn open(self) -> io::Result<DiskStore> {
        fs::create_dir_all(&self.dir)?;
        let inner = Inner {
            size: SizeRecord::open(&self.dir),
            namespace: record::pid_namespace(),
            dir: self.dir,
            max_bytes: self.max_bytes,
            clock: self.clock,
            tmp_counter: AtomicU64::new(0),
            sync: self.sync,
            streams: AtomicUsize::new(0),
            max_streams: self.max_streams,
            evicting: AtomicBool::new(false),
        };
        // Measured under the record's lock: no write of another process counts meanwhile.
        inner.size.update(|total| {
            *total = inner.entry_files()?.iter().map(|f| f.len).sum();
            Ok::<_, io::Error>(())
        })?;
        Ok(DiskStore {
            inner: Arc::new(inner),
        })
    }
}
