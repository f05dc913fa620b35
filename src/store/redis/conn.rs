//! One Redis server or a Redis Cluster behind one connection type, and the walks (`SCAN`) that a
//! cluster has to do node by node.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Keys asked for per `SCAN` round trip.
pub(super) const SCAN_COUNT: usize = 500;

/// Where the store connects, kept so that another connection (the near cache's tracking one)
/// can be opened to the same servers with the same settings.
#[derive(Clone)]
pub(crate) struct Source {
    pub(super) nodes: Nodes,
    pub(super) connection_timeout: Duration,
    pub(super) response_timeout: Duration,
    #[cfg(feature = "redis-tls")]
    pub(super) root_certificate: Option<Vec<u8>>,
}

#[derive(Clone)]
pub(crate) enum Nodes {
    Single(String),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
}

/// The data connection: reconnecting by itself in both cases.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            #[cfg(feature = "redis-cluster")]
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Source {
    /// The servers.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))] // used by the near cache
    pub(crate) fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// How long connecting may take.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))] // used by the near cache
    pub(crate) fn connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// How long one command may take.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))] // used by the near cache
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The data connection.
    pub(super) async fn connect(&self) -> Result<Conn, RedisError> {
        match &self.nodes {
            Nodes::Single(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connection_timeout))
                    .set_response_timeout(Some(self.response_timeout))
                    // Fail fast: a server that refuses connections answers the command at once
                    // with an error (the layer's circuit breaker then stops asking); the next
                    // command tries to reconnect again. Retries with backoff made every call of
                    // an outage wait ~0.5 s.
                    .set_number_of_retries(0)
                    .set_max_delay(Duration::from_secs(2));
                let client = self.single_client(url, false)?;
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            #[cfg(feature = "redis-cluster")]
            Nodes::Cluster(urls) => {
                let client = self.cluster_builder(urls).build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A client for one server; `resp3` for a connection that receives pushes.
    fn single_client(&self, url: &str, resp3: bool) -> Result<redis::Client, RedisError> {
        use redis::IntoConnectionInfo;
        self.client_for(url.into_connection_info()?, resp3)
    }

    /// A client for the server `info` names, with this source's TLS roots; `resp3` for a
    /// connection that receives pushes.
    pub(crate) fn client_for(
        &self,
        mut info: redis::ConnectionInfo,
        resp3: bool,
    ) -> Result<redis::Client, RedisError> {
        if resp3 {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        #[cfg(feature = "redis-tls")]
        {
            // rustls needs one crypto provider; ours is ring. If the application installed
            // another one already, that one is used.
            let _ = rustls::crypto::ring::default_provider().install_default();
            if let Some(pem) = &self.root_certificate {
                return redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.clone()),
                    },
                );
            }
        }
        redis::Client::open(info)
    }

    /// The settings of a cluster client (TLS when the first URL is `rediss://`).
    #[cfg(feature = "redis-cluster")]
    fn cluster_builder(&self, urls: &[String]) -> redis::cluster::ClusterClientBuilder {
        let mut builder =
            redis::cluster::ClusterClientBuilder::new(urls.iter().map(String::as_str))
                .connection_timeout(self.connection_timeout)
                .response_timeout(self.response_timeout)
                // Redirections (MOVED / ASK) and reconnects are retried by the driver; a few, with
                // short waits, so that an outage still fails within the layer's store timeout.
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(200);
        #[cfg(feature = "redis-tls")]
        {
            let _ = rustls::crypto::ring::default_provider().install_default();
            if let Some(pem) = &self.root_certificate {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                });
            }
        }
        builder
    }
}

/// `prefix` with Redis glob characters escaped, then `*`: a `SCAN MATCH` pattern for exactly
/// this namespace.
pub(super) fn match_pattern(prefix: &str) -> String {
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

fn scan_cmd(cursor: u64, pattern: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    cmd
}

/// One `SCAN` step. On a cluster, `node` says which primary (`host:port`); on one server it is
/// ignored.
pub(super) async fn scan_step(
    conn: &mut Conn,
    node: Option<&str>,
    cursor: u64,
    pattern: &str,
) -> Result<(u64, Vec<Vec<u8>>), RedisError> {
    let cmd = scan_cmd(cursor, pattern);
    match conn {
        Conn::Single(c) => {
            let _ = node;
            cmd.query_async(c).await
        }
        #[cfg(feature = "redis-cluster")]
        Conn::Cluster(c) => {
            use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
            let (host, port) = node
                .and_then(split_address)
                .ok_or_else(|| client_error("not a node address of this cluster"))?;
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let value = c.route_command(cmd, routing).await?;
            redis::from_redis_value(value).map_err(RedisError::from)
        }
    }
}

/// The primaries of a cluster, sorted (`host:port`); one unnamed node for one server.
pub(super) async fn primaries(conn: &mut Conn) -> Result<Vec<Option<String>>, RedisError> {
    match conn {
        Conn::Single(_) => Ok(vec![None]),
        #[cfg(feature = "redis-cluster")]
        Conn::Cluster(c) => {
            let mut nodes: Vec<Option<String>> = all_primaries(c, redis::cmd("PING"))
                .await?
                .into_iter()
                .map(|(addr, _)| Some(addr))
                .collect();
            nodes.sort();
            Ok(nodes)
        }
    }
}

/// `cmd` sent to every primary of the cluster: each one's answer, by address.
#[cfg(feature = "redis-cluster")]
async fn all_primaries(
    conn: &mut redis::cluster_async::ClusterConnection,
    cmd: Cmd,
) -> Result<Vec<(String, Value)>, RedisError> {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
    let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    match conn.route_command(cmd, routing).await? {
        Value::Map(answers) => answers
            .into_iter()
            .map(|(addr, value)| {
                let addr: String = redis::from_redis_value(addr)?;
                Ok((addr, value))
            })
            .collect(),
        _ => Err(client_error(
            "a command sent to every primary gave no map of answers",
        )),
    }
}

/// `INFO section` of the server, or of every primary of a cluster.
pub(super) async fn info_all(conn: &mut Conn, section: &str) -> Result<Vec<String>, RedisError> {
    let mut info = redis::cmd("INFO");
    info.arg(section);
    match conn {
        Conn::Single(c) => Ok(vec![info.query_async(c).await?]),
        #[cfg(feature = "redis-cluster")]
        Conn::Cluster(c) => all_primaries(c, info)
            .await?
            .into_iter()
            .map(|(_, v)| redis::from_redis_value(v).map_err(RedisError::from))
            .collect(),
    }
}

/// Every key of the namespace (deduplicated: `SCAN` may return a key twice while Redis
/// rehashes), on every primary.
pub(super) async fn scan_all(conn: &mut Conn, pattern: &str) -> Result<Vec<Vec<u8>>, RedisError> {
    let mut keys = Vec::new();
    for node in primaries(conn).await? {
        let mut cursor = 0;
        loop {
            let (next, batch) = scan_step(conn, node.as_deref(), cursor, pattern).await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// A `KeysPage` cursor: the `SCAN` cursor, and on a cluster the node it belongs to
/// (`cursor@host:port`).
#[derive(Debug, PartialEq)]
pub(super) struct PageCursor {
    pub(super) node: Option<String>,
    pub(super) cursor: u64,
}

impl PageCursor {
    pub(super) fn parse(text: &str) -> Result<Self, RedisError> {
        let (cursor, node) = match text.split_once('@') {
            Some((cursor, node)) => (cursor, Some(node.to_owned())),
            None => (text, None),
        };
        let cursor = cursor
            .parse()
            .map_err(|_| client_error("not a cursor of this store"))?;
        Ok(PageCursor { node, cursor })
    }

    pub(super) fn render(&self) -> String {
        match &self.node {
            Some(node) => format!("{}@{node}", self.cursor),
            None => self.cursor.to_string(),
        }
    }
}

/// One page of the walk: its keys, and where the next one starts. A cluster is walked primary
/// after primary, in address order; a primary that left the cluster mid-walk is skipped (as with
/// any `SCAN`, only keys that stay put for the whole walk are sure to be listed).
pub(super) async fn page(
    conn: &mut Conn,
    at: Option<PageCursor>,
    pattern: &str,
) -> Result<(Vec<Vec<u8>>, Option<PageCursor>), RedisError> {
    let nodes = primaries(conn).await?;
    let at = match at {
        Some(at) => at,
        None => PageCursor {
            node: nodes.first().cloned().flatten(),
            cursor: 0,
        },
    };
    let known = nodes.contains(&at.node);
    let (next, batch) = if known {
        scan_step(conn, at.node.as_deref(), at.cursor, pattern).await?
    } else {
        (0, Vec::new())
    };
    let next = if next != 0 {
        Some(PageCursor {
            node: at.node,
            cursor: next,
        })
    } else {
        // This node is done: the next one in address order.
        nodes
            .into_iter()
            .find(|n| n > &at.node)
            .map(|node| PageCursor { node, cursor: 0 })
    };
    Ok((batch, next))
}

#[cfg(feature = "redis-cluster")]
fn split_address(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

pub(super) fn client_error(message: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Client, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_globs_are_escaped() {
        assert_eq!(match_pattern("hcc:"), "hcc:*");
        assert_eq!(match_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for c in [
            PageCursor {
                node: None,
                cursor: 17,
            },
            PageCursor {
                node: Some("127.0.0.1:7001".into()),
                cursor: 0,
            },
        ] {
            assert_eq!(PageCursor::parse(&c.render()).unwrap(), c);
        }
        assert!(PageCursor::parse("x@127.0.0.1:1").is_err());
        assert!(PageCursor::parse("").is_err());
    }
}
