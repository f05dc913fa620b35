//! What a hit needs to judge a stored response, computed once when it is stored: the age
//! calculation's inputs (RFC 9111 §4.2.3: `Age`, `Date`), the freshness lifetime (§4.2.1,
//! §4.2.2 heuristics) and the directives that decide whether it may be served stale (§4.2.4,
//! §5.2.2, RFC 5861). Sealed in the entry's head, so that a hit does not parse `Cache-Control`,
//! `Expires`, `Last-Modified`, `Date` and `Age` again.
//!
//! Only used when it was computed under the same rules (`Reuse::id`, a digest of the target list,
//! the surrogate and the shared setting, and this module's `RULES_VERSION`: `config.rs`) and for the same
//! `response_time` (a `304` that freshens an entry changes it): otherwise the hit computes from
//! the stored headers as before. It is inside the verified head: nobody without the key can set it.

use std::time::{Duration, SystemTime};

use super::cache_control::ResponseDirectives;
use super::freshness::{freshness_lifetime, AgeInputs};
use super::Expiry;
use super::{Reuse, Stored};

/// Bumped whenever what [`compute`] derives from the same headers changes (a parsing fix): older
/// entries are then judged from their headers again (it is part of `Reuse::id`).
pub(crate) const RULES_VERSION: u8 = 1;

/// A stored response's freshness inputs, as its writer computed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fresh {
    /// The rules they were computed under (`Reuse::id`).
    pub(crate) rules: u64,
    /// The `response_time` they were computed for.
    pub(crate) response_time: SystemTime,
    /// §4.2.3 `age_value`.
    pub(crate) age_value: Duration,
    /// §4.2.3 `date_value`.
    pub(crate) date_value: SystemTime,
    /// §4.2.1 freshness lifetime (the user's, for an expiry the settings gave).
    pub(crate) lifetime: Duration,
    pub(crate) stale: StaleRules,
}

/// The response directives that decide what a stale response may do (§4.2.4, RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StaleRules {
    /// §5.2.2.4 `no-cache` (unqualified).
    pub(crate) no_cache: bool,
    /// §5.2.2.2 `must-revalidate`.
    pub(crate) must_revalidate: bool,
    /// §5.2.2.8 `proxy-revalidate`.
    pub(crate) proxy_revalidate: bool,
    /// §5.2.2.10 `s-maxage` is present.
    pub(crate) s_maxage: bool,
    /// RFC 5861 §4 `stale-if-error`.
    pub(crate) stale_if_error: Option<u64>,
    /// RFC 5861 §3 `stale-while-revalidate`.
    pub(crate) stale_while_revalidate: Option<u64>,
}

impl From<&ResponseDirectives> for StaleRules {
    fn from(cc: &ResponseDirectives) -> Self {
        StaleRules {
            no_cache: cc.no_cache,
            must_revalidate: cc.must_revalidate,
            proxy_revalidate: cc.proxy_revalidate,
            s_maxage: cc.s_maxage.is_some(),
            stale_if_error: cc.stale_if_error,
            stale_while_revalidate: cc.stale_while_revalidate,
        }
    }
}

/// The response directives that apply to a stored response, and its freshness lifetime:
/// §4.2.1 / §4.2.2 from its headers, or what the user's settings recorded with it.
pub(crate) fn lifetime(stored: &Stored<'_>, config: &Reuse<'_>) -> (ResponseDirectives, Duration) {
    lifetime_with(stored, config, None)
}

/// [`lifetime`], with the directives parsed already (`None`: parsed here).
fn lifetime_with(
    stored: &Stored<'_>,
    config: &Reuse<'_>,
    parsed: Option<ResponseDirectives>,
) -> (ResponseDirectives, Duration) {
    let cc = || parsed.unwrap_or_else(|| super::directives_for(stored.headers, config));
    match stored.expiry {
        Expiry::Headers => {
            let cc = cc();
            let lifetime = freshness_lifetime(
                stored.headers,
                &cc,
                stored.status,
                config.shared,
                stored.response_time,
            )
            .unwrap_or(Duration::ZERO);
            (cc, lifetime)
        }
        Expiry::Fill(lifetime) => (cc(), lifetime),
        // `cache_control(false)`: the user asked for the headers to be ignored.
        Expiry::Override(lifetime) => (ResponseDirectives::default(), lifetime),
    }
}

/// The freshness inputs of `stored` under `reuse`'s rules.
pub(crate) fn compute(stored: &Stored<'_>, reuse: &Reuse<'_>) -> Fresh {
    compute_from(stored, reuse, None)
}

/// [`compute`], given what its writer parsed already: the directives `directives_for` gives for
/// `stored.headers` under `reuse`, and the age inputs `AgeInputs::from_headers` gives for them
/// (parsed from fields equal to the stored ones: the writer vouches for that). A miss parsed
/// `Cache-Control` three times and the dates twice before (docs/benchmarks.md).
pub(crate) fn compute_from(
    stored: &Stored<'_>,
    reuse: &Reuse<'_>,
    parsed: Option<(ResponseDirectives, AgeInputs)>,
) -> Fresh {
    let (cc, age) = match parsed {
        Some((cc, age)) => (Some(cc), age),
        None => (
            None,
            AgeInputs::from_headers(stored.headers, stored.request_time, stored.response_time),
        ),
    };
    let (cc, lifetime) = lifetime_with(stored, reuse, cc);
    Fresh {
        rules: reuse.id,
        response_time: stored.response_time,
        age_value: age.age_value,
        date_value: age.date_value,
        lifetime,
        stale: StaleRules::from(&cc),
    }
}

/// What to judge `stored` by: its sealed inputs when they apply, else computed from its headers.
pub(crate) fn inputs(stored: &Stored<'_>, reuse: &Reuse<'_>) -> (AgeInputs, Duration, StaleRules) {
    let f = match stored.fresh {
        Some(f) if f.rules == reuse.id && f.response_time == stored.response_time => f,
        _ => compute(stored, reuse),
    };
    let age = AgeInputs {
        age_value: f.age_value,
        date_value: f.date_value,
        request_time: stored.request_time,
        response_time: stored.response_time,
    };
    (age, f.lifetime, f.stale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, HeaderMap, HeaderValue, StatusCode};
    use std::time::UNIX_EPOCH;

    #[test]
    fn sealed_inputs_are_used_only_for_their_rules_and_response_time() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let reuse = Reuse {
            id: 7,
            ..Reuse::default()
        };
        let sealed = Fresh {
            rules: reuse.id,
            response_time: t,
            age_value: Duration::from_secs(7),
            date_value: t,
            lifetime: Duration::from_secs(600),
            stale: StaleRules::default(),
        };
        let stored = |fresh, response_time| Stored {
            status: StatusCode::OK,
            headers: &headers,
            request_time: t,
            response_time,
            vary: &[],
            expiry: super::super::Expiry::Headers,
            fresh,
        };
        // Its writer's inputs: not parsed again.
        let (age, lifetime, _) = inputs(&stored(Some(sealed), t), &reuse);
        assert_eq!(
            (age.age_value, lifetime),
            (Duration::from_secs(7), Duration::from_secs(600))
        );
        // Other rules, another response time, or none sealed: from the headers.
        let other = Reuse { id: 9, ..reuse };
        for (fresh, at, reuse) in [
            (Some(sealed), t, &other),
            (Some(sealed), t + Duration::from_secs(1), &reuse),
            (None, t, &reuse),
        ] {
            let (age, lifetime, _) = inputs(&stored(fresh, at), reuse);
            assert_eq!((age.age_value, lifetime), (Duration::ZERO, Duration::ZERO));
        }
    }
}
