//! The two shapes of a stored entry beyond one contiguous `Bytes`: a list of buffers
//! ([`BlobParts`], what the cache writes and a memory store keeps) and a stream of buffers
//! ([`BlobStream`], what a store answers when it would rather not hold the whole entry in memory,
//! as `DiskStore` does for large files).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use std::collections::VecDeque;

use sync_wrapper::SyncWrapper;

use crate::error::BoxError;

/// A blob as a list of buffers, in order: the cache writes an entry this way (the origin's own
/// chunks between the envelope's framing), so that nothing is concatenated on the way to a store.
///
/// Cheap to clone (one reference count). A store that wants one contiguous buffer calls
/// [`to_bytes`](Self::to_bytes); one that writes buffers (a file with vectored writes, a memory
/// store that keeps them) uses [`parts`](Self::parts).
#[derive(Clone, Default)]
pub struct BlobParts {
    parts: Arc<[Bytes]>,
    len: usize,
}

impl BlobParts {
    /// The total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the blob holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffers, in order (none of them empty).
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The blob as one buffer: the only part without a copy, else the parts concatenated.
    pub fn to_bytes(&self) -> Bytes {
        match &*self.parts {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut all = Vec::with_capacity(self.len);
                for part in parts {
                    all.extend_from_slice(part);
                }
                Bytes::from(all)
            }
        }
    }
}

impl From<Vec<Bytes>> for BlobParts {
    fn from(mut parts: Vec<Bytes>) -> Self {
        parts.retain(|p| !p.is_empty());
        let len = parts.iter().map(Bytes::len).sum();
        Self {
            parts: parts.into(),
            len,
        }
    }
}

impl From<Bytes> for BlobParts {
    fn from(blob: Bytes) -> Self {
        let len = blob.len();
        let parts: Arc<[Bytes]> = if len == 0 {
            Arc::new([])
        } else {
            Arc::new([blob])
        };
        Self { parts, len }
    }
}

impl FromIterator<Bytes> for BlobParts {
    fn from_iter<I: IntoIterator<Item = Bytes>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl PartialEq for BlobParts {
    /// Equal bytes, however they are split.
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .parts
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.parts.iter().flat_map(|p| p.iter()))
    }
}

impl fmt::Debug for BlobParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobParts")
            .field("len", &self.len)
            .field("parts", &self.parts.len())
            .finish()
    }
}

type Inner = Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send + 'static>>;

/// A blob read as it is needed: its length, then its bytes in order, a buffer at a time.
///
/// A store answers a `Get` with [`StoreResponse::Stream`](super::StoreResponse::Stream) when it
/// would rather not read the whole blob before the cache starts on it (`DiskStore` does for files
/// over 1 MiB). The cache verifies the entry's head, then each 64 KiB segment before it releases
/// a byte of it (docs/security.md), and stops reading when the caller drops the body. A stream
/// that yields more or fewer bytes than [`len`](Self::len), or an error, ends the body with an
/// error; nothing unverified is ever released.
pub struct BlobStream {
    len: u64,
    inner: Source,
}

enum Source {
    Stream(SyncWrapper<Inner>),
    /// Buffers already in memory (a whole blob read a segment at a time): can be copied.
    Buffered(VecDeque<Bytes>),
}

impl BlobStream {
    /// A blob of `len` bytes, yielded by `stream`.
    pub fn new<S, E>(len: u64, stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures_util::TryStreamExt;
        Self {
            len,
            inner: Source::Stream(SyncWrapper::new(Box::pin(stream.map_err(Into::into)))),
        }
    }

    /// A blob already in memory, in these buffers: read as a stream, and copied by
    /// [`try_clone`](Self::try_clone) (the cache opens a large whole blob so, a segment at a
    /// time as the caller reads it).
    pub(crate) fn buffered(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        Self {
            len: parts.iter().map(|p| p.len() as u64).sum(),
            inner: Source::Buffered(parts),
        }
    }

    /// A copy of what is left of a [`buffered`](Self::buffered) blob; `None` for a store's
    /// stream (read once).
    pub(crate) fn try_clone(&self) -> Option<Self> {
        match &self.inner {
            Source::Buffered(parts) => Some(Self {
                len: self.len,
                inner: Source::Buffered(parts.clone()),
            }),
            Source::Stream(_) => None,
        }
    }

    /// The blob in memory, as one stream item (for stores and tests that hold it anyway).
    pub fn from_bytes(blob: Bytes) -> Self {
        Self::new(
            blob.len() as u64,
            futures_util::stream::iter([Ok::<_, BoxError>(blob)]),
        )
    }

    /// The length the store gave for the blob.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the store said the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the whole blob into memory, refusing one longer than `max_len` (said or found);
    /// `Ok(None)` when it is.
    pub async fn collect(mut self, max_len: usize) -> Result<Option<Bytes>, BoxError> {
        use futures_util::StreamExt;
        if self.len > max_len as u64 {
            return Ok(None);
        }
        let mut all = Vec::new();
        all.try_reserve(usize::try_from(self.len).unwrap_or(max_len).min(max_len))
            .map_err(|e| -> BoxError { e.to_string().into() })?;
        while let Some(chunk) = self.next().await {
            let chunk = chunk?;
            if all.len() + chunk.len() > max_len {
                return Ok(None);
            }
            all.extend_from_slice(&chunk);
        }
        if all.len() as u64 != self.len {
            return Err("the store's stream ended at another length than it said".into());
        }
        Ok(Some(Bytes::from(all)))
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().inner {
            Source::Stream(stream) => stream.get_mut().as_mut().poll_next(cx),
            Source::Buffered(parts) => Poll::Ready(parts.pop_front().map(Ok)),
        }
    }
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_compare_by_bytes_and_join_without_copying_one_part() {
        let a = BlobParts::from(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
        ]);
        let b = BlobParts::from(Bytes::from_static(b"abc"));
        assert_eq!(a, b);
        assert_eq!(a.parts().len(), 2);
        assert_eq!(a.to_bytes(), b"abc"[..]);
        let one = Bytes::from(vec![1u8; 10]);
        assert_eq!(
            BlobParts::from(one.clone()).to_bytes().as_ptr(),
            one.as_ptr()
        );
    }

    #[tokio::test]
    async fn a_stream_is_collected_within_its_bound_and_at_its_length() {
        let s = BlobStream::from_bytes(Bytes::from_static(b"hello"));
        assert_eq!(s.collect(5).await.unwrap().unwrap(), b"hello"[..]);
        let s = BlobStream::from_bytes(Bytes::from_static(b"hello"));
        assert!(s.collect(4).await.unwrap().is_none());
        let lying = BlobStream::new(
            3,
            futures_util::stream::iter([Ok::<_, BoxError>(Bytes::from_static(b"hello"))]),
        );
        assert!(lying.collect(4).await.unwrap().is_none());
        let short = BlobStream::new(
            9,
            futures_util::stream::iter([Ok::<_, BoxError>(Bytes::from_static(b"hello"))]),
        );
        assert!(short.collect(10).await.is_err());
    }
}
