//! Where the cache gets the current time from.
//!
//! Every freshness decision takes `now` as a parameter; this module is the only place that reads
//! the system clock. Tests (this crate's and yours) swap in a [`ManualClock`] and move time by hand
//! instead of sleeping.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// A source of wall-clock time.
///
/// HTTP freshness is defined over wall-clock dates (`Date`, `Expires`, `Last-Modified`), so the
/// cache needs a [`SystemTime`], not an `Instant`.
///
/// # Example
///
/// ```
/// use hyper_client_cache::{Clock, SystemClock};
///
/// let now = SystemClock.now();
/// assert!(now > std::time::UNIX_EPOCH);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real clock: [`SystemTime::now`]. This is the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to, for tests.
///
/// # Clone
///
/// Clones share the same time: advancing one advances all of them, so keep one handle in the
/// test and give a clone to the cache.
///
/// # Example
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use hyper_client_cache::{Clock, ManualClock};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let handle = clock.clone();
/// handle.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1_700_000_060));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward by `by` (saturating at the largest representable time).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(by).unwrap_or(*now);
    }

    /// Sets the clock to `to`, which may be in the past.
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

/// A random `u64` for names and generations that only need to be unique: from the system's
/// random source, else the wall clock's nanoseconds (the one other place the system clock is
/// read, so that this module stays the only reader).
pub(crate) fn unique_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => u64::from_be_bytes(bytes),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(UNIX_EPOCH);
        assert_eq!(clock.now(), UNIX_EPOCH);
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(5));
        clock.set(UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(1));
    }

    #[test]
    fn manual_clock_advance_saturates() {
        let clock = ManualClock::new(UNIX_EPOCH);
        clock.advance(Duration::MAX);
        // did not panic; time did not wrap backwards
        assert!(clock.now() >= UNIX_EPOCH);
    }
}
