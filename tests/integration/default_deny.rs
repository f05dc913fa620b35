//! Default deny (#27): no request value reaches a store in clear whatever its field is called,
//! the credential list only ever adds protection, a shared cache does not replay `Set-Cookie`,
//! and a stored response always has a `Date`.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore, NotStoredReason, Store};
use tower::{ServiceBuilder, ServiceExt};

use crate::common::*;

/// Credential-looking fields under names no list knows, and the usual ones.
const FIELDS: &[&str] = &[
    "x-session-token",
    "api-key",
    "x-amz-security-token",
    "ocp-apim-subscription-key",
    "authorization",
    "cookie",
];

/// An origin whose responses vary on every field of [`FIELDS`], and name the caller.
async fn varying_origin() -> Origin {
    Origin::start(|s| {
        let who = s
            .headers
            .get("x-session-token")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Response::builder()
            .header("cache-control", "max-age=600, public")
            .header("vary", FIELDS.join(", "))
            .body(Full::new(Bytes::from(format!(
                "account page of {}",
                who.len()
            ))))
            .unwrap()
    })
    .await
}

fn with_secrets(url: String, tag: &str) -> Request<Empty<Bytes>> {
    let mut builder = Request::get(url);
    for field in FIELDS {
        builder = builder.header(*field, format!("SECRET-{tag}-{field}"));
    }
    builder.body(Empty::new()).unwrap()
}

fn layer_in<St: Store>(store: St, mode: &str) -> CacheLayer<St> {
    let layer = CacheLayer::new(store);
    match mode {
        "signed" => layer.secret_key(test_key()),
        "encrypted" => layer.encrypt(test_key()),
        _ => layer,
    }
}

/// Sends requests carrying secrets in arbitrary fields the response varies on, in the query
/// (`token=`) and in the userinfo, twice each (the second must hit: matching still works).
async fn exercise<St: Store>(store: St, mode: &str, origin: &Origin) {
    let mut client = cached_client(layer_in(store, mode));
    for (i, url) in [
        origin.url("/me?token=SECRET-q"),
        format!("http://user:SECRET-u@{}/me?page=2", origin.addr),
        origin.url("/me?page=3"),
    ]
    .into_iter()
    .enumerate()
    {
        let first = send(&mut client, with_secrets(url.clone(), "a"))
            .await
            .unwrap();
        assert_eq!(first.cache, Some(CacheStatus::Miss), "{mode} {i}");
        let again = send(&mut client, with_secrets(url.clone(), "a"))
            .await
            .unwrap();
        assert_eq!(
            again.cache,
            Some(CacheStatus::Hit),
            "{mode} {i}: same fields hit"
        );
        // Another value in a field no list names is another variant.
        let mut other = with_secrets(url, "a");
        other
            .headers_mut()
            .insert("x-session-token", "SECRET-b".parse().unwrap());
        let other = send(&mut client, other).await.unwrap();
        assert_ne!(
            other.cache,
            Some(CacheStatus::Hit),
            "{mode} {i}: other token"
        );
    }
}

fn assert_clean(what: &str, mode: &str, dump: &[u8]) {
    assert!(
        !dump.is_empty(),
        "{what} {mode}: the test must store something"
    );
    assert!(
        !dump.windows(6).any(|w| w == b"SECRET"),
        "{what} {mode}: a request value reached the store in clear"
    );
}

#[tokio::test]
async fn no_request_value_reaches_a_memory_store_in_clear_in_any_mode() {
    let origin = varying_origin().await;
    for mode in ["unsigned", "signed", "encrypted"] {
        let store = MemoryStore::default();
        exercise(store.clone(), mode, &origin).await;
        let mut dump = Vec::new();
        for blob in all_blobs(&store).await {
            dump.extend_from_slice(&blob);
        }
        let keys = match store
            .clone()
            .oneshot(hyper_client_cache::StoreRequest::Keys)
            .await
        {
            Ok(hyper_client_cache::StoreResponse::Keys(keys)) => keys,
            _ => panic!("keys"),
        };
        for key in keys {
            dump.extend_from_slice(key.as_str().as_bytes());
        }
        assert_clean("memory", mode, &dump);
    }
}

#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
#[tokio::test]
async fn no_request_value_reaches_a_disk_or_redis_store_in_clear_in_any_mode() {
    use hyper_client_cache::{DiskStore, RedisStore};
    let origin = varying_origin().await;
    let redis = RedisServer::start().await;
    for mode in ["unsigned", "signed", "encrypted"] {
        // Disk: every byte of every file, and every file name.
        let dir = tempfile::tempdir().unwrap();
        exercise(DiskStore::open(dir.path()).unwrap(), mode, &origin).await;
        let mut dump = Vec::new();
        for path in entry_files(dir.path()) {
            dump.extend_from_slice(path.to_string_lossy().as_bytes());
            dump.extend_from_slice(&std::fs::read(&path).unwrap());
        }
        assert_clean("disk", mode, &dump);

        // Redis: every key name and every value, read with a raw connection.
        let client = redis::Client::open(redis.url()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();
        exercise(
            RedisStore::connect(&redis.url()).await.unwrap(),
            mode,
            &origin,
        )
        .await;
        let names: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut raw)
            .await
            .unwrap();
        let mut dump = Vec::new();
        for name in names {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&name)
                .query_async(&mut raw)
                .await
                .unwrap_or(None);
            dump.extend_from_slice(&name);
            dump.extend(value.unwrap_or_default());
        }
        assert_clean("redis", mode, &dump);
    }
}

/// #27 item 2: a configured list used to replace the defaults, so `Authorization` named in
/// `Vary` was stored in clear; and in a shared cache a default credential field left out of
/// the list no longer kept its response private.
#[tokio::test]
async fn the_credential_list_only_adds_to_the_defaults() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("vary", "Authorization")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap()
    })
    .await;
    let store = MemoryStore::default();
    let layer = CacheLayer::new(store.clone())
        .secret_key(test_key())
        .sensitive_headers([http::HeaderName::from_static("x-tenant-token")]);
    let mut client = cached_client(layer);
    let request = Request::get(origin.url("/a"))
        .header("authorization", "Bearer SECRET")
        .body(Empty::new())
        .unwrap();
    send(&mut client, request).await.unwrap();
    let dump: Vec<u8> = all_blobs(&store).await.concat();
    assert_clean("memory", "signed", &dump);

    // Shared: `Cookie` (a default) and `X-Tenant-Token` (added) keep a response private.
    let shared = CacheLayer::new(MemoryStore::default())
        .shared(true)
        .sensitive_headers([http::HeaderName::from_static("x-tenant-token")]);
    let mut client = cached_client(shared);
    for (field, value) in [("cookie", "session=alice"), ("x-tenant-token", "t1")] {
        let request = Request::get(origin.url(&format!("/{field}")))
            .header(field, value)
            .body(Empty::new())
            .unwrap();
        let got = send(&mut client, request).await.unwrap();
        assert_eq!(
            got.not_stored,
            Some(NotStoredReason::Authorization),
            "{field}"
        );
    }
    // Removing a default is explicit.
    let opted_out = CacheLayer::new(MemoryStore::default())
        .shared(true)
        .without_sensitive_header(&http::header::COOKIE);
    let mut client = cached_client(opted_out);
    let request = Request::get(origin.url("/cookie"))
        .header("cookie", "session=alice")
        .body(Empty::new())
        .unwrap();
    assert_eq!(send(&mut client, request).await.unwrap().not_stored, None);
}

/// #27 item 11: a shared cache used to replay one caller's `Set-Cookie` to every caller.
#[tokio::test]
async fn a_shared_cache_does_not_replay_set_cookie_unless_asked() {
    let origin = Origin::start(|_| {
        Response::builder()
            .header("cache-control", "max-age=600")
            .header("set-cookie", "session=alice")
            .body(Full::new(Bytes::from_static(b"welcome alice")))
            .unwrap()
    })
    .await;
    let url = origin.url("/login");
    // Default shared cache: not stored, every caller goes to the origin.
    let mut shared = cached_client(CacheLayer::new(MemoryStore::default()).shared(true));
    let first = get(&mut shared, &url).await.unwrap();
    assert_eq!(first.not_stored, Some(NotStoredReason::SetCookie));
    assert_eq!(
        first.headers["set-cookie"], "session=alice",
        "the caller's own"
    );
    let second = get(&mut shared, &url).await.unwrap();
    assert_ne!(second.cache, Some(CacheStatus::Hit));
    assert_eq!(origin.requests(), 2);
    // Opted in: stored and replayed as received (RFC 9111 §3.1).
    let mut opted = cached_client(
        CacheLayer::new(MemoryStore::default())
            .shared(true)
            .shared_set_cookie(true),
    );
    get(&mut opted, &url).await.unwrap();
    let hit = get(&mut opted, &url).await.unwrap();
    assert_eq!(hit.cache, Some(CacheStatus::Hit));
    assert_eq!(hit.headers["set-cookie"], "session=alice");
    // A private cache serves one user: stored.
    let mut private = cached_client(CacheLayer::new(MemoryStore::default()));
    get(&mut private, &url).await.unwrap();
    assert_eq!(
        get(&mut private, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
}

/// #27 item 11: RFC 9110 §6.6.1, a response stored without `Date` is served with the time the
/// cache received it. (An in-process origin: hyper's server would add a `Date` itself.)
#[tokio::test]
async fn a_response_without_date_is_stored_and_served_with_one() {
    let clock = clock();
    let origin = tower::service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(Full::new(Bytes::from_static(b"no date")))
                .unwrap(),
        )
    });
    let mut svc = ServiceBuilder::new()
        .layer(unsigned_layer(&clock))
        .service(origin);
    let miss = get(&mut svc, "http://origin.test/a").await.unwrap();
    assert_eq!(miss.cache, Some(CacheStatus::Miss));
    let hit = get(&mut svc, "http://origin.test/a").await.unwrap();
    assert_eq!(hit.cache, Some(CacheStatus::Hit));
    assert_eq!(
        hit.headers["date"],
        httpdate::fmt_http_date(epoch()).as_str(),
        "the time the response was received"
    );
}
