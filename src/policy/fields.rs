//! Field helpers several rules share (RFC 9110 §8.6, §8.8; RFC 9111 §3.1).

use http::header::{self, HeaderMap, HeaderName};

/// Whether a stored response can be validated (it has an entity tag or a modification date,
/// RFC 9110 §8.8).
pub(crate) fn has_validator(stored: &HeaderMap) -> bool {
    stored.contains_key(header::ETAG) || stored.contains_key(header::LAST_MODIFIED)
}

/// RFC 9110 §8.6: the `Content-Length` a message announces, when it is one valid number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Header fields that are never stored (RFC 9111 §3.1): the `Connection` field and the fields it
/// lists, the other hop-by-hop fields of RFC 9110 §7.6.1, and the proxy-specific fields
/// `Proxy-Authenticate`, `Proxy-Authentication-Info` and `Proxy-Authorization`.
pub(crate) fn strip_unstorable(headers: &mut HeaderMap) {
    strip_unstorable_noting(headers, |_| false);
}

/// [`strip_unstorable`], saying whether it removed a field that `watched` names (one that was
/// present: `Connection: keep-alive` removes nothing watched unless `keep-alive` is).
pub(crate) fn strip_unstorable_noting(
    headers: &mut HeaderMap,
    watched: impl Fn(&HeaderName) -> bool,
) -> bool {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    // Built at compile time (`from_static` checks the name at run time otherwise).
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    const PROXY_AUTHENTICATION_INFO: HeaderName =
        HeaderName::from_static("proxy-authentication-info");
    let fixed = [
        header::CONNECTION,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHENTICATION_INFO,
    ];
    let mut removed_watched = false;
    for name in listed.into_iter().chain(fixed) {
        if headers.remove(&name).is_some() && watched(&name) {
            removed_watched = true;
        }
    }
    removed_watched
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn stripping_says_whether_a_watched_field_went() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-a"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        let watch_cc = |n: &HeaderName| n == header::CACHE_CONTROL;
        // `x-a` is listed but absent; `keep-alive` is removed but not watched.
        assert!(!strip_unstorable_noting(&mut h.clone(), watch_cc));
        assert!(strip_unstorable_noting(&mut h.clone(), |n| n == "keep-alive"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("cache-control"),
        );
        let mut stripped = h.clone();
        assert!(strip_unstorable_noting(&mut stripped, watch_cc));
        assert!(!stripped.contains_key(header::CACHE_CONTROL));
    }

    #[test]
    fn content_length_is_one_number_or_nothing() {
        let mut h = HeaderMap::new();
        assert_eq!(content_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(" 12 "));
        assert_eq!(content_length(&h), Some(12));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12, 12"));
        assert_eq!(content_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(content_length(&h), None);
    }

    #[test]
    fn validators_are_etag_or_last_modified() {
        let mut h = HeaderMap::new();
        assert!(!has_validator(&h));
        h.insert(header::ETAG, HeaderValue::from_static("\"a\""));
        assert!(has_validator(&h));
        let mut h = HeaderMap::new();
        h.insert(header::LAST_MODIFIED, HeaderValue::from_static("x"));
        assert!(has_validator(&h));
    }
}
