//! Pure HTTP caching rules (RFC 9111, RFC 5861): no I/O, no bodies, no clock reads.
//!
//! Every function takes the time it needs as a parameter, so it can be tested table by table
//! with fixed dates. The request path (`future/`) and the inspector are the callers; this
//! module imports nothing from them: only `http`, `bytes`, `httpdate`, `sfv`, `std` and its own types
//! (checked by `tests/architecture.rs`).
//!
//! `docs/http-caching.md` maps every implemented section to its function and tests.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, StatusCode};

pub(crate) mod cache_control;
pub(crate) mod dates;
pub(crate) mod decision;
pub(crate) mod fields;
pub(crate) mod fresh;
pub(crate) mod freshness;
pub(crate) mod invalidation;
pub(crate) mod ranges;
pub(crate) mod retention;
pub(crate) mod storable;
pub(crate) mod targeted;
pub(crate) mod validation;
pub(crate) mod vary;

pub(crate) use cache_control::{RequestDirectives, ResponseDirectives};
pub(crate) use fresh::{Fresh, StaleRules};
pub(crate) use freshness::Expiry;
pub(crate) use vary::VaryValue;

/// What the rules read of a stored response: a borrowed view, so that the storage format
/// (`entry.rs`, `envelope/`) and the rules stay apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<'a> {
    pub(crate) status: StatusCode,
    /// Response header fields as stored (§3.1's exceptions removed).
    pub(crate) headers: &'a HeaderMap,
    /// §4.2.3 `request_time`: when the request that produced it was sent.
    pub(crate) request_time: SystemTime,
    /// §4.2.3 `response_time`: when it was received.
    pub(crate) response_time: SystemTime,
    /// The selecting request header values it was stored with (§4.1).
    pub(crate) vary: &'a [(HeaderName, VaryValue)],
    /// Where its freshness lifetime comes from.
    pub(crate) expiry: Expiry,
    /// Its freshness inputs as its writer computed them (see `fresh`), if sealed with it.
    pub(crate) fresh: Option<Fresh>,
}

/// The settings of the layer that reuse decisions depend on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reuse<'a> {
    /// Acting as this surrogate: `Surrogate-Control` applies.
    pub(crate) surrogate: Option<&'a str>,
    /// RFC 9213 target list: the targeted fields obeyed over `Cache-Control`, in order.
    pub(crate) targets: &'a [HeaderName],
    /// Shared-cache rules (§5.2.2.7, §5.2.2.8, §5.2.2.10).
    pub(crate) shared: bool,
    /// Serve a stale response at most this stale when the origin fails, even without
    /// `stale-if-error` (an out-of-band contract in §4.2.4's words).
    pub(crate) stale_on_error: Option<std::time::Duration>,
    /// Names the rules above that sealed freshness inputs depend on (`fresh::rules_id`); 0
    /// matches none.
    pub(crate) id: u64,
}

/// The response directives that apply for a cache with these settings: the first valid targeted
/// field of its target list (RFC 9213 §2.1) instead of `Cache-Control`, then `Surrogate-Control`
/// when it acts as a surrogate.
pub(crate) fn directives_for(headers: &HeaderMap, reuse: &Reuse<'_>) -> ResponseDirectives {
    let base = targeted::parse(headers, reuse.targets)
        .unwrap_or_else(|| ResponseDirectives::parse(headers));
    ResponseDirectives::with_surrogate(base, headers, reuse.surrogate)
}
