//! Attack tests from the second review of the fleet features (each failed on 4bd4f49): a purge
//! or a tagged write cut short, `Clear` racing a write, two writers of one key, `INFO` refused
//! by an ACL, and the near cache's view of a cluster (a stray seed, seeds gone, hostnames).
//! Each test's comment tells the failure it found; its assertions hold the fix.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{CacheKey, RedisStore, StoreRequest, StoreResponse};
use tower::ServiceExt;

use crate::common::*;
use crate::fleet_support::*;

fn k(name: &str) -> CacheKey {
    CacheKey::from_stored(format!("hcc1:review2-{name}"))
}

// ------------------------------------------------------------------------------------------
// 1. A purge takes members, then unlinks them: a failure in between loses them for good.
// ------------------------------------------------------------------------------------------

/// The purge's connection drops after TAKE removed a batch from the set and before the UNLINK of
/// that batch reached Redis. `RedisStore::call` retries the whole purge on a dropped connection;
/// the retry finds the set empty and answers `Purged { removed: 0, complete: true }`. The
/// entries live on, carrying the tag, in no index: every later purge of the tag misses them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_between_take_and_unlink_is_finished_by_the_next() {
    let redis = RedisServer::start().await;
    let Cutter {
        port: proxy, armed, ..
    } = cutting_proxy(redis.port, b"UNLINK", true).await;
    let writer = RedisStore::connect(&redis.url()).await.unwrap();
    let purger = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let mut conn = raw(&redis.url()).await;
    for i in 0..10 {
        let answer = call(
            &writer,
            tagged(
                &k(&format!("cut{i}")),
                Duration::from_secs(600),
                "product-9",
            ),
        )
        .await;
        assert!(matches!(answer, StoreResponse::Done), "{answer:?}");
    }
    armed.store(true, SeqCst);
    let answer = purger.clone().oneshot(purge("product-9")).await;
    // Whatever the purge answered, every entry of the tag must now be gone or still indexed.
    let mut survivors = 0;
    for i in 0..10 {
        if exists(&mut conn, &format!("hcc:{}", k(&format!("cut{i}")))).await {
            survivors += 1;
        }
    }
    let again = call(&writer, purge("product-9")).await;
    let mut after_second = 0;
    for i in 0..10 {
        if exists(&mut conn, &format!("hcc:{}", k(&format!("cut{i}")))).await {
            after_second += 1;
        }
    }
    assert_eq!(
        after_second,
        0,
        "{after_second} tagged entries survived two purges (first answered {:?} with \
         {survivors} left, second {again:?})",
        answer.map_err(|e| e.to_string())
    );
}

/// The same loss through cancellation: the purge future is dropped (the inspector's
/// `whole_store_timeout`, a caller's own timeout, a shutdown) while a TAKE is in flight. The
/// TAKE was sent, so Redis runs it; no UNLINK follows. Half of a long purge's time is spent
/// waiting for TAKEs, so a purge cut by its timeout loses a batch (500 entries) about every
/// other time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_purge_is_finished_by_the_next() {
    let redis = RedisServer::start().await;
    let (proxy, gate) = gated_proxy(redis.port, b"EVALSHA").await;
    let writer = RedisStore::connect(&redis.url()).await.unwrap();
    let purger = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let mut conn = raw(&redis.url()).await;
    // Both scripts loaded on the server (as in any running fleet).
    call(&writer, tagged(&k("cancel"), Duration::from_secs(600), "p")).await;
    call(&writer, purge("unrelated")).await;

    gate.open.send_replace(false);
    let purging = tokio::spawn({
        let purger = purger.clone();
        async move { purger.oneshot(purge("p")).await.map(|a| format!("{a:?}")) }
    });
    wait_held(&gate, 1).await; // the TAKE is on the wire
    purging.abort(); // the timeout fires
    let _ = purging.await;
    gate.open.send_replace(true); // the TAKE reaches Redis and runs
    for _ in 0..200 {
        let n: i64 = redis::cmd("EXISTS")
            .arg("hcc:#tag:p")
            .query_async(&mut conn)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let later = call(&writer, purge("p")).await;
    assert!(
        !exists(&mut conn, &format!("hcc:{}", k("cancel"))).await,
        "a tagged entry survived a later purge ({later:?}): the cancelled purge took it out of \
         the index without deleting it"
    );
}

// ------------------------------------------------------------------------------------------
// 2. Clear deletes a tag's set that it listed, after a writer added a new member to it.
// ------------------------------------------------------------------------------------------

/// `Clear` lists the namespace (SCAN), then unlinks what it listed, tag sets included. A tagged
/// write that lands in between adds its key to a set Clear listed and writes an entry Clear did
/// not list: Clear then deletes the set and keeps the entry. The write answered `Done`, Clear
/// returned, and a purge of the tag run after both misses the entry for its whole TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_clear_goes_with_its_tag_set() {
    let redis = RedisServer::start().await;
    let (proxy, gate) = gated_proxy(redis.port, b"UNLINK").await;
    let clearer = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let writer = RedisStore::connect(&redis.url()).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    // The tag's set exists before the Clear.
    call(
        &writer,
        tagged(&k("before"), Duration::from_secs(600), "news"),
    )
    .await;

    gate.open.send_replace(false);
    let clear = tokio::spawn({
        let clearer = clearer.clone();
        async move {
            clearer
                .oneshot(StoreRequest::Clear)
                .await
                .map(|a| format!("{a:?}"))
        }
    });
    wait_held(&gate, 1).await; // the SCAN is done, its UNLINK held
    let answer = call(
        &writer,
        tagged(&k("during"), Duration::from_secs(600), "news"),
    )
    .await;
    assert!(matches!(answer, StoreResponse::Done), "{answer:?}");
    gate.open.send_replace(true);
    assert_eq!(clear.await.unwrap().unwrap(), "Done");

    let purged = call(&writer, purge("news")).await;
    assert!(
        !exists(&mut conn, &format!("hcc:{}", k("during"))).await,
        "the entry written during Clear carries `news` and survived a purge of `news` run after \
         both returned ({purged:?})"
    );
}

// ------------------------------------------------------------------------------------------
// 3. Two writers of one key: the member's score is the last RECORD's, the entry the last SET's.
// ------------------------------------------------------------------------------------------

/// Writer A (TTL 600 s) records, writer B (TTL 1 s) records and writes, then A's `SET` lands.
/// Both answer `Done`. The entry lives 600 s; its member (ZADD overwrote A's score with B's) and
/// the set (PEXPIREAT to the max score) ~61 s. After that the entry carries the tag in no index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_concurrent_write_never_lowers_the_member_below_the_entry() {
    let redis = RedisServer::start().await;
    let (proxy, gate) = gated_proxy(redis.port, b"\r\nSET\r\n").await;
    let slow = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let fast = RedisStore::connect(&redis.url()).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    let full = format!("hcc:{}", k("two"));

    gate.open.send_replace(false);
    let a = tokio::spawn({
        let req = tagged(&k("two"), Duration::from_secs(600), "t");
        async move { slow.oneshot(req).await.map(|a| format!("{a:?}")) }
    });
    wait_held(&gate, 1).await;
    let b = call(&fast, tagged(&k("two"), Duration::from_secs(1), "t")).await;
    assert!(matches!(b, StoreResponse::Done));
    gate.open.send_replace(true);
    assert_eq!(a.await.unwrap().unwrap(), "Done");

    let entry_ends: i64 = redis::cmd("PEXPIRETIME")
        .arg(&full)
        .query_async(&mut conn)
        .await
        .unwrap();
    let set_ends: i64 = redis::cmd("PEXPIRETIME")
        .arg("hcc:#tag:t")
        .query_async(&mut conn)
        .await
        .unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg("hcc:#tag:t")
        .arg(&full)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        set_ends >= entry_ends && score as i64 >= entry_ends,
        "the entry expires at {entry_ends}, its only index (member score {score}, set expiry \
         {set_ends}) ~{} s earlier",
        (entry_ends - set_ends) / 1000
    );
}

// ------------------------------------------------------------------------------------------
// 4. A tagged write cancelled after its SET was sent: no check, no undo.
// ------------------------------------------------------------------------------------------

/// The layer bounds every store write by `store_timeout` (500 ms) and drops the future when it
/// fires. A write whose `SET` is in flight when a purge takes its key, and which is then dropped
/// (timeout), never runs its check: the SET lands, the entry carries the tag in no index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tagged_write_cut_after_its_set_leaves_an_entry_for_seconds_at_most() {
    let redis = RedisServer::start().await;
    let (proxy, gate) = gated_proxy(redis.port, b"\r\nSET\r\n").await;
    let writer = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let purger = RedisStore::connect(&redis.url()).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    let full = format!("hcc:{}", k("cancelled"));

    gate.open.send_replace(false);
    let write = tokio::spawn({
        let req = tagged(&k("cancelled"), Duration::from_secs(600), "p2");
        async move { writer.oneshot(req).await.map(|a| format!("{a:?}")) }
    });
    wait_held(&gate, 1).await; // recorded; the SET is in the network
    let first = call(&purger, purge("p2")).await;
    write.abort(); // the layer's store_timeout fires
    let _ = write.await;
    gate.open.send_replace(true); // the SET reaches Redis
    for _ in 0..200 {
        if exists(&mut conn, &full).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let later = call(&purger, purge("p2")).await;
    // The entry the cut write left is not indexed, but it only has its provisional TTL: it is
    // gone within a few seconds (docs/stores.md, "Purge by tag").
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&full)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl <= 5_000,
        "a write cut after its SET left an entry a purge missed for {ttl} ms ({first:?}, then \
         {later:?})"
    );
}

// ------------------------------------------------------------------------------------------
// 6. A purge needs INFO (an @dangerous command) — and fails after it has deleted everything.
// ------------------------------------------------------------------------------------------

/// A common restricted user, `~hcc:* +@all -@dangerous`, can write, read and purge every key of
/// the namespace, but not run `INFO`: every purge by tag now deletes its entries and then fails
/// with NOPERM (so `Inspector::purge_tag` reports an error for a purge that happened, and never
/// returns a count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_works_for_a_user_without_info() {
    let redis = RedisServer::start().await;
    let mut admin = raw(&redis.url()).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("cache")
        .arg("on")
        .arg(">pw")
        .arg("~hcc:*")
        .arg("+@all")
        .arg("-@dangerous")
        .query_async(&mut admin)
        .await
        .unwrap();
    let store = RedisStore::connect(&format!("redis://cache:pw@127.0.0.1:{}/0", redis.port))
        .await
        .unwrap();
    call(&store, tagged(&k("acl"), Duration::from_secs(600), "a")).await;
    let answer = store.clone().oneshot(purge("a")).await;
    assert!(
        answer.is_ok(),
        "purge failed: {:?}; the entry exists: {}",
        answer.map_err(|e| e.to_string()),
        exists(&mut admin, &format!("hcc:{}", k("acl"))).await
    );
}

// ------------------------------------------------------------------------------------------
// 7. NearCache on a cluster: the tracked primaries come from the first seed that answers.
// ------------------------------------------------------------------------------------------

/// The first seed is a cluster node that is not (or no longer) part of the cluster: a spare, or
/// one removed with `redis-cli --cluster del-node` (which resets it and leaves it running), still
/// in the fleet's static seed list. The data connection finds the real cluster (the driver takes
/// the slot map the nodes agree on); the tracker takes that node's own `CLUSTER NODES` (itself,
/// a master), tracks it alone, and its heartbeats agree with it for ever: the tier serves
/// entries overwritten on the real cluster, without bound.
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_first_seed_is_not_taken_for_the_cluster() {
    let cluster = RedisCluster::start().await;
    let stray = RedisServer::start_with(cluster_free_port(), &["--cluster-enabled", "yes"]).await;
    // It was a node of the cluster once (scaled in): added, then deleted.
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let added = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "add-node",
            &format!("127.0.0.1:{}", stray.port),
            &seed,
        ])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stdout)
    );
    for _ in 0..400 {
        if cluster.nodes.iter().all(|n| n.cluster_ok()) && stray.cluster_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stray_id = String::from_utf8(
        std::process::Command::new("redis-cli")
            .args(["-p", &stray.port.to_string(), "cluster", "myid"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    // Every node must know it before it can be forgotten everywhere (gossip, bounded wait).
    for _ in 0..400 {
        let known = cluster.nodes.iter().all(|n| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "nodes"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains(&stray_id)
        });
        if known {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let deleted = std::process::Command::new("redis-cli")
        .args(["--cluster", "del-node", &seed, &stray_id])
        .output()
        .unwrap();
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stdout)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seeds = vec![format!("redis://127.0.0.1:{}", stray.port)];
    seeds.extend(cluster.urls());
    let near =
        hyper_client_cache::NearCache::builder(RedisStore::cluster(seeds).connect().await.unwrap())
            .start()
            .await
            .unwrap();
    let other = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let keys: Vec<CacheKey> = (0..10).map(|i| k(&format!("stray{i}"))).collect();
    for key in &keys {
        put(&other, key, "old").await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for key in &keys {
        assert_eq!(read(&near, key).await.as_deref(), Some("old"));
    }
    for key in &keys {
        put(&other, key, "new").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stale = 0;
    for key in &keys {
        if read(&near, key).await.as_deref() == Some("old") {
            stale += 1;
        }
    }
    assert_eq!(
        stale,
        0,
        "{stale} of 10 overwritten keys served from memory 300 ms after the write ({:?})",
        near.stats()
    );
}

/// `cluster-announce-hostname` set (for TLS SNI, or for clients that prefer hostnames) while
/// `cluster-preferred-endpoint-type` stays `ip` (the default): clients are told to use the IPs,
/// and the data connection does. The tracker connects to the announced hostnames instead; where
/// those do not resolve from the client, the near cache cannot start (and after any reconnect
/// never serves again).
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_connects_to_the_ips_clients_are_told() {
    let cluster = RedisCluster::start().await;
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut c = raw(&format!("redis://127.0.0.1:{}", node.port)).await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-announce-hostname")
            .arg(format!("node{i}.internal.invalid"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // Gossip carries the hostnames to every node.
    for _ in 0..200 {
        let mut c = raw(&cluster.urls()[0]).await;
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .unwrap();
        if text.matches(".internal.invalid").count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let store = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    put(&store, &k("host"), "v").await; // the data connection works (IPs)
    let near = hyper_client_cache::NearCache::builder(store).start().await;
    assert!(
        near.is_ok(),
        "the near cache cannot start: {:?}",
        near.err().map(|e| e.to_string())
    );
}

/// "One node is enough to find the others": the data connection keeps the nodes it learned, the
/// tracker re-discovers from the seed URLs only. With one seed, whose primary then fails over to
/// its replica, the cluster and the store keep working, but the near cache never serves again
/// (every reconnect asks the dead seed).
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_only_seed_fails_over_the_near_cache_serves_again() {
    let mut cluster = RedisCluster::start().await;
    let p = cluster.nodes[0].port;
    let replica = RedisServer::start_with(
        cluster_free_port(),
        &["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"],
    )
    .await;
    for node in &cluster.nodes {
        let mut c = raw(&format!("redis://127.0.0.1:{}", node.port)).await;
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-node-timeout")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let id = String::from_utf8(
        std::process::Command::new("redis-cli")
            .args(["-p", &p.to_string(), "cluster", "myid"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let out = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "add-node",
            &format!("127.0.0.1:{}", replica.port),
            &format!("127.0.0.1:{p}"),
            "--cluster-slave",
            "--cluster-master-id",
            &id,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let info = |port: u16, what: &str| {
        String::from_utf8_lossy(
            &std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "info", what])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    for _ in 0..400 {
        if info(replica.port, "replication").contains("master_link_status:up") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seed = vec![format!("redis://127.0.0.1:{p}")];
    let near = hyper_client_cache::NearCache::builder(
        RedisStore::cluster(seed.clone()).connect().await.unwrap(),
    )
    .start()
    .await
    .unwrap();
    assert!(near.stats().serving);

    cluster.nodes[0].kill();
    let mut promoted = false;
    for _ in 0..400 {
        if info(replica.port, "replication").contains("role:master")
            && cluster.nodes[1..].iter().all(|n| n.cluster_ok())
        {
            promoted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(promoted, "no failover");
    // The cluster, and the store through the near cache, work.
    let mut worked = false;
    for _ in 0..100 {
        let request = StoreRequest::Put {
            key: k("after"),
            blob: Bytes::from_static(b"v"),
            ttl: Some(Duration::from_secs(600)),
        };
        if near.clone().oneshot(request).await.is_ok() {
            worked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(worked, "the store does not work after the failover");
    let mut serving = false;
    for _ in 0..100 {
        if near.stats().serving {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        serving,
        "5 s after the failover the near cache does not serve: {:?}",
        near.stats()
    );
}
