//! Freshness lifetime and age (RFC 9111 §4.2).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::cache_control::{delta_seconds, ResponseDirectives, DELTA_SECONDS_MAX};

/// Parses an HTTP-date field (RFC 9110 §5.6.7: IMF-fixdate, RFC 850 and asctime forms, read
/// the lenient way RFC 9111 §4.2 asks: see [`super::dates`]).
pub(crate) fn http_date(
    headers: &HeaderMap,
    name: header::HeaderName,
) -> Option<Result<SystemTime, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let parsed = first
        .to_str()
        .ok()
        .and_then(|s| super::dates::parse(s.trim()));
    // Two different values of a singleton date field: unusable (treated like an invalid date).
    if values.any(|v| v != first) {
        return Some(Err(()));
    }
    Some(parsed.ok_or(()))
}

/// The explicit freshness lifetime of a response (RFC 9111 §4.2.1), or `None` when the response
/// has no explicit freshness information.
///
/// `response_time` stands in for a missing or invalid `Date` (RFC 9110 §6.6.1: a recipient with
/// a clock adds the time of reception).
pub(crate) fn explicit_lifetime(
    headers: &HeaderMap,
    cc: &ResponseDirectives,
    shared: bool,
    response_time: SystemTime,
) -> Option<Duration> {
    // A surrogate obeys Surrogate-Control first (Edge Architecture 1.0 §2.2.1: it "takes
    // priority over Cache-Control" for the surrogates it targets).
    if let Some(s) = cc.surrogate_max_age {
        return Some(Duration::from_secs(s));
    }
    // §4.2.1: "If the cache is shared and the s-maxage response directive is present, use its
    // value"
    if shared {
        if let Some(s) = cc.s_maxage {
            return Some(Duration::from_secs(s));
        }
    }
    // "If the max-age response directive is present, use its value"
    if let Some(m) = cc.max_age {
        return Some(Duration::from_secs(m));
    }
    // RFC 9213 §2.1: a cache that uses a targeted field "MUST ignore the Cache-Control and
    // Expires header fields in that response".
    if cc.targeted {
        return None;
    }
    // "If the Expires response header field is present, use its value minus the value of the
    // Date response header field (using the time the message was received if it is not
    // present)"
    let expires = http_date(headers, header::EXPIRES)?;
    // §5.3: "A cache recipient MUST interpret invalid date formats, especially the value "0", as
    // representing a time in the past (i.e., "already expired")."
    let Ok(expires) = expires else {
        return Some(Duration::ZERO);
    };
    let date = match http_date(headers, header::DATE) {
        Some(Ok(date)) => date,
        _ => response_time,
    };
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// RFC 9110 §15.1: "Responses with status codes that are defined as heuristically cacheable
/// (e.g., 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, and 501 in this
/// specification) can be reused by a cache with heuristic expiration". (A 206 is stored only
/// as an incomplete entry that says exactly which bytes it holds: `ranges::storable_partial`.)
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// RFC 9111 §4.2.2: "If the response has a Last-Modified header field (Section 8.8.2 of
/// [HTTP]), caches are encouraged to use a heuristic expiration value that is no more than some
/// fraction of the interval since that time. A typical setting of this fraction might be 10%."
/// Only for heuristically cacheable statuses or responses marked `public` (§5.2.2.9: "If a
/// response with the public directive has no explicit freshness information, it is
/// heuristically cacheable"), and only without explicit freshness (the caller checks that).
pub(crate) fn heuristic_lifetime(
    headers: &HeaderMap,
    status: StatusCode,
    public: bool,
    response_time: SystemTime,
) -> Option<Duration> {
    if !(heuristically_cacheable(status) || public) {
        return None;
    }
    let Some(Ok(last_modified)) = http_date(headers, header::LAST_MODIFIED) else {
        return None;
    };
    let date = match http_date(headers, header::DATE) {
        Some(Ok(date)) => date,
        _ => response_time,
    };
    let since = date.duration_since(last_modified).ok()?;
    Some(since / 10).filter(|d| !d.is_zero())
}

/// The freshness lifetime: explicit (§4.2.1), else heuristic (§4.2.2), else none.
pub(crate) fn freshness_lifetime(
    headers: &HeaderMap,
    cc: &ResponseDirectives,
    status: StatusCode,
    shared: bool,
    response_time: SystemTime,
) -> Option<Duration> {
    explicit_lifetime(headers, cc, shared, response_time)
        .or_else(|| heuristic_lifetime(headers, status, cc.public, response_time))
}

/// The inputs of the age calculation that are fixed when the response is received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgeInputs {
    /// `age_value`: the first member of the `Age` field, 0 when absent or invalid (§5.1).
    pub(crate) age_value: Duration,
    /// `date_value`: the `Date` header, `response_time` when absent or invalid.
    pub(crate) date_value: SystemTime,
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
}

impl AgeInputs {
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Self {
        // §5.1: "a cache encountering a message with a list-based Age field value SHOULD use
        // the first member of the field value, discarding subsequent ones" (the first line's
        // first member when the field is repeated), and "If the field value (after discarding
        // additional members, as per above) is invalid (e.g., it contains something other than
        // a non-negative integer), a cache SHOULD ignore the field": §4.2.3's age_value is then
        // "0 if not available".
        let age_value = headers
            .get(header::AGE)
            .and_then(|v| v.as_bytes().split(|b| *b == b',').next())
            .and_then(|first| std::str::from_utf8(first).ok())
            .and_then(|first| delta_seconds(first.trim_matches([' ', '\t'])))
            .map_or(Duration::ZERO, Duration::from_secs);
        let date_value = match http_date(headers, header::DATE) {
            Some(Ok(d)) => d,
            _ => response_time,
        };
        Self {
            age_value,
            date_value,
            request_time,
            response_time,
        }
    }

    /// RFC 9111 §4.2.3, literally:
    ///
    /// ```text
    /// apparent_age = max(0, response_time - date_value);
    /// response_delay = response_time - request_time;
    /// corrected_age_value = age_value + response_delay;
    /// corrected_initial_age = max(apparent_age, corrected_age_value);
    /// resident_time = now - response_time;
    /// current_age = corrected_initial_age + resident_time;
    /// ```
    ///
    /// Every step saturates: clocks going backwards give 0, overflow gives 2^31 seconds.
    pub(crate) fn current_age(&self, now: SystemTime) -> Duration {
        let since = |later: SystemTime, earlier: SystemTime| {
            later.duration_since(earlier).unwrap_or(Duration::ZERO)
        };
        let apparent_age = since(self.response_time, self.date_value);
        let response_delay = since(self.response_time, self.request_time);
        let corrected_age_value = self.age_value.saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = since(now, self.response_time);
        corrected_initial_age
            .saturating_add(resident_time)
            .min(Duration::from_secs(DELTA_SECONDS_MAX))
    }
}

/// RFC 9111 §5.1: the `Age` field of a response served from the cache, "a non-negative integer,
/// representing time in seconds"; §4: a cache "MUST generate an Age header field ..., replacing
/// any present in the response with a value equal to the stored response's current_age".
pub(crate) fn age_value(age: Duration) -> http::HeaderValue {
    http::HeaderValue::from(age.as_secs())
}

/// The freshness lifetime of an entry when the user's settings decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// RFC 9111 §4.2: from the stored headers (explicit, else heuristic).
    Headers,
    /// The user's `expire_after` for a response without explicit freshness; the response's
    /// other directives (`no-cache`, `must-revalidate`, ...) still apply.
    Fill(std::time::Duration),
    /// `cache_control(false)`: the user's lifetime replaces whatever the headers say, and the
    /// response's reuse directives are not consulted.
    Override(std::time::Duration),
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    const EPOCH: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(EPOCH + secs)
    }

    fn hdrs(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(t(secs))
    }

    #[test]
    fn lifetime_table() {
        let d0 = date(0);
        let d100 = date(100);
        type Case<'a> = (Vec<(&'a str, &'a str)>, bool, Option<u64>);
        let cases: Vec<Case<'_>> = vec![
            (vec![("cache-control", "max-age=60")], false, Some(60)),
            (
                vec![("cache-control", "max-age=60, s-maxage=5")],
                false,
                Some(60),
            ),
            (
                vec![("cache-control", "max-age=60, s-maxage=5")],
                true,
                Some(5),
            ),
            (vec![("date", &d0), ("expires", &d100)], false, Some(100)),
            // max-age wins over Expires (§5.3)
            (
                vec![
                    ("cache-control", "max-age=7"),
                    ("date", &d0),
                    ("expires", &d100),
                ],
                false,
                Some(7),
            ),
            // Expires before Date: already stale
            (vec![("date", &d100), ("expires", &d0)], false, Some(0)),
            // Invalid Expires, e.g. "0": in the past
            (vec![("date", &d0), ("expires", "0")], false, Some(0)),
            // Expires without Date: relative to the time of reception (t(0) below)
            (vec![("expires", &d100)], false, Some(100)),
            (vec![], false, None),
            (vec![("cache-control", "no-cache")], false, None),
        ];
        for (pairs, shared, want) in cases {
            let h = hdrs(&pairs);
            let cc = ResponseDirectives::parse(&h);
            assert_eq!(
                explicit_lifetime(&h, &cc, shared, t(0)),
                want.map(Duration::from_secs),
                "{pairs:?} shared={shared}"
            );
        }
    }

    #[test]
    fn heuristic_is_a_tenth_of_the_age_of_last_modified() {
        let lm = httpdate::fmt_http_date(t(0));
        let d = date(1000);
        let h = hdrs(&[("last-modified", &lm), ("date", &d)]);
        let ok = StatusCode::OK;
        assert_eq!(
            heuristic_lifetime(&h, ok, false, t(1000)),
            Some(Duration::from_secs(100))
        );
        // Without Date: relative to reception.
        let h2 = hdrs(&[("last-modified", &lm)]);
        assert_eq!(
            heuristic_lifetime(&h2, ok, false, t(50)),
            Some(Duration::from_secs(5))
        );
        // Not for statuses outside RFC 9110 §15.1's list unless `public` (RFC 9111 §5.2.2.9),
        // nor without Last-Modified.
        assert_eq!(
            heuristic_lifetime(&h, StatusCode::FOUND, false, t(1000)),
            None
        );
        let unknown = StatusCode::from_u16(599).unwrap();
        assert_eq!(heuristic_lifetime(&h, unknown, false, t(1000)), None);
        assert_eq!(
            heuristic_lifetime(&h, unknown, true, t(1000)),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            heuristic_lifetime(&h, StatusCode::PARTIAL_CONTENT, false, t(1000)),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            heuristic_lifetime(&HeaderMap::new(), ok, true, t(1000)),
            None
        );
        // Last-Modified in the future: no heuristic.
        let h3 = hdrs(&[("last-modified", &date(5000)), ("date", &d)]);
        assert_eq!(heuristic_lifetime(&h3, ok, false, t(1000)), None);
        // Explicit freshness wins.
        let h4 = hdrs(&[
            ("last-modified", &lm),
            ("date", &d),
            ("cache-control", "max-age=7"),
        ]);
        let cc = ResponseDirectives::parse(&h4);
        assert_eq!(
            freshness_lifetime(&h4, &cc, ok, false, t(1000)),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn all_three_date_formats() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            let h = hdrs(&[("date", s)]);
            assert_eq!(
                http_date(&h, header::DATE),
                Some(Ok(UNIX_EPOCH + Duration::from_secs(784_111_777))),
                "{s}"
            );
        }
    }

    #[test]
    fn current_age_follows_4_2_3() {
        // Sent at 0, received at 2, Date says 1, Age says 10, now 30.
        let h = hdrs(&[("date", &date(1)), ("age", "10")]);
        let inputs = AgeInputs::from_headers(&h, t(0), t(2));
        // apparent 1, corrected_age_value 10 + 2 = 12, initial 12, resident 28 → 40
        assert_eq!(inputs.current_age(t(30)), Duration::from_secs(40));
        // Date far in the past dominates: apparent age 1000
        let h = hdrs(&[("date", "Tue, 14 Nov 2023 21:56:40 GMT")]); // t(-1000)
        let inputs = AgeInputs::from_headers(&h, t(0), t(0));
        assert_eq!(inputs.current_age(t(0)), Duration::from_secs(1000));
        // Clock went backwards: never negative.
        let inputs = AgeInputs::from_headers(&HeaderMap::new(), t(10), t(10));
        assert_eq!(inputs.current_age(t(5)), Duration::ZERO);
        // Huge Age saturates at 2^31.
        let h = hdrs(&[("age", "999999999999999999999")]);
        let inputs = AgeInputs::from_headers(&h, t(0), t(0));
        assert_eq!(
            inputs.current_age(t(100)),
            Duration::from_secs(DELTA_SECONDS_MAX)
        );
        // §5.1: the first member of a list or of repeated lines counts; an invalid first member
        // is ignored (age_value 0). The suite's age-parse group, plus edge cases of our own.
        let cases: &[(&[&str], u64)] = &[
            (&["-5"], 0),
            (&["-7200"], 0),
            (&["abc"], 0),
            (&["1.5"], 0),
            (&["7200.0"], 0),
            (&["10s"], 0),
            (&["5;x=1"], 0),
            (&["7200;foo=111"], 0),
            (&[""], 0),
            (&[", 7200"], 0),
            (&["0", "7200"], 0),
            (&["0, 7200"], 0),
            (&["7200, 0"], 7200),
            (&["7200", "0"], 7200),
            (&["0, 0"], 0),
            (&["3600", "3600"], 3600),
            (&["30", "30"], 30),
            (&[" 30 "], 30),
            (&["\t30 ,x"], 30),
            (&["2147483647"], DELTA_SECONDS_MAX - 1),
            (&["2147483648"], DELTA_SECONDS_MAX),
            (&["2147483649"], DELTA_SECONDS_MAX),
        ];
        for (lines, want) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|v| ("age", *v)).collect();
            let h = hdrs(&pairs);
            assert_eq!(
                AgeInputs::from_headers(&h, t(0), t(0)).age_value,
                Duration::from_secs(*want),
                "{lines:?}"
            );
        }
    }

    proptest::proptest! {
        /// Arbitrary Date / Expires / Age values: no panic, age and lifetime bounded.
        #[test]
        fn arbitrary_dates_and_ages(date in ".{0,40}", expires in ".{0,40}", age in ".{0,24}", secs in 0u64..(1u64 << 40)) {
            let mut h = HeaderMap::new();
            for (n, v) in [("date", &date), ("expires", &expires), ("age", &age)] {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append(header::HeaderName::from_static(n), v);
                }
            }
            let cc = ResponseDirectives::parse(&h);
            let _ = explicit_lifetime(&h, &cc, false, t(0));
            let now = UNIX_EPOCH + Duration::from_secs(secs);
            let age = AgeInputs::from_headers(&h, t(0), t(1)).current_age(now);
            proptest::prop_assert!(age <= Duration::from_secs(DELTA_SECONDS_MAX));
        }

        /// Every date httpdate can print is read back, in each of the three formats' first.
        #[test]
        fn imf_fixdate_round_trips(secs in 0u64..253_402_300_799u64) {
            let when = UNIX_EPOCH + Duration::from_secs(secs);
            let h = hdrs(&[("date", &httpdate::fmt_http_date(when))]);
            proptest::prop_assert_eq!(http_date(&h, header::DATE), Some(Ok(when)));
        }
    }
}
