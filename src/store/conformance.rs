//! The store conformance suite: the checks every store of this crate passes, for yours too.
//!
//! Enable the `test-util` feature in your dev-dependencies and call [`check_store`] from a
//! `#[tokio::test]` (multi-threaded or not). Each check panics with a message naming what
//! failed. The suite writes keys under `conformance:` (and, in [`inspection`], the keys a
//! `CacheLayer` writes) and ends by clearing the store, so give it a store (or a namespace) of
//! its own.
//!
//! ```no_run
//! # #[cfg(feature = "memory")]
//! # async fn t() {
//! use std::time::Duration;
//! use hyper_client_cache::{ManualClock, MemoryStore};
//! use hyper_client_cache::store::conformance::check_store;
//!
//! let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
//! let store = MemoryStore::with_clock(64 << 20, clock.clone());
//! // How the suite lets time pass: here by moving the store's clock, for a server-side TTL by
//! // sleeping.
//! check_store(store, |d| {
//!     clock.advance(d);
//!     async {}
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tower::ServiceExt;

use super::{Store, StoreRequest, StoreResponse};
use crate::CacheKey;

fn key(name: &str) -> CacheKey {
    CacheKey::from_stored(format!("conformance:{name}"))
}

/// The helpers clone the store before awaiting, so their futures are `Send` without requiring
/// `S: Sync` (a `Store` only has to be `Clone + Send`).
fn call<S: Store>(store: &S, request: StoreRequest) -> impl Future<Output = StoreResponse> + Send {
    let what: String = format!("{request:?}").chars().take(120).collect();
    let fut = store.clone().oneshot(request);
    async move {
        match fut.await {
            Ok(response) => response,
            Err(e) => panic!(
                "store failed on {what}: {}",
                Into::<crate::BoxError>::into(e)
            ),
        }
    }
}

/// The bound the suite's lookups carry: the cache's default (`max_body_size` + 1 MiB).
const SUITE_MAX_LEN: usize = crate::DEFAULT_MAX_BODY_SIZE + (1 << 20);

fn get<S: Store>(store: &S, k: &CacheKey) -> impl Future<Output = Option<Bytes>> + Send {
    get_bounded(store, k, SUITE_MAX_LEN)
}

fn get_bounded<S: Store>(
    store: &S,
    k: &CacheKey,
    max_len: usize,
) -> impl Future<Output = Option<Bytes>> + Send {
    let fut = call(
        store,
        StoreRequest::Get {
            key: k.clone(),
            max_len,
        },
    );
    async move {
        match fut.await {
            StoreResponse::Blob(blob) => blob,
            StoreResponse::Parts(parts) => Some(parts.to_bytes()),
            StoreResponse::Stream(stream) => {
                let said = stream.len();
                let got = stream
                    .collect(usize::MAX)
                    .await
                    .unwrap_or_else(|e| panic!("a streamed Get must read whole, got {e}"));
                assert!(
                    got.as_ref().is_some_and(|g| g.len() as u64 == said),
                    "a streamed Get must yield the length it says ({said})"
                );
                got
            }
            other => panic!("Get must answer Blob, Parts or Stream, got {other:?}"),
        }
    }
}

fn put<S: Store>(
    store: &S,
    k: &CacheKey,
    blob: Bytes,
    ttl: Option<Duration>,
) -> impl Future<Output = ()> + Send {
    let fut = call(
        store,
        StoreRequest::Put {
            key: k.clone(),
            blob,
            ttl,
        },
    );
    async move {
        match fut.await {
            StoreResponse::Done => {}
            other => panic!("Put must answer Done, got {other:?}"),
        }
    }
}

fn delete<S: Store>(store: &S, k: &CacheKey) -> impl Future<Output = ()> + Send {
    let fut = call(store, StoreRequest::Delete { key: k.clone() });
    async move {
        match fut.await {
            StoreResponse::Done => {}
            other => panic!("Delete must answer Done, got {other:?}"),
        }
    }
}

async fn keys<S: Store>(store: &S) -> Vec<CacheKey> {
    match call(store, StoreRequest::Keys).await {
        StoreResponse::Keys(mut keys) => {
            keys.sort();
            keys
        }
        other => panic!("Keys must answer Keys, got {other:?}"),
    }
}

/// Runs every check, in order; `advance` must make `d` pass for the store's expiry clock.
pub async fn check_store<S, F, Fut>(store: S, advance: F)
where
    S: Store,
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    get_put_delete(&store).await;
    overwrite(&store).await;
    binary_safe(&store).await;
    bounded_get(&store).await;
    parts::put_parts(&store).await;
    parts::put_stream(&store).await;
    ttl_expiry(&store, &advance).await;
    concurrent_overlapping(&store).await;
    tag_index(&store).await;
    keys_and_clear(&store).await;
    inspection(&store).await;
}

mod parts;
pub use parts::{put_parts, put_stream};

/// Absent keys read as `None`; a put is read back byte for byte; a delete removes it; deleting
/// an absent key is fine.
pub async fn get_put_delete<S: Store>(store: &S) {
    let k = key("basic");
    assert_eq!(
        get(store, &k).await,
        None,
        "an absent key must read as None"
    );
    put(store, &k, Bytes::from_static(b"value"), None).await;
    assert_eq!(
        get(store, &k).await.as_deref(),
        Some(&b"value"[..]),
        "read back after put"
    );
    delete(store, &k).await;
    assert_eq!(get(store, &k).await, None, "gone after delete");
    delete(store, &k).await;
}

/// A second put replaces the first, whatever the sizes.
pub async fn overwrite<S: Store>(store: &S) {
    let k = key("overwrite");
    put(store, &k, Bytes::from(vec![1u8; 10_000]), None).await;
    put(store, &k, Bytes::from_static(b"short"), None).await;
    assert_eq!(
        get(store, &k).await.as_deref(),
        Some(&b"short"[..]),
        "shorter overwrite"
    );
    put(store, &k, Bytes::from(vec![2u8; 20_000]), None).await;
    assert_eq!(
        get(store, &k).await.map(|b| b.to_vec()),
        Some(vec![2u8; 20_000]),
        "longer overwrite"
    );
    delete(store, &k).await;
}

/// Every byte value, the empty blob and an 8 MiB blob come back unchanged.
pub async fn binary_safe<S: Store>(store: &S) {
    let all: Bytes = (0..=255u8).cycle().take(256 * 4).collect::<Vec<_>>().into();
    let big: Bytes = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect::<Vec<_>>()
        .into();
    for (name, blob) in [("all-bytes", all), ("empty", Bytes::new()), ("8mib", big)] {
        let k = key(name);
        put(store, &k, blob.clone(), None).await;
        let back = get(store, &k).await;
        assert!(
            back.as_ref() == Some(&blob),
            "{name}: blob not returned byte for byte"
        );
        delete(store, &k).await;
    }
}

/// A lookup's bound (`StoreRequest::Get::max_len`): a blob of up to `max_len` bytes must be
/// served, unbounded lookups ([`StoreRequest::get`]) serve anything; over the bound, a store may
/// answer `None` or ignore the bound and serve the blob, but never anything else. (A store that
/// honours the bound also passes [`honours_bound`].)
pub async fn bounded_get<S: Store>(store: &S) {
    let k = key("bounded");
    let blob = Bytes::from(vec![5u8; 1000]);
    put(store, &k, blob.clone(), None).await;
    for max_len in [1000, 1001, usize::MAX] {
        assert_eq!(
            get_bounded(store, &k, max_len).await.as_ref(),
            Some(&blob),
            "a blob of 1000 bytes must be served to a lookup bounded at {max_len}"
        );
    }
    match call(store, StoreRequest::get(k.clone())).await {
        StoreResponse::Blob(Some(b)) if b == blob => {}
        StoreResponse::Parts(p) if p.to_bytes() == blob => {}
        other => panic!("an unbounded Get must serve the blob, got {other:?}"),
    }
    for max_len in [999, 0] {
        let got = get_bounded(store, &k, max_len).await;
        assert!(
            got.is_none() || got.as_ref() == Some(&blob),
            "over the bound ({max_len}), a store answers None or the whole blob"
        );
    }
    let empty = key("bounded-empty");
    put(store, &empty, Bytes::new(), None).await;
    assert_eq!(
        get_bounded(store, &empty, 0).await.as_deref(),
        Some(&b""[..]),
        "an empty blob is within a bound of 0"
    );
    delete(store, &k).await;
    delete(store, &empty).await;
}

/// For a store that honours a lookup's bound (the disk and Redis stores do): a blob larger
/// than `max_len` answers `None`, and is still there for a lookup with a larger bound (another
/// cache sharing the store may accept it). Not part of [`check_store`]: a store may ignore the
/// bound, since the cache checks the length again.
pub async fn honours_bound<S: Store>(store: &S) {
    let k = key("honours-bound");
    let blob = Bytes::from(vec![6u8; 1000]);
    put(store, &k, blob.clone(), None).await;
    for max_len in [999, 1, 0] {
        assert_eq!(
            get_bounded(store, &k, max_len).await,
            None,
            "a blob of 1000 bytes must be a miss for a lookup bounded at {max_len}"
        );
    }
    assert_eq!(
        get_bounded(store, &k, 1000).await.as_ref(),
        Some(&blob),
        "an oversized lookup must leave the blob in place for a larger bound"
    );
    delete(store, &k).await;
}

/// An entry with a TTL is readable before it and gone after it; one without a TTL stays, and so
/// does one whose TTL is too long to represent (`Duration::MAX`: a user's "keep forever").
pub async fn ttl_expiry<S, F, Fut>(store: &S, advance: &F)
where
    S: Store,
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let short = key("ttl-short");
    let forever = key("ttl-none");
    let huge = key("ttl-max");
    put(store, &huge, Bytes::from_static(b"z"), Some(Duration::MAX)).await;
    assert!(
        get(store, &huge).await.is_some(),
        "an entry with a TTL of Duration::MAX must be stored and readable"
    );
    delete(store, &huge).await;
    put(
        store,
        &short,
        Bytes::from_static(b"x"),
        Some(Duration::from_millis(300)),
    )
    .await;
    put(store, &forever, Bytes::from_static(b"y"), None).await;
    assert!(
        get(store, &short).await.is_some(),
        "readable before its TTL"
    );
    advance(Duration::from_millis(1_500)).await;
    assert_eq!(get(store, &short).await, None, "must be gone after its TTL");
    assert!(
        get(store, &forever).await.is_some(),
        "an entry without TTL must stay"
    );
    delete(store, &forever).await;
}

/// A blob that says which key it was written for and checks itself: a mixed, truncated or
/// misplaced blob is detected.
fn tagged(key_index: u8, writer: u8, round: u32) -> Bytes {
    let len = 64 + (usize::from(writer) * 97 + round as usize * 31) % 4000;
    let mut v = Vec::with_capacity(len + 8);
    v.push(key_index);
    v.push(writer);
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend((0..len).map(|i| (i as u8) ^ writer ^ key_index));
    let sum = crc32fast::hash(&v);
    v.extend_from_slice(&sum.to_be_bytes());
    v.into()
}

fn check_tagged(key_index: u8, blob: &[u8]) {
    assert!(blob.len() >= 10, "blob too short: {} bytes", blob.len());
    let (body, sum) = blob.split_at(blob.len() - 4);
    assert_eq!(
        crc32fast::hash(body).to_be_bytes(),
        sum,
        "torn or mixed blob under key {key_index}"
    );
    assert_eq!(
        body[0], key_index,
        "a blob written for key {} was read under key {key_index}",
        body[0]
    );
}

/// 64 tasks (32 writers, 32 readers) on 8 overlapping keys: every read is a complete blob of
/// its own key, and every key holds a complete blob at the end.
pub async fn concurrent_overlapping<S: Store>(store: &S) {
    const KEYS: u8 = 8;
    const ROUNDS: u32 = 25;
    let k = |i: u8| key(&format!("concurrent-{i}"));
    for i in 0..KEYS {
        put(store, &k(i), tagged(i, 255, 0), None).await;
    }
    let mut tasks = Vec::new();
    for t in 0..64u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let i = ((u32::from(t) * 7 + round * 3) % u32::from(KEYS)) as u8;
                if t % 2 == 0 {
                    put(&store, &k(i), tagged(i, t, round), None).await;
                } else if let Some(blob) = get(&store, &k(i)).await {
                    check_tagged(i, &blob);
                }
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    for i in 0..KEYS {
        let blob = get(store, &k(i)).await;
        let blob = blob.unwrap_or_else(|| panic!("key {i} lost its value"));
        check_tagged(i, &blob);
        delete(store, &k(i)).await;
    }
}

/// `PutTagged` stores like `Put` (or is answered `Unsupported`, and the cache sends a `Put`);
/// a store that answers `PurgeTag` removes exactly the keys written with the tag, leaves the
/// others, and lists nothing of its index among its keys.
pub async fn tag_index<S: Store>(store: &S) {
    let (a, b, c) = (key("tag-a"), key("tag-b"), key("tag-c"));
    let tagged = |k: &CacheKey, tags: &[&str]| {
        let request = StoreRequest::PutTagged {
            key: k.clone(),
            blob: Bytes::from(format!("blob of {k}")),
            ttl: Some(Duration::from_secs(600)),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        };
        let fut = call(store, request);
        let store = store.clone();
        let k = k.clone();
        async move {
            match fut.await {
                StoreResponse::Done => {}
                StoreResponse::Unsupported => {
                    put(&store, &k, Bytes::from(format!("blob of {k}")), None).await;
                }
                other => panic!("PutTagged must answer Done or Unsupported, got {other:?}"),
            }
        }
    };
    tagged(&a, &["news", "sport"]).await;
    tagged(&b, &["sport"]).await;
    put(store, &c, Bytes::from(format!("blob of {c}")), None).await;
    for k in [&a, &b] {
        assert_eq!(
            get(store, k).await.as_deref(),
            Some(format!("blob of {k}").as_bytes()),
            "PutTagged must store the blob as Put does"
        );
    }
    let listed = keys(store).await;
    assert!(
        listed
            .iter()
            .all(|k| k.as_str().starts_with("conformance:")),
        "Keys must list entries only (no tag index): {listed:?}"
    );
    match call(
        store,
        StoreRequest::PurgeTag {
            tag: "sport".into(),
        },
    )
    .await
    {
        StoreResponse::Purged { removed, .. } => {
            assert_eq!(removed, 2, "PurgeTag must count the keys it removed");
            assert_eq!(
                get(store, &a).await,
                None,
                "PurgeTag must remove tagged keys"
            );
            assert_eq!(
                get(store, &b).await,
                None,
                "PurgeTag must remove tagged keys"
            );
            assert!(
                get(store, &c).await.is_some(),
                "PurgeTag must leave untagged keys"
            );
            match call(store, StoreRequest::PurgeTag { tag: "news".into() }).await {
                StoreResponse::Purged { removed: 0, .. } => {}
                other => panic!("a second purge finds nothing left, got {other:?}"),
            }
        }
        StoreResponse::Unsupported => {}
        other => panic!("PurgeTag must answer Purged or Unsupported, got {other:?}"),
    }
    for k in [&a, &b, &c] {
        delete(store, k).await;
    }
}

/// `Keys` lists what is stored (and not what was deleted); `Clear` empties the store.
pub async fn keys_and_clear<S: Store>(store: &S) {
    let (a, b, c) = (key("list-a"), key("list-b"), key("list-c"));
    for k in [&a, &b, &c] {
        put(store, k, Bytes::from_static(b"v"), None).await;
    }
    delete(store, &b).await;
    let listed = keys(store).await;
    assert!(
        listed.contains(&a) && listed.contains(&c),
        "Keys must list stored keys: {listed:?}"
    );
    assert!(!listed.contains(&b), "Keys must not list deleted keys");
    // Pages, when the store has them: together they list what Keys lists.
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        match call(store, StoreRequest::KeysPage { cursor }).await {
            StoreResponse::KeysPage { keys, next } => {
                paged.extend(keys);
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            StoreResponse::Unsupported => {
                paged = listed.clone();
                break;
            }
            other => panic!("KeysPage must answer KeysPage or Unsupported, got {other:?}"),
        }
    }
    paged.sort();
    paged.dedup();
    assert_eq!(paged, listed, "KeysPage pages must list what Keys lists");
    match call(store, StoreRequest::Clear).await {
        StoreResponse::Done => {}
        other => panic!("Clear must answer Done, got {other:?}"),
    }
    assert_eq!(get(store, &a).await, None, "Clear must remove entries");
    assert!(keys(store).await.is_empty(), "nothing listed after Clear");
}

/// The [`Inspector`](crate::Inspector) works over this store: entries written through a
/// [`CacheLayer`](crate::CacheLayer) are listed with their URL, a garbage blob is reported as
/// invalid without breaking the listing, and deleting by URL and clearing work. Ends with the
/// store cleared.
pub async fn inspection<S: Store>(store: &S) {
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, Service};

    let secret = crate::SecretKey::new("conformance suite key, not secret")
        .unwrap_or_else(|e| panic!("{e}"));
    let layer = crate::CacheLayer::new(store.clone())
        .secret_key(secret)
        .store_timeout(Duration::from_secs(5));
    let metrics = layer.metrics();
    let inspector = layer.inspector();
    let origin = tower::service_fn(|_req: http::Request<()>| async {
        let response = http::Response::builder()
            .header("cache-control", "max-age=600")
            .header("cache-tag", "conformance, other")
            .body(Full::new(Bytes::from_static(b"conformance body")))
            .map_err(|e| -> crate::BoxError { Box::new(e) })?;
        Ok::<_, crate::BoxError>(response)
    });
    let mut cache = layer.layer(origin);
    let urls = [
        "http://conformance.test/a",
        "http://conformance.test/b",
        "http://conformance.test/c",
    ];
    for url in urls {
        let request = http::Request::get(url).body(()).unwrap_or_default();
        let response = match cache.ready().await {
            Ok(ready) => ready.call(request).await,
            Err(e) => Err(e),
        };
        let response = response.unwrap_or_else(|e| panic!("request through the cache failed: {e}"));
        if let Err(e) = response.into_body().collect().await {
            panic!("reading a body through the cache failed: {e}");
        }
    }
    // Writes may finish on a background task: wait (bounded) until all three are stored.
    for _ in 0..500 {
        if metrics.stored() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.stored(), 3, "the three responses must be stored");
    put(
        store,
        &key("inspection-garbage"),
        Bytes::from_static(b"garbage"),
        None,
    )
    .await;

    let listing = match inspector.entries().await {
        Ok(listing) => listing,
        Err(e) => panic!("listing failed: {e}"),
    };
    let mut listed: Vec<&str> = listing.entries.iter().map(|e| e.url.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, urls, "the listing must show every stored URL");
    assert!(
        listing
            .entries
            .iter()
            .all(|e| e.status == 200 && !e.is_expired && e.size > 16),
        "status, size and expiry must be reported: {:?}",
        listing.entries
    );
    assert_eq!(
        listing.invalid.len(),
        1,
        "the garbage blob must be reported, not listed"
    );
    assert!(matches!(inspector.contains(urls[0]).await, Ok(true)));
    assert!(matches!(inspector.delete_url(urls[0]).await, Ok(1)));
    assert!(matches!(inspector.contains(urls[0]).await, Ok(false)));
    assert!(matches!(inspector.count().await, Ok(2)));
    // Purge by tag (from the store's index, or by reading the signed tags): the two left.
    match inspector.purge_tag("conformance").await {
        Ok(2) => {}
        other => panic!("purge_tag must delete the two tagged entries, got {other:?}"),
    }
    assert!(matches!(inspector.count().await, Ok(0)));
    assert!(inspector.clear().await.is_ok());
    assert!(
        keys(store).await.is_empty(),
        "nothing listed after clearing"
    );
}
