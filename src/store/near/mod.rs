//! A near cache: hot entries of a [`RedisStore`] kept in this process's memory, and kept
//! coherent by Redis itself (server-assisted client-side caching, RESP3 `CLIENT TRACKING`).
//!
//! See [`NearCache`] for how it stays coherent.

use std::fmt;
use std::future::{ready, Future, Ready};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use redis::{PushInfo, PushKind, RedisError, Value};
use tower::Service;

mod tracking;

use super::redis::RedisStore;
use super::{MemoryStore, StoreRequest, StoreResponse};
use crate::metrics::export as metrics;
use crate::CacheKey;
use tracking::{heartbeat, Tracker};

/// Default bound of a near tier: 64 MiB.
pub const DEFAULT_NEAR_MAX_BYTES: u64 = 64 << 20;
/// Default [`NearCacheBuilder::max_staleness`]: 50 ms.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_millis(50);
const STRIPES: usize = 4096;

/// A store layer that keeps hot entries of a [`RedisStore`] in process memory, coherent through
/// Redis server-assisted client-side caching ([docs/stores.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/stores.md) says when to use it).
///
/// The guarantee: after any client's write (overwrite, delete, purge) to the Redis store has
/// returned, this process never serves the old entry from memory later than
/// [`max_staleness`](NearCacheBuilder::max_staleness) after it (50 ms by default; on loopback
/// the invalidation arrives in well under a millisecond), across disconnects and Redis
/// restarts.
///
/// # How it stays coherent
///
/// - **Broadcast tracking.** One connection of its own (RESP3) runs
///   `CLIENT TRACKING ON BCAST PREFIX {prefix}` (on a cluster, one to every primary that
///   `CLUSTER NODES` lists, with slots or not). Redis then
///   sends it an invalidation for every key of the namespace that anyone changes, deletes,
///   expires or evicts, whoever read it. The default mode was not chosen: it tracks only keys
///   read on the tracking connection itself (so every read would have to go through it, or a
///   `REDIRECT` that a reconnect of either connection silently breaks), and costs server memory
///   per key read per client.
/// - **Invalidations are applied in the driver's read loop** (the push callback), before any
///   later reply on that connection is looked at.
/// - **A lease.** A heartbeat (`CLIENT TRACKINGINFO`) runs every fifth of
///   [`max_staleness`](NearCacheBuilder::max_staleness). Its answer comes after every
///   invalidation Redis had queued for this connection before it ran it, and the next heartbeat
///   runs in a later event-loop turn than any write already done when the one before was sent. So once the heartbeat sent at `t₂` is answered, every write that had returned before
///   the one sent at `t₁ < t₂` is applied here. The near tier serves only while `now − t₁ <
///   max_staleness`: an entry is never served more than `max_staleness` after a write elsewhere
///   returned, even when the tracking connection stalls without breaking (a timeout is not a
///   disconnect). When the lease lapses, lookups go to Redis until a heartbeat comes back.
/// - **A lost connection empties the tier.** When the tracking connection drops (the driver
///   says so, a heartbeat fails, or a heartbeat finds tracking off or, on a cluster, another
///   set of primaries in any primary's `CLUSTER NODES`) the near tier stops serving and is emptied: it cannot know
///   what it missed. It is emptied again once tracking is re-enabled on a new connection, and
///   only then serves again. So a Redis restart never lets an entry overwritten meanwhile be
///   served.
/// - **Fills cannot race invalidations.** A lookup that missed notes a counter of its key's
///   stripe (4096 stripes) and the tier's epoch before asking Redis; the answer is kept only if
///   neither moved by the time it is inserted (checked again after inserting). An invalidation
///   that arrives while the `GET` is in flight therefore discards the answer, instead of being
///   lost as in the driver's own client cache.
/// - **Local writes** (`Put`, `PutTagged`, `Delete`) drop the near copy before and after the
///   write; `Clear` and `PurgeTag` empty the tier before and after.
///
/// Entries in the near tier are the same sealed blobs: the cache verifies them on every hit, as
/// from any store.
///
/// Not seen: `SWAPDB` (Redis sends no invalidation for it). Call [`flush`](Self::flush) on every
/// instance after swapping a fleet's database, or deny the command.
///
/// # Clone
///
/// Cheap: clones share the tier and the tracking connection, which closes when the last clone
/// is dropped.
///
/// # Example
///
/// ```no_run
/// use hyper_client_cache::{CacheLayer, NearCache, RedisStore, SecretKey};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
/// let store = NearCache::builder(redis).max_bytes(128 << 20).start().await?;
/// let layer = CacheLayer::new(store).secret_key(SecretKey::from_env("HTTP_CACHE_KEY")?);
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NearCache {
    store: RedisStore,
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

/// Settings for a [`NearCache`].
#[must_use]
pub struct NearCacheBuilder {
    store: RedisStore,
    max_bytes: u64,
    max_staleness: Duration,
}

/// Counters of a [`NearCache`] (also exported as `http_cache_near_*` metrics with the `metrics`
/// feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that asked Redis (the tier was serving, the key was not in it).
    pub misses: u64,
    /// Lookups that went to Redis because the tier was not serving (disconnected, lease lapsed).
    pub bypasses: u64,
    /// Keys dropped because Redis said they changed.
    pub invalidations: u64,
    /// Times the whole tier was emptied.
    pub flushes: u64,
    /// Whether the tier serves now.
    pub serving: bool,
}

impl NearCacheBuilder {
    /// How many bytes (keys and blobs) the tier holds at most. Default: 64 MiB.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The longest the tier may serve an entry after a write elsewhere returned, however the
    /// tracking connection behaves (see [`NearCache`]); heartbeats run five times per
    /// period. Default: [`DEFAULT_MAX_STALENESS`] (50 ms). Clamped to at least 5 ms.
    pub fn max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness.max(Duration::from_millis(5));
        self
    }

    /// Opens the tracking connection, enables tracking, and starts the heartbeat (a tokio
    /// task: call this inside a tokio runtime).
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached now, or refuses `CLIENT TRACKING` (Redis 6 or later, and
    /// an ACL user allowed to run it, are needed). Later outages are handled by reconnecting.
    pub async fn start(self) -> Result<NearCache, RedisError> {
        let source = self.store.source().clone();
        let shared = Arc::new(Shared::new(
            self.max_bytes,
            self.store.prefix().into(),
            self.max_staleness,
        ));
        let (tracker, nodes) = Tracker::open(&source, &shared, 1, &[]).await?;
        shared.up();
        let task = tokio::spawn(heartbeat(Arc::downgrade(&shared), source, tracker, nodes));
        Ok(NearCache {
            store: self.store,
            shared,
            _task: Arc::new(AbortOnDrop(task)),
        })
    }
}

impl NearCache {
    /// Settings for a near cache in front of `store`.
    pub fn builder(store: RedisStore) -> NearCacheBuilder {
        NearCacheBuilder {
            store,
            max_bytes: DEFAULT_NEAR_MAX_BYTES,
            max_staleness: DEFAULT_MAX_STALENESS,
        }
    }

    /// The counters.
    pub fn stats(&self) -> NearStats {
        let c = &self.shared.counters;
        NearStats {
            hits: c.hits.load(SeqCst),
            misses: c.misses.load(SeqCst),
            bypasses: c.bypasses.load(SeqCst),
            invalidations: c.invalidations.load(SeqCst),
            flushes: c.flushes.load(SeqCst),
            serving: self.shared.serving_now(),
        }
    }

    /// How many entries, and bytes, the tier holds.
    pub fn len_and_size(&self) -> (usize, u64) {
        (self.shared.near.len(), self.shared.near.size_bytes())
    }

    /// Empties the tier now. For what Redis does not report: `SWAPDB` (and a database restored
    /// or replaced behind the server's back) sends no invalidation, so an operator who does that
    /// to a fleet's database flushes every instance's near cache (or restarts them).
    pub fn flush(&self) {
        self.shared.flush("local");
    }

    /// The Redis store behind the tier.
    pub fn redis(&self) -> &RedisStore {
        &self.store
    }
}

impl fmt::Debug for NearCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NearCache")
            .field("store", &self.store)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
}

struct Shared {
    near: MemoryStore,
    prefix: Arc<str>,
    stripes: Box<[AtomicU64]>,
    /// Moves on every flush: a fill that spans one is dropped.
    epoch: AtomicU64,
    /// Tracking is enabled on a live connection.
    serving: AtomicBool,
    /// Nanoseconds after `base` up to which every invalidation is known to have been applied
    /// (the send time of the heartbeat before the last one answered).
    known_at: AtomicU64,
    base: Instant,
    max_staleness: Duration,
    /// The number of the current tracking connection: a disconnection reported by an older one
    /// is not about this one.
    connection: AtomicU64,
    lost: tokio::sync::Notify,
    counters: Counters,
}

/// What a fill saw before asking Redis.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    epoch: u64,
    stripe: u64,
}

impl Shared {
    fn new(max_bytes: u64, prefix: Arc<str>, max_staleness: Duration) -> Self {
        Shared {
            near: MemoryStore::new(max_bytes),
            prefix,
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            known_at: AtomicU64::new(0),
            base: Instant::now(),
            max_staleness,
            connection: AtomicU64::new(0),
            lost: tokio::sync::Notify::new(),
            counters: Counters::default(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn serving_now(&self) -> bool {
        self.serving.load(SeqCst) && {
            let known = self.known_at.load(SeqCst);
            known != 0
                && u128::from(self.now().saturating_sub(known)) < self.max_staleness.as_nanos()
        }
    }

    fn stripe(&self, key: &CacheKey) -> &AtomicU64 {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key.as_str());
        // The index is below STRIPES, so the conversion cannot fail.
        let index = usize::try_from(hash % STRIPES as u64).unwrap_or(0);
        &self.stripes[index]
    }

    fn stamp(&self, key: &CacheKey) -> Stamp {
        Stamp {
            epoch: self.epoch.load(SeqCst),
            stripe: self.stripe(key).load(SeqCst),
        }
    }

    fn lookup(&self, key: &CacheKey, max_len: usize) -> Option<bytes::Bytes> {
        match self.near.handle(StoreRequest::Get {
            key: key.clone(),
            max_len,
        }) {
            StoreResponse::Blob(Some(blob)) if blob.len() <= max_len => Some(blob),
            _ => None,
        }
    }

    /// Keeps what Redis answered, unless the key (or the whole tier) was invalidated since
    /// `stamp` was taken.
    fn fill(&self, key: CacheKey, blob: bytes::Bytes, ttl: Option<Duration>, stamp: Stamp) {
        if !self.serving_now() || self.stamp(&key) != stamp {
            return;
        }
        let _ = self.near.handle(StoreRequest::Put {
            key: key.clone(),
            blob,
            ttl,
        });
        // An invalidation between the check above and the insert: undo. (Its own removal may
        // have run before the insert; this one runs after.)
        if self.stamp(&key) != stamp || !self.serving.load(SeqCst) {
            self.remove(&key);
        }
    }

    fn remove(&self, key: &CacheKey) {
        let _ = self.near.handle(StoreRequest::Delete { key: key.clone() });
    }

    fn invalidate(&self, key: &CacheKey) {
        self.stripe(key).fetch_add(1, SeqCst);
        self.remove(key);
    }

    fn flush(&self, reason: &'static str) {
        self.epoch.fetch_add(1, SeqCst);
        let _ = self.near.handle(StoreRequest::Clear);
        self.counters.flushes.fetch_add(1, SeqCst);
        metrics::near_flush(reason);
    }

    /// Tracking is lost: stop serving, forget everything.
    fn down(&self, reason: &'static str) {
        self.serving.store(false, SeqCst);
        self.known_at.store(0, SeqCst);
        self.flush(reason);
    }

    /// Tracking is (re-)enabled on a new connection: forget what was kept before, serve again.
    fn up(&self) {
        self.flush("reconnected");
        self.known_at.store(self.now().max(1), SeqCst);
        self.serving.store(true, SeqCst);
    }

    /// A push on tracking connection `connection`.
    fn push(&self, connection: u64, info: PushInfo) {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys) | Value::Set(keys)) => {
                    let mut n = 0;
                    for key in keys {
                        if let Value::BulkString(full) = key {
                            let name = full
                                .strip_prefix(self.prefix.as_bytes())
                                .and_then(|k| std::str::from_utf8(k).ok());
                            if let Some(name) = name {
                                self.invalidate(&CacheKey::from_stored(name));
                                n += 1;
                            }
                        }
                    }
                    self.counters.invalidations.fetch_add(n, SeqCst);
                    metrics::near_invalidations(n);
                }
                // `[Nil]`: the database was flushed. Anything not understood: the same.
                _ => self.flush("server_flush"),
            },
            PushKind::Disconnection if connection == self.connection.load(SeqCst) => {
                self.down("disconnected");
                self.lost.notify_one();
            }
            _ => {}
        }
    }
}

type NearFuture = Pin<Box<dyn Future<Output = Result<StoreResponse, RedisError>> + Send>>;

impl Service<StoreRequest> for NearCache {
    type Response = StoreResponse;
    type Error = RedisError;
    type Future = Either<Ready<Result<StoreResponse, RedisError>>, NearFuture>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: StoreRequest) -> Self::Future {
        let shared = self.shared.clone();
        match request {
            StoreRequest::Get { key, max_len } => {
                if !shared.serving_now() {
                    shared.counters.bypasses.fetch_add(1, SeqCst);
                    metrics::near_request("bypass");
                    return Either::Right(self.store.call(StoreRequest::Get { key, max_len }));
                }
                if let Some(blob) = shared.lookup(&key, max_len) {
                    shared.counters.hits.fetch_add(1, SeqCst);
                    metrics::near_request("hit");
                    return Either::Left(ready(Ok(StoreResponse::Blob(Some(blob)))));
                }
                shared.counters.misses.fetch_add(1, SeqCst);
                metrics::near_request("miss");
                let stamp = shared.stamp(&key);
                let store = self.store.clone();
                Either::Right(Box::pin(async move {
                    // With the key's TTL, so that the near copy expires when Redis's does.
                    Ok(StoreResponse::Blob(
                        match store.get_with_ttl(&key, max_len).await? {
                            Some((blob, ttl)) => {
                                shared.fill(key, blob.clone(), ttl, stamp);
                                Some(blob)
                            }
                            None => None,
                        },
                    ))
                }))
            }
            // As the Redis store: one buffer per value (the cache joins the parts and sends a
            // `Put`, which invalidates the near copy).
            StoreRequest::PutParts { .. } | StoreRequest::PutStream { .. } => {
                Either::Left(ready(Ok(StoreResponse::Unsupported)))
            }
            StoreRequest::Put { ref key, .. }
            | StoreRequest::PutTagged { ref key, .. }
            | StoreRequest::Delete { ref key } => {
                let key = key.clone();
                shared.invalidate(&key);
                let fut = self.store.call(request);
                Either::Right(Box::pin(async move {
                    let answer = fut.await;
                    shared.invalidate(&key);
                    answer
                }))
            }
            StoreRequest::Clear | StoreRequest::PurgeTag { .. } => {
                shared.flush("local");
                let fut = self.store.call(request);
                Either::Right(Box::pin(async move {
                    let answer = fut.await;
                    shared.flush("local");
                    answer
                }))
            }
            StoreRequest::Keys | StoreRequest::KeysPage { .. } => {
                Either::Right(self.store.call(request))
            }
        }
    }
}

#[cfg(test)]
mod tests;
