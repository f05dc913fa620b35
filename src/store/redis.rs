//! A store on a Redis (or Valkey) server, shared by every client that points at it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};

use super::{StoreRequest, StoreResponse};
use crate::CacheKey;

/// Default key prefix (namespace) of a [`RedisStore`].
pub const DEFAULT_PREFIX: &str = "hcc:";
/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 500;

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

/// A store on a Redis server, through the `redis` crate's tokio connection manager.
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
///   `SCAN`; `KEYS` and `FLUSHDB` are never used.
/// - The connection manager reconnects by itself after the server restarts; while the server is
///   down, operations fail fast and the cache goes to the origin (fail-open).
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
    conn: ConnectionManager,
    prefix: Arc<str>,
}

/// Settings for a [`RedisStore`].
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
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
        let client = self.client()?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection_timeout))
            .set_response_timeout(Some(self.response_timeout))
            // Fail fast: a server that refuses connections answers the command at once with an
            // error (the layer's circuit breaker then stops asking); the next command tries to
            // reconnect again. Retries with backoff made every call of an outage wait ~0.5 s.
            .set_number_of_retries(0)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(RedisStore {
            conn,
            prefix: self.prefix.into(),
        })
    }
}

impl RedisStoreBuilder {
    #[cfg(not(feature = "redis-tls"))]
    fn client(&self) -> Result<redis::Client, RedisError> {
        redis::Client::open(self.url.as_str())
    }

    #[cfg(feature = "redis-tls")]
    fn client(&self) -> Result<redis::Client, RedisError> {
        // rustls needs one crypto provider; ours is ring. If the application installed another
        // one already, that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
        match &self.root_certificate {
            None => redis::Client::open(self.url.as_str()),
            Some(pem) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
        }
    }
}

impl RedisStore {
    /// Settings for a store on the server at `url`: `redis://host:port/db`, or with the
    /// `redis-tls` feature `rediss://host:port/db` (TLS through rustls).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
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
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// `prefix` with Redis glob characters escaped, then `*`: a `SCAN MATCH` pattern for exactly
/// this namespace.
fn match_pattern(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

async fn scan(conn: &mut ConnectionManager, prefix: &str) -> Result<Vec<Vec<u8>>, RedisError> {
    let pattern = match_pattern(prefix);
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            // SCAN may return a key twice (when Redis rehashes during the walk).
            keys.sort_unstable();
            keys.dedup();
            return Ok(keys);
        }
        cursor = next;
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
        Box::pin(async move {
            match run(&mut conn, &prefix, req.clone()).await {
                // The connection manager answers the first command after a lost connection with
                // that loss, and reconnects in the background: one more try waits for the new
                // connection (after a Redis restart, the first probe of the circuit breaker
                // then succeeds). A refused connection fails both at once.
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    run(&mut conn, &prefix, req).await
                }
                other => other,
            }
        })
    }
}

/// One store request against the server.
async fn run(
    conn: &mut ConnectionManager,
    prefix: &str,
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
            let mut cmd = redis::cmd("SET");
            cmd.arg(full(&key)).arg(blob.as_ref());
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(px(ttl));
            }
            let _: Value = cmd.query_async(conn).await?;
            StoreResponse::Done
        }
        StoreRequest::Delete { key } => {
            let _: Value = redis::cmd("UNLINK")
                .arg(full(&key))
                .query_async(conn)
                .await?;
            StoreResponse::Done
        }
        StoreRequest::KeysPage { cursor } => {
            let cursor: u64 = match cursor.as_deref().map(str::parse) {
                None => 0,
                Some(Ok(c)) => c,
                Some(Err(_)) => {
                    return Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "not a cursor of this store",
                    )))
                }
            };
            let prefix = full(&CacheKey::from_stored(""));
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(match_pattern(&prefix))
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(conn)
                .await?;
            StoreResponse::KeysPage {
                keys: batch
                    .into_iter()
                    .filter_map(|k| String::from_utf8(k).ok())
                    .filter_map(|k| k.get(prefix.len()..).map(CacheKey::from_stored))
                    .collect(),
                next: (next != 0).then(|| next.to_string()),
            }
        }
        StoreRequest::Keys => {
            let prefix_len = full(&CacheKey::from_stored("")).len();
            let keys = scan(conn, &full(&CacheKey::from_stored(""))).await?;
            StoreResponse::Keys(
                keys.into_iter()
                    .filter_map(|k| String::from_utf8(k).ok())
                    .filter_map(|k| k.get(prefix_len..).map(CacheKey::from_stored))
                    .collect(),
            )
        }
        StoreRequest::Clear => {
            let keys = scan(conn, &full(&CacheKey::from_stored(""))).await?;
            for batch in keys.chunks(SCAN_COUNT) {
                let _: Value = redis::cmd("UNLINK").arg(batch).query_async(conn).await?;
            }
            StoreResponse::Done
        }
    })
}

#[cfg(test)]
mod tests {
    use super::match_pattern;

    #[test]
    fn px_is_never_zero_and_never_overflows() {
        use std::time::Duration;
        assert_eq!(super::px(Duration::from_micros(10)), 1);
        assert_eq!(super::px(Duration::from_secs(3)), 3000);
        assert_eq!(super::px(Duration::MAX), (i64::MAX / 2) as u64);
    }

    #[test]
    fn namespace_globs_are_escaped() {
        assert_eq!(match_pattern("hcc:"), "hcc:*");
        assert_eq!(match_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
