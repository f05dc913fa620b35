//! RFC 9111 §4.4: deleting what an unsafe request invalidated, before its response is answered.

use std::future::Future;
use std::pin::Pin;

use http::Response;

use super::Ctx;
use crate::metrics::Event;
use crate::policy::invalidation::{invalidates, related_targets};
use crate::store::{Store, StoreRequest};

/// Deletes the entries an unsafe request invalidated; failures are logged, never returned.
pub(super) type InvalidateFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl<St: Store> Ctx<St> {
    /// The deletes this response calls for, if any: the target and its same-origin `Location` /
    /// `Content-Location` (the targets are policy: [`related_targets`]).
    pub(super) fn invalidation<B>(&mut self, response: &Response<B>) -> Option<InvalidateFuture> {
        if !invalidates(response.status()) {
            return None;
        }
        let invalidation = self.plan.invalidate.take()?;
        // Under every name set of the ring: an entry written before a rotation is found by its
        // older name, so it must go too.
        let mut keys = invalidation.targets;
        for uri in related_targets(&invalidation.uri, response.headers()) {
            for key in self.config.keying.get_keys(uri, invalidation.host.as_ref()) {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        // A ranged request's incomplete entries (RFC 9111 §3.3) go with their URLs.
        let partials: Vec<_> = keys.iter().map(|k| k.partial()).collect();
        keys.extend(partials);
        // The deletes run together: the response waits for one store timeout at most.
        let calls = keys.into_iter().map(|key| {
            let call = self.store_call(StoreRequest::Delete { key: key.clone() });
            let metrics = self.config.metrics.clone();
            async move {
                if let Err(e) = call.await {
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
}
