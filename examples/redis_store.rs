//! A cache shared through Redis: `cargo run --example redis_store --features redis`.
//!
//! Starts its own `redis-server` on a free 127.0.0.1 port (install it with
//! `apt-get install redis-server`), then two clients ("two instances of a fleet") share entries;
//! a third, with another key, refuses them. Stops the server at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{BadSignature, BoxError, CacheLayer, CacheStatus, RedisStore, SecretKey};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut redis = support::spawn_redis(port, &[])?;
    let result = run(port).await;
    let _ = redis.kill();
    let _ = redis.wait();
    result
}

async fn run(port: u16) -> Result<(), BoxError> {
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut store = None;
    for _ in 0..100 {
        match RedisStore::builder(&url).prefix("example:").connect().await {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let store = store.ok_or("redis-server did not come up")?;

    let hits = Arc::new(AtomicUsize::new(0));
    let addr = support::start_origin(hits.clone(), Duration::ZERO, |_| {
        let mut response = http::Response::new(Full::new(Bytes::from("EUR 12.50")));
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=3600"),
        );
        response
    })
    .await?;
    let target = format!("http://{addr}/prices");
    let fleet_key = "the fleet's key: SecretKey::from_env in real code";

    for (who, key) in [
        ("instance A", fleet_key),
        ("instance B", fleet_key),
        ("outsider", "some other key entirely"),
    ] {
        let client = ServiceBuilder::new()
            .layer(CacheLayer::new(store.clone()).secret_key(SecretKey::new(key)?))
            .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
        match client
            .oneshot(http::Request::get(&target).body(Empty::new())?)
            .await
        {
            Ok(response) => {
                let status = response.extensions().get::<CacheStatus>().copied();
                let body = response.into_body().collect().await?.to_bytes();
                println!("{who}: {status:?} {:?}", String::from_utf8_lossy(&body));
            }
            Err(e) => match e.downcast_ref::<BadSignature>() {
                Some(bad) => println!("{who}: refused: {bad}"),
                None => return Err(e),
            },
        }
    }
    println!("origin requests: {}", hits.load(Ordering::SeqCst));
    Ok(())
}
