//! [`ResponseFuture`]: the request path, one room per path.
//!
//! Data flows one way: plan → lookup → decide → respond | forward → store.
//!
//! ```text
//!            plan.rs            lookup.rs                     respond.rs
//! request ──► Plan ──► (lookup) ──► store Get ──► policy ──► hit | 304 | 504 ──► caller
//!              │                                    │
//!              │                                    ├─► refresh.rs (stale-while-revalidate)
//!              │                                    ▼
//!              └──────────────────────────────► forward.rs ──► origin ──► response
//!                                                                   │
//!                          invalidate.rs (unsafe methods, §4.4) ◄───┤
//!                          write.rs (admission, sealing, Put) ◄─────┘
//! ```
//!
//! This file holds the future and its loop over the points where a request awaits something
//! (the store, a concurrent request: `joined.rs`, the origin, invalidation); each arm is one
//! call into a room. What a response reports (metrics, the `Cache-Status` field) is recorded
//! in one place, [`finish`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::Service;

use crate::body::CacheBody;
use crate::coalesce::{Asked, Leader, WaitFuture, Waited};
use crate::config::Config;
use crate::error::BoxError;
use crate::key::CacheKey;
use crate::metrics::Event;
use crate::request_body::BufferFuture;
use crate::status::{cache_status_field, CacheStatus};
use crate::store::{Store, StoreCall, StoreRequest};

mod forward;
mod head;
mod invalidate;
mod joined;
mod lookup;
mod plan;
mod put;
mod refresh;
mod write;

use invalidate::InvalidateFuture;
use lookup::{Lookup, StaleEntry};
use plan::Plan;
use write::Storing;

/// The error of a future polled again after it finished (on every path alike).
const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

pin_project! {
    /// The future returned by [`Cache`](crate::Cache).
    #[must_use = "futures do nothing unless polled"]
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
        // Reading a request body that is part of the key (see `request_body.rs`).
        Buffering {
            fut: BufferFuture<ReqB>,
            rest: Option<(S, St, Arc<Config>)>,
        },
        // Boxed: the flow is over a kilobyte and would otherwise be copied at every move of the
        // future between `call` and its first poll (measured: a fifth of a 1 KiB hit).
        Flow { flow: Pin<Box<Flow<S, St, ReqB>>> },
    }
}

impl<S, St, ReqB> fmt::Debug for ResponseFuture<S, St, ReqB>
where
    S: Service<Request<ReqB>>,
    St: Store,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match &self.kind {
            Kind::Buffering { .. } => "reading the request body",
            Kind::Flow { flow } => flow.state.name(),
        };
        f.debug_struct("ResponseFuture")
            .field("step", &step)
            .finish_non_exhaustive()
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
    ResB::Error: Into<BoxError>,
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
                        return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
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

/// What the request path carries besides the request and the inner service.
struct Ctx<St> {
    store: St,
    config: Arc<Config>,
    plan: Plan,
    /// What to report if the request goes to the origin.
    status: CacheStatus,
    /// Held while this request fetches a key that other requests wait for.
    leader: Option<Leader>,
    /// The leader's request, as a failure of it is shared (coalesce.rs).
    asked: Option<Box<Asked>>,
    /// A stale entry that is being validated (RFC 9111 §4.3), or that may be served if the
    /// origin fails (RFC 5861 §4).
    stale: Option<Box<StaleEntry>>,
    /// Set when the request is forwarded and its response may be stored: the parts of the
    /// request the entry records (the request itself goes to the origin). Not built on a hit.
    storing: Option<Box<Storing>>,
    found: Found,
    /// When the request went to the origin (§4.2.3 `request_time`).
    request_time: SystemTime,
    /// The request's response could be stored, but the store's circuit breaker was not closed
    /// when it went to the origin: it is not.
    store_down: bool,
}

/// Where the lookup stands.
#[derive(Debug, Default)]
struct Found {
    /// This request already waited for another one; it does not wait twice.
    coalesced: bool,
    /// Set while looking up (and after finding) the request's Vary variant (§4.1).
    variant_key: Option<CacheKey>,
    /// How many of the plan's `older_keys` were looked up (0: the current name).
    older: usize,
    /// The variant generation of the stored primary entry, if one was found.
    generation: Option<u64>,
    /// Size of the blob a hit came from.
    blob_size: Option<usize>,
    /// A ranged request's incomplete entry (RFC 9111 §3.3) was looked up (under
    /// `CacheKey::partial`), after the complete one did not answer.
    partial_looked: bool,
    /// That incomplete entry, when it could not answer: a `206` from the origin may be combined
    /// with it (§3.4).
    partial: Option<Box<crate::entry::Entry>>,
}

impl<St: Store> Ctx<St> {
    fn new(store: St, config: Arc<Config>, plan: Plan) -> Self {
        Self {
            store,
            config,
            status: plan.status(),
            plan,
            leader: None,
            asked: None,
            stale: None,
            storing: None,
            found: Found::default(),
            request_time: SystemTime::UNIX_EPOCH,
            store_down: false,
        }
    }

    /// A context for a background refresh of the same request.
    fn for_refresh(&self) -> Self {
        let mut ctx = Self::new(
            self.store.clone(),
            self.config.clone(),
            self.plan.for_refresh(),
        );
        ctx.status = CacheStatus::Miss;
        ctx.found.coalesced = true;
        // The variant found: where a large answer is streamed to (`put.rs`).
        (ctx.found.generation, ctx.found.variant_key) =
            (self.found.generation, self.found.variant_key.clone());
        ctx.request_time = self.request_time;
        ctx
    }

    /// One store operation, bounded by the store timeout.
    fn store_call(&self, request: StoreRequest) -> StoreCall<St> {
        self.config.call(&self.store, request)
    }
}

/// Counts what a response reports: every answer of the request path once (the foreground here,
/// a background refresh in `refresh.rs`).
fn record<B>(config: &Config, response: &Response<B>) {
    let status = response.extensions().get::<CacheStatus>().copied();
    if let Some(event) = status.and_then(Event::outcome) {
        config.metrics.record(event);
    }
    // Without the feature, not even the extension lookup (this runs on every hit).
    #[cfg(feature = "metrics")]
    crate::metrics::export::response(
        status,
        response
            .extensions()
            .get::<crate::status::NotStoredReason>()
            .copied(),
    );
}

/// The one place an answer is reported: metrics, the opt-in `Cache-Status` field (RFC 9211), logs.
fn finish<B>(config: &Config, response: &mut Response<B>) {
    record(config, response);
    // Cache tags are for the cache (they are stored with the entry): not for callers.
    if !config.keep_tag_headers && !response.headers().is_empty() {
        for name in &config.tag_headers {
            response.headers_mut().remove(name);
        }
    }
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

pin_project! {
    /// The request's way through the cache, once its key is known.
    struct Flow<S, St, ReqB>
    where
        S: Service<Request<ReqB>>,
        St: Store,
    {
        #[pin]
        state: State<Oneshot<S, Request<ReqB>>, StoreCall<St>, S::Response>,
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
        // Reading the head of an entry the store streams.
        Head { fut: head::HeadFuture, key: Option<CacheKey> },
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

impl<F, L, R> State<F, L, R> {
    fn name(&self) -> &'static str {
        match self {
            State::Lookup { .. } => "looking up",
            State::Head { .. } => "reading a stored head",
            State::Wait { .. } => "waiting for a concurrent request",
            State::Delete { .. } => "deleting an unusable entry",
            State::Forward { .. } => "waiting for the origin",
            State::Invalidate { .. } => "invalidating",
            State::Failed { .. } => "failed",
            State::Done => "done",
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
        let plan = Plan::new(&config, &request, body.as_deref());
        let span = tracing::debug_span!(
            "http_cache",
            method = %request.method(),
            // Redacted as the stored URI is (no userinfo, no ignored or redacted values); only
            // formatted when the span is enabled.
            uri = %config.keying.log_uri(request.uri()),
            mode = ?plan.mode,
        );
        let mut ctx = Ctx::new(store, config, plan);
        let _entered = span.enter();
        // Each branch builds the flow in place: a tuple of its parts would be one more copy of
        // the request and the state on every request.
        match (&ctx.plan.key, ctx.plan.lookup) {
            (Some(key), true) => {
                tracing::debug!(key = %key, "cache lookup");
                let fut = ctx.store_call(ctx.config.get(key.clone()));
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
                tracing::debug!(key = ?ctx.plan.key, reason = ?ctx.plan.not_stored(), "not looked up; forwarding");
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
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<CacheBody<ResB>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let span = self.as_mut().project().span.clone();
        let _entered = span.enter();
        let mut result = ready!(self.as_mut().step(cx));
        if let Ok(response) = &mut result {
            finish(&self.as_mut().project().ctx.config, response);
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
    ResB::Error: Into<BoxError>,
{
    fn step(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<CacheBody<ResB>>, BoxError>> {
        let mut this = self.project();
        // Every arm that ends the future returns from inside it: a shared exit would copy the
        // response once more on every hit.
        loop {
            match this.state.as_mut().project() {
                StateProj::Lookup { fut } => {
                    let answer = ready!(fut.poll(cx));
                    let headers = this.request.as_ref().map(Request::headers);
                    let lookup = this.ctx.on_lookup(answer, headers);
                    if let Some(done) = after_lookup(
                        lookup,
                        this.state.as_mut(),
                        this.inner,
                        this.request,
                        this.ctx,
                    ) {
                        return Poll::Ready(done);
                    }
                }
                StateProj::Head { fut, key } => {
                    let read = ready!(fut.as_mut().poll(cx));
                    let Some(key) = key.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                    };
                    let headers = this.request.as_ref().map(Request::headers);
                    let lookup = this.ctx.on_head(key, read, headers);
                    if let Some(done) = after_lookup(
                        lookup,
                        this.state.as_mut(),
                        this.inner,
                        this.request,
                        this.ctx,
                    ) {
                        return Poll::Ready(done);
                    }
                }
                StateProj::Wait { fut } => {
                    let stored = match ready!(fut.as_mut().poll(cx)) {
                        Waited::Stored => true,
                        Waited::NotStored => false,
                        Waited::Failed(failure) => {
                            let request = this.request.as_ref();
                            if let Some(answer) = this.ctx.shared_failure(&failure, request) {
                                this.state.set(State::Done);
                                return Poll::Ready(Ok(answer));
                            }
                            false
                        }
                        Waited::Filling(fill, rest) => {
                            let request = this.request.as_ref();
                            if let Some(answer) = this.ctx.answer_from_fill(&fill, request) {
                                this.state.set(State::Done);
                                return Poll::Ready(Ok(answer));
                            }
                            // Not usable for this request: wait on for the outcome.
                            this.state.set(State::Wait { fut: rest });
                            continue;
                        }
                    };
                    let state = this.ctx.after_wait(stored, this.inner, this.request);
                    this.state.set(state);
                }
                StateProj::Delete { fut } => {
                    this.ctx.after_delete(ready!(fut.poll(cx)));
                    this.state
                        .set(forward::forward(this.inner, this.request, this.ctx));
                }
                StateProj::Forward { fut } => {
                    let result = ready!(fut.poll(cx));
                    this.state.set(State::Done);
                    let response = match result {
                        Ok(response) => response,
                        Err(e) => return Poll::Ready(this.ctx.origin_failed(e.into())),
                    };
                    if let Some(fut) = this.ctx.invalidation(&response) {
                        let response = Some(response);
                        this.state.set(State::Invalidate { fut, response });
                        continue;
                    }
                    return Poll::Ready(this.ctx.on_response(response));
                }
                StateProj::Invalidate { fut, response } => {
                    ready!(fut.as_mut().poll(cx));
                    let response = response.take();
                    this.state.set(State::Done);
                    return Poll::Ready(match response {
                        Some(response) => this.ctx.on_response(response),
                        None => Err(POLLED_AFTER_COMPLETION.into()),
                    });
                }
                StateProj::Failed { error } => {
                    let error = error
                        .take()
                        .unwrap_or_else(|| POLLED_AFTER_COMPLETION.into());
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into())),
            }
        }
    }
}

type FlowState<S, St, ReqB> =
    State<Oneshot<S, Request<ReqB>>, StoreCall<St>, <S as Service<Request<ReqB>>>::Response>;

/// Where a lookup's outcome takes the flow: `Some` ends the future with that answer; `None`
/// goes on in the state it set (the origin, a variant, a wait, reading a streamed head).
/// Inlined: the hit's response is not moved once more on the way out.
#[inline(always)]
fn after_lookup<S, St, ReqB, ResB>(
    lookup: Lookup<ResB>,
    mut state: Pin<&mut FlowState<S, St, ReqB>>,
    inner: &mut Option<S>,
    request: &mut Option<Request<ReqB>>,
    ctx: &mut Ctx<St>,
) -> Option<Result<Response<CacheBody<ResB>>, BoxError>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Send,
    ResB::Error: Into<BoxError>,
{
    match lookup {
        Lookup::Hit(response) => {
            state.set(State::Done);
            Some(Ok(response))
        }
        Lookup::Fail(err) => {
            state.set(State::Done);
            Some(Err(err))
        }
        Lookup::Refresh(response, guard) => {
            refresh::spawn(inner, request, ctx, guard);
            state.set(State::Done);
            Some(Ok(response))
        }
        Lookup::Go(next) => {
            let next = ctx.route(next, inner, request);
            state.set(next);
            None
        }
        Lookup::ReadHead(key, stream) => {
            let fut = head::read_head(&ctx.config, key.clone(), stream);
            state.set(State::Head {
                fut,
                key: Some(key),
            });
            None
        }
    }
}
