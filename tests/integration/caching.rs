//! Storing and serving: what is a hit, what goes to the origin.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore};

use crate::common::*;

#[tokio::test]
async fn second_get_is_a_hit_with_the_same_status_headers_and_body() {
    let body: &'static [u8] = b"\x00\x01binary body \xff\xfe";
    let origin = Origin::start(move |_| {
        Response::builder()
            .status(200)
            .header("cache-control", "max-age=60")
            .header("content-type", "application/octet-stream")
            .header("set-cookie", "a=1")
            .header("x-custom", "one")
            .header("set-cookie", "b=2")
            .header(
                "x-latin1",
                http::HeaderValue::from_bytes(b"caf\xe9").unwrap(),
            )
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut client = cached_client(
        CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone()))
            .secret_key(test_key())
            .clock(clock.clone()),
    );

    let first = get(&mut client, &origin.url("/item")).await.unwrap();
    let second = get(&mut client, &origin.url("/item")).await.unwrap();

    assert_eq!(first.cache, Some(CacheStatus::Miss));
    assert_eq!(second.cache, Some(CacheStatus::Hit));
    assert_eq!(origin.requests(), 1);
    assert_eq!(second.status, first.status);
    assert_eq!(second.body, first.body);
    assert_eq!(&second.body[..], body);
    // Same fields, same order, repeats kept; only Age is added (RFC 9111 §4).
    let without_age = |h: &http::HeaderMap| {
        h.iter()
            .filter(|(n, _)| *n != "age")
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(without_age(&second.headers), without_age(&first.headers));
    let cookies: Vec<_> = second.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(second.headers["age"], "0");
}

#[tokio::test]
async fn fresh_until_max_age_then_refetched() {
    let origin = Origin::fixed("max-age=60", "v").await;
    let clock = clock();
    let mut client = cached_client(
        CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone())).clock(clock.clone()),
    );
    let url = origin.url("/");
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    clock.advance(Duration::from_secs(59));
    let hit = get(&mut client, &url).await.unwrap();
    assert_eq!(hit.cache, Some(CacheStatus::Hit));
    assert_eq!(hit.headers["age"], "59");
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn expires_minus_date_gives_the_lifetime() {
    let clock = clock();
    let date = httpdate::fmt_http_date(epoch());
    let expires = httpdate::fmt_http_date(epoch() + Duration::from_secs(100));
    let origin = Origin::start(move |_| {
        Response::builder()
            .header("date", date.as_str())
            .header("expires", expires.as_str())
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()).clock(clock.clone()));
    let url = origin.url("/e");
    get(&mut client, &url).await.unwrap();
    clock.advance(Duration::from_secs(99));
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    clock.advance(Duration::from_secs(1));
    // The origin keeps sending the same Date and Expires, so what it sends now is itself
    // already expired (apparent age 100 s, RFC 9111 §4.2.3): fetched, and not stored.
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::NotCacheable)
    );
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn no_store_and_no_freshness_are_never_stored() {
    use hyper_client_cache::NotStoredReason as R;
    for (cc, why) in [
        ("no-store, max-age=60", R::ResponseNoStore),
        ("no-cache, max-age=60", R::NoCacheWithoutValidator),
        ("public", R::NoFreshness),
    ] {
        let origin = Origin::fixed(cc, "x").await;
        let store = MemoryStore::default();
        let mut client = cached_client(CacheLayer::new(store.clone()));
        for _ in 0..2 {
            let got = get(&mut client, &origin.url("/")).await.unwrap();
            assert_eq!(got.cache, Some(CacheStatus::NotCacheable), "{cc}");
            assert_eq!(got.not_stored, Some(why), "{cc}");
        }
        assert_eq!(origin.requests(), 2, "{cc}");
        assert!(store.is_empty(), "{cc}");
    }
    // The request can forbid storing too; a stored response does not say why it was stored.
    let origin = Origin::fixed("max-age=60", "x").await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let req = Request::get(origin.url("/r"))
        .header("cache-control", "no-store")
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        send(&mut client, req).await.unwrap().not_stored,
        Some(R::RequestNoStore)
    );
    assert_eq!(
        get(&mut client, &origin.url("/r"))
            .await
            .unwrap()
            .not_stored,
        None
    );
}

#[tokio::test]
async fn other_methods_reach_the_origin_unchanged_and_are_not_stored() {
    let origin = Origin::fixed("max-age=60", "ok").await;
    let store = MemoryStore::default();
    let mut client = full_body_client(CacheLayer::new(store.clone()));
    for method in ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        let request = Request::builder()
            .method(method)
            .uri(origin.url("/thing?x=1"))
            .header("x-test", "kept")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let response = tower::ServiceExt::oneshot(&mut client, request)
            .await
            .unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::NotCacheable)
        );
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 6);
    for (s, method) in seen
        .iter()
        .zip(["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    {
        assert_eq!(s.method, method);
        assert_eq!(s.uri, "/thing?x=1");
        assert_eq!(s.headers["x-test"], "kept");
        if method != "HEAD" && method != "OPTIONS" {
            assert_eq!(s.body, "payload", "{method}");
        }
    }
    assert!(store.is_empty());
}

#[tokio::test]
async fn vary_selects_the_request_headers_that_must_match() {
    let origin = Origin::start(|s| {
        let lang = s.headers.get("accept-language").cloned();
        let mut r = Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Language");
        if let Some(l) = lang {
            r = r.header("content-language", l);
        }
        r.body(Full::new(Bytes::from_static(b"v"))).unwrap()
    })
    .await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let req = |lang: &str| {
        Request::get(origin.url("/v"))
            .header("accept-language", lang)
            .body(Empty::new())
            .unwrap()
    };
    assert_eq!(
        send(&mut client, req("en")).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(
        send(&mut client, req("en")).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    let fr = send(&mut client, req("fr")).await.unwrap();
    assert_eq!(fr.cache, Some(CacheStatus::Miss));
    assert_eq!(fr.headers["content-language"], "fr");
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn vary_on_authorization_does_not_leak_between_users() {
    let origin = Origin::start(|s| {
        let who = s.headers.get("authorization").cloned().unwrap();
        // The origin names the user without echoing the credential.
        let user = if who.as_bytes().ends_with(b"ALICE-SECRET") {
            "alice"
        } else {
            "bob"
        };
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "authorization")
            .body(Full::new(Bytes::from(format!("hello {user}"))))
            .unwrap()
    })
    .await;
    let store = MemoryStore::default();
    let mut client = cached_client(CacheLayer::new(store.clone()).secret_key(test_key()));
    let req = |token: &str| {
        Request::get(origin.url("/me"))
            .header("authorization", token)
            .body(Empty::new())
            .unwrap()
    };
    let alice = send(&mut client, req("Bearer ALICE-SECRET")).await.unwrap();
    assert_eq!(alice.body, "hello alice");
    let bob = send(&mut client, req("Bearer BOB")).await.unwrap();
    assert_eq!(bob.cache, Some(CacheStatus::Miss));
    assert_eq!(bob.body, "hello bob");
    // Both variants are kept, each served only to its own user.
    let alice = send(&mut client, req("Bearer ALICE-SECRET")).await.unwrap();
    assert_eq!(
        (alice.cache, &alice.body[..]),
        (Some(CacheStatus::Hit), &b"hello alice"[..])
    );
    let bob = send(&mut client, req("Bearer BOB")).await.unwrap();
    assert_eq!(
        (bob.cache, &bob.body[..]),
        (Some(CacheStatus::Hit), &b"hello bob"[..])
    );
    let eve = send(&mut client, req("Bearer EVE")).await.unwrap();
    assert_eq!(eve.cache, Some(CacheStatus::Miss));
    // The credential itself is not in the store (only a keyed digest of it).
    let keys = all_blobs(&store).await;
    assert!(!keys.is_empty());
    for blob in keys {
        assert!(!blob.windows(12).any(|w| w == b"ALICE-SECRET"));
    }
}

#[tokio::test]
async fn request_no_cache_and_no_store_skip_the_stored_entry() {
    let origin = Origin::fixed("max-age=60", "x").await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/");
    get(&mut client, &url).await.unwrap();
    for (name, value) in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let req = Request::get(&url)
            .header(name, value)
            .body(Empty::new())
            .unwrap();
        assert_eq!(
            send(&mut client, req).await.unwrap().cache,
            Some(CacheStatus::Miss)
        );
    }
    // max-age=0 in the request: the stored response (age 0) is still acceptable...
    let req = Request::get(&url)
        .header("cache-control", "max-age=0")
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        send(&mut client, req).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn the_query_order_does_not_matter_but_the_query_does() {
    let origin = Origin::fixed("max-age=60", "x").await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    get(&mut client, &origin.url("/q?a=1&b=2")).await.unwrap();
    assert_eq!(
        get(&mut client, &origin.url("/q?b=2&a=1"))
            .await
            .unwrap()
            .cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(
        get(&mut client, &origin.url("/q?a=1&b=3"))
            .await
            .unwrap()
            .cache,
        Some(CacheStatus::Miss)
    );
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get_without_a_body() {
    let origin = Origin::fixed("max-age=60", "the body").await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/h");
    get(&mut client, &url).await.unwrap();
    let head = send(&mut client, Request::head(&url).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(head.cache, Some(CacheStatus::Hit));
    assert!(head.body.is_empty());
    assert_eq!(
        head.headers["content-length"], "8",
        "the GET's header section"
    );
    assert_eq!(origin.requests(), 1);
    // A HEAD miss goes to the origin and stores nothing.
    let other = origin.url("/only-head");
    let miss = send(
        &mut client,
        Request::head(&other).body(Empty::new()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(miss.cache, Some(CacheStatus::NotCacheable));
    assert_eq!(
        get(&mut client, &other).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_same_origin_locations() {
    let origin = Origin::start(|s| {
        let mut r = Response::builder().header("cache-control", "max-age=600");
        if s.method == http::Method::POST {
            r = r
                .status(201)
                .header("location", "/items/2")
                .header("content-location", "http://elsewhere.example/items/3");
        }
        if s.uri.path() == "/fails" || s.headers.contains_key("x-fail") {
            r = r.status(500).header("cache-control", "no-store");
        }
        r.body(Full::new(Bytes::from(format!(
            "{} {}",
            s.method,
            s.uri.path()
        ))))
        .unwrap()
    })
    .await;
    let store = MemoryStore::default();
    let mut client = full_body_client(CacheLayer::new(store.clone()));
    let get_full = |path: &str| {
        Request::get(origin.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let status = |r: &Response<hyper_client_cache::CacheBody<hyper::body::Incoming>>| {
        *r.extensions().get::<CacheStatus>().unwrap()
    };
    use tower::ServiceExt;
    for path in ["/items", "/items/2", "/fails"] {
        let r = (&mut client).oneshot(get_full(path)).await.unwrap();
        drop(http_body_util::BodyExt::collect(r.into_body()).await);
    }
    let fails = (&mut client).oneshot(get_full("/fails")).await.unwrap();
    assert_eq!(
        status(&fails),
        CacheStatus::NotCacheable,
        "500 is not stored"
    );
    for path in ["/items", "/items/2"] {
        let r = (&mut client).oneshot(get_full(path)).await.unwrap();
        assert_eq!(
            status(&r),
            CacheStatus::Hit,
            "{path} cached before the POST"
        );
    }

    let post = Request::post(origin.url("/items"))
        .body(Full::new(Bytes::from("new")))
        .unwrap();
    let r = (&mut client).oneshot(post).await.unwrap();
    assert_eq!(r.status(), 201);
    // Both the target and the same-origin Location are gone; the other origin is not touched.
    for path in ["/items", "/items/2"] {
        let r = (&mut client).oneshot(get_full(path)).await.unwrap();
        assert_eq!(
            status(&r),
            CacheStatus::Miss,
            "{path} invalidated by the POST"
        );
        drop(http_body_util::BodyExt::collect(r.into_body()).await);
    }
    // An error response to an unsafe request invalidates nothing.
    let r = (&mut client).oneshot(get_full("/items")).await.unwrap();
    drop(http_body_util::BodyExt::collect(r.into_body()).await);
    let failing = Request::post(origin.url("/items"))
        .header("x-fail", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!((&mut client).oneshot(failing).await.unwrap().status(), 500);
    let r = (&mut client).oneshot(get_full("/items")).await.unwrap();
    assert_eq!(
        status(&r),
        CacheStatus::Hit,
        "a 500 to a POST invalidates nothing"
    );
    // PUT and DELETE invalidate like POST.
    for method in ["PUT", "DELETE"] {
        let r = (&mut client).oneshot(get_full("/items")).await.unwrap();
        assert_eq!(status(&r), CacheStatus::Hit);
        let req = Request::builder()
            .method(method)
            .uri(origin.url("/items"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        (&mut client).oneshot(req).await.unwrap();
        let r = (&mut client).oneshot(get_full("/items")).await.unwrap();
        assert_eq!(status(&r), CacheStatus::Miss, "{method} invalidates");
        drop(http_body_util::BodyExt::collect(r.into_body()).await);
    }
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified_and_other_statuses() {
    let clock = clock();
    let last_modified = httpdate::fmt_http_date(epoch() - Duration::from_secs(1000));
    let date = httpdate::fmt_http_date(epoch());
    let origin = Origin::start(move |s| {
        let mut r = Response::builder()
            .header("date", date.as_str())
            .header("last-modified", last_modified.as_str());
        if s.uri.path() == "/gone" {
            r = r.status(404).header("cache-control", "max-age=30");
        }
        r.body(Full::new(Bytes::from_static(b"x"))).unwrap()
    })
    .await;
    let mut client = cached_client(
        CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone())).clock(clock.clone()),
    );
    let (page, gone) = (origin.url("/page"), origin.url("/gone"));
    assert_eq!(
        get(&mut client, &page).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(get(&mut client, &gone).await.unwrap().status, 404);
    clock.advance(Duration::from_secs(29));
    let cached_404 = get(&mut client, &gone).await.unwrap();
    assert_eq!(
        (cached_404.cache, cached_404.status.as_u16()),
        (Some(CacheStatus::Hit), 404)
    );
    // 10% of the 1000 s since Last-Modified: fresh for 100 s.
    clock.advance(Duration::from_secs(70));
    assert_eq!(
        get(&mut client, &page).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    clock.advance(Duration::from_secs(1));
    assert_ne!(
        get(&mut client, &page).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
}

#[tokio::test]
#[allow(deprecated)] // `surrogate` stays for one release (RFC 9213 targeted fields replace it).
async fn as_a_surrogate_the_cache_announces_itself_and_obeys_surrogate_control() {
    let origin = Origin::start(|s| {
        let targeted = s.headers.contains_key("surrogate-capability");
        Response::builder()
            .header("cache-control", "max-age=1")
            .header(
                "surrogate-control",
                if targeted {
                    "max-age=600;edge"
                } else {
                    "max-age=0"
                },
            )
            .body(Full::new(Bytes::from_static(b"s")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let layer = |surrogate: bool| {
        let l =
            CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone())).clock(clock.clone());
        if surrogate {
            l.surrogate("edge")
        } else {
            l
        }
    };
    let mut edge = cached_client(layer(true));
    let url = origin.url("/sc");
    get(&mut edge, &url).await.unwrap();
    assert_eq!(
        origin.seen()[0].headers["surrogate-capability"],
        "edge=\"Surrogate/1.0\""
    );
    clock.advance(Duration::from_secs(300));
    assert_eq!(
        get(&mut edge, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );

    // A plain client cache ignores Surrogate-Control and adds nothing to requests.
    let mut plain = cached_client(layer(false));
    let other = origin.url("/plain");
    get(&mut plain, &other).await.unwrap();
    assert!(!origin
        .seen()
        .last()
        .unwrap()
        .headers
        .contains_key("surrogate-capability"));
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        get(&mut plain, &other).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
}

#[tokio::test]
async fn several_vary_variants_coexist_and_invalidation_removes_them_all() {
    let origin = Origin::start(|s| {
        let lang = s
            .headers
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_owned());
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("vary", "Accept-Language")
            .body(Full::new(Bytes::from(format!(
                "{} in {}",
                s.method,
                lang.unwrap_or_default()
            ))))
            .unwrap()
    })
    .await;
    let mut client = full_body_client(CacheLayer::new(MemoryStore::default()));
    let url = origin.url("/greeting");
    type Client = hyper_client_cache::Cache<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
        MemoryStore,
    >;
    async fn fetch_as(client: &mut Client, url: &str, lang: &str) -> (CacheStatus, Bytes) {
        use tower::ServiceExt;
        let request = Request::get(url)
            .header("accept-language", lang)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.oneshot(request).await.unwrap();
        let status = *response.extensions().get::<CacheStatus>().unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, body)
    }
    macro_rules! fetch {
        ($lang:expr) => {
            fetch_as(&mut client, &url, $lang)
        };
    }
    use tower::ServiceExt;
    assert_eq!(fetch!("en").await.0, CacheStatus::Miss);
    assert_eq!(fetch!("fr").await.0, CacheStatus::Miss);
    assert_eq!(
        fetch!("en").await,
        (CacheStatus::Hit, Bytes::from("GET in en"))
    );
    assert_eq!(
        fetch!("fr").await,
        (CacheStatus::Hit, Bytes::from("GET in fr"))
    );
    assert_eq!(fetch!("de").await.0, CacheStatus::Miss);
    assert_eq!(fetch!("en").await.0, CacheStatus::Hit);
    assert_eq!(origin.requests(), 3);

    // An unsafe request invalidates every variant (§4.4), not only the one under the URL's key.
    let post = Request::post(&url).body(Full::new(Bytes::new())).unwrap();
    (&mut client).oneshot(post).await.unwrap();
    assert_eq!(fetch!("en").await.0, CacheStatus::Miss);
    assert_eq!(
        fetch!("fr").await.0,
        CacheStatus::Miss,
        "old variants are unreachable"
    );
}

#[tokio::test]
async fn private_and_shared_caches_differ_on_private_s_maxage_and_authorization() {
    let origin = Origin::start(|s| {
        let cc = match s.uri.path() {
            "/private" => "private, max-age=600",
            "/s-maxage" => "max-age=600, s-maxage=0",
            "/auth" => "max-age=600",
            "/auth-public" => "public, max-age=600",
            _ => "max-age=600",
        };
        Response::builder()
            .header("cache-control", cc)
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let authorized = |url: String| {
        Request::get(url)
            .header("authorization", "Bearer T")
            .body(Empty::new())
            .unwrap()
    };
    for shared in [false, true] {
        let mut client = cached_client(CacheLayer::new(MemoryStore::default()).shared(shared));
        // Sends the same request twice; the cache status of the second.
        macro_rules! second {
            ($path:expr) => {{
                let url = origin.url($path);
                {
                    if $path.starts_with("/auth") {
                        send(&mut client, authorized(url.clone())).await.unwrap();
                    } else {
                        get(&mut client, &url).await.unwrap();
                    }
                }
                if $path.starts_with("/auth") {
                    send(&mut client, authorized(url)).await.unwrap().cache
                } else {
                    get(&mut client, &url).await.unwrap().cache
                }
            }};
        }
        let hit = Some(CacheStatus::Hit);
        // §5.2.2.7: private is stored by a private cache only.
        assert_eq!(
            second!("/private") == hit,
            !shared,
            "private, shared={shared}"
        );
        // §5.2.2.10: s-maxage=0 makes it stale for a shared cache only.
        assert_eq!(
            second!("/s-maxage") == hit,
            !shared,
            "s-maxage, shared={shared}"
        );
        // §3.5: a response to an authorized request needs public (or s-maxage, must-revalidate)
        // to be stored by a shared cache.
        assert_eq!(
            second!("/auth") == hit,
            !shared,
            "authorization, shared={shared}"
        );
        assert_eq!(second!("/auth-public"), hit, "public, shared={shared}");
    }
}
