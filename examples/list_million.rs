//! `Inspector::key_pages` over 1,000,000 Redis keys: how long a walk takes and how much memory it
//! holds, against `Inspector::keys` (the whole list at once); and a purge by tag from the store's
//! tag index, with one key in 100 tagged. Each case runs in a process of its
//! own (its peak RSS, Linux `VmHWM`, is its own).
//!
//! Run: `cargo run --release --example list_million --features redis [-- <keys>]`. It starts its
//! own `redis-server` on a free 127.0.0.1 port, fills it with `DEBUG POPULATE` (values that are
//! not envelopes: `describe` reports each as invalid, after a `GET` of it, as for a real entry).

#[allow(dead_code)] // only `peak_rss_kib` and `spawn_redis` are used here
#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper_client_cache::{BoxError, CacheLayer, Described, RedisStore};

async fn connect(port: u16) -> Result<RedisStore, BoxError> {
    let url = format!("redis://127.0.0.1:{port}/0");
    for _ in 0..100 {
        if let Ok(store) = RedisStore::connect(&url).await {
            return Ok(store);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("redis-server did not come up".into())
}

/// One case in this process: prints `case seconds keys peak_rss_kib`.
async fn case(name: &str, port: u16) -> Result<(), BoxError> {
    let inspector = CacheLayer::new(connect(port).await?)
        .without_circuit_breaker()
        .inspector()
        .whole_store_timeout(Duration::from_secs(3600));
    let started = Instant::now();
    let mut n = 0u64;
    match name {
        "keys" => n = inspector.keys().await?.len() as u64,
        "pages" => {
            let mut pages = std::pin::pin!(inspector.key_pages());
            while let Some(page) = pages.next().await {
                n += page?.len() as u64;
            }
        }
        "pages+describe" => {
            let mut pages = std::pin::pin!(inspector.key_pages());
            while let Some(page) = pages.next().await {
                for key in page? {
                    if let Some(Described::Invalid(_) | Described::Entry(_)) =
                        inspector.describe(&key).await?
                    {
                        n += 1;
                    }
                }
            }
        }
        // The tag index: one entry in 100 carries the tag (indexed by the parent).
        "purge_tag" => n = inspector.purge_tag("bench").await? as u64,
        other => return Err(format!("unknown case {other}").into()),
    }
    println!(
        "{name} {:.3} {n} {}",
        started.elapsed().as_secs_f64(),
        support::peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

/// Records one key in 100 under the tag `bench` in the store's tag index (the sorted set a
/// `PutTagged` writes, named by the tag's digest), as if those entries had been stored with
/// `Cache-Tag: bench`.
fn index_every_hundredth(
    port: u16,
    keys: u64,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), BoxError> {
    runtime.block_on(async {
        let inspector = CacheLayer::new(connect(port).await?).inspector();
        let set = format!("hcc:#tag:{}", inspector.tag_index_names("bench")[0]);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let tagged: Vec<u64> = (0..keys).step_by(100).collect();
        for batch in tagged.chunks(1000) {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&set);
            for i in batch {
                zadd.arg(i64::MAX / 4).arg(format!("hcc:{i}"));
            }
            let _: () = zadd.query_async(&mut conn).await?;
        }
        Ok(())
    })
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let [flag, name, port] = &args[..] {
        if flag == "--case" {
            return runtime.block_on(case(name, port.parse()?));
        }
    }
    let keys: u64 = args
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut redis = support::spawn_redis(port, &["--enable-debug-command", "yes"])?;
    let result = (|| -> Result<(), BoxError> {
        runtime.block_on(async {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
            let mut conn = None;
            for _ in 0..100 {
                // DEBUG POPULATE of a million keys takes longer than the default response timeout.
                let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                if let Ok(c) = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    conn = Some(c);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut conn = conn.ok_or("redis-server did not come up")?;
            // Keys `hcc:0` .. `hcc:<n-1>`: the store's default prefix.
            let _: () = redis::cmd("DEBUG")
                .arg("POPULATE")
                .arg(keys)
                .arg("hcc")
                .arg(300)
                .query_async(&mut conn)
                .await?;
            Ok::<_, BoxError>(())
        })?;
        let exe = std::env::current_exe()?;
        println!("{keys} keys in Redis (300-byte values), one process per case:");
        println!("| case | time | keys seen | peak RSS |");
        println!("| --- | --- | --- | --- |");
        for name in ["keys", "pages", "pages+describe", "purge_tag"] {
            if name == "purge_tag" {
                index_every_hundredth(port, keys, &runtime)?;
            }
            let out = Command::new(&exe)
                .args(["--case", name, &port.to_string()])
                .output()?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            let line = String::from_utf8_lossy(&out.stdout).into_owned();
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [name, secs, n, rss] = &f[..] {
                let rss: f64 = rss.parse::<f64>()? / 1024.0;
                println!("| `{name}` | {secs} s | {n} | {rss:.1} MiB |");
            }
        }
        Ok(())
    })();
    let _ = redis.kill();
    let _ = redis.wait();
    result
}
