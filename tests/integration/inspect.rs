//! The inspection and maintenance API on `MemoryStore` (the store conformance suite runs the same
//! checks on every store: `store::conformance::inspection`).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore};

use crate::common::*;

#[tokio::test]
async fn list_count_and_delete() {
    let origin = Origin::start(|s| {
        let max_age = if s.uri.path().starts_with("/short") {
            10
        } else {
            1000
        };
        let mut b = Response::builder()
            .status(if s.uri.path() == "/gone" { 410 } else { 200 })
            .header("cache-control", format!("max-age={max_age}"));
        if s.uri.path() == "/lang" {
            b = b.header("vary", "accept-language");
        }
        b.body(Full::new(Bytes::from(vec![b'x'; 100]))).unwrap()
    })
    .await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let layer = CacheLayer::new(store.clone())
        .secret_key(test_key())
        .clock(clock.clone());
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    for path in ["/a", "/short/1", "/gone", "/api/x", "/api/y"] {
        get(&mut client, &origin.url(path)).await.unwrap();
    }
    for lang in ["en", "fr"] {
        let r = Request::get(origin.url("/lang"))
            .header("accept-language", lang)
            .body(Empty::new())
            .unwrap();
        send(&mut client, r).await.unwrap();
    }
    clock.advance(secs(20));

    let listing = inspector.entries().await.unwrap();
    assert!(listing.invalid.is_empty());
    // 5 plain entries; /lang: the primary copy and two variants.
    assert_eq!(listing.count(), 8, "{:#?}", listing.entries);
    assert_eq!(listing.entries.iter().filter(|e| e.is_variant).count(), 2);
    let short = listing
        .entries
        .iter()
        .find(|e| e.url == origin.url("/short/1"))
        .unwrap();
    assert_eq!(short.status, 200);
    assert_eq!(short.method, http::Method::GET);
    assert_eq!(short.created_at, epoch());
    assert_eq!(short.expires, Some(epoch() + secs(10)));
    assert!(short.is_expired);
    assert!(short.size > 100);
    let gone = listing
        .entries
        .iter()
        .find(|e| e.url.ends_with("/gone"))
        .unwrap();
    assert_eq!(gone.status, 410);
    assert!(!gone.is_expired);
    assert_eq!(
        listing.total_bytes(),
        listing.entries.iter().map(|e| e.size as u64).sum::<u64>()
    );
    assert_eq!(inspector.count().await.unwrap(), 8);
    assert_eq!(
        inspector.total_bytes().await.unwrap(),
        listing.total_bytes()
    );

    // contains / delete by key
    assert!(inspector.contains(&origin.url("/a")).await.unwrap());
    assert!(!inspector.contains(&origin.url("/never")).await.unwrap());
    inspector.delete(&key_for(&origin.url("/a"))).await.unwrap();
    assert!(!inspector.contains(&origin.url("/a")).await.unwrap());

    // delete by URL: every variant goes.
    assert_eq!(inspector.delete_url(&origin.url("/lang")).await.unwrap(), 3);
    // expired ones
    assert_eq!(inspector.delete_expired().await.unwrap(), 1);
    // by glob over host/path
    let pattern = format!("{}/api/*", origin.addr);
    assert_eq!(inspector.delete_matching(&pattern).await.unwrap(), 2);
    assert!(inspector.delete_matching("a/{b").await.is_err());
    // by predicate, older than
    assert_eq!(inspector.delete_older_than(secs(30)).await.unwrap(), 0);
    assert_eq!(
        inspector.delete_where(|e| e.status == 410).await.unwrap(),
        1
    );
    assert_eq!(inspector.count().await.unwrap(), 0);

    // What is left after deleting is a miss.
    let got = get(&mut client, &origin.url("/api/x")).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Miss));
    clock.advance(secs(100));
    assert_eq!(inspector.delete_older_than(secs(50)).await.unwrap(), 1);
    get(&mut client, &origin.url("/api/x")).await.unwrap();
    inspector.clear().await.unwrap();
    assert_eq!(inspector.count().await.unwrap(), 0);
}

/// requests-cache breaks its listing on an entry it cannot decode. Here a tampered entry is
/// reported and skipped.
#[tokio::test]
async fn a_tampered_entry_is_reported_and_does_not_break_the_listing() {
    let origin = Origin::fixed("max-age=60", "fine").await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let layer = CacheLayer::new(store.clone())
        .secret_key(test_key())
        .clock(clock.clone());
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    for path in ["/1", "/2", "/3"] {
        get(&mut client, &origin.url(path)).await.unwrap();
    }
    let victim = key_for(&origin.url("/2"));
    let mut blob = get_raw(&store, victim.clone()).await.unwrap().to_vec();
    let last = blob.len() - 40;
    blob[last] ^= 1;
    put_raw(&store, victim.clone(), blob.into()).await;
    put_raw(
        &store,
        hyper_client_cache::CacheKey::from_stored("hcc1:garbage"),
        Bytes::from_static(b"not an entry at all"),
    )
    .await;

    let listing = inspector.entries().await.unwrap();
    assert_eq!(listing.count(), 2);
    assert_eq!(listing.invalid.len(), 2);
    let tampered = listing.invalid.iter().find(|i| i.key == victim).unwrap();
    assert!(tampered.bad_signature);
    assert!(!inspector.contains(&origin.url("/2")).await.unwrap());
    // Deleting by predicate leaves invalid entries alone; deleting them by key works.
    assert_eq!(inspector.delete_where(|_| true).await.unwrap(), 2);
    for invalid in &listing.invalid {
        inspector.delete(&invalid.key).await.unwrap();
    }
    let listing = inspector.entries().await.unwrap();
    assert_eq!((listing.count(), listing.invalid.len()), (0, 0));
}

/// A store that fails, or cannot list, makes the inspector return an error, not a partial or
/// empty listing.
#[tokio::test]
async fn a_failing_store_is_an_error_for_the_inspector() {
    use hyper_client_cache::{BoxError, StoreRequest, StoreResponse};
    let failing = tower::service_fn(|_: StoreRequest| async {
        Err::<StoreResponse, BoxError>("store down".into())
    });
    let inspector = CacheLayer::new(failing).inspector();
    assert!(inspector.entries().await.is_err());
    assert!(inspector.contains("http://e.com/").await.is_err());
    assert!(inspector.clear().await.is_err());

    let cannot_list = tower::service_fn(|_: StoreRequest| async {
        Ok::<_, BoxError>(StoreResponse::Unsupported)
    });
    let inspector = CacheLayer::new(cannot_list).inspector();
    let err = inspector.entries().await.unwrap_err();
    assert!(std::error::Error::source(&err)
        .unwrap()
        .to_string()
        .contains("cannot list"));
    assert!(inspector.contains("not a uri at all \u{7f}").await.is_err());
}

/// Listing and clearing walk the whole store: they get their own, longer bound than the store
/// timeout meant for one key, and it can be set.
#[tokio::test(start_paused = true)]
async fn listing_and_clearing_get_the_whole_store_timeout() {
    use hyper_client_cache::{BoxError, StoreRequest, StoreResponse, DEFAULT_WHOLE_STORE_TIMEOUT};
    // A large store: walking it takes 5 s.
    let slow_walk = tower::service_fn(|req: StoreRequest| async move {
        match req {
            StoreRequest::Keys | StoreRequest::Clear => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, BoxError>(match req {
                    StoreRequest::Keys => StoreResponse::Keys(Vec::new()),
                    _ => StoreResponse::Done,
                })
            }
            _ => Ok(StoreResponse::Blob(None)),
        }
    });
    let layer = CacheLayer::new(slow_walk).store_timeout(Duration::from_millis(500));
    let inspector = layer.inspector();
    assert!(DEFAULT_WHOLE_STORE_TIMEOUT > Duration::from_secs(5));
    assert_eq!(inspector.entries().await.unwrap().count(), 0);
    inspector.clear().await.unwrap();

    let started = tokio::time::Instant::now();
    let hurried = inspector.whole_store_timeout(Duration::from_secs(1));
    let err = hurried.entries().await.unwrap_err();
    assert!(err.is_timeout());
    assert!(hurried.clear().await.unwrap_err().is_timeout());
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

/// Purge by tag: responses carry tags (`Cache-Tag`, comma-separated; `Surrogate-Key`,
/// space-separated); `purge_tag` removes every entry with the tag, under every name, and leaves
/// the others. The tag fields never reach callers unless kept.
#[tokio::test]
async fn purge_tag_removes_the_tagged_entries_and_callers_never_see_the_tags() {
    let origin = Origin::start(|s| {
        let mut r = http::Response::builder().header("cache-control", "max-age=600");
        r = match s.uri.path() {
            "/p/1" => r.header("cache-tag", "product-1, catalog"),
            "/p/2" => r.header("cache-tag", "product-2,catalog"),
            "/fastly" => r.header("surrogate-key", "product-1 misc"),
            "/varies" => r.header("cache-tag", "product-1").header("vary", "accept"),
            _ => r,
        };
        r.body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let layer = layer(&clock);
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    for path in ["/p/1", "/p/2", "/fastly", "/varies", "/untagged"] {
        for _ in 0..2 {
            let got = get(&mut client, &origin.url(path)).await.unwrap();
            assert!(
                !got.headers.contains_key("cache-tag"),
                "{path}: {:?}",
                got.headers
            );
            assert!(!got.headers.contains_key("surrogate-key"), "{path}");
        }
    }
    let listing = inspector.entries().await.unwrap();
    let p1 = listing
        .entries
        .iter()
        .find(|e| e.url.ends_with("/p/1"))
        .unwrap();
    assert_eq!(p1.tags, ["product-1", "catalog"]);

    // /p/1, /fastly and both names of /varies.
    assert_eq!(inspector.purge_tag("product-1").await.unwrap(), 4);
    let left: Vec<String> = inspector
        .entries()
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.url)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().any(|u| u.ends_with("/p/2")) && left.iter().any(|u| u.ends_with("/untagged"))
    );
    assert_eq!(inspector.purge_tag("product-1").await.unwrap(), 0);
    assert_eq!(inspector.purge_tag("catalog").await.unwrap(), 1);
    let before = origin.requests();
    get(&mut client, &origin.url("/p/1")).await.unwrap();
    assert_eq!(origin.requests(), before + 1, "purged: fetched again");
}

/// `keep_tag_headers(true)` passes the fields on; `tag_header` names another field.
#[tokio::test]
async fn tag_fields_can_be_kept_and_renamed() {
    let origin = Origin::start(|_| {
        http::Response::builder()
            .header("cache-control", "max-age=600")
            .header("x-tags", "alpha beta")
            .header("cache-tag", "not-a-tag-here")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let layer = layer(&clock)
        .tag_header(http::HeaderName::from_static("x-tags"))
        .keep_tag_headers(true);
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    let url = origin.url("/kept");
    for _ in 0..2 {
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(got.headers["x-tags"], "alpha beta");
    }
    let entry = &inspector.entries().await.unwrap().entries[0];
    assert_eq!(entry.tags, ["alpha", "beta"]);
    assert_eq!(inspector.purge_tag("not-a-tag-here").await.unwrap(), 0);
    assert_eq!(inspector.purge_tag("beta").await.unwrap(), 1);
}
