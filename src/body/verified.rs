//! A stored body read from a store's stream as the caller reads it, each 64 KiB segment verified
//! before a byte of it is released (`envelope::reader`).
//!
//! Memory: what the store's stream yields at a time (its read-ahead), plus at most one segment
//! being completed. Time: a store that gives nothing for the store timeout while the caller waits
//! ends the body with a timeout error (`StoreError::is_timeout`), as a lookup would. A segment
//! whose proof fails ends the body with an error that downcasts to [`BadSignature`]; one this
//! reader cannot use for another reason (an unsigned entry's checksum, a codec this build lacks)
//! ends it with an error saying why. Nothing of that segment or after it is released, and
//! `on_bad` runs once (the cache deletes the entry unless read-only, and counts it: a failed
//! proof as a bad signature, anything else as an unusable entry). The verified
//! prefix was released already: HTTP has no way to take it back, and a caller that needs all or
//! nothing reads the whole body before using it (docs/security.md).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use std::future::Future;

use crate::entry::SegmentSource;
use crate::envelope::{BodyReader, OpenError, Pending, Step};
#[cfg(doc)]
use crate::error::BadSignature;
use crate::error::{BoxError, StoreError};
use crate::store::BlobStream;
use crate::timer::{Deadline, TimerProbe};

/// What runs once when a segment fails: its proof (`BadSignature`), or a reason this reader
/// cannot use it (an unkeyed entry's checksum, a codec this build lacks).
pub(crate) type OnBad = Box<dyn FnOnce(&OpenError) + Send>;

/// The segments of a streamed entry, verified one at a time.
pub(crate) struct Verified {
    stream: BlobStream,
    pending: Pending,
    reader: BodyReader,
    ready: VecDeque<Bytes>,
    /// Shared with this body's copies (`copy`): whichever meets the failure first runs it, once.
    on_bad: Arc<std::sync::Mutex<Option<OnBad>>>,
    failed: bool,
    timer: Arc<TimerProbe>,
    timeout: Duration,
    /// Armed while the caller waits for the store; cleared by every read.
    deadline: Option<Pin<Box<Deadline>>>,
    /// A segment was read (verified, maybe released): a copy could not start from the start.
    started: bool,
}

impl Verified {
    /// `pending` holds what was read past the head; `stream` the rest of the blob, read with
    /// at most `timeout` between two of its buffers while the caller waits.
    pub(crate) fn new(
        stream: BlobStream,
        pending: Pending,
        reader: BodyReader,
        on_bad: OnBad,
        timer: Arc<TimerProbe>,
        timeout: Duration,
    ) -> Self {
        Self {
            stream,
            pending,
            reader,
            ready: VecDeque::new(),
            on_bad: Arc::new(std::sync::Mutex::new(Some(on_bad))),
            failed: false,
            timer,
            timeout,
            deadline: None,
            started: false,
        }
    }

    /// A copy reading the same body from the start, for a stream whose bytes are in memory
    /// (`BlobStream::buffered`) and of which no segment was read. It shares `on_bad`: a
    /// failure is counted (and the entry deleted) once, by whichever copy meets it first.
    fn copy(&self) -> Option<Verified> {
        if self.started || self.failed {
            return None;
        }
        Some(Verified {
            stream: self.stream.try_clone()?,
            pending: self.pending.clone(),
            reader: self.reader.clone(),
            ready: VecDeque::new(),
            on_bad: self.on_bad.clone(),
            failed: false,
            timer: self.timer.clone(),
            timeout: self.timeout,
            deadline: None,
            started: false,
        })
    }

    /// The store's next buffer, or its timeout.
    fn poll_store(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        match Pin::new(&mut self.stream).poll_next(cx) {
            Poll::Ready(item) => {
                self.deadline = None;
                Poll::Ready(item)
            }
            Poll::Pending => {
                let (timer, timeout) = (&self.timer, self.timeout);
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(timer.sleep(timeout)));
                ready!(deadline.as_mut().poll(cx));
                self.deadline = None;
                tracing::warn!(
                    "the store's stream gave nothing for the store timeout; the body ends with an error"
                );
                Poll::Ready(Some(Err(Box::new(StoreError::timed_out()))))
            }
        }
    }

    fn fail(&mut self, error: OpenError) -> BoxError {
        self.failed = true;
        self.ready.clear();
        let on_bad = self
            .on_bad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(on_bad) = on_bad {
            on_bad(&error);
        }
        match error {
            OpenError::BadSignature(bad) => Box::new(bad),
            OpenError::Unusable(why) => format!("stored entry unusable: {why}").into(),
        }
    }

    fn malformed(&self) -> OpenError {
        self.reader.malformed()
    }
}

impl SegmentSource for Verified {
    fn try_clone(&self) -> Option<Box<dyn SegmentSource>> {
        Some(Box::new(self.copy()?))
    }

    fn verified_parts(&self) -> Option<Result<Vec<Bytes>, BoxError>> {
        // Read from a copy: a failure runs the shared `on_bad` now (counted, the entry deleted:
        // once), and leaves this one to meet it when the caller reads it.
        let mut copy = self.copy()?;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut parts = Vec::new();
        loop {
            // In memory: never pending.
            match copy.poll_segment(&mut cx) {
                Poll::Ready(Some(Ok(part))) => parts.push(part),
                Poll::Ready(None) if !copy.failed => return Some(Ok(parts)),
                // A store's error is not the entry's (none comes from bytes in memory): left to
                // the reader.
                Poll::Ready(Some(Err(e))) if e.is::<StoreError>() => return None,
                // Its proof failed, or it is unusable for another reason (a codec this build
                // lacks, an unkeyed entry's checksum): the error that would end it.
                Poll::Ready(Some(Err(e))) => return Some(Err(e)),
                Poll::Ready(_) | Poll::Pending => return None,
            }
        }
    }

    fn poll_segment(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            if self.failed {
                return Poll::Ready(None);
            }
            if let Some(bytes) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            match self.reader.next(&mut self.pending) {
                Ok(Step::Segment(segment)) => {
                    self.started = true;
                    self.ready.extend(segment);
                }
                Ok(Step::End) => {
                    // Every segment the head announced was read: anything after them is not
                    // this entry's (a blob extended by someone without the key).
                    if self.pending.len() > 0 {
                        let e = self.malformed();
                        return Poll::Ready(Some(Err(self.fail(e))));
                    }
                    return match ready!(self.poll_store(cx)) {
                        None => Poll::Ready(None),
                        Some(Ok(b)) if b.is_empty() => continue,
                        Some(Ok(_)) => {
                            let e = self.malformed();
                            Poll::Ready(Some(Err(self.fail(e))))
                        }
                        Some(Err(e)) => {
                            self.failed = true;
                            Poll::Ready(Some(Err(e)))
                        }
                    };
                }
                Ok(Step::More) => {
                    match ready!(self.poll_store(cx)) {
                        Some(Ok(bytes)) => self.pending.push(bytes),
                        Some(Err(e)) => {
                            // The store failed to read: not evidence of tampering.
                            self.failed = true;
                            return Poll::Ready(Some(Err(e)));
                        }
                        None => {
                            // Cut short: fewer segments than the verified head announced.
                            let e = self.malformed();
                            return Poll::Ready(Some(Err(self.fail(e))));
                        }
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
            }
        }
    }
}
