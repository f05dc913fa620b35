//! Targeted cache-control fields (RFC 9213): `CDN-Cache-Control` and fields like it, for a
//! cache that opts in with a target list.
//!
//! §2.1: "When a cache that implements this specification receives a response with one or more
//! of the header field names on its target list, the cache MUST select the first (in target
//! list order) field with a valid, non-empty value and use its value to determine the caching
//! policy for the response, and it MUST ignore the Cache-Control and Expires header fields in
//! that response, unless no valid, non-empty value is available from the listed header fields."
//!
//! §2.2: targeted fields are Structured Field Dictionaries (RFC 8941 §3.2); a field that fails
//! to parse, or is empty, is ignored as if absent. Directives keep their `Cache-Control`
//! meaning; a directive whose value is not of the type its definition implies (an Integer for
//! `max-age`, Boolean true for `no-store`) is not consumed (§2.1: "Implementations SHOULD NOT
//! consume values that violate these inferred constraints").

use std::convert::Infallible;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use sfv::visitor::{DictionaryVisitor, EntryVisitor, Ignored, InnerListVisitor, ItemVisitor};
use sfv::{BareItemFromInput, KeyRef};

use super::cache_control::{ResponseDirectives, DELTA_SECONDS_MAX};

/// The directives of the first valid, non-empty targeted field of `targets` (in that order), or
/// `None` when there is none (the cache then reads `Cache-Control` and `Expires`).
pub(crate) fn parse(headers: &HeaderMap, targets: &[HeaderName]) -> Option<ResponseDirectives> {
    targets.iter().find_map(|name| parse_field(headers, name))
}

fn parse_field(headers: &HeaderMap, name: &HeaderName) -> Option<ResponseDirectives> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    // RFC 8941 §4.2: several field lines are combined with commas before parsing.
    let joined;
    let text: &[u8] = match lines.next() {
        None => first.as_bytes(),
        Some(second) => {
            let all: Vec<&[u8]> = [first, second]
                .into_iter()
                .chain(lines)
                .map(HeaderValue::as_bytes)
                .collect();
            joined = all.join(&b", "[..]);
            &joined
        }
    };
    if text.iter().all(|b| *b == b' ' || *b == b'\t') {
        return None;
    }
    let mut d = ResponseDirectives {
        targeted: true,
        ..ResponseDirectives::default()
    };
    sfv::Parser::new(text)
        .parse_dictionary_with_visitor(&mut Collect(&mut d))
        .ok()?;
    Some(d)
}

/// Fills the directives as the dictionary is read. RFC 8941 §4.2.2: of repeated keys the last
/// one counts, so each member overwrites what an earlier one of its key set.
struct Collect<'a>(&'a mut ResponseDirectives);

#[derive(Clone, Copy)]
enum Known {
    MaxAge,
    SMaxage,
    StaleIfError,
    StaleWhileRevalidate,
    NoStore,
    NoCache,
    Private,
    Public,
    MustRevalidate,
    ProxyRevalidate,
    MustUnderstand,
}

impl Known {
    fn of(key: &str) -> Option<Self> {
        Some(match key {
            "max-age" => Self::MaxAge,
            "s-maxage" => Self::SMaxage,
            "stale-if-error" => Self::StaleIfError,
            "stale-while-revalidate" => Self::StaleWhileRevalidate,
            "no-store" => Self::NoStore,
            "no-cache" => Self::NoCache,
            "private" => Self::Private,
            "public" => Self::Public,
            "must-revalidate" => Self::MustRevalidate,
            "proxy-revalidate" => Self::ProxyRevalidate,
            "must-understand" => Self::MustUnderstand,
            _ => return None,
        })
    }
}

struct Member<'a> {
    known: Known,
    out: &'a mut ResponseDirectives,
}

impl Member<'_> {
    /// Sets the directive from its value: `Some(n)` for an Integer, `flag` for a Boolean (true
    /// for a member without a value). A value of the wrong type leaves the directive unset.
    fn set(self, seconds: Option<u64>, flag: bool) {
        let d = self.out;
        match self.known {
            Known::MaxAge => d.max_age = seconds,
            Known::SMaxage => d.s_maxage = seconds,
            Known::StaleIfError => d.stale_if_error = seconds,
            Known::StaleWhileRevalidate => d.stale_while_revalidate = seconds,
            Known::NoStore => d.no_store = flag,
            Known::NoCache => d.no_cache = flag,
            Known::Private => d.private = flag,
            Known::Public => d.public = flag,
            Known::MustRevalidate => d.must_revalidate = flag,
            Known::ProxyRevalidate => d.proxy_revalidate = flag,
            Known::MustUnderstand => d.must_understand = flag,
        }
    }
}

impl<'de> DictionaryVisitor<'de> for Collect<'_> {
    type Error = Infallible;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        Ok(Known::of(key.as_str()).map(|known| Member {
            known,
            out: &mut *self.0,
        }))
    }
}

impl<'de> ItemVisitor<'de> for Member<'_> {
    type Error = Infallible;

    fn bare_item(
        self,
        item: BareItemFromInput<'de>,
    ) -> Result<impl sfv::visitor::ParameterVisitor<'de>, Self::Error> {
        match item {
            // RFC 9111 §1.2.2: delta-seconds past 2^31 are 2^31. Negative: not a delta.
            BareItemFromInput::Integer(n) => {
                let n = i64::from(n);
                let seconds = u64::try_from(n).ok().map(|n| n.min(DELTA_SECONDS_MAX));
                self.set(seconds, false);
            }
            BareItemFromInput::Boolean(b) => self.set(None, b),
            _ => self.set(None, false),
        }
        // Parameters carry nothing for these directives.
        Ok(Ignored)
    }
}

impl<'de> EntryVisitor<'de> for Member<'_> {
    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        // A list of field names (`no-cache=("a")`, `private=("a")`): read as the whole
        // response, the conservative reading. Any other directive: the wrong type, unset.
        let whole = matches!(self.known, Known::NoCache | Known::Private);
        self.set(None, whole);
        Ok(Ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdn() -> Vec<HeaderName> {
        vec![HeaderName::from_static("cdn-cache-control")]
    }

    fn parse_lines(lines: &[&str]) -> Option<ResponseDirectives> {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("cdn-cache-control", HeaderValue::from_str(l).unwrap());
        }
        parse(&h, &cdn())
    }

    #[test]
    fn the_suites_cases_and_ours() {
        let max_age = |lines: &[&str]| parse_lines(lines).map(|d| d.max_age);
        assert_eq!(max_age(&["max-age=3600"]), Some(Some(3600)));
        assert_eq!(
            max_age(&["max-age=2147483648"]),
            Some(Some(DELTA_SECONDS_MAX))
        );
        assert_eq!(
            max_age(&["max-age=99999999999"]),
            Some(Some(DELTA_SECONDS_MAX))
        );
        assert_eq!(max_age(&["foobar, max-age=3600"]), Some(Some(3600)));
        assert_eq!(max_age(&["max-age=0"]), Some(Some(0)));
        // Repeated keys: the last one counts (RFC 8941 §4.2.2), across lines too.
        assert_eq!(max_age(&["max-age=5, max-age=7"]), Some(Some(7)));
        assert_eq!(max_age(&["max-age=5", "max-age=9"]), Some(Some(9)));
        // Wrong types are not consumed; the field still counts (and hides Cache-Control).
        assert_eq!(max_age(&["max-age=\"10000\""]), Some(None));
        assert_eq!(max_age(&["max-age=-1"]), Some(None));
        assert_eq!(max_age(&["max-age=1.5"]), Some(None));
        assert_eq!(max_age(&["max-age=(1 2)"]), Some(None));
        // Not a dictionary, or empty: ignored as if absent.
        for bad in [
            "max-age=10000, &&&&&",
            "max-age =100",
            "max-age= 100",
            "MaX-aGe=3600",
            "max-age=3600,",
            "max-age=1234567890123456",
            "",
            "   ",
        ] {
            assert!(parse_lines(&[bad]).is_none(), "{bad:?}");
        }
        let d = parse_lines(&["private, no-cache, no-store, must-revalidate"]).unwrap();
        assert!(d.private && d.no_cache && d.no_store && d.must_revalidate && d.targeted);
        let d = parse_lines(&["no-store=?0, no-cache=(\"set-cookie\"), public;x=1"]).unwrap();
        assert!(!d.no_store && d.no_cache && d.public);
        let d = parse_lines(&["no-store=1"]).unwrap();
        assert!(!d.no_store);
    }

    #[test]
    fn the_first_valid_field_of_the_target_list_wins() {
        let mut h = HeaderMap::new();
        h.insert("foo-cache-control", HeaderValue::from_static("max-age=&"));
        h.insert("cdn-cache-control", HeaderValue::from_static("max-age=60"));
        h.insert("bar-cache-control", HeaderValue::from_static("max-age=5"));
        let targets = [
            HeaderName::from_static("foo-cache-control"),
            HeaderName::from_static("cdn-cache-control"),
            HeaderName::from_static("bar-cache-control"),
        ];
        assert_eq!(parse(&h, &targets).and_then(|d| d.max_age), Some(60));
        // Not on the list: not read.
        assert!(parse(&h, &[]).is_none());
        assert!(parse(&h, &targets[..1]).is_none());
    }

    proptest::proptest! {
        /// Any field value: no panic, any max-age within 2^31.
        #[test]
        fn arbitrary_values(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..60)) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert("cdn-cache-control", v);
                if let Some(d) = parse(&h, &cdn()) {
                    proptest::prop_assert!(d.max_age.unwrap_or(0) <= DELTA_SECONDS_MAX);
                }
            }
        }
    }
}
