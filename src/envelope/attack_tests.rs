//! Review: a store writer who can write any bytes under any key, but has no secret.

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

fn protected() -> [Envelope; 2] {
    [Envelope::new(Some(ring())), Envelope::encrypted(ring())]
}

fn all_modes() -> [Envelope; 3] {
    [
        Envelope::new(None),
        Envelope::new(Some(ring())),
        Envelope::encrypted(ring()),
    ]
}

fn head_with(vary: Vec<(HeaderName, VaryValue)>, status: StatusCode) -> EntryHead {
    let mut headers = HeaderMap::new();
    headers.append("cache-control", HeaderValue::from_static("max-age=60"));
    EntryHead {
        status,
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

fn accept(v: &'static [u8]) -> Vec<(HeaderName, VaryValue)> {
    vec![(
        HeaderName::from_static("accept"),
        VaryValue::Clear(Bytes::from_static(v)),
    )]
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn seal(env: &Envelope, k: &CacheKey, h: &EntryHead, b: &[u8]) -> Bytes {
    let mut s = env.start(k, h, b.len()).unwrap();
    for c in b.chunks(10_000) {
        s.append(c).unwrap();
    }
    s.finish(None).unwrap()
}

fn record() -> usize {
    NONCE_LEN + SEGMENT + SEGMENT_TAG
}

fn segments_at(blob: &[u8]) -> usize {
    let id = usize::from(blob[6]);
    let k = usize::from(u16::from_be_bytes([blob[7 + id], blob[8 + id]]));
    9 + id + k
}

/// Every name that is not the blob's own key nor its exact variant name is refused, including
/// near-misses of the variant shape.
#[test]
fn variant_name_near_misses_are_refused() {
    let p = key("hcc1:primary");
    let h = head_with(accept(b"text/html"), StatusCode::OK);
    let v = p.variant(h.generation, h.vary.iter().map(|(_, v)| v));
    let hex = &v.as_str()[p.as_str().len() + 1..];
    let upper = format!("{}#{}", p.as_str(), hex.to_uppercase());
    let short = format!("{}#{}", p.as_str(), &hex[..31]);
    let long = format!("{}#{}0", p.as_str(), hex);
    let double = format!("{}##{}", p.as_str(), &hex[..31]);
    let partial_variant = p
        .partial()
        .variant(h.generation, h.vary.iter().map(|(_, v)| v));
    // The primary without its last character, with the variant suffix: a prefix attack.
    let chopped = format!("{}#{}", &p.as_str()[..p.as_str().len() - 1], hex);
    for env in protected() {
        let blob = seal(&env, &p, &h, b"body");
        assert!(env.open(&v, blob.clone()).is_ok());
        for wrong in [
            upper.as_str(),
            short.as_str(),
            long.as_str(),
            double.as_str(),
            partial_variant.as_str(),
            chopped.as_str(),
            p.partial().as_str(),
            "hcc1:primar",
            "",
        ] {
            let r = env.open(&key(wrong), blob.clone());
            assert!(
                matches!(r, Err(OpenError::BadSignature(ref b)) if b.is_wrong_key()),
                "{wrong}"
            );
        }
    }
}

/// A partial (206) blob carries `P#partial`: it does not open under `P`, nor under `P`'s
/// variant name, and a complete blob does not open under `P#partial`.
#[test]
fn partial_and_complete_blobs_do_not_cross() {
    let p = key("hcc1:primary");
    let h = head_with(accept(b"x"), StatusCode::PARTIAL_CONTENT);
    let pv = p.variant(h.generation, h.vary.iter().map(|(_, v)| v));
    for env in protected() {
        let partial = seal(&env, &p.partial(), &h, b"part");
        assert!(env.open(&p.partial(), partial.clone()).is_ok());
        for wrong in [&p, &pv] {
            assert!(env.open(wrong, partial.clone()).is_err(), "{wrong:?}");
        }
        let complete = seal(&env, &p, &head_with(accept(b"x"), StatusCode::OK), b"all");
        assert!(env.open(&p.partial(), complete).is_err());
    }
}

/// Variant names of another generation or other values, and a variant of a blob that does not
/// vary, are refused; so is a blob of one primary under a second primary's variant name.
#[test]
fn variant_names_bind_generation_values_and_primary() {
    let p = key("hcc1:aaaa");
    let q = key("hcc1:aaab");
    let h = head_with(accept(b"a"), StatusCode::OK);
    for env in protected() {
        let blob = seal(&env, &p, &h, b"b");
        let vals = |v: &'static [u8]| [VaryValue::Clear(Bytes::from_static(v))];
        for wrong in [
            p.variant(43, vals(b"a").iter()),
            p.variant(42, vals(b"b").iter()),
            p.variant(42, [VaryValue::Absent].iter()),
            p.variant(42, [VaryValue::Digest([0; 32])].iter()),
            q.variant(42, vals(b"a").iter()),
            p.variant(42, [].iter()),
        ] {
            assert!(env.open(&wrong, blob.clone()).is_err(), "{wrong:?}");
        }
    }
}

/// Segment surgery the existing tests do not cover.
#[test]
fn more_segment_surgery_is_refused() {
    let env = Envelope::encrypted(ring());
    let k = key("k");
    let h = head_with(Vec::new(), StatusCode::OK);
    // Find a body length whose payload (head | body | tail) is an exact multiple of SEGMENT:
    // the last segment is then empty (nonce and tag only).
    let head_len = wire::encode_head(&h, Vec::new()).unwrap().len();
    let tail_len = wire::tail(None).unwrap().len();
    let exact = 2 * SEGMENT - head_len - tail_len;
    let blob = seal(&env, &k, &h, &body(exact)).to_vec();
    let at = segments_at(&blob);
    assert_eq!(blob.len(), at + 2 * record() + NONCE_LEN + SEGMENT_TAG);
    assert_eq!(env.open(&k, blob.clone().into()).unwrap().body.len(), exact);
    // The empty last segment dropped.
    assert!(env
        .open(
            &k,
            blob[..blob.len() - NONCE_LEN - SEGMENT_TAG].to_vec().into()
        )
        .is_err());
    // An empty last segment (nonce | tag) copied from another entry: the first nonce differs.
    let other = seal(&env, &k, &h, &body(exact)).to_vec();
    let mut spliced = blob[..blob.len() - 28].to_vec();
    spliced.extend_from_slice(&other[other.len() - 28..]);
    assert!(env.open(&k, spliced.into()).is_err());
    // The last (short) segment of another entry of the same key and length.
    let short = 3 * SEGMENT / 2;
    let a = seal(&env, &k, &h, &body(short)).to_vec();
    let b = seal(&env, &k, &h, &body(short)).to_vec();
    let mut mixed = a[..at + record()].to_vec();
    mixed.extend_from_slice(&b[at + record()..]);
    assert!(env.open(&k, mixed.into()).is_err());
    // Every segment of `b` moved under another key's header (same length keys).
    let k2 = key("j");
    let c = seal(&env, &k2, &h, &body(short)).to_vec();
    let mut moved = c[..at].to_vec();
    moved.extend_from_slice(&a[at..]);
    assert!(env.open(&k2, moved.into()).is_err());
    // Bytes appended after the last segment; a full record appended after the last one.
    let mut appended = a.clone();
    appended.push(0);
    assert!(env.open(&k, appended.into()).is_err());
    let mut twice = a.clone();
    twice.extend_from_slice(&a[at..at + record()]);
    assert!(env.open(&k, twice.into()).is_err());
    // The first segment repeated (index 0 seen at index 1).
    let mut repeated = a[..at + record()].to_vec();
    repeated.extend_from_slice(&a[at..]);
    assert!(env.open(&k, repeated.into()).is_err());
    // Every truncation of a two-segment blob, byte by byte around the boundaries.
    for cut in (0..a.len()).filter(|c| {
        let c = *c;
        c < at + 64 || (c + 64 > at + record() && c < at + record() + 64) || c + 64 > a.len()
    }) {
        assert!(env.open(&k, a[..cut].to_vec().into()).is_err(), "cut {cut}");
    }
}

/// The algorithm byte changed: an AES blob read as HMAC and the other way round.
#[test]
fn algorithm_relabelling_is_refused() {
    let k = key("k");
    let h = head_with(Vec::new(), StatusCode::OK);
    let signed = Envelope::new(Some(ring()));
    let enc = Envelope::encrypted(ring());
    let mut a = seal(&enc, &k, &h, b"hello").to_vec();
    a[5] = 1;
    assert!(signed.open(&k, a.into()).is_err());
    let mut s = seal(&signed, &k, &h, b"hello").to_vec();
    s[5] = 2;
    assert!(signed.open(&k, s.clone().into()).is_err());
    assert!(enc.open(&k, s.into()).is_err());
    for alg in [0u8, 3, 255] {
        let mut s = seal(&signed, &k, &h, b"hello").to_vec();
        s[5] = alg;
        assert!(signed.open(&k, s.into()).is_err());
    }
}

/// An unsigned blob around an arbitrary payload (CRC fixed up): what a store writer can make
/// an unsigned cache read.
fn unsigned_blob(k: &str, payload: &[u8]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_V3);
    out.push(ALG_UNSIGNED_CRC32);
    out.push(0);
    out.extend_from_slice(&(k.len() as u16).to_be_bytes());
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.into()
}

/// Every value of the trailer-section length, and trailer sections that lie about their
/// contents: never a panic, and never a body that is not a prefix-free slice of the payload.
#[test]
fn hostile_tail_lengths_never_panic() {
    let h = head_with(accept(b"a"), StatusCode::OK);
    let mut trailers = HeaderMap::new();
    trailers.append("x-t", HeaderValue::from_static("v"));
    let head_bytes = wire::encode_head(&h, Vec::new()).unwrap();
    let tail_bytes = wire::tail(Some(&trailers)).unwrap();
    let env = Envelope::new(None);
    for body_len in [0usize, 1, 7, 100] {
        let mut good = head_bytes.clone();
        good.extend_from_slice(&body(body_len));
        good.extend_from_slice(&tail_bytes);
        let tail_at = good.len() - 4;
        let mut lens: Vec<u32> = (0..=(good.len() as u32 + 8)).collect();
        lens.extend([u32::MAX, u32::MAX - 1, 1 << 31, good.len() as u32 * 2]);
        for len in lens {
            let mut p = good.clone();
            p[tail_at..].copy_from_slice(&len.to_be_bytes());
            let _ = env.open(&key("k"), unsigned_blob("k", &p));
            let _ = wire::decode(&Bytes::from(p.clone()));
            let _ = wire::decode_shared(&Bytes::from(p));
        }
        // Payload cut at every length.
        for cut in 0..good.len() {
            let _ = env.open(&key("k"), unsigned_blob("k", &good[..cut]));
            let _ = wire::decode_shared(&Bytes::copy_from_slice(&good[..cut]));
        }
        // Every byte of the tail section flipped.
        for i in head_bytes.len() + body_len..good.len() {
            for b in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut p = good.clone();
                p[i] = b;
                let _ = env.open(&key("k"), unsigned_blob("k", &p));
                let _ = wire::decode_shared(&Bytes::from(p));
            }
        }
    }
}

/// Hostile headers in front of any payload: key id and key lengths at their extremes.
#[test]
fn hostile_header_lengths_never_panic() {
    for env in all_modes() {
        for id_len in [0u8, 1, 8, 255] {
            for klen in [0u16, 1, 0xff, 0xffff] {
                for alg in [0u8, 1, 2, 3] {
                    for extra in [0usize, 3, 27, 28, 29, 44, 100] {
                        let mut b = Vec::new();
                        b.extend_from_slice(MAGIC);
                        b.push(FORMAT_V3);
                        b.push(alg);
                        b.push(id_len);
                        b.extend(std::iter::repeat_n(0u8, usize::from(id_len)));
                        b.extend_from_slice(&klen.to_be_bytes());
                        b.extend(std::iter::repeat_n(b'k', usize::from(klen).min(300)));
                        b.extend(std::iter::repeat_n(0u8, extra));
                        assert!(env.open(&key("k"), b.into()).is_err());
                    }
                }
            }
        }
    }
}

/// More trailer fields than an entry holds: the seal refuses them (the response is not
/// stored), rather than writing a blob that would never open.
#[test]
fn too_many_trailers_are_not_sealed() {
    let mut trailers = HeaderMap::new();
    for i in 0..=wire::MAX_FIELDS {
        trailers.append(
            HeaderName::from_bytes(format!("x-t{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("v"),
        );
    }
    let h = head_with(Vec::new(), StatusCode::OK);
    for env in all_modes() {
        let mut s = env.start(&key("k"), &h, 1).unwrap();
        s.append(b"b").unwrap();
        assert!(s.finish(Some(&trailers)).is_err());
    }
}
