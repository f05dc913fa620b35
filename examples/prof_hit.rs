use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{CacheLayer, MemoryStore, SecretKey};
use std::convert::Infallible;
use tower::{Service, ServiceBuilder, ServiceExt};
fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    let origin = tower::service_fn(move |_r: http::Request<()>| {
        let b = body.clone();
        async move {
            Ok::<_, Infallible>(
                http::Response::builder()
                    .header("cache-control", "max-age=3600")
                    .header("content-type", "application/json")
                    .header("etag", "\"abc\"")
                    .header("server", "bench")
                    .body(Full::new(b))
                    .unwrap(),
            )
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(
            CacheLayer::new(MemoryStore::new(64 << 20))
                .secret_key(SecretKey::new("benchmark key, 32 bytes long....").unwrap()),
        )
        .service(origin);
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(300000);
    let t = std::time::Instant::now();
    for _ in 0..n {
        rt.block_on(async {
            let r = svc
                .ready()
                .await
                .unwrap()
                .call(
                    http::Request::get("http://bench.local/item?id=1")
                        .body(())
                        .unwrap(),
                )
                .await
                .unwrap();
            std::hint::black_box(r.into_body().collect().await.unwrap().to_bytes());
        });
    }
    eprintln!("{:?} per hit", t.elapsed() / n as u32);
}
