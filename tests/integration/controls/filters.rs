//! Which responses are stored: the status list and the response filter.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore, NotStoredReason};

use crate::common::*;

#[tokio::test]
async fn status_filter_and_default_statuses() {
    let origin = Origin::start(|s| {
        let status: u16 = s.uri.path()[1..].parse().unwrap();
        let mut b = Response::builder().status(status);
        if s.uri.query() == Some("explicit") {
            b = b.header("cache-control", "max-age=60");
        }
        b.body(Full::new(Bytes::from_static(b"x"))).unwrap()
    })
    .await;
    let clock = clock();
    // The user's lifetime applies to the heuristically cacheable statuses (RFC 9110 §15.1).
    let mut client = cached_client(layer(&clock).expire_after(secs(60)));
    for (status, stored) in [
        (200, true),
        (404, true),
        (410, true),
        (500, false),
        (503, false),
    ] {
        let url = origin.url(&format!("/{status}"));
        get(&mut client, &url).await.unwrap();
        let again = get(&mut client, &url).await.unwrap();
        assert_eq!(again.cache == Some(CacheStatus::Hit), stored, "{status}");
    }
    // An explicit list replaces that, for explicit freshness too.
    let mut only_200 = cached_client(layer(&clock).allowed_statuses([StatusCode::OK]));
    let got = get(&mut only_200, &origin.url("/404?explicit"))
        .await
        .unwrap();
    assert_eq!(got.not_stored, Some(NotStoredReason::Status));
    let got = get(&mut only_200, &origin.url("/200?explicit"))
        .await
        .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Miss));
}

#[tokio::test]
async fn the_filter_applies_on_write_and_on_read() {
    let origin = Origin::start(|s| {
        let mut b = Response::builder().header("cache-control", "max-age=60");
        if s.uri.path() == "/cookie" {
            b = b.header("set-cookie", "session=1");
        }
        b.body(Full::new(Bytes::from_static(b"x"))).unwrap()
    })
    .await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let base = || {
        CacheLayer::new(store.clone())
            .secret_key(test_key())
            .clock(clock.clone())
    };
    let no_cookies = |p: &http::response::Parts| !p.headers.contains_key("set-cookie");
    let mut filtered = cached_client(base().filter(no_cookies));

    // On write.
    let got = get(&mut filtered, &origin.url("/cookie")).await.unwrap();
    assert_eq!(got.not_stored, Some(NotStoredReason::Filtered));
    assert!(get_raw(&store, key_for(&origin.url("/cookie")))
        .await
        .is_none());

    // On read: stored by a layer without the filter, rejected and deleted by this one.
    let mut unfiltered = cached_client(base());
    let url = origin.url("/cookie");
    get(&mut unfiltered, &url).await.unwrap();
    assert!(get_raw(&store, key_for(&url)).await.is_some());
    let before = origin.requests();
    let got = get(&mut filtered, &url).await.unwrap();
    assert_eq!(origin.requests(), before + 1);
    assert_eq!(got.not_stored, Some(NotStoredReason::Filtered));
    assert!(
        get_raw(&store, key_for(&url)).await.is_none(),
        "deleted on read"
    );
}
