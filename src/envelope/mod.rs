//! The storage format: a versioned header, a postcard payload and a tag.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HCCE"
//! 4       1     format version (3)
//! 5       1     algorithm: 0 = unsigned (CRC-32 checksum), 1 = HMAC-SHA256, 2 = AES-256-GCM
//! 6       1     key id length n (0 when unsigned, 8 for HMAC-SHA256)
//! 7       n     key id (HKDF-derived from the secret, see keys.rs)
//! 7+n     2     cache key length k, big endian
//! 9+n     k     cache key (UTF-8)
//! 9+n+k   ..    payload: postcard-encoded head | raw body | trailer section | its length (u32 BE)
//! len-t   t     tag over every byte before it: 4 bytes (CRC-32) or 32 (HMAC-SHA256)
//! ```
//!
//! The payload is written front to back while the body streams by, and the tag is computed as
//! it goes (see `stream.rs`): the trailers, known only once the body has ended, come after it.
//!
//! With AES-256-GCM (algorithm 2) the payload is encrypted in segments of 64 KiB, each with a
//! random nonce and its own tag, and the header and cache key are part of every segment's
//! associated data (see `stream.rs`): a blob moved to another key, or with another header, or
//! with segments reordered, swapped with another entry's or cut off, fails to open.
//!
//! The tag covers the header, the cache key the blob is written for and the payload. The key is
//! inside the signed bytes, so a validly signed blob copied to another key is rejected: the
//! anchors this crate learned from do not bind the key, and a swap attack works there. A
//! response that varies is one blob stored under two names, its URL's key and its variant's
//! (`key#<hash of generation and selecting values>`); it carries the URL's key, and opens under
//! the variant's name only when its own generation and selecting values hash to that name.
//!
//! Format version 2 (trailers before the body, one AES-GCM message) is no longer read: such
//! blobs are misses and are overwritten by the next storable response.
//!
//! On read, `ring::hmac::verify` (constant time) runs over the raw blob before a single byte of
//! the payload is decoded. This module knows nothing about HTTP caching decisions.

mod keys;
mod stream;
mod tag_names;
pub(crate) mod wire;

use bytes::Bytes;
use ring::{digest, hmac};

pub use keys::{KeyError, KeyRing, SecretKey, MIN_KEY_LEN};
pub(crate) use stream::Sealing;

use crate::entry::{Entry, EntryHead};
use crate::error::{BadSignature, BadSignatureReason};
use crate::CacheKey;

const MAGIC: &[u8; 4] = b"HCCE";
const FORMAT_V3: u8 = 3;
/// Unsigned: a CRC-32 (IEEE) detects accidental corruption, nothing more. It is not a MAC.
const ALG_UNSIGNED_CRC32: u8 = 0;
const ALG_HMAC_SHA256: u8 = 1;
const ALG_AES_256_GCM: u8 = 2;
const NONCE_LEN: usize = 12;

/// The length of the tag at the end of a blob, `None` for algorithms this release does not
/// know. Encrypted blobs carry a tag per segment instead, inside the payload.
fn tag_len(alg: u8) -> Option<usize> {
    match alg {
        ALG_UNSIGNED_CRC32 => Some(4),
        ALG_HMAC_SHA256 => Some(32),
        ALG_AES_256_GCM => Some(0),
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

// The reasons a blob is unusable because this reader cannot judge it, not because it is bad:
// possibly another deployment's valid entry (see `OpenError::is_foreign`).
const TOO_LARGE: &str = "blob larger than the configured maximum";
const NEWER_FORMAT: &str = "unknown format version";
const NEWER_ALGORITHM: &str = "unknown algorithm";
const NO_KEY: &str = "protected entry, but this cache has no key";

impl OpenError {
    /// The blob may be somebody else's valid entry: signed under a key id this ring does not
    /// hold (another deployment sharing the store, a key rotated out), protected while this
    /// reader has no key, in a format or algorithm of a newer release, or larger than this
    /// reader's bound. Nothing says it was tampered with; what fails under a key id of the ring
    /// (or is no envelope at all, or unsigned where signing is required) is not foreign.
    pub(crate) fn is_foreign(&self) -> bool {
        match self {
            OpenError::BadSignature(bad) => bad.is_unknown_key(),
            OpenError::Unusable(why) => [TOO_LARGE, NEWER_FORMAT, NEWER_ALGORITHM, NO_KEY]
                .iter()
                .any(|foreign| foreign == why),
        }
    }
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

/// The bytes an encrypted entry adds to a body of `body_len` bytes for its segments' nonces and
/// tags (28 per 64 KiB).
pub(crate) fn segment_overhead(body_len: usize) -> usize {
    (body_len / stream::SEGMENT + 1).saturating_mul(NONCE_LEN + stream::SEGMENT_TAG)
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

    /// The keys that name entries (keyed cache keys), current first; empty without a key.
    pub(crate) fn name_keys(&self) -> Vec<ring::hmac::Key> {
        self.keys
            .as_ref()
            .map(KeyRing::name_keys)
            .unwrap_or_default()
    }

    /// A digest of a request field value a response varies on, kept for Vary matching instead
    /// of the value, whatever the field is called (default deny): HMAC-SHA256 under a key
    /// derived for this purpose alone (HKDF info `hcc/v1/vary-values`) from the current secret,
    /// or plain SHA-256 when the cache has none. The field's name is part of the digest, so
    /// one value under two names gives two digests.
    pub(crate) fn vary_digest(&self, name: &str, value: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let name = name.as_bytes();
        // Lengths first: no (name, value) pair reads as another.
        let lengths = [
            (name.len() as u64).to_be_bytes(),
            (value.len() as u64).to_be_bytes(),
        ];
        match &self.keys {
            Some(ring) => {
                let mut ctx = hmac::Context::with_key(&ring.current().vary);
                ctx.update(&lengths[0]);
                ctx.update(&lengths[1]);
                ctx.update(name);
                ctx.update(value);
                out.copy_from_slice(ctx.sign().as_ref());
            }
            None => {
                let mut ctx = digest::Context::new(&digest::SHA256);
                ctx.update(b"hcc/v1/vary-values\0");
                ctx.update(&lengths[0]);
                ctx.update(&lengths[1]);
                ctx.update(name);
                ctx.update(value);
                out.copy_from_slice(ctx.finish().as_ref());
            }
        }
        out
    }

    /// Starts sealing an entry for `key`: the envelope header and the head are written, the
    /// body is appended as it arrives ([`Sealing::append`]), and [`Sealing::finish`] adds the
    /// trailers and the tag. `capacity` is the body length expected (a hint, not a limit).
    pub(crate) fn start(
        &self,
        key: &CacheKey,
        head: &EntryHead,
        capacity: usize,
    ) -> Result<Sealing, SealError> {
        if !wire::fits(head, None) {
            return Err(SealError("more header fields than an entry holds"));
        }
        let key_bytes = key.as_str().as_bytes();
        let key_len =
            u16::try_from(key_bytes.len()).map_err(|_| SealError("cache key too long"))?;
        let current = self.keys.as_ref().map(KeyRing::current);
        let mode = match current {
            Some(_) => self.mode,
            None => Mode::Unsigned,
        };
        let overhead = match mode {
            Mode::Encrypted => segment_overhead(capacity),
            _ => 32,
        };
        let mut out = Vec::with_capacity(
            (FIXED_HEADER + 8 + key_bytes.len() + 512)
                .saturating_add(capacity)
                .saturating_add(overhead),
        );
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_V3);
        match (mode, current) {
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
        let encode = |out| wire::encode_head(head, out).map_err(|_| SealError("could not encode"));
        Ok(match (mode, current) {
            (Mode::Unsigned, _) | (_, None) => Sealing::checksummed(encode(out)?),
            (Mode::Signed, Some(k)) => Sealing::signed(encode(out)?, &k.mac),
            (Mode::Encrypted, Some(k)) => {
                let mut sealing = Sealing::encrypted(out, &k.aead)?;
                sealing.append(&encode(Vec::new())?)?;
                sealing
            }
        })
    }

    #[cfg(test)]
    /// Seals `head`, the body `chunks` and the trailers for storage under `key`, in one go: the
    /// body is copied once, into the blob; nothing else is.
    pub(crate) fn seal(
        &self,
        key: &CacheKey,
        head: &EntryHead,
        chunks: &[Bytes],
        trailers: Option<&http::HeaderMap>,
    ) -> Result<Bytes, SealError> {
        if !wire::fits(head, trailers) {
            return Err(SealError("more header fields than an entry holds"));
        }
        let body_len: usize = chunks.iter().map(Bytes::len).sum();
        let mut sealing = self.start(key, head, body_len)?;
        for chunk in chunks {
            sealing.append(chunk)?;
        }
        sealing.finish(trailers)
    }

    /// Verifies (or decrypts), then decodes, a blob read from `key`.
    pub(crate) fn open(&self, key: &CacheKey, blob: Bytes) -> Result<Entry, OpenError> {
        let bad = |reason| OpenError::BadSignature(BadSignature::new(key.clone(), reason));
        // Bounded reads: a store writer must not make the client spend CPU or memory on a huge
        // blob. Checked before any MAC, decryption or decoding.
        if blob.len() > self.max_blob {
            return Err(OpenError::Unusable(TOO_LARGE));
        }
        let Some(parsed) = parse(&blob) else {
            return Err(match self.keys {
                Some(_) => bad(BadSignatureReason::Malformed),
                None => OpenError::Unusable("not an envelope"),
            });
        };
        if parsed.version != FORMAT_V3 {
            // Possibly written by a newer release sharing the store: not ours to judge.
            return Err(OpenError::Unusable(NEWER_FORMAT));
        }
        let payload = match (&self.keys, parsed.alg) {
            (None, ALG_UNSIGNED_CRC32) => {
                if crc32fast::hash(parsed.signed).to_be_bytes() != parsed.tag {
                    return Err(OpenError::Unusable("checksum mismatch"));
                }
                blob.slice(parsed.payload.clone())
            }
            (None, ALG_HMAC_SHA256 | ALG_AES_256_GCM) => {
                return Err(OpenError::Unusable(NO_KEY));
            }
            (Some(_), ALG_UNSIGNED_CRC32) => return Err(bad(BadSignatureReason::Unsigned)),
            (Some(ring), ALG_HMAC_SHA256) if self.mode == Mode::Encrypted => {
                // Signed but not encrypted. Forged or foreign: refused like any other. Signed by
                // a key of this ring: written by this deployment before encryption was turned
                // on; not served (nothing less than encrypted is), but a miss, replaced by an
                // encrypted entry, rather than an error on every request after the switch.
                let Some(k) = ring.find(parsed.key_id) else {
                    return Err(bad(BadSignatureReason::UnknownKey));
                };
                if hmac::verify(&k.mac, parsed.signed, parsed.tag).is_err() {
                    return Err(bad(BadSignatureReason::Mismatch));
                }
                return Err(OpenError::Unusable(
                    "signed but not encrypted (written before encryption was turned on)",
                ));
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
                let (header, sealed) = blob.split_at(parsed.payload.start);
                if sealed.len() < NONCE_LEN + stream::SEGMENT_TAG {
                    return Err(bad(BadSignatureReason::Malformed));
                }
                // One copy, into the buffer that becomes the plaintext; ring checks each
                // segment's tag before it releases any of it.
                let plain = stream::open_segments(&k.aead, header, sealed)
                    .ok_or_else(|| bad(BadSignatureReason::Mismatch))?;
                Bytes::from(plain)
            }
            (_, _) => return Err(OpenError::Unusable(NEWER_ALGORITHM)),
        };
        // Authenticated now: the embedded cache key is the one its writer sealed it for.
        let own_key = parsed.cache_key == key.as_str().as_bytes();
        let wrong_key = || match self.keys {
            Some(_) => bad(BadSignatureReason::WrongKey),
            None => OpenError::Unusable("entry belongs to another key"),
        };
        // Or the URL's key, read under its variant's name (see the module docs): only decoded
        // when `key` has the shape of a variant of the embedded key, checked once decoded.
        if !own_key && !key.may_be_variant_of(parsed.cache_key) {
            return Err(wrong_key());
        }
        // A decrypted payload is this request's own buffer; a verified one is a slice of the
        // blob the store may share between threads (see `decode_shared`).
        let decoded = if parsed.alg == ALG_AES_256_GCM {
            wire::decode(&payload)
        } else {
            wire::decode_shared(&payload)
        };
        let entry = decoded.ok_or(OpenError::Unusable("payload does not decode"))?;
        if !own_key && !key.is_variant_of(parsed.cache_key, &entry.head) {
            return Err(wrong_key());
        }
        Ok(entry)
    }
}

/// An entry could not be sealed (it is then not stored).
#[derive(Debug)]
pub(crate) struct SealError(pub(crate) &'static str);

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
