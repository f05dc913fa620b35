//! The tracking connection (RESP3, `CLIENT TRACKING ON BCAST`) and the task that heartbeats
//! on it and reconnects it.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
#[cfg(feature = "redis-cluster")]
use redis::{ConnectionAddr, ConnectionInfo};
use redis::{IntoConnectionInfo, PushInfo, RedisError, Value};

use crate::store::redis::{Nodes, Source};

use super::Shared;

/// The tracking connection: one to the server, or one to each primary of a cluster.
///
/// On a cluster these are plain connections to the primaries that `CLUSTER NODES` lists, not
/// the driver's cluster connection: that one only knows the primaries in its slot map, never
/// refreshes it unless a command is redirected (a tracking connection's never are), and leaves
/// out a primary that has no slots yet, which is exactly the one a resharding moves keys to.
pub(super) enum Tracker {
    Single(MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<(Primary, MultiplexedConnection)>),
}

impl Tracker {
    /// Opens tracking connection number `number` and enables tracking; the nodes it is enabled
    /// on (their cluster ids, sorted; empty for one server).
    pub(super) async fn open(
        source: &Source,
        shared: &Arc<Shared>,
        number: u64,
        known: &[(String, u16)],
    ) -> Result<(Self, Vec<String>), RedisError> {
        shared.connection.store(number, SeqCst);
        let weak = Arc::downgrade(shared);
        let sender = move |info: PushInfo| -> Result<(), ()> {
            let shared = weak.upgrade().ok_or(())?;
            shared.push(number, info);
            Ok(())
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(source.connection_timeout()))
            .set_response_timeout(Some(source.response_timeout()))
            .set_push_sender(sender);
        match source.nodes() {
            Nodes::Single(url) => {
                let _ = known; // one server: its URL
                let info = url.as_str().into_connection_info()?;
                let mut conn = source
                    .client_for(info, true)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                enable(&mut conn, &shared.prefix).await?;
                Ok((Tracker::Single(conn), Vec::new()))
            }
            #[cfg(feature = "redis-cluster")]
            Nodes::Cluster(urls) => {
                let (seed, primaries) = discover(source, urls, known).await?;
                let mut conns = Vec::with_capacity(primaries.len());
                for primary in primaries {
                    let info = at_address(&seed, primary.host.clone(), primary.port);
                    let mut conn = source
                        .client_for(info, true)?
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
                    enable(&mut conn, &shared.prefix).await?;
                    conns.push((primary, conn));
                }
                conns.sort_by(|a, b| a.0.id.cmp(&b.0.id));
                let ids = conns.iter().map(|(p, _)| p.id.clone()).collect();
                Ok((Tracker::Cluster(conns), ids))
            }
        }
    }

    /// A heartbeat: `CLIENT TRACKINGINFO` on every connection, which answers after the
    /// invalidations queued before it, and says whether tracking is still on for that very
    /// connection. On a cluster, also the primaries each of them knows (`CLUSTER NODES`): a
    /// primary that joined (with or without slots yet) or took over (a failover) must be
    /// tracked, and one that was demoted no longer counts, before anything is served. The
    /// primaries seen (ids, sorted), or `None` when tracking is off somewhere.
    pub(super) async fn ping(&mut self) -> Result<Option<Vec<String>>, RedisError> {
        match self {
            Tracker::Single(c) => Ok(tracking_info(c).await?.then(Vec::new)),
            #[cfg(feature = "redis-cluster")]
            Tracker::Cluster(conns) => {
                // Every tracked primary's own view: the one that was demoted in a failover knows
                // it at once, and the source of a resharding knows its target before it moves a
                // key there.
                let checks = conns.iter().map(|(_, c)| {
                    let mut c = c.clone();
                    async move {
                        let on = tracking_info(&mut c).await?;
                        let text: String = redis::cmd("CLUSTER")
                            .arg("NODES")
                            .query_async(&mut c)
                            .await?;
                        Ok::<_, RedisError>((on, primaries_in(&text)))
                    }
                });
                let mut seen = std::collections::BTreeSet::new();
                for check in futures_util::future::join_all(checks).await {
                    let (on, primaries) = check?;
                    if !on {
                        return Ok(None);
                    }
                    seen.extend(primaries.into_iter().map(|p| p.id));
                }
                Ok(Some(seen.into_iter().collect()))
            }
        }
    }
}

impl Tracker {
    /// The addresses of the primaries tracked, to find the cluster again when the configured
    /// nodes are gone (replaced one by one).
    pub(super) fn addresses(&self) -> Vec<(String, u16)> {
        match self {
            Tracker::Single(_) => Vec::new(),
            #[cfg(feature = "redis-cluster")]
            Tracker::Cluster(conns) => conns
                .iter()
                .map(|(p, _)| (p.host.clone(), p.port))
                .collect(),
        }
    }
}

async fn enable(conn: &mut MultiplexedConnection, prefix: &str) -> Result<(), RedisError> {
    let _: Value = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(prefix)
        .query_async(conn)
        .await?;
    Ok(())
}

async fn tracking_info(conn: &mut MultiplexedConnection) -> Result<bool, RedisError> {
    let answer: Value = redis::cmd("CLIENT")
        .arg("TRACKINGINFO")
        .query_async(conn)
        .await?;
    Ok(broadcast_on(&answer))
}

/// The primaries of the cluster, from the first node that answers `CLUSTER NODES` with a view in
/// which the primaries cover all 16384 slots (a node that is not, or no longer, part of the
/// cluster lists only itself): the configured `urls` first, then the primaries tracked last
/// (`known`, reached with the first URL's credentials and TLS). Also the settings the other
/// connections are made with.
#[cfg(feature = "redis-cluster")]
async fn discover(
    source: &Source,
    urls: &[String],
    known: &[(String, u16)],
) -> Result<(ConnectionInfo, Vec<Primary>), RedisError> {
    let mut candidates = Vec::new();
    for url in urls {
        candidates.push(url.as_str().into_connection_info()?);
    }
    let template = candidates
        .first()
        .cloned()
        .ok_or_else(|| client_error("no cluster node given"))?;
    for (host, port) in known {
        candidates.push(at_address(&template, host.clone(), *port));
    }
    let mut last = None;
    for info in candidates {
        let attempt = async {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(source.connection_timeout()))
                .set_response_timeout(Some(source.response_timeout()));
            let mut conn = source
                .client_for(info.clone(), false)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut conn)
                .await?;
            let mut primaries = primaries_in(&text);
            // Where the cluster tells clients to connect (`cluster-preferred-endpoint-type`):
            // `CLUSTER SHARDS` (7.0+) says; older servers, or `?`, the IP.
            if let Ok(shards) = redis::cmd("CLUSTER")
                .arg("SHARDS")
                .query_async::<Value>(&mut conn)
                .await
            {
                let endpoints = endpoints_in(&shards);
                for p in &mut primaries {
                    if let Some(e) = endpoints.get(&p.id) {
                        p.host = e.clone();
                    }
                }
            }
            Ok::<_, RedisError>(primaries)
        };
        match attempt.await {
            Ok(primaries) if primaries.iter().map(|p| p.slots).sum::<u32>() == 16384 => {
                // The other connections: the configured URLs' credentials and TLS.
                return Ok((template, primaries));
            }
            Ok(_) => last = Some(client_error("a node's view of the cluster misses slots")),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| client_error("no cluster node given")))
}

/// Node id → preferred endpoint, from a `CLUSTER SHARDS` answer (RESP2 or RESP3).
#[cfg(feature = "redis-cluster")]
fn endpoints_in(shards: &Value) -> std::collections::HashMap<String, String> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
        match v {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| text(k).as_deref() == Some(name))
                .map(|(_, v)| v),
            Value::Array(items) => items
                .chunks(2)
                .find(|pair| pair.first().and_then(text).as_deref() == Some(name))
                .and_then(|pair| pair.get(1)),
            _ => None,
        }
    }
    let mut out = std::collections::HashMap::new();
    let Value::Array(shards) = shards else {
        return out;
    };
    for shard in shards {
        let Some(Value::Array(nodes)) = field(shard, "nodes") else {
            continue;
        };
        for node in nodes {
            let (Some(id), Some(endpoint)) = (
                field(node, "id").and_then(text),
                field(node, "endpoint").and_then(text),
            ) else {
                continue;
            };
            if !endpoint.is_empty() && endpoint != "?" {
                out.insert(id, endpoint);
            }
        }
    }
    out
}

/// `seed`'s settings at another address.
#[cfg(feature = "redis-cluster")]
fn at_address(seed: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match seed.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    seed.clone().set_addr(addr)
}

/// A primary of the cluster as `CLUSTER NODES` lists it.
#[cfg(feature = "redis-cluster")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Primary {
    pub(super) id: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// How many slots it serves.
    pub(super) slots: u32,
}

/// The primaries a `CLUSTER NODES` answer lists, with or without slots, that are not failed,
/// in a handshake or without an address, at their IP (`discover` then takes the endpoint
/// `CLUSTER SHARDS` tells clients to use, where the server has that command).
#[cfg(feature = "redis-cluster")]
pub(super) fn primaries_in(text: &str) -> Vec<Primary> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?;
            let address = fields.next()?;
            let flags: Vec<&str> = fields.next()?.split(',').collect();
            let serving = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "handshake" | "noaddr"));
            if !serving || id.is_empty() {
                return None;
            }
            // ip:port@cport[,hostname]
            let endpoint = address.split(',').next()?.split('@').next()?;
            let (ip, port) = endpoint.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            // master-id ping-sent pong-recv config-epoch link-state, then slots: `0-5460`,
            // `5461`, or `[slot->-id]` / `[slot-<-id]` while one migrates (not counted).
            let slots = fields
                .skip(5)
                .filter(|f| !f.starts_with('['))
                .filter_map(|f| match f.split_once('-') {
                    Some((a, b)) => Some(b.parse::<u32>().ok()? + 1 - a.parse::<u32>().ok()?),
                    None => f.parse::<u32>().ok().map(|_| 1),
                })
                .sum();
            (!ip.is_empty() && port != 0).then(|| Primary {
                id: id.to_owned(),
                host: ip.to_owned(),
                port,
                slots,
            })
        })
        .collect()
}

#[cfg(feature = "redis-cluster")]
fn client_error(message: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Client, message))
}

/// Whether a `CLIENT TRACKINGINFO` answer says tracking is on in broadcast mode: its `flags`
/// include `bcast` (RESP3 answers a map; RESP2 a flat list of names and values).
pub(super) fn broadcast_on(answer: &Value) -> bool {
    fn text(v: &Value) -> Option<&[u8]> {
        match v {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
    let flags = match answer {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k) == Some(b"flags"))
            .map(|(_, v)| v),
        Value::Array(items) => items
            .chunks(2)
            .find(|pair| pair.first().and_then(text) == Some(b"flags"))
            .and_then(|pair| pair.get(1)),
        _ => None,
    };
    match flags {
        Some(Value::Array(f) | Value::Set(f)) => f.iter().any(|f| text(f) == Some(b"bcast")),
        _ => false,
    }
}

/// Heartbeats on the tracking connection; reconnects (with backoff) when it is lost.
pub(super) async fn heartbeat(
    shared: Weak<Shared>,
    source: Source,
    mut tracker: Tracker,
    mut nodes: Vec<String>,
) {
    let mut number = 1;
    // Back to the shortest wait only once a heartbeat has agreed with the view: a view that
    // reconnecting keeps finding, and the next heartbeat keeps refusing (or a heartbeat the
    // server refuses), must not become a reconnect per heartbeat.
    let mut backoff = Duration::from_millis(10);
    // Whether a heartbeat agreed since the last reconnect (a first loss reconnects at once).
    let mut agreed = true;
    loop {
        let Some(interval) = shared.upgrade().map(|s| s.max_staleness / 5) else {
            return;
        };
        let mut previous = shared.upgrade().map_or(0, |s| s.now());
        loop {
            let Some(s) = shared.upgrade() else { return };
            // The interval, or at once when the driver says the connection is gone.
            let _ = tokio::time::timeout(interval, s.lost.notified()).await;
            if !s.serving.load(SeqCst) {
                break;
            }
            let sent = s.now();
            match tokio::time::timeout(source.response_timeout(), tracker.ping()).await {
                Ok(Ok(Some(answered))) if answered == nodes => {
                    s.known_at.store(previous.max(1), SeqCst);
                    previous = sent;
                    backoff = Duration::from_millis(10);
                    agreed = true;
                }
                // A primary more or less (resharding, failover): tracking may be missing on
                // one; start over.
                Ok(Ok(Some(_))) => {
                    s.down("topology");
                    break;
                }
                // A connection that lost tracking (re-opened by the driver): what it missed is
                // unknown; start over.
                Ok(Ok(None)) => {
                    s.down("tracking_lost");
                    break;
                }
                Ok(Err(_)) | Err(_) => {
                    s.down("lease_expired");
                    break;
                }
            }
        }
        let known = tracker.addresses();
        drop(tracker);
        // No heartbeat agreed since the last reconnect: wait (doubling, with up to 25% jitter
        // so that a fleet does not retry in step) before reconnecting again.
        if !agreed {
            let jitter = shared
                .upgrade()
                .map_or(0, |s| u32::try_from(s.now() % 256).unwrap_or(0));
            tokio::time::sleep(backoff + backoff * jitter / 1024).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        agreed = false;
        // Reconnect, with backoff; the tier does not serve meanwhile.
        loop {
            let Some(s) = shared.upgrade() else { return };
            number += 1;
            match Tracker::open(&source, &s, number, &known).await {
                Ok((t, n)) => {
                    s.up();
                    tracker = t;
                    nodes = n;
                    // A disconnection of the connection just replaced must not cut the first
                    // interval short.
                    let _ = tokio::time::timeout(Duration::ZERO, s.lost.notified()).await;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "near cache: tracking connection not back yet");
                    drop(s);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
