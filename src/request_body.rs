//! Request bodies as part of the cache key, for the methods beyond GET the user caches (a POST to
//! a search or GraphQL endpoint).
//!
//! Which request body types can be buffered and handed on is a compile-time property: a layer
//! keys bodies only after [`CacheLayer::key_request_bodies`](crate::CacheLayer::key_request_bodies),
//! and that layer's services accept only bodies that can be rebuilt from the buffered bytes
//! (`From<Bytes>`, as `http_body_util::Full<Bytes>` is). A layer that does not key bodies
//! accepts any body type and never reads one.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;

use crate::error::BoxError;

/// Default for [`CacheLayer::key_request_bodies`](crate::CacheLayer::key_request_bodies): 64 KiB.
pub const DEFAULT_MAX_KEYED_BODY: usize = 64 * 1024;

/// The request, with its body rebuilt, and the body's bytes when they were read.
pub(crate) type BufferFuture<B> =
    Pin<Box<dyn Future<Output = Result<(Request<B>, Option<Bytes>), BoxError>> + Send>>;

/// How a layer treats request bodies: [`NoBodyKeys`] (the default) or [`BodyKeys`]. Sealed.
pub trait RequestBodies<B>: sealed::Sealed + Clone + Send + Sync + 'static {
    /// Starts reading `request`'s body for the key, or hands the request back untouched.
    // `Err` is the request handed back, not an error: boxing it would cost every request.
    #[allow(clippy::result_large_err)]
    #[doc(hidden)]
    fn buffer(&self, request: Request<B>) -> Result<BufferFuture<B>, Request<B>>;
}

/// Request bodies are never read; methods other than `GET`/`HEAD` are cached only with a
/// [`key_fn`](crate::CacheLayer::key_fn).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBodyKeys;

/// Request bodies of the methods the layer caches beyond `GET`/`HEAD` are part of the key (see
/// [`CacheLayer::key_request_bodies`](crate::CacheLayer::key_request_bodies)).
#[derive(Debug, Clone, Copy)]
pub struct BodyKeys {
    pub(crate) limit: usize,
}

impl<B> RequestBodies<B> for NoBodyKeys {
    #[allow(clippy::result_large_err)]
    fn buffer(&self, request: Request<B>) -> Result<BufferFuture<B>, Request<B>> {
        Err(request)
    }
}

impl<B> RequestBodies<B> for BodyKeys
where
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    #[allow(clippy::result_large_err)]
    fn buffer(&self, request: Request<B>) -> Result<BufferFuture<B>, Request<B>> {
        // Only a body whose size is known to fit is read: anything else (a stream of unknown
        // length, or over the limit) bypasses the cache and reaches the origin untouched, and
        // the layer never holds more than `limit` bytes of it.
        match request.body().size_hint().upper() {
            Some(upper) if upper <= self.limit as u64 => {}
            _ => return Err(request),
        }
        let limit = self.limit;
        Ok(Box::pin(async move {
            let (parts, body) = request.into_parts();
            let collected = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| -> BoxError {
                    format!("reading the request body for the cache key: {e}").into()
                })?;
            let bytes = collected.to_bytes();
            Ok((
                Request::from_parts(parts, B::from(bytes.clone())),
                Some(bytes),
            ))
        }))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::NoBodyKeys {}
    impl Sealed for super::BodyKeys {}
}
