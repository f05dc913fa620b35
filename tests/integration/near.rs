//! `NearCache` against real Redis servers: the store contract through it (one server and a
//! cluster), hits from memory, coherence with writers elsewhere (overwrite, delete, purge by tag,
//! FLUSHALL), a stalled server (the lease), a killed tracking connection and a restarted
//! server (the tier is emptied and never serves what was overwritten meanwhile).

use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::store::conformance::{check_store, honours_bound};
use hyper_client_cache::{CacheKey, NearCache, RedisStore, StoreRequest, StoreResponse};
use tower::ServiceExt;

use crate::common::*;
use crate::fleet_support::*;

fn k(name: &str) -> CacheKey {
    CacheKey::from_stored(format!("hcc1:near-{name}"))
}

async fn near_on(redis: &RedisServer) -> (NearCache, RedisStore) {
    let near = NearCache::builder(RedisStore::connect(&redis.url()).await.unwrap())
        .start()
        .await
        .unwrap();
    // The other instance of the fleet: its own connection.
    let other = RedisStore::connect(&redis.url()).await.unwrap();
    (near, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_store_conformance() {
    let redis = RedisServer::start().await;
    let (near, _) = near_on(&redis).await;
    honours_bound(&near).await;
    check_store(near, tokio::time::sleep).await;
}

#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_store_conformance_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let redis = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let near = NearCache::builder(redis).start().await.unwrap();
    check_store(near.clone(), tokio::time::sleep).await;
    // Coherent across the primaries: another client's overwrite of keys in every slot range.
    let other = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let keys: Vec<CacheKey> = (0..30).map(|i| k(&format!("c{i}"))).collect();
    for key in &keys {
        put(&other, key, "old").await;
        assert_eq!(read(&near, key).await.as_deref(), Some("old"));
    }
    for key in &keys {
        put(&other, key, "new").await;
    }
    until("every key is invalidated", || {
        near.stats().invalidations >= 30
    })
    .await;
    for key in &keys {
        assert_eq!(read(&near, key).await.as_deref(), Some("new"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_served_from_memory() {
    let redis = RedisServer::start().await;
    let (near, other) = near_on(&redis).await;
    put(&other, &k("hot"), "v1").await;
    // Redis tells every tracking client of the write (this one too); once it has arrived, the
    // next fill stays.
    until("the write's invalidation arrives", || {
        near.stats().invalidations >= 1
    })
    .await;
    assert_eq!(read(&near, &k("hot")).await.as_deref(), Some("v1"));
    let before = near.stats();
    for _ in 0..100 {
        assert_eq!(read(&near, &k("hot")).await.as_deref(), Some("v1"));
    }
    let after = near.stats();
    assert_eq!(after.hits - before.hits, 100, "{after:?}");
    assert_eq!(after.misses, before.misses);
    assert_eq!(near.len_and_size().0, 1);
    // An absent key is not kept (the next lookup asks Redis again).
    assert_eq!(read(&near, &k("absent")).await, None);
    assert_eq!(read(&near, &k("absent")).await, None);
    assert_eq!(near.stats().misses, after.misses + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_elsewhere_invalidate_the_near_copy() {
    let redis = RedisServer::start().await;
    let (near, other) = near_on(&redis).await;
    let inv = || near.stats().invalidations;

    // Overwrite.
    put(&other, &k("a"), "v1").await;
    assert_eq!(read(&near, &k("a")).await.as_deref(), Some("v1"));
    let seen = inv();
    put(&other, &k("a"), "v2").await;
    until("the overwrite is invalidated", || inv() > seen).await;
    assert_eq!(read(&near, &k("a")).await.as_deref(), Some("v2"));

    // Delete.
    let seen = inv();
    other
        .clone()
        .oneshot(StoreRequest::Delete { key: k("a") })
        .await
        .unwrap();
    until("the delete is invalidated", || inv() > seen).await;
    assert_eq!(read(&near, &k("a")).await, None);

    // Purge by tag, from the other instance.
    let tagged = StoreRequest::PutTagged {
        key: k("t"),
        blob: Bytes::from_static(b"tagged"),
        ttl: Some(Duration::from_secs(600)),
        tags: vec!["news".into()],
    };
    other.clone().oneshot(tagged).await.unwrap();
    assert_eq!(read(&near, &k("t")).await.as_deref(), Some("tagged"));
    let seen = inv();
    match other
        .clone()
        .oneshot(StoreRequest::PurgeTag { tag: "news".into() })
        .await
        .unwrap()
    {
        StoreResponse::Purged { removed: 1, .. } => {}
        got => panic!("{got:?}"),
    }
    until("the purge is invalidated", || inv() > seen).await;
    assert_eq!(read(&near, &k("t")).await, None);

    // FLUSHALL: Redis says `[nil]`, the tier is emptied.
    put(&other, &k("f"), "v").await;
    assert_eq!(read(&near, &k("f")).await.as_deref(), Some("v"));
    let flushes = near.stats().flushes;
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();
    until("the flush reaches the tier", || {
        near.stats().flushes > flushes
    })
    .await;
    assert_eq!(near.len_and_size().0, 0);
    assert_eq!(read(&near, &k("f")).await, None);

    // Local writes are seen at once (no wait for Redis's echo).
    put(&near, &k("local"), "l1").await;
    assert_eq!(read(&near, &k("local")).await.as_deref(), Some("l1"));
    put(&near, &k("local"), "l2").await;
    assert_eq!(read(&near, &k("local")).await.as_deref(), Some("l2"));
}

/// A server that stops answering (SIGSTOP) without closing the connection: the lease lapses, the
/// tier stops serving (no invalidation can arrive), and serves its entries again once heartbeats
/// are answered, without having been emptied (nothing was missed: the connection held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_stops_the_tier_serving_until_it_answers_again() {
    let redis = RedisServer::start().await;
    let (near, other) = near_on(&redis).await;
    put(&other, &k("s"), "v").await;
    assert_eq!(read(&near, &k("s")).await.as_deref(), Some("v"));
    until("serving", || near.stats().serving).await;
    let flushes = near.stats().flushes;
    redis.pause(true);
    until("the lease lapses", || !near.stats().serving).await;
    // A lookup now goes to the (stalled) server: it fails instead of serving from memory.
    let lookup = near.clone().oneshot(StoreRequest::get(k("s")));
    redis.pause(false);
    let _ = lookup.await;
    until("serving again", || near.stats().serving).await;
    let stats = near.stats();
    assert!(stats.bypasses >= 1, "{stats:?}");
    assert_eq!(stats.flushes, flushes, "a lapse is not a loss: {stats:?}");
    assert_eq!(read(&near, &k("s")).await.as_deref(), Some("v"));
}

/// The tracking connection is killed while Redis stays up, and the key is overwritten right
/// after: the tier is emptied and serves the new value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_empties_the_tier() {
    let redis = RedisServer::start().await;
    let (near, other) = near_on(&redis).await;
    put(&other, &k("x"), "old").await;
    assert_eq!(read(&near, &k("x")).await.as_deref(), Some("old"));
    let flushes = near.stats().flushes;
    kill_tracking_client(redis.port).await;
    put(&other, &k("x"), "new").await;
    until("emptied and serving again", || {
        let s = near.stats();
        s.flushes >= flushes + 2 && s.serving
    })
    .await;
    assert_eq!(read(&near, &k("x")).await.as_deref(), Some("new"));
}

/// Redis restarts (empty: no persistence) and the key is written again while the tier's
/// connection is down: the tier never serves the old value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_never_serves_what_was_overwritten_meanwhile() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let (near, other) = near_on(&redis).await;
    put(&other, &k("r"), "before").await;
    assert_eq!(read(&near, &k("r")).await.as_deref(), Some("before"));
    redis.kill();
    until("the tier stops serving", || !near.stats().serving).await;
    assert_eq!(near.len_and_size().0, 0, "emptied on the disconnect");
    let _redis = RedisServer::start_on(port).await;
    // The writer's connection manager reconnects on its own.
    let mut written = false;
    for _ in 0..200 {
        let request = StoreRequest::Put {
            key: k("r"),
            blob: Bytes::from_static(b"after"),
            ttl: Some(Duration::from_secs(600)),
        };
        if other.clone().oneshot(request).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(written);
    for _ in 0..200 {
        if let Ok(StoreResponse::Blob(b)) = near.clone().oneshot(StoreRequest::get(k("r"))).await {
            assert_ne!(
                b.as_deref(),
                Some(&b"before"[..]),
                "the old value was served"
            );
        }
        if near.stats().serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until("serving again", || near.stats().serving).await;
    assert_eq!(read(&near, &k("r")).await.as_deref(), Some("after"));
}

/// On a cluster, the tracking connection to each primary is killed in turn (the driver
/// reconnects it, without tracking) and the key on that primary is overwritten: the near cache
/// notices, empties itself, re-enables tracking and serves the new value.
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_to_one_primary_empties_the_tier() {
    let cluster = RedisCluster::start().await;
    let near = NearCache::builder(RedisStore::cluster(cluster.urls()).connect().await.unwrap())
        .start()
        .await
        .unwrap();
    let other = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let keys: Vec<CacheKey> = (0..30).map(|i| k(&format!("kill{i}"))).collect();
    for node in &cluster.nodes {
        for key in &keys {
            put(&other, key, "old").await;
        }
        until("the writes are invalidated", || {
            near.stats().invalidations >= 30
        })
        .await;
        for key in &keys {
            assert_eq!(read(&near, key).await.as_deref(), Some("old"));
        }
        kill_tracking_client(node.port).await;
        for key in &keys {
            put(&other, key, "new").await;
        }
        // Bounded: the tier must stop serving "old" for every key.
        let mut fresh = false;
        for _ in 0..400 {
            let mut all = true;
            for key in &keys {
                if read(&near, key).await.as_deref() != Some("new") {
                    all = false;
                }
            }
            if all {
                fresh = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            fresh,
            "the tier kept serving old values after node {} lost tracking: {:?}",
            node.port,
            near.stats()
        );
    }
}

/// A primary joins the cluster (`redis-cli --cluster add-node`, no slots yet) and slots move to
/// it while a near cache serves: the near cache notices the new primary, tracks it too, and
/// hears of overwrites of the keys that moved there.
#[cfg(feature = "redis-cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_joins_the_cluster_is_tracked_before_keys_move_to_it() {
    let mut cluster = RedisCluster::start().await;
    let near = NearCache::builder(RedisStore::cluster(cluster.urls()).connect().await.unwrap())
        .start()
        .await
        .unwrap();
    let other = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let keys: Vec<CacheKey> = (0..200).map(|i| k(&format!("join{i}"))).collect();
    let fresh_everywhere = |v: &'static str| {
        let (near, keys) = (near.clone(), keys.clone());
        async move {
            for _ in 0..400 {
                let mut all = true;
                for key in &keys {
                    if read(&near, key).await.as_deref() != Some(v) {
                        all = false;
                    }
                }
                if all {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
    };
    for key in &keys {
        put(&other, key, "one").await;
    }
    assert!(fresh_everywhere("one").await);

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
    let flushes = near.stats().flushes;
    let id = |port: u16| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "myid"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Wait until every node knows the new one (as redis-cli's reshard checks first).
    for _ in 0..400 {
        if cluster.nodes.iter().all(|n| n.cluster_ok()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut moved = false;
    for _ in 0..40 {
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &seed])
            .args([
                "--cluster-from",
                &id(cluster.nodes[0].port),
                "--cluster-to",
                &id(port),
            ])
            .args(["--cluster-slots", "4000", "--cluster-yes"])
            .output()
            .unwrap();
        if out.status.success() {
            moved = true;
            break;
        }
        // "Nodes don't agree about configuration" until the gossip settles.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(moved, "reshard to the new primary failed");
    assert!(
        near.stats().flushes > flushes,
        "the new primary was noticed: {:?}",
        near.stats()
    );
    for key in &keys {
        put(&other, key, "two").await;
    }
    assert!(
        fresh_everywhere("two").await,
        "old values of keys moved to the new primary were still served: {:?}",
        near.stats()
    );
}

/// The tier holds at most `max_bytes`: filling it with more keeps it within the bound, and the
/// lookups it dropped go to Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_is_bounded_in_bytes() {
    let redis = RedisServer::start().await;
    let near = NearCache::builder(RedisStore::connect(&redis.url()).await.unwrap())
        .max_bytes(64 << 10)
        .start()
        .await
        .unwrap();
    let other = RedisStore::connect(&redis.url()).await.unwrap();
    let value = "x".repeat(4096);
    for i in 0..100 {
        put(&other, &k(&format!("big{i}")), &value).await;
    }
    until("the writes' invalidations arrive", || {
        near.stats().invalidations >= 100
    })
    .await;
    for i in 0..100 {
        assert_eq!(
            read(&near, &k(&format!("big{i}"))).await.as_deref(),
            Some(value.as_str())
        );
    }
    let (entries, bytes) = near.len_and_size();
    assert!(bytes <= 64 << 10, "{entries} entries, {bytes} bytes");
    assert!(entries < 100 && entries > 0, "{entries}");
    for i in 0..100 {
        assert_eq!(
            read(&near, &k(&format!("big{i}"))).await.as_deref(),
            Some(value.as_str())
        );
    }
    let stats = near.stats();
    assert!(
        stats.misses > 100,
        "dropped keys are asked again: {stats:?}"
    );
}

/// With the `metrics` feature: near hits, misses, invalidations and flushes reach the recorder
/// (everything, the Redis driver's tasks included, runs on one current-thread runtime here, so
/// a local recorder sees it all).
#[cfg(feature = "metrics")]
#[test]
fn near_cache_metrics_reach_the_recorder() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let redis = RedisServer::start().await;
            let (near, other) = near_on(&redis).await;
            put(&other, &k("m"), "v1").await;
            until("invalidated", || near.stats().invalidations >= 1).await;
            assert_eq!(read(&near, &k("m")).await.as_deref(), Some("v1")); // miss, filled
            assert_eq!(read(&near, &k("m")).await.as_deref(), Some("v1")); // hit
            near.flush();
        })
    });
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if let DebugValue::Counter(n) = value {
            seen.insert(format!("{}{{{}}}", key.name(), labels.join(",")), n);
        }
    }
    assert_eq!(
        seen.get("http_cache_near_requests_total{result=hit}"),
        Some(&1),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("http_cache_near_requests_total{result=miss}"),
        Some(&1),
        "{seen:?}"
    );
    assert!(
        seen.get("http_cache_near_invalidations_total{}")
            .is_some_and(|n| *n >= 1),
        "{seen:?}"
    );
    assert!(
        seen.get("http_cache_near_flushes_total{reason=local}")
            .is_some_and(|n| *n >= 1),
        "{seen:?}"
    );
    assert!(
        seen.get("http_cache_near_flushes_total{reason=reconnected}")
            .is_some_and(|n| *n >= 1),
        "{seen:?}"
    );
}

/// Compression at rest: the tier holds the compressed blobs and counts them against its bound,
/// so the same memory holds several times more compressible entries.
#[cfg(all(feature = "lz4", feature = "zstd", feature = "serde"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_holds_more_compressed_entries_in_the_same_bound() {
    use crate::compression::{cache, fetch, json};
    use hyper_client_cache::{CacheLayer, CacheStatus, Compression};

    const BOUND: u64 = 256 << 10;
    const ENTRIES: usize = 60;
    let mut held = Vec::new();
    for compression in [None, Some(Compression::default())] {
        let redis = RedisServer::start().await;
        let near = NearCache::builder(RedisStore::connect(&redis.url()).await.unwrap())
            .max_bytes(BOUND)
            .start()
            .await
            .unwrap();
        let mut layer = CacheLayer::new(near.clone()).secret_key(test_key());
        if let Some(c) = compression {
            layer = layer.compress(c);
        }
        // Entries of 32 KiB: about 8 fit as they came.
        let mut svc = cache(layer, json(32 << 10, 9), None);
        for i in 0..ENTRIES {
            fetch(&mut svc, &format!("/n{i}")).await;
        }
        // The writes' own invalidations, before the reads fill the tier.
        until("the writes' invalidations arrive", || {
            near.stats().invalidations >= ENTRIES as u64
        })
        .await;
        for i in 0..ENTRIES {
            let (status, _) = fetch(&mut svc, &format!("/n{i}")).await;
            assert_eq!(status, Some(CacheStatus::Hit));
        }
        let (entries, bytes) = near.len_and_size();
        assert!(bytes <= BOUND, "{entries} entries, {bytes} bytes");
        held.push(entries);
    }
    assert!(held[0] <= 8, "{held:?}");
    assert!(held[1] >= 3 * held[0], "{held:?}");
}

/// The near tier answers the very buffer it holds, so the cache remembers what it verified
/// (`envelope/verified.rs`); a value changed in Redis after hits from memory is verified again
/// once its invalidation has dropped the near copy: a forged one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_forged_in_redis_after_hits_from_memory_is_refused() {
    use hyper_client_cache::{BadSignature, CacheLayer, CacheStatus};

    let redis = RedisServer::start().await;
    let (near, other) = near_on(&redis).await;
    let origin = Origin::fixed("max-age=600", "genuine body").await;
    let url = origin.url("/near-memo");
    let layer = CacheLayer::new(near.clone()).secret_key(test_key());
    let key = layer.key_for(&http::Request::get(&url).body(()).unwrap());
    let mut client = cached_client(layer);
    get(&mut client, &url).await.unwrap();
    until("the write's invalidation arrives", || {
        near.stats().invalidations >= 1
    })
    .await;
    for _ in 0..3 {
        let got = get(&mut client, &url).await.unwrap();
        assert_eq!(
            (got.cache, &got.body[..]),
            (Some(CacheStatus::Hit), &b"genuine body"[..])
        );
    }
    assert!(near.stats().hits >= 2, "{:?}", near.stats());
    let genuine = get_raw(&other, key.clone()).await.unwrap();
    let mut forged = genuine.to_vec();
    let at = forged.len() - 40;
    forged[at] ^= 1;
    let invalidations = near.stats().invalidations;
    put_raw(&other, key.clone(), Bytes::from(forged)).await;
    until("the forgery's invalidation arrives", || {
        near.stats().invalidations > invalidations
    })
    .await;
    let err = get(&mut client, &url).await.err().expect("refused");
    assert!(err.downcast_ref::<BadSignature>().is_some(), "{err}");
}
