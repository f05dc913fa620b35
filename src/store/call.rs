//! One store operation as the cache makes it: bounded by a timeout, and with the store's error,
//! the timeout and an answer of the wrong kind all flattened into one [`StoreError`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tower::util::{Oneshot, ServiceExt};

use super::{Store, StoreRequest, StoreResponse};
use crate::error::{BoxError, StoreError};
use crate::timer::{self, Elapsed, Timed, TimerProbe};

/// A store operation in flight, bounded by a timeout.
pub(crate) type StoreCall<St> = Timed<Oneshot<St, StoreRequest>>;

/// Sends `request` to a clone of `store`, bounded by `timeout`.
pub(crate) fn call<St: Store>(
    store: &St,
    timer: &Arc<TimerProbe>,
    timeout: Duration,
    request: StoreRequest,
) -> StoreCall<St> {
    timer::timeout(timer, timeout, store.clone().oneshot(request))
}

/// A store answer, with a timeout and the store's error both as [`StoreError`]s.
pub(crate) fn flatten<E: Into<BoxError>>(
    result: Result<Result<StoreResponse, E>, Elapsed>,
) -> Result<StoreResponse, StoreError> {
    match result {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(StoreError::failed(e.into())),
        Err(Elapsed) => Err(StoreError::timed_out()),
    }
}

impl StoreResponse {
    /// The answer to a `Get`: a store that answers a lookup with something else is as broken
    /// as one that errors.
    pub(crate) fn into_blob(self) -> Result<Option<Bytes>, StoreError> {
        match self {
            StoreResponse::Blob(blob) => Ok(blob),
            StoreResponse::Done => Err(StoreError::failed(
                "store answered a lookup with Done".into(),
            )),
            StoreResponse::Keys(_) => Err(StoreError::failed(
                "store answered a lookup with Keys".into(),
            )),
            StoreResponse::Unsupported => Err(StoreError::failed(
                "store answered a lookup with Unsupported".into(),
            )),
            StoreResponse::NotStored => Err(StoreError::failed(
                "store answered a lookup with NotStored".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_answered_with_anything_but_a_blob_is_a_store_error() {
        assert!(matches!(StoreResponse::Blob(None).into_blob(), Ok(None)));
        for odd in [
            StoreResponse::Done,
            StoreResponse::Keys(Vec::new()),
            StoreResponse::Unsupported,
            StoreResponse::NotStored,
        ] {
            assert!(odd.into_blob().is_err());
        }
        assert!(flatten::<BoxError>(Err(Elapsed)).unwrap_err().is_timeout());
        assert!(!flatten::<BoxError>(Ok(Err("down".into())))
            .unwrap_err()
            .is_timeout());
    }
}
