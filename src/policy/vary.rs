//! Secondary keys (RFC 9111 §4.1).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};

/// A request header value kept for Vary matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaryValue {
    /// The request did not have the header.
    Absent,
    /// The header's value(s), joined with `, ` when repeated: what entries written before
    /// release 0.2 kept. Decoded so such entries open, never produced, never matched (a miss).
    Clear(Bytes),
    /// A digest of the normalized value (keyed when the cache has a secret): every selecting
    /// value is kept this way, whatever the field is called (default deny).
    Digest([u8; 32]),
}

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

/// Digests a normalized request field value for storing: no selecting value is ever kept in
/// clear, whatever its field's name (a custom credential header named in `Vary` included).
pub(crate) trait VaryDigest {
    fn digest(&self, name: &HeaderName, value: &[u8]) -> [u8; 32];
}

impl<F: Fn(&HeaderName, &[u8]) -> [u8; 32]> VaryDigest for F {
    fn digest(&self, name: &HeaderName, value: &[u8]) -> [u8; 32] {
        self(name, value)
    }
}

/// How selecting header values are kept and compared (§4.1): normalized per field, then
/// digested, so matching on the digests is matching on the normalized values.
pub(crate) struct Matching<'a> {
    pub(crate) digest: &'a dyn VaryDigest,
    /// `Accept-Language` members of equal weight match in any order (off by default: many
    /// negotiators break ties by order).
    pub(crate) language_ties: bool,
}

/// See [`Matching`].
pub(crate) type Protect<'a> = &'a Matching<'a>;

/// The value of `name` on a request, all field lines combined with ", " (RFC 9110 §5.3), or
/// `None` when absent. §4.1 allows normalizing before comparing ("by removing whitespace,
/// combining multiple lines, or by using content-specific rules"): list members are trimmed, and
/// the `Accept*` fields, whose tokens are case-insensitive, are lowercased. `Accept-Language`
/// is also put in one order ([`canonical_languages`]). Other values keep their case (a
/// credential differing only in case is a different credential).
fn combined(request: &HeaderMap, name: &HeaderName, language_ties: bool) -> Option<Bytes> {
    let mut values = request.get_all(name).iter().peekable();
    values.peek()?;
    let lowercase = matches!(
        name.as_str(),
        "accept" | "accept-language" | "accept-encoding" | "accept-charset"
    );
    let mut members: Vec<Vec<u8>> = Vec::new();
    for value in values {
        for member in value.as_bytes().split(|b| *b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(member.len());
            // Remove whitespace around the parameter separators of list members (`a ; q=1`).
            let mut last_was_sep = false;
            let mut pending_space = false;
            for &b in member {
                if b == b' ' || b == b'\t' {
                    pending_space = true;
                    continue;
                }
                let sep = b == b';' || b == b'=';
                if pending_space && !sep && !last_was_sep {
                    out.push(b' ');
                }
                pending_space = false;
                out.push(if lowercase { b.to_ascii_lowercase() } else { b });
                last_was_sep = sep;
            }
            members.push(out);
        }
    }
    if name == header::ACCEPT_LANGUAGE {
        canonical_languages(&mut members, language_ties);
    }
    let mut out = BytesMut::new();
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            out.put_slice(b", ");
        }
        out.put_slice(member);
    }
    Some(out.freeze())
}

/// `Accept-Language` members (already lowercased, without whitespace) in one order: by quality,
/// highest first (a stable sort: a negotiator that reads weights first picks the same language
/// whatever the order of members of different weights), with one spelling per weight (`q=1`
/// dropped, `q=0.50` as `q=0.5`). With `ties`, members of equal weight are also sorted by name:
/// RFC 9110 §12.4.2 / §12.5.4 give them the same preference ("en, de" and "de, en"), but many
/// negotiators (e.g. Express's) break ties by order, so that is an opt-in. A member whose weight
/// cannot be read keeps its text, after the readable ones.
fn canonical_languages(members: &mut [Vec<u8>], ties: bool) {
    fn weight(member: &[u8]) -> Option<u16> {
        let Some(at) = member.iter().position(|b| *b == b';') else {
            return Some(1000);
        };
        let q = member[at + 1..].strip_prefix(b"q=")?;
        // qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths.
        let (int, frac) = match q.iter().position(|b| *b == b'.') {
            Some(dot) => (&q[..dot], &q[dot + 1..]),
            None => (q, &b""[..]),
        };
        if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut thousandths = 0u16;
        for i in 0..3 {
            thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
        }
        match int {
            b"0" => Some(thousandths),
            b"1" if thousandths == 0 => Some(1000),
            _ => None,
        }
    }
    for member in members.iter_mut() {
        let (Some(w), Some(at)) = (weight(member), member.iter().position(|b| *b == b';')) else {
            continue;
        };
        member.truncate(at);
        if w < 1000 {
            // One spelling per weight: `q=0.5`, never `q=0.50` or `q=0.500`.
            let digits = format!("{w:03}");
            member.extend_from_slice(b";q=0.");
            member.extend_from_slice(digits.trim_end_matches('0').as_bytes());
            if w == 0 {
                member.push(b'0');
            }
        }
    }
    members.sort_by(|a, b| {
        let (wa, wb) = (weight(a), weight(b));
        let by_weight = wb.cmp(&wa);
        if ties || wa.is_none() {
            by_weight.then_with(|| a.cmp(b))
        } else {
            by_weight
        }
    });
}

/// What to store for `name` so the entry can be matched later: a digest of the normalized
/// value, never the value.
pub(crate) fn capture(request: &HeaderMap, name: &HeaderName, protect: Protect<'_>) -> VaryValue {
    match combined(request, name, protect.language_ties) {
        None => VaryValue::Absent,
        Some(v) => VaryValue::Digest(protect.digest.digest(name, &v)),
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

    const FAKE: Matching<'static> = Matching {
        digest: &fake_digest,
        language_ties: false,
    };

    fn fake_digest(name: &HeaderName, b: &[u8]) -> [u8; 32] {
        let mut d = [0u8; 32];
        for (i, x) in name
            .as_str()
            .bytes()
            .chain([0])
            .chain(b.iter().copied())
            .enumerate()
        {
            d[i % 32] = d[i % 32].rotate_left(3) ^ x;
        }
        d
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
    fn normalization_for_matching() {
        let value = |lines: &[&'static str], name: HeaderName| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(name.clone(), HeaderValue::from_static(l));
            }
            combined(&h, &name, true)
        };
        let al = header::ACCEPT_LANGUAGE;
        assert_eq!(
            value(&["en ;q=1,  FR"], al.clone()),
            value(&["en;q=1, fr"], al.clone())
        );
        assert_eq!(
            value(&["en", "fr"], al.clone()),
            value(&["en,fr"], al.clone())
        );
        assert_eq!(value(&["en, ,fr,"], al.clone()).unwrap(), "en, fr");
        // Accept-Language: one order, by weight then range; `q=1` is the default.
        assert_eq!(
            value(&["en, de"], al.clone()),
            value(&["de, en"], al.clone())
        );
        assert_eq!(
            value(&["fr;q=0.5, de, en;q=1.0"], al.clone()).unwrap(),
            "de, en, fr;q=0.5"
        );
        assert_eq!(
            value(
                &["fr;q=0.500", "de;q=0.50", "it;q=0", "es;q=0.001"],
                al.clone()
            )
            .unwrap(),
            "de;q=0.5, fr;q=0.5, es;q=0.001, it;q=0.0"
        );
        assert_ne!(
            value(&["en, de;q=0.9"], al.clone()),
            value(&["de, en;q=0.9"], al.clone()),
            "different weights are different preferences"
        );
        // Unreadable weights keep their text, after every readable one.
        assert_eq!(
            value(&["x;q=2, de;q=0.1, y;q=abc"], al.clone()).unwrap(),
            "de;q=0.1, x;q=2, y;q=abc"
        );
        // Not other fields: their order can matter.
        assert_ne!(
            value(&["gzip, br"], header::ACCEPT_ENCODING),
            value(&["br, gzip"], header::ACCEPT_ENCODING)
        );
        // Case kept where it can matter.
        assert_ne!(
            value(&["Bearer ABC"], header::AUTHORIZATION),
            value(&["Bearer abc"], header::AUTHORIZATION)
        );
        assert_eq!(
            value(&["Bearer  ABC"], header::AUTHORIZATION).unwrap(),
            "Bearer ABC"
        );
        assert_eq!(value(&[], al), None);
    }

    #[test]
    fn matching_and_credentials() {
        let mut req = HeaderMap::new();
        req.append("accept", HeaderValue::from_static("a"));
        req.append("accept", HeaderValue::from_static("b"));
        req.insert("authorization", HeaderValue::from_static("Bearer SECRET"));
        let stored = vec![
            (header::ACCEPT, capture(&req, &header::ACCEPT, &FAKE)),
            (
                header::AUTHORIZATION,
                capture(&req, &header::AUTHORIZATION, &FAKE),
            ),
            (
                header::ACCEPT_LANGUAGE,
                capture(&req, &header::ACCEPT_LANGUAGE, &FAKE),
            ),
        ];
        // Every value is a digest, whatever the field (default deny).
        assert_eq!(
            stored[0].1,
            VaryValue::Digest(fake_digest(&header::ACCEPT, b"a, b"))
        );
        assert!(matches!(stored[1].1, VaryValue::Digest(_)));
        // An entry of an older release, with a value in clear, never matches.
        let legacy = vec![(
            header::ACCEPT,
            VaryValue::Clear(Bytes::from_static(b"a, b")),
        )];
        assert!(!matches(&legacy, &req, &FAKE));
        assert_eq!(stored[2].1, VaryValue::Absent);
        assert!(matches(&stored, &req, &FAKE));

        let mut other = req.clone();
        other.insert("authorization", HeaderValue::from_static("Bearer OTHER!"));
        assert!(!matches(&stored, &other, &FAKE));
        let mut other = req.clone();
        other.insert("accept-language", HeaderValue::from_static("fr"));
        assert!(!matches(&stored, &other, &FAKE));
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
