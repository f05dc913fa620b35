//! Serving stale responses: max-stale, stale-if-error, only-if-cached (RFC 9111 §4.2.4, §5.2.1;
//! RFC 5861).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::CacheStatus;

use crate::common::*;

/// An origin whose status the test switches (200 with the body, or an error).
async fn switchable(cache_control: &'static str) -> (Origin, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    let s2 = status.clone();
    let origin = Origin::start(move |_| {
        let code = s2.load(Ordering::SeqCst);
        Response::builder()
            .status(code)
            .header("cache-control", cache_control)
            .body(Full::new(Bytes::from(format!("status {code}"))))
            .unwrap()
    })
    .await;
    (origin, status)
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_response_on_a_503_within_its_window() {
    let (origin, status) = switchable("max-age=10, stale-if-error=60").await;
    let clock = clock();
    let mut client = cached_client(unsigned_layer(&clock));
    let url = origin.url("/sie");
    get(&mut client, &url).await.unwrap();
    status.store(503, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (got.cache, got.status.as_u16()),
        (Some(CacheStatus::StaleIfError), 200)
    );
    assert_eq!(got.body, "status 200");
    assert_eq!(got.headers["age"], "30");
    // Past the window (10 s fresh + 60 s): the error goes through.
    clock.advance(Duration::from_secs(41));
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(got.status, 503);
}

#[tokio::test]
async fn stale_if_error_covers_a_refused_connection() {
    let (origin, _) = switchable("max-age=10, stale-if-error=60").await;
    let clock = clock();
    let mut client = cached_client_unpooled(unsigned_layer(&clock));
    let url = origin.url("/down");
    get(&mut client, &url).await.unwrap();
    drop(origin); // the port is closed: connections are refused
    clock.advance(Duration::from_secs(20));
    let got = get(&mut client, &url)
        .await
        .expect("served stale instead of the transport error");
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::StaleIfError), &b"status 200"[..])
    );
    // Without stale-if-error permission, the transport error reaches the caller.
    clock.advance(Duration::from_secs(100));
    assert!(get(&mut client, &url).await.is_err());
}

#[tokio::test]
async fn must_revalidate_forbids_serving_stale_even_on_error() {
    let (origin, status) = switchable("max-age=10, stale-if-error=60, must-revalidate").await;
    let clock = clock();
    let mut client =
        cached_client(unsigned_layer(&clock).serve_stale_on_error(Duration::from_secs(600)));
    let url = origin.url("/mr");
    get(&mut client, &url).await.unwrap();
    status.store(500, Ordering::SeqCst);
    clock.advance(Duration::from_secs(20));
    assert_eq!(get(&mut client, &url).await.unwrap().status, 500);
}

#[tokio::test]
async fn the_user_can_allow_stale_on_error_without_the_directive() {
    let (origin, status) = switchable("max-age=10").await;
    let clock = clock();
    let mut strict = cached_client(unsigned_layer(&clock));
    let url = origin.url("/opt");
    get(&mut strict, &url).await.unwrap();
    status.store(502, Ordering::SeqCst);
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        get(&mut strict, &url).await.unwrap().status,
        502,
        "off by default"
    );

    let (origin, status) = switchable("max-age=10").await;
    let mut lenient =
        cached_client(unsigned_layer(&clock).serve_stale_on_error(Duration::from_secs(60)));
    let url = origin.url("/opt");
    get(&mut lenient, &url).await.unwrap();
    status.store(502, Ordering::SeqCst);
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        get(&mut lenient, &url).await.unwrap().cache,
        Some(CacheStatus::StaleIfError)
    );
}

#[tokio::test]
async fn max_stale_accepts_a_stale_response_without_contacting_the_origin() {
    let (origin, _) = switchable("max-age=10").await;
    let clock = clock();
    let mut client = cached_client(unsigned_layer(&clock));
    let url = origin.url("/ms");
    get(&mut client, &url).await.unwrap();
    clock.advance(Duration::from_secs(15));
    let req = |cc: &str| {
        Request::get(&url)
            .header("cache-control", cc)
            .body(Empty::new())
            .unwrap()
    };
    assert_eq!(
        send(&mut client, req("max-stale=10")).await.unwrap().cache,
        Some(CacheStatus::Stale)
    );
    assert_eq!(
        send(&mut client, req("max-stale=1")).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn only_if_cached_answers_504_when_nothing_usable_is_stored() {
    let (origin, _) = switchable("max-age=10").await;
    let clock = clock();
    let mut client = cached_client(unsigned_layer(&clock));
    let url = origin.url("/oic");
    let req = || {
        Request::get(&url)
            .header("cache-control", "only-if-cached")
            .body(Empty::new())
            .unwrap()
    };
    let got = send(&mut client, req()).await.unwrap();
    assert_eq!(
        (got.status.as_u16(), got.cache),
        (504, Some(CacheStatus::OnlyIfCachedMiss))
    );
    assert_eq!(origin.requests(), 0);
    get(&mut client, &url).await.unwrap();
    assert_eq!(
        send(&mut client, req()).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        send(&mut client, req()).await.unwrap().status,
        504,
        "stale is not usable"
    );
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let origin = Origin::start(|s| {
        if s.headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Response::builder()
                .status(304)
                .header("cache-control", "max-age=100, stale-while-revalidate=60")
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        Response::builder()
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=1, stale-while-revalidate=60")
            .body(Full::new(Bytes::from_static(b"swr body")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let layer = unsigned_layer(&clock);
    let metrics = layer.metrics();
    let mut client = cached_client(layer);
    let url = origin.url("/swr");
    get(&mut client, &url).await.unwrap();
    clock.advance(Duration::from_secs(5));

    // Several requests while stale: all answered from the cache at once.
    for _ in 0..5 {
        let got = get(&mut client, &url).await.unwrap();
        assert!(
            matches!(
                got.cache,
                Some(CacheStatus::StaleWhileRevalidate | CacheStatus::Hit)
            ),
            "{:?}",
            got.cache
        );
        assert_eq!(got.body, "swr body");
    }
    // The one background revalidation finishes (bounded wait on the origin, not on the cache).
    tokio::time::timeout(Duration::from_secs(10), async {
        while metrics.revalidated() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the background revalidation must finish");
    let seen = origin.seen();
    assert_eq!(seen.len(), 2, "exactly one background request");
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
    // Refreshed by the 304: fresh again.
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    // Past the window, it is revalidated in the foreground instead.
    clock.advance(Duration::from_secs(1000));
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Revalidated)
    );
}
