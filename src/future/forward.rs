//! Forward: the request goes to the origin, and its answer is routed: a 304 freshens the stale
//! entry (RFC 9111 §4.3.4), an error may be answered stale (RFC 5861 §4), anything else is
//! admitted for storing as any miss would be (an unsafe method's success first invalidates,
//! `invalidate.rs`).

use bytes::{Buf, Bytes};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use tower::util::{Oneshot, ServiceExt};
use tower::Service;

use super::write::Storing;
use super::{Ctx, State, StoreCall};
use crate::body::fill::Fill;
use crate::body::{CacheBody, Tee};
use crate::coalesce::{FailedAnswer, Failure, MAX_SHARED_BODY};
use crate::entry::{Entry, EntryBody};
use crate::error::BoxError;
use crate::key::CacheKey;
use crate::metrics::Event;
use crate::policy::decision::is_origin_error;
use crate::policy::fields::content_length;
use crate::policy::fresh::lifetime;
use crate::policy::freshness::{explicit_lifetime, AgeInputs};
use crate::policy::invalidation::content_location_is;
use crate::policy::retention::expires_at;
use crate::policy::validation::freshen;
use crate::respond::{self, hit_info, Freshness};
use crate::rt::run_soon;
use crate::status::{CacheInfo, CacheStatus, NotStoredReason};
use crate::store::Store;

/// Sends the request to the origin: the next state.
pub(super) fn forward<S, St, ReqB>(
    inner: &mut Option<S>,
    request: &mut Option<Request<ReqB>>,
    ctx: &mut Ctx<St>,
) -> State<Oneshot<S, Request<ReqB>>, StoreCall<St>, S::Response>
where
    S: Service<Request<ReqB>>,
    St: Store,
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

impl<St: Store> Ctx<St> {
    /// Sends the request to the origin, recording what storing its response needs. Every path
    /// to the origin (miss, revalidation, background refresh) goes through here.
    ///
    /// The inner service is driven to readiness only here, when a request really goes to the
    /// origin (`Oneshot`): the cache itself is always ready, so hits never wait for a saturated
    /// origin (a `ConcurrencyLimitLayer` inside the cache limits origin traffic only).
    pub(super) fn send<S, B>(&mut self, inner: S, mut request: Request<B>) -> Oneshot<S, Request<B>>
    where
        S: Service<Request<B>>,
    {
        self.advertise(&mut request);
        // While the store's breaker is not closed nothing is written: the request's parts are
        // not copied for an entry (on_response reports `StoreUnavailable`).
        let writes = self.plan.may_store() || self.plan.post_key.is_some();
        self.store_down = writes && self.config.store_down();
        if self.store_down {
            self.storing = None;
        } else if let (true, Some(key)) = (self.plan.may_store(), &self.plan.key) {
            self.storing = Some(Box::new(Storing::of(key, &request, &self.plan.cc)));
        } else if let Some(key) = &self.plan.post_key {
            self.storing = Some(Box::new(Storing::post_as_get(key, &request, &self.plan.cc)));
        }
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

    /// A transport error from the origin: stale-if-error may still answer.
    pub(super) fn origin_failed<B>(
        &mut self,
        error: BoxError,
    ) -> Result<Response<CacheBody<B>>, BoxError> {
        if let Some(stale) = self.stale_after_error() {
            return Ok(stale);
        }
        // No answer to share: the error may be this request's own (its caller's deadline, a
        // cancellation) rather than the origin's. The waiters go to the origin themselves.
        self.leader = None;
        self.asked = None;
        Err(error)
    }

    /// A response that is not stored, on its way to the caller. When it is an origin error
    /// (500, 502, 503, 504) and this request leads a flight, its waiters that made the same
    /// request get it too (coalesce.rs): the body is copied as it passes, up to
    /// `MAX_SHARED_BODY` (a larger one releases them to the origin).
    fn pass_on<B: Body>(&mut self, body: B, parts: &http::response::Parts) -> CacheBody<B> {
        if !is_origin_error(parts.status) || self.leader.is_none() || self.asked.is_none() {
            return CacheBody::upstream(body);
        }
        // Not shared: a response that varies (another waiter's variant may differ), one marked
        // `private` or `no-store` (for this request only), and one whose body is not announced
        // small (waiters would wait for a body its caller may never read; they are released at
        // once instead).
        let cc = crate::policy::directives_for(&parts.headers, &self.config.reuse());
        let varies = !matches!(
            crate::policy::vary::vary_names(&parts.headers),
            crate::policy::vary::VaryNames::Names(names) if names.is_empty()
        );
        let small = content_length(&parts.headers).is_some_and(|n| n <= MAX_SHARED_BODY as u64);
        if varies || cc.private || cc.no_store || !small {
            return CacheBody::upstream(body);
        }
        let (Some(leader), Some(asked)) = (self.leader.take(), self.asked.take()) else {
            return CacheBody::upstream(body);
        };
        let (status, version) = (parts.status, parts.version);
        let mut headers = parts.headers.clone();
        // Not a cookie meant for the leader's client instance.
        headers.remove(http::header::SET_COOKIE);
        let share = move |body: Bytes| {
            leader.failed(Failure {
                asked: *asked,
                answer: FailedAnswer {
                    status,
                    version,
                    headers,
                    body,
                },
            });
        };
        if body.is_end_stream() {
            share(Bytes::new());
            return CacheBody::upstream(body);
        }
        let sink = crate::body::Collect::new(move |body: Bytes, _trailers| {
            share(body);
            None
        });
        let expected = content_length(&parts.headers);
        CacheBody::tee(body, Tee::new(MAX_SHARED_BODY, expected, sink))
    }

    /// RFC 5861 §4: the origin failed; serve the stale entry if it may be.
    pub(super) fn stale_after_error<B>(&mut self) -> Option<Response<CacheBody<B>>> {
        let stale = self.stale.take().filter(|s| s.if_error)?;
        let now = self.config.clock.now();
        let head = &stale.entry.head;
        let age = AgeInputs::from_headers(&head.headers, head.request_time, head.response_time)
            .current_age(now);
        tracing::warn!("origin failed; serving a stale response (stale-if-error)");
        self.storing = None;
        self.leader = None;
        let (_, lifetime) = lifetime(&head.stored(), &self.config.reuse());
        let freshness = Freshness { lifetime, age, now };
        let info = hit_info(&stale.key, head, freshness, false, self.found.blob_size);
        let status = CacheStatus::StaleIfError;
        Some(self.serve(stale.entry, age, status, info))
    }

    /// The origin's response, routed: the 304 of a revalidation, an error stale-if-error may
    /// answer, or a response admitted for storing as any miss would be.
    pub(super) fn on_response<B>(
        &mut self,
        response: Response<B>,
    ) -> Result<Response<CacheBody<B>>, BoxError>
    where
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        if let Some(stale) = self.stale.take() {
            if stale.revalidating && response.status() == StatusCode::NOT_MODIFIED {
                return self.freshened(stale.key, stale.entry, response);
            }
            if is_origin_error(response.status()) {
                self.stale = Some(stale);
                if let Some(stale_response) = self.stale_after_error() {
                    return Ok(stale_response);
                }
            }
            // Anything else replaces the stored response (if storable), as any miss would.
        }
        let response_time = self.config.clock.now();
        let (mut parts, body) = response.into_parts();
        let mut status = self.status;
        let mut info = CacheInfo::bypass();
        // RFC 9110 §9.3.3: a POST's response is stored for GETs only with explicit freshness
        // and a Content-Location naming its target; §8.7: only a 2xx's Content-Location says
        // the content is "a current representation of that resource".
        let post_reusable = |storing: &Storing| {
            // 200 and 203 carry a representation (a 204 has none, a 206 only a part of one).
            if !matches!(parts.status.as_u16(), 200 | 203) {
                return false;
            }
            let cc = crate::policy::directives_for(&parts.headers, &self.config.reuse());
            explicit_lifetime(&parts.headers, &cc, self.config.shared, response_time).is_some()
                && content_location_is(storing.uri(), &parts.headers)
        };
        if self.leader.is_some() && is_origin_error(parts.status) {
            // Who may share this failure: only requests equal to this one (coalesce.rs).
            self.asked = self.storing.as_ref().map(|s| Box::new(s.asked()));
        }
        let storing = match self.storing.take() {
            Some(storing) if self.plan.post_key.is_some() && !post_reusable(&storing) => None,
            Some(storing) => {
                if self.plan.post_key.is_some() {
                    status = CacheStatus::Miss;
                }
                Some(storing)
            }
            None => None,
        };
        let body = match storing {
            Some(storing) => {
                let inputs =
                    AgeInputs::from_headers(&parts.headers, self.request_time, response_time);
                let age = inputs.current_age(response_time);
                info.key = Some(storing.key.clone());
                match self.admit(&storing, &parts, response_time, age) {
                    Ok(admitted) => {
                        let (lifetime, ttl) = (admitted.lifetime, admitted.ttl);
                        let mut head =
                            self.entry_head(&storing, &parts, response_time, admitted, inputs);
                        let (key, splice) = self.place(&storing.key, &mut head);
                        info.key = Some(key.clone());
                        info.created_at = Some(response_time);
                        info.expires = expires_at(response_time, lifetime, age);
                        // Announced by `Content-Length`, or by the body itself (an in-process
                        // origin's exact size hint).
                        let expected_len = content_length(&parts.headers)
                            .or_else(|| http_body::Body::size_hint(&body).exact());
                        // Waiters read the body being filled (`fill.rs`): taken before the
                        // leader's guard moves into the store write.
                        let publisher = self.leader.as_ref().map(|l| l.publisher());
                        match self.sink(key.clone(), &head, ttl, splice, expected_len) {
                            None => {
                                // Announced too large (or not sealable): never stored.
                                self.remember_pass(&key);
                                CacheBody::upstream(body)
                            }
                            Some(sink)
                                if body.is_end_stream() && expected_len.unwrap_or(0) == 0 =>
                            {
                                // No body at all (a 204, say): a server may never poll it, so
                                // the entry is stored now rather than at its end.
                                if let Some(put) = sink.finish(None) {
                                    run_soon(put);
                                }
                                CacheBody::upstream(body)
                            }
                            Some(sink) => {
                                let tee = Tee::new(self.config.max_body_size, expected_len, sink);
                                match publisher {
                                    Some(publisher) => self.fill(body, tee, publisher, head, key),
                                    None => CacheBody::tee(body, tee),
                                }
                            }
                        }
                    }
                    Err(why) => {
                        tracing::debug!(key = %storing.key, reason = ?why, "response not storable");
                        if !is_origin_error(parts.status) {
                            // An origin error is shared with equal waiters instead (`pass_on`):
                            // the next burst for a failing origin still sends it one request.
                            self.remember_pass(&storing.key);
                        }
                        if status == CacheStatus::Miss {
                            status = CacheStatus::NotCacheable;
                        }
                        parts.extensions.insert(NotStoredReason::from(why));
                        self.pass_on(body, &parts)
                    }
                }
            }
            // The store is not being asked (its breaker open, or half-open with its one probe
            // out): the body is not copied and sealed for a write that would be skipped.
            None if self.store_down => {
                self.config.metrics.record(Event::StoreSkipped);
                parts.extensions.insert(NotStoredReason::StoreUnavailable);
                info.key = self.plan.key.clone();
                self.pass_on(body, &parts)
            }
            None => {
                let why = self.plan.not_stored().unwrap_or(NotStoredReason::Method);
                parts.extensions.insert(why);
                info.key = self.plan.key.clone();
                self.pass_on(body, &parts)
            }
        };
        parts.extensions.insert(info);
        // Nothing is being stored: release the waiters now, they fetch for themselves.
        self.leader = None;
        parts.extensions.insert(status);
        Ok(Response::from_parts(parts, body))
    }

    /// The leader's body, shared with its waiters as it is filled (`fill.rs`): the waiters are
    /// told now, at the head, and every caller reads the same chunks.
    fn fill<B>(
        &mut self,
        body: B,
        tee: Tee,
        publisher: crate::coalesce::Publisher,
        head: crate::entry::EntryHead,
        key: CacheKey,
    ) -> CacheBody<B>
    where
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        let source = body
            .map_frame(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
            .map_err(Into::into)
            .boxed_unsync();
        let fill = Fill::new(source, Some(tee), self.config.max_body_size, head, key);
        match fill.reader() {
            Some(reader) => {
                publisher.filling(&fill);
                CacheBody::fill(reader)
            }
            // Not reached: a new fill always has its first chunk.
            None => CacheBody::default(),
        }
    }

    /// A response for `key` was not storable: requests for it do not coalesce for a while
    /// (`CacheLayer::hit_for_pass`), so the next burst does not queue behind one request.
    pub(super) fn remember_pass(&self, key: &CacheKey) {
        let Some(window) = self.config.hit_for_pass.filter(|_| self.leader.is_some()) else {
            return;
        };
        let now = self.config.clock.now();
        self.config.flights.pass(key, now, now + window);
    }

    /// RFC 9111 §4.3.4: a 304 freshens the stored response: its header fields update the stored
    /// ones (§3.2, [`freshen`]), the stored body is served, and the updated entry is admitted
    /// again by the same rules as a new response (the expiry starts again from now).
    ///
    /// A large body held in memory was verified whole at the lookup, before the conditional
    /// request (`lookup.rs`); one kept for a background refresh (`stale-while-revalidate`) is
    /// verified here, and one that fails is refused before any response: the error
    /// (`BadSignature`, counted; or why it is unusable), the entry deleted (docs/security.md,
    /// "Streamed entries").
    fn freshened<B>(
        &mut self,
        key: CacheKey,
        entry: Entry,
        not_modified: Response<B>,
    ) -> Result<Response<CacheBody<B>>, BoxError> {
        let response_time = self.config.clock.now();
        let Entry {
            mut head,
            body,
            trailers,
        } = entry;
        // A large entry held in memory and verified as it is read is verified whole now, so that
        // it can be written back below. One that fails is not served: with
        // `OnBadSignature::Refetch` such entries were verified whole at the lookup, so the
        // policy here is `Error`.
        let body = match body.into_verified_parts() {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "a 304 revalidated a stored entry whose body cannot be served; refusing it");
                self.storing = None;
                self.leader = None;
                return Err(e);
            }
        };
        // Too many fields to merge (see `freshen`): the stored response is served as it is, and
        // not stored again.
        let merged = freshen(&head.headers, not_modified.headers());
        let restore = merged.is_some();
        match merged {
            Some(headers) => head.headers = headers,
            None => {
                tracing::warn!(key = %key, "a 304 with more header fields than an entry holds; serving the stored response without storing it again")
            }
        }
        head.request_time = self.request_time;
        head.response_time = response_time;
        // Freshened: its sealed freshness inputs no longer apply (computed again below when it
        // is stored again).
        head.fresh = None;
        let age = AgeInputs::from_headers(&head.headers, head.request_time, response_time)
            .current_age(response_time);
        if let Some(storing) = self.storing.take().filter(|_| restore) {
            let parts = respond::response_parts(&head);
            if let Ok(admitted) = self.admit(&storing, &parts, response_time, age) {
                head.expiry = admitted.expiry;
                head.fresh = Some(crate::policy::fresh::compute(
                    &head.stored(),
                    &self.config.reuse(),
                ));
                let len = Some(body.len());
                // A body the store streams is read once, by the caller: the entry is not
                // written again (the next request revalidates again; §4.3.4's update is a SHOULD).
                if let EntryBody::Parts { parts, .. } = &body {
                    if let Some(mut sink) = self.sink(storing.key, &head, admitted.ttl, None, len) {
                        if parts.iter().all(|part| sink.data(part)) {
                            if let Some(put) = sink.finish(trailers.clone()) {
                                run_soon(put);
                            }
                        }
                    }
                }
            }
        }
        self.leader = None;
        tracing::debug!("revalidated: 304 Not Modified, serving the stored body");
        let (_, lifetime) = lifetime(&head.stored(), &self.config.reuse());
        let freshness = Freshness {
            lifetime,
            age,
            now: response_time,
        };
        let info = hit_info(&key, &head, freshness, true, self.found.blob_size);
        let entry = Entry {
            head,
            body,
            trailers,
        };
        Ok(self.serve(entry, age, CacheStatus::Revalidated, info))
    }
}
