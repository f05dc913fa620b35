//! hyper-client-cache against http-cache-tower (1.0.0-alpha, moka manager), same workload,
//! same run. Run: `cargo bench -p hcc-compare`.
//!
//! Both layers sit in front of the same in-process origin (a tower service answering a ready
//! response with `Cache-Control: max-age=3600`), and every measurement reads the whole body.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use http_cache::{MokaCache, MokaManager};
use http_cache_tower::HttpCacheLayer;
use hyper_client_cache::{CacheLayer, MemoryStore};
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "../../support/mod.rs"]
mod support;

use support::{key, origin, SIZES};

fn request() -> http::Request<Full<Bytes>> {
    http::Request::get("http://bench.local/item?id=1")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn call<S, B>(svc: &mut S) -> Bytes
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = svc.ready().await.unwrap().call(request()).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Times a sample's iterations inside one `block_on`: an application enters its runtime once,
/// not per request. Used for the hits of both crates alike.
fn in_one_block_on<S, B>(b: &mut criterion::Bencher<'_>, rt: &tokio::runtime::Runtime, svc: &mut S)
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    b.iter_custom(|iters| {
        rt.block_on(async {
            let started = Instant::now();
            for _ in 0..iters {
                black_box(call(svc).await);
            }
            started.elapsed()
        })
    })
}

fn hcc_layer(mode: &str) -> CacheLayer<MemoryStore> {
    let layer = CacheLayer::new(MemoryStore::new(64 << 20)).max_body_size(2 << 20);
    match mode {
        "signed" => layer.secret_key(key()),
        "encrypted" => layer.encrypt(key()),
        _ => layer,
    }
}

fn moka() -> MokaManager {
    MokaManager::new(MokaCache::new(10_000))
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("compare_hit");
    for (size, name) in SIZES {
        let body = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));

        for (label, mode) in [
            ("hcc_signed", "signed"),
            ("hcc_encrypted", "encrypted"),
            ("hcc_unsigned", "unsigned"),
        ] {
            let mut svc = ServiceBuilder::new()
                .layer(hcc_layer(mode))
                .service(origin(body.clone(), "max-age=3600"));
            let first = rt.block_on(call(&mut svc));
            assert_eq!(first.len(), size);
            group.bench_function(BenchmarkId::new(label, name), |b| {
                in_one_block_on(b, &rt, &mut svc)
            });
        }

        let mut theirs = ServiceBuilder::new()
            .layer(HttpCacheLayer::new(moka()))
            .service(origin(body.clone(), "max-age=3600"));
        let first = rt.block_on(call(&mut theirs));
        assert_eq!(first.len(), size);
        // Make sure the comparison measures their hit path, not a miss.
        let x_cache = rt.block_on(async {
            let response = theirs.ready().await.unwrap().call(request()).await.unwrap();
            response.headers().get("x-cache").cloned()
        });
        assert_eq!(x_cache.as_ref().map(|v| v.as_bytes()), Some(&b"HIT"[..]));
        group.bench_function(BenchmarkId::new("http_cache_tower", name), |b| {
            in_one_block_on(b, &rt, &mut theirs)
        });
    }
    group.finish();
}

fn misses(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    let mut group = c.benchmark_group("compare_miss_1KiB");
    let mut bare = origin(body.clone(), "max-age=3600");
    group.bench_function("bare_origin", |b| {
        b.iter(|| black_box(rt.block_on(call(&mut bare))))
    });
    // A fresh, empty cache per iteration (built outside the measurement): lookup, forward, store.
    group.bench_function("hcc_signed", |b| {
        b.iter_batched(
            || {
                let layer = hcc_layer("signed").with_store(MemoryStore::new(1 << 20));
                ServiceBuilder::new()
                    .layer(layer)
                    .service(origin(body.clone(), "max-age=3600"))
            },
            |mut svc| black_box(rt.block_on(call(&mut svc))),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("http_cache_tower", |b| {
        b.iter_batched(
            || {
                ServiceBuilder::new()
                    .layer(HttpCacheLayer::new(moka()))
                    .service(origin(body.clone(), "max-age=3600"))
            },
            |mut svc| black_box(rt.block_on(call(&mut svc))),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hits, misses);
criterion_main!(benches);
