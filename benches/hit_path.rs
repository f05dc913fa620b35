//! Hit and miss cost of the layer, each against a baseline measured in the same run.
//!
//! Run: `cargo bench --bench hit_path`
//!
//! - `signed_hit/<size>` vs `hmac_floor/<size>`: a signed hit cannot be cheaper than one
//!   HMAC-SHA256 pass over the blob, so the ratio of the two is the overhead of everything else.
//! - `encrypted_hit/<size>`: the same with AES-256-GCM instead of HMAC-SHA256.
//! - `unsigned_hit/<size>`: what protection costs (unsigned entries carry a CRC-32).
//! - `miss_1k` vs `bare_origin_1k`: the layer's overhead on a miss that stores a 1 KiB entry.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{CacheLayer, MemoryStore};
use ring::hmac;
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;

use support::{origin, SIZES};

fn request() -> http::Request<()> {
    http::Request::get("http://bench.local/item?id=1")
        .body(())
        .unwrap()
}

async fn call<S, B>(svc: &mut S) -> Bytes
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = svc.ready().await.unwrap().call(request()).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("hit");
    for (size, name) in SIZES {
        let body = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));

        let key = hmac::Key::new(hmac::HMAC_SHA256, b"0123456789abcdef0123456789abcdef");
        let blob = vec![b'x'; size];
        group.bench_with_input(BenchmarkId::new("hmac_floor", name), &blob, |b, blob| {
            b.iter(|| hmac::sign(&key, black_box(blob)))
        });

        for label in ["signed_hit", "encrypted_hit", "unsigned_hit"] {
            let layer = CacheLayer::new(MemoryStore::new(64 << 20)).max_body_size(2 << 20);
            let layer = match label {
                "signed_hit" => layer.secret_key(support::key()),
                "encrypted_hit" => layer.encrypt(support::key()),
                _ => layer,
            };
            let mut svc = ServiceBuilder::new()
                .layer(layer)
                .service(origin(body.clone(), "max-age=3600"));
            rt.block_on(call(&mut svc)); // store it
                                         // All iterations of a sample run inside one `block_on`, as requests do in an
                                         // application (its runtime is entered once, not per request).
            group.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            black_box(call(&mut svc).await);
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
        .build()
        .unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut group = c.benchmark_group("miss");
    let mut bare = origin(body.clone(), "max-age=3600");
    group.bench_function("bare_origin_1KiB", |b| {
        b.iter(|| rt.block_on(call(&mut bare)))
    });
    // Each iteration gets a fresh (small) store, built outside the measurement, so the lookup
    // misses and the response is sealed and written. The service (with its store and settings)
    // is returned, so that criterion drops it outside the measurement too: an application does
    // not tear down its client after every miss.
    let layer = CacheLayer::new(()).secret_key(support::key());
    group.bench_function("signed_miss_and_store_1KiB", |b| {
        b.iter_batched(
            || {
                let layer = layer.clone().with_store(MemoryStore::new(1 << 20));
                ServiceBuilder::new()
                    .layer(layer)
                    .service(origin(body.clone(), "max-age=3600"))
            },
            |mut svc| {
                rt.block_on(call(&mut svc));
                svc
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// 100 concurrent misses for one URL against an origin that takes 10 ms, with and without
/// coalescing. Criterion reports the time for all 100 to complete; the origin request count is
/// printed once per variant (it is the point of the exercise: 1 against 100).
fn concurrent_misses(c: &mut Criterion) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("concurrent_misses");
    group.sample_size(20);
    for (label, coalesce) in [("100_coalesced", true), ("100_uncoalesced", false)] {
        let count = Arc::new(AtomicUsize::new(0));
        let run = |count: Arc<AtomicUsize>| {
            let origin = tower::service_fn(move |_req: http::Request<()>| {
                count.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("cache-control", "max-age=3600")
                            .body(Full::new(Bytes::from(vec![b'x'; 1024])))
                            .unwrap(),
                    )
                }
            });
            let svc = ServiceBuilder::new()
                .layer(CacheLayer::new(MemoryStore::new(1 << 20)).coalesce(coalesce))
                .service(origin);
            async move {
                let tasks: Vec<_> = (0..100)
                    .map(|_| {
                        let svc = svc.clone();
                        tokio::spawn(async move {
                            let r = svc.oneshot(request()).await.unwrap();
                            r.into_body().collect().await.unwrap().to_bytes().len()
                        })
                    })
                    .collect();
                for t in tasks {
                    assert_eq!(t.await.unwrap(), 1024);
                }
            }
        };
        rt.block_on(run(count.clone()));
        eprintln!(
            "concurrent_misses/{label}: origin requests for 100 concurrent misses = {}",
            count.load(Ordering::SeqCst)
        );
        group.bench_function(label, |b| {
            b.iter(|| rt.block_on(run(Arc::new(AtomicUsize::new(0)))))
        });
    }
    group.finish();
}

criterion_group!(benches, hits, misses, concurrent_misses);
criterion_main!(benches);
