//! Write: one admission path for new responses and 304-freshened entries (the user's statuses
//! and filter, RFC 9111 §3, the user's expiry), the entry head, and sealing + `Put`.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};

use super::put::{Streaming, Write};
use super::Ctx;
use crate::body::{PutFuture, Sink};
use crate::clock::unique_u64;
use crate::controls::ExpireAfter;
use crate::entry::{EntryHead, Expiry};
use crate::envelope::Sealing;
use crate::key::CacheKey;
use crate::policy::fields::strip_unstorable_noting;
use crate::policy::ranges::{combine, splice_parts, storable_partial, stored_range, ContentRange};
use crate::policy::retention::store_ttl;
use crate::policy::storable::{
    storability, with_user_expiry, Exchange, NotStorable, Storability, UserExpiry,
};
use crate::policy::vary::{capture, vary_names, VaryNames};
use crate::policy::RequestDirectives;
use crate::store::Store;

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

    /// What decides whether a failure of this request is shared with another (coalesce.rs).
    pub(super) fn asked(&self) -> crate::coalesce::Asked {
        crate::coalesce::Asked::of(&self.method, &self.uri, &self.headers)
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

/// The stored bytes that go around the new ones in a [`Splice`], and the new part's length.
struct Around {
    suffix: Bytes,
    new_len: u64,
}

/// A response admitted for storing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Admitted {
    /// Its freshness lifetime, from reception.
    pub(super) lifetime: Duration,
    /// Where that lifetime comes from.
    pub(super) expiry: Expiry,
    /// How long the store keeps it (see [`store_ttl`]).
    pub(super) ttl: Duration,
    /// The response's directives, as admission parsed them (`entry_head` uses them again).
    pub(super) cc: crate::policy::ResponseDirectives,
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
        if parts
            .extensions
            .get::<crate::status::FollowedRedirect>()
            .is_some()
        {
            return Err(NotStorable::Redirected);
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
            credentials: &config.sensitive_headers,
            shared_set_cookie: config.shared_set_cookie,
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
                cc,
            }),
            (Storability::DoNotStore(why), _) => Err(why),
        }
    }

    /// The head stored for a response to the request in `storing`: `admitted` by
    /// [`admit`](Self::admit), `age` the age inputs of `parts` (received at `response_time`
    /// for a request sent at `self.request_time`).
    pub(super) fn entry_head(
        &self,
        storing: &Storing,
        parts: &http::response::Parts,
        response_time: SystemTime,
        admitted: Admitted,
        age: crate::policy::freshness::AgeInputs,
    ) -> EntryHead {
        let Admitted { expiry, cc, .. } = admitted;
        let mut headers = parts.headers.clone();
        // The fields the sealed freshness inputs are read from (below).
        let reuse = self.config.reuse();
        let read = |name: &HeaderName| {
            name == header::CACHE_CONTROL
                || name == header::DATE
                || name == header::AGE
                || name == "surrogate-control"
                || reuse.targets.contains(name)
        };
        let removed_read = strip_unstorable_noting(&mut headers, read);
        let dated = headers.contains_key(header::DATE);
        // RFC 9110 §6.6.1: "A recipient with a clock that receives a response message without a
        // Date header field MUST record the time it was received and append a corresponding
        // Date header field to the message's header section if it is cached or forwarded
        // downstream."
        if !headers.contains_key(header::DATE) {
            if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time)) {
                headers.insert(header::DATE, date);
            }
        }
        // RFC 9111 §5.2.2.4 / §5.2.2.7: the fields a qualified `no-cache` or (shared)
        // `private` names are not kept; the rest of the response is.
        let mut unstored = false;
        for name in cc.unstored_fields(self.config.shared) {
            unstored |= headers.remove(name).is_some() && read(name);
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
        let mut head = EntryHead {
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
            fresh: None,
        };
        // What a hit judges it by, from what is stored (sealed in the head: see `policy::fresh`).
        // What admission parsed is what parsing the stored fields would give when every field
        // the directives and the age inputs are read from is stored as received: none of them
        // was removed (a hop-by-hop field, one `Connection` lists, one a qualified
        // `no-cache`/`private` names), and `Date` was not added.
        let parsed = (!removed_read && !unstored && dated).then_some((cc, age));
        let fresh = crate::policy::fresh::compute_from(&head.stored(), &reuse, parsed);
        debug_assert_eq!(
            fresh,
            crate::policy::fresh::compute(&head.stored(), &reuse),
            "the parsed inputs must be what the stored fields give"
        );
        head.fresh = Some(fresh);
        head
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
                stored_range(&old.head.headers).filter(|r| r.len() == old.body.len())?;
            // Only a body in memory is combined (a streamed one is not read twice); a large one
            // verified as it is read is verified whole now.
            // (One that fails is counted and deleted then: not combined.)
            let old_body = old.body.into_verified_parts().ok()?.to_bytes()?;
            let union = combine((&old.head.headers, old_range), (&head.headers, new_range))?;
            (union.len() <= self.config.max_body_size as u64).then_some(Splice {
                old: old_body,
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

    /// The sink that seals the body as it passes and writes the entry once it has ended; `None`
    /// (logged) when the entry cannot be sealed at all. With a `splice`, the stored bytes
    /// before the new part are sealed first and those after it once it has ended.
    pub(super) fn sink(
        &mut self,
        key: CacheKey,
        head: &EntryHead,
        ttl: Duration,
        splice: Option<Splice>,
        expected_len: Option<u64>,
    ) -> Option<Box<dyn Sink>> {
        let max = self.config.max_body_size;
        // A body its Content-Length says is over the bound is never stored: no sink at all.
        if splice.is_none() && expected_len.is_some_and(|n| n > max as u64) {
            tracing::debug!(key = %key, "Content-Length over max_body_size; not stored");
            return None;
        }
        let announced = match &splice {
            Some(splice) => Some(splice.union.len()),
            None => expected_len,
        };
        let mut sealing = match self.config.envelope.start(&key, head, announced) {
            Ok(sealing) => sealing,
            Err(e) => {
                tracing::warn!(key = %key, reason = e.0, "could not seal an entry; not stored");
                return None;
            }
        };
        let around = match splice {
            Some(splice) => {
                let (prefix, suffix) =
                    splice_parts(splice.old_range, splice.new_range, splice.union)?;
                if let Err(e) = sealing.append(&splice.old.slice(prefix)) {
                    tracing::warn!(key = %key, reason = e.0, "could not seal an entry; not stored");
                    return None;
                }
                Some(Around {
                    suffix: splice.old.slice(suffix),
                    new_len: splice.new_range.len(),
                })
            }
            None => None,
        };
        // A response that varies is stored twice: under the primary key (where the next lookup
        // starts, and which names the selecting fields) and under its variant's own key, so
        // that several variants of one URL coexist (§4.1). One blob serves both names (it
        // carries the primary key; see `envelope`): sealed once, held once by a memory store.
        let mut keys = vec![key.clone()];
        if !head.vary.is_empty() {
            keys.push(key.variant(head.generation, head.vary.iter().map(|(_, v)| v)));
        }
        // A large entry is streamed under one name (see `put.rs`): its variant's own when the
        // lookup found another variant under the primary key and looked this one up there (the
        // same name: same generation, same selecting fields), so that both stay; else the
        // primary key.
        let variant_only = keys
            .get(1)
            .is_some_and(|own| self.found.variant_key.as_ref() == Some(own));
        // The tags are signed inside the entry; a store with a tag index also gets them beside
        // the blob (`PutTagged`), so that a purge by tag need not read every entry: as opaque
        // digests, never as the origin wrote them (see `envelope::tag_names`).
        let mut tags: Vec<String> = crate::config::tags_in(&head.headers, &self.config.tag_headers)
            .iter()
            .map(|tag| self.config.envelope.tag_name(tag))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        // Large entries are written as they pass, when the store can take them so; one that
        // varies, under one of its two names (see `put.rs`).
        let eligible = around.is_none() && self.config.store_streams.load(Ordering::Relaxed);
        Some(Box::new(SealSink {
            sealing,
            around,
            received: 0,
            streaming: Streaming::new(eligible, expected_len),
            write: Write {
                keys,
                variant_only,
                tags,
                ttl,
                config: self.config.clone(),
                store: self.store.clone(),
                // Moved into the write: waiters are released when it has finished (or was
                // dropped).
                leader: self.leader.take(),
            },
        }))
    }
}

/// Seals a body as it passes, then writes it.
struct SealSink<St: Store> {
    sealing: Sealing,
    around: Option<Around>,
    received: u64,
    streaming: Streaming<St>,
    write: Write<St>,
}

impl<St: Store> Sink for SealSink<St> {
    fn data(&mut self, chunk: &Bytes) -> bool {
        self.received += chunk.len() as u64;
        match self.sealing.append(chunk) {
            Ok(()) if self.streaming.active() => {
                self.streaming
                    .step(self.received, &mut self.sealing, &self.write)
            }
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(reason = e.0, "could not seal an entry; not stored");
                false
            }
        }
    }

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.streaming.active() {
            self.streaming
                .poll_ready(cx, &mut self.sealing, &self.write)
        } else {
            std::task::Poll::Ready(())
        }
    }

    fn finish(mut self: Box<Self>, trailers: Option<HeaderMap>) -> Option<PutFuture> {
        if let Some(around) = self.around.take() {
            // The new part must be what its `Content-Range` says, whatever `Content-Length`
            // said (or did not say).
            if self.received != around.new_len {
                tracing::debug!("partial content did not combine; not stored");
                return None;
            }
            if let Err(e) = self.sealing.append(&around.suffix) {
                tracing::warn!(reason = e.0, "could not seal an entry; not stored");
                return None;
            }
        }
        let mut this = *self;
        if this.sealing.compression().is_some() {
            if let Err(e) = this.sealing.end(trailers.as_ref()) {
                tracing::warn!(reason = e.0, "could not seal an entry; not stored");
                return None;
            }
            if let Some((before, after)) = this.sealing.compression() {
                this.write.config.metrics.compressed(before, after);
            }
        }
        match this
            .streaming
            .finish(this.sealing, trailers.as_ref(), this.write)
        {
            Ok(put) => Some(put),
            Err(e) => {
                tracing::warn!(reason = e.0, "could not seal an entry; not stored");
                None
            }
        }
    }
}
