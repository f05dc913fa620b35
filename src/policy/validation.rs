//! Validation: conditional requests and 304 merging (RFC 9111 §4.3, §3.2).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::fields::strip_unstorable;
use super::freshness::http_date;
use super::Stored;

/// RFC 9111 §4.3.1: "When generating a conditional request for validation, a cache ... MUST
/// send the relevant entity tags (using If-Match, If-None-Match, or If-Range) if the entity
/// tags were provided in the stored response(s) being validated" and "SHOULD send the
/// Last-Modified value (using If-Modified-Since) if the request is not for a subrange, a single
/// stored response is being validated, and that response contains a Last-Modified value."
pub(crate) fn conditional_headers(stored: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let etags: Vec<&HeaderValue> = stored.get_all(header::ETAG).iter().collect();
    if let [etag] = etags.as_slice() {
        out.push((header::IF_NONE_MATCH, (*etag).clone()));
    }
    if let Some(lm) = stored.get(header::LAST_MODIFIED) {
        out.push((header::IF_MODIFIED_SINCE, lm.clone()));
    }
    out
}

/// Whether the request carries preconditions the cache does not evaluate (`If-Match`,
/// `If-Unmodified-Since`): such requests go to the origin untouched. (`If-Range` is evaluated
/// with the range it goes with: `ranges::if_range_holds`.)
pub(crate) fn has_unsupported_preconditions(request: &HeaderMap) -> bool {
    [header::IF_MATCH, header::IF_UNMODIFIED_SINCE]
        .iter()
        .any(|h| request.contains_key(h))
}

/// Whether the request carries `If-None-Match` or `If-Modified-Since` (RFC 9110 §13.1.2-3).
pub(crate) fn is_conditional(request: &HeaderMap) -> bool {
    request.contains_key(header::IF_NONE_MATCH) || request.contains_key(header::IF_MODIFIED_SINCE)
}

/// RFC 9111 §4.3.2: a cache answering a conditional request from a stored response evaluates
/// the preconditions against it. `true`: the client's copy is current, answer `304`.
///
/// RFC 9110 §13.1.2: `If-None-Match` uses the weak comparison and wins over `If-Modified-Since`
/// (§13.1.3: "A recipient MUST ignore If-Modified-Since if the request contains an
/// If-None-Match header field"). For `If-Modified-Since` the stored `Last-Modified` is used,
/// else its `Date` (RFC 9111 §4.3.2), else when it was received.
pub(crate) fn not_modified(stored: &Stored<'_>, request: &HeaderMap) -> bool {
    let inm: Vec<&HeaderValue> = request.get_all(header::IF_NONE_MATCH).iter().collect();
    if !inm.is_empty() {
        let Some(etag) = stored
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        let ours = opaque(etag);
        return inm
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == "*" || opaque(tag) == ours);
    }
    let Some(Ok(since)) = http_date(request, header::IF_MODIFIED_SINCE) else {
        return false;
    };
    let modified = match http_date(stored.headers, header::LAST_MODIFIED) {
        Some(Ok(lm)) => lm,
        _ => match http_date(stored.headers, header::DATE) {
            Some(Ok(date)) => date,
            _ => stored.response_time,
        },
    };
    modified <= since
}

/// The `304` a cache sends for a stored response (RFC 9110 §15.4.5): the fields a 200 would
/// carry among `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires`, `Vary`, and
/// `Last-Modified`; no content.
pub(crate) fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// RFC 9111 §3.2: the cache "MUST add each header field in the provided response to the stored
/// response, replacing field values that are already present, with the following exceptions:
/// Header fields excepted from storage in Section 3.1, Header fields that the cache's stored
/// response depends upon, ..., [and] the Content-Length header field."
///
/// The stored body is reused as is, so the fields that describe its bytes (`Content-Length`,
/// `Content-Encoding`, `Content-Range`, `Content-MD5`) and its validator (`ETag`) keep their
/// stored values; every other field, `Content-Type` included, is updated.
///
/// `None` when the merged fields would not fit in one `HeaderMap` (tens of thousands of field
/// lines; only an origin without an HTTP parser's limits sends that many): the caller then
/// serves the stored response as it is and does not store it again.
pub(crate) fn freshen(stored: &HeaderMap, not_modified: &HeaderMap) -> Option<HeaderMap> {
    let mut update = not_modified.clone();
    strip_unstorable(&mut update);
    for keep in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::ETAG,
    ] {
        update.remove(keep);
    }
    update.remove("content-md5");
    let mut merged = stored.clone();
    for name in update.keys() {
        merged.remove(name);
    }
    for (name, value) in update.iter() {
        merged.try_append(name.clone(), value.clone()).ok()?;
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fields::has_validator;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn conditional_request_headers() {
        let stored = map(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 14 Nov 2023 20:26:40 GMT"),
        ]);
        let got = conditional_headers(&stored);
        assert_eq!(
            got[0],
            (header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""))
        );
        assert_eq!(got[1].0, header::IF_MODIFIED_SINCE);
        assert!(has_validator(&stored));
        assert!(!has_validator(&map(&[("cache-control", "max-age=1")])));
        assert!(conditional_headers(&map(&[])).is_empty());
    }

    #[test]
    fn a_304_updates_headers_but_never_content_length() {
        let stored = map(&[
            ("content-length", "5"),
            ("content-type", "text/plain"),
            ("cache-control", "max-age=10"),
            ("x-old", "kept"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        let not_modified = map(&[
            ("content-length", "0"),
            ("content-type", "text/html"),
            ("cache-control", "max-age=60"),
            ("set-cookie", "c=3"),
            ("connection", "close"),
            ("x-new", "added"),
        ]);
        let merged = freshen(&stored, &not_modified).unwrap();
        assert_eq!(merged["content-length"], "5");
        assert_eq!(merged["content-type"], "text/html");
        assert_eq!(merged["cache-control"], "max-age=60");
        assert_eq!(merged["x-old"], "kept");
        assert_eq!(merged["x-new"], "added");
        assert_eq!(
            merged.get_all("set-cookie").iter().collect::<Vec<_>>(),
            ["c=3"]
        );
        assert!(!merged.contains_key("connection"));
    }

    #[test]
    fn a_304_too_large_to_merge_is_no_merge_and_no_panic() {
        let mut stored = HeaderMap::new();
        for i in 0..1_000u32 {
            stored.insert(
                HeaderName::from_bytes(format!("x-a-{i}").as_bytes()).unwrap(),
                HeaderValue::from(i),
            );
        }
        let mut not_modified = HeaderMap::new();
        for i in 0..24_000u32 {
            not_modified.insert(
                HeaderName::from_bytes(format!("x-b-{i}").as_bytes()).unwrap(),
                HeaderValue::from(i),
            );
        }
        assert!(freshen(&stored, &not_modified).is_none());
        assert!(freshen(&stored, &HeaderMap::new()).is_some());
    }

    #[test]
    fn requests_with_their_own_preconditions() {
        assert!(is_conditional(&map(&[("if-none-match", "\"x\"")])));
        assert!(is_conditional(&map(&[(
            "if-modified-since",
            "Tue, 14 Nov 2023 20:26:40 GMT"
        )])));
        assert!(!is_conditional(&map(&[("accept", "*/*")])));
    }

    #[test]
    fn unsupported_preconditions() {
        assert!(has_unsupported_preconditions(&map(&[(
            "if-match", "\"x\""
        )])));
        assert!(!has_unsupported_preconditions(&map(&[(
            "if-none-match",
            "\"x\""
        )])));
    }

    fn stored(headers: &[(&'static str, &'static str)]) -> HeaderMap {
        map(headers)
    }

    /// `not_modified` on a stored response with these headers, received at 1,700,000,000 s.
    fn not_modified(stored: &HeaderMap, request: &HeaderMap) -> bool {
        let view = crate::policy::Stored {
            status: http::StatusCode::OK,
            headers: stored,
            request_time: std::time::UNIX_EPOCH,
            response_time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            vary: &[],
            expiry: crate::policy::Expiry::Headers,
            fresh: None,
        };
        super::not_modified(&view, request)
    }

    #[test]
    fn evaluating_client_preconditions_against_a_stored_response() {
        let tagged = stored(&[
            ("etag", "W/\"abc\""),
            ("last-modified", "Tue, 14 Nov 2023 20:00:00 GMT"),
        ]);
        type Case = (&'static [(&'static str, &'static str)], bool);
        let cases: &[Case] = &[
            (&[("if-none-match", "\"abc\"")], true), // weak comparison
            (&[("if-none-match", "W/\"abc\"")], true),
            (&[("if-none-match", "\"x\", \"abc\"")], true),
            (&[("if-none-match", "*")], true),
            (&[("if-none-match", "\"other\"")], false),
            // If-None-Match wins over If-Modified-Since.
            (
                &[
                    ("if-none-match", "\"other\""),
                    ("if-modified-since", "Tue, 14 Nov 2023 21:00:00 GMT"),
                ],
                false,
            ),
            (
                &[("if-modified-since", "Tue, 14 Nov 2023 20:00:00 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Tue, 14 Nov 2023 21:00:00 GMT")],
                true,
            ),
            (
                &[("if-modified-since", "Tue, 14 Nov 2023 19:00:00 GMT")],
                false,
            ),
            (&[("if-modified-since", "garbage")], false),
        ];
        for (request, want) in cases {
            assert_eq!(not_modified(&tagged, &map(request)), *want, "{request:?}");
        }
        // No ETag stored: If-None-Match with a tag cannot match.
        assert!(!not_modified(
            &stored(&[]),
            &map(&[("if-none-match", "\"abc\"")])
        ));
        let h = not_modified_headers(&map(&[
            ("etag", "\"a\""),
            ("content-length", "5"),
            ("cache-control", "max-age=1"),
        ]));
        assert_eq!(h.len(), 2);
        assert!(!h.contains_key("content-length"));
    }
}
