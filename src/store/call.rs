//! One store operation as the cache makes it: bounded by a timeout, and with the store's error,
//! the timeout and an answer of the wrong kind all flattened into one [`StoreError`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use pin_project_lite::pin_project;
use tower::util::{Oneshot, ServiceExt};

use super::breaker::{CircuitBreaker, Permit};
use super::{BlobParts, BlobStream, Store, StoreRequest, StoreResponse};
use crate::error::{BoxError, StoreError};
use crate::metrics::export::Meter;
use crate::timer::{self, Elapsed, Timed, TimerProbe};

pin_project! {
    /// A store operation in flight, bounded by a timeout, through the layer's circuit breaker
    /// (when it has one): its answer, a timeout and an open breaker all end as `StoreError`s,
    /// and the outcome is reported to the breaker.
    pub(crate) struct StoreCall<St: Store> {
        #[pin]
        inner: Option<Timed<Oneshot<St, StoreRequest>>>,
        permit: Option<Permit>,
        is_lookup: bool,
        meter: Meter,
        // Runs once the store answered (or the call failed without asking it).
        then: Option<Box<dyn FnOnce() + Send + Sync>>,
    }
}

impl<St: Store> StoreCall<St> {
    /// Runs `f` once this call has its answer, whatever it is.
    pub(crate) fn then_run(mut self, f: Box<dyn FnOnce() + Send + Sync>) -> Self {
        self.then = Some(f);
        self
    }
}

/// Sends `request` to a clone of `store`, bounded by `timeout`, unless `breaker` is open.
pub(crate) fn call<St: Store>(
    store: &St,
    timer: &Arc<TimerProbe>,
    timeout: Duration,
    breaker: Option<&CircuitBreaker>,
    request: StoreRequest,
) -> StoreCall<St> {
    // A whole-store walk is never the probe (it would hold the breaker half-open for minutes).
    let may_probe = !matches!(
        request,
        StoreRequest::Keys | StoreRequest::Clear | StoreRequest::PurgeTag { .. }
    );
    let is_lookup = matches!(request, StoreRequest::Get { .. });
    let meter = Meter::start(&request);
    let permit = match breaker.map(|b| b.admit(may_probe)) {
        // Open: the store is not asked.
        Some(None) => {
            return StoreCall {
                inner: None,
                permit: None,
                is_lookup,
                meter,
                then: None,
            }
        }
        Some(permit) => permit,
        None => None,
    };
    StoreCall {
        inner: Some(timer::timeout(
            timer,
            timeout,
            store.clone().oneshot(request),
        )),
        permit,
        is_lookup,
        meter,
        then: None,
    }
}

impl<St: Store> Future for StoreCall<St> {
    type Output = Result<StoreResponse, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let out = Err(StoreError::unavailable());
            this.meter.done(&out);
            if let Some(then) = this.then.take() {
                then();
            }
            return Poll::Ready(out);
        };
        let out = flatten(ready!(inner.poll(cx)));
        this.meter.done(&out);
        if let Some(then) = this.then.take() {
            then();
        }
        if let Some(permit) = this.permit.take() {
            match &out {
                Ok(_) => permit.report(true),
                // Timeouts always count; a lookup's error counts; a write the store refused,
                // or an open breaker further down, says nothing about the store's reads.
                Err(e) if e.is_timeout() || (*this.is_lookup && !e.is_unavailable()) => {
                    permit.report(false)
                }
                Err(_) => permit.neutral(),
            }
        }
        Poll::Ready(out)
    }
}

/// A store answer, with a timeout and the store's error both as [`StoreError`]s.
pub(crate) fn flatten<E: Into<BoxError>>(
    result: Result<Result<StoreResponse, E>, Elapsed>,
) -> Result<StoreResponse, StoreError> {
    match result {
        Ok(Ok(response)) => Ok(response),
        // A breaker layer under the cache's own says "unavailable" in a box: keep its kind.
        Ok(Err(e)) => match e.into().downcast::<StoreError>() {
            Ok(inner) if inner.is_unavailable() => Err(*inner),
            Ok(inner) => Err(StoreError::failed(inner)),
            Err(other) => Err(StoreError::failed(other)),
        },
        Err(Elapsed) => Err(StoreError::timed_out()),
    }
}

/// What a lookup found, in the shape the store gave it.
#[derive(Debug)]
pub(crate) enum Found {
    /// One buffer.
    Whole(Bytes),
    /// The buffers it was written as.
    Parts(BlobParts),
    /// To be read as needed.
    Stream(BlobStream),
}

impl StoreResponse {
    /// The answer to a `Get`: a store that answers a lookup with something else is as broken
    /// as one that errors.
    pub(crate) fn into_found(self) -> Result<Option<Found>, StoreError> {
        let odd = |what: &str| {
            Err(StoreError::failed(
                format!("store answered a lookup with {what}").into(),
            ))
        };
        match self {
            StoreResponse::Blob(blob) => Ok(blob.map(Found::Whole)),
            StoreResponse::Parts(parts) => Ok(Some(Found::Parts(parts))),
            StoreResponse::Stream(stream) => Ok(Some(Found::Stream(stream))),
            StoreResponse::Done => odd("Done"),
            StoreResponse::Keys(_) => odd("Keys"),
            StoreResponse::Unsupported => odd("Unsupported"),
            StoreResponse::NotStored => odd("NotStored"),
            StoreResponse::KeysPage { .. } => odd("KeysPage"),
            StoreResponse::Purged { .. } => odd("Purged"),
            StoreResponse::Writer(_) => odd("Writer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_answered_with_anything_but_a_blob_is_a_store_error() {
        assert!(matches!(StoreResponse::Blob(None).into_found(), Ok(None)));
        for odd in [
            StoreResponse::Done,
            StoreResponse::Keys(Vec::new()),
            StoreResponse::Unsupported,
            StoreResponse::NotStored,
            StoreResponse::Purged {
                removed: 1,
                complete: true,
            },
        ] {
            assert!(odd.into_found().is_err());
        }
        assert!(flatten::<BoxError>(Err(Elapsed)).unwrap_err().is_timeout());
        assert!(!flatten::<BoxError>(Ok(Err("down".into())))
            .unwrap_err()
            .is_timeout());
    }
}
