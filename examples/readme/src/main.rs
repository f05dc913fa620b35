use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_client_cache::{BoxError, CacheLayer, CacheStatus, MemoryStore, SecretKey};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let key = SecretKey::from_env("HTTP_CACHE_KEY")?; // never hard-code it
    let mut client = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::new(64 << 20)).secret_key(key))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    let url = std::env::args()
        .nth(1)
        .unwrap_or("http://127.0.0.1:8080/".into());
    for _ in 0..2 {
        let request = http::Request::get(url.as_str()).body(Empty::new())?;
        let response = client.ready().await?.call(request).await?;
        let status = response.extensions().get::<CacheStatus>().copied();
        let body = response.into_body().collect().await?.to_bytes();
        println!("{status:?}, {} bytes", body.len()); // Some(Miss), then Some(Hit)
    }
    Ok(())
}
