//! Secondary keys (RFC 9111 §4.1).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};

use crate::entry::VaryValue;

/// The request header names a response varies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaryNames {
    /// `Vary: *` (or a member that is not a valid field name): never matches (§4.1: "A stored
    /// response with a Vary header field value containing a member "*" always fails to match").
    Star,
    /// The listed names, lowercased, empty list members skipped (RFC 9110 §5.6.1).
    Names(Vec<HeaderName>),
}

pub(crate) fn vary_names(response: &HeaderMap) -> VaryNames {
    let mut names = Vec::new();
    for line in response.get_all(header::VARY) {
        for member in String::from_utf8_lossy(line.as_bytes()).split(',') {
            let member = member.trim();
            if member.is_empty() {
                continue;
            }
            if member == "*" {
                return VaryNames::Star;
            }
            match HeaderName::from_bytes(member.as_bytes()) {
                Ok(name) if !names.contains(&name) => names.push(name),
                Ok(_) => {}
                Err(_) => return VaryNames::Star,
            }
        }
    }
    VaryNames::Names(names)
}

/// Decides how a request header value is kept: `Some(digest)` for credentials (never stored in
/// clear), `None` to keep the value as is.
pub(crate) type Protect<'a> = &'a dyn Fn(&HeaderName, &[u8]) -> Option<[u8; 32]>;

/// The value of `name` on a request, all field lines combined with ", " (RFC 9110 §5.3), or
/// `None` when absent.
fn combined(request: &HeaderMap, name: &HeaderName) -> Option<Bytes> {
    let mut values = request.get_all(name).iter();
    let first = values.next()?;
    let mut out = BytesMut::from(first.as_bytes());
    for v in values {
        out.put_slice(b", ");
        out.put_slice(v.as_bytes());
    }
    Some(out.freeze())
}

/// What to store for `name` so the entry can be matched later.
pub(crate) fn capture(request: &HeaderMap, name: &HeaderName, protect: Protect<'_>) -> VaryValue {
    match combined(request, name) {
        None => VaryValue::Absent,
        Some(v) => match protect(name, &v) {
            Some(digest) => VaryValue::Digest(digest),
            None => VaryValue::Clear(v),
        },
    }
}

/// §4.1: "the selecting header fields nominated by the stored response ... match in both the
/// original request ... and the presented request". A header absent from both matches.
pub(crate) fn matches(
    stored: &[(HeaderName, VaryValue)],
    request: &HeaderMap,
    protect: Protect<'_>,
) -> bool {
    stored
        .iter()
        .all(|(name, want)| capture(request, name, protect) == *want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn fake_digest(name: &HeaderName, b: &[u8]) -> Option<[u8; 32]> {
        if name != header::AUTHORIZATION {
            return None;
        }
        let mut d = [0u8; 32];
        for (i, x) in b.iter().enumerate() {
            d[i % 32] ^= x;
        }
        Some(d)
    }

    #[test]
    fn vary_lists() {
        let mut h = HeaderMap::new();
        h.append(
            "vary",
            HeaderValue::from_static("Accept-Encoding, ,accept-encoding"),
        );
        h.append("vary", HeaderValue::from_static("Accept"));
        assert_eq!(
            vary_names(&h),
            VaryNames::Names(vec![header::ACCEPT_ENCODING, header::ACCEPT])
        );
        h.append("vary", HeaderValue::from_static("x, *"));
        assert_eq!(vary_names(&h), VaryNames::Star);
        assert_eq!(vary_names(&HeaderMap::new()), VaryNames::Names(vec![]));
    }

    #[test]
    fn matching_and_credentials() {
        let mut req = HeaderMap::new();
        req.append("accept", HeaderValue::from_static("a"));
        req.append("accept", HeaderValue::from_static("b"));
        req.insert("authorization", HeaderValue::from_static("Bearer SECRET"));
        let stored = vec![
            (header::ACCEPT, capture(&req, &header::ACCEPT, &fake_digest)),
            (
                header::AUTHORIZATION,
                capture(&req, &header::AUTHORIZATION, &fake_digest),
            ),
            (
                header::ACCEPT_LANGUAGE,
                capture(&req, &header::ACCEPT_LANGUAGE, &fake_digest),
            ),
        ];
        assert_eq!(stored[0].1, VaryValue::Clear(Bytes::from_static(b"a, b")));
        assert!(matches!(stored[1].1, VaryValue::Digest(_)));
        assert_eq!(stored[2].1, VaryValue::Absent);
        assert!(matches(&stored, &req, &fake_digest));

        let mut other = req.clone();
        other.insert("authorization", HeaderValue::from_static("Bearer OTHER!"));
        assert!(!matches(&stored, &other, &fake_digest));
        let mut other = req.clone();
        other.insert("accept-language", HeaderValue::from_static("fr"));
        assert!(!matches(&stored, &other, &fake_digest));
    }

    proptest::proptest! {
        /// Arbitrary Vary lines: no panic; names are valid and unique, or the answer is `*`.
        #[test]
        fn arbitrary_vary_lines(lines in proptest::collection::vec(".{0,60}", 0..4)) {
            let mut h = HeaderMap::new();
            for l in &lines {
                if let Ok(v) = HeaderValue::from_str(l) {
                    h.append(header::VARY, v);
                }
            }
            if let VaryNames::Names(names) = vary_names(&h) {
                let mut sorted = names.clone();
                sorted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                sorted.dedup();
                proptest::prop_assert_eq!(sorted.len(), names.len());
            }
        }
    }
}
