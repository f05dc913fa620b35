//! Reading the head of an entry a store streams (`StoreResponse::Stream`): bytes are read until
//! the envelope's header and head record are whole, the head is verified and decoded, and the
//! rest of the stream becomes the body, verified a segment at a time as the caller reads it.
//! Bounded by the store timeout, like the lookup itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::body::verified::{OnBad, Verified};
use crate::config::Config;
use crate::entry::{Entry, EntryBody};
use crate::envelope::{OpenError, Opened, Pending};
use crate::error::StoreError;
use crate::key::CacheKey;
use crate::store::BlobStream;

/// A head read and verified, with what was read past it and the rest of the stream.
pub(super) struct HeadRead {
    opened: Opened,
    pending: Pending,
    stream: BlobStream,
}

impl HeadRead {
    /// The entry, its body to be verified as it is read; `on_bad` runs if a segment fails.
    pub(super) fn into_entry(self, on_bad: OnBad) -> Entry {
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
                source: Box::new(Verified::new(self.stream, self.pending, body, on_bad)),
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
                                // Ended before its head: cut short.
                                Ok(_) => OpenError::Unusable("entry cut short before its head"),
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
