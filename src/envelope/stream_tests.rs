//! Sealing while the body streams by: chunking, segments and the two names of a varying entry.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::stream::{SEGMENT, SEGMENT_TAG};
use super::*;
use crate::entry::{Expiry, VaryValue};

fn key(s: &str) -> CacheKey {
    CacheKey::from_stored(s)
}

fn ring() -> KeyRing {
    KeyRing::new(SecretKey::new("the right key, 32 bytes long....").unwrap())
}

fn all_modes() -> [Envelope; 3] {
    [
        Envelope::new(None),
        Envelope::new(Some(ring())),
        Envelope::encrypted(ring()),
    ]
}

fn head(vary: Vec<(HeaderName, VaryValue)>) -> EntryHead {
    let mut headers = HeaderMap::new();
    headers.append("cache-control", HeaderValue::from_static("max-age=60"));
    EntryHead {
        status: StatusCode::OK,
        version: Version::HTTP_11,
        headers,
        request_time: std::time::UNIX_EPOCH,
        response_time: std::time::UNIX_EPOCH,
        method: Method::GET,
        uri: Bytes::from_static(b"http://example.com/"),
        vary,
        generation: 42,
        expiry: Expiry::Headers,
    }
}

/// A body whose bytes say where they are, so that a misplaced segment shows.
fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Sealed with the body appended in chunks of `chunk` bytes.
fn sealed_in_chunks(env: &Envelope, k: &str, body: &[u8], chunk: usize) -> Bytes {
    let mut sealing = env.start(&key(k), &head(Vec::new()), body.len()).unwrap();
    for part in body.chunks(chunk.max(1)) {
        sealing.append(part).unwrap();
    }
    sealing.finish(None).unwrap()
}

#[test]
fn every_body_length_around_segment_boundaries_round_trips() {
    let lengths = [
        0,
        1,
        100,
        SEGMENT - 200,
        SEGMENT - 1,
        SEGMENT,
        SEGMENT + 1,
        2 * SEGMENT,
        3 * SEGMENT + 7,
    ];
    for env in all_modes() {
        for len in lengths {
            // Around the boundary in plaintext terms too: the head comes first.
            for shift in [0, 37, 51] {
                let b = body(len.saturating_sub(shift));
                for chunk in [1 << 20, 4096, 65_537] {
                    let blob = sealed_in_chunks(&env, "k", &b, chunk);
                    let entry = env.open(&key("k"), blob).unwrap();
                    assert_eq!(entry.body, b, "len {} chunk {chunk}", b.len());
                }
            }
        }
    }
}

/// How the body is cut into chunks changes nothing a reader can see: for the checksum and the
/// HMAC, not a byte of the blob.
#[test]
fn chunking_does_not_change_the_blob() {
    let b = body(3 * SEGMENT + 11);
    for env in [Envelope::new(None), Envelope::new(Some(ring()))] {
        let whole = sealed_in_chunks(&env, "k", &b, usize::MAX);
        for chunk in [1, 7, 4096, SEGMENT, SEGMENT + 3] {
            assert_eq!(
                sealed_in_chunks(&env, "k", &b, chunk),
                whole,
                "chunk {chunk}"
            );
        }
    }
}

/// The work of each append is the chunk's: no more than a segment of plaintext ever waits for
/// the end of the body.
#[test]
fn appending_proves_each_chunk_as_it_arrives() {
    for env in all_modes() {
        let mut sealing = env.start(&key("k"), &head(Vec::new()), 0).unwrap();
        let mut last = sealing.written();
        for i in 0..200 {
            let chunk = vec![7u8; 1000 + i * 97];
            sealing.append(&chunk).unwrap();
            assert!(sealing.pending() < SEGMENT);
            assert!(sealing.written() >= last + chunk.len());
            last = sealing.written();
        }
        let blob = sealing.finish(None).unwrap();
        assert!(env.open(&key("k"), blob).is_ok());
    }
}

fn record() -> usize {
    NONCE_LEN + SEGMENT + SEGMENT_TAG
}

/// The header of an encrypted blob: where its first segment starts.
fn segments_at(blob: &[u8]) -> usize {
    let id = usize::from(blob[6]);
    let k = usize::from(u16::from_be_bytes([blob[7 + id], blob[8 + id]]));
    9 + id + k
}

#[test]
fn encrypted_segments_cannot_be_reordered_dropped_or_swapped() {
    let env = Envelope::encrypted(ring());
    let b = body(4 * SEGMENT);
    let blob = sealed_in_chunks(&env, "k", &b, 10_000).to_vec();
    let at = segments_at(&blob);
    let r = record();
    assert!(
        blob.len() > at + 4 * r,
        "at least four full segments and a last one"
    );
    let seg = |blob: &[u8], i: usize| blob[at + i * r..at + (i + 1) * r].to_vec();

    // Two full segments swapped.
    let mut swapped = blob.clone();
    let (s1, s2) = (seg(&blob, 1), seg(&blob, 2));
    swapped[at + r..at + 2 * r].copy_from_slice(&s2);
    swapped[at + 2 * r..at + 3 * r].copy_from_slice(&s1);
    assert!(env.open(&key("k"), swapped.into()).is_err());

    // Cut at a segment boundary: the last full segment left is not marked as the last.
    for n in 1..=4 {
        let cut = blob[..at + n * r].to_vec();
        assert!(env.open(&key("k"), cut.into()).is_err(), "{n} segments");
    }

    // A segment dropped from the middle.
    let mut dropped = blob[..at + r].to_vec();
    dropped.extend_from_slice(&blob[at + 2 * r..]);
    assert!(env.open(&key("k"), dropped.into()).is_err());

    // A segment of another entry of the same key, same key, same place.
    let other = sealed_in_chunks(&env, "k", &b, 10_000).to_vec();
    let mut mixed = blob.clone();
    mixed[at + r..at + 2 * r].copy_from_slice(&seg(&other, 1));
    assert!(env.open(&key("k"), mixed.into()).is_err());

    // The untouched blob opens.
    assert_eq!(env.open(&key("k"), blob.into()).unwrap().body, b);
}

#[test]
fn a_varying_entry_opens_under_its_own_variant_name_only() {
    let vary = vec![(
        HeaderName::from_static("accept"),
        VaryValue::Clear(Bytes::from_static(b"text/html")),
    )];
    let h = head(vary.clone());
    let primary = key("hcc1:primary");
    let variant = primary.variant(h.generation, h.vary.iter().map(|(_, v)| v));
    let other_values = [VaryValue::Clear(Bytes::from_static(b"image/png"))];
    let other_variant = primary.variant(h.generation, other_values.iter());
    let other_generation = primary.variant(h.generation + 1, h.vary.iter().map(|(_, v)| v));
    let other_primary = key("hcc1:other").variant(h.generation, h.vary.iter().map(|(_, v)| v));
    for env in all_modes() {
        let blob = env
            .seal(&primary, &h, &[Bytes::from_static(b"b")], None)
            .unwrap();
        assert!(env.open(&primary, blob.clone()).is_ok());
        assert_eq!(env.open(&variant, blob.clone()).unwrap().body, "b");
        for wrong in [
            &other_variant,
            &other_generation,
            &other_primary,
            &primary.partial(),
        ] {
            let refused = env.open(wrong, blob.clone());
            assert!(refused.is_err(), "{wrong:?}");
            if env.mode() != Mode::Unsigned {
                assert!(matches!(refused, Err(OpenError::BadSignature(b)) if b.is_wrong_key()));
            }
        }
        // An entry that does not vary has no variant name at all.
        let plain = env.seal(&primary, &head(Vec::new()), &[], None).unwrap();
        let no_values: [VaryValue; 0] = [];
        let empty_variant = primary.variant(h.generation, no_values.iter());
        assert!(env.open(&empty_variant, plain).is_err());
    }
}
