//! The settings of [`CacheLayer`] that bound the work it does in the background: the
//! stale-while-revalidate refreshes (RFC 5861 §3) it starts after a caller has its answer.
//! (Kept apart from `mod.rs` to keep each file short.)

use std::time::Duration;

use super::CacheLayer;

impl<St, K> CacheLayer<St, K> {
    /// How long one background refresh may take: the request to the origin, reading its body
    /// and the store write. A refresh still running then is abandoned: its origin request (and
    /// connection) is dropped, a body not read to its end is not stored (the stale entry stays
    /// as it was), and it is counted in
    /// [`CacheMetrics::refreshes_timed_out`](crate::CacheMetrics::refreshes_timed_out). A
    /// store write already under way when it fires finishes on its own, within
    /// [`store_timeout`](Self::store_timeout).
    ///
    /// A refresh runs after its caller has the stale answer, so no timeout of the caller's
    /// (tower-http's `TimeoutLayer`, reqwest's `timeout`) reaches it: this one does. On tokio's
    /// timer when the runtime has one, else on a timer thread. A zero timeout abandons every
    /// refresh as soon as it would wait.
    ///
    /// Default: [`DEFAULT_REFRESH_TIMEOUT`](crate::DEFAULT_REFRESH_TIMEOUT) (30 seconds).
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.config.refresh_timeout = timeout;
        self
    }

    /// How many background refreshes may run at once, for this layer and every service built
    /// from it (and from its clones). At the cap a stale-while-revalidate hit is still answered
    /// with the stale response, within its window, but starts no refresh; it is counted in
    /// [`CacheMetrics::refreshes_skipped`](crate::CacheMetrics::refreshes_skipped), and a
    /// later stale hit of the same key tries again. Past its window the entry is revalidated in
    /// the foreground, as any stale entry is.
    ///
    /// This bounds the origin connections, memory and tasks an origin that stops answering can
    /// hold (each refresh holds them for up to [`refresh_timeout`](Self::refresh_timeout)).
    /// Zero: no background refreshes at all.
    ///
    /// Default: [`DEFAULT_MAX_REFRESHES`](crate::DEFAULT_MAX_REFRESHES) (32).
    pub fn max_refreshes(mut self, max: usize) -> Self {
        self.config.max_refreshes = max;
        self
    }
}
