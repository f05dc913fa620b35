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
/// `Proxy-Authenticate`, `Proxy-Authentication-Info` and `Proxy-Authorization`. Whether
/// `Connection` listed any field (every other field removed is one of these fixed names).
pub(crate) fn strip_unstorable(headers: &mut HeaderMap) -> bool {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let any_listed = !listed.is_empty();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authentication-info",
    ] {
        headers.remove(name);
    }
    any_listed
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
