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
                bytes = blake3_tag(sub, meta, data);
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

/// The most bytes of a record [`blake3_tag`] gathers into one buffer: a segment, its `meta`,
/// and room to spare. What goes past it is hashed where it lies.
const GATHER_MAX: usize = super::SEGMENT + 64;

thread_local! {
    /// [`blake3_tag`]'s buffer: one per thread that proves BLAKE3 records, of
    /// [`GATHER_MAX`] bytes, kept so that no record allocates (a buffer freed and taken again
    /// for each 64 KiB segment is fresh memory the kernel has to fault in and zero).
    static GATHER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `BLAKE3-keyed(sub, meta | data)`, with `meta | data` gathered into one buffer first.
///
/// BLAKE3 hashes a run of whole 1 KiB chunks in parallel (16 lanes of AVX-512, 8 of AVX2) only
/// where the run starts at a multiple of its own size in the input. The 9 bytes of `meta` in
/// front shift every chunk of `data` off that grid: fed as they lie, a 64 KiB segment is hashed
/// as runs of 1, 2, 4, 8, 16 and 32 chunks, and a record of a few KiB a chunk at a time. Copying
/// it whole first costs less than what it saves: 0.78x the time for a 64 KiB segment,
/// 0.44-0.55x for records of 2-16 KiB, the copy included (`benches/mac_layout.rs`,
/// docs/benchmarks.md). The tag is the same either way; only the hashing's schedule changes.
fn blake3_tag<'a>(
    sub: &[u8; 32],
    meta: &[u8; 9],
    data: impl IntoIterator<Item = &'a [u8]>,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(sub);
    let mut data = data.into_iter();
    // `false` when the buffer cannot be had (the thread is exiting and its buffer is gone, or it
    // is borrowed already, which nothing here does): nothing of `data` was taken yet, and the
    // record is hashed where it lies, which gives the same tag.
    let gathered = GATHER
        .try_with(|cell| {
            let Ok(mut buf) = cell.try_borrow_mut() else {
                return false;
            };
            if buf.capacity() < GATHER_MAX {
                buf.reserve_exact(GATHER_MAX);
            }
            buf.clear();
            buf.extend_from_slice(meta);
            for d in data.by_ref() {
                if buf.len() + d.len() > GATHER_MAX {
                    // More than a segment in all (a large head record): what is gathered goes
                    // first; a piece too large for the buffer on its own is hashed where it lies.
                    h.update(&buf);
                    buf.clear();
                    if d.len() > GATHER_MAX {
                        h.update(d);
                        continue;
                    }
                }
                buf.extend_from_slice(d);
            }
            h.update(&buf);
            true
        })
        .unwrap_or(false);
    if !gathered {
        h.update(meta);
        for d in data {
            h.update(d);
        }
    }
    *h.finalize().as_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The tag of `meta | data` computed in one call, as the format defines it.
    fn reference(sub: &[u8; 32], meta: &[u8; 9], data: &[u8]) -> [u8; 32] {
        let mut whole = meta.to_vec();
        whole.extend_from_slice(data);
        *blake3::keyed_hash(sub, &whole).as_bytes()
    }

    #[test]
    fn a_gathered_blake3_tag_is_the_tag_of_the_bytes_in_order() {
        let sub = [9u8; 32];
        let m = meta(7, 1234, 0);
        // Sizes around a chunk, a segment and the gather bound, split in pieces of several
        // shapes (one piece, many small ones, one past the bound in the middle).
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            4096,
            65_536,
            GATHER_MAX - 9,
            GATHER_MAX - 8,
            GATHER_MAX,
            GATHER_MAX + 1,
            300_000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
            let want = reference(&sub, &m, &data);
            assert_eq!(
                blake3_tag(&sub, &m, [&data[..]]),
                want,
                "{len} in one piece"
            );
            for piece in [1, 7, 1000, 4096, 70_000] {
                let got = blake3_tag(&sub, &m, data.chunks(piece));
                assert_eq!(got, want, "{len} in pieces of {piece}");
            }
            if len > 10 {
                let (a, rest) = data.split_at(5);
                let (b, c) = rest.split_at(rest.len() - 3);
                let big = [a, b, c];
                assert_eq!(
                    blake3_tag(&sub, &m, big),
                    want,
                    "{len} around one large piece"
                );
            }
            // A piece of nothing in the middle changes nothing.
            if len > 2 {
                let (a, b) = data.split_at(len / 2);
                assert_eq!(
                    blake3_tag(&sub, &m, [a, &[][..], b]),
                    want,
                    "{len} around nothing"
                );
            }
            // Another record in between: nothing is left over in the buffer.
            let other = blake3_tag(&sub, &meta(8, 3, 0), [&b"abc"[..]]);
            assert_eq!(other, reference(&sub, &meta(8, 3, 0), b"abc"));
        }
    }

    #[test]
    fn a_record_is_hashed_where_it_lies_when_the_buffer_is_taken() {
        let sub = [5u8; 32];
        let m = meta(2, 70_000, 0);
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        let want = reference(&sub, &m, &data);
        GATHER.with(|cell| {
            let _held = cell.borrow_mut();
            assert_eq!(blake3_tag(&sub, &m, data.chunks(1000)), want);
        });
        // And the buffer stays at its bound, whatever the record's size.
        assert_eq!(blake3_tag(&sub, &m, [&data[..]]), want);
        let big = vec![1u8; 1 << 20];
        let _ = blake3_tag(&sub, &m, big.chunks(100_000));
        let _ = blake3_tag(&sub, &m, big.chunks(10_000));
        GATHER.with(|cell| assert!(cell.borrow().capacity() < 2 * GATHER_MAX));
    }

    #[test]
    fn a_tag_does_not_depend_on_how_the_record_is_split() {
        // Through the prover, as sealing and reading call it.
        let prover = Prover::blake3(&[3u8; 32], b"header");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let m = meta(1, 100_000, 0);
        let one = prover.tag(&m, [&data[..]]).map(|t| t.as_ref().to_vec());
        let split = prover
            .tag(&m, data.chunks(333))
            .map(|t| t.as_ref().to_vec());
        assert!(one.is_some());
        assert_eq!(one, split);
        let Prover::Blake3(sub) = &prover else {
            panic!("a BLAKE3 prover");
        };
        assert_eq!(one.as_deref(), Some(&reference(sub, &m, &data)[..]));
        assert!(prover.verify(&m, data.chunks(4096), one.as_deref().unwrap_or_default()));
    }
}
