//! Shared fills (#28): coalesced callers read the leader's response as it arrives, whoever
//! polls; waiters are released at the head when nothing will be stored, and such keys do not
//! coalesce for a while (hit-for-pass).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Empty};
use hyper_client_cache::{BoxError, CacheLayer, CacheStatus, FillFailed, MemoryStore};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common::*;

type Body = Channel<Bytes, BoxError>;

/// An in-process origin: each call gets a new body fed through a channel whose sender the test
/// holds (`senders`), with `headers`; the head is answered at once. `vary` answers with the
/// request's `Accept-Language` in a header the test can read.
#[derive(Clone)]
struct ChannelOrigin {
    calls: Arc<AtomicUsize>,
    senders: Arc<Mutex<Vec<Sender<Bytes, BoxError>>>>,
    headers: &'static [(&'static str, &'static str)],
}

impl ChannelOrigin {
    fn new(headers: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            senders: Arc::default(),
            headers,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn sender(&self, i: usize) -> Sender<Bytes, BoxError> {
        self.senders.lock().unwrap().remove(i)
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<Empty<Bytes>>,
        Response = Response<Body>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let this = self.clone();
        tower::service_fn(move |req: Request<Empty<Bytes>>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let (tx, body) = Channel::new(64);
                this.senders.lock().unwrap().push(tx);
                let mut response = Response::new(body);
                for (name, value) in this.headers {
                    response.headers_mut().insert(*name, value.parse().unwrap());
                }
                if let Some(lang) = req.headers().get("accept-language") {
                    response.headers_mut().insert("x-lang", lang.clone());
                }
                Ok::<_, BoxError>(response)
            }
        })
    }
}

const CACHEABLE: &[(&str, &str)] = &[("cache-control", "max-age=600")];

fn req() -> Request<Empty<Bytes>> {
    Request::get("http://origin.test/r")
        .body(Empty::new())
        .unwrap()
}

fn status<B>(response: &Response<B>) -> Option<CacheStatus> {
    response.extensions().get::<CacheStatus>().copied()
}

async fn text<B>(response: Response<B>) -> Result<Bytes, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes())
}

/// A cached client over `origin`, and two identical requests sent through it: the leader's
/// response and a waiter's (both heads are in: the waiter was answered from the fill).
async fn leader_and_waiter(
    origin: &ChannelOrigin,
) -> (
    impl Service<
        Request<Empty<Bytes>>,
        Response = Response<hyper_client_cache::CacheBody<Body>>,
        Error = BoxError,
    >,
    Response<hyper_client_cache::CacheBody<Body>>,
    Response<hyper_client_cache::CacheBody<Body>>,
) {
    let clock = clock();
    let mut svc = ServiceBuilder::new()
        .layer(unsigned_layer(&clock))
        .service(origin.service());
    let leader = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(status(&leader), Some(CacheStatus::Miss));
    let waiter = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(status(&waiter), Some(CacheStatus::Coalesced));
    (svc, leader, waiter)
}

/// A 256 KiB body, ready at once: heads awaited together, bodies read afterwards (the reqwest
/// `join!` pattern). Waiters used to wait for a body read only after the `join!` returned:
/// `coalesce_timeout` (10 s), then a second origin request.
#[tokio::test(start_paused = true)]
async fn heads_awaited_together_and_bodies_read_afterwards_do_not_stall() {
    let body = Bytes::from(vec![b'x'; 256 << 10]);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let origin_body = body.clone();
    let origin = tower::service_fn(move |_req: Request<Empty<Bytes>>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let body = origin_body.clone();
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("cache-control", "max-age=600")
                    .header("content-length", body.len())
                    .body(http_body_util::Full::new(body))
                    .unwrap(),
            )
        }
    });
    let clock = clock();
    let svc = ServiceBuilder::new()
        .layer(unsigned_layer(&clock))
        .service(origin);
    let started = tokio::time::Instant::now();
    let responses =
        futures_util::future::join_all((0..50).map(|_| svc.clone().oneshot(req()))).await;
    let mut statuses = Vec::new();
    for response in responses {
        let response = response.unwrap();
        statuses.push(status(&response));
        assert_eq!(text(response).await.unwrap(), body);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one origin request");
    assert_eq!(statuses[0], Some(CacheStatus::Miss));
    assert!(statuses[1..]
        .iter()
        .all(|s| *s == Some(CacheStatus::Coalesced)));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no waiter waited out coalesce_timeout: {:?}",
        started.elapsed()
    );
}

/// The leader's caller drops its response after one chunk: the waiter still reads the whole
/// body (it moves the origin's body on itself), and the entry is stored.
#[tokio::test]
async fn a_leader_that_drops_after_one_chunk_does_not_stop_its_waiters() {
    let origin = ChannelOrigin::new(CACHEABLE);
    let (mut svc, leader, waiter) = leader_and_waiter(&origin).await;
    let mut tx = origin.sender(0);
    tx.send_data(Bytes::from_static(b"first ")).await.unwrap();
    let mut leader = leader.into_body();
    let frame = leader.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first ");
    drop(leader);
    tx.send_data(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    assert_eq!(text(waiter).await.unwrap(), "first second");
    let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(status(&hit), Some(CacheStatus::Hit));
    assert_eq!(text(hit).await.unwrap(), "first second");
    assert_eq!(origin.calls(), 1);
}

/// Every caller drops its body before the end: nothing is stored (the documented decision:
/// the fill ends with its last reader), and the next request goes to the origin.
#[tokio::test]
async fn when_every_caller_drops_nothing_is_stored() {
    let origin = ChannelOrigin::new(CACHEABLE);
    let (mut svc, leader, waiter) = leader_and_waiter(&origin).await;
    let mut tx = origin.sender(0);
    tx.send_data(Bytes::from_static(b"part")).await.unwrap();
    drop((leader, waiter));
    assert!(
        tx.send_data(Bytes::from_static(b"more")).await.is_err(),
        "the origin's body is closed"
    );
    let next = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(status(&next), Some(CacheStatus::Miss));
    assert_eq!(origin.calls(), 2);
}

/// The origin fails mid-body: no caller sees a complete body (each gets an error after the
/// chunks before it), and nothing is stored.
#[tokio::test]
async fn an_origin_failing_mid_body_fails_every_caller_and_stores_nothing() {
    let origin = ChannelOrigin::new(CACHEABLE);
    let (mut svc, leader, waiter) = leader_and_waiter(&origin).await;
    let mut tx = origin.sender(0);
    tx.send_data(Bytes::from_static(b"part")).await.unwrap();
    tx.abort("connection reset by the origin".into());
    for response in [leader, waiter] {
        let error = text(response).await.unwrap_err();
        let failed = error.downcast_ref::<FillFailed>().expect("a FillFailed");
        // The origin's error is the `source()`, not repeated in `Display`.
        let cause = std::error::Error::source(failed).expect("the origin's error");
        assert!(cause.to_string().contains("connection reset"), "{cause}");
        assert!(!failed.to_string().contains("connection reset"), "{failed}");
    }
    let next = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(status(&next), Some(CacheStatus::Miss));
}

/// A waiter that never polls does not hold the leader back: the leader reads to the end and
/// the entry is stored; the waiter reads the same bytes later.
#[tokio::test]
async fn a_waiter_that_never_polls_does_not_slow_the_leader() {
    let origin = ChannelOrigin::new(CACHEABLE);
    let (mut svc, leader, idle) = leader_and_waiter(&origin).await;
    let mut tx = origin.sender(0);
    let feed = tokio::spawn(async move {
        for _ in 0..100 {
            tx.send_data(Bytes::from(vec![b'y'; 1024])).await.unwrap();
        }
    });
    assert_eq!(text(leader).await.unwrap().len(), 100 * 1024);
    feed.await.unwrap();
    let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(status(&hit), Some(CacheStatus::Hit));
    assert_eq!(text(idle).await.unwrap().len(), 100 * 1024);
}

/// A waiter whose selecting field differs does not read the leader's variant: it waits for the
/// outcome, then asks the origin for its own.
#[tokio::test]
async fn a_waiter_of_another_variant_gets_its_own_response() {
    static VARY: &[(&str, &str)] = &[
        ("cache-control", "max-age=600"),
        ("vary", "accept-language"),
    ];
    let origin = ChannelOrigin::new(VARY);
    let clock = clock();
    let mut svc = ServiceBuilder::new()
        .layer(unsigned_layer(&clock))
        .service(origin.service());
    let lang = |l: &str| {
        Request::get("http://origin.test/r")
            .header("accept-language", l)
            .body(Empty::new())
            .unwrap()
    };
    let leader = svc.ready().await.unwrap().call(lang("en")).await.unwrap();
    let mut waiter = Box::pin(svc.ready().await.unwrap().call(lang("de")));
    // The waiter does not answer from the English fill.
    let polled = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(waiter.as_mut(), cx).is_pending())
    })
    .await;
    assert!(polled);
    let mut tx = origin.sender(0);
    tx.send_data(Bytes::from_static(b"english")).await.unwrap();
    drop(tx);
    assert_eq!(text(leader).await.unwrap(), "english");
    // Stored: the waiter looks up, finds another variant, and goes to the origin.
    let german = tokio::spawn(waiter);
    while origin.calls() < 2 {
        tokio::task::yield_now().await;
    }
    let mut tx = origin.sender(0);
    tx.send_data(Bytes::from_static(b"deutsch")).await.unwrap();
    drop(tx);
    let german = german.await.unwrap().unwrap();
    assert_eq!(german.headers()["x-lang"], "de");
    assert_eq!(text(german).await.unwrap(), "deutsch");
}

/// A response that will not be stored releases the waiters at its head; the next burst for the
/// key does not queue behind one request (hit-for-pass): with an origin that answers only when
/// five requests are in, the second burst completes without waiting out `coalesce_timeout`.
#[tokio::test(start_paused = true)]
async fn a_key_that_was_not_storable_does_not_coalesce_for_a_while() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let barrier: Arc<Mutex<Option<Arc<tokio::sync::Barrier>>>> = Arc::default();
    let (seen, gate) = (arrived.clone(), barrier.clone());
    let origin = tower::service_fn(move |_req: Request<Empty<Bytes>>| {
        seen.fetch_add(1, Ordering::SeqCst);
        let gate = gate.lock().unwrap().clone();
        async move {
            if let Some(gate) = gate {
                gate.wait().await;
            }
            Ok::<_, BoxError>(
                Response::builder()
                    .header("cache-control", "no-store")
                    .body(http_body_util::Full::new(Bytes::from_static(b"private")))
                    .unwrap(),
            )
        }
    });
    let clock = clock();
    let svc = ServiceBuilder::new()
        .layer(unsigned_layer(&clock))
        .service(origin);
    let burst = || futures_util::future::join_all((0..5).map(|_| svc.clone().oneshot(req())));
    // First burst: the leader's head says not storable; nobody waits for a body.
    for response in burst().await {
        assert_eq!(text(response.unwrap()).await.unwrap(), "private");
    }
    assert_eq!(arrived.load(Ordering::SeqCst), 5);
    // Second burst: the origin answers only once all five are there together.
    *barrier.lock().unwrap() = Some(Arc::new(tokio::sync::Barrier::new(5)));
    let started = tokio::time::Instant::now();
    for response in burst().await {
        assert_eq!(status(&response.unwrap()), Some(CacheStatus::NotCacheable));
    }
    assert_eq!(arrived.load(Ordering::SeqCst), 10);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the second burst queued behind one request: {:?}",
        started.elapsed()
    );
}

/// On a runtime without tokio's timer (the layer's waits fall back to a timer thread): the
/// fill needs no timer, and the `join!` pattern still sends one request.
#[test]
fn the_join_pattern_works_on_a_runtime_without_a_timer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let origin = ChannelOrigin::new(CACHEABLE);
        let svc = ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryStore::default()))
            .service(origin.service());
        let (a, b) = tokio::join!(svc.clone().oneshot(req()), svc.clone().oneshot(req()));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(status(&b), Some(CacheStatus::Coalesced));
        let mut tx = origin.sender(0);
        tx.send_data(Bytes::from_static(b"no timer")).await.unwrap();
        drop(tx);
        assert_eq!(text(b).await.unwrap(), "no timer");
        assert_eq!(text(a).await.unwrap(), "no timer");
        assert_eq!(origin.calls(), 1);
    });
}
