//! Joined flights (coalesce.rs): a miss joins a concurrent request for the same key or leads
//! it; a request that waited looks again, answers from the leader's response as it arrives
//! (`fill.rs`), or shares the leader's failure when it asked the same.

use bytes::Bytes;
use http::{Request, Response};
use tower::util::Oneshot;
use tower::Service;

use super::{forward, Ctx, State};
use crate::body::CacheBody;
use crate::coalesce::{Asked, Failure, Join, WaitFuture};
use crate::policy::decision::{assess, Decision};
use crate::respond::{self, hit_info, Freshness};
use crate::status::CacheStatus;
use crate::store::Store;

impl<St: Store> Ctx<St> {
    /// After waiting for a concurrent request: look again from the primary key if it stored
    /// something, else go to the origin.
    pub(super) fn after_wait<S, ReqB>(
        &mut self,
        stored: bool,
        inner: &mut Option<S>,
        request: &mut Option<Request<ReqB>>,
    ) -> State<Oneshot<S, Request<ReqB>>, super::StoreCall<St>, S::Response>
    where
        S: Service<Request<ReqB>>,
    {
        self.found.coalesced = true;
        self.found.variant_key = None;
        self.found.older = 0;
        match (stored, self.plan.key.clone()) {
            (true, Some(key)) => State::Lookup {
                fut: self.store_call(self.config.get(key)),
            },
            _ => forward::forward(inner, request, self),
        }
    }

    /// On a miss: join a concurrent request for the same key, or lead one. Returns the wait when
    /// there is one to wait for.
    pub(super) fn join_flight(&mut self) -> Option<WaitFuture> {
        let timeout = self.config.coalesce_timeout?;
        let key = self.plan.key.as_ref()?;
        // A ranged request's answer is a part: it is not what waiters for the key wait for. And
        // while the store's breaker is not closed nothing will be stored for waiters to read.
        if self.found.coalesced
            || !self.plan.may_store()
            || self.plan.range.is_some()
            || self.config.store_down()
        {
            return None;
        }
        // Hit-for-pass: its last response was not storable, so there would be nothing to share.
        if self.config.hit_for_pass.is_some()
            && self.config.flights.passing(key, self.config.clock.now())
        {
            tracing::debug!(key = %key, "recently not storable; not coalescing");
            return None;
        }
        match self.config.flights.join(key, timeout) {
            Join::Wait(fut) => {
                tracing::debug!(key = %key, "waiting for a concurrent request for the same key");
                Some(fut)
            }
            Join::Lead(leader) => {
                // What a failure of it would be shared with is worked out only if it fails
                // (`Ctx::on_response`, from the request's parts kept for storing).
                self.leader = Some(leader);
                None
            }
            Join::Alone => None,
        }
    }

    /// What decides whether a failure is shared with `request`: the whole request but for
    /// a few fields that cannot say who is asking (`coalesce::UNCOMPARED_FIELDS`).
    fn asked_of<ReqB>(&self, request: &Request<ReqB>) -> Asked {
        Asked::of(request.method(), request.uri(), request.headers())
    }

    /// After waiting for a leader whose response is being filled: the response a hit on its
    /// entry would give, with the shared body (`fill.rs`). `None` when this request cannot use
    /// it as it stands (conditional, another variant, not fresh for this request, joined too
    /// late): it waits for the leader's outcome instead.
    pub(super) fn answer_from_fill<B, ReqB>(
        &mut self,
        fill: &std::sync::Arc<crate::body::fill::Fill>,
        request: Option<&Request<ReqB>>,
    ) -> Option<Response<CacheBody<B>>> {
        let request = request?;
        if self.plan.conditional || self.plan.range.is_some() {
            return None;
        }
        let head = fill.head();
        let now = self.config.clock.now();
        let (decision, lifetime) = assess(
            &head.stored(),
            request.headers(),
            &self.plan.cc,
            &self.config.reuse(),
            now,
            &self.config.protect(),
        );
        let Decision::Fresh { age } = decision else {
            return None;
        };
        let body = if self.plan.head {
            CacheBody::cached(Bytes::new(), None)
        } else {
            CacheBody::fill(fill.reader()?)
        };
        tracing::debug!(key = %fill.key(), "answering from a concurrent request's response as it arrives");
        let freshness = Freshness { lifetime, age, now };
        let info = hit_info(fill.key(), head, freshness, false, None);
        Some(respond::from_fill(head, body, age, info))
    }

    /// After waiting for a leader whose request failed: its answer, if this request is its own
    /// (the same URI and credential fields; `CacheStatus::CoalescedError`). `None`: go on as
    /// after any wait that stored nothing.
    pub(super) fn shared_failure<B, ReqB>(
        &mut self,
        failure: &Failure,
        request: Option<&Request<ReqB>>,
    ) -> Option<Response<CacheBody<B>>> {
        let request = request?;
        // A stale entry this request may serve when the origin fails comes first (RFC 5861).
        if self.stale.as_ref().is_some_and(|s| s.if_error) {
            return self.stale_after_error();
        }
        let asked = self.asked_of(request);
        if asked != failure.asked {
            return None;
        }
        self.leader = None;
        tracing::debug!("the concurrent request this one waited for failed; sharing its answer");
        let answer = &failure.answer;
        let mut response = Response::new(CacheBody::cached(answer.body.clone(), None));
        *response.status_mut() = answer.status;
        *response.version_mut() = answer.version;
        *response.headers_mut() = answer.headers.clone();
        let mut info = crate::status::CacheInfo::bypass();
        info.key = self.plan.key.clone();
        response.extensions_mut().insert(info);
        response
            .extensions_mut()
            .insert(crate::status::NotStoredReason::Status);
        response
            .extensions_mut()
            .insert(CacheStatus::CoalescedError);
        Some(response)
    }
}
