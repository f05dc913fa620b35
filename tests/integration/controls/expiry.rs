//! Expiry settings and their precedence: `expire_after`, per-URL and per-request lifetimes, named
//! values, and how they meet the response's own freshness and staleness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{
    CacheLayer, CacheStatus, ExpireAfter, MemoryStore, NotStoredReason, UrlPattern,
};

use crate::common::*;

#[tokio::test]
async fn expire_after_gives_a_lifetime_to_responses_without_one() {
    let origin = Origin::counting(&[]).await;
    let clock = clock();
    let mut client = cached_client(layer(&clock).expire_after(secs(60)));
    let url = origin.url("/plain");
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    clock.advance(secs(59));
    let hit = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (hit.cache, &hit.body[..]),
        (Some(CacheStatus::Hit), &b"v1"[..])
    );
    clock.advance(secs(2));
    let again = get(&mut client, &url).await.unwrap();
    assert_eq!(again.body, "v2");
    assert_eq!(origin.requests(), 2);

    // Without the setting, the same response is not stored at all (no freshness, RFC 9111).
    let mut plain = cached_client(layer(&clock));
    let got = get(&mut plain, &origin.url("/other")).await.unwrap();
    assert_eq!(got.not_stored, Some(NotStoredReason::NoFreshness));
}

/// The precedence table of docs/configuration.md: per-request > per-URL > default, and explicit
/// response freshness over all of them unless `cache_control(false)`.
#[tokio::test]
async fn precedence_table() {
    // Paths under /explicit/ answer max-age=100; others carry no freshness.
    let n = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start(move |s| {
        let v = n.fetch_add(1, Ordering::SeqCst);
        let mut b = Response::builder();
        if s.uri.path().starts_with("/explicit/") {
            b = b.header("cache-control", "max-age=100");
        }
        b.body(Full::new(Bytes::from(format!("v{v}")))).unwrap()
    })
    .await;
    let host = origin.addr.to_string();
    struct Case {
        name: &'static str,
        path: &'static str,
        request: Option<ExpireAfter>,
        honor_headers: bool,
        /// Expected lifetime in seconds.
        lifetime: u64,
    }
    let d = |s| Some(ExpireAfter::Duration(secs(s)));
    let cases = [
        Case {
            name: "default",
            path: "/a",
            request: None,
            honor_headers: true,
            lifetime: 10,
        },
        Case {
            name: "URL rule over default",
            path: "/rule/a",
            request: None,
            honor_headers: true,
            lifetime: 20,
        },
        Case {
            name: "request over URL rule",
            path: "/rule/b",
            request: d(30),
            honor_headers: true,
            lifetime: 30,
        },
        Case {
            name: "request over default",
            path: "/b",
            request: d(40),
            honor_headers: true,
            lifetime: 40,
        },
        Case {
            name: "headers over default",
            path: "/explicit/a",
            request: None,
            honor_headers: true,
            lifetime: 100,
        },
        Case {
            name: "headers over request",
            path: "/explicit/b",
            request: d(5),
            honor_headers: true,
            lifetime: 100,
        },
        Case {
            name: "cache_control(false): default over headers",
            path: "/explicit/c",
            request: None,
            honor_headers: false,
            lifetime: 10,
        },
        Case {
            name: "cache_control(false): request over headers",
            path: "/explicit/d",
            request: d(50),
            honor_headers: false,
            lifetime: 50,
        },
    ];
    for case in cases {
        let clock = clock();
        let layer = layer(&clock)
            .expire_after(secs(10))
            .expire_url(
                UrlPattern::new(&format!("{host}/rule/*")).unwrap(),
                secs(20),
            )
            .cache_control(case.honor_headers);
        let mut client = cached_client(layer);
        let url = origin.url(case.path);
        let request = |_: ()| match case.request {
            Some(e) => with_ext(&url, e),
            None => Request::get(&url).body(Empty::new()).unwrap(),
        };
        let first = send(&mut client, request(())).await.unwrap();
        assert_eq!(first.cache, Some(CacheStatus::Miss), "{}", case.name);
        let expires = first.info.as_ref().and_then(|i| i.expires);
        assert_eq!(
            expires,
            Some(epoch() + secs(case.lifetime)),
            "{}",
            case.name
        );
        // Read back without the per-request value: the stored lifetime decides.
        clock.advance(secs(case.lifetime - 1));
        let hit = get(&mut client, &url).await.unwrap();
        assert_eq!(
            hit.cache,
            Some(CacheStatus::Hit),
            "{}: fresh at lifetime - 1",
            case.name
        );
        assert_eq!(hit.body, first.body, "{}", case.name);
        clock.advance(secs(2));
        let after = get(&mut client, &url).await.unwrap();
        assert_ne!(
            after.body, first.body,
            "{}: stale at lifetime + 1",
            case.name
        );
    }
}

/// aiohttp-client-cache fault: a configured `expire_after` overrides a response's shorter
/// max-age. Here the response's max-age wins (unless the user says cache_control(false)).
#[tokio::test]
async fn a_configured_expiry_never_extends_a_shorter_max_age() {
    let origin = Origin::counting(&[("cache-control", "max-age=5")]).await;
    let clock = clock();
    let mut client = cached_client(layer(&clock).expire_after(ExpireAfter::Never));
    let url = origin.url("/short");
    get(&mut client, &url).await.unwrap();
    clock.advance(secs(6));
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        got.body, "v2",
        "max-age=5 must win over expire_after(Never)"
    );
}

/// aiohttp-client-cache reads expire_after=0 as "do not cache", requests-cache as "revalidate
/// every time": here both are named, and a zero duration means the latter.
#[tokio::test]
async fn named_values_instead_of_a_magic_zero() {
    let origin = Origin::start(|s| {
        if s.headers.get("if-none-match").is_some_and(|v| v == "\"e\"") {
            return Response::builder()
                .status(304)
                .header("etag", "\"e\"")
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        let mut b = Response::builder();
        if s.uri.path() != "/no-validator" {
            b = b.header("etag", "\"e\"");
        }
        b.body(Full::new(Bytes::from_static(b"body"))).unwrap()
    })
    .await;
    let clock = clock();
    for (value, label) in [
        (ExpireAfter::ExpireImmediately, "ExpireImmediately"),
        (ExpireAfter::Duration(Duration::ZERO), "Duration(0)"),
    ] {
        let mut client = cached_client(layer(&clock).expire_after(value));
        let url = origin.url(&format!("/validated/{label}"));
        let before = origin.requests();
        assert_eq!(
            get(&mut client, &url).await.unwrap().cache,
            Some(CacheStatus::Miss)
        );
        // Stored, and revalidated on every use.
        for _ in 0..2 {
            let got = get(&mut client, &url).await.unwrap();
            assert_eq!(got.cache, Some(CacheStatus::Revalidated), "{label}");
            assert_eq!(got.body, "body");
        }
        assert_eq!(origin.requests() - before, 3, "{label}");
        // Without a validator it could never be revalidated: not stored.
        let got = get(&mut client, &origin.url("/no-validator"))
            .await
            .unwrap();
        assert_eq!(got.not_stored, Some(NotStoredReason::Stale), "{label}");
    }

    // DoNotCache: neither read nor written, even when something is stored.
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let url = origin.url("/validated/x");
    let mut writer = cached_client(
        CacheLayer::new(store.clone())
            .clock(clock.clone())
            .expire_after(secs(60)),
    );
    get(&mut writer, &url).await.unwrap();
    let mut off = cached_client(
        CacheLayer::new(store.clone())
            .clock(clock.clone())
            .expire_after(ExpireAfter::DoNotCache),
    );
    let before = origin.requests();
    let got = get(&mut off, &url).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::NotCacheable));
    assert_eq!(got.not_stored, Some(NotStoredReason::Disabled));
    assert_eq!(origin.requests(), before + 1, "DoNotCache does not read");
}

#[tokio::test]
async fn never_expires() {
    let origin = Origin::counting(&[]).await;
    let clock = clock();
    let mut client = cached_client(layer(&clock).expire_after(ExpireAfter::Never));
    let url = origin.url("/forever");
    get(&mut client, &url).await.unwrap();
    clock.advance(secs(10 * 365 * 24 * 3600));
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Hit), &b"v1"[..])
    );
    assert!(!got.info.unwrap().is_expired);
}

#[tokio::test]
async fn a_304_refreshes_the_configured_expiry() {
    let origin = Origin::start(|s| {
        if s.headers.get("if-none-match").is_some() {
            return Response::builder()
                .status(304)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        Response::builder()
            .header("etag", "\"v\"")
            .body(Full::new(Bytes::from_static(b"body")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut client = cached_client(layer(&clock).expire_after(secs(60)));
    let url = origin.url("/r");
    get(&mut client, &url).await.unwrap();
    clock.advance(secs(61));
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Revalidated));
    assert_eq!(got.info.unwrap().expires, Some(epoch() + secs(61 + 60)));
    clock.advance(secs(59));
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    clock.advance(secs(2));
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Revalidated)
    );
    assert_eq!(origin.requests(), 3);
}

/// requests-cache starts one background refresh per concurrent stale hit; here at most one per
/// key runs at a time.
#[tokio::test]
async fn concurrent_stale_hits_start_one_background_refresh() {
    let origin =
        Origin::counting(&[("cache-control", "max-age=1, stale-while-revalidate=600")]).await;
    let clock = clock();
    let layer = layer(&clock);
    let metrics = layer.metrics();
    let client = cached_client(layer);
    let url = origin.url("/swr");
    get(&mut client.clone(), &url).await.unwrap();
    clock.advance(secs(10));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (mut client, url) = (client.clone(), url.clone());
        tasks.spawn(async move { get(&mut client, &url).await.unwrap().body });
    }
    while let Some(body) = tasks.join_next().await {
        assert_eq!(body.unwrap(), "v1");
    }
    tokio::time::timeout(secs(10), async {
        while metrics.stored() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the background refresh stores the new response");
    assert_eq!(origin.requests(), 2, "one initial request and one refresh");
    assert_eq!(get(&mut client.clone(), &url).await.unwrap().body, "v2");
}

#[tokio::test]
async fn an_invalid_url_pattern_is_an_error() {
    // Parsed before the builder chain, which cannot fail (#29).
    let err = UrlPattern::new("example.com/{unclosed").unwrap_err();
    assert!(err.to_string().contains("invalid URL pattern"), "{err}");
    assert!(err.to_string().contains("example.com/{unclosed"), "{err}");
    let pattern = UrlPattern::new("example.com/*").unwrap();
    let _layer: CacheLayer<MemoryStore> =
        CacheLayer::new(MemoryStore::default()).expire_url(pattern, secs(1));
}
