//! A record's codec byte (format 4): a codec this build does not know is a newer release's
//! entry only when the record's proof holds; a codec byte changed without the key is tampering.
//! In every build (no compression feature needed) and every mode.

use bytes::{Bytes, BytesMut};

use super::format4_tests::{
    all_modes, body, join, key, record_starts, ring, seal_parts, stream_open,
};
use super::*;

/// The tag length `record_starts` walks with (an AES record's tag is inside its length).
fn tag_len(env: &Envelope) -> usize {
    match env.mode() {
        Mode::Unsigned => 4,
        Mode::Encrypted => 0,
        _ => 32,
    }
}

/// The record at `start` of `blob` given `codec` and `shorter` bytes less of data, proven again
/// as its writer would (with the key, for keyed modes): what a newer release whose codec this
/// one lacks writes.
fn with_codec(env: &Envelope, blob: &[u8], start: usize, codec: u8, shorter: usize) -> Vec<u8> {
    let tags = tag_len(env);
    let header = &blob[..record_starts(blob, tags)[0]];
    let id_len = usize::from(blob[6]);
    let keys = ring();
    let found = || keys.find(&blob[7..7 + id_len]).unwrap();
    let prover = || match (env.mode(), blob[5]) {
        (Mode::Unsigned, _) => record::Prover::crc(header),
        (Mode::Encrypted, _) => record::Prover::aes(&found().aead, Bytes::copy_from_slice(header)),
        (_, record::ALG_BLAKE3) => record::Prover::blake3(&found().blake3, header),
        _ => record::Prover::hmac(&found().mac, header),
    };
    let len = u32::from_be_bytes(blob[start..start + 4].try_into().unwrap());
    let end = start + 5 + len as usize;
    let data = &blob[start + 5..end];
    let old_codec = blob[start + 4];
    // The record's index: the one it was proven with.
    let proven = |i: u32| match env.mode() {
        Mode::Encrypted => {
            let mut record = data.to_vec();
            let range = prover().open(&record::meta(i, len, old_codec), &mut record)?;
            Some(record[range].to_vec())
        }
        _ => {
            let tag = prover()
                .tag(&record::meta(i, len, old_codec), [data])
                .unwrap();
            (tag.as_ref() == &blob[end..end + tags]).then(|| data.to_vec())
        }
    };
    let (index, plain) = (0..8)
        .find_map(|i| proven(i).map(|plain| (i, plain)))
        .expect("the record's index");
    let plain = &plain[..plain.len() - shorter];
    let mut record = BytesMut::new();
    match env.mode() {
        Mode::Encrypted => prover().seal(index, codec, [plain], &mut record).unwrap(),
        _ => {
            let meta = record::meta(index, plain.len() as u32, codec);
            record.extend_from_slice(plain);
            record.extend_from_slice(prover().tag(&meta, [plain]).unwrap().as_ref());
        }
    }
    let stored = (record.len() - tags) as u32;
    let mut out = blob[..start].to_vec();
    out.extend_from_slice(&stored.to_be_bytes());
    out.push(codec);
    out.extend_from_slice(&record);
    out.extend_from_slice(&blob[end + tags..]);
    out
}

/// From a writer (the record's proof holds), a codec this build does not know, in the head's
/// framing or a body segment's, shrinking the record or not: a newer release's entry, a miss and
/// foreign, never decoded; a streamed body ends with it after the segments before. The same
/// byte changed by someone without the key is tampering (`BadSignature`), found before the codec
/// is looked at, so that it is counted as such; without a key, a checksum mismatch (not foreign).
#[test]
fn an_unknown_codec_is_a_newer_writers_only_when_its_record_verifies() {
    let b = body(2 * SEGMENT + 100);
    for env in all_modes() {
        let blob = join(&seal_parts(&env, "k", &b, 5000));
        let starts = record_starts(&blob, tag_len(&env));
        for (what, start, released) in [("head", starts[0], 0), ("segment", starts[2], SEGMENT)] {
            for shorter in [0, 1] {
                let case = format!("{:?} {what}, {shorter} byte(s) shorter", env.mode());
                let newer = with_codec(&env, &blob, start, 200, shorter);
                let opened = env.open(&key("k"), Bytes::from(newer.clone()));
                assert!(
                    matches!(&opened, Err(e @ OpenError::Unusable(NEWER_CODEC)) if e.is_foreign()),
                    "{case}: {opened:?}"
                );
                let (got, end) = stream_open(&env, "k", &newer, 4096);
                assert!(
                    end.as_ref().is_err_and(|e| e.contains(NEWER_CODEC)),
                    "{case}: {end:?}"
                );
                assert_eq!(got.len(), released, "{case}: the segments before it");
            }
            // The same codec byte, the record's proof left as it was.
            let mut changed = blob.clone();
            changed[start + 4] = 200;
            let opened = env.open(&key("k"), Bytes::from(changed.clone()));
            match env.mode() {
                Mode::Unsigned => assert!(
                    matches!(&opened, Err(e @ OpenError::Unusable(_)) if !e.is_foreign()),
                    "{what}: {opened:?}"
                ),
                _ => assert!(
                    matches!(&opened, Err(OpenError::BadSignature(bad)) if bad.is_mismatch()),
                    "{:?} {what}: {opened:?}",
                    env.mode()
                ),
            }
            let (got, end) = stream_open(&env, "k", &changed, 4096);
            assert!(end.is_err() && got.len() <= released, "{what}");
        }
    }
}
