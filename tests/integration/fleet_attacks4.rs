//! Attack tests from the fourth review of the fleet features (each failed on bc9519b): the near
//! cache's reconnects under a view or a heartbeat that keeps being refused (no storm), and an
//! empty tagged entry's TTL.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{CacheKey, NearCache, RedisStore, StoreRequest, StoreResponse};

use crate::common::*;
use crate::fleet_support::*;

fn k(name: &str) -> CacheKey {
    CacheKey::from_stored(format!("hcc1:review4-{name}"))
}

/// The heartbeat keeps failing right after every successful reconnect (here: each
/// `CLIENT TRACKINGINFO` loses the connection; the same path as a view that reconnecting keeps
/// finding and the heartbeat keeps refusing). bc9519b says the backoff grows across such
/// cycles ("must not become a reconnect per heartbeat"), but the backoff is only slept after a
/// *failed* open: a successful open is followed by the next heartbeat one interval later, and a
/// failed heartbeat by an immediate open. One new connection (HELLO, CLIENT TRACKING ON) per
/// heartbeat, for as long as it lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_that_keeps_failing_after_reconnecting_is_backed_off() {
    let redis = RedisServer::start().await;
    let Cutter {
        port: proxy,
        armed,
        accepted,
    } = cutting_proxy(redis.port, b"TRACKINGINFO", false).await;
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let near = NearCache::builder(store).start().await.unwrap();
    until("serving", || near.stats().serving).await;

    armed.store(true, SeqCst);
    let before = accepted.load(SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = accepted.load(SeqCst) - before;
    armed.store(false, SeqCst);
    // With a backoff that doubles per cycle up to 1 s (10+20+...+640+1000 ms ≈ 2.3 s), three
    // seconds hold about ten reconnects.
    assert!(
        during <= 20,
        "{during} tracking connections opened in 3 s ({:?}): one per heartbeat, no backoff",
        near.stats()
    );
}

/// `PutTagged` of an empty blob with a TTL of 60 s: the write answers `Done`, but the FINALIZE
/// step is skipped for empty blobs, so the entry keeps its provisional 5 s TTL (a `Put` of the
/// same blob, and every other store, keeps it 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_tagged_entry_gets_its_own_ttl() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    let key = k("empty");
    let answer = call(
        &store,
        StoreRequest::PutTagged {
            key: key.clone(),
            blob: Bytes::new(),
            ttl: Some(Duration::from_secs(60)),
            tags: vec!["e".to_owned()],
        },
    )
    .await;
    assert!(matches!(answer, StoreResponse::Done), "{answer:?}");
    let left: i64 = redis::cmd("PTTL")
        .arg(format!("hcc:{key}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        left > 5_000,
        "an empty tagged entry stored for 60 s has PTTL {left} ms (the provisional 5 s)"
    );
}

/// An ACL user that may enable tracking but not run `CLIENT TRACKINGINFO` (the heartbeat):
/// `start` succeeds (it never heartbeats), then every heartbeat fails and every reconnect
/// succeeds at once. The near cache never serves and opens connections to Redis in a hot loop,
/// for as long as the process runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_trackinginfo_does_not_hammer_redis() {
    let redis = RedisServer::start().await;
    let mut admin = raw(&redis.url()).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("near")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-client|trackinginfo")
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://near:pw@127.0.0.1:{}/0", redis.port);
    let store = RedisStore::connect(&url).await.unwrap();
    let near = NearCache::builder(store).start().await;
    let Ok(near) = near else { return }; // refusing at start would be fine
    let connections = |text: String| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let info = || {
        let mut admin = admin.clone();
        async move {
            let s: String = redis::cmd("INFO")
                .arg("stats")
                .query_async(&mut admin)
                .await
                .unwrap();
            s
        }
    };
    let before = connections(info().await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let opened = connections(info().await) - before;
    assert!(
        opened <= 20,
        "{opened} connections opened to Redis in 3 s by one near cache ({:?})",
        near.stats()
    );
}

/// The scenario bc9519b's backoff comment names, on a real cluster: the seed's view of the
/// primaries (which covers all slots) and the union of the tracked primaries' views keep
/// disagreeing. Here a fourth primary (no slots yet) was just removed from the seed with
/// `CLUSTER FORGET` (the removal procedure: forget it on every node, one after the other) while
/// the other primaries still list it, for up to a minute. Every heartbeat answers "topology",
/// every reconnect succeeds at once: a reconnect per heartbeat (each one a new connection to
/// every primary), however long it lasts, rather than the growing backoff the comment promises.
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_keeps_being_refused_is_backed_off_on_a_cluster() {
    let mut cluster = RedisCluster::start().await;
    let port = cluster_free_port();
    let joined = RedisServer::start_with(port, &["--cluster-enabled", "yes"]).await;
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "add-node", &format!("127.0.0.1:{port}"), &seed])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    cluster.nodes.push(joined);
    let nodes_of = |port: u16| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "nodes"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut all_know = false;
    for _ in 0..400 {
        if cluster.nodes.iter().all(|n| {
            let text = nodes_of(n.port);
            text.lines()
                .filter(|l| l.contains("master") && !l.contains("handshake"))
                .count()
                == 4
        }) {
            all_know = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(all_know, "the fourth primary did not become known");
    let id = {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "myid"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &cluster.nodes[0].port.to_string(),
            "cluster",
            "forget",
            &id,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let seed_url = format!("redis://127.0.0.1:{}", cluster.nodes[0].port);
    let near = NearCache::builder(RedisStore::cluster(vec![seed_url]).connect().await.unwrap())
        .start()
        .await
        .unwrap();
    let connections = |port: u16| -> u64 {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "info", "stats"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("total_connections_received:")
                    .map(|v| v.trim().to_owned())
            })
            .unwrap()
            .parse()
            .unwrap()
    };
    let watched = cluster.nodes[1].port;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = connections(watched);
    let flushes = near.stats().flushes;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let opened = connections(watched) - before - 1; // less redis-cli's own
    assert!(
        opened <= 20,
        "{opened} tracking connections to one primary in 3 s ({} flushes): a reconnect per \
         heartbeat",
        near.stats().flushes - flushes
    );
}
