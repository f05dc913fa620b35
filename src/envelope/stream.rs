//! Sealing while the body streams by: the envelope is written front to back, and its tag is
//! computed as the bytes arrive, so that the end of a body costs a few microseconds whatever its
//! size (a checksum or an HMAC finished, the last segment encrypted), not a pass over all of it.
//!
//! Encrypted entries are a sequence of segments (the STREAM construction of Hoang, Reyhanitabar,
//! Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
//! CRYPTO 2015, with a random nonce per segment):
//!
//! ```text
//! segment = nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16)
//! AAD     = envelope header and cache key | first segment's nonce | index (u32 BE) | last (u8)
//! ```
//!
//! Every segment but the last holds [`SEGMENT`] bytes of plaintext; the last holds fewer (maybe
//! none). The associated data binds each segment to its envelope (header and key), to its entry
//! (the first nonce), to its place (the index) and says which one ends the entry: segments cannot
//! be reordered, moved between entries or dropped from the end without the open failing. Each
//! nonce is fresh and random, so the bound of NIST SP 800-38D §8.3 applies per segment, as it did
//! per entry before (2^32 segments per key).

use bytes::Bytes;
use http::HeaderMap;
use ring::{aead, hmac, rand};

use super::{wire, SealError, NONCE_LEN};

/// Plaintext bytes per encrypted segment: 28 bytes of nonce and tag per 64 KiB (0.04%), and
/// at most 64 KiB of encryption in any one poll.
pub(crate) const SEGMENT: usize = 64 * 1024;
/// The GCM tag of a segment.
pub(crate) const SEGMENT_TAG: usize = 16;

/// How the bytes written so far are being proven.
// The HMAC state is inline (300 bytes): a `Sealing` lives in the boxed sink of one response, and
// an allocation per stored response is what this avoids.
#[allow(clippy::large_enum_variant)]
enum Proof {
    /// CRC-32 of every byte so far.
    Crc(crc32fast::Hasher),
    /// HMAC-SHA256 of every byte so far.
    Hmac(hmac::Context),
    /// The current segment's plaintext starts at `at`, after its nonce.
    Aes {
        /// Boxed: the key schedule is large, and the other variants are common.
        key: Box<aead::LessSafeKey>,
        /// The envelope header and the first nonce, then room for the index and the last flag.
        aad: Vec<u8>,
        at: usize,
        index: u32,
    },
}

/// An envelope being written: header, head, then the body as it arrives, then trailers and tag.
pub(crate) struct Sealing {
    out: Vec<u8>,
    proof: Proof,
}

fn random_nonce() -> Result<[u8; NONCE_LEN], SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| SealError("random generator failed"))?;
    Ok(nonce)
}

impl Sealing {
    /// A CRC-32 sealing of what `out` holds so far (the envelope header, the cache key and the
    /// head) and of everything appended.
    pub(super) fn checksummed(out: Vec<u8>) -> Self {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out);
        Self {
            out,
            proof: Proof::Crc(crc),
        }
    }

    /// [`checksummed`](Self::checksummed), with HMAC-SHA256.
    pub(super) fn signed(out: Vec<u8>, key: &hmac::Key) -> Self {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(&out);
        Self {
            out,
            proof: Proof::Hmac(ctx),
        }
    }

    /// Encrypted: `out` holds the envelope header and the cache key (the associated data);
    /// the payload, head included, is appended.
    pub(super) fn encrypted(mut out: Vec<u8>, key: &aead::LessSafeKey) -> Result<Self, SealError> {
        let nonce = random_nonce()?;
        let mut aad = Vec::with_capacity(out.len() + NONCE_LEN + 5);
        aad.extend_from_slice(&out);
        aad.extend_from_slice(&nonce);
        aad.extend_from_slice(&[0; 5]);
        out.extend_from_slice(&nonce);
        let at = out.len();
        Ok(Self {
            out,
            proof: Proof::Aes {
                key: Box::new(key.clone()),
                aad,
                at,
                index: 0,
            },
        })
    }

    /// Appends payload bytes: proven (or encrypted, a segment at a time) as they are written.
    pub(crate) fn append(&mut self, mut data: &[u8]) -> Result<(), SealError> {
        match &mut self.proof {
            Proof::Crc(crc) => {
                crc.update(data);
                self.out.extend_from_slice(data);
            }
            Proof::Hmac(ctx) => {
                ctx.update(data);
                self.out.extend_from_slice(data);
            }
            Proof::Aes { at, .. } => {
                let mut at_now = *at;
                while !data.is_empty() {
                    let room = SEGMENT - (self.out.len() - at_now);
                    let (now, later) = data.split_at(room.min(data.len()));
                    self.out.extend_from_slice(now);
                    data = later;
                    if self.out.len() - at_now == SEGMENT {
                        self.seal_segment(false)?;
                        at_now = match &self.proof {
                            Proof::Aes { at, .. } => *at,
                            _ => at_now,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Encrypts the current segment in place and appends its tag (and, unless it is the last,
    /// the next segment's nonce).
    fn seal_segment(&mut self, last: bool) -> Result<(), SealError> {
        let Proof::Aes {
            key,
            aad,
            at,
            index,
        } = &mut self.proof
        else {
            return Ok(());
        };
        let n = aad.len();
        aad[n - 5..n - 1].copy_from_slice(&index.to_be_bytes());
        aad[n - 1] = u8::from(last);
        let nonce = self
            .out
            .get(*at - NONCE_LEN..*at)
            .ok_or(SealError("bad nonce position"))?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| SealError("bad nonce length"))?;
        let tag = key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(&aad[..]), &mut self.out[*at..])
            .map_err(|_| SealError("could not encrypt"))?;
        self.out.extend_from_slice(tag.as_ref());
        if !last {
            *index = index.checked_add(1).ok_or(SealError("too many segments"))?;
            self.out.extend_from_slice(&random_nonce()?);
            *at = self.out.len();
        }
        Ok(())
    }

    /// Ends the payload with the trailers and appends the tag: the finished blob.
    pub(crate) fn finish(mut self, trailers: Option<&HeaderMap>) -> Result<Bytes, SealError> {
        if trailers.is_some_and(|t| t.len() > wire::MAX_FIELDS) {
            return Err(SealError("more trailer fields than an entry holds"));
        }
        let encode_err = |_| SealError("could not encode");
        match &mut self.proof {
            Proof::Crc(crc) => {
                let start = self.out.len();
                self.out = wire::encode_tail(trailers, std::mem::take(&mut self.out))
                    .map_err(encode_err)?;
                crc.update(&self.out[start..]);
            }
            Proof::Hmac(ctx) => {
                let start = self.out.len();
                self.out = wire::encode_tail(trailers, std::mem::take(&mut self.out))
                    .map_err(encode_err)?;
                ctx.update(&self.out[start..]);
            }
            Proof::Aes { .. } => {
                let tail = wire::tail(trailers).map_err(encode_err)?;
                self.append(&tail)?;
            }
        }
        match self.proof {
            Proof::Crc(crc) => {
                let sum = crc.finalize();
                self.out.extend_from_slice(&sum.to_be_bytes());
            }
            Proof::Hmac(ctx) => {
                let tag = ctx.sign();
                self.out.extend_from_slice(tag.as_ref());
            }
            Proof::Aes { .. } => self.seal_segment(true)?,
        }
        Ok(Bytes::from(self.out))
    }

    /// The bytes written so far (header, head and body; encrypted segments included).
    #[cfg(test)]
    pub(crate) fn written(&self) -> usize {
        self.out.len()
    }

    /// Plaintext waiting for its segment to fill (always less than [`SEGMENT`]); 0 for the
    /// other algorithms, which prove every byte as it is appended.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        match &self.proof {
            Proof::Aes { at, .. } => self.out.len() - at,
            _ => 0,
        }
    }
}

/// Opens the segments of an encrypted payload (`sealed`, everything after `header`) into one
/// plaintext buffer: one copy, and no byte is released before its segment's tag is checked.
/// `None` when a segment does not open or the framing is wrong.
pub(super) fn open_segments(
    key: &aead::LessSafeKey,
    header: &[u8],
    sealed: &[u8],
) -> Option<Vec<u8>> {
    let first_nonce = sealed.get(..NONCE_LEN)?;
    // The associated data on the stack when it fits (a key name of this crate is under 100
    // bytes): a hit makes no allocation for it.
    let n = header.len() + NONCE_LEN + 5;
    let mut small = [0u8; 256];
    let mut large = Vec::new();
    let aad: &mut [u8] = if n <= small.len() {
        &mut small[..n]
    } else {
        large.resize(n, 0);
        &mut large
    };
    aad[..header.len()].copy_from_slice(header);
    aad[header.len()..n - 5].copy_from_slice(first_nonce);
    let record = NONCE_LEN + SEGMENT + SEGMENT_TAG;
    let mut plain = Vec::with_capacity(sealed.len());
    let mut rest = sealed;
    let mut index: u32 = 0;
    loop {
        // A full record is a segment that is not the last; the last one is shorter.
        let last = rest.len() < record;
        let (this, next) = rest.split_at(if last { rest.len() } else { record });
        if this.len() < NONCE_LEN + SEGMENT_TAG {
            return None;
        }
        let (nonce, ciphertext) = this.split_at(NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        aad[n - 5..n - 1].copy_from_slice(&index.to_be_bytes());
        aad[n - 1] = u8::from(last);
        let start = plain.len();
        plain.extend_from_slice(ciphertext);
        let len = key
            .open_in_place(nonce, aead::Aad::from(&*aad), &mut plain[start..])
            .ok()?
            .len();
        plain.truncate(start + len);
        if last {
            return Some(plain);
        }
        index = index.checked_add(1)?;
        rest = next;
    }
}
