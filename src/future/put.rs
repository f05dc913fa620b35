//! The store write of a sealed entry: whole at the end of the body (`Put`, `PutParts`), or, for
//! a large one, as the body passes.
//!
//! A large entry written to the store as the body passes ([`StoreRequest::PutStream`]), so that
//! a stored miss of any size holds the segments the store has not taken yet, not the entry.
//!
//! Only an entry of at least [`STREAM_FROM`] bytes (announced by `Content-Length`, or reached
//! by a body without one) is streamed; a smaller one takes the path it always took, with no
//! store call added. A streamed entry that varies goes under one name, not under both its URL's
//! primary key and its variant's own key as a whole one does (a store writes one stream to one
//! name). Which one follows what the lookup found (RFC 9111 §4.1):
//! - **another variant under the primary key** (the lookup then looked this one up under its
//!   own key): the variant's own key, and the primary key is left to the other variant, so that
//!   several large variants of one URL coexist, each found where the lookup looks for it;
//! - **otherwise** (nothing stored; this variant found under the primary key, stale or refetched;
//!   or a variant name the write does not compute: a changed `Vary`, a name from before a key
//!   rotation, a waiter whose leader stored nothing): the primary key, where the lookup starts;
//!   as it is committed, the variant's own key is deleted, so that an older copy of the same
//!   variant there is not served after a newer one was stored (§4: the most recent suitable
//!   response is the one to use).
//!
//! A variant written under its own key never leaves an older copy of itself under the primary
//! key: the lookup would have matched it there. Another writer (a process sharing the store)
//! that puts the same variant under the primary key between this lookup and this commit shadows
//! it until one expires, as two whole writes racing can. When the primary key's entry goes
//! (expired, evicted, invalidated), the variants under their own keys are no longer looked up
//! and stay until their own expiry or eviction, as whole writes' copies do.
//!
//! The
//! `PutStream` (a store call like any other: the store timeout, the circuit breaker) is polled
//! with each chunk; the sealed records are held until it answers, then handed to the
//! [`BlobWriter`] as they are sealed. When the store is more than [`MAX_BEHIND`] behind the body
//! (a disk slower than the origin), the body waits for it before more is read from the origin
//! (`Sink::poll_ready`): memory stays bounded and the entry is still stored. The wait is bounded
//! by the store timeout: a store that takes nothing for that long, or fails, loses the write
//! (counted as a store write error, logged) and the body goes on, untouched. At the end of the body the prefix (header and head,
//! sealed last) commits the write, awaited like a `Put` (bounded by the store timeout), and
//! coalesced waiters are told the entry is stored only once the commit succeeded. A store that
//! answers `Unsupported` gets the entry as a `PutParts` at the end, as before, and is not asked
//! again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;

use crate::body::PutFuture;
use crate::envelope::{SealError, Sealed, Sealing};
use crate::key::CacheKey;
use crate::metrics::Event;
use crate::store::{flatten, BlobParts, BlobWriter, Store, StoreCall, StoreRequest, StoreResponse};
use crate::StoreError;
use std::time::Duration;

/// Entries of at least this many body bytes are streamed to a store that takes `PutStream`.
pub(super) const STREAM_FROM: u64 = 1 << 20;
/// The most a streamed write may hold that the store has not taken (records held while the
/// `PutStream` is answered, or queued in the writer): past it, the write is given up.
pub(super) const MAX_BEHIND: usize = 16 << 20;
/// What a write may hold in any case (`poll_ready` keeps it near [`MAX_BEHIND`]; this guards
/// a body that is read without it): past it, the write is given up.
const HARD_CAP: usize = 2 * MAX_BEHIND;

type Opened = Result<StoreResponse, StoreError>;

enum State<St: Store> {
    /// Not streamed: a small entry, a combined `206`, a store that does not stream, or no
    /// runtime to open the write on.
    Off,
    /// Streamed once `from` body bytes have passed.
    Waiting {
        from: u64,
    },
    /// The `PutStream` is in flight.
    /// Polled with each chunk (it needs no task of its own: the store works on its own threads
    /// or tasks), awaited at the end of the body.
    Opening(Pin<Box<StoreCall<St>>>),
    Open(BlobWriter),
    /// Given up (the store stalled past its timeout): not stored, the body goes on.
    Lost,
}

/// The streaming side of a sealing sink.
pub(super) struct Streaming<St: Store> {
    state: State<St>,
    /// Records taken from the sealing and not handed to a writer (yet).
    held: Vec<Bytes>,
    held_len: usize,
    /// While the body waits for the store: when it stops waiting and gives the write up.
    deadline: Option<Pin<Box<crate::timer::Deadline>>>,
}

impl<St: Store> Streaming<St> {
    /// For an entry that could be streamed (`eligible`: no splice, a store that has not said it
    /// does not stream) with this announced body length.
    pub(super) fn new(eligible: bool, expected_len: Option<u64>) -> Self {
        let state = match expected_len {
            _ if !eligible => State::Off,
            Some(n) if n < STREAM_FROM => State::Off,
            Some(_) => State::Waiting { from: 0 },
            None => State::Waiting { from: STREAM_FROM },
        };
        Self {
            state,
            held: Vec::new(),
            held_len: 0,
            deadline: None,
        }
    }

    /// Whether [`step`](Self::step) has anything to do (never, for a small entry).
    #[inline]
    pub(super) fn active(&self) -> bool {
        !matches!(self.state, State::Off)
    }

    /// After `received` body bytes were appended to `sealing`: opens the write, or hands the
    /// closed records over, or holds them. `false` when the write was lost (counted, logged):
    /// the entry is not stored.
    pub(super) fn step(&mut self, received: u64, sealing: &mut Sealing, write: &Write<St>) -> bool {
        if let State::Waiting { from } = self.state {
            if received < from {
                return true;
            }
            self.state = match open(write) {
                Some(call) => State::Opening(call),
                None => State::Off,
            };
        }
        if !self.poll_open(&mut Context::from_waker(Waker::noop()), write) {
            return false;
        }
        match &mut self.state {
            State::Off | State::Waiting { .. } => true,
            State::Lost => false,
            State::Opening(_) => {
                for record in sealing.take_records() {
                    self.held_len += record.len();
                    self.held.push(record);
                }
                self.held_len <= HARD_CAP || lost(write, Err(behind()))
            }
            State::Open(writer) => {
                let records = std::mem::take(&mut self.held)
                    .into_iter()
                    .chain(sealing.take_records());
                self.held_len = 0;
                for record in records {
                    if writer.append(record).is_err() {
                        // The store gave up on it; its answer says why, at the commit.
                        return true;
                    }
                }
                writer.queued() <= HARD_CAP || lost(write, Err(behind()))
            }
        }
    }

    /// Polls the `PutStream` while it is in flight; `false` when the write is lost.
    fn poll_open(&mut self, cx: &mut Context<'_>, write: &Write<St>) -> bool {
        if let State::Opening(call) = &mut self.state {
            if let Poll::Ready(answer) = call.as_mut().poll(cx) {
                match opened(write, answer) {
                    Ok(Some(writer)) => self.state = State::Open(writer),
                    Ok(None) => self.state = State::Off,
                    Err(e) => {
                        self.state = State::Lost;
                        return lost(write, e);
                    }
                }
            }
        }
        true
    }

    /// Ready when the body may go on: the store is at most [`MAX_BEHIND`] behind, or the write
    /// was given up. Pending (waking `cx` when the store takes more) while it is further behind,
    /// for the store timeout at most: then the write is lost and the body goes on.
    pub(super) fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        sealing: &mut Sealing,
        write: &Write<St>,
    ) -> Poll<()> {
        if !self.poll_open(cx, write) {
            return Poll::Ready(());
        }
        if let State::Open(_) = self.state {
            // Records held while it opened go to the writer now.
            if !self.held.is_empty() && !self.step(u64::MAX, sealing, write) {
                return Poll::Ready(());
            }
        }
        let behind = match &self.state {
            State::Opening(_) => self.held_len > MAX_BEHIND,
            State::Open(writer) => writer.poll_drained(cx, MAX_BEHIND).is_pending(),
            _ => false,
        };
        if !behind {
            self.deadline = None;
            return Poll::Ready(());
        }
        let timeout = write.config.store_timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(write.config.timer.sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.deadline = None;
            self.state = State::Lost;
            self.held.clear();
            lost(write, Err(stalled(timeout)));
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// The body has ended: the store write to wait for.
    pub(super) fn finish(
        self,
        sealing: Sealing,
        trailers: Option<&HeaderMap>,
        write: Write<St>,
    ) -> Result<PutFuture, SealError> {
        let Streaming { state, held, .. } = self;
        if let State::Lost = state {
            // Given up (counted then): part of the body went to a writer that is gone, so
            // nothing may be written now; waiters are released as not stored.
            drop(write);
            return Ok(Box::pin(async {}));
        }
        if held.is_empty() && !matches!(state, State::Opening(_) | State::Open(_)) {
            // Never streamed: exactly as ever.
            return Ok(write.put(match sealing.finish_sealed(trailers)? {
                Sealed::One(one) => BlobParts::from(one),
                Sealed::Parts(parts) => BlobParts::from(parts),
            }));
        }
        let (prefix, rest) = sealing.finish_split(trailers)?;
        let body = held.into_iter().chain(rest);
        let writer = match state {
            // Returned above.
            State::Lost => return Ok(Box::pin(async {})),
            State::Off | State::Waiting { .. } => {
                // Held while a store that does not stream answered: the whole entry, in parts.
                let parts: BlobParts = std::iter::once(prefix).chain(body).collect();
                return Ok(write.put(parts));
            }
            State::Open(writer) => Ok(writer),
            State::Opening(answer) => Err(answer),
        };
        let body: Vec<Bytes> = body.collect();
        Ok(Box::pin(async move {
            let mut writer = match writer {
                Ok(writer) => writer,
                Err(call) => {
                    let answer = call.await;
                    match opened(&write, answer) {
                        Ok(Some(writer)) => writer,
                        Ok(None) => {
                            let parts: BlobParts = std::iter::once(prefix).chain(body).collect();
                            return write.put(parts).await;
                        }
                        Err(e) => {
                            lost(&write, e);
                            return;
                        }
                    }
                }
            };
            for record in body {
                if writer.append(record).is_err() {
                    break;
                }
            }
            commit(write, writer, prefix).await;
        }))
    }
}

/// Starts the `PutStream`; `None` without a runtime (a store's writer needs one).
fn open<St: Store>(write: &Write<St>) -> Option<Pin<Box<StoreCall<St>>>> {
    crate::rt::handle()?;
    let key = write.streamed_key()?.clone();
    let call = write.config.call(
        &write.store,
        StoreRequest::PutStream {
            key,
            ttl: Some(write.ttl),
            tags: write.tags.clone(),
        },
    );
    Some(Box::pin(call))
}

/// The store's answer to the `PutStream`: a writer, `None` for a store that does not stream
/// (remembered), or why the write is lost: the store's refusal (`NotStored`, counted as one by
/// [`outcome`]) or an error.
fn opened<St: Store>(write: &Write<St>, answer: Opened) -> Result<Option<BlobWriter>, Opened> {
    match answer {
        Ok(StoreResponse::Writer(writer)) => Ok(Some(writer)),
        Ok(StoreResponse::Unsupported) => {
            write.config.store_streams.store(false, Ordering::Relaxed);
            Ok(None)
        }
        Ok(StoreResponse::NotStored) => Err(Ok(StoreResponse::NotStored)),
        Ok(other) => Err(Err(StoreError::failed(
            format!("store answered a streamed write with {other:?}").into(),
        ))),
        Err(e) => Err(Err(e)),
    }
}

fn stalled(timeout: Duration) -> StoreError {
    StoreError::failed(
        format!(
            "the store took nothing of the streamed write for {} ms while the body waited",
            timeout.as_millis()
        )
        .into(),
    )
}

fn behind() -> StoreError {
    StoreError::failed(
        format!(
            "the store fell more than {} MiB behind the body",
            HARD_CAP >> 20
        )
        .into(),
    )
}

/// Counts and logs a lost streamed write (refused by the store, or failed); always `false`
/// (not stored).
fn lost<St: Store>(write: &Write<St>, why: Opened) -> bool {
    if let Some(key) = write.streamed_key() {
        outcome(&write.config, key, 0, write.ttl, why);
    }
    false
}

/// Commits with the prefix, bounded by the store timeout; coalesced waiters are told only of a
/// commit that succeeded.
async fn commit<St: Store>(write: Write<St>, writer: BlobWriter, prefix: Bytes) {
    let Write {
        keys,
        variant_only,
        ttl,
        config,
        store,
        leader,
        ..
    } = write;
    let mut keys = keys.into_iter();
    if variant_only {
        // The primary key holds another variant: left as it is.
        keys.next();
    }
    let Some(key) = keys.next() else {
        return;
    };
    let size = prefix.len();
    let committed =
        crate::timer::timeout(&config.timer, config.store_timeout, writer.commit(prefix));
    // A response that varies: its variant's own key may hold an older copy (see the module's
    // documentation). Removed while the write commits (another key), so that the end of the body
    // waits one store timeout at most, and before waiters are told. A failure leaves that copy,
    // to expire as it would have, and is counted like a lost write (as a failed invalidation
    // is); a store whose breaker is open is skipped, as for any write.
    let deletes = keys.map(|variant| {
        let delete = config.call(
            &store,
            StoreRequest::Delete {
                key: variant.clone(),
            },
        );
        let config = config.clone();
        async move {
            match delete.await {
                Ok(_) => {}
                Err(e) if e.is_unavailable() => config.metrics.record(Event::StoreSkipped),
                Err(e) => {
                    config.metrics.record(Event::StoreWriteError);
                    tracing::warn!(key = %variant, error = %e, "could not remove an older copy of a variant");
                }
            }
        }
    });
    let (answer, _) =
        futures_util::future::join(committed, futures_util::future::join_all(deletes)).await;
    if outcome(&config, &key, size, ttl, flatten(answer)) {
        if let Some(leader) = leader {
            leader.stored();
        }
    }
}

/// The store write of a sealed entry.
pub(super) struct Write<St> {
    /// The names a whole entry is written under: the primary key, then the variant's own key
    /// for a response that varies.
    pub(super) keys: Vec<CacheKey>,
    /// A streamed entry goes under the variant's own key alone (`keys[1]`): the primary key holds
    /// another variant, found at the lookup. Otherwise under the primary key, and the variant's
    /// own key is deleted.
    pub(super) variant_only: bool,
    pub(super) tags: Vec<String>,
    pub(super) ttl: Duration,
    pub(super) config: std::sync::Arc<crate::config::Config>,
    pub(super) store: St,
    pub(super) leader: Option<crate::coalesce::Leader>,
}

impl<St: Store> Write<St> {
    /// The one name a streamed entry is written under.
    fn streamed_key(&self) -> Option<&CacheKey> {
        self.keys.get(usize::from(self.variant_only))
    }

    pub(super) fn put(self, blob: BlobParts) -> PutFuture {
        let Write {
            keys,
            tags,
            ttl,
            config,
            store,
            leader,
            ..
        } = self;
        // One key (the common case): one write, nothing to share between writes, the future
        // built in place (no `join_all`, no moves of it).
        if keys.len() == 1 {
            if let Some(key) = keys.into_iter().next() {
                let put = put_key(&config, &store, key, blob, tags, ttl, None, leader);
                return Box::pin(futures_util::FutureExt::map(put, drop));
            }
            return Box::pin(async {});
        }
        // The writes run together, so the end of the body waits one store timeout at most,
        // whatever the number of keys; joined at most once for a store that takes whole blobs
        // only.
        let joined = std::sync::Arc::new(std::sync::OnceLock::<Bytes>::new());
        let puts = keys.into_iter().map(|key| {
            let (blob, tags) = (blob.clone(), tags.clone());
            put_key(
                &config,
                &store,
                key,
                blob,
                tags,
                ttl,
                Some(joined.clone()),
                None,
            )
        });
        let all = futures_util::future::join_all(puts);
        Box::pin(async move {
            if let (true, Some(leader)) = (all.await.into_iter().all(|stored| stored), leader) {
                leader.stored();
            }
        })
    }
}

/// The write of `blob` under `key`, started now; whether it was stored (`leader`, if given, is
/// told when it was). A store that keeps parts gets them; one that deals in whole blobs said so
/// once (`Unsupported`) and gets them joined from then on (once for all keys, in `joined`, when
/// there are several).
#[allow(clippy::too_many_arguments)]
fn put_key<St: Store>(
    config: &std::sync::Arc<crate::config::Config>,
    store: &St,
    key: CacheKey,
    blob: BlobParts,
    tags: Vec<String>,
    ttl: Duration,
    joined: Option<std::sync::Arc<std::sync::OnceLock<Bytes>>>,
    leader: Option<crate::coalesce::Leader>,
) -> impl Future<Output = bool> + Send + 'static {
    let size = blob.len();
    let tagged = !tags.is_empty();
    let takes_parts = config.store_takes_parts.load(Ordering::Relaxed);
    let own = std::sync::OnceLock::new();
    let whole = move |blob: &BlobParts, key: &CacheKey, tags: &Vec<String>| {
        let cell: &std::sync::OnceLock<Bytes> = joined.as_deref().unwrap_or(&own);
        let blob = cell.get_or_init(|| blob.to_bytes()).clone();
        if tags.is_empty() {
            StoreRequest::Put {
                key: key.clone(),
                blob,
                ttl: Some(ttl),
            }
        } else {
            StoreRequest::PutTagged {
                key: key.clone(),
                blob,
                ttl: Some(ttl),
                tags: tags.clone(),
            }
        }
    };
    let first = if takes_parts {
        StoreRequest::PutParts {
            key: key.clone(),
            parts: blob.clone(),
            ttl: Some(ttl),
            tags: tags.clone(),
        }
    } else {
        whole(&blob, &key, &tags)
    };
    let put = config.call(store, first);
    let config = config.clone();
    let store = store.clone();
    async move {
        let mut answer = put.await;
        if takes_parts && matches!(answer, Ok(StoreResponse::Unsupported)) {
            config.store_takes_parts.store(false, Ordering::Relaxed);
            answer = config.call(&store, whole(&blob, &key, &tags)).await;
        }
        let answer = match answer {
            // A store without a tag index may say so: the same write, untagged.
            Ok(StoreResponse::Unsupported) if tagged => {
                config.call(&store, whole(&blob, &key, &Vec::new())).await
            }
            other => other,
        };
        let stored = outcome(&config, &key, size, ttl, answer);
        if let (true, Some(leader)) = (stored, leader) {
            leader.stored();
        }
        stored
    }
}

/// Counts and logs the answer to a write of the entry under `key`: whether it was stored.
pub(super) fn outcome(
    config: &crate::config::Config,
    key: &CacheKey,
    size: usize,
    ttl: Duration,
    answer: Result<StoreResponse, crate::StoreError>,
) -> bool {
    match answer {
        Ok(StoreResponse::NotStored) => {
            // Refused (too large for the store, too many tags, streamed writes at the store's
            // cap): not stored, and the waiters must not be told it was. Not an error: the
            // store works, and said no.
            config.metrics.record(Event::StoreRefused);
            crate::metrics::export::store_refused();
            tracing::debug!(key = %key, size, "the store refused the entry; response not cached");
            false
        }
        Ok(_) => {
            config.metrics.record(Event::Stored);
            crate::metrics::export::stored();
            tracing::debug!(key = %key, size, ttl = ttl.as_secs(), "stored");
            true
        }
        Err(e) if e.is_unavailable() => {
            config.metrics.record(Event::StoreSkipped);
            tracing::debug!(key = %key, "store circuit breaker open; response not cached");
            false
        }
        Err(e) => {
            config.metrics.record(Event::StoreWriteError);
            tracing::warn!(key = %key, error = %e, "store write failed; response not cached");
            false
        }
    }
}
