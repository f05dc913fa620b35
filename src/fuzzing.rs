//! Entry points for the `cargo fuzz` targets in `fuzz/`. Not a public API: enabled only by the
//! `fuzzing` feature, hidden from the docs, and free to change in any release.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::envelope::{Envelope, KeyRing, Pending, SecretKey, Step};
use crate::policy::freshness::{explicit_lifetime, http_date, AgeInputs};
use crate::policy::vary::vary_names;
use crate::policy::{RequestDirectives, ResponseDirectives};
use crate::CacheKey;

fn ring() -> KeyRing {
    KeyRing::new(
        SecretKey::new("fuzzing key, 32 bytes long......").unwrap_or_else(|_| unreachable!()),
    )
}

/// Opens `data` as a blob stored under key `k`, in the mode chosen by its first byte. Must
/// never panic, and must never accept anything in the signed or encrypted modes (nobody but
/// this function's sealer holds the key).
pub fn open_envelope(data: &[u8]) {
    let Some((&mode, blob)) = data.split_first() else {
        return;
    };
    let envelope = match mode % 3 {
        0 => Envelope::new(None),
        1 => Envelope::new(Some(ring())),
        _ => Envelope::encrypted(ring()),
    };
    let key = CacheKey::from_stored("k");
    // The decompressors, on bytes no verified record would hold.
    crate::envelope::fuzz_decompress(blob);
    let opened = envelope.open(&key, Bytes::copy_from_slice(blob));
    if mode % 3 != 0 {
        assert!(opened.is_err(), "a forged blob was accepted");
    }
    // The same bytes streamed, fed in pieces of a size the input picks: never a panic, never a
    // byte released in the signed or encrypted modes, and never more than the whole opened.
    let feed = usize::from(mode / 3).max(1);
    let mut pending = Pending::default();
    let mut pieces = blob.chunks(feed);
    let mut released = 0usize;
    let mut reader = None;
    loop {
        let more = match &mut reader {
            None => match envelope.open_head(&key, &mut pending) {
                Ok(Some(opened)) => {
                    reader = Some(opened.body);
                    false
                }
                Ok(None) => true,
                Err(_) => break,
            },
            Some(body) => match body.next(&mut pending) {
                Ok(Step::Segment(s)) => {
                    released += s.iter().map(Bytes::len).sum::<usize>();
                    false
                }
                Ok(Step::More) => true,
                Ok(Step::End) | Err(_) => break,
            },
        };
        if more {
            match pieces.next() {
                Some(piece) => pending.push(Bytes::copy_from_slice(piece)),
                None => break,
            }
        }
    }
    if mode % 3 != 0 {
        assert_eq!(released, 0, "a forged blob released bytes");
    }
    assert!(released <= blob.len());
}

/// Decodes `data` as the verified head record of an entry (the header-section decoder, past the
/// MAC or checksum that `open_envelope` rarely gets through with random bytes). Must never panic;
/// what it decodes must stay within the entry limits.
pub fn decode_entry(data: &[u8]) {
    if let Some((head, _, trailers, end)) =
        crate::envelope::wire::decode_head(&Bytes::copy_from_slice(data))
    {
        assert!(end <= data.len());
        assert!(head.headers.len() <= crate::envelope::wire::MAX_FIELDS);
        assert!(trailers.is_none_or(|t| t.len() <= crate::envelope::wire::MAX_FIELDS));
    }
}

/// Builds a header map from `name: value` lines and runs every header parser over it.
pub fn parse_headers(data: &[u8]) {
    let headers = header_map(data);
    let cc = ResponseDirectives::parse(&headers);
    let _ = RequestDirectives::parse(&headers);
    let _ = vary_names(&headers);
    let _ = http_date(&headers, http::header::DATE);
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for shared in [false, true] {
        if let Some(lifetime) = explicit_lifetime(&headers, &cc, shared, t) {
            assert!(lifetime <= Duration::from_secs(1 << 31) || cc.max_age.is_none());
        }
    }
    let age = AgeInputs::from_headers(&headers, t, t).current_age(t + Duration::from_secs(60));
    assert!(age <= Duration::from_secs(1 << 31));
}

/// `name: value` lines (invalid ones skipped) as a header map; used by the full-request target.
pub fn header_map(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value[1..].trim_ascii();
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    headers
}
