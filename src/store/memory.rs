//! The embedded store: a concurrent in-process cache bounded by bytes.

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;

use super::BlobParts;
use quick_cache::sync::Cache;
use quick_cache::OptionsBuilder;
use quick_cache::Weighter;

use super::{StoreRequest, StoreResponse};
use crate::clock::{Clock, SystemClock};
use crate::CacheKey;

/// Default byte bound of [`MemoryStore::default`]: 64 MiB.
const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Used only to size the hash table up front; the real bound is in bytes.
const ASSUMED_MEAN_ENTRY: u64 = 4 * 1024;
/// The smallest share of the byte bound one shard gets (see `with_clock`).
const MIN_SHARD_BYTES: u64 = 32 * 1024 * 1024;

/// An in-memory store bounded by the total size of its keys and blobs.
///
/// Built on [`quick_cache`](https://docs.rs/quick_cache) (a concurrent, sharded cache with
/// CLOCK-Pro eviction): reads do not take a global lock, and the byte bound is enforced on every
/// insert, not eventually. The bound is split between shards of at least 32 MiB each (one shard
/// below 64 MiB); a blob larger than its shard's share is not stored.
///
/// Expiry: each entry keeps the TTL it was written with and reads past it answer "absent" (and
/// drop the entry). Time comes from the store's [`Clock`], so tests can move it.
///
/// # Clone
///
/// Cheap (one reference count); all clones share the same entries.
///
/// # Example
///
/// ```
/// use hyper_client_cache::{CacheLayer, MemoryStore};
///
/// let store = MemoryStore::new(16 * 1024 * 1024); // 16 MiB
/// let layer = CacheLayer::new(store.clone());
/// # drop(layer);
/// assert_eq!(store.len(), 0);
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Cache<CacheKey, Slot, ByteWeighter>,
    clock: Arc<dyn Clock>,
    /// The heaviest entry (key and blob) a shard admits; heavier ones are refused.
    max_entry: u64,
}

/// quick_cache's share of a shard for its "hot" entries, set explicitly so that the largest
/// entry a shard admits can be derived: an entry heavier than that share is never kept.
const HOT_ALLOCATION: f64 = 0.97;

#[derive(Clone)]
struct Slot {
    /// As it was written: one buffer, or the parts of a `PutParts` (kept, not joined, so that a
    /// hit is slices of them).
    blob: BlobParts,
    expires_at: Option<SystemTime>,
}

#[derive(Clone, Copy)]
struct ByteWeighter;

impl Weighter<CacheKey, Slot> for ByteWeighter {
    fn weight(&self, key: &CacheKey, slot: &Slot) -> u64 {
        // Never zero: zero-weight items are never evicted by quick_cache.
        // 16 bytes per part beyond the first: what holding it costs besides its bytes.
        (key.as_str().len() + slot.blob.len() + 16 * slot.blob.parts().len().saturating_sub(1))
            .max(1) as u64
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of keys and blobs.
    pub fn new(max_bytes: u64) -> Self {
        Self::with_clock(max_bytes, SystemClock)
    }

    /// A store holding at most `max_bytes`, reading time from `clock` for expiry.
    pub fn with_clock(max_bytes: u64, clock: impl Clock) -> Self {
        let items =
            usize::try_from((max_bytes / ASSUMED_MEAN_ENTRY).clamp(16, 1 << 20)).unwrap_or(1 << 20);
        // quick_cache splits the byte bound evenly between its shards, and a blob larger than a
        // shard's share is not stored. Keep every shard at least MIN_SHARD_BYTES (so the default
        // 8 MiB max_body_size fits), and at most as many shards as quick_cache would pick.
        let wanted = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
        let affordable = usize::try_from(max_bytes / MIN_SHARD_BYTES).unwrap_or(usize::MAX);
        let shards = prev_power_of_two(affordable.clamp(1, wanted));
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(max_bytes)
            .shards(shards)
            .hot_allocation(HOT_ALLOCATION)
            .build();
        let cache = match options {
            Ok(options) => Cache::with_options(
                options,
                ByteWeighter,
                Default::default(),
                Default::default(),
            ),
            // Only refused for zero shards, which the clamp above rules out.
            Err(_) => Cache::with_weighter(items, max_bytes, ByteWeighter),
        };
        // quick_cache's admission bound (`weight_target_hot` of a shard), computed the same way.
        let shard = cache.shard_capacity();
        let max_entry = ((shard as f64 * HOT_ALLOCATION) as u64).clamp(shard.min(1), shard);
        Self {
            inner: Arc::new(Inner {
                cache,
                clock: Arc::new(clock),
                max_entry,
            }),
        }
    }

    /// The number of entries held (expired ones included until they are read or evicted).
    pub fn len(&self) -> usize {
        self.inner.cache.len()
    }

    /// Whether the store holds no entries.
    pub fn is_empty(&self) -> bool {
        self.inner.cache.len() == 0
    }

    /// The bytes currently held (keys plus blobs); never more than the bound.
    pub fn size_bytes(&self) -> u64 {
        self.inner.cache.weight()
    }

    /// The byte bound this store was created with.
    pub fn max_bytes(&self) -> u64 {
        self.inner.cache.capacity()
    }

    /// The largest entry (cache key plus blob) this store keeps: the bound is split between
    /// shards (one per 32 MiB, at most four per core), and an entry heavier than its shard's
    /// share is refused with [`StoreResponse::NotStored`] instead of being kept. For
    /// `MemoryStore::new(64 << 20)` on two cores, about 31 MiB; a store smaller than 32 MiB has
    /// one shard and keeps entries up to 97% of its bound.
    ///
    /// ```
    /// let store = hyper_client_cache::MemoryStore::new(64 << 20);
    /// assert!(store.max_entry_bytes() > 8 << 20); // the default `max_body_size` fits
    /// ```
    pub fn max_entry_bytes(&self) -> u64 {
        self.inner.max_entry
    }

    fn put(
        &self,
        key: CacheKey,
        blob: BlobParts,
        ttl: Option<std::time::Duration>,
    ) -> StoreResponse {
        let cache = &self.inner.cache;
        // Larger than a shard admits: quick_cache would drop it silently. Say so, and leave
        // nothing under the key (the write replaces what was there).
        if (key.as_str().len() + blob.len()) as u64 > self.inner.max_entry {
            cache.remove(&key);
            return StoreResponse::NotStored;
        }
        let expires_at = ttl.and_then(|ttl| self.inner.clock.now().checked_add(ttl));
        cache.insert(key, Slot { blob, expires_at });
        StoreResponse::Done
    }

    pub(crate) fn handle(&self, req: StoreRequest) -> StoreResponse {
        let cache = &self.inner.cache;
        match req {
            // The bound is not needed here: this store holds only blobs the cache wrote, which
            // are within the bound of the layer that wrote them (and the cache checks again).
            StoreRequest::Get { key, .. } => {
                let now = self.inner.clock.now();
                match cache.get(&key) {
                    Some(slot) if slot.expires_at.is_some_and(|t| t <= now) => {
                        // Only remove what we saw expire, not a fresh value written meanwhile.
                        cache.remove_if(&key, |s| s.expires_at.is_some_and(|t| t <= now));
                        StoreResponse::Blob(None)
                    }
                    Some(slot) => match slot.blob.parts() {
                        [] => StoreResponse::Blob(Some(Bytes::new())),
                        [one] => StoreResponse::Blob(Some(one.clone())),
                        _ => StoreResponse::Parts(slot.blob),
                    },
                    None => StoreResponse::Blob(None),
                }
            }
            // No tag index: a purge by tag reads the entries' own (signed) tags.
            StoreRequest::Put { key, blob, ttl }
            | StoreRequest::PutTagged { key, blob, ttl, .. } => {
                self.put(key, BlobParts::from(blob), ttl)
            }
            StoreRequest::PutParts {
                key, parts, ttl, ..
            } => self.put(key, parts, ttl),
            StoreRequest::Delete { key } => {
                cache.remove(&key);
                StoreResponse::Done
            }
            // The keys are in memory already: listing them at once costs no more.
            // Kept in memory anyway: the cache's `PutParts` at the end of the body.
            StoreRequest::KeysPage { .. }
            | StoreRequest::PurgeTag { .. }
            | StoreRequest::PutStream { .. } => StoreResponse::Unsupported,
            StoreRequest::Keys => {
                let now = self.inner.clock.now();
                let keys = cache
                    .iter()
                    .filter(|(_, slot)| slot.expires_at.is_none_or(|t| t > now))
                    .map(|(k, _)| k)
                    .collect();
                StoreResponse::Keys(keys)
            }
            StoreRequest::Clear => {
                cache.clear();
                StoreResponse::Done
            }
        }
    }
}

fn prev_power_of_two(n: usize) -> usize {
    match n {
        0 => 1,
        n => 1 << (usize::BITS - 1 - n.leading_zeros()),
    }
}

impl Default for MemoryStore {
    /// A store bounded at 64 MiB, on the system clock.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BYTES)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .field("size_bytes", &self.size_bytes())
            .field("max_bytes", &self.max_bytes())
            .finish()
    }
}

impl tower::Service<StoreRequest> for MemoryStore {
    type Response = StoreResponse;
    type Error = Infallible;
    type Future = Ready<Result<StoreResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: StoreRequest) -> Self::Future {
        ready(Ok(self.handle(req)))
    }
}
