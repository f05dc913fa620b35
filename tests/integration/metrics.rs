//! The `metrics` feature: what a recorder gets after a scripted sequence of requests.

use std::collections::HashMap;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper_client_cache::{BoxError, CacheLayer, StoreRequest, StoreResponse};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use crate::common::*;

/// Counter values and histogram sample counts, by `name{label=value,...}`.
fn snapshot(recorder: &DebuggingRecorder) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let n = match value {
            DebugValue::Counter(n) => n,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => continue,
        };
        out.insert(name, n);
    }
    out
}

/// Runs `scenario` on a current-thread runtime with a recorder of its own: what it returned, and
/// the metrics recorded.
fn recorded<F: std::future::Future>(
    scenario: impl FnOnce() -> F,
) -> (F::Output, HashMap<String, u64>) {
    let recorder = DebuggingRecorder::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = metrics::with_local_recorder(&recorder, || rt.block_on(scenario()));
    (out, snapshot(&recorder))
}

#[test]
fn a_scripted_sequence_gives_these_metrics() {
    let ((), m) = recorded(|| async {
        let origin = Origin::start(|s| {
            let cc = match s.uri.path() {
                "/nostore" => "no-store",
                "/short" => "max-age=1",
                _ => "max-age=60",
            };
            Response::builder()
                .header("cache-control", cc)
                .body(Full::new(Bytes::from_static(b"body")))
                .unwrap()
        })
        .await;
        let clock = clock();
        let store = hyper_client_cache::MemoryStore::with_clock(1 << 20, clock.clone());
        let mut client = cached_client(
            CacheLayer::new(store.clone())
                .clock(clock.clone())
                .secret_key(test_key()),
        );
        let a = origin.url("/a");
        get(&mut client, &a).await.unwrap(); // miss, stored
        get(&mut client, &a).await.unwrap(); // hit
        get(&mut client, &origin.url("/nostore")).await.unwrap(); // not stored
        let short = origin.url("/short");
        get(&mut client, &short).await.unwrap(); // miss, stored
        clock.advance(secs(5));
        let stale = http::Request::get(&short)
            .header("cache-control", "max-stale=60")
            .body(http_body_util::Empty::new())
            .unwrap();
        send(&mut client, stale).await.unwrap(); // stale
        put_raw(&store, key_for(&a), Bytes::from_static(b"exploit!")).await;
        assert!(get(&mut client, &a).await.is_err()); // bad signature

        // A store that fails every operation: the lookup is a store error, the request a
        // miss at the origin (fail-open).
        let broken = tower::service_fn(|_request: StoreRequest| async {
            Err::<StoreResponse, BoxError>("the store is down".into())
        });
        let mut failing = cached_client(CacheLayer::new(broken).without_circuit_breaker());
        get(&mut failing, &origin.url("/b")).await.unwrap();

        // A store that refuses every write (as one does an entry over its limit): a
        // refusal, not an error.
        let refusing = tower::service_fn(|request: StoreRequest| async move {
            Ok::<_, BoxError>(match request {
                StoreRequest::Get { .. } => StoreResponse::Blob(None),
                _ => StoreResponse::NotStored,
            })
        });
        let mut refused = cached_client(CacheLayer::new(refusing));
        get(&mut refused, &origin.url("/c")).await.unwrap();
    });
    let get = |name: &str| m.get(name).copied().unwrap_or(0);
    assert_eq!(get("http_cache_requests_total{status=miss}"), 3, "{m:#?}");
    assert_eq!(get("http_cache_requests_total{status=hit}"), 1, "{m:#?}");
    assert_eq!(get("http_cache_requests_total{status=stale}"), 1, "{m:#?}");
    assert_eq!(
        get("http_cache_requests_total{status=not_cacheable}"),
        1,
        "{m:#?}"
    );
    assert_eq!(
        get("http_cache_requests_total{status=store_unavailable}"),
        1,
        "{m:#?}"
    );
    assert_eq!(
        get("http_cache_not_stored_total{reason=response_no_store}"),
        1,
        "{m:#?}"
    );
    assert_eq!(get("http_cache_stored_total{}"), 2, "{m:#?}");
    assert_eq!(
        get("http_cache_bad_signatures_total{reason=malformed}"),
        1,
        "{m:#?}"
    );
    assert!(
        get("http_cache_store_operation_duration_seconds{operation=get,outcome=ok}") >= 6,
        "{m:#?}"
    );
    assert_eq!(
        get("http_cache_store_operation_duration_seconds{operation=put,outcome=ok}"),
        2,
        "{m:#?}"
    );
    assert!(
        get("http_cache_store_operation_duration_seconds{operation=get,outcome=error}") >= 1,
        "{m:#?}"
    );
    assert_eq!(
        get("http_cache_store_operation_duration_seconds{operation=put,outcome=refused}"),
        1,
        "{m:#?}"
    );
    assert_eq!(get("http_cache_store_refused_total{}"), 1, "{m:#?}");
    assert_eq!(
        get("http_cache_store_operation_duration_seconds{operation=put,outcome=error}"),
        1,
        "the failing store's write only: {m:#?}"
    );
    assert_eq!(
        get("http_cache_blob_size_bytes{operation=put}"),
        2,
        "the two stored, not the refused one: {m:#?}"
    );
    assert!(
        get("http_cache_blob_size_bytes{operation=get}") >= 2,
        "{m:#?}"
    );
    // Label values come from fixed sets: no URL, key or header value in any series name.
    for name in m.keys() {
        assert!(
            !name.contains("127.0.0.1") && !name.contains("hcc1"),
            "{name}"
        );
    }
}

/// The breaker's transitions are counted (the store fails, the breaker opens).
#[test]
fn breaker_transitions_are_counted() {
    let ((), m) = recorded(|| async {
        let origin = Origin::fixed("max-age=60", "x").await;
        let broken = tower::service_fn(|_request: StoreRequest| async {
            Err::<StoreResponse, BoxError>("the store is down".into())
        });
        let mut client = cached_client(CacheLayer::new(broken));
        for i in 0..8 {
            get(&mut client, &origin.url(&format!("/{i}")))
                .await
                .unwrap();
        }
    });
    assert_eq!(
        m.get("http_cache_breaker_transitions_total{to=open}"),
        Some(&1),
        "{m:#?}"
    );
    assert!(
        m.get("http_cache_store_operation_duration_seconds{operation=get,outcome=skipped}")
            .is_some_and(|n| *n >= 1),
        "{m:#?}"
    );
}

/// Entries found and not used for a reason other than a failed proof are counted by kind: a
/// miss each, replaced by the origin's answer, counted once.
#[test]
fn unusable_entries_are_counted_by_kind() {
    let (metrics, m) = recorded(|| async {
        let origin = Origin::fixed("max-age=60", "from the origin").await;
        let store = hyper_client_cache::MemoryStore::default();
        let layer = CacheLayer::new(store.clone());
        let metrics = layer.metrics();
        let mut client = cached_client(layer);
        let planted: [(&str, &[u8]); 3] = [
            // No entry at all (an unsigned cache cannot tell damage from tampering).
            ("/damaged", b"not an entry"),
            // A newer release's format: possibly another deployment's valid entry.
            ("/foreign", b"HCCE\x09\x00\x00\x00\x00"),
            // An older release's format.
            ("/outdated", b"HCCE\x03\x00\x00\x00\x00"),
        ];
        for (path, blob) in planted {
            let url = origin.url(path);
            put_raw(&store, unsigned_key_for(&url), Bytes::from_static(blob)).await;
            let got = get(&mut client, &url).await.unwrap();
            assert_eq!(got.cache, Some(hyper_client_cache::CacheStatus::Miss));
            assert_eq!(got.body, "from the origin", "{path}");
            // Replaced by the origin's answer: a hit, not counted again.
            let got = get(&mut client, &url).await.unwrap();
            assert_eq!(got.cache, Some(hyper_client_cache::CacheStatus::Hit));
        }
        // A blob over this reader's `max_blob_size`, handed over by a store that does not
        // bound its reads (a memory store): not opened, counted. At 1 MiB or more, it takes
        // the path of a streamed entry.
        let url = origin.url("/too-large");
        put_raw(
            &store,
            unsigned_key_for(&url),
            Bytes::from(vec![b'x'; 2 << 20]),
        )
        .await;
        let bounded = CacheLayer::new(store.clone()).max_blob_size(1 << 20);
        let bounded_metrics = bounded.metrics();
        let got = get(&mut cached_client(bounded), &url).await.unwrap();
        assert_eq!(got.cache, Some(hyper_client_cache::CacheStatus::Miss));
        assert_eq!(bounded_metrics.unusable_entries(), 1);
        metrics
    });
    assert_eq!(metrics.unusable_entries(), 3);
    assert_eq!(metrics.bad_signatures(), 0);
    // The two layers' counts, in one recorder: the too-large blob is `foreign`.
    for (reason, n) in [("damaged", 1), ("foreign", 2), ("outdated", 1)] {
        assert_eq!(
            m.get(&format!(
                "http_cache_unusable_entries_total{{reason={reason}}}"
            )),
            Some(&n),
            "{m:#?}"
        );
    }
}
