//! One fill per key, read by many: the body of a response being stored, shared by the request
//! that fetched it and every concurrent request that waited for it (request coalescing).
//!
//! A [`Fill`] owns the origin's body and the copy being sealed for the store ([`Tee`]). It has
//! no task of its own: whichever reader needs a chunk that has not arrived polls the origin's
//! body, with a waker that wakes *every* reader, so the body moves on as long as any one caller
//! reads it, whether or not the others poll (`join!` of two requests whose bodies are read
//! afterwards, a waiter that never reads). Each chunk goes to the store's copy once and is kept
//! (a reference count, not a copy) for the readers: every reader reads the same chunks, at its
//! own pace, from the first one.
//!
//! Memory: a chunk is let go as soon as every reader has read it, so a caller reading alone
//! holds no more than without coalescing (the entry being built, not the chunks too), and a
//! slow reader holds only what it has not read yet. A waiter can join only while the first
//! chunk is still kept (in practice: waiters that were waiting when the head arrived, the
//! `join!` case); one that comes later waits for the entry to be stored and reads it, as before.
//! A body larger than `max_body_size` (only one without a `Content-Length`: a larger announced
//! one is not shared at all) keeps at most that many bytes for its readers: a reader that falls
//! further behind gets [`FillLagged`].
//!
//! When every reader has dropped its body, the fill is dropped with them: the origin's body is
//! closed and nothing is stored (as when a caller drops a body that is being stored without
//! coalescing).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;

use super::Tee;
use crate::entry::EntryHead;
use crate::error::BoxError;
use crate::key::CacheKey;

/// The origin's body, type-erased: a fill is shared by services of any body type.
pub(crate) type Source = UnsyncBoxBody<Bytes, BoxError>;

/// The body shared by a leader and its waiters.
pub(crate) struct Fill {
    state: Mutex<State>,
    /// The readers' wakers, apart from the state: the origin's body may wake its waker while
    /// the state is locked (inside `poll_frame`), and waking locks this one only.
    wakers: Arc<Wakers>,
    /// The body's announced length, for the readers' size hints.
    expected_len: Option<u64>,
    /// The entry's head and name: what a waiter answers from (as a hit on it would).
    head: EntryHead,
    key: CacheKey,
}

impl fmt::Debug for Fill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fill").finish_non_exhaustive()
    }
}

struct State {
    /// Chunks kept for the readers; the first is chunk number `base`.
    chunks: VecDeque<Bytes>,
    base: usize,
    kept: usize,
    /// The most kept for readers once the store's copy is no longer being made.
    max_kept: usize,
    trailers: Option<HeaderMap>,
    end: Option<End>,
    source: Option<Source>,
    /// The store's copy (`None` for a body that is not being stored).
    tee: Option<Tee>,
    /// Readers by id: the next chunk each reads; `None` once dropped.
    readers: Vec<Option<Position>>,
}

#[derive(Clone, Copy)]
enum Position {
    At(usize),
    /// Fell more than `max_kept` bytes behind: its body ends with [`FillLagged`].
    Lagged,
}

enum End {
    Complete,
    Failed(Arc<BoxError>),
}

#[derive(Default)]
struct Wakers(Mutex<Vec<Option<Waker>>>);

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for waker in wakers.iter().flatten() {
            waker.wake_by_ref();
        }
    }
}

impl Fill {
    /// A fill of `source`, copied into the store through `tee` (if any).
    pub(crate) fn new(
        source: Source,
        tee: Option<Tee>,
        max_kept: usize,
        head: EntryHead,
        key: CacheKey,
    ) -> Arc<Self> {
        let expected_len = source.size_hint().exact();
        Arc::new(Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                base: 0,
                kept: 0,
                max_kept,
                trailers: None,
                end: None,
                source: Some(source),
                tee,
                readers: Vec::new(),
            }),
            wakers: Arc::new(Wakers::default()),
            expected_len,
            head,
            key,
        })
    }

    pub(crate) fn head(&self) -> &EntryHead {
        &self.head
    }

    pub(crate) fn key(&self) -> &CacheKey {
        &self.key
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reader from the first chunk, or `None` when the first chunk is no longer kept (every
    /// reader has read it, or the body is over: a late waiter looks the key up instead).
    pub(crate) fn reader(self: &Arc<Self>) -> Option<FillReader> {
        let mut state = self.lock();
        if state.base > 0 || (state.tee.is_none() && state.end.is_some()) {
            return None;
        }
        let id = state.readers.len();
        state.readers.push(Some(Position::At(0)));
        self.wakers
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(None);
        Some(FillReader {
            fill: self.clone(),
            id,
            trailers_sent: false,
            done: false,
        })
    }

    fn poll_read(
        &self,
        id: usize,
        trailers_sent: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.lock();
        loop {
            let at = match state.readers.get(id).copied().flatten() {
                Some(Position::At(at)) => at,
                Some(Position::Lagged) => return Poll::Ready(Some(Err(Box::new(FillLagged)))),
                None => return Poll::Ready(None),
            };
            if let Some(chunk) = state.chunks.get(at - state.base).cloned() {
                state.readers[id] = Some(Position::At(at + 1));
                state.let_go();
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match &state.end {
                Some(End::Failed(error)) => {
                    let error = Box::new(FillFailed(error.clone()));
                    state.readers[id] = None;
                    return Poll::Ready(Some(Err(error)));
                }
                Some(End::Complete) => {
                    // The store write of a complete body runs before the end is reported, as
                    // without coalescing: the next request finds the entry.
                    if let Some(tee) = state.tee.as_mut() {
                        self.register(id, cx);
                        let waker = Waker::from(self.wakers.clone());
                        if tee.poll_put(&mut Context::from_waker(&waker)).is_pending() {
                            return Poll::Pending;
                        }
                        state.tee = None;
                        self.wakers.wake_by_ref();
                    }
                    if !*trailers_sent {
                        *trailers_sent = true;
                        if let Some(trailers) = state.trailers.clone() {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    }
                    return Poll::Ready(None);
                }
                None => {}
            }
            // Caught up: this reader moves the origin's body on, for everybody.
            self.register(id, cx);
            let waker = Waker::from(self.wakers.clone());
            // A store writing the body as it passes sets the pace when it falls behind.
            if let Some(tee) = state.tee.as_mut() {
                if tee
                    .poll_ready(&mut Context::from_waker(&waker))
                    .is_pending()
                {
                    return Poll::Pending;
                }
            }
            let Some(source) = state.source.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(source).poll_frame(&mut Context::from_waker(&waker)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => {
                    state.on_frame(frame);
                    self.wakers.wake_by_ref();
                }
            }
        }
    }

    fn register(&self, id: usize, cx: &Context<'_>) {
        let mut wakers = self.wakers.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = wakers.get_mut(id) {
            match slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
    }

    fn drop_reader(&self, id: usize) {
        let mut state = self.lock();
        if let Some(slot) = state.readers.get_mut(id) {
            *slot = None;
        }
        if let Some(slot) = self
            .wakers
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id)
        {
            *slot = None;
        }
        if state.readers.iter().all(Option::is_none) {
            // Nobody reads any more: the origin's body and the store's copy go (nothing is
            // stored), and so do the chunks.
            state.source = None;
            state.tee = None;
            state.chunks.clear();
        } else {
            state.let_go();
        }
    }
}

impl State {
    fn on_frame(&mut self, frame: Option<Result<Frame<Bytes>, BoxError>>) {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if let Some(tee) = self.tee.as_mut() {
                        tee.push(&data);
                    }
                    if !data.is_empty() {
                        self.kept += data.len();
                        self.chunks.push_back(data);
                        self.let_go();
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        if let Some(tee) = self.tee.as_mut() {
                            tee.set_trailers(trailers.clone());
                        }
                        self.trailers = Some(trailers);
                    }
                }
            },
            Some(Err(error)) => {
                if let Some(tee) = self.tee.as_mut() {
                    tee.abandon("upstream body error");
                }
                self.tee = None;
                self.source = None;
                self.end = Some(End::Failed(Arc::new(error)));
            }
            None => {
                if let Some(tee) = self.tee.as_mut() {
                    tee.finish();
                }
                self.source = None;
                self.end = Some(End::Complete);
            }
        }
        if self.source.as_ref().is_some_and(Body::is_end_stream) && self.end.is_none() {
            self.on_frame(None);
        }
        if self.tee.as_ref().is_some_and(|t| !t.copying()) && self.end.is_none() {
            // The store's copy was abandoned (too large, sealing failed): no reader joins any
            // more, so chunks read by everybody can go.
            self.tee = None;
            self.let_go();
        }
    }

    /// Lets go of the chunks every reader has read (from then on no reader can join); past
    /// `max_kept`, the readers furthest behind are cut off.
    fn let_go(&mut self) {
        let slowest = self
            .readers
            .iter()
            .filter_map(|r| match r {
                Some(Position::At(at)) => Some(*at),
                _ => None,
            })
            .min()
            .unwrap_or(self.base + self.chunks.len());
        while self.base < slowest {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.kept -= chunk.len();
            self.base += 1;
        }
        // The newest chunk stays whatever its size: the bound is `max_kept` and one chunk.
        while self.kept > self.max_kept && self.chunks.len() > 1 {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.kept -= chunk.len();
            let cut = self.base;
            self.base += 1;
            for reader in self.readers.iter_mut() {
                if matches!(reader, Some(Position::At(at)) if *at <= cut) {
                    *reader = Some(Position::Lagged);
                }
            }
        }
    }
}

/// One caller's view of a [`Fill`]: its body.
pub(crate) struct FillReader {
    fill: Arc<Fill>,
    id: usize,
    trailers_sent: bool,
    done: bool,
}

impl fmt::Debug for FillReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FillReader").field("id", &self.id).finish()
    }
}

impl FillReader {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = self.fill.poll_read(self.id, &mut self.trailers_sent, cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.done = true;
        }
        polled
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.done
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        self.fill
            .expected_len
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        self.fill.drop_reader(self.id);
    }
}

/// The origin's body failed while it was being read for several callers: each of them gets
/// this error, whose [`source`](std::error::Error::source) is the origin body's own error and
/// whose message is that error's. Nothing of the body was stored.
#[derive(Clone)]
pub struct FillFailed(Arc<BoxError>);

impl fmt::Debug for FillFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FillFailed").field(&self.0).finish()
    }
}

impl fmt::Display for FillFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body's error is the `source()`, not repeated here.
        f.write_str("the response body failed")
    }
}

impl std::error::Error for FillFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

/// A caller read a shared response body so much more slowly than another caller that more than
/// `max_body_size` bytes would have been kept for it (a body too large to store, without a
/// `Content-Length`): its body ends with this error.
#[derive(Debug, Clone, Copy)]
pub struct FillLagged;

impl fmt::Display for FillLagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this caller fell more than max_body_size behind another caller reading the same \
             response",
        )
    }
}

impl std::error::Error for FillLagged {}

#[cfg(test)]
#[path = "fill_tests.rs"]
mod tests;
