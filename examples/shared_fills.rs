//! Coalesced callers share the fill (docs/benchmarks.md, "Shared fills"): three scenarios
//! against a hyper origin on 127.0.0.1, through a hyper-util client behind a signed
//! `CacheLayer`, each read against the same request without the cache in the same run.
//!
//! 1. 50 identical requests in one task (`join_all` of their heads, bodies read afterwards),
//!    against a cacheable 256 KiB body that takes 500 ms (8 chunks of 32 KiB, one every
//!    62.5 ms): origin requests and total time against one bare request.
//! 2. 50 callers in tasks of their own arriving 20 ms after the leader: origin requests, and how
//!    much later than the leader's each waiter's first body byte arrives (median and max).
//! 3. 50 concurrent requests for an uncacheable response that takes 200 ms, twice: each burst's
//!    total time against one bare request (the second burst is the hit-for-pass case).
//!
//! Run: `cargo run --release --example shared_fills`. Exits non-zero when a scenario sends more
//! origin requests than it should.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_client_cache::{CacheLayer, MemoryStore, SecretKey};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{ServiceBuilder, ServiceExt};

type Counts = Arc<Mutex<HashMap<String, usize>>>;

const CHUNK: usize = 32 << 10;
const CHUNKS: usize = 8;

/// `/slow...`: 256 KiB over 500 ms, cacheable. `/nostore...`: 200 ms, then `no-store`.
async fn origin() -> (std::net::SocketAddr, Counts) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts: Counts = Arc::default();
    let seen = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let key = req.uri().to_string();
                    *seen.lock().unwrap().entry(key.clone()).or_default() += 1;
                    async move {
                        if key.starts_with("/late-body") {
                            // The head at once, the body 200 ms later.
                            let (mut tx, body) =
                                http_body_util::channel::Channel::<Bytes, Infallible>::new(2);
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                let _ = tx.send_data(Bytes::from_static(b"private")).await;
                            });
                            return Ok(Response::builder()
                                .header("cache-control", "no-store")
                                .body(http_body_util::Either::Right(body))
                                .unwrap());
                        }
                        if key.starts_with("/nostore") {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .header("cache-control", "no-store")
                                    .body(http_body_util::Either::Left(http_body_util::Full::new(
                                        Bytes::from_static(b"private"),
                                    )))
                                    .unwrap(),
                            );
                        }
                        let (mut tx, body) =
                            http_body_util::channel::Channel::<Bytes, Infallible>::new(2);
                        tokio::spawn(async move {
                            for _ in 0..CHUNKS {
                                tokio::time::sleep(Duration::from_micros(62_500)).await;
                                if tx.send_data(Bytes::from(vec![b'x'; CHUNK])).await.is_err() {
                                    return;
                                }
                            }
                        });
                        Ok(Response::builder()
                            .header("cache-control", "max-age=600")
                            .header("content-length", CHUNK * CHUNKS)
                            .body(http_body_util::Either::Right(body))
                            .unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, counts)
}

fn get(addr: std::net::SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let (addr, counts) = origin().await;
    let count = |path: &str| counts.lock().unwrap().get(path).copied().unwrap_or(0);
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let cache = ServiceBuilder::new()
        .layer(
            CacheLayer::new(MemoryStore::new(64 << 20))
                .secret_key(SecretKey::new("shared fills example key, not secret").unwrap()),
        )
        .service(http.clone());
    let mut failed = false;

    // The baseline: one request without the cache, body read to the end.
    let bare = |path: &'static str| {
        let http = http.clone();
        async move {
            let started = Instant::now();
            let response = http.clone().oneshot(get(addr, path)).await.unwrap();
            response.into_body().collect().await.unwrap();
            started.elapsed()
        }
    };

    // 1. join_all of 50 heads, bodies read afterwards.
    let one = bare("/slow?bare1").await;
    let started = Instant::now();
    let heads = futures_util::future::join_all(
        (0..50).map(|_| cache.clone().oneshot(get(addr, "/slow?join"))),
    )
    .await;
    for response in heads {
        let body = response
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body.len(), CHUNK * CHUNKS);
    }
    let total = started.elapsed();
    println!(
        "join_all 50, 256 KiB / 500 ms: {} origin request(s), {:.1} ms against {:.1} ms bare ({:.3}x)",
        count("/slow?join"),
        ms(total),
        ms(one),
        total.as_secs_f64() / one.as_secs_f64()
    );
    failed |= count("/slow?join") != 1;

    // 2. 50 callers in tasks of their own, 20 ms after the leader: first body byte each.
    let first_byte = |cache: hyper_client_cache::Cache<_, MemoryStore>| async move {
        let response = cache.oneshot(get(addr, "/slow?tasks")).await.unwrap();
        let mut body = response.into_body();
        let first = loop {
            match body.frame().await {
                Some(Ok(frame)) if frame.data_ref().is_some_and(|d| !d.is_empty()) => {
                    break Instant::now()
                }
                Some(Ok(_)) => continue,
                _ => panic!("no body"),
            }
        };
        while body.frame().await.is_some() {}
        first
    };
    let leader = tokio::spawn(first_byte(cache.clone()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiters: Vec<_> = (0..50)
        .map(|_| tokio::spawn(first_byte(cache.clone())))
        .collect();
    let leader = leader.await.unwrap();
    let mut late = Vec::new();
    for waiter in waiters {
        let at = waiter.await.unwrap();
        late.push(at.saturating_duration_since(leader).as_secs_f64() * 1000.0);
    }
    late.sort_by(f64::total_cmp);
    println!(
        "50 tasks 20 ms late: {} origin request(s), first byte after the leader's: median {:.3} ms, max {:.3} ms",
        count("/slow?tasks"),
        late[late.len() / 2],
        late[late.len() - 1]
    );
    failed |= count("/slow?tasks") != 1;

    // 3. 50 concurrent requests for an uncacheable response, twice: the head after 200 ms
    //    (waiters of the first burst learn at the head that nothing will be stored), and the
    //    head at once with the body 200 ms later.
    for (what, path, bare_path) in [
        ("head after 200 ms", "/nostore?burst", "/nostore?bare"),
        (
            "head at once, body after 200 ms",
            "/late-body?burst",
            "/late-body?bare",
        ),
    ] {
        let one = bare(bare_path).await;
        for burst in ["first", "second"] {
            let started = Instant::now();
            let answers = futures_util::future::join_all((0..50).map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    let response = cache.oneshot(get(addr, path)).await.unwrap();
                    response.into_body().collect().await.unwrap();
                })
            }))
            .await;
            assert!(answers.iter().all(Result::is_ok));
            let total = started.elapsed();
            println!(
                "50 concurrent uncacheable ({what}), {burst} burst: {:.1} ms against {:.1} ms bare ({:.2}x)",
                ms(total),
                ms(one),
                total.as_secs_f64() / one.as_secs_f64()
            );
        }
        failed |= count(path) != 100;
    }
    if failed {
        eprintln!("FAILED: origin request counts are off");
        std::process::exit(1);
    }
}
