//! Validation: conditional requests and 304 merging (RFC 9111 §4.3, §3.2).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::storable::strip_unstorable;

/// Whether a stored response can be validated (it has an entity tag or a modification date).
pub(crate) fn has_validator(stored: &HeaderMap) -> bool {
    stored.contains_key(header::ETAG) || stored.contains_key(header::LAST_MODIFIED)
}

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

/// Whether the request carries preconditions of its own (RFC 9110 §13.1). Such requests are
/// passed to the origin untouched: the cache does not evaluate them against its entries.
pub(crate) fn is_conditional(request: &HeaderMap) -> bool {
    [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|h| request.contains_key(h))
}

/// RFC 9111 §3.2: the cache "MUST add each header field in the provided response to the stored
/// response, replacing field values that are already present, with the following exceptions:
/// Header fields excepted from storage in Section 3.1, Header fields that the cache's stored
/// response depends upon, ..., [and] the Content-Length header field."
///
/// The stored body is reused as is, so the fields that describe its bytes (`Content-Length`,
/// `Content-Encoding`, `Content-Range`, `Content-Type`) keep their stored values.
pub(crate) fn freshen(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let mut update = not_modified.clone();
    strip_unstorable(&mut update);
    for keep in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::CONTENT_RANGE,
        header::CONTENT_TYPE,
    ] {
        update.remove(keep);
    }
    let mut merged = stored.clone();
    for name in update.keys() {
        merged.remove(name);
    }
    for (name, value) in update.iter() {
        merged.append(name.clone(), value.clone());
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("cache-control", "max-age=60"),
            ("set-cookie", "c=3"),
            ("connection", "close"),
            ("x-new", "added"),
        ]);
        let merged = freshen(&stored, &not_modified);
        assert_eq!(merged["content-length"], "5");
        assert_eq!(merged["content-type"], "text/plain");
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
    fn requests_with_their_own_preconditions() {
        assert!(is_conditional(&map(&[("if-none-match", "\"x\"")])));
        assert!(is_conditional(&map(&[(
            "if-modified-since",
            "Tue, 14 Nov 2023 20:26:40 GMT"
        )])));
        assert!(!is_conditional(&map(&[("accept", "*/*")])));
    }
}
