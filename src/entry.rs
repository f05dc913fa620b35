//! The in-memory form of a stored response, between the envelope and the policy.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, StatusCode, Version};

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

/// The freshness lifetime of an entry when the user's settings decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// RFC 9111 §4.2: from the stored headers (explicit, else heuristic).
    Headers,
    /// The user's `expire_after` for a response without explicit freshness; the response's
    /// other directives (`no-cache`, `must-revalidate`, ...) still apply.
    Fill(std::time::Duration),
    /// `cache_control(false)`: the user's lifetime replaces whatever the headers say, and the
    /// response's reuse directives are not consulted.
    Override(std::time::Duration),
}

/// A request header value kept for Vary matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VaryValue {
    /// The request did not have the header.
    Absent,
    /// The header's value(s), joined with `, ` when repeated.
    Clear(Bytes),
    /// A keyed digest of the value, for credential-bearing headers that are never stored in clear.
    Digest([u8; 32]),
}

/// A decoded entry: head plus a body that is a zero-copy slice of the verified blob.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) head: EntryHead,
    pub(crate) body: Bytes,
    /// Trailer fields that followed the body, replayed after it on a hit.
    pub(crate) trailers: Option<HeaderMap>,
}
