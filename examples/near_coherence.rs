//! Two processes, one Redis: how long after a write on one does the other stop serving the old
//! entry from its near cache? And does it ever serve it past the bound?
//!
//! The parent is instance A, the writer: it runs a cycle of operations on one key through a
//! plain `RedisStore`: overwrite, delete, write with a tag then purge the tag. Each operation
//! `n` leaves the key either holding `n` or absent, and A notes the wall-clock time `w(n)` at
//! which it returned. Halfway, Redis is killed and restarted (empty, as without persistence) and
//! A writes again as soon as it can, while B's tracking connection is still down.
//!
//! The child is instance B, the reader: it reads the key through a `NearCache` in a loop and
//! notes, for every value `m` it was served, the last time it was served it (taken after the
//! near tier decided). Operation `n`'s staleness is how long after `w(n)` B was still served a
//! value older than `n`: `max(0, last(m < n) − w(n))`. Both use the machine's wall clock.
//!
//! Prints the distribution (p50, p99, max) and fails (exit code 1) if any staleness exceeds the
//! near cache's `max_staleness` (50 ms), which the lease makes impossible by construction.
//!
//! Run: `cargo run --release --example near_coherence --features redis -- [operations]`
//! (default 2000; CI runs 400). Needs `redis-server` on PATH.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper_client_cache::{BoxError, CacheKey, NearCache, RedisStore, StoreRequest, StoreResponse};
use tower::{Service, ServiceExt};

#[allow(dead_code)] // The origin of the other examples is not used here.
#[path = "support/mod.rs"]
mod support;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn key() -> CacheKey {
    CacheKey::from_stored("hcc1:coherence")
}

async fn connect(url: &str) -> Result<RedisStore, BoxError> {
    for _ in 0..200 {
        if let Ok(s) = RedisStore::connect(url).await {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("redis-server did not come up".into())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("reader") {
        let port = args.get(2).ok_or("reader <port>")?;
        return reader(port).await;
    }
    let operations: u64 = match args.get(1) {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut redis = support::spawn_redis(port, &[])?;
    let result = writer(port, operations, &mut redis).await;
    let _ = redis.kill();
    let _ = redis.wait();
    result
}

/// Instance A.
async fn writer(
    port: u16,
    operations: u64,
    redis: &mut std::process::Child,
) -> Result<(), BoxError> {
    let url = format!("redis://127.0.0.1:{port}/0");
    let store = connect(&url).await?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["reader", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    match lines.next() {
        Some(Ok(line)) if line == "ready" => {}
        other => return Err(format!("the reader did not start: {other:?}").into()),
    }
    let mut written = BTreeMap::new(); // n -> w(n)
    let mut restarted_at = None;
    let mut n = 0;
    while n < operations {
        if n == operations / 2 && restarted_at.is_none() {
            let _ = redis.kill();
            let _ = redis.wait();
            *redis = support::spawn_redis(port, &[])?;
            restarted_at = Some(n);
        }
        n += 1;
        let request = match n % 4 {
            1 => StoreRequest::Put {
                key: key(),
                blob: Bytes::from(n.to_string()),
                ttl: Some(Duration::from_secs(600)),
            },
            2 => StoreRequest::Delete { key: key() },
            3 => StoreRequest::PutTagged {
                key: key(),
                blob: Bytes::from(n.to_string()),
                ttl: Some(Duration::from_secs(600)),
                tags: vec![format!("round-{n}")],
            },
            _ => StoreRequest::PurgeTag {
                tag: format!("round-{}", n - 1),
            },
        };
        // Until it succeeds (after the restart, the connection manager needs a moment).
        let mut done = false;
        for _ in 0..500 {
            match store.clone().oneshot(request.clone()).await {
                Ok(StoreResponse::Done | StoreResponse::Purged { .. }) => {
                    done = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        if !done {
            return Err(format!("operation {n} never succeeded").into());
        }
        written.insert(n, now_ns());
        // Give the reader time to be served (and to fill its near tier with) the new state.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(child.stdin.take()); // tells the reader to stop
    let mut last_served = BTreeMap::new(); // m -> last time B was served m
    let mut stats = String::new();
    for line in lines {
        let line = line?;
        if let Some(rest) = line.strip_prefix("served ") {
            let (m, at) = rest.split_once(' ').ok_or("bad line")?;
            last_served.insert(m.parse::<u64>()?, at.parse::<u64>()?);
        } else {
            stats = line;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the reader failed: {status}").into());
    }
    // staleness(n) = max(0, max_{m<n} last_served(m) - w(n)).
    let mut stale_ms = Vec::new();
    let mut after_restart = Vec::new();
    let mut latest_old = 0u64;
    let mut served = last_served.iter().peekable();
    for (&n, &w) in &written {
        while let Some((&m, &at)) = served.peek() {
            if m >= n {
                break;
            }
            latest_old = latest_old.max(at);
            served.next();
        }
        let stale = latest_old.saturating_sub(w) as f64 / 1e6;
        stale_ms.push(stale);
        if restarted_at.is_some_and(|r| n > r && n <= r + 4) {
            after_restart.push(stale);
        }
    }
    stale_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| stale_ms[((stale_ms.len() - 1) as f64 * p) as usize];
    let nonzero = stale_ms.iter().filter(|s| **s > 0.0).count();
    println!(
        "{} operations (overwrite, delete, tagged write, purge by tag), Redis restarted after {}",
        written.len(),
        restarted_at.unwrap_or(0)
    );
    println!("reader: {stats}");
    println!(
        "staleness after the write returned: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms \
         ({nonzero} of {} operations served the old entry at all after the write returned)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        stale_ms.len()
    );
    println!("the 4 operations right after the restart: {after_restart:.3?} ms");
    let bound = hyper_client_cache::DEFAULT_MAX_STALENESS.as_secs_f64() * 1e3;
    if pct(1.0) > bound {
        return Err(format!(
            "served an old entry {:.3} ms after the write (bound {bound} ms)",
            pct(1.0)
        )
        .into());
    }
    println!("never served an old entry more than {bound} ms after the write returned: ok");
    Ok(())
}

/// Instance B.
async fn reader(port: &str) -> Result<(), BoxError> {
    let url = format!("redis://127.0.0.1:{port}/0");
    let near = NearCache::builder(connect(&url).await?).start().await?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
            stop.store(true, Ordering::SeqCst);
        });
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut last_served: BTreeMap<u64, u64> = BTreeMap::new();
    let started = Instant::now();
    // Bounded: until told to stop, and at most 10 minutes.
    while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
        let mut svc = near.clone();
        let lookup = svc.ready().await?.call(StoreRequest::get(key()));
        // The near tier decided inside `call`; a read that goes to Redis can only be fresher.
        let at = now_ns();
        if let Ok(StoreResponse::Blob(Some(blob))) = lookup.await {
            if let Some(m) = std::str::from_utf8(&blob).ok().and_then(|s| s.parse().ok()) {
                last_served.insert(m, at);
            }
        }
        tokio::task::yield_now().await;
    }
    let mut out = std::io::stdout().lock();
    for (m, at) in &last_served {
        writeln!(out, "served {m} {at}")?;
    }
    writeln!(out, "{:?}", near.stats())?;
    Ok(())
}
