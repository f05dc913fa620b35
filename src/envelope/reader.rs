//! Opening a format 4 entry as its bytes arrive: the header, then the head record (verified on
//! its own, before anything of the body is read), then the body a segment at a time, each
//! verified before a byte of it is released.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::record::{meta, Prover, ALG_AES_256_GCM, GCM_TAG, NONCE_LEN};
use super::{OpenError, SEGMENT};
use crate::entry::EntryHead;
use crate::error::{BadSignature, BadSignatureReason};
use crate::CacheKey;

/// Bytes read and not yet consumed, as the buffers they came in.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pending {
    bufs: VecDeque<Bytes>,
    len: usize,
}

impl Pending {
    pub(crate) fn push(&mut self, buf: Bytes) {
        if !buf.is_empty() {
            self.len += buf.len();
            self.bufs.push_back(buf);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `out.len()` bytes starting `at` bytes in; `false` when there are not that many.
    pub(crate) fn peek(&self, mut at: usize, out: &mut [u8]) -> bool {
        if at.saturating_add(out.len()) > self.len {
            return false;
        }
        let mut filled = 0;
        for buf in &self.bufs {
            if at >= buf.len() {
                at -= buf.len();
                continue;
            }
            let n = (buf.len() - at).min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&buf[at..at + n]);
            filled += n;
            at = 0;
            if filled == out.len() {
                break;
            }
        }
        filled == out.len()
    }

    /// Removes the first `n` bytes (at most [`len`](Self::len)) as slices of their buffers.
    pub(crate) fn take(&mut self, mut n: usize) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(2);
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.len -= front.len();
                if let Some(buf) = self.bufs.pop_front() {
                    out.push(buf);
                }
            } else {
                out.push(front.split_to(n));
                self.len -= n;
                n = 0;
            }
        }
        out
    }

    /// Drops the first `n` bytes (at most [`len`](Self::len)).
    pub(crate) fn skip(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.len -= front.len();
                self.bufs.pop_front();
            } else {
                bytes::Buf::advance(front, n);
                self.len -= n;
                n = 0;
            }
        }
    }

    /// Removes the first `n` bytes as one buffer: a slice when they lie in one, else a copy.
    pub(crate) fn take_one(&mut self, n: usize) -> Bytes {
        if let Some(front) = self.bufs.front_mut() {
            if front.len() > n {
                self.len -= n;
                return front.split_to(n);
            }
            if front.len() == n {
                self.len -= n;
                return self.bufs.pop_front().unwrap_or_default();
            }
        }
        let mut all = BytesMut::with_capacity(n);
        for part in self.take(n) {
            all.extend_from_slice(&part);
        }
        all.freeze()
    }

    /// Removes the first `n` bytes into a buffer of their own (a copy, to decrypt in place).
    pub(crate) fn take_vec(&mut self, n: usize) -> Vec<u8> {
        let mut all = Vec::with_capacity(n);
        while all.len() < n {
            let Some(front) = self.bufs.front() else {
                break;
            };
            let k = front.len().min(n - all.len());
            all.extend_from_slice(&front[..k]);
            self.skip(k);
        }
        all
    }
}

/// Where reading an envelope header stands.
pub(crate) enum HeaderStep {
    /// More bytes are needed.
    More,
    /// Not an envelope of this crate.
    NotEnvelope,
    /// An envelope of another format version.
    Version(u8),
    /// The header is complete (not consumed yet): its bytes, its algorithm, and where its key
    /// id and cache key lie in it.
    Ready {
        header: Bytes,
        alg: u8,
        key_id: std::ops::Range<usize>,
        cache_key: std::ops::Range<usize>,
    },
}

/// Reads the envelope header at the start of `p` (without consuming it): a slice of the first
/// buffer when it holds the header (a hit's usual case: no copy, no allocation).
pub(crate) fn header(p: &Pending) -> HeaderStep {
    let mut fixed = [0u8; 9];
    if !p.peek(0, &mut fixed[..7]) {
        // Too short to say: more, unless what is there already is not an envelope.
        let mut start = [0u8; 4];
        let n = p.len().min(4);
        if p.peek(0, &mut start[..n]) && start[..n] != super::MAGIC[..n] {
            return HeaderStep::NotEnvelope;
        }
        return HeaderStep::More;
    }
    if &fixed[..4] != super::MAGIC {
        return HeaderStep::NotEnvelope;
    }
    if fixed[4] != super::FORMAT_V4 {
        return HeaderStep::Version(fixed[4]);
    }
    let id_len = usize::from(fixed[6]);
    let mut klen = [0u8; 2];
    if !p.peek(7 + id_len, &mut klen) {
        return HeaderStep::More;
    }
    let klen = usize::from(u16::from_be_bytes(klen));
    let len = 9 + id_len + klen + super::ENTRY_ID_LEN;
    if p.len() < len {
        return HeaderStep::More;
    }
    let header = match p.bufs.front() {
        Some(front) if front.len() >= len => front.slice(..len),
        _ => {
            let mut copy = vec![0u8; len];
            p.peek(0, &mut copy);
            Bytes::from(copy)
        }
    };
    HeaderStep::Ready {
        header,
        alg: fixed[5],
        key_id: 7..7 + id_len,
        cache_key: 9 + id_len..9 + id_len + klen,
    }
}

/// The framing before a record's data: its stored length and codec.
pub(crate) fn framing(p: &Pending, at: usize) -> Option<(usize, u8)> {
    let mut f = [0u8; 5];
    if !p.peek(at, &mut f) {
        return None;
    }
    let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
    Some((usize::try_from(len).unwrap_or(usize::MAX), f[4]))
}

/// A step of reading a body.
pub(crate) enum Step {
    /// More bytes are needed.
    More,
    /// A verified segment (its bytes, as slices of what was read when it was not encrypted).
    Segment(Vec<Bytes>),
    /// The body has ended (every segment its head announced was read).
    End,
}

/// Reads the body of an entry whose head was verified: a segment at a time.
#[derive(Clone)]
pub(crate) struct BodyReader {
    pub(super) prover: Prover,
    pub(super) alg: u8,
    pub(super) tag_len: usize,
    pub(super) index: u32,
    /// A small body sealed in the head record (verified with it): the whole body, no segments.
    pub(super) inline: Option<Bytes>,
    pub(super) remaining: u64,
    pub(super) len: u64,
    pub(super) key: CacheKey,
    pub(super) keyed: bool,
}

impl std::fmt::Debug for BodyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyReader")
            .field("index", &self.index)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl BodyReader {
    /// The body's length, as its verified head says.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The entry was cut short, or has bytes after its last segment.
    pub(crate) fn malformed(&self) -> OpenError {
        self.bad(BadSignatureReason::Malformed, "entry cut short or extended")
    }

    fn bad(&self, reason: BadSignatureReason, unkeyed: &'static str) -> OpenError {
        if self.keyed {
            OpenError::BadSignature(BadSignature::new(self.key.clone(), reason))
        } else {
            OpenError::Unusable(unkeyed)
        }
    }

    /// The next segment from `p`, verified; `Step::More` when `p` does not hold it whole yet.
    pub(crate) fn next(&mut self, p: &mut Pending) -> Result<Step, OpenError> {
        if let Some(body) = self.inline.take() {
            self.remaining = 0;
            return Ok(Step::Segment(vec![body]));
        }
        if self.remaining == 0 {
            return Ok(Step::End);
        }
        let Some((len, codec)) = framing(p, 0) else {
            return Ok(Step::More);
        };
        let plain = usize::try_from(self.remaining.min(SEGMENT as u64)).unwrap_or(SEGMENT);
        let stored = if self.alg == ALG_AES_256_GCM {
            NONCE_LEN + plain + GCM_TAG
        } else {
            plain
        };
        // Compressed data is stored only when shorter than the segment (codec.rs). A codec this
        // build does not know may be a newer release's, which this one cannot hold to that: it
        // is bounded by the plain record's length, and told from a changed codec byte by the
        // proof below.
        let known = super::codec::known(codec);
        if (codec == 0 && len != stored) || (codec != 0 && known && len >= stored) || len > stored {
            return Err(self.bad(BadSignatureReason::Malformed, "segment of the wrong length"));
        }
        if p.len() < 5 + len + self.tag_len {
            return Ok(Step::More);
        }
        let m = meta(self.index, len as u32, codec);
        p.skip(5);
        let segment = if self.alg == ALG_AES_256_GCM {
            let mut record = p.take_vec(len);
            let Some(range) = self.prover.open(&m, &mut record) else {
                return Err(self.bad(BadSignatureReason::Mismatch, ""));
            };
            vec![Bytes::from(record).slice(range)]
        } else {
            let data = p.take(len);
            let tag = p.take_one(self.tag_len);
            if !self.prover.verify(&m, data.iter().map(|d| &d[..]), &tag) {
                return Err(self.bad(BadSignatureReason::Mismatch, "checksum mismatch"));
            }
            data
        };
        // The codec byte is under the proof (`meta`): only a segment that verifies can be a newer
        // writer's, not ours to judge; a codec byte changed without the key failed above, as a
        // change anywhere does (counted as tampering, not taken for a newer release).
        if !known {
            return Err(OpenError::Unusable(super::NEWER_CODEC));
        }
        // Verified: now, and only now, decompressed, into at most the segment's length.
        let segment = match codec {
            0 => segment,
            _ => match super::codec::decompress(codec, &segment, plain) {
                Some(plain) => vec![plain],
                None => return Err(self.bad(BadSignatureReason::Malformed, "does not decompress")),
            },
        };
        self.index = self.index.wrapping_add(1);
        self.remaining -= plain as u64;
        Ok(Step::Segment(segment))
    }
}

/// A head opened: what a hit needs before any of the body.
pub(crate) struct Opened {
    pub(crate) head: EntryHead,
    pub(crate) trailers: Option<HeaderMap>,
    pub(crate) body: BodyReader,
    /// Verified, but less protected than this reader requires (see `DOWNGRADED`).
    pub(crate) downgraded: bool,
}
