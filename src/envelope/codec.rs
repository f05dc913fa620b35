//! Compression at rest: a body segment may be stored compressed (its record's codec byte says
//! how), when the layer is configured to ([`Compression`]) and it pays.
//!
//! Writing, a segment is compressed before it is proven (MAC, checksum or AES-GCM), so that the
//! proof covers the stored bytes and the codec byte (`record.rs`); it is stored compressed only
//! when that saves at least an eighth of it, else as is (codec 0). Reading, a record is verified
//! first, and only a verified record is decompressed, into at most the segment's plaintext
//! length (known from the verified head: 64 KiB, or the rest of the body), and must fill it
//! exactly: a decompressed size is bounded whatever the stored bytes say.
//!
//! | codec | what | feature |
//! | --- | --- | --- |
//! | 0 | as is | |
//! | 1 | LZ4 block (lz4_flex, safe code only) | `lz4` |
//! | 2 | Zstandard frame (the zstd C library) | `zstd` |
//!
//! A reader decompresses every codec compiled into it, whatever its own [`Compression`] setting
//! (none included); a codec not compiled in is a miss, as a newer release's entry is.

// Without a codec compiled in, only the reading side's checks are used.
#![cfg_attr(not(any(feature = "lz4", feature = "zstd")), allow(dead_code))]

use bytes::Bytes;

/// The codec byte of a record stored as is.
pub(crate) const AS_IS: u8 = 0;
/// LZ4 block format.
#[allow(dead_code)] // without the `lz4` feature: known, not read
pub(crate) const LZ4: u8 = 1;
/// A Zstandard frame.
#[allow(dead_code)] // without the `zstd` feature: known, not read
pub(crate) const ZSTD: u8 = 2;

#[cfg(any(feature = "lz4", feature = "zstd"))]
/// The default [`Compression::min_size`]: segments shorter than this are stored as is (2 KiB).
pub const DEFAULT_COMPRESS_MIN_SIZE: usize = 2048;

/// The Zstandard level written: 1, as fast as its level 3 on JSON and nearly as small.
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 1;

/// A compression codec for stored bodies (see [`Compression`]).
#[cfg(any(feature = "lz4", feature = "zstd"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum Codec {
    /// LZ4 (feature `lz4`): pure Rust, the fastest to decompress, about 3.5 times smaller on
    /// JSON API responses.
    #[cfg(feature = "lz4")]
    Lz4,
    /// Zstandard at level 1 (feature `zstd`): the C library, about 5 times smaller on JSON API
    /// responses, several times slower than LZ4 to decompress (still microseconds per 64 KiB).
    #[cfg(feature = "zstd")]
    Zstd,
}

#[cfg(any(feature = "lz4", feature = "zstd"))]
impl Default for Codec {
    /// [`Codec::Zstd`] when compiled in, else [`Codec::Lz4`].
    fn default() -> Self {
        #[cfg(feature = "zstd")]
        return Codec::Zstd;
        #[cfg(not(feature = "zstd"))]
        return Codec::Lz4;
    }
}

#[cfg(any(feature = "lz4", feature = "zstd"))]
impl Codec {
    fn byte(self) -> u8 {
        match self {
            #[cfg(feature = "lz4")]
            Codec::Lz4 => LZ4,
            #[cfg(feature = "zstd")]
            Codec::Zstd => ZSTD,
        }
    }
}

/// Compression of stored bodies ([`CacheLayer::compress`](crate::CacheLayer::compress)).
///
/// Each 64 KiB segment of a body is compressed before it is signed or encrypted, and stored
/// compressed only when that pays: segments under [`min_size`](Self::min_size) and bodies with a
/// `Content-Encoding` (already compressed by the origin) are stored as they came, and so is a
/// segment that would not shrink by an eighth (and, after a first such segment, the rest of its
/// body). Every cache reads entries written with or without compression.
///
/// With [`encrypt`](crate::CacheLayer::encrypt), bodies are not compressed unless
/// [`when_encrypted`](Self::when_encrypted) says so: a compressed length tells whoever reads the
/// store something about the content (docs/security.md, "Compression and encryption").
#[cfg(any(feature = "lz4", feature = "zstd"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    pub(crate) codec: Codec,
    pub(crate) min_size: usize,
    pub(crate) when_encrypted: bool,
}

#[cfg(any(feature = "lz4", feature = "zstd"))]
impl Default for Compression {
    fn default() -> Self {
        Self::new(Codec::default())
    }
}

#[cfg(any(feature = "lz4", feature = "zstd"))]
impl Compression {
    /// Compression with `codec`, segments of [`DEFAULT_COMPRESS_MIN_SIZE`] bytes or more, and
    /// not when encrypting.
    pub fn new(codec: Codec) -> Self {
        Self {
            codec,
            min_size: DEFAULT_COMPRESS_MIN_SIZE,
            when_encrypted: false,
        }
    }

    /// Segments (and so bodies) shorter than this are stored as is. Default:
    /// [`DEFAULT_COMPRESS_MIN_SIZE`] (2 KiB).
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }

    /// Compresses encrypted entries too. Default: `false`, because the length of a compressed
    /// body tells a reader of the store how much of it repeats: an attacker who can both put
    /// chosen text into a response and read the store's entry sizes can guess a secret in the
    /// same response a byte at a time (the BREACH and CRIME attacks). Turn it on only when
    /// nobody who can read the store can also influence what the origin returns.
    pub fn when_encrypted(mut self, compress: bool) -> Self {
        self.when_encrypted = compress;
        self
    }
}

/// What a [`Sealing`](super::Sealing) compresses with: the codec byte and the threshold, as
/// plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) codec: u8,
    pub(crate) min_size: usize,
    pub(crate) when_encrypted: bool,
}

#[cfg(any(feature = "lz4", feature = "zstd"))]
impl From<Compression> for Settings {
    fn from(c: Compression) -> Self {
        Settings {
            codec: c.codec.byte(),
            min_size: c.min_size,
            when_encrypted: c.when_encrypted,
        }
    }
}

/// Whether a response with these fields is worth compressing: not when its body is already
/// encoded (`Content-Encoding` other than `identity`, RFC 9110 §8.4).
pub(crate) fn worth_trying(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .all(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case(b"identity"))
        })
}

/// Compresses the segments of one body, and counts what it did.
#[derive(Debug)]
pub(crate) struct Compressor {
    settings: Settings,
    /// A segment did not shrink: the rest of the body is stored as is too.
    gave_up: bool,
    /// Body bytes seen, and the bytes they were stored as.
    pub(crate) before: u64,
    pub(crate) after: u64,
}

impl Compressor {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings,
            gave_up: false,
            before: 0,
            after: 0,
        }
    }

    /// A head record's data (`data`: the encoded head, and the body when it is sealed in the
    /// head) compressed when that saves at least an eighth of it, framed for the reader: the
    /// plain length (u32, big endian), then the compressed bytes. `None`: store it as is. Heads
    /// repeat much (header names, dates, URLs), and for small bodies they are most of an entry.
    pub(crate) fn record(&mut self, data: &[u8]) -> Option<(u8, Vec<u8>)> {
        let len = data.len();
        self.before += len as u64;
        let packed = (len >= self.settings.min_size.max(1))
            .then(|| compress(self.settings.codec, data))
            .flatten()
            .filter(|out| out.len() + 4 <= len - len / 8)
            .and_then(|out| {
                let plain = u32::try_from(len).ok()?;
                let mut framed = Vec::with_capacity(4 + out.len());
                framed.extend_from_slice(&plain.to_be_bytes());
                framed.extend_from_slice(&out);
                Some(framed)
            });
        self.after += packed.as_ref().map_or(len, Vec::len) as u64;
        packed.map(|p| (self.settings.codec, p))
    }

    /// Whether a segment of `len` bytes is stored as is, without trying.
    pub(crate) fn skips(&self, len: usize) -> bool {
        self.gave_up || len < self.settings.min_size.max(1)
    }

    /// The segment `seg` (`len` bytes) compressed, with its codec byte, when that saves at
    /// least an eighth of it; `None`: store it as is.
    pub(crate) fn segment(&mut self, seg: &[Bytes], len: usize) -> Option<(u8, Bytes)> {
        self.before += len as u64;
        let packed = if self.skips(len) {
            None
        } else {
            let joined;
            let input: &[u8] = match seg {
                [one] => one,
                _ => {
                    joined = seg.concat();
                    &joined
                }
            };
            match compress(self.settings.codec, input) {
                // Copied out: the encoder's buffer has room for the worst case (over 64 KiB),
                // which a store would otherwise keep alive behind a few KiB.
                Some(out) if out.len() <= len - len / 8 => {
                    Some((self.settings.codec, Bytes::copy_from_slice(&out)))
                }
                _ => {
                    self.gave_up = true;
                    None
                }
            }
        };
        self.after += packed.as_ref().map_or(len, |(_, p)| p.len()) as u64;
        packed
    }
}

// A context per thread, each reused (creating one allocates a few hundred KiB of tables).
#[cfg(feature = "zstd")]
thread_local! {
    static ZSTD_C: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static ZSTD_D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `data` compressed with `codec`; `None` for a codec not compiled in, or an encoder error.
fn compress(codec: u8, data: &[u8]) -> Option<Vec<u8>> {
    let _ = data;
    match codec {
        #[cfg(feature = "lz4")]
        LZ4 => Some(lz4_flex::block::compress(data)),
        #[cfg(feature = "zstd")]
        ZSTD => ZSTD_C.with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            if c.is_none() {
                *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
            }
            c.as_mut()?.compress(data).ok()
        }),
        _ => None,
    }
}

#[cfg(test)]
thread_local! {
    /// How many records this thread decompressed (or tried to).
    pub(crate) static DECOMPRESSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A verified head record's data as the head decoder reads it: as it is (codec 0), or
/// decompressed. A compressed one is its plain length (u32, big endian), then the compressed
/// bytes ([`Compressor::record`]); the length must be within `bound` (and not 0) before anything
/// is decompressed, and the bytes must decompress into exactly that many. `None` otherwise.
pub(crate) fn head_record(codec: u8, data: Bytes, bound: usize) -> Option<Bytes> {
    if codec == AS_IS {
        return Some(data);
    }
    let n = data.get(..4)?;
    let plain = u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize;
    if plain == 0 || plain > bound {
        return None;
    }
    decompress(codec, &[data.slice(4..)], plain)
}

/// Whether records of `codec` can be read by this build.
pub(crate) fn known(codec: u8) -> bool {
    match codec {
        AS_IS => true,
        #[cfg(feature = "lz4")]
        LZ4 => true,
        #[cfg(feature = "zstd")]
        ZSTD => true,
        _ => false,
    }
}

/// A verified record's data of `codec` decompressed into exactly `len` bytes; `None` when it
/// does not decompress, or to another length (nothing beyond `len` bytes is ever produced).
pub(crate) fn decompress(codec: u8, data: &[Bytes], len: usize) -> Option<Bytes> {
    #[cfg(test)]
    DECOMPRESSED.with(|n| n.set(n.get() + 1));
    let joined;
    let input: &[u8] = match data {
        [one] => one,
        _ => {
            joined = data.concat();
            &joined
        }
    };
    let _ = (input, len);
    match codec {
        #[cfg(feature = "lz4")]
        LZ4 => {
            let mut out = vec![0u8; len];
            match lz4_flex::block::decompress_into(input, &mut out) {
                Ok(n) if n == len => Some(out.into()),
                _ => None,
            }
        }
        #[cfg(feature = "zstd")]
        ZSTD => {
            // `len` is the capacity: a frame that would decompress to more is an error.
            let out = ZSTD_D.with(|d| {
                let mut d = d.try_borrow_mut().ok()?;
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                d.as_mut()?.decompress(input, len).ok()
            })?;
            (out.len() == len).then(|| out.into())
        }
        _ => None,
    }
}
