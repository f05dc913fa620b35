//! A cache that survives restarts: `cargo run --example disk_store --features disk`.
//!
//! Two separate "runs" (two `DiskStore`s over one directory, as two processes would have) share
//! the entries written by the first. Origin on 127.0.0.1; the directory is a fresh temporary one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{BoxError, CacheLayer, CacheStatus, DiskStore, SecretKey};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = support::start_origin(hits.clone(), Duration::ZERO, |_| {
        let mut response = http::Response::new(Full::new(Bytes::from("3 items")));
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=3600"),
        );
        response
    })
    .await?;
    let url = format!("http://{addr}/catalog");
    let dir = std::env::temp_dir().join(format!("hcc-disk-example-{}", std::process::id()));

    for run in 1..=2 {
        // What a CLI does at start-up: open the cache directory.
        let store = DiskStore::builder(&dir)
            .max_bytes(64 * 1024 * 1024)
            .open()?;
        let key = SecretKey::new("disk example key: use SecretKey::from_env")?;
        let client = ServiceBuilder::new()
            .layer(CacheLayer::new(store).secret_key(key))
            .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
        let response = client
            .oneshot(http::Request::get(&url).body(Empty::new())?)
            .await?;
        let status = response.extensions().get::<CacheStatus>().copied();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "run {run}: {:?} {:?} (origin requests so far: {})",
            status,
            String::from_utf8_lossy(&body),
            hits.load(Ordering::SeqCst)
        );
    }
    let store = DiskStore::open(&dir)?;
    println!(
        "{} expired or broken files removed by cleanup",
        store.cleanup().await?
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
