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

/// An in-process origin that fails: every request waits for `gate`, then gets `answer(n)`.
fn failing_origin(
    count: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
    answer: impl Fn(usize) -> Result<Response<Full<Bytes>>, std::io::Error> + Clone + Send + 'static,
) -> impl Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_req: Request<()>| {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let (mut gate, answer) = (gate.clone(), answer.clone());
        async move {
            let _ = gate.wait_for(|open| *open).await;
            answer(n)
        }
    })
}

/// `n` concurrent GETs of one URL (`auth(i)`, a field name and value, if any), the origin held
/// until all of them are in; then what each got.
async fn many<S>(
    svc: S,
    n: usize,
    auth: impl Fn(usize) -> Option<(&'static str, &'static str)>,
    open: watch::Sender<bool>,
    count: &AtomicUsize,
) -> Vec<Result<(CacheStatus, http::StatusCode, Bytes), hyper_client_cache::BoxError>>
where
    S: Service<Request<()>, Response = Response<hyper_client_cache::CacheBody<Full<Bytes>>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<hyper_client_cache::BoxError> + Send,
{
    let mut tasks = Vec::new();
    for i in 0..n {
        let svc = svc.clone();
        let mut request = req();
        if let Some((name, value)) = auth(i) {
            request
                .headers_mut()
                .insert(name, http::HeaderValue::from_static(value));
        }
        tasks.push(tokio::spawn(async move {
            let response = svc.oneshot(request).await.map_err(Into::into)?;
            let status = *response.extensions().get::<CacheStatus>().unwrap();
            let code = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            Ok((status, code, body))
        }));
    }
    while count.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    open.send_replace(true);
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn status_503(n: usize) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let body = format!("overloaded {n}");
    Ok(Response::builder()
        .status(503)
        .header("retry-after", "5")
        .header("set-cookie", "leader=1")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

#[tokio::test]
async fn a_failing_leader_answers_its_waiters_instead_of_releasing_them_to_the_origin() {
    // #21: 200 concurrent requests for one key while the origin fails: at most 2 reach it.
    let (open, gate) = watch::channel(false);
    let count = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(MemoryStore::default());
    let metrics = layer.metrics();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(failing_origin(count.clone(), gate, status_503));
    let results = many(svc, 200, |_| None, open, &count).await;
    assert!(
        count.load(Ordering::SeqCst) <= 2,
        "{}",
        count.load(Ordering::SeqCst)
    );
    let mut shared = 0;
    for r in &results {
        let (status, code, body) = r.as_ref().unwrap();
        assert_eq!(
            (*code, &body[..]),
            (http::StatusCode::SERVICE_UNAVAILABLE, &b"overloaded 1"[..])
        );
        if *status == CacheStatus::CoalescedError {
            shared += 1;
        }
    }
    assert_eq!(shared, 199, "every waiter says it got the leader's failure");
    assert_eq!(metrics.coalesced_errors(), 199);
}

#[tokio::test]
async fn waiters_get_the_leaders_headers_but_not_its_cookie() {
    let (open, gate) = watch::channel(false);
    let count = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(failing_origin(count.clone(), gate, status_503));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let r = svc.oneshot(req()).await.unwrap();
            let status = *r.extensions().get::<CacheStatus>().unwrap();
            let headers = r.headers().clone();
            // The leader shares its answer once its body has passed.
            r.into_body().collect().await.unwrap();
            (status, headers)
        }));
    }
    while count.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    open.send_replace(true);
    let mut waiter = None;
    for t in tasks {
        let (status, headers) = t.await.unwrap();
        if status == CacheStatus::CoalescedError {
            waiter = Some(headers);
        } else {
            assert_eq!(
                headers["set-cookie"], "leader=1",
                "the leader's own answer is whole"
            );
        }
    }
    let waiter = waiter.expect("one waited");
    assert_eq!(waiter["retry-after"], "5");
    assert!(!waiter.contains_key("set-cookie"));
}

/// #27 item 5: a leader that got no answer (here a transport error; its own deadline or a
/// cancellation look the same from below) used to fail all its waiters with its error. Its
/// waiters now go to the origin themselves, and each gets its own answer.
#[tokio::test]
async fn a_leader_without_an_answer_shares_nothing_its_waiters_ask_for_themselves() {
    let (open, gate) = watch::channel(false);
    let count = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(failing_origin(count.clone(), gate, |n| {
            if n == 1 {
                Err(std::io::Error::other("the leader's own deadline"))
            } else {
                status_503(n)
            }
        }));
    let results = many(svc, 10, |_| None, open, &count).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 1, "only the leader sees its error");
    assert!(
        count.load(Ordering::SeqCst) >= 2,
        "the waiters asked the origin"
    );
    for r in results.iter().flatten() {
        assert_ne!(&r.2[..], b"overloaded 1");
    }
}

/// #27 item 4: sharing a failure used to compare a list of credential fields, so callers
/// that differed only in a field no list named (`api-key`, `x-goog-api-key`, ...) got each
/// other's error page, which may echo the secret. Now any field but negotiation counts.
#[tokio::test]
async fn a_failure_is_shared_only_with_equal_requests_whatever_the_fields_are_called() {
    for field in [
        "authorization",
        "api-key",
        "x-access-token",
        "x-goog-api-key",
        "x-amz-security-token",
        "ocp-apim-subscription-key",
    ] {
        let (open, gate) = watch::channel(false);
        let count = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryStore::default()))
            .service(failing_origin(count.clone(), gate, status_503));
        // 20 callers, half as one user, half as another: the other half asks for itself.
        let auth = move |i: usize| Some((field, if i.is_multiple_of(2) { "a" } else { "b" }));
        let results = many(svc, 20, auth, open, &count).await;
        assert_eq!(count.load(Ordering::SeqCst), 1 + 10, "{field}");
        let shared = results
            .iter()
            .filter(|r| r.as_ref().unwrap().0 == CacheStatus::CoalescedError)
            .count();
        assert_eq!(shared, 9, "{field}");
    }
    // Fields that cannot say who asks do not keep callers apart.
    let (open, gate) = watch::channel(false);
    let count = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(failing_origin(count.clone(), gate, status_503));
    let auth = |i: usize| {
        Some((
            "accept-language",
            if i.is_multiple_of(2) { "en" } else { "de" },
        ))
    };
    let results = many(svc, 20, auth, open, &count).await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(results.len(), 20);
}

#[tokio::test]
async fn a_failure_too_large_to_share_releases_the_waiters_to_the_origin() {
    let (open, gate) = watch::channel(false);
    let count = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(failing_origin(count.clone(), gate, |_| {
            Ok(Response::builder()
                .status(500)
                .header("content-length", 65 << 10)
                .body(Full::new(Bytes::from(vec![b'x'; 65 << 10])))
                .unwrap())
        }));
    let results = many(svc, 10, |_| None, open, &count).await;
    assert_eq!(count.load(Ordering::SeqCst), 10);
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap().0 != CacheStatus::CoalescedError));
}

#[tokio::test]
async fn failures_that_vary_are_private_or_of_unknown_size_are_not_shared() {
    for extra in [
        ("vary", "accept-language"),
        ("cache-control", "private"),
        ("cache-control", "no-store"),
        ("x-no-length", "1"),
    ] {
        let (open, gate) = watch::channel(false);
        let count = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryStore::default()))
            .service(failing_origin(count.clone(), gate, move |_| {
                let mut b = Response::builder().status(503).header(extra.0, extra.1);
                if extra.0 != "x-no-length" {
                    b = b.header("content-length", 4);
                }
                Ok(b.body(Full::new(Bytes::from_static(b"busy"))).unwrap())
            }));
        let results = many(svc, 5, |_| None, open, &count).await;
        assert_eq!(count.load(Ordering::SeqCst), 5, "{extra:?}");
        assert!(results
            .iter()
            .all(|r| r.as_ref().unwrap().0 != CacheStatus::CoalescedError));
    }
}
