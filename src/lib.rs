//! An RFC 9111 HTTP cache for **clients**, as a [`tower`] middleware, whose entries are signed
//! so that whoever can write to the store cannot make your clients accept forged responses.
//!
//! Put a [`CacheLayer`] in a [`tower::ServiceBuilder`] in front of a hyper-util `Client` (or any
//! `Service<http::Request<B>, Response = http::Response<ResBody>>`). Responses that may be
//! stored are serialized with postcard, signed with HMAC-SHA256 (ring) together with the cache
//! key they are stored under, and written through a [`Store`], which is itself a
//! [`tower::Service`]. On read the signature is verified before anything is decoded; an entry that
//! fails verification is never served.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore, SecretKey};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Any tower HTTP client; in real code a hyper_util::client::legacy::Client.
//! let origin = tower::service_fn(|_req: http::Request<()>| async {
//!     let response = http::Response::builder()
//!         .header("cache-control", "max-age=60")
//!         .body(Full::new(bytes::Bytes::from_static(b"hello")))
//!         .unwrap();
//!     Ok::<_, Infallible>(response)
//! });
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(
//!         CacheLayer::new(MemoryStore::default())
//!             .secret_key(SecretKey::new("a long random secret from your vault")?),
//!     )
//!     .service(origin);
//!
//! for expected in [CacheStatus::Miss, CacheStatus::Hit] {
//!     let request = http::Request::get("http://example.com/").body(())?;
//!     let response = client.ready().await?.call(request).await?;
//!     assert_eq!(response.extensions().get::<CacheStatus>(), Some(&expected));
//!     assert_eq!(response.into_body().collect().await?.to_bytes(), "hello");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What this release caches
//!
//! GET responses with a status the cache understands and a freshness lifetime (explicit:
//! `Cache-Control: max-age`/`s-maxage`, `Expires`; or heuristic, from `Last-Modified`), served
//! while fresh (to HEAD requests too), with `Vary` honoured; unsafe methods invalidate what they
//! touch; stale entries with a validator are revalidated with a conditional request (a 304 serves
//! the stored body); `no-store` responses are never stored. See [docs/http-caching.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/http-caching.md).
//!
//! # The controls
//!
//! | to ... | use |
//! | --- | --- |
//! | give responses without `max-age` a lifetime, per URL or per request | [`CacheLayer::expire_after`], [`CacheLayer::expire_url`], an [`ExpireAfter`] request extension |
//! | let your lifetime override the headers | [`CacheLayer::cache_control`]`(false)` |
//! | bypass, reload, revalidate, or use only the cache, for one request | a [`CacheMode`] request extension |
//! | choose what is stored | [`CacheLayer::allowed_methods`], [`CacheLayer::allowed_statuses`], [`CacheLayer::filter`], [`CacheLayer::read_only`] |
//! | choose the key | [`CacheLayer::ignored_parameters`], [`CacheLayer::match_headers`], [`CacheLayer::key_fn`], [`CacheLayer::key_request_bodies`] |
//! | see what happened | [`CacheStatus`], [`CacheInfo`], [`NotStoredReason`], [`CacheLayer::cache_status_header`], [`CacheMetrics`], `tracing` span `http_cache` |
//! | list, count, delete entries | [`Inspector`] ([`CacheLayer::inspector`]) |
//!
//! [docs/configuration.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/configuration.md) has every setting with its default and a requests-cache table;
//! [docs/integration.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/integration.md) shows the cache in an axum application and among tower-http layers.
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `memory` | yes | [`MemoryStore`], a byte-bounded in-process store |
//! | `disk` | no | `DiskStore`, one file per entry, shared by processes |
//! | `redis` | no | `RedisStore`, a cache shared through Redis |
//! | `redis-cluster` | no | `RedisStore::cluster`: the store on a Redis Cluster |
//! | `redis-tls` | no | `rediss://` URLs for `RedisStore` (rustls on ring) |
//! | `serde` | no | [`CacheConfig`] and [`CacheLayer::from_config`]: settings from a file |
//! | `zstd` | no | `CacheLayer::compress` with Zstandard (the zstd C library, built with the C compiler `ring` already needs): stored entries several times smaller |
//! | `lz4` | no | `CacheLayer::compress` with LZ4 (pure Rust): faster, less small than zstd |
//! | `metrics` | no | the counters, store latencies and blob sizes through the `metrics` facade ([`describe_metrics`]) |
//! | `test-util` | no | `store::conformance`, the store conformance suite |
//!
//! Beside this crate: [hyper-client-cache-reqwest](https://docs.rs/hyper-client-cache-reqwest)
//! (the cache as a reqwest-middleware middleware, and a tower service over `reqwest::Client`)
//! and [hcc](https://github.com/hyper-client-cache/hyper-client-cache/tree/main/crates/hcc), the
//! command-line tool for disk and Redis stores.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.88 (the newest `rust-version` among the dependencies). Raising it is a minor-version
//! change.

#![deny(missing_docs, unsafe_code, unreachable_pub, rust_2018_idioms)]
#![warn(clippy::all)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod clock;
mod coalesce;
mod config;
mod controls;
mod entry;
mod envelope;
mod error;
mod future;
mod inspect;
mod key;
mod layer;
mod metrics;
mod policy;
mod request_body;
mod respond;
mod rt;
mod service;
#[cfg(feature = "serde")]
mod settings;
mod status;
pub mod store;
mod timer;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

/// The user guides are compiled as doc tests, so their examples stay true.
#[cfg(doctest)]
#[doc = include_str!("../docs/security.md")]
struct SecurityGuide;
#[cfg(doctest)]
#[doc = include_str!("../docs/configuration.md")]
struct ConfigurationGuide;
#[cfg(all(doctest, feature = "memory"))]
#[doc = include_str!("../docs/stores.md")]
struct StoresGuide;

#[doc(inline)]
pub use crate::body::CacheBody;

/// `CDN-Cache-Control` (RFC 9213 §3), the targeted cache-control field for CDN caches; see
/// [`CacheLayer::cdn_cache_control`] and [`CacheLayer::targeted_fields`].
pub const CDN_CACHE_CONTROL: http::HeaderName = http::HeaderName::from_static("cdn-cache-control");
pub use crate::body::fill::{FillFailed, FillLagged};
#[doc(inline)]
pub use crate::clock::{Clock, ManualClock, SystemClock};
#[doc(inline)]
pub use crate::config::{
    OnBadSignature, DEFAULT_COALESCE_TIMEOUT, DEFAULT_HIT_FOR_PASS, DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_REFRESHES, DEFAULT_REDACTED_PARAMETERS, DEFAULT_REFRESH_TIMEOUT,
    DEFAULT_SENSITIVE_HEADERS, DEFAULT_STORE_TIMEOUT, DEFAULT_TAG_HEADERS,
};
#[doc(inline)]
pub use crate::controls::{CacheMode, ExpireAfter, PatternError};
#[cfg(any(feature = "lz4", feature = "zstd"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "lz4", feature = "zstd"))))]
#[doc(inline)]
pub use crate::envelope::{Codec, Compression, DEFAULT_COMPRESS_MIN_SIZE};
#[doc(inline)]
pub use crate::envelope::{KeyError, KeyRing, Mac, SecretKey, MAC_AUTO_BELOW, MIN_KEY_LEN};
#[doc(inline)]
pub use crate::error::{BadSignature, BoxError, StoreError};
#[doc(inline)]
pub use crate::future::ResponseFuture;
#[doc(inline)]
pub use crate::inspect::{
    Described, EntryInfo, Inspector, InvalidEntry, Listing, UrlPattern, DEFAULT_WHOLE_STORE_TIMEOUT,
};
#[doc(inline)]
pub use crate::key::{CacheKey, KeyParts};
#[doc(inline)]
pub use crate::layer::CacheLayer;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
#[doc(inline)]
pub use crate::metrics::export::describe_metrics;
#[doc(inline)]
pub use crate::metrics::CacheMetrics;
#[doc(inline)]
pub use crate::request_body::{BodyKeys, NoBodyKeys, RequestBodies, DEFAULT_MAX_KEYED_BODY};
#[doc(inline)]
pub use crate::service::{boxed_client, BoxedBody, BoxedClient, Cache};
#[cfg(all(feature = "serde", any(feature = "lz4", feature = "zstd")))]
#[doc(inline)]
pub use crate::settings::CompressionConfig;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
#[doc(inline)]
pub use crate::settings::{
    BadSignaturePolicy, BreakerConfig, CacheConfig, ConfigError, ExpiryValue, KeyConfig, UrlRule,
};
#[doc(inline)]
pub use crate::status::{CacheInfo, CacheStatus, FollowedRedirect, NotStoredReason};
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
#[doc(inline)]
pub use crate::store::MemoryStore;
#[doc(inline)]
pub use crate::store::{
    BlobParts, BlobStream, BlobWriter, BreakerState, CircuitBreaker, Store, StoreRequest,
    StoreResponse, DEFAULT_BREAKER_FAILURES, DEFAULT_BREAKER_MAX_OPEN_FOR,
    DEFAULT_BREAKER_OPEN_FOR,
};
#[cfg(feature = "disk")]
#[cfg_attr(docsrs, doc(cfg(feature = "disk")))]
#[doc(inline)]
pub use crate::store::{DiskStore, DiskStoreBuilder};
#[cfg(all(feature = "redis", feature = "memory"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "redis", feature = "memory"))))]
#[doc(inline)]
pub use crate::store::{
    NearCache, NearCacheBuilder, NearStats, DEFAULT_MAX_STALENESS, DEFAULT_NEAR_MAX_BYTES,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use crate::store::{RedisStore, RedisStoreBuilder};
