//! Per-request cache modes, and read-only caches.

use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_client_cache::{
    CacheLayer, CacheMode, CacheStatus, ExpireAfter, MemoryStore, NotStoredReason,
};

use crate::common::*;

/// requests-cache fault: per-request options travel to the origin as real Cache-Control
/// headers. Here modes and expiry overrides are extensions and the origin sees nothing.
#[tokio::test]
async fn per_request_options_never_reach_the_origin() {
    let origin = Origin::counting(&[("etag", "\"x\"")]).await;
    let clock = clock();
    let mut client = cached_client(layer(&clock).expire_after(secs(60)));
    let url = origin.url("/opts");
    let mut requests = vec![
        with_ext(&url, CacheMode::Reload),
        with_ext(&url, CacheMode::NoCache),
        with_ext(&url, CacheMode::Refresh),
        with_ext(&url, CacheMode::NoStore),
        with_ext(&url, ExpireAfter::ExpireImmediately),
        with_ext(&url, ExpireAfter::Duration(secs(1))),
    ];
    for request in requests.drain(..) {
        send(&mut client, request).await.unwrap();
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 6, "every one of these goes to the origin");
    for s in seen {
        for name in ["cache-control", "pragma", "expires"] {
            assert!(
                !s.headers.contains_key(name),
                "{name} sent: {:?}",
                s.headers
            );
        }
    }
}

#[tokio::test]
async fn cache_modes() {
    let origin = Origin::counting(&[("cache-control", "max-age=10"), ("etag", "\"e\"")]).await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/m");
    get(&mut client, &url).await.unwrap(); // v1 stored

    // NoStore: not read, not written.
    let got = send(&mut client, with_ext(&url, CacheMode::NoStore))
        .await
        .unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::NotCacheable), &b"v2"[..])
    );
    assert_eq!(got.not_stored, Some(NotStoredReason::Disabled));
    assert_eq!(
        get(&mut client, &url).await.unwrap().body,
        "v1",
        "NoStore left v1 alone"
    );

    // Reload: skips the lookup, stores the answer.
    let got = send(&mut client, with_ext(&url, CacheMode::Reload))
        .await
        .unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Miss), &b"v3"[..])
    );
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Hit), &b"v3"[..])
    );

    // NoCache / Refresh: a fresh entry is validated first (the origin answers 200 here, since
    // this origin ignores validators: the new body replaces the stored one).
    for mode in [CacheMode::NoCache, CacheMode::Refresh] {
        let before = origin.requests();
        let got = send(&mut client, with_ext(&url, mode)).await.unwrap();
        assert_eq!(origin.requests(), before + 1, "{mode:?}");
        let seen = origin.seen();
        assert_eq!(
            seen.last().unwrap().headers["if-none-match"],
            "\"e\"",
            "{mode:?}"
        );
        assert_eq!(got.cache, Some(CacheStatus::Miss), "{mode:?}");
    }

    // ForceCache: a stale entry is served without contacting the origin.
    clock.advance(secs(1000));
    let before = origin.requests();
    let got = send(&mut client, with_ext(&url, CacheMode::ForceCache))
        .await
        .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Stale));
    assert!(got.info.as_ref().unwrap().is_expired);
    assert_eq!(origin.requests(), before);
    // ... and with nothing stored it fetches and stores.
    let other = origin.url("/m2");
    let got = send(&mut client, with_ext(&other, CacheMode::ForceCache))
        .await
        .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Miss));
    assert_eq!(
        get(&mut client, &other).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );

    // OnlyIfCached: stale is fine; nothing stored gives a 504 without the origin.
    let got = send(&mut client, with_ext(&url, CacheMode::OnlyIfCached))
        .await
        .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Stale));
    let before = origin.requests();
    let got = send(
        &mut client,
        with_ext(&origin.url("/never"), CacheMode::OnlyIfCached),
    )
    .await
    .unwrap();
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(got.cache, Some(CacheStatus::OnlyIfCachedMiss));
    assert_eq!(origin.requests(), before);
}

/// Turning the cache off for one request (a mode in its extensions) does not affect requests
/// running at the same time on clones of the same client: there is no global switch.
#[tokio::test]
async fn disabling_one_request_does_not_affect_others() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let client = cached_client(layer(&clock));
    let url = origin.url("/iso");
    get(&mut client.clone(), &url).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (mut client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let request = if i % 2 == 0 {
                with_ext(&url, CacheMode::NoStore)
            } else {
                Request::get(&url).body(Empty::new()).unwrap()
            };
            (i, send(&mut client, request).await.unwrap().cache)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, cache) = done.unwrap();
        let expected = if i % 2 == 0 {
            CacheStatus::NotCacheable
        } else {
            CacheStatus::Hit
        };
        assert_eq!(cache, Some(expected), "request {i}");
    }
    assert_eq!(origin.requests(), 1 + 10);
}

#[tokio::test]
async fn read_only_uses_the_cache_and_never_writes() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let base = || {
        CacheLayer::new(store.clone())
            .secret_key(test_key())
            .clock(clock.clone())
    };
    let mut writer = cached_client(base());
    let mut reader = cached_client(base().read_only(true));
    let url = origin.url("/ro");
    get(&mut writer, &url).await.unwrap();
    assert_eq!(
        get(&mut reader, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );

    // A miss is not stored.
    let other = origin.url("/ro-other");
    let got = get(&mut reader, &other).await.unwrap();
    assert_eq!(got.not_stored, Some(NotStoredReason::ReadOnly));
    assert!(get_raw(&store, key_for(&other)).await.is_none());

    // An unsafe request does not invalidate.
    let post = Request::post(&url).body(Empty::new()).unwrap();
    send(&mut reader, post).await.unwrap();
    assert!(get_raw(&store, key_for(&url)).await.is_some());
}

/// docs/configuration.md's stand-ins for other caches' "cache everything" settings
/// (http-cache's `CacheMode::IgnoreRules`, requests-cache's defaults): responses without any
/// freshness information, and with `max-age=0`, are stored and served; `ForceCache` serves a
/// stored one without the origin; `no-store` is still not stored.
#[tokio::test]
async fn ignoring_freshness_rules_stores_and_serves_everything_but_no_store() {
    let origin = Origin::start(|s| {
        let cc = match s.uri.path() {
            "/zero" => "max-age=0",
            "/never" => "no-store",
            _ => "",
        };
        let mut r = http::Response::builder();
        if !cc.is_empty() {
            r = r.header("cache-control", cc);
        }
        r.body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut client = cached_client(
        layer(&clock)
            .cache_control(false)
            .expire_after(ExpireAfter::Never),
    );
    for path in ["/plain", "/zero"] {
        let url = origin.url(path);
        get(&mut client, &url).await.unwrap();
        clock.advance(secs(86_400 * 365));
        let again = send(&mut client, with_ext(&url, CacheMode::ForceCache))
            .await
            .unwrap();
        assert_eq!(again.cache, Some(CacheStatus::Hit), "{path}");
        assert_eq!(
            get(&mut client, &url).await.unwrap().cache,
            Some(CacheStatus::Hit)
        );
    }
    assert_eq!(origin.requests(), 2);
    let never = origin.url("/never");
    get(&mut client, &never).await.unwrap();
    assert_ne!(
        get(&mut client, &never).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
}
