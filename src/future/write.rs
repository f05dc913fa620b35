//! Write: one admission path for new responses and 304-freshened entries (the user's statuses
//! and filter, RFC 9111 §3, the user's expiry), the entry head, and sealing + `Put`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};

use super::Ctx;
use crate::body::{PutFuture, Sealer};
use crate::clock::unique_u64;
use crate::controls::ExpireAfter;
use crate::entry::{EntryHead, Expiry};
use crate::key::CacheKey;
use crate::metrics::Event;
use crate::policy::fields::strip_unstorable;
use crate::policy::ranges::{combine, splice, storable_partial, stored_range, ContentRange};
use crate::policy::retention::store_ttl;
use crate::policy::storable::{
    storability, with_user_expiry, Exchange, NotStorable, Storability, UserExpiry,
};
use crate::policy::vary::{capture, vary_names, VaryNames};
use crate::policy::RequestDirectives;
use crate::store::{Store, StoreRequest, StoreResponse};

/// The parts of a forwarded request that its stored entry records.
pub(super) struct Storing {
    pub(super) key: CacheKey,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    cc: RequestDirectives,
}

impl Storing {
    pub(super) fn of<B>(key: &CacheKey, request: &Request<B>, cc: &RequestDirectives) -> Self {
        Storing {
            key: key.clone(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            cc: cc.clone(),
        }
    }

    /// A `POST` whose response may answer later `GET`s (RFC 9110 §9.3.3): recorded as the
    /// `GET` it will answer.
    pub(super) fn post_as_get<B>(
        key: &CacheKey,
        request: &Request<B>,
        cc: &RequestDirectives,
    ) -> Self {
        Storing {
            method: Method::GET,
            ..Self::of(key, request, cc)
        }
    }

    /// The request's target.
    pub(super) fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// A `206` combined with the incomplete entry kept from the lookup (RFC 9111 §3.4): the stored
/// bytes and the new ones make `union`.
pub(super) struct Splice {
    old: Bytes,
    old_range: ContentRange,
    new_range: ContentRange,
    union: ContentRange,
}

impl Splice {
    /// The sealer of the combined entry: the new bytes (checked against their
    /// `Content-Length` as any body is) spliced with the stored ones, then sealed as usual.
    pub(super) fn wrap(self, sealer: Sealer) -> Sealer {
        Box::new(move |chunks: Vec<Bytes>, trailers: Option<HeaderMap>| {
            let mut new = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
            for chunk in &chunks {
                new.extend_from_slice(chunk);
            }
            let Some(body) = splice(&self.old, self.old_range, &new, self.new_range, self.union)
            else {
                tracing::debug!("partial content did not combine; not stored");
                return None;
            };
            sealer(vec![Bytes::from(body)], trailers)
        })
    }
}

/// A response admitted for storing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Admitted {
    /// Its freshness lifetime, from reception.
    pub(super) lifetime: Duration,
    /// Where that lifetime comes from.
    pub(super) expiry: Expiry,
    /// How long the store keeps it (see [`store_ttl`]).
    pub(super) ttl: Duration,
}

impl<St: Store> Ctx<St> {
    /// Whether (and for how long) a response is stored: the user's status list and filter,
    /// RFC 9111 §3, then the user's expiry settings. The one admission path: new responses and
    /// 304-freshened entries alike.
    pub(super) fn admit(
        &self,
        storing: &Storing,
        parts: &http::response::Parts,
        response_time: SystemTime,
        age: Duration,
    ) -> Result<Admitted, NotStorable> {
        let config = &self.config;
        if let Some(statuses) = &config.statuses {
            if !statuses.contains(&parts.status) {
                return Err(NotStorable::Status);
            }
        }
        if let Some(filter) = &config.filter {
            if !filter(parts) {
                return Err(NotStorable::Filtered);
            }
        }
        // `DoNotCache` never plans a store; be safe anyway.
        if self.plan.expire == Some(ExpireAfter::DoNotCache) {
            return Err(NotStorable::Method);
        }
        let cc = crate::policy::directives_for(&parts.headers, &config.reuse());
        let exchange = Exchange {
            method: &storing.method,
            method_allowed: self.plan.method_allowed,
            request_headers: &storing.headers,
            request_cc: &storing.cc,
            status: parts.status,
            response_headers: &parts.headers,
            response_cc: &cc,
            response_time,
            age,
        };
        let verdict = storability(&exchange, config.shared);
        let user = UserExpiry {
            lifetime: self.plan.expire.and_then(ExpireAfter::lifetime),
            honor_headers: config.cache_control,
            statuses: config.statuses.as_deref(),
        };
        match with_user_expiry(&exchange, config.shared, verdict, user) {
            (Storability::Store { lifetime }, expiry) => Ok(Admitted {
                lifetime,
                expiry,
                ttl: store_ttl(lifetime, age, expiry, &cc, config.stale_on_error),
            }),
            (Storability::DoNotStore(why), _) => Err(why),
        }
    }

    /// The head stored for a response to the request in `storing`.
    pub(super) fn entry_head(
        &self,
        storing: &Storing,
        parts: &http::response::Parts,
        response_time: SystemTime,
        expiry: Expiry,
    ) -> EntryHead {
        let mut headers = parts.headers.clone();
        strip_unstorable(&mut headers);
        // RFC 9111 §5.2.2.4 / §5.2.2.7: the fields a qualified `no-cache` or (shared)
        // `private` names are not kept; the rest of the response is.
        let cc = crate::policy::directives_for(&parts.headers, &self.config.reuse());
        for name in cc.unstored_fields(self.config.shared) {
            headers.remove(name);
        }
        let protect = self.config.protect();
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
            // A fresh variant generation: random, uniqueness is all it needs.
            generation: self.found.generation.unwrap_or_else(unique_u64),
            expiry,
        }
    }

    /// Where an admitted response is stored (RFC 9111 §3.3–§3.4): under `primary`, except a
    /// `206`, which goes under the incomplete entry's name, combined with the entry kept from
    /// the lookup when both carry the same strong `ETag` and their ranges meet; combined into
    /// the whole representation, it is a complete `200` under `primary`.
    pub(super) fn place(
        &mut self,
        primary: &CacheKey,
        head: &mut EntryHead,
    ) -> (CacheKey, Option<Splice>) {
        if head.status != StatusCode::PARTIAL_CONTENT {
            return (primary.clone(), None);
        }
        let kept = self.found.partial.take();
        let combined = kept.and_then(|old| {
            let new_range = storable_partial(&head.headers)?;
            let old_range =
                stored_range(&old.head.headers).filter(|r| r.len() == old.body.len() as u64)?;
            let union = combine((&old.head.headers, old_range), (&head.headers, new_range))?;
            (union.len() <= self.config.max_body_size as u64).then_some(Splice {
                old: old.body,
                old_range,
                new_range,
                union,
            })
        });
        let Some(splice) = combined else {
            return (primary.partial(), None);
        };
        let union = splice.union;
        let length = HeaderValue::from(union.len());
        head.headers.insert(header::CONTENT_LENGTH, length);
        if union.first == 0 && union.last + 1 == union.complete {
            tracing::debug!(key = %primary, "partial content combined into the whole representation");
            head.status = StatusCode::OK;
            head.headers.remove(header::CONTENT_RANGE);
            return (primary.clone(), Some(splice));
        }
        head.headers
            .insert(header::CONTENT_RANGE, union.header_value());
        (primary.partial(), Some(splice))
    }

    /// Seals the body once it has ended and writes it under the entry's keys.
    pub(super) fn sealer(&mut self, key: CacheKey, head: EntryHead, ttl: Duration) -> Sealer {
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
                    let put = config.call(&store, put);
                    let config = config.clone();
                    async move {
                        match put.await {
                            Ok(StoreResponse::NotStored) => {
                                // Refused (too large for the store): not stored, and the
                                // waiters must not be told it was.
                                config.metrics.record(Event::StoreWriteError);
                                tracing::warn!(key = %key, size, "the store refused the entry; response not cached");
                                false
                            }
                            Ok(_) => {
                                config.metrics.record(Event::Stored);
                                tracing::debug!(key = %key, size, ttl = ttl.as_secs(), "stored");
                                true
                            }
                            Err(e) if e.is_unavailable() => {
                                config.metrics.record(Event::StoreSkipped);
                                tracing::debug!(key = %key, "store circuit breaker open; response not cached");
                                false
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
