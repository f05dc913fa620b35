//! Opening an entry read from a store: the header, then the head record verified (or
//! decrypted) before anything is decoded, then the body's segments (`reader.rs`); and
//! `VerifiedBlobs` (`verified.rs`), which lets a memory store's blob that was opened once give
//! its entry again on later hits, without being proven or decoded again.

use bytes::Bytes;

use super::reader::{self, BodyReader, Opened, Pending, Step};
use super::record::{self, Prover, ALG_AES_256_GCM, ALG_BLAKE3, ALG_CRC32, ALG_HMAC_SHA256};
use super::verified::VerifiedBlobs;
use super::{codec, wire, Envelope, Mode, OpenError};
use super::{
    DOWNGRADED, FORMAT_V4, MAX_HEAD_RECORD, NEWER_ALGORITHM, NEWER_CODEC, NEWER_FORMAT, NO_KEY,
    OLDER_FORMAT, TOO_LARGE,
};
use crate::entry::Entry;
use crate::error::{BadSignature, BadSignatureReason};
use crate::CacheKey;

impl Envelope {
    /// Verifies (or decrypts), then decodes, a blob read from `key`, whole: the head, then
    /// every segment, before anything is returned.
    pub(crate) fn open(&self, key: &CacheKey, blob: Bytes) -> Result<Entry, OpenError> {
        self.open_parts(key, std::iter::once(blob))
    }

    /// [`open`](Self::open) of a whole blob from a store that keeps blobs in this process's
    /// memory (`MemoryStore`): a blob `verified` holds as opened under `key` (the very buffer
    /// this envelope opened before: see `verified.rs`) gives a copy of the entry opened from it,
    /// without proving or decoding it again; any other is opened as always, and remembered once
    /// it opened.
    pub(crate) fn open_remembered(
        &self,
        key: &CacheKey,
        blob: Bytes,
        verified: &VerifiedBlobs,
    ) -> Result<Entry, OpenError> {
        if let Some(entry) = verified.opened(key, &blob) {
            return Ok(entry);
        }
        // Kept only once it opened (one more reference to the blob, on a miss of the memo).
        let entry = self.open(key, blob.clone())?;
        verified.remember(key, blob, &entry);
        Ok(entry)
    }

    /// [`open`](Self::open) of a blob given as the buffers it was stored as.
    pub(crate) fn open_parts(
        &self,
        key: &CacheKey,
        parts: impl IntoIterator<Item = Bytes>,
    ) -> Result<Entry, OpenError> {
        let mut p = Pending::default();
        for part in parts {
            p.push(part);
        }
        // Bounded reads: a store writer must not make the client spend CPU or memory on a huge
        // blob. Checked before any MAC, decryption or decoding.
        if p.len() > self.max_blob {
            return Err(OpenError::Unusable(TOO_LARGE));
        }
        let Some(Opened {
            head,
            trailers,
            mut body,
            downgraded,
        }) = self.open_head(key, &mut p)?
        else {
            return Err(self.truncated(key));
        };
        let mut segments = Vec::new();
        loop {
            match body.next(&mut p)? {
                Step::Segment(mut s) => segments.append(&mut s),
                Step::End => break,
                Step::More => return Err(self.truncated(key)),
            }
        }
        if p.len() != 0 {
            // Bytes after the last segment the head announced.
            return Err(self.truncated(key));
        }
        if downgraded {
            return Err(OpenError::Unusable(DOWNGRADED));
        }
        Ok(Entry {
            head,
            body: crate::entry::EntryBody::parts(segments),
            trailers,
        })
    }

    /// A blob that ends before what its framing announces (or goes on after it): tampering
    /// when entries are keyed, as any other change is; unusable otherwise.
    pub(crate) fn truncated(&self, key: &CacheKey) -> OpenError {
        match self.keys {
            Some(_) => OpenError::BadSignature(BadSignature::new(
                key.clone(),
                BadSignatureReason::Malformed,
            )),
            None => OpenError::Unusable("not an envelope"),
        }
    }

    /// Reads the header and the head record from the start of `p`, verifies the head and
    /// decodes it: `Ok(None)` while `p` does not hold them whole. What is consumed of `p` is the
    /// header and the head record; the body's segments follow, for [`BodyReader::next`].
    pub(crate) fn open_head(
        &self,
        key: &CacheKey,
        p: &mut Pending,
    ) -> Result<Option<Opened>, OpenError> {
        let bad = |reason| OpenError::BadSignature(BadSignature::new(key.clone(), reason));
        let (header, alg, key_id, cache_key) = match reader::header(p) {
            reader::HeaderStep::More => return Ok(None),
            reader::HeaderStep::NotEnvelope => {
                return Err(match self.keys {
                    Some(_) => bad(BadSignatureReason::Malformed),
                    None => OpenError::Unusable("not an envelope"),
                })
            }
            reader::HeaderStep::Version(v) if v < FORMAT_V4 => {
                return Err(OpenError::Unusable(OLDER_FORMAT))
            }
            // Possibly written by a newer release sharing the store: not ours to judge.
            reader::HeaderStep::Version(_) => return Err(OpenError::Unusable(NEWER_FORMAT)),
            reader::HeaderStep::Ready {
                header,
                alg,
                key_id,
                cache_key,
            } => (header, alg, key_id, cache_key),
        };
        let len = header.len();
        let (key_id, cache_key) = (&header[key_id], &header[cache_key]);
        let Some(tag_len) = record::tag_len(alg) else {
            return Err(OpenError::Unusable(NEWER_ALGORITHM));
        };
        let found = match (&self.keys, alg) {
            (None, ALG_CRC32) => None,
            (None, _) => return Err(OpenError::Unusable(NO_KEY)),
            (Some(_), ALG_CRC32) => return Err(bad(BadSignatureReason::Unsigned)),
            (Some(ring), _) => match ring.find(key_id) {
                Some(k) => Some(k),
                None => return Err(bad(BadSignatureReason::UnknownKey)),
            },
        };
        // The embedded cache key is checked once verified; one that cannot be this key or its
        // variant is refused without reading further.
        let own_key = cache_key == key.as_str().as_bytes();
        let wrong_key = || match self.keys {
            Some(_) => bad(BadSignatureReason::WrongKey),
            None => OpenError::Unusable("entry belongs to another key"),
        };
        if !own_key && !key.may_be_variant_of(cache_key) {
            return Err(wrong_key());
        }
        let Some((head_len, codec)) = reader::framing(p, len) else {
            return Ok(None);
        };
        if head_len > MAX_HEAD_RECORD.min(self.max_blob) {
            return Err(match self.keys {
                Some(_) => bad(BadSignatureReason::Malformed),
                None => OpenError::Unusable("head record too long"),
            });
        }
        if p.len() < len + 5 + head_len + tag_len {
            return Ok(None);
        }
        p.skip(len);
        let prover = match (alg, found) {
            (ALG_AES_256_GCM, Some(k)) => Prover::aes(&k.aead, header.clone()),
            (ALG_BLAKE3, Some(k)) => Prover::blake3(&k.blake3, &header),
            (ALG_HMAC_SHA256, Some(k)) => Prover::hmac(&k.mac, &header),
            _ => Prover::crc(&header),
        };
        p.skip(5);
        let m = record::meta(0, head_len as u32, codec);
        // The head in a buffer of this reader's own: header values are slices of it, counted
        // here and not on a blob a memory store shares between threads.
        let mut head = p.take_vec(head_len);
        let head = if alg == ALG_AES_256_GCM {
            let Some(range) = prover.open(&m, &mut head) else {
                return Err(bad(BadSignatureReason::Mismatch));
            };
            Bytes::from(head).slice(range)
        } else {
            let tag = p.take_one(tag_len);
            // Constant-time verification before anything is decoded.
            if !prover.verify(&m, [&head[..]], &tag) {
                return Err(match found {
                    Some(_) => bad(BadSignatureReason::Mismatch),
                    None => OpenError::Unusable("checksum mismatch"),
                });
            }
            Bytes::from(head)
        };
        // Verified first: a codec byte changed without the key is a failed proof, as any change
        // is; only one that verifies can be a newer release's codec (a miss, not ours to judge).
        if !codec::known(codec) {
            return Err(OpenError::Unusable(NEWER_CODEC));
        }
        // Verified: now decompressed, if it is compressed, within a head record's bound.
        let Some(head) = codec::head_record(codec, head, MAX_HEAD_RECORD.min(self.max_blob)) else {
            return Err(match found {
                Some(_) => bad(BadSignatureReason::Malformed),
                None => OpenError::Unusable("head record does not decompress"),
            });
        };
        let (decoded, body_len, trailers, end) =
            wire::decode_head(&head).ok_or(OpenError::Unusable("payload does not decode"))?;
        // A small body is in the head record, after the encoded head: all of it, or none of it
        // (then its segments follow). Anything else is not what a writer of this format made.
        let inline = match head.len() - end {
            0 => None,
            n if n as u64 == body_len => Some(head.slice(end..)),
            _ => return Err(OpenError::Unusable("payload does not decode")),
        };
        let head = decoded;
        // Authenticated now: the embedded cache key is the one its writer sealed it for.
        if !own_key && !key.is_variant_of(cache_key, &head) {
            return Err(wrong_key());
        }
        if body_len > self.max_blob as u64 {
            return Err(OpenError::Unusable(TOO_LARGE));
        }
        Ok(Some(Opened {
            head,
            trailers,
            // Signed but not encrypted, by a key of this ring: written by this deployment before
            // encryption was turned on; not served (nothing less than encrypted is), but a miss,
            // replaced by an encrypted entry, rather than an error on every request. Said once
            // the rest is verified too (`open_parts`), so that a forged one is still refused.
            downgraded: self.mode == Mode::Encrypted && alg != ALG_AES_256_GCM,
            body: BodyReader {
                prover,
                alg,
                tag_len,
                index: 1,
                inline,
                remaining: body_len,
                len: body_len,
                key: key.clone(),
                keyed: found.is_some(),
            },
        }))
    }
}
