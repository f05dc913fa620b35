//! Errors the cache adds to those of the inner service.

use std::error::Error as StdError;
use std::fmt;

use crate::CacheKey;

/// The boxed error type of the [`Cache`](crate::Cache) service and of stores.
///
/// The inner service's own errors are passed through inside it unchanged; use
/// [`downcast_ref`](https://doc.rust-lang.org/std/error/trait.Error.html#method.downcast_ref) to
/// tell them apart from [`BadSignature`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A stored entry failed verification and was not served.
///
/// Returned (boxed, as the [`Cache`](crate::Cache) service's error) when the cache is configured
/// with a key and finds an entry whose tag does not verify, unless
/// [`CacheLayer::on_bad_signature`](crate::CacheLayer::on_bad_signature) asks for a refetch instead.
///
/// This means somebody or something wrote that entry without holding a key in your
/// [`KeyRing`](crate::KeyRing): tampering, a blob copied from another key, a cache shared with a
/// client using another secret, an entry signed with a key that was rotated out, or plain
/// corruption. Nothing of the entry was decoded.
///
/// # Example
///
/// ```
/// # use hyper_client_cache::{BadSignature, BoxError};
/// fn explain(err: &BoxError) -> String {
///     match err.downcast_ref::<BadSignature>() {
///         Some(bad) => format!("tampered cache entry {}", bad.key()),
///         None => format!("origin error: {err}"),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct BadSignature {
    key: CacheKey,
    reason: BadSignatureReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadSignatureReason {
    /// The tag does not match the contents.
    Mismatch,
    /// Signed with a key id that is not in the key ring.
    UnknownKey,
    /// The blob is signed for another cache key (copied or swapped).
    WrongKey,
    /// The blob is not signed at all (a downgrade, or written by an unsigned cache).
    Unsigned,
    /// Too short, or no envelope header: the blob cannot even be parsed.
    Malformed,
}

impl BadSignature {
    pub(crate) fn new(key: CacheKey, reason: BadSignatureReason) -> Self {
        Self { key, reason }
    }

    /// The cache key the entry was stored under.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The tag was present but did not match the entry's contents (the entry was altered, or
    /// signed with a different secret that has the same key id, which is not expected to happen).
    pub fn is_mismatch(&self) -> bool {
        self.reason == BadSignatureReason::Mismatch
    }

    /// The entry names a key id this cache's key ring does not hold: signed by another secret, or
    /// by a key that has been rotated out.
    pub fn is_unknown_key(&self) -> bool {
        self.reason == BadSignatureReason::UnknownKey
    }

    /// The entry is validly signed, but for a different cache key: it was copied or swapped.
    pub fn is_wrong_key(&self) -> bool {
        self.reason == BadSignatureReason::WrongKey
    }

    /// The entry carries no signature although this cache requires one.
    pub fn is_unsigned(&self) -> bool {
        self.reason == BadSignatureReason::Unsigned
    }

    /// The entry is signed but not encrypted although this cache requires encryption.
    ///
    /// No longer produced: a signed-only entry that verifies under a key of the ring (written
    /// before encryption was turned on) is a miss and is replaced; one that does not verify is
    /// [`is_mismatch`](Self::is_mismatch) or [`is_unknown_key`](Self::is_unknown_key).
    #[deprecated(note = "never true: a verified signed-only entry is a miss under `encrypt`")]
    pub fn is_unencrypted(&self) -> bool {
        false
    }

    /// The reason as a metrics label.
    pub(crate) fn reason_label(&self) -> &'static str {
        match self.reason {
            BadSignatureReason::Mismatch => "mismatch",
            BadSignatureReason::UnknownKey => "unknown_key",
            BadSignatureReason::WrongKey => "wrong_key",
            BadSignatureReason::Unsigned => "unsigned",
            BadSignatureReason::Malformed => "malformed",
        }
    }

    /// The blob is not an envelope at all (garbage, or truncated below the header).
    pub fn is_malformed(&self) -> bool {
        self.reason == BadSignatureReason::Malformed
    }
}

impl fmt::Display for BadSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            BadSignatureReason::Mismatch => "the signature did not match",
            BadSignatureReason::UnknownKey => {
                "the signature did not match: it was made with a key that is not in the key ring"
            }
            BadSignatureReason::WrongKey => {
                "the signature did not match: the entry was signed for another cache key"
            }
            BadSignatureReason::Unsigned => "the signature did not match: the entry is not signed",
            BadSignatureReason::Malformed => {
                "the signature did not match: the entry is not a valid envelope"
            }
        };
        write!(f, "cache entry `{}` failed verification: {why}", self.key)
    }
}

impl StdError for BadSignature {}

/// The store failed, timed out, or was not asked because its circuit breaker is open, on a
/// lookup of a cache configured to fail closed
/// ([`CacheLayer::fail_closed`](crate::CacheLayer::fail_closed)). By default store failures are
/// not errors: the request goes to the origin.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
}

#[derive(Debug)]
enum StoreErrorKind {
    Failed(BoxError),
    TimedOut,
    Unavailable,
}

impl StoreError {
    pub(crate) fn failed(source: BoxError) -> Self {
        Self {
            kind: StoreErrorKind::Failed(source),
        }
    }

    pub(crate) fn timed_out() -> Self {
        Self {
            kind: StoreErrorKind::TimedOut,
        }
    }

    pub(crate) fn unavailable() -> Self {
        Self {
            kind: StoreErrorKind::Unavailable,
        }
    }

    /// The store did not answer within the store timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, StoreErrorKind::TimedOut)
    }

    /// The store was not asked: its circuit breaker is open after consecutive failures
    /// ([`CircuitBreaker`](crate::CircuitBreaker)).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, StoreErrorKind::Unavailable)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match &self.kind {
            StoreErrorKind::TimedOut => "the cache store did not answer in time",
            StoreErrorKind::Failed(_) => "the cache store failed",
            StoreErrorKind::Unavailable => {
                "the cache store is unavailable (its circuit breaker is open)"
            }
        })
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            StoreErrorKind::Failed(e) => Some(e.as_ref() as &(dyn StdError + 'static)),
            _ => None,
        }
    }
}
