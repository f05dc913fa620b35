//! A streamed write ([`StoreRequest::PutStream`](crate::StoreRequest::PutStream)): the entry
//! is written to a temporary file as the cache hands its body over, and renamed into place at
//! the commit, so that a large stored miss is never held in memory.
//!
//! The blob's prefix (the envelope's header and head) comes last, so the file holds it after
//! the body: `header (version 2) | body | prefix`, the header (written over its placeholder at
//! the commit) giving the blob's length, the CRC-32 of the blob in its order (prefix, then body:
//! `crc32fast`'s `combine`) and the prefix's length (`file.rs`). A reader reads the prefix, then
//! the body (`stream.rs`): nothing is copied twice, on either side.
//!
//! Until the commit the file has a temporary name, so nothing is visible: an aborted write
//! (the cache dropped its [`BlobWriter`]) or a failed one removes it; a crash leaves it for
//! `cleanup` (its writer is gone, or it has not been written to for ten minutes). It is counted
//! in the directory's size once renamed, like a whole write's file, and the store's entry limit
//! bounds it as it grows.

use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::dir::{create_shard, Shard};
use super::file::{tmp_name, FIXED, MAGIC, VERSION_STREAMED};
use super::{blocking, write_parts, DiskFuture, Inner};
use crate::store::{BlobWriter, Incoming, IncomingBlob, StoreResponse};
use crate::CacheKey;

/// The most gathered into one write (what the cache queued while the last one ran).
const BATCH: usize = 4 << 20;

/// A streamed write in progress: its temporary file, and what the commit needs.
struct Job {
    inner: Arc<Inner>,
    shard: Shard,
    tmp: String,
    name: String,
    file: fs::File,
    key: Vec<u8>,
    ttl: Option<Duration>,
    body_len: u64,
    /// Of the body so far.
    crc: crc32fast::Hasher,
    /// Renamed into place: the temporary file is gone.
    installed: bool,
    /// Its place under the cap on streamed writes, given back when the job is dropped.
    _slot: Slot,
}

/// One of the store's streamed writes in progress (`DiskStoreBuilder::max_streamed_writes`).
struct Slot(Arc<Inner>);

impl Slot {
    /// A place under the cap, if one is free.
    fn take(inner: &Arc<Inner>) -> Option<Slot> {
        inner
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.max_streams).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(inner.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A streamed write's header: as a whole write's (`file::encode_header`), version 2, with the
/// prefix's length after the CRC.
fn encode_header(expires_ms: u64, key: &[u8], blob_len: u64, crc: u32, prefix: u32) -> Vec<u8> {
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let mut header = Vec::with_capacity(FIXED + key.len() + 16);
    header.extend_from_slice(MAGIC);
    header.push(VERSION_STREAMED);
    header.extend_from_slice(&expires_ms.to_be_bytes());
    header.extend_from_slice(&key_len.to_be_bytes());
    header.extend_from_slice(key);
    header.extend_from_slice(&blob_len.to_be_bytes());
    header.extend_from_slice(&crc.to_be_bytes());
    header.extend_from_slice(&prefix.to_be_bytes());
    header
}

impl Job {
    fn header_len(&self) -> u64 {
        (FIXED + self.key.len() + 16) as u64
    }

    /// Whether `more` bytes still fit the store's entry limit; when not, the key's previous
    /// entry (an older response) is removed, as a whole write over the limit does.
    fn fits(&self, more: u64) -> io::Result<bool> {
        let new = self.header_len() + self.body_len + more;
        if new <= self.inner.entry_limit() {
            return Ok(true);
        }
        tracing::debug!(
            size = new,
            limit = self.inner.entry_limit(),
            "streamed entry larger than the disk store's entry limit; not stored"
        );
        self.inner.remove_entry(&self.shard, &self.name)?;
        Ok(false)
    }

    /// Appends body buffers; `false` when the entry outgrew the limit (the write is over).
    fn write(&mut self, batch: &[Bytes]) -> io::Result<bool> {
        let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
        if !self.fits(len)? {
            return Ok(false);
        }
        write_parts(&mut self.file, batch)?;
        for b in batch {
            self.crc.update(b);
        }
        self.body_len += len;
        Ok(true)
    }

    /// Writes the prefix and the header, then renames the file into place.
    fn commit(mut self, prefix: &Bytes) -> io::Result<StoreResponse> {
        let prefix_len = u32::try_from(prefix.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "prefix too long"))?;
        if !self.fits(prefix.len() as u64)? {
            return Ok(StoreResponse::NotStored);
        }
        if self.ttl == Some(Duration::ZERO) {
            // As a whole write: a removal (the temporary file goes with the job).
            self.inner.remove_entry(&self.shard, &self.name)?;
            return Ok(StoreResponse::Done);
        }
        self.file.write_all(prefix)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(prefix);
        crc.combine(&self.crc);
        let blob_len = self.body_len + prefix.len() as u64;
        let header = encode_header(
            self.inner.expires_ms(self.ttl),
            &self.key,
            blob_len,
            crc.finalize(),
            prefix_len,
        );
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&header)?;
        let new = self.header_len() + blob_len;
        self.inner
            .install(&self.shard, &self.tmp, &self.name, &self.file, new)?;
        self.installed = true;
        Ok(StoreResponse::Done)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.installed {
            // Aborted, failed or refused: nothing of it stays.
            let _ = self.shard.remove(&self.tmp);
        }
    }
}

impl Inner {
    /// Gives the written temporary file `tmp` the entry's name (durable first), counts it, and
    /// runs an eviction pass when the bound is exceeded. The temporary file is removed if it
    /// could not be renamed.
    pub(super) fn install(
        &self,
        shard: &Shard,
        tmp: &str,
        name: &str,
        file: &fs::File,
        new: u64,
    ) -> io::Result<()> {
        let written = (|| -> io::Result<u64> {
            // Durable before it gets its real name: a crash never exposes a partial entry
            // (unless the user chose speed: `DiskStoreBuilder::sync`).
            if self.sync {
                file.sync_all()?;
            }
            let old = shard.stat(name).ok().flatten().map_or(0, |id| id.len);
            shard.rename(tmp, name)?;
            // Recency on the same clock as reads (LRU eviction), set once the file has its real
            // name: a temporary file keeps the system's time, which `cleanup` compares against
            // to find a crashed writer's debris. Failing to set it is harmless.
            let _ = file.set_modified(self.clock.now());
            Ok(self.size.change(new, old))
        })();
        if written.is_err() {
            let _ = shard.remove(tmp);
        }
        let total = written?;
        if let Some(max) = self.max_bytes {
            if total > max && !self.evicting.swap(true, Ordering::AcqRel) {
                let evicted = self.evict(max);
                self.evicting.store(false, Ordering::Release);
                evicted?;
            }
        }
        Ok(())
    }

    /// Creates the temporary file of a streamed write, with room for its header.
    fn start_stream(
        self: &Arc<Self>,
        key: &CacheKey,
        ttl: Option<Duration>,
        slot: Slot,
    ) -> io::Result<Job> {
        let (shard, name) = Self::name_for(key);
        let shard = create_shard(&self.dir, &shard)?;
        let key = key.as_str().as_bytes().to_vec();
        if u16::try_from(key.len()).is_err() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "key too long"));
        }
        let tmp = tmp_name(
            self.namespace,
            self.tmp_counter.fetch_add(1, Ordering::Relaxed),
        );
        let file = shard.create_new(&tmp)?;
        let mut job = Job {
            inner: self.clone(),
            shard,
            tmp,
            name,
            file,
            ttl,
            body_len: 0,
            crc: crc32fast::Hasher::new(),
            installed: false,
            key,
            _slot: slot,
        };
        // A placeholder, written over at the commit.
        let placeholder = encode_header(0, &job.key, 0, 0, 0);
        job.file.write_all(&placeholder)?;
        Ok(job)
    }
}

/// Answers a `PutStream`: the temporary file is created, then a thread of the blocking pool
/// writes what the cache appends (gathered into batches) and commits. Writing on a thread of
/// its own, the write keeps up with the cache whatever the caller's runtime is busy with.
pub(super) fn put_stream(inner: Arc<Inner>, key: CacheKey, ttl: Option<Duration>) -> DiskFuture {
    Box::pin(async move {
        let handle = crate::rt::handle()
            .ok_or_else(|| io::Error::other("DiskStore needs a tokio runtime"))?;
        let Some(slot) = Slot::take(&inner) else {
            tracing::debug!(
                key = %key,
                max = inner.max_streams,
                "streamed writes at their cap; this entry is not stored"
            );
            return Ok(StoreResponse::NotStored);
        };
        let job = blocking(move || inner.start_stream(&key, ttl, slot)).await?;
        let (writer, incoming) = BlobWriter::channel();
        handle.spawn_blocking(move || run(job, incoming));
        Ok(StoreResponse::Writer(writer))
    })
}

/// The writer: batches of what the cache queued, then the commit. Returning without a commit
/// (aborted, failed, refused) drops the job, which removes the temporary file.
fn run(mut job: Job, mut incoming: IncomingBlob) {
    let answer = loop {
        let Some(first) = incoming.blocking_next() else {
            return;
        };
        let mut batch = Vec::new();
        let mut size = 0;
        let mut commit = None;
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                Incoming::Data(data) => {
                    size += data.len();
                    batch.push(data);
                }
                Incoming::Commit(prefix) => {
                    commit = Some(prefix);
                    break;
                }
            }
            if size < BATCH {
                item = incoming.try_next();
            }
        }
        match job.write(&batch) {
            Ok(true) => {}
            Ok(false) => break Ok(StoreResponse::NotStored),
            Err(e) => break Err(e.into()),
        }
        if let Some(prefix) = commit {
            // `commit` takes the job: it is dropped (its place under the cap given back) before
            // the answer.
            return incoming.finish(job.commit(&prefix).map_err(Into::into));
        }
    };
    // Dropped before the answer (its temporary file removed, its place under the cap given
    // back): whoever got the answer finds both done.
    drop(job);
    incoming.finish(answer);
}
