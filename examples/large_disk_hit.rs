//! A large entry on disk, read back as a hit by a fresh process: the peak RSS over that process's
//! own baseline, the time to the first byte, and the time to the last, against reading the same
//! file with `tokio::fs` in 64 KiB reads and (signed) against the MAC over the same bytes.
//!
//! Run: `cargo run --release --example large_disk_hit --features disk` (optionally `-- <MiB>`;
//! default 1024).
//!
//! Each step runs in a child process of its own: one stores the entry (its RSS is the entry's,
//! held until the write), then, three rounds alternating, one reads the file with `tokio::fs` and
//! one serves the hit (both from the page cache, warmed by the first). Medians are printed, as
//! ratios against the baselines of the same run. Exits non-zero when a hit misses a target of the
//! segments issue: peak RSS more than 32 MiB over the baseline, or the first byte after 5 ms.

#[allow(dead_code)] // only `peak_rss_kib` and `mac_seconds` are used here
#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_client_cache::{CacheLayer, CacheStatus, DiskStore, Mac, SecretKey};
use tokio::io::AsyncReadExt;
use tower::{ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CHUNK: usize = 64 * 1024;
const MODES: [&str; 4] = ["unsigned", "blake3", "hmac", "encrypted"];

/// `remaining` bytes in 64 KiB chunks.
#[derive(Default)]
struct Generated(u64);

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        let n = self.0.min(CHUNK as u64) as usize;
        self.0 -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0x5a; n])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0)
    }
}

fn layer(mode: &str, dir: &Path, total: u64) -> Result<CacheLayer<DiskStore>, BoxError> {
    let key = || SecretKey::new("large_disk_hit example key, 32 bytes");
    let layer = CacheLayer::new(DiskStore::open(dir)?).max_body_size(total as usize);
    Ok(match mode {
        "unsigned" => layer,
        "blake3" => layer.secret_key(key()?),
        "hmac" => layer.secret_key(key()?).mac(Mac::HmacSha256),
        _ => layer.encrypt(key()?),
    })
}

fn request() -> Result<http::Request<()>, BoxError> {
    Ok(http::Request::get("http://origin.test/large").body(())?)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Stores the entry.
async fn fill(mode: &str, dir: &Path, total: u64) -> Result<(), BoxError> {
    let origin = tower::service_fn(move |_req: http::Request<()>| async move {
        Ok::<_, Infallible>(
            http::Response::builder()
                .header("cache-control", "max-age=3600")
                .header("content-length", total)
                .body(Generated(total))
                .unwrap_or_default(),
        )
    });
    let svc = ServiceBuilder::new()
        .layer(layer(mode, dir, total)?)
        .service(origin);
    let response = svc.oneshot(request()?).await?;
    let len = response.into_body().collect().await?.to_bytes().len() as u64;
    if len != total {
        return Err("the miss was cut short".into());
    }
    Ok(())
}

/// Serves the hit: prints `ttfb_ms seconds baseline_kib peak_kib`.
async fn hit(mode: &str, dir: &Path, total: u64) -> Result<(), BoxError> {
    let origin = tower::service_fn(|_req: http::Request<()>| async {
        Err::<http::Response<Generated>, BoxError>("the origin was asked: not a hit".into())
    });
    let svc = ServiceBuilder::new()
        .layer(layer(mode, dir, total)?)
        .service(origin);
    let baseline = rss_kib();
    let started = Instant::now();
    let response = svc.oneshot(request()?).await?;
    if response.extensions().get::<CacheStatus>() != Some(&CacheStatus::Hit) {
        return Err("not a hit".into());
    }
    let mut body = response.into_body();
    let mut first = None;
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            first.get_or_insert_with(|| started.elapsed());
            len += data.len() as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if len != total {
        return Err(format!("the hit served {len} of {total} bytes").into());
    }
    let peak = support::peak_rss_kib().unwrap_or(0);
    let ttfb = first.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!("{ttfb:.3} {secs:.6} {baseline} {peak}");
    Ok(())
}

/// Reads the entry's file with `tokio::fs` in 64 KiB reads: prints the seconds.
async fn fs_read(dir: &Path) -> Result<(), BoxError> {
    let file = entry_file(dir)?;
    let started = Instant::now();
    let mut f = tokio::fs::File::open(file).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        len += n as u64;
    }
    println!("{:.6} {len}", started.elapsed().as_secs_f64());
    Ok(())
}

fn entry_file(dir: &Path) -> Result<std::path::PathBuf, BoxError> {
    for shard in std::fs::read_dir(dir)?.flatten() {
        if shard.path().is_dir() {
            for f in std::fs::read_dir(shard.path())?.flatten() {
                if f.path().extension().is_some_and(|e| e == "hcc") {
                    return Ok(f.path());
                }
            }
        }
    }
    Err("no entry file".into())
}

fn child(args: &[&str]) -> Result<String, BoxError> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [step, mode, dir, mib] = &args[..] {
        let total = mib.parse::<u64>()? << 20;
        let runtime = tokio::runtime::Runtime::new()?;
        let dir = Path::new(dir);
        return runtime.block_on(async {
            match step.as_str() {
                "--fill" => fill(mode, dir, total).await,
                "--hit" => hit(mode, dir, total).await,
                _ => fs_read(dir).await,
            }
        });
    }
    let mib: u64 = args.first().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let total = mib << 20;
    println!("{mib} MiB entry on disk, hit by a fresh process (three rounds, medians)");
    println!("| mode | first byte | hit time | vs tokio::fs 64 KiB reads | vs the MAC of the same bytes | peak RSS over baseline |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut failures = Vec::new();
    for mode in MODES {
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_str().ok_or("path")?.to_owned();
        let m = mib.to_string();
        child(&["--fill", mode, &d, &m])?;
        let (mut reads, mut hits, mut ttfbs, mut over) = (vec![], vec![], vec![], vec![]);
        for _ in 0..3 {
            let read = child(&["--read", mode, &d, &m])?;
            reads.push(read.split_whitespace().next().ok_or("?")?.parse::<f64>()?);
            let out = child(&["--hit", mode, &d, &m])?;
            let f: Vec<f64> = out
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            ttfbs.push(f[0]);
            hits.push(f[1]);
            over.push((f[3] - f[2]) / 1024.0);
        }
        let (read, hit, ttfb, over) = (median(reads), median(hits), median(ttfbs), median(over));
        let mac = match mode {
            "blake3" | "hmac" => {
                let own = median((0..3).map(|_| support::mac_seconds(mode, total)).collect());
                let hmac = median(
                    (0..3)
                        .map(|_| support::mac_seconds("hmac", total))
                        .collect(),
                );
                format!(
                    "{:.2}× HMAC-SHA256's time ({hmac:.3} s), {:.2}× its own MAC's ({own:.3} s)",
                    hit / hmac,
                    hit / own
                )
            }
            _ => "".into(),
        };
        println!(
            "| {mode} | {ttfb:.2} ms | {hit:.3} s | {:.0}% of its throughput ({read:.3} s) | {mac} | {over:.1} MiB |",
            100.0 * read / hit
        );
        if over > 32.0 {
            failures.push(format!("{mode}: peak RSS {over:.1} MiB over the baseline"));
        }
        if ttfb > 5.0 {
            failures.push(format!("{mode}: first byte after {ttfb:.2} ms"));
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; ").into());
    }
    Ok(())
}
