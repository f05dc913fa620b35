//! The settings of [`CacheLayer`] that decide what concurrent callers share: request
//! coalescing and hit-for-pass, the request fields that make a response one caller's in a
//! shared cache, and `Set-Cookie` there. (Kept apart from `mod.rs` to keep each file short.)

use std::time::Duration;

use http::HeaderName;

use super::CacheLayer;
use crate::config::DEFAULT_COALESCE_TIMEOUT;

impl<St, K> CacheLayer<St, K> {
    /// Coalesce concurrent misses: while one request for a key is on its way to the origin,
    /// other misses for the same key wait for it and are answered from what it stores
    /// ([`CacheStatus::Coalesced`](crate::CacheStatus::Coalesced)) instead of sending their own
    /// request. A waiter whose leader's response is not storable, or does not match its `Vary`,
    /// goes to the origin itself.
    ///
    /// Waiting needs a tokio runtime with its timer enabled (`#[tokio::main]` has one); without
    /// one, requests do not wait. Default: on.
    pub fn coalesce(mut self, enabled: bool) -> Self {
        self.config.coalesce_timeout = match (enabled, self.config.coalesce_timeout) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(DEFAULT_COALESCE_TIMEOUT),
        };
        self
    }

    /// How long a coalesced request waits for the request it joined before it gives up and goes
    /// to the origin itself (so a hung origin request does not hold its waiters forever).
    /// Setting it turns coalescing on.
    ///
    /// Default: [`DEFAULT_COALESCE_TIMEOUT`] (10 seconds).
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.config.coalesce_timeout = Some(timeout);
        self
    }

    /// How long a key whose response was not storable (`private` in a shared cache,
    /// `no-store`, too large, ...) is remembered as such: concurrent requests for it meanwhile
    /// go to the origin side by side instead of queueing behind one request whose answer they
    /// cannot share (Varnish's hit-for-pass). A storable response is still stored meanwhile.
    /// `Duration::ZERO` turns it off. At most 10,000 keys are remembered per layer.
    ///
    /// Default: [`DEFAULT_HIT_FOR_PASS`](crate::DEFAULT_HIT_FOR_PASS) (10 seconds).
    pub fn hit_for_pass(mut self, window: Duration) -> Self {
        self.config.hit_for_pass = Some(window).filter(|w| !w.is_zero());
        self
    }

    /// Adds request fields that carry credentials: a shared cache treats a request carrying
    /// one as RFC 9111 §3.5 treats `Authorization` (its response is stored only with `public`,
    /// `s-maxage` or `must-revalidate`). The list only grows; removing a default takes
    /// [`without_sensitive_header`](Self::without_sensitive_header). No value depends on it to
    /// stay out of the store: every value a response varies on is stored as a digest.
    ///
    /// Default: [`DEFAULT_SENSITIVE_HEADERS`](crate::DEFAULT_SENSITIVE_HEADERS) (`Authorization`,
    /// `Cookie`, `Proxy-Authorization`, `X-API-Key`, `X-Auth-Token`).
    pub fn sensitive_headers<I>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = HeaderName>,
    {
        for name in names {
            if !self.config.sensitive_headers.contains(&name) {
                self.config.sensitive_headers.push(name);
            }
        }
        self
    }

    /// Removes one field from the credential fields, a default included (an explicit opt-out).
    /// `Authorization` stays covered whatever this list holds (RFC 9111 §3.5).
    ///
    /// Default: nothing removed.
    pub fn without_sensitive_header(mut self, name: &HeaderName) -> Self {
        self.config.sensitive_headers.retain(|n| n != name);
        self
    }

    /// Whether a shared cache stores responses that carry `Set-Cookie`.
    ///
    /// RFC 9111 allows it, but a stored `Set-Cookie` is replayed to every caller: one user's
    /// session handed to the next. So a [shared](Self::shared) cache does not store such
    /// responses ([`NotStoredReason::SetCookie`](crate::NotStoredReason::SetCookie)), as
    /// Varnish, Fastly and Cloudflare do not by default. `true` stores them as received. A
    /// private cache (the default mode) stores them either way: it serves one user.
    ///
    /// Default: `false`.
    pub fn shared_set_cookie(mut self, store: bool) -> Self {
        self.config.shared_set_cookie = store;
        self
    }
}
