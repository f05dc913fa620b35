//! [hyper-client-cache](https://docs.rs/hyper-client-cache) for reqwest: the RFC 9111 cache,
//! with signed entries, as a [`reqwest_middleware::Middleware`] ([`CacheMiddleware`]), and a
//! tower service over `reqwest::Client` ([`ReqwestService`]) for `ServiceBuilder` stacks.
//!
//! ```no_run
//! use hyper_client_cache::{CacheLayer, CacheMode, CacheStatus, MemoryStore, SecretKey};
//! use hyper_client_cache_reqwest::CacheMiddleware;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let layer = CacheLayer::new(MemoryStore::new(64 << 20))
//!     .secret_key(SecretKey::from_env("HTTP_CACHE_KEY")?);
//! // The reqwest client is given once: the middleware's chain and its background refreshes
//! // both use it.
//! let client = CacheMiddleware::new(layer, reqwest::Client::new())
//!     .client_builder()
//!     .build();
//! let response = client
//!     .get("http://127.0.0.1:8000/")
//!     .with_extension(CacheMode::Refresh)
//!     .send()
//!     .await?;
//! println!("{:?}", response.extensions().get::<CacheStatus>());
//! # Ok(())
//! # }
//! ```
//!
//! This crate uses only the public API of `hyper-client-cache`; the one thing a client adapter
//! must tell the cache, that the client followed a redirect on its own, goes through
//! [`hyper_client_cache::FollowedRedirect`]. The guide, with the cookie-jar and
//! default-headers warnings, is
//! [docs/integration.md](https://github.com/hyper-client-cache/hyper-client-cache/blob/main/docs/integration.md#reqwest).
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `cookies` | no | [`CacheMiddleware::cookie_provider`]: the cache sees a client's cookie jar (needed by any client with a cookie store); turns on reqwest's `cookies` |
//!
//! reqwest is a dependency without its default features: pick its TLS in your own
//! `reqwest` dependency (`features = ["rustls"]`, ...).
//!
//! # How a middleware call reaches the origin
//!
//! The middleware runs the same [`Cache`] service as the tower layer, over an inner service
//! that forwards to reqwest-middleware's `Next`. `Next<'_>` borrows the client and the rest of
//! the middleware chain for the length of one `handle` call, so it cannot move into the cache's
//! inner service, which must be `'static` (a stale-while-revalidate refresh outlives the call).
//! So the inner service does not hold it: the request it is asked to forward comes back to
//! `handle` through a channel, `handle` runs `next.run(..)` with it, and sends the answer back,
//! while it keeps polling the cache's future (whatever task the caller polls it in). Once the
//! caller has its answer, the channel is closed: a background refresh, which starts with that
//! answer and runs in a task of its own, gets its request handed back (or cannot send it at
//! all) and goes to the origin through the client given to [`CacheMiddleware::new`] instead,
//! skipping the middlewares after this one.

#![deny(missing_docs, unsafe_code, unreachable_pub, rust_2018_idioms)]
#![warn(clippy::all)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::future::Future;
use std::pin::Pin;
#[cfg(feature = "cookies")]
use std::sync::Arc;
use std::task::{Context, Poll};

use ::reqwest::{Body, Client, Request, Response, ResponseBuilderExt, Url};
use ::reqwest_middleware::{Middleware, Next};
use http::Extensions;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service, ServiceExt};

use hyper_client_cache::{
    BadSignature, BoxError, Cache, CacheLayer, CacheMode, ExpireAfter, FollowedRedirect,
    NoBodyKeys, RequestBodies, Store, StoreError,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A request for `handle`'s `Next`, and where its answer goes: the response, or the request
/// handed back (`handle` is done, or its `Next` is spent) for the background client.
type Forwarded = (
    Request,
    oneshot::Sender<Result<Result<Response, reqwest_middleware::Error>, Request>>,
);

/// A tower service over a `reqwest::Client`: `http::Request`s in, `http::Response`s with a
/// `reqwest::Body` out. Put [`CacheLayer`] in front of it for a `ServiceBuilder` stack without
/// reqwest-middleware.
///
/// ```no_run
/// use hyper_client_cache::{CacheLayer, MemoryStore};
/// use hyper_client_cache_reqwest::ReqwestService;
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
        Box::pin(async move {
            let request = request?;
            let asked = request.url().clone();
            Ok(from_reqwest(client.execute(request).await?, &asked))
        })
    }
}

/// reqwest's response as the cache takes it. When reqwest followed a redirect (its URL is not
/// the one asked), the redirects' own caching rules were never seen: marked not to be stored.
fn from_reqwest(response: Response, asked: &Url) -> http::Response<Body> {
    let redirected = response.url() != asked;
    let mut response = http::Response::<Body>::from(response);
    if redirected {
        response.extensions_mut().insert(FollowedRedirect);
    }
    response
}

/// The caller's `handle` call, for the inner service: the channel to its `Next`.
#[derive(Clone)]
struct Foreground {
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
        let foreground = request.extensions_mut().remove::<Foreground>();
        let background = self.background.clone();
        Box::pin(async move {
            let request = Request::try_from(request)?;
            let asked = request.url().clone();
            let response = match foreground {
                Some(f) => {
                    let (reply, answer) = oneshot::channel();
                    match f.forward.send((request, reply)) {
                        Ok(()) => match answer.await {
                            Ok(Ok(response)) => response?,
                            // Handed back: `handle` had answered its caller already (this is a
                            // background refresh), or its `Next` was spent.
                            Ok(Err(request)) => background.execute(request).await?,
                            Err(_) => return Err("the middleware call was dropped".into()),
                        },
                        // `handle` has returned: not the caller's request any more.
                        Err(mpsc::error::SendError((request, _))) => {
                            background.execute(request).await?
                        }
                    }
                }
                None => background.execute(request).await?,
            };
            let url = OriginUrl(response.url().clone());
            let mut response = from_reqwest(response, &asked);
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
/// - [`CacheStatus`](hyper_client_cache::CacheStatus),
///   [`CacheInfo`](hyper_client_cache::CacheInfo) and
///   [`NotStoredReason`](hyper_client_cache::NotStoredReason) are in the response's
///   `extensions()`.
/// - Errors of the cache ([`BadSignature`], [`StoreError`], ...) come as
///   `reqwest_middleware::Error::Middleware`; `err.downcast_ref::<BadSignature>()` on its
///   `anyhow::Error` finds them. Errors of the origin come back as they were
///   (`Error::Reqwest`, or a later middleware's error).
/// - Bodies stream both ways; a response that is not stored is not buffered.
/// - `Response::url()` is the origin's final URL on a miss, the request's URL on a hit.
///
/// The `reqwest::Client` is given once, to [`new`](Self::new): the middleware chain
/// ([`client_builder`](Self::client_builder)) and the background refreshes
/// (stale-while-revalidate, which outlive the call and skip the middlewares after this one)
/// both use it. See the crate docs of how a call reaches the origin.
///
/// **Warning: a client with a cookie store** (`ClientBuilder::cookie_store(true)` or
/// `cookie_provider`). reqwest adds the jar's `Cookie` after every middleware: the cache never
/// sees it, and a response with `Vary: Cookie` (one user's account page) is served to every
/// client that shares the cache. Give the middleware the client's jar with
/// `cookie_provider` (feature `cookies`), one middleware per client; the same holds
/// for the client's `default_headers` ([`default_headers`](Self::default_headers)).
///
/// ```no_run
/// use hyper_client_cache::{CacheLayer, CacheMode, CacheStatus, MemoryStore};
/// use hyper_client_cache_reqwest::CacheMiddleware;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = CacheMiddleware::new(CacheLayer::new(MemoryStore::default()), reqwest::Client::new());
/// // With middlewares before the cache: `ClientBuilder::new(client.clone()).with(..).with(cache)`.
/// let client = cache.client_builder().build();
/// let response = client
///     .get("http://127.0.0.1:8000/")
///     .with_extension(CacheMode::Reload)
///     .send()
///     .await?;
/// println!("{:?}", response.extensions().get::<CacheStatus>());
/// # Ok(())
/// # }
/// ```
pub struct CacheMiddleware<St, K = NoBodyKeys> {
    cache: Cache<Bridge, St, K>,
    client: Client,
    defaults: http::HeaderMap,
    /// The client's cookie jar, read before the cache looks (`cookie_provider`).
    #[cfg(feature = "cookies")]
    cookies: Option<Cookies>,
}

/// A jar's `cookies(url)`: any `CookieStore`, sized or not, behind one type.
#[cfg(feature = "cookies")]
type Cookies = Arc<dyn Fn(&Url) -> Option<http::HeaderValue> + Send + Sync>;

impl<St: Clone, K: Clone> Clone for CacheMiddleware<St, K> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            client: self.client.clone(),
            defaults: self.defaults.clone(),
            #[cfg(feature = "cookies")]
            cookies: self.cookies.clone(),
        }
    }
}

impl<St, K> std::fmt::Debug for CacheMiddleware<St, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheMiddleware").finish_non_exhaustive()
    }
}

/// `layer.into_middleware(client)`: [`CacheMiddleware::new`] at the end of a `CacheLayer`
/// builder chain.
pub trait CacheLayerExt<St, K> {
    /// This layer as a reqwest-middleware middleware over `client` ([`CacheMiddleware::new`]).
    fn into_middleware(self, client: Client) -> CacheMiddleware<St, K>;
}

impl<St: Store, K: Clone> CacheLayerExt<St, K> for CacheLayer<St, K> {
    fn into_middleware(self, client: Client) -> CacheMiddleware<St, K> {
        CacheMiddleware::new(self, client)
    }
}

impl<St: Store, K: Clone> CacheMiddleware<St, K> {
    /// `layer` as a reqwest-middleware middleware, with every setting it has (request body
    /// keys included), for `client`: the `reqwest::Client` your requests go through. Give the
    /// same client (or a clone: clones share its connection pool and TLS settings) to
    /// `reqwest_middleware::ClientBuilder::new`, or let [`client_builder`](Self::client_builder)
    /// do it. Background refreshes (stale-while-revalidate) go through it too, without the
    /// middlewares after this one.
    pub fn new(layer: CacheLayer<St, K>, client: Client) -> Self {
        let cache = layer.layer(Bridge {
            background: client.clone(),
        });
        CacheMiddleware {
            cache,
            client,
            defaults: http::HeaderMap::new(),
            #[cfg(feature = "cookies")]
            cookies: None,
        }
    }

    /// A `reqwest_middleware::ClientBuilder` over the client given to [`new`](Self::new), with
    /// this middleware first: `.build()` it, or add middlewares that run after the cache
    /// (on misses only).
    pub fn client_builder(self) -> reqwest_middleware::ClientBuilder
    where
        Self: Middleware,
    {
        reqwest_middleware::ClientBuilder::new(self.client.clone()).with(self)
    }

    /// Headers added to every request that does not have them, *before* the cache looks at it:
    /// the place for what would otherwise go in reqwest's `ClientBuilder::default_headers`.
    ///
    /// **Credentials must be seen by the cache.** reqwest adds its client's default headers
    /// inside `Client::execute`, after every middleware, and so does a middleware placed after
    /// this one: the cache never sees them. A `Vary: Authorization` would then match between
    /// users, and a shared cache would store answers to authorized requests (RFC 9111 §3.5).
    /// Put an `Authorization` (or `Cookie`, or API key) header here, on each request
    /// (`RequestBuilder::bearer_auth`), or in a middleware *before* the cache; never in the
    /// client's default headers.
    #[must_use]
    pub fn default_headers(mut self, headers: http::HeaderMap) -> Self {
        self.defaults = headers;
        self
    }

    /// The cookie jar of the client this middleware is for (feature `cookies`): the
    /// one given to its `ClientBuilder::cookie_provider`. Before the cache looks at a request
    /// that has no `Cookie` field, the jar's cookies for its URL are added to it, as reqwest
    /// would add them after every middleware, so that a `Vary: Cookie` response is stored and
    /// matched per user (RFC 9111 §4.1). A request's own `Cookie` (or one from
    /// [`default_headers`](Self::default_headers)) wins, as in reqwest.
    ///
    /// **A client with a cookie store needs this.** Without it the cache sees no cookie at all:
    /// an answer that varies on the cookie is served to every client that shares the cache,
    /// whoever's session it belongs to. `ClientBuilder::cookie_store(true)` builds a jar you
    /// cannot reach: use `cookie_provider(jar.clone())` with a jar of your own instead, and
    /// give the same jar here.
    ///
    /// One middleware per client (per jar). Clients with different jars must not share one
    /// middleware (a clone of it included): each gets its own, built from clones of one
    /// [`CacheLayer`] to share the store, the coalescing and the refresh bounds.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use hyper_client_cache::{CacheLayer, MemoryStore};
    /// use hyper_client_cache_reqwest::CacheMiddleware;
    /// use reqwest::cookie::Jar;
    ///
    /// let layer = CacheLayer::new(MemoryStore::default());
    /// let jar = Arc::new(Jar::default());
    /// let http = reqwest::Client::builder().cookie_provider(jar.clone()).build().unwrap();
    /// let client = CacheMiddleware::new(layer.clone(), http)
    ///     .cookie_provider(jar)
    ///     .client_builder()
    ///     .build();
    /// # drop(client);
    /// ```
    ///
    /// Default: none (the cache sees only the cookies a request carries itself).
    #[cfg(feature = "cookies")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cookies")))]
    #[must_use]
    pub fn cookie_provider<C>(mut self, jar: Arc<C>) -> Self
    where
        C: ::reqwest::cookie::CookieStore + ?Sized + 'static,
    {
        self.cookies = Some(Arc::new(move |url: &Url| jar.cookies(url)));
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
    let error = match error.downcast::<BadSignature>() {
        Ok(e) => return reqwest_middleware::Error::Middleware(anyhow::Error::new(*e)),
        Err(e) => e,
    };
    let error = match error.downcast::<StoreError>() {
        Ok(e) => return reqwest_middleware::Error::Middleware(anyhow::Error::new(*e)),
        Err(e) => e,
    };
    reqwest_middleware::Error::Middleware(anyhow::Error::from_boxed(error))
}

#[async_trait::async_trait]
impl<St, K> Middleware for CacheMiddleware<St, K>
where
    St: Store + Sync,
    St::Future: Send,
    K: RequestBodies<Body>,
{
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let request_url = request.url().clone();
        // reqwest enforces a request's timeout in `Client::execute`, after the cache: applied
        // here too, so that it bounds a wait for a concurrent identical request as well.
        let deadline = request.timeout().copied();
        let mut request =
            http::Request::<Body>::try_from(request).map_err(reqwest_middleware::Error::Reqwest)?;
        for name in self.defaults.keys() {
            if !request.headers().contains_key(name) {
                for value in self.defaults.get_all(name) {
                    request.headers_mut().append(name.clone(), value.clone());
                }
            }
        }
        // What reqwest's cookie layer would add after every middleware, added where the cache
        // sees it (reqwest then leaves a present `Cookie` as it is).
        #[cfg(feature = "cookies")]
        if let Some(jar) = &self.cookies {
            if !request.headers().contains_key(http::header::COOKIE) {
                if let Some(value) = jar(&request_url) {
                    request.headers_mut().insert(http::header::COOKIE, value);
                }
            }
        }
        if let Some(mode) = extensions.get::<CacheMode>() {
            request.extensions_mut().insert(*mode);
        }
        if let Some(expire) = extensions.get::<ExpireAfter>() {
            request.extensions_mut().insert(*expire);
        }
        let (forward, mut forwarded) = mpsc::unbounded_channel::<Forwarded>();
        request.extensions_mut().insert(Foreground { forward });
        let mut call = std::pin::pin!(self.cache.clone().oneshot(request));
        let mut next = Some(next);
        let mut extensions = Some(extensions);
        // The request's own timeout bounds the waits in the cache (a concurrent identical
        // request, the store); once the origin is asked, reqwest enforces it itself (and its
        // timeout error is the one the caller gets).
        let mut deadline = deadline.map(|limit| (tokio::time::Instant::now() + limit, limit));
        let result = loop {
            let asked = std::pin::pin!(forwarded.recv());
            let either = futures_util::future::select(call.as_mut(), asked);
            let step = match deadline {
                None => either.await,
                Some((at, limit)) => match tokio::time::timeout_at(at, either).await {
                    Ok(step) => step,
                    // (`forwarded`, dropped on return, turns away any request still on its way.)
                    Err(_) => {
                        return Err(reqwest_middleware::Error::Middleware(anyhow::anyhow!(
                            "the request's timeout ({limit:?}) elapsed before the cache had an answer"
                        )));
                    }
                },
            };
            match step {
                futures_util::future::Either::Left((result, _)) => break result,
                futures_util::future::Either::Right((Some((request, reply)), _)) => {
                    let answer = match (next.take(), extensions.take()) {
                        (Some(next), Some(extensions)) => {
                            deadline = None;
                            Ok(next.run(request, extensions).await)
                        }
                        // `Next` runs once per call: a second request goes to the background
                        // client.
                        _ => Err(request),
                    };
                    let _ = reply.send(answer);
                }
                futures_util::future::Either::Right((None, _)) => break call.as_mut().await,
            }
        };
        // Answered. A request still on its way here (a refresh that started with this answer)
        // goes back to its sender, for the background client.
        forwarded.close();
        while let Ok((request, reply)) = forwarded.try_recv() {
            let _ = reply.send(Err(request));
        }
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
