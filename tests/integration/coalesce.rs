//! Request coalescing: concurrent misses for one key send one request to the origin.

use std::convert::Infallible;
use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore};
use tokio::sync::watch;
use tower::{Service, ServiceBuilder, ServiceExt};

/// An in-process origin that holds every response until `gate` opens.
#[derive(Clone)]
struct GatedOrigin {
    count: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
    cache_control: &'static str,
}

impl GatedOrigin {
    fn new(cache_control: &'static str) -> (Self, watch::Sender<bool>) {
        let (tx, gate) = watch::channel(false);
        let origin = Self {
            count: Arc::new(AtomicUsize::new(0)),
            gate,
            cache_control,
        };
        (origin, tx)
    }

    fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Service<Request<()>> for GatedOrigin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let mut gate = self.gate.clone();
        let cc = self.cache_control;
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok(Response::builder()
                .header("cache-control", cc)
                .body(Full::new(Bytes::from(format!("response {n}"))))
                .unwrap())
        })
    }
}

fn req() -> Request<()> {
    Request::get("http://origin.test/popular").body(()).unwrap()
}

async fn run_concurrent<S>(
    svc: S,
    n: usize,
    open: watch::Sender<bool>,
    origin: &GatedOrigin,
) -> Vec<(CacheStatus, Bytes)>
where
    S: Service<Request<()>, Response = Response<hyper_client_cache::CacheBody<Full<Bytes>>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    let mut tasks = Vec::new();
    for _ in 0..n {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let response = svc.oneshot(req()).await.unwrap();
            let status = *response.extensions().get::<CacheStatus>().unwrap();
            (
                status,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        }));
    }
    // Current-thread runtime: one yield lets every spawned request run up to the point where it
    // either calls the origin or waits for the one that did.
    while origin.requests() == 0 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    open.send_replace(true);
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn concurrent_misses_send_one_request_and_all_get_the_same_bytes() {
    let (origin, open) = GatedOrigin::new("max-age=60");
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(origin.clone());
    let results = run_concurrent(svc, 50, open, &origin).await;
    assert_eq!(origin.requests(), 1);
    assert!(results.iter().all(|(_, body)| body == "response 1"));
    let misses = results
        .iter()
        .filter(|(s, _)| *s == CacheStatus::Miss)
        .count();
    let coalesced = results
        .iter()
        .filter(|(s, _)| *s == CacheStatus::Coalesced)
        .count();
    assert_eq!((misses, coalesced), (1, 49));
}

#[tokio::test]
async fn when_the_response_is_not_storable_every_waiter_fetches_for_itself() {
    let (origin, open) = GatedOrigin::new("no-store");
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(origin.clone());
    let results = run_concurrent(svc, 10, open, &origin).await;
    assert_eq!(origin.requests(), 10);
    assert!(results.iter().all(|(s, _)| *s == CacheStatus::NotCacheable));
}

#[tokio::test]
async fn coalescing_can_be_switched_off() {
    let (origin, open) = GatedOrigin::new("max-age=60");
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()).coalesce(false))
        .service(origin.clone());
    let results = run_concurrent(svc, 10, open, &origin).await;
    assert_eq!(origin.requests(), 10);
    assert!(results.iter().all(|(s, _)| *s == CacheStatus::Miss));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_leader_hangs_fetches_on_its_own_after_the_timeout() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    // The first request hangs forever; later ones are answered at once.
    let origin = tower::service_fn(move |_req: Request<()>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                pending::<()>().await;
            }
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from_static(b"late but here")))
                    .unwrap(),
            )
        }
    });
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()).coalesce_timeout(Duration::from_secs(3)))
        .service(origin);
    let hung = tokio::spawn(svc.clone().oneshot(req()));
    tokio::task::yield_now().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let started = tokio::time::Instant::now();
    let response = svc.oneshot(req()).await.unwrap();
    // Paused clock: exactly the timeout elapsed, no real waiting.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(
        response.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Miss)
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "late but here"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
    hung.abort();
}
