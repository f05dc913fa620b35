//! A circuit breaker for stores: a store that keeps failing is not asked for a while.
//!
//! Without it, every request pays the full `store_timeout` (or the driver's reconnect backoff)
//! for as long as a store is down. With it:
//!
//! - **closed** (normal): every call goes to the store; `failures` consecutive failures or
//!   timeouts open it;
//! - **open**: calls are not made; they fail at once with [`StoreError::is_unavailable`], which
//!   the cache treats like any store failure (fail-open: the request goes to the origin,
//!   `CacheStatus::StoreUnavailable`; fail-closed: the request fails);
//! - **half-open**, `open_for` after opening: one call, the probe, goes to the store while the
//!   others still fail at once; its success closes the breaker, its failure opens it again for
//!   twice as long (up to `max_open_for`).
//!
//! The state is a few atomics: a call through a closed breaker reads one of them and clones the
//! breaker's handle (a reference count) for its report; a success after failures resets the
//! count once. The clock is the layer's (a [`ManualClock`](crate::ManualClock) drives it in
//! tests); a clock that steps back cannot keep the breaker open longer than its longest wait.
//!
//! What counts as a failure: a lookup's error or timeout, and any operation's timeout. A write
//! or delete the store *refuses* with an error (a read-only replica, a full disk) says nothing
//! about its reads, and an open breaker further down (a `CircuitBreaker` layer under the
//! cache's own) is not a failure of this one: both are neutral.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{StoreRequest, StoreResponse};
use crate::clock::{Clock, SystemClock};
use crate::error::{BoxError, StoreError};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Default for [`CircuitBreaker::failures`]: 5 consecutive failures.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default for [`CircuitBreaker::open_for`]: 250 ms before the first probe.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_millis(250);
/// Default for [`CircuitBreaker::max_open_for`]: probes at least once a second.
pub const DEFAULT_BREAKER_MAX_OPEN_FOR: Duration = Duration::from_secs(1);
/// How long a probe may take before another call may probe instead (a probe whose future is
/// never polled to its end must not keep the breaker half-open).
const PROBE_LEASE: Duration = Duration::from_secs(30);

/// Where a [`CircuitBreaker`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go to the store.
    Closed,
    /// Calls fail at once, without asking the store.
    Open,
    /// One probe is with the store; other calls fail at once.
    HalfOpen,
}

/// A circuit breaker for a [`Store`](super::Store): the settings and the shared state (clones
/// share it).
///
/// [`CacheLayer`](crate::CacheLayer) has one by default, over every store call it makes
/// (`CacheLayer::circuit_breaker`, `CacheLayer::without_circuit_breaker`). It is also a tower
/// [`Layer`] for any store, e.g. under your own retry or metrics layers:
///
/// ```
/// # #[cfg(feature = "memory")] {
/// use std::time::Duration;
/// use hyper_client_cache::{CircuitBreaker, MemoryStore};
///
/// let breaker = CircuitBreaker::new()
///     .failures(3)
///     .open_for(Duration::from_millis(100))
///     .max_open_for(Duration::from_secs(2));
/// let store = tower::ServiceBuilder::new()
///     .layer(breaker.clone())
///     .service(MemoryStore::new(64 << 20));
/// # let _ = store;
/// # }
/// ```
///
/// The layer form sees the store's errors only: put a timeout (tower's `TimeoutLayer`) under it
/// if slow answers should count. Inside `CacheLayer`, the store timeout counts.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    failures: u32,
    open_for: Duration,
    max_open_for: Duration,
    clock: Arc<dyn Clock>,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// While open: when the next probe may go (µs since the epoch on the clock).
    probe_at: AtomicU64,
    /// How long it opens the next time a probe fails (µs).
    backoff: AtomicU64,
    opened: AtomicU64,
    rejected: AtomicU64,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("failures", &self.shared.failures)
            .field("open_for", &self.shared.open_for)
            .field("max_open_for", &self.shared.max_open_for)
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl CircuitBreaker {
    /// A closed breaker with the default settings ([`DEFAULT_BREAKER_FAILURES`],
    /// [`DEFAULT_BREAKER_OPEN_FOR`], [`DEFAULT_BREAKER_MAX_OPEN_FOR`]) on the system clock.
    pub fn new() -> Self {
        Self::build(
            DEFAULT_BREAKER_FAILURES,
            DEFAULT_BREAKER_OPEN_FOR,
            DEFAULT_BREAKER_MAX_OPEN_FOR,
            Arc::new(SystemClock),
        )
    }

    fn build(failures: u32, open_for: Duration, max: Duration, clock: Arc<dyn Clock>) -> Self {
        let max = max.max(open_for);
        Self {
            shared: Arc::new(Shared {
                failures: failures.max(1),
                open_for,
                max_open_for: max,
                clock,
                state: AtomicU8::new(CLOSED),
                consecutive: AtomicU32::new(0),
                probe_at: AtomicU64::new(0),
                backoff: AtomicU64::new(micros(open_for)),
                opened: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            }),
        }
    }

    fn rebuild(&self, f: impl FnOnce(&mut (u32, Duration, Duration, Arc<dyn Clock>))) -> Self {
        let s = &self.shared;
        let mut settings = (s.failures, s.open_for, s.max_open_for, s.clock.clone());
        f(&mut settings);
        let (failures, open_for, max, clock) = settings;
        Self::build(failures, open_for, max, clock)
    }

    /// How many consecutive failures or timeouts open it (at least 1). Default: 5.
    ///
    /// The settings methods return a new, closed breaker: configure it before sharing it.
    pub fn failures(&self, n: u32) -> Self {
        self.rebuild(|s| s.0 = n)
    }

    /// How long it stays open before the first probe. Default: 250 ms.
    pub fn open_for(&self, d: Duration) -> Self {
        self.rebuild(|s| s.1 = d)
    }

    /// The longest it stays open: each failed probe doubles the wait up to this. Default: 1 s,
    /// so a store that comes back is used again within about a second.
    pub fn max_open_for(&self, d: Duration) -> Self {
        self.rebuild(|s| s.2 = d)
    }

    /// The clock it measures `open_for` on (the layer's clock when the layer builds it).
    pub fn clock(&self, clock: impl Clock) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        self.rebuild(|s| s.3 = clock)
    }

    pub(crate) fn with_clock(&self, clock: Arc<dyn Clock>) -> Self {
        self.rebuild(|s| s.3 = clock)
    }

    /// The same settings, closed, with a state of its own.
    pub(crate) fn fresh(&self) -> Self {
        self.rebuild(|_| {})
    }

    /// Where it stands now.
    pub fn state(&self) -> BreakerState {
        match self.shared.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// How many times it opened (a failed probe that opens it again counts too).
    pub fn times_opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }

    /// How many calls it failed at once without asking the store, as a tower layer. (Inside
    /// `CacheLayer`, `CacheMetrics::store_skipped` counts them instead, on per-thread counters:
    /// one shared counter written by every request of an outage would be a contended cache
    /// line.)
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    fn now(&self) -> u64 {
        let now = self.shared.clock.now();
        micros(now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
    }

    /// Whether `probe_at` has come: it has passed, or it lies further ahead than any wait the
    /// breaker sets (the clock stepped back; waiting for it could take forever).
    fn due(&self, now: u64) -> bool {
        let s = &self.shared;
        let at = s.probe_at.load(Ordering::Acquire);
        let longest = micros(s.max_open_for.max(PROBE_LEASE));
        now >= at || at.saturating_sub(now) > longest
    }

    /// May a call go to the store now? `Some(permit)` to report its outcome with. `may_probe`:
    /// this call may be the one probe of a half-open breaker (a whole-store walk may not: it
    /// would hold the breaker half-open for minutes).
    pub(crate) fn admit(&self, may_probe: bool) -> Option<Permit> {
        self.admit_counting(may_probe, false)
    }

    /// [`admit`](Self::admit), counting a rejection in [`rejected`](Self::rejected) when
    /// `count`.
    fn admit_counting(&self, may_probe: bool, count: bool) -> Option<Permit> {
        let s = &self.shared;
        let state = s.state.load(Ordering::Acquire);
        if state == CLOSED {
            return Some(Permit::new(self, false));
        }
        if may_probe {
            let now = self.now();
            // OPEN and its wait is over: this call probes. HALF_OPEN and the probe's lease has
            // run out (a probe whose future is never polled to its end): this call probes
            // instead.
            if self.due(now)
                && s.state
                    .compare_exchange(state, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                s.probe_at
                    .store(now.saturating_add(micros(PROBE_LEASE)), Ordering::Release);
                tracing::info!("store circuit breaker half-open: one probe goes to the store");
                crate::metrics::export::breaker_transition("half_open");
                return Some(Permit::new(self, true));
            }
        }
        if count {
            s.rejected.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    fn open(&self, backoff: u64, why: &str) {
        let s = &self.shared;
        s.probe_at
            .store(self.now().saturating_add(backoff), Ordering::Release);
        s.state.store(OPEN, Ordering::Release);
        s.opened.fetch_add(1, Ordering::Relaxed);
        crate::metrics::export::breaker_transition("open");
        tracing::warn!(
            open_for_ms = backoff / 1000,
            "store circuit breaker open ({why}): the store is not asked until a probe succeeds"
        );
    }

    fn report(&self, probe: bool, ok: bool) {
        let s = &self.shared;
        match (probe, ok) {
            (true, true) => {
                s.consecutive.store(0, Ordering::Relaxed);
                s.backoff.store(micros(s.open_for), Ordering::Relaxed);
                s.state.store(CLOSED, Ordering::Release);
                tracing::info!("store circuit breaker closed: the probe succeeded");
                crate::metrics::export::breaker_transition("closed");
            }
            (true, false) => {
                let max = micros(s.max_open_for);
                let next = s.backoff.load(Ordering::Relaxed).saturating_mul(2).min(max);
                s.backoff.store(next, Ordering::Relaxed);
                self.open(next, "the probe failed");
            }
            (false, true) => {
                // No write on the common path: only a success after failures resets.
                if s.consecutive.load(Ordering::Relaxed) != 0 {
                    s.consecutive.store(0, Ordering::Relaxed);
                }
            }
            (false, false) => {
                let n = s
                    .consecutive
                    .fetch_add(1, Ordering::AcqRel)
                    .saturating_add(1);
                if n >= s.failures
                    && s.state
                        .compare_exchange(CLOSED, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    // (HALF_OPEN for a moment: no other call reopens it twice.)
                    s.backoff.store(micros(s.open_for), Ordering::Relaxed);
                    self.open(micros(s.open_for), "consecutive store failures");
                }
            }
        }
    }
}

/// One admitted call: reports its outcome; dropped without one (cancelled), a probe lets the
/// next call probe instead.
pub(crate) struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl Permit {
    fn new(breaker: &CircuitBreaker, probe: bool) -> Self {
        Self {
            breaker: breaker.clone(),
            probe,
            reported: false,
        }
    }

    /// The call ended: `ok` when the store answered (whatever it answered).
    pub(crate) fn report(mut self, ok: bool) {
        self.reported = true;
        self.breaker.report(self.probe, ok);
    }

    /// The call ended in a way that says nothing about the store's health (a write the store
    /// refused with an error while it may still serve reads; an open breaker further down).
    /// A probe that ends so lets the next call probe (`Drop` does it).
    pub(crate) fn neutral(self) {}
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let s = &self.breaker.shared;
            s.probe_at.store(0, Ordering::Release);
            let _ = s
                .state
                .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

impl<St> Layer<St> for CircuitBreaker {
    type Service = Breaking<St>;

    fn layer(&self, inner: St) -> Breaking<St> {
        Breaking {
            inner,
            breaker: self.clone(),
        }
    }
}

/// A store behind a [`CircuitBreaker`] (what the layer builds); itself a store.
#[derive(Clone, Debug)]
pub struct Breaking<St> {
    inner: St,
    breaker: CircuitBreaker,
}

impl<St> Service<StoreRequest> for Breaking<St>
where
    St: Service<StoreRequest, Response = StoreResponse>,
    St::Error: Into<BoxError>,
{
    type Response = StoreResponse;
    type Error = BoxError;
    type Future = BreakingFuture<St::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: StoreRequest) -> Self::Future {
        let may_probe = !matches!(
            request,
            StoreRequest::Keys | StoreRequest::Clear | StoreRequest::PurgeTag { .. }
        );
        let is_lookup = matches!(request, StoreRequest::Get { .. });
        match self.breaker.admit_counting(may_probe, true) {
            Some(permit) => BreakingFuture {
                inner: Some(self.inner.call(request)),
                permit: Some(permit),
                is_lookup,
            },
            None => BreakingFuture {
                inner: None,
                permit: None,
                is_lookup,
            },
        }
    }
}

pin_project! {
    /// The future of a [`Breaking`] store's call.
    pub struct BreakingFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<Permit>,
        is_lookup: bool,
    }
}

impl<F> fmt::Debug for BreakingFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakingFuture")
            .field("rejected", &self.inner.is_none())
            .finish()
    }
}

impl<F, E> Future for BreakingFuture<F>
where
    F: Future<Output = Result<StoreResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<StoreResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(Box::new(StoreError::unavailable())));
        };
        let out = ready!(inner.poll(cx)).map_err(Into::into);
        if let Some(permit) = this.permit.take() {
            let unavailable = |e: &BoxError| {
                e.downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_unavailable)
            };
            match &out {
                Ok(_) => permit.report(true),
                // As inside the layer: a lookup's error counts, a refused write does not.
                Err(e) if *this.is_lookup && !unavailable(e) => permit.report(false),
                Err(_) => permit.neutral(),
            }
        }
        Poll::Ready(out)
    }
}

/// The time a breaker would let its next probe go, for tests.
#[cfg(test)]
impl CircuitBreaker {
    fn probe_at(&self) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.shared.probe_at.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests;
