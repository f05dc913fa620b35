//! [`ResponseFuture`]: the per-request state machine.
//!
//! ```text
//! new ──► Lookup ──► (hit) ─────────────────────────────► Done
//!   │        ├─────► (bad signature, refetch) ─► Delete ─► Forward ─► Done
//!   │        └─────► (miss / stale / unusable) ──────────► Forward ─► Done
//!   └──────────────► (not cacheable) ────────────────────► Forward ─► Done
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::util::{Oneshot, ServiceExt};
use tower::Service;

use crate::bodies::BufferFuture;
use crate::body::{CacheBody, PutFuture, Sealer, Tee};
use crate::coalesce::{Join, Leader, RefreshGuard, WaitFuture};
use crate::controls::{CacheInfo, CacheMode, ExpireAfter};
use crate::entry::{Entry, EntryHead, Expiry, VaryValue};
use crate::envelope::OpenError;
use crate::error::BoxError;
use crate::error::StoreError;
use crate::layer::{Config, OnBadSignature};
use crate::metrics::Event;
use crate::policy::decision::{assess, lifetime, Decision, Reuse};
use crate::policy::storable::{
    storability, strip_unstorable, with_user_expiry, Exchange, NotStorable, Storability, UserExpiry,
};
use crate::policy::validation::{
    conditional_headers, freshen, has_unsupported_preconditions, has_validator, is_conditional,
    not_modified, not_modified_headers,
};
use crate::policy::vary::{capture, vary_names, VaryNames};
use crate::policy::{freshness::AgeInputs, RequestDirectives, ResponseDirectives};
use crate::status::NotStoredReason;
use crate::store::{Store, StoreRequest, StoreResponse};
use crate::timer::{self, Elapsed, Timed};
use crate::{CacheKey, CacheStatus};

pin_project! {
    /// The future returned by [`Cache`](crate::Cache).
    pub struct ResponseFuture<S, St, ReqB>
    where
        S: Service<Request<ReqB>>,
        St: Store,
    {
        #[pin]
        kind: Kind<S, St, ReqB>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, St, ReqB>
    where
        S: Service<Request<ReqB>>,
        St: Store,
    {
        // Reading a request body that is part of the key (see `bodies.rs`).
        Buffering {
            fut: BufferFuture<ReqB>,
            rest: Option<(S, St, Arc<Config>)>,
        },
        // Boxed: the flow is over a kilobyte and would otherwise be copied at every move of the
        // future between `call` and its first poll (measured: a fifth of a 1 KiB hit).
        Flow { flow: Pin<Box<Flow<S, St, ReqB>>> },
    }
}

impl<S, St, ReqB, ResB> ResponseFuture<S, St, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    St: Store,
    ResB: Body,
{
    pub(crate) fn new(inner: S, store: St, config: Arc<Config>, request: Request<ReqB>) -> Self {
        Self {
            kind: Kind::Flow {
                flow: Box::pin(Flow::new(inner, store, config, request, None)),
            },
        }
    }

    /// Reads the request body first (it is part of the key), then goes on as `new`.
    pub(crate) fn buffering(
        inner: S,
        store: St,
        config: Arc<Config>,
        fut: BufferFuture<ReqB>,
    ) -> Self {
        Self {
            kind: Kind::Buffering {
                fut,
                rest: Some((inner, store, config)),
            },
        }
    }
}

impl<S, St, ReqB, ResB> Future for ResponseFuture<S, St, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
{
    type Output = Result<Response<CacheBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Flow { flow } => return flow.as_mut().poll(cx),
                KindProj::Buffering { fut, rest } => {
                    let buffered = ready!(fut.as_mut().poll(cx));
                    let Some((inner, store, config)) = rest.take() else {
                        return Poll::Ready(Err("ResponseFuture polled after completion".into()));
                    };
                    let (request, body) = match buffered {
                        Ok(buffered) => buffered,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    let flow = Box::pin(Flow::new(inner, store, config, request, body));
                    this.kind.set(Kind::Flow { flow });
                }
            }
        }
    }
}

pin_project! {
    /// The request's way through the cache, once its key is known.
    struct Flow<S, St, ReqB>
    where
        S: Service<Request<ReqB>>,
        St: Store,
    {
        #[pin]
        state: State<Oneshot<S, Request<ReqB>>, Timed<Oneshot<St, StoreRequest>>, S::Response>,
        inner: Option<S>,
        request: Option<Request<ReqB>>,
        ctx: Ctx<St>,
        // Lookup, decision, store and origin events of this request are recorded in it.
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, L, R> {
        Lookup { #[pin] fut: L },
        Wait { fut: WaitFuture },
        Delete { #[pin] fut: L },
        Forward { #[pin] fut: F },
        // §4.4: deleting what an unsafe request invalidated, before answering.
        Invalidate { fut: InvalidateFuture, response: Option<R> },
        // Ends the future with this error at the next poll.
        Failed { error: Option<BoxError> },
        Done,
    }
}

/// What the future needs besides the request and the inner service.
struct Ctx<St> {
    store: St,
    config: Arc<Config>,
    /// The request's key, when its method is cached.
    key: Option<CacheKey>,
    cc: RequestDirectives,
    /// Whether the response may be stored (the request allows it).
    may_store: bool,
    /// A HEAD request: a hit is served without its body.
    head: bool,
    /// The request has If-None-Match / If-Modified-Since of its own.
    conditional: bool,
    /// Set for unsafe methods: what their response may invalidate.
    invalidate: Option<Box<Invalidation>>,
    /// Set when the request is forwarded and its response may be stored: the parts of the
    /// request the entry records (the request itself goes to the origin). Not built on a hit.
    storing: Option<Box<Storing>>,
    /// What to report if the request goes to the origin.
    status: CacheStatus,
    /// Held while this request fetches a key that other requests wait for.
    leader: Option<Leader>,
    /// A stale entry that is being validated (RFC 9111 §4.3), or that may be served if the
    /// origin fails (RFC 5861 §4).
    stale: Option<Box<StaleEntry>>,
    /// This request already waited for another one; it does not wait twice.
    coalesced: bool,
    /// Set while looking up (and after finding) the request's Vary variant (§4.1).
    variant_key: Option<CacheKey>,
    /// The variant generation of the stored primary entry, if one was found.
    generation: Option<u64>,
    request_time: SystemTime,
    /// The request's cache mode (an extension; never sent to the origin).
    mode: CacheMode,
    /// The user's expiry for this request (per-request, URL rule or default).
    expire: Option<ExpireAfter>,
    /// Why nothing is stored when `may_store` is false for a cached method.
    not_stored: Option<NotStoredReason>,
    /// The method is one the user allowed beyond GET/HEAD.
    method_allowed: bool,
    /// Size of the blob a hit came from.
    blob_size: Option<usize>,
}

struct StaleEntry {
    /// The key it was read from.
    key: CacheKey,
    entry: Entry,
    /// A conditional request was sent for it: a 304 freshens it.
    revalidating: bool,
    /// It may be served if the origin fails.
    if_error: bool,
}

struct Invalidation {
    target: CacheKey,
    /// Method and URI of the unsafe request, to resolve `Location` / `Content-Location`.
    request: Request<()>,
}

struct Storing {
    key: CacheKey,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    cc: RequestDirectives,
}

impl<St: Clone> Ctx<St> {
    /// A context for a background refresh of the same request.
    fn fork(&self) -> Self {
        Self {
            store: self.store.clone(),
            config: self.config.clone(),
            key: self.key.clone(),
            cc: self.cc.clone(),
            may_store: self.may_store,
            head: false,
            conditional: false,
            invalidate: None,
            storing: None,
            status: CacheStatus::Miss,
            leader: None,
            stale: None,
            coalesced: true,
            variant_key: None,
            generation: self.generation,
            request_time: self.request_time,
            mode: CacheMode::Default,
            expire: self.expire,
            not_stored: self.not_stored,
            method_allowed: self.method_allowed,
            blob_size: None,
        }
    }
}

impl<St> Ctx<St> {
    /// Sends the request to the origin, recording what storing its response needs. Every path
    /// to the origin (miss, revalidation, background refresh) goes through here.
    ///
    /// The inner service is driven to readiness only here, when a request really goes to the
    /// origin (`Oneshot`): the cache itself is always ready, so hits never wait for a saturated
    /// origin (a `ConcurrencyLimitLayer` inside the cache limits origin traffic only).
    fn send<S, B>(&mut self, inner: S, mut request: Request<B>) -> Oneshot<S, Request<B>>
    where
        S: Service<Request<B>>,
    {
        self.advertise(&mut request);
        self.capture(&request);
        self.request_time = self.config.clock.now();
        inner.oneshot(request)
    }

    /// As a surrogate, announces itself to the origin (Edge Architecture 1.0 §2.1:
    /// `Surrogate-Capability: id="Surrogate/1.0"`).
    fn advertise<B>(&self, request: &mut Request<B>) {
        if let Some(id) = &self.config.surrogate {
            if let Ok(value) = HeaderValue::from_str(&format!("{id}=\"Surrogate/1.0\"")) {
                request.headers_mut().append("surrogate-capability", value);
            }
        }
    }

    /// Keeps what the stored entry needs from the request, before it goes to the origin.
    fn capture<B>(&mut self, request: &Request<B>) {
        if let (true, Some(key)) = (self.may_store, &self.key) {
            self.storing = Some(Box::new(Storing {
                key: key.clone(),
                method: request.method().clone(),
                uri: request.uri().clone(),
                headers: request.headers().clone(),
                cc: self.cc.clone(),
            }));
        }
    }
}

impl<S, St, ReqB, ResB> Flow<S, St, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    St: Store,
    ResB: Body,
{
    fn new(
        inner: S,
        store: St,
        config: Arc<Config>,
        request: Request<ReqB>,
        body: Option<Bytes>,
    ) -> Self {
        let mut cc = RequestDirectives::parse(request.headers());
        let mode = request
            .extensions()
            .get::<CacheMode>()
            .copied()
            .unwrap_or_default();
        let (expire, own_expiry) = config.expiry_for(&request);
        let method = request.method();
        // GET is looked up and stored; HEAD is answered from a stored GET (RFC 9111 §4: the
        // stored method must allow the response to be used for the presented request) but its
        // own responses are not stored. Other methods are cached only when the user allowed
        // them and the key can tell their requests apart (a key function); else they go
        // straight through.
        let head = method == Method::HEAD;
        let allowed = config.methods.contains(method);
        let method_allowed = allowed && method != Method::GET && !head;
        let keyable = method == Method::GET
            || head
            || config.keying.custom.is_some()
            || (method_allowed && body.is_some());
        let disabled = mode == CacheMode::NoStore || expire == Some(ExpireAfter::DoNotCache);
        let cacheable = allowed && keyable && !disabled;
        let key = cacheable.then(|| {
            let key_method = if head { &Method::GET } else { method };
            config.keying.key(&request, key_method, body.as_deref())
        });
        // The modes and a request's own expiry act on the cache's reading of the request, never
        // on the headers sent to the origin.
        match mode {
            CacheMode::NoCache | CacheMode::Refresh => cc.no_cache = true,
            CacheMode::OnlyIfCached => cc.only_if_cached = true,
            _ => {}
        }
        if own_expiry {
            match expire {
                // Not older than this, as a request max-age would say (§5.2.1.1).
                Some(ExpireAfter::Duration(d)) => {
                    let secs = d.as_secs();
                    cc.max_age = Some(cc.max_age.map_or(secs, |m| m.min(secs)));
                }
                Some(ExpireAfter::ExpireImmediately) => cc.no_cache = true,
                _ => {}
            }
        }
        // Preconditions the cache does not evaluate send the request to the origin untouched;
        // If-None-Match / If-Modified-Since are answered from a fresh entry (§4.3.2). Request
        // no-cache is handled by `decide` (validate first).
        let lookup = cacheable
            && mode != CacheMode::Reload
            && !has_unsupported_preconditions(request.headers());
        let conditional = is_conditional(request.headers());
        let not_stored = if disabled {
            Some(NotStoredReason::Disabled)
        } else if allowed && !keyable {
            Some(NotStoredReason::RequestBody)
        } else if !allowed || head {
            Some(NotStoredReason::Method)
        } else if cc.no_store {
            Some(NotStoredReason::RequestNoStore)
        } else if config.read_only {
            Some(NotStoredReason::ReadOnly)
        } else {
            None
        };
        let may_store = cacheable && not_stored.is_none();
        // §4.4: unsafe methods invalidate what is stored for their target (and Location /
        // Content-Location) when the response is not an error. A method the user caches is
        // treated as safe; a read-only cache deletes nothing.
        let safe = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) || method_allowed;
        let invalidate = (!safe && !config.read_only).then(|| {
            Box::new(Invalidation {
                target: config.keying.key_as(&request, &Method::GET),
                request: Request::builder()
                    .method(method.clone())
                    .uri(request.uri().clone())
                    .body(())
                    .unwrap_or_default(),
            })
        });
        let status = if may_store {
            CacheStatus::Miss
        } else {
            CacheStatus::NotCacheable
        };
        let mut ctx = Ctx {
            store,
            config,
            key,
            cc,
            may_store,
            conditional,
            head,
            invalidate,
            storing: None,
            status,
            leader: None,
            stale: None,
            coalesced: false,
            variant_key: None,
            generation: None,
            request_time: SystemTime::UNIX_EPOCH,
            mode,
            expire,
            not_stored,
            method_allowed,
            blob_size: None,
        };
        let span = tracing::debug_span!(
            "http_cache",
            method = %request.method(),
            uri = %request.uri(),
            mode = ?ctx.mode,
        );
        let _entered = span.enter();
        match (&ctx.key, lookup) {
            (Some(key), true) => {
                tracing::debug!(key = %key, "cache lookup");
                let get = StoreRequest::Get { key: key.clone() };
                let fut = ctx.store_call(get);
                drop(_entered);
                Self {
                    state: State::Lookup { fut },
                    inner: Some(inner),
                    request: Some(request),
                    ctx,
                    span,
                }
            }
            _ => {
                tracing::debug!(key = ?ctx.key, reason = ?ctx.not_stored, "not looked up; forwarding");
                let fut = ctx.send(inner, request);
                drop(_entered);
                Self {
                    state: State::Forward { fut },
                    inner: None,
                    request: None,
                    ctx,
                    span,
                }
            }
        }
    }
}

impl<S, St, ReqB, ResB> Future for Flow<S, St, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
{
    type Output = Result<Response<CacheBody<ResB>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let span = self.as_mut().project().span.clone();
        let _entered = span.enter();
        let mut result = ready!(self.as_mut().step(cx));
        let config = &self.as_mut().project().ctx.config;
        if let Ok(response) = &mut result {
            if config.cache_status_header {
                let value = cache_status_field(response, config.clock.now());
                response.headers_mut().append("cache-status", value);
            }
            tracing::debug!(
                status = %response.status(),
                cache = ?response.extensions().get::<CacheStatus>(),
                "answered"
            );
        }
        Poll::Ready(result)
    }
}

impl<S, St, ReqB, ResB> Flow<S, St, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
{
    fn step(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<CacheBody<ResB>>, BoxError>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Lookup { fut } => {
                    let result = flatten(ready!(fut.poll(cx)));
                    let headers = this.request.as_ref().map(Request::headers);
                    match this.ctx.on_lookup(result, headers) {
                        Lookup::Hit(response) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Lookup::Fail(err) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(err));
                        }
                        Lookup::Delete(key) => {
                            let fut = this.ctx.store_call(StoreRequest::Delete { key });
                            this.state.set(State::Delete { fut });
                        }
                        Lookup::Variant(key) => {
                            let fut = this.ctx.store_call(StoreRequest::Get { key });
                            this.state.set(State::Lookup { fut });
                        }
                        Lookup::Refresh(response, guard) => {
                            refresh(this.inner, this.request, this.ctx, guard);
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Lookup::Revalidate(validators) => {
                            if let Some(request) = this.request.as_mut() {
                                for (name, value) in validators {
                                    request.headers_mut().insert(name, value);
                                }
                            }
                            this.state.set(forward(this.inner, this.request, this.ctx));
                        }
                        Lookup::Forward => {
                            if let Some(fut) = this.ctx.join_flight() {
                                this.state.set(State::Wait { fut });
                                continue;
                            }
                            this.state.set(forward(this.inner, this.request, this.ctx));
                        }
                    }
                }
                StateProj::Wait { fut } => {
                    let stored = ready!(fut.as_mut().poll(cx));
                    this.ctx.coalesced = true;
                    // Start again from the primary key.
                    this.ctx.variant_key = None;
                    match (stored, this.ctx.key.clone()) {
                        (true, Some(key)) => {
                            let fut = this.ctx.store_call(StoreRequest::Get { key });
                            this.state.set(State::Lookup { fut });
                        }
                        _ => this.state.set(forward(this.inner, this.request, this.ctx)),
                    }
                }
                StateProj::Delete { fut } => {
                    if let Err(e) = flatten(ready!(fut.poll(cx))) {
                        this.ctx.config.metrics.record(Event::StoreWriteError);
                        tracing::warn!(error = %e, "could not delete an entry that failed verification");
                    }
                    this.state.set(forward(this.inner, this.request, this.ctx));
                }
                StateProj::Forward { fut } => {
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    let response = match result {
                        Ok(response) => response,
                        Err(e) => {
                            // A transport error: stale-if-error may still answer.
                            if let Some(stale) = this.ctx.stale_after_error() {
                                return Poll::Ready(Ok(stale));
                            }
                            return Poll::Ready(Err(e.into()));
                        }
                    };
                    if let Some(fut) = this.ctx.invalidation(&response) {
                        this.state.set(State::Invalidate {
                            fut,
                            response: Some(response),
                        });
                        continue;
                    }
                    return Poll::Ready(Ok(this.ctx.on_response(response)));
                }
                StateProj::Invalidate { fut, response } => {
                    ready!(fut.as_mut().poll(cx));
                    let response = response.take();
                    this.state.set(State::Done);
                    return Poll::Ready(match response {
                        Some(response) => Ok(this.ctx.on_response(response)),
                        None => Err("ResponseFuture polled after completion".into()),
                    });
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| "ResponseFuture polled after completion".into());
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Sends the request to the origin: the next state.
fn forward<S, St, ReqB, L>(
    inner: &mut Option<S>,
    request: &mut Option<Request<ReqB>>,
    ctx: &mut Ctx<St>,
) -> State<Oneshot<S, Request<ReqB>>, L, S::Response>
where
    S: Service<Request<ReqB>>,
{
    match (inner.take(), request.take()) {
        (Some(inner), Some(request)) => State::Forward {
            fut: ctx.send(inner, request),
        },
        _ => State::Failed {
            error: Some("the request was already sent".into()),
        },
    }
}

// Returned once and consumed at once; boxing the hit would add an allocation to the hit path.
#[allow(clippy::large_enum_variant)]
enum Lookup<B> {
    Hit(Response<CacheBody<B>>),
    Fail(BoxError),
    Delete(CacheKey),
    Forward,
    /// Send the request with these validators added.
    Revalidate(Vec<(HeaderName, HeaderValue)>),
    /// Look up this variant key next.
    Variant(CacheKey),
    /// Answer with this stale response and refresh the entry in the background.
    Refresh(Response<CacheBody<B>>, RefreshGuard),
}

/// RFC 5861 §3: revalidates a stale entry in the background while the caller already has it.
/// The origin's answer goes through the normal miss path (stored if storable, a 304 freshens the
/// entry); the body is drained so that it is stored. Needs a tokio runtime; without one the
/// entry is simply served stale until its window ends.
fn refresh<S, St, ReqB, ResB>(
    inner: &mut Option<S>,
    request: &mut Option<Request<ReqB>>,
    ctx: &mut Ctx<St>,
    guard: RefreshGuard,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
{
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (Some(inner), Some(mut request)) = (inner.take(), request.take()) else {
        return;
    };
    let stale = ctx.stale.take();
    let mut ctx = ctx.fork();
    if let Some(stale) = stale {
        if stale.revalidating {
            // Validate with the stored validators, as a foreground revalidation would.
            for (name, value) in conditional_headers(&stale.entry.head.headers) {
                request.headers_mut().insert(name, value);
            }
        }
        ctx.stale = Some(stale);
    }
    let call = ctx.send(inner, request);
    handle.spawn(async move {
        let _guard = guard;
        let response = match call.await {
            Ok(response) => response,
            Err(e) => {
                let e: BoxError = e.into();
                tracing::warn!(error = %e, "background revalidation failed");
                return;
            }
        };
        let response = ctx.on_response(response);
        let mut body = std::pin::pin!(response.into_body());
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                break;
            }
        }
    });
}

/// Deletes the entries an unsafe request invalidated; failures are logged, never returned.
type InvalidateFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

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

impl<St: Store> Ctx<St> {
    /// RFC 9111 §4.4: "A cache MUST invalidate the target URI when it receives a non-error
    /// status code in response to an unsafe request method", and "MAY invalidate the URI(s) in
    /// the Location and Content-Location response header fields (if present)" — only when they
    /// are on the same origin, so that nobody can invalidate another site's entries.
    fn invalidation<B>(&mut self, response: &Response<B>) -> Option<InvalidateFuture> {
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return None;
        }
        let invalidation = self.invalidate.take()?;
        let mut keys = vec![invalidation.target];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(value) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
                if let Some(key) = self
                    .config
                    .keying
                    .same_origin_get_key(&invalidation.request, value)
                {
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        // The deletes run together: the response waits for one store timeout at most.
        let metrics = self.config.metrics.clone();
        let calls = keys.into_iter().map(|key| {
            let call = self.store_call(StoreRequest::Delete { key: key.clone() });
            let metrics = metrics.clone();
            async move {
                if let Err(e) = flatten(call.await) {
                    // The entry may still be served while it is fresh: count it like a lost write.
                    metrics.record(Event::StoreWriteError);
                    tracing::warn!(key = %key, error = %e, "could not invalidate a stored entry");
                } else {
                    tracing::debug!(key = %key, "invalidated");
                }
            }
        });
        let all = futures_util::future::join_all(calls);
        Some(Box::pin(async move {
            all.await;
        }))
    }

    /// One store operation, bounded by the store timeout.
    fn store_call(&self, request: StoreRequest) -> Timed<Oneshot<St, StoreRequest>> {
        let call = self.store.clone().oneshot(request);
        timer::timeout(&self.config.timer, self.config.store_timeout, call)
    }

    /// On a miss: join a concurrent request for the same key, or lead one. Returns the wait when
    /// there is one to wait for.
    fn join_flight(&mut self) -> Option<WaitFuture> {
        let timeout = self.config.coalesce_timeout?;
        let key = self.key.as_ref()?;
        if self.coalesced || !self.may_store {
            return None;
        }
        match self.config.flights.join(key, timeout) {
            Join::Wait(fut) => {
                tracing::debug!(key = %key, "waiting for a concurrent request for the same key");
                Some(fut)
            }
            Join::Lead(leader) => {
                self.leader = Some(leader);
                None
            }
            Join::Alone => None,
        }
    }

    /// Credentials are kept as keyed digests, everything else as is.
    fn protect(&self) -> impl Fn(&http::HeaderName, &[u8]) -> Option<[u8; 32]> + '_ {
        move |name, value| {
            self.config
                .sensitive_headers
                .contains(name)
                .then(|| self.config.envelope.vary_digest(value))
        }
    }

    fn on_lookup<B>(
        &mut self,
        result: Result<StoreResponse, StoreError>,
        request_headers: Option<&HeaderMap>,
    ) -> Lookup<B> {
        let (Some(primary), Some(request_headers)) = (self.key.clone(), request_headers) else {
            return Lookup::Forward;
        };
        // The key this blob was read from: the primary key, or a variant's key (§4.1).
        let key = self.variant_key.clone().unwrap_or(primary);
        // A store that answers a lookup with something else is as broken as one that errors.
        let result = result.and_then(|response| match response {
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
        });
        let blob = match result {
            Ok(Some(blob)) => blob,
            Ok(None) => {
                tracing::debug!(key = %key, "cache miss");
                return self.nothing_usable();
            }
            Err(e) => {
                self.config.metrics.record(Event::StoreReadError);
                if self.config.fail_closed {
                    tracing::warn!(key = %key, error = %e, "store lookup failed; failing the request (fail-closed)");
                    return Lookup::Fail(Box::new(e));
                }
                tracing::warn!(key = %key, error = %e, "store lookup failed; going to the origin");
                self.status = CacheStatus::StoreUnavailable;
                return self.nothing_usable();
            }
        };
        self.blob_size = Some(blob.len());
        let entry = match self.config.envelope.open(&key, blob) {
            Ok(entry) => entry,
            Err(OpenError::BadSignature(bad)) => {
                self.config.metrics.record(Event::BadSignature);
                return match self.config.on_bad_signature {
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
                        Lookup::Delete(key)
                    }
                };
            }
            Err(OpenError::Unusable(why)) => {
                tracing::debug!(key = %key, reason = why, "stored entry unusable; treating as a miss");
                return self.nothing_usable();
            }
        };
        // The user's filter, applied again on read: an entry it now rejects is removed.
        if let Some(filter) = &self.config.filter {
            if !filter(&response_parts(&entry.head)) {
                tracing::debug!(key = %key, "stored entry rejected by the filter");
                if self.config.read_only {
                    return self.nothing_usable();
                }
                self.status = CacheStatus::Miss;
                return Lookup::Delete(key);
            }
        }
        // New variants of this URL join the stored generation.
        self.generation = Some(entry.head.generation);
        let now = self.config.clock.now();
        let reuse = self.reuse();
        let (decision, lifetime) = assess(
            &entry.head,
            request_headers,
            &self.cc,
            &reuse,
            now,
            &self.protect(),
        );
        // ForceCache / OnlyIfCached: any matching stored response, fresh or stale.
        let decision = match decision {
            Decision::Stale { age, .. }
                if matches!(self.mode, CacheMode::ForceCache | CacheMode::OnlyIfCached) =>
            {
                Decision::StaleAccepted { age }
            }
            other => other,
        };
        match decision {
            Decision::Fresh { age } => {
                tracing::debug!(key = %key, age = age.as_secs(), "cache hit");
                let status = if self.coalesced {
                    self.config.metrics.record(Event::Coalesced);
                    CacheStatus::Coalesced
                } else {
                    self.config.metrics.record(Event::Hit);
                    CacheStatus::Hit
                };
                let info = self.hit_info(&key, &entry.head, (lifetime, age, now), false);
                if self.conditional && not_modified(&entry.head, request_headers) {
                    // §4.3.2: the client's copy is current; answer 304 from the cache.
                    let mut response = Response::new(CacheBody::cached(Bytes::new(), None));
                    *response.status_mut() = StatusCode::NOT_MODIFIED;
                    *response.headers_mut() = not_modified_headers(&entry.head.headers);
                    response
                        .headers_mut()
                        .insert(header::AGE, HeaderValue::from(age.as_secs()));
                    response.extensions_mut().insert(status);
                    response.extensions_mut().insert(info);
                    return Lookup::Hit(response);
                }
                Lookup::Hit(hit_response(entry, age, status, self.head, info))
            }
            Decision::StaleAccepted { age } => {
                tracing::debug!(key = %key, age = age.as_secs(), mode = ?self.mode, "stale, accepted by max-stale or the cache mode");
                self.config.metrics.record(Event::Stale);
                let info = self.hit_info(&key, &entry.head, (lifetime, age, now), false);
                Lookup::Hit(hit_response(
                    entry,
                    age,
                    CacheStatus::Stale,
                    self.head,
                    info,
                ))
            }
            Decision::Stale {
                age,
                while_revalidate: true,
                ..
            } if !self.conditional => {
                tracing::debug!(key = %key, age = age.as_secs(), "stale-while-revalidate");
                self.config.metrics.record(Event::Stale);
                // Kept for the background refresh: its validators, and its body if a 304 comes.
                self.stale = Some(Box::new(StaleEntry {
                    key: key.clone(),
                    entry: entry.clone(),
                    revalidating: has_validator(&entry.head.headers),
                    if_error: false,
                }));
                let info = self.hit_info(&key, &entry.head, (lifetime, age, now), false);
                let response = hit_response(
                    entry,
                    age,
                    CacheStatus::StaleWhileRevalidate,
                    self.head,
                    info,
                );
                // At most one refresh per key: concurrent stale hits share it.
                match self.config.flights.start_refresh(&key) {
                    Some(guard) => Lookup::Refresh(response, guard),
                    None => Lookup::Hit(response),
                }
            }
            Decision::Stale { if_error, .. } if !self.cc.only_if_cached => {
                // A client's own conditional goes to the origin as it is: its validators, not
                // ours (and its 304 is not ours to merge).
                let revalidating = has_validator(&entry.head.headers) && !self.conditional;
                let validators = if revalidating {
                    // §4.3.1: validate the stored response with a conditional request.
                    tracing::debug!(key = %key, "stale entry; revalidating");
                    conditional_headers(&entry.head.headers)
                } else {
                    tracing::debug!(key = %key, "stale entry without validator");
                    Vec::new()
                };
                if revalidating || if_error.is_some() {
                    self.stale = Some(Box::new(StaleEntry {
                        key: key.clone(),
                        entry,
                        revalidating,
                        if_error: if_error.is_some(),
                    }));
                }
                if revalidating {
                    Lookup::Revalidate(validators)
                } else {
                    Lookup::Forward
                }
            }
            Decision::NoMatch if self.variant_key.is_none() && !entry.head.vary.is_empty() => {
                // §4.1: another variant is stored under the primary key; this request's own
                // variant, if stored, is under the key its selecting header values give.
                let values: Vec<VaryValue> = {
                    let protect = self.protect();
                    entry
                        .head
                        .vary
                        .iter()
                        .map(|(name, _)| capture(request_headers, name, &protect))
                        .collect()
                };
                let variant = key.variant(entry.head.generation, &values);
                tracing::debug!(key = %key, variant = %variant, "looking up the request's variant");
                self.variant_key = Some(variant.clone());
                Lookup::Variant(variant)
            }
            other => {
                tracing::debug!(key = %key, decision = ?other, "stored entry not usable");
                self.nothing_usable()
            }
        }
    }

    /// Nothing stored can answer: go to the origin, unless the client said only-if-cached.
    fn nothing_usable<B>(&mut self) -> Lookup<B> {
        if !self.cc.only_if_cached {
            return Lookup::Forward;
        }
        // §5.2.1.7: "If it receives this directive, a cache SHOULD either respond using a stored
        // response consistent with the other constraints of the request message or respond with
        // a 504 (Gateway Timeout) status code."
        let mut response = Response::new(CacheBody::cached(Bytes::new(), None));
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        response
            .extensions_mut()
            .insert(CacheStatus::OnlyIfCachedMiss);
        self.leader = None;
        Lookup::Hit(response)
    }

    /// RFC 5861 §4: the origin failed; serve the stale entry if it may be.
    fn stale_after_error<B>(&mut self) -> Option<Response<CacheBody<B>>> {
        let stale = self.stale.take().filter(|s| s.if_error)?;
        let now = self.config.clock.now();
        let head = &stale.entry.head;
        let age = AgeInputs::from_headers(&head.headers, head.request_time, head.response_time)
            .current_age(now);
        tracing::warn!("origin failed; serving a stale response (stale-if-error)");
        self.storing = None;
        self.leader = None;
        self.config.metrics.record(Event::Stale);
        let (_, lifetime) = lifetime(head, &self.reuse());
        let info = self.hit_info(&stale.key, head, (lifetime, age, now), false);
        Some(hit_response(
            stale.entry,
            age,
            CacheStatus::StaleIfError,
            self.head,
            info,
        ))
    }

    fn on_response<B: Body>(&mut self, response: Response<B>) -> Response<CacheBody<B>> {
        if let Some(stale) = self.stale.take() {
            if stale.revalidating && response.status() == StatusCode::NOT_MODIFIED {
                return self.freshened(stale.key, stale.entry, response);
            }
            if matches!(response.status().as_u16(), 500 | 502 | 503 | 504) {
                self.stale = Some(stale);
                if let Some(stale_response) = self.stale_after_error() {
                    return stale_response;
                }
            }
            // Anything else replaces the stored response (if storable), as any miss would.
        }
        let response_time = self.config.clock.now();
        let (mut parts, body) = response.into_parts();
        let mut status = self.status;
        let mut info = CacheInfo::bypass();
        let body = match self.storing.take() {
            Some(storing) => {
                let response_cc = ResponseDirectives::parse_as_surrogate(
                    &parts.headers,
                    self.config.surrogate.as_deref(),
                );
                let age = AgeInputs::from_headers(&parts.headers, self.request_time, response_time)
                    .current_age(response_time);
                let exchange = Exchange {
                    method: &storing.method,
                    method_allowed: self.method_allowed,
                    request_headers: &storing.headers,
                    request_cc: &storing.cc,
                    status: parts.status,
                    response_headers: &parts.headers,
                    response_cc: &response_cc,
                    response_time,
                    age,
                };
                info.key = Some(storing.key.clone());
                match self.verdict(&exchange, &parts) {
                    (Storability::Store { lifetime }, expiry) => {
                        let ttl = self.ttl(lifetime, age, expiry, &response_cc);
                        let mut head = self.entry_head(&storing, &parts, response_time);
                        head.expiry = expiry;
                        info.created_at = Some(response_time);
                        info.expires = expires_at(response_time, lifetime, age);
                        let expected_len = content_length(&parts.headers);
                        let sealer = self.sealer(storing.key, head, ttl);
                        if body.is_end_stream() && expected_len.unwrap_or(0) == 0 {
                            // No body at all (a 204, say): a server may never poll it, so the
                            // entry is stored now rather than at its end.
                            if let Some(put) = sealer(Vec::new(), None) {
                                run_soon(put);
                            }
                            CacheBody::upstream(body)
                        } else {
                            CacheBody::tee(
                                body,
                                Tee::new(self.config.max_body_size, expected_len, sealer),
                            )
                        }
                    }
                    (Storability::DoNotStore(why), _) => {
                        tracing::debug!(key = %storing.key, reason = ?why, "response not storable");
                        if status == CacheStatus::Miss {
                            status = CacheStatus::NotCacheable;
                        }
                        parts.extensions.insert(NotStoredReason::from(why));
                        CacheBody::upstream(body)
                    }
                }
            }
            None => {
                parts
                    .extensions
                    .insert(self.not_stored.unwrap_or(NotStoredReason::Method));
                info.key = self.key.clone();
                CacheBody::upstream(body)
            }
        };
        parts.extensions.insert(info);
        // Nothing is being stored: release the waiters now, they fetch for themselves.
        self.leader = None;
        self.config.metrics.record(match status {
            CacheStatus::Miss => Event::Miss,
            _ => Event::NotCacheable,
        });
        parts.extensions.insert(status);
        Response::from_parts(parts, body)
    }

    /// RFC 9111 §4.3.4: a 304 freshens the stored response: its header fields update the stored
    /// ones (§3.2), the stored body is served, and the updated entry is stored again.
    fn freshened<B>(
        &mut self,
        key: CacheKey,
        entry: Entry,
        not_modified: Response<B>,
    ) -> Response<CacheBody<B>> {
        let response_time = self.config.clock.now();
        let Entry {
            mut head,
            body,
            trailers,
        } = entry;
        head.headers = freshen(&head.headers, not_modified.headers());
        head.request_time = self.request_time;
        head.response_time = response_time;
        let age = AgeInputs::from_headers(&head.headers, head.request_time, response_time)
            .current_age(response_time);
        if let Some(storing) = self.storing.take() {
            let cc = ResponseDirectives::parse_as_surrogate(
                &head.headers,
                self.config.surrogate.as_deref(),
            );
            let exchange = Exchange {
                method: &storing.method,
                method_allowed: self.method_allowed,
                request_headers: &storing.headers,
                request_cc: &storing.cc,
                status: head.status,
                response_headers: &head.headers,
                response_cc: &cc,
                response_time,
                age,
            };
            // The same rules as for a new response: the expiry starts again from now.
            if let (Storability::Store { lifetime }, expiry) =
                self.verdict(&exchange, &response_parts(&head))
            {
                let ttl = self.ttl(lifetime, age, expiry, &cc);
                head.expiry = expiry;
                let sealer = self.sealer(storing.key, head.clone(), ttl);
                let chunks = vec![body.clone()];
                if let Some(put) = sealer(chunks, trailers.clone()) {
                    run_soon(put);
                }
            }
        }
        self.leader = None;
        self.config.metrics.record(Event::Revalidated);
        tracing::debug!("revalidated: 304 Not Modified, serving the stored body");
        let (_, lifetime) = lifetime(&head, &self.reuse());
        let info = self.hit_info(&key, &head, (lifetime, age, response_time), true);
        hit_response(
            Entry {
                head,
                body,
                trailers,
            },
            age,
            CacheStatus::Revalidated,
            self.head,
            info,
        )
    }

    /// Whether (and for how long) a response is stored: the user's status list and filter,
    /// RFC 9111 §3, then the user's expiry settings.
    fn verdict(
        &self,
        exchange: &Exchange<'_>,
        parts: &http::response::Parts,
    ) -> (Storability, Expiry) {
        if let Some(statuses) = &self.config.statuses {
            if !statuses.contains(&exchange.status) {
                return (
                    Storability::DoNotStore(NotStorable::Status),
                    Expiry::Headers,
                );
            }
        }
        if let Some(filter) = &self.config.filter {
            if !filter(parts) {
                return (
                    Storability::DoNotStore(NotStorable::Filtered),
                    Expiry::Headers,
                );
            }
        }
        let verdict = storability(exchange, self.config.shared);
        with_user_expiry(
            exchange,
            self.config.shared,
            verdict,
            UserExpiry {
                value: self.expire,
                honor_headers: self.config.cache_control,
                statuses: self.config.statuses.as_deref(),
            },
        )
    }

    fn reuse(&self) -> Reuse<'_> {
        self.config.reuse()
    }

    /// How long the store keeps an entry (see [`entry_ttl`]). With `cache_control(false)` the
    /// response's `stale-*` directives and the layer's stale window do not apply.
    fn ttl(
        &self,
        lifetime: Duration,
        age: Duration,
        expiry: Expiry,
        cc: &ResponseDirectives,
    ) -> Duration {
        match expiry {
            Expiry::Override(_) => entry_ttl(lifetime, age, &ResponseDirectives::default(), None),
            _ => entry_ttl(lifetime, age, cc, self.config.stale_on_error),
        }
    }

    /// What a response served from the store reports in its [`CacheInfo`].
    fn hit_info(
        &self,
        key: &CacheKey,
        head: &EntryHead,
        (lifetime, age, now): (Duration, Duration, SystemTime),
        revalidated: bool,
    ) -> CacheInfo {
        CacheInfo {
            from_cache: true,
            key: Some(key.clone()),
            created_at: Some(head.response_time),
            expires: expires_at(now, lifetime, age),
            is_expired: age >= lifetime,
            revalidated,
            size: self.blob_size,
        }
    }

    fn entry_head(
        &self,
        storing: &Storing,
        parts: &http::response::Parts,
        response_time: SystemTime,
    ) -> EntryHead {
        let mut headers = parts.headers.clone();
        strip_unstorable(&mut headers);
        let protect = self.protect();
        let vary = match vary_names(&parts.headers) {
            VaryNames::Names(names) => names
                .into_iter()
                .map(|name| {
                    let value = capture(&storing.headers, &name, &protect);
                    (name, value)
                })
                .collect(),
            // Not reached: `Vary: *` is not storable.
            VaryNames::Star => Vec::new(),
        };
        EntryHead {
            status: parts.status,
            version: parts.version,
            headers,
            request_time: self.request_time,
            response_time,
            method: storing.method.clone(),
            uri: self.config.keying.stored_uri(&storing.uri).into(),
            vary,
            generation: self.generation.unwrap_or_else(new_generation),
            expiry: Expiry::Headers,
        }
    }

    fn sealer(&mut self, key: CacheKey, head: EntryHead, ttl: Duration) -> Sealer {
        let config = self.config.clone();
        let store = self.store.clone();
        // Moved into the write: waiters are released when it has finished (or was dropped).
        let leader = self.leader.take();
        // A response that varies is stored twice: under the primary key (where the next lookup
        // starts, and which names the selecting fields) and under its variant's own key, so
        // that several variants of one URL coexist (§4.1).
        let mut keys = vec![key.clone()];
        if !head.vary.is_empty() {
            keys.push(key.variant(head.generation, head.vary.iter().map(|(_, v)| v)));
        }
        Box::new(
            move |chunks: Vec<Bytes>, trailers: Option<HeaderMap>| -> Option<PutFuture> {
                let mut blobs = Vec::with_capacity(keys.len());
                for key in keys {
                    match config
                        .envelope
                        .seal(&key, &head, &chunks, trailers.as_ref())
                    {
                        Ok(blob) => blobs.push((key, blob)),
                        Err(e) => {
                            tracing::warn!(key = %key, reason = e.0, "could not seal an entry; not stored");
                            return None;
                        }
                    }
                }
                // The writes run together, so the end of the body waits one store timeout at
                // most, whatever the number of keys.
                let puts = blobs.into_iter().map(|(key, blob)| {
                    let size = blob.len();
                    let put = StoreRequest::Put {
                        key: key.clone(),
                        blob,
                        ttl: Some(ttl),
                    };
                    let put =
                        timer::timeout(&config.timer, config.store_timeout, store.clone().oneshot(put));
                    let config = config.clone();
                    async move {
                        match flatten(put.await) {
                            Ok(_) => {
                                config.metrics.record(Event::Stored);
                                tracing::debug!(key = %key, size, ttl = ttl.as_secs(), "stored");
                                true
                            }
                            Err(e) => {
                                config.metrics.record(Event::StoreWriteError);
                                tracing::warn!(key = %key, error = %e, "store write failed; response not cached");
                                false
                            }
                        }
                    }
                });
                let all = futures_util::future::join_all(puts);
                Some(Box::pin(async move {
                    let all_stored = all.await.into_iter().all(|stored| stored);
                    if let (true, Some(leader)) = (all_stored, leader) {
                        leader.stored();
                    }
                }))
            },
        )
    }
}

/// How long the store keeps an entry: while it is fresh, plus as long as it may still be useful
/// stale: at least [`STALE_KEEP`] (for revalidation, `max-stale`), longer when its
/// `stale-if-error` window or the layer's `serve_stale_on_error` says so. The cache never serves
/// it stale unless a rule allows it; the store's bound evicts it earlier if space is short.
fn entry_ttl(
    lifetime: Duration,
    age: Duration,
    cc: &ResponseDirectives,
    stale_on_error: Option<Duration>,
) -> Duration {
    let fresh = lifetime.saturating_sub(age);
    let if_error = cc.stale_if_error.map(Duration::from_secs);
    let keep = [Some(STALE_KEEP), if_error, stale_on_error]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(STALE_KEEP);
    fresh.saturating_add(keep)
}

/// A fresh variant generation (random; the clock as a fallback, uniqueness is all it needs).
fn new_generation() -> u64 {
    let mut bytes = [0u8; 8];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => u64::from_be_bytes(bytes),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// How long a stale entry is kept, at least, for revalidation and `max-stale`.
const STALE_KEEP: Duration = Duration::from_secs(24 * 60 * 60);

/// Drives a store write: polled once at once (an in-memory store finishes there, so the next
/// request sees the entry), then finished on the tokio runtime if it is still pending.
fn run_soon(mut put: PutFuture) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if put.as_mut().poll(&mut cx).is_pending() {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(put);
            }
            Err(_) => tracing::debug!("no tokio runtime to finish a store write; dropped"),
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Rebuilds the stored response. RFC 9111 §4: "When a stored response is used to satisfy a
/// request without validation, a cache MUST generate an Age header field (Section 5.1),
/// replacing any present in the response with a value equal to the stored response's
/// current_age".
fn hit_response<B>(
    entry: Entry,
    age: Duration,
    status: CacheStatus,
    head_only: bool,
    info: CacheInfo,
) -> Response<CacheBody<B>> {
    let Entry {
        head,
        body,
        trailers,
    } = entry;
    // A HEAD is answered with the stored GET's header section and no body (RFC 9110 §9.3.2).
    let body = if head_only {
        CacheBody::cached(Bytes::new(), None)
    } else {
        CacheBody::cached(body, trailers)
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(age.as_secs()));
    response.extensions_mut().insert(status);
    response.extensions_mut().insert(info);
    response
}

/// When a response of this lifetime and current age stops being fresh, seen from `now`.
pub(crate) fn expires_at(now: SystemTime, lifetime: Duration, age: Duration) -> Option<SystemTime> {
    if lifetime >= age {
        now.checked_add(lifetime - age)
    } else {
        now.checked_sub(age - lifetime)
    }
}

/// RFC 9211 §2: `Cache-Status: hyper-client-cache; <params>`, from what the response reports.
fn cache_status_field<B>(response: &Response<B>, now: SystemTime) -> HeaderValue {
    use std::fmt::Write;
    let status = response.extensions().get::<CacheStatus>().copied();
    let info = response.extensions().get::<CacheInfo>();
    let mut out = String::from("hyper-client-cache");
    let ttl = |out: &mut String| {
        if let Some(expires) = info.and_then(|i| i.expires) {
            // §2.5: "ttl: ... the response's remaining freshness lifetime", negative when stale.
            let secs = match expires.duration_since(now) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            };
            let _ = write!(out, "; ttl={secs}");
        }
    };
    let fwd_status = |out: &mut String| {
        let _ = write!(out, "; fwd-status={}", response.status().as_u16());
    };
    match status {
        Some(
            CacheStatus::Hit
            | CacheStatus::Stale
            | CacheStatus::StaleWhileRevalidate
            | CacheStatus::StaleIfError,
        ) => {
            out.push_str("; hit");
            ttl(&mut out);
            if status == Some(CacheStatus::StaleIfError) {
                out.push_str("; detail=stale-if-error");
            }
        }
        Some(CacheStatus::Coalesced) => {
            // §2.8: "collapsed": the request was collapsed with another forward request.
            out.push_str("; fwd=miss; collapsed");
            ttl(&mut out);
        }
        Some(CacheStatus::Revalidated) => {
            out.push_str("; fwd=stale; fwd-status=304");
            ttl(&mut out);
        }
        Some(CacheStatus::OnlyIfCachedMiss) => out.push_str("; detail=only-if-cached"),
        Some(CacheStatus::Miss) => {
            out.push_str("; fwd=miss");
            fwd_status(&mut out);
            out.push_str("; stored");
            ttl(&mut out);
        }
        _ => {
            // §2.2: "bypass: the cache was configured to not handle this request", "method":
            // the method is not cacheable, "request": the request asked the cache not to
            // handle it, "miss": nothing usable was stored.
            let fwd = match response.extensions().get::<NotStoredReason>() {
                Some(NotStoredReason::Method) => "method",
                Some(NotStoredReason::Disabled | NotStoredReason::ReadOnly) => "bypass",
                Some(NotStoredReason::RequestNoStore) => "request",
                _ => "miss",
            };
            let _ = write!(out, "; fwd={fwd}");
            fwd_status(&mut out);
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("hyper-client-cache"))
}

/// A stored response's head as `http::response::Parts`, for the user's filter.
fn response_parts(head: &EntryHead) -> http::response::Parts {
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers.clone();
    response.into_parts().0
}
