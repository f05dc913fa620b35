//! Background refreshes (RFC 5861 §3, stale-while-revalidate) are bounded: at most
//! `max_refreshes` run at once per layer, each for at most `refresh_timeout`, against an origin
//! that never answers. Driven on tokio's paused time (the refresh timeout) and the
//! `ManualClock` (staleness), with an origin that is a tower service counting its open calls.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_client_cache::CacheStatus;
use tower::{Service, ServiceBuilder};

use crate::common::*;

/// What the origin does once the test has filled the cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers at once: `v1`, fresh for 1 s, then usable stale for 600 s while revalidated.
    Answer,
    /// Never answers: the request stays open until the cache drops it.
    Hang,
    /// Answers the head and a first chunk of `v2`, then never sends the rest.
    HangInBody,
}

/// An origin without sockets: every call counts as open until the cache drops its future (or
/// the body it answered with).
#[derive(Clone)]
struct TowerOrigin {
    mode: Arc<std::sync::Mutex<Mode>>,
    open: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

/// One open origin call; closed when dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl TowerOrigin {
    fn new() -> Self {
        Self {
            mode: Arc::new(std::sync::Mutex::new(Mode::Answer)),
            open: Arc::new(AtomicUsize::new(0)),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn head() -> http::response::Builder {
    Response::builder().header("cache-control", "max-age=1, stale-while-revalidate=600")
}

impl Service<Request<Empty<Bytes>>> for TowerOrigin {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<Empty<Bytes>>) -> Self::Future {
        let mode = *self.mode.lock().unwrap();
        self.calls.fetch_add(1, Ordering::SeqCst);
        let open = Open::new(&self.open);
        Box::pin(async move {
            match mode {
                Mode::Answer => {
                    drop(open);
                    Ok(head()
                        .body(Full::new(Bytes::from_static(b"v1")).boxed())
                        .unwrap())
                }
                Mode::Hang => {
                    let _open = open;
                    std::future::pending().await
                }
                Mode::HangInBody => {
                    // The call stays open as long as its body is alive.
                    let chunks = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
                        Bytes::from_static(b"v2, the first half"),
                    ))]);
                    let rest = futures_util::stream::once(async move {
                        let _open = open;
                        std::future::pending::<Result<Frame<Bytes>, Infallible>>().await
                    });
                    let body = StreamBody::new(futures_util::StreamExt::chain(chunks, rest));
                    Ok(head().body(body.boxed()).unwrap())
                }
            }
        })
    }
}

fn url(i: usize) -> String {
    format!("http://origin.test/item/{i}")
}

/// Lets every task that can run do so (paused time moves only when all are idle).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// The attack of issue 27: 300 stale keys and a hanging origin. Before the bounds, 300
/// refreshes stayed open for ever (the caller's own timeout does not reach them).
#[tokio::test(start_paused = true)]
async fn refreshes_of_many_stale_keys_against_a_hanging_origin_are_capped_and_time_out() {
    let origin = TowerOrigin::new();
    let clock = clock();
    let layer = unsigned_layer(&clock);
    let metrics = layer.metrics();
    let mut client = ServiceBuilder::new().layer(layer).service(origin.clone());
    for i in 0..300 {
        assert_eq!(get(&mut client, &url(i)).await.unwrap().body, "v1");
    }
    origin.set(Mode::Hang);
    clock.advance(secs(5));

    for i in 0..300 {
        let got = get(&mut client, &url(i)).await.unwrap();
        assert_eq!(got.cache, Some(CacheStatus::StaleWhileRevalidate));
        assert_eq!(
            got.body, "v1",
            "the stale response is served at the cap too"
        );
    }
    settle().await;
    assert_eq!(
        origin.open(),
        32,
        "at most max_refreshes (default 32) at once"
    );
    assert_eq!(metrics.refreshes_started(), 32);
    assert_eq!(
        metrics.refreshes_skipped(),
        268,
        "every refresh not started is counted"
    );
    assert_eq!(metrics.refreshes_timed_out(), 0);

    // The default refresh timeout (30 s) abandons them all.
    tokio::time::sleep(secs(31)).await;
    assert_eq!(origin.open(), 0, "the timeout released every refresh");
    assert_eq!(origin.calls(), 300 + 32);
    assert_eq!(metrics.refreshes_timed_out(), 32);

    // The keys are free again: the next stale hits start new refreshes, within the cap.
    for i in 0..300 {
        let got = get(&mut client, &url(i)).await.unwrap();
        assert_eq!(got.cache, Some(CacheStatus::StaleWhileRevalidate));
    }
    settle().await;
    assert_eq!(origin.open(), 32);
    assert_eq!(metrics.refreshes_started(), 64);
}

/// The settings: a smaller cap and a shorter timeout are what hold.
#[tokio::test(start_paused = true)]
async fn max_refreshes_and_refresh_timeout_are_the_bounds() {
    let origin = TowerOrigin::new();
    let clock = clock();
    let layer = unsigned_layer(&clock)
        .max_refreshes(3)
        .refresh_timeout(secs(2));
    let metrics = layer.metrics();
    // Two services of one layer share its cap.
    let mut one = ServiceBuilder::new()
        .layer(layer.clone())
        .service(origin.clone());
    let mut two = ServiceBuilder::new().layer(layer).service(origin.clone());
    for i in 0..10 {
        get(&mut one, &url(i)).await.unwrap();
    }
    origin.set(Mode::Hang);
    clock.advance(secs(5));
    for i in 0..5 {
        get(&mut one, &url(i)).await.unwrap();
        get(&mut two, &url(i + 5)).await.unwrap();
    }
    settle().await;
    assert_eq!(origin.open(), 3);
    assert_eq!(metrics.refreshes_skipped(), 7);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(origin.open(), 3, "not before the timeout");
    tokio::time::sleep(secs(1)).await;
    assert_eq!(origin.open(), 0);
    assert_eq!(metrics.refreshes_timed_out(), 3);

    // A refresh that ends in time is not counted as timed out.
    origin.set(Mode::Answer);
    get(&mut one, &url(0)).await.unwrap();
    settle().await;
    assert_eq!(metrics.refreshes_started(), 4);
    assert_eq!(metrics.refreshes_timed_out(), 3);
    assert_eq!(
        get(&mut two, &url(0)).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );

    // Zero: no background refreshes, the stale answer is still served.
    let origin = TowerOrigin::new();
    let layer = unsigned_layer(&clock).max_refreshes(0);
    let metrics = layer.metrics();
    let mut client = ServiceBuilder::new().layer(layer).service(origin.clone());
    get(&mut client, &url(0)).await.unwrap();
    clock.advance(secs(5));
    let got = get(&mut client, &url(0)).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::StaleWhileRevalidate));
    settle().await;
    assert_eq!(origin.calls(), 1);
    assert_eq!(metrics.refreshes_skipped(), 1);
}

/// A refresh whose origin stops in the middle of the body is abandoned at the timeout: the
/// half body is never stored as an entry, the stale one stays, and the call is closed.
#[tokio::test(start_paused = true)]
async fn a_refresh_timing_out_in_the_body_stores_nothing_of_it() {
    let origin = TowerOrigin::new();
    let clock = clock();
    let layer = unsigned_layer(&clock);
    let metrics = layer.metrics();
    let mut client = ServiceBuilder::new().layer(layer).service(origin.clone());
    get(&mut client, &url(1)).await.unwrap();
    origin.set(Mode::HangInBody);
    clock.advance(secs(5));

    let got = get(&mut client, &url(1)).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::StaleWhileRevalidate));
    settle().await;
    assert_eq!(origin.open(), 1, "the refresh is reading the body");

    tokio::time::sleep(secs(31)).await;
    assert_eq!(origin.open(), 0, "abandoned at the refresh timeout");
    assert_eq!(metrics.refreshes_timed_out(), 1);
    assert_eq!(metrics.stored(), 1, "only the first response");
    origin.set(Mode::Hang);
    let got = get(&mut client, &url(1)).await.unwrap();
    assert_eq!(got.body, "v1", "the half body was not stored");
    assert_eq!(got.cache, Some(CacheStatus::StaleWhileRevalidate));
}

/// The same events through the `metrics` facade: `http_cache_refreshes_total{event}`.
#[cfg(feature = "metrics")]
#[test]
fn refresh_events_are_exported() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let origin = TowerOrigin::new();
            let clock = clock();
            let layer = unsigned_layer(&clock)
                .max_refreshes(1)
                .refresh_timeout(secs(1));
            let mut client = ServiceBuilder::new().layer(layer).service(origin.clone());
            get(&mut client, &url(0)).await.unwrap();
            get(&mut client, &url(1)).await.unwrap();
            origin.set(Mode::Hang);
            clock.advance(secs(5));
            get(&mut client, &url(0)).await.unwrap();
            get(&mut client, &url(1)).await.unwrap();
            tokio::time::sleep(secs(2)).await;
        })
    });
    let mut events: Vec<(String, u64)> = Vec::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let key = key.key();
        if key.name() != "http_cache_refreshes_total" {
            continue;
        }
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if let DebugValue::Counter(n) = value {
            events.push((labels.join(","), n));
        }
    }
    events.sort();
    assert_eq!(
        events,
        [
            ("event=skipped".to_owned(), 1),
            ("event=started".to_owned(), 1),
            ("event=timed_out".to_owned(), 1),
        ]
    );
}

/// The bounds from a configuration file.
#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn the_bounds_come_from_a_configuration_file() {
    use hyper_client_cache::{CacheConfig, CacheLayer, MemoryStore};

    let config: CacheConfig =
        toml::from_str("max_refreshes = 2\nrefresh_timeout = \"3s\"").unwrap();
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let layer = CacheLayer::from_config(store, &config)
        .unwrap()
        .clock(clock.clone());
    let metrics = layer.metrics();
    let origin = TowerOrigin::new();
    let mut client = ServiceBuilder::new().layer(layer).service(origin.clone());
    for i in 0..5 {
        get(&mut client, &url(i)).await.unwrap();
    }
    origin.set(Mode::Hang);
    clock.advance(secs(5));
    for i in 0..5 {
        get(&mut client, &url(i)).await.unwrap();
    }
    settle().await;
    assert_eq!(origin.open(), 2);
    assert_eq!(metrics.refreshes_skipped(), 3);
    tokio::time::sleep(Duration::from_millis(3001)).await;
    assert_eq!(origin.open(), 0);
}
