//! Can a stored response be reused for this request? (RFC 9111 §4)

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};

use super::cache_control::RequestDirectives;
use super::fresh::StaleRules;
use super::vary;
use super::{Reuse, Stored};

/// The verdict on one stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub(crate) enum Decision {
    /// Serve it; its current age is `age` (sent as the `Age` header, §5.1).
    Fresh { age: Duration },
    /// Stale, but the request's `max-stale` accepts it (§5.2.1.2): serve it.
    StaleAccepted { age: Duration },
    /// Stored, but not fresh enough for this request: validate it or go to the origin.
    /// `if_error` says whether it may still be served if the origin fails (RFC 5861 §4, or the
    /// user's `serve_stale_on_error`), i.e. how stale it may be then. `while_revalidate`: it may
    /// be served at once while it is revalidated in the background (RFC 5861 §3).
    Stale {
        age: Duration,
        if_error: Option<Duration>,
        while_revalidate: bool,
    },
    /// Stored for another variant of this URL (§4.1): go to the origin.
    NoMatch,
}

impl Decision {
    /// The user's modes that accept any stored response (`ForceCache`, `OnlyIfCached`): a stale
    /// one is then served as if `max-stale` had no limit (§5.2.1.2), even where a directive
    /// would forbid serving it stale: the user asked for exactly that.
    pub(crate) fn accepting_any_stale(self, accept: bool) -> Self {
        match self {
            Decision::Stale { age, .. } if accept => Decision::StaleAccepted { age },
            other => other,
        }
    }
}

/// RFC 9111 §4: a stored response is reused only if "the request method associated with the
/// stored response allows it to be used for the presented request": the method whose stored
/// responses a request is looked up under. A HEAD is answered from a stored GET (RFC 9110
/// §9.3.2: "identical to GET except that the server MUST NOT send content").
pub(crate) fn stored_method(request: &Method) -> &Method {
    if request == Method::HEAD {
        &Method::GET
    } else {
        request
    }
}

/// RFC 5861 §4: stale-if-error applies "when an error is encountered", and "an error is any
/// situation that would result in a 500, 502, 503, or 504 HTTP response status code being
/// returned" (a transport error counts too; the caller handles that one).
pub(crate) fn is_origin_error(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// RFC 9111 §4: "a cache MUST NOT reuse a stored response unless: the presented target URI and
/// that of the stored response match (the key does that), and the request method associated with
/// the stored response allows it to be used for the presented request; and request header fields
/// nominated by the stored response (if any) match those presented (see Section 4.1); ... and the
/// stored response is one of the following: fresh (see Section 4.2), or allowed to be served
/// stale (see Section 4.2.4), or successfully validated (see Section 4.3)."
#[cfg(test)]
pub(crate) fn decide(
    stored: &Stored<'_>,
    request_headers: &HeaderMap,
    request_cc: &RequestDirectives,
    config: &Reuse<'_>,
    now: SystemTime,
    protect: vary::Protect<'_>,
) -> Decision {
    assess(stored, request_headers, request_cc, config, now, protect).0
}

/// [`decide`], plus the stored response's freshness lifetime (zero for `NoMatch`).
pub(crate) fn assess(
    stored: &Stored<'_>,
    request_headers: &HeaderMap,
    request_cc: &RequestDirectives,
    config: &Reuse<'_>,
    now: SystemTime,
    protect: vary::Protect<'_>,
) -> (Decision, Duration) {
    if !vary::matches(stored.vary, request_headers, protect) {
        return (Decision::NoMatch, Duration::ZERO);
    }
    let (age, lifetime, cc) = super::fresh::inputs(stored, config);
    let age = age.current_age(now);
    (judge(age, lifetime, &cc, request_cc, config), lifetime)
}

/// §4.2: "A stored response is considered "fresh" if its age has not yet exceeded its freshness
/// lifetime", then the request's and response's directives.
fn judge(
    age: Duration,
    lifetime: Duration,
    cc: &StaleRules,
    request_cc: &RequestDirectives,
    config: &Reuse<'_>,
) -> Decision {
    let staleness = age.saturating_sub(lifetime);
    // §4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an explicit
    // in-protocol directive (e.g., by a no-cache response directive, a must-revalidate response
    // directive, or an applicable s-maxage or proxy-revalidate response directive)".
    let stale_forbidden = cc.no_cache
        || cc.must_revalidate
        || (config.shared && (cc.proxy_revalidate || cc.s_maxage));
    // RFC 5861 §4: stale-if-error, from the response or the request; or the user's setting.
    let if_error = if stale_forbidden {
        None
    } else {
        [cc.stale_if_error, request_cc.stale_if_error]
            .into_iter()
            .flatten()
            .max()
            .map(Duration::from_secs)
            .or(config.stale_on_error)
            .filter(|window| staleness <= *window)
    };
    let stale = Decision::Stale {
        age,
        if_error,
        while_revalidate: false,
    };
    // §5.2.2.4 / §5.2.1.4: no-cache, in the response or the request: validate before use.
    if cc.no_cache || request_cc.no_cache {
        return stale;
    }
    if age >= lifetime {
        // §5.2.1.2: max-stale "indicates that the client will accept a response that has
        // exceeded its freshness lifetime", by at most the given number of seconds.
        let accepted = match request_cc.max_stale {
            Some(None) => true,
            Some(Some(max)) => staleness <= Duration::from_secs(max),
            None => false,
        };
        if accepted && !stale_forbidden {
            return Decision::StaleAccepted { age };
        }
        // RFC 5861 §3: "the cache MAY serve the response in which it appears after it becomes
        // stale, up to the indicated number of seconds", while it revalidates.
        let while_revalidate = !stale_forbidden
            && cc
                .stale_while_revalidate
                .is_some_and(|window| staleness <= Duration::from_secs(window));
        return Decision::Stale {
            age,
            if_error,
            while_revalidate,
        };
    }
    // §5.2.1.1: max-age "indicates that the client prefers a response whose age is less than or
    // equal to the specified number of seconds".
    if request_cc.max_age.is_some_and(|max| age.as_secs() > max) {
        return stale;
    }
    // §5.2.1.3: min-fresh: "the client prefers a response whose freshness lifetime is no less
    // than its current age plus the specified time in seconds".
    if request_cc
        .min_fresh
        .is_some_and(|min| lifetime.saturating_sub(age) < Duration::from_secs(min))
    {
        return stale;
    }
    Decision::Fresh { age }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Expiry;
    use crate::policy::VaryValue;
    use http::{header, HeaderName, HeaderValue};
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    /// The owned parts of a stored response that a [`Stored`] view borrows.
    struct Head {
        headers: HeaderMap,
        vary: Vec<(HeaderName, VaryValue)>,
    }

    fn head(cc: &'static str) -> Head {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
        Head {
            headers,
            vary: vec![],
        }
    }

    fn decide(
        h: &Head,
        req: &HeaderMap,
        rcc: &RequestDirectives,
        reuse: &Reuse<'_>,
        now: SystemTime,
        protect: vary::Protect<'_>,
    ) -> Decision {
        let stored = Stored {
            status: StatusCode::OK,
            headers: &h.headers,
            request_time: t(0),
            response_time: t(0),
            vary: &h.vary,
            expiry: Expiry::Headers,
            fresh: None,
        };
        super::decide(&stored, req, rcc, reuse, now, protect)
    }

    const NO_DIGEST: vary::Matching<'static> = vary::Matching {
        digest: &no_digest,
        language_ties: false,
    };

    /// A stand-in digest: these tables test decisions, not digests.
    fn no_digest(_: &http::HeaderName, value: &[u8]) -> [u8; 32] {
        let mut d = [0u8; 32];
        for (i, b) in value.iter().enumerate() {
            d[i % 32] ^= b;
        }
        d
    }

    #[test]
    fn head_is_looked_up_under_get() {
        assert_eq!(stored_method(&Method::HEAD), Method::GET);
        assert_eq!(stored_method(&Method::GET), Method::GET);
        assert_eq!(stored_method(&Method::POST), Method::POST);
    }

    #[test]
    fn only_500_502_503_504_are_origin_errors() {
        for (code, want) in [
            (500, true),
            (502, true),
            (503, true),
            (504, true),
            (501, false),
            (404, false),
            (200, false),
        ] {
            assert_eq!(
                is_origin_error(StatusCode::from_u16(code).unwrap()),
                want,
                "{code}"
            );
        }
    }

    #[test]
    fn modes_that_accept_any_stale_response() {
        let secs = Duration::from_secs;
        let stale = Decision::Stale {
            age: secs(9),
            if_error: None,
            while_revalidate: false,
        };
        assert_eq!(
            stale.accepting_any_stale(true),
            Decision::StaleAccepted { age: secs(9) }
        );
        assert_eq!(stale.accepting_any_stale(false), stale);
        let fresh = Decision::Fresh { age: secs(1) };
        assert_eq!(fresh.accepting_any_stale(true), fresh);
        assert_eq!(
            Decision::NoMatch.accepting_any_stale(true),
            Decision::NoMatch
        );
    }

    #[test]
    fn fresh_until_max_age() {
        let h = head("max-age=60");
        let req = HeaderMap::new();
        let rcc = RequestDirectives::default();
        let d = |now| decide(&h, &req, &rcc, &Reuse::default(), now, &NO_DIGEST);
        assert_eq!(
            d(t(0)),
            Decision::Fresh {
                age: Duration::ZERO
            }
        );
        assert_eq!(
            d(t(59)),
            Decision::Fresh {
                age: Duration::from_secs(59)
            }
        );
        assert!(matches!(d(t(60)), Decision::Stale { if_error: None, .. }));
        assert!(matches!(d(t(10_000)), Decision::Stale { .. }));
    }

    #[test]
    fn request_max_age_and_vary() {
        let mut h = head("max-age=60");
        let req = HeaderMap::new();
        let rcc = RequestDirectives {
            max_age: Some(10),
            ..Default::default()
        };
        let r = Reuse::default();
        assert!(matches!(
            decide(&h, &req, &rcc, &r, t(11), &NO_DIGEST),
            Decision::Stale { .. }
        ));
        assert!(matches!(
            decide(&h, &req, &rcc, &r, t(10), &NO_DIGEST),
            Decision::Fresh { .. }
        ));
        h.vary = vec![(
            header::ACCEPT,
            VaryValue::Digest(no_digest(&header::ACCEPT, b"a")),
        )];
        let rcc = RequestDirectives::default();
        assert_eq!(
            decide(&h, &req, &rcc, &r, t(1), &NO_DIGEST),
            Decision::NoMatch
        );
    }

    #[test]
    fn staleness_table() {
        let req = HeaderMap::new();
        let rq = |s: &str| {
            RequestDirectives::parse(&{
                let mut h = HeaderMap::new();
                h.insert(header::CACHE_CONTROL, HeaderValue::from_str(s).unwrap());
                h
            })
        };
        let private = Reuse::default();
        let shared = Reuse {
            shared: true,
            ..Reuse::default()
        };
        let lenient = Reuse {
            stale_on_error: Some(Duration::from_secs(100)),
            ..Reuse::default()
        };
        let at = |cc: &'static str, rcc: &str, reuse: &Reuse<'_>, secs| {
            decide(&head(cc), &req, &rq(rcc), reuse, t(secs), &NO_DIGEST)
        };
        use Decision::*;
        let secs = Duration::from_secs;
        // max-stale
        assert_eq!(
            at("max-age=60", "max-stale", &private, 1000),
            StaleAccepted { age: secs(1000) }
        );
        assert_eq!(
            at("max-age=60", "max-stale=10", &private, 70),
            StaleAccepted { age: secs(70) }
        );
        assert!(matches!(
            at("max-age=60", "max-stale=10", &private, 71),
            Stale { .. }
        ));
        assert!(matches!(
            at("max-age=60, must-revalidate", "max-stale", &private, 70),
            Stale { .. }
        ));
        // min-fresh
        assert!(matches!(
            at("max-age=60", "min-fresh=10", &private, 50),
            Fresh { .. }
        ));
        assert!(matches!(
            at("max-age=60", "min-fresh=10", &private, 51),
            Stale { .. }
        ));
        // stale-if-error windows
        assert_eq!(
            at("max-age=60, stale-if-error=30", "", &private, 90),
            Stale {
                age: secs(90),
                if_error: Some(secs(30)),
                while_revalidate: false
            }
        );
        assert_eq!(
            at("max-age=60, stale-if-error=30", "", &private, 91),
            Stale {
                age: secs(91),
                if_error: None,
                while_revalidate: false
            }
        );
        assert_eq!(
            at("max-age=60", "stale-if-error=5", &private, 65),
            Stale {
                age: secs(65),
                if_error: Some(secs(5)),
                while_revalidate: false
            }
        );
        assert_eq!(
            at(
                "max-age=60, stale-if-error=30, must-revalidate",
                "",
                &private,
                70
            ),
            Stale {
                age: secs(70),
                if_error: None,
                while_revalidate: false
            }
        );
        assert_eq!(
            at(
                "max-age=60, stale-if-error=30, proxy-revalidate",
                "",
                &shared,
                70
            ),
            Stale {
                age: secs(70),
                if_error: None,
                while_revalidate: false
            }
        );
        assert_eq!(
            at(
                "max-age=60, stale-if-error=30, proxy-revalidate",
                "",
                &private,
                70
            ),
            Stale {
                age: secs(70),
                if_error: Some(secs(30)),
                while_revalidate: false
            }
        );
        assert_eq!(
            at("max-age=60", "", &lenient, 160),
            Stale {
                age: secs(160),
                if_error: Some(secs(100)),
                while_revalidate: false
            }
        );
        assert_eq!(
            at("max-age=60", "", &lenient, 161),
            Stale {
                age: secs(161),
                if_error: None,
                while_revalidate: false
            }
        );
        // stale-while-revalidate windows
        let swr = "max-age=60, stale-while-revalidate=30";
        assert!(matches!(
            at(swr, "", &private, 90),
            Stale {
                while_revalidate: true,
                ..
            }
        ));
        assert!(matches!(
            at(swr, "", &private, 91),
            Stale {
                while_revalidate: false,
                ..
            }
        ));
        let swr_mr = "max-age=60, stale-while-revalidate=30, must-revalidate";
        assert!(matches!(
            at(swr_mr, "", &private, 70),
            Stale {
                while_revalidate: false,
                ..
            }
        ));
    }
}
