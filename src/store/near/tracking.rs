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

    /// A heartbeat: the nodes that answered.
    async fn ping(&mut self) -> Result<Vec<String>, RedisError> {
        match self {
            Tracker::Single(c) => {
                let _: Value = redis::cmd("PING").query_async(c).await?;
                Ok(Vec::new())
            }
            #[cfg(feature = "redis-cluster")]
            Tracker::Cluster(c) => {
                let answers = all_primaries(c, redis::cmd("PING")).await?;
                let mut nodes: Vec<String> = answers.into_iter().map(|(a, _)| a).collect();
                nodes.sort();
                Ok(nodes)
            }
        }
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
                Ok(Ok(answered)) if answered == nodes => {
                    s.known_at.store(previous.max(1), SeqCst);
                    previous = sent;
                }
                // A primary more or less (resharding, failover): tracking may be missing on
                // one; start over.
                Ok(Ok(_)) => {
                    s.down("topology");
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
