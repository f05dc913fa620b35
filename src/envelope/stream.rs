//! Sealing while the body streams by: each 64 KiB segment is proven (MAC, checksum or AES-GCM)
//! as soon as it is complete, so that the end of a body costs a few microseconds whatever its
//! size, and the entry is handed to the store as a list of buffers: the origin's own chunks
//! between the framing, never concatenated (encrypted segments are, necessarily, new buffers).
//!
//! The head is sealed last, once the body's length and trailers are known, and goes first in the
//! entry: a reader verifies it, and learns how many segments follow, before reading any of them.
//! Segments are bound to their entry (the header holds a random entry id), to their place (the
//! index) and to their length; the head says how many there are, so none can be reordered, moved
//! between entries, dropped from the end or added (see `record.rs` and docs/security.md).

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::codec::Compressor;
use super::record::{meta, Prover, ALG_HMAC_SHA256, GCM_TAG, NONCE_LEN};
use super::{wire, SealError, ALG_AT, MAC_AUTO_BELOW, SEGMENT};

/// An entry smaller than this is handed to the store as one buffer (copying it costs less than
/// keeping its parts).
const ONE_BUFFER_BELOW: usize = 16 * 1024;

/// A body shorter than this (one segment) is sealed in the head record rather than a segment
/// record of its own.
const INLINE_BELOW: usize = 16 * 1024;

/// Chunks smaller than this are copied into a buffer of the segment's own rather than kept:
/// an origin that sends a byte at a time makes a segment of a few buffers, not 65,536.
const COPY_BELOW: usize = 4096;

/// A finished entry: one buffer (a small entry), or its parts in order.
pub(crate) enum Sealed {
    One(Bytes),
    Parts(Vec<Bytes>),
}

/// An envelope being written: header, then the body as it arrives, then the head.
pub(crate) struct Sealing {
    header: Vec<u8>,
    prover: Prover,
    encrypted: bool,
    /// The head's fields known when the response started.
    head: Vec<u8>,
    /// Body records so far (framing, data and tags), in order.
    records: Vec<Bytes>,
    /// Framing and tag bytes not yet made a part of `records`: slices of one buffer of a few
    /// KiB, not an allocation each.
    small: BytesMut,
    /// Where encrypted records are written: slices of buffers of 1 MiB, not an allocation each
    /// (thousands of 64 KiB allocations between the origin's freed chunks fragment the heap).
    sealed: BytesMut,
    /// The segment being filled.
    seg: Vec<Bytes>,
    /// Small chunks of the segment being filled, copied together (see [`COPY_BELOW`]).
    copied: bytes::BytesMut,
    seg_len: usize,
    index: u32,
    body_len: u64,
    /// Compresses segments before they are proven (`None`: stored as is).
    compressor: Option<Compressor>,
    /// The header and head record, when [`end`](Self::end) sealed them.
    head_sealed: Option<BytesMut>,
    /// `Mac::Auto` without an announced length: the HMAC key that proves the entry instead of
    /// BLAKE3 if the body turns out small (see [`hmac_if_small`](Self::hmac_if_small)).
    hmac_if_small: Option<ring::hmac::Key>,
}

impl Sealing {
    pub(super) fn new(header: Vec<u8>, prover: Prover, encrypted: bool, head: Vec<u8>) -> Self {
        Self {
            header,
            prover,
            encrypted,
            head,
            records: Vec::new(),
            small: BytesMut::new(),
            sealed: BytesMut::new(),
            seg: Vec::new(),
            copied: bytes::BytesMut::new(),
            seg_len: 0,
            index: 1,
            body_len: 0,
            compressor: None,
            head_sealed: None,
            hmac_if_small: None,
        }
    }

    /// With `Mac::Auto` and no announced length, the entry starts with BLAKE3 (large bodies);
    /// one that ends at [`MAC_AUTO_BELOW`] bytes or less is proven with HMAC-SHA256 under `key`
    /// instead, as an announced small body is. Nothing is proven before the body has passed
    /// 64 KiB (the first segment), so the header's algorithm byte and the prover can still
    /// change when the head is sealed.
    pub(super) fn hmac_if_small(mut self, key: Option<ring::hmac::Key>) -> Self {
        self.hmac_if_small = key;
        self
    }

    /// Compresses the body's segments with `compressor` (see `codec.rs`).
    pub(super) fn compress_with(mut self, compressor: Option<Compressor>) -> Self {
        self.compressor = compressor;
        self
    }

    /// Ends the body with these trailers and seals the head now (what [`finish`](Self::finish)
    /// would), so that [`compression`](Self::compression) counts every record; `finish` then
    /// only hands the entry out.
    pub(crate) fn end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), SealError> {
        if self.head_sealed.is_none() {
            let head = self.seal_head_now(trailers)?;
            self.head_sealed = Some(head);
        }
        Ok(())
    }

    /// Whether the body is sealed in the head record: it is one segment under [`INLINE_BELOW`].
    fn inlines(&self) -> bool {
        self.index == 1 && self.seg_len > 0 && self.seg_len < INLINE_BELOW
    }

    /// Body bytes sealed so far with compression configured, and the bytes they are stored as
    /// (`None`: not compressing this body).
    pub(crate) fn compression(&self) -> Option<(u64, u64)> {
        self.compressor.as_ref().map(|c| (c.before, c.after))
    }

    /// Appends body bytes: kept as slices of `data` (no copy), and proven a segment at a time.
    pub(crate) fn append(&mut self, data: &Bytes) -> Result<(), SealError> {
        let mut at = 0;
        while at < data.len() {
            let n = (SEGMENT - self.seg_len).min(data.len() - at);
            // The body's first piece is kept whatever its size while it is the only one (a
            // small body in one piece is then copied once, into the head record); small pieces
            // are otherwise copied together: a small slice would keep the origin's whole read
            // buffer alive for the life of the entry. So a small first piece is copied too as
            // soon as another follows.
            let first = self.index == 1 && self.seg.is_empty() && self.copied.is_empty();
            if self.index == 1 && self.seg.len() == 1 && self.seg[0].len() < COPY_BELOW {
                let kept = self.seg.pop().unwrap_or_default();
                self.copied.reserve(COPY_BELOW);
                self.copied.extend_from_slice(&kept);
            }
            if n < COPY_BELOW && !first {
                if self.copied.is_empty() {
                    self.copied.reserve(COPY_BELOW);
                }
                self.copied.extend_from_slice(&data[at..at + n]);
                if self.copied.len() >= COPY_BELOW {
                    self.flush_copied();
                }
            } else {
                self.flush_copied();
                self.seg.push(data.slice(at..at + n));
            }
            self.seg_len += n;
            at += n;
            if self.seg_len == SEGMENT {
                self.close_segment()?;
            }
        }
        self.body_len += data.len() as u64;
        Ok(())
    }

    /// Appends the segment being filled (a body sealed in the head record) to `out`.
    fn move_inline_body(&mut self, out: &mut Vec<u8>) {
        self.flush_copied();
        for chunk in self.seg.drain(..) {
            out.extend_from_slice(&chunk);
        }
    }

    fn flush_copied(&mut self) {
        if !self.copied.is_empty() {
            self.seg.push(self.copied.split().freeze());
        }
    }

    /// Proves the segment being filled and moves it to `records`.
    fn close_segment(&mut self) -> Result<(), SealError> {
        self.flush_copied();
        // Compressed before it is proven: the proof covers the stored bytes and the codec.
        let mut codec = 0;
        if let Some((c, packed)) = self
            .compressor
            .as_mut()
            .and_then(|z| z.segment(&self.seg, self.seg_len))
        {
            codec = c;
            self.seg.clear();
            self.seg.push(packed);
        }
        let plain = self.seg.iter().map(Bytes::len).sum::<usize>();
        if self.encrypted {
            let stored = NONCE_LEN + plain + GCM_TAG;
            if self.sealed.capacity() < 5 + stored {
                self.sealed
                    .reserve((5 + stored).max(16 * (5 + SEGMENT + NONCE_LEN + GCM_TAG)));
            }
            self.sealed
                .extend_from_slice(&(stored as u32).to_be_bytes());
            self.sealed.extend_from_slice(&[codec]);
            self.prover
                .seal(self.index, codec, self.seg.drain(..), &mut self.sealed)?;
            self.flush_small();
            self.records.push(self.sealed.split().freeze());
        } else {
            self.reserve_small();
            let m = meta(self.index, plain as u32, codec);
            let tag = self
                .prover
                .tag(&m, self.seg.iter().map(|s| &s[..]))
                .ok_or(SealError("no tag"))?;
            self.small.extend_from_slice(&(plain as u32).to_be_bytes());
            self.small.extend_from_slice(&[codec]);
            self.flush_small();
            self.records.append(&mut self.seg);
            self.small.extend_from_slice(tag.as_ref());
        }
        self.seg_len = 0;
        self.index = self
            .index
            .checked_add(1)
            .ok_or(SealError("too many segments"))?;
        Ok(())
    }

    fn flush_small(&mut self) {
        if !self.small.is_empty() {
            self.records.push(self.small.split().freeze());
        }
    }

    /// Room in `small` for a record's framing and tag: one buffer of a few KiB for many records,
    /// taken when the first segment closes (an entry with no segment record takes none).
    fn reserve_small(&mut self) {
        if self.small.capacity() - self.small.len() < 64 {
            self.small.reserve(4096);
        }
    }

    /// The body records closed since the last call, in order (a streamed write hands them to
    /// the store as they are sealed; [`finish_split`](Self::finish_split) gives the rest).
    pub(crate) fn take_records(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.records)
    }

    /// Ends the body with these trailers, seals the head: the finished entry, in parts (one
    /// buffer when small).
    #[cfg(test)]
    pub(crate) fn finish(self, trailers: Option<&HeaderMap>) -> Result<Vec<Bytes>, SealError> {
        Ok(match self.finish_sealed(trailers)? {
            Sealed::One(one) => vec![one],
            Sealed::Parts(parts) => parts,
        })
    }

    /// [`finish`](Self::finish), a small entry's one buffer not put in a `Vec` (one allocation
    /// less per stored miss).
    pub(crate) fn finish_sealed(
        mut self,
        trailers: Option<&HeaderMap>,
    ) -> Result<Sealed, SealError> {
        let mut first = self.seal_head(trailers)?;
        let total = first.len() + self.records.iter().map(Bytes::len).sum::<usize>();
        if total < ONE_BUFFER_BELOW {
            first.reserve(total - first.len());
            for r in &self.records {
                first.extend_from_slice(r);
            }
            return Ok(Sealed::One(first.freeze()));
        }
        let mut parts = Vec::with_capacity(1 + self.records.len());
        parts.push(first.freeze());
        parts.append(&mut self.records);
        Ok(Sealed::Parts(parts))
    }

    /// [`finish`](Self::finish) for a streamed write: the entry's prefix (header and head, its
    /// first bytes), and the body records not yet taken (which follow those taken before).
    pub(crate) fn finish_split(
        mut self,
        trailers: Option<&HeaderMap>,
    ) -> Result<(Bytes, Vec<Bytes>), SealError> {
        let first = self.seal_head(trailers)?;
        Ok((first.freeze(), std::mem::take(&mut self.records)))
    }

    /// Closes the last segment and seals the head: the header and head record (sealed by
    /// [`end`](Self::end) already, if it was called).
    fn seal_head(&mut self, trailers: Option<&HeaderMap>) -> Result<BytesMut, SealError> {
        match self.head_sealed.take() {
            Some(head) => Ok(head),
            None => self.seal_head_now(trailers),
        }
    }

    fn seal_head_now(&mut self, trailers: Option<&HeaderMap>) -> Result<BytesMut, SealError> {
        if trailers.is_some_and(|t| t.len() > wire::MAX_FIELDS) {
            return Err(SealError("more trailer fields than an entry holds"));
        }
        if let Some(key) = self.hmac_if_small.take() {
            // Nothing is proven yet (no segment closed): all of it goes into the head record.
            if self.index == 1 && self.body_len <= MAC_AUTO_BELOW {
                self.header[ALG_AT] = ALG_HMAC_SHA256;
                self.prover = Prover::hmac(&key, &self.header);
            }
        }
        // A body that is one small segment is sealed in the head record, after the head: one
        // record and one proof for the entries most hits are of (a reader tells the two apart
        // by what follows the encoded head: the whole body, or nothing).
        let inline = self.inlines();
        if self.seg_len > 0 && !inline {
            self.close_segment()?;
        }
        self.flush_small();
        if !self.encrypted && self.compressor.is_none() {
            return self.seal_head_in_place(trailers, inline);
        }
        let mut head = std::mem::take(&mut self.head);
        if inline {
            head.reserve(self.seg_len + 64);
        }
        let mut head = wire::encode_head_end(self.body_len, trailers, head)
            .map_err(|_| SealError("could not encode"))?;
        if inline {
            self.move_inline_body(&mut head);
        }
        // Compressed as a whole, like a segment, before it is proven (see `codec.rs`).
        let mut codec = 0;
        if let Some((c, packed)) = self.compressor.as_mut().and_then(|z| z.record(&head)) {
            codec = c;
            head = packed;
        }
        let header = std::mem::take(&mut self.header);
        let mut first = BytesMut::with_capacity(header.len() + 5 + NONCE_LEN + head.len() + 32);
        first.extend_from_slice(&header);
        if self.encrypted {
            let stored = NONCE_LEN + head.len() + GCM_TAG;
            first.reserve(5 + stored);
            first.extend_from_slice(
                &u32::try_from(stored)
                    .map_err(|_| SealError("head too long"))?
                    .to_be_bytes(),
            );
            first.extend_from_slice(&[codec]);
            self.prover.seal(0, codec, [&head[..]], &mut first)?;
        } else {
            let len = u32::try_from(head.len()).map_err(|_| SealError("head too long"))?;
            let tag = self
                .prover
                .tag(&meta(0, len, codec), [&head[..]])
                .ok_or(SealError("no tag"))?;
            first.extend_from_slice(&len.to_be_bytes());
            first.extend_from_slice(&[codec]);
            first.extend_from_slice(&head);
            first.extend_from_slice(tag.as_ref());
        }
        Ok(first)
    }

    /// [`seal_head_now`](Self::seal_head_now) of a head record proven by a MAC or a checksum and
    /// not compressed (most entries): written in one buffer of its final size, where it is
    /// encoded (header, framing, head, the body if `inline`, tag), not copied after.
    fn seal_head_in_place(
        &mut self,
        trailers: Option<&HeaderMap>,
        inline: bool,
    ) -> Result<BytesMut, SealError> {
        let header = std::mem::take(&mut self.header);
        let head = std::mem::take(&mut self.head);
        let at = header.len() + 5;
        let body = if inline { self.seg_len } else { 0 };
        let mut buf = Vec::with_capacity(at + head.len() + 64 + body + 32);
        buf.extend_from_slice(&header);
        // The record's length and codec (0: as is), written once the head is encoded.
        buf.extend_from_slice(&[0; 5]);
        buf.extend_from_slice(&head);
        let mut buf = wire::encode_head_end(self.body_len, trailers, buf)
            .map_err(|_| SealError("could not encode"))?;
        if inline {
            self.move_inline_body(&mut buf);
        }
        let len = u32::try_from(buf.len() - at).map_err(|_| SealError("head too long"))?;
        let tag = self
            .prover
            .tag(&meta(0, len, 0), [&buf[at..]])
            .ok_or(SealError("no tag"))?;
        buf[at - 5..at - 1].copy_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(tag.as_ref());
        Ok(BytesMut::from(Bytes::from(buf)))
    }
}
