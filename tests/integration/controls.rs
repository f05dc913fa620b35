//! The controls requests-cache users expect (issue #4): expiry settings and their precedence,
//! modes, filters, keys, what callers see, and the anchors' known faults.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper_client_cache::{
    CacheInfo, CacheLayer, CacheMode, CacheStatus, ExpireAfter, KeyParts, ManualClock, MemoryStore,
    NotStoredReason, SecretKey,
};

use crate::common::*;

fn secret() -> SecretKey {
    SecretKey::new("controls test key, not a secret!").unwrap()
}

fn layer(clock: &ManualClock) -> CacheLayer<MemoryStore> {
    CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone()))
        .secret_key(secret())
        .clock(clock.clone())
}

/// An origin that answers every request with a new body (`v1`, `v2`, ...) and the given headers.
async fn counting(headers: &'static [(&'static str, &'static str)]) -> Origin {
    let n = Arc::new(AtomicUsize::new(0));
    Origin::start(move |_| {
        let v = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut b = Response::builder();
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(Full::new(Bytes::from(format!("v{v}")))).unwrap()
    })
    .await
}

fn with_ext<T: Clone + Send + Sync + 'static>(url: &str, ext: T) -> Request<Empty<Bytes>> {
    let mut r = Request::get(url).body(Empty::new()).unwrap();
    r.extensions_mut().insert(ext);
    r
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test]
async fn expire_after_gives_a_lifetime_to_responses_without_one() {
    let origin = counting(&[]).await;
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
            .expire_url(&format!("{host}/rule/*"), secs(20))
            .unwrap()
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
    let origin = counting(&[("cache-control", "max-age=5")]).await;
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
    let origin = counting(&[]).await;
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

/// requests-cache fault: per-request options travel to the origin as real Cache-Control
/// headers. Here modes and expiry overrides are extensions and the origin sees nothing.
#[tokio::test]
async fn per_request_options_never_reach_the_origin() {
    let origin = counting(&[("etag", "\"x\"")]).await;
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
    let origin = counting(&[("cache-control", "max-age=10"), ("etag", "\"e\"")]).await;
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
    let origin = counting(&[("cache-control", "max-age=60")]).await;
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
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let base = || {
        CacheLayer::new(store.clone())
            .secret_key(secret())
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
            .secret_key(secret())
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

#[tokio::test]
async fn ignored_parameters_leave_the_key_and_the_stored_data() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let layer = layer(&clock).ignored_parameters(["utm_source", "session"]);
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    get(
        &mut client,
        &origin.url("/p?a=1&utm_source=mail&session=SESSION1"),
    )
    .await
    .unwrap();
    let got = get(
        &mut client,
        &origin.url("/p?session=OTHER&a=1&utm_source=web"),
    )
    .await
    .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Hit));
    let listing = inspector.entries().await.unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].url, origin.url("/p?a=1"));
    // The origin still saw the parameters.
    assert!(origin.seen()[0]
        .uri
        .query()
        .unwrap()
        .contains("session=SESSION1"));
}

/// Both anchors store credentials, or let another user's token hit the first user's entry. A
/// header ignored for the key but listed in Vary still selects (a miss for another token), and
/// neither it nor the default credential names are stored in clear.
#[tokio::test]
async fn ignored_or_credential_headers_still_select_by_vary_and_are_not_stored() {
    let origin = Origin::start(|s| {
        let token = s
            .headers
            .get("x-user-token")
            .or(s.headers.get("authorization"))
            .map(|v| v.to_str().unwrap().to_lowercase())
            .unwrap_or_default();
        // The body names the user, not the token (the test looks for the token in the store).
        let user = token.split('-').next().unwrap_or_default().to_owned();
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "X-User-Token, Authorization")
            .body(Full::new(Bytes::from(format!("data of {user}"))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let layer = layer(&clock).ignored_parameters(["x-user-token", "api_key"]);
    let store = layer.store().clone();
    let mut client = cached_client(layer);
    let url = origin.url("/me?api_key=QUERYSECRET");
    let as_user = |header: &str, token: &str| {
        Request::get(&url)
            .header(header, token)
            .body(Empty::new())
            .unwrap()
    };
    for header in ["x-user-token", "authorization"] {
        let alice = send(&mut client, as_user(header, "ALICE-TOKEN"))
            .await
            .unwrap();
        assert_eq!(alice.body, "data of alice");
        let bob = send(&mut client, as_user(header, "BOB-TOKEN"))
            .await
            .unwrap();
        assert_eq!(
            bob.body, "data of bob",
            "{header}: Bob must not get Alice's entry"
        );
        assert_ne!(bob.cache, Some(CacheStatus::Hit));
        let alice = send(&mut client, as_user(header, "ALICE-TOKEN"))
            .await
            .unwrap();
        assert_eq!(alice.body, "data of alice");
        assert_eq!(alice.cache, Some(CacheStatus::Hit), "{header}");
    }
    for blob in all_blobs(&store).await {
        for secret in [&b"ALICE-TOKEN"[..], b"BOB-TOKEN", b"QUERYSECRET"] {
            assert!(
                !blob.windows(secret.len()).any(|w| w == secret),
                "{} stored in clear",
                String::from_utf8_lossy(secret)
            );
        }
    }
}

#[tokio::test]
async fn match_headers_adds_request_headers_to_the_key() {
    let origin = Origin::start(|s| {
        let tenant = s
            .headers
            .get("x-tenant")
            .map(|v| v.to_str().unwrap().to_owned());
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!("{tenant:?}"))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut client =
        cached_client(layer(&clock).match_headers([HeaderName::from_static("x-tenant")]));
    let url = origin.url("/t");
    let req = |t: &str| {
        Request::get(&url)
            .header("x-tenant", t)
            .body(Empty::new())
            .unwrap()
    };
    assert_eq!(
        send(&mut client, req("a")).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    let b = send(&mut client, req("b")).await.unwrap();
    assert_eq!(
        (b.cache, &b.body[..]),
        (Some(CacheStatus::Miss), &b"Some(\"b\")"[..])
    );
    let a = send(&mut client, req("a")).await.unwrap();
    assert_eq!(
        (a.cache, &a.body[..]),
        (Some(CacheStatus::Hit), &b"Some(\"a\")"[..])
    );
}

#[tokio::test]
async fn a_custom_key_function_replaces_the_key() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    // One entry per path, whatever the host or query.
    let mut client = cached_client(
        layer(&clock).key_fn(|p: &KeyParts<'_>| format!("{} {}", p.method, p.uri.path())),
    );
    let port = origin.addr.port();
    get(&mut client, &format!("http://127.0.0.1:{port}/k?x=1"))
        .await
        .unwrap();
    let got = get(&mut client, &format!("http://localhost:{port}/k?x=2"))
        .await
        .unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Hit), &b"v1"[..])
    );
    let info = got.info.unwrap();
    assert!(info.key.unwrap().as_str().starts_with("hcc1:"));
}

#[tokio::test]
async fn post_bodies_are_part_of_the_key_when_allowed() {
    let origin = Origin::start(|s| {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!(
                "answer to {}",
                String::from_utf8_lossy(&s.body)
            ))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let url = origin.url("/graphql");
    let post = |body: &'static str| {
        Request::post(&url)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };

    // By default POST is not cached.
    let mut default = full_body_client(layer(&clock));
    send_full(&mut default, post("{q1}")).await;
    let got = send_full(&mut default, post("{q1}")).await;
    assert_eq!(got.1, Some(CacheStatus::NotCacheable));

    // Allowed, without body keys: still not cached (the key could not tell bodies apart).
    let mut no_keys =
        full_body_client(layer(&clock).allowed_methods([Method::GET, Method::HEAD, Method::POST]));
    let got = send_full(&mut no_keys, post("{q1}")).await;
    assert_eq!(got.2, Some(NotStoredReason::RequestBody));

    let mut client = tower::ServiceBuilder::new()
        .layer(
            layer(&clock)
                .allowed_methods([Method::GET, Method::HEAD, Method::POST])
                .key_request_bodies(16),
        )
        .service(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>(),
        );
    let before = origin.requests();
    let q1 = send_full(&mut client, post("{q1}")).await;
    assert_eq!(
        (q1.0.as_str(), q1.1),
        ("answer to {q1}", Some(CacheStatus::Miss))
    );
    let q2 = send_full(&mut client, post("{q2}")).await;
    assert_eq!(
        (q2.0.as_str(), q2.1),
        ("answer to {q2}", Some(CacheStatus::Miss))
    );
    let q1 = send_full(&mut client, post("{q1}")).await;
    assert_eq!(
        (q1.0.as_str(), q1.1),
        ("answer to {q1}", Some(CacheStatus::Hit))
    );
    assert_eq!(origin.requests(), before + 2);
    // The origin got the bodies unchanged.
    let seen = origin.seen();
    assert_eq!(seen[seen.len() - 1].body, "{q2}");
    // Over the limit: bypasses the cache, and the whole body still reaches the origin.
    let long = "{a query that is longer than sixteen bytes}";
    let got = send_full(&mut client, post(long)).await;
    assert_eq!(got.2, Some(NotStoredReason::RequestBody));
    assert_eq!(origin.seen().last().unwrap().body, long);
    // A cached POST does not invalidate anything.
    assert_eq!(
        send_full(&mut client, post("{q1}")).await.1,
        Some(CacheStatus::Hit)
    );
}

async fn send_full<S, B>(
    svc: &mut S,
    request: Request<Full<Bytes>>,
) -> (String, Option<CacheStatus>, Option<NotStoredReason>)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<hyper_client_cache::CacheBody<B>>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        String::from_utf8_lossy(&body).into_owned(),
        parts.extensions.get().copied(),
        parts.extensions.get().copied(),
    )
}

/// requests-cache starts one background refresh per concurrent stale hit; here at most one per
/// key runs at a time.
#[tokio::test]
async fn concurrent_stale_hits_start_one_background_refresh() {
    let origin = counting(&[("cache-control", "max-age=1, stale-while-revalidate=600")]).await;
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
async fn cache_info_describes_the_entry() {
    let origin = counting(&[("cache-control", "max-age=60")]).await;
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
    let origin = counting(&[("cache-control", "max-age=60")]).await;
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

#[tokio::test]
async fn an_invalid_url_pattern_is_an_error() {
    let err = CacheLayer::new(MemoryStore::default())
        .expire_url("example.com/{unclosed", secs(1))
        .unwrap_err();
    assert!(err.to_string().contains("invalid URL pattern"), "{err}");
}

/// A request body whose size hint says 4 bytes but that yields more: reading it for the key
/// fails the request with an error (the body cannot be sent on unchanged), and nothing is stored.
#[tokio::test]
async fn a_body_longer_than_its_size_hint_fails_the_request() {
    #[derive(Default)]
    struct Lying(Option<Bytes>);
    impl From<Bytes> for Lying {
        fn from(b: Bytes) -> Self {
            Lying(Some(b))
        }
    }
    impl http_body::Body for Lying {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(4)
        }
    }
    let origin = counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let mut client = tower::ServiceBuilder::new()
        .layer(
            layer(&clock)
                .allowed_methods([Method::POST])
                .key_request_bodies(16),
        )
        .service(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Lying>(),
        );
    let request = Request::post(origin.url("/lie"))
        .body(Lying(Some(Bytes::from(vec![b'x'; 100]))))
        .unwrap();
    use tower::{Service, ServiceExt};
    let err = client
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("request body"), "{err}");
    assert_eq!(origin.requests(), 0);
}
