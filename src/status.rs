//! What the cache did with a request, reported in the response's extensions ([`CacheStatus`],
//! [`NotStoredReason`], [`CacheInfo`]) and, opt-in, in an RFC 9211 `Cache-Status` field.

use std::fmt;
use std::time::SystemTime;

use http::{HeaderValue, Response};

use crate::key::CacheKey;
use crate::policy::storable::NotStorable;

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
    /// This request waited for a concurrent equal request (the same method, URI and fields, but
    /// for content negotiation, `User-Agent` and `traceparent`) that the origin answered with
    /// an error (a 500, 502, 503 or 504 that was not stored): it got that answer instead of
    /// asking a struggling origin again. A concurrent request that got no answer at all (a
    /// timeout, a connection error) shares nothing.
    CoalescedError,
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

    /// The status as one lower-case word in snake case: the `status` label of the
    /// `http_cache_requests_total` metric (feature `metrics`), and what `Display` prints, so a
    /// log line, a metric and a dashboard query use the same word.
    ///
    /// ```
    /// use hyper_client_cache::CacheStatus;
    ///
    /// assert_eq!(CacheStatus::NotCacheable.as_str(), "not_cacheable");
    /// assert_eq!(CacheStatus::StaleWhileRevalidate.to_string(), "stale_while_revalidate");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::CoalescedError => "coalesced_error",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Stale => "stale",
            CacheStatus::StaleWhileRevalidate => "stale_while_revalidate",
            CacheStatus::StaleIfError => "stale_if_error",
            CacheStatus::OnlyIfCachedMiss => "only_if_cached_miss",
            CacheStatus::Miss => "miss",
            CacheStatus::NotCacheable => "not_cacheable",
            CacheStatus::StoreUnavailable => "store_unavailable",
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
    /// A request with `Authorization`, or another credential field
    /// ([`sensitive_headers`](crate::CacheLayer::sensitive_headers)), in a shared cache, without
    /// permission (RFC 9111 §3.5).
    Authorization,
    /// A response with `Set-Cookie`, in a shared cache that does not
    /// [store them](crate::CacheLayer::shared_set_cookie).
    SetCookie,
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
    /// The request's `Host` header is repeated or not a valid authority, so the key could not
    /// say which host the origin will see: the request went through untouched, not looked up.
    InvalidHost,
    /// The store's circuit breaker is open ([`CircuitBreaker`](crate::CircuitBreaker)): the
    /// response was passed on without being read for a store that is not asked.
    StoreUnavailable,
    /// The client below the cache followed a redirect (reqwest does, by default): the cache saw
    /// only the last response of the chain, not the redirects' own caching rules, and does not
    /// store it under the first URL.
    Redirected,
}

/// The extension point for client adapters that follow redirects themselves: put this in a
/// response's extensions when the response is the end of a redirect chain the cache did not
/// see, and the cache does not store it ([`NotStoredReason::Redirected`]).
///
/// The cache keys a response under the URL it asked for. When the client below it followed a
/// `301`/`302`/`307`/`308` on its own (reqwest does by default), the response that comes back
/// belongs to another URL, and the redirects' own caching rules (RFC 9111 §3, each response
/// is stored under its own target URI) were never seen: storing the last answer under the
/// first URL would serve it there for as long as the last answer allows. A client that does
/// not follow redirects (hyper-util's `Client`; tower-http's `FollowRedirectLayer` placed
/// outside the cache) needs nothing. `hyper-client-cache-reqwest` sets this when reqwest's
/// final URL differs from the request's.
///
/// ```
/// use std::convert::Infallible;
/// use hyper_client_cache::{CacheLayer, CacheStatus, FollowedRedirect, MemoryStore, NotStoredReason};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), hyper_client_cache::BoxError> {
/// // A client adapter that followed a redirect to answer this request.
/// let client = tower::service_fn(|_request: http::Request<String>| async {
///     let mut response = http::Response::builder()
///         .header("cache-control", "max-age=600")
///         .body(String::from("the redirect's target"))
///         .unwrap();
///     response.extensions_mut().insert(FollowedRedirect);
///     Ok::<_, Infallible>(response)
/// });
/// let cache = ServiceBuilder::new()
///     .layer(CacheLayer::new(MemoryStore::default()))
///     .service(client);
/// let request = || http::Request::get("http://example.com/old").body(String::new()).unwrap();
/// let response = cache.clone().oneshot(request()).await?;
/// assert_eq!(
///     response.extensions().get::<NotStoredReason>(),
///     Some(&NotStoredReason::Redirected)
/// );
/// let again = cache.oneshot(request()).await?;
/// assert_ne!(again.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowedRedirect;

impl fmt::Display for NotStoredReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotStoredReason::Method => "method is not cached",
            NotStoredReason::RequestNoStore => "request said no-store",
            NotStoredReason::ResponseNoStore => "response said no-store",
            NotStoredReason::NoCacheWithoutValidator => "no-cache without a validator",
            NotStoredReason::Private => "private response in a shared cache",
            NotStoredReason::Authorization => "authorized request in a shared cache",
            NotStoredReason::SetCookie => "response sets a cookie, in a shared cache",
            NotStoredReason::VaryStar => "Vary: *",
            NotStoredReason::Status => "status is not stored",
            NotStoredReason::NoFreshness => "no freshness information",
            NotStoredReason::Stale => "stale on arrival",
            NotStoredReason::Filtered => "rejected by the filter",
            NotStoredReason::Disabled => "caching disabled for this request",
            NotStoredReason::ReadOnly => "the cache is read-only",
            NotStoredReason::RequestBody => "the request body cannot be part of the key",
            NotStoredReason::InvalidHost => "the Host header is repeated or invalid",
            NotStoredReason::StoreUnavailable => "the store is unavailable (circuit breaker open)",
            NotStoredReason::Redirected => "the client followed a redirect the cache did not see",
        })
    }
}

impl From<NotStorable> for NotStoredReason {
    fn from(why: NotStorable) -> Self {
        use NotStoredReason as R;
        match why {
            NotStorable::Method => R::Method,
            NotStorable::Status => R::Status,
            NotStorable::RequestNoStore => R::RequestNoStore,
            NotStorable::ResponseNoStore => R::ResponseNoStore,
            NotStorable::NoCache => R::NoCacheWithoutValidator,
            NotStorable::Private => R::Private,
            NotStorable::Authorization => R::Authorization,
            NotStorable::SetCookie => R::SetCookie,
            NotStorable::VaryStar => R::VaryStar,
            NotStorable::NoFreshness => R::NoFreshness,
            NotStorable::Stale => R::Stale,
            NotStorable::Filtered => R::Filtered,
            NotStorable::Redirected => R::Redirected,
        }
    }
}

/// What the cache knows about the entry behind a response, in the response's
/// [`http::Extensions`] next to [`CacheStatus`].
///
/// # Example
///
/// ```
/// # use hyper_client_cache::CacheInfo;
/// # fn show(response: &http::Response<()>) {
/// if let Some(info) = response.extensions().get::<CacheInfo>() {
///     println!("from cache: {}, expires: {:?}", info.from_cache, info.expires);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheInfo {
    /// The body comes from the store (a hit, a coalesced wait, a revalidation or a stale
    /// response).
    pub from_cache: bool,
    /// The key the entry is (or is being) stored under; `None` when the request was not cached.
    /// For a response that varies, the URL's primary key: it is also stored under its variant's
    /// own key, and a large one written as it passes under one of the two only (docs/stores.md).
    pub key: Option<CacheKey>,
    /// When the stored response was received from the origin (for a response being stored: now).
    pub created_at: Option<SystemTime>,
    /// When it stops being fresh; `None` when it is not stored.
    pub expires: Option<SystemTime>,
    /// It was already stale when served (served stale by `max-stale`, a mode, or an error rule).
    pub is_expired: bool,
    /// It was validated with the origin (a `304 Not Modified`) before being served.
    pub revalidated: bool,
    /// The size of the stored blob in bytes, for responses served from the store.
    pub size: Option<usize>,
}

impl CacheInfo {
    pub(crate) fn bypass() -> Self {
        Self {
            from_cache: false,
            key: None,
            created_at: None,
            expires: None,
            is_expired: false,
            revalidated: false,
            size: None,
        }
    }
}

/// RFC 9211 §2: `Cache-Status: hyper-client-cache; <params>`, from what the response reports.
pub(crate) fn cache_status_field<B>(response: &Response<B>, now: SystemTime) -> HeaderValue {
    use std::fmt::Write;
    let status = response.extensions().get::<CacheStatus>().copied();
    let info = response.extensions().get::<CacheInfo>();
    let mut out = String::from("hyper-client-cache");
    let ttl = |out: &mut String| {
        if let Some(expires) = info.and_then(|i| i.expires) {
            // §2.5: "ttl: ... the response's remaining freshness lifetime", negative when stale.
            let secs = match expires.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            };
            let _ = write!(out, "; ttl={secs}");
        }
    };
    let fwd_status = |out: &mut String| {
        let _ = write!(out, "; fwd-status={}", response.status().as_u16());
    };
    match status {
        Some(
            CacheStatus::Hit
            | CacheStatus::Stale
            | CacheStatus::StaleWhileRevalidate
            | CacheStatus::StaleIfError,
        ) => {
            out.push_str("; hit");
            ttl(&mut out);
            if status == Some(CacheStatus::StaleIfError) {
                out.push_str("; detail=stale-if-error");
            }
        }
        Some(CacheStatus::Coalesced) => {
            // §2.8: "collapsed": the request was collapsed with another forward request.
            out.push_str("; fwd=miss; collapsed");
            ttl(&mut out);
        }
        Some(CacheStatus::CoalescedError) => {
            out.push_str("; fwd=miss; collapsed");
            fwd_status(&mut out);
        }
        Some(CacheStatus::Revalidated) => {
            out.push_str("; fwd=stale; fwd-status=304");
            ttl(&mut out);
        }
        Some(CacheStatus::OnlyIfCachedMiss) => out.push_str("; detail=only-if-cached"),
        Some(CacheStatus::Miss) => {
            out.push_str("; fwd=miss");
            fwd_status(&mut out);
            out.push_str("; stored");
            ttl(&mut out);
        }
        _ => {
            // §2.2: "bypass: the cache was configured to not handle this request", "method":
            // the method is not cacheable, "request": the request asked the cache not to
            // handle it, "miss": nothing usable was stored.
            let fwd = match response.extensions().get::<NotStoredReason>() {
                Some(NotStoredReason::Method) => "method",
                Some(
                    NotStoredReason::Disabled
                    | NotStoredReason::ReadOnly
                    | NotStoredReason::InvalidHost,
                ) => "bypass",
                Some(NotStoredReason::RequestNoStore) => "request",
                _ => "miss",
            };
            let _ = write!(out, "; fwd={fwd}");
            fwd_status(&mut out);
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("hyper-client-cache"))
}

#[cfg(test)]
mod tests {
    /// Every status, with a match that stops compiling when a variant is added.
    fn every_status() -> Vec<CacheStatus> {
        use CacheStatus::*;
        let all = vec![
            Hit,
            Revalidated,
            Stale,
            StaleWhileRevalidate,
            StaleIfError,
            OnlyIfCachedMiss,
            Coalesced,
            CoalescedError,
            Miss,
            NotCacheable,
            StoreUnavailable,
        ];
        for status in &all {
            match status {
                Hit | Revalidated | Stale | StaleWhileRevalidate | StaleIfError
                | OnlyIfCachedMiss | Coalesced | CoalescedError | Miss | NotCacheable
                | StoreUnavailable => {}
            }
        }
        all
    }

    /// #29: `as_str` is the metric label an operator queries (docs/operations.md's table of
    /// `http_cache_requests_total`), and `Display` prints the same word.
    #[test]
    fn as_str_and_display_are_the_metric_label() {
        let doc = include_str!("../docs/operations.md");
        let row = doc
            .lines()
            .find(|l| l.starts_with("| `http_cache_requests_total` |"))
            .expect("the requests metric is documented");
        let labels: Vec<&str> = row
            .split('`')
            .skip(1)
            .step_by(2) // the backquoted words: name, label, `CacheStatus`, then the values
            .skip(3)
            .collect();
        let all = every_status();
        assert_eq!(labels.len(), all.len(), "{labels:?}");
        for status in all {
            assert!(labels.contains(&status.as_str()), "{status:?}: {labels:?}");
            assert_eq!(status.to_string(), status.as_str(), "{status:?}");
        }
    }

    use super::*;
    use std::time::Duration;

    fn field(status: Option<CacheStatus>, extra: impl FnOnce(&mut Response<()>)) -> String {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut response = Response::new(());
        if let Some(status) = status {
            response.extensions_mut().insert(status);
        }
        extra(&mut response);
        let value = cache_status_field(&response, now);
        value.to_str().unwrap().to_owned()
    }

    fn expiring(at: u64) -> impl FnOnce(&mut Response<()>) {
        move |r| {
            let mut info = CacheInfo::bypass();
            info.expires = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(at));
            r.extensions_mut().insert(info);
        }
    }

    #[test]
    fn cache_status_serializes_every_outcome() {
        let hit = Some(CacheStatus::Hit);
        assert_eq!(
            field(hit, expiring(1_060)),
            "hyper-client-cache; hit; ttl=60"
        );
        // Stale: the ttl is negative (RFC 9211 §2.5).
        assert_eq!(
            field(Some(CacheStatus::StaleIfError), expiring(990)),
            "hyper-client-cache; hit; ttl=-10; detail=stale-if-error"
        );
        assert_eq!(
            field(Some(CacheStatus::Coalesced), |_| {}),
            "hyper-client-cache; fwd=miss; collapsed"
        );
        assert_eq!(
            field(Some(CacheStatus::Revalidated), expiring(1_001)),
            "hyper-client-cache; fwd=stale; fwd-status=304; ttl=1"
        );
        assert_eq!(
            field(Some(CacheStatus::OnlyIfCachedMiss), |_| {}),
            "hyper-client-cache; detail=only-if-cached"
        );
        assert_eq!(
            field(Some(CacheStatus::Miss), expiring(1_030)),
            "hyper-client-cache; fwd=miss; fwd-status=200; stored; ttl=30"
        );
        let reason = |why| {
            move |r: &mut Response<()>| {
                r.extensions_mut().insert(why);
            }
        };
        let nc = Some(CacheStatus::NotCacheable);
        assert_eq!(
            field(nc, reason(NotStoredReason::Method)),
            "hyper-client-cache; fwd=method; fwd-status=200"
        );
        assert_eq!(
            field(nc, reason(NotStoredReason::ReadOnly)),
            "hyper-client-cache; fwd=bypass; fwd-status=200"
        );
        assert_eq!(
            field(nc, reason(NotStoredReason::RequestNoStore)),
            "hyper-client-cache; fwd=request; fwd-status=200"
        );
        assert_eq!(
            field(nc, reason(NotStoredReason::Private)),
            "hyper-client-cache; fwd=miss; fwd-status=200"
        );
        assert_eq!(
            field(None, |_| {}),
            "hyper-client-cache; fwd=miss; fwd-status=200"
        );
    }
}
