//! What the cache did with a request, reported in the response's extensions.

use std::fmt;

/// What the cache did for one response, found in its [`http::Extensions`].
///
/// # Example
///
/// ```
/// use hyper_client_cache::CacheStatus;
/// # let response = { let mut r = http::Response::new(()); r.extensions_mut().insert(CacheStatus::Hit); r };
/// match response.extensions().get::<CacheStatus>() {
///     Some(CacheStatus::Hit) => println!("served from cache"),
///     Some(other) => println!("went to the origin: {other}"),
///     None => println!("not through the cache layer"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Served from the cache; the origin was not contacted.
    Hit,
    /// The stored response was stale; a conditional request to the origin answered
    /// `304 Not Modified`, and the stored response (with the 304's updated header fields) was
    /// served and stored again (RFC 9111 §4.3.4).
    Revalidated,
    /// A stale stored response was served because the request's `max-stale` accepted it
    /// (RFC 9111 §5.2.1.2).
    Stale,
    /// A stale stored response was served at once, while it is being revalidated in the
    /// background (RFC 5861 `stale-while-revalidate`).
    StaleWhileRevalidate,
    /// A stale stored response was served because the origin failed (transport error or 500,
    /// 502, 503, 504) and `stale-if-error` (RFC 5861) or
    /// [`serve_stale_on_error`](crate::CacheLayer::serve_stale_on_error) allowed it.
    StaleIfError,
    /// The request said `only-if-cached` and nothing usable was stored: the cache answered
    /// `504 Gateway Timeout` without contacting the origin (RFC 9111 §5.2.1.7).
    OnlyIfCachedMiss,
    /// Another request for the same key was already on its way to the origin; this one waited
    /// for it and was served the response it stored (request coalescing).
    Coalesced,
    /// Nothing usable was stored (absent, stale, or not matching the request); the request went
    /// to the origin and the response is being stored (once its body has been read in full).
    Miss,
    /// The request went to the origin and its response will not be stored: the method is not
    /// cached, the request forbade storing, or the response is not storable.
    NotCacheable,
    /// The store failed (or timed out) on lookup; the request went to the origin anyway
    /// (fail-open). The failure is logged with `tracing` at warn level.
    StoreUnavailable,
}

impl CacheStatus {
    /// Whether the response body came from the cache (a hit, a coalesced wait, a 304
    /// revalidation, or a stale response).
    pub fn is_hit(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit
                | CacheStatus::Coalesced
                | CacheStatus::Revalidated
                | CacheStatus::Stale
                | CacheStatus::StaleWhileRevalidate
                | CacheStatus::StaleIfError
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Stale => "stale",
            CacheStatus::StaleWhileRevalidate => "stale (revalidating)",
            CacheStatus::StaleIfError => "stale (origin error)",
            CacheStatus::OnlyIfCachedMiss => "only-if-cached miss",
            CacheStatus::Miss => "miss",
            CacheStatus::NotCacheable => "not cacheable",
            CacheStatus::StoreUnavailable => "store unavailable",
        }
    }
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a response that went to the origin is not stored. Found in the response's extensions next
/// to [`CacheStatus::NotCacheable`].
///
/// A response that *is* being stored can still end up not stored (its body fails, is dropped
/// early, disagrees with `Content-Length` or exceeds `max_body_size`); that happens after the
/// response was handed over, and is logged instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotStoredReason {
    /// Only GET responses are stored.
    Method,
    /// The request said `no-store` (RFC 9111 §5.2.1.5).
    RequestNoStore,
    /// The response said `no-store` (§5.2.2.5).
    ResponseNoStore,
    /// `no-cache` without a validator: it could never be reused (§5.2.2.4).
    NoCacheWithoutValidator,
    /// `private` in a shared cache (§5.2.2.7).
    Private,
    /// A request with `Authorization`, in a shared cache, without permission (§3.5).
    Authorization,
    /// `Vary: *` (§4.1).
    VaryStar,
    /// A status this cache does not store (not final, 206, 304, not understood with
    /// `must-understand`, or not in [`allowed_statuses`](crate::CacheLayer::allowed_statuses)).
    Status,
    /// No explicit freshness and no heuristic applies (§4.2).
    NoFreshness,
    /// Already stale on arrival, without a validator (or `ExpireImmediately` without one).
    Stale,
    /// The layer's [`filter`](crate::CacheLayer::filter) rejected it.
    Filtered,
    /// Caching was off for this request: [`CacheMode::NoStore`](crate::CacheMode::NoStore) or
    /// [`ExpireAfter::DoNotCache`](crate::ExpireAfter::DoNotCache).
    Disabled,
    /// The layer is [`read_only`](crate::CacheLayer::read_only).
    ReadOnly,
    /// The method is cached, but this request's body could not be part of the key: the layer
    /// does not [key request bodies](crate::CacheLayer::key_request_bodies), or the body's
    /// length is unknown or over the limit.
    RequestBody,
}

impl fmt::Display for NotStoredReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotStoredReason::Method => "method is not cached",
            NotStoredReason::RequestNoStore => "request said no-store",
            NotStoredReason::ResponseNoStore => "response said no-store",
            NotStoredReason::NoCacheWithoutValidator => "no-cache without a validator",
            NotStoredReason::Private => "private response in a shared cache",
            NotStoredReason::Authorization => "authorized request in a shared cache",
            NotStoredReason::VaryStar => "Vary: *",
            NotStoredReason::Status => "status is not stored",
            NotStoredReason::NoFreshness => "no freshness information",
            NotStoredReason::Stale => "stale on arrival",
            NotStoredReason::Filtered => "rejected by the filter",
            NotStoredReason::Disabled => "caching disabled for this request",
            NotStoredReason::ReadOnly => "the cache is read-only",
            NotStoredReason::RequestBody => "the request body cannot be part of the key",
        })
    }
}
