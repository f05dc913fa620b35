//! reqwest users: the cache through reqwest-middleware with a real `reqwest::Client`, and the
//! plain tower adapter over it, against an origin on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_client_cache::{
    BadSignature, CacheInfo, CacheLayer, CacheMode, CacheStatus, ExpireAfter, MemoryStore, Store,
};
use hyper_client_cache_reqwest::{CacheLayerExt, CacheMiddleware, ReqwestService};
use reqwest_middleware::ClientWithMiddleware;
use tower::{ServiceBuilder, ServiceExt};

use crate::common::*;

pub(crate) fn with_middleware<St: Store + Sync>(layer: CacheLayer<St>) -> ClientWithMiddleware
where
    St::Future: Send,
{
    let http = reqwest::Client::new();
    let cache = layer.into_middleware(http.clone());
    reqwest_middleware::ClientBuilder::new(http)
        .with(cache)
        .build()
}

pub(crate) fn status(response: &reqwest::Response) -> Option<CacheStatus> {
    response.extensions().get::<CacheStatus>().copied()
}

#[tokio::test]
async fn miss_then_hit_through_reqwest_middleware() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let client = with_middleware(layer(&clock));
    let url = origin.url("/r");

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(status(&first), Some(CacheStatus::Miss));
    assert_eq!(first.url().as_str(), url);
    assert_eq!(first.text().await.unwrap(), "v1");

    let second = client.get(&url).send().await.unwrap();
    assert_eq!(status(&second), Some(CacheStatus::Hit));
    let info = second.extensions().get::<CacheInfo>().cloned().unwrap();
    assert!(info.key.is_some());
    assert_eq!(second.url().as_str(), url, "a hit has the request's URL");
    assert_eq!(second.text().await.unwrap(), "v1");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn per_request_modes_and_expiry_come_from_reqwest_middleware_extensions() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let client = with_middleware(layer(&clock));
    let url = origin.url("/modes");
    client.get(&url).send().await.unwrap();

    // A reload goes to the origin although the entry is fresh, and stores the answer.
    let reloaded = client
        .get(&url)
        .with_extension(CacheMode::Reload)
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.text().await.unwrap(), "v2");
    assert_eq!(origin.requests(), 2);
    let hit = client.get(&url).send().await.unwrap();
    assert_eq!(hit.text().await.unwrap(), "v2");

    // NoStore: as if there were no cache.
    let bypass = client
        .get(&url)
        .with_extension(CacheMode::NoStore)
        .send()
        .await
        .unwrap();
    assert_eq!(bypass.text().await.unwrap(), "v3");
    assert_eq!(
        client.get(&url).send().await.unwrap().text().await.unwrap(),
        "v2"
    );

    // A per-request expiry: not stored at all.
    let other = origin.url("/expire");
    let response = client
        .get(&other)
        .with_extension(ExpireAfter::DoNotCache)
        .send()
        .await
        .unwrap();
    assert!(status(&response) != Some(CacheStatus::Hit));
    let again = client.get(&other).send().await.unwrap();
    assert_eq!(status(&again), Some(CacheStatus::Miss));
}

/// The stale answer reaches the caller first; the refresh reaches the origin afterwards,
/// through the background client (the middleware's `Next` is gone by then).
#[tokio::test]
async fn stale_while_revalidate_refreshes_in_the_background_through_the_background_client() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let versions = Arc::new(Mutex::new(0u32));
    let origin = Origin::start(move |s| {
        let _ = seen_tx.send(s.headers.get("x-client").cloned());
        let mut v = versions.lock().unwrap();
        *v += 1;
        Response::builder()
            .header("cache-control", "max-age=1, stale-while-revalidate=60")
            .body(Full::new(Bytes::from(format!("v{}", *v))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let foreground = reqwest::Client::new();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-client", http::HeaderValue::from_static("background"));
    let background = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let cache = layer(&clock).into_middleware(background);
    let client = reqwest_middleware::ClientBuilder::new(foreground)
        .with(cache)
        .build();
    let url = origin.url("/swr");

    assert_eq!(
        client.get(&url).send().await.unwrap().text().await.unwrap(),
        "v1"
    );
    assert_eq!(
        seen_rx.recv().await.unwrap(),
        None,
        "the caller's request uses Next"
    );
    clock.advance(Duration::from_secs(5));

    let stale = client.get(&url).send().await.unwrap();
    assert_eq!(status(&stale), Some(CacheStatus::StaleWhileRevalidate));
    assert_eq!(stale.text().await.unwrap(), "v1");
    let refresh = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
        .await
        .expect("the background refresh reached the origin")
        .unwrap();
    assert_eq!(
        refresh.as_ref().map(|v| v.as_bytes()),
        Some(&b"background"[..])
    );
}

/// #29: the client was given twice (`ClientBuilder::new(http)` and `.background_client(http)`),
/// and forgetting the second made refreshes silently use a default client (without this
/// client's headers, proxy, TLS roots). Now it is given once, to `CacheMiddleware::new`, and
/// `client_builder` puts the same client under the chain: the caller's request and the
/// background refresh both carry its default header.
#[tokio::test]
async fn the_client_given_once_serves_the_chain_and_the_background_refresh() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let versions = Arc::new(Mutex::new(0u32));
    let origin = Origin::start(move |s| {
        let _ = seen_tx.send(s.headers.get("x-client").cloned());
        let mut v = versions.lock().unwrap();
        *v += 1;
        Response::builder()
            .header("cache-control", "max-age=1, stale-while-revalidate=60")
            .body(Full::new(Bytes::from(format!("v{}", *v))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-client", http::HeaderValue::from_static("mine"));
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let client = CacheMiddleware::new(layer(&clock), http)
        .client_builder()
        .build();
    let url = origin.url("/once");
    client.get(&url).send().await.unwrap().text().await.unwrap();
    let mine = Some(http::HeaderValue::from_static("mine"));
    assert_eq!(seen_rx.recv().await.unwrap(), mine, "the caller's request");
    clock.advance(Duration::from_secs(5));
    let stale = client.get(&url).send().await.unwrap();
    assert_eq!(status(&stale), Some(CacheStatus::StaleWhileRevalidate));
    let refresh = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
        .await
        .expect("the background refresh reached the origin")
        .unwrap();
    assert_eq!(
        refresh, mine,
        "the background refresh went through the same client"
    );
}

#[tokio::test]
async fn a_tampered_entry_is_a_bad_signature_error_through_the_middleware() {
    let origin = Origin::fixed("max-age=60", "genuine").await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let cache_layer = CacheLayer::new(store.clone())
        .clock(clock.clone())
        .secret_key(test_key());
    let client = with_middleware(cache_layer);
    let url = origin.url("/tamper");
    client.get(&url).send().await.unwrap();
    put_raw(&store, key_for(&url), Bytes::from_static(b"exploit!")).await;

    let err = client.get(&url).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &err else {
        panic!("expected a middleware error, got {err:?}");
    };
    let bad = inner
        .downcast_ref::<BadSignature>()
        .expect("the cache's BadSignature");
    assert!(bad.is_malformed());
}

#[tokio::test]
async fn origin_errors_come_back_as_reqwest_errors() {
    let clock = clock();
    let client = with_middleware(layer(&clock));
    // A port nobody listens on (bound, then closed).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, reqwest_middleware::Error::Reqwest(ref e) if e.is_connect()),
        "{err:?}"
    );
}

/// A body larger than `max_body_size` streams through in full, chunk by chunk, and is not
/// stored.
#[tokio::test]
async fn a_body_over_max_body_size_streams_through_untouched() {
    let big = Bytes::from(
        (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let body = big.clone();
    let origin = Origin::start(move |_| {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(body.clone()))
            .unwrap()
    })
    .await;
    let clock = clock();
    let client = with_middleware(layer(&clock).max_body_size(64 * 1024));
    let url = origin.url("/big");
    for _ in 0..2 {
        let mut response = client.get(&url).send().await.unwrap();
        assert_eq!(status(&response), Some(CacheStatus::Miss));
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = response.chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert_eq!(got, big);
        assert!(chunks >= 1);
    }
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn the_tower_adapter_over_reqwest_client_caches() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let svc = ServiceBuilder::new()
        .layer(layer(&clock))
        .service(ReqwestService::new(reqwest::Client::new()));
    let url = origin.url("/tower");
    for expected in [CacheStatus::Miss, CacheStatus::Hit] {
        let request = http::Request::get(&url)
            .body(reqwest::Body::from(""))
            .unwrap();
        let response = svc.clone().oneshot(request).await.unwrap();
        assert_eq!(response.extensions().get::<CacheStatus>(), Some(&expected));
        // Stored once its body has been read to the end.
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        assert_eq!(body.to_bytes(), "v1");
    }
    assert_eq!(origin.requests(), 1);
}

/// The tower adapter marks a response at the end of a redirect chain reqwest followed: the
/// cache does not store it under the first URL (whose own caching rules it never saw).
#[tokio::test]
async fn the_tower_adapter_does_not_store_a_redirected_response() {
    let origin = Origin::start(|s| {
        if s.uri.path() == "/old" {
            return http::Response::builder()
                .status(302)
                .header("location", "/new")
                .header("cache-control", "no-store")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
        }
        http::Response::builder()
            .header("cache-control", "max-age=600")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"new")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let svc = ServiceBuilder::new()
        .layer(layer(&clock))
        .service(ReqwestService::new(reqwest::Client::new()));
    for _ in 0..2 {
        let request = http::Request::get(origin.url("/old"))
            .body(reqwest::Body::from(""))
            .unwrap();
        let response = svc.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response
                .extensions()
                .get::<hyper_client_cache::NotStoredReason>(),
            Some(&hyper_client_cache::NotStoredReason::Redirected)
        );
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        assert_eq!(body.to_bytes(), "new");
    }
    assert_eq!(
        origin.requests(),
        4,
        "two chains, nothing served from the cache"
    );
}
