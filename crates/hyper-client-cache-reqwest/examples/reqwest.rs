//! The cache in a reqwest client, through reqwest-middleware: miss, hit, a per-request mode,
//! and the same cache as a plain tower stack over `reqwest::Client`.
//!
//! Run: `cargo run -p hyper-client-cache-reqwest --example reqwest` (an origin on 127.0.0.1, started here).

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{BoxError, CacheLayer, CacheMode, CacheStatus, MemoryStore, SecretKey};
use hyper_client_cache_reqwest::{CacheMiddleware, ReqwestService};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = support::start_origin(hits.clone(), Duration::ZERO, |n| {
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!("response number {n}"))))
            .unwrap_or_default()
    })
    .await?;
    let url = format!("http://{addr}/prices");

    // One reqwest client, given once: the middleware chain and the cache's background
    // refreshes both use it.
    let http = reqwest::Client::new();
    let key = SecretKey::new("an example key of 32 bytes or more")?;
    let layer = CacheLayer::new(MemoryStore::default()).secret_key(key);
    let client = CacheMiddleware::new(layer, http.clone())
        .client_builder()
        .build();

    for (label, mode) in [
        ("first call ", None),
        ("second call", None),
        ("reload     ", Some(CacheMode::Reload)),
    ] {
        let mut request = client.get(&url);
        if let Some(mode) = mode {
            request = request.with_extension(mode);
        }
        let response = request.send().await?;
        let status = response.extensions().get::<CacheStatus>().copied();
        let text = response.text().await?;
        println!("{label}: {status:?}, body {text:?}");
    }
    println!("origin requests so far: {}", hits.load(Ordering::SeqCst));
    if hits.load(Ordering::SeqCst) != 2 {
        return Err("expected 2 origin requests (miss, reload)".into());
    }

    // Without reqwest-middleware: a tower stack over reqwest::Client.
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(ReqwestService::new(http));
    for _ in 0..2 {
        let request = http::Request::get(&url).body(reqwest::Body::from(""))?;
        let response = svc.clone().oneshot(request).await?;
        let status = response.extensions().get::<CacheStatus>().copied();
        let body = response.into_body().collect().await?.to_bytes();
        println!("tower stack: {status:?}, {} bytes", body.len());
    }
    Ok(())
}
