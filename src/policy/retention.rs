//! How long a store keeps an entry, and when it stops being fresh.
//!
//! RFC 9111 §4.2.4 lets a cache keep a stale response to serve it stale only where allowed and
//! to validate it (§4.3); how long is the cache's choice. This crate keeps one at least
//! [`STALE_KEEP`] past its freshness, longer when a stale-if-error window (RFC 5861 §4) or the
//! layer's `serve_stale_on_error` may still serve it.

use std::time::{Duration, SystemTime};

use super::{Expiry, ResponseDirectives};

/// How long a stale entry is kept, at least, for revalidation and `max-stale`.
pub(crate) const STALE_KEEP: Duration = Duration::from_secs(24 * 60 * 60);

/// The time-to-live the store is given for an entry of this `lifetime` and current `age`:
/// while it is fresh, plus as long as it may still be useful stale. With
/// `cache_control(false)` ([`Expiry::Override`]) the response's `stale-*` directives and the
/// layer's stale window do not apply. The cache never serves an entry stale unless a rule allows
/// it; the store's bound evicts it earlier if space is short.
pub(crate) fn store_ttl(
    lifetime: Duration,
    age: Duration,
    expiry: Expiry,
    cc: &ResponseDirectives,
    stale_on_error: Option<Duration>,
) -> Duration {
    let (if_error, stale_on_error) = match expiry {
        Expiry::Override(_) => (None, None),
        _ => (cc.stale_if_error.map(Duration::from_secs), stale_on_error),
    };
    let keep = [Some(STALE_KEEP), if_error, stale_on_error]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(STALE_KEEP);
    lifetime.saturating_sub(age).saturating_add(keep)
}

/// When a response of this lifetime and current age stops being fresh, seen from `now`
/// (in the past for a stale one).
pub(crate) fn expires_at(now: SystemTime, lifetime: Duration, age: Duration) -> Option<SystemTime> {
    if lifetime >= age {
        now.checked_add(lifetime - age)
    } else {
        now.checked_sub(age - lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn kept_while_fresh_plus_the_longest_stale_window() {
        let none = ResponseDirectives::default();
        let sie = ResponseDirectives {
            stale_if_error: Some(3 * 86_400),
            ..Default::default()
        };
        let h = Expiry::Headers;
        assert_eq!(store_ttl(S(60), S(10), h, &none, None), S(50) + STALE_KEEP);
        // Already stale on arrival: only the stale part remains.
        assert_eq!(store_ttl(S(60), S(100), h, &none, None), STALE_KEEP);
        assert_eq!(store_ttl(S(60), S(0), h, &sie, None), S(60 + 3 * 86_400));
        assert_eq!(
            store_ttl(S(60), S(0), h, &none, Some(S(2 * 86_400))),
            S(60 + 2 * 86_400)
        );
        // A shorter window never shortens the floor.
        assert_eq!(
            store_ttl(S(60), S(0), h, &none, Some(S(5))),
            S(60) + STALE_KEEP
        );
        // The user's override ignores the response's and the layer's stale windows.
        let o = Expiry::Override(S(60));
        assert_eq!(
            store_ttl(S(60), S(0), o, &sie, Some(S(9 * 86_400))),
            S(60) + STALE_KEEP
        );
        // Huge values saturate instead of overflowing.
        assert_eq!(
            store_ttl(Duration::MAX, S(0), h, &none, None),
            Duration::MAX
        );
    }

    #[test]
    fn expiry_is_in_the_past_for_a_stale_response() {
        let now = SystemTime::UNIX_EPOCH + S(1_000);
        assert_eq!(expires_at(now, S(60), S(10)), Some(now + S(50)));
        assert_eq!(expires_at(now, S(60), S(100)), Some(now - S(40)));
        assert_eq!(
            expires_at(SystemTime::UNIX_EPOCH, S(0), S(5)),
            SystemTime::UNIX_EPOCH.checked_sub(S(5))
        );
    }
}
