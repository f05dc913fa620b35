//! The response body: a stored body, the origin's body, or the origin's body teed into the store.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use sync_wrapper::SyncWrapper;

use std::collections::VecDeque;

use crate::entry::{EntryBody, SegmentSource};
use crate::error::BoxError;
use fill::FillReader;

pub(crate) mod fill;
pub(crate) mod verified;

/// A store write, started once a teed body has ended cleanly.
pub(crate) type PutFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the copy of a teed body goes, chunk by chunk as the caller receives them.
pub(crate) trait Sink: Send + 'static {
    /// A data chunk, within the size bound. Its work is the chunk's (a copy, a MAC update, a
    /// segment encrypted): nothing here may grow with the size of the whole body. `false`
    /// abandons the copy.
    fn data(&mut self, chunk: &Bytes) -> bool;
    /// Ready when the sink takes the next chunk; pending while the store's streamed write is
    /// behind (`cx` is woken when it caught up, or was given up: the sink bounds the wait).
    /// Polled before the origin's body is.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
    /// The body ended cleanly, with these trailers: the write to wait for, if any. Called at
    /// most once, and cheap (it ends a copy made as the body passed).
    fn finish(self: Box<Self>, trailers: Option<HeaderMap>) -> Option<PutFuture>;
}

/// A [`Sink`] that keeps the chunks (reference counts, not copies) and hands the whole body to
/// a closure at the end: for small bodies only (the tee's bound is the caller's).
pub(crate) struct Collect<F> {
    chunks: Vec<Bytes>,
    then: F,
}

impl<F> Collect<F>
where
    F: FnOnce(Bytes, Option<HeaderMap>) -> Option<PutFuture> + Send + 'static,
{
    pub(crate) fn new(then: F) -> Box<Self> {
        Box::new(Self {
            chunks: Vec::new(),
            then,
        })
    }
}

impl<F> Sink for Collect<F>
where
    F: FnOnce(Bytes, Option<HeaderMap>) -> Option<PutFuture> + Send + 'static,
{
    fn data(&mut self, chunk: &Bytes) -> bool {
        if !chunk.is_empty() {
            self.chunks.push(chunk.clone());
        }
        true
    }

    fn finish(self: Box<Self>, trailers: Option<HeaderMap>) -> Option<PutFuture> {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut all = Vec::with_capacity(self.chunks.iter().map(Bytes::len).sum());
                for chunk in &self.chunks {
                    all.extend_from_slice(chunk);
                }
                Bytes::from(all)
            }
        };
        (self.then)(body, trailers)
    }
}

pin_project! {
    /// The body of a response that went through the cache.
    ///
    /// On a hit it is the stored body, a zero-copy slice of the blob the store returned. On a
    /// miss it is the origin's body, passed through frame by frame (trailers included); when the
    /// response is being stored, each data chunk is appended to the entry being sealed as it
    /// passes (its MAC or encryption computed with it), and the entry is written once the body
    /// has ended cleanly. No chunk is held after the caller got it.
    ///
    /// Data frames are [`Bytes`] whatever the inner body's data type is.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // The rare and the large parts are boxed: a response carries its body by value through
        // every layer above, so a small `CacheBody` is copied cheaply.
        Cached { data: Option<Bytes>, rest: Option<Box<VecDeque<Bytes>>>, trailers: Option<Box<HeaderMap>> },
        // A stored body read from the store as the caller reads, each segment verified first.
        Streamed { stream: Box<Streamed> },
        Upstream { #[pin] inner: B },
        Tee { #[pin] inner: B, tee: Box<Tee> },
        // A body shared with concurrent callers (`fill.rs`).
        Fill { reader: FillReader },
    }
}

/// A stored body being read and verified as it is released (`entry::SegmentSource`).
pub(crate) struct Streamed {
    source: SyncWrapper<Box<dyn SegmentSource>>,
    left: u64,
    trailers: Option<HeaderMap>,
    done: bool,
}

/// The state of a body being copied into the store.
pub(crate) struct Tee {
    trailers: Option<HeaderMap>,
    size: usize,
    max_size: usize,
    expected_len: Option<u64>,
    /// `None` once the copy was abandoned (too large, errored) or handed to the store.
    sink: Option<SyncWrapper<Box<dyn Sink>>>,
    put: Option<SyncWrapper<PutFuture>>,
    ended: bool,
}

impl Tee {
    pub(crate) fn new(max_size: usize, expected_len: Option<u64>, sink: Box<dyn Sink>) -> Self {
        Self {
            trailers: None,
            size: 0,
            max_size,
            expected_len,
            sink: Some(SyncWrapper::new(sink)),
            put: None,
            ended: false,
        }
    }

    /// Whether the store's copy is still being made (or written).
    pub(crate) fn copying(&self) -> bool {
        self.sink.is_some() || self.put.is_some()
    }

    pub(crate) fn set_trailers(&mut self, trailers: HeaderMap) {
        self.trailers = Some(trailers);
    }

    /// The store write of a finished copy: ready when there is none (any more).
    pub(crate) fn poll_put(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(put) = self.put.as_mut() {
            ready!(put.get_mut().as_mut().poll(cx));
            self.put = None;
        }
        Poll::Ready(())
    }

    /// Ready when the store's copy takes the next chunk (see [`Sink::poll_ready`]).
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.sink.as_mut() {
            Some(sink) => sink.get_mut().poll_ready(cx),
            None => Poll::Ready(()),
        }
    }

    pub(crate) fn abandon(&mut self, why: &'static str) {
        if self.sink.take().is_some() {
            tracing::debug!(reason = why, "response not stored");
        }
    }

    pub(crate) fn push(&mut self, chunk: &Bytes) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        self.size = self.size.saturating_add(chunk.len());
        if self.size > self.max_size {
            // Stop copying: the rest streams through, memory stays bounded.
            self.abandon("body larger than max_body_size");
            return;
        }
        if self.expected_len.is_some_and(|n| self.size as u64 > n) {
            self.abandon("body longer than its Content-Length");
            return;
        }
        if !sink.get_mut().data(chunk) {
            self.abandon("the entry could not be sealed");
        }
    }

    /// The body ended cleanly: check it and start the store write.
    pub(crate) fn finish(&mut self) {
        self.ended = true;
        let Some(sink) = self.sink.take() else {
            return;
        };
        if let Some(expected) = self.expected_len {
            if expected != self.size as u64 {
                tracing::debug!(
                    expected,
                    received = self.size,
                    "length mismatch, not stored"
                );
                return;
            }
        }
        let trailers = self.trailers.take();
        self.put = sink.into_inner().finish(trailers).map(SyncWrapper::new);
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // Dropped after the body ended but before the store write finished (e.g. the caller
        // stopped polling as soon as `is_end_stream` said so): finish the write in the
        // background rather than lose a complete response.
        if let Some(put) = self.put.take() {
            crate::rt::spawn_or_drop(put.into_inner(), "a store write");
        }
    }
}

/// An empty body, for middleware that makes its own responses (e.g. tower-http's
/// `TimeoutLayer` answering `408`).
impl<B> Default for CacheBody<B> {
    fn default() -> Self {
        Self::cached(Bytes::new(), None)
    }
}

impl<B> CacheBody<B> {
    pub(crate) fn cached(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Cached {
                data: Some(data).filter(|d| !d.is_empty()),
                rest: None,
                trailers: trailers.map(Box::new),
            },
        }
    }

    /// A stored body: its verified parts, or its segments verified as they are read.
    pub(crate) fn stored(body: EntryBody, trailers: Option<HeaderMap>) -> Self {
        match body {
            EntryBody::Parts { parts, .. } => {
                let mut parts = VecDeque::from(parts);
                let data = parts.pop_front();
                Self {
                    kind: Kind::Cached {
                        data,
                        rest: (!parts.is_empty()).then(|| Box::new(parts)),
                        trailers: trailers.map(Box::new),
                    },
                }
            }
            EntryBody::Stream { source, len } => Self {
                kind: Kind::Streamed {
                    stream: Box::new(Streamed {
                        source: SyncWrapper::new(source),
                        left: len,
                        trailers,
                        done: false,
                    }),
                },
            },
        }
    }

    pub(crate) fn upstream(inner: B) -> Self {
        Self {
            kind: Kind::Upstream { inner },
        }
    }

    pub(crate) fn fill(reader: FillReader) -> Self {
        Self {
            kind: Kind::Fill { reader },
        }
    }

    pub(crate) fn tee(inner: B, tee: Tee) -> Self {
        Self {
            kind: Kind::Tee {
                inner,
                tee: Box::new(tee),
            },
        }
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
}

impl<B> Body for CacheBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Cached {
                data,
                rest,
                trailers,
            } => {
                let next = data.take().or_else(|| {
                    let next = rest.as_mut().and_then(|r| r.pop_front());
                    if rest.as_ref().is_some_and(|r| r.is_empty()) {
                        *rest = None;
                    }
                    next
                });
                Poll::Ready(
                    next.map(Frame::data)
                        .or_else(|| trailers.take().map(|t| Frame::trailers(*t)))
                        .map(Ok),
                )
            }
            KindProj::Streamed { stream } => {
                if !stream.done {
                    if stream.left > 0 {
                        return match ready!(stream.source.get_mut().poll_segment(cx)) {
                            Some(Ok(segment)) => {
                                stream.left = stream.left.saturating_sub(segment.len() as u64);
                                Poll::Ready(Some(Ok(Frame::data(segment))))
                            }
                            Some(Err(e)) => {
                                stream.done = true;
                                stream.trailers = None;
                                Poll::Ready(Some(Err(e)))
                            }
                            None => {
                                stream.done = true;
                                stream.trailers = None;
                                Poll::Ready(Some(Err("stored body ended early".into())))
                            }
                        };
                    }
                    stream.done = true;
                }
                Poll::Ready(stream.trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            KindProj::Upstream { inner } => inner
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map(to_bytes).map_err(Into::into))),
            KindProj::Fill { reader } => reader.poll_frame(cx),
            KindProj::Tee { mut inner, tee } => {
                if let Some(put) = tee.put.as_mut() {
                    ready!(put.get_mut().as_mut().poll(cx));
                    tee.put = None;
                }
                if tee.ended {
                    return Poll::Ready(None);
                }
                // A store writing the body as it passes sets the pace when it falls behind.
                ready!(tee.poll_ready(cx));
                match ready!(inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        let frame = to_bytes(frame);
                        if let Some(data) = frame.data_ref() {
                            tee.push(data);
                        } else if let Some(trailers) = frame.trailers_ref() {
                            tee.trailers = Some(trailers.clone());
                        }
                        if inner.is_end_stream() {
                            tee.finish();
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        tee.abandon("upstream body error");
                        tee.ended = true;
                        Poll::Ready(Some(Err(e.into())))
                    }
                    None => {
                        tee.finish();
                        if let Some(put) = tee.put.as_mut() {
                            ready!(put.get_mut().as_mut().poll(cx));
                            tee.put = None;
                        }
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Cached {
                data,
                rest,
                trailers,
            } => data.is_none() && rest.is_none() && trailers.is_none(),
            Kind::Streamed { stream } => {
                (stream.done || stream.left == 0) && stream.trailers.is_none()
            }
            Kind::Upstream { inner } => inner.is_end_stream(),
            Kind::Tee { inner, tee } => tee.put.is_none() && (tee.ended || inner.is_end_stream()),
            Kind::Fill { reader } => reader.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Cached { data, rest, .. } => SizeHint::with_exact(
                data.as_ref().map_or(0, |d| d.len() as u64)
                    + rest
                        .as_ref()
                        .map_or(0, |r| r.iter().map(|d| d.len() as u64).sum()),
            ),
            Kind::Streamed { stream } => SizeHint::with_exact(stream.left),
            Kind::Upstream { inner } | Kind::Tee { inner, .. } => inner.size_hint(),
            Kind::Fill { reader } => reader.size_hint(),
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Cached { .. } => "cached",
            Kind::Streamed { .. } => "cached, streamed",
            Kind::Upstream { .. } => "upstream",
            Kind::Tee { .. } => "upstream, storing",
            Kind::Fill { .. } => "upstream, shared",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}
