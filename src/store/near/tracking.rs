//! The tracking connection (RESP3, `CLIENT TRACKING ON BCAST`) and the task that heartbeats
//! on it and reconnects it.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::{PushInfo, RedisError, Value};

#[cfg(feature = "redis-cluster")]
use crate::store::redis::all_primaries;
use crate::store::redis::{Nodes, Source};

use super::Shared;

/// The tracking connection.
pub(super) enum Tracker {
    Single(redis::aio::MultiplexedConnection),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Tracker {
    /// Opens tracking connection number `number` and enables tracking; the nodes it is enabled
    /// on (empty for one server).
    pub(super) async fn open(
        source: &Source,
        shared: &Arc<Shared>,
        number: u64,
    ) -> Result<(Self, Vec<String>), RedisError> {
        shared.connection.store(number, SeqCst);
        let weak = Arc::downgrade(shared);
        let sender = move |info: PushInfo| -> Result<(), ()> {
            let shared = weak.upgrade().ok_or(())?;
            shared.push(number, info);
            Ok(())
        };
        let mut tracker = match source.nodes() {
            Nodes::Single(url) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(source.connection_timeout()))
                    .set_response_timeout(Some(source.response_timeout()))
                    .set_push_sender(sender);
                let client = source.single_client(url, true)?;
                Tracker::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            #[cfg(feature = "redis-cluster")]
            Nodes::Cluster(urls) => {
                let client = source
                    .cluster_builder(urls)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()?;
                Tracker::Cluster(client.get_async_connection().await?)
            }
        };
        let nodes = tracker.enable(&shared.prefix).await?;
        Ok((tracker, nodes))
    }

    async fn enable(&mut self, prefix: &str) -> Result<Vec<String>, RedisError> {
        let mut on = redis::cmd("CLIENT");
        on.arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(prefix);
        match self {
            Tracker::Single(c) => {
                let _: Value = on.query_async(c).await?;
                Ok(Vec::new())
            }
            #[cfg(feature = "redis-cluster")]
            Tracker::Cluster(c) => {
                // A node that kept tracking from before answers ON with "overlaps": OFF first.
                let mut off = redis::cmd("CLIENT");
                off.arg("TRACKING").arg("OFF");
                let _ = all_primaries(c, off).await;
                let answers = all_primaries(c, on).await?;
                let mut nodes: Vec<String> = answers.into_iter().map(|(a, _)| a).collect();
                nodes.sort();
                Ok(nodes)
            }
        }
    }

    /// A heartbeat: `CLIENT TRACKINGINFO` on every node, which answers after the invalidations
    /// queued before it, and says whether tracking is still on *on the connection that
    /// answers* (a connection the driver re-opened has lost it). The nodes that answered, or
    /// `None` when one of them has no broadcast tracking.
    async fn ping(&mut self) -> Result<Option<Vec<String>>, RedisError> {
        let mut info = redis::cmd("CLIENT");
        info.arg("TRACKINGINFO");
        match self {
            Tracker::Single(c) => {
                let answer: Value = info.query_async(c).await?;
                Ok(broadcast_on(&answer).then(Vec::new))
            }
            #[cfg(feature = "redis-cluster")]
            Tracker::Cluster(c) => {
                let answers = all_primaries(c, info).await?;
                if !answers.iter().all(|(_, v)| broadcast_on(v)) {
                    return Ok(None);
                }
                let mut nodes: Vec<String> = answers.into_iter().map(|(a, _)| a).collect();
                nodes.sort();
                Ok(Some(nodes))
            }
        }
    }
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
        drop(tracker);
        // Reconnect, with backoff; the tier does not serve meanwhile.
        let mut backoff = Duration::from_millis(10);
        loop {
            let Some(s) = shared.upgrade() else { return };
            number += 1;
            match Tracker::open(&source, &s, number).await {
                Ok((t, n)) => {
                    s.up();
                    tracker = t;
                    nodes = n;
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
