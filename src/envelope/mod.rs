//! The storage format: a versioned header, a postcard payload and a tag.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HCCE"
//! 4       1     format version (2)
//! 5       1     algorithm: 0 = unsigned (CRC-32 checksum), 1 = HMAC-SHA256, 2 = AES-256-GCM
//! 6       1     key id length n (0 when unsigned, 8 for HMAC-SHA256)
//! 7       n     key id (HKDF-derived from the secret, see keys.rs)
//! 7+n     2     cache key length k, big endian
//! 9+n     k     cache key (UTF-8)
//! 9+n+k   ..    payload: postcard-encoded head, then the raw body to the end
//! len-t   t     tag over every byte before it: 4 bytes (CRC-32) or 32 (HMAC-SHA256)
//! ```
//!
//! With AES-256-GCM (algorithm 2) the payload is `nonce (12 random bytes) | ciphertext`, the tag
//! is GCM's 16-byte tag, and every byte before the nonce (header and cache key) is the associated
//! data: a blob moved to another key, or with another header, fails to open.
//!
//! ```text
//! ```
//!
//! The tag covers the header, the cache key the blob is written under and the payload. The key is
//! inside the signed bytes, so a validly signed blob copied to another key is rejected: the
//! anchors this crate learned from do not bind the key, and a swap attack works there.
//!
//! On read, `ring::hmac::verify` (constant time) runs over the raw blob before a single byte of
//! the payload is decoded. This module knows nothing about HTTP caching decisions.

mod keys;
pub(crate) mod wire;

use bytes::Bytes;
use http::HeaderMap;
use ring::{aead, digest, hmac, rand};

pub use keys::{KeyError, KeyRing, SecretKey, MIN_KEY_LEN};

use crate::entry::{Entry, EntryHead};
use crate::error::{BadSignature, BadSignatureReason};
use crate::CacheKey;

const MAGIC: &[u8; 4] = b"HCCE";
const FORMAT_V2: u8 = 2;
/// Unsigned: a CRC-32 (IEEE) detects accidental corruption, nothing more. It is not a MAC.
const ALG_UNSIGNED_CRC32: u8 = 0;
const ALG_HMAC_SHA256: u8 = 1;
const ALG_AES_256_GCM: u8 = 2;
const NONCE_LEN: usize = 12;

/// The tag length of an algorithm, `None` for algorithms this release does not know.
fn tag_len(alg: u8) -> Option<usize> {
    match alg {
        ALG_UNSIGNED_CRC32 => Some(4),
        ALG_HMAC_SHA256 => Some(32),
        ALG_AES_256_GCM => Some(16),
        _ => None,
    }
}
/// magic, version, algorithm, key id length, cache key length.
const FIXED_HEADER: usize = 4 + 1 + 1 + 1 + 2;

/// How entries are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// CRC-32 only: corruption detection.
    Unsigned,
    /// HMAC-SHA256: integrity and authenticity; encrypted entries are accepted too.
    Signed,
    /// AES-256-GCM: confidentiality, integrity and authenticity; nothing less is accepted.
    Encrypted,
}

/// Seals entries with the current key and opens them with any key of the ring.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    keys: Option<KeyRing>,
    mode: Mode,
    /// Blobs larger than this are refused before any MAC or decoding work.
    max_blob: usize,
}

/// Why a blob was not turned into an entry.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The cache signs entries and this blob did not verify: the tamper policy applies.
    BadSignature(BadSignature),
    /// Not usable, but not evidence of tampering either: treated as a miss (and overwritten by
    /// the next storable response). The string says why, for the logs.
    Unusable(&'static str),
}

/// The parsed, not yet verified, parts of a blob.
struct Parsed<'a> {
    version: u8,
    alg: u8,
    key_id: &'a [u8],
    cache_key: &'a [u8],
    payload: std::ops::Range<usize>,
    signed: &'a [u8],
    tag: &'a [u8],
}

fn parse(blob: &[u8]) -> Option<Parsed<'_>> {
    if blob.len() < FIXED_HEADER || &blob[..4] != MAGIC {
        return None;
    }
    let version = blob[4];
    let alg = blob[5];
    // An unknown algorithm has no known tag length: parse as if tagless; `open` refuses it.
    let tag_len = tag_len(alg).unwrap_or(0);
    let id_len = usize::from(blob[6]);
    let key_id = blob.get(7..7 + id_len)?;
    let klen_at = 7 + id_len;
    let klen = usize::from(u16::from_be_bytes([
        *blob.get(klen_at)?,
        *blob.get(klen_at + 1)?,
    ]));
    let key_at = klen_at + 2;
    let cache_key = blob.get(key_at..key_at + klen)?;
    let payload_at = key_at + klen;
    let tag_at = blob.len().checked_sub(tag_len)?;
    if payload_at > tag_at {
        return None;
    }
    Some(Parsed {
        version,
        alg,
        key_id,
        cache_key,
        payload: payload_at..tag_at,
        signed: &blob[..tag_at],
        tag: &blob[tag_at..],
    })
}

impl Envelope {
    pub(crate) fn new(keys: Option<KeyRing>) -> Self {
        let mode = if keys.is_some() {
            Mode::Signed
        } else {
            Mode::Unsigned
        };
        Self {
            keys,
            mode,
            max_blob: usize::MAX,
        }
    }

    pub(crate) fn encrypted(keys: KeyRing) -> Self {
        Self {
            keys: Some(keys),
            mode: Mode::Encrypted,
            max_blob: usize::MAX,
        }
    }

    pub(crate) fn with_max_blob(mut self, max_blob: usize) -> Self {
        self.max_blob = max_blob;
        self
    }

    /// The largest blob [`open`](Self::open) accepts.
    pub(crate) fn max_blob(&self) -> usize {
        self.max_blob
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// A digest of a credential-bearing request header value, kept for Vary matching instead of
    /// the value: HMAC-SHA256 under the signing key (domain-separated from entry tags), or plain
    /// SHA-256 when the cache is unsigned.
    /// The keys that name entries (keyed cache keys), current first; empty without a key.
    pub(crate) fn name_keys(&self) -> Vec<ring::hmac::Key> {
        self.keys
            .as_ref()
            .map(KeyRing::name_keys)
            .unwrap_or_default()
    }

    pub(crate) fn vary_digest(&self, value: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        match &self.keys {
            Some(ring) => {
                let mut ctx = hmac::Context::with_key(&ring.current().mac);
                ctx.update(b"hcc/v1/vary\0");
                ctx.update(value);
                out.copy_from_slice(ctx.sign().as_ref());
            }
            None => {
                let mut ctx = digest::Context::new(&digest::SHA256);
                ctx.update(b"hcc/v1/vary\0");
                ctx.update(value);
                out.copy_from_slice(ctx.finish().as_ref());
            }
        }
        out
    }

    /// Seals `head`, the body `chunks` and the trailers for storage under `key`. The body is copied once, into
    /// the blob; nothing else is.
    pub(crate) fn seal(
        &self,
        key: &CacheKey,
        head: &EntryHead,
        chunks: &[Bytes],
        trailers: Option<&HeaderMap>,
    ) -> Result<Bytes, SealError> {
        if !wire::fits(head, trailers) {
            return Err(SealError("more header fields than an entry holds"));
        }
        let key_bytes = key.as_str().as_bytes();
        let key_len =
            u16::try_from(key_bytes.len()).map_err(|_| SealError("cache key too long"))?;
        let body_len: usize = chunks.iter().map(Bytes::len).sum();
        let mut out = Vec::with_capacity(FIXED_HEADER + 8 + key_bytes.len() + 512 + body_len + 32);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_V2);
        let current = self.keys.as_ref().map(KeyRing::current);
        match (self.mode, current) {
            (Mode::Unsigned, _) | (_, None) => {
                out.push(ALG_UNSIGNED_CRC32);
                out.push(0);
            }
            (mode, Some(k)) => {
                out.push(if mode == Mode::Encrypted {
                    ALG_AES_256_GCM
                } else {
                    ALG_HMAC_SHA256
                });
                out.push(k.id.len() as u8);
                out.extend_from_slice(&k.id);
            }
        }
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(key_bytes);
        let aad_end = out.len();
        if let (Mode::Encrypted, Some(_)) = (self.mode, current) {
            // A fresh random 96-bit nonce per write: with random nonces, one key can seal about
            // 2^32 entries before the collision probability reaches 2^-32 (NIST SP 800-38D §8.3).
            let mut nonce = [0u8; NONCE_LEN];
            rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut nonce)
                .map_err(|_| SealError("random generator failed"))?;
            out.extend_from_slice(&nonce);
        }
        let mut out =
            wire::encode_head(head, trailers, out).map_err(|_| SealError("could not encode"))?;
        for chunk in chunks {
            out.extend_from_slice(chunk);
        }
        match (self.mode, current) {
            (Mode::Unsigned, _) | (_, None) => {
                let sum = crc32fast::hash(&out);
                out.extend_from_slice(&sum.to_be_bytes());
            }
            (Mode::Signed, Some(k)) => {
                let tag = hmac::sign(&k.mac, &out);
                out.extend_from_slice(tag.as_ref());
            }
            (Mode::Encrypted, Some(k)) => {
                let (head, rest) = out.split_at_mut(aad_end);
                let (nonce, plaintext) = rest.split_at_mut(NONCE_LEN);
                let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
                    .map_err(|_| SealError("bad nonce length"))?;
                let tag = k
                    .aead
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(&*head), plaintext)
                    .map_err(|_| SealError("could not encrypt"))?;
                out.extend_from_slice(tag.as_ref());
            }
        }
        Ok(Bytes::from(out))
    }

    /// Verifies (or decrypts), then decodes, a blob read from `key`.
    pub(crate) fn open(&self, key: &CacheKey, blob: Bytes) -> Result<Entry, OpenError> {
        let bad = |reason| OpenError::BadSignature(BadSignature::new(key.clone(), reason));
        // Bounded reads: a store writer must not make the client spend CPU or memory on a huge
        // blob. Checked before any MAC, decryption or decoding.
        if blob.len() > self.max_blob {
            return Err(OpenError::Unusable(
                "blob larger than the configured maximum",
            ));
        }
        let Some(parsed) = parse(&blob) else {
            return Err(match self.keys {
                Some(_) => bad(BadSignatureReason::Malformed),
                None => OpenError::Unusable("not an envelope"),
            });
        };
        if parsed.version != FORMAT_V2 {
            // Possibly written by a newer release sharing the store: not ours to judge.
            return Err(OpenError::Unusable("unknown format version"));
        }
        let payload = match (&self.keys, parsed.alg) {
            (None, ALG_UNSIGNED_CRC32) => {
                if crc32fast::hash(parsed.signed).to_be_bytes() != parsed.tag {
                    return Err(OpenError::Unusable("checksum mismatch"));
                }
                blob.slice(parsed.payload.clone())
            }
            (None, ALG_HMAC_SHA256 | ALG_AES_256_GCM) => {
                return Err(OpenError::Unusable(
                    "protected entry, but this cache has no key",
                ));
            }
            (Some(_), ALG_UNSIGNED_CRC32) => return Err(bad(BadSignatureReason::Unsigned)),
            (Some(_), ALG_HMAC_SHA256) if self.mode == Mode::Encrypted => {
                return Err(bad(BadSignatureReason::Unencrypted));
            }
            (Some(ring), ALG_HMAC_SHA256) => {
                let Some(k) = ring.find(parsed.key_id) else {
                    return Err(bad(BadSignatureReason::UnknownKey));
                };
                // Constant-time verification before anything is decoded.
                if hmac::verify(&k.mac, parsed.signed, parsed.tag).is_err() {
                    return Err(bad(BadSignatureReason::Mismatch));
                }
                blob.slice(parsed.payload.clone())
            }
            (Some(ring), ALG_AES_256_GCM) => {
                let Some(k) = ring.find(parsed.key_id) else {
                    return Err(bad(BadSignatureReason::UnknownKey));
                };
                let sealed = &blob[parsed.payload.start..];
                let (Some(nonce), Some(ciphertext_and_tag)) =
                    (sealed.get(..NONCE_LEN), sealed.get(NONCE_LEN..))
                else {
                    return Err(bad(BadSignatureReason::Malformed));
                };
                let nonce = aead::Nonce::try_assume_unique_for_key(nonce)
                    .map_err(|_| bad(BadSignatureReason::Malformed))?;
                let aad = aead::Aad::from(&blob[..parsed.payload.start]);
                // One copy, into the buffer that becomes the plaintext; ring checks the tag
                // before it releases any of it.
                let mut buf = ciphertext_and_tag.to_vec();
                let len = k
                    .aead
                    .open_in_place(nonce, aad, &mut buf)
                    .map_err(|_| bad(BadSignatureReason::Mismatch))?
                    .len();
                buf.truncate(len);
                Bytes::from(buf)
            }
            (_, _) => return Err(OpenError::Unusable("unknown algorithm")),
        };
        // Authenticated now: the embedded cache key is the one its writer sealed it for.
        if parsed.cache_key != key.as_str().as_bytes() {
            return Err(match self.keys {
                Some(_) => bad(BadSignatureReason::WrongKey),
                None => OpenError::Unusable("entry belongs to another key"),
            });
        }
        // A decrypted payload is this request's own buffer; a verified one is a slice of the
        // blob the store may share between threads (see `decode_shared`).
        let decoded = if parsed.alg == ALG_AES_256_GCM {
            wire::decode(&payload)
        } else {
            wire::decode_shared(&payload)
        };
        decoded.ok_or(OpenError::Unusable("payload does not decode"))
    }
}

/// An entry could not be sealed (it is then not stored).
#[derive(Debug)]
pub(crate) struct SealError(pub(crate) &'static str);

#[cfg(test)]
mod tests;
