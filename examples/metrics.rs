//! The cache's metrics served to Prometheus: `metrics-exporter-prometheus` listens on
//! 127.0.0.1, a cached client makes a miss, a hit and an uncacheable request against an origin
//! started here, and the example scrapes its own `/metrics` and prints the cache's series.
//!
//! Run: `cargo run --example metrics --features metrics`. `tests/prometheus.rs` runs the same
//! code and parses the scrape.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{BoxError, CacheLayer, MemoryStore, SecretKey};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{ServiceBuilder, ServiceExt};

/// Installs the exporter on a free 127.0.0.1 port, runs the requests, and returns the scrape.
pub async fn run() -> Result<String, BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], port))
        .install()?;
    hyper_client_cache::describe_metrics();

    let hits = Arc::new(AtomicUsize::new(0));
    let origin = support::start_origin(hits, Duration::ZERO, |n| {
        let cc = if n == 2 { "no-store" } else { "max-age=60" };
        http::Response::builder()
            .header("cache-control", cc)
            .body(Full::new(Bytes::from_static(b"{\"price\": 12.5}")))
            .unwrap_or_default()
    })
    .await?;
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()).secret_key(SecretKey::generate()?))
        .service(http.clone());
    for path in ["/price", "/other", "/price"] {
        let request = http::Request::get(format!("http://{origin}{path}")).body(Empty::new())?;
        let response = client.clone().oneshot(request).await?;
        response.into_body().collect().await?;
    }

    // Scrape, as Prometheus would (the listener starts in the background: retry briefly).
    let url: http::Uri = format!("http://127.0.0.1:{port}/metrics").parse()?;
    let mut last = None;
    for _ in 0..50 {
        match http.get(url.clone()).await {
            Ok(response) => {
                let body = response.into_body().collect().await?.to_bytes();
                return Ok(String::from_utf8_lossy(&body).into_owned());
            }
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Err(format!("no scrape: {last:?}").into())
}

#[allow(dead_code)] // `tests/prometheus.rs` includes this file without calling `main`.
#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let scrape = run().await?;
    for line in scrape.lines().filter(|l| l.contains("http_cache_")) {
        println!("{line}");
    }
    if !scrape.contains(r#"http_cache_requests_total{status="hit"} 1"#) {
        return Err("the scrape has no hit".into());
    }
    Ok(())
}
