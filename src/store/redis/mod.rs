//! A store on a Redis (or Valkey) server, or on a Redis Cluster, shared by every client that
//! points at it.

mod conn;
mod tags;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use redis::{RedisError, Script, Value};

use conn::{match_pattern, PageCursor, SCAN_COUNT};
pub(crate) use conn::{Conn, Nodes, Source};

use super::{StoreRequest, StoreResponse};
use crate::CacheKey;

/// Default key prefix (namespace) of a [`RedisStore`].
pub const DEFAULT_PREFIX: &str = "hcc:";

/// A bounded `GET`: nil when the value is longer than `ARGV[1]` bytes, so that an oversized
/// value is refused on the server, in one round trip, without being sent. (`STRLEN` and `GET`
/// fail alike on a value that is not a string.)
static GET_BOUNDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[1]) then
  return false
end
return redis.call('GET', KEYS[1])
",
    )
});

/// A bounded `GET` with the key's remaining time to live (`PTTL`, -1 for none), for the near
/// cache: nil when absent or longer than `ARGV[1]` bytes.
static GET_WITH_TTL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[1]) then
  return false
end
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
return {v, redis.call('PTTL', KEYS[1])}
",
    )
});

/// A store on a Redis server or a Redis Cluster, through the `redis` crate's tokio connection
/// manager (one server) or its async cluster connection.
///
/// - `SET key blob PX ttl`: Redis expires entries itself; `UNLINK` to delete.
/// - Lookups are bounded: a value larger than the cache's
///   [`max_blob_size`](crate::CacheLayer::max_blob_size) is refused on the server by a small Lua
///   script (`STRLEN`, then `GET`; run with `EVALSHA`, loaded with `SCRIPT LOAD` on first use
///   and after a reconnect to a restarted server), so it is never sent. This needs scripting:
///   a server or ACL user that refuses `EVALSHA` / `SCRIPT LOAD` fails every bounded lookup,
///   which the cache treats as the store being unavailable (a plain `GET` is used only for an
///   unbounded [`StoreRequest::get`]).
/// - Every key is prefixed with a namespace ([`RedisStoreBuilder::prefix`], default `hcc:`), so
///   several caches can share one Redis database. Listing and clearing walk the namespace with
///   `SCAN` (on a cluster, every primary in turn); `KEYS` and `FLUSHDB` are never used.
/// - **Tag index.** An entry with cache tags ([`StoreRequest::PutTagged`]) is recorded in a
///   sorted set per tag name (a digest the cache computed, never the tag:
///   [`Inspector::tag_index_names`](crate::Inspector::tag_index_names)),
///   `{prefix}#tag:{name}`, then written, then checked to be still recorded
///   (a purge in between wins: the write deletes its entry and answers
///   [`StoreResponse::NotStored`]); each set drops its expired members as it is written and
///   expires with its last one. So [`Inspector::purge_tag`](crate::Inspector::purge_tag)
///   deletes a tag's entries without reading any ([`StoreRequest::PurgeTag`]), and says when the
///   index may be incomplete because Redis may evict keys
///   ([`RedisStoreBuilder::trust_tag_index`]). At most 64 names of at most 1 KiB each are
///   indexed: an entry with more is not stored. A key of another type under a set's name is
///   replaced by the next write to the tag, and makes a purge answer `complete: false` (as
///   does a member that is not an entry of the namespace, which is never unlinked).
/// - The connection manager reconnects by itself after the server restarts; while the server is
///   down, operations fail fast and the cache goes to the origin (fail-open).
///
/// # Redis Cluster
///
/// With the `redis-cluster` feature, [`RedisStore::cluster`] connects to a cluster from one or
/// more of its nodes. The contract is the same (the conformance suite runs on a local
/// three-primary cluster). The driver follows `MOVED` / `ASK` redirections and reconnects
/// nodes itself; listing and clearing walk every primary; a key and its tag sets live in
/// different slots, so they are written in steps, never in one transaction (see above for why
/// that is safe). TLS: `rediss://` on the first node, with `redis-tls`.
///
/// # Clone
///
/// Cheap; clones share one multiplexed connection.
///
/// # Example
///
/// ```no_run
/// use hyper_client_cache::{CacheLayer, RedisStore, SecretKey};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/0")
///     .prefix("my-service:http:")
///     .connect()
///     .await?;
/// // Everyone who can write to this Redis can write entries: sign them.
/// let layer = CacheLayer::new(store).secret_key(SecretKey::from_env("HTTP_CACHE_KEY")?);
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    trust_tag_index: bool,
    #[cfg_attr(not(feature = "memory"), allow(dead_code))] // used by the near cache
    source: Arc<Source>,
}

/// Settings for a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    nodes: Nodes,
    prefix: String,
    trust_tag_index: bool,
    connection_timeout: Duration,
    response_timeout: Duration,
    #[cfg(feature = "redis-tls")]
    root_certificate: Option<Vec<u8>>,
}

impl RedisStoreBuilder {
    /// The namespace every key is stored under.
    ///
    /// Caches sharing one Redis need namespaces of which none begins with another: listing and
    /// clearing `hcc:` take everything whose key starts with `hcc:`, so `hcc:` and `hcc:svc2:`
    /// overlap, while `hcc:svc1:` and `hcc:svc2:` do not.
    ///
    /// Default: [`DEFAULT_PREFIX`] (`hcc:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Trust the tag index to be complete even when Redis may evict keys (`maxmemory` with a
    /// policy other than `noeviction`): a purge by tag then never walks the store.
    ///
    /// Redis may evict a tag's set and keep entries that carry the tag, and nothing tells the
    /// store afterwards (an eviction counter restarts with the server, on a promoted replica
    /// and after `CONFIG RESETSTAT`). So by default, when eviction is possible, a purge answers
    /// `complete: false` and [`Inspector::purge_tag`](crate::Inspector::purge_tag) also walks
    /// (a read of every entry). Set this when the server has the memory the cache needs, and
    /// a purge that may miss entries whose set was evicted is acceptable.
    ///
    /// Default: `false`.
    pub fn trust_tag_index(mut self, trust: bool) -> Self {
        self.trust_tag_index = trust;
        self
    }

    /// How long connecting (and reconnecting) may take.
    ///
    /// Default: 1 second.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long one command may take before it fails.
    ///
    /// Default: 1 second. The cache layer's own `store_timeout` usually fires first.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// For `rediss://` URLs: trust this CA certificate (PEM) instead of the system's roots, as
    /// for a private CA.
    ///
    /// Default: the operating system's trust store.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Connects.
    ///
    /// # Errors
    ///
    /// When the URL is invalid or the server cannot be reached now (later outages are handled
    /// by reconnecting).
    pub async fn connect(self) -> Result<RedisStore, RedisError> {
        let source = Source {
            nodes: self.nodes,
            connection_timeout: self.connection_timeout,
            response_timeout: self.response_timeout,
            #[cfg(feature = "redis-tls")]
            root_certificate: self.root_certificate,
        };
        let conn = source.connect().await?;
        Ok(RedisStore {
            conn,
            prefix: self.prefix.into(),
            trust_tag_index: self.trust_tag_index,
            source: Arc::new(source),
        })
    }
}

impl RedisStore {
    /// Settings for a store on the server at `url`: `redis://host:port/db`, or with the
    /// `redis-tls` feature `rediss://host:port/db` (TLS through rustls).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        Self::builder_for(Nodes::Single(url.into()))
    }

    /// Settings for a store on the Redis Cluster that `nodes` belong to (one is enough; the
    /// others are found from it): `redis://host:port` each, or `rediss://` for TLS (with the
    /// `redis-tls` feature).
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster<I, U>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        Self::builder_for(Nodes::Cluster(nodes.into_iter().map(Into::into).collect()))
    }

    fn builder_for(nodes: Nodes) -> RedisStoreBuilder {
        RedisStoreBuilder {
            nodes,
            prefix: DEFAULT_PREFIX.to_owned(),
            trust_tag_index: false,
            connection_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            #[cfg(feature = "redis-tls")]
            root_certificate: None,
        }
    }

    /// Connects to `url` with default settings.
    ///
    /// # Errors
    ///
    /// See [`RedisStoreBuilder::connect`].
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        Self::builder(url).connect().await
    }

    /// The namespace.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this store is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !matches!(self.conn, Conn::Single(_))
    }

    /// A bounded lookup with the entry's remaining time to live (`None`: kept until evicted),
    /// in one round trip; retried once after a dropped connection, as every request is.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))] // used by the near cache
    pub(crate) async fn get_with_ttl(
        &self,
        key: &CacheKey,
        max_len: usize,
    ) -> Result<Option<(Bytes, Option<Duration>)>, RedisError> {
        let full = format!("{}{key}", self.prefix);
        let max_len = max_len.min(i64::MAX as usize);
        let once = |mut conn: Conn| {
            let full = full.clone();
            async move {
                let found: Option<(Vec<u8>, i64)> = GET_WITH_TTL
                    .key(full)
                    .arg(max_len)
                    .invoke_async(&mut conn)
                    .await?;
                Ok::<_, RedisError>(found.map(|(blob, pttl)| {
                    let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
                    (Bytes::from(blob), ttl)
                }))
            }
        };
        match once(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => once(self.conn.clone()).await,
            other => other,
        }
    }

    /// Where this store connects, for another connection to the same servers.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))] // used by the near cache
    pub(crate) fn source(&self) -> &Source {
        &self.source
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

/// The `PX` argument for `ttl`. Redis refuses 0, and anything that overflows a signed 64-bit
/// count of milliseconds once the current time is added; a longer TTL is capped at ~146 million
/// years, which is "forever" for a cache.
fn px(ttl: Duration) -> u64 {
    const MAX_PX: u64 = (i64::MAX / 2) as u64;
    u64::try_from(ttl.as_millis()).map_or(MAX_PX, |ms| ms.clamp(1, MAX_PX))
}

type RedisFuture = Pin<Box<dyn Future<Output = Result<StoreResponse, RedisError>> + Send>>;

impl tower::Service<StoreRequest> for RedisStore {
    type Response = StoreResponse;
    type Error = RedisError;
    type Future = RedisFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: StoreRequest) -> RedisFuture {
        let mut conn = self.conn.clone();
        let prefix = self.prefix.clone();
        let trust = self.trust_tag_index;
        Box::pin(async move {
            match run(&mut conn, &prefix, trust, req.clone()).await {
                // The connection manager answers the first command after a lost connection with
                // that loss, and reconnects in the background: one more try waits for the new
                // connection (after a Redis restart, the first probe of the circuit breaker
                // then succeeds). A refused connection fails both at once.
                // A purge cut short this way left its batch marked: the retry finishes it.
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    run(&mut conn, &prefix, trust, req).await
                }
                other => other,
            }
        })
    }
}

/// The keys of a walk that are entries of this namespace, as cache keys (the tag index's sets
/// are left out).
fn entry_keys(prefix: &str, raw: Vec<Vec<u8>>) -> Vec<CacheKey> {
    raw.into_iter()
        .filter_map(|k| String::from_utf8(k).ok())
        .filter_map(|k| k.strip_prefix(prefix).map(CacheKey::from_stored))
        .filter(|k| !k.as_str().starts_with(tags::INDEX_MARK))
        .collect()
}

/// One store request against the server.
async fn run(
    conn: &mut Conn,
    prefix: &str,
    trust_tag_index: bool,
    req: StoreRequest,
) -> Result<StoreResponse, RedisError> {
    let full = |key: &CacheKey| format!("{prefix}{key}");
    Ok(match req {
        StoreRequest::Get { key, max_len } => {
            let blob: Option<Vec<u8>> = if max_len == usize::MAX {
                redis::cmd("GET").arg(full(&key)).query_async(conn).await?
            } else {
                // EVALSHA; on NOSCRIPT (first use, a restarted server after a
                // reconnect) the script is loaded and run again.
                GET_BOUNDED
                    .key(full(&key))
                    .arg(max_len)
                    .invoke_async(conn)
                    .await?
            };
            StoreResponse::Blob(blob.map(Bytes::from))
        }
        StoreRequest::Put { key, blob, ttl } => {
            set(conn, &full(&key), &blob, ttl).await?;
            StoreResponse::Done
        }
        // A value goes to the server in one command, which copies it whatever its parts: the
        // cache joins them once and sends a `Put` (or `PutTagged`).
        StoreRequest::PutParts { .. } | StoreRequest::PutStream { .. } => {
            StoreResponse::Unsupported
        }
        StoreRequest::PutTagged {
            key,
            blob,
            ttl,
            tags,
        } => {
            let full = full(&key);
            if !tags::fits(&tags) {
                // Not indexable: nothing under the key (the write replaces what was there).
                let _: Value = redis::cmd("UNLINK").arg(&full).query_async(conn).await?;
                return Ok(StoreResponse::NotStored);
            }
            // The index first, then the entry with a short provisional TTL, then a check that
            // no purge took the key from the index in between (see `tags`): if one did, the
            // purge wins. Only then the entry's own TTL: a write cut short after its SET (a
            // timeout dropped it) leaves an entry a purge may have missed for a few seconds
            // at most.
            tags::record(conn, prefix, &full, &tags, tags::ttl_ms(ttl)).await?;
            let provisional = ttl.map_or(tags::PROVISIONAL, |t| t.min(tags::PROVISIONAL));
            set(conn, &full, &blob, Some(provisional)).await?;
            if !tags::still_recorded(conn, prefix, &full, &tags).await? {
                let _: Value = redis::cmd("UNLINK").arg(&full).query_async(conn).await?;
                return Ok(StoreResponse::NotStored);
            }
            // The entry's own TTL, if it still holds this writer's blob (a later writer of the
            // same key keeps its own lifetime).
            if ttl.is_none_or(|t| t > provisional) {
                let tail = &blob[blob.len().saturating_sub(tags::TAIL)..];
                let _: Value = tags::FINALIZE
                    .key(&full)
                    .arg(blob.len())
                    .arg(tail)
                    .arg(ttl.map(|t| px(t).to_string()).unwrap_or_default())
                    .invoke_async(conn)
                    .await?;
            }
            StoreResponse::Done
        }
        StoreRequest::PurgeTag { tag } => {
            let (removed, complete) =
                tags::purge(conn, prefix, &tag, trust_tag_index, tags::Purge::Tag).await?;
            StoreResponse::Purged { removed, complete }
        }
        StoreRequest::Delete { key } => {
            let _: Value = redis::cmd("UNLINK")
                .arg(full(&key))
                .query_async(conn)
                .await?;
            StoreResponse::Done
        }
        StoreRequest::KeysPage { cursor } => {
            let at = cursor.as_deref().map(PageCursor::parse).transpose()?;
            let (batch, next) = conn::page(conn, at, &match_pattern(prefix)).await?;
            StoreResponse::KeysPage {
                keys: entry_keys(prefix, batch),
                next: next.map(|n| n.render()),
            }
        }
        StoreRequest::Keys => {
            let keys = conn::scan_all(conn, &match_pattern(prefix)).await?;
            StoreResponse::Keys(entry_keys(prefix, keys))
        }
        StoreRequest::Clear => {
            let keys = conn::scan_all(conn, &match_pattern(prefix)).await?;
            let mark = format!("{prefix}{}", tags::INDEX_MARK);
            let (sets, entries): (Vec<Vec<u8>>, Vec<Vec<u8>>) = keys
                .into_iter()
                .partition(|k| k.starts_with(mark.as_bytes()));
            for batch in entries.chunks(SCAN_COUNT) {
                let _: Value = redis::cmd("UNLINK").arg(batch).query_async(conn).await?;
            }
            // A tag's set is purged, not unlinked: an entry written since the listing (so not
            // in it) is in its set, and goes with it. A key of another type under a set's name
            // (planted) is deleted; one whose name no tag has (not UTF-8) is unlinked.
            for set in sets {
                match set
                    .get(mark.len()..)
                    .and_then(|t| std::str::from_utf8(t).ok())
                {
                    Some(tag) => {
                        tags::purge(conn, prefix, tag, true, tags::Purge::Clear).await?;
                    }
                    None => {
                        let _: Value = redis::cmd("UNLINK").arg(&set).query_async(conn).await?;
                    }
                }
            }
            StoreResponse::Done
        }
    })
}

async fn set(
    conn: &mut Conn,
    key: &str,
    blob: &[u8],
    ttl: Option<Duration>,
) -> Result<(), RedisError> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(blob);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(px(ttl));
    }
    let _: Value = cmd.query_async(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn px_is_never_zero_and_never_overflows() {
        use std::time::Duration;
        assert_eq!(super::px(Duration::from_micros(10)), 1);
        assert_eq!(super::px(Duration::from_secs(3)), 3000);
        assert_eq!(super::px(Duration::MAX), (i64::MAX / 2) as u64);
    }

    #[test]
    fn index_sets_are_not_listed_as_entries() {
        let raw = vec![
            b"hcc:hcc1:abc".to_vec(),
            b"hcc:#tag:news".to_vec(),
            b"other".to_vec(),
            vec![0xff, 0xfe],
        ];
        let keys = super::entry_keys("hcc:", raw);
        let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["hcc1:abc"]);
    }
}
