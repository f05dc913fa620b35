//! Range requests and partial content (RFC 9110 §14, RFC 9111 §3.3–§3.4) through the layer.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper_client_cache::CacheStatus;

use crate::common::*;

const BODY: &[u8] = b"0123456789";

/// An origin for `BODY` with a strong ETag and `max-age=3600` that honours one byte range
/// (`a-b`, `a-`, `-n`) with a 206, and answers anything else (several ranges, none) with the
/// whole body.
async fn ranged_origin(etag: &'static str) -> Origin {
    Origin::start(move |s| {
        let b = Response::builder()
            .header("cache-control", "max-age=3600")
            .header("etag", etag);
        let range = s.headers.get("range").and_then(|v| v.to_str().ok());
        let spec = range
            .and_then(|r| r.strip_prefix("bytes="))
            .filter(|r| !r.contains(','));
        let Some((first, last)) = spec.and_then(|r| r.split_once('-')) else {
            return b.body(Full::new(Bytes::from_static(BODY))).unwrap();
        };
        let n = BODY.len();
        let (first, last) = match (first.parse::<usize>().ok(), last.parse::<usize>().ok()) {
            (Some(f), Some(l)) => (f, l.min(n - 1)),
            (Some(f), None) => (f, n - 1),
            (None, Some(suffix)) => (n - suffix, n - 1),
            _ => unreachable!(),
        };
        b.status(206)
            .header("content-range", format!("bytes {first}-{last}/{n}"))
            .body(Full::new(Bytes::copy_from_slice(&BODY[first..=last])))
            .unwrap()
    })
    .await
}

fn ranged(url: &str, range: &str) -> Request<Empty<Bytes>> {
    Request::get(url)
        .header("range", range)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn a_stored_complete_response_answers_single_ranges_with_206() {
    let origin = ranged_origin("\"r1\"").await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/r");
    assert_eq!(get(&mut client, &url).await.unwrap().body, BODY);
    for (range, body, content_range) in [
        ("bytes=0-1", &b"01"[..], "bytes 0-1/10"),
        ("bytes=1-", b"123456789", "bytes 1-9/10"),
        ("bytes=-1", b"9", "bytes 9-9/10"),
        ("bytes=-50", BODY, "bytes 0-9/10"),
        ("bytes=5-500", b"56789", "bytes 5-9/10"),
        ("BYTES=3-3", b"3", "bytes 3-3/10"),
    ] {
        let got = send(&mut client, ranged(&url, range)).await.unwrap();
        assert_eq!(got.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(got.cache, Some(CacheStatus::Hit), "{range}");
        assert_eq!(got.body, body, "{range}");
        assert_eq!(got.headers["content-range"], content_range, "{range}");
        assert_eq!(
            got.headers["content-length"],
            body.len().to_string().as_str()
        );
        assert_eq!(got.headers["etag"], "\"r1\"");
    }
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn unsatisfiable_ranges_get_416_and_unreadable_ones_the_whole_response() {
    let origin = ranged_origin("\"r1\"").await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/r");
    get(&mut client, &url).await.unwrap();
    for range in ["bytes=10-", "bytes=99999999999999999999999-", "bytes=-0"] {
        let got = send(&mut client, ranged(&url, range)).await.unwrap();
        assert_eq!(got.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(got.headers["content-range"], "bytes */10");
        assert!(got.body.is_empty());
        assert_eq!(got.cache, Some(CacheStatus::Hit));
    }
    // RFC 9110 §14.2: a Range the cache cannot read is ignored.
    for range in ["items=0-1", "bytes=5-1", "bytes=x-y", "bytes=-"] {
        let got = send(&mut client, ranged(&url, range)).await.unwrap();
        assert_eq!(got.status, StatusCode::OK, "{range}");
        assert_eq!(got.body, BODY, "{range}");
        assert_eq!(got.cache, Some(CacheStatus::Hit));
    }
    // A HEAD ignores Range (§14.2: only GET defines it).
    let head = Request::head(&url)
        .header("range", "bytes=0-1")
        .body(Empty::new())
        .unwrap();
    let got = send(&mut client, head).await.unwrap();
    assert_eq!((got.status, got.body.len()), (StatusCode::OK, 0));
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn several_ranges_go_to_the_origin() {
    let origin = ranged_origin("\"r1\"").await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/r");
    get(&mut client, &url).await.unwrap();
    let got = send(&mut client, ranged(&url, "bytes=0-1, 4-5"))
        .await
        .unwrap();
    assert_ne!(got.cache, Some(CacheStatus::Hit));
    assert_eq!(origin.requests(), 2);
    assert_eq!(origin.seen()[1].headers["range"], "bytes=0-1, 4-5");
}

#[tokio::test]
async fn if_range_serves_the_range_only_when_the_strong_validator_matches() {
    let origin = ranged_origin("\"r1\"").await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/r");
    get(&mut client, &url).await.unwrap();
    let with = |if_range: &str| {
        Request::get(&url)
            .header("range", "bytes=0-1")
            .header("if-range", if_range)
            .body(Empty::new())
            .unwrap()
    };
    let got = send(&mut client, with("\"r1\"")).await.unwrap();
    assert_eq!(
        (got.status, &got.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"01"[..])
    );
    // §13.1.5: otherwise the whole representation.
    for other in [
        "\"r2\"",
        "W/\"r1\"",
        "Tue, 14 Nov 2023 20:00:00 GMT",
        "garbage",
    ] {
        let got = send(&mut client, with(other)).await.unwrap();
        assert_eq!(
            (got.status, &got.body[..]),
            (StatusCode::OK, BODY),
            "{other}"
        );
        assert_eq!(got.cache, Some(CacheStatus::Hit), "{other}");
    }
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn partial_responses_are_stored_reused_within_their_range_and_combined() {
    let origin = ranged_origin("\"r1\"").await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/p");
    let first = send(&mut client, ranged(&url, "bytes=0-4")).await.unwrap();
    assert_eq!(
        (first.status, &first.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"01234"[..])
    );
    // Within what is stored: from the cache.
    let got = send(&mut client, ranged(&url, "bytes=1-3")).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Hit));
    assert_eq!(
        (got.status, &got.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"123"[..])
    );
    assert_eq!(got.headers["content-range"], "bytes 1-3/10");
    assert_eq!(origin.requests(), 1);
    // A range it does not hold whole: forwarded, and the answer combined with what is stored.
    let got = send(&mut client, ranged(&url, "bytes=3-7")).await.unwrap();
    assert_ne!(
        got.cache,
        Some(CacheStatus::Hit),
        "not held whole: forwarded"
    );
    assert_eq!(&got.body[..], b"34567");
    assert_eq!(origin.requests(), 2);
    // 0-4 and 3-7 combined (same strong ETag, overlapping): 0-7 now answers.
    let got = send(&mut client, ranged(&url, "bytes=2-6")).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Hit));
    assert_eq!(&got.body[..], b"23456");
    // The rest: combined into the whole representation, a complete 200 under the URL's name.
    send(&mut client, ranged(&url, "bytes=8-")).await.unwrap();
    assert_eq!(origin.requests(), 3);
    let whole = get(&mut client, &url).await.unwrap();
    assert_eq!(whole.cache, Some(CacheStatus::Hit));
    assert_eq!((whole.status, &whole.body[..]), (StatusCode::OK, BODY));
    assert_eq!(whole.headers["content-length"], "10");
    assert!(!whole.headers.contains_key("content-range"));
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn an_incomplete_entry_never_answers_a_whole_request_or_another_representation() {
    let origin = ranged_origin("\"r1\"").await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/p");
    send(&mut client, ranged(&url, "bytes=0-4")).await.unwrap();
    let whole = get(&mut client, &url).await.unwrap();
    assert_ne!(whole.cache, Some(CacheStatus::Hit));
    assert_eq!((whole.status, &whole.body[..]), (StatusCode::OK, BODY));
    assert_eq!(origin.requests(), 2);

    // Other ETags: not combined (§3.4); each new part replaces the stored one.
    let other = Origin::start({
        let n = std::sync::atomic::AtomicUsize::new(0);
        move |s| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (range, part): (&str, &[u8]) = match s.headers.get("range") {
                Some(r) if r == "bytes=0-4" => ("bytes 0-4/10", b"01234"),
                Some(_) => ("bytes 5-9/10", b"56789"),
                None => {
                    return Response::builder()
                        .header("cache-control", "no-store")
                        .body(Full::new(Bytes::from_static(BODY)))
                        .unwrap()
                }
            };
            Response::builder()
                .status(206)
                .header("cache-control", "max-age=3600")
                .header("etag", format!("\"v{i}\""))
                .header("content-range", range)
                .body(Full::new(Bytes::copy_from_slice(part)))
                .unwrap()
        }
    })
    .await;
    let url = other.url("/o");
    send(&mut client, ranged(&url, "bytes=0-4")).await.unwrap();
    send(&mut client, ranged(&url, "bytes=5-9")).await.unwrap();
    let whole = get(&mut client, &url).await.unwrap();
    assert_ne!(
        whole.cache,
        Some(CacheStatus::Hit),
        "never combined across ETags"
    );
    let got = send(&mut client, ranged(&url, "bytes=5-9")).await.unwrap();
    assert_eq!(
        got.cache,
        Some(CacheStatus::Hit),
        "the newer part is the one kept"
    );
    let got = send(&mut client, ranged(&url, "bytes=0-4")).await.unwrap();
    assert_ne!(got.cache, Some(CacheStatus::Hit));
}

#[tokio::test]
async fn a_partial_response_that_is_not_what_it_says_is_not_stored() {
    // The suite's partial-store-partial-* tests send "bytes 4-9/10" with five bytes.
    let origin = Origin::start(|_| {
        Response::builder()
            .status(206)
            .header("cache-control", "max-age=3600")
            .header("content-range", "bytes 4-9/10")
            .body(Full::new(Bytes::from_static(b"01234")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut client = cached_client(layer(&clock));
    let url = origin.url("/bad");
    let got = send(&mut client, ranged(&url, "bytes=-5")).await.unwrap();
    assert_eq!(got.body, &b"01234"[..], "passed through untouched");
    assert!(got.not_stored.is_some());
    send(&mut client, ranged(&url, "bytes=-5")).await.unwrap();
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn an_unsafe_request_invalidates_the_incomplete_entry_too() {
    let origin = ranged_origin("\"r1\"").await;
    let clock = clock();
    let mut client = full_body_client(layer(&clock));
    let url = origin.url("/p");
    let range = |url: &str| {
        Request::get(url)
            .header("range", "bytes=0-4")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    use tower::{Service, ServiceExt};
    client
        .ready()
        .await
        .unwrap()
        .call(range(&url))
        .await
        .unwrap();
    let post = Request::post(&url)
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    client.ready().await.unwrap().call(post).await.unwrap();
    let again = client
        .ready()
        .await
        .unwrap()
        .call(range(&url))
        .await
        .unwrap();
    assert_ne!(
        again.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(origin.requests(), 3);
}

/// Review: two parts of `BODY` stored one after the other (every pair of a spread of ranges),
/// through an encrypting layer: whatever the cache serves afterwards is `BODY`'s bytes, and the
/// union of two parts that meet answers from the cache.
#[tokio::test]
async fn every_pair_of_parts_combines_into_the_right_bytes() {
    let origin = ranged_origin("\"r1\"").await;
    let mut client = cached_client(
        hyper_client_cache::CacheLayer::new(hyper_client_cache::MemoryStore::default())
            .encrypt(test_key()),
    );
    let points = [0usize, 2, 3, 4, 5, 7, 9];
    let ranges: Vec<(usize, usize)> = points
        .iter()
        .flat_map(|&f| {
            points
                .iter()
                .filter(move |&&l| l >= f)
                .map(move |&l| (f, l))
        })
        .collect();
    let mut n = 0;
    for &(af, al) in &ranges {
        for &(bf, bl) in &ranges {
            n += 1;
            let url = origin.url(&format!("/pair{n}"));
            for (f, l) in [(af, al), (bf, bl)] {
                let got = send(&mut client, ranged(&url, &format!("bytes={f}-{l}")))
                    .await
                    .unwrap();
                assert_eq!(&got.body[..], &BODY[f..=l]);
            }
            if af <= bl + 1 && bf <= al + 1 {
                let (uf, ul) = (af.min(bf), al.max(bl));
                let got = send(&mut client, ranged(&url, &format!("bytes={uf}-{ul}")))
                    .await
                    .unwrap();
                assert_eq!(got.cache, Some(CacheStatus::Hit), "{af}-{al} + {bf}-{bl}");
                assert_eq!(&got.body[..], &BODY[uf..=ul], "{af}-{al} + {bf}-{bl}");
            }
        }
    }
}
