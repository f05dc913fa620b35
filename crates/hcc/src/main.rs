//! `hcc`: inspect and purge a hyper-client-cache store from a shell (`cargo install --path crates/hcc`).
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
//! never from an argument (arguments are visible to every user of the machine in `ps`); so is a
//! Redis URL that carries a password (`--redis-env`, `--redis-cluster-env`). What it prints of
//! a store is escaped (`escape.rs`): whoever writes to the store chooses those bytes. The
//! reference is docs/operations.md, "Command line".

mod escape;

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
    /// A Redis URL (`redis://` or `rediss://` for TLS) without a password: one with a password
    /// goes in an environment variable (`--redis-env`).
    #[arg(long)]
    redis: Option<String>,
    /// Nodes of a Redis Cluster, comma-separated (one is enough; `rediss://` for TLS), without
    /// passwords (see `--redis-cluster-env`).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    redis_cluster: Option<Vec<String>>,
    /// The environment variable holding the Redis URL (e.g. `HCC_REDIS_URL`): a password in
    /// it stays out of the arguments, which every user of the machine can read.
    #[arg(long, value_name = "VAR")]
    redis_env: Option<String>,
    /// The environment variable holding the Redis Cluster's node URLs, comma-separated (e.g.
    /// `HCC_REDIS_CLUSTER`).
    #[arg(long, value_name = "VAR")]
    redis_cluster_env: Option<String>,
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
        /// Also delete the entries that fail under a key of the ring (altered, planted, signed
        /// for another entry, unsigned); entries this ring cannot judge (foreign) are kept.
        #[arg(long)]
        delete: bool,
        /// With `--delete`: also delete foreign entries (signed with a key that is not in the
        /// ring, or written by a newer release): another deployment sharing the store loses
        /// its entries.
        #[arg(long, requires = "delete")]
        delete_foreign: bool,
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
            eprintln!("hcc: {}", escape::text(&e.to_string()));
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
        return command(inspector(store, ring), &cli.command).await;
    }
    let (nodes, cluster) = redis_nodes(&cli.target)?;
    // A message from the Redis client must not repeat a password it was given.
    let passwords: Vec<String> = nodes
        .iter()
        .filter_map(|url| password(url))
        .map(str::to_owned)
        .collect();
    let builder = if cluster {
        RedisStore::cluster(nodes)
    } else {
        RedisStore::builder(nodes.into_iter().next().unwrap_or_default())
    };
    redis(builder, &cli, ring).await.map_err(|e| {
        let mut message = e.to_string();
        for password in &passwords {
            message = message.replace(password.as_str(), "***");
        }
        message.into()
    })
}

/// The Redis URLs to connect to, and whether they are a cluster's: from an argument only
/// without a password (arguments are in `/proc/PID/cmdline` for every user), from an
/// environment variable with or without.
fn redis_nodes(target: &Target) -> Result<(Vec<String>, bool), BoxError> {
    let refuse = |flag: &str| -> BoxError {
        format!(
            "the Redis URL given as an argument carries a password, which every user of this \
             machine can read (ps, /proc/PID/cmdline): put the URL in an environment variable \
             and name it with {flag} (the password is not repeated here; change it if the \
             machine is shared)"
        )
        .into()
    };
    if let Some(url) = &target.redis {
        if password(url).is_some() {
            return Err(refuse("--redis-env"));
        }
        Ok((vec![url.clone()], false))
    } else if let Some(nodes) = &target.redis_cluster {
        if nodes.iter().any(|url| password(url).is_some()) {
            return Err(refuse("--redis-cluster-env"));
        }
        Ok((nodes.clone(), true))
    } else if let Some(name) = &target.redis_env {
        Ok((
            vec![from_env(name, "the Redis URL")?.trim().to_owned()],
            false,
        ))
    } else if let Some(name) = &target.redis_cluster_env {
        let nodes = from_env(name, "the Redis Cluster's node URLs, comma-separated")?;
        let nodes: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            return Err(format!("environment variable `{name}` names no node").into());
        }
        Ok((nodes, true))
    } else {
        Err("give --dir, --redis, --redis-cluster, --redis-env or --redis-cluster-env".into())
    }
}

fn from_env(name: &str, what: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|e| match e {
        std::env::VarError::NotPresent => {
            format!("environment variable `{name}` is not set: it should hold {what}").into()
        }
        std::env::VarError::NotUnicode(_) => {
            format!("environment variable `{name}` is not valid Unicode").into()
        }
    })
}

/// The password of a `redis://[user][:password]@host...` URL, when it has one.
fn password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
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

fn invalid_json(e: &InvalidEntry, deleted: bool) -> serde_json::Value {
    json!({
        "key": e.key.as_str(),
        "invalid": true,
        "bad_signature": e.bad_signature,
        "foreign": e.foreign,
        "deleted": deleted,
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
        escape::text(e.method.as_str()),
        escape::text(&e.url),
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
                            writeln!(out, "{}", escape::json(&entry_json(&e)))?;
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
                            writeln!(out, "{}", escape::json(&entry_json(&e)))?;
                        } else {
                            writeln!(
                                out,
                                "{}\n  key {}",
                                entry_line(&e),
                                escape::text(e.key.as_str())
                            )?;
                        }
                    }
                }
                Ok(())
            })
            .await?;
            if found == 0 {
                eprintln!("hcc: nothing stored for {}", escape::text(url));
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
        Command::Verify {
            delete,
            delete_foreign,
            json,
        } => {
            let (mut ok, mut bad) = (0u64, Vec::new());
            walk(&inspector, |listed| {
                match listed {
                    Described::Entry(_) => ok += 1,
                    Described::Invalid(i) => bad.push(i),
                }
                Ok(())
            })
            .await?;
            let (mut deleted, mut foreign) = (0u64, 0u64);
            for i in &bad {
                // Only what fails under a key of the ring is evidence against the entry; a
                // foreign one may be another deployment's valid entry.
                let delete = *delete && (!i.foreign || *delete_foreign);
                if delete {
                    inspector.delete(&i.key).await?;
                    deleted += 1;
                }
                foreign += u64::from(i.foreign);
                if *json {
                    writeln!(out, "{}", escape::json(&invalid_json(i, delete)))?;
                } else {
                    writeln!(
                        out,
                        "{} {}: {}",
                        if i.foreign { "FOREIGN" } else { "INVALID" },
                        escape::text(i.key.as_str()),
                        escape::text(&i.reason)
                    )?;
                }
            }
            if *json {
                let summary = json!({
                    "verified": ok,
                    "invalid": bad.len(),
                    "foreign": foreign,
                    "deleted": deleted,
                });
                writeln!(out, "{summary}")?;
            } else {
                let mut line = format!("{ok} entries verify, {} do not", bad.len());
                if deleted > 0 {
                    line.push_str(&format!("; {deleted} deleted"));
                }
                if foreign > 0 && *delete && !*delete_foreign {
                    line.push_str(&format!(
                        "; {foreign} foreign kept (--delete-foreign deletes them)"
                    ));
                } else if foreign > 0 && !*delete {
                    line.push_str(&format!("; {foreign} foreign"));
                }
                writeln!(out, "{line}")?;
            }
            if !bad.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
