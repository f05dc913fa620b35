//! Invalidation (RFC 9111 §4.4): which stored responses an unsafe request removes.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};

/// RFC 9110 §9.2.1: GET, HEAD, OPTIONS and TRACE are safe; every other method is unsafe and
/// may change what is stored for its target.
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// §4.4: "A cache MUST invalidate the target URI when it receives a non-error status code in
/// response to an unsafe request method". Non-error: 2xx and 3xx (RFC 9110 §15).
pub(crate) fn invalidates(status: StatusCode) -> bool {
    status.is_success() || status.is_redirection()
}

/// §4.4: a cache "MAY invalidate the URI(s) in the Location and Content-Location response header
/// fields (if present)"; this cache does so only for references on the target's origin (same
/// scheme and authority), so that no response can invalidate another site's entries. In order,
/// without duplicates; an absolute-path reference is resolved against the target.
pub(crate) fn related_targets(target: &Uri, response: &HeaderMap) -> Vec<Uri> {
    let mut out: Vec<Uri> = Vec::new();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        // One field line each: a second `Location` makes the message invalid (RFC 9110 §10.2.2).
        let Some(reference) = response.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(uri) = same_origin(target, reference) {
            if !out.contains(&uri) {
                out.push(uri);
            }
        }
    }
    out
}

/// Whether the response's `Content-Location` (one field line) names `target` itself (RFC 9110
/// §8.7), resolved as [`same_origin`] does.
pub(crate) fn content_location_is(target: &Uri, response: &HeaderMap) -> bool {
    let mut lines = response.get_all(header::CONTENT_LOCATION).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return false;
    };
    line.to_str()
        .ok()
        .and_then(|reference| same_origin(target, reference))
        .is_some_and(|uri| uri.path_and_query() == target.path_and_query())
}

/// `reference` as a URI on the origin of `target` (same scheme and authority, compared
/// case-insensitively), or `None` when it is not absolute or absolute-path, or points
/// elsewhere: nobody can invalidate another site's entries through a header.
pub(crate) fn same_origin(target: &Uri, reference: &str) -> Option<Uri> {
    let uri: Uri = reference.parse().ok()?;
    match (uri.scheme(), uri.authority()) {
        (Some(_), Some(_)) => {
            let same = uri.scheme_str()?.eq_ignore_ascii_case(target.scheme_str()?)
                && uri
                    .authority()?
                    .as_str()
                    .eq_ignore_ascii_case(target.authority()?.as_str());
            same.then_some(uri)
        }
        (None, None) if reference.starts_with('/') => {
            let mut parts = target.clone().into_parts();
            parts.path_and_query = uri.path_and_query().cloned();
            Uri::from_parts(parts).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_non_error_answers_to_unsafe_methods_invalidate() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(is_safe(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(!is_safe(&m), "{m}");
        }
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert!(!is_safe(&custom));
        for (status, want) in [
            (200, true),
            (204, true),
            (303, true),
            (404, false),
            (500, false),
        ] {
            assert_eq!(
                invalidates(StatusCode::from_u16(status).unwrap()),
                want,
                "{status}"
            );
        }
    }

    #[test]
    fn a_content_location_naming_the_target() {
        let target: Uri = "http://e.com/items?x=1".parse().unwrap();
        let is = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_LOCATION, HeaderValue::from_static(v));
            }
            content_location_is(&target, &h)
        };
        assert!(is(&["/items?x=1"]));
        assert!(is(&["HTTP://E.COM/items?x=1"]));
        assert!(!is(&["/items"]));
        assert!(!is(&["/items?x=2"]));
        assert!(!is(&["http://other.com/items?x=1"]));
        assert!(!is(&["items?x=1"]), "a relative reference is not resolved");
        assert!(!is(&["/items?x=1", "/items?x=1"]));
        assert!(!is(&[]));
    }

    #[test]
    fn related_targets_stay_on_the_origin() {
        let target: Uri = "http://e.com/items/1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append(header::LOCATION, HeaderValue::from_static("/items/2"));
        h.append(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("http://e.com/items/2"),
        );
        let got = related_targets(&target, &h);
        assert_eq!(got, vec!["http://e.com/items/2".parse::<Uri>().unwrap()]);
        let mut h = HeaderMap::new();
        h.append(
            header::LOCATION,
            HeaderValue::from_static("http://other.com/x"),
        );
        assert!(related_targets(&target, &h).is_empty());
        assert!(related_targets(&target, &HeaderMap::new()).is_empty());
        // A relative reference needs a target with an origin to resolve against.
        assert_eq!(
            same_origin(&"/rel".parse().unwrap(), "http://e.com/x"),
            None
        );
        assert_eq!(same_origin(&target, "https://e.com/items/2"), None);
        assert_eq!(same_origin(&target, "relative/path"), None);
    }
}
