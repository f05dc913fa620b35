//! Large responses that vary, written to a `DiskStore` as they pass (`StoreRequest::PutStream`):
//! one name per streamed entry, chosen from what the lookup found, so that several large
//! variants of one URL coexist (`future/put.rs`).

use std::convert::Infallible;
use std::future::ready;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU8, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_client_cache::{BoxError, CacheLayer, CacheMetrics, CacheStatus, DiskStore};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common::*;
use crate::disk_write::{body, request, temp_files, with_mode, Behaviour, Svc, Watch, LEN, MODES};

/// A large response that varies is written as it passes too, under one name: the primary key
/// when it holds nothing or this variant (and its variant's own key is removed once it is
/// committed: an older copy of the same variant kept there is not served after a newer one was
/// stored); its variant's own key when the primary key holds another variant, which keeps it.
/// Several large variants of one URL coexist. (They did not: each took the primary key from the
/// other, and alternating requests were all misses.)
#[tokio::test]
async fn large_variants_are_written_as_they_pass_and_coexist() {
    for mode in MODES {
        varying(mode, Behaviour::Forward).await;
    }
}

/// A store that fails the variant key's delete: the entry is stored all the same, the failure
/// counted as a store write error, and the older copy is what is left under that key (it
/// expires as it would have; the newer one under the primary key is found first).
#[tokio::test]
async fn a_variant_key_that_cannot_be_deleted_is_counted() {
    let metrics = varying(1, Behaviour::FailDeletes).await;
    assert_eq!(
        metrics.store_write_errors(),
        1,
        "the delete of the write under the primary key (the other one deletes nothing)"
    );
}

/// A large variant found stale under its own key (the primary key holds another one), served
/// stale while a background refresh fetches it: the refresh writes it back under its own key
/// too, and the other variant keeps the primary key. (Written under the primary key, it would
/// take it from the other variant, whose next request would be a miss.)
#[tokio::test]
async fn a_large_variant_refreshed_in_the_background_stays_under_its_own_key() {
    let clock = clock();
    let dir = tempfile::tempdir().unwrap();
    let store = watched(dir.path(), Behaviour::Forward);
    let layer = CacheLayer::new(store.clone())
        .max_body_size(64 << 20)
        .clock(clock.clone());
    let (mut svc, len) = serve(layer, "max-age=5, stale-while-revalidate=600");
    len.store(LEN, SeqCst);
    for (encoding, first, count) in [("gzip", b'g', 1), ("br", b'b', 2)] {
        assert_eq!(
            get_varying(&mut svc, encoding, false).await,
            (CacheStatus::Miss, first, count, LEN)
        );
    }
    assert_eq!(store.count("put_stream"), 2, "{:?}", store.seen());
    clock.advance(secs(10));
    assert_eq!(
        get_varying(&mut svc, "br", false).await,
        (CacheStatus::StaleWhileRevalidate, b'b', 2, LEN)
    );
    // The refresh's answer (the origin's third) written back, fresh: a hit.
    until_hit(&mut svc, "br", (b'b', 3)).await;
    assert_eq!(store.count("put_stream"), 3, "{:?}", store.seen());
    assert_eq!(
        store.count("delete"),
        1,
        "gzip's own key, at its first write; nothing at br's: {:?}",
        store.seen()
    );
    // gzip still where it was: stale, served while refreshed, not a miss; then refreshed too,
    // under the primary key.
    assert_eq!(
        get_varying(&mut svc, "gzip", false).await,
        (CacheStatus::StaleWhileRevalidate, b'g', 1, LEN)
    );
    until_hit(&mut svc, "gzip", (b'g', 4)).await;
    assert_eq!(
        get_varying(&mut svc, "br", false).await,
        (CacheStatus::Hit, b'b', 3, LEN)
    );
    assert!(temp_files(dir.path()).is_empty());
}

/// Requests `encoding` until it is a hit (the background refresh written back), bounded; its
/// first byte and the origin's answer count must then be `expected`.
async fn until_hit(svc: &mut Svc, encoding: &str, expected: (u8, u8)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = get_varying(svc, encoding, false).await;
        if got.0 == CacheStatus::Hit {
            assert_eq!(
                (got.1, got.2, got.3),
                (expected.0, expected.1, LEN),
                "{encoding}"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{encoding} never refreshed: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `layer` over an origin whose answers vary on `Accept-Encoding`, with this `Cache-Control`: a
/// body of `len` bytes (1000 at first), its first byte the request's encoding's first letter,
/// its second a count of the origin's answers.
fn serve(layer: CacheLayer<Watch>, cache_control: &'static str) -> (Svc, Arc<AtomicUsize>) {
    let len = Arc::new(AtomicUsize::new(1000));
    let answers = Arc::new(AtomicU8::new(0));
    let l = len.clone();
    let origin = tower::service_fn(move |req: http::Request<()>| {
        let encoding = req.headers()["accept-encoding"].as_bytes()[0];
        let count = answers.fetch_add(1, SeqCst) + 1;
        let mut b = body(l.load(SeqCst));
        b[0] = encoding;
        b[1] = count;
        let response = http::Response::builder()
            .header("cache-control", cache_control)
            .header("vary", "accept-encoding")
            .header("content-length", b.len())
            .body(
                http_body_util::Full::new(Bytes::from(b))
                    .map_err(|e: Infallible| -> BoxError { match e {} })
                    .boxed(),
            )
            .unwrap();
        ready(Ok::<_, Infallible>(response))
    });
    (
        Svc::new(ServiceBuilder::new().layer(layer).service(origin)),
        len,
    )
}

/// A `DiskStore` in `dir`, watched, behaving so.
fn watched(dir: &std::path::Path, behaviour: Behaviour) -> Watch {
    Watch {
        inner: DiskStore::open(dir).unwrap(),
        seen: Arc::default(),
        behaviour,
        stalled: Arc::default(),
        opened: Arc::default(),
    }
}

/// The scenario of the two tests above, in one mode, over a store that behaves so.
async fn varying(mode: u8, behaviour: Behaviour) -> CacheMetrics {
    let dir = tempfile::tempdir().unwrap();
    let store = watched(dir.path(), behaviour);
    let layer = with_mode(CacheLayer::new(store.clone()).max_body_size(64 << 20), mode);
    let metrics = layer.metrics();
    let (mut svc, len) = serve(layer, "max-age=600");
    // A small gzip variant: stored whole, under both keys.
    assert_eq!(
        get_varying(&mut svc, "gzip", false).await,
        (CacheStatus::Miss, b'g', 1, 1000)
    );
    assert_eq!(
        store.count("put_parts") + store.count("put"),
        2,
        "mode {mode}"
    );
    // The same variant, now large, fetched again: streamed under the primary key.
    len.store(LEN, SeqCst);
    refetched(&mut svc, "gzip", (b'g', 2, LEN), mode).await;
    assert_eq!(
        store.count("put_stream"),
        1,
        "mode {mode}: {:?}",
        store.seen()
    );
    assert_eq!(
        store.count("delete"),
        1,
        "the variant's own key, mode {mode}"
    );
    assert_eq!(metrics.stored(), 3, "mode {mode}");
    assert_eq!(
        get_varying(&mut svc, "gzip", false).await,
        (CacheStatus::Hit, b'g', 2, LEN)
    );
    // Another variant, large: streamed under its own key, the primary key left to gzip
    // (nothing deleted). Both are hits from then on, alternating.
    assert_eq!(
        get_varying(&mut svc, "br", false).await,
        (CacheStatus::Miss, b'b', 3, LEN)
    );
    assert_eq!(store.count("put_stream"), 2, "mode {mode}");
    assert_eq!(store.count("delete"), 1, "mode {mode}: {:?}", store.seen());
    for _ in 0..2 {
        assert_eq!(
            get_varying(&mut svc, "br", false).await,
            (CacheStatus::Hit, b'b', 3, LEN),
            "mode {mode}"
        );
        assert_eq!(
            get_varying(&mut svc, "gzip", false).await,
            (CacheStatus::Hit, b'g', 2, LEN),
            "mode {mode}: the newer copy, under the primary key"
        );
    }
    // br again, fetched anew: written under its own key again, over the older copy there,
    // and served from there.
    refetched(&mut svc, "br", (b'b', 4, LEN), mode).await;
    assert_eq!(
        get_varying(&mut svc, "br", false).await,
        (CacheStatus::Hit, b'b', 4, LEN),
        "mode {mode}: the newer br"
    );
    assert_eq!(store.count("put_stream"), 3, "mode {mode}");
    assert_eq!(
        get_varying(&mut svc, "gzip", false).await,
        (CacheStatus::Hit, b'g', 2, LEN),
        "mode {mode}: gzip still under the primary key"
    );

    // A small br, fetched anew, stored whole under both keys: it takes the primary key. gzip
    // is then looked up under its own key, whose older small copy (the origin's first
    // answer) was deleted when the large one was written under the primary key: a miss,
    // not that copy, unless the delete failed.
    len.store(1000, SeqCst);
    refetched(&mut svc, "br", (b'b', 5, 1000), mode).await;
    let expected = match behaviour {
        Behaviour::FailDeletes => (CacheStatus::Hit, b'g', 1, 1000),
        _ => (CacheStatus::Miss, b'g', 6, 1000),
    };
    assert_eq!(
        get_varying(&mut svc, "gzip", false).await,
        expected,
        "mode {mode}: not the older copy, unless it could not be deleted"
    );
    assert!(temp_files(dir.path()).is_empty());
    metrics
}

/// A request for `encoding` with `Cache-Control: no-cache`: answered by the origin (its body's
/// first byte, the origin's answer count and its length as `expected`), and stored.
async fn refetched(svc: &mut Svc, encoding: &str, expected: (u8, u8, usize), mode: u8) {
    let (status, first, count, got_len) = get_varying(svc, encoding, true).await;
    assert_eq!((first, count, got_len), expected, "mode {mode}: {status:?}");
}

/// A request for `/varies` with this `Accept-Encoding` (and `Cache-Control: no-cache`): how it
/// was answered, the body's first two bytes and its length.
async fn get_varying(
    svc: &mut Svc,
    encoding: &str,
    no_cache: bool,
) -> (CacheStatus, u8, u8, usize) {
    let mut req = request("varies");
    req.headers_mut()
        .insert("accept-encoding", encoding.parse().unwrap());
    if no_cache {
        req.headers_mut()
            .insert("cache-control", "no-cache".parse().unwrap());
    }
    let response = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = response.extensions().get::<CacheStatus>().cloned();
    let got = response.into_body().collect().await.unwrap().to_bytes();
    (status.unwrap(), got[0], got[1], got.len())
}
