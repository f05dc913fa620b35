//! The proof of one record of a format 4 entry: how each record (the head, then each body
//! segment) is signed, checksummed or sealed, and checked.
//!
//! Every record's proof covers the entry header (magic, version, algorithm, key id, cache key and
//! the entry's random id), the record's index, its stored length and codec, and its bytes:
//!
//! ```text
//! covered = header | index (u32 BE) | len (u32 BE) | codec (u8) | data
//! ```
//!
//! - **Keyed BLAKE3** (algorithm 3, the default with a key): a per-entry subkey
//!   `sub = BLAKE3-keyed(K, "hcc/v4/entry" | header)` is derived once per entry, then each record's
//!   tag is `BLAKE3-keyed(sub, index | len | codec | data)` (32 bytes). See docs/security.md for
//!   the argument.
//! - **HMAC-SHA256** (algorithm 1): `HMAC(K, covered)`, 32 bytes.
//! - **CRC-32** (algorithm 0, no key): `CRC32(covered)`, 4 bytes: corruption only, not a MAC.
//! - **AES-256-GCM** (algorithm 2): `data` is `nonce (12, random) | ciphertext | GCM tag (16)`,
//!   and the associated data is everything `covered` lists but the data.

use bytes::Bytes;
use ring::{aead, hmac, rand};

use super::SealError;

/// Unsigned: a CRC-32 (IEEE) per record detects accidental corruption, nothing more.
pub(crate) const ALG_CRC32: u8 = 0;
/// HMAC-SHA256 per record.
pub(crate) const ALG_HMAC_SHA256: u8 = 1;
/// AES-256-GCM per record.
pub(crate) const ALG_AES_256_GCM: u8 = 2;
/// Keyed BLAKE3 per record, under a per-entry subkey.
pub(crate) const ALG_BLAKE3: u8 = 3;

/// The nonce of an encrypted record.
pub(crate) const NONCE_LEN: usize = 12;
/// The GCM tag of an encrypted record.
pub(crate) const GCM_TAG: usize = 16;
/// The domain of the per-entry BLAKE3 subkey.
const SUBKEY_LABEL: &[u8] = b"hcc/v4/entry\0";

/// The length of the tag after a record's data; `None` for an algorithm this release does not
/// know. Encrypted records carry theirs inside the data.
pub(crate) fn tag_len(alg: u8) -> Option<usize> {
    match alg {
        ALG_CRC32 => Some(4),
        ALG_HMAC_SHA256 | ALG_BLAKE3 => Some(32),
        ALG_AES_256_GCM => Some(0),
        _ => None,
    }
}

/// What a record's proof covers besides the header and its data.
pub(crate) fn meta(index: u32, len: u32, codec: u8) -> [u8; 9] {
    let mut m = [0u8; 9];
    m[..4].copy_from_slice(&index.to_be_bytes());
    m[4..8].copy_from_slice(&len.to_be_bytes());
    m[8] = codec;
    m
}

/// The proving state of one entry: what every record's proof starts from.
// The HMAC state (312 bytes) is boxed: an open moves its prover several times, and the
// copies cost more than the allocation (measured on the 1 KiB hit).
#[derive(Clone)]
pub(crate) enum Prover {
    Crc(crc32fast::Hasher),
    Hmac(Box<hmac::Context>),
    Blake3([u8; 32]),
    /// The key, and the associated data so far (the header).
    Aes(std::sync::Arc<aead::LessSafeKey>, Bytes),
}

/// A record's tag (the first `len` bytes are used).
pub(crate) struct Tag {
    bytes: [u8; 32],
    len: usize,
}

impl AsRef<[u8]> for Tag {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Prover {
    pub(crate) fn crc(header: &[u8]) -> Self {
        let mut h = crc32fast::Hasher::new();
        h.update(header);
        Prover::Crc(h)
    }

    pub(crate) fn hmac(key: &hmac::Key, header: &[u8]) -> Self {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(header);
        Prover::Hmac(Box::new(ctx))
    }

    pub(crate) fn blake3(key: &[u8; 32], header: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(SUBKEY_LABEL);
        h.update(header);
        Prover::Blake3(*h.finalize().as_bytes())
    }

    pub(crate) fn aes(key: &std::sync::Arc<aead::LessSafeKey>, header: Bytes) -> Self {
        Prover::Aes(key.clone(), header)
    }

    /// The tag of a record of a MAC or checksum algorithm (`None` for AES, whose records are
    /// sealed with [`seal`](Self::seal)).
    pub(crate) fn tag<'a>(
        &self,
        meta: &[u8; 9],
        data: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<Tag> {
        let mut bytes = [0u8; 32];
        let len = match self {
            Prover::Crc(h) => {
                let mut h = h.clone();
                h.update(meta);
                for d in data {
                    h.update(d);
                }
                bytes[..4].copy_from_slice(&h.finalize().to_be_bytes());
                4
            }
            Prover::Hmac(ctx) => {
                let mut ctx = (**ctx).clone();
                ctx.update(meta);
                for d in data {
                    ctx.update(d);
                }
                bytes.copy_from_slice(ctx.sign().as_ref());
                32
            }
            Prover::Blake3(sub) => {
                let mut h = blake3::Hasher::new_keyed(sub);
                h.update(meta);
                for d in data {
                    h.update(d);
                }
                bytes.copy_from_slice(h.finalize().as_bytes());
                32
            }
            Prover::Aes(..) => return None,
        };
        Some(Tag { bytes, len })
    }

    /// Whether `tag` is the record's tag (constant time).
    pub(crate) fn verify<'a>(
        &self,
        meta: &[u8; 9],
        data: impl IntoIterator<Item = &'a [u8]>,
        tag: &[u8],
    ) -> bool {
        self.tag(meta, data)
            .is_some_and(|want| constant_time_eq::constant_time_eq(want.as_ref(), tag))
    }

    /// Appends the sealed form of `plain` (nonce, ciphertext, GCM tag) to `out`. The record's
    /// stored length is `NONCE_LEN + plain.len() + GCM_TAG`.
    pub(crate) fn seal(
        &self,
        index: u32,
        codec: u8,
        plain: impl IntoIterator<Item = impl AsRef<[u8]>>,
        out: &mut bytes::BytesMut,
    ) -> Result<(), SealError> {
        let Prover::Aes(key, header) = self else {
            return Err(SealError("not an encrypting envelope"));
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| SealError("random generator failed"))?;
        out.extend_from_slice(&nonce);
        let at = out.len();
        for p in plain {
            out.extend_from_slice(p.as_ref());
        }
        let stored = u32::try_from(out.len() - at + NONCE_LEN + GCM_TAG)
            .map_err(|_| SealError("record too long"))?;
        let aad = aad(header, &meta(index, stored, codec));
        let tag = key
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&aad[..]),
                &mut out[at..],
            )
            .map_err(|_| SealError("could not encrypt"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a sealed record in place (`record` is nonce, ciphertext and GCM tag; `meta` its
    /// index, stored length and codec): the plaintext's range in it, `None` when it does not
    /// open. Nothing of it is usable unless this returns `Some`.
    pub(crate) fn open(&self, meta: &[u8; 9], record: &mut [u8]) -> Option<std::ops::Range<usize>> {
        let Prover::Aes(key, header) = self else {
            return None;
        };
        if record.len() < NONCE_LEN + GCM_TAG {
            return None;
        }
        let (nonce, rest) = record.split_at_mut(NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let aad = aad(header, meta);
        let len = key
            .open_in_place(nonce, aead::Aad::from(&aad[..]), rest)
            .ok()?
            .len();
        Some(NONCE_LEN..NONCE_LEN + len)
    }
}

/// The associated data of an encrypted record: on the stack when it fits (a key name of this
/// crate is under 100 bytes).
fn aad(header: &[u8], meta: &[u8; 9]) -> smallbuf::Buf {
    let mut buf = smallbuf::Buf::new(header.len() + meta.len());
    buf.extend(header);
    buf.extend(meta);
    buf
}

mod smallbuf {
    /// A buffer on the stack up to 256 bytes, on the heap beyond.
    // On the stack by design: it lives for one seal or open.
    #[allow(clippy::large_enum_variant)]
    pub(crate) enum Buf {
        Small([u8; 256], usize),
        Large(Vec<u8>),
    }

    impl Buf {
        pub(crate) fn new(cap: usize) -> Self {
            if cap <= 256 {
                Buf::Small([0; 256], 0)
            } else {
                Buf::Large(Vec::with_capacity(cap))
            }
        }

        pub(crate) fn extend(&mut self, data: &[u8]) {
            match self {
                Buf::Small(buf, len) => {
                    // `new` sized it: the total fits.
                    if let Some(room) = buf.get_mut(*len..*len + data.len()) {
                        room.copy_from_slice(data);
                        *len += data.len();
                    }
                }
                Buf::Large(v) => v.extend_from_slice(data),
            }
        }
    }

    impl std::ops::Deref for Buf {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            match self {
                Buf::Small(buf, len) => &buf[..*len],
                Buf::Large(v) => v,
            }
        }
    }
}
