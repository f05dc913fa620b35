//! The in-memory form of a stored response, between the envelope and the policy.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode, Version};

use crate::policy::Stored;
pub(crate) use crate::policy::{Expiry, VaryValue};

/// Everything stored about a response except its body.
#[derive(Debug, Clone)]
pub(crate) struct EntryHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// Response headers as received (minus the fields §3.1 says not to store).
    pub(crate) headers: HeaderMap,
    /// When the request that produced this response was sent (RFC 9111 §4.2.3 `request_time`).
    pub(crate) request_time: SystemTime,
    /// When the response was received (RFC 9111 §4.2.3 `response_time`).
    pub(crate) response_time: SystemTime,
    pub(crate) method: Method,
    /// The request URI, as sent (ignored parameters removed, redacted ones masked). Written from
    /// a `String`, so UTF-8 unless the writer was not this crate (shown lossily then); a slice of
    /// the verified blob when decoded, so a hit does not copy it.
    pub(crate) uri: bytes::Bytes,
    /// The request headers named by the response's `Vary`, as they were on the request (§4.1).
    pub(crate) vary: Vec<(HeaderName, VaryValue)>,
    /// Shared by the variants of one URL (§4.1): each variant is also stored under a key derived
    /// from this and its selecting header values. A new generation (after invalidation) makes
    /// every older variant unreachable.
    pub(crate) generation: u64,
    /// Where the freshness lifetime comes from: the headers, or the user's settings.
    pub(crate) expiry: Expiry,
}

impl EntryHead {
    /// What the caching rules read of it.
    pub(crate) fn stored(&self) -> Stored<'_> {
        Stored {
            status: self.status,
            headers: &self.headers,
            request_time: self.request_time,
            response_time: self.response_time,
            vary: &self.vary,
            expiry: self.expiry,
        }
    }
}

/// A decoded entry: head plus a body that is a zero-copy slice of the verified blob.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) head: EntryHead,
    pub(crate) body: Bytes,
    /// Trailer fields that followed the body, replayed after it on a hit.
    pub(crate) trailers: Option<HeaderMap>,
}
