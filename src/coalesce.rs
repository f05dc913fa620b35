//! Request coalescing: concurrent misses for one key send one request to the origin.
//!
//! As soon as the leader's response is admitted for storing, its waiters are handed the body
//! being filled (`fill.rs`): they answer from its head at once and read its chunks as they
//! arrive, at their own pace, whether or not the leader's caller reads. A waiter that cannot
//! use it (a conditional request, a `Vary` that selects another variant, a fill it joined too
//! late) waits for the leader's outcome as before. A response that will not be stored releases
//! the waiters at its head, and its key is remembered for a short time (hit-for-pass), so that
//! the next burst of requests for it does not queue behind one request again.
//!
//! The first miss for a key becomes the *leader* and holds a [`Leader`] guard until its response
//! has been stored (or has turned out not to be storable, or failed: the guard's `Drop` covers
//! every way out). Later misses for the same key *wait* on the guard's channel, bounded by a
//! timeout, then look the key up again: the leader's response is normally there. A waiter whose
//! leader did not store anything, or that gave up waiting, goes to the origin itself.
//!
//! Except when the origin *answered* the leader with an error (a 500, 502, 503 or 504 that is
//! not stored, with a body of at most [`MAX_SHARED_BODY`]): then the waiters whose request
//! equals the leader's get that answer, as singleflight-style collapsing does, instead of all
//! going to a struggling origin at once. Equal means the same method, the same URI and the same
//! value in every request field but the few in [`UNCOMPARED_FIELDS`], which cannot say who is
//! asking: an error page may echo anything the request carried, and the crate does not try to
//! know which field is a credential (default deny). A waiter that differs in any other field,
//! or whose URI only maps to the same key (an ignored query parameter), goes to the origin.
//!
//! A leader that got no answer at all (its own deadline, its caller's cancellation, a
//! connection error, an error of the cache) shares nothing: its waiters go to the origin
//! themselves. Such an error says more about the leader's request (a short timeout its caller
//! set) than about the origin.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode, Uri, Version};
use tokio::sync::watch;

use crate::body::fill::Fill;
use crate::timer::{Timed, TimerProbe};
use crate::CacheKey;

/// The largest body of a failed leader's response that is kept to share with its waiters.
pub(crate) const MAX_SHARED_BODY: usize = 64 << 10;

/// How a leader's request ended, as its waiters see it.
#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    /// The response is admitted and its body is being filled: waiters may read it. Weak: the
    /// fill lives as long as a caller reads it, not as long as the flight.
    Filling(std::sync::Weak<Fill>),
    Stored,
    NotStored,
    Failed(Arc<Failure>),
}

/// A leader's failed request: who asked, and what the origin answered.
pub(crate) struct Failure {
    /// A digest of the leader's request: only an equal request is given the answer.
    pub(crate) asked: Asked,
    pub(crate) answer: FailedAnswer,
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URI, no field, no body in logs.
        f.debug_struct("Failure")
            .field("status", &self.answer.status.as_str())
            .finish()
    }
}

/// The request fields a waiter may differ in and still be given its leader's failed answer:
/// content negotiation and the client's name (what a browser or an HTTP library sends on its
/// own, never who is asking), and W3C Trace Context's `traceparent` (random ids, a new one per
/// request, in a fixed format that has no room for anything else). Every other field counts,
/// whatever its name: `tracestate`, `baggage`, `x-request-id` and custom fields can carry
/// anything.
pub(crate) const UNCOMPARED_FIELDS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "traceparent",
];

/// What decides whether a leader's failure answers another request: a SHA-256 digest of the
/// method, the URI and every field outside [`UNCOMPARED_FIELDS`] (names sorted, each name's
/// values in order). A digest rather than the fields: the flight keeps no request value.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Asked([u8; 32]);

impl Asked {
    pub(crate) fn of(method: &http::Method, uri: &Uri, headers: &HeaderMap) -> Self {
        use ring::digest;
        let mut names: Vec<&HeaderName> = headers
            .keys()
            .filter(|n| !UNCOMPARED_FIELDS.contains(&n.as_str()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut ctx = digest::Context::new(&digest::SHA256);
        // Length-prefixed throughout: no two different requests digest alike.
        let mut part = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        part(method.as_str().as_bytes());
        part(uri.to_string().as_bytes());
        for name in names {
            part(name.as_str().as_bytes());
            for value in headers.get_all(name) {
                part(b"v");
                part(value.as_bytes());
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }
}

/// What the origin answered a failed leader: a 500, 502, 503 or 504, not stored.
pub(crate) struct FailedAnswer {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// How a wait ended.
pub(crate) enum Waited {
    /// The leader stored a response: look it up again.
    Stored,
    /// Nothing to share (not stored, not a failure, or the wait timed out): go to the origin.
    NotStored,
    /// The origin answered the leader with an error: its answer, for an equal request.
    Failed(Arc<Failure>),
    /// The leader's response is being filled: answer from it, or (when this request cannot use
    /// it) wait on for the leader's outcome.
    Filling(Arc<Fill>, WaitFuture),
}

/// What a waiter gets.
pub(crate) type WaitFuture = Pin<Box<dyn Future<Output = Waited> + Send + 'static>>;

/// The in-flight requests of one layer (shared by every service the layer builds).
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<CacheKey, watch::Sender<Outcome>>>,
    /// Keys with a stale-while-revalidate refresh under way (at most one each).
    refreshing: Mutex<std::collections::HashSet<CacheKey>>,
    /// The waits' deadlines (see `timer.rs`).
    timer: TimerProbe,
    /// Keys whose response was not storable, until when (hit-for-pass).
    passes: Mutex<HashMap<CacheKey, SystemTime>>,
}

/// The most keys remembered as not storable (hit-for-pass) per layer.
pub(crate) const MAX_PASSES: usize = 10_000;

pub(crate) enum Join {
    /// First miss for this key: go to the origin, and keep the guard until the response is stored.
    Lead(Leader),
    /// Someone is fetching this key already: wait for them.
    Wait(WaitFuture),
    /// Coalescing is not possible here (no tokio runtime): go to the origin.
    Alone,
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, key: &CacheKey, timeout: Duration) -> Join {
        if crate::rt::handle().is_none() {
            return Join::Alone;
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.get(key) {
            let rx = tx.subscribe();
            drop(map);
            return Join::Wait(self.wait(rx, timeout, true));
        }
        let (tx, _) = watch::channel(Outcome::Pending);
        map.insert(key.clone(), tx.clone());
        Join::Lead(Leader {
            flights: self.clone(),
            key: key.clone(),
            tx,
            done: false,
        })
    }
}

impl Flights {
    /// Waits for the leader's outcome, bounded by `timeout` (a hung leader must not hold its
    /// waiters forever); with `fill`, a fill being read counts as an outcome.
    fn wait(
        self: &Arc<Self>,
        mut rx: watch::Receiver<Outcome>,
        timeout: Duration,
        fill: bool,
    ) -> WaitFuture {
        let deadline = self.timer.sleep(timeout);
        let flights = self.clone();
        Box::pin(async move {
            let outcome = async {
                let seen = rx
                    .wait_for(|o| match o {
                        Outcome::Pending => false,
                        // A fill nobody reads any more is over: wait for its outcome.
                        Outcome::Filling(weak) => fill && weak.strong_count() > 0,
                        _ => true,
                    })
                    .await
                    .map(|o| o.clone());
                match seen {
                    Ok(Outcome::Stored) => Waited::Stored,
                    Ok(Outcome::Failed(failure)) => Waited::Failed(failure),
                    Ok(Outcome::Filling(weak)) => match weak.upgrade() {
                        Some(fill) => {
                            let rest = flights.wait(rx.clone(), timeout, false);
                            Waited::Filling(fill, rest)
                        }
                        None => Waited::NotStored,
                    },
                    _ => Waited::NotStored,
                }
            };
            let bounded = Timed::new(outcome, deadline);
            bounded.await.unwrap_or_else(|_| {
                tracing::debug!("gave up waiting for a concurrent request");
                Waited::NotStored
            })
        })
    }

    /// Remembers `key` as not stored until `until` (hit-for-pass): requests for it do not
    /// coalesce meanwhile. At most [`MAX_PASSES`] keys are remembered; past that, expired ones
    /// are dropped first, and a new key is not remembered while the list is full.
    pub(crate) fn pass(&self, key: &CacheKey, now: SystemTime, until: SystemTime) {
        let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        if passes.len() >= MAX_PASSES {
            passes.retain(|_, t| *t > now);
        }
        if passes.len() < MAX_PASSES || passes.contains_key(key) {
            passes.insert(key.clone(), until);
        }
    }

    /// Whether `key` was found not storable recently (see [`pass`](Self::pass)).
    pub(crate) fn passing(&self, key: &CacheKey, now: SystemTime) -> bool {
        let passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
        passes.get(key).is_some_and(|until| *until > now)
    }

    /// Claims the one background refresh allowed for `key`; `None` when one is under way.
    pub(crate) fn start_refresh(self: &Arc<Self>, key: &CacheKey) -> Option<RefreshGuard> {
        let mut set = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set.insert(key.clone()).then(|| RefreshGuard {
            flights: self.clone(),
            key: key.clone(),
        })
    }
}

/// Held by the background refresh of a key; releases the claim when dropped.
#[derive(Debug)]
pub(crate) struct RefreshGuard {
    flights: Arc<Flights>,
    key: CacheKey,
}

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.flights
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Held by the request that fetches a key for everybody; tells the waiters when it is done.
#[derive(Debug)]
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: CacheKey,
    tx: watch::Sender<Outcome>,
    done: bool,
}

impl Leader {
    /// Hands the waiters the body being filled (they read it as it arrives); the outcome
    /// (stored or not) follows later. A publisher, since the guard itself moves into the store
    /// write before the fill exists.
    pub(crate) fn publisher(&self) -> Publisher {
        Publisher(self.tx.clone())
    }

    /// The response is in the store: waiters can read it.
    pub(crate) fn stored(mut self) {
        self.finish(Outcome::Stored);
    }

    /// The origin answered with an error: equal waiters get `failure` as their answer.
    pub(crate) fn failed(mut self, failure: Failure) {
        self.finish(Outcome::Failed(Arc::new(failure)));
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let mut map = self
            .flights
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            map.remove(&self.key);
        }
        drop(map);
        self.tx.send_replace(outcome);
    }
}

/// See [`Leader::publisher`].
pub(crate) struct Publisher(watch::Sender<Outcome>);

impl Publisher {
    pub(crate) fn filling(self, fill: &Arc<Fill>) {
        // Only while nothing else was said (the guard may have finished already).
        self.0.send_if_modified(|o| match o {
            Outcome::Pending => {
                *o = Outcome::Filling(Arc::downgrade(fill));
                true
            }
            _ => false,
        });
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Not stored (not storable, body error, dropped early, store error...): waiters fetch.
        self.finish(Outcome::NotStored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey::from_stored("k")
    }

    #[tokio::test]
    async fn waiters_learn_that_the_leader_stored() {
        let flights = Arc::new(Flights::default());
        let Join::Lead(leader) = flights.join(&key(), Duration::from_secs(60)) else {
            panic!("first must lead")
        };
        let Join::Wait(wait) = flights.join(&key(), Duration::from_secs(60)) else {
            panic!("second must wait")
        };
        leader.stored();
        assert!(matches!(wait.await, Waited::Stored));
        // The flight is over: the next miss leads again.
        assert!(matches!(
            flights.join(&key(), Duration::from_secs(1)),
            Join::Lead(_)
        ));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_waiters_with_not_stored() {
        let flights = Arc::new(Flights::default());
        let lead = flights.join(&key(), Duration::from_secs(60));
        let Join::Wait(wait) = flights.join(&key(), Duration::from_secs(60)) else {
            panic!()
        };
        drop(lead);
        assert!(matches!(wait.await, Waited::NotStored));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_give_up_after_the_timeout() {
        let flights = Arc::new(Flights::default());
        let _lead = flights.join(&key(), Duration::from_secs(60));
        let Join::Wait(wait) = flights.join(&key(), Duration::from_secs(5)) else {
            panic!()
        };
        // Paused clock: tokio advances time itself once everything is idle.
        let started = tokio::time::Instant::now();
        assert!(matches!(wait.await, Waited::NotStored));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_failed_leader_hands_its_answer_to_the_waiters() {
        let flights = Arc::new(Flights::default());
        let Join::Lead(leader) = flights.join(&key(), Duration::from_secs(60)) else {
            panic!("first must lead")
        };
        let waits: Vec<_> = (0..3)
            .map(|_| match flights.join(&key(), Duration::from_secs(60)) {
                Join::Wait(w) => w,
                _ => panic!("must wait"),
            })
            .collect();
        let asked = Asked::of(
            &http::Method::GET,
            &"http://e.com/".parse().unwrap(),
            &HeaderMap::new(),
        );
        leader.failed(Failure {
            asked,
            answer: FailedAnswer {
                status: StatusCode::SERVICE_UNAVAILABLE,
                version: Version::HTTP_11,
                headers: HeaderMap::new(),
                body: Bytes::new(),
            },
        });
        for wait in waits {
            assert!(matches!(wait.await, Waited::Failed(_)));
        }
    }

    /// Equal requests digest alike; any field outside the short list, whatever its name, makes
    /// them different; the listed ones do not.
    #[test]
    fn asked_is_equality_of_every_field_but_a_few() {
        use http::HeaderValue;
        let uri: Uri = "http://e.com/a?b=1".parse().unwrap();
        let of = |fields: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(*n, HeaderValue::from_static(v));
            }
            Asked::of(&http::Method::GET, &uri, &h)
        };
        let base = of(&[("x-session-token", "alice"), ("accept", "a")]);
        assert!(base == of(&[("accept", "b"), ("x-session-token", "alice")]));
        assert!(base == of(&[("x-session-token", "alice"), ("user-agent", "u")]));
        for other in [
            of(&[("x-session-token", "bob"), ("accept", "a")]),
            of(&[("accept", "a")]),
            of(&[("x-session-token", "alice"), ("api-key", "k")]),
            of(&[("x-session-token", "alice"), ("x-session-token", "bob")]),
            of(&[("x-session-token", "alicebob")]),
        ] {
            assert!(base != other);
        }
        // Names and values cannot run into each other.
        assert!(of(&[("a", "bc")]) != of(&[("ab", "c")]));
        let head = Asked::of(&http::Method::HEAD, &uri, &HeaderMap::new());
        assert!(head != Asked::of(&http::Method::GET, &uri, &HeaderMap::new()));
    }

    #[test]
    fn one_refresh_per_key() {
        let flights = Arc::new(Flights::default());
        let guard = flights.start_refresh(&key());
        assert!(guard.is_some());
        assert!(
            flights.start_refresh(&key()).is_none(),
            "second refresh refused"
        );
        drop(guard);
        assert!(flights.start_refresh(&key()).is_some(), "free again");
    }

    #[test]
    fn no_runtime_means_no_coalescing() {
        let flights = Arc::new(Flights::default());
        assert!(matches!(
            flights.join(&key(), Duration::from_secs(1)),
            Join::Alone
        ));
    }

    /// On a runtime built without tokio's timer, waiting is still bounded (by the timer thread).
    #[test]
    fn a_runtime_without_timer_still_bounds_the_wait() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let flights = Arc::new(Flights::default());
        rt.block_on(async {
            let _lead = flights.join(&key(), Duration::from_secs(60));
            let Join::Wait(wait) = flights.join(&key(), Duration::from_millis(30)) else {
                panic!("second must wait")
            };
            assert!(
                matches!(wait.await, Waited::NotStored),
                "gave up after the timeout"
            );
        });
    }
}
