//! Where sealed entries live: the [`Store`] contract and the stores this crate ships.
//!
//! A store is any [`tower::Service`] that takes a [`StoreRequest`] and answers with a
//! [`StoreResponse`]. It deals in opaque blobs and [`CacheKey`]s and never sees an HTTP type,
//! so a store can be wrapped in any stock tower layer (timeouts, retries, concurrency limits,
//! metrics) and a custom backend is a plain `Service` implementation.
//!
//! # Writing a store
//!
//! ```
//! use std::collections::HashMap;
//! use std::convert::Infallible;
//! use std::future::{ready, Ready};
//! use std::sync::{Arc, Mutex};
//! use std::task::{Context, Poll};
//! use hyper_client_cache::{StoreRequest, StoreResponse};
//!
//! /// A (naive) store over a HashMap that ignores TTLs.
//! #[derive(Clone, Default)]
//! struct MapStore(Arc<Mutex<HashMap<String, bytes::Bytes>>>);
//!
//! impl tower::Service<StoreRequest> for MapStore {
//!     type Response = StoreResponse;
//!     type Error = Infallible;
//!     type Future = Ready<Result<StoreResponse, Infallible>>;
//!
//!     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
//!         Poll::Ready(Ok(()))
//!     }
//!
//!     fn call(&mut self, req: StoreRequest) -> Self::Future {
//!         let mut map = self.0.lock().unwrap();
//!         ready(Ok(match req {
//!             StoreRequest::Get { key, .. } => StoreResponse::Blob(map.get(key.as_str()).cloned()),
//!             StoreRequest::Put { key, blob, .. } => {
//!                 map.insert(key.as_str().to_owned(), blob);
//!                 StoreResponse::Done
//!             }
//!             StoreRequest::Delete { key } => {
//!                 map.remove(key.as_str());
//!                 StoreResponse::Done
//!             }
//!             // Requests added in later releases: answer that they are not supported.
//!             _ => StoreResponse::Unsupported,
//!         }))
//!     }
//! }
//!
//! fn assert_store<S: hyper_client_cache::Store>(_: &S) {}
//! assert_store(&MapStore::default());
//! ```

mod blob;
mod breaker;
mod call;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;
#[cfg(feature = "disk")]
mod disk;
#[cfg(feature = "memory")]
mod memory;
#[cfg(all(feature = "redis", feature = "memory"))]
mod near;
#[cfg(feature = "redis")]
mod redis;
mod writer;

use std::time::Duration;

use bytes::Bytes;
use tower::Service;

#[cfg(feature = "disk")]
#[cfg_attr(docsrs, doc(cfg(feature = "disk")))]
pub use disk::{DiskStore, DiskStoreBuilder};
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use memory::MemoryStore;
#[cfg(all(feature = "redis", feature = "memory"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "redis", feature = "memory"))))]
pub use near::{
    NearCache, NearCacheBuilder, NearStats, DEFAULT_MAX_STALENESS, DEFAULT_NEAR_MAX_BYTES,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStore, RedisStoreBuilder, DEFAULT_PREFIX as DEFAULT_REDIS_PREFIX};

use crate::error::BoxError;
use crate::CacheKey;
pub use blob::{BlobParts, BlobStream};
pub use breaker::{
    BreakerState, Breaking, BreakingFuture, CircuitBreaker, DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_MAX_OPEN_FOR, DEFAULT_BREAKER_OPEN_FOR,
};
pub(crate) use call::{call, flatten, Found, StoreCall};
pub use writer::{BlobWriter, CommitFuture, Incoming, IncomingBlob, WriterClosed};

/// An operation on a store.
///
/// Marked `#[non_exhaustive]`: later releases add operations (for inspection and maintenance),
/// so a custom store should answer unknown requests with [`StoreResponse::Unsupported`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreRequest {
    /// Read the blob stored under `key`. Answer [`StoreResponse::Blob`] (`None` when absent or
    /// expired).
    ///
    /// Build one with [`StoreRequest::get`] (no bound) or with the fields.
    Get {
        /// The key to read.
        key: CacheKey,
        /// The largest blob the cache accepts (its
        /// [`max_blob_size`](crate::CacheLayer::max_blob_size)); `usize::MAX` when unbounded.
        ///
        /// A store may honour it: answer `Blob(None)` for a larger blob, ideally without reading
        /// or transferring it (the shipped stores do, except `MemoryStore`, which only holds what
        /// the cache wrote). A store may also ignore it: the cache checks the length of every
        /// blob again and refuses a larger one, so honouring it saves memory and bandwidth, it
        /// is not needed for correctness. A blob of exactly `max_len` bytes is within the bound.
        max_len: usize,
    },
    /// Store `blob` under `key`, replacing what was there. Answer [`StoreResponse::Done`].
    Put {
        /// The key to write.
        key: CacheKey,
        /// The sealed entry. Opaque and binary: store it byte for byte.
        blob: Bytes,
        /// How long the store should keep the blob; `None` keeps it until evicted. The cache
        /// itself never serves an entry past its HTTP lifetime, so this is a hint for reclaiming
        /// space, not a correctness requirement.
        ttl: Option<Duration>,
    },
    /// Like [`Put`](Self::Put), for an entry that carries cache tags (a `Cache-Tag` or
    /// `Surrogate-Key` field; see [`CacheLayer::tag_header`](crate::CacheLayer::tag_header)).
    ///
    /// A store that keeps a tag index (so that [`PurgeTag`](Self::PurgeTag) need not read every
    /// entry) records `key` under each tag, then stores the blob. Any other store does what it
    /// does for a `Put`, or answers [`StoreResponse::Unsupported`]: the cache then sends the same
    /// write as a plain `Put`.
    PutTagged {
        /// The key to write.
        key: CacheKey,
        /// The sealed entry (which carries the tags too, signed).
        blob: Bytes,
        /// As for [`Put`](Self::Put).
        ttl: Option<Duration>,
        /// The names of the entry's tags in the index: opaque digests of the tags the origin
        /// sent, never the tags themselves (see
        /// [`Inspector::tag_index_names`](crate::Inspector::tag_index_names)). Printable ASCII.
        tags: Vec<String>,
    },
    /// [`Put`](Self::Put) or [`PutTagged`](Self::PutTagged) (when `tags` is not empty) of an
    /// entry given as a list of buffers, in order: the cache's own write, which concatenates
    /// nothing (the origin's chunks between the envelope's framing).
    ///
    /// A store that deals in whole blobs answers [`StoreResponse::Unsupported`] (as any unknown
    /// request): the cache then joins the parts and sends the same write as a `Put` or a
    /// `PutTagged`, and sends that from then on. Such a store keeps working unchanged.
    PutParts {
        /// The key to write.
        key: CacheKey,
        /// The sealed entry, in parts. Store the bytes in order, byte for byte.
        parts: BlobParts,
        /// As for [`Put`](Self::Put).
        ttl: Option<Duration>,
        /// As for [`PutTagged`](Self::PutTagged); empty for an entry without tags.
        tags: Vec<String>,
    },
    /// Start a streamed write of a large entry under `key`: answer [`StoreResponse::Writer`]
    /// with the cache's end of a [`BlobWriter::channel`], or [`StoreResponse::Unsupported`] (the
    /// cache then sends the entry as a [`PutParts`](Self::PutParts) once the body has ended, and
    /// never asks again).
    ///
    /// The cache sends it for entries of 1 MiB or more stored under one key, so that the body
    /// is never held in memory whole: it appends the body's buffers as they are sealed, then
    /// commits with the blob's *prefix* (its first bytes, known only at the end). The blob is
    /// the prefix followed by every appended buffer, in order; it becomes visible at the commit
    /// (atomically: before it, a reader finds the previous entry or none) and never if the
    /// writer is dropped (the cache aborts a write whose body failed, or that fell more than
    /// 16 MiB behind the body). `DiskStore` streams; the other shipped stores answer
    /// `Unsupported`.
    PutStream {
        /// The key to write.
        key: CacheKey,
        /// As for [`Put`](Self::Put).
        ttl: Option<Duration>,
        /// As for [`PutTagged`](Self::PutTagged); empty for an entry without tags.
        tags: Vec<String>,
    },
    /// Remove `key` if present. Answer [`StoreResponse::Done`].
    Delete {
        /// The key to remove.
        key: CacheKey,
    },
    /// List every key currently stored. Answer [`StoreResponse::Keys`].
    Keys,
    /// One page of the keys: from the start (`cursor: None`) or from where the previous page
    /// said to go on. Answer [`StoreResponse::KeysPage`], or [`StoreResponse::Unsupported`]
    /// (the inspector then lists with [`Keys`](Self::Keys)). For stores with more keys than fit
    /// in memory at once: a walk holds one page. A key may be listed on two pages (Redis `SCAN`
    /// does that while it rehashes); one stored for the whole walk is listed at least once.
    KeysPage {
        /// Where to go on from; `None` for the first page.
        cursor: Option<String>,
    },
    /// Remove every entry a [`PutTagged`](Self::PutTagged) recorded under `tag`, with the
    /// store's tag index. Answer [`StoreResponse::Purged`], or [`StoreResponse::Unsupported`]
    /// when the store keeps no index ([`Inspector::purge_tag`](crate::Inspector::purge_tag)
    /// then reads every entry's signed tags instead).
    PurgeTag {
        /// The tag's name in the index, as [`PutTagged`](Self::PutTagged) carried it.
        tag: String,
    },
    /// Remove every entry of this store. Answer [`StoreResponse::Done`].
    Clear,
}

impl StoreRequest {
    /// A [`StoreRequest::Get`] of `key` without a bound (`max_len: usize::MAX`).
    pub fn get(key: CacheKey) -> Self {
        StoreRequest::Get {
            key,
            max_len: usize::MAX,
        }
    }
}

/// A store's answer to a [`StoreRequest`].
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreResponse {
    /// The answer to [`StoreRequest::Get`]: the blob in one buffer, or `None` when absent.
    Blob(Option<Bytes>),
    /// An answer to [`StoreRequest::Get`]: the blob as the list of buffers it was written as
    /// (a memory store that keeps [`StoreRequest::PutParts`] as they came).
    Parts(BlobParts),
    /// An answer to [`StoreRequest::Get`]: the blob read as the cache needs it, in bounded
    /// memory (`DiskStore` for large files). See [`BlobStream`].
    Stream(BlobStream),
    /// The answer to [`StoreRequest::PutStream`]: the cache's end of the write.
    Writer(BlobWriter),
    /// The operation was carried out.
    Done,
    /// The answer to [`StoreRequest::Keys`].
    Keys(Vec<CacheKey>),
    /// The answer to [`StoreRequest::KeysPage`]: some keys, and where the next page starts
    /// (`None`: this was the last).
    KeysPage {
        /// The keys of this page (maybe none, with more pages to come).
        keys: Vec<CacheKey>,
        /// The cursor of the next page.
        next: Option<String>,
    },
    /// The answer to [`StoreRequest::PurgeTag`].
    Purged {
        /// How many keys were removed.
        removed: usize,
        /// Whether the index is known to have held every entry with the tag. `false` when it
        /// may have lost some (Redis evicted keys under `maxmemory`, and may have evicted a
        /// tag's set), or was found written by someone else (a key of another type under the
        /// set's name, a member that is not an entry): the inspector then also walks the
        /// store.
        complete: bool,
    },
    /// The store does not implement this operation.
    Unsupported,
    /// The answer to a [`StoreRequest::Put`] the store did not carry out: it refused to keep
    /// the blob (for example, larger than it can hold). Nothing is left under the key. The cache
    /// counts the response as not stored (in [`CacheMetrics::store_refused`], not as a store
    /// write error: the store works, and said no) and does not tell coalesced requests that it
    /// was.
    ///
    /// [`CacheMetrics::store_refused`]: crate::CacheMetrics::store_refused
    NotStored,
}

/// Whether a store of type `St` answers a lookup with the very buffer it holds (a clone of its
/// `Bytes`): `MemoryStore`, and `NearCache`, whose near tier is one. The cache then remembers
/// the blobs it opened, with their entries (`envelope/verified.rs`).
pub(crate) fn answers_held_buffers<St: 'static>() -> bool {
    let store = std::any::TypeId::of::<St>();
    #[cfg(feature = "memory")]
    if store == std::any::TypeId::of::<MemoryStore>() {
        return true;
    }
    #[cfg(all(feature = "redis", feature = "memory"))]
    if store == std::any::TypeId::of::<NearCache>() {
        return true;
    }
    let _ = store;
    false
}

/// A backend for the cache: a [`tower::Service`] over [`StoreRequest`]s.
///
/// This is a "trait alias" with a blanket implementation, like hyper-util's `Connect`: implement
/// `Service<StoreRequest, Response = StoreResponse>` (with an error that converts into
/// [`BoxError`], a `Send` future and `Clone + Send + 'static`) and your type is a `Store`. It is
/// sealed: it cannot be implemented directly, so it can gain requirements without breaking you.
///
/// Wrapping a store in tower middleware keeps it a store:
///
/// ```
/// use std::time::Duration;
/// use hyper_client_cache::{MemoryStore, Store};
///
/// fn assert_store<S: Store>(_: S) {}
/// let store = tower::ServiceBuilder::new()
///     .timeout(Duration::from_millis(50))
///     .service(MemoryStore::new(1 << 20));
/// assert_store(store);
/// ```
pub trait Store:
    Service<StoreRequest, Response = StoreResponse, Error: Into<BoxError>, Future: Send + 'static>
    + Clone
    + Send
    + 'static
    + sealed::Sealed
{
}

impl<T> Store for T where
    T: Service<
            StoreRequest,
            Response = StoreResponse,
            Error: Into<BoxError>,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

mod sealed {
    pub trait Sealed {}
    impl<T> Sealed for T where
        T: tower::Service<
            super::StoreRequest,
            Response = super::StoreResponse,
            Error: Into<super::BoxError>,
            Future: Send + 'static,
        >
    {
    }
}
