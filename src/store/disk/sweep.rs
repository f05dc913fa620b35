//! Walks over the whole directory: listing, eviction, clearing and cleanup.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::dir::shards;
use super::file::{read_header, tmp_writer, FileInfo, EXT, TMP_PREFIX};
use super::record::writer_is_gone;
use super::{target, Inner};
use crate::clock::{Clock, SystemClock};
use crate::CacheKey;

/// Temporary files older than this are debris of a crashed writer; `cleanup` removes them.
const STALE_TMP: Duration = Duration::from_secs(600);

impl Inner {
    /// Every entry file (temporary files excluded), in shard directories that are directories
    /// (a link among the shards is never entered).
    pub(super) fn entry_files(&self) -> io::Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        for shard in shards(&self.dir)? {
            let shard = Arc::new(shard);
            let Ok(entries) = shard.list() else {
                continue;
            };
            for entry in entries {
                if entry.name.ends_with(&format!(".{EXT}")) {
                    out.push(FileInfo {
                        shard: shard.clone(),
                        name: entry.name,
                        len: entry.id.len,
                        modified: entry.modified,
                        id: entry.id,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Least recently used first, until under 90% of `max`. Runs holding the size record's
    /// lock (every process's writes wait to count theirs), measures the directory and leaves
    /// the record at what it measured minus what it removed: passes of several processes run
    /// one after the other, and each starts from the truth.
    pub(super) fn evict(&self, max: u64) -> io::Result<()> {
        self.size.update(|total| {
            *total = self.evict_locked(max)?;
            Ok(())
        })
    }

    /// The pass itself; the bytes of entry files it leaves.
    fn evict_locked(&self, max: u64) -> io::Result<u64> {
        let mut files = self.entry_files()?;
        let measured: u64 = files.iter().map(|f| f.len).sum();
        let mut total = measured;
        let mut removed = 0u64;
        files.sort_by_key(|f| f.modified);
        for f in files {
            if total <= target(max) {
                break;
            }
            match f.shard.stat(&f.name) {
                Ok(Some(now)) if now == f.id => match f.shard.remove(&f.name) {
                    Ok(()) => removed += f.len,
                    // Another pass (another process) removed it: gone all the same.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => continue,
                },
                Ok(None) => {}
                // Read or replaced since the listing: used recently after all, keep it.
                _ => continue,
            }
            total = total.saturating_sub(f.len);
        }
        Ok(measured.saturating_sub(removed))
    }

    pub(super) fn keys(&self) -> io::Result<Vec<CacheKey>> {
        Ok(self
            .entry_files()?
            .iter()
            .filter_map(|f| read_header(&f.shard, &f.name))
            .filter(|h| !self.expired(h.expires_ms))
            .map(|h| CacheKey::from_stored(h.key))
            .collect())
    }

    pub(super) fn clear(&self) -> io::Result<()> {
        for f in self.entry_files()? {
            if f.shard.remove(&f.name).is_ok() {
                self.shrink(f.len);
            }
        }
        Ok(())
    }

    pub(super) fn cleanup(&self) -> io::Result<usize> {
        let mut removed = 0;
        for f in self.entry_files()? {
            let dead = match read_header(&f.shard, &f.name) {
                Some(h) => self.expired(h.expires_ms),
                None => true,
            };
            if dead && f.shard.remove_if(&f.name, &f.id) {
                removed += 1;
            }
        }
        // Temporary files keep the system's time (`write` sets the store's clock only on the
        // renamed file), so their age is measured on the system clock, not the store's. A file
        // whose writer is certainly gone (its pid is free in this pid namespace) goes at once.
        let now = SystemClock.now();
        for shard in shards(&self.dir)? {
            let Ok(entries) = shard.list() else {
                continue;
            };
            for entry in entries {
                let is_tmp = entry.name.starts_with(TMP_PREFIX);
                let old = now.duration_since(entry.modified).unwrap_or_default() > STALE_TMP;
                let orphan = tmp_writer(&entry.name)
                    .is_some_and(|writer| writer_is_gone(&writer, self.namespace));
                if is_tmp && (old || orphan) && shard.remove_if(&entry.name, &entry.id) {
                    removed += 1;
                }
            }
        }
        // The record is the directory again (measured under its lock).
        self.size.update(|total| {
            *total = self.entry_files()?.iter().map(|f| f.len).sum();
            Ok::<_, io::Error>(())
        })?;
        Ok(removed)
    }
}
