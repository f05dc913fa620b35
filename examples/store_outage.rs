//! A Redis outage under load (#21's target, docs/benchmarks.md "A dead store"): 32 callers
//! against a loopback origin, with no cache, then through the cache while its Redis is killed
//! (SIGKILL: connections refused) and while it is stalled (SIGSTOP: connections accepted, never
//! answered), each with the default circuit breaker (measured once it is open; the example
//! prints how long that took) and without one; then how long after Redis is back the first hit
//! comes.
//!
//! ```sh
//! cargo run --release --example store_outage --features redis
//! ```
//!
//! Starts its own `redis-server`s on free 127.0.0.1 ports; every phase is bounded (1.5 s of
//! load, at most 2 000 000 requests). Prints rates and ratios; exits non-zero only on errors.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{BoxError, CacheLayer, CacheStatus, RedisStore};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;

const CALLERS: usize = 32;
const PHASE: Duration = Duration::from_millis(1500);
const MAX_REQUESTS: usize = 2_000_000;
const URLS: usize = 64;

struct Redis {
    port: u16,
    child: Child,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A scratch directory removed on drop (the example has no dev-dependencies).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Redis {
    fn start(port: u16) -> Result<Self, BoxError> {
        let dir = std::env::temp_dir().join(format!("hcc-outage-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start redis-server ({e}); apt-get install redis-server")
            })?;
        Ok(Self {
            port,
            child,
            _dir: tempdir::Dir(dir),
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn signal(&self, signal: &str) -> Result<(), BoxError> {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()?
            .success();
        if ok {
            Ok(())
        } else {
            Err(format!("kill {signal} failed").into())
        }
    }

    fn kill(&mut self) {
        let _ = self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn connect(&self) -> Result<RedisStore, BoxError> {
        for _ in 0..100 {
            if let Ok(store) = RedisStore::connect(&self.url()).await {
                return Ok(store);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("redis-server did not come up".into())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

type Body = Empty<Bytes>;

/// Requests per second of `CALLERS` callers sharing `svc` for one phase: the requests that
/// ended within the phase, over its length (a request still waiting when it ends, such as a
/// breaker's probe to a stalled store, does not stretch it).
async fn load<S, B>(svc: S, base: &str) -> Result<f64, BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let (svc, done, base) = (svc.clone(), done.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut i = caller;
            while started.elapsed() < PHASE && done.load(Ordering::Relaxed) < MAX_REQUESTS {
                let url = format!("{base}/item/{}", i % URLS);
                i += CALLERS;
                let request = http::Request::get(url).body(Empty::new())?;
                let response = svc.clone().oneshot(request).await.map_err(Into::into)?;
                response.into_body().collect().await.map_err(Into::into)?;
                if started.elapsed() < PHASE {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<_, BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / PHASE.as_secs_f64())
}

/// How long until a GET of `url` is a hit again, asking every 5 ms (bounded at 10 s).
async fn until_hit<S, B>(svc: S, url: &str) -> Result<Duration, BoxError>
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone,
    S::Error: Into<BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let request = http::Request::get(url).body(Empty::new())?;
        let response = svc.clone().oneshot(request).await.map_err(Into::into)?;
        let hit = response.extensions().get::<CacheStatus>() == Some(&CacheStatus::Hit);
        response.into_body().collect().await.map_err(Into::into)?;
        if hit {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err("no hit within 10 s of Redis coming back".into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = support::start_origin(hits, Duration::ZERO, |_| {
        let mut response = http::Response::new(Full::new(Bytes::from_static(b"item")));
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=3600"),
        );
        response
    })
    .await?;
    let base = format!("http://{addr}");
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();

    // Each outage is measured three times, each right after a baseline run without a cache
    // (the machine's speed drifts between runs): the ratio of each pair, then their median.
    for (outage, signal) in [
        ("killed (SIGKILL)", "-KILL"),
        ("stalled (SIGSTOP)", "-STOP"),
    ] {
        for breaker in [true, false] {
            let rounds = if breaker { 3 } else { 1 };
            let mut ratios = Vec::new();
            let mut rates = Vec::new();
            for _ in 0..rounds {
                let bare = load(client.clone(), &base).await?;
                let redis = Redis::start(free_port()?)?;
                let store = redis.connect().await?;
                let mut layer = CacheLayer::new(store);
                if !breaker {
                    layer = layer.without_circuit_breaker();
                }
                let handle = layer.breaker().cloned();
                let cached = ServiceBuilder::new().layer(layer).service(client.clone());
                redis.signal(signal)?;
                // The calls in flight when the outage starts pay it (a stall: one store
                // timeout each) until the breaker opens; measured from then on.
                if let Some(handle) = handle {
                    let warm = Instant::now();
                    while handle.state() != hyper_client_cache::BreakerState::Open
                        && warm.elapsed() < Duration::from_secs(5)
                    {
                        let request =
                            http::Request::get(format!("{base}/warm")).body(Empty::new())?;
                        let response = cached.clone().oneshot(request).await?;
                        response.into_body().collect().await?;
                    }
                }
                let rate = load(cached, &base).await?;
                ratios.push(rate / bare);
                rates.push((bare, rate));
            }
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len() / 2];
            let name = if breaker { "breaker" } else { "no breaker" };
            let pairs: Vec<String> = rates
                .iter()
                .map(|(bare, rate)| format!("{rate:.0}/{bare:.0}"))
                .collect();
            println!(
                "Redis {outage:<18} {name:<10} {median:.2}x the rate without a cache (median of {rounds}; requests/s: {})",
                pairs.join(", ")
            );
        }
    }

    // Recovery: a stored entry, Redis stalled until the breaker is open, then resumed.
    let redis = Redis::start(free_port()?)?;
    let layer = CacheLayer::new(redis.connect().await?);
    let breaker = layer
        .breaker()
        .cloned()
        .ok_or("the breaker is on by default")?;
    let cached = ServiceBuilder::new().layer(layer).service(client.clone());
    let url = format!("{base}/item/recover");
    until_hit(cached.clone(), &url).await?;
    redis.signal("-STOP")?;
    load(cached.clone(), &base).await?;
    println!("breaker after the stall: {:?}", breaker.state());
    redis.signal("-CONT")?;
    let back = until_hit(cached.clone(), &url).await?;
    println!("first hit {back:?} after Redis resumed (target: at most 1 s)");

    // And after a restart on the same port (an empty Redis: one miss stores it again).
    let port = redis.port;
    drop(redis);
    load(cached.clone(), &base).await?;
    let started = Instant::now();
    let restarted = Redis::start(port)?;
    drop(restarted.connect().await?);
    let up = started.elapsed();
    let back = until_hit(cached, &url).await?;
    println!("first hit {back:?} after Redis restarted and answered (its start-up took {up:?})");
    Ok(())
}
