//! Revalidation of stale entries with conditional requests (RFC 9111 §4.3).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore};

use crate::common::*;

/// An origin with a versioned resource: answers 304 to a matching If-None-Match, else 200.
async fn etag_origin(cache_control: &'static str, changed: Arc<AtomicBool>) -> Origin {
    Origin::start(move |s| {
        let etag = if changed.load(Ordering::SeqCst) {
            "\"v2\""
        } else {
            "\"v1\""
        };
        let inm = s
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_owned());
        if inm.as_deref() == Some(etag) {
            return Response::builder()
                .status(304)
                .header("etag", etag)
                .header("cache-control", cache_control)
                .header("x-validated", "yes")
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        Response::builder()
            .header("etag", etag)
            .header("cache-control", cache_control)
            .header("x-validated", "no")
            .body(Full::new(Bytes::from(format!("body {etag}"))))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_with_one_conditional_request() {
    let changed = Arc::new(AtomicBool::new(false));
    let origin = etag_origin("max-age=10", changed.clone()).await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let layer = CacheLayer::new(store).clock(clock.clone());
    let metrics = layer.metrics();
    let mut client = cached_client(layer);
    let url = origin.url("/doc");

    let first = get(&mut client, &url).await.unwrap();
    assert_eq!(first.cache, Some(CacheStatus::Miss));
    clock.advance(Duration::from_secs(11));

    let second = get(&mut client, &url).await.unwrap();
    assert_eq!(second.cache, Some(CacheStatus::Revalidated));
    assert_eq!(
        second.status, 200,
        "the caller gets the stored 200, not the 304"
    );
    assert_eq!(second.body, "body \"v1\"");
    assert_eq!(
        second.headers["x-validated"], "yes",
        "header fields updated from the 304"
    );
    assert_eq!(
        second.headers["content-length"],
        first.headers["content-length"]
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].headers["if-none-match"], "\"v1\"",
        "exactly one conditional request"
    );
    assert_eq!(metrics.revalidated(), 1);

    // The 304 refreshed the entry: fresh again for 10 s.
    let third = get(&mut client, &url).await.unwrap();
    assert_eq!(third.cache, Some(CacheStatus::Hit));
    assert_eq!(origin.requests(), 2);

    // The resource changes: the next validation gets a 200 that replaces the entry.
    changed.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(11));
    let fourth = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (fourth.cache, &fourth.body[..]),
        (Some(CacheStatus::Miss), &b"body \"v2\""[..])
    );
    let fifth = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (fifth.cache, &fifth.body[..]),
        (Some(CacheStatus::Hit), &b"body \"v2\""[..])
    );
}

#[tokio::test]
async fn no_cache_responses_are_validated_on_every_use() {
    let origin = etag_origin("no-cache", Arc::new(AtomicBool::new(false))).await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/nc");
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    for _ in 0..3 {
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(
            (got.cache, &got.body[..]),
            (Some(CacheStatus::Revalidated), &b"body \"v1\""[..])
        );
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen[1..]
        .iter()
        .all(|s| s.headers["if-none-match"] == "\"v1\""));
}

#[tokio::test]
async fn request_no_cache_validates_a_fresh_entry() {
    let origin = etag_origin("max-age=600", Arc::new(AtomicBool::new(false))).await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/r");
    get(&mut client, &url).await.unwrap();
    let req = Request::get(&url)
        .header("cache-control", "no-cache")
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        send(&mut client, req).await.unwrap().cache,
        Some(CacheStatus::Revalidated)
    );
    assert_eq!(origin.seen()[1].headers["if-none-match"], "\"v1\"");
}

#[tokio::test]
async fn last_modified_alone_is_validated_with_if_modified_since() {
    let lm = "Tue, 14 Nov 2023 20:26:40 GMT";
    let origin = Origin::start(move |s| {
        if s.headers.get("if-modified-since").is_some_and(|v| v == lm) {
            return Response::builder()
                .status(304)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        Response::builder()
            .header("last-modified", lm)
            .header("cache-control", "max-age=0")
            .body(Full::new(Bytes::from_static(b"dated")))
            .unwrap()
    })
    .await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/lm");
    get(&mut client, &url).await.unwrap();
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Revalidated), &b"dated"[..])
    );
    assert_eq!(origin.seen()[1].headers["if-modified-since"], lm);
}

#[tokio::test]
async fn a_client_conditional_is_answered_from_a_fresh_entry() {
    let origin = etag_origin("max-age=600", Arc::new(AtomicBool::new(false))).await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/p");
    get(&mut client, &url).await.unwrap();
    let conditional = |name: &str, value: &str| {
        Request::get(&url)
            .header(name, value)
            .body(Empty::new())
            .unwrap()
    };
    // The client's copy is current: 304 from the cache, no body, validator included.
    let got = send(&mut client, conditional("if-none-match", "\"v1\""))
        .await
        .unwrap();
    assert_eq!(
        (got.status.as_u16(), got.cache),
        (304, Some(CacheStatus::Hit))
    );
    assert!(got.body.is_empty());
    assert_eq!(got.headers["etag"], "\"v1\"");
    assert!(!got.headers.contains_key("content-length"));
    // An old copy: the full stored response.
    let got = send(&mut client, conditional("if-none-match", "\"v0\""))
        .await
        .unwrap();
    assert_eq!(
        (got.status.as_u16(), got.cache),
        (200, Some(CacheStatus::Hit))
    );
    assert_eq!(got.body, "body \"v1\"");
    assert_eq!(origin.requests(), 1);
    // Preconditions the cache does not evaluate go to the origin untouched.
    let got = send(&mut client, conditional("if-match", "\"v1\""))
        .await
        .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Miss));
    assert_eq!(origin.seen()[1].headers["if-match"], "\"v1\"");
}

#[tokio::test]
async fn a_client_conditional_on_a_stale_entry_goes_to_the_origin_as_it_is() {
    let origin = etag_origin("max-age=0", Arc::new(AtomicBool::new(false))).await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/s");
    get(&mut client, &url).await.unwrap();
    let req = Request::get(&url)
        .header("if-none-match", "\"v1\"")
        .body(Empty::new())
        .unwrap();
    let got = send(&mut client, req).await.unwrap();
    assert_eq!(
        got.status, 304,
        "the origin's 304 for the client's own validator"
    );
    assert_eq!(origin.seen()[1].headers["if-none-match"], "\"v1\"");
}
