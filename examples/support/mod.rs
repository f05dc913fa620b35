//! What several examples share: a small origin server on loopback, the measuring examples'
//! readings (peak RSS, CPU time, the time to MAC a body) and a Redis server. Not an example itself
//! (cargo builds `examples/*.rs` and `examples/*/main.rs` only); included with
//! `#[path = "support/mod.rs"] mod support;`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_client_cache::BoxError;
use hyper_util::rt::TokioIo;

/// Starts a hyper HTTP/1 origin on a free 127.0.0.1 port and returns its address. Each request
/// is counted in `hits` and answered, after `delay`, by `respond(n)`, where `n` is the
/// request's number (1, 2, ...).
#[allow(dead_code)]
pub async fn start_origin(
    hits: Arc<AtomicUsize>,
    delay: Duration,
    respond: impl Fn(usize) -> http::Response<Full<Bytes>> + Send + Sync + 'static,
) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (hits, respond) = (hits.clone(), respond.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                    let respond = respond.clone();
                    async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, Infallible>(respond(n))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The process's peak resident set size in KiB (Linux `VmHWM`); `None` elsewhere. (Used by
/// the measuring examples only.)
#[allow(dead_code)]
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The process's CPU time so far, user and system, in seconds (Linux `/proc/self/stat`, in
/// clock ticks of 10 ms: `CLK_TCK` is 100 on every Linux this runs on); `None` elsewhere. (Used
/// by `store_large` only.)
#[allow(dead_code)]
pub fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses, which may hold spaces): field 3 onwards; utime
    // and stime are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user / 100.0, system / 100.0))
}

/// Seconds to MAC `total` bytes (`mode`: "blake3" for keyed BLAKE3, anything else for
/// HMAC-SHA256) in 64 KiB updates from one buffer in cache: the floor of a signed entry of that
/// size. (Used by `large_disk_hit` and `store_large`.)
#[allow(dead_code)]
pub fn mac_seconds(mode: &str, total: u64) -> f64 {
    const CHUNK: usize = 64 * 1024;
    let buf = vec![0x5a; CHUNK];
    let started = std::time::Instant::now();
    let mut left = total;
    match mode {
        "blake3" => {
            let mut h = blake3::Hasher::new_keyed(&[7; 32]);
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                h.update(&buf[..n]);
                left -= n as u64;
            }
            std::hint::black_box(h.finalize());
        }
        _ => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]);
            let mut ctx = ring::hmac::Context::with_key(&key);
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                ctx.update(&buf[..n]);
                left -= n as u64;
            }
            std::hint::black_box(ctx.sign());
        }
    }
    started.elapsed().as_secs_f64()
}

/// Starts `redis-server` on 127.0.0.1:`port`, without persistence, with `extra` arguments.
#[allow(dead_code)]
pub fn spawn_redis(port: u16, extra: &[&str]) -> Result<std::process::Child, BoxError> {
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start redis-server ({e}); apt-get install redis-server").into()
        })
}
