//! The README's first command: `cargo run --example quickstart`.
//!
//! Starts a small origin on 127.0.0.1, puts a signed cache in front of a hyper-util client,
//! fetches one URL twice (miss, then hit), then replays the tamper scenario of
//! aiohttp-client-cache's security page: garbage written over the stored entry, and an entry
//! validly signed with *another* key, are both refused with `BadSignature`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{
    BadSignature, BoxError, CacheLayer, CacheStatus, MemoryStore, SecretKey, StoreRequest,
    StoreResponse,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // 1. An origin on loopback that counts the requests it serves.
    let origin_hits = Arc::new(AtomicUsize::new(0));
    // A slow origin, so the hit's speed-up is visible.
    let addr = support::start_origin(origin_hits.clone(), Duration::from_millis(20), |n| {
        http::Response::builder()
            .header("cache-control", "max-age=300")
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(format!("sunny (response #{n})"))))
            .expect("static response")
    })
    .await?;
    let url = format!("http://{addr}/weather");

    // 2. A hyper-util client behind the cache: memory store, entries signed with a secret key.
    //    In production the key comes from SecretKey::from_env("HTTP_CACHE_KEY").
    let store = MemoryStore::new(16 * 1024 * 1024);
    let key = SecretKey::new("quickstart demo key: use SecretKey::from_env in real code")?;
    let layer = CacheLayer::new(store.clone()).secret_key(key);
    let mut client = ServiceBuilder::new()
        .layer(layer.clone())
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    println!("GET {url}");
    for _ in 0..2 {
        let started = Instant::now();
        let (status, body) = fetch(&mut client, &url).await?;
        println!(
            "  {:<5} in {:>8.1?}  body {:?}  origin requests so far: {}",
            status.to_string(),
            started.elapsed(),
            String::from_utf8_lossy(&body),
            origin_hits.load(Ordering::SeqCst)
        );
    }

    // 3. Tampering, as the Python docs show it: overwrite the entry with raw bytes.
    //    With a secret key, entries are named by a keyed digest: `key_for` gives the name.
    let cache_key = layer.key_for(&http::Request::get(&url).body(())?);
    println!("\nSomeone with write access to the store writes b\"exploit!\" under {cache_key}");
    store
        .clone()
        .oneshot(StoreRequest::Put {
            key: cache_key.clone(),
            blob: Bytes::from_static(b"exploit!"),
            ttl: None,
        })
        .await?;
    report(fetch(&mut client, &url).await);

    // 4. A second cache sharing the store with a *different* key stores its own validly signed
    //    response (under its own name: key names are keyed digests too), and whoever can write
    //    to the store copies it under ours...
    let other_layer = CacheLayer::new(store.clone())
        .secret_key(SecretKey::new("an attacker's perfectly valid key")?);
    let mut other = ServiceBuilder::new()
        .layer(other_layer.clone())
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    fetch(&mut other, &url).await?;
    let their_name = other_layer.key_for(&http::Request::get(&url).body(())?);
    let blob = match store.clone().oneshot(StoreRequest::get(their_name)).await? {
        StoreResponse::Blob(Some(blob)) => blob,
        _ => return Err("the other cache stored nothing".into()),
    };
    let put = StoreRequest::Put {
        key: cache_key.clone(),
        blob,
        ttl: None,
    };
    store.clone().oneshot(put).await?;
    println!("\nA cache with a different key signs its own entry; it is copied under {cache_key}");
    // ...which our client refuses just the same.
    report(fetch(&mut client, &url).await);

    println!(
        "\nThe origin served {} requests in all.",
        origin_hits.load(Ordering::SeqCst)
    );
    Ok(())
}

fn report(result: Result<(CacheStatus, Bytes), BoxError>) {
    match result {
        Ok((status, body)) => println!("  unexpected: {status} {body:?}"),
        Err(err) => match err.downcast_ref::<BadSignature>() {
            Some(bad) => println!("  refused: BadSignature: {bad}"),
            None => println!("  other error: {err}"),
        },
    }
}

async fn fetch<S, B>(client: &mut S, url: &str) -> Result<(CacheStatus, Bytes), BoxError>
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<B>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let request = http::Request::get(url).body(Empty::new())?;
    let response = client.ready().await?.call(request).await?;
    let status = response
        .extensions()
        .get::<CacheStatus>()
        .copied()
        .ok_or("no CacheStatus")?;
    let body = response.into_body().collect().await.map_err(Into::into)?;
    Ok((status, body.to_bytes()))
}
