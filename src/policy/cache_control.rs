//! Typed `Cache-Control` (RFC 9111 §5.2) for requests and responses.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderName};

/// RFC 9111 §1.2.2: "If a cache receives a delta-seconds value greater than the greatest integer
/// it can represent, or if any of its subsequent calculations overflows, the cache MUST consider
/// the value to be 2147483648 (2^31) or the greatest positive integer it can conveniently
/// represent."
pub(crate) const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// Response directives (RFC 9111 §5.2.2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    /// §5.2.2.1 `max-age`. An invalid or conflicting value reads as 0 (stale).
    pub(crate) max_age: Option<u64>,
    /// §5.2.2.10 `s-maxage` (shared caches only).
    pub(crate) s_maxage: Option<u64>,
    /// §5.2.2.5 `no-store`.
    pub(crate) no_store: bool,
    /// §5.2.2.4 `no-cache` without a field list (or with one the cache cannot read: then the
    /// whole response, the conservative reading).
    pub(crate) no_cache: bool,
    /// §5.2.2.4 qualified `no-cache="a, b"`: only these fields must not be sent without
    /// revalidation; the cache leaves them out of what it stores and reuses the rest.
    pub(crate) no_cache_fields: Vec<HeaderName>,
    /// §5.2.2.7 `private` without a field list (or with one the cache cannot read).
    pub(crate) private: bool,
    /// §5.2.2.7 qualified `private="a"`: a shared cache "MUST NOT store the listed header
    /// fields ... but MAY store the remaining header fields".
    pub(crate) private_fields: Vec<HeaderName>,
    /// §5.2.2.9 `public`.
    pub(crate) public: bool,
    /// §5.2.2.2 `must-revalidate`.
    pub(crate) must_revalidate: bool,
    /// §5.2.2.8 `proxy-revalidate`.
    pub(crate) proxy_revalidate: bool,
    /// §5.2.2.3 `must-understand`.
    pub(crate) must_understand: bool,
    /// RFC 5861 §4 `stale-if-error`.
    pub(crate) stale_if_error: Option<u64>,
    /// RFC 5861 §3 `stale-while-revalidate` (parsed; not acted on yet).
    pub(crate) stale_while_revalidate: Option<u64>,
    /// Read from an RFC 9213 targeted field instead of `Cache-Control`: `Expires` is then
    /// ignored too (§2.1).
    pub(crate) targeted: bool,
    /// `Surrogate-Control: max-age` for this surrogate (only when the cache acts as one).
    pub(crate) surrogate_max_age: Option<u64>,
    /// `Surrogate-Control: no-store` for this surrogate.
    pub(crate) surrogate_no_store: bool,
}

/// Request directives (RFC 9111 §5.2.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    /// §5.2.1.1 `max-age`.
    pub(crate) max_age: Option<u64>,
    /// §5.2.1.4 `no-cache`; also set by `Pragma: no-cache` when there is no Cache-Control
    /// (§5.4).
    pub(crate) no_cache: bool,
    /// §5.2.1.5 `no-store`.
    pub(crate) no_store: bool,
    /// §5.2.1.7 `only-if-cached`.
    pub(crate) only_if_cached: bool,
    /// §5.2.1.2 `max-stale`: `Some(None)` without a value (any staleness), `Some(Some(n))` with.
    pub(crate) max_stale: Option<Option<u64>>,
    /// §5.2.1.3 `min-fresh`.
    pub(crate) min_fresh: Option<u64>,
    /// RFC 5861 §4 `stale-if-error` in a request.
    pub(crate) stale_if_error: Option<u64>,
}

/// Calls `f(name, value)` for every directive of every `Cache-Control` field line (RFC 9110
/// §5.6.1 lists, §5.6.4 quoted strings). Names are compared case-insensitively by the callers
/// (§5.2: "Cache directives are case-insensitive"). A line that is not valid UTF-8 is read
/// lossily: a directive the cache cannot read is ignored, as §5.2.3 asks for unrecognized ones.
/// No allocation unless a value is quoted with escapes or a line is not UTF-8.
fn for_each_directive(headers: &HeaderMap, mut f: impl FnMut(&str, Option<Cow<'_, str>>)) {
    for line in headers.get_all(header::CACHE_CONTROL) {
        let text = String::from_utf8_lossy(line.as_bytes());
        split_list(&text, &mut f);
    }
}

fn split_list(line: &str, f: &mut impl FnMut(&str, Option<Cow<'_, str>>)) {
    let mut rest = line;
    while !rest.is_empty() {
        let end = rest.find([',', '=']).unwrap_or(rest.len());
        let name = rest[..end].trim();
        rest = &rest[end..];
        let mut value = None;
        if let Some(after_eq) = rest.strip_prefix('=') {
            let after_eq = after_eq.trim_start_matches([' ', '\t']);
            if let Some(quoted) = after_eq.strip_prefix('"') {
                let (v, consumed) = unquote(quoted);
                value = Some(v);
                rest = &quoted[consumed..];
                // Anything between the closing quote and the next comma is ignored.
                rest = rest.find(',').map_or("", |i| &rest[i..]);
            } else {
                let end = after_eq.find(',').unwrap_or(after_eq.len());
                value = Some(Cow::Borrowed(after_eq[..end].trim()));
                rest = &after_eq[end..];
            }
        }
        if !name.is_empty() {
            f(name, value);
        }
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Reads a quoted-string body (after the opening quote): the unescaped value and how many bytes
/// were consumed, closing quote included. An unterminated string runs to the end.
fn unquote(s: &str) -> (Cow<'_, str>, usize) {
    let bytes = s.as_bytes();
    match bytes.iter().position(|b| *b == b'"' || *b == b'\\') {
        Some(i) if bytes[i] == b'"' => (Cow::Borrowed(&s[..i]), i + 1),
        None => (Cow::Borrowed(s), s.len()),
        Some(_) => {
            let mut out = String::new();
            let mut chars = s.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return (Cow::Owned(out), i + 1),
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    c => out.push(c),
                }
            }
            (Cow::Owned(out), s.len())
        }
    }
}

/// Parses `delta-seconds` (RFC 9111 §1.2.2): digits only, saturating at 2^31.
pub(crate) fn delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: the only possible failure is overflow, which saturates.
    Some(
        value
            .parse::<u64>()
            .map_or(DELTA_SECONDS_MAX, |v| v.min(DELTA_SECONDS_MAX)),
    )
}

/// Folds repeated `max-age`-like directives. RFC 9111 §4.2.1: "When there is more than one value
/// present for a given directive (e.g., two Expires header field lines or multiple Cache-Control:
/// max-age directives), either the first occurrence should be used or the response should be
/// considered stale." An unparsable value also reads as stale (0): the conservative choice.
fn fold_seconds(slot: &mut Option<u64>, seen: &mut bool, value: Option<&str>) {
    let parsed = value.and_then(delta_seconds).unwrap_or(0);
    if *seen && *slot != Some(parsed) {
        *slot = Some(0);
    } else {
        *slot = Some(parsed);
    }
    *seen = true;
}

impl ResponseDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        let (mut seen_max_age, mut seen_s_maxage) = (false, false);
        for_each_directive(headers, |name, value| {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("max-age") {
                fold_seconds(&mut d.max_age, &mut seen_max_age, value.as_deref());
            } else if is("s-maxage") {
                fold_seconds(&mut d.s_maxage, &mut seen_s_maxage, value.as_deref());
            } else if is("no-store") {
                d.no_store = true;
            } else if is("no-cache") {
                match value.as_deref().map(field_names) {
                    Some(Some(names)) => d.no_cache_fields.extend(names),
                    _ => d.no_cache = true,
                }
            } else if is("private") {
                match value.as_deref().map(field_names) {
                    Some(Some(names)) => d.private_fields.extend(names),
                    _ => d.private = true,
                }
            } else if is("public") {
                d.public = true;
            } else if is("must-revalidate") {
                d.must_revalidate = true;
            } else if is("proxy-revalidate") {
                d.proxy_revalidate = true;
            } else if is("must-understand") {
                d.must_understand = true;
            } else if is("stale-if-error") {
                d.stale_if_error = value.as_deref().and_then(delta_seconds);
            } else if is("stale-while-revalidate") {
                d.stale_while_revalidate = value.as_deref().and_then(delta_seconds);
            }
            // §5.2.3: anything else is ignored.
        });
        d
    }
}

/// The field names of a qualified `no-cache` or `private` (§5.2.2.4, §5.2.2.7: a quoted list of
/// field names). `None` when the list is empty or a name is not a field name: the directive is
/// then read unqualified.
///
/// A list that names a field the stored response cannot do without (those that describe its
/// content, its validators, its freshness, its Vary) is read unqualified too: leaving out
/// `Content-Encoding` would serve a compressed body as plain, leaving out `Vary` would serve one
/// variant to every request.
fn field_names(list: &str) -> Option<Vec<HeaderName>> {
    const NEEDED: [&str; 11] = [
        "content-encoding",
        "content-length",
        "content-range",
        "content-type",
        "transfer-encoding",
        "vary",
        "etag",
        "last-modified",
        "cache-control",
        "expires",
        "date",
    ];
    let names: Option<Vec<HeaderName>> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    names.filter(|n| !n.is_empty() && !n.iter().any(|n| NEEDED.contains(&n.as_str())))
}

impl ResponseDirectives {
    /// The fields a cache must leave out of what it stores (§5.2.2.4 qualified `no-cache`;
    /// §5.2.2.7 qualified `private`, shared caches only).
    pub(crate) fn unstored_fields(&self, shared: bool) -> impl Iterator<Item = &HeaderName> {
        let private: &[HeaderName] = if shared { &self.private_fields } else { &[] };
        self.no_cache_fields.iter().chain(private)
    }

    /// [`parse`](Self::parse), plus the `Surrogate-Control` directives that apply to the
    /// surrogate `id` (W3C Edge Architecture Specification 1.0, §2.2): untargeted ones, and
    /// those targeted with `;id`. Directives are case-insensitive; values must be exactly
    /// digits (`max-age = 5` is not understood and ignored).
    #[cfg(test)]
    pub(crate) fn parse_as_surrogate(headers: &HeaderMap, id: Option<&str>) -> Self {
        Self::with_surrogate(Self::parse(headers), headers, id)
    }

    pub(crate) fn with_surrogate(mut d: Self, headers: &HeaderMap, id: Option<&str>) -> Self {
        let Some(id) = id else {
            return d;
        };
        for line in headers.get_all("surrogate-control") {
            let text = String::from_utf8_lossy(line.as_bytes());
            for directive in text.split(',') {
                let directive = directive.trim();
                let (directive, target) = match directive.split_once(';') {
                    Some((d, t)) => (d, Some(t.trim())),
                    None => (directive, None),
                };
                if target.is_some_and(|t| !t.eq_ignore_ascii_case(id)) {
                    continue;
                }
                if directive.eq_ignore_ascii_case("no-store") {
                    d.surrogate_no_store = true;
                } else if let Some((name, value)) = directive.split_once('=') {
                    if name.eq_ignore_ascii_case("max-age") {
                        if let Some(secs) = delta_seconds(value) {
                            d.surrogate_max_age = Some(secs);
                        }
                    }
                }
            }
        }
        d
    }
}

impl RequestDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        let mut seen_max_age = false;
        for_each_directive(headers, |name, value| {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("max-age") {
                fold_seconds(&mut d.max_age, &mut seen_max_age, value.as_deref());
            } else if is("no-cache") {
                d.no_cache = true;
            } else if is("no-store") {
                d.no_store = true;
            } else if is("only-if-cached") {
                d.only_if_cached = true;
            } else if is("max-stale") {
                // §5.2.1.2: without a value, any staleness; an invalid value is read as 0 (the
                // conservative reading: accept no staleness).
                d.max_stale = Some(value.map(|v| delta_seconds(&v).unwrap_or(0)));
            } else if is("min-fresh") {
                // An invalid value asks for more freshness than any response has.
                d.min_fresh = Some(
                    value
                        .as_deref()
                        .and_then(delta_seconds)
                        .unwrap_or(DELTA_SECONDS_MAX),
                );
            } else if is("stale-if-error") {
                d.stale_if_error = value.as_deref().and_then(delta_seconds);
            }
        });
        // RFC 9111 §5.4: "When the Cache-Control header field is not present in a request,
        // caches MUST consider the no-cache request pragma-directive as having the same effect
        // as if "Cache-Control: no-cache" were present."
        if !headers.contains_key(header::CACHE_CONTROL) {
            d.no_cache = headers.get_all(header::PRAGMA).iter().any(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("no-cache"))
            });
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn response_directive_table() {
        let cases: &[(&[&str], Option<u64>, bool, bool)] = &[
            // lines, max_age, no_store, no_cache
            (&["max-age=60"], Some(60), false, false),
            (&["MAX-AGE=60"], Some(60), false, false),
            (&["max-age=\"60\""], Some(60), false, false),
            (&["public, max-age=60"], Some(60), false, false),
            (&["max-age=60", "no-store"], Some(60), true, false),
            (&["max-age=60, max-age=60"], Some(60), false, false),
            (&["max-age=60, max-age=120"], Some(0), false, false),
            (&["max-age=abc"], Some(0), false, false),
            (&["max-age=-1"], Some(0), false, false),
            (&["max-age="], Some(0), false, false),
            (&["max-age"], Some(0), false, false),
            (
                &["max-age=99999999999999999999999"],
                Some(DELTA_SECONDS_MAX),
                false,
                false,
            ),
            (
                &["max-age=4294967296"],
                Some(DELTA_SECONDS_MAX),
                false,
                false,
            ),
            // Qualified: only the listed fields (below), not the whole response.
            (
                &["no-cache=\"set-cookie, x\", max-age=5"],
                Some(5),
                false,
                false,
            ),
            // A list the cache cannot read: the whole response.
            (&["no-cache=\"\", max-age=5"], Some(5), false, true),
            (&["no-cache=\"a b\", max-age=5"], Some(5), false, true),
            (&["  no-store  ,"], None, true, false),
            (&["x-unknown=\"a,b\", max-age=7"], Some(7), false, false),
            (&[""], None, false, false),
        ];
        for (lines, max_age, no_store, no_cache) in cases {
            let d = ResponseDirectives::parse(&headers(lines));
            assert_eq!(d.max_age, *max_age, "{lines:?}");
            assert_eq!(d.no_store, *no_store, "{lines:?}");
            assert_eq!(d.no_cache, *no_cache, "{lines:?}");
        }
    }

    #[test]
    fn qualified_no_cache_and_private_name_fields() {
        let d = ResponseDirectives::parse(&headers(&[
            r#"no-cache="A, b", private=set-cookie, max-age=60"#,
        ]));
        assert!(!d.no_cache && !d.private);
        let names = |v: &[HeaderName]| v.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&d.no_cache_fields), ["a", "b"]);
        assert_eq!(names(&d.private_fields), ["set-cookie"]);
        let shared: Vec<_> = d.unstored_fields(true).map(|n| n.as_str()).collect();
        assert_eq!(shared, ["a", "b", "set-cookie"]);
        let private: Vec<_> = d.unstored_fields(false).map(|n| n.as_str()).collect();
        assert_eq!(private, ["a", "b"]);
        // Naming a field the response cannot do without: the whole response.
        let d = ResponseDirectives::parse(&headers(&[r#"no-cache="content-encoding, a""#]));
        assert!(d.no_cache && d.no_cache_fields.is_empty());
        let d = ResponseDirectives::parse(&headers(&[r#"private="Vary""#]));
        assert!(d.private);
        // Unqualified next to qualified: the whole response.
        let d = ResponseDirectives::parse(&headers(&["no-cache=\"a\"", "no-cache"]));
        assert!(d.no_cache);
    }

    #[test]
    fn quoted_values_and_escapes() {
        let mut seen = Vec::new();
        split_list(r#"a="x\"y", b = "q" junk , c=5 ,d"#, &mut |n, v| {
            seen.push((n.to_owned(), v.map(|v| v.into_owned())))
        });
        assert_eq!(
            seen,
            [
                ("a".into(), Some("x\"y".into())),
                ("b".into(), Some("q".into())),
                ("c".into(), Some("5".into())),
                ("d".into(), None),
            ]
        );
        let mut seen = Vec::new();
        split_list(r#"a="unterminated, b=1"#, &mut |n, v| {
            seen.push((n.to_owned(), v.map(|v| v.into_owned())))
        });
        assert_eq!(seen, [("a".into(), Some("unterminated, b=1".into()))]);
    }

    #[test]
    fn response_flags() {
        let d = ResponseDirectives::parse(&headers(&[
            "private, Public, must-revalidate, proxy-revalidate, s-maxage=9, must-understand",
        ]));
        assert!(d.private && d.public && d.must_revalidate && d.proxy_revalidate);
        assert!(d.must_understand);
        assert_eq!(d.s_maxage, Some(9));
    }

    #[test]
    fn surrogate_control_for_this_surrogate_only() {
        let sc = |v: &'static str| {
            let mut h = headers(&["max-age=1"]);
            h.append("surrogate-control", HeaderValue::from_static(v));
            ResponseDirectives::parse_as_surrogate(&h, Some("hcc"))
        };
        assert_eq!(sc("max-age=3600").surrogate_max_age, Some(3600));
        assert_eq!(sc("MaX-aGe=3600").surrogate_max_age, Some(3600));
        assert_eq!(sc("foobar, max-age=60").surrogate_max_age, Some(60));
        assert_eq!(sc("max-age=60;hcc").surrogate_max_age, Some(60));
        assert_eq!(sc("max-age=60;other").surrogate_max_age, None);
        assert_eq!(sc("max-age =60").surrogate_max_age, None);
        assert_eq!(sc("max-age= 60").surrogate_max_age, None);
        assert_eq!(
            sc("max-age=99999999999").surrogate_max_age,
            Some(DELTA_SECONDS_MAX)
        );
        assert!(sc("no-store").surrogate_no_store);
        // Not a surrogate: Surrogate-Control means nothing.
        let mut h = HeaderMap::new();
        h.insert("surrogate-control", HeaderValue::from_static("max-age=5"));
        assert_eq!(
            ResponseDirectives::parse_as_surrogate(&h, None).surrogate_max_age,
            None
        );
    }

    #[test]
    fn staleness_directives() {
        let r = RequestDirectives::parse(&headers(&["max-stale, min-fresh=5, stale-if-error=9"]));
        assert_eq!(
            (r.max_stale, r.min_fresh, r.stale_if_error),
            (Some(None), Some(5), Some(9))
        );
        let r = RequestDirectives::parse(&headers(&["max-stale=30, min-fresh=x"]));
        assert_eq!(
            (r.max_stale, r.min_fresh),
            (Some(Some(30)), Some(DELTA_SECONDS_MAX))
        );
        let d =
            ResponseDirectives::parse(&headers(&["stale-if-error=60, stale-while-revalidate=10"]));
        assert_eq!(
            (d.stale_if_error, d.stale_while_revalidate),
            (Some(60), Some(10))
        );
    }

    #[test]
    fn request_directives_and_pragma() {
        let d = RequestDirectives::parse(&headers(&["no-cache, max-age=0, only-if-cached"]));
        assert!(d.no_cache && d.only_if_cached);
        assert_eq!(d.max_age, Some(0));

        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, HeaderValue::from_static("No-Cache"));
        assert!(RequestDirectives::parse(&h).no_cache);

        // Pragma is ignored when Cache-Control is present.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!RequestDirectives::parse(&h).no_cache);
    }

    #[test]
    fn delta_seconds_rules() {
        assert_eq!(delta_seconds("0"), Some(0));
        assert_eq!(delta_seconds("2147483648"), Some(DELTA_SECONDS_MAX));
        assert_eq!(delta_seconds("2147483649"), Some(DELTA_SECONDS_MAX));
        assert_eq!(delta_seconds("1.5"), None);
        assert_eq!(delta_seconds("+1"), None);
        assert_eq!(delta_seconds(""), None);
    }

    proptest::proptest! {
        /// Any header line at all: parsing never panics and never yields a value past 2^31.
        #[test]
        fn arbitrary_lines_parse_safely(lines in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..80), 0..4)) {
            let mut h = HeaderMap::new();
            for l in &lines {
                if let Ok(v) = HeaderValue::from_bytes(l) {
                    h.append(header::CACHE_CONTROL, v);
                }
            }
            let d = ResponseDirectives::parse(&h);
            proptest::prop_assert!(d.max_age.unwrap_or(0) <= DELTA_SECONDS_MAX);
            proptest::prop_assert!(d.s_maxage.unwrap_or(0) <= DELTA_SECONDS_MAX);
            let r = RequestDirectives::parse(&h);
            proptest::prop_assert!(r.max_age.unwrap_or(0) <= DELTA_SECONDS_MAX);
        }

        /// Directive-shaped input round-trips the value that was written.
        #[test]
        fn max_age_values_round_trip(n in 0u64..=u64::MAX, quoted in proptest::bool::ANY, upper in proptest::bool::ANY) {
            let name = if upper { "MAX-AGE" } else { "max-age" };
            let line = if quoted { format!("public, {name}=\"{n}\", x") } else { format!("{name}={n}") };
            let h = headers(&[line.as_str()]);
            proptest::prop_assert_eq!(ResponseDirectives::parse(&h).max_age, Some(n.min(DELTA_SECONDS_MAX)));
        }
    }
}
