//! HTTP/2 with prior knowledge (hyper-util's client with `http2_only`) against an HTTP/2 origin
//! on 127.0.0.1: the recipe of docs/integration.md.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{ServiceBuilder, ServiceExt};

/// An HTTP/2-only origin (no upgrade, no TLS: prior knowledge) counting its requests.
async fn h2_origin(count: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    let version = req.version();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("cache-control", "max-age=60")
                                .body(Full::new(Bytes::from(format!("v{n} over {version:?}"))))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http2_client_with_prior_knowledge_is_cached() {
    let count = Arc::new(AtomicUsize::new(0));
    let addr = h2_origin(count.clone()).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let cached = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(client);
    for expected in [CacheStatus::Miss, CacheStatus::Hit] {
        let request = Request::get(format!("http://{addr}/h2"))
            .body(Empty::new())
            .unwrap();
        let response = cached.clone().oneshot(request).await.unwrap();
        assert_eq!(response.extensions().get::<CacheStatus>(), Some(&expected));
        assert_eq!(response.version(), Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "v1 over HTTP/2.0");
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
