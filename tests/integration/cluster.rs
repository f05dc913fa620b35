//! `RedisStore` on a local three-primary Redis Cluster: the store contract, listing and clearing
//! across primaries, the tag index across slots, and the cache on top.

use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::store::conformance::{check_store, honours_bound};
use hyper_client_cache::{CacheLayer, CacheStatus, RedisStore, StoreRequest, StoreResponse};
use tower::ServiceExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_conformance() {
    let cluster = RedisCluster::start().await;
    // One node is enough to find the others.
    let store = RedisStore::cluster([cluster.urls()[1].clone()])
        .connect()
        .await
        .unwrap();
    assert!(store.is_cluster());
    honours_bound(&store).await;
    check_store(store, tokio::time::sleep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_every_primary_are_listed_paged_and_cleared() {
    let cluster = RedisCluster::start().await;
    let store = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let keys: Vec<_> = (0..300)
        .map(|i| key_for(&format!("http://c.test/{i}")))
        .collect();
    for k in &keys {
        put_raw(&store, k.clone(), Bytes::from_static(b"v")).await;
    }
    // Every primary holds some of them (slots are spread over the three).
    for node in &cluster.nodes {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &node.port.to_string(), "dbsize"])
            .output()
            .unwrap();
        let n: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(n > 20, "node {} holds {n} keys", node.port);
    }
    let mut listed = match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(k) => k,
        other => panic!("{other:?}"),
    };
    listed.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(listed, expected);
    // Pages walk every primary in turn, and their cursors name the node.
    let mut paged = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 1000, "the walk must end");
        match store
            .clone()
            .oneshot(StoreRequest::KeysPage { cursor })
            .await
            .unwrap()
        {
            StoreResponse::KeysPage { keys, next } => {
                paged.extend(keys);
                match next {
                    Some(n) => {
                        assert!(n.contains("@127.0.0.1:"), "cursor {n}");
                        cursor = Some(n);
                    }
                    None => break,
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(pages >= 3, "one page per primary at least");
    paged.sort();
    paged.dedup();
    assert_eq!(paged, expected);
    // A cursor from somewhere else is an error, not a restart from the top.
    assert!(store
        .clone()
        .oneshot(StoreRequest::KeysPage {
            cursor: Some("garbage".into())
        })
        .await
        .is_err());
    store.clone().oneshot(StoreRequest::Clear).await.unwrap();
    match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(k) => assert!(k.is_empty(), "{k:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_runs_on_a_cluster_and_purges_a_tag_across_slots() {
    let cluster = RedisCluster::start().await;
    let store = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let origin = Origin::start(|seen| {
        let tag = if seen.uri.path().ends_with("/0") {
            "first"
        } else {
            "all"
        };
        http::Response::builder()
            .header("cache-control", "max-age=600")
            .header("cache-tag", format!("{tag}, everything"))
            .body(http_body_util::Full::new(Bytes::from_static(b"body")))
            .unwrap()
    })
    .await;
    let layer = CacheLayer::new(store.clone())
        .secret_key(test_key())
        .store_timeout(Duration::from_secs(2));
    let metrics = layer.metrics();
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    let urls: Vec<String> = (0..40).map(|i| origin.url(&format!("/p/{i}"))).collect();
    for url in &urls {
        let got = get(&mut client, url).await.unwrap();
        assert_eq!(got.cache, Some(CacheStatus::Miss));
    }
    // The writes end when the bodies do; wait (bounded) until all are stored.
    for _ in 0..500 {
        if metrics.stored() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.stored(), 40);
    for url in &urls {
        let got = get(&mut client, url).await.unwrap();
        assert_eq!(got.cache, Some(CacheStatus::Hit), "{url}");
    }
    assert_eq!(inspector.purge_tag("first").await.unwrap(), 1);
    assert_eq!(inspector.count().await.unwrap(), 39);
    assert_eq!(inspector.purge_tag("everything").await.unwrap(), 39);
    assert_eq!(inspector.count().await.unwrap(), 0);
    assert_eq!(origin.requests(), 40);
    let got = get(&mut client, &urls[5]).await.unwrap();
    assert_eq!(
        got.cache,
        Some(CacheStatus::Miss),
        "purged entries are gone"
    );
}

/// `rediss://` on a cluster whose clients and bus speak only TLS, with a private CA: the store
/// contract holds, and a near cache over it stays coherent.
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_with_a_private_ca() {
    let cluster = TlsRedisCluster::start().await;
    let connect = || {
        RedisStore::cluster([cluster.urls()[0].clone()])
            .tls_root_certificate(cluster.ca_pem.clone())
            .connect()
    };
    let store = connect().await.unwrap();
    // Without the CA, the server's certificate is refused.
    assert!(RedisStore::cluster([cluster.urls()[0].clone()])
        .connect()
        .await
        .is_err());
    let near = hyper_client_cache::NearCache::builder(connect().await.unwrap())
        .start()
        .await
        .unwrap();
    let key = hyper_client_cache::CacheKey::from_stored("hcc1:tls");
    let put = |s: RedisStore, v: &'static [u8]| async move {
        s.oneshot(StoreRequest::Put {
            key: hyper_client_cache::CacheKey::from_stored("hcc1:tls"),
            blob: Bytes::from_static(v),
            ttl: Some(Duration::from_secs(60)),
        })
        .await
        .unwrap()
    };
    put(store.clone(), b"one").await;
    let get = || near.clone().oneshot(StoreRequest::get(key.clone()));
    assert!(matches!(get().await.unwrap(), StoreResponse::Blob(Some(b)) if b == "one"));
    put(store.clone(), b"two").await;
    let mut seen_two = false;
    for _ in 0..200 {
        if matches!(get().await.unwrap(), StoreResponse::Blob(Some(b)) if b == "two") {
            seen_two = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_two, "{:?}", near.stats());
    store
        .clone()
        .oneshot(StoreRequest::Delete { key })
        .await
        .unwrap();
    check_store(store, tokio::time::sleep).await;
}

/// Slots move from one primary to another (`redis-cli --cluster reshard`) under a connected
/// store and a near cache: the driver follows the redirections, every entry is still read and
/// written, and the near cache still hears of overwrites of the keys that moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_a_connected_store_and_near_cache() {
    let cluster = RedisCluster::start().await;
    let store = RedisStore::cluster(cluster.urls()).connect().await.unwrap();
    let near = hyper_client_cache::NearCache::builder(
        RedisStore::cluster(cluster.urls()).connect().await.unwrap(),
    )
    .start()
    .await
    .unwrap();
    let keys: Vec<_> = (0..200)
        .map(|i| key_for(&format!("http://reshard.test/{i}")))
        .collect();
    let value = |v: &str, k: &hyper_client_cache::CacheKey| Bytes::from(format!("{v} {k}"));
    let write = |v: &'static str| {
        let (store, keys) = (store.clone(), keys.clone());
        async move {
            for k in &keys {
                store
                    .clone()
                    .oneshot(StoreRequest::Put {
                        key: k.clone(),
                        blob: value(v, k),
                        ttl: Some(Duration::from_secs(600)),
                    })
                    .await
                    .unwrap();
            }
        }
    };
    write("before").await;
    for k in &keys {
        let got = near
            .clone()
            .oneshot(StoreRequest::get(k.clone()))
            .await
            .unwrap();
        assert!(matches!(got, StoreResponse::Blob(Some(b)) if b == value("before", k)));
    }
    let id = |port: u16| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "cluster", "myid"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (from, to) = (id(cluster.nodes[0].port), id(cluster.nodes[1].port));
    let out = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", cluster.nodes[0].port),
        ])
        .args(["--cluster-from", &from, "--cluster-to", &to])
        .args(["--cluster-slots", "3000", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read through the same connections: MOVED is followed.
    for k in &keys {
        let got = store
            .clone()
            .oneshot(StoreRequest::get(k.clone()))
            .await
            .unwrap();
        assert!(
            matches!(got, StoreResponse::Blob(Some(b)) if b == value("before", k)),
            "{k}"
        );
    }
    write("after").await;
    let mut fresh = false;
    for _ in 0..300 {
        let mut all = true;
        for k in &keys {
            let got = near.clone().oneshot(StoreRequest::get(k.clone())).await;
            if !matches!(got, Ok(StoreResponse::Blob(Some(b))) if b == value("after", k)) {
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
        "the near cache kept old values of moved keys: {:?}",
        near.stats()
    );
    match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(listed) => assert_eq!(listed.len(), 200),
        other => panic!("{other:?}"),
    }
}
