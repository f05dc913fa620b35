//! RFC 5861 §3: a stale entry revalidated in the background while the caller already has it.
//!
//! Every refresh is bounded (issue 27, "every background task has a bound"): at most
//! `max_refreshes` run at once per layer, and each is abandoned at `refresh_timeout`. No
//! timeout of the caller's reaches a refresh: it starts once the caller has its answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::{record, Ctx};
use crate::coalesce::RefreshGuard;
use crate::config::Config;
use crate::error::BoxError;
use crate::metrics::{export, Event};
use crate::policy::validation::conditional_headers;
use crate::store::Store;

/// A running refresh's place under the layer's `max_refreshes`; given back when dropped (the
/// refresh ended, failed, timed out, or its task was dropped with the runtime).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A place, unless `max_refreshes` refreshes run already.
    fn take(config: &Config) -> Option<Slot> {
        let max = config.max_refreshes;
        config
            .refreshes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then(|| n.saturating_add(1))
            })
            .ok()
            .map(|_| Slot(config.refreshes.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the refresh. The origin's answer goes through the normal miss path (stored if
/// storable, a 304 freshens the entry) and is counted like any answer; the body is drained so
/// that it is stored.
///
/// `Send + 'static` is what lets the refresh outlive the request: the inner service and the
/// request move into a tokio task. Without a runtime the entry is simply served stale until its
/// window ends; at the layer's cap too (counted as skipped).
pub(super) fn spawn<S, St, ReqB, ResB>(
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
    ResB::Error: Into<BoxError>,
{
    let Some(handle) = crate::rt::handle() else {
        return;
    };
    let Some(slot) = Slot::take(&ctx.config) else {
        // The stale answer is already the caller's; the key's claim (`guard`) is released, so
        // a later stale hit tries again.
        tracing::debug!(
            max = ctx.config.max_refreshes,
            "background refresh skipped: max_refreshes running"
        );
        ctx.config.metrics.record(Event::RefreshSkipped);
        export::refresh("skipped");
        return;
    };
    let (Some(inner), Some(mut request)) = (inner.take(), request.take()) else {
        return;
    };
    let stale = ctx.stale.take();
    let mut ctx = ctx.for_refresh();
    // A refresh is of the whole representation: a ranged hit's Range would get a part back,
    // which cannot refresh the complete entry.
    request.headers_mut().remove(http::header::RANGE);
    request.headers_mut().remove(http::header::IF_RANGE);
    if let Some(stale) = stale {
        if stale.revalidating {
            // Validate with the stored validators, as a foreground revalidation would.
            for (name, value) in conditional_headers(&stale.entry.head.headers) {
                request.headers_mut().insert(name, value);
            }
        }
        ctx.stale = Some(stale);
    }
    let config = ctx.config.clone();
    config.metrics.record(Event::RefreshStarted);
    export::refresh("started");
    let call = ctx.send(inner, request);
    let refresh = async move {
        let response = match call.await {
            Ok(response) => response,
            Err(e) => {
                let e: BoxError = e.into();
                tracing::warn!(error = %e, "background revalidation failed");
                return;
            }
        };
        let response = match ctx.on_response(response) {
            Ok(response) => response,
            // The kept body could not be served on its 304 (deleted then, unless read-only;
            // counted as a bad signature or as an unusable entry).
            Err(e) => {
                tracing::warn!(error = %e, "background revalidation failed");
                return;
            }
        };
        record(&ctx.config, &response);
        // The body is read to its end: that is what stores it (`CacheBody`'s tee).
        let mut body = std::pin::pin!(response.into_body());
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                break;
            }
        }
    };
    handle.spawn(async move {
        let _guard = guard;
        let _slot = slot;
        // Dropping `refresh` at the deadline drops the origin call or the body being read; a
        // body not read to its end is never stored.
        let bounded = crate::timer::timeout(&config.timer, config.refresh_timeout, refresh);
        if bounded.await.is_err() {
            tracing::warn!(
                timeout = ?config.refresh_timeout,
                "background revalidation abandoned at refresh_timeout"
            );
            config.metrics.record(Event::RefreshTimedOut);
            export::refresh("timed_out");
        }
    });
}
