//! Format 4 end to end: a large entry on disk is streamed to the caller a verified segment at a
//! time, and a changed byte anywhere in it never releases a byte of its segment: the head fails
//! before any response, a body segment ends the body with `BadSignature` (counted, the entry
//! deleted) after the verified prefix at most.

use std::convert::Infallible;
use std::future::ready;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body as _;
use hyper_client_cache::{
    BadSignature, CacheLayer, CacheMetrics, CacheStatus, DiskStore, StoreRequest, StoreResponse,
};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common::*;
use crate::entry_modes::{body, read, refused, request, Mode, Svc, LEN, SEGMENT};

fn cache(mode: Mode, dir: &std::path::Path) -> (Svc, DiskStore, CacheMetrics) {
    let store = DiskStore::open(dir).unwrap();
    let layer = mode.layer(store.clone());
    let metrics = layer.metrics();
    (crate::entry_modes::serving(layer), store, metrics)
}

/// Where the entry's body records are in a `DiskStore` file (start, end), and a byte inside
/// its head record: a streamed write's file (version 2) holds the envelope's header and head
/// after the body, a whole write's (version 1) before it.
fn layout(bytes: &[u8], mode: Mode) -> (usize, usize, usize) {
    let body_len = LEN + LEN.div_ceil(SEGMENT) * mode.per_segment();
    if bytes[4] == 2 {
        let key_len = usize::from(u16::from_be_bytes([bytes[13], bytes[14]]));
        let start = 15 + key_len + 16;
        (start, start + body_len, bytes.len() - 40)
    } else {
        let start = bytes.len() - body_len;
        (start, bytes.len(), start - 40)
    }
}

async fn fill(svc: &mut Svc) {
    let response = svc.ready().await.unwrap().call(request()).await.unwrap();
    let (got, err) = read(response.into_body()).await;
    assert!(err.is_none());
    assert_eq!(got.len(), LEN);
}

#[tokio::test]
async fn a_large_disk_entry_is_streamed_whole_in_every_mode() {
    for mode in crate::entry_modes::MODES {
        let dir = tempfile::tempdir().unwrap();
        let (mut svc, store, metrics) = cache(mode, dir.path());
        fill(&mut svc).await;
        // The store answers with a stream, not the file in memory.
        let keys = match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
            StoreResponse::Keys(keys) => keys,
            other => panic!("{other:?}"),
        };
        assert_eq!(keys.len(), 1);
        let answer = store
            .clone()
            .oneshot(StoreRequest::get(keys[0].clone()))
            .await
            .unwrap();
        assert!(
            matches!(answer, StoreResponse::Stream(_)),
            "{mode:?}: {answer:?}"
        );
        let hit = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(
            hit.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Hit)
        );
        assert_eq!(hit.body().size_hint().exact(), Some(LEN as u64));
        let (got, err) = read(hit.into_body()).await;
        assert!(err.is_none(), "{mode:?}: {err:?}");
        assert!(got == body(), "{mode:?}: the hit's body differs");
        assert_eq!(metrics.hits(), 1);
    }
}

/// One byte changed in a body segment of the entry file, in every mode and at several places:
/// the response starts (its head verified), the caller gets whole segments before the changed
/// one at most, then an error (`BadSignature` with a key); the entry is deleted and counted.
#[tokio::test]
async fn a_changed_segment_of_a_streamed_hit_releases_nothing_of_itself() {
    for mode in crate::entry_modes::MODES {
        for place in [0.2, 0.5, 0.97, 0.99999] {
            let dir = tempfile::tempdir().unwrap();
            let (mut svc, _store, metrics) = cache(mode, dir.path());
            fill(&mut svc).await;
            let file = entry_files(dir.path()).pop().unwrap();
            let mut bytes = std::fs::read(&file).unwrap();
            let (body_start, body_end, _) = layout(&bytes, mode);
            let at = body_start + ((body_end - body_start) as f64 * place) as usize;
            bytes[at] ^= 0x01;
            std::fs::write(&file, &bytes).unwrap();
            let segment = (at - body_start) / (SEGMENT + mode.per_segment());

            let hit = svc.ready().await.unwrap().call(request()).await.unwrap();
            let (got, err) = read(hit.into_body()).await;
            let err = err.unwrap_or_else(|| panic!("{mode:?} {place}: the body ended well"));
            crate::entry_modes::assert_only_verified(&got, segment, &format!("{mode:?} {place}"));
            crate::entry_modes::assert_ended_by_a_change(mode, &err, &metrics);
            // Deleted in the background: the next request goes to the origin.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while mode_is_keyed(mode) && !entry_files(dir.path()).is_empty() {
                assert!(tokio::time::Instant::now() < deadline, "never deleted");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

fn mode_is_keyed(mode: Mode) -> bool {
    !matches!(mode, Mode::Unsigned)
}

/// A byte changed in the head (or the envelope header) of a streamed entry: refused before any
/// response, as for an entry read whole.
#[tokio::test]
async fn a_changed_head_of_a_streamed_entry_fails_before_any_response() {
    for mode in [Mode::Blake3, Mode::Encrypted] {
        let dir = tempfile::tempdir().unwrap();
        let (mut svc, _store, metrics) = cache(mode, dir.path());
        fill(&mut svc).await;
        let file = entry_files(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let (_, _, in_head) = layout(&bytes, mode);
        bytes[in_head] ^= 0x01;
        std::fs::write(&file, &bytes).unwrap();
        refused(&mut svc, &format!("{mode:?}")).await;
        assert_eq!(metrics.bad_signatures(), 1);
    }
}

/// Cut short (a file truncated by a full disk, or by someone): the verified prefix, then an
/// error, never a short body that looks complete.
#[tokio::test]
async fn a_streamed_entry_cut_short_ends_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (mut svc, store, _metrics) = cache(Mode::Blake3, dir.path());
    fill(&mut svc).await;
    let file = entry_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    // Rewritten through the store with a shorter blob: its own framing is whole, the entry not.
    let keys = match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(keys) => keys,
        other => panic!("{other:?}"),
    };
    let blob = get_raw(&store, keys[0].clone()).await.unwrap();
    put_raw(&store, keys[0].clone(), blob.slice(..blob.len() - SEGMENT)).await;
    assert!(std::fs::read(&file).unwrap().len() < bytes.len());
    let hit = svc.ready().await.unwrap().call(request()).await.unwrap();
    let (got, err) = read(hit.into_body()).await;
    let err = err.expect("an error");
    assert!(err.downcast_ref::<BadSignature>().is_some(), "{err}");
    assert!(got.len() < LEN && got.len() % SEGMENT == 0);
}

/// An origin for the revalidation tests: `max-age=1`, an `ETag`, optionally
/// `stale-while-revalidate`; answers `304` to `If-None-Match`, and notes each request's
/// validator.
fn revalidating_cache(
    dir: &std::path::Path,
    clock: &hyper_client_cache::ManualClock,
    swr: bool,
) -> (Svc, crate::entry_modes::Seen) {
    let store = DiskStore::builder(dir).clock(clock.clone()).open().unwrap();
    let layer = CacheLayer::new(store)
        .secret_key(test_key())
        .clock(clock.clone());
    let cc = if swr {
        "max-age=1, stale-while-revalidate=600"
    } else {
        "max-age=1"
    };
    crate::entry_modes::revalidating(layer, cc)
}

/// A stale streamed entry revalidated in the foreground: the `304` is answered with the stored
/// body, streamed and verified (the entry is not written again: its body is the caller's).
#[tokio::test]
async fn a_streamed_entry_revalidated_by_a_304_serves_its_stored_body() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let (mut svc, seen) = revalidating_cache(dir.path(), &clock, false);
    fill(&mut svc).await;
    clock.advance(secs(10));
    let response = svc.ready().await.unwrap().call(request()).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Revalidated)
    );
    let (got, err) = read(response.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(got == body());
    assert_eq!(*seen.lock().unwrap(), [None, Some("\"v1\"".to_owned())]);
}

/// A stale streamed entry under `stale-while-revalidate`: served at once, streamed, and
/// refreshed in the background with a whole request (its body was the caller's to read, so
/// there is none to keep for a `304`).
#[tokio::test]
async fn a_streamed_stale_entry_is_served_and_refreshed_without_validators() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let (mut svc, seen) = revalidating_cache(dir.path(), &clock, true);
    fill(&mut svc).await;
    clock.advance(secs(10));
    let response = svc.ready().await.unwrap().call(request()).await.unwrap();
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::StaleWhileRevalidate)
    );
    let (got, err) = read(response.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert!(got == body());
    assert_eq!(
        crate::entry_modes::refreshed(&seen).await,
        None,
        "the refresh sent a validator"
    );
}

/// A store whose stream of the entry gives its first `cut` bytes, then `rest`: hangs, or fails.
fn cut_store(blob: Bytes, cut: usize, hang: bool) -> impl hyper_client_cache::Store {
    tower::service_fn(move |req: StoreRequest| {
        let blob = blob.clone();
        async move {
            Ok::<_, Infallible>(match req {
                StoreRequest::Get { .. } => {
                    use futures_util::StreamExt;
                    let first = futures_util::stream::iter(
                        blob.slice(..cut)
                            .chunks(100_000)
                            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                            .collect::<Vec<_>>(),
                    );
                    let stream = if hang {
                        first.chain(futures_util::stream::pending()).boxed()
                    } else {
                        first
                            .chain(futures_util::stream::once(async {
                                Err(std::io::Error::other("the disk failed"))
                            }))
                            .boxed()
                    };
                    StoreResponse::Stream(hyper_client_cache::BlobStream::new(
                        blob.len() as u64,
                        stream,
                    ))
                }
                _ => StoreResponse::Done,
            })
        }
    })
}

/// The entry `fill` stores, as the store holds it.
async fn sealed_entry() -> Bytes {
    let store = hyper_client_cache::MemoryStore::new(64 << 20);
    let layer = CacheLayer::new(store.clone()).secret_key(test_key());
    let mut svc = crate::entry_modes::serving(layer);
    fill(&mut svc).await;
    let keys = match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(keys) => keys,
        other => panic!("{other:?}"),
    };
    get_raw(&store, keys[0].clone()).await.unwrap()
}

fn over(store: impl hyper_client_cache::Store) -> (Svc, CacheMetrics) {
    let layer = CacheLayer::new(store)
        .secret_key(test_key())
        .store_timeout(Duration::from_millis(100));
    let metrics = layer.metrics();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|_req: http::Request<()>| {
            ready(Ok::<_, Infallible>(
                http::Response::builder()
                    .body(http_body_util::Full::new(Bytes::from_static(b"origin")))
                    .unwrap(),
            ))
        }));
    (Svc::new(svc), metrics)
}

/// A store whose stream stops giving bytes halfway (a hung disk, a stalled connection): the
/// verified prefix, then a timeout error once the store timeout has passed with the caller
/// waiting; never a body that waits forever.
#[tokio::test]
async fn a_store_stream_that_hangs_halfway_ends_the_body_at_the_store_timeout() {
    let blob = sealed_entry().await;
    let (mut svc, metrics) = over(cut_store(blob.clone(), blob.len() / 2, true));
    let hit = svc.ready().await.unwrap().call(request()).await.unwrap();
    assert_eq!(
        hit.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    let (got, err) = tokio::time::timeout(Duration::from_secs(10), read(hit.into_body()))
        .await
        .expect("the body never ended");
    let err = err.expect("an error");
    let store_err = err
        .downcast_ref::<hyper_client_cache::StoreError>()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(store_err.is_timeout());
    assert!(!got.is_empty() && got.len() < LEN && got[..] == body()[..got.len()]);
    assert_eq!(metrics.bad_signatures(), 0);
}

/// A store whose stream fails halfway: the verified prefix, then the store's error (not a bad
/// signature: nothing is deleted for it).
#[tokio::test]
async fn a_store_stream_that_fails_halfway_ends_the_body_with_its_error() {
    let blob = sealed_entry().await;
    let (mut svc, metrics) = over(cut_store(blob.clone(), blob.len() / 2, false));
    let hit = svc.ready().await.unwrap().call(request()).await.unwrap();
    let (got, err) = read(hit.into_body()).await;
    let err = err.expect("an error");
    assert!(err.to_string().contains("the disk failed"), "{err}");
    assert!(got.len() < LEN && got[..] == body()[..got.len()]);
    assert_eq!(metrics.bad_signatures(), 0);
}

/// The inspector (`hcc list`/`show`) verifies a streamed disk entry a read at a time, every
/// segment, as a hit does: a changed segment or head is reported invalid (a bad signature with a
/// key), never described as an entry; a file cut short is not an entry at all (the store's own
/// check).
#[tokio::test]
async fn the_inspector_verifies_a_streamed_entry_segment_by_segment() {
    use hyper_client_cache::Described;
    for mode in [Mode::Unsigned, Mode::Blake3, Mode::Encrypted] {
        let dir = tempfile::tempdir().unwrap();
        let (mut svc, store, _) = cache(mode, dir.path());
        fill(&mut svc).await;
        let layer = mode.layer(store.clone());
        let key = layer.key_for(&request());
        let inspector = layer.inspector();
        let file = entry_files(dir.path()).pop().unwrap();
        let genuine = std::fs::read(&file).unwrap();
        match inspector.describe(&key).await.unwrap() {
            Some(Described::Entry(info)) => {
                assert!(info.size > LEN, "{mode:?}: {}", info.size);
                assert!(inspector
                    .contains("http://example.test/large")
                    .await
                    .unwrap());
            }
            other => panic!("{mode:?}: {other:?}"),
        }
        let (body_start, body_end, in_head) = layout(&genuine, mode);
        let cut = genuine.len() - SEGMENT;
        for (what, bytes) in [
            ("a body segment", {
                let mut b = genuine.clone();
                b[(body_start + body_end) / 2] ^= 1;
                b
            }),
            ("the head", {
                let mut b = genuine.clone();
                b[in_head] ^= 1;
                b
            }),
            ("cut short", genuine[..cut].to_vec()),
        ] {
            std::fs::write(&file, &bytes).unwrap();
            match (what, inspector.describe(&key).await.unwrap()) {
                // The store sees a torn file first (its length): nothing stored there.
                ("cut short", None) => {}
                (_, Some(Described::Invalid(invalid))) => {
                    assert_eq!(
                        invalid.bad_signature,
                        mode_is_keyed(mode),
                        "{mode:?} {what}"
                    )
                }
                (_, other) => panic!("{mode:?} {what}: {other:?}"),
            }
            assert!(
                !inspector
                    .contains("http://example.test/large")
                    .await
                    .unwrap_or(false),
                "{mode:?} {what}"
            );
        }
    }
}

/// The inspector reading a store stream that hangs or fails halfway: a store error (a timeout,
/// each read bounded by the store timeout), never a wait without end or an entry.
#[tokio::test]
async fn the_inspector_fails_on_a_store_stream_that_hangs_or_fails_halfway() {
    let blob = sealed_entry().await;
    for hang in [true, false] {
        let layer = CacheLayer::new(cut_store(blob.clone(), blob.len() / 2, hang))
            .secret_key(test_key())
            .store_timeout(Duration::from_millis(100));
        let key = layer.key_for(&request());
        let inspector = layer.inspector();
        let err = tokio::time::timeout(Duration::from_secs(10), inspector.describe(&key))
            .await
            .expect("the inspection never ended")
            .expect_err("a store error");
        assert_eq!(err.is_timeout(), hang, "{err}");
    }
}
