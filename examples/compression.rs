//! Compression at rest, measured on real API responses:
//! `cargo run --release --example compression --features redis,zstd,lz4 [-- ROUNDS]`.
//!
//! Starts its own `redis-server` on a free 127.0.0.1 port, then:
//!
//! 1. stores every recorded GitHub API response of `benches/corpus/octokit-fixtures` (JSON, and
//!    the HTML of the `markdown` scenario; see its README) through a signed cache layer, with
//!    compression off, with zstd and with lz4, and prints Redis's `used_memory` growth for each
//!    and the ratio;
//! 2. times Redis hits (network round trip included) of a 64 KiB JSON body made of the same
//!    responses, compressed (zstd, lz4) and not, in alternating rounds, as a ratio;
//! 3. times a signed 1 KiB hit with compression configured (the body below its threshold)
//!    against one without, as a ratio.
//!
//! Figures for docs/benchmarks.md come from a release build on a quiet machine.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{
    BoxError, CacheLayer, CacheStatus, Codec, Compression, RedisStore, SecretKey,
};
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;

/// A recorded response: its header fields and body.
#[derive(Clone)]
struct Recorded {
    headers: Vec<(String, String)>,
    body: Bytes,
}

type Svc = tower::util::BoxCloneService<
    http::Request<()>,
    http::Response<hyper_client_cache::CacheBody<Full<Bytes>>>,
    BoxError,
>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut redis = support::spawn_redis(port, &[])?;
    let result = run(port, rounds).await;
    let _ = redis.kill();
    let _ = redis.wait();
    result
}

/// The corpus: every 200 response that is not binary, by a path of its own.
fn corpus() -> Result<Vec<Recorded>, BoxError> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/corpus/octokit-fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| {
            format!(
                "{}: {e} (the corpus is in the repository, not the package)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let exchanges: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file)?)?;
        for x in exchanges {
            if x["status"] != 200 || x["responseIsBinary"] == true {
                continue;
            }
            let body = match &x["response"] {
                serde_json::Value::String(s) => Bytes::from(s.clone()),
                serde_json::Value::Null => continue,
                v => Bytes::from(serde_json::to_vec(v)?),
            };
            let raw = x["rawHeaders"].as_array().cloned().unwrap_or_default();
            let headers = raw
                .chunks(2)
                .filter_map(|p| {
                    Some((
                        p.first()?.as_str()?.to_owned(),
                        p.get(1)?.as_str()?.to_owned(),
                    ))
                })
                // Stored whatever the recording said about caching; lengths are the cache's own.
                .filter(|(n, _)| {
                    ![
                        "content-length",
                        "connection",
                        "transfer-encoding",
                        "cache-control",
                        "vary",
                    ]
                    .contains(&n.to_ascii_lowercase().as_str())
                })
                .collect();
            out.push(Recorded { headers, body });
        }
    }
    Ok(out)
}

/// A signed cache on Redis (prefix `prefix`) whose origin answers `/r{i}` with `responses[i]`.
async fn cache(
    url: &str,
    prefix: &str,
    compression: Option<Compression>,
    responses: Arc<HashMap<String, Recorded>>,
) -> Result<Svc, BoxError> {
    let store = RedisStore::builder(url).prefix(prefix).connect().await?;
    let mut layer = CacheLayer::new(store)
        .secret_key(SecretKey::new("the benchmark's key, 32 bytes long")?)
        .coalesce(false);
    if let Some(c) = compression {
        layer = layer.compress(c);
    }
    let origin = tower::service_fn(move |req: http::Request<()>| {
        let r = responses.get(req.uri().path()).cloned();
        async move {
            let r = r.unwrap_or(Recorded {
                headers: Vec::new(),
                body: Bytes::new(),
            });
            let mut response = http::Response::builder().header("cache-control", "max-age=3600");
            for (n, v) in &r.headers {
                response = response.header(n.as_str(), v.as_str());
            }
            Ok::<_, Infallible>(response.body(Full::new(r.body)).unwrap_or_default())
        }
    });
    Ok(Svc::new(ServiceBuilder::new().layer(layer).service(origin)))
}

async fn fetch(svc: &mut Svc, path: &str) -> Result<(Option<CacheStatus>, usize), BoxError> {
    let request = http::Request::get(format!("http://api.github.test{path}")).body(())?;
    let response = svc.ready().await?.call(request).await?;
    let status = response.extensions().get::<CacheStatus>().copied();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body.len()))
}

async fn used_memory(con: &mut redis::aio::MultiplexedConnection) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(con).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no used_memory in INFO".into())
}

/// The mean time of `n` hits of `path`, in microseconds.
async fn time_hits(svc: &mut Svc, path: &str, n: usize) -> Result<f64, BoxError> {
    let start = Instant::now();
    for _ in 0..n {
        let (status, _) = fetch(svc, path).await?;
        if status != Some(CacheStatus::Hit) {
            return Err(format!("{path}: {status:?}, not a hit").into());
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

async fn run(port: u16, rounds: usize) -> Result<(), BoxError> {
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str())?;
    let mut con = None;
    for _ in 0..100 {
        match client.get_multiplexed_async_connection().await {
            Ok(c) => {
                con = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut con = con.ok_or("redis-server did not come up")?;

    let corpus = corpus()?;
    let body_bytes: usize = corpus.iter().map(|r| r.body.len()).sum();
    let header_bytes: usize = corpus
        .iter()
        .flat_map(|r| &r.headers)
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum();
    // A 64 KiB JSON body: the corpus's JSON responses in an array; a 1 KiB one: its start.
    let mut big = b"[".to_vec();
    for r in corpus
        .iter()
        .filter(|r| r.body.starts_with(b"{") || r.body.starts_with(b"["))
    {
        if big.len() + r.body.len() + 1 >= 64 * 1024 {
            break;
        }
        big.extend_from_slice(&r.body);
        big.push(b',');
    }
    big.resize(64 * 1024 - 1, b' ');
    big.push(b']');
    let mut map: HashMap<String, Recorded> = corpus
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("/r{i}"), r.clone()))
        .collect();
    let json_headers = vec![(
        "content-type".to_owned(),
        "application/json; charset=utf-8".to_owned(),
    )];
    map.insert(
        "/big".into(),
        Recorded {
            headers: json_headers.clone(),
            body: Bytes::from(big.clone()),
        },
    );
    map.insert(
        "/small".into(),
        Recorded {
            headers: json_headers,
            body: Bytes::copy_from_slice(&big[..1024]),
        },
    );
    let map = Arc::new(map);
    println!(
        "corpus: {} responses, {} body bytes, {} header bytes (octokit fixtures 23.1.2)",
        corpus.len(),
        body_bytes,
        header_bytes
    );

    // 1. Redis memory for the same entries.
    let modes: [(&str, Option<Compression>); 3] = [
        ("off", None),
        ("zstd", Some(Compression::new(Codec::Zstd))),
        ("lz4", Some(Compression::new(Codec::Lz4))),
    ];
    let mut grown = Vec::new();
    for (name, compression) in modes {
        redis::cmd("FLUSHALL").query_async::<()>(&mut con).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = used_memory(&mut con).await?;
        let mut svc = cache(&url, &format!("{name}:"), compression, map.clone()).await?;
        for i in 0..corpus.len() {
            fetch(&mut svc, &format!("/r{i}")).await?;
        }
        // Writes finish in the background: wait for the last.
        for i in 0..corpus.len() {
            for _ in 0..100 {
                if fetch(&mut svc, &format!("/r{i}")).await?.0 == Some(CacheStatus::Hit) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let after = used_memory(&mut con).await?;
        grown.push(after.saturating_sub(before));
        println!(
            "used_memory, compression {name:>4}: +{} bytes",
            after.saturating_sub(before)
        );
    }
    for (i, name) in [(1, "zstd"), (2, "lz4")] {
        println!(
            "used_memory ratio off/{name}: {:.2}x",
            grown[0] as f64 / grown[i].max(1) as f64
        );
    }

    // 2. and 3. Hits, alternating rounds.
    redis::cmd("FLUSHALL").query_async::<()>(&mut con).await?;
    let mut off = cache(&url, "h-off:", None, map.clone()).await?;
    let mut zstd = cache(
        &url,
        "h-zstd:",
        Some(Compression::new(Codec::Zstd)),
        map.clone(),
    )
    .await?;
    let mut lz4 = cache(
        &url,
        "h-lz4:",
        Some(Compression::new(Codec::Lz4)),
        map.clone(),
    )
    .await?;
    let mut configured = cache(&url, "h-conf:", Some(Compression::default()), map.clone()).await?;
    for svc in [&mut off, &mut zstd, &mut lz4, &mut configured] {
        for path in ["/big", "/small"] {
            for _ in 0..100 {
                if fetch(svc, path).await?.0 == Some(CacheStatus::Hit) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let n = 500;
    let (mut t_off, mut t_zstd, mut t_lz4, mut s_off, mut s_conf) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for _ in 0..rounds {
        t_off += time_hits(&mut off, "/big", n).await?;
        t_zstd += time_hits(&mut zstd, "/big", n).await?;
        t_lz4 += time_hits(&mut lz4, "/big", n).await?;
        s_off += time_hits(&mut off, "/small", n).await?;
        s_conf += time_hits(&mut configured, "/small", n).await?;
    }
    let r = rounds as f64;
    println!(
        "64 KiB JSON Redis hit: off {:.1} us, zstd {:.1} us ({:.3}x), lz4 {:.1} us ({:.3}x)",
        t_off / r,
        t_zstd / r,
        t_zstd / t_off,
        t_lz4 / r,
        t_lz4 / t_off
    );
    println!(
        "signed 1 KiB Redis hit: without compression {:.1} us, configured (below threshold) {:.1} us ({:.3}x)",
        s_off / r,
        s_conf / r,
        s_conf / s_off
    );
    Ok(())
}
