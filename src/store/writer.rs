//! The third shape of a write: an entry handed to the store as the body passes
//! ([`StoreRequest::PutStream`](super::StoreRequest::PutStream)), so that a large stored miss is
//! never held in memory whole.
//!
//! The cache holds a [`BlobWriter`], the store an [`IncomingBlob`]: the two ends of one
//! unbounded channel whose queued bytes the cache watches (it gives up on a store that falls
//! more than a cap behind, rather than make the body wait on the store). The entry's first
//! bytes (the envelope's header and head, which hold the body's length and trailers) are known
//! only when the body has ended: they come last, with the commit, and go *first* in the blob.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::{mpsc, oneshot};

use super::StoreResponse;
use crate::error::BoxError;

/// What a store's [`IncomingBlob`] receives, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// The next bytes of the blob's body (everything after its prefix), in order.
    Data(Bytes),
    /// The end: the blob's *prefix*, its first bytes. The blob is the prefix followed by every
    /// [`Data`](Self::Data) buffer, in order. Make it visible now (atomically: a reader sees the
    /// previous entry or this whole one), then answer with [`IncomingBlob::finish`].
    Commit(Bytes),
}

struct Shared {
    /// Bytes appended and not yet taken by the store.
    queued: AtomicUsize,
    /// Woken when the store takes a buffer, or drops its end (see `BlobWriter::poll_drained`).
    drained: AtomicWaker,
    /// The writer was dropped without a commit.
    aborted: AtomicBool,
}

/// The future of [`BlobWriter::commit`]: the store's answer (`Done` when the blob is stored).
pub type CommitFuture = Pin<Box<dyn Future<Output = Result<StoreResponse, BoxError>> + Send>>;

/// The cache's end of a streamed write: the answer to a
/// [`StoreRequest::PutStream`](super::StoreRequest::PutStream).
///
/// A store makes the pair with [`BlobWriter::channel`], keeps the [`IncomingBlob`] (in a task
/// of its own, or a thread) and answers [`StoreResponse::Writer`] with this end. The cache then
/// [`append`](Self::append)s the body's buffers in order, never waiting (it watches
/// [`queued`](Self::queued) and gives up on a store that falls too far behind), and
/// [`commit`](Self::commit)s with the blob's prefix once the body has ended. Dropping it
/// without a commit aborts the write: the store must leave nothing visible, and remove what it
/// wrote.
pub struct BlobWriter {
    tx: Option<mpsc::UnboundedSender<Incoming>>,
    shared: Arc<Shared>,
    reply: Option<oneshot::Receiver<Result<StoreResponse, BoxError>>>,
}

/// The store's end of a streamed write (see [`BlobWriter`]).
pub struct IncomingBlob {
    rx: mpsc::UnboundedReceiver<Incoming>,
    shared: Arc<Shared>,
    reply: Option<oneshot::Sender<Result<StoreResponse, BoxError>>>,
}

/// [`BlobWriter::append`] to a store that has stopped taking the write (it failed, or refused
/// the blob): the write is lost; [`commit`](BlobWriter::commit) says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterClosed;

impl fmt::Display for WriterClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the store stopped taking the streamed write")
    }
}

impl std::error::Error for WriterClosed {}

impl BlobWriter {
    /// A new streamed write: the cache's end and the store's end.
    pub fn channel() -> (BlobWriter, IncomingBlob) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            drained: AtomicWaker::new(),
            aborted: AtomicBool::new(false),
        });
        (
            BlobWriter {
                tx: Some(tx),
                shared: shared.clone(),
                reply: Some(reply_rx),
            },
            IncomingBlob {
                rx,
                shared,
                reply: Some(reply_tx),
            },
        )
    }

    /// Queues the next buffer of the body, without waiting. An error when the store has
    /// stopped taking the write.
    pub fn append(&mut self, data: Bytes) -> Result<(), WriterClosed> {
        if data.is_empty() {
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or(WriterClosed)?;
        let len = data.len();
        self.shared.queued.fetch_add(len, Ordering::AcqRel);
        tx.send(Incoming::Data(data)).map_err(|_| {
            self.shared.queued.fetch_sub(len, Ordering::AcqRel);
            WriterClosed
        })
    }

    /// Bytes appended that the store has not taken yet.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Ready once at most `below` bytes are queued, or the store has stopped taking the write
    /// (then [`append`](Self::append) fails and [`commit`](Self::commit) says why); otherwise
    /// `cx` is woken when the store takes a buffer. The cache waits on it before reading more of
    /// the body, with its store timeout as the bound.
    pub fn poll_drained(
        &self,
        cx: &mut std::task::Context<'_>,
        below: usize,
    ) -> std::task::Poll<()> {
        let done = || {
            self.queued() <= below
                || self
                    .tx
                    .as_ref()
                    .is_none_or(mpsc::UnboundedSender::is_closed)
        };
        if done() {
            return std::task::Poll::Ready(());
        }
        self.shared.drained.register(cx.waker());
        if done() {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    /// Ends the write with the blob's `prefix` (its first bytes); resolves to the store's
    /// answer once the blob is visible (or was refused: `NotStored`, or an error). The cache
    /// bounds the wait with its store timeout.
    pub fn commit(mut self, prefix: Bytes) -> CommitFuture {
        let sent = self
            .tx
            .take()
            .is_some_and(|tx| tx.send(Incoming::Commit(prefix)).is_ok());
        let reply = self.reply.take();
        Box::pin(async move {
            let answer = match reply {
                Some(reply) => reply.await.ok(),
                None => None,
            };
            match answer {
                Some(answer) => answer,
                None if sent => Err("the store dropped the streamed write".into()),
                None => Err(WriterClosed.into()),
            }
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.tx.is_some() {
            // Not committed: the store skips what is still queued and discards the write.
            self.shared.aborted.store(true, Ordering::Release);
        }
    }
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobWriter")
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

impl IncomingBlob {
    fn taken(&self, item: Option<Incoming>) -> Option<Incoming> {
        if let Some(Incoming::Data(data)) = &item {
            self.shared.queued.fetch_sub(data.len(), Ordering::AcqRel);
            self.shared.drained.wake();
        }
        item
    }

    /// The next buffer or the commit; `None` when the cache aborted the write (dropped its
    /// [`BlobWriter`] without a commit): discard what was written, leave nothing visible.
    pub async fn next(&mut self) -> Option<Incoming> {
        if self.is_aborted() {
            return None;
        }
        let item = self.rx.recv().await;
        self.taken(item)
    }

    /// [`next`](Self::next) for a thread of its own (a store that writes with blocking calls,
    /// on `tokio::task::spawn_blocking`): waits on the thread. Panics if called from inside an
    /// asynchronous task (as tokio's `blocking_recv`).
    pub fn blocking_next(&mut self) -> Option<Incoming> {
        if self.is_aborted() {
            return None;
        }
        let item = self.rx.blocking_recv();
        self.taken(item)
    }

    /// What is queued now, without waiting: `None` when nothing is (or the write was aborted;
    /// see [`is_aborted`](Self::is_aborted)). For gathering several buffers into one write.
    pub fn try_next(&mut self) -> Option<Incoming> {
        if self.is_aborted() {
            return None;
        }
        let item = self.rx.try_recv().ok();
        self.taken(item)
    }

    /// Whether the cache aborted the write.
    pub fn is_aborted(&self) -> bool {
        self.shared.aborted.load(Ordering::Acquire)
    }

    /// Answers the commit (or ends the write early: a failure, or `NotStored` for a blob the
    /// store will not keep; the cache's next [`append`](BlobWriter::append) then fails and it
    /// stops sending).
    pub fn finish(mut self, answer: Result<StoreResponse, BoxError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(answer);
        }
    }
}

impl Drop for IncomingBlob {
    fn drop(&mut self) {
        // The cache may be waiting for the store to catch up: it never will.
        self.shared.drained.wake();
    }
}

impl fmt::Debug for IncomingBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingBlob")
            .field("aborted", &self.is_aborted())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_then_the_commit_arrive_in_order_and_the_answer_returns() {
        let (mut w, mut incoming) = BlobWriter::channel();
        w.append(Bytes::from_static(b"body1")).unwrap();
        w.append(Bytes::new()).unwrap();
        w.append(Bytes::from_static(b"body2")).unwrap();
        assert_eq!(w.queued(), 10);
        let store = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = incoming.next().await {
                match item {
                    Incoming::Data(d) => got.extend_from_slice(&d),
                    Incoming::Commit(p) => {
                        let mut all = p.to_vec();
                        all.extend_from_slice(&got);
                        incoming.finish(Ok(StoreResponse::Done));
                        return all;
                    }
                }
            }
            unreachable!("committed")
        });
        let answer = w.commit(Bytes::from_static(b"head|")).await;
        assert!(matches!(answer, Ok(StoreResponse::Done)));
        assert_eq!(store.await.unwrap(), b"head|body1body2");
    }

    #[tokio::test]
    async fn a_dropped_writer_aborts_and_a_finished_store_closes_the_writer() {
        let (mut w, mut incoming) = BlobWriter::channel();
        w.append(Bytes::from_static(b"x")).unwrap();
        drop(w);
        assert!(incoming.is_aborted());
        assert!(incoming.next().await.is_none(), "queued data is skipped");

        let (mut w, incoming) = BlobWriter::channel();
        incoming.finish(Err("disk full".into()));
        assert_eq!(w.append(Bytes::from_static(b"x")), Err(WriterClosed));
        let err = w.commit(Bytes::new()).await.unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }
}
