//! Hit latency and throughput per store, each against the memory store in the same run, and the
//! Redis hit against a bare `GET` of the same bytes over the same kind of connection: as
//! criterion groups, and as interleaved rounds reported as medians (`redis_paired` lines,
//! printed on every run whatever the filter; see docs/benchmarks.md for why).
//!
//! Run: `cargo bench --bench stores --features disk,redis` (starts its own `redis-server` on a
//! free 127.0.0.1 port; install it first). Just the paired rounds: `... -- none`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{CacheLayer, DiskStore, MemoryStore, NearCache, RedisStore, Store};
use tower::{Service, ServiceBuilder, ServiceExt};

#[allow(dead_code)] // The hit sizes and the shared origin are not used here.
#[path = "support/mod.rs"]
mod support;

use support::{key, Reply};

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

async fn hit<S, B>(svc: S, url: &str) -> usize
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let request = http::Request::get(url).body(()).unwrap();
    let response = svc.oneshot(request).await.unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

/// `layer` (with a store timeout) in front of an origin answering `size` bytes.
fn through<St: Store>(
    layer: CacheLayer<St>,
    size: usize,
) -> hyper_client_cache::Cache<
    impl Service<
            http::Request<()>,
            Response = Reply,
            Error = Infallible,
            Future = std::future::Ready<Result<Reply, Infallible>>,
        > + Clone
        + Send
        + 'static,
    St,
> {
    ServiceBuilder::new()
        .layer(layer.store_timeout(Duration::from_secs(5)))
        .service(origin(Bytes::from(vec![b'x'; size])))
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

/// One caller runs on a current-thread runtime (`single`): the request, the store's connection
/// task and the timer share one thread, so the figure is the work of a hit and not the cost of
/// waking other threads. 32 callers run on the 2-worker runtime (`multi`). Each runtime gets its
/// own store from `open`, because a Redis connection's driver task lives on the runtime that
/// opened it.
fn bench_store<St: Store + Sync>(
    c: &mut Criterion,
    single: &tokio::runtime::Runtime,
    multi: &tokio::runtime::Runtime,
    name: &str,
    open: impl Fn(&tokio::runtime::Runtime) -> St,
) where
    St::Future: Send,
{
    let mut group = c.benchmark_group(format!("store_hit/{name}"));
    let (store_single, store_multi) = (open(single), open(multi));
    for (size, label) in [(1024usize, "1KiB"), (64 * 1024, "64KiB")] {
        // Distinct URL per size: the two sizes must not share an entry.
        let url = format!("http://bench.local/item{size}");
        let svc = through(
            CacheLayer::new(store_single.clone()).secret_key(key()),
            size,
        );
        assert_eq!(single.block_on(hit(svc.clone(), &url)), size);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("1_caller", label), |b| {
            b.iter(|| single.block_on(hit(svc.clone(), &url)))
        });
        let svc = through(CacheLayer::new(store_multi.clone()).secret_key(key()), size);
        assert_eq!(multi.block_on(hit(svc.clone(), &url)), size);
        group.throughput(Throughput::Elements(32));
        group.bench_function(BenchmarkId::new("32_callers", label), |b| {
            b.iter_custom(|iters| {
                let (svc, url) = (svc.clone(), url.clone());
                multi.block_on(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> = (0..32)
                            .map(|_| {
                                let (svc, url) = (svc.clone(), url.clone());
                                tokio::spawn(async move { hit(svc, &url).await })
                            })
                            .collect();
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
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let memory = MemoryStore::new(256 << 20);
    bench_store(c, &single, &multi, "memory", |_| memory.clone());

    let dir = tempfile::tempdir().unwrap();
    let disk = DiskStore::open(dir.path()).unwrap();
    bench_store(c, &single, &multi, "disk", |_| disk.clone());

    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.1);
    bench_store(c, &single, &multi, "redis", |rt| {
        rt.block_on(async {
            for _ in 0..100 {
                if let Ok(s) = RedisStore::connect(&url).await {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("redis-server did not start");
        })
    });

    // The near cache in front of the same server: hot hits from process memory.
    let near_single = single.block_on(near(&url));
    let near_multi = multi.block_on(near(&url));
    bench_store(c, &single, &multi, "near", |rt| {
        if std::ptr::eq(rt, &single) {
            near_single.clone()
        } else {
            near_multi.clone()
        }
    });
    // Bypasses are lookups made while the lease had lapsed (between criterion's samples the
    // current-thread runtime does not run the heartbeat).
    println!("near stats (1 caller): {:?}", near_single.stats());
    println!("near stats (32 callers): {:?}", near_multi.stats());

    // The floor for a Redis hit: a bare GET of a value of the same size, same kind of connection,
    // on the same current-thread runtime as the 1-caller hits.
    let rt = &single;
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

    // The same comparison as interleaved rounds: loopback latency on this shared 2-core VM has a
    // long tail (`redis-benchmark -c 1` gives a p50 of 23 µs and a mean of 110 µs), which moves
    // criterion's means by 2× between runs. Each round runs one bare GET, one GET + HMAC, one signed
    // hit and one encrypted hit, in a rotating order, so all four see the same noise; medians
    // ignore the tail.
    paired(rt, &url, &conn);
    near_paired(rt, &url);
    drop(redis);
}

async fn near(url: &str) -> NearCache {
    NearCache::builder(RedisStore::connect(url).await.unwrap())
        .start()
        .await
        .unwrap()
}

/// Interleaved rounds of a signed hit from a `MemoryStore`, through a `NearCache`, and from the
/// plain `RedisStore` behind it, reported as medians and ratios (`near_paired` lines).
fn near_paired(rt: &tokio::runtime::Runtime, url: &str) {
    let (near, redis) =
        rt.block_on(async { (near(url).await, RedisStore::connect(url).await.unwrap()) });
    let memory = MemoryStore::new(256 << 20);
    println!(
        "near_paired ({ROUNDS} rounds, p50): size | MemoryStore hit | NearCache hit (÷memory) | RedisStore hit (÷memory) | near ÷ redis"
    );
    for size in [1024usize, 64 * 1024] {
        let url = format!("http://bench.local/near{size}");
        let m = through(CacheLayer::new(memory.clone()).secret_key(key()), size);
        let n = through(CacheLayer::new(near.clone()).secret_key(key()), size);
        let r = through(CacheLayer::new(redis.clone()).secret_key(key()), size);
        let mut times: [Vec<Duration>; 3] = Default::default();
        rt.block_on(async {
            assert_eq!(hit(m.clone(), &url).await, size);
            assert_eq!(hit(n.clone(), &url).await, size);
            // The near copy is filled on the first lookup after the write's invalidation.
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(hit(n.clone(), &url).await, size);
            for round in 0..ROUNDS {
                for i in 0..3 {
                    let which = (round + i) % 3;
                    let started = Instant::now();
                    let got = match which {
                        0 => hit(m.clone(), &url).await,
                        1 => hit(n.clone(), &url).await,
                        _ => hit(r.clone(), &url).await,
                    };
                    times[which].push(started.elapsed());
                    assert_eq!(got, size);
                }
            }
        });
        let p50 = |which: usize| {
            let mut t = times[which].clone();
            t.sort();
            t[ROUNDS / 2]
        };
        let [mem, nr, rd] = [0, 1, 2].map(p50);
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "near_paired: {size} B | {mem:.2?} | {nr:.2?} ({:.2}×) | {rd:.1?} ({:.1}×) | {:.3}×",
            ratio(nr, mem),
            ratio(rd, mem),
            ratio(nr, rd),
        );
    }
    println!("near stats (paired): {:?}", near.stats());
}

/// Rounds of (bare GET, GET + HMAC, signed hit, encrypted hit) per body size in the paired Redis
/// comparison.
const ROUNDS: usize = 3000;

/// Interleaved rounds, reported as medians. Besides the bare `GET`, each round runs a `GET`
/// followed by one HMAC-SHA256 pass over the fetched bytes: what any signed Redis cache must do
/// at least, so the signed hit's distance to it is the layer's own cost.
fn paired(rt: &tokio::runtime::Runtime, url: &str, conn: &redis::aio::ConnectionManager) {
    let store = rt.block_on(RedisStore::connect(url)).unwrap();
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]);
    println!(
        "redis_paired ({ROUNDS} rounds, p50): size | GET | GET+HMAC (÷GET) | signed hit (÷GET, \
         ÷GET+HMAC) | encrypted hit (÷GET) | p90 of the four"
    );
    for size in [1024usize, 64 * 1024] {
        let signed = through(CacheLayer::new(store.clone()).secret_key(key()), size);
        let encrypted = through(CacheLayer::new(store.clone()).encrypt(key()), size);
        let (signed_url, encrypted_url) = (
            format!("http://bench.local/signed{size}"),
            format!("http://bench.local/encrypted{size}"),
        );
        let bare = format!("bare:{size}");
        let get = || {
            let mut conn = conn.clone();
            let bare = bare.clone();
            async move {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(&bare)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(v.len(), size + 200);
                v
            }
        };
        let mut times: [Vec<Duration>; 4] = Default::default();
        rt.block_on(async {
            assert_eq!(hit(signed.clone(), &signed_url).await, size);
            assert_eq!(hit(encrypted.clone(), &encrypted_url).await, size);
            for round in 0..ROUNDS {
                for i in 0..4 {
                    let which = (round + i) % 4;
                    let started = Instant::now();
                    match which {
                        0 => drop(get().await),
                        // `verify` computes the whole MAC before comparing (in constant time).
                        1 => assert!(ring::hmac::verify(&mac, &get().await, &[0; 32]).is_err()),
                        2 => assert_eq!(hit(signed.clone(), &signed_url).await, size),
                        _ => assert_eq!(hit(encrypted.clone(), &encrypted_url).await, size),
                    }
                    times[which].push(started.elapsed());
                }
            }
        });
        let pick = |which: usize, q: usize| {
            let mut t = times[which].clone();
            t.sort();
            t[ROUNDS * q / 100]
        };
        let [get, floor, signed, encrypted] = [0, 1, 2, 3].map(|w| pick(w, 50));
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "redis_paired: {size} B | {get:.1?} | {floor:.1?} ({:.2}×) | {signed:.1?} ({:.2}×, \
             {:.2}×) | {encrypted:.1?} ({:.2}×) | p90 {:.1?} / {:.1?} / {:.1?} / {:.1?}",
            ratio(floor, get),
            ratio(signed, get),
            ratio(signed, floor),
            ratio(encrypted, get),
            pick(0, 90),
            pick(1, 90),
            pick(2, 90),
            pick(3, 90),
        );
    }
}

criterion_group!(benches, stores);
criterion_main!(benches);
