//! Opening what a lookup found: a blob verified whole, or the head of an entry a store streams
//! (`StoreResponse::Stream`), read until the envelope's header and head record are whole,
//! verified and decoded, the rest of the stream becoming the body, verified a segment at a time
//! as the caller reads it (bounded by the store timeout, like the lookup itself). Then what
//! cannot be served is refused, deleted or missed, as the tamper policy says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::body::verified::{OnBad, Verified};
use crate::config::Config;
use crate::config::OnBadSignature;
use crate::entry::{Entry, EntryBody};
use crate::envelope::{OpenError, Opened, Pending};
use crate::error::StoreError;
use crate::key::CacheKey;
use crate::metrics::Event;
use crate::respond;
use crate::status::CacheStatus;
use crate::store::{BlobStream, Store, StoreRequest};
use http::HeaderMap;

use super::lookup::{Lookup, Next, Unusable};
use super::Ctx;

/// A head read and verified, with what was read past it and the rest of the stream.
pub(super) struct HeadRead {
    opened: Opened,
    pending: Pending,
    stream: BlobStream,
}

impl HeadRead {
    /// The entry, its body to be verified as it is read (with the store timeout between two of
    /// the store's buffers); `on_bad` runs if a segment fails.
    pub(super) fn into_entry(self, on_bad: OnBad, config: &Config) -> Entry {
        let Opened {
            head,
            trailers,
            body,
            ..
        } = self.opened;
        let len = body.len();
        Entry {
            head,
            trailers,
            body: EntryBody::Stream {
                source: Box::new(Verified::new(
                    self.stream,
                    self.pending,
                    body,
                    on_bad,
                    config.timer.clone(),
                    config.store_timeout,
                )),
                len,
            },
        }
    }
}

/// Why no head was read.
pub(super) enum HeadError {
    /// The blob is not a usable entry (the tamper policy applies to a `BadSignature`).
    Open(OpenError),
    /// The store failed, or took longer than its timeout.
    Store(StoreError),
}

pub(super) type HeadFuture =
    Pin<Box<dyn Future<Output = Result<HeadRead, HeadError>> + Send + 'static>>;

/// Reads `key`'s head from `stream`.
pub(super) fn read_head(config: &Arc<Config>, key: CacheKey, stream: BlobStream) -> HeadFuture {
    let envelope = config.envelope.clone();
    let read = async move {
        let mut stream = stream;
        let mut pending = Pending::default();
        loop {
            match envelope.open_head(&key, &mut pending) {
                Ok(Some(opened)) if opened.downgraded => {
                    return Err(HeadError::Open(OpenError::Unusable(
                        crate::envelope::DOWNGRADED,
                    )))
                }
                Ok(Some(opened)) => {
                    return Ok(HeadRead {
                        opened,
                        pending,
                        stream,
                    })
                }
                Ok(None) => match stream.next().await {
                    Some(Ok(bytes)) => pending.push(bytes),
                    Some(Err(e)) => return Err(HeadError::Store(StoreError::failed(e))),
                    None => {
                        return Err(HeadError::Open(
                            match envelope.open_head(&key, &mut pending) {
                                Err(e) => e,
                                // Ended before its head: cut short (tampering when keyed,
                                // as for a whole blob).
                                Ok(_) => envelope.truncated(&key),
                            },
                        ));
                    }
                },
                Err(e) => return Err(HeadError::Open(e)),
            }
        }
    };
    let timed = crate::timer::timeout(&config.timer, config.store_timeout, read);
    Box::pin(async move {
        match timed.await {
            Ok(read) => read,
            Err(crate::timer::Elapsed) => Err(HeadError::Store(StoreError::timed_out())),
        }
    })
}

impl<St: Store> Ctx<St> {
    /// The head of a streamed entry was read (or not): the entry, its body verified as it is
    /// read, goes where a whole one goes.
    pub(super) fn on_head<B>(
        &mut self,
        key: CacheKey,
        read: Result<super::head::HeadRead, super::head::HeadError>,
        request_headers: Option<&HeaderMap>,
    ) -> Lookup<B> {
        let Some(request_headers) = request_headers else {
            return Lookup::Go(Next::Forward);
        };
        let opened = match read {
            Ok(read) => Ok(read.into_entry(self.on_bad_segment(&key), &self.config)),
            Err(super::head::HeadError::Open(e)) => Err(e),
            Err(super::head::HeadError::Store(e)) => return self.store_failed(&key, e),
        };
        match self.checked(&key, opened) {
            Ok(entry) => self.decide(key, entry, request_headers),
            Err(why) => self.unusable(key, why),
        }
    }

    /// What a streamed body does when one of its segments fails after the response has
    /// started: count a failed proof, and delete the entry (unless read-only). One unusable for
    /// another reason (an unsigned entry's checksum, a codec this build lacks) is deleted too:
    /// a whole entry found so is a miss, replaced by the next response, and this one would
    /// otherwise end every hit the same way until it expires.
    fn on_bad_segment(&self, key: &CacheKey) -> crate::body::verified::OnBad {
        let config = self.config.clone();
        let store = self.store.clone();
        let key = key.clone();
        Box::new(move |failed| {
            config.metrics.not_opened(failed);
            match failed {
                OpenError::BadSignature(bad) => {
                    tracing::warn!(key = %key, error = %bad, read_only = config.read_only, "a stored body failed verification while streamed; ended with an error");
                }
                OpenError::Unusable(why) => {
                    tracing::warn!(key = %key, reason = why, read_only = config.read_only, "a stored body is unusable; ended with an error");
                }
            }
            if config.read_only {
                return;
            }
            tracing::debug!(key = %key, "deleting the entry whose body failed");
            let delete = config.call(&store, StoreRequest::Delete { key });
            // Started at once (an in-memory store deletes here): a delete left for later could
            // land after the write of the response fetched in the entry's place.
            let metrics = config.metrics.clone();
            crate::rt::run_soon(Box::pin(async move {
                if let Err(e) = delete.await {
                    metrics.record(Event::StoreWriteError);
                    tracing::warn!(error = %e, "could not delete an entry whose body failed");
                }
            }));
        })
    }

    /// A verified and decoded entry (or why not), with the user's filter applied again.
    pub(super) fn checked(
        &mut self,
        key: &CacheKey,
        opened: Result<Entry, OpenError>,
    ) -> Result<Entry, Unusable> {
        let entry = opened.map_err(|e| self.not_opened(key, e))?;
        // Received before the layer's `not_before`: as if absent (bounds replay).
        if self
            .config
            .not_before
            .is_some_and(|t| entry.head.response_time < t)
        {
            tracing::debug!(key = %key, "stored entry older than not_before; treating as a miss");
            return Err(Unusable::Undecodable);
        }
        // The user's filter, applied again on read: an entry it now rejects is removed.
        if let Some(filter) = &self.config.filter {
            if !filter(&respond::response_parts(&entry.head)) {
                tracing::debug!(key = %key, "stored entry rejected by the filter");
                return Err(Unusable::Filtered);
            }
        }
        Ok(entry)
    }

    /// Why a stored blob that did not open cannot answer; counted (`CacheMetrics::not_opened`).
    pub(super) fn not_opened(&self, key: &CacheKey, error: OpenError) -> Unusable {
        self.config.metrics.not_opened(&error);
        match error {
            OpenError::BadSignature(bad) => Unusable::BadSignature(bad),
            OpenError::Unusable(why) => {
                tracing::debug!(key = %key, reason = why, "stored entry unusable; treating as a miss");
                Unusable::Undecodable
            }
        }
    }

    /// A stored blob that cannot be served: never served, whatever happens next.
    pub(super) fn unusable<B>(&mut self, key: CacheKey, why: Unusable) -> Lookup<B> {
        match why {
            Unusable::BadSignature(bad) => match self.config.on_bad_signature {
                OnBadSignature::Error => {
                    tracing::warn!(key = %key, error = %bad, "refusing a stored entry");
                    Lookup::Fail(Box::new(bad))
                }
                OnBadSignature::Refetch if self.config.read_only => {
                    tracing::warn!(key = %key, error = %bad, "ignoring a stored entry that fails verification (read-only)");
                    self.nothing_usable()
                }
                OnBadSignature::Refetch => {
                    tracing::warn!(key = %key, error = %bad, "deleting a stored entry and refetching");
                    Lookup::Go(Next::Delete(key))
                }
            },
            Unusable::Undecodable => self.nothing_usable(),
            Unusable::Filtered if self.config.read_only => self.nothing_usable(),
            Unusable::Filtered => {
                self.status = CacheStatus::Miss;
                Lookup::Go(Next::Delete(key))
            }
        }
    }
}
