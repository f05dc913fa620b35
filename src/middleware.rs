//! reqwest users: the cache as a `reqwest_middleware::Middleware` ([`CacheMiddleware`]), and a
//! tower service over `reqwest::Client` ([`ReqwestService`]) for `ServiceBuilder` stacks.
//!
//! # How a middleware call reaches the origin
//!
//! The middleware runs the same [`Cache`] service as the tower layer, over an inner service
//! that forwards to reqwest-middleware's `Next`. `Next<'_>` borrows the client and the rest of
//! the middleware chain for the length of one `handle` call, so it cannot move into the cache's
//! inner service, which must be `'static` (a stale-while-revalidate refresh outlives the call).
//! So the inner service does not hold it: the request it is asked to forward comes back to
//! `handle` through a channel, `handle` runs `next.run(..)` with it, and sends the answer back,
//! while it keeps polling the cache's future. Only a call made from the task that runs `handle`
//! goes that way (the request carries the task's id); a background refresh runs in a task of
//! its own, after `handle` has returned, and goes to the origin through the *background client*
//! instead ([`CacheMiddleware::background_client`]; give it your `reqwest::Client`), skipping
//! the middlewares after this one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::reqwest::{Body, Client, Request, Response, ResponseBuilderExt, Url};
use ::reqwest_middleware::{Middleware, Next};
use http::Extensions;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service, ServiceExt};

use crate::error::BoxError;
use crate::{Cache, CacheLayer, CacheMode, ExpireAfter, Store};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Forwarded = (
    Request,
    oneshot::Sender<Result<Response, reqwest_middleware::Error>>,
);

/// A tower service over a `reqwest::Client`: `http::Request`s in, `http::Response`s with a
/// `reqwest::Body` out. Put [`CacheLayer`] in front of it for a `ServiceBuilder` stack without
/// reqwest-middleware.
///
/// ```no_run
/// use hyper_client_cache::{CacheLayer, MemoryStore, ReqwestService};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # async fn run() -> Result<(), hyper_client_cache::BoxError> {
/// let client = ServiceBuilder::new()
///     .layer(CacheLayer::new(MemoryStore::default()))
///     .service(ReqwestService::new(reqwest::Client::new()));
/// let request = http::Request::get("http://127.0.0.1:8000/").body(reqwest::Body::from(""))?;
/// let response = client.oneshot(request).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReqwestService {
    client: Client,
}

impl ReqwestService {
    /// Sends requests through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: Into<Body>,
{
    type Response = http::Response<Body>;
    type Error = ::reqwest::Error;
    type Future = BoxFuture<Result<http::Response<Body>, ::reqwest::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = self.client.clone();
        let request = Request::try_from(request);
        Box::pin(async move { Ok(client.execute(request?).await?.into()) })
    }
}

/// The caller's `handle` call, for the inner service: its task and its channel.
#[derive(Clone)]
struct Foreground {
    task: Option<tokio::task::Id>,
    forward: mpsc::UnboundedSender<Forwarded>,
}

/// The final URL of an origin response (after reqwest's redirects), carried to the caller.
#[derive(Clone)]
struct OriginUrl(Url);

/// The cache's inner service in the middleware (see the module docs).
#[derive(Clone)]
struct Bridge {
    background: Client,
}

impl Service<http::Request<Body>> for Bridge {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let foreground = request
            .extensions_mut()
            .remove::<Foreground>()
            .filter(|f| f.task == tokio::task::try_id());
        let background = self.background.clone();
        Box::pin(async move {
            let request = Request::try_from(request)?;
            let response = match foreground {
                Some(f) => {
                    let (reply, answer) = oneshot::channel();
                    match f.forward.send((request, reply)) {
                        Ok(()) => answer
                            .await
                            .map_err(|_| BoxError::from("the middleware call ended"))??,
                        // `handle` has returned: not the caller's request any more.
                        Err(mpsc::error::SendError((request, _))) => {
                            background.execute(request).await?
                        }
                    }
                }
                None => background.execute(request).await?,
            };
            let url = OriginUrl(response.url().clone());
            let mut response = http::Response::<Body>::from(response);
            response.extensions_mut().insert(url);
            Ok(response)
        })
    }
}

/// The cache as a [`reqwest_middleware::Middleware`]: the same service, controls and
/// guarantees as [`CacheLayer`] (it is built from one), for `reqwest_middleware::ClientBuilder`.
///
/// - Per request, [`CacheMode`] and [`ExpireAfter`] are read from reqwest-middleware's
///   extensions (`RequestBuilder::with_extension`).
/// - [`CacheStatus`](crate::CacheStatus), [`CacheInfo`](crate::CacheInfo) and
///   [`NotStoredReason`](crate::NotStoredReason) are in the response's `extensions()`.
/// - Errors of the cache ([`BadSignature`](crate::BadSignature),
///   [`StoreError`](crate::StoreError), ...) come as `reqwest_middleware::Error::Middleware`;
///   `err.downcast_ref::<BadSignature>()` on its `anyhow::Error` finds them. Errors of the
///   origin come back as they were (`Error::Reqwest`, or a later middleware's error).
/// - Bodies stream both ways; a response that is not stored is not buffered.
/// - `Response::url()` is the origin's final URL on a miss, the request's URL on a hit.
///
/// Background refreshes (stale-while-revalidate) go through the
/// [background client](Self::background_client): see the module docs of how a call reaches the
/// origin.
///
/// ```no_run
/// use hyper_client_cache::{CacheLayer, CacheMode, CacheStatus, MemoryStore};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = reqwest::Client::new();
/// let cache = CacheLayer::new(MemoryStore::default())
///     .into_middleware()
///     .background_client(client.clone());
/// let client = reqwest_middleware::ClientBuilder::new(client).with(cache).build();
/// let response = client
///     .get("http://127.0.0.1:8000/")
///     .with_extension(CacheMode::Reload)
///     .send()
///     .await?;
/// println!("{:?}", response.extensions().get::<CacheStatus>());
/// # Ok(())
/// # }
/// ```
pub struct CacheMiddleware<St> {
    layer: CacheLayer<St>,
    cache: Cache<Bridge, St>,
}

impl<St: Clone> Clone for CacheMiddleware<St> {
    fn clone(&self) -> Self {
        Self {
            layer: self.layer.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<St> std::fmt::Debug for CacheMiddleware<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMiddleware").finish_non_exhaustive()
    }
}

impl<St: Store> CacheLayer<St> {
    /// This layer as a reqwest-middleware middleware (see [`CacheMiddleware`]). Background
    /// refreshes use `reqwest::Client::new()` until
    /// [`background_client`](CacheMiddleware::background_client) sets yours.
    pub fn into_middleware(self) -> CacheMiddleware<St> {
        let cache = self.layer(Bridge {
            background: Client::new(),
        });
        CacheMiddleware { layer: self, cache }
    }
}

impl<St: Store> CacheMiddleware<St> {
    /// The client background refreshes (stale-while-revalidate) go through: usually a clone of
    /// the `reqwest::Client` given to `reqwest_middleware::ClientBuilder::new` (clones share its
    /// connection pool and TLS settings). Middlewares after this one do not see these requests.
    #[must_use]
    pub fn background_client(mut self, client: Client) -> Self {
        self.cache = self.layer.layer(Bridge { background: client });
        self
    }
}

/// Turns an error of the cache service into reqwest-middleware's: origin errors as they were.
fn middleware_error(error: BoxError) -> reqwest_middleware::Error {
    let error = match error.downcast::<reqwest_middleware::Error>() {
        Ok(e) => return *e,
        Err(e) => e,
    };
    let error = match error.downcast::<::reqwest::Error>() {
        Ok(e) => return reqwest_middleware::Error::Reqwest(*e),
        Err(e) => e,
    };
    // The cache's own errors by their type, so that `anyhow::Error::downcast_ref` finds them
    // (it does not look inside a boxed error).
    let error = match error.downcast::<crate::BadSignature>() {
        Ok(e) => return reqwest_middleware::Error::Middleware(anyhow::Error::new(*e)),
        Err(e) => e,
    };
    let error = match error.downcast::<crate::StoreError>() {
        Ok(e) => return reqwest_middleware::Error::Middleware(anyhow::Error::new(*e)),
        Err(e) => e,
    };
    match error.downcast::<crate::CoalescedError>() {
        Ok(e) => reqwest_middleware::Error::Middleware(anyhow::Error::new(*e)),
        Err(e) => reqwest_middleware::Error::Middleware(anyhow::Error::from_boxed(e)),
    }
}

#[async_trait::async_trait]
impl<St> Middleware for CacheMiddleware<St>
where
    St: Store + Sync,
    St::Future: Send,
{
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let request_url = request.url().clone();
        let mut request =
            http::Request::<Body>::try_from(request).map_err(reqwest_middleware::Error::Reqwest)?;
        if let Some(mode) = extensions.get::<CacheMode>() {
            request.extensions_mut().insert(*mode);
        }
        if let Some(expire) = extensions.get::<ExpireAfter>() {
            request.extensions_mut().insert(*expire);
        }
        let (forward, mut forwarded) = mpsc::unbounded_channel::<Forwarded>();
        request.extensions_mut().insert(Foreground {
            task: tokio::task::try_id(),
            forward,
        });
        let mut call = std::pin::pin!(self.cache.clone().oneshot(request));
        let mut next = Some(next);
        let mut extensions = Some(extensions);
        let result = loop {
            let asked = std::pin::pin!(forwarded.recv());
            match futures_util::future::select(call.as_mut(), asked).await {
                futures_util::future::Either::Left((result, _)) => break result,
                futures_util::future::Either::Right((Some((request, reply)), _)) => {
                    let answer = match (next.take(), extensions.take()) {
                        (Some(next), Some(extensions)) => next.run(request, extensions).await,
                        // The cache asked twice in one call (it does not): the second time,
                        // the chain is spent.
                        _ => Err(reqwest_middleware::Error::Middleware(anyhow::anyhow!(
                            "the origin was asked twice in one call"
                        ))),
                    };
                    let _ = reply.send(answer);
                }
                futures_util::future::Either::Right((None, _)) => break call.as_mut().await,
            }
        };
        let response = result.map_err(middleware_error)?;
        let (mut parts, body) = response.into_parts();
        let url = parts
            .extensions
            .remove::<OriginUrl>()
            .map_or(request_url, |u| u.0);
        let mut builder = http::Response::builder()
            .status(parts.status)
            .version(parts.version)
            .url(url);
        if let Some(headers) = builder.headers_mut() {
            *headers = parts.headers;
        }
        if let Some(ext) = builder.extensions_mut() {
            ext.extend(parts.extensions);
        }
        let response = builder
            .body(Body::wrap(body))
            .map_err(|e| reqwest_middleware::Error::Middleware(e.into()))?;
        Ok(Response::from(response))
    }
}
