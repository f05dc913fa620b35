//! What callers see of the cache: `CacheInfo` and the RFC 9211 `Cache-Status` header.

use http::Request;
use http_body_util::Empty;
use hyper_client_cache::{CacheInfo, CacheMode};

use crate::common::*;

#[tokio::test]
async fn cache_info_describes_the_entry() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/info");
    let miss: CacheInfo = get(&mut client, &url).await.unwrap().info.unwrap();
    assert!(!miss.from_cache);
    assert_eq!(miss.key, Some(key_for(&url)));
    assert_eq!(miss.created_at, Some(epoch()));
    assert_eq!(miss.expires, Some(epoch() + secs(60)));
    assert_eq!(miss.size, None);
    clock.advance(secs(10));
    let hit = get(&mut client, &url).await.unwrap().info.unwrap();
    assert!(hit.from_cache && !hit.is_expired && !hit.revalidated);
    assert_eq!(hit.created_at, Some(epoch()));
    assert_eq!(hit.expires, Some(epoch() + secs(60)));
    assert!(hit.size.unwrap() > 2);
    let bypass = send(&mut client, Request::post(&url).body(Empty::new()).unwrap())
        .await
        .unwrap()
        .info
        .unwrap();
    assert!(!bypass.from_cache);
    assert_eq!(bypass.expires, None);
}

#[tokio::test]
async fn rfc_9211_cache_status_header_is_opt_in() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let mut plain = cached_client(layer(&clock));
    let got = get(&mut plain, &origin.url("/a")).await.unwrap();
    assert!(!got.headers.contains_key("cache-status"));

    let mut client = cached_client(layer(&clock).cache_status_header(true));
    let url = origin.url("/cs");
    let miss = get(&mut client, &url).await.unwrap();
    assert_eq!(
        miss.headers["cache-status"],
        "hyper-client-cache; fwd=miss; fwd-status=200; stored; ttl=60"
    );
    clock.advance(secs(10));
    let hit = get(&mut client, &url).await.unwrap();
    assert_eq!(
        hit.headers["cache-status"],
        "hyper-client-cache; hit; ttl=50"
    );
    let post = send(&mut client, Request::post(&url).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        post.headers["cache-status"],
        "hyper-client-cache; fwd=method; fwd-status=200"
    );
    let off = send(&mut client, with_ext(&url, CacheMode::NoStore))
        .await
        .unwrap();
    assert_eq!(
        off.headers["cache-status"],
        "hyper-client-cache; fwd=bypass; fwd-status=200"
    );
}
