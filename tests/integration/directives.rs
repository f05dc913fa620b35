//! RFC 9213 targeted fields, qualified `no-cache` / `private`, `Age` and date leniency, through
//! the layer and a real origin.

use bytes::Bytes;
use http::{HeaderName, Response};
use http_body_util::Full;
use hyper_client_cache::{CacheLayer, CacheStatus, CDN_CACHE_CONTROL};

use crate::common::*;

/// An origin answering every path with the header lines the path names (`/h?name=value&...`),
/// so that each test sends exactly the fields it is about.
async fn echo_origin() -> Origin {
    Origin::start(|s| {
        let mut b = Response::builder();
        for pair in s
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap();
            let value = percent_decode(value);
            b = b.header(name, value);
        }
        b.body(Full::new(Bytes::from_static(b"body"))).unwrap()
    })
    .await
}

fn percent_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

/// Two GETs of `path` a second apart, on a fresh shared cache built by `layer`: whether the
/// second is a hit.
async fn second_is_hit(
    layer: impl Fn(
        &hyper_client_cache::ManualClock,
    ) -> hyper_client_cache::CacheLayer<hyper_client_cache::MemoryStore>,
    query: &str,
) -> bool {
    let origin = echo_origin().await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url(&format!("/h?{query}"));
    get(&mut client, &url).await.unwrap();
    clock.advance(secs(2));
    get(&mut client, &url).await.unwrap().cache == Some(CacheStatus::Hit)
}

fn cdn(
    clock: &hyper_client_cache::ManualClock,
) -> hyper_client_cache::CacheLayer<hyper_client_cache::MemoryStore> {
    unsigned_layer(clock).shared(true).cdn_cache_control()
}

#[tokio::test]
async fn cdn_cache_control_takes_precedence_over_cache_control_and_expires() {
    // RFC 9213 §2.1, the suite's cdn-* cases.
    let cases: &[(&str, bool)] = &[
        ("cdn-cache-control=max-age%3D3600", true),
        (
            "cache-control=no-store&cdn-cache-control=max-age%3D3600",
            true,
        ),
        (
            "cache-control=max-age%3D3600&cdn-cache-control=max-age%3D1",
            false,
        ),
        (
            "cache-control=max-age%3D1&cdn-cache-control=max-age%3D3600",
            true,
        ),
        (
            "cache-control=max-age%3D3600&cdn-cache-control=private",
            false,
        ),
        (
            "cache-control=max-age%3D3600&cdn-cache-control=no-store",
            false,
        ),
        (
            "cache-control=max-age%3D3600&cdn-cache-control=no-cache",
            false,
        ),
        (
            "cdn-cache-control=max-age%3D0&expires=Thu,%2001%20Jan%202099%2000:00:00%20GMT",
            false,
        ),
        ("cdn-cache-control=max-age%3D3600&expires=0", true),
        ("cdn-cache-control=max-age%3D3600&age=7200", false),
        // Invalid targeted fields are ignored: Cache-Control applies.
        (
            "cdn-cache-control=max-age%3D10000,%20%26%26&cache-control=no-store",
            false,
        ),
        (
            "cdn-cache-control=max-age%3D%2210000%22&cache-control=no-store",
            false,
        ),
        (
            "cdn-cache-control=max-age%20%3D100&cache-control=max-age%3D1",
            false,
        ),
        (
            "cdn-cache-control=max-age%3D%20100&cache-control=max-age%3D3600",
            true,
        ),
    ];
    for (query, hit) in cases {
        assert_eq!(second_is_hit(cdn, query).await, *hit, "{query}");
    }
}

#[tokio::test]
async fn targeted_fields_are_obeyed_only_by_a_cache_that_opts_in_in_list_order() {
    let query = "cache-control=no-store&cdn-cache-control=max-age%3D3600";
    // Not opted in: CDN-Cache-Control means nothing, no-store applies.
    assert!(!second_is_hit(|c| unsigned_layer(c).shared(true), query).await);
    // A product's own field first, then CDN-Cache-Control.
    let foo = HeaderName::from_static("foo-cache-control");
    let list = move |c: &hyper_client_cache::ManualClock| {
        unsigned_layer(c)
            .shared(true)
            .targeted_fields([foo.clone(), CDN_CACHE_CONTROL])
    };
    assert!(second_is_hit(list.clone(), query).await);
    assert!(
        !second_is_hit(list.clone(), &format!("{query}&foo-cache-control=no-store")).await,
        "the first field of the list wins"
    );
    assert!(
        second_is_hit(list.clone(), &format!("{query}&foo-cache-control=%26%26")).await,
        "an invalid first field falls through to the next"
    );
    // An empty list turns them off again.
    assert!(!second_is_hit(|c| cdn(c).targeted_fields([]), query).await);
}

#[tokio::test]
async fn qualified_no_cache_and_private_leave_out_only_the_fields_they_name() {
    // RFC 9111 §5.2.2.4 / §5.2.2.7: reused without revalidation, minus the named fields.
    let origin = echo_origin().await;
    let clock = clock();
    let mut client = cached_client(unsigned_layer(&clock).shared(true));
    let url = origin.url(
        "/h?cache-control=no-cache%3D%22a%22,%20private%3D%22b%22&cache-control=max-age%3D3600&a=1&b=2&c=3",
    );
    let first = get(&mut client, &url).await.unwrap();
    assert_eq!(
        first.headers["a"], "1",
        "the origin's own answer is passed on whole"
    );
    clock.advance(secs(10));
    let hit = get(&mut client, &url).await.unwrap();
    assert_eq!(hit.cache, Some(CacheStatus::Hit));
    assert!(!hit.headers.contains_key("a") && !hit.headers.contains_key("b"));
    assert_eq!(hit.headers["c"], "3");
    assert_eq!(origin.requests(), 1);

    // A private cache keeps `private="b"` fields (they are for this user), not `no-cache="a"`.
    let mut client = cached_client(unsigned_layer(&clock));
    let url = format!("{url}&x=private");
    get(&mut client, &url).await.unwrap();
    let hit = get(&mut client, &url).await.unwrap();
    assert_eq!(hit.cache, Some(CacheStatus::Hit));
    assert!(!hit.headers.contains_key("a"));
    assert_eq!(hit.headers["b"], "2");
}

#[tokio::test]
async fn age_uses_the_first_member_and_ignores_invalid_values() {
    // RFC 9111 §5.1, the suite's age-parse cases (max-age=3600, Age as given).
    let cases: &[(&str, bool)] = &[
        ("age=abc", true),
        ("age=-7200", true),
        ("age=7200.0", true),
        ("age=0,%207200", true),
        ("age=0&age=7200", true),
        ("age=7200,%200", false),
        ("age=7200&age=0", false),
        ("age=2147483648", false),
    ];
    for (query, hit) in cases {
        let query = format!("cache-control=max-age%3D3600&{query}");
        assert_eq!(second_is_hit(unsigned_layer, &query).await, *hit, "{query}");
    }
}

#[tokio::test]
async fn dates_are_read_case_insensitively_whatever_their_day_name() {
    // RFC 9111 §4.2; an invalid Expires still means "already expired" (§5.3).
    let cases: &[(&str, bool)] = &[
        ("THU,%2018%20Aug%202050%2002:01:18%20GMT", true),
        ("Thu,%2018%20AUG%202050%2002:01:18%20gMT", true),
        ("Mon,%2018%20Aug%202050%2002:01:18%20GMT", true),
        ("Thu%20Aug%20%208%2002:01:18%202050", true),
        ("Thu,%2018%20Aug%202050%2002:01:18%20UTC", false),
        ("Thu,%2018%20Aug%2050%2002:01:18%20GMT", false),
        ("Thu,%2018%20Aug%202050%202:01:18%20GMT", false),
    ];
    for (expires, hit) in cases {
        let query = format!("expires={expires}");
        assert_eq!(
            second_is_hit(unsigned_layer, &query).await,
            *hit,
            "{expires}"
        );
    }
}

#[tokio::test]
async fn a_post_response_naming_its_target_answers_later_gets() {
    use tower::{Service, ServiceExt};
    // RFC 9110 §9.3.3: explicit freshness and a Content-Location equal to the target.
    let origin = Origin::start(|s| {
        let path = s.uri.path();
        let mut b = Response::builder().header("x-method", s.method.as_str());
        if s.method == http::Method::POST {
            b = match path {
                "/a" | "/e" => b
                    .header("cache-control", "max-age=60")
                    .header("content-location", path),
                "/b" => b.header("cache-control", "max-age=60"),
                "/c" => b
                    .header("cache-control", "max-age=60")
                    .header("content-location", "/other"),
                "/d" => b
                    .header("last-modified", "Tue, 14 Nov 2023 20:00:00 GMT")
                    .header("content-location", path),
                _ => b,
            };
            if path == "/e" {
                b = b.status(500);
            }
        }
        b.body(Full::new(Bytes::from_static(b"answer"))).unwrap()
    })
    .await;
    let clock = clock();
    let mut client = full_body_client(layer(&clock));
    for (path, reused) in [
        ("/a", true),
        ("/b", false),
        ("/c", false),
        ("/d", false),
        ("/e", false),
    ] {
        let url = origin.url(path);
        let post = http::Request::post(&url)
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let answer = client.ready().await.unwrap().call(post).await.unwrap();
        // The entry is written when the body has been read.
        http_body_util::BodyExt::collect(answer.into_body())
            .await
            .unwrap();
        let get = http::Request::get(&url)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = client.ready().await.unwrap().call(get).await.unwrap();
        let hit = got.extensions().get::<CacheStatus>() == Some(&CacheStatus::Hit);
        assert_eq!(hit, reused, "{path}");
        if reused {
            assert_eq!(
                got.headers()["x-method"],
                "POST",
                "the POST's response answered"
            );
        }
    }
    // A POST itself is never answered from the cache.
    let before = origin.requests();
    let post = http::Request::post(origin.url("/a"))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    client.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(origin.requests(), before + 1);
}

#[tokio::test]
async fn public_makes_any_status_heuristically_fresh() {
    // RFC 9111 §5.2.2.9: "If a response with the public directive has no explicit freshness
    // information, it is heuristically cacheable" (the suite's heuristic-599-cached).
    let origin = Origin::start(|s| {
        let public = s.uri.query().is_some_and(|q| q.contains("public"));
        let mut b = Response::builder()
            .status(599)
            .header("last-modified", "Tue, 01 Nov 2022 00:00:00 GMT");
        if public {
            b = b.header("cache-control", "public");
        }
        b.body(Full::new(Bytes::from_static(b"odd"))).unwrap()
    })
    .await;
    let clock = clock();
    let mut client = cached_client(unsigned_layer(&clock).shared(true));
    for (query, hit) in [("?public", true), ("?plain", false)] {
        let url = origin.url(&format!("/x{query}"));
        get(&mut client, &url).await.unwrap();
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(got.cache == Some(CacheStatus::Hit), hit, "{query}");
    }
}

#[tokio::test]
async fn accept_language_variants_match_whatever_the_order_of_weights_and_ties_only_if_asked() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("vary", "accept-language")
            .body(Full::new(Bytes::from_static(b"hallo")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut client = cached_client(unsigned_layer(&clock));
    let url = origin.url("/lang");
    let with = |lang: &str| {
        http::Request::get(&url)
            .header("accept-language", lang)
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    send(&mut client, with("en, de;q=0.5")).await.unwrap();
    for (lang, hit) in [
        ("de;q=0.50, EN", true),
        ("en;q=1.0,de;q=0.500", true),
        ("de, en;q=0.5", false),
        ("en", false),
    ] {
        let got = send(&mut client, with(lang)).await.unwrap();
        assert_eq!(got.cache == Some(CacheStatus::Hit), hit, "{lang}");
    }
    // Members of equal weight in another order: another variant by default (negotiators break
    // ties by order), the same one with `accept_language_ties(true)`.
    for (ties, hit) in [(false, false), (true, true)] {
        let mut client = cached_client(unsigned_layer(&clock).accept_language_ties(ties));
        let url = origin.url(&format!("/ties-{ties}"));
        let with = |lang: &str| {
            http::Request::get(&url)
                .header("accept-language", lang)
                .body(http_body_util::Empty::new())
                .unwrap()
        };
        send(&mut client, with("en, de")).await.unwrap();
        let got = send(&mut client, with("de, en")).await.unwrap();
        assert_eq!(got.cache == Some(CacheStatus::Hit), hit, "ties={ties}");
    }
}

/// A hit judges an entry by the freshness inputs sealed in it (no parsing again), but only
/// under the rules that computed them: a layer with other rules (private where the writer was
/// shared, another target list) sharing the store judges it by the stored headers, under its own.
#[tokio::test]
async fn sealed_freshness_inputs_apply_only_under_the_rules_that_computed_them() {
    let origin = echo_origin().await;
    let store = hyper_client_cache::MemoryStore::default();
    // Fresh for ten minutes to a shared cache, stale at once to a private one (§5.2.2.10).
    let url = origin.url("/h?cache-control=max-age%3D0%2C%20s-maxage%3D600");
    let mut shared = cached_client(CacheLayer::new(store.clone()).shared(true));
    assert_eq!(
        get(&mut shared, &url).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(
        get(&mut shared, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    let mut private = cached_client(CacheLayer::new(store.clone()));
    assert_ne!(
        get(&mut private, &url).await.unwrap().cache,
        Some(CacheStatus::Hit),
        "a private cache applied the shared writer's lifetime"
    );
    // The other way: written by a CDN-Cache-Control cache, read by one that ignores it.
    let url = origin.url("/h?cache-control=no-cache&cdn-cache-control=max-age%3D600");
    let mut cdn_layer = cached_client(
        CacheLayer::new(store.clone())
            .shared(true)
            .cdn_cache_control(),
    );
    assert_eq!(
        get(&mut cdn_layer, &url).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(
        get(&mut cdn_layer, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    let mut plain = cached_client(CacheLayer::new(store).shared(true));
    assert_ne!(
        get(&mut plain, &url).await.unwrap().cache,
        Some(CacheStatus::Hit),
        "a cache without the target list applied the CDN-Cache-Control lifetime"
    );
}
