//! `hcc`: inspect and purge a hyper-client-cache store from a shell (feature `cli`).
//!
//! ```text
//! hcc --dir /var/cache/app stats
//! hcc --redis redis://127.0.0.1/ list --url 'api.example.com/*' --json
//! hcc --redis-cluster redis://10.0.0.1:7000,redis://10.0.0.2:7000 --prefix svc: purge --tag T
//! hcc --dir /var/cache/app purge --expired
//! hcc --dir /var/cache/app verify
//! ```
//!
//! The secret key is read from an environment variable (`--key-env`, default `HTTP_CACHE_KEY`),
//! never from an argument (arguments are visible to every user of the machine in `ps`). The
//! reference is docs/operations.md, "Command line".

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use hyper_client_cache::{
    BoxError, CacheConfig, CacheLayer, Described, DiskStore, EntryInfo, Inspector, InvalidEntry,
    KeyRing, RedisStore, SecretKey, Store, UrlPattern,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "hcc",
    version,
    about = "Inspect and purge a hyper-client-cache store"
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    /// The key prefix of the Redis store (its default when absent).
    #[arg(long)]
    prefix: Option<String>,
    /// The environment variable holding the secret key (never give the key as an argument).
    #[arg(long, default_value = "HTTP_CACHE_KEY", global = true)]
    key_env: String,
    /// Read the store as an unsigned cache (entries are checked with a checksum only).
    #[arg(long, global = true)]
    unsigned: bool,
    /// A configuration file (TOML) whose `[key]` section names the key variables.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// A `DiskStore` directory.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// A Redis URL (`redis://` or `rediss://` for TLS).
    #[arg(long)]
    redis: Option<String>,
    /// Nodes of a Redis Cluster, comma-separated (one is enough; `rediss://` for TLS).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    redis_cluster: Option<Vec<String>>,
}

#[derive(Subcommand)]
enum Command {
    /// Entries, bytes, and entries that do not verify.
    Stats {
        /// Machine-readable output (one JSON object).
        #[arg(long)]
        json: bool,
    },
    /// Every entry (URL, status, size, times).
    List {
        /// Only entries whose URL matches this glob over `host/path`.
        #[arg(long)]
        url: Option<String>,
        /// Only entries that are no longer fresh.
        #[arg(long)]
        expired: bool,
        /// JSON Lines: one object per entry.
        #[arg(long)]
        json: bool,
    },
    /// The entries stored for one URL.
    Show {
        /// The URL, as requested.
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete entries.
    Purge {
        #[command(flatten)]
        what: PurgeWhat,
        #[arg(long)]
        json: bool,
    },
    /// Check every entry's signature; exit code 1 when one does not verify.
    Verify {
        /// Also delete the entries that do not verify.
        #[arg(long)]
        delete: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct PurgeWhat {
    /// Entries whose URL matches this glob over `host/path`.
    #[arg(long)]
    url: Option<String>,
    /// Entries that are no longer fresh.
    #[arg(long)]
    expired: bool,
    /// Entries received longer ago than this (`"1h"`, `"7days"`).
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Entries that carry this cache tag (`Cache-Tag`, `Surrogate-Key`).
    #[arg(long)]
    tag: Option<String>,
    /// Everything in the store.
    #[arg(long)]
    all: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hcc: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hcc: {e}");
            ExitCode::from(2)
        }
    }
}

/// The key ring from `--key-env` (and the config file's `[key]`, when given).
fn keys(cli: &Cli) -> Result<Option<KeyRing>, BoxError> {
    if cli.unsigned {
        return Ok(None);
    }
    if let Some(path) = &cli.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: CacheConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(key) = config.key {
            let mut ring = KeyRing::new(SecretKey::from_env(&key.env)?);
            for name in &key.previous_env {
                ring = ring.with_previous(SecretKey::from_env(name)?);
            }
            return Ok(Some(ring));
        }
    }
    Ok(Some(KeyRing::new(SecretKey::from_env(&cli.key_env)?)))
}

async fn run(cli: Cli) -> Result<ExitCode, BoxError> {
    let ring = keys(&cli)?;
    if let Some(dir) = &cli.target.dir {
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()).into());
        }
        let store = DiskStore::open(dir)?;
        command(inspector(store, ring), &cli.command).await
    } else if let Some(url) = &cli.target.redis {
        redis(RedisStore::builder(url.clone()), &cli, ring).await
    } else if let Some(nodes) = &cli.target.redis_cluster {
        redis(RedisStore::cluster(nodes.clone()), &cli, ring).await
    } else {
        Err("give --dir, --redis or --redis-cluster".into())
    }
}

async fn redis(
    mut builder: hyper_client_cache::RedisStoreBuilder,
    cli: &Cli,
    ring: Option<KeyRing>,
) -> Result<ExitCode, BoxError> {
    {
        if let Some(prefix) = &cli.prefix {
            builder = builder.prefix(prefix.clone());
        }
        let store = builder.connect().await?;
        command(inspector(store, ring), &cli.command).await
    }
}

fn inspector<St: Store>(store: St, ring: Option<KeyRing>) -> Inspector<St> {
    let layer = CacheLayer::new(store).without_circuit_breaker();
    let layer = match ring {
        Some(ring) => layer.secret_key(ring),
        None => layer,
    };
    layer
        .inspector()
        .whole_store_timeout(Duration::from_secs(3600))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn entry_json(e: &EntryInfo) -> serde_json::Value {
    json!({
        "key": e.key.as_str(),
        "url": e.url,
        "method": e.method.as_str(),
        "status": e.status.as_u16(),
        "size": e.size,
        "created_at": secs(e.created_at),
        "expires": e.expires.map(secs),
        "expired": e.is_expired,
        "variant": e.is_variant,
        "tags": e.tags,
    })
}

fn invalid_json(e: &InvalidEntry) -> serde_json::Value {
    json!({
        "key": e.key.as_str(),
        "invalid": true,
        "bad_signature": e.bad_signature,
        "reason": e.reason,
    })
}

fn entry_line(e: &EntryInfo) -> String {
    let expires = match e.expires {
        Some(t) if e.is_expired => format!("expired {}", httpdate::fmt_http_date(t)),
        Some(t) => format!("fresh until {}", httpdate::fmt_http_date(t)),
        None => "no expiry".to_owned(),
    };
    format!(
        "{} {} {} {} bytes, {}{}",
        e.status.as_u16(),
        e.method,
        e.url,
        e.size,
        expires,
        if e.is_variant { " (variant copy)" } else { "" }
    )
}

/// Walks the store one entry at a time, with a progress bar on a terminal (stderr), quiet when
/// piped.
async fn walk<St: Store>(
    inspector: &Inspector<St>,
    mut each: impl FnMut(Described) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    use futures_util::StreamExt;
    // A page of keys at a time (a Redis SCAN step): memory stays bounded on stores with
    // millions of keys, so the total is not known in advance.
    let bar = ProgressBar::with_draw_target(
        None,
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} entries, {per_sec}") {
        bar.set_style(style);
    }
    let mut pages = std::pin::pin!(inspector.key_pages());
    while let Some(page) = pages.next().await {
        for key in page? {
            if let Some(listed) = inspector.describe(&key).await? {
                each(listed)?;
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

async fn command<St: Store>(
    inspector: Inspector<St>,
    command: &Command,
) -> Result<ExitCode, BoxError> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Stats { json } => {
            let (mut entries, mut bytes, mut invalid) = (0u64, 0u64, 0u64);
            walk(&inspector, |listed| {
                match listed {
                    Described::Entry(e) => {
                        entries += 1;
                        bytes += e.size as u64;
                    }
                    Described::Invalid(_) => invalid += 1,
                }
                Ok(())
            })
            .await?;
            if *json {
                writeln!(
                    out,
                    "{}",
                    json!({"entries": entries, "bytes": bytes, "invalid": invalid})
                )?;
            } else {
                writeln!(
                    out,
                    "{entries} entries, {bytes} bytes, {invalid} that do not verify"
                )?;
            }
        }
        Command::List { url, expired, json } => {
            let pattern = url.as_deref().map(UrlPattern::new).transpose()?;
            walk(&inspector, |listed| {
                if let Described::Entry(e) = listed {
                    let wanted = pattern.as_ref().is_none_or(|p| p.matches(&e.url))
                        && (!*expired || e.is_expired);
                    if wanted {
                        if *json {
                            writeln!(out, "{}", entry_json(&e))?;
                        } else {
                            writeln!(out, "{}", entry_line(&e))?;
                        }
                    }
                }
                Ok(())
            })
            .await?;
        }
        Command::Show { url, json } => {
            let mut found = 0;
            walk(&inspector, |listed| {
                if let Described::Entry(e) = listed {
                    if e.url == *url {
                        found += 1;
                        if *json {
                            writeln!(out, "{}", entry_json(&e))?;
                        } else {
                            writeln!(out, "{}\n  key {}", entry_line(&e), e.key.as_str())?;
                        }
                    }
                }
                Ok(())
            })
            .await?;
            if found == 0 {
                eprintln!("hcc: nothing stored for {url}");
                return Ok(ExitCode::from(1));
            }
        }
        Command::Purge { what, json } => {
            let deleted = if what.all {
                let n = inspector.count().await?;
                inspector.clear().await?;
                n
            } else if what.expired {
                inspector.delete_expired().await?
            } else if let Some(age) = what.older_than {
                inspector.delete_older_than(age).await?
            } else if let Some(pattern) = &what.url {
                inspector.delete_matching(pattern).await?
            } else if let Some(tag) = &what.tag {
                inspector.purge_tag(tag).await?
            } else {
                0
            };
            if *json {
                writeln!(out, "{}", json!({"deleted": deleted}))?;
            } else {
                writeln!(out, "{deleted} entries deleted")?;
            }
        }
        Command::Verify { delete, json } => {
            let (mut ok, mut bad) = (0u64, Vec::new());
            walk(&inspector, |listed| {
                match listed {
                    Described::Entry(_) => ok += 1,
                    Described::Invalid(i) => bad.push(i),
                }
                Ok(())
            })
            .await?;
            for i in &bad {
                if *json {
                    writeln!(out, "{}", invalid_json(i))?;
                } else {
                    writeln!(out, "INVALID {}: {}", i.key.as_str(), i.reason)?;
                }
                if *delete {
                    inspector.delete(&i.key).await?;
                }
            }
            if *json {
                writeln!(
                    out,
                    "{}",
                    json!({"verified": ok, "invalid": bad.len(), "deleted": if *delete { bad.len() } else { 0 }})
                )?;
            } else {
                writeln!(
                    out,
                    "{ok} entries verify, {} do not{}",
                    bad.len(),
                    if *delete && !bad.is_empty() {
                        " (deleted)"
                    } else {
                        ""
                    }
                )?;
            }
            if !bad.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
