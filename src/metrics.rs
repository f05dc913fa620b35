//! Counters of what the cache did, readable from the layer.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::status::CacheStatus;

/// Counters shared by a [`CacheLayer`](crate::CacheLayer) and every service built from it.
///
/// Cheap to clone (a reference count); every clone reads the same counters. Counts only grow.
///
/// # Example
///
/// ```
/// use hyper_client_cache::{CacheLayer, MemoryStore};
///
/// let layer = CacheLayer::new(MemoryStore::default());
/// let metrics = layer.metrics();
/// // ... build services from `layer` and use them ...
/// assert_eq!(metrics.hits(), 0);
/// ```
#[derive(Clone, Default)]
pub struct CacheMetrics {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    coalesced: AtomicU64,
    coalesced_errors: AtomicU64,
    revalidated: AtomicU64,
    stale: AtomicU64,
    misses: AtomicU64,
    not_cacheable: AtomicU64,
    stored: AtomicU64,
    store_read_errors: AtomicU64,
    store_write_errors: AtomicU64,
    bad_signatures: AtomicU64,
    store_skipped: AtomicU64,
}

#[derive(Clone, Copy)]
pub(crate) enum Event {
    Hit,
    Coalesced,
    CoalescedError,
    Revalidated,
    Stale,
    Miss,
    NotCacheable,
    Stored,
    StoreReadError,
    StoreWriteError,
    BadSignature,
    /// A lookup or write not made: the store's circuit breaker is open.
    StoreSkipped,
}

impl Event {
    /// The counter a response's outcome adds to: every answer of the request path is counted
    /// once, from its [`CacheStatus`], in one place (`future/mod.rs` and the background refresh).
    pub(crate) fn outcome(status: CacheStatus) -> Option<Event> {
        Some(match status {
            CacheStatus::Hit => Event::Hit,
            CacheStatus::Coalesced => Event::Coalesced,
            CacheStatus::CoalescedError => Event::CoalescedError,
            CacheStatus::Revalidated => Event::Revalidated,
            CacheStatus::Stale | CacheStatus::StaleWhileRevalidate | CacheStatus::StaleIfError => {
                Event::Stale
            }
            CacheStatus::Miss => Event::Miss,
            CacheStatus::NotCacheable | CacheStatus::StoreUnavailable => Event::NotCacheable,
            CacheStatus::OnlyIfCachedMiss => return None,
        })
    }
}

impl CacheMetrics {
    pub(crate) fn record(&self, event: Event) {
        let c = &self.inner;
        let counter = match event {
            Event::Hit => &c.hits,
            Event::Coalesced => &c.coalesced,
            Event::CoalescedError => &c.coalesced_errors,
            Event::Revalidated => &c.revalidated,
            Event::Stale => &c.stale,
            Event::Miss => &c.misses,
            Event::NotCacheable => &c.not_cacheable,
            Event::Stored => &c.stored,
            Event::StoreReadError => &c.store_read_errors,
            Event::StoreWriteError => &c.store_write_errors,
            Event::BadSignature => &c.bad_signatures,
            Event::StoreSkipped => &c.store_skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses served from the cache without waiting for another request.
    pub fn hits(&self) -> u64 {
        self.inner.hits.load(Ordering::Relaxed)
    }

    /// Responses served from the cache after waiting for a concurrent request (coalescing).
    pub fn coalesced(&self) -> u64 {
        self.inner.coalesced.load(Ordering::Relaxed)
    }

    /// Stale entries validated by the origin with a `304 Not Modified` and served.
    pub fn revalidated(&self) -> u64 {
        self.inner.revalidated.load(Ordering::Relaxed)
    }

    /// Stale responses served (accepted by `max-stale`, or because the origin failed).
    pub fn stale(&self) -> u64 {
        self.inner.stale.load(Ordering::Relaxed)
    }

    /// Requests that went to the origin with a storable response.
    pub fn misses(&self) -> u64 {
        self.inner.misses.load(Ordering::Relaxed)
    }

    /// Requests that went to the origin and whose response is not stored.
    pub fn not_cacheable(&self) -> u64 {
        self.inner.not_cacheable.load(Ordering::Relaxed)
    }

    /// Entries written to the store.
    pub fn stored(&self) -> u64 {
        self.inner.stored.load(Ordering::Relaxed)
    }

    /// Store lookups that failed, timed out or got an answer other than a blob (each degraded to
    /// a miss, unless fail-closed).
    pub fn store_read_errors(&self) -> u64 {
        self.inner.store_read_errors.load(Ordering::Relaxed)
    }

    /// Store writes and deletes that failed or timed out (each dropped; the caller still gets
    /// its response).
    pub fn store_write_errors(&self) -> u64 {
        self.inner.store_write_errors.load(Ordering::Relaxed)
    }

    /// Requests answered with the failure of a concurrent identical request they waited for
    /// (`CacheStatus::CoalescedError`), instead of each asking a failing origin.
    pub fn coalesced_errors(&self) -> u64 {
        self.inner.coalesced_errors.load(Ordering::Relaxed)
    }

    /// Stored entries that failed verification.
    pub fn bad_signatures(&self) -> u64 {
        self.inner.bad_signatures.load(Ordering::Relaxed)
    }

    /// Store lookups and writes not made because the store's circuit breaker was open (each a
    /// miss, or an unstored response; not counted as read or write errors). Deletes an open
    /// breaker skips count as write errors: the entry they meant to remove may still be served.
    pub fn store_skipped(&self) -> u64 {
        self.inner.store_skipped.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheMetrics")
            .field("hits", &self.hits())
            .field("coalesced", &self.coalesced())
            .field("coalesced_errors", &self.coalesced_errors())
            .field("revalidated", &self.revalidated())
            .field("stale", &self.stale())
            .field("misses", &self.misses())
            .field("not_cacheable", &self.not_cacheable())
            .field("stored", &self.stored())
            .field("store_read_errors", &self.store_read_errors())
            .field("store_write_errors", &self.store_write_errors())
            .field("bad_signatures", &self.bad_signatures())
            .field("store_skipped", &self.store_skipped())
            .finish()
    }
}
