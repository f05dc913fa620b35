//! Encryption at rest and credentials, through the full layer.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{BadSignature, CacheLayer, CacheStatus, MemoryStore};

use crate::common::*;

/// An origin that echoes what it was sent, so a careless cache would store the secrets.
async fn echo_origin() -> Origin {
    Origin::start(|s| {
        let auth = s
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("vary", "Authorization")
            .body(Full::new(Bytes::from(format!(
                "hello {}",
                if auth.is_some() { "user" } else { "anon" }
            ))))
            .unwrap()
    })
    .await
}

async fn dump_contains(store: &MemoryStore, needle: &[u8]) -> bool {
    let blobs = all_blobs(store).await;
    assert!(!blobs.is_empty(), "the test must store something");
    blobs
        .iter()
        .any(|b| b.windows(needle.len()).any(|w| w == needle))
}

#[tokio::test]
async fn credentials_never_reach_the_store_in_any_mode() {
    for mode in ["unsigned", "signed", "encrypted"] {
        let origin = echo_origin().await;
        let store = MemoryStore::default();
        let layer = CacheLayer::new(store.clone()).ignored_parameters(["api_key"]);
        let layer = match mode {
            "signed" => layer.secret_key(test_key()),
            "encrypted" => layer.encrypt(test_key()),
            _ => layer,
        };
        let mut client = cached_client(layer);
        for url in [
            origin.url("/me?api_key=SECRET&page=1"),
            origin.url("/me?page=2&token=SECRET"),
            // Userinfo, and redacted / ignored names percent-encoded or in another case.
            format!("http://user:SECRET@{}/me?page=3", origin.addr),
            origin.url("/me?ACCESS%5FTOKEN=SECRET&page=4"),
            origin.url("/me?api%5Fkey=SECRET&page=5"),
        ] {
            let req = Request::get(url)
                .header("authorization", "Bearer SECRET")
                .header("cookie", "session=SECRET")
                .body(Empty::new())
                .unwrap();
            send(&mut client, req).await.unwrap();
        }
        assert!(
            !dump_contains(&store, b"SECRET").await,
            "{mode}: SECRET in the store"
        );
        // The ignored parameter really is out of the key: another api_key hits.
        let req = Request::get(origin.url("/me?api_key=OTHER&page=1"))
            .header("authorization", "Bearer SECRET")
            .body(Empty::new())
            .unwrap();
        assert_eq!(
            send(&mut client, req).await.unwrap().cache,
            Some(CacheStatus::Hit),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn encrypted_store_dump_has_no_response_plaintext() {
    let origin = Origin::fixed("max-age=600", "the quarterly figures").await;
    let store = MemoryStore::default();
    let mut client = cached_client(CacheLayer::new(store.clone()).encrypt(test_key()));
    get(&mut client, &origin.url("/report")).await.unwrap();
    assert_eq!(
        get(&mut client, &origin.url("/report"))
            .await
            .unwrap()
            .cache,
        Some(CacheStatus::Hit)
    );
    assert!(!dump_contains(&store, b"quarterly").await);
    assert!(!dump_contains(&store, b"/report").await);
    assert!(!dump_contains(&store, b"max-age").await);
}

/// Turning encryption on: the signed-only entries written before (same secret) are never
/// served, and are misses, replaced by encrypted entries, not an error on every request.
#[tokio::test]
async fn an_encrypting_cache_never_serves_signed_only_entries_and_replaces_them() {
    let origin = Origin::fixed("max-age=600", "quarterly figures").await;
    let store = MemoryStore::default();
    let url = origin.url("/d");
    let mut signer = cached_client(CacheLayer::new(store.clone()).secret_key(test_key()));
    get(&mut signer, &url).await.unwrap();
    assert!(dump_contains(&store, b"quarterly").await);
    let mut encrypting = cached_client(CacheLayer::new(store.clone()).encrypt(test_key()));
    let got = get(&mut encrypting, &url).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Miss));
    assert_eq!(origin.requests(), 2);
    assert!(
        !dump_contains(&store, b"quarterly").await,
        "replaced by an encrypted entry"
    );
    let again = get(&mut encrypting, &url).await.unwrap();
    assert_eq!(again.cache, Some(CacheStatus::Hit));
}

/// A forged signed-only entry (a tag that does not verify) under an encrypting cache's name is
/// still a bad signature.
#[tokio::test]
async fn an_encrypting_cache_refuses_a_forged_signed_only_entry() {
    let origin = Origin::fixed("max-age=600", "x").await;
    let store = MemoryStore::default();
    let url = origin.url("/forged");
    let mut signer = cached_client(CacheLayer::new(store.clone()).secret_key(test_key()));
    get(&mut signer, &url).await.unwrap();
    let key = CacheLayer::new(store.clone())
        .encrypt(test_key())
        .key_for(&http::Request::get(&url).body(()).unwrap());
    let mut blob = get_raw(&store, key.clone()).await.unwrap().to_vec();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    put_raw(&store, key, Bytes::from(blob)).await;
    let mut encrypting = cached_client(CacheLayer::new(store.clone()).encrypt(test_key()));
    let err = get(&mut encrypting, &url).await.err().expect("refused");
    assert!(err.downcast_ref::<BadSignature>().unwrap().is_mismatch());
}

#[tokio::test]
async fn an_oversized_blob_is_a_miss_and_is_replaced() {
    let origin = Origin::fixed("max-age=600", "small").await;
    let store = MemoryStore::default();
    let url = origin.url("/o");
    put_raw(&store, key_for(&url), Bytes::from(vec![0u8; 2048])).await;
    let mut client = cached_client(
        CacheLayer::new(store.clone())
            .secret_key(test_key())
            .max_blob_size(1024),
    );
    // Not BadSignature (which garbage under the bound would be): refused before verification.
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Miss), &b"small"[..])
    );
    assert!(get_raw(&store, key_for(&url)).await.unwrap().len() < 1024);
}

/// An origin reached through a plain tower service (no HTTP parser limits) sends more header
/// lines than a `HeaderMap` can be built with: the entry is not stored, and no later request
/// panics (it used to be stored, and every hit of it panicked in the decoder).
#[tokio::test]
async fn a_response_with_more_header_fields_than_an_entry_holds_is_not_stored() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::{Service, ServiceBuilder, ServiceExt};

    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let origin = tower::service_fn(move |_req: Request<Empty<Bytes>>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(Full::new(Bytes::from_static(b"many")));
        let headers = response.headers_mut();
        headers.insert(
            "cache-control",
            http::HeaderValue::from_static("max-age=600"),
        );
        for i in 0..24_577u32 {
            headers.append("x-n", http::HeaderValue::from(i));
        }
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let store = MemoryStore::default();
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone()))
        .service(origin);
    for _ in 0..2 {
        let request = Request::get("http://e.com/many")
            .body(Empty::new())
            .unwrap();
        let response = svc.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.headers().get_all("x-n").iter().count(), 24_577);
        let body = http_body_util::BodyExt::collect(response.into_body()).await;
        assert_eq!(body.unwrap().to_bytes(), "many");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "not stored: both requests reach the origin"
    );
    assert!(all_blobs(&store).await.is_empty());
}

/// RFC 9110 §7.2, RFC 9111 §4: the key is the target URI the origin sees. hyper-util sends a
/// caller's own `Host` header, so two virtual hosts behind one address must not share entries.
#[tokio::test]
async fn the_host_header_the_origin_sees_is_part_of_the_key() {
    let origin = Origin::start(|seen| {
        let host = seen.headers.get("host").cloned();
        let host = host.map(|h| h.to_str().unwrap_or("?").to_owned());
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(Full::new(Bytes::from(host.unwrap_or_default())))
            .unwrap()
    })
    .await;
    let store = MemoryStore::default();
    let mut client = cached_client(CacheLayer::new(store.clone()).secret_key(test_key()));
    let url = origin.url("/tenant");
    let for_host = |host: &'static str| {
        Request::get(url.as_str())
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let a = send(&mut client, for_host("tenant-a.example"))
        .await
        .unwrap();
    let b = send(&mut client, for_host("tenant-b.example"))
        .await
        .unwrap();
    assert_eq!(&a.body[..], b"tenant-a.example");
    assert_eq!(
        &b.body[..],
        b"tenant-b.example",
        "tenant b was served tenant a's entry"
    );
    assert_eq!(b.cache, Some(CacheStatus::Miss));
    let again = send(&mut client, for_host("TENANT-A.example"))
        .await
        .unwrap();
    assert_eq!(
        (again.cache, &again.body[..]),
        (Some(CacheStatus::Hit), &b"tenant-a.example"[..])
    );
    // Without a Host header the URI's authority is what the origin sees: an entry of its own.
    let plain = get(&mut client, &url).await.unwrap();
    assert_eq!(plain.cache, Some(CacheStatus::Miss));
    assert_eq!(origin.requests(), 3);
}

/// HTTP/2 carries the authority in `:authority` (the URI); a `Host` equal to it (any case, a
/// default port) keys the same entry, and a `Host` that differs (a malformed request, RFC 9113
/// §8.3.1) never shares one.
#[tokio::test]
async fn http2_requests_are_keyed_by_their_authority_and_never_share_with_a_different_host() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::{Service, ServiceBuilder};

    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let origin = tower::service_fn(move |req: Request<Empty<Bytes>>| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap_or("?").to_owned());
        let body = format!(
            "{n} {}",
            host.unwrap_or_else(|| req.uri().authority().unwrap().to_string())
        );
        let response = Response::builder()
            .header("cache-control", "max-age=600")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(origin);
    let mut fetch = |host: Option<&'static str>| {
        let mut request = Request::get("https://api.example/x")
            .version(http::Version::HTTP_2)
            .body(Empty::new())
            .unwrap();
        if let Some(host) = host {
            request
                .headers_mut()
                .insert("host", http::HeaderValue::from_static(host));
        }
        // `Cache` is always ready (its `poll_ready` returns at once).
        let fut = svc.call(request);
        async move {
            let response = fut.await.unwrap();
            let status = response.extensions().get::<CacheStatus>().copied();
            let body = http_body_util::BodyExt::collect(response.into_body()).await;
            (status, body.unwrap().to_bytes())
        }
    };
    assert_eq!(
        fetch(None).await,
        (Some(CacheStatus::Miss), Bytes::from("0 api.example"))
    );
    assert_eq!(
        fetch(Some("API.example:443")).await,
        (Some(CacheStatus::Hit), Bytes::from("0 api.example"))
    );
    assert_eq!(
        fetch(Some("other.example")).await,
        (Some(CacheStatus::Miss), Bytes::from("1 other.example"))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Replay (docs/security.md): a store writer puts back a blob this cache sealed an hour ago.
/// Under `ForceCache` it is served however stale (so is an entry that an invalidation had
/// deleted); `not_before` bounds that: nothing received before it is ever served.
#[tokio::test]
async fn not_before_bounds_what_a_replayed_entry_can_do() {
    use hyper_client_cache::CacheMode;
    use hyper_client_cache::{StoreRequest, StoreResponse};
    use tower::ServiceExt;

    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let url = origin.url("/replayed");
    let layer = layer(&clock);
    let store = layer.store().clone();
    let mut client = cached_client(layer.clone());
    assert_eq!(&get(&mut client, &url).await.unwrap().body[..], b"v1");
    let old = get_raw(&store, key_for(&url)).await.expect("stored");
    // The entry is removed (an invalidation, an eviction); an hour later it is put back.
    let delete = StoreRequest::Delete { key: key_for(&url) };
    assert!(matches!(
        store.clone().oneshot(delete).await,
        Ok(StoreResponse::Done)
    ));
    clock.advance(secs(3600));
    put_raw(&store, key_for(&url), old.clone()).await;
    let forced = send(&mut client, with_ext(&url, CacheMode::ForceCache))
        .await
        .unwrap();
    assert_eq!(
        (forced.cache, &forced.body[..]),
        (Some(CacheStatus::Stale), &b"v1"[..])
    );

    // The same store, with everything before "now minus a minute" out of bounds.
    let bounded = layer.not_before(hyper_client_cache::Clock::now(&clock) - secs(60));
    let mut client = cached_client(bounded);
    put_raw(&store, key_for(&url), old).await;
    let forced = send(&mut client, with_ext(&url, CacheMode::ForceCache))
        .await
        .unwrap();
    assert_eq!(
        (forced.cache, &forced.body[..]),
        (Some(CacheStatus::Miss), &b"v2"[..])
    );
    // The response that replaced it is newer than the bound: served as usual.
    let again = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (again.cache, &again.body[..]),
        (Some(CacheStatus::Hit), &b"v2"[..])
    );
}

/// Key names are no oracle: with a secret, nobody who can only list the store can confirm a
/// guess of a credential in a URL by computing its key (without one they can: documented).
#[tokio::test]
async fn with_a_secret_key_names_cannot_be_recomputed_from_guesses() {
    use hyper_client_cache::{CacheKey, Inspector};
    let origin = Origin::fixed("max-age=600", "account").await;
    let guesses: Vec<String> = (0..100)
        .map(|pin| origin.url(&format!("/login?password={pin:04}")))
        .collect();
    let names = |inspector: Inspector<MemoryStore>| async move {
        inspector
            .entries()
            .await
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.key)
            .collect::<Vec<_>>()
    };
    let guessed: Vec<CacheKey> = guesses.iter().map(|u| unsigned_key_for(u)).collect();

    let signed = CacheLayer::new(MemoryStore::default()).secret_key(test_key());
    let mut client = cached_client(signed.clone());
    get(&mut client, &origin.url("/login?password=0042"))
        .await
        .unwrap();
    let stored = names(signed.inspector()).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].as_str().starts_with("hcc1k:"), "{}", stored[0]);
    assert!(
        !guessed.contains(&stored[0]),
        "the PIN was confirmed from the key name"
    );

    // Without a secret the name is a plain digest: the guess is confirmed (docs/security.md).
    let plain = CacheLayer::new(MemoryStore::default());
    let mut client = cached_client(plain.clone());
    get(&mut client, &origin.url("/login?password=0042"))
        .await
        .unwrap();
    let stored = names(plain.inspector()).await;
    assert_eq!(guessed.iter().position(|k| *k == stored[0]), Some(42));
}

/// During a key rotation an entry written under the old key's name is still found, and an
/// unsafe request removes it under every name (it would otherwise come back).
#[tokio::test]
async fn invalidation_during_a_rotation_removes_the_entry_under_every_name() {
    use hyper_client_cache::{KeyRing, SecretKey};
    let origin = Origin::counting(&[("cache-control", "max-age=600")]).await;
    let old = || SecretKey::new("the key of last quarter").unwrap();
    let new = || SecretKey::new("the key of this quarter").unwrap();
    let store = MemoryStore::default();
    let url = origin.url("/item");
    let mut before = cached_client(CacheLayer::new(store.clone()).secret_key(old()));
    assert_eq!(&get(&mut before, &url).await.unwrap().body[..], b"v1");
    let rotated = full_body_client(
        CacheLayer::new(store.clone()).secret_key(KeyRing::new(new()).with_previous(old())),
    );
    let fetch = |method: http::Method| {
        Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    use tower::ServiceExt;
    let hit = rotated
        .clone()
        .oneshot(fetch(http::Method::GET))
        .await
        .unwrap();
    assert_eq!(
        hit.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    let post = rotated
        .clone()
        .oneshot(fetch(http::Method::POST))
        .await
        .unwrap();
    assert!(post.status().is_success());
    drop(post);
    let after = rotated
        .clone()
        .oneshot(fetch(http::Method::GET))
        .await
        .unwrap();
    assert_eq!(
        after.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    let body = http_body_util::BodyExt::collect(after.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        &body[..],
        b"v3",
        "the invalidated entry came back under its old name"
    );
}

/// A reverse proxy forwards with the origin's URI and the client's `Host` (both keyed): the
/// `Location` of an unsafe request's answer invalidates the entry keyed with that same `Host`.
#[tokio::test]
async fn invalidation_of_a_location_keeps_the_requests_host() {
    let origin = Origin::start(|s| {
        let mut r = Response::builder().header("cache-control", "max-age=600");
        if s.method == http::Method::POST {
            r = r.status(201).header("location", "/items/2");
        }
        r.body(Full::new(Bytes::from(format!(
            "{} {}",
            s.method,
            s.uri.path()
        ))))
        .unwrap()
    })
    .await;
    let client = full_body_client(CacheLayer::new(MemoryStore::default()));
    let with_host = |method: http::Method, path: &str| {
        Request::builder()
            .method(method)
            .uri(origin.url(path))
            .header("host", "proxy.example")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    use tower::ServiceExt;
    let status = |r: &Response<hyper_client_cache::CacheBody<hyper::body::Incoming>>| {
        *r.extensions().get::<CacheStatus>().unwrap()
    };
    let first = client
        .clone()
        .oneshot(with_host(http::Method::GET, "/items/2"))
        .await
        .unwrap();
    assert_eq!(status(&first), CacheStatus::Miss);
    drop(http_body_util::BodyExt::collect(first.into_body()).await);
    let hit = client
        .clone()
        .oneshot(with_host(http::Method::GET, "/items/2"))
        .await
        .unwrap();
    assert_eq!(status(&hit), CacheStatus::Hit);
    let post = client
        .clone()
        .oneshot(with_host(http::Method::POST, "/items/1"))
        .await
        .unwrap();
    assert_eq!(post.status(), 201);
    drop(http_body_util::BodyExt::collect(post.into_body()).await);
    let after = client
        .oneshot(with_host(http::Method::GET, "/items/2"))
        .await
        .unwrap();
    assert_eq!(
        status(&after),
        CacheStatus::Miss,
        "the Location was not invalidated"
    );
}

/// A memory store's blob opened once is not proven or decoded again while it is the very buffer
/// the store holds; anything else put under its name, a tampered copy or the same bytes in another
/// buffer, is verified as before: a tampered one is refused, however often the genuine one was
/// served (`envelope/verified.rs`, docs/security.md). Signed and encrypted alike; unsigned, every
/// change is a miss. Each change is counted once, as a bad signature or as an unusable entry.
#[tokio::test]
async fn a_blob_replaced_after_hits_is_verified_again() {
    for mode in ["unsigned", "signed", "encrypted"] {
        let layer = |store: &MemoryStore| {
            let layer = CacheLayer::new(store.clone());
            match mode {
                "unsigned" => layer,
                "signed" => layer.secret_key(test_key()),
                _ => layer.encrypt(test_key()),
            }
        };
        let origin = Origin::fixed("max-age=600", "genuine body").await;
        let store = MemoryStore::default();
        let url = origin.url("/memo");
        let key = layer(&store).key_for(&http::Request::get(&url).body(()).unwrap());
        let client_layer = layer(&store);
        let metrics = client_layer.metrics();
        let mut client = cached_client(client_layer);
        get(&mut client, &url).await.unwrap();
        for _ in 0..3 {
            let got = get(&mut client, &url).await.unwrap();
            assert_eq!(
                (got.cache, &got.body[..]),
                (Some(CacheStatus::Hit), &b"genuine body"[..])
            );
        }
        let genuine = get_raw(&store, key.clone()).await.unwrap();
        // Every byte flipped in turn, in a buffer of its own: never served from the store.
        for at in 0..genuine.len() {
            let mut forged = genuine.to_vec();
            forged[at] ^= 0x20;
            put_raw(&store, key.clone(), Bytes::from(forged)).await;
            match get(&mut client, &url).await {
                Err(e) => assert!(
                    e.downcast_ref::<BadSignature>().is_some() && mode != "unsigned",
                    "{mode}, byte {at}: {e}"
                ),
                // Not ours to judge (a newer format's version byte, say), or unsigned: a miss,
                // from the origin.
                Ok(got) => assert_eq!(got.cache, Some(CacheStatus::Miss), "{mode}, byte {at}"),
            }
            // Seen by an operator either way: counted as tampering or as an unusable entry.
            assert_eq!(
                metrics.bad_signatures() + metrics.unusable_entries(),
                at as u64 + 1,
                "{mode}, byte {at}: counted once"
            );
            put_raw(&store, key.clone(), genuine.clone()).await;
            let got = get(&mut client, &url).await.unwrap();
            assert_eq!(got.body, "genuine body", "byte {at}: the genuine one again");
        }
        // The very buffer, served under its name, moved under another URL's name: refused there.
        let other = origin.url("/other");
        let other_key = layer(&store).key_for(&http::Request::get(&other).body(()).unwrap());
        put_raw(&store, other_key, genuine.clone()).await;
        if mode == "unsigned" {
            let got = get(&mut client, &other).await.unwrap();
            assert_eq!(got.cache, Some(CacheStatus::Miss), "not served there");
        } else {
            let err = get(&mut client, &other).await.err().expect("refused");
            assert!(err.downcast_ref::<BadSignature>().unwrap().is_wrong_key());
        }
        // The genuine bytes in another buffer: verified, and served.
        put_raw(&store, key.clone(), Bytes::from(genuine.to_vec())).await;
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(
            (got.cache, &got.body[..]),
            (Some(CacheStatus::Hit), &b"genuine body"[..])
        );
    }
}
