//! HTTP-date parsing as a cache recipient should do it (RFC 9110 §5.6.7, RFC 9111 §4.2).
//!
//! `httpdate` does the grammar and the calendar, strictly. This module wraps it where the RFCs
//! ask a cache to be lenient, and nowhere else:
//!
//! - RFC 9111 §4.2: "a cache recipient SHOULD match the field value case-insensitively"
//!   (`THU`, `AUG`, `gMT`).
//! - A day name that does not fit the date: the date's value is what a cache uses, the day name
//!   is redundant (RFC 9110 §5.6.7 defines it, but no rule makes a date with the wrong one
//!   invalid, and the suite's optimal tests expect it to be read).
//!
//! Everything else stays strict, because an invalid `Expires` means "already expired" (RFC 9111
//! §5.3): another zone than `GMT` (`UTC`, `AEST`), a two-digit year outside the RFC 850 form,
//! a missing comma, doubled spaces, dashes or periods where the format has none, a one-digit
//! hour.

use std::time::SystemTime;

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses one HTTP-date in any of its three forms, case-insensitively and whatever its day name
/// says. `None` when it is not a date.
pub(crate) fn parse(value: &str) -> Option<SystemTime> {
    // The common case: a well-formed IMF-fixdate, as every current server sends.
    if let Ok(when) = httpdate::parse_http_date(value) {
        return Some(when);
    }
    if !value.is_ascii() || value.len() > 64 {
        return None;
    }
    // The same text with each word in the case httpdate expects.
    let canonical = canonical_case(value);
    if let Ok(when) = httpdate::parse_http_date(&canonical) {
        return Some(when);
    }
    // A wrong day name: try the other six in its place (of the same form); at most one of them
    // fits the date, and it is the date's value that counts.
    let name_len = canonical
        .bytes()
        .take_while(u8::is_ascii_alphabetic)
        .count();
    let (name, rest) = canonical.split_at(name_len);
    let names: &[&str] = if DAYS.contains(&name) {
        &DAYS
    } else if LONG_DAYS.contains(&name) {
        &LONG_DAYS
    } else {
        return None;
    };
    names
        .iter()
        .filter(|other| **other != name)
        .find_map(|other| httpdate::parse_http_date(&format!("{other}{rest}")).ok())
}

/// Each alphabetic word that is a day name, a month name or `GMT` in any case, written the way
/// the grammar spells it; every other byte (spaces, digits, punctuation) unchanged.
fn canonical_case(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while !rest.is_empty() {
        let word_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        if word_len == 0 {
            let other_len = rest
                .bytes()
                .take_while(|b| !b.is_ascii_alphabetic())
                .count();
            out.push_str(&rest[..other_len]);
            rest = &rest[other_len..];
            continue;
        }
        let word = &rest[..word_len];
        let known = DAYS
            .iter()
            .chain(&LONG_DAYS)
            .chain(&MONTHS)
            .chain(&["GMT"])
            .find(|known| known.eq_ignore_ascii_case(word));
        out.push_str(known.map_or(word, |k| k));
        rest = &rest[word_len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2050-08-18T02:01:18Z, a Thursday.
    const AUG_18_2050: u64 = 2_544_400_878;

    #[test]
    fn lenient_where_the_rfc_asks() {
        let want = Some(UNIX_EPOCH + Duration::from_secs(AUG_18_2050));
        for ok in [
            "Thu, 18 Aug 2050 02:01:18 GMT",
            // RFC 9111 §4.2: case-insensitive.
            "THU, 18 Aug 2050 02:01:18 GMT",
            "thu, 18 aug 2050 02:01:18 gmt",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            // The date's value counts, not its day name.
            "Mon, 18 Aug 2050 02:01:18 GMT",
            "Sun, 18 Aug 2050 02:01:18 GMT",
            // RFC 850 and asctime forms, the same leniency.
            "Thursday, 18-Aug-50 02:01:18 GMT",
            "THURSDAY, 18-aug-50 02:01:18 GMT",
            "Monday, 18-Aug-50 02:01:18 GMT",
            "Thu Aug 18 02:01:18 2050",
            "Fri Aug 18 02:01:18 2050",
            "tHU aUG 18 02:01:18 2050",
        ] {
            assert_eq!(parse(ok), want, "{ok}");
        }
        // asctime with a one-digit day, as the suite sends it (2050-08-08 is a Monday).
        assert_eq!(
            parse("Thu Aug  8 02:01:18 2050"),
            Some(UNIX_EPOCH + Duration::from_secs(AUG_18_2050 - 10 * 86_400))
        );
    }

    #[test]
    fn strict_everywhere_else() {
        for bad in [
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 25:01:18 GMT",
            "Xyz, 18 Aug 2050 02:01:18 GMT",
            "Thursday, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Äug 2050 02:01:18 GMT",
            "0",
            "",
            "-1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any text at all: no panic; whatever is accepted is accepted by httpdate once the
        /// case and day name are fixed (so a date's value is never invented).
        #[test]
        fn arbitrary_text(s in ".{0,40}") {
            if let Some(when) = parse(&s) {
                let printed = httpdate::fmt_http_date(when);
                proptest::prop_assert!(httpdate::parse_http_date(&printed).is_ok());
            }
        }

        /// Every IMF-fixdate, in any case and with any day name, reads as its value.
        #[test]
        fn any_case_any_day_name(secs in 0u64..253_402_300_799u64, mask in proptest::num::u32::ANY, day in 0usize..7) {
            let when = UNIX_EPOCH + Duration::from_secs(secs);
            let printed = httpdate::fmt_http_date(when);
            let mut text: String = format!("{}{}", DAYS[day], &printed[3..]);
            text = text
                .chars()
                .enumerate()
                .map(|(i, c)| if mask >> (i % 32) & 1 == 1 { c.to_ascii_lowercase() } else { c })
                .collect();
            proptest::prop_assert_eq!(parse(&text), Some(when));
        }
    }
}
