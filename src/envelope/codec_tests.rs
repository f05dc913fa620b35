//! Compression at rest (codec.rs): round trips in every mode and codec, what is not compressed
//! (a segment that would grow, an encoded body, encrypted entries unless asked, short
//! segments), old and new entries read by either kind of reader, a tampered compressed segment
//! never decompressed, and the decompressed size bounded.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::codec::{self, Codec, Compression};
use super::*;

fn key() -> CacheKey {
    CacheKey::from_stored("k")
}

fn ring() -> KeyRing {
    KeyRing::new(SecretKey::new("the right key, 32 bytes long....").unwrap())
}

fn head(encoding: Option<&'static str>) -> EntryHead {
    let mut headers = HeaderMap::new();
    headers.append("content-type", HeaderValue::from_static("application/json"));
    if let Some(e) = encoding {
        headers.append("content-encoding", HeaderValue::from_static(e));
    }
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

fn codecs() -> Vec<Codec> {
    vec![
        #[cfg(feature = "lz4")]
        Codec::Lz4,
        #[cfg(feature = "zstd")]
        Codec::Zstd,
    ]
}

/// Unsigned, BLAKE3-signed, HMAC-signed, encrypted (with `when_encrypted`: compressed too).
fn all_modes(c: Option<Compression>) -> [Envelope; 4] {
    let enc = c.map(|c| c.when_encrypted(true));
    [
        Envelope::new(None).with_compression(c),
        Envelope::new(Some(ring()))
            .with_mac(Mac::Blake3)
            .with_compression(c),
        Envelope::new(Some(ring()))
            .with_mac(Mac::HmacSha256)
            .with_compression(c),
        Envelope::encrypted(ring()).with_compression(enc),
    ]
}

/// JSON-like text: compresses several times.
fn json(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                r#"{{"id":{i},"login":"user-{}","url":"https://api.example.com/u/{i}"}},"#,
                i % 13
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Bytes that do not compress (a xorshift stream).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn seal(env: &Envelope, head: &EntryHead, body: &[u8]) -> Vec<u8> {
    let mut sealing = env.start(&key(), head, None).unwrap();
    for c in body.chunks(5000) {
        sealing.append(&Bytes::copy_from_slice(c)).unwrap();
    }
    sealing.finish(None).unwrap().concat()
}

fn open(env: &Envelope, blob: &[u8]) -> Result<Vec<u8>, OpenError> {
    let entry = env.open(&key(), Bytes::copy_from_slice(blob))?;
    Ok(entry.body.to_bytes().unwrap().to_vec())
}

/// Each body record's (stored length, codec), walking the framing (the head is the first).
fn records(blob: &[u8], tag: usize) -> Vec<(usize, u8)> {
    let mut out = all_records(blob, tag);
    out.remove(0);
    out
}

/// Every record's (stored length, codec), the head record's first.
fn all_records(blob: &[u8], tag: usize) -> Vec<(usize, u8)> {
    let id_len = usize::from(blob[6]);
    let klen = usize::from(u16::from_be_bytes([blob[7 + id_len], blob[8 + id_len]]));
    let mut at = 9 + id_len + klen + ENTRY_ID_LEN;
    let mut out = Vec::new();
    while at < blob.len() {
        let len = u32::from_be_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        out.push((len, blob[at + 4]));
        at += 5 + len + tag;
    }
    out
}

fn tag_len(env: &Envelope) -> usize {
    match env.mode() {
        Mode::Unsigned => 4,
        Mode::Signed => 32,
        Mode::Encrypted => 0,
    }
}

#[test]
fn every_mode_and_codec_round_trips_compressed_and_smaller() {
    for c in codecs() {
        for (plain, env) in all_modes(None)
            .iter()
            .zip(all_modes(Some(Compression::new(c))))
        {
            for len in [3000, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 5000] {
                let body = json(len);
                let packed = seal(&env, &head(None), &body);
                let as_is = seal(plain, &head(None), &body);
                assert_eq!(open(&env, &packed).unwrap(), body, "{c:?} {:?}", env.mode());
                assert!(
                    packed.len() * 3 < as_is.len(),
                    "{c:?} {len}: {} vs {}",
                    packed.len(),
                    as_is.len()
                );
                let recs = all_records(&packed, tag_len(&env));
                let byte = codec::Settings::from(Compression::new(c)).codec;
                // Every record but one under the threshold is compressed (the head record too,
                // with a body under 16 KiB in it).
                assert!(recs
                    .iter()
                    .all(|r| r.1 == byte || r.0 < DEFAULT_COMPRESS_MIN_SIZE + 28));
                assert_eq!(recs[usize::from(len >= 16 * 1024)].1, byte);
            }
        }
    }
}

#[test]
fn a_segment_that_would_not_shrink_is_stored_as_is() {
    for env in all_modes(Some(Compression::default())) {
        let body = noise(2 * SEGMENT + 100, 7);
        let blob = seal(&env, &head(None), &body);
        let recs = records(&blob, tag_len(&env));
        assert_eq!(recs.len(), 3);
        assert!(recs.iter().all(|r| r.1 == 0), "{:?}: {recs:?}", env.mode());
        assert_eq!(open(&env, &blob).unwrap(), body);
    }
}

#[test]
fn an_encoded_body_and_short_segments_are_stored_as_is() {
    let env = Envelope::new(Some(ring())).with_compression(Some(Compression::default()));
    for encoding in ["gzip", "br", "identity, gzip"] {
        let blob = seal(&env, &head(Some(encoding)), &json(SEGMENT));
        assert_eq!(records(&blob, 32), vec![(SEGMENT, 0)], "{encoding}");
    }
    // `identity` is no encoding.
    let blob = seal(&env, &head(Some("identity")), &json(SEGMENT));
    assert_ne!(records(&blob, 32)[0].1, 0);
    // Below the threshold (the default 2 KiB, or a chosen one): a small body is then sealed in
    // the head record, as it is without compression; no segment record follows.
    let blob = seal(&env, &head(None), &json(1024));
    assert_eq!(records(&blob, 32), vec![]);
    assert_eq!(open(&env, &blob).unwrap(), json(1024));
    assert_eq!(all_records(&blob, 32)[0].1, 0);
    // Above a lower threshold, the head record holding the same body is compressed.
    let low =
        Envelope::new(Some(ring())).with_compression(Some(Compression::default().min_size(512)));
    let blob = seal(&low, &head(None), &json(1024));
    let recs = all_records(&blob, 32);
    assert_eq!(recs.len(), 1);
    assert!(recs[0].0 < 1024 && recs[0].1 != 0, "{recs:?}");
    assert_eq!(open(&low, &blob).unwrap(), json(1024));
    let env = Envelope::new(Some(ring()))
        .with_compression(Some(Compression::default().min_size(SEGMENT + 1)));
    let blob = seal(&env, &head(None), &json(SEGMENT));
    assert_eq!(records(&blob, 32), vec![(SEGMENT, 0)]);
}

#[test]
fn compressed_and_uncompressed_entries_are_read_by_either_reader() {
    for c in codecs() {
        let on = Envelope::new(Some(ring())).with_compression(Some(Compression::new(c)));
        let off = Envelope::new(Some(ring()));
        let body = json(2 * SEGMENT + 10);
        for (writer, reader) in [(&on, &off), (&off, &on), (&on, &on), (&off, &off)] {
            assert_eq!(
                open(reader, &seal(writer, &head(None), &body)).unwrap(),
                body
            );
        }
    }
}

#[test]
fn encrypted_entries_are_not_compressed_unless_asked_so_lengths_say_nothing() {
    let configured = Envelope::encrypted(ring()).with_compression(Some(Compression::default()));
    let friendly = json(40_000);
    let hostile = noise(40_000, 3);
    let a = seal(&configured, &head(None), &friendly);
    let b = seal(&configured, &head(None), &hostile);
    assert_eq!(a.len(), b.len(), "equal lengths whatever the content");
    assert_eq!(open(&configured, &a).unwrap(), friendly);
    // The test discriminates: asked to, encrypted entries are compressed and the lengths differ.
    let asked = Envelope::encrypted(ring())
        .with_compression(Some(Compression::default().when_encrypted(true)));
    let a = seal(&asked, &head(None), &friendly);
    let b = seal(&asked, &head(None), &hostile);
    assert!(a.len() * 3 < b.len());
}

#[test]
fn a_tampered_compressed_segment_is_refused_before_it_is_decompressed() {
    for c in codecs() {
        let env = Envelope::new(Some(ring())).with_compression(Some(Compression::new(c)));
        let body = json(2 * SEGMENT);
        let blob = seal(&env, &head(None), &body);
        let recs = records(&blob, 32);
        // A byte in the middle of the second segment's (compressed) data.
        let end = blob.len() - 32 - recs[1].0;
        let mut bad = blob.clone();
        bad[end + recs[1].0 / 2] ^= 1;
        let before = codec::DECOMPRESSED.with(|n| n.get());
        match env.open(&key(), Bytes::from(bad)) {
            Err(OpenError::BadSignature(b)) => assert_eq!(b.reason_label(), "mismatch"),
            other => panic!("{other:?}"),
        }
        // Only the first (untouched) segment was decompressed.
        assert_eq!(codec::DECOMPRESSED.with(|n| n.get()), before + 1);
    }
}

#[test]
fn decompression_never_produces_more_than_the_segment_length() {
    for c in codecs() {
        let byte = codec::Settings::from(Compression::new(c)).codec;
        let mut z = codec::Compressor::new(Compression::new(c).into());
        // A bomb: 16 MiB of zeros, a few KiB compressed.
        let zeros = vec![Bytes::from(vec![0u8; 16 << 20])];
        let (_, bomb) = z.segment(&zeros, 16 << 20).unwrap();
        assert!(bomb.len() < 100_000);
        assert!(
            codec::decompress(byte, std::slice::from_ref(&bomb), SEGMENT).is_none(),
            "{c:?}"
        );
        // Shorter than the head says: refused too.
        let (_, short) = z
            .segment(&[Bytes::from(json(SEGMENT / 2))], SEGMENT / 2)
            .unwrap();
        assert!(codec::decompress(byte, std::slice::from_ref(&short), SEGMENT).is_none());
        assert_eq!(
            codec::decompress(byte, &[short], SEGMENT / 2).unwrap(),
            json(SEGMENT / 2)
        );
        // Garbage never panics.
        for seed in 1..200 {
            let junk = Bytes::from(noise(seed as usize * 3, seed));
            assert!(codec::decompress(byte, &[junk], SEGMENT).is_none_or(|b| b.len() == SEGMENT));
        }
    }
    assert!(codec::decompress(9, &[Bytes::from_static(b"x")], 10).is_none());
}

#[test]
fn a_compressed_head_record_is_verified_before_it_is_decompressed_and_bounded() {
    for c in codecs() {
        // A small body is sealed in the head record, compressed with it.
        let env = Envelope::new(Some(ring())).with_compression(Some(Compression::new(c)));
        let body = json(6000);
        let blob = seal(&env, &head(None), &body);
        let recs = all_records(&blob, 32);
        assert_eq!(recs.len(), 1);
        assert_ne!(recs[0].1, 0);
        assert!(recs[0].0 < 3000, "{recs:?}");
        assert_eq!(open(&env, &blob).unwrap(), body);
        for at in [
            blob.len() - 32 - recs[0].0 + 2,
            blob.len() - 32 - 10,
            blob.len() - 5,
        ] {
            let mut bad = blob.clone();
            bad[at] ^= 1;
            let before = codec::DECOMPRESSED.with(|n| n.get());
            match env.open(&key(), Bytes::from(bad)) {
                Err(OpenError::BadSignature(b)) => assert_eq!(b.reason_label(), "mismatch"),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                codec::DECOMPRESSED.with(|n| n.get()),
                before,
                "decompressed at {at}"
            );
        }
        // A plain length over a head record's bound, or zero, even correctly checksummed (an
        // unsigned entry: anyone can write one), is refused before anything is decompressed.
        let env = Envelope::new(None).with_compression(Some(Compression::new(c)));
        let blob = seal(&env, &head(None), &body);
        let data_at = blob.len() - 4 - all_records(&blob, 4)[0].0;
        let header = &blob[..data_at - 5];
        for plain in [u32::MAX, 0, 1] {
            let mut forged = blob.clone();
            forged[data_at..data_at + 4].copy_from_slice(&plain.to_be_bytes());
            let len = (blob.len() - 4 - data_at) as u32;
            let tag = record::Prover::crc(header)
                .tag(
                    &record::meta(0, len, forged[data_at - 1]),
                    [&forged[data_at..blob.len() - 4]],
                )
                .unwrap();
            let end = forged.len() - 4;
            forged[end..].copy_from_slice(tag.as_ref());
            let before = codec::DECOMPRESSED.with(|n| n.get());
            assert!(matches!(
                env.open(&key(), Bytes::from(forged)),
                Err(OpenError::Unusable(_))
            ));
            let tried = codec::DECOMPRESSED.with(|n| n.get()) - before;
            assert_eq!(tried, usize::from(plain == 1), "plain length {plain}");
        }
    }
}
