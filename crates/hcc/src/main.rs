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
mod output;
mod select;
mod target;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hyper_client_cache::{
    BoxError, CacheConfig, CacheLayer, Described, DiskStore, Inspector, KeyRing, RedisStore,
    SecretKey, Store,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::select::{no_match_hint, Seen, Selector};
use crate::target::{password, redis_nodes};

#[derive(Parser)]
#[command(
    name = "hcc",
    version,
    about = "Inspect and purge a hyper-client-cache store",
    long_about = "Inspect and purge a hyper-client-cache store: a DiskStore directory, a Redis \
                  server or a Redis Cluster.\n\nThe store options (--dir, --redis, --redis-env, \
                  --redis-cluster, --redis-cluster-env, --prefix, --key-env, --unsigned, \
                  --config) go before or after the subcommand. The secret key is read from an \
                  environment variable (raw bytes, as the application reads it), never from an \
                  argument."
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    /// The key prefix of a Redis store: give the application's when it sets one (default:
    /// the library's, `hcc:`).
    #[arg(long, global = true, help_heading = "Store options")]
    prefix: Option<String>,
    /// The environment variable holding the secret key (never give the key as an argument).
    #[arg(
        long,
        value_name = "VAR",
        default_value = "HTTP_CACHE_KEY",
        global = true,
        help_heading = "Store options"
    )]
    key_env: String,
    /// Read the store as an unsigned cache (entries are checked with a checksum only).
    #[arg(long, global = true, help_heading = "Store options")]
    unsigned: bool,
    /// A configuration file (TOML) whose `[key]` section names the key variables.
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        help_heading = "Store options"
    )]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where the store is: one of these, before or after the subcommand.
#[derive(Args)]
#[group(multiple = false)]
struct Target {
    /// A `DiskStore` directory.
    #[arg(
        long,
        value_name = "DIR",
        global = true,
        help_heading = "Store options"
    )]
    dir: Option<std::path::PathBuf>,
    /// A Redis URL (`redis://` or `rediss://` for TLS) without a password: one with a password
    /// goes in an environment variable (`--redis-env`).
    #[arg(
        long,
        value_name = "URL",
        global = true,
        help_heading = "Store options"
    )]
    redis: Option<String>,
    /// Nodes of a Redis Cluster, comma-separated (one is enough; `rediss://` for TLS), without
    /// passwords (see `--redis-cluster-env`).
    #[arg(
        long,
        value_name = "URLS",
        value_delimiter = ',',
        global = true,
        help_heading = "Store options"
    )]
    redis_cluster: Option<Vec<String>>,
    /// The environment variable holding the Redis URL (e.g. `HCC_REDIS_URL`): a password in
    /// it stays out of the arguments, which every user of the machine can read.
    #[arg(
        long,
        value_name = "VAR",
        global = true,
        help_heading = "Store options"
    )]
    redis_env: Option<String>,
    /// The environment variable holding the Redis Cluster's node URLs, comma-separated (e.g.
    /// `HCC_REDIS_CLUSTER`).
    #[arg(
        long,
        value_name = "VAR",
        global = true,
        help_heading = "Store options"
    )]
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
        /// Only the entries of this URL or glob: a full URL as requested, or a glob over
        /// `host/path` (`api.example.com:8443/v1/*`; the port is part of the host).
        #[arg(long, value_name = "URL_OR_GLOB")]
        url: Option<String>,
        /// Only entries that are no longer fresh.
        #[arg(long)]
        expired: bool,
        /// JSON Lines: one object per entry.
        #[arg(long)]
        json: bool,
    },
    /// The entries stored for a URL (every variant), or for every URL a glob matches.
    Show {
        /// A full URL as requested (`https://api.example.com/v1/users`), or a glob over
        /// `host/path` (`api.example.com/v1/*`; the port is part of the host).
        #[arg(value_name = "URL_OR_GLOB")]
        url: String,
        /// JSON Lines: one object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Delete entries.
    Purge {
        #[command(flatten)]
        what: PurgeWhat,
        /// Machine-readable output (one JSON object: how many were deleted).
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
        /// JSON Lines: one object per entry that does not verify, then a summary object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct PurgeWhat {
    /// The entries of this URL or glob: a full URL as requested, or a glob over `host/path`
    /// (`api.example.com:8443/v1/*`; the port is part of the host).
    #[arg(long, value_name = "URL_OR_GLOB")]
    url: Option<String>,
    /// Entries that are no longer fresh.
    #[arg(long)]
    expired: bool,
    /// Entries received longer ago than this (`"1h"`, `"7days"`).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Entries that carry this cache tag (`Cache-Tag`, `Surrogate-Key`). Works on every
    /// store: Redis purges through its tag index, a disk store is walked (a read per entry).
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
            eprintln!("hcc: {}", escape::text(&chain(e.as_ref())));
            ExitCode::from(2)
        }
    }
}

/// An error and its `source()` chain, as one line (each error shows its own message only).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        line.push_str(": ");
        line.push_str(&e.to_string());
        next = e.source();
    }
    line
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
                    "{}, {}, {invalid} that {} not verify",
                    output::count(entries, "entry", "entries"),
                    output::count(bytes, "byte", "bytes"),
                    if invalid == 1 { "does" } else { "do" }
                )?;
            }
        }
        Command::List { url, expired, json } => {
            let selector = url.as_deref().map(Selector::parse).transpose()?;
            let (mut shown, mut seen) = (0u64, Seen::default());
            walk(&inspector, |listed| {
                let e = match listed {
                    Described::Entry(e) => e,
                    Described::Invalid(_) => {
                        seen.invalid += 1;
                        return Ok(());
                    }
                };
                seen.entry(&e.url);
                let wanted = selector.as_ref().is_none_or(|s| s.matches(&e.url))
                    && (!*expired || e.is_expired);
                if wanted {
                    shown += 1;
                    if *json {
                        writeln!(out, "{}", escape::json(&output::entry_json(&e)))?;
                    } else {
                        writeln!(out, "{}", output::entry_line(&e))?;
                    }
                }
                Ok(())
            })
            .await?;
            if shown == 0 && (selector.is_some() || seen.valid == 0) {
                no_match_hint(url.as_deref().zip(selector.as_ref()), &seen);
            }
        }
        Command::Show { url, json } => {
            let selector = Selector::parse(url)?;
            let (mut found, mut seen) = (0u64, Seen::default());
            walk(&inspector, |listed| {
                let e = match listed {
                    Described::Entry(e) => e,
                    Described::Invalid(_) => {
                        seen.invalid += 1;
                        return Ok(());
                    }
                };
                seen.entry(&e.url);
                if selector.matches(&e.url) {
                    found += 1;
                    if *json {
                        writeln!(out, "{}", escape::json(&output::entry_json(&e)))?;
                    } else {
                        writeln!(
                            out,
                            "{}\n  key {}",
                            output::entry_line(&e),
                            escape::text(e.key.as_str())
                        )?;
                    }
                }
                Ok(())
            })
            .await?;
            if found == 0 {
                no_match_hint(Some((url, &selector)), &seen);
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
            } else if let Some(text) = &what.url {
                let selector = Selector::parse(text)?;
                let deleted = inspector.delete_where(|e| selector.matches(&e.url)).await?;
                if deleted == 0 {
                    let listing = inspector.entries().await?;
                    let mut seen = Seen::default();
                    listing.entries.iter().for_each(|e| seen.entry(&e.url));
                    seen.invalid = listing.invalid.len() as u64;
                    no_match_hint(Some((text, &selector)), &seen);
                }
                deleted
            } else if let Some(tag) = &what.tag {
                inspector.purge_tag(tag).await?
            } else {
                0
            };
            if *json {
                writeln!(out, "{}", json!({"deleted": deleted}))?;
            } else {
                writeln!(
                    out,
                    "{} deleted",
                    output::count(deleted as u64, "entry", "entries")
                )?;
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
                    writeln!(out, "{}", escape::json(&output::invalid_json(i, delete)))?;
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
                let mut line = format!(
                    "{} {}, {} {} not",
                    output::count(ok, "entry", "entries"),
                    if ok == 1 { "verifies" } else { "verify" },
                    bad.len(),
                    if bad.len() == 1 { "does" } else { "do" },
                );
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag and argument of every subcommand has a help line, and clap's own checks of
    /// the definition pass (global store options included).
    #[test]
    fn every_flag_has_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        let mut check = |command: &clap::Command| {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{} --{id}", command.get_name()));
                }
            }
        };
        check(&cli);
        for sub in cli.get_subcommands() {
            check(sub);
        }
        assert!(missing.is_empty(), "no help: {missing:?}");
    }

    #[test]
    fn counts_are_in_the_right_number() {
        assert_eq!(output::count(1, "entry", "entries"), "1 entry");
        assert_eq!(output::count(0, "entry", "entries"), "0 entries");
        assert_eq!(output::count(2, "entry", "entries"), "2 entries");
    }
}
