//! [`Cache`]: the tower service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;
use tower::Service;

use crate::body::CacheBody;
use crate::config::Config;
use crate::error::BoxError;
use crate::future::ResponseFuture;
use crate::request_body::{NoBodyKeys, RequestBodies};
use crate::store::Store;

/// An HTTP cache in front of the client service `S`, keeping entries in the store `St`.
///
/// Built by [`CacheLayer`](crate::CacheLayer). Its error type is [`BoxError`]: the inner
/// service's errors pass through inside it, next to the cache's own
/// ([`BadSignature`](crate::BadSignature)). A failing store never fails a request: lookups
/// degrade to misses and writes are dropped, with a warning in the logs.
///
/// # Clone
///
/// Clones share the store and the settings and clone the inner service.
#[derive(Clone)]
pub struct Cache<S, St, K = NoBodyKeys> {
    inner: S,
    store: St,
    bodies: K,
    config: Arc<Config>,
}

impl<S, St, K> Cache<S, St, K> {
    pub(crate) fn from_parts(inner: S, store: St, bodies: K, config: Arc<Config>) -> Self {
        Self {
            inner,
            store,
            bodies,
            config,
        }
    }

    /// The settings this service was built with (the layer's tests read its memo).
    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The store handle.
    pub fn store(&self) -> &St {
        &self.store
    }
}

/// The `Send + 'static` bounds let a stale-while-revalidate refresh run on a tokio task; every
/// hyper-util client, axum client and boxed tower service meets them.
impl<S, St, K, ReqB, ResB> Service<Request<ReqB>> for Cache<S, St, K>
where
    K: RequestBodies<ReqB>,
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, St, ReqB>;

    /// Always ready: the inner service's readiness is awaited only by the requests that go to
    /// the origin, inside the response future. Hits are never held back by a saturated origin.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // Each request gets its own clone of the inner service and drives it to readiness
        // itself (`Oneshot`) if, and only if, it goes to the origin.
        let inner = self.inner.clone();
        let method = request.method();
        // The body is part of the key only for the methods cached beyond GET/HEAD.
        let keyed_body =
            method != Method::GET && method != Method::HEAD && self.config.methods.contains(method);
        let request = if keyed_body {
            match self.bodies.buffer(request) {
                Ok(fut) => {
                    return ResponseFuture::buffering(
                        inner,
                        self.store.clone(),
                        self.config.clone(),
                        fut,
                    )
                }
                Err(request) => request,
            }
        } else {
            request
        };
        ResponseFuture::new(inner, self.store.clone(), self.config.clone(), request)
    }
}

impl<S: fmt::Debug, St: fmt::Debug, K> fmt::Debug for Cache<S, St, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A client stack behind one type you can name, for a field of an axum `State` or any struct:
/// the requests it takes (`http::Request<ReqB>`), responses with a boxed body, [`BoxError`].
/// Naming it needs neither the client's crate (no `hyper::body::Incoming` in your types) nor the
/// layers' types. Built with [`boxed_client`].
pub type BoxedClient<ReqB = http_body_util::Empty<bytes::Bytes>> =
    tower::util::BoxCloneSyncService<Request<ReqB>, Response<BoxedBody>, BoxError>;

/// The response body of a [`BoxedClient`]: a boxed [`Body`] of `Bytes`; on a hit, the stored
/// body.
pub type BoxedBody = http_body_util::combinators::BoxBody<bytes::Bytes, BoxError>;

/// Boxes a client stack (the cache, the client, and whatever layers around them) into a
/// [`BoxedClient`]: one type to name, `Clone + Send + Sync`.
///
/// The stack's response body must be `Send + Sync` (the boxed body is `Sync`, as
/// `reqwest::Body::wrap` and many frameworks need): hyper's `Incoming` and `CacheBody` over it
/// are; an `UnsyncBoxBody` inside the stack is not, and does not compile here.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use hyper_client_cache::{boxed_client, BoxedClient, CacheLayer, MemoryStore};
/// use tower::ServiceBuilder;
///
/// #[derive(Clone)]
/// struct AppState {
///     upstream: BoxedClient,
/// }
///
/// let origin = tower::service_fn(|_req: http::Request<http_body_util::Empty<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from("hi"))))
/// });
/// let state = AppState {
///     upstream: boxed_client(
///         ServiceBuilder::new()
///             .timeout(Duration::from_secs(10))
///             .layer(CacheLayer::new(MemoryStore::default()))
///             .service(origin),
///     ),
/// };
/// # drop(state);
/// ```
pub fn boxed_client<S, ReqB, ResB>(service: S) -> BoxedClient<ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    ReqB: 'static,
    ResB: Body<Data = bytes::Bytes> + Send + Sync + 'static,
    ResB::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    tower::util::BoxCloneSyncService::new(
        service
            .map_response(|response: Response<ResB>| {
                response.map(|body| body.map_err(Into::into).boxed())
            })
            .map_err(Into::into),
    )
}
