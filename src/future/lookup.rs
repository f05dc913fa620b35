//! Lookup: the store's answer → the envelope opened → the policy's decision → where the
//! request goes next (a response made from the entry, a variant to look up, a conditional
//! request, the origin).

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::util::Oneshot;
use tower::Service;

use super::{forward, Ctx, State};
use crate::body::CacheBody;
use crate::coalesce::RefreshGuard;
use crate::controls::CacheMode;
use crate::entry::{Entry, VaryValue};
use crate::error::{BoxError, StoreError};
use crate::key::CacheKey;
use crate::metrics::Event;
use crate::policy::decision::{assess, Decision};
use crate::policy::fields::has_validator;
use crate::policy::ranges::{select, Selected};
use crate::policy::validation::{conditional_headers, not_modified};
use crate::policy::vary::capture;
use crate::respond::{self, hit_info, Freshness};
use crate::status::CacheStatus;
use crate::store::{Found, Store, StoreRequest, StoreResponse};

/// Entries whose blob a store answers whole (or in parts) from this size on are verified a
/// segment at a time as the caller reads them, as a stream a store answers is: the response
/// starts once the head is proven, and each segment is released once it is. A body segment that
/// fails then ends the body with `BadSignature` after the verified prefix (docs/security.md,
/// "Streamed entries"); one unusable for another reason ends it with that reason, and the entry
/// is deleted either way. The body stays in memory, so the entry can still be copied
/// (`stale-while-revalidate` keeps it), and a stale one is verified whole before it is
/// revalidated, so that a 304 serves it and writes it back. With `OnBadSignature::Refetch`,
/// such entries are verified whole before the response, as smaller ones are.
pub(super) const VERIFY_AS_READ_FROM: usize = 1 << 20;
/// A stale entry kept while the request goes on: to validate it, or to serve it if the origin
/// fails.
pub(super) struct StaleEntry {
    /// The key it was read from.
    pub(super) key: CacheKey,
    pub(super) entry: Entry,
    /// A conditional request was sent for it: a 304 freshens it.
    pub(super) revalidating: bool,
    /// It may be served if the origin fails.
    pub(super) if_error: bool,
}

/// What a lookup leads to.
// Returned once and consumed at once; boxing the hit would add an allocation to the hit path.
#[allow(clippy::large_enum_variant)]
pub(super) enum Lookup<B> {
    /// Answer with this response (a hit, a 304 to the client's conditional, a 504).
    Hit(Response<CacheBody<B>>),
    Fail(BoxError),
    /// Answer with this stale response and refresh the entry in the background.
    Refresh(Response<CacheBody<B>>, RefreshGuard),
    /// Keep going.
    Go(Next),
    /// The store answered with a stream: read its head (bounded by the store timeout), then
    /// [`Ctx::on_head`].
    ReadHead(CacheKey, crate::store::BlobStream),
}

/// Where a request goes after a lookup that did not answer it.
pub(super) enum Next {
    /// Delete this entry (it failed verification or the filter), then go to the origin.
    Delete(CacheKey),
    /// Look up this key next: a Vary variant's (§4.1), or the request's name before a key
    /// rotation.
    Variant(CacheKey),
    /// Send the request with these validators added (§4.3.1).
    Revalidate(Vec<(HeaderName, HeaderValue)>),
    /// Go to the origin (after joining a concurrent request for the same key, if any).
    Forward,
}

impl<St: Store> Ctx<St> {
    pub(super) fn on_lookup<B>(
        &mut self,
        answer: Result<StoreResponse, StoreError>,
        request_headers: Option<&HeaderMap>,
    ) -> Lookup<B> {
        let (Some(primary), Some(request_headers)) = (self.plan.key.clone(), request_headers)
        else {
            return Lookup::Go(Next::Forward);
        };
        // The key this blob was read from: the primary key (under the current or an older name,
        // see `older_keys`), or a variant's key (§4.1).
        let key = match (&self.found.variant_key, self.found.older) {
            _ if self.found.partial_looked => primary.partial(),
            (Some(variant), _) => variant.clone(),
            (None, 0) => primary,
            (None, n) => self.plan.older_keys.get(n - 1).cloned().unwrap_or(primary),
        };
        let found = match answer.and_then(StoreResponse::into_found) {
            Ok(Some(found)) => found,
            Ok(None) => {
                // Written before a key rotation: the same request under the previous key's name.
                if self.found.variant_key.is_none() && !self.found.partial_looked {
                    if let Some(older) = self.plan.older_keys.get(self.found.older).cloned() {
                        tracing::debug!(key = %key, older = %older, "cache miss; looking up the name before the key rotation");
                        self.found.older += 1;
                        return Lookup::Go(Next::Variant(older));
                    }
                }
                tracing::debug!(key = %key, "cache miss");
                return self.nothing_usable();
            }
            Err(e) => return self.store_failed(&key, e),
        };
        // A large entry in memory (a Redis value, a memory store's parts) is opened as a store's
        // stream is: its head verified, then each segment as the caller reads it, so that the
        // first byte does not wait for the last segment's proof (see `VERIFY_AS_READ_FROM`).
        // Not with `OnBadSignature::Refetch`: whoever chose it never sees a tampered entry fail,
        // which only verifying it whole first can give.
        let as_read = self.config.on_bad_signature == crate::config::OnBadSignature::Error;
        let found = match found {
            Found::Whole(blob) if as_read && blob.len() >= VERIFY_AS_READ_FROM => {
                Found::Stream(crate::store::BlobStream::buffered([blob]))
            }
            Found::Parts(parts) if as_read && parts.len() >= VERIFY_AS_READ_FROM => Found::Stream(
                crate::store::BlobStream::buffered(parts.parts().iter().cloned()),
            ),
            found => found,
        };
        let opened = match found {
            Found::Whole(blob) => {
                self.found.blob_size = Some(blob.len());
                // A memory store (or a near tier) answers the very buffer it holds: one opened
                // before gives its entry again, not proven or decoded again
                // (`envelope/verified.rs`, docs/security.md).
                if crate::store::answers_held_buffers::<St>() {
                    let verified = &self.config.verified;
                    self.config.envelope.open_remembered(&key, blob, verified)
                } else {
                    self.config.envelope.open(&key, blob)
                }
            }
            Found::Parts(parts) => {
                self.found.blob_size = Some(parts.len());
                self.config
                    .envelope
                    .open_parts(&key, parts.parts().iter().cloned())
            }
            Found::Stream(stream) => {
                self.found.blob_size = usize::try_from(stream.len()).ok();
                if stream.len() > self.config.envelope.max_blob() as u64 {
                    // Not read: unusable as a whole blob over the bound is (`open_parts`).
                    let too_large =
                        crate::envelope::OpenError::Unusable(crate::envelope::TOO_LARGE);
                    let why = self.not_opened(&key, too_large);
                    return self.unusable(key, why);
                }
                return Lookup::ReadHead(key, stream);
            }
        };
        match self.checked(&key, opened) {
            Ok(entry) => self.decide(key, entry, request_headers),
            Err(why) => self.unusable(key, why),
        }
    }

    /// The store failed: fail-closed fails the request, fail-open goes on as on a miss.
    pub(super) fn store_failed<B>(&mut self, key: &CacheKey, e: StoreError) -> Lookup<B> {
        if e.is_unavailable() {
            // The breaker is open: it logged that once; no warning per request.
            self.config.metrics.record(Event::StoreSkipped);
            if self.config.fail_closed {
                return Lookup::Fail(Box::new(e));
            }
            tracing::debug!(key = %key, "store circuit breaker open; going to the origin");
            self.status = CacheStatus::StoreUnavailable;
            return self.nothing_usable();
        }
        self.config.metrics.record(Event::StoreReadError);
        if self.config.fail_closed {
            tracing::warn!(key = %key, error = %e, "store lookup failed; failing the request (fail-closed)");
            return Lookup::Fail(Box::new(e));
        }
        tracing::warn!(key = %key, error = %e, "store lookup failed; going to the origin");
        self.status = CacheStatus::StoreUnavailable;
        self.nothing_usable()
    }

    /// A stored response served to this request: the whole of it, or the range the request
    /// asks for (RFC 9110 §14, `respond::serve`).
    pub(super) fn serve<B>(
        &self,
        entry: Entry,
        age: std::time::Duration,
        status: CacheStatus,
        info: crate::status::CacheInfo,
    ) -> Response<CacheBody<B>> {
        let range = self
            .plan
            .range
            .as_deref()
            .map(|r| (r.range, r.if_range.as_ref()));
        respond::serve(entry, age, status, self.plan.head, info, range)
    }

    /// RFC 9111 §4: the policy decides whether the verified entry answers the request.
    pub(super) fn decide<B>(
        &mut self,
        key: CacheKey,
        entry: Entry,
        request_headers: &HeaderMap,
    ) -> Lookup<B> {
        if self.found.partial_looked {
            return self.decide_partial(key, entry, request_headers);
        }
        // An incomplete entry answers only under its own name (never written elsewhere).
        if entry.head.status == http::StatusCode::PARTIAL_CONTENT {
            return self.nothing_usable();
        }
        // New variants of this URL join the stored generation.
        self.found.generation = Some(entry.head.generation);
        let (decision, lifetime, now) = self.assess(&entry, request_headers);
        let info = |ctx: &Self, entry: &Entry, age| {
            let freshness = Freshness { lifetime, age, now };
            hit_info(&key, &entry.head, freshness, false, ctx.found.blob_size)
        };
        match decision {
            Decision::Fresh { age } => {
                tracing::debug!(key = %key, age = age.as_secs(), "cache hit");
                let status = if self.found.coalesced {
                    CacheStatus::Coalesced
                } else {
                    CacheStatus::Hit
                };
                let info = info(self, &entry, age);
                if self.plan.conditional && not_modified(&entry.head.stored(), request_headers) {
                    // §4.3.2: the client's copy is current; answer 304 from the cache.
                    return Lookup::Hit(respond::not_modified(&entry.head, age, status, info));
                }
                Lookup::Hit(self.serve(entry, age, status, info))
            }
            Decision::StaleAccepted { age } => {
                tracing::debug!(key = %key, age = age.as_secs(), mode = ?self.plan.mode, "stale, accepted by max-stale or the cache mode");
                let info = info(self, &entry, age);
                let status = CacheStatus::Stale;
                Lookup::Hit(self.serve(entry, age, status, info))
            }
            Decision::Stale {
                age,
                while_revalidate: true,
                ..
            } if !self.plan.conditional => {
                tracing::debug!(key = %key, age = age.as_secs(), "stale-while-revalidate");
                // Kept for the background refresh: its validators, and its body if a 304 comes.
                // A streamed body is the caller's: the refresh asks for the whole response.
                let (kept, revalidating) = match entry.try_clone() {
                    Some(kept) => (kept, has_validator(&entry.head.headers)),
                    None => (
                        Entry {
                            head: entry.head.clone(),
                            body: crate::entry::EntryBody::empty(),
                            trailers: None,
                        },
                        false,
                    ),
                };
                self.stale = Some(Box::new(StaleEntry {
                    key: key.clone(),
                    entry: kept,
                    revalidating,
                    if_error: false,
                }));
                let info = info(self, &entry, age);
                let status = CacheStatus::StaleWhileRevalidate;
                let response = self.serve(entry, age, status, info);
                // At most one refresh per key: concurrent stale hits share it.
                match self.config.flights.start_refresh(&key) {
                    Some(guard) => Lookup::Refresh(response, guard),
                    None => Lookup::Hit(response),
                }
            }
            Decision::Stale { if_error, .. } if !self.plan.cc.only_if_cached => {
                // A client's own conditional goes to the origin as it is: its validators, not
                // ours (and its 304 is not ours to merge).
                let revalidating = has_validator(&entry.head.headers) && !self.plan.conditional;
                // A large body held in memory and verified as it is read (`VERIFY_AS_READ_FROM`)
                // is verified whole now, before the conditional request: a 304 would serve it,
                // and one that cannot be served must not be validated. A failed proof is refused
                // as at any lookup (counted and deleted by the body's own check); a body unusable
                // for another reason (an unsigned entry's checksum) is a miss: the request goes
                // without validators.
                let entry = if revalidating {
                    match entry.into_verified() {
                        Ok(entry) => entry,
                        Err(e) => {
                            let why = match e.downcast::<crate::error::BadSignature>() {
                                Ok(bad) => Unusable::BadSignature(*bad),
                                Err(e) => {
                                    tracing::debug!(key = %key, error = %e, "stored body unusable; treating as a miss");
                                    Unusable::Undecodable
                                }
                            };
                            return self.unusable(key, why);
                        }
                    }
                } else {
                    entry
                };
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
                        key,
                        entry,
                        revalidating,
                        if_error: if_error.is_some(),
                    }));
                }
                Lookup::Go(if revalidating {
                    Next::Revalidate(validators)
                } else {
                    Next::Forward
                })
            }
            Decision::NoMatch
                if self.found.variant_key.is_none() && !entry.head.vary.is_empty() =>
            {
                // §4.1: another variant is stored under the primary key; this request's own
                // variant, if stored, is under the key its selecting header values give.
                let values: Vec<VaryValue> = {
                    let protect = self.config.protect();
                    entry
                        .head
                        .vary
                        .iter()
                        .map(|(name, _)| capture(request_headers, name, &protect))
                        .collect()
                };
                let variant = key.variant(entry.head.generation, &values);
                tracing::debug!(key = %key, variant = %variant, "looking up the request's variant");
                self.found.variant_key = Some(variant.clone());
                Lookup::Go(Next::Variant(variant))
            }
            other => {
                tracing::debug!(key = %key, decision = ?other, "stored entry not usable");
                self.nothing_usable()
            }
        }
    }

    /// RFC 9111 §4: the policy's decision on `entry` for this request, now; with the modes that
    /// accept any stored response (ForceCache / OnlyIfCached) applied. Its freshness lifetime,
    /// and the `now` it was decided at.
    fn assess(
        &self,
        entry: &Entry,
        request_headers: &HeaderMap,
    ) -> (Decision, std::time::Duration, std::time::SystemTime) {
        let now = self.config.clock.now();
        let (decision, lifetime) = assess(
            &entry.head.stored(),
            request_headers,
            &self.plan.cc,
            &self.config.reuse(),
            now,
            &self.config.protect(),
        );
        let any_stale = matches!(
            self.plan.mode,
            CacheMode::ForceCache | CacheMode::OnlyIfCached
        );
        (decision.accepting_any_stale(any_stale), lifetime, now)
    }

    /// The incomplete entry of a ranged request (RFC 9111 §3.3): it answers when it is fresh
    /// (or accepted stale) and holds the range whole; else it is kept, for a `206` from the
    /// origin to complete (§3.4).
    fn decide_partial<B>(
        &mut self,
        key: CacheKey,
        entry: Entry,
        request_headers: &HeaderMap,
    ) -> Lookup<B> {
        let (decision, lifetime, now) = self.assess(&entry, request_headers);
        let usable = match decision {
            Decision::Fresh { age } => Some((age, CacheStatus::Hit)),
            Decision::StaleAccepted { age } => Some((age, CacheStatus::Stale)),
            _ => None,
        };
        let selected = self.plan.range.as_deref().and_then(|r| {
            select(
                r.range,
                r.if_range.as_ref(),
                entry.head.status,
                &entry.head.headers,
                entry.body.len(),
            )
        });
        if let (Some((age, status)), Some(Selected::Part(part))) = (usable, selected) {
            tracing::debug!(key = %key, age = age.as_secs(), "cache hit (incomplete entry)");
            let freshness = Freshness { lifetime, age, now };
            let info = hit_info(&key, &entry.head, freshness, false, self.found.blob_size);
            // RFC 9110 §13.2.2: If-None-Match / If-Modified-Since come before Range.
            if self.plan.conditional && not_modified(&entry.head.stored(), request_headers) {
                return Lookup::Hit(respond::not_modified(&entry.head, age, status, info));
            }
            return Lookup::Hit(respond::partial(entry, part, age, status, info));
        }
        if entry.head.status == http::StatusCode::PARTIAL_CONTENT {
            tracing::debug!(key = %key, "incomplete entry does not answer; kept to combine");
            self.found.partial = Some(Box::new(entry));
        }
        self.nothing_usable()
    }

    /// Nothing stored can answer: a ranged request looks for its incomplete entry once; then
    /// it goes to the origin, unless the client said only-if-cached (§5.2.1.7: a 504 from the
    /// cache).
    pub(super) fn nothing_usable<B>(&mut self) -> Lookup<B> {
        if let (Some(key), Some(_), false) = (
            self.plan.key.as_ref(),
            self.plan.range.as_ref(),
            self.found.partial_looked,
        ) {
            if self.status != CacheStatus::StoreUnavailable {
                self.found.partial_looked = true;
                let partial = key.partial();
                tracing::debug!(key = %partial, "looking up the incomplete entry");
                return Lookup::Go(Next::Variant(partial));
            }
        }
        if !self.plan.cc.only_if_cached {
            return Lookup::Go(Next::Forward);
        }
        self.leader = None;
        Lookup::Hit(respond::gateway_timeout())
    }

    /// The state a lookup that did not answer leads to.
    pub(super) fn route<S, ReqB>(
        &mut self,
        next: Next,
        inner: &mut Option<S>,
        request: &mut Option<Request<ReqB>>,
    ) -> State<Oneshot<S, Request<ReqB>>, super::StoreCall<St>, S::Response>
    where
        S: Service<Request<ReqB>>,
    {
        match next {
            Next::Delete(key) => State::Delete {
                fut: self.store_call(StoreRequest::Delete { key }),
            },
            Next::Variant(key) => State::Lookup {
                fut: self.store_call(self.config.get(key)),
            },
            Next::Revalidate(validators) => {
                if let Some(request) = request.as_mut() {
                    for (name, value) in validators {
                        request.headers_mut().insert(name, value);
                    }
                }
                forward::forward(inner, request, self)
            }
            Next::Forward => match self.join_flight() {
                Some(fut) => State::Wait { fut },
                None => forward::forward(inner, request, self),
            },
        }
    }

    /// A failed delete of an unusable entry is logged and counted, never returned.
    pub(super) fn after_delete(&mut self, answer: Result<StoreResponse, StoreError>) {
        if let Err(e) = answer {
            self.config.metrics.record(Event::StoreWriteError);
            tracing::warn!(error = %e, "could not delete an entry that failed verification");
        }
    }
}

/// Why a stored blob cannot answer.
pub(super) enum Unusable {
    BadSignature(crate::error::BadSignature),
    /// Verified (or unsigned) but not decodable by this version, or older than `not_before`: a
    /// miss.
    Undecodable,
    /// The user's filter rejects it now.
    Filtered,
}
