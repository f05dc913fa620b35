//! RFC 5861 §3: a stale entry revalidated in the background while the caller already has it.

use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::{record, Ctx};
use crate::coalesce::RefreshGuard;
use crate::error::BoxError;
use crate::policy::validation::conditional_headers;
use crate::store::Store;

/// Starts the refresh. The origin's answer goes through the normal miss path (stored if
/// storable, a 304 freshens the entry) and is counted like any answer; the body is drained so
/// that it is stored.
///
/// `Send + 'static` is what lets the refresh outlive the request: the inner service and the
/// request move into a tokio task. Without a runtime the entry is simply served stale until its
/// window ends.
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
{
    let Some(handle) = crate::rt::handle() else {
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
        record(&ctx.config, &response);
        let mut body = std::pin::pin!(response.into_body());
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                break;
            }
        }
    });
}
