//! The in-memory form of a stored response, between the envelope and the policy.

use std::fmt;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode, Version};

use crate::policy::Stored;
pub(crate) use crate::policy::{Expiry, Fresh, StaleRules, VaryValue};

/// Everything stored about a response except its body.
#[derive(Debug, Clone)]
pub(crate) struct EntryHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// Response headers as received (minus the fields §3.1 says not to store).
    pub(crate) headers: HeaderMap,
    /// When the request that produced this response was sent (RFC 9111 §4.2.3 `request_time`).
    pub(crate) request_time: SystemTime,
    /// When the response was received (RFC 9111 §4.2.3 `response_time`).
    pub(crate) response_time: SystemTime,
    pub(crate) method: Method,
    /// The request URI, as sent (ignored parameters removed, redacted ones masked). Written from
    /// a `String`, so UTF-8 unless the writer was not this crate (shown lossily then); a slice of
    /// the verified blob when decoded, so a hit does not copy it.
    pub(crate) uri: bytes::Bytes,
    /// The request headers named by the response's `Vary`, as they were on the request (§4.1).
    pub(crate) vary: Vec<(HeaderName, VaryValue)>,
    /// Shared by the variants of one URL (§4.1): each variant is also stored under a key derived
    /// from this and its selecting header values. A new generation (after invalidation) makes
    /// every older variant unreachable.
    pub(crate) generation: u64,
    /// Where the freshness lifetime comes from: the headers, or the user's settings.
    pub(crate) expiry: Expiry,
    /// The freshness inputs a hit judges it by, as its writer computed them (sealed in the
    /// head: a hit does not parse `Cache-Control` and the dates again); `None` when not read
    /// from a store, or freshened since.
    pub(crate) fresh: Option<Fresh>,
}

impl EntryHead {
    /// A `200` for `http://e.com/` with no fields, received at the epoch (for tests).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        EntryHead {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            request_time: std::time::UNIX_EPOCH,
            response_time: std::time::UNIX_EPOCH,
            method: Method::GET,
            uri: Bytes::from_static(b"http://e.com/"),
            vary: Vec::new(),
            generation: 0,
            expiry: Expiry::Headers,
            fresh: None,
        }
    }

    /// What the caching rules read of it.
    pub(crate) fn stored(&self) -> Stored<'_> {
        Stored {
            status: self.status,
            headers: &self.headers,
            request_time: self.request_time,
            response_time: self.response_time,
            vary: &self.vary,
            expiry: self.expiry,
            fresh: self.fresh,
        }
    }
}

/// A decoded entry: its verified head, and its body, verified or verified as it is read.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) head: EntryHead,
    pub(crate) body: EntryBody,
    /// Trailer fields that followed the body, replayed after it on a hit.
    pub(crate) trailers: Option<HeaderMap>,
}

impl Entry {
    /// The entry with its body in verified parts if it is in memory (see
    /// [`EntryBody::into_verified_parts`]); a store's stream is left as it is.
    pub(crate) fn into_verified(self) -> Result<Entry, BoxError> {
        let Entry {
            head,
            body,
            trailers,
        } = self;
        Ok(Entry {
            head,
            body: body.into_verified_parts()?,
            trailers,
        })
    }

    /// A copy, if the body is in memory (verified, or to be verified as it is read); a body a
    /// store streams is read once.
    pub(crate) fn try_clone(&self) -> Option<Entry> {
        let body = match &self.body {
            EntryBody::Parts { parts, len } => EntryBody::Parts {
                parts: parts.clone(),
                len: *len,
            },
            EntryBody::Stream { source, len } => EntryBody::Stream {
                source: source.try_clone()?,
                len: *len,
            },
        };
        Some(Entry {
            head: self.head.clone(),
            body,
            trailers: self.trailers.clone(),
        })
    }
}

/// `crate::error::BoxError`, spelled out: `error` imports `key`, which imports this module.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the verified segments of a streamed body come from (`body::verified`): each one is
/// released only once verified; an error ends the body.
pub(crate) trait SegmentSource: Send + 'static {
    /// The next verified segment, `None` at the end.
    fn poll_segment(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>>;

    /// A copy that reads the same body from the start, if the source can make one (its bytes
    /// are in memory and none was released yet); `None` for a store's stream, read once.
    fn try_clone(&self) -> Option<Box<dyn SegmentSource>> {
        None
    }

    /// The whole body, every segment verified now, if its bytes are in memory (`None` for a
    /// store's stream or a source already read from); the error that ends it if a segment
    /// fails (`BadSignature`, or why it is unusable: reported, and the entry deleted now unless
    /// `read_only`, as one found by reading would be; the source is left as it was: reading it
    /// meets the same failure).
    fn verified_parts(&self) -> Option<Result<Vec<Bytes>, BoxError>> {
        None
    }
}

/// A stored body.
pub(crate) enum EntryBody {
    /// Verified, in memory: slices of what the store returned (no copy).
    Parts { parts: Vec<Bytes>, len: u64 },
    /// Read and verified a segment at a time as the caller reads (a large entry of a store that
    /// streams): `len` is what the verified head says.
    Stream {
        source: Box<dyn SegmentSource>,
        len: u64,
    },
}

impl EntryBody {
    pub(crate) fn parts(parts: Vec<Bytes>) -> Self {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        EntryBody::Parts { parts, len }
    }

    pub(crate) fn empty() -> Self {
        EntryBody::Parts {
            parts: Vec::new(),
            len: 0,
        }
    }

    /// The body in verified parts, if it is in memory: a body to be verified as it is read
    /// (a large whole blob) is verified now, and one that fails is the error that would end it
    /// (`BadSignature`, counted, or why it is unusable; the entry deleted either way); a store's
    /// stream is left as it is.
    pub(crate) fn into_verified_parts(self) -> Result<EntryBody, BoxError> {
        match self {
            EntryBody::Stream { source, len } => match source.verified_parts() {
                Some(parts) => parts.map(EntryBody::parts),
                None => Ok(EntryBody::Stream { source, len }),
            },
            parts => Ok(parts),
        }
    }

    /// The body's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        match self {
            EntryBody::Parts { len, .. } | EntryBody::Stream { len, .. } => *len,
        }
    }

    /// The body in one buffer, if it is in memory (a copy when in several parts).
    pub(crate) fn to_bytes(&self) -> Option<Bytes> {
        match self {
            EntryBody::Parts { parts, .. } if parts.len() == 1 => parts.first().cloned(),
            EntryBody::Parts { parts, len } => {
                let mut all = Vec::with_capacity(usize::try_from(*len).ok()?);
                for p in parts {
                    all.extend_from_slice(p);
                }
                Some(Bytes::from(all))
            }
            EntryBody::Stream { .. } => None,
        }
    }

    /// The bytes `start..end` of the body (clamped to it): slices of the parts, or the stream
    /// told what to skip and where to stop (it still verifies every segment it reads).
    pub(crate) fn slice(self, start: u64, end: u64) -> EntryBody {
        let end = end.min(self.len());
        let start = start.min(end);
        match self {
            EntryBody::Parts { parts, .. } => {
                let mut out = Vec::new();
                let mut at = 0u64;
                for p in parts {
                    let (from, to) = (at, at + p.len() as u64);
                    at = to;
                    if to <= start || from >= end {
                        continue;
                    }
                    let a = (start.max(from) - from) as usize;
                    let b = (end.min(to) - from) as usize;
                    out.push(p.slice(a..b));
                }
                EntryBody::parts(out)
            }
            EntryBody::Stream { source, .. } => EntryBody::Stream {
                source: Box::new(Ranged {
                    inner: source,
                    skip: start,
                    take: end - start,
                }),
                len: end - start,
            },
        }
    }
}

impl fmt::Debug for EntryBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryBody::Parts { parts, len } => f
                .debug_struct("Parts")
                .field("len", len)
                .field("parts", &parts.len())
                .finish(),
            EntryBody::Stream { len, .. } => f
                .debug_struct("Stream")
                .field("len", len)
                .finish_non_exhaustive(),
        }
    }
}

/// A range of a streamed body.
struct Ranged {
    inner: Box<dyn SegmentSource>,
    skip: u64,
    take: u64,
}

impl SegmentSource for Ranged {
    fn poll_segment(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            if self.take == 0 {
                return Poll::Ready(None);
            }
            let mut seg = match std::task::ready!(self.inner.poll_segment(cx)) {
                Some(Ok(seg)) => seg,
                other => return Poll::Ready(other),
            };
            let len = seg.len() as u64;
            if len <= self.skip {
                self.skip -= len;
                continue;
            }
            seg = seg.slice(self.skip as usize..);
            self.skip = 0;
            if seg.len() as u64 > self.take {
                seg.truncate(self.take as usize);
            }
            self.take -= seg.len() as u64;
            return Poll::Ready(Some(Ok(seg)));
        }
    }
}
