//! Format 4: every mode in verified segments. Round trips around the segment boundaries, in
//! parts and joined; and the attacks: every single-byte change of a multi-segment entry, read
//! whole or streamed (never a byte of the changed segment released), segments swapped between
//! entries, reordered, dropped or added, the algorithm relabelled, the format unknown (an unknown
//! codec: `codec_tests.rs`).

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use proptest::prelude::*;

use super::*;
use crate::entry::Entry;
use crate::entry::EntryBody;

pub(super) fn key(s: &str) -> CacheKey {
    CacheKey::from_stored(s)
}

pub(super) fn ring() -> KeyRing {
    KeyRing::new(SecretKey::new("the right key, 32 bytes long....").unwrap())
}

fn head() -> EntryHead {
    let mut headers = HeaderMap::new();
    headers.append("cache-control", HeaderValue::from_static("max-age=60"));
    EntryHead {
        status: StatusCode::OK,
        version: Version::HTTP_11,
        headers,
        request_time: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
        response_time: UNIX_EPOCH + Duration::new(1_700_000_001, 7),
        method: Method::GET,
        uri: Bytes::from_static(b"http://example.com/a"),
        vary: Vec::new(),
        generation: 1,
        expiry: crate::entry::Expiry::Headers,
        fresh: None,
    }
}

/// Unsigned, BLAKE3-signed, HMAC-signed, encrypted.
pub(super) fn all_modes() -> [Envelope; 4] {
    [
        Envelope::new(None),
        Envelope::new(Some(ring())).with_mac(Mac::Blake3),
        Envelope::new(Some(ring())).with_mac(Mac::HmacSha256),
        Envelope::encrypted(ring()),
    ]
}

pub(super) fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

pub(super) fn seal_parts(env: &Envelope, k: &str, body: &[u8], chunk: usize) -> Vec<Bytes> {
    let mut sealing = env.start(&key(k), &head(), None).unwrap();
    for c in body.chunks(chunk.max(1)) {
        sealing.append(&Bytes::copy_from_slice(c)).unwrap();
    }
    let mut trailers = HeaderMap::new();
    trailers.append("x-sum", HeaderValue::from_static("abc"));
    sealing.finish(Some(&trailers)).unwrap()
}

pub(super) fn join(parts: &[Bytes]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

fn whole_body(entry: &Entry) -> Vec<u8> {
    entry.body.to_bytes().unwrap().to_vec()
}

#[test]
fn every_body_length_around_segment_boundaries_round_trips_in_parts_and_joined() {
    for env in all_modes() {
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5] {
            let b = body(len);
            for chunk in [1000, SEGMENT, 7 * SEGMENT] {
                let parts = seal_parts(&env, "k", &b, chunk);
                let joined = Bytes::from(join(&parts));
                for entry in [
                    env.open_parts(&key("k"), parts.clone()).unwrap(),
                    env.open(&key("k"), joined).unwrap(),
                ] {
                    assert_eq!(whole_body(&entry), b, "{:?} {len} {chunk}", env.mode());
                    assert_eq!(entry.head.headers, head().headers);
                    assert_eq!(entry.trailers.as_ref().unwrap()["x-sum"], "abc");
                }
            }
        }
    }
}

#[test]
fn a_signed_body_is_the_origins_chunks_not_a_copy() {
    let env = Envelope::new(Some(ring()));
    let chunk = Bytes::from(body(2 * SEGMENT));
    let mut sealing = env.start(&key("k"), &head(), None).unwrap();
    sealing.append(&chunk).unwrap();
    let parts = sealing.finish(None).unwrap();
    let range = chunk.as_ptr() as usize..chunk.as_ptr() as usize + chunk.len();
    let borrowed: usize = parts
        .iter()
        .filter(|p| range.contains(&(p.as_ptr() as usize)))
        .map(Bytes::len)
        .sum();
    assert_eq!(
        borrowed,
        chunk.len(),
        "every body byte is a slice of the chunk"
    );
    let entry = env.open_parts(&key("k"), parts).unwrap();
    let EntryBody::Parts { parts, .. } = &entry.body else {
        panic!("in memory")
    };
    assert!(parts.iter().all(|p| range.contains(&(p.as_ptr() as usize))));
}

/// Opens `blob` as a stream fed `feed` bytes at a time: the bytes released, and how it ended.
pub(super) fn stream_open(
    env: &Envelope,
    k: &str,
    blob: &[u8],
    feed: usize,
) -> (Vec<u8>, Result<(), String>) {
    let mut p = Pending::default();
    let mut chunks = blob.chunks(feed);
    let mut released = Vec::new();
    let mut opened = None;
    loop {
        if opened.is_none() {
            match env.open_head(&key(k), &mut p) {
                Ok(Some(o)) => opened = Some(o),
                Ok(None) => match chunks.next() {
                    Some(c) => p.push(Bytes::copy_from_slice(c)),
                    None => return (released, Err(format!("{:?}", env.truncated(&key(k))))),
                },
                Err(e) => return (released, Err(format!("{e:?}"))),
            }
            continue;
        }
        let reader = &mut opened.as_mut().unwrap().body;
        match reader.next(&mut p) {
            Ok(Step::Segment(s)) => s.iter().for_each(|b| released.extend_from_slice(b)),
            Ok(Step::End) => {
                return match (p.len(), chunks.next()) {
                    (0, None) => (released, Ok(())),
                    _ => (released, Err(format!("{:?}", reader.malformed()))),
                }
            }
            Ok(Step::More) => match chunks.next() {
                Some(c) => p.push(Bytes::copy_from_slice(c)),
                None => return (released, Err(format!("{:?}", reader.malformed()))),
            },
            Err(e) => return (released, Err(format!("{e:?}"))),
        }
    }
}

/// The offsets in a sealed blob (without trailers' change: same `seal_parts`) where each body
/// segment's record starts, found by walking the framing.
pub(super) fn record_starts(blob: &[u8], alg_tag: usize) -> Vec<usize> {
    let id_len = usize::from(blob[6]);
    let klen = usize::from(u16::from_be_bytes([blob[7 + id_len], blob[8 + id_len]]));
    let mut at = 9 + id_len + klen + ENTRY_ID_LEN;
    let mut starts = Vec::new();
    while at < blob.len() {
        starts.push(at);
        let len = u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        at += 5 + len + alg_tag;
    }
    starts
}

#[test]
fn no_single_byte_change_anywhere_releases_a_byte_of_its_segment() {
    let b = body(2 * SEGMENT + 100);
    for (env, tag) in all_modes().into_iter().zip([4, 32, 32, 0]) {
        let blob = join(&seal_parts(&env, "k", &b, 5000));
        let starts = record_starts(&blob, tag);
        assert_eq!(starts.len(), 4, "head and three segments");
        // Every byte outside segment data, and a stride through the data.
        let positions: Vec<usize> = (0..blob.len())
            .filter(|&i| {
                let in_data = starts[1..]
                    .iter()
                    .any(|&s| i >= s + 5 + 40 && i + 40 + tag < blob.len().min(s + 5 + SEGMENT));
                !in_data || i % 13 == 0
            })
            .collect();
        assert!(positions.len() > 10_000, "{}", positions.len());
        let keyed = tag != 4;
        for &at in &positions {
            let mut bad = blob.clone();
            bad[at] ^= 0x20;
            let opened = env.open(&key("k"), Bytes::from(bad.clone()));
            assert!(opened.is_err(), "{:?}: a change at {at} opened", env.mode());
            // Keyed: a change anywhere in the records (framing and codec bytes included) is
            // tampering, never taken for a newer release's entry (a miss nobody counts).
            if keyed && at >= starts[0] {
                assert!(
                    matches!(opened, Err(OpenError::BadSignature(_))),
                    "{:?}: a change at {at}: {opened:?}",
                    env.mode()
                );
            }
            // The body segment the byte is in (0 for the header and head).
            let segment = starts.iter().rposition(|&s| s <= at).unwrap_or(0);
            let first_bad_body_byte = segment.saturating_sub(1) * SEGMENT;
            for feed in [4096, 100_000] {
                let (released, end) = stream_open(&env, "k", &bad, feed);
                assert!(
                    end.is_err(),
                    "{:?}: streamed change at {at} ended well",
                    env.mode()
                );
                if keyed && at >= starts[0] {
                    assert!(
                        end.as_ref().is_err_and(|e| e.starts_with("BadSignature")),
                        "{:?}: streamed change at {at}: {end:?}",
                        env.mode()
                    );
                }
                assert_eq!(released[..], b[..released.len()], "only verified bytes");
                assert!(
                    released.len() <= first_bad_body_byte,
                    "{:?}: a change at {at} (segment {segment}) released {} bytes",
                    env.mode(),
                    released.len()
                );
            }
        }
    }
}

#[test]
fn no_single_byte_change_in_a_small_entry_releases_any_of_its_body() {
    // A body under 16 KiB is sealed in the head record: one record, one proof.
    let b = body(1200);
    for (env, tag) in all_modes().into_iter().zip([4, 32, 32, 0]) {
        let blob = join(&seal_parts(&env, "k", &b, 700));
        assert_eq!(record_starts(&blob, tag).len(), 1, "the head record only");
        // Every byte but the body's, and a stride through the body.
        let body_at = blob.len() - tag - b.len()..blob.len() - tag;
        for at in (0..blob.len()).filter(|i| !body_at.contains(i) || i % 7 == 0) {
            let mut bad = blob.clone();
            bad[at] ^= 0x01;
            assert!(
                env.open(&key("k"), Bytes::from(bad.clone())).is_err(),
                "{:?}: a change at {at} opened",
                env.mode()
            );
            for feed in [5, 4096] {
                let (released, end) = stream_open(&env, "k", &bad, feed);
                assert!(
                    end.is_err() && released.is_empty(),
                    "{:?}: at {at}",
                    env.mode()
                );
            }
        }
        // Nothing may follow a body sealed in the head: not a segment of a larger entry of the
        // same write, not a byte.
        let mut longer = blob.clone();
        longer.push(0);
        assert!(env.open(&key("k"), Bytes::from(longer.clone())).is_err());
        assert!(stream_open(&env, "k", &longer, 4096).1.is_err());
    }
}

#[test]
fn segments_cannot_be_swapped_reordered_dropped_or_added() {
    let b = body(3 * SEGMENT);
    let other = body(3 * SEGMENT + 1)[1..].to_vec();
    for (env, tag) in all_modes().into_iter().zip([4, 32, 32, 0]) {
        let signed = env.mode() != Mode::Unsigned;
        let x = join(&seal_parts(&env, "k", &b, SEGMENT));
        let y = join(&seal_parts(&env, "k", &other, SEGMENT));
        let (sx, sy) = (record_starts(&x, tag), record_starts(&y, tag));
        let rec = |blob: &[u8], starts: &[usize], i: usize| {
            blob[starts[i]..starts.get(i + 1).copied().unwrap_or(blob.len())].to_vec()
        };
        // Segment 2 of another entry of the same key, in place.
        let mut swapped = x[..sx[2]].to_vec();
        swapped.extend(rec(&y, &sy, 2));
        swapped.extend(rec(&x, &sx, 3));
        // Segments 1 and 2 reordered.
        let mut reordered = x[..sx[1]].to_vec();
        reordered.extend(rec(&x, &sx, 2));
        reordered.extend(rec(&x, &sx, 1));
        reordered.extend(rec(&x, &sx, 3));
        let dropped = x[..sx[3]].to_vec();
        let mut added = x.clone();
        added.extend(rec(&x, &sx, 3));
        for (what, blob) in [
            ("swapped", swapped),
            ("reordered", reordered),
            ("dropped", dropped),
            ("added", added),
        ] {
            let whole = env.open(&key("k"), Bytes::from(blob.clone()));
            if signed || what != "swapped" {
                assert!(whole.is_err(), "{:?} {what} opened", env.mode());
                let (released, end) = stream_open(&env, "k", &blob, 8192);
                assert!(end.is_err(), "{:?} {what} streamed to the end", env.mode());
                assert_eq!(released[..], b[..released.len()]);
            }
        }
    }
}

#[test]
fn the_mac_can_be_chosen_and_either_is_read_but_never_relabelled() {
    let b = body(SEGMENT + 9);
    let blake = Envelope::new(Some(ring())).with_mac(Mac::Blake3);
    let hmac = Envelope::new(Some(ring())).with_mac(Mac::HmacSha256);
    let by_blake = join(&seal_parts(&blake, "k", &b, 999));
    let by_hmac = join(&seal_parts(&hmac, "k", &b, 999));
    assert_eq!(by_blake[5], record::ALG_BLAKE3);
    assert_eq!(by_hmac[5], record::ALG_HMAC_SHA256);
    for reader in [&blake, &hmac] {
        for blob in [&by_blake, &by_hmac] {
            let entry = reader.open(&key("k"), Bytes::from(blob.clone())).unwrap();
            assert_eq!(whole_body(&entry), b);
        }
    }
    for (blob, to) in [
        (&by_blake, record::ALG_HMAC_SHA256),
        (&by_hmac, record::ALG_BLAKE3),
    ] {
        let mut relabelled = blob.clone();
        relabelled[5] = to;
        assert!(matches!(
            blake.open(&key("k"), Bytes::from(relabelled)),
            Err(OpenError::BadSignature(_))
        ));
    }
}

#[test]
fn the_default_mac_is_hmac_for_short_bodies_and_blake3_otherwise() {
    let env = Envelope::new(Some(ring()));
    let small = MAC_AUTO_BELOW as usize;
    for (announced, len, alg) in [
        (Some(0), 4, record::ALG_HMAC_SHA256),
        (Some(MAC_AUTO_BELOW), 4, record::ALG_HMAC_SHA256),
        (Some(MAC_AUTO_BELOW + 1), 4, record::ALG_BLAKE3),
        // No length announced: decided by the body's length at its end.
        (None, 0, record::ALG_HMAC_SHA256),
        (None, 4, record::ALG_HMAC_SHA256),
        (None, small, record::ALG_HMAC_SHA256),
        (None, small + 1, record::ALG_BLAKE3),
        (None, 3 * SEGMENT + 5, record::ALG_BLAKE3),
    ] {
        let b = body(len);
        let mut sealing = env.start(&key("k"), &head(), announced).unwrap();
        for chunk in b.chunks(1000) {
            sealing.append(&Bytes::copy_from_slice(chunk)).unwrap();
        }
        let blob = join(&sealing.finish(None).unwrap());
        assert_eq!(blob[5], alg, "{announced:?} {len}");
        let entry = env.open(&key("k"), Bytes::from(blob.clone())).unwrap();
        assert_eq!(whole_body(&entry), b, "{announced:?} {len}");
        // Relabelled to the other algorithm: refused.
        let mut relabelled = blob;
        relabelled[5] ^= record::ALG_HMAC_SHA256 ^ record::ALG_BLAKE3;
        assert!(matches!(
            env.open(&key("k"), Bytes::from(relabelled)),
            Err(OpenError::BadSignature(_))
        ));
    }
}

#[test]
fn older_and_newer_formats_are_misses_only_newer_ones_foreign() {
    let env = Envelope::new(Some(ring()));
    let blob = join(&seal_parts(&env, "k", &body(10), 10));
    for (version, foreign) in [(3u8, false), (2, false), (5, true)] {
        let mut b = blob.clone();
        b[4] = version;
        match env.open(&key("k"), Bytes::from(b)) {
            Err(e @ OpenError::Unusable(_)) => assert_eq!(e.is_foreign(), foreign, "{version}"),
            other => panic!("version {version}: {other:?}"),
        }
    }
}

#[test]
fn an_entry_is_bound_to_its_key_and_refused_under_another() {
    for env in all_modes().into_iter().skip(1) {
        let blob = Bytes::from(join(&seal_parts(&env, "k", &body(100), 100)));
        assert!(matches!(
            env.open(&key("other"), blob),
            Err(OpenError::BadSignature(b)) if b.reason_label() == "wrong_key"
        ));
    }
}

#[test]
fn a_head_record_longer_than_any_is_refused_before_it_is_read() {
    let env = Envelope::new(Some(ring()));
    let blob = join(&seal_parts(&env, "k", &body(10), 10));
    let at = record_starts(&blob, 32)[0];
    let mut b = blob[..at].to_vec();
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    b.push(0);
    let mut p = Pending::default();
    p.push(Bytes::from(b));
    assert!(matches!(
        env.open_head(&key("k"), &mut p),
        Err(OpenError::BadSignature(_))
    ));
}

proptest! {
    #[test]
    fn random_head_records_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Some((head, _, trailers, _)) = wire::decode_head(&Bytes::from(bytes)) {
            prop_assert!(head.headers.len() <= wire::MAX_FIELDS);
            prop_assert!(trailers.is_none_or(|t| t.len() <= wire::MAX_FIELDS));
        }
    }

    #[test]
    fn random_blobs_never_open_signed_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), feed in 1usize..300) {
        let env = Envelope::new(Some(ring()));
        prop_assert!(env.open(&key("k"), Bytes::from(bytes.clone())).is_err());
        let (released, end) = stream_open(&env, "k", &bytes, feed);
        prop_assert!(end.is_err());
        prop_assert!(released.is_empty());
    }
}

/// A streamed write takes the closed records as the body passes and the prefix at the end: the
/// prefix, then the records in the order taken, is an entry that opens (every mode), and no
/// record is held past the segment being filled.
#[test]
fn records_taken_as_they_close_then_the_prefix_make_the_same_entry() {
    for env in all_modes() {
        for len in [0, SEGMENT - 1, SEGMENT, 3 * SEGMENT + 5] {
            let b = body(len);
            let mut sealing = env.start(&key("k"), &head(), None).unwrap();
            let mut taken = Vec::new();
            for c in b.chunks(10_000) {
                sealing.append(&Bytes::copy_from_slice(c)).unwrap();
                let closed = sealing.take_records();
                let held: usize = sealing.take_records().iter().map(Bytes::len).sum();
                assert_eq!(held, 0, "taken once");
                taken.extend(closed);
            }
            let mut trailers = HeaderMap::new();
            trailers.append("x-sum", HeaderValue::from_static("abc"));
            let (prefix, rest) = sealing.finish_split(Some(&trailers)).unwrap();
            let parts: Vec<Bytes> = std::iter::once(prefix).chain(taken).chain(rest).collect();
            let entry = env.open_parts(&key("k"), parts.clone()).unwrap();
            assert_eq!(whole_body(&entry), b, "{:?} {len}", env.mode());
            assert_eq!(entry.trailers.as_ref().unwrap()["x-sum"], "abc");
            let joined = Bytes::from(join(&parts));
            assert_eq!(whole_body(&env.open(&key("k"), joined).unwrap()), b);
        }
    }
}

#[test]
fn opened_blobs_are_remembered_in_every_mode() {
    for env in all_modes() {
        let memo = super::VerifiedBlobs::default();
        let blob = Bytes::from(join(&seal_parts(&env, "k", &body(1000), 1000)));
        let entry = env.open_remembered(&key("k"), blob.clone(), &memo).unwrap();
        assert_eq!(whole_body(&entry), body(1000));
        assert!(memo.holds(&key("k"), &blob), "{:?}", env.mode());
        // Opened again from the memo: the same entry.
        let again = env.open_remembered(&key("k"), blob.clone(), &memo).unwrap();
        assert_eq!(whole_body(&again), body(1000));
        assert_eq!(again.head.headers, entry.head.headers);
        assert_eq!(again.head.uri, entry.head.uri);
        // The same bytes in another buffer are opened (verified) again, under their own name only.
        let copy = Bytes::copy_from_slice(&blob);
        assert!(!memo.holds(&key("k"), &copy));
        assert!(env.open_remembered(&key("k"), copy.clone(), &memo).is_ok());
        assert!(env
            .open_remembered(&key("other"), blob.clone(), &memo)
            .is_err());
        // Refused blobs are not remembered.
        let mut forged = blob.to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let forged = Bytes::from(forged);
        assert!(env
            .open_remembered(&key("j"), forged.clone(), &memo)
            .is_err());
        assert!(!memo.holds(&key("j"), &forged));
    }
}

/// Small and large pieces in every order: the body's first piece is kept as given, small
/// pieces after it are copied together. The entry opens to the same body in every mode, and an
/// origin that sends a byte at a time still makes a segment of a few buffers, not thousands.
#[test]
fn small_and_large_pieces_in_any_order_seal_the_same_body() {
    for env in all_modes() {
        for len in [
            1,
            1000,
            16 * 1024 - 1,
            16 * 1024,
            SEGMENT + 1,
            2 * SEGMENT + 7,
        ] {
            for chunk in [1, 7, 1000, 4095, 4096, 70_000] {
                let b = body(len);
                let parts = seal_parts(&env, "k", &b, chunk);
                let entry = env.open_parts(&key("k"), parts.clone()).unwrap();
                assert_eq!(whole_body(&entry), b, "{:?} {len} {chunk}", env.mode());
                if chunk == 1 && env.mode() != Mode::Encrypted {
                    // A buffer per 4 KiB copied, the first byte, the framing of each segment.
                    let segments = len.div_ceil(SEGMENT);
                    let most = len / 4096 + 4 * segments + 4;
                    assert!(parts.len() <= most, "{len}: {} parts", parts.len());
                }
            }
        }
    }
}

/// No small piece of the origin's is kept as given: a small slice keeps its whole buffer (an
/// origin's read buffer) alive for the life of the entry. The first is kept while it is the only
/// one (a small body in one piece is copied once, into the head record), and copied as soon as
/// another follows.
#[test]
fn no_small_piece_is_kept() {
    for len in [1000, 5000, 3 * SEGMENT + 5] {
        for env in all_modes() {
            let b = body(len);
            let chunks: Vec<Bytes> = b
                .chunks(1000)
                .enumerate()
                .map(|(i, c)| match i {
                    // The first a small slice of a large buffer.
                    0 => {
                        let mut buffer = vec![0u8; 1 << 20];
                        buffer[..c.len()].copy_from_slice(c);
                        Bytes::from(buffer).slice(..c.len())
                    }
                    _ => Bytes::copy_from_slice(c),
                })
                .collect();
            let mut sealing = env.start(&key("k"), &head(), None).unwrap();
            for c in &chunks {
                sealing.append(c).unwrap();
            }
            let parts = sealing.finish(None).unwrap();
            let kept = parts
                .iter()
                .filter(|p| {
                    chunks.iter().any(|c| {
                        let range = c.as_ptr() as usize..c.as_ptr() as usize + c.len();
                        range.contains(&(p.as_ptr() as usize))
                    })
                })
                .count();
            assert_eq!(kept, 0, "{:?} {len}: origin's pieces kept", env.mode());
            let entry = env.open_parts(&key("k"), parts).unwrap();
            assert_eq!(whole_body(&entry), b);
        }
    }
}
