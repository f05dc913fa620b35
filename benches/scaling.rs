//! Do hits scale with cores? One layer (one `MemoryStore`, one set of counters) shared by every
//! thread, 1 KiB hits, 1 and 2 OS threads each running its own current-thread tokio runtime,
//! in the same run; the ratio of the two throughputs is the scaling (2.0 is perfect on two
//! cores). `bare` is the same loop over the origin service without a cache: what the machine
//! itself allows.
//!
//! Run: `cargo bench --bench scaling` (then read `hits/<mode>/<threads>`: criterion reports the
//! time per hit; scaling = time(1) / time(2)).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::BodyExt;
use hyper_client_cache::{CacheLayer, MemoryStore};
use tower::{Service, ServiceBuilder, ServiceExt};

#[allow(dead_code)] // SIZES is for the other benches
#[path = "support/mod.rs"]
mod support;

fn request() -> http::Request<()> {
    http::Request::get("http://bench.local/item?id=1")
        .body(())
        .unwrap()
}

/// `iters` calls of `svc` spread over `threads` threads (each with a clone), started together;
/// the wall time from the start to the last call's end.
fn run<S, B>(svc: &S, threads: u64, iters: u64) -> Duration
where
    S: Service<http::Request<()>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Send,
    B::Data: Send,
    B::Error: std::fmt::Debug,
{
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (svc, start) = (svc.clone(), start.clone());
        let n = iters / threads + u64::from(t < iters % threads);
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut svc = svc;
            start.wait();
            rt.block_on(async {
                for _ in 0..n {
                    let response = svc.ready().await.unwrap().call(request()).await.unwrap();
                    black_box(response.into_body().collect().await.unwrap().to_bytes());
                }
            });
        }));
    }
    start.wait();
    let started = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    started.elapsed()
}

fn hits(c: &mut Criterion) {
    let mut group = c.benchmark_group("hits");
    group.throughput(Throughput::Elements(1));
    let body = Bytes::from(vec![b'x'; 1024]);
    let origin = support::origin(body.clone(), "max-age=3600");
    for threads in [1u64, 2] {
        group.bench_function(BenchmarkId::new("bare", threads), |b| {
            b.iter_custom(|iters| run(&origin, threads, iters))
        });
    }
    for mode in ["unsigned", "signed", "encrypted"] {
        let layer = CacheLayer::new(MemoryStore::new(64 << 20));
        let layer = match mode {
            "signed" => layer.secret_key(support::key()),
            "encrypted" => layer.encrypt(support::key()),
            _ => layer,
        };
        let svc = ServiceBuilder::new().layer(layer).service(origin.clone());
        // Stored once; every measured call is a hit.
        run(&svc, 1, 1);
        for threads in [1u64, 2] {
            group.bench_function(BenchmarkId::new(mode, threads), |b| {
                b.iter_custom(|iters| run(&svc, threads, iters))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
