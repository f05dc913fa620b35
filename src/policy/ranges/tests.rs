//! Table tests of the range rules, with the suite's cases and our own.

use super::*;
use ByteRange::{From, Suffix};

fn range(v: &str) -> Option<RangeRequest> {
    let mut h = HeaderMap::new();
    h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
    parse_range(&h)
}

fn part(first: u64, last: u64, complete: u64) -> ContentRange {
    ContentRange {
        first,
        last,
        complete,
    }
}

#[test]
fn range_syntax() {
    let single = |r| Some(RangeRequest::Single(r));
    assert_eq!(
        range("bytes=0-1"),
        single(From {
            first: 0,
            last: Some(1)
        })
    );
    assert_eq!(
        range("bytes=1-"),
        single(From {
            first: 1,
            last: None
        })
    );
    assert_eq!(range("bytes=-1"), single(Suffix(1)));
    assert_eq!(range("Bytes = 5-9 "), None, "no whitespace before '='");
    assert_eq!(
        range("BYTES=5-9"),
        single(From {
            first: 5,
            last: Some(9)
        })
    );
    assert_eq!(
        range("bytes= 5-9"),
        single(From {
            first: 5,
            last: Some(9)
        })
    );
    assert_eq!(range("bytes=0-1, 5-6"), Some(RangeRequest::Multiple));
    assert_eq!(
        range("bytes=0-1,,"),
        single(From {
            first: 0,
            last: Some(1)
        })
    );
    assert_eq!(
        range("bytes=99999999999999999999999-"),
        single(From {
            first: u64::MAX,
            last: None
        })
    );
    for ignored in [
        "items=0-1",
        "bytes=",
        "bytes=5-1",
        "bytes=a-b",
        "bytes=-",
        "bytes=1-2-3",
        "bytes=0-1, x",
        "bytes=+1-2",
        "0-1",
    ] {
        assert_eq!(range(ignored), None, "{ignored}");
    }
    let mut h = HeaderMap::new();
    h.append(header::RANGE, HeaderValue::from_static("bytes=0-1"));
    h.append(header::RANGE, HeaderValue::from_static("bytes=2-3"));
    assert_eq!(parse_range(&h), Some(RangeRequest::Multiple));
    assert_eq!(parse_range(&HeaderMap::new()), None);
}

#[test]
fn resolving_against_a_complete_length() {
    // The suite's partial-store-complete-* cases on an 11-byte body, and edges.
    assert_eq!(
        resolve(
            From {
                first: 0,
                last: Some(1)
            },
            11
        ),
        Selected::Part(part(0, 1, 11))
    );
    assert_eq!(
        resolve(
            From {
                first: 1,
                last: None
            },
            11
        ),
        Selected::Part(part(1, 10, 11))
    );
    assert_eq!(resolve(Suffix(1), 11), Selected::Part(part(10, 10, 11)));
    assert_eq!(resolve(Suffix(50), 11), Selected::Part(part(0, 10, 11)));
    assert_eq!(
        resolve(
            From {
                first: 5,
                last: Some(500)
            },
            11
        ),
        Selected::Part(part(5, 10, 11))
    );
    assert_eq!(
        resolve(
            From {
                first: 10,
                last: Some(10)
            },
            11
        ),
        Selected::Part(part(10, 10, 11))
    );
    let unsat = Selected::Unsatisfiable { complete: 11 };
    assert_eq!(
        resolve(
            From {
                first: 11,
                last: None
            },
            11
        ),
        unsat
    );
    assert_eq!(
        resolve(
            From {
                first: u64::MAX,
                last: None
            },
            11
        ),
        unsat
    );
    assert_eq!(resolve(Suffix(0), 11), unsat);
    assert_eq!(resolve(Suffix(3), 0), Selected::Whole);
    assert_eq!(
        resolve(
            From {
                first: 0,
                last: None
            },
            0
        ),
        Selected::Unsatisfiable { complete: 0 }
    );
}

#[test]
fn an_incomplete_entry_answers_only_ranges_it_holds() {
    let have = part(4, 8, 10);
    assert_eq!(
        within(
            From {
                first: 6,
                last: Some(8)
            },
            have
        ),
        Some(part(6, 8, 10))
    );
    assert_eq!(
        within(
            From {
                first: 4,
                last: Some(8)
            },
            have
        ),
        Some(have)
    );
    assert_eq!(
        within(
            From {
                first: 6,
                last: None
            },
            have
        ),
        None,
        "6-9: byte 9 missing"
    );
    assert_eq!(within(Suffix(1), have), None, "byte 9 missing");
    assert_eq!(within(Suffix(1), part(4, 9, 10)), Some(part(9, 9, 10)));
    assert_eq!(
        within(
            From {
                first: 3,
                last: Some(5)
            },
            have
        ),
        None
    );
    assert_eq!(
        within(
            From {
                first: 10,
                last: None
            },
            have
        ),
        None
    );
}

#[test]
fn what_a_stored_response_answers() {
    use http::StatusCode;
    let ok = StatusCode::OK;
    let r = From {
        first: 2,
        last: Some(3),
    };
    let none = HeaderMap::new();
    assert_eq!(
        select(r, None, ok, &none, 10),
        Some(Selected::Part(part(2, 3, 10)))
    );
    assert_eq!(
        select(Suffix(0), None, ok, &none, 10),
        Some(Selected::Unsatisfiable { complete: 10 })
    );
    assert_eq!(
        select(r, None, StatusCode::NOT_FOUND, &none, 10),
        Some(Selected::Whole)
    );
    let mut tagged = HeaderMap::new();
    tagged.insert(header::ETAG, HeaderValue::from_static("\"a\""));
    let other = HeaderValue::from_static("\"b\"");
    assert_eq!(
        select(r, Some(&other), ok, &tagged, 10),
        Some(Selected::Whole)
    );
    let same = HeaderValue::from_static("\"a\"");
    assert_eq!(
        select(r, Some(&same), ok, &tagged, 10),
        Some(Selected::Part(part(2, 3, 10)))
    );
    // An incomplete entry: only what it holds, and only if its body is what it says.
    let mut partial = tagged.clone();
    partial.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_static("bytes 0-4/10"),
    );
    let pc = StatusCode::PARTIAL_CONTENT;
    assert_eq!(
        select(r, None, pc, &partial, 5),
        Some(Selected::Part(part(2, 3, 10)))
    );
    assert_eq!(select(r, None, pc, &partial, 4), None);
    assert_eq!(select(Suffix(2), None, pc, &partial, 5), None);
    assert_eq!(select(r, Some(&other), pc, &partial, 5), None);
    assert_eq!(select(r, None, pc, &tagged, 5), None, "no Content-Range");
}

#[test]
fn storable_partials_say_exactly_what_they_hold() {
    let h = |cr: &str, len: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(cr).unwrap());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(len).unwrap());
        h
    };
    assert_eq!(
        storable_partial(&h("bytes 4-8/10", "5")),
        Some(part(4, 8, 10))
    );
    // The suite sends "bytes 4-9/10" with five bytes: not what it says, not stored.
    assert_eq!(storable_partial(&h("bytes 4-9/10", "5")), None);
    for bad in [
        "bytes 4-8/*",
        "bytes */10",
        "bytes 8-4/10",
        "bytes 4-10/10",
        "items 4-8/10",
        "bytes 4-8/10, 1-2/10",
        "bytes -4-8/10",
        "bytes 99999999999999999999-99999999999999999999/99999999999999999999",
    ] {
        assert_eq!(storable_partial(&h(bad, "5")), None, "{bad}");
    }
    let mut no_length = h("bytes 4-8/10", "5");
    no_length.remove(header::CONTENT_LENGTH);
    assert_eq!(storable_partial(&no_length), None);
}

#[test]
fn if_range_uses_the_strong_comparison() {
    let mut stored = HeaderMap::new();
    stored.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
    stored.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static("Tue, 14 Nov 2023 20:00:00 GMT"),
    );
    stored.insert(
        header::DATE,
        HeaderValue::from_static("Tue, 14 Nov 2023 21:00:00 GMT"),
    );
    let holds = |v: &'static str, h: &HeaderMap| if_range_holds(&HeaderValue::from_static(v), h);
    assert!(holds("\"v1\"", &stored));
    assert!(!holds("\"v2\"", &stored));
    assert!(!holds("W/\"v1\"", &stored));
    assert!(holds("Tue, 14 Nov 2023 20:00:00 GMT", &stored));
    assert!(
        !holds("Tue, 14 Nov 2023 20:00:01 GMT", &stored),
        "an exact match only"
    );
    assert!(!holds("garbage", &stored));
    // A weak stored ETag never matches; a Last-Modified within a second of Date is weak.
    let mut weak = stored.clone();
    weak.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
    weak.insert(
        header::DATE,
        HeaderValue::from_static("Tue, 14 Nov 2023 20:00:00 GMT"),
    );
    assert!(!holds("\"v1\"", &weak));
    assert!(!holds("W/\"v1\"", &weak));
    assert!(!holds("Tue, 14 Nov 2023 20:00:00 GMT", &weak));
}

#[test]
fn partials_combine_only_with_the_same_strong_etag_when_they_meet() {
    let tagged = |tag: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static(tag));
        h
    };
    let (a, b) = (tagged("\"x\""), tagged("\"x\""));
    assert_eq!(
        combine((&a, part(0, 4, 10)), (&b, part(5, 9, 10))),
        Some(part(0, 9, 10))
    );
    assert_eq!(
        combine((&a, part(3, 7, 10)), (&b, part(0, 4, 10))),
        Some(part(0, 7, 10))
    );
    assert_eq!(
        combine((&a, part(0, 2, 10)), (&b, part(4, 9, 10))),
        None,
        "a gap"
    );
    assert_eq!(
        combine((&a, part(0, 4, 10)), (&b, part(5, 9, 11))),
        None,
        "other length"
    );
    assert_eq!(
        combine((&a, part(0, 4, 10)), (&tagged("\"y\""), part(5, 9, 10))),
        None
    );
    let weak = tagged("W/\"x\"");
    assert_eq!(
        combine((&weak, part(0, 4, 10)), (&weak, part(5, 9, 10))),
        None
    );
    assert_eq!(
        combine(
            (&HeaderMap::new(), part(0, 4, 10)),
            (&HeaderMap::new(), part(5, 9, 10))
        ),
        None
    );

    let union = part(0, 9, 10);
    assert_eq!(
        splice(b"01234", part(0, 4, 10), b"56789", part(5, 9, 10), union).unwrap(),
        b"0123456789"
    );
    // Overlap: the new bytes win.
    assert_eq!(
        splice(
            b"01234",
            part(0, 4, 10),
            b"XX789",
            part(3, 7, 10),
            part(0, 7, 10)
        )
        .unwrap(),
        b"012XX789"
    );
    // Bodies that are not the length their range says: refused.
    assert!(splice(b"0123", part(0, 4, 10), b"56789", part(5, 9, 10), union).is_none());
}

proptest::proptest! {
    /// Any Range value: no panic; a single range resolves within any length.
    #[test]
    fn arbitrary_ranges(v in "[ -~]{0,40}", complete in 0u64..1_000_000) {
        let mut h = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&v) {
            h.insert(header::RANGE, value);
        }
        if let Some(RangeRequest::Single(r)) = parse_range(&h) {
            if let Selected::Part(p) = resolve(r, complete) {
                proptest::prop_assert!(p.first <= p.last && p.last < complete);
            }
        }
    }
}

/// Review: `splice_parts` against a naive overlay (the stored part at its offset, then the new
/// part over it) for every pair of ranges of representations of up to 9 bytes, and every union
/// given (only the true one may combine).
#[test]
fn splice_parts_matches_a_naive_overlay_everywhere() {
    let mut checked = 0;
    for complete in 1u64..=9 {
        let ranges: Vec<ContentRange> = (0..complete)
            .flat_map(|f| (f..complete).map(move |l| part(f, l, complete)))
            .collect();
        for &old_r in &ranges {
            let old: Vec<u8> = (old_r.first..=old_r.last).map(|i| b'a' + i as u8).collect();
            for &new_r in &ranges {
                let new: Vec<u8> = (new_r.first..=new_r.last).map(|i| b'A' + i as u8).collect();
                let meet = old_r.first <= new_r.last + 1 && new_r.first <= old_r.last + 1;
                let true_union = part(
                    old_r.first.min(new_r.first),
                    old_r.last.max(new_r.last),
                    complete,
                );
                // The naive result.
                let naive = meet.then(|| {
                    let mut out = vec![0u8; true_union.len() as usize];
                    let o = (old_r.first - true_union.first) as usize;
                    out[o..o + old.len()].copy_from_slice(&old);
                    let n = (new_r.first - true_union.first) as usize;
                    out[n..n + new.len()].copy_from_slice(&new);
                    out
                });
                for &union in &ranges {
                    let got = splice(&old, old_r, &new, new_r, union);
                    let want = naive.clone().filter(|_| union == true_union);
                    assert_eq!(got, want, "old {old_r:?} new {new_r:?} union {union:?}");
                    // What the streaming path does: prefix | new | suffix, with the prefix
                    // and suffix slices in bounds whatever happens.
                    if let Some((p, s)) = splice_parts(old_r, new_r, union) {
                        assert!(p.end <= old.len() && s.start <= s.end && s.end <= old.len());
                        let mut streamed = old[p].to_vec();
                        streamed.extend_from_slice(&new);
                        streamed.extend_from_slice(&old[s]);
                        assert_eq!(Some(streamed), want);
                    } else {
                        assert!(want.is_none());
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10_000);
}

/// Review: ranges at the top of u64 do not overflow.
#[test]
fn splice_parts_extremes() {
    let max = u64::MAX;
    let c = max;
    let old = part(max - 10, max - 1, c);
    let new = part(max - 5, max - 1, c);
    assert!(splice_parts(old, new, part(max - 10, max - 1, c)).is_some());
    // A stored part longer than memory can hold: `None`, not a panic.
    let huge = part(0, max - 1, c);
    let _ = splice_parts(huge, part(0, 0, c), huge);
    let _ = splice_parts(part(0, 0, c), huge, huge);
}
