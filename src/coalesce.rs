//! Request coalescing: concurrent misses for one key send one request to the origin.
//!
//! The first miss for a key becomes the *leader* and holds a [`Leader`] guard until its response
//! has been stored (or has turned out not to be storable, or failed: the guard's `Drop` covers
//! every way out). Later misses for the same key *wait* on the guard's channel, bounded by a
//! timeout, then look the key up again: the leader's response is normally there. A waiter whose
//! leader did not store anything, or that gave up waiting, goes to the origin itself.
//!
//! Except when the leader's request *failed* at the origin (a 500, 502, 503 or 504 that is not
//! stored, with a body of at most [`MAX_SHARED_BODY`], or a transport error): then the waiters
//! whose request is the leader's own (the same URI, the same credential fields) get that answer,
//! as singleflight-style collapsing does, instead of all going to a struggling origin at once.
//! Waiters with other credentials, or another URI that maps to the same key (an ignored query
//! parameter), go to the origin themselves: an error page may echo what the request carried.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version};
use tokio::sync::watch;

use crate::timer::{Timed, TimerProbe};
use crate::CacheKey;

/// The largest body of a failed leader's response that is kept to share with its waiters.
pub(crate) const MAX_SHARED_BODY: usize = 64 << 10;

/// How a leader's request ended, as its waiters see it.
#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    Stored,
    NotStored,
    Failed(Arc<Failure>),
}

/// A leader's failed request: who asked, and what the origin answered.
pub(crate) struct Failure {
    /// The leader's request target and credential fields: only an identical request is given
    /// the answer.
    pub(crate) asked: Asked,
    pub(crate) answer: FailedAnswer,
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URI, no credentials, no body in logs.
        let what = match &self.answer {
            FailedAnswer::Response { status, .. } => status.as_str().to_owned(),
            FailedAnswer::Error => "error".to_owned(),
        };
        f.debug_struct("Failure").field("answer", &what).finish()
    }
}

/// The parts of a request that decide whether a leader's failure answers it too.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Asked {
    pub(crate) uri: Uri,
    pub(crate) credentials: Vec<(HeaderName, HeaderValue)>,
}

impl Asked {
    /// The request's target and the values of the credential fields `sensitive` (the caller
    /// passes the layer's list and the defaults).
    pub(crate) fn of(uri: &Uri, headers: &HeaderMap, sensitive: &[HeaderName]) -> Self {
        let mut credentials = Vec::new();
        for name in sensitive {
            for value in headers.get_all(name) {
                credentials.push((name.clone(), value.clone()));
            }
        }
        Self {
            uri: uri.clone(),
            credentials,
        }
    }
}

/// What a failed leader got from the origin.
pub(crate) enum FailedAnswer {
    /// A 500, 502, 503 or 504, not stored.
    Response {
        status: StatusCode,
        version: Version,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The origin could not be reached, or the connection failed (what the error said is not
    /// shared: it can name the leader's URL).
    Error,
}

/// How a wait ended.
#[derive(Debug, Clone)]
pub(crate) enum Waited {
    /// The leader stored a response: look it up again.
    Stored,
    /// Nothing to share (not stored, not a failure, or the wait timed out): go to the origin.
    NotStored,
    /// The leader's request failed: its answer, for an identical request.
    Failed(Arc<Failure>),
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
}

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
            let mut rx = tx.subscribe();
            drop(map);
            // Bounded: a hung leader must not hold its waiters forever.
            let deadline = self.timer.sleep(timeout);
            return Join::Wait(Box::pin(async move {
                let outcome = async move {
                    let seen = rx
                        .wait_for(|o| !matches!(o, Outcome::Pending))
                        .await
                        .map(|o| o.clone());
                    match seen {
                        Ok(Outcome::Stored) => Waited::Stored,
                        Ok(Outcome::Failed(failure)) => Waited::Failed(failure),
                        _ => Waited::NotStored,
                    }
                };
                let bounded = Timed::new(outcome, deadline);
                bounded.await.unwrap_or_else(|_| {
                    tracing::debug!("gave up waiting for a concurrent request");
                    Waited::NotStored
                })
            }));
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
    /// The response is in the store: waiters can read it.
    pub(crate) fn stored(mut self) {
        self.finish(Outcome::Stored);
    }

    /// The request failed at the origin: identical waiters get `failure` as their answer.
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
        let asked = Asked::of(&"http://e.com/".parse().unwrap(), &HeaderMap::new(), &[]);
        leader.failed(Failure {
            asked,
            answer: FailedAnswer::Error,
        });
        for wait in waits {
            assert!(matches!(wait.await, Waited::Failed(_)));
        }
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
