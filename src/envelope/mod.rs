//! The storage format: a versioned header, then records, each proven on its own.
//!
//! ```text
//! offset   size  field
//! 0        4     magic "HCCE"
//! 4        1     format version (4)
//! 5        1     algorithm: 0 = unsigned (CRC-32), 1 = HMAC-SHA256, 2 = AES-256-GCM,
//!                           3 = keyed BLAKE3 (the default with a key)
//! 6        1     key id length n (0 when unsigned, 8 otherwise)
//! 7        n     key id (HKDF-derived from the secret, see keys.rs)
//! 7+n      2     cache key length k, big endian
//! 9+n      k     cache key (UTF-8)
//! 9+n+k    16    entry id (random: binds every record to this one write)
//! then records, each:
//!          4     stored length l, big endian
//!          1     codec (0: as is; 1: LZ4 block, 2: Zstandard frame; see codec.rs; the head
//!                is always 0)
//!          l     data (compressed when the codec says so; encrypted: nonce | ciphertext |
//!                GCM tag, of the compressed bytes)
//!          t     tag: 4 bytes (CRC-32), 32 (HMAC-SHA256, keyed BLAKE3), 0 (AES-256-GCM)
//! record 0 is the head (postcard: status, header fields, times, Vary, freshness source, the
//! body's length and its trailers); records 1.. are the body in segments of 64 KiB, the last
//! one shorter (there are none for an empty body). Nothing follows the last. A body shorter
//! than 16 KiB is instead written in record 0 after the encoded head, and no segment follows:
//! one record and one proof for the small entries most hits are of.
//! ```
//!
//! Every record's proof covers the header, the record's index, length and codec, and its data
//! (`record.rs`). The header holds the cache key the entry was written for, so a validly signed
//! entry copied to another key is refused (the anchors this crate learned from do not bind the
//! key, and a swap attack works there). A response that varies is one entry stored under two
//! names, its URL's key and its variant's (`key#<hash of generation and selecting values>`); it
//! carries the URL's key, and opens under the variant's name only when its own generation and
//! selecting values hash to that name (a large one streamed to the store goes under one of the
//! two only: `future/put.rs`).
//!
//! On read the head is verified before a byte of it is decoded, and each segment before a byte
//! of it is released (`reader.rs`): a store that streams a large entry (`DiskStore`) is read in
//! bounded memory, and a tampered segment ends the body with `BadSignature` before any of it.
//! Format versions 2 and 3 (one tag over the whole entry) are no longer read: such entries are
//! misses, overwritten by the next storable response. This module knows nothing about HTTP
//! caching decisions.

mod codec;
mod keys;
mod open;
mod reader;
mod record;
mod stream;
mod tag_names;
mod verified;
pub(crate) mod wire;

use bytes::Bytes;
use ring::{digest, hmac};

#[cfg(any(feature = "lz4", feature = "zstd"))]
pub use codec::{Codec, Compression, DEFAULT_COMPRESS_MIN_SIZE};
pub use keys::{KeyError, KeyRing, SecretKey, MIN_KEY_LEN};
pub(crate) use reader::{BodyReader, Opened, Pending, Step};
pub(crate) use stream::{Sealed, Sealing};
pub(crate) use verified::{Memos, VerifiedBlobs};

use crate::entry::EntryHead;
use crate::error::BadSignature;
use crate::CacheKey;
use record::{Prover, ALG_AES_256_GCM, ALG_BLAKE3, ALG_CRC32, ALG_HMAC_SHA256};

const MAGIC: &[u8; 4] = b"HCCE";
const FORMAT_V4: u8 = 4;
/// Where the header holds the algorithm byte (after the magic and the format version).
const ALG_AT: usize = MAGIC.len() + 1;
/// The random id that binds the records of one entry together.
const ENTRY_ID_LEN: usize = 16;
/// Body bytes per segment: what a reader verifies and releases at a time, and the most a
/// streamed read holds besides its read-ahead.
pub(crate) const SEGMENT: usize = 64 * 1024;
/// The longest head record read: far above what `wire::MAX_FIELDS` fields of a response hold
/// from an HTTP parser.
const MAX_HEAD_RECORD: usize = 16 << 20;

/// How signed entries are signed.
///
/// Keyed BLAKE3 is a PRF like HMAC-SHA256, and 3 to 4 times faster on large bodies on the
/// machines measured here; on short inputs, where it cannot use its SIMD parallelism, SHA-256's
/// CPU instructions make HMAC-SHA256 the faster of the two (docs/benchmarks.md). The default,
/// [`Mac::Auto`], picks per entry by the body's announced length. Readers accept both, whatever
/// writes (the algorithm is in each entry, under every tag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum Mac {
    /// HMAC-SHA256 for a body of [`MAC_AUTO_BELOW`] bytes or less (announced by its
    /// `Content-Length`, or, without one, found at its end); keyed BLAKE3 for larger bodies.
    #[default]
    Auto,
    /// Keyed BLAKE3 under a per-entry subkey, whatever the body's length.
    Blake3,
    /// HMAC-SHA256, whatever the body's length (for deployments that need a FIPS-approved MAC).
    HmacSha256,
}

/// Up to this body length (announced by `Content-Length`, or found at the end of a body that
/// announced none), [`Mac::Auto`] signs with HMAC-SHA256: 16 KiB.
pub const MAC_AUTO_BELOW: u64 = 16 * 1024;

/// The bytes an entry adds to a body of `body_len` bytes for its segments' framing and proofs
/// (at most 37 per 64 KiB segment: 5 of framing and a 32-byte tag, or 5, a nonce and a GCM tag).
pub(crate) fn segment_overhead(body_len: usize) -> usize {
    (body_len / SEGMENT + 1).saturating_mul(5 + 32)
}

/// How entries are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// CRC-32 only: corruption detection.
    Unsigned,
    /// A MAC: integrity and authenticity; encrypted entries are accepted too.
    Signed,
    /// AES-256-GCM: confidentiality, integrity and authenticity; nothing less is accepted.
    Encrypted,
}

/// Seals entries with the current key and opens them with any key of the ring.
#[derive(Clone, Debug)]
pub(crate) struct Envelope {
    keys: Option<KeyRing>,
    mode: Mode,
    mac: Mac,
    /// Blobs larger than this are refused before any MAC or decoding work.
    max_blob: usize,
    /// How body segments are compressed (`None`: stored as is).
    compression: Option<codec::Settings>,
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
/// An entry of format 2 or 3: a miss, overwritten by the next storable response (not
/// foreign: `hcc verify --delete` removes it).
/// A signed entry read by a cache that encrypts.
pub(crate) const DOWNGRADED: &str =
    "signed but not encrypted (written before encryption was turned on)";
const OLDER_FORMAT: &str = "older format version";
pub(crate) const TOO_LARGE: &str = "blob larger than the configured maximum";
const NEWER_FORMAT: &str = "unknown format version";
const NEWER_CODEC: &str = "unknown codec";
const NEWER_ALGORITHM: &str = "unknown algorithm";
const NO_KEY: &str = "protected entry, but this cache has no key";

impl OpenError {
    /// The `reason` label, in the metrics (`CacheMetrics::unusable_entries`), of an entry
    /// unusable for `why`: `foreign` (see [`is_foreign`](Self::is_foreign)), `outdated` (an
    /// older release's entry) or `damaged`.
    pub(crate) fn unusable_kind(why: &'static str) -> &'static str {
        if OpenError::Unusable(why).is_foreign() {
            "foreign"
        } else if [OLDER_FORMAT, DOWNGRADED].contains(&why) {
            "outdated"
        } else {
            "damaged"
        }
    }

    /// The blob may be somebody else's valid entry: signed under a key id this ring does not
    /// hold (another deployment sharing the store, a key rotated out), protected while this
    /// reader has no key, in a format or algorithm of a newer release, or larger than this
    /// reader's bound. Nothing says it was tampered with; what fails under a key id of the ring
    /// (or is no envelope at all, or unsigned where signing is required) is not foreign.
    pub(crate) fn is_foreign(&self) -> bool {
        match self {
            OpenError::BadSignature(bad) => bad.is_unknown_key(),
            OpenError::Unusable(why) => [
                TOO_LARGE,
                NEWER_FORMAT,
                NEWER_CODEC,
                NEWER_ALGORITHM,
                NO_KEY,
            ]
            .iter()
            .any(|foreign| foreign == why),
        }
    }
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
            mac: Mac::default(),
            max_blob: usize::MAX,
            compression: None,
        }
    }

    pub(crate) fn encrypted(keys: KeyRing) -> Self {
        Self {
            keys: Some(keys),
            mode: Mode::Encrypted,
            mac: Mac::default(),
            max_blob: usize::MAX,
            compression: None,
        }
    }

    pub(crate) fn with_max_blob(mut self, max_blob: usize) -> Self {
        self.max_blob = max_blob;
        self
    }

    /// The MAC signed entries are written with (all are read).
    pub(crate) fn with_mac(mut self, mac: Mac) -> Self {
        self.mac = mac;
        self
    }

    /// How new entries' body segments are compressed (`None`: not at all; all are read).
    #[cfg(any(feature = "lz4", feature = "zstd"))]
    pub(crate) fn with_compression(mut self, compression: Option<Compression>) -> Self {
        self.compression = compression.map(codec::Settings::from);
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

    /// Starts sealing an entry for `key`: the envelope header is written, the body is appended
    /// as it arrives ([`Sealing::append`]), and [`Sealing::finish`] seals the head (with the
    /// body's length and the trailers) in front of it.
    /// `expected_len` is the body's announced length (`Content-Length`), if any: [`Mac::Auto`]
    /// picks the MAC by it.
    pub(crate) fn start(
        &self,
        key: &CacheKey,
        head: &EntryHead,
        expected_len: Option<u64>,
    ) -> Result<Sealing, SealError> {
        if !wire::fits(head, None) {
            return Err(SealError("more header fields than an entry holds"));
        }
        let key_bytes = key.as_str().as_bytes();
        let key_len =
            u16::try_from(key_bytes.len()).map_err(|_| SealError("cache key too long"))?;
        let current = self.keys.as_ref().map(KeyRing::current);
        let alg = match (current, self.mode, self.mac) {
            (None, _, _) | (_, Mode::Unsigned, _) => ALG_CRC32,
            (Some(_), Mode::Encrypted, _) => ALG_AES_256_GCM,
            (Some(_), Mode::Signed, Mac::Blake3) => ALG_BLAKE3,
            (Some(_), Mode::Signed, Mac::HmacSha256) => ALG_HMAC_SHA256,
            (Some(_), Mode::Signed, Mac::Auto) => match expected_len {
                Some(len) if len <= MAC_AUTO_BELOW => ALG_HMAC_SHA256,
                _ => ALG_BLAKE3,
            },
        };
        let mut header = Vec::with_capacity(9 + 8 + key_bytes.len() + ENTRY_ID_LEN);
        header.extend_from_slice(MAGIC);
        header.push(FORMAT_V4);
        header.push(alg);
        match current.filter(|_| alg != ALG_CRC32) {
            Some(k) => {
                header.push(k.id.len() as u8);
                header.extend_from_slice(&k.id);
            }
            None => header.push(0),
        }
        header.extend_from_slice(&key_len.to_be_bytes());
        header.extend_from_slice(key_bytes);
        let mut id = [0u8; ENTRY_ID_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| SealError("random generator failed"))?;
        header.extend_from_slice(&id);
        let prover = match (alg, current) {
            (ALG_AES_256_GCM, Some(k)) => Prover::aes(&k.aead, Bytes::copy_from_slice(&header)),
            (ALG_BLAKE3, Some(k)) => Prover::blake3(&k.blake3, &header),
            (ALG_HMAC_SHA256, Some(k)) => Prover::hmac(&k.mac, &header),
            _ => Prover::crc(&header),
        };
        // Not for encrypted entries unless asked (the length side channel, docs/security.md),
        // nor for a body the origin already encoded.
        let compressor = self
            .compression
            .filter(|c| self.mode != Mode::Encrypted || c.when_encrypted)
            .filter(|_| codec::worth_trying(&head.headers))
            .map(codec::Compressor::new);
        let head = wire::encode_head(head, Vec::with_capacity(512))
            .map_err(|_| SealError("could not encode"))?;
        // `Mac::Auto` with no length announced: BLAKE3, unless the body turns out small.
        let hmac_if_small = match (alg, current, self.mac, expected_len) {
            (ALG_BLAKE3, Some(k), Mac::Auto, None) => Some(k.mac.clone()),
            _ => None,
        };
        Ok(Sealing::new(header, prover, alg == ALG_AES_256_GCM, head)
            .compress_with(compressor)
            .hmac_if_small(hmac_if_small))
    }

    #[cfg(test)]
    /// Seals `head`, the body `chunks` and the trailers for storage under `key`, in one go, as
    /// one buffer.
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
        let mut sealing = self.start(key, head, Some(body_len as u64))?;
        for chunk in chunks {
            sealing.append(chunk)?;
        }
        let parts = sealing.finish(trailers)?;
        let mut all = Vec::new();
        for p in parts {
            all.extend_from_slice(&p);
        }
        Ok(Bytes::from(all))
    }
}

/// For the fuzz targets: `data` as a compressed record of every codec compiled in, which
/// decompresses to exactly a segment or not at all, and never panics.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decompress(data: &[u8]) {
    let data = [Bytes::copy_from_slice(data)];
    for c in [codec::LZ4, codec::ZSTD] {
        if let Some(out) = codec::decompress(c, &data, SEGMENT) {
            assert_eq!(out.len(), SEGMENT, "decompressed to another length");
        }
    }
}

/// An entry could not be sealed (it is then not stored).
#[derive(Debug)]
pub(crate) struct SealError(pub(crate) &'static str);

#[cfg(test)]
mod codec_byte_tests;
#[cfg(all(test, any(feature = "lz4", feature = "zstd")))]
mod codec_tests;
#[cfg(test)]
mod format4_tests;
#[cfg(test)]
mod tests;
