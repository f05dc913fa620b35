//! The store circuit breaker (docs/stores.md, "When the store is down"): a dead or stalled store
//! costs its timeout a few times, then nothing, and is used again once a probe succeeds.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{
    BoxError, BreakerState, CacheLayer, CacheStatus, CircuitBreaker, MemoryStore, StoreRequest,
    StoreResponse,
};
use tower::ServiceBuilder;

use crate::common::*;

/// A store in front of a `MemoryStore` that fails while `down` is set, counting the calls that
/// reach it.
fn flaky(down: Arc<AtomicBool>, calls: Arc<AtomicUsize>) -> impl hyper_client_cache::Store {
    let memory = MemoryStore::new(1 << 20);
    tower::service_fn(move |request: StoreRequest| {
        calls.fetch_add(1, Ordering::SeqCst);
        let down = down.load(Ordering::SeqCst);
        let memory = memory.clone();
        async move {
            if down {
                return Err::<StoreResponse, BoxError>("connection refused".into());
            }
            tower::ServiceExt::oneshot(memory, request)
                .await
                .map_err(Into::into)
        }
    })
}

#[tokio::test]
async fn a_failing_store_is_not_asked_until_a_probe_succeeds() {
    let origin = Origin::fixed("max-age=600", "body").await;
    let clock = clock();
    let (down, calls) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let layer = CacheLayer::new(flaky(down.clone(), calls.clone())).clock(clock.clone());
    let metrics = layer.metrics();
    let breaker = layer.breaker().cloned().expect("on by default");
    let mut client = cached_client(layer);
    let url = origin.url("/b");
    get(&mut client, &url).await.unwrap();
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );

    down.store(true, Ordering::SeqCst);
    // Each request's lookup fails (its write fails too, but a refused write says nothing about
    // reads): five failed lookups open it.
    for _ in 0..5 {
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(
            (got.cache, &got.body[..]),
            (Some(CacheStatus::StoreUnavailable), &b"body"[..])
        );
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let asked = calls.load(Ordering::SeqCst);
    for _ in 0..20 {
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(got.cache, Some(CacheStatus::StoreUnavailable));
        assert_eq!(
            got.body, "body",
            "every request still answered, by the origin"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        asked,
        "an open breaker does not ask the store"
    );
    assert!(
        metrics.store_skipped() >= 40,
        "20 lookups and 20 writes skipped"
    );
    assert_eq!(breaker.times_opened(), 1);

    // The store is back; the first call after `open_for` probes it, and closes the breaker.
    down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_millis(249));
    get(&mut client, &url).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), asked, "not before open_for");
    clock.advance(Duration::from_millis(1));
    get(&mut client, &url).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_store_costs_its_timeout_a_few_times_then_nothing() {
    let stalled = tower::service_fn(|_: StoreRequest| {
        std::future::pending::<Result<StoreResponse, BoxError>>()
    });
    let layer = CacheLayer::new(stalled).store_timeout(Duration::from_millis(500));
    let breaker = layer.breaker().cloned().unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"origin"),
            )))
        }));
    let mut waited = Vec::new();
    for _ in 0..8 {
        let started = tokio::time::Instant::now();
        let request = http::Request::get("http://origin.test/").body(()).unwrap();
        let response = tower::ServiceExt::oneshot(svc.clone(), request)
            .await
            .unwrap();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        waited.push(started.elapsed());
    }
    // (Virtual time.) The origin's answers are not storable: only lookups reach the store, and
    // the fifth timeout opens the breaker; from then on a request does not wait at all.
    assert_eq!(breaker.state(), BreakerState::Open);
    let timeout = Duration::from_millis(500);
    let failures = hyper_client_cache::DEFAULT_BREAKER_FAILURES as usize;
    assert!(
        waited[..failures].iter().all(|w| *w == timeout),
        "{waited:?}"
    );
    assert!(waited[failures..].iter().all(|w| w.is_zero()), "{waited:?}");
}

#[tokio::test]
async fn a_breaker_can_be_tuned_shared_or_turned_off() {
    let origin = Origin::fixed("max-age=600", "body").await;
    let (down, calls) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let url = origin.url("/t");
    // One failure opens a tuned breaker.
    let tuned = CircuitBreaker::new().failures(1);
    let layer = CacheLayer::new(flaky(down.clone(), calls.clone())).circuit_breaker(tuned.clone());
    let mut client = cached_client(layer);
    get(&mut client, &url).await.unwrap();
    assert_eq!(
        tuned.state(),
        BreakerState::Open,
        "the handle shares the layer's state"
    );
    // Off: every request asks the store.
    let layer = CacheLayer::new(flaky(down.clone(), calls.clone())).without_circuit_breaker();
    assert!(layer.breaker().is_none());
    let mut client = cached_client(layer);
    let before = calls.load(Ordering::SeqCst);
    for _ in 0..10 {
        get(&mut client, &url).await.unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst) - before,
        20,
        "a lookup and a write each"
    );
}

#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
mod redis {
    use super::*;
    use hyper_client_cache::RedisStore;

    #[tokio::test]
    async fn a_killed_redis_fails_fast_then_is_skipped() {
        let origin = Origin::fixed("max-age=600", "always").await;
        let mut redis = RedisServer::start().await;
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let layer = CacheLayer::new(store).store_timeout(Duration::from_secs(5));
        let metrics = layer.metrics();
        let breaker = layer.breaker().cloned().unwrap();
        let mut client = cached_client(layer);
        let url = origin.url("/k");
        get(&mut client, &url).await.unwrap();
        redis.kill();
        for _ in 0..30 {
            let got = get(&mut client, &url).await.unwrap();
            assert_eq!(
                (got.cache, &got.body[..]),
                (Some(CacheStatus::StoreUnavailable), &b"always"[..])
            );
        }
        // Refused connections are errors at once (not the 5 s timeout), and few reach Redis.
        assert_eq!(breaker.state(), BreakerState::Open);
        // Five failed lookups open it (the failed writes between them are neutral).
        assert_eq!(metrics.store_read_errors(), 5);
        assert!(metrics.store_write_errors() <= 5);
        assert!(metrics.store_skipped() >= 50);
    }

    #[tokio::test]
    async fn a_stalled_redis_is_skipped_and_used_again_after_it_resumes() {
        let origin = Origin::fixed("max-age=600", "always").await;
        let redis = RedisServer::start().await;
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let clock = clock();
        let layer = CacheLayer::new(store)
            .store_timeout(Duration::from_millis(100))
            .clock(clock.clone());
        let breaker = layer.breaker().cloned().unwrap();
        let mut client = cached_client(layer);
        let url = origin.url("/s");
        get(&mut client, &url).await.unwrap();
        assert_eq!(
            get(&mut client, &url).await.unwrap().cache,
            Some(CacheStatus::Hit)
        );
        redis.pause(true);
        for _ in 0..10 {
            let got = get(&mut client, &url).await.unwrap();
            assert_eq!(got.cache, Some(CacheStatus::StoreUnavailable));
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        redis.pause(false);
        // The layer's clock: the probe goes once open_for has passed on it.
        clock.advance(Duration::from_millis(250));
        let mut hit = false;
        for _ in 0..5 {
            if get(&mut client, &url).await.unwrap().cache == Some(CacheStatus::Hit) {
                hit = true;
                break;
            }
            clock.advance(Duration::from_secs(1));
        }
        assert!(hit, "the entry is served again once Redis answers");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
