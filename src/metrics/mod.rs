//! Counters of what the cache did, readable from the layer.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::status::CacheStatus;

pub(crate) mod export;

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

/// The counters, striped: each thread adds to one of [`STRIPES`] copies, each on its own cache
/// lines, so that hits on several cores do not all write one shared line; a read sums them.
struct Counters {
    stripes: [Stripe; STRIPES],
    /// Record bytes (body segments, head records) sealed with compression configured, and the
    /// bytes they were stored as (on
    /// writes only: not striped).
    compression: [AtomicU64; 2],
}

/// How many copies of the counters (threads beyond this share them, round-robin).
const STRIPES: usize = 8;
/// How many [`Event`]s there are.
const EVENTS: usize = 17;
const _: () = assert!(
    Event::Unusable as usize + 1 == EVENTS,
    "EVENTS is the last event + 1"
);

const _: () = assert!(EVENTS * 8 <= 256, "a stripe fits its four cache lines");

/// One copy of every counter, alone on its cache lines (up to four 64-byte lines, and aligned
/// so that adjacent-line prefetching does not pair it with another).
#[repr(align(128))]
struct Stripe([AtomicU64; EVENTS]);

impl Default for Counters {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Stripe(std::array::from_fn(|_| AtomicU64::new(0)))),
            compression: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
}

/// This thread's stripe: assigned once per thread, round-robin.
fn stripe() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static STRIPE: usize = (NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES as u64) as usize;
    }
    STRIPE.with(|s| *s)
}

#[derive(Clone, Copy)]
pub(crate) enum Event {
    // The order is the index into a stripe: `EVENTS` counts them.
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
    /// A background refresh started.
    RefreshStarted,
    /// A background refresh not started: `max_refreshes` were running.
    RefreshSkipped,
    /// A background refresh abandoned at `refresh_timeout`.
    RefreshTimedOut,
    /// A write the store refused (`NotStored`): not an error.
    StoreRefused,
    /// A stored entry found and not used, for a reason other than a failed proof.
    Unusable,
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
        self.inner.stripes[stripe()].0[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A body sealed with compression configured: `before` bytes stored as `after`.
    pub(crate) fn compressed(&self, before: u64, after: u64) {
        self.inner.compression[0].fetch_add(before, Ordering::Relaxed);
        self.inner.compression[1].fetch_add(after, Ordering::Relaxed);
        export::compressed(before, after);
    }

    /// Bytes of the records (body segments and head records) of entries written with
    /// compression configured (before compression; records
    /// it skipped, as encoded ones, included).
    pub fn compression_bytes_before(&self) -> u64 {
        self.inner.compression[0].load(Ordering::Relaxed)
    }

    /// What [`compression_bytes_before`](Self::compression_bytes_before) counts, as stored
    /// (compressed segments at their compressed size, the others as they were); the ratio of
    /// the two is what compression saves.
    pub fn compression_bytes_after(&self) -> u64 {
        self.inner.compression[1].load(Ordering::Relaxed)
    }

    fn count(&self, event: Event) -> u64 {
        self.inner
            .stripes
            .iter()
            .map(|s| s.0[event as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Responses served from the cache without waiting for another request.
    pub fn hits(&self) -> u64 {
        self.count(Event::Hit)
    }

    /// Responses served from the cache after waiting for a concurrent request (coalescing).
    pub fn coalesced(&self) -> u64 {
        self.count(Event::Coalesced)
    }

    /// Stale entries validated by the origin with a `304 Not Modified` and served.
    pub fn revalidated(&self) -> u64 {
        self.count(Event::Revalidated)
    }

    /// Stale responses served (accepted by `max-stale`, or because the origin failed).
    pub fn stale(&self) -> u64 {
        self.count(Event::Stale)
    }

    /// Requests that went to the origin with a storable response.
    pub fn misses(&self) -> u64 {
        self.count(Event::Miss)
    }

    /// Requests that went to the origin and whose response is not stored.
    pub fn not_cacheable(&self) -> u64 {
        self.count(Event::NotCacheable)
    }

    /// Entries written to the store.
    pub fn stored(&self) -> u64 {
        self.count(Event::Stored)
    }

    /// Store lookups that failed, timed out or got an answer other than a blob (each degraded to
    /// a miss, unless fail-closed).
    pub fn store_read_errors(&self) -> u64 {
        self.count(Event::StoreReadError)
    }

    /// Store writes and deletes that failed or timed out (each dropped; the caller still gets
    /// its response).
    pub fn store_write_errors(&self) -> u64 {
        self.count(Event::StoreWriteError)
    }

    /// Entries the store refused to keep: it answered
    /// [`NotStored`](crate::StoreResponse::NotStored) (an entry over its size limit, more tags
    /// than a `RedisStore` indexes, a `DiskStore` at its cap of streamed writes,
    /// `DiskStoreBuilder::max_streamed_writes`). Not counted as
    /// write errors: the store works, and said no. The caller got its response all the same.
    pub fn store_refused(&self) -> u64 {
        self.count(Event::StoreRefused)
    }

    /// Requests answered with the error response of a concurrent equal request they waited for
    /// (`CacheStatus::CoalescedError`), instead of each asking a failing origin.
    pub fn coalesced_errors(&self) -> u64 {
        self.count(Event::CoalescedError)
    }

    /// Stored entries that failed verification.
    pub fn bad_signatures(&self) -> u64 {
        self.count(Event::BadSignature)
    }

    /// Stored entries found and not used for a reason other than a failed proof, counted once
    /// per lookup that meets one: each a miss (or, for a body streamed in segments, a body that
    /// ended with an error, and the entry deleted unless read-only). Three kinds, told apart in
    /// the `metrics` export's `reason` label (`http_cache_unusable_entries_total`):
    /// - `damaged`: in a cache without a key, an entry changed, cut short, under another
    ///   entry's name or no entry at all (its checksum or framing fails; with a key, each of
    ///   these is a [bad signature](Self::bad_signatures)); with or without one, an entry whose
    ///   check holds and whose content does not decode;
    /// - `outdated`: written by an older release (an older format, or signed where this cache
    ///   now encrypts), replaced by the next response;
    /// - `foreign`: possibly another deployment's valid entry (a newer format, algorithm or
    ///   codec, protected while this cache has no key, or larger than
    ///   [`max_blob_size`](crate::CacheLayer::max_blob_size) when the store hands it over:
    ///   `DiskStore` and `RedisStore` leave such a blob unread, a plain miss).
    ///
    /// Entries older than [`not_before`](crate::CacheLayer::not_before) or rejected by the
    /// filter are not counted here: they are the settings at work. Neither is what a store
    /// answers as absent: a `DiskStore` file of 1 MiB or less that fails the store's own
    /// checksum is removed by the store (see docs/security.md).
    pub fn unusable_entries(&self) -> u64 {
        self.count(Event::Unusable)
    }

    /// A stored entry that did not open, wherever that was found (its head, a body segment):
    /// a failed proof counted as a bad signature, anything else as an unusable entry.
    pub(crate) fn not_opened(&self, error: &crate::envelope::OpenError) {
        use crate::envelope::OpenError;
        match error {
            OpenError::BadSignature(bad) => {
                self.record(Event::BadSignature);
                export::bad_signature(bad.reason_label());
            }
            OpenError::Unusable(why) => {
                self.record(Event::Unusable);
                export::unusable_entry(OpenError::unusable_kind(why));
            }
        }
    }

    /// Store lookups and writes not made because the store's circuit breaker was open (each a
    /// miss, or an unstored response; not counted as read or write errors). Deletes an open
    /// breaker skips count as write errors: the entry they meant to remove may still be served.
    pub fn store_skipped(&self) -> u64 {
        self.count(Event::StoreSkipped)
    }

    /// Background refreshes (stale-while-revalidate, RFC 5861 §3) started. Their answers are
    /// counted like any other (`revalidated`, `misses`, ...) when they come.
    pub fn refreshes_started(&self) -> u64 {
        self.count(Event::RefreshStarted)
    }

    /// Background refreshes not started because
    /// [`max_refreshes`](crate::CacheLayer::max_refreshes) were running: the stale response was
    /// served without one.
    pub fn refreshes_skipped(&self) -> u64 {
        self.count(Event::RefreshSkipped)
    }

    /// Background refreshes abandoned at
    /// [`refresh_timeout`](crate::CacheLayer::refresh_timeout) (the origin did not answer, or
    /// its body did not end, in time).
    pub fn refreshes_timed_out(&self) -> u64 {
        self.count(Event::RefreshTimedOut)
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
            .field("store_refused", &self.store_refused())
            .field("bad_signatures", &self.bad_signatures())
            .field("unusable_entries", &self.unusable_entries())
            .field("store_skipped", &self.store_skipped())
            .field("refreshes_started", &self.refreshes_started())
            .field("refreshes_skipped", &self.refreshes_skipped())
            .field("refreshes_timed_out", &self.refreshes_timed_out())
            .finish()
    }
}
