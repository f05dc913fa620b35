//! The Store contract, MemoryStore, and what happens when a store misbehaves.

use std::convert::Infallible;
use std::future::{pending, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{
    BoxError, CacheKey, CacheLayer, CacheStatus, MemoryStore, StoreError, StoreRequest,
    StoreResponse,
};
use tower::{ServiceBuilder, ServiceExt};

use crate::common::*;

fn k(s: &str) -> CacheKey {
    CacheKey::from_stored(s.to_owned())
}

async fn put(store: &MemoryStore, key: &str, blob: impl Into<Bytes>, ttl: Option<Duration>) {
    let req = StoreRequest::Put {
        key: k(key),
        blob: blob.into(),
        ttl,
    };
    store.clone().oneshot(req).await.unwrap();
}

async fn read(store: &MemoryStore, key: &str) -> Option<Bytes> {
    match store
        .clone()
        .oneshot(StoreRequest::get(k(key)))
        .await
        .unwrap()
    {
        StoreResponse::Blob(b) => b,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn memory_store_stays_within_its_byte_bound() {
    const BOUND: u64 = 256 * 1024;
    let store = MemoryStore::new(BOUND);
    let mut total_written = 0u64;
    for i in 0..5_000u32 {
        let size = (i as usize * 7919) % 3000 + 1;
        total_written += size as u64;
        put(
            &store,
            &format!("key-{i}"),
            vec![(i % 251) as u8; size],
            None,
        )
        .await;
        assert!(
            store.size_bytes() <= BOUND,
            "after insert {i}: {} > {BOUND}",
            store.size_bytes()
        );
    }
    assert!(
        total_written > 10 * BOUND,
        "the test must overflow the bound many times"
    );
    assert!(
        store.size_bytes() > BOUND / 2,
        "eviction should not empty the store"
    );
}

#[tokio::test]
async fn memory_store_blob_larger_than_bound_is_not_stored() {
    let store = MemoryStore::new(1024);
    put(&store, "big", vec![0u8; 10_000], None).await;
    assert_eq!(read(&store, "big").await, None);
    assert!(store.size_bytes() <= 1024);
}

#[tokio::test]
async fn memory_store_honours_ttl_on_its_clock() {
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    put(&store, "a", "1", Some(Duration::from_secs(10))).await;
    put(&store, "forever", "2", None).await;
    clock.advance(Duration::from_secs(9));
    assert_eq!(read(&store, "a").await.as_deref(), Some(&b"1"[..]));
    clock.advance(Duration::from_secs(1));
    assert_eq!(read(&store, "a").await, None);
    assert_eq!(store.len(), 1, "the expired entry was dropped on read");
    clock.advance(Duration::from_secs(1_000_000));
    assert_eq!(read(&store, "forever").await.as_deref(), Some(&b"2"[..]));
}

#[tokio::test]
async fn memory_store_clones_share_entries_and_support_keys_delete_clear() {
    let store = MemoryStore::default();
    let clone = store.clone();
    let all_bytes: Vec<u8> = (0..=255).collect();
    put(&store, "a", all_bytes.clone(), None).await;
    put(&clone, "b", Bytes::new(), None).await;
    assert_eq!(read(&clone, "a").await.unwrap(), all_bytes);
    assert_eq!(read(&store, "b").await.unwrap().len(), 0);

    let keys = match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(mut keys) => {
            keys.sort();
            keys
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(keys, [k("a"), k("b")]);

    store
        .clone()
        .oneshot(StoreRequest::Delete { key: k("a") })
        .await
        .unwrap();
    assert_eq!(read(&clone, "a").await, None);
    clone.clone().oneshot(StoreRequest::Clear).await.unwrap();
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_store_wrapped_in_tower_layers_is_still_a_store() {
    let origin = Origin::fixed("max-age=60", "x").await;
    let inner = MemoryStore::default();
    let store = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .concurrency_limit(8)
        .service(inner.clone());
    let mut client = cached_client(CacheLayer::new(store));
    get(&mut client, &origin.url("/")).await.unwrap();
    assert_eq!(
        get(&mut client, &origin.url("/")).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(inner.len(), 1);
}

#[tokio::test]
async fn a_failing_store_degrades_to_misses() {
    let origin = Origin::fixed("max-age=60", "body").await;
    let dead = tower::service_fn(|_: StoreRequest| {
        ready(Err::<StoreResponse, BoxError>("connection refused".into()))
    });
    let mut client = cached_client(CacheLayer::new(dead));
    for _ in 0..3 {
        let got = get(&mut client, &origin.url("/")).await.unwrap();
        assert_eq!(got.cache, Some(CacheStatus::StoreUnavailable));
        assert_eq!(got.body, "body");
    }
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn a_stalled_store_behind_a_timeout_does_not_hang_requests() {
    let origin = Origin::fixed("max-age=60", "body").await;
    let stalled =
        tower::service_fn(|_: StoreRequest| pending::<Result<StoreResponse, Infallible>>());
    let store = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(stalled);
    let mut client = cached_client(CacheLayer::new(store));
    // Bounded by the store timeout (lookup) and the same timeout on the write at body end.
    let got = tokio::time::timeout(Duration::from_secs(10), get(&mut client, &origin.url("/")))
        .await
        .expect("request must complete")
        .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::StoreUnavailable));
    assert_eq!(got.body, "body");
}

#[tokio::test]
async fn a_store_answering_nonsense_is_a_miss() {
    let origin = Origin::fixed("max-age=60", "body").await;
    let odd =
        tower::service_fn(|_: StoreRequest| ready(Ok::<_, Infallible>(StoreResponse::Unsupported)));
    let layer = CacheLayer::new(odd);
    let metrics = layer.metrics();
    let mut client = cached_client(layer.clone());
    let got = get(&mut client, &origin.url("/")).await.unwrap();
    assert_eq!(got.body, "body");
    assert_eq!(got.cache, Some(CacheStatus::StoreUnavailable));
    // Counted as a failed lookup, like an error.
    assert_eq!(metrics.store_read_errors(), 1);
    // And fail-closed means fail-closed for it too.
    let mut strict = cached_client(layer.fail_closed(true));
    let err = get(&mut strict, &origin.url("/"))
        .await
        .err()
        .expect("must fail closed");
    assert!(err
        .downcast_ref::<hyper_client_cache::StoreError>()
        .is_some());
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn a_stalled_store_is_bounded_by_the_store_timeout() {
    let origin = Origin::fixed("max-age=600", "body").await;
    let stalled = tower::service_fn(|_: StoreRequest| {
        std::future::pending::<Result<StoreResponse, std::convert::Infallible>>()
    });
    let layer = CacheLayer::new(stalled).store_timeout(Duration::from_millis(100));
    let metrics = layer.metrics();
    let mut client = cached_client(layer);
    let started = std::time::Instant::now();
    let got = get(&mut client, &origin.url("/")).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::StoreUnavailable));
    assert_eq!(got.body, "body");
    // One bounded lookup and one bounded write: well under the 10 s a hang would show.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        (metrics.store_read_errors(), metrics.store_write_errors()),
        (1, 1)
    );
}

#[tokio::test]
async fn fail_closed_turns_store_failures_into_errors() {
    let origin = Origin::fixed("max-age=600", "body").await;
    let dead = tower::service_fn(|_: StoreRequest| {
        std::future::ready(Err::<StoreResponse, hyper_client_cache::BoxError>(
            "down".into(),
        ))
    });
    let mut client = cached_client(CacheLayer::new(dead).fail_closed(true));
    let err = get(&mut client, &origin.url("/"))
        .await
        .err()
        .expect("must fail closed");
    let store_err = err.downcast_ref::<StoreError>().expect("a StoreError");
    assert!(!store_err.is_timeout());
    assert_eq!(origin.requests(), 0);
}

/// Nothing stored; writes and deletes never answer.
fn stalled_writes() -> impl hyper_client_cache::Store<Future = impl Send> {
    tower::service_fn(|req: StoreRequest| async move {
        match req {
            StoreRequest::Get { .. } => Ok::<_, Infallible>(StoreResponse::Blob(None)),
            _ => pending().await,
        }
    })
}

fn ready_origin(
    response: fn() -> http::Response<http_body_util::Full<Bytes>>,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<http_body_util::Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_: http::Request<()>| ready(Ok::<_, Infallible>(response())))
}

#[tokio::test(start_paused = true)]
async fn a_stalled_write_holds_the_end_of_the_body_for_one_store_timeout_at_most() {
    let layer = CacheLayer::new(stalled_writes()).store_timeout(Duration::from_secs(10));
    let metrics = layer.metrics();
    // A response that varies is written under two keys (the URL's and the variant's).
    let svc = ServiceBuilder::new().layer(layer).service(ready_origin(|| {
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "accept")
            .body(http_body_util::Full::new(Bytes::from_static(b"varies")))
            .unwrap()
    }));
    let started = tokio::time::Instant::now();
    let request = http::Request::get("http://example.test/v")
        .header("accept", "text/plain")
        .body(())
        .unwrap();
    let response = svc.oneshot(request).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the head is not held back"
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "varies");
    // Both writes ran under one deadline, not one after the other.
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(metrics.store_write_errors(), 2);
    assert_eq!(metrics.stored(), 0);
}

#[tokio::test(start_paused = true)]
async fn stalled_invalidations_hold_an_unsafe_response_for_one_store_timeout_and_are_counted() {
    let layer = CacheLayer::new(stalled_writes()).store_timeout(Duration::from_secs(10));
    let metrics = layer.metrics();
    // §4.4: the target URI and the same-origin Location are both invalidated (and so are their
    // incomplete entries).
    let svc = ServiceBuilder::new().layer(layer).service(ready_origin(|| {
        http::Response::builder()
            .status(201)
            .header("location", "http://example.test/items/7")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    }));
    let started = tokio::time::Instant::now();
    let request = http::Request::post("http://example.test/items")
        .body(())
        .unwrap();
    let response = svc.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    // Each URL's entry and its incomplete entry (RFC 9111 §3.3): four deletes.
    assert_eq!(metrics.store_write_errors(), 4);
}

/// An entry larger than one quick_cache shard can hold is refused, and the store says so
/// (it used to answer `Done` and drop it): the largest entry it keeps is derived from its size.
#[tokio::test]
async fn memory_store_says_when_it_refuses_an_entry() {
    let store = MemoryStore::new(64 << 20);
    let max = store.max_entry_bytes();
    assert!(max > 8 << 20, "the default max_body_size fits: {max}");
    assert!(max <= 64 << 20);
    let key = "a-key";
    let answer = |len: u64| {
        let store = store.clone();
        async move {
            let put = StoreRequest::Put {
                key: k(key),
                blob: Bytes::from(vec![7u8; len as usize]),
                ttl: None,
            };
            store.oneshot(put).await.unwrap()
        }
    };
    // The largest entry (key included) is kept; one byte more is refused, and nothing is left
    // under the key (not even an older entry).
    let fits = max - key.len() as u64;
    assert!(matches!(answer(fits).await, StoreResponse::Done));
    assert_eq!(read(&store, key).await.map(|b| b.len() as u64), Some(fits));
    assert!(matches!(answer(fits + 1).await, StoreResponse::NotStored));
    assert_eq!(read(&store, key).await, None);
}

/// The layer counts a refused entry as not stored, and coalesced waiters are not told it was
/// (they fetch for themselves instead of all missing after the leader).
#[tokio::test]
async fn a_refused_entry_is_not_counted_as_stored() {
    let body: &'static str = Box::leak("x".repeat(40 << 20).into_boxed_str());
    let origin = Origin::fixed("max-age=600", body).await;
    let store = MemoryStore::new(64 << 20);
    assert!(store.max_entry_bytes() < body.len() as u64);
    let layer = CacheLayer::new(store.clone()).max_body_size(48 << 20);
    let metrics = layer.metrics();
    let mut client = cached_client(layer);
    let url = origin.url("/large");
    for _ in 0..2 {
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(got.body.len(), body.len());
        assert_eq!(got.cache, Some(CacheStatus::Miss));
    }
    assert_eq!(origin.requests(), 2);
    assert_eq!(metrics.stored(), 0, "a refused entry was counted as stored");
    assert_eq!(metrics.store_refused(), 2);
    assert_eq!(
        metrics.store_write_errors(),
        0,
        "a refusal is not a failure"
    );
    assert!(store.is_empty());
}

/// A store written before `PutParts` and `PutTagged` existed answers them `Unsupported`: the
/// cache joins the parts and sends the same write as a `PutTagged`, then as a `Put`, the entry is
/// stored and hit, and a purge by tag (`PurgeTag` unsupported too) walks the entries' signed
/// tags. Once told, the cache sends no more `PutParts`: a response without tags is written with
/// a plain `Put` at once.
#[tokio::test]
async fn a_store_without_a_tag_index_still_stores_tagged_entries_and_purges_them() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let inner = hyper_client_cache::MemoryStore::new(1 << 20);
    let store = {
        let seen = seen.clone();
        tower::service_fn(move |req: StoreRequest| {
            let mut inner = inner.clone();
            let seen = seen.clone();
            async move {
                let name = match &req {
                    StoreRequest::PutTagged { .. } => "put_tagged",
                    StoreRequest::PutParts { .. } => "put_parts",
                    StoreRequest::PurgeTag { .. } => "purge_tag",
                    StoreRequest::Put { .. } => "put",
                    _ => "other",
                };
                seen.lock().unwrap().push(name);
                match req {
                    StoreRequest::PutTagged { .. }
                    | StoreRequest::PurgeTag { .. }
                    | StoreRequest::PutParts { .. } => {
                        Ok::<_, Infallible>(StoreResponse::Unsupported)
                    }
                    req => tower::Service::call(&mut inner, req).await,
                }
            }
        })
    };
    let layer = CacheLayer::new(store).secret_key(test_key());
    let metrics = layer.metrics();
    let inspector = layer.inspector();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|req: http::Request<()>| {
            let tagged = req.uri().path() == "/tagged";
            let mut b = http::Response::builder().header("cache-control", "max-age=60");
            if tagged {
                b = b.header("cache-tag", "t");
            }
            ready(Ok::<_, Infallible>(
                b.body(http_body_util::Full::new(Bytes::from_static(b"x")))
                    .unwrap(),
            ))
        }));
    for path in ["/tagged", "/plain"] {
        for _ in 0..2 {
            let request = http::Request::get(format!("http://example.test{path}"))
                .body(())
                .unwrap();
            let response = tower::Service::call(svc.ready().await.unwrap(), request)
                .await
                .unwrap();
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
        }
    }
    assert_eq!(metrics.stored(), 2);
    assert_eq!(metrics.hits(), 2);
    let writes: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|s| *s != "other")
        .collect();
    assert_eq!(writes, ["put_parts", "put_tagged", "put", "put"]);
    assert_eq!(inspector.purge_tag("t").await.unwrap(), 1);
    assert!(seen.lock().unwrap().contains(&"purge_tag"));
    assert_eq!(inspector.count().await.unwrap(), 1);
}
