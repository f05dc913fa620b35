//! A large entry a store answers whole (a Redis value, a `MemoryStore`'s parts) is opened as a
//! stream a store answers is: its head verified before any response, then each 64 KiB segment as
//! the caller reads it. The first byte does not wait for the last segment's proof; a changed
//! segment ends the body with `BadSignature` after the verified prefix, releases nothing of
//! itself, and the entry is deleted and counted (an unsigned one whose checksum fails: deleted).
//! Being in memory, the entry can still be copied (`stale-while-revalidate` keeps its
//! validators), and a stale one is verified whole before it is revalidated, so that a `304`
//! serves it and writes it back.

use std::convert::Infallible;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_client_cache::{BoxError, CacheMetrics, CacheStatus, MemoryStore, Store};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common::*;
use crate::entry_modes::{
    assert_only_verified, body, read, refused, request, until_deleted, Mode, Svc, LEN, MODES,
    SEGMENT,
};

/// A cache over `store` whose origin answers the large body, fresh for 10 minutes; the
/// requests the origin saw (their `If-None-Match`).
fn cache<St: Store>(
    mode: Mode,
    store: St,
    clock: Option<&hyper_client_cache::ManualClock>,
    cache_control: &'static str,
) -> (Svc, CacheMetrics, crate::entry_modes::Seen) {
    let mut layer = mode.layer(store);
    if let Some(clock) = clock {
        layer = layer.clock(clock.clone());
    }
    let metrics = layer.metrics();
    let (svc, seen) = crate::entry_modes::revalidating(layer, cache_control);
    (svc, metrics, seen)
}

/// The response's status, the bytes its body released and the error that ended it.
async fn fetch(svc: &mut Svc) -> (Option<CacheStatus>, Vec<u8>, Option<BoxError>) {
    let response = svc.ready().await.unwrap().call(request()).await.unwrap();
    let status = response.extensions().get::<CacheStatus>().cloned();
    let (got, err) = read(response.into_body()).await;
    (status, got, err)
}

/// Requests until the answer is a hit (the entry written back in the background), bounded.
async fn until_hit(svc: &mut Svc) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, got, _) = fetch(svc).await;
        assert!(got == body());
        if status == Some(CacheStatus::Hit) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never written back: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Changes one byte of the stored entry at `place` (0..1) of its body records, and puts it back:
/// the segment it falls in.
async fn change<St: Store>(store: &St, mode: Mode, place: f64) -> usize {
    let key = mode.layer(store.clone()).key_for(&request());
    let mut bytes = get_raw(store, key.clone()).await.unwrap().to_vec();
    let body_len = LEN + LEN.div_ceil(SEGMENT) * mode.per_segment();
    let start = bytes.len() - body_len;
    let at = start + (body_len as f64 * place) as usize;
    bytes[at] ^= 0x01;
    put_raw(store, key, Bytes::from(bytes)).await;
    (at - start) / (SEGMENT + mode.per_segment())
}

/// A cache over a memory store on a manual clock whose entry was stored, then changed at `place`
/// and left to go stale (10 s later); the store, to look at after.
async fn changed_and_stale(
    mode: Mode,
    cache_control: &'static str,
    place: f64,
) -> (Svc, CacheMetrics, crate::entry_modes::Seen, MemoryStore) {
    let clock = clock();
    let store = MemoryStore::with_clock(64 << 20, clock.clone());
    let (mut svc, metrics, seen) = cache(mode, store.clone(), Some(&clock), cache_control);
    fetch(&mut svc).await;
    change(&store, mode, place).await;
    clock.advance(secs(10));
    (svc, metrics, seen, store)
}

/// What the tests below check of a hit on a changed entry, over any store.
async fn a_changed_segment_ends_the_body<St: Store>(store: St, mode: Mode, place: f64) {
    let (mut svc, metrics, _) = cache(mode, store.clone(), None, "max-age=600");
    let (status, got, err) = fetch(&mut svc).await;
    assert_eq!(
        (status, got.len(), err.is_none()),
        (Some(CacheStatus::Miss), LEN, true)
    );
    let segment = change(&store, mode, place).await;
    // Before this, a whole blob was verified before any response: the call itself failed.
    let (status, got, err) = fetch(&mut svc).await;
    assert_eq!(status, Some(CacheStatus::Hit), "{mode:?} {place}");
    let err = err.unwrap_or_else(|| panic!("{mode:?} {place}: the body ended well"));
    assert_only_verified(&got, segment, &format!("{mode:?} {place}"));
    // The segments before the changed one were released: verified as they were read.
    assert_eq!(
        got.len(),
        segment * SEGMENT,
        "{mode:?} {place}: the verified prefix"
    );
    crate::entry_modes::assert_ended_by_a_change(mode, &err, &metrics);
    // Deleted (in the background), an unsigned entry whose checksum fails too: the next request
    // goes to the origin, instead of every hit ending the same way until the entry expires.
    until_deleted(&store, mode.layer(store.clone()).key_for(&request())).await;
    let (status, got, err) = fetch(&mut svc).await;
    assert_eq!(status, Some(CacheStatus::Miss), "{mode:?} {place}");
    assert!(err.is_none() && got == body(), "{mode:?} {place}");
}

#[tokio::test]
async fn a_changed_segment_of_a_large_memory_entry_ends_its_body_after_the_verified_prefix() {
    for mode in MODES {
        for place in [0.2, 0.97] {
            a_changed_segment_ends_the_body(MemoryStore::new(64 << 20), mode, place).await;
        }
    }
}

#[cfg(all(feature = "disk", feature = "redis", feature = "test-util"))]
#[tokio::test]
async fn a_changed_segment_of_a_large_redis_value_ends_its_body_after_the_verified_prefix() {
    let redis = RedisServer::start().await;
    for mode in MODES {
        let store = hyper_client_cache::RedisStore::connect(&redis.url())
            .await
            .unwrap();
        store
            .clone()
            .oneshot(hyper_client_cache::StoreRequest::Clear)
            .await
            .unwrap();
        a_changed_segment_ends_the_body(store, mode, 0.5).await;
    }
}

/// With `OnBadSignature::Refetch`, a large entry in memory is verified whole before the response,
/// as a smaller one is: a changed segment is never seen by the caller, who gets the origin's
/// response, whole.
#[tokio::test]
async fn with_refetch_a_changed_large_memory_entry_is_fetched_again_whole() {
    let store = MemoryStore::new(64 << 20);
    let layer = Mode::Blake3
        .layer(store.clone())
        .on_bad_signature(hyper_client_cache::OnBadSignature::Refetch);
    let mut svc = crate::entry_modes::serving(layer);
    fetch(&mut svc).await;
    change(&store, Mode::Blake3, 0.97).await;
    let (status, got, err) = fetch(&mut svc).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(status, Some(CacheStatus::Miss));
    assert!(got == body());
}

/// A changed head is refused before any response, as for any entry.
#[tokio::test]
async fn a_changed_head_of_a_large_memory_entry_fails_before_any_response() {
    let store = MemoryStore::new(64 << 20);
    let (mut svc, _, _) = cache(Mode::Blake3, store.clone(), None, "max-age=600");
    fetch(&mut svc).await;
    let key = Mode::Blake3.layer(store.clone()).key_for(&request());
    let mut bytes = get_raw(&store, key.clone()).await.unwrap().to_vec();
    let body_len = LEN + LEN.div_ceil(SEGMENT) * Mode::Blake3.per_segment();
    let head_byte = bytes.len() - body_len - 40;
    bytes[head_byte] ^= 0x01;
    put_raw(&store, key, Bytes::from(bytes)).await;
    refused(&mut svc, "").await;
}

/// Stale under `stale-while-revalidate`: served, and refreshed in the background with its
/// validator (the entry is in memory, so it is kept for a `304`, which writes it back: the next
/// request is a hit, with no request to the origin). A stream a store answers cannot be kept so
/// (`segments::a_streamed_stale_entry_is_served_and_refreshed_without_validators`).
#[tokio::test]
async fn a_stale_large_memory_entry_is_refreshed_with_its_validator_and_written_back() {
    let clock = clock();
    let store = MemoryStore::with_clock(64 << 20, clock.clone());
    let (mut svc, _, seen) = cache(
        Mode::Blake3,
        store,
        Some(&clock),
        "max-age=1, stale-while-revalidate=600",
    );
    fetch(&mut svc).await;
    clock.advance(secs(10));
    let (status, got, err) = fetch(&mut svc).await;
    assert_eq!(status, Some(CacheStatus::StaleWhileRevalidate));
    assert!(err.is_none() && got == body());
    assert_eq!(
        crate::entry_modes::refreshed(&seen).await.as_deref(),
        Some("\"v1\""),
        "its validator"
    );
    // Written back by the refresh: fresh again, a hit.
    until_hit(&mut svc).await;
}

/// A changed large entry found stale under `stale-while-revalidate`, by a caller that does not
/// read the body: the background refresh's `304` finds the change when it verifies the kept
/// copy to write it back, and it is deleted then, and counted once (not written back, not left to
/// be refreshed again and again): as a bad signature, or unsigned, as an unusable entry.
#[tokio::test]
async fn a_changed_large_entry_met_by_a_background_refresh_is_counted_and_deleted() {
    for mode in [Mode::Blake3, Mode::Unsigned] {
        let (mut svc, metrics, seen, store) =
            changed_and_stale(mode, "max-age=1, stale-while-revalidate=600", 0.5).await;
        let response = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::StaleWhileRevalidate)
        );
        drop(response);
        let key = mode.layer(store.clone()).key_for(&request());
        let counted = u64::from(mode != Mode::Unsigned);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.bad_signatures() < counted || get_raw(&store, key.clone()).await.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{mode:?}: not counted or not deleted: {} bad signatures, origin saw {:?}",
                metrics.bad_signatures(),
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metrics.bad_signatures(), counted, "{mode:?}: once");
        assert_eq!(metrics.unusable_entries(), 1 - counted, "{mode:?}: once");
        assert_eq!(seen.lock().unwrap()[1].as_deref(), Some("\"v1\""));
    }
}

/// Stale, revalidated in the foreground: the `304` serves the stored body and writes the entry
/// back, verified whole then (the next request is a hit).
#[tokio::test]
async fn a_large_memory_entry_revalidated_by_a_304_is_written_back() {
    let clock = clock();
    let store = MemoryStore::with_clock(64 << 20, clock.clone());
    let (mut svc, _, seen) = cache(Mode::Hmac, store, Some(&clock), "max-age=5");
    fetch(&mut svc).await;
    clock.advance(secs(10));
    let (status, got, err) = fetch(&mut svc).await;
    assert_eq!(status, Some(CacheStatus::Revalidated));
    assert!(err.is_none() && got == body());
    until_hit(&mut svc).await;
    assert_eq!(seen.lock().unwrap().len(), 2, "one revalidation, then hits");
}

/// Stale, changed, to be revalidated in the foreground: a `304` would serve the stored body, so
/// it is verified whole before the conditional request is sent, and refused before any
/// response, as a changed entry of any size found at the lookup is: `BadSignature`, counted
/// once, deleted, and the origin not asked. (It was first served as `Revalidated` with its body
/// ending in the error; then refused after the `304`; a `200` instead replaced it unnoticed.)
#[tokio::test]
async fn a_changed_large_memory_entry_is_refused_before_it_is_revalidated() {
    let (mut svc, metrics, seen, store) = changed_and_stale(Mode::Hmac, "max-age=5", 0.97).await;
    refused(&mut svc, "").await;
    assert_eq!(seen.lock().unwrap().len(), 1, "no conditional request sent");
    assert_eq!(metrics.bad_signatures(), 1);
    assert_eq!(metrics.unusable_entries(), 0);
    until_deleted(&store, Mode::Hmac.layer(store.clone()).key_for(&request())).await;
    // The next request goes to the origin, and is stored again.
    let (status, got, err) = fetch(&mut svc).await;
    assert_eq!(status, Some(CacheStatus::Miss));
    assert!(err.is_none() && got == body());
}

/// An unsigned large entry whose checksum fails, stale: its validators are not sent (a `304`
/// would have served a body that ends in the error, every time, the entry never deleted); the
/// request goes to the origin whole, as for an unusable entry of any size, and its answer is
/// served and stored.
#[tokio::test]
async fn an_unusable_large_memory_entry_is_not_revalidated_but_fetched_again() {
    let (mut svc, metrics, seen, _) = changed_and_stale(Mode::Unsigned, "max-age=5", 0.5).await;
    let (status, got, err) = fetch(&mut svc).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(status, Some(CacheStatus::Miss));
    assert!(got == body());
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![None, None],
        "the second request without validators"
    );
    assert_eq!(metrics.bad_signatures(), 0, "a checksum, not a proof");
    assert_eq!(metrics.unusable_entries(), 1, "counted as unusable, once");
    // Stored again, whole, and not deleted after by the delete of the unusable one (a delete
    // left for later would run at these yields, after the new entry's write): a hit.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let (status, got, err) = fetch(&mut svc).await;
    assert!(err.is_none() && got == body());
    assert_eq!(status, Some(CacheStatus::Hit));
}

/// Two large parts of one representation (each at least 1 MiB, so the stored one is verified as
/// it is read) still combine into the whole (RFC 9111 §3.4): the stored part is verified whole
/// for that.
#[tokio::test]
async fn large_partial_responses_in_memory_still_combine() {
    let store = MemoryStore::new(64 << 20);
    let origin = tower::service_fn(|req: http::Request<()>| {
        let all = body();
        let n = all.len();
        let b = http::Response::builder()
            .header("cache-control", "max-age=600")
            .header("etag", "\"strong\"");
        let range = req
            .headers()
            .get("range")
            .map(|v| v.to_str().unwrap().to_owned());
        let response = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
            Some(spec) => {
                let (first, last) = spec.split_once('-').unwrap();
                let first: usize = first.parse().unwrap();
                let last: usize = last.parse::<usize>().map_or(n - 1, |l| l.min(n - 1));
                b.status(206)
                    .header("content-range", format!("bytes {first}-{last}/{n}"))
                    .header("content-length", last + 1 - first)
                    .body(http_body_util::Full::new(all.slice(first..=last)))
                    .unwrap()
            }
            None => b
                .header("content-length", n)
                .body(http_body_util::Full::new(all))
                .unwrap(),
        };
        ready(Ok::<_, Infallible>(response))
    });
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let origin = tower::ServiceExt::map_request(origin, move |req: http::Request<()>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        req
    });
    let mut svc = Svc::new(
        ServiceBuilder::new()
            .layer(Mode::Blake3.layer(store))
            .service(origin),
    );
    let ranged = |range: String| {
        http::Request::get("http://example.test/large")
            .header("range", range)
            .body(())
            .unwrap()
    };
    let half = LEN / 2;
    for (range, from) in [
        (format!("bytes=0-{}", half + 1000), 0),
        (format!("bytes={half}-"), half),
    ] {
        let response = svc
            .ready()
            .await
            .unwrap()
            .call(ranged(range))
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        let got = response.into_body().collect().await.unwrap().to_bytes();
        assert!(got[..] == body()[from..from + got.len()]);
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Combined into the whole representation: a hit.
    let (status, got, err) = fetch(&mut svc).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(status, Some(CacheStatus::Hit), "not combined");
    assert!(got == body());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}
