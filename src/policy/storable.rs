//! May this response be stored? (RFC 9111 §3, §3.1)

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::cache_control::{RequestDirectives, ResponseDirectives};
use super::fields::has_validator;
use super::freshness::Expiry;
use super::freshness::{explicit_lifetime, freshness_lifetime, heuristically_cacheable};
use super::ranges::{parse_range, storable_partial, RangeRequest};
use super::vary::{vary_names, VaryNames};

/// The answer of [`storability`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub(crate) enum Storability {
    /// Store it; it stays fresh for `lifetime` from reception.
    Store { lifetime: Duration },
    /// Do not store it, for this reason.
    DoNotStore(NotStorable),
}

/// Why a response is not stored (reported in logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStorable {
    /// Only GET responses are stored.
    Method,
    /// A status this cache does not store (not final, 206, 304).
    Status,
    /// The request said `no-store` (§5.2.1.5).
    RequestNoStore,
    /// The response said `no-store` (§5.2.2.5).
    ResponseNoStore,
    /// `no-cache` without a validator: it could never be reused.
    NoCache,
    /// `private` in a shared cache (§5.2.2.7).
    Private,
    /// A request with `Authorization` (or another field the user lists as a credential) in a
    /// shared cache, without a directive that allows it (§3.5).
    Authorization,
    /// A response with `Set-Cookie` in a shared cache, unless the user opted in: it would hand
    /// one caller's session to the next.
    SetCookie,
    /// `Vary: *` can never be matched (§4.1).
    VaryStar,
    /// No explicit freshness, and no heuristic applies (§4.2.2).
    NoFreshness,
    /// Already stale on arrival and without a validator: it could never be reused.
    Stale,
    /// The user's filter rejected it.
    Filtered,
    /// The client followed a redirect below the cache: the response is the last one of a chain
    /// the cache did not see, and it would be stored under the first URL.
    Redirected,
}

/// The inputs of [`storability`], as borrowed views of the exchange.
pub(crate) struct Exchange<'a> {
    pub(crate) method: &'a Method,
    /// The user allowed caching this (non-GET) method; its key tells requests apart.
    pub(crate) method_allowed: bool,
    pub(crate) request_headers: &'a HeaderMap,
    pub(crate) request_cc: &'a RequestDirectives,
    pub(crate) status: StatusCode,
    pub(crate) response_headers: &'a HeaderMap,
    pub(crate) response_cc: &'a ResponseDirectives,
    pub(crate) response_time: SystemTime,
    pub(crate) age: Duration,
    /// Request fields that a shared cache treats as it treats `Authorization` (§3.5): the
    /// user's credential fields, `Authorization` included or not.
    pub(crate) credentials: &'a [http::HeaderName],
    /// A shared cache may store a response that sets a cookie.
    pub(crate) shared_set_cookie: bool,
}

/// RFC 9111 §3: "A cache MUST NOT store a response to a request unless: the request method is
/// understood by the cache; the response status code is final; ... the no-store cache directive
/// is not present in the response; if the cache is shared: the private response directive is
/// either not present or allows a shared cache to store a modified response; if the cache is
/// shared: the Authorization header field is not present in the request or a response directive
/// is present that explicitly allows shared caching; and the response contains at least one of
/// [explicit freshness, a cacheable status, ...]".
///
/// This release stores GET responses with a status it understands (RFC 9110 §15.1's
/// heuristically cacheable ones, plus 302, 303 and 307 with explicit freshness) and a positive
/// freshness lifetime, explicit or heuristic; it does not store what it would have to revalidate
/// (`no-cache`, already stale).
pub(crate) fn storability(x: &Exchange<'_>, shared: bool) -> Storability {
    use Storability::DoNotStore;
    if x.method != Method::GET && !x.method_allowed {
        return DoNotStore(NotStorable::Method);
    }
    // §3: "the response status code is final". 304 only updates stored responses; a 206 is
    // stored as an incomplete entry (§3.3) only when it answers a GET for one byte range with
    // exactly the bytes its Content-Range names, and does not vary. Any other final status is
    // stored when it has explicit freshness (statuses outside RFC 9110 §15.1's list get a
    // heuristic only with `public`, §5.2.2.9).
    if x.status.is_informational()
        || x.status == StatusCode::NOT_MODIFIED
        || (x.status == StatusCode::PARTIAL_CONTENT && !storable_incomplete(x))
    {
        return DoNotStore(NotStorable::Status);
    }
    // §5.2.1.5 / §5.2.2.5
    if x.request_cc.no_store {
        return DoNotStore(NotStorable::RequestNoStore);
    }
    // §5.2.2.3 must-understand: "limits caching of the response to a cache that understands
    // and conforms to the requirements for that response's status code", and such a cache
    // "SHOULD ignore the no-store directive". Understood: the status codes RFC 9110 defines.
    let understood = x.status.canonical_reason().is_some();
    if x.response_cc.must_understand && !understood {
        return DoNotStore(NotStorable::Status);
    }
    // A surrogate obeys Surrogate-Control over Cache-Control (Edge Architecture 1.0 §2.2.1).
    let cc_no_store = x.response_cc.no_store
        && x.response_cc.surrogate_max_age.is_none()
        && !x.response_cc.must_understand;
    if cc_no_store || x.response_cc.surrogate_no_store {
        return DoNotStore(NotStorable::ResponseNoStore);
    }
    let validator = has_validator(x.response_headers);
    // no-cache responses are stored to be validated on every use (§5.2.2.4), which needs a
    // validator.
    if x.response_cc.no_cache && !validator {
        return DoNotStore(NotStorable::NoCache);
    }
    if shared && x.response_cc.private {
        return DoNotStore(NotStorable::Private);
    }
    // §3.5: a shared cache stores a response to a request with Authorization only with
    // must-revalidate, public or s-maxage. Other fields that carry a credential (`Cookie`,
    // `X-API-Key`, the user's) are treated the same way: the response may be that caller's
    // alone, and a shared cache would hand it to the next one (Varnish's built-in rules pass
    // such requests for the same reason).
    let credential = x.request_headers.contains_key(header::AUTHORIZATION)
        || x.credentials
            .iter()
            .any(|n| x.request_headers.contains_key(n));
    if shared
        && credential
        && !(x.response_cc.public
            || x.response_cc.must_revalidate
            || x.response_cc.s_maxage.is_some())
    {
        return DoNotStore(NotStorable::Authorization);
    }
    // RFC 9111 §3.1 allows storing `Set-Cookie`, and §7.3 warns that a response can carry
    // what belongs to one user. A shared cache that replays a stored `Set-Cookie` hands one
    // caller's session to every other caller: not stored in a shared cache unless the user
    // opts in (Varnish, Fastly and Cloudflare do not cache such responses by default either).
    if shared && !x.shared_set_cookie && x.response_headers.contains_key(header::SET_COOKIE) {
        return DoNotStore(NotStorable::SetCookie);
    }
    if vary_names(x.response_headers) == VaryNames::Star {
        return DoNotStore(NotStorable::VaryStar);
    }
    let lifetime = freshness_lifetime(
        x.response_headers,
        x.response_cc,
        x.status,
        shared,
        x.response_time,
    );
    let lifetime = match lifetime {
        Some(lifetime) => lifetime,
        // Without any freshness a validator still makes it reusable after validation.
        None if validator && x.response_cc.no_cache => Duration::ZERO,
        None => return DoNotStore(NotStorable::NoFreshness),
    };
    if lifetime <= x.age && !validator {
        return DoNotStore(NotStorable::Stale);
    }
    Storability::Store { lifetime }
}

/// §3.3: a `206` the cache may keep as an incomplete entry (see `ranges`).
fn storable_incomplete(x: &Exchange<'_>) -> bool {
    *x.method == Method::GET
        && matches!(
            parse_range(x.request_headers),
            Some(RangeRequest::Single(_))
        )
        && storable_partial(x.response_headers).is_some()
        && matches!(vary_names(x.response_headers), VaryNames::Names(names) if names.is_empty())
}

/// The user's expiry settings, as they combine with the headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserExpiry<'a> {
    /// The lifetime the user set for this request (per-request, else per-URL, else default);
    /// `None`: the headers alone decide.
    pub(crate) lifetime: Option<Duration>,
    /// `cache_control(true)` (the default): explicit response freshness wins over `value`.
    pub(crate) honor_headers: bool,
    /// The statuses the user allows; `None`: RFC 9110 §15.1's heuristically cacheable set is
    /// what the user's lifetimes apply to.
    pub(crate) statuses: Option<&'a [StatusCode]>,
}

/// Combines the header verdict with the user's expiry: which lifetime an entry gets, and where
/// it comes from. Precedence: a response's explicit freshness (§4.2.1) wins unless the user
/// turned header handling off; the user's value then replaces the heuristic (§4.2.2 allows any
/// heuristic, and a user's configured lifetime is the most informed one) and makes responses
/// without any freshness storable. What protects privacy or correctness (`no-store`, `private`
/// in a shared cache, `Authorization`, `Vary: *`, statuses) is never overridden.
pub(crate) fn with_user_expiry(
    x: &Exchange<'_>,
    shared: bool,
    verdict: Storability,
    user: UserExpiry<'_>,
) -> (Storability, Expiry) {
    let Some(user_lifetime) = user.lifetime else {
        return (verdict, Expiry::Headers);
    };
    let explicit =
        explicit_lifetime(x.response_headers, x.response_cc, shared, x.response_time).is_some();
    if user.honor_headers && explicit {
        return (verdict, Expiry::Headers);
    }
    let status_ok = match user.statuses {
        Some(list) => list.contains(&x.status),
        None => heuristically_cacheable(x.status),
    };
    let overridable = match &verdict {
        Storability::Store { .. } => true,
        Storability::DoNotStore(NotStorable::NoFreshness) => true,
        Storability::DoNotStore(NotStorable::Stale | NotStorable::NoCache) => !user.honor_headers,
        Storability::DoNotStore(_) => false,
    };
    if !status_ok || !overridable {
        return (verdict, Expiry::Headers);
    }
    // ExpireImmediately: "store only if a validator exists, revalidate on every use".
    if user_lifetime.is_zero() && !has_validator(x.response_headers) {
        return (Storability::DoNotStore(NotStorable::Stale), Expiry::Headers);
    }
    let expiry = if user.honor_headers {
        Expiry::Fill(user_lifetime)
    } else {
        Expiry::Override(user_lifetime)
    };
    (
        Storability::Store {
            lifetime: user_lifetime,
        },
        expiry,
    )
}

#[cfg(test)]
#[path = "storable_tests.rs"]
mod tests;
