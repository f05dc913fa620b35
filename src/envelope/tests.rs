use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use proptest::prelude::*;

use super::*;
use crate::entry::Entry;
use crate::entry::VaryValue;

fn key(s: &str) -> CacheKey {
    CacheKey::from_stored(s)
}

fn secret(s: &str) -> SecretKey {
    SecretKey::new(s).unwrap()
}

fn head() -> EntryHead {
    let mut headers = HeaderMap::new();
    headers.append("cache-control", HeaderValue::from_static("max-age=60"));
    headers.append("set-cookie", HeaderValue::from_static("a=1"));
    headers.append("x-b", HeaderValue::from_static("b"));
    headers.append("set-cookie", HeaderValue::from_static("b=2"));
    // not UTF-8, still a valid header value
    headers.append("x-bin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    EntryHead {
        status: StatusCode::OK,
        version: Version::HTTP_11,
        headers,
        request_time: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
        response_time: UNIX_EPOCH + Duration::new(1_700_000_001, 7),
        method: Method::GET,
        uri: bytes::Bytes::from_static(b"http://example.com/a?b=c"),
        vary: vec![
            (
                HeaderName::from_static("accept"),
                VaryValue::Clear("text/html".into()),
            ),
            (
                HeaderName::from_static("authorization"),
                VaryValue::Digest([7; 32]),
            ),
            (
                HeaderName::from_static("accept-language"),
                VaryValue::Absent,
            ),
        ],
        generation: 0x0123_4567_89ab_cdef,
        expiry: crate::entry::Expiry::Fill(std::time::Duration::from_millis(1500)),
        fresh: Some(crate::entry::Fresh {
            rules: 0xfeed_beef,
            response_time: UNIX_EPOCH + Duration::new(1_700_000_001, 5),
            age_value: Duration::from_secs(3),
            date_value: UNIX_EPOCH + Duration::from_secs(1_699_999_999),
            lifetime: Duration::from_millis(1500),
            stale: crate::entry::StaleRules {
                no_cache: false,
                must_revalidate: true,
                proxy_revalidate: false,
                s_maxage: true,
                stale_if_error: Some(60),
                stale_while_revalidate: None,
            },
        }),
    }
}

/// A head record as the sealer writes it.
fn payload_of(head: &EntryHead, body: &[u8], trailers: Option<&HeaderMap>) -> Vec<u8> {
    let payload = wire::encode_head(head, Vec::new()).unwrap();
    wire::encode_head_end(body.len() as u64, trailers, payload).unwrap()
}

fn signed() -> Envelope {
    Envelope::new(Some(KeyRing::new(secret(
        "the right key, 32 bytes long....",
    ))))
}

fn sealed(env: &Envelope, k: &str) -> Bytes {
    let chunks = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
    env.seal(&key(k), &head(), &chunks, None).unwrap()
}

fn is_bad(r: Result<Entry, OpenError>) -> BadSignature {
    match r {
        Err(OpenError::BadSignature(b)) => b,
        Err(OpenError::Unusable(why)) => panic!("expected BadSignature, got unusable: {why}"),
        Ok(_) => panic!("expected BadSignature, got an entry"),
    }
}

#[test]
fn round_trip_preserves_everything() {
    for env in [signed(), Envelope::new(None)] {
        let blob = sealed(&env, "k");
        let entry = env.open(&key("k"), blob.clone()).unwrap();
        let h = head();
        assert_eq!(entry.head.status, h.status);
        assert_eq!(entry.head.version, h.version);
        let got: Vec<_> = entry.head.headers.iter().collect();
        let want: Vec<_> = h.headers.iter().collect();
        assert_eq!(got, want);
        assert_eq!(entry.head.request_time, h.request_time);
        assert_eq!(entry.head.response_time, h.response_time);
        assert_eq!(entry.head.method, h.method);
        assert_eq!(entry.head.uri, h.uri);
        assert_eq!(entry.head.vary, h.vary);
        assert_eq!(entry.head.generation, h.generation);
        assert_eq!(entry.head.fresh, h.fresh);
        assert_eq!(entry.body.to_bytes().unwrap(), "hello world");
        // A small body is sealed with the head, and read into the reader's own buffer with it
        // (not a slice of a blob that a memory store shares between threads).
        let blob_range = blob.as_ptr() as usize..blob.as_ptr() as usize + blob.len();
        assert!(!blob_range.contains(&(entry.body.to_bytes().unwrap().as_ptr() as usize)));
        // A larger one is in segments, released as slices of the blob: zero copy.
        let big = Bytes::from(vec![7u8; 20_000]);
        let blob = env
            .seal(&key("k"), &h, std::slice::from_ref(&big), None)
            .unwrap();
        let entry = env.open(&key("k"), blob.clone()).unwrap();
        let body = entry.body.to_bytes().unwrap();
        assert_eq!(body, big);
        let blob_range = blob.as_ptr() as usize..blob.as_ptr() as usize + blob.len();
        assert!(blob_range.contains(&(body.as_ptr() as usize)));
    }
}

#[test]
fn a_small_body_is_in_the_head_record_and_a_larger_one_in_segments() {
    let env = signed();
    let h = head();
    let records = |body: &[u8]| {
        let blob = env
            .seal(&key("k"), &h, &[Bytes::copy_from_slice(body)], None)
            .unwrap();
        // Every record of a signed entry ends in a 32-byte tag; count the records by walking
        // the framing after the header.
        let mut p = reader::Pending::default();
        p.push(blob.clone());
        let reader::HeaderStep::Ready { header, .. } = reader::header(&p) else {
            panic!("no header");
        };
        let mut at = header.len();
        let mut n = 0;
        while at < blob.len() {
            let (len, codec) = reader::framing(&p, at).unwrap();
            assert_eq!(codec, 0);
            at += 5 + len + 32;
            n += 1;
        }
        assert_eq!(at, blob.len());
        let opened = env.open(&key("k"), blob).unwrap();
        assert_eq!(opened.body.to_bytes().unwrap(), body);
        n
    };
    assert_eq!(records(b""), 1);
    assert_eq!(records(&[1; 1024]), 1);
    assert_eq!(records(&[1; 16 * 1024 - 1]), 1);
    assert_eq!(records(&[1; 16 * 1024]), 2);
    assert_eq!(records(&vec![1; 64 * 1024 + 1]), 3);
}

#[test]
fn empty_body_round_trips() {
    let env = signed();
    let blob = env.seal(&key("k"), &head(), &[], None).unwrap();
    assert_eq!(env.open(&key("k"), blob).unwrap().body.len(), 0);
}

#[test]
fn trailers_round_trip() {
    let env = signed();
    let mut trailers = HeaderMap::new();
    trailers.append("x-checksum", HeaderValue::from_static("abc"));
    trailers.append("x-checksum", HeaderValue::from_static("def"));
    let blob = env
        .seal(
            &key("k"),
            &head(),
            &[Bytes::from_static(b"b")],
            Some(&trailers),
        )
        .unwrap();
    let entry = env.open(&key("k"), blob).unwrap();
    assert_eq!(entry.trailers, Some(trailers));
    assert_eq!(entry.body.to_bytes().unwrap(), "b");
}

#[test]
fn different_key_is_unknown_key() {
    let blob = sealed(&signed(), "k");
    let other = Envelope::new(Some(KeyRing::new(secret(
        "another key, 32 bytes long......",
    ))));
    let bad = is_bad(other.open(&key("k"), blob));
    assert!(bad.is_unknown_key());
    assert_eq!(bad.key().as_str(), "k");
    assert!(bad.to_string().contains("`k`"), "{bad}");
    assert!(bad.to_string().contains("signature did not match"), "{bad}");
}

#[test]
fn swap_to_another_cache_key_is_rejected() {
    let env = signed();
    let blob = sealed(&env, "key-a");
    assert!(is_bad(env.open(&key("key-b"), blob)).is_wrong_key());
}

#[test]
fn rotation() {
    let old = Envelope::new(Some(KeyRing::new(secret("old key old key old key"))));
    let blob = sealed(&old, "k");
    let rotated = Envelope::new(Some(
        KeyRing::new(secret("new key new key new key"))
            .with_previous(secret("old key old key old key")),
    ));
    // Old entries still verify...
    assert!(rotated.open(&key("k"), blob.clone()).is_ok());
    // ...new entries carry the new key id...
    let fresh = sealed(&rotated, "k");
    let new_id = secret("new key new key new key").key_id();
    assert_eq!(&fresh[7..15], &new_id);
    // ...and once the old key is dropped, old entries are rejected as unknown-key.
    let dropped = Envelope::new(Some(KeyRing::new(secret("new key new key new key"))));
    assert!(is_bad(dropped.open(&key("k"), blob)).is_unknown_key());
    assert!(dropped.open(&key("k"), fresh).is_ok());
}

#[test]
fn downgrade_to_unsigned_is_rejected() {
    let unsigned = sealed(&Envelope::new(None), "k");
    assert!(is_bad(signed().open(&key("k"), unsigned)).is_unsigned());
}

#[test]
fn unsigned_cache_does_not_use_signed_blobs() {
    let blob = sealed(&signed(), "k");
    assert!(matches!(
        Envelope::new(None).open(&key("k"), blob),
        Err(OpenError::Unusable(_))
    ));
}

#[test]
fn exploit_bytes_are_bad_signature() {
    let bad = is_bad(signed().open(&key("k"), Bytes::from_static(b"exploit!")));
    assert!(bad.is_malformed());
}

#[test]
fn unknown_version_is_a_miss() {
    // 1: the format before expiry settings were stored; 2: trailers before the body; 3: one
    // tag over the whole entry; 5: a future one.
    for version in [1, 2, 3, 5] {
        let mut blob = sealed(&signed(), "k").to_vec();
        assert_eq!(blob[4], 4);
        blob[4] = version;
        let want = if version < 4 {
            "older format version"
        } else {
            "unknown format version"
        };
        assert!(matches!(
            signed().open(&key("k"), blob.into()),
            Err(OpenError::Unusable(why)) if why == want
        ));
    }
}

#[test]
fn unknown_algorithm_is_a_miss() {
    for env in [signed(), Envelope::new(None)] {
        let mut blob = sealed(&env, "k").to_vec();
        blob[5] = 9;
        assert!(matches!(
            env.open(&key("k"), blob.into()),
            Err(OpenError::Unusable("unknown algorithm"))
        ));
    }
}

#[test]
fn every_truncation_is_rejected() {
    for env in [signed(), Envelope::new(None)] {
        let blob = sealed(&env, "k");
        for len in 0..blob.len() {
            assert!(env.open(&key("k"), blob.slice(..len)).is_err(), "len {len}");
        }
    }
}

#[test]
fn every_single_bit_flip_is_rejected() {
    for env in [signed(), Envelope::new(None)] {
        let blob = sealed(&env, "k");
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut b = blob.to_vec();
                b[i] ^= 1 << bit;
                assert!(env.open(&key("k"), b.into()).is_err(), "byte {i} bit {bit}");
            }
        }
    }
}

#[test]
fn appended_bytes_are_rejected() {
    let env = signed();
    let mut b = sealed(&env, "k").to_vec();
    b.push(0);
    assert!(env.open(&key("k"), b.into()).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(signed().open(&key("k"), bytes.clone().into()).is_err());
        // Unsigned mode may only accept a blob whose checksum is right: random bytes never are.
        prop_assert!(Envelope::new(None).open(&key("k"), bytes.into()).is_err());
    }

    #[test]
    fn random_bytes_behind_a_valid_header_never_open(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut b = sealed(&signed(), "k")[..20].to_vec();
        b.extend_from_slice(&tail);
        prop_assert!(signed().open(&key("k"), b.into()).is_err());
    }

    #[test]
    fn random_corruption_never_opens(pos in 0usize..4096, byte in 1u8..=255) {
        let env = signed();
        let blob = sealed(&env, "k");
        let mut b = blob.to_vec();
        let i = pos % b.len();
        b[i] ^= byte;
        prop_assert!(env.open(&key("k"), b.into()).is_err());
    }
}

// ---- encryption at rest (AES-256-GCM) ----

fn encrypted() -> Envelope {
    Envelope::encrypted(KeyRing::new(secret("the right key, 32 bytes long....")))
}

#[test]
fn encrypted_round_trip_and_no_plaintext_in_the_blob() {
    let env = encrypted();
    let blob = sealed(&env, "k");
    assert_eq!(blob[5], ALG_AES_256_GCM);
    for needle in [
        &b"hello world"[..],
        b"max-age=60",
        b"example.com",
        b"set-cookie",
    ] {
        assert!(
            !blob.windows(needle.len()).any(|w| w == needle),
            "{needle:?} in clear"
        );
    }
    let entry = env.open(&key("k"), blob).unwrap();
    assert_eq!(entry.body.to_bytes().unwrap(), "hello world");
    assert_eq!(entry.head.uri, head().uri);
    // A signing cache with the same secret reads encrypted entries too (an upgrade, not a
    // downgrade).
    assert!(signed().open(&key("k"), sealed(&env, "k")).is_ok());
}

#[test]
fn same_plaintext_twice_gives_different_ciphertexts() {
    let env = encrypted();
    let (a, b) = (sealed(&env, "k"), sealed(&env, "k"));
    assert_ne!(a, b);
    assert_eq!(
        env.open(&key("k"), a).unwrap().body.to_bytes(),
        env.open(&key("k"), b).unwrap().body.to_bytes()
    );
}

#[test]
fn encrypted_tamper_swap_truncation_are_refused() {
    let env = encrypted();
    let blob = sealed(&env, "k");
    for i in 0..blob.len() {
        let mut b = blob.to_vec();
        b[i] ^= 0x01;
        assert!(env.open(&key("k"), b.into()).is_err(), "byte {i}");
    }
    for len in 0..blob.len() {
        assert!(env.open(&key("k"), blob.slice(..len)).is_err(), "len {len}");
    }
    assert!(is_bad(env.open(&key("other"), blob.clone())).is_wrong_key());
    let other = Envelope::encrypted(KeyRing::new(secret("another key, 32 bytes long......")));
    assert!(is_bad(other.open(&key("k"), blob)).is_unknown_key());
}

#[test]
fn encrypted_mode_refuses_downgrades() {
    let env = encrypted();
    let unsigned = sealed(&Envelope::new(None), "k");
    assert!(is_bad(env.open(&key("k"), unsigned)).is_unsigned());
    // A signed-only entry of this ring (written before encryption was turned on): not served,
    // a miss; one that does not verify, or of another key: refused as usual.
    let signed_only = sealed(&signed(), "k");
    assert!(matches!(
        env.open(&key("k"), signed_only.clone()),
        Err(OpenError::Unusable(_))
    ));
    let mut forged = signed_only.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(is_bad(env.open(&key("k"), forged.into())).is_mismatch());
    let foreign = sealed(
        &Envelope::new(Some(KeyRing::new(secret(
            "another key, 32 bytes long......",
        )))),
        "k",
    );
    assert!(is_bad(env.open(&key("k"), foreign)).is_unknown_key());
    // And an unkeyed cache cannot use encrypted entries at all.
    assert!(matches!(
        Envelope::new(None).open(&key("k"), sealed(&env, "k")),
        Err(OpenError::Unusable(_))
    ));
}

#[test]
fn encrypted_rotation() {
    let old = Envelope::encrypted(KeyRing::new(secret("old key old key old key")));
    let blob = sealed(&old, "k");
    let rotated = Envelope::encrypted(
        KeyRing::new(secret("new key new key new key"))
            .with_previous(secret("old key old key old key")),
    );
    assert!(rotated.open(&key("k"), blob.clone()).is_ok());
    let fresh = sealed(&rotated, "k");
    assert_eq!(&fresh[7..15], &secret("new key new key new key").key_id());
    let dropped = Envelope::encrypted(KeyRing::new(secret("new key new key new key")));
    assert!(is_bad(dropped.open(&key("k"), blob)).is_unknown_key());
    assert!(dropped.open(&key("k"), fresh).is_ok());
}

#[test]
fn oversized_blobs_are_refused_before_any_work() {
    for env in [signed(), encrypted(), Envelope::new(None)] {
        let env = env.with_max_blob(100);
        // A valid blob over the bound, and garbage over the bound: both refused as unusable,
        // which says nothing was verified or decoded (garbage would otherwise be BadSignature).
        let blob = sealed(&env, "k");
        assert!(blob.len() > 100);
        assert!(matches!(
            env.open(&key("k"), blob),
            Err(OpenError::Unusable(
                "blob larger than the configured maximum"
            ))
        ));
        assert!(matches!(
            env.open(&key("k"), Bytes::from(vec![0u8; 101])),
            Err(OpenError::Unusable(
                "blob larger than the configured maximum"
            ))
        ));
    }
}

proptest! {
    #[test]
    fn encrypted_random_corruption_never_opens(pos in 0usize..4096, byte in 1u8..=255) {
        let env = encrypted();
        let mut b = sealed(&env, "k").to_vec();
        let i = pos % b.len();
        b[i] ^= byte;
        prop_assert!(env.open(&key("k"), b.into()).is_err());
    }
}

#[test]
fn header_field_counts_are_capped_on_write_and_on_read() {
    use super::wire::MAX_FIELDS;
    let decode = |b: &Bytes| super::wire::decode_head(b).map(|(head, ..)| head);
    let with = |n: usize| {
        let mut h = head();
        h.headers = HeaderMap::new();
        for i in 0..n {
            h.headers.append("x-n", HeaderValue::from(i));
        }
        h
    };
    let env = Envelope::new(None);
    // Write: the seal refuses more fields than an entry holds (the response is not stored).
    assert!(env.seal(&key("k"), &with(MAX_FIELDS), &[], None).is_ok());
    assert!(env
        .seal(&key("k"), &with(MAX_FIELDS + 1), &[], None)
        .is_err());
    let mut trailers = HeaderMap::new();
    for i in 0..=MAX_FIELDS {
        trailers.append("x-t", HeaderValue::from(i));
    }
    assert!(env.seal(&key("k"), &with(1), &[], Some(&trailers)).is_err());
    // Read: a payload a foreign writer built with more fields decodes to nothing (a miss), far
    // past the point where building the `HeaderMap` would have panicked.
    for n in [MAX_FIELDS + 1, 24_577] {
        let payload = Bytes::from(payload_of(&with(n), b"", None));
        assert!(decode(&payload).is_none(), "{n} fields");
    }
    let payload = Bytes::from(payload_of(&with(MAX_FIELDS), b"", None));
    assert_eq!(decode(&payload).unwrap().headers.len(), MAX_FIELDS);
}

/// `main` returning a `Result` prints errors with `Debug`: a missing key must still say what is
/// missing and what it is for.
#[test]
fn a_key_error_says_what_to_do_in_debug_output_too() {
    let err = SecretKey::from_env("HCC_TEST_SURELY_UNSET_VARIABLE_1234").unwrap_err();
    let debug = format!("{err:?}");
    assert!(
        debug.contains("HCC_TEST_SURELY_UNSET_VARIABLE_1234"),
        "{debug}"
    );
    assert!(debug.contains("is not set"), "{debug}");
    assert!(!debug.contains("kind"), "{debug}");
}

/// What `hcc verify --delete` leaves alone without `--delete-foreign`: entries this reader
/// cannot judge. What fails under a key id of the ring, or is no envelope, is not foreign.
#[test]
fn foreign_entries_are_those_this_reader_cannot_judge() {
    let foreign = |env: &Envelope, blob: Bytes| match env.open(&key("k"), blob) {
        Err(e) => e.is_foreign(),
        Ok(_) => panic!("opened"),
    };
    let other = Envelope::new(Some(KeyRing::new(secret("another deployment's key, 32 b"))));
    assert!(foreign(&signed(), sealed(&other, "k")), "an unknown key id");
    assert!(
        foreign(&Envelope::new(None), sealed(&signed(), "k")),
        "no key to check with"
    );
    let mut newer = sealed(&signed(), "k").to_vec();
    newer[4] = 5;
    assert!(foreign(&signed(), newer.into()), "a newer format");
    let mut algorithm = sealed(&signed(), "k").to_vec();
    algorithm[5] = 9;
    assert!(foreign(&signed(), algorithm.into()), "a newer algorithm");
    assert!(
        foreign(&signed().with_max_blob(10), sealed(&signed(), "k")),
        "over the bound"
    );

    let mut altered = sealed(&signed(), "k").to_vec();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(
        !foreign(&signed(), altered.into()),
        "tampered under a known key id"
    );
    assert!(
        !foreign(&signed(), sealed(&signed(), "other")),
        "signed for another key"
    );
    assert!(
        !foreign(&signed(), Bytes::from_static(b"exploit!")),
        "no envelope"
    );
    assert!(
        !foreign(&signed(), sealed(&Envelope::new(None), "k")),
        "unsigned"
    );
    let mut corrupt = sealed(&Envelope::new(None), "k").to_vec();
    let tag_byte = corrupt.len() - 1;
    corrupt[tag_byte] ^= 1;
    assert!(
        !foreign(&Envelope::new(None), corrupt.into()),
        "a checksum mismatch"
    );
}
