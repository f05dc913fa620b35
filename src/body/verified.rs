//! A stored body read from a store's stream as the caller reads it, each 64 KiB segment verified
//! before a byte of it is released (`envelope::reader`).
//!
//! Memory: what the store's stream yields at a time (its read-ahead), plus at most one segment
//! being completed. A segment that fails ends the body with an error that downcasts to
//! [`BadSignature`]; nothing of that segment or after it is released, and `on_bad` runs once (the
//! cache counts it and deletes the entry). The verified prefix was released already: HTTP has no
//! way to take it back, and a caller that needs all or nothing reads the whole body before
//! using it (docs/security.md).

use std::collections::VecDeque;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::entry::SegmentSource;
use crate::envelope::{BodyReader, OpenError, Pending, Step};
use crate::error::{BadSignature, BoxError};
use crate::store::BlobStream;

/// What runs once when a segment fails verification.
pub(crate) type OnBad = Box<dyn FnOnce(&BadSignature) + Send>;

/// The segments of a streamed entry, verified one at a time.
pub(crate) struct Verified {
    stream: BlobStream,
    pending: Pending,
    reader: BodyReader,
    ready: VecDeque<Bytes>,
    on_bad: Option<OnBad>,
    failed: bool,
}

impl Verified {
    /// `pending` holds what was read past the head; `stream` the rest of the blob.
    pub(crate) fn new(
        stream: BlobStream,
        pending: Pending,
        reader: BodyReader,
        on_bad: OnBad,
    ) -> Self {
        Self {
            stream,
            pending,
            reader,
            ready: VecDeque::new(),
            on_bad: Some(on_bad),
            failed: false,
        }
    }

    fn fail(&mut self, error: OpenError) -> BoxError {
        self.failed = true;
        self.ready.clear();
        match error {
            OpenError::BadSignature(bad) => {
                if let Some(on_bad) = self.on_bad.take() {
                    on_bad(&bad);
                }
                Box::new(bad)
            }
            OpenError::Unusable(why) => format!("stored entry unusable: {why}").into(),
        }
    }

    fn malformed(&self) -> OpenError {
        self.reader.malformed()
    }
}

impl SegmentSource for Verified {
    fn poll_segment(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            if self.failed {
                return Poll::Ready(None);
            }
            if let Some(bytes) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(bytes)));
            }
            match self.reader.next(&mut self.pending) {
                Ok(Step::Segment(segment)) => self.ready.extend(segment),
                Ok(Step::End) => {
                    // Every segment the head announced was read: anything after them is not
                    // this entry's (a blob extended by someone without the key).
                    if self.pending.len() > 0 {
                        let e = self.malformed();
                        return Poll::Ready(Some(Err(self.fail(e))));
                    }
                    return match ready!(std::pin::Pin::new(&mut self.stream).poll_next(cx)) {
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
                    match ready!(std::pin::Pin::new(&mut self.stream).poll_next(cx)) {
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
