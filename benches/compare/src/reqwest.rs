//! hyper-client-cache's `CacheMiddleware` against http-cache-reqwest (1.0.0-alpha, moka
//! manager), both in a reqwest-middleware client over the same `reqwest::Client` settings, same
//! origin, same run. Run: `cargo bench -p hcc-compare --bench reqwest`.
//!
//! The origin is a hyper server on 127.0.0.1, on a thread and runtime of its own; the client runs
//! on a current-thread runtime entered once per sample. Hits read one URL again and again; misses
//! read a new URL each time (a query counter), so every request is a lookup, an origin round
//! trip and a store. `bare` is the same client without any middleware: a round trip per request.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::Full;
use http_cache_reqwest::{Cache, CacheMode, HttpCache, HttpCacheOptions, MokaManager};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore, SecretKey};
use hyper_client_cache_reqwest::CacheMiddleware;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

/// An origin on its own thread answering every request with `body` (`max-age=3600`).
fn start_origin(body: Bytes) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .header("cache-control", "max-age=3600")
                                    .header("content-type", "application/json")
                                    .header("etag", "\"v1\"")
                                    .body(Full::new(body))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    addr
}

fn key() -> SecretKey {
    SecretKey::new("benchmark key, 32 bytes long....").unwrap()
}

fn clients() -> Vec<(&'static str, ClientWithMiddleware)> {
    let http = reqwest::Client::new();
    let ours = |layer: CacheLayer<MemoryStore>| {
        ClientBuilder::new(http.clone())
            .with(CacheMiddleware::new(layer, http.clone()))
            .build()
    };
    let store = || MemoryStore::new(64 << 20);
    vec![
        ("bare", ClientBuilder::new(http.clone()).build()),
        (
            "hcc_signed",
            ours(CacheLayer::new(store()).secret_key(key())),
        ),
        ("hcc_unsigned", ours(CacheLayer::new(store()))),
        (
            "http_cache_reqwest",
            ClientBuilder::new(http.clone())
                .with(Cache(HttpCache {
                    mode: CacheMode::Default,
                    manager: MokaManager::default(),
                    options: HttpCacheOptions::default(),
                }))
                .build(),
        ),
    ]
}

async fn get(client: &ClientWithMiddleware, url: &str) -> (Bytes, bool) {
    let response = client.get(url).send().await.unwrap();
    let hit = response.extensions().get::<CacheStatus>() == Some(&CacheStatus::Hit)
        || response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v == "HIT");
    (response.bytes().await.unwrap(), hit)
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("reqwest_hit");
    for (size, name) in SIZES {
        let addr = start_origin(Bytes::from(vec![b'x'; size]));
        let url = format!("http://{addr}/item?id=1");
        group.throughput(Throughput::Bytes(size as u64));
        for (label, client) in clients() {
            let (body, _) = rt.block_on(get(&client, &url));
            assert_eq!(body.len(), size);
            let (_, hit) = rt.block_on(get(&client, &url));
            // The comparison measures hits (the bare client has nothing to hit).
            assert_eq!(hit, label != "bare", "{label}");
            group.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            black_box(get(&client, &url).await);
                        }
                        started.elapsed()
                    })
                })
            });
        }
    }
    group.finish();
}

fn misses(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = start_origin(Bytes::from(vec![b'x'; 1024]));
    let mut group = c.benchmark_group("reqwest_miss_1KiB");
    let counter = AtomicU64::new(0);
    for (label, client) in clients() {
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        let url = format!("http://{addr}/item?id={n}");
                        let (_, hit) = get(&client, &url).await;
                        debug_assert!(!hit);
                        black_box(hit);
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hits, misses);
criterion_main!(benches);
