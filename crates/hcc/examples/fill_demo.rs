//! Fills a `DiskStore` directory as an application would, for the `hcc` session in
//! docs/operations.md (`scripts/hcc-session.sh` runs it): five responses signed with the key in
//! `HTTP_CACHE_KEY` (one on port 8080), one of them `max-age=0`, two tagged `users`, and a blob planted over the
//! entry of `/v1/prices`.
//!
//! Run: `HTTP_CACHE_KEY=... cargo run -p hcc --example fill_demo -- DIR`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{BoxError, CacheLayer, DiskStore, SecretKey, StoreRequest};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let dir = std::env::args().nth(1).ok_or("usage: fill_demo DIR")?;
    let store = DiskStore::open(&dir)?;
    let layer = CacheLayer::new(store.clone()).secret_key(SecretKey::from_env("HTTP_CACHE_KEY")?);
    let origin = tower::service_fn(|request: http::Request<Empty<Bytes>>| async move {
        let path = request.uri().path().to_owned();
        let mut response = http::Response::builder();
        if path.starts_with("/live") {
            // Stale at once, kept for revalidation (it has a validator).
            response = response
                .header("cache-control", "max-age=0")
                .header("etag", "\"q1\"");
        } else {
            response = response.header("cache-control", "max-age=3600");
        }
        if path.starts_with("/v1/users") {
            response = response.header("cache-tag", "users");
        }
        let body = format!("{{\"path\":\"{path}\"}}");
        Ok::<_, Infallible>(
            response
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default(),
        )
    });
    let client = ServiceBuilder::new().layer(layer.clone()).service(origin);
    let base = "https://api.example.com";
    for path in ["/v1/users/1", "/v1/users/2", "/v1/prices", "/live/quotes"] {
        let request = http::Request::get(format!("{base}{path}")).body(Empty::new())?;
        let response = client.clone().oneshot(request).await?;
        response.into_body().collect().await?;
    }
    // A service on a port of its own: the port is part of the host in a glob.
    let request = http::Request::get("http://127.0.0.1:8080/health").body(Empty::new())?;
    client
        .clone()
        .oneshot(request)
        .await?
        .into_body()
        .collect()
        .await?;
    // What a store writer without the key can do: bytes of its own under an entry's name.
    let key = layer.key_for(&http::Request::get(format!("{base}/v1/prices")).body(())?);
    let put = StoreRequest::Put {
        key,
        blob: Bytes::from_static(b"exploit!"),
        ttl: None,
    };
    store.oneshot(put).await?;
    Ok(())
}
