//! Hit latency and throughput per store, each against the memory store in the same run, and the
//! Redis hit against a bare `GET` of the same bytes over the same connection.
//!
//! Run: `cargo bench --bench stores --features disk,redis` (starts its own `redis-server` on a
//! free 127.0.0.1 port; install it first).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{CacheLayer, DiskStore, MemoryStore, RedisStore, SecretKey, Store};
use tower::{Service, ServiceBuilder, ServiceExt};

type Reply = http::Response<Full<Bytes>>;

fn origin(
    body: Bytes,
) -> impl Service<
    http::Request<()>,
    Response = Reply,
    Error = Infallible,
    Future = std::future::Ready<Result<Reply, Infallible>>,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_req: http::Request<()>| {
        let response = http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        std::future::ready(Ok(response))
    })
}

async fn hit<S, B>(svc: S) -> usize
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let request = http::Request::get("http://bench.local/item")
        .body(())
        .unwrap();
    let response = svc.oneshot(request).await.unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this benchmark");
        Self(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench_store<St: Store + Sync>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: St,
) where
    St::Future: Send,
{
    let mut group = c.benchmark_group(format!("store_hit/{name}"));
    for (size, label) in [(1024usize, "1KiB"), (64 * 1024, "64KiB")] {
        let key = SecretKey::new("benchmark key, 32 bytes long....").unwrap();
        let svc = ServiceBuilder::new()
            .layer(
                CacheLayer::new(store.clone())
                    .secret_key(key)
                    .store_timeout(Duration::from_secs(5)),
            )
            .service(origin(Bytes::from(vec![b'x'; size])));
        // Distinct URL per size: the two sizes must not share an entry.
        let svc = tower::util::MapRequest::new(svc, move |mut r: http::Request<()>| {
            *r.uri_mut() = format!("http://bench.local/item{size}").parse().unwrap();
            r
        });
        assert_eq!(rt.block_on(hit(svc.clone())), size);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("1_caller", label), |b| {
            b.iter(|| rt.block_on(hit(svc.clone())))
        });
        group.throughput(Throughput::Elements(32));
        group.bench_function(BenchmarkId::new("32_callers", label), |b| {
            b.iter_custom(|iters| {
                let svc = svc.clone();
                rt.block_on(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> =
                            (0..32).map(|_| tokio::spawn(hit(svc.clone()))).collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    bench_store(c, &rt, "memory", MemoryStore::new(256 << 20));

    let dir = tempfile::tempdir().unwrap();
    bench_store(c, &rt, "disk", DiskStore::open(dir.path()).unwrap());

    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.1);
    let store = rt.block_on(async {
        for _ in 0..100 {
            if let Ok(s) = RedisStore::connect(&url).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    });
    bench_store(c, &rt, "redis", store);

    // The floor for a Redis hit: a bare GET of a value of the same size, same kind of connection.
    let mut group = c.benchmark_group("redis_bare_get");
    let mut conn = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    });
    for (size, label) in [(1024usize, "1KiB"), (64 * 1024, "64KiB")] {
        // Blob size of a signed entry of that body: body + ~200 bytes of envelope and headers.
        let value = vec![b'x'; size + 200];
        let key = format!("bare:{size}");
        rt.block_on(async {
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .query_async(&mut conn)
                .await
                .unwrap();
        });
        group.bench_function(label, |b| {
            b.iter(|| {
                let mut conn = conn.clone();
                let key = key.clone();
                rt.block_on(async move {
                    let v: Vec<u8> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    v.len()
                })
            })
        });
    }
    group.finish();
    drop(redis);
}

criterion_group!(benches, stores);
criterion_main!(benches);
