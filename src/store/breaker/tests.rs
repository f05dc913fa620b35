//! The breaker's state machine on a manual clock, and its layer form.

use super::*;
use crate::ManualClock;

fn breaker(clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::new()
        .failures(3)
        .open_for(Duration::from_millis(100))
        .max_open_for(Duration::from_millis(350))
        .clock(clock.clone())
}

fn fail(b: &CircuitBreaker) {
    b.admit(true).expect("admitted").report(false);
}

#[test]
fn opens_after_consecutive_failures_probes_then_closes() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let b = breaker(&clock);
    fail(&b);
    fail(&b);
    // A success in between resets the count.
    b.admit(true).unwrap().report(true);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.times_opened(), 1);
    assert!(b.admit(true).is_none(), "open: not asked");
    assert_eq!(
        b.rejected(),
        0,
        "counted by CacheMetrics inside the layer, not here"
    );
    clock.advance(Duration::from_millis(99));
    assert!(b.admit(true).is_none());
    clock.advance(Duration::from_millis(1));
    let probe = b.admit(true).expect("the probe");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.admit(true).is_none(), "one probe at a time");
    probe.report(true);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.admit(true).is_some());
}

#[test]
fn failed_probes_double_the_wait_up_to_the_maximum() {
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = ManualClock::new(start);
    let b = breaker(&clock);
    for _ in 0..3 {
        fail(&b);
    }
    let mut waited = Duration::ZERO;
    for want in [200, 350, 350] {
        let open = b.probe_at().duration_since(clock.now()).unwrap();
        waited += open;
        clock.advance(open);
        b.admit(true).expect("probe").report(false);
        let next = b.probe_at().duration_since(clock.now()).unwrap();
        assert_eq!(next, Duration::from_millis(want));
    }
    assert!(waited > Duration::ZERO);
    assert_eq!(b.times_opened(), 4);
    // A success resets the wait to `open_for`.
    clock.advance(Duration::from_millis(350));
    b.admit(true).unwrap().report(true);
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(
        b.probe_at().duration_since(clock.now()).unwrap(),
        Duration::from_millis(100)
    );
}

#[test]
fn a_cancelled_probe_lets_the_next_call_probe() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let b = breaker(&clock);
    for _ in 0..3 {
        fail(&b);
    }
    clock.advance(Duration::from_millis(100));
    drop(b.admit(true).expect("probe"));
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.admit(true).is_some(), "probes again at once");
}

#[test]
fn a_clock_that_steps_back_or_a_stuck_probe_cannot_keep_it_open() {
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = ManualClock::new(start);
    let b = breaker(&clock);
    for _ in 0..3 {
        fail(&b);
    }
    // The clock steps back an hour: the wait would last an hour; it does not.
    clock.set(start - Duration::from_secs(3600));
    let probe = b
        .admit(true)
        .expect("due: the wait is longer than any the breaker sets");
    // A probe that is never reported nor dropped (a future kept unpolled).
    std::mem::forget(probe);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.admit(true).is_none());
    clock.advance(PROBE_LEASE);
    let probe = b
        .admit(true)
        .expect("the lease ran out: another call probes");
    probe.report(true);
    assert_eq!(b.state(), BreakerState::Closed);
    // A whole-store walk never probes.
    for _ in 0..3 {
        fail(&b);
    }
    clock.advance(Duration::from_secs(5));
    assert!(b.admit(false).is_none());
    assert!(b.admit(true).is_some());
}

#[tokio::test]
async fn as_a_layer_over_any_store() {
    use tower::ServiceExt;
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let b = breaker(&clock);
    let calls = Arc::new(AtomicU32::new(0));
    let failing = {
        let calls = calls.clone();
        tower::service_fn(move |_: StoreRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<StoreResponse, BoxError>("down".into()) }
        })
    };
    let store = b.layer(failing);
    let get = || StoreRequest::get(crate::CacheKey::from_stored("k"));
    // Failed writes say nothing about reads: they do not open it.
    for _ in 0..10 {
        let put = StoreRequest::Put {
            key: crate::CacheKey::from_stored("k"),
            blob: bytes::Bytes::new(),
            ttl: None,
        };
        let _ = store.clone().oneshot(put).await;
    }
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..10 {
        let _ = store.clone().oneshot(get()).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 13, "asked until it opened");
    let err = store.clone().oneshot(get()).await.unwrap_err();
    assert!(err
        .downcast_ref::<StoreError>()
        .is_some_and(StoreError::is_unavailable));
}
