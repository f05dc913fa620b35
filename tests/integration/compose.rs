//! The cache composed with the tower-http and tower layers people stack on clients, each in the
//! order docs/integration.md recommends, through a real origin on 127.0.0.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common::*;

/// An origin whose handlers may wait: `/hang` never answers.
struct Upstream {
    addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

const TEXT: &str = "a compressible sentence, repeated. ";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn answer(path: &str, n: usize, headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let cacheable = Response::builder().header(header::CACHE_CONTROL, "max-age=60");
    match path {
        "/hang" => std::future::pending().await,
        "/gzip" => {
            let plain = TEXT.repeat(300);
            let gz = headers
                .get(header::ACCEPT_ENCODING)
                .is_some_and(|v| v.to_str().unwrap_or("").contains("gzip"));
            let b = cacheable.header(header::VARY, "accept-encoding");
            if gz {
                b.header(header::CONTENT_ENCODING, "gzip")
                    .body(Full::new(gzip(plain.as_bytes()).into()))
            } else {
                b.body(Full::new(plain.into()))
            }
        }
        "/old" => cacheable
            .status(301)
            .header(header::LOCATION, "/new")
            .body(Full::new(Bytes::new())),
        "/new" => cacheable.body(Full::new(Bytes::from_static(b"new place"))),
        "/flaky" if n == 1 => Response::builder()
            .status(503)
            .body(Full::new(Bytes::new())),
        "/lang" => {
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            cacheable
                .header(header::VARY, "accept-language")
                .body(Full::new(Bytes::from(format!("lang={lang}"))))
        }
        _ => cacheable.body(Full::new(Bytes::from(format!("{path} #{n}")))),
    }
    .unwrap()
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counts2, seen2) = (counts.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counts, seen) = (counts2.clone(), seen2.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (counts, seen) = (counts.clone(), seen.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let n = {
                                let mut c = counts.lock().unwrap();
                                let n = c.entry(path.clone()).or_insert(0);
                                *n += 1;
                                *n
                            };
                            seen.lock().unwrap().push(req.headers().clone());
                            Ok::<_, Infallible>(answer(&path, n, req.headers()).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            counts,
            seen,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn count(&self, path: &str) -> usize {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn last_headers(&self) -> http::HeaderMap {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cache() -> CacheLayer<MemoryStore> {
    CacheLayer::new(MemoryStore::default()).secret_key(test_key())
}

fn get_req(url: &str) -> Request<Empty<Bytes>> {
    Request::get(url).body(Empty::new()).unwrap()
}

/// Calls `svc` and reads the body; returns status, cache status and body.
async fn call<S, B>(
    svc: &mut S,
    request: Request<Empty<Bytes>>,
) -> (StatusCode, Option<CacheStatus>, Bytes)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.extensions.get().copied(), body)
}

/// DecompressionLayer outside the cache: it adds `Accept-Encoding` before the cache sees the
/// request, the cache stores the compressed body (smaller; `Vary: Accept-Encoding` honoured),
/// and every hit is decompressed on its way out.
#[tokio::test]
async fn decompression_outside_stores_compressed_and_serves_decompressed() {
    let origin = Upstream::start().await;
    let layer = cache();
    let store = layer.store().clone();
    let mut client = ServiceBuilder::new()
        .layer(tower_http::decompression::DecompressionLayer::new())
        .layer(layer)
        .service(hyper_client());
    let plain = TEXT.repeat(300);
    let first = call(&mut client, get_req(&origin.url("/gzip"))).await;
    assert_eq!(
        (first.1, &first.2[..]),
        (Some(CacheStatus::Miss), plain.as_bytes())
    );
    assert!(origin.last_headers()[header::ACCEPT_ENCODING]
        .to_str()
        .unwrap()
        .contains("gzip"));
    let second = call(&mut client, get_req(&origin.url("/gzip"))).await;
    assert_eq!(
        (second.1, &second.2[..]),
        (Some(CacheStatus::Hit), plain.as_bytes())
    );
    assert_eq!(origin.count("/gzip"), 1);
    let blobs = all_blobs(&store).await;
    // Stored under the URL's key and its variant's (it varies on Accept-Encoding).
    assert_eq!(blobs.len(), 2);
    assert!(
        blobs.iter().all(|b| b.len() < plain.len() / 4),
        "the compressed body is stored"
    );
}

/// FollowRedirectLayer outside the cache: every hop goes through the cache, so a cached
/// redirect is followed to a cached target without contacting the origin.
#[tokio::test]
async fn follow_redirect_outside_follows_cached_redirects() {
    let origin = Upstream::start().await;
    let mut client = ServiceBuilder::new()
        .layer(tower_http::follow_redirect::FollowRedirectLayer::new())
        .layer(cache())
        .service(hyper_client());
    for expected in [CacheStatus::Miss, CacheStatus::Hit] {
        let (status, cache, body) = call(&mut client, get_req(&origin.url("/old"))).await;
        assert_eq!((status, cache), (StatusCode::OK, Some(expected)));
        assert_eq!(body, "new place");
    }
    assert_eq!((origin.count("/old"), origin.count("/new")), (1, 1));
}

/// TimeoutLayer outside the cache: a hung origin becomes a 408 within the timeout and is not
/// stored; hits are never slowed down by it.
#[tokio::test]
async fn timeout_outside_bounds_origin_calls_and_leaves_hits_alone() {
    let origin = Upstream::start().await;
    let mut client = ServiceBuilder::new()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(200),
        ))
        .layer(cache())
        .service(hyper_client());
    call(&mut client, get_req(&origin.url("/ok"))).await;
    let (status, cache, _) = call(&mut client, get_req(&origin.url("/ok"))).await;
    assert_eq!((status, cache), (StatusCode::OK, Some(CacheStatus::Hit)));
    let bounded = tokio::time::timeout(
        Duration::from_secs(10),
        call(&mut client, get_req(&origin.url("/hang"))),
    )
    .await
    .expect("the timeout layer answers");
    assert_eq!(bounded.0, StatusCode::REQUEST_TIMEOUT);
    let (status, cache, body) = call(&mut client, get_req(&origin.url("/ok"))).await;
    assert_eq!(
        (status, cache, &body[..]),
        (StatusCode::OK, Some(CacheStatus::Hit), &b"/ok #1"[..])
    );
}

/// TraceLayer outside the cache sees every request, hits included, with the cache's verdict in
/// the response extensions.
#[tokio::test]
async fn trace_outside_sees_the_cache_status() {
    let origin = Upstream::start().await;
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let rec = recorded.clone();
    let mut client = ServiceBuilder::new()
        .layer(tower_http::trace::TraceLayer::new_for_http().on_response(
            move |response: &Response<_>, _latency: Duration, _span: &tracing::Span| {
                rec.lock()
                    .unwrap()
                    .push(response.extensions().get::<CacheStatus>().copied());
            },
        ))
        .layer(cache())
        .service(hyper_client());
    for _ in 0..2 {
        call(&mut client, get_req(&origin.url("/traced"))).await;
    }
    assert_eq!(
        *recorded.lock().unwrap(),
        [Some(CacheStatus::Miss), Some(CacheStatus::Hit)]
    );
}

/// SetRequestHeaderLayer outside the cache: the cache sees the header the origin sees, so
/// `Vary` selects on the value actually sent.
#[tokio::test]
async fn set_request_header_outside_is_seen_by_vary() {
    let origin = Upstream::start().await;
    let layer = cache();
    let mut client = ServiceBuilder::new()
        .layer(tower_http::set_header::SetRequestHeaderLayer::overriding(
            header::ACCEPT_LANGUAGE,
            http::HeaderValue::from_static("fr"),
        ))
        .layer(layer)
        .service(hyper_client());
    for expected in [CacheStatus::Miss, CacheStatus::Hit] {
        let request = Request::get(origin.url("/lang"))
            .header(header::ACCEPT_LANGUAGE, "en")
            .body(Empty::new())
            .unwrap();
        let (_, cache, body) = call(&mut client, request).await;
        assert_eq!((cache, &body[..]), (Some(expected), &b"lang=fr"[..]));
    }
    assert_eq!(origin.count("/lang"), 1);
}

/// Retries a request (at most twice) whose response is a 503.
#[derive(Clone)]
struct RetryOn503(usize);

impl<B> tower::retry::Policy<Request<Empty<Bytes>>, Response<B>, hyper_client_cache::BoxError>
    for RetryOn503
{
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<Empty<Bytes>>,
        result: &mut Result<Response<B>, hyper_client_cache::BoxError>,
    ) -> Option<Self::Future> {
        match result {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE && self.0 > 0 => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<Empty<Bytes>>) -> Option<Request<Empty<Bytes>>> {
        let mut clone = Request::new(Empty::new());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// RetryLayer outside the cache: the failed attempt is not stored, the retried success is, and
/// the next call is a hit.
#[tokio::test]
async fn retry_outside_stores_only_the_successful_attempt() {
    let origin = Upstream::start().await;
    let mut client = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(RetryOn503(2)))
        .layer(cache())
        .service(hyper_client());
    let (status, cache, _) = call(&mut client, get_req(&origin.url("/flaky"))).await;
    assert_eq!((status, cache), (StatusCode::OK, Some(CacheStatus::Miss)));
    assert_eq!(origin.count("/flaky"), 2);
    let (status, cache, _) = call(&mut client, get_req(&origin.url("/flaky"))).await;
    assert_eq!((status, cache), (StatusCode::OK, Some(CacheStatus::Hit)));
    assert_eq!(origin.count("/flaky"), 2);
}

/// ConcurrencyLimitLayer inside the cache limits calls to the origin only: with the one permit
/// held by a hung request, a hit is still served at once, while a miss waits for the permit.
#[tokio::test]
async fn concurrency_limit_inside_limits_the_origin_not_the_hits() {
    let origin = Upstream::start().await;
    let client = ServiceBuilder::new()
        .layer(cache())
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .service(hyper_client());
    call(&mut client.clone(), get_req(&origin.url("/cached"))).await;

    let hung = {
        let (mut client, url) = (client.clone(), origin.url("/hang"));
        tokio::spawn(async move { call(&mut client, get_req(&url)).await })
    };
    // Wait (bounded) until the hung request holds the permit and reached the origin.
    tokio::time::timeout(Duration::from_secs(10), async {
        while origin.count("/hang") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the hung request reaches the origin");

    let hit = tokio::time::timeout(
        Duration::from_secs(10),
        call(&mut client.clone(), get_req(&origin.url("/cached"))),
    )
    .await
    .expect("a hit does not wait for the origin's permit");
    assert_eq!(hit.1, Some(CacheStatus::Hit));

    let miss = tokio::time::timeout(
        Duration::from_millis(300),
        call(&mut client.clone(), get_req(&origin.url("/other"))),
    )
    .await;
    assert!(miss.is_err(), "a miss waits for the permit");
    assert_eq!(origin.count("/other"), 0);
    hung.abort();
}

/// The whole stack of docs/integration.md, in its order: it builds, and a redirect to a
/// compressed, varying resource is cached hop by hop.
#[tokio::test]
async fn the_recommended_stack_composes() {
    let origin = Upstream::start().await;
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let rec = statuses.clone();
    let mut client = ServiceBuilder::new()
        .layer(tower_http::trace::TraceLayer::new_for_http().on_response(
            move |response: &Response<_>, _: Duration, _: &tracing::Span| {
                rec.lock()
                    .unwrap()
                    .push(response.extensions().get::<CacheStatus>().copied());
            },
        ))
        .layer(tower_http::follow_redirect::FollowRedirectLayer::new())
        .layer(tower_http::decompression::DecompressionLayer::new())
        .layer(
            tower_http::set_header::SetRequestHeaderLayer::if_not_present(
                header::USER_AGENT,
                http::HeaderValue::from_static("compose-test"),
            ),
        )
        .layer(tower::retry::RetryLayer::new(RetryOn503(2)))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(cache())
        .layer(tower::limit::ConcurrencyLimitLayer::new(4))
        .service(hyper_client());
    for expected in [CacheStatus::Miss, CacheStatus::Hit] {
        let (status, cache, body) = call(&mut client, get_req(&origin.url("/gzip"))).await;
        assert_eq!((status, cache), (StatusCode::OK, Some(expected)));
        assert_eq!(body, TEXT.repeat(300));
        let (status, cache, body) = call(&mut client, get_req(&origin.url("/old"))).await;
        assert_eq!((status, cache), (StatusCode::OK, Some(expected)));
        assert_eq!(body, "new place");
    }
    assert_eq!(
        (
            origin.count("/gzip"),
            origin.count("/old"),
            origin.count("/new")
        ),
        (1, 1, 1)
    );
    assert_eq!(origin.last_headers()[header::USER_AGENT], "compose-test");
    assert_eq!(statuses.lock().unwrap().len(), 4);
}
