//! The cache's metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): whatever recorder the application installs (Prometheus, StatsD, OpenTelemetry)
//! gets them. Without the feature every function here is an empty inline function.
//!
//! Names follow the Prometheus conventions; every label value is one of a fixed set (never a
//! URL, a key or a header value), so the number of series is bounded:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `http_cache_requests_total` | counter | `status`: `hit`, `coalesced`, `coalesced_error`, `revalidated`, `stale`, `stale_while_revalidate`, `stale_if_error`, `only_if_cached_miss`, `miss`, `not_cacheable`, `store_unavailable` |
//! | `http_cache_not_stored_total` | counter | `reason`: the `NotStoredReason` in snake case (`response_no_store`, `no_freshness`, `status`, ...) |
//! | `http_cache_stored_total` | counter | |
//! | `http_cache_store_refused_total` | counter | |
//! | `http_cache_compression_bytes_total` | counter | `stage`: `before` (bytes of the records written with compression configured: body segments and head records), `after` (the bytes they were stored as) |
//! | `http_cache_bad_signatures_total` | counter | `reason`: `mismatch`, `unknown_key`, `wrong_key`, `unsigned`, `malformed` |
//! | `http_cache_unusable_entries_total` | counter | `reason`: `damaged`, `outdated`, `foreign` |
//! | `http_cache_store_operation_duration_seconds` | histogram | `operation`: `get`, `put`, `put_stream`, `delete`, `keys`, `clear`, `purge_tag`; `outcome`: `ok`, `error`, `timeout`, `skipped`, `refused` (answered `NotStored`) |
//! | `http_cache_blob_size_bytes` | histogram | `operation`: `get` (a blob found), `put` (a blob the store kept) |
//! | `http_cache_breaker_transitions_total` | counter | `to`: `open`, `half_open`, `closed` |
//! | `http_cache_refreshes_total` | counter | `event`: `started`, `skipped` (at `max_refreshes`), `timed_out` (at `refresh_timeout`) |
//! | `http_cache_near_requests_total` | counter | `result`: `hit`, `miss` (asked Redis), `bypass` (the near tier was not serving) |
//! | `http_cache_near_invalidations_total` | counter | |
//! | `http_cache_near_flushes_total` | counter | `reason`: `disconnected`, `lease_expired`, `topology`, `tracking_lost`, `server_flush`, `reconnected`, `local` |

#[cfg(feature = "metrics")]
use std::time::Duration;

#[cfg(feature = "metrics")]
use crate::status::{CacheStatus, NotStoredReason};

#[cfg(feature = "metrics")]
/// The label of a response's outcome.
pub(crate) fn status_label(status: CacheStatus) -> &'static str {
    status.as_str()
}

#[cfg(feature = "metrics")]
/// The label of a [`NotStoredReason`]: its name in snake case.
pub(crate) fn reason_label(reason: NotStoredReason) -> &'static str {
    match reason {
        NotStoredReason::Method => "method",
        NotStoredReason::RequestNoStore => "request_no_store",
        NotStoredReason::ResponseNoStore => "response_no_store",
        NotStoredReason::NoCacheWithoutValidator => "no_cache_without_validator",
        NotStoredReason::Private => "private",
        NotStoredReason::Authorization => "authorization",
        NotStoredReason::SetCookie => "set_cookie",
        NotStoredReason::VaryStar => "vary_star",
        NotStoredReason::Status => "status",
        NotStoredReason::NoFreshness => "no_freshness",
        NotStoredReason::Stale => "stale",
        NotStoredReason::Filtered => "filtered",
        NotStoredReason::Disabled => "disabled",
        NotStoredReason::ReadOnly => "read_only",
        NotStoredReason::RequestBody => "request_body",
        NotStoredReason::InvalidHost => "invalid_host",
        NotStoredReason::StoreUnavailable => "store_unavailable",
        NotStoredReason::Redirected => "redirected",
    }
}

#[cfg(feature = "metrics")]
/// What a store operation ended with.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Timeout,
    /// Not made: the circuit breaker is open.
    Skipped,
    /// The store answered `NotStored`: it works, and did not keep the entry.
    Refused,
}

#[cfg(feature = "metrics")]
impl Outcome {
    #[cfg(feature = "metrics")]
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Skipped => "skipped",
            Outcome::Refused => "refused",
        }
    }
}

/// One answer of the request path (counted once, where `CacheMetrics` counts it).
#[cfg(feature = "metrics")]
#[inline]
pub(crate) fn response(status: Option<CacheStatus>, not_stored: Option<NotStoredReason>) {
    #[cfg(feature = "metrics")]
    {
        if let Some(status) = status {
            ::metrics::counter!("http_cache_requests_total", "status" => status_label(status))
                .increment(1);
        }
        if let Some(reason) = not_stored {
            ::metrics::counter!("http_cache_not_stored_total", "reason" => reason_label(reason))
                .increment(1);
        }
    }
}

/// An entry written to the store.
#[inline]
pub(crate) fn stored() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_stored_total").increment(1);
}

/// An entry the store refused to keep (it answered `NotStored`), by whichever write.
#[inline]
pub(crate) fn store_refused() {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_store_refused_total").increment(1);
}

/// A body sealed with compression configured: `before` bytes stored as `after`.
#[inline]
pub(crate) fn compressed(before: u64, after: u64) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::counter!("http_cache_compression_bytes_total", "stage" => "before")
            .increment(before);
        ::metrics::counter!("http_cache_compression_bytes_total", "stage" => "after")
            .increment(after);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (before, after);
}

/// A stored entry that failed verification.
#[inline]
pub(crate) fn bad_signature(reason: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_bad_signatures_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// A stored entry found and not used for another reason than a failed proof (`damaged`,
/// `outdated`, `foreign`).
#[inline]
pub(crate) fn unusable_entry(reason: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_unusable_entries_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// The circuit breaker changed state (`open`, `half_open`, `closed`).
#[inline]
pub(crate) fn breaker_transition(to: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_breaker_transitions_total", "to" => to).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = to;
}

/// A background refresh `started`, `skipped` (at the cap) or `timed_out`.
#[inline]
pub(crate) fn refresh(event: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_refreshes_total", "event" => event).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}

/// A lookup of the near cache (`hit`, `miss`, `bypass`).
#[inline]
#[cfg_attr(not(all(feature = "redis", feature = "memory")), allow(dead_code))]
pub(crate) fn near_request(result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_near_requests_total", "result" => result).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// Keys invalidated in the near cache by Redis.
#[inline]
#[cfg_attr(not(all(feature = "redis", feature = "memory")), allow(dead_code))]
pub(crate) fn near_invalidations(n: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_near_invalidations_total").increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = n;
}

/// The near cache was emptied.
#[inline]
#[cfg_attr(not(all(feature = "redis", feature = "memory")), allow(dead_code))]
pub(crate) fn near_flush(reason: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!("http_cache_near_flushes_total", "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// A store operation finished (or was skipped), with the size of the blob it carried, if any.
#[cfg(feature = "metrics")]
pub(crate) fn store_operation(
    operation: &'static str,
    outcome: Outcome,
    elapsed: Duration,
    blob: Option<usize>,
) {
    ::metrics::histogram!(
        "http_cache_store_operation_duration_seconds",
        "operation" => operation,
        "outcome" => outcome.label()
    )
    .record(elapsed.as_secs_f64());
    if let Some(bytes) = blob {
        ::metrics::histogram!("http_cache_blob_size_bytes", "operation" => operation)
            .record(bytes as f64);
    }
}

/// Describes every metric (units and help texts) to the installed recorder. Call it once,
/// after installing the recorder (exporters print the descriptions as `# HELP` lines).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    use ::metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        "http_cache_requests_total",
        Unit::Count,
        "Responses of the cache by outcome (label status)."
    );
    describe_counter!(
        "http_cache_not_stored_total",
        Unit::Count,
        "Responses that went to the origin and were not stored, by reason."
    );
    describe_counter!(
        "http_cache_stored_total",
        Unit::Count,
        "Entries written to the store."
    );
    describe_counter!(
        "http_cache_store_refused_total",
        Unit::Count,
        "Entries the store refused to keep (it answered NotStored: over its size limit, at its cap); not errors."
    );
    describe_counter!(
        "http_cache_compression_bytes_total",
        Unit::Bytes,
        "Bytes of the records (body segments, head records) written with compression configured (stage before) and as stored (after)."
    );
    describe_counter!(
        "http_cache_bad_signatures_total",
        Unit::Count,
        "Stored entries that failed verification, by reason."
    );
    describe_counter!(
        "http_cache_unusable_entries_total",
        Unit::Count,
        "Stored entries found and not used for another reason than a failed proof, by reason: damaged (a checksum or framing that fails without a key, content that does not decode), outdated (an older release's), foreign (possibly another deployment's)."
    );
    describe_histogram!(
        "http_cache_store_operation_duration_seconds",
        Unit::Seconds,
        "Store operations by operation and outcome, timeouts included."
    );
    describe_histogram!(
        "http_cache_blob_size_bytes",
        Unit::Bytes,
        "Sizes of the blobs read (found) and written."
    );
    describe_counter!(
        "http_cache_breaker_transitions_total",
        Unit::Count,
        "State changes of the store's circuit breaker, by new state."
    );
    describe_counter!(
        "http_cache_refreshes_total",
        Unit::Count,
        "Background (stale-while-revalidate) refreshes: started, skipped at the cap, timed out."
    );
    describe_counter!(
        "http_cache_near_requests_total",
        Unit::Count,
        "Lookups of the near cache (NearCache) by result: hit, miss (asked Redis), bypass."
    );
    describe_counter!(
        "http_cache_near_invalidations_total",
        Unit::Count,
        "Keys the near cache dropped because Redis said they changed."
    );
    describe_counter!(
        "http_cache_near_flushes_total",
        Unit::Count,
        "Times the near cache was emptied, by reason."
    );
}

/// Times one store operation (nothing at all without the feature).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meter {
    #[cfg(feature = "metrics")]
    operation: &'static str,
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
    #[cfg(feature = "metrics")]
    put: Option<usize>,
}

impl Meter {
    #[inline]
    pub(crate) fn start(request: &crate::store::StoreRequest) -> Self {
        #[cfg(feature = "metrics")]
        {
            use crate::store::StoreRequest;
            let (operation, put) = match request {
                StoreRequest::Get { .. } => ("get", None),
                StoreRequest::Put { blob, .. } | StoreRequest::PutTagged { blob, .. } => {
                    ("put", Some(blob.len()))
                }
                StoreRequest::PutParts { parts, .. } => ("put", Some(parts.len())),
                StoreRequest::PutStream { .. } => ("put_stream", None),
                StoreRequest::PurgeTag { .. } => ("purge_tag", None),
                StoreRequest::Delete { .. } => ("delete", None),
                StoreRequest::Keys | StoreRequest::KeysPage { .. } => ("keys", None),
                StoreRequest::Clear => ("clear", None),
            };
            Meter {
                operation,
                started: std::time::Instant::now(),
                put,
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = request;
            Meter {}
        }
    }

    #[inline]
    pub(crate) fn done(
        self,
        result: &Result<crate::store::StoreResponse, crate::error::StoreError>,
    ) {
        #[cfg(feature = "metrics")]
        {
            use crate::store::StoreResponse;
            let outcome = match result {
                Ok(StoreResponse::NotStored) => Outcome::Refused,
                Ok(_) => Outcome::Ok,
                Err(e) if e.is_timeout() => Outcome::Timeout,
                Err(e) if e.is_unavailable() => Outcome::Skipped,
                Err(_) => Outcome::Error,
            };
            let blob = match result {
                Ok(StoreResponse::Blob(Some(blob))) => Some(blob.len()),
                // Not a stored blob's size.
                Ok(StoreResponse::NotStored) => None,
                Ok(StoreResponse::Parts(parts)) => Some(parts.len()),
                Ok(StoreResponse::Stream(stream)) => usize::try_from(stream.len()).ok(),
                Ok(_) => self.put,
                Err(_) => None,
            };
            store_operation(self.operation, outcome, self.started.elapsed(), blob);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = result;
    }
}
