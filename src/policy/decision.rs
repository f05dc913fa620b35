//! Can a stored response be reused for this request? (RFC 9111 §4)

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::cache_control::{RequestDirectives, ResponseDirectives};
use super::freshness::{freshness_lifetime, AgeInputs};
use super::vary;
use crate::entry::EntryHead;

/// The verdict on one stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub(crate) enum Decision {
    /// Serve it; its current age is `age` (sent as the `Age` header, §5.1).
    Fresh { age: Duration },
    /// Stored, but not fresh enough for this request: go to the origin.
    Stale,
    /// Stored for another variant of this URL (§4.1): go to the origin.
    NoMatch,
}

/// RFC 9111 §4: "a cache MUST NOT reuse a stored response unless: the presented target URI and
/// that of the stored response match (the key does that), and the request method associated with
/// the stored response allows it to be used for the presented request; and request header fields
/// nominated by the stored response (if any) match those presented (see Section 4.1); ... and the
/// stored response is one of the following: fresh (see Section 4.2), or allowed to be served
/// stale (see Section 4.2.4), or successfully validated (see Section 4.3)."
pub(crate) fn decide(
    stored: &EntryHead,
    request_headers: &HeaderMap,
    request_cc: &RequestDirectives,
    shared: bool,
    now: SystemTime,
    protect: vary::Protect<'_>,
) -> Decision {
    if !vary::matches(&stored.vary, request_headers, protect) {
        return Decision::NoMatch;
    }
    let cc = ResponseDirectives::parse(&stored.headers);
    // §5.2.2.4: no-cache in the response: "the response MUST NOT be used to satisfy any other
    // request without forwarding it for validation and receiving a successful response".
    // §5.2.1.4: no-cache in the request: the client wants validation too.
    if cc.no_cache || request_cc.no_cache {
        return Decision::Stale;
    }
    let age = AgeInputs::from_headers(&stored.headers, stored.request_time, stored.response_time)
        .current_age(now);
    // §4.2: "A stored response is considered "fresh" if its age has not yet exceeded its
    // freshness lifetime."
    let lifetime = freshness_lifetime(
        &stored.headers,
        &cc,
        stored.status,
        shared,
        stored.response_time,
    )
    .unwrap_or(Duration::ZERO);
    if age >= lifetime {
        return Decision::Stale;
    }
    // §5.2.1.1: max-age "indicates that the client prefers a response whose age is less than or
    // equal to the specified number of seconds".
    if request_cc.max_age.is_some_and(|max| age.as_secs() > max) {
        return Decision::Stale;
    }
    Decision::Fresh { age }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::VaryValue;
    use http::{header, HeaderValue, Method, StatusCode, Version};
    use std::time::UNIX_EPOCH;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn head(cc: &'static str) -> EntryHead {
        let mut headers = HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
        EntryHead {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers,
            request_time: t(0),
            response_time: t(0),
            method: Method::GET,
            uri: "http://e.com/".into(),
            vary: vec![],
        }
    }

    fn no_digest(_: &http::HeaderName, _: &[u8]) -> Option<[u8; 32]> {
        None
    }

    #[test]
    fn fresh_until_max_age() {
        let h = head("max-age=60");
        let req = HeaderMap::new();
        let rcc = RequestDirectives::default();
        let d = |now| decide(&h, &req, &rcc, false, now, &no_digest);
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
        assert_eq!(d(t(60)), Decision::Stale);
        assert_eq!(d(t(10_000)), Decision::Stale);
    }

    #[test]
    fn request_max_age_and_vary() {
        let mut h = head("max-age=60");
        let req = HeaderMap::new();
        let rcc = RequestDirectives {
            max_age: Some(10),
            ..Default::default()
        };
        assert_eq!(
            decide(&h, &req, &rcc, false, t(11), &no_digest),
            Decision::Stale
        );
        assert!(matches!(
            decide(&h, &req, &rcc, false, t(10), &no_digest),
            Decision::Fresh { .. }
        ));
        h.vary = vec![(header::ACCEPT, VaryValue::Clear("a".into()))];
        let rcc = RequestDirectives::default();
        assert_eq!(
            decide(&h, &req, &rcc, false, t(1), &no_digest),
            Decision::NoMatch
        );
    }
}
