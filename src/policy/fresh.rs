//! What a hit needs to judge a stored response, computed once when it is stored: the age
//! calculation's inputs (RFC 9111 §4.2.3: `Age`, `Date`), the freshness lifetime (§4.2.1,
//! §4.2.2 heuristics) and the directives that decide whether it may be served stale (§4.2.4,
//! §5.2.2, RFC 5861). Sealed in the entry's head, so that a hit does not parse `Cache-Control`,
//! `Expires`, `Last-Modified`, `Date` and `Age` again.
//!
//! Only used when it was computed under the same rules (`Reuse::id`: the same target list,
//! surrogate and shared setting, and this module's `RULES_VERSION`) and for the same
//! `response_time` (a `304` that freshens an entry changes it): otherwise the hit computes from
//! the stored headers as before. It is inside the verified head: nobody without the key can set it.

use std::time::{Duration, SystemTime};

use super::cache_control::ResponseDirectives;
use super::freshness::AgeInputs;
use super::{Reuse, Stored};

/// Bumped whenever what [`compute`] derives from the same headers changes (a parsing fix): older
/// entries are then judged from their headers again.
const RULES_VERSION: u8 = 1;

/// A stored response's freshness inputs, as its writer computed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fresh {
    /// The rules they were computed under ([`rules_id`]).
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

/// Names the rules a [`Fresh`] depends on: two layers with the same id compute the same from the
/// same stored response.
pub(crate) fn rules_id(surrogate: Option<&str>, targets: &[http::HeaderName], shared: bool) -> u64 {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    d.update(&[RULES_VERSION, u8::from(shared)]);
    match surrogate {
        Some(s) => {
            d.update(&[1]);
            d.update(&(s.len() as u64).to_be_bytes());
            d.update(s.as_bytes());
        }
        None => d.update(&[0]),
    }
    for t in targets {
        d.update(&(t.as_str().len() as u64).to_be_bytes());
        d.update(t.as_str().as_bytes());
    }
    let digest = d.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    // Never 0: `Reuse::default()` (tests) has id 0 and must not match a computed one.
    u64::from_be_bytes(id) | 1
}

/// The freshness inputs of `stored` under `reuse`'s rules.
pub(crate) fn compute(stored: &Stored<'_>, reuse: &Reuse<'_>) -> Fresh {
    let age = AgeInputs::from_headers(stored.headers, stored.request_time, stored.response_time);
    let (cc, lifetime) = super::decision::lifetime(stored, reuse);
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
    match stored.fresh {
        Some(f) if f.rules == reuse.id && f.response_time == stored.response_time => (
            AgeInputs {
                age_value: f.age_value,
                date_value: f.date_value,
                request_time: stored.request_time,
                response_time: stored.response_time,
            },
            f.lifetime,
            f.stale,
        ),
        _ => {
            let f = compute(stored, reuse);
            (
                AgeInputs {
                    age_value: f.age_value,
                    date_value: f.date_value,
                    request_time: stored.request_time,
                    response_time: stored.response_time,
                },
                f.lifetime,
                f.stale,
            )
        }
    }
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
            id: rules_id(None, &[], false),
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
        let other = Reuse {
            id: rules_id(None, &[], true),
            ..reuse
        };
        assert_ne!(other.id, reuse.id);
        for (fresh, at, reuse) in [
            (Some(sealed), t, &other),
            (Some(sealed), t + Duration::from_secs(1), &reuse),
            (None, t, &reuse),
        ] {
            let (age, lifetime, _) = inputs(&stored(fresh, at), reuse);
            assert_eq!((age.age_value, lifetime), (Duration::ZERO, Duration::ZERO));
        }
        assert_ne!(rules_id(Some("a"), &[], false), rules_id(None, &[], false));
        assert_ne!(
            rules_id(
                None,
                &[http::HeaderName::from_static("cdn-cache-control")],
                false
            ),
            rules_id(None, &[], false)
        );
    }
}
