//! Attack tests on the Redis tag index (issue #27, item 7; the attack failed on 3784801): tag
//! text in Redis key names whatever the mode; a purge after a key rotation.

use bytes::Bytes;
use hyper_client_cache::{CacheLayer, Inspector, KeyRing, RedisStore, SecretKey};

use crate::common::*;
use crate::fleet_support::*;

const ALICE: &str = "customer-alice@example.com";
const INVOICE: &str = "invoice-4711";

/// Tags by the first path segment: `/a/..` Alice's invoice, `/n/..` news, `/s/..` sale.
async fn tagging_origin() -> Origin {
    Origin::start(|s| {
        let tags = match s.uri.path().split('/').nth(1) {
            Some("a") => "customer-alice@example.com, invoice-4711",
            Some("n") => "news",
            Some("s") => "sale",
            _ => "",
        };
        http::Response::builder()
            .header("cache-control", "max-age=600")
            .header("cache-tag", tags)
            .body(http_body_util::Full::new(Bytes::from_static(
                b"tagged body",
            )))
            .unwrap()
    })
    .await
}

async fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::builder(url)
        .prefix(prefix)
        .connect()
        .await
        .unwrap()
}

/// The Redis keys of `tag`'s sets in the namespace `prefix`, under every key of the layer's
/// ring.
fn index_keys(inspector: &Inspector<RedisStore>, prefix: &str, tag: &str) -> Vec<String> {
    inspector
        .tag_index_names(tag)
        .into_iter()
        .map(|name| format!("{prefix}#tag:{name}"))
        .collect()
}

/// Every key of the server, with what it holds (a string's value, a sorted set's members).
async fn dump(url: &str) -> Vec<(String, Vec<u8>)> {
    let mut conn = raw(url).await;
    let names: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for name in names {
        let kind: String = redis::cmd("TYPE")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .unwrap();
        let held: Vec<u8> = match kind.as_str() {
            "string" => redis::cmd("GET")
                .arg(&name)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => {
                let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&name)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                members.concat()
            }
            other => panic!("unexpected {other} under {name}"),
        };
        out.push((name, held));
    }
    out
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// How a test layer protects its entries.
type Mode = fn(CacheLayer<RedisStore>) -> CacheLayer<RedisStore>;

/// Item 7: with the tags `customer-alice@example.com` and `invoice-4711`, no Redis key name
/// and no index member carries the tag's text, in any mode; with `encrypt`, no value either. A
/// purge by tag still takes exactly the tagged entries, from the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_text_never_reaches_redis_in_clear() {
    let redis = RedisServer::start().await;
    let origin = tagging_origin().await;
    let modes: [(&str, Mode); 3] = [
        ("unsigned:", |l| l),
        ("signed:", |l| l.secret_key(test_key())),
        ("encrypted:", |l| l.encrypt(test_key())),
    ];
    for (prefix, mode) in modes {
        let layer = mode(CacheLayer::new(store(&redis.url(), prefix).await));
        let inspector = layer.inspector();
        let mut client = cached_client(layer);
        for path in ["/a/1", "/a/2", "/n/1"] {
            for _ in 0..2 {
                get(&mut client, &origin.url(path)).await.unwrap();
            }
        }
        assert_eq!(origin.requests() % 3, 0, "{prefix}: every second GET a hit");
        for (name, held) in dump(&redis.url()).await {
            for needle in ["alice", "4711", ALICE] {
                assert!(
                    !name.contains(needle),
                    "{prefix}: tag text in a key name: {name}"
                );
                let indexed = name.contains("#tag:");
                let encrypted = name.starts_with("encrypted:");
                if indexed || encrypted {
                    assert!(
                        !holds(&held, needle),
                        "{prefix}: tag text `{needle}` inside {name}: {}",
                        String::from_utf8_lossy(&held)
                    );
                }
            }
        }
        for set in index_keys(&inspector, prefix, ALICE) {
            assert!(exists(&mut raw(&redis.url()).await, &set).await, "{set}");
        }
        assert_eq!(inspector.purge_tag(ALICE).await.unwrap(), 2, "{prefix}");
        assert!(!inspector.contains(&origin.url("/a/1")).await.unwrap());
        assert!(!inspector.contains(&origin.url("/a/2")).await.unwrap());
        assert!(inspector.contains(&origin.url("/n/1")).await.unwrap());
        assert_eq!(inspector.purge_tag(INVOICE).await.unwrap(), 0, "{prefix}");
        assert_eq!(inspector.purge_tag("news").await.unwrap(), 1, "{prefix}");
    }
}

/// Item 7, key rotation: entries written under the previous key of the ring were indexed under
/// that key's name of the tag; a purge under the new ring takes them too, from the index (no
/// set of the tag is left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_after_a_rotation_takes_the_entries_indexed_under_every_key() {
    let redis = RedisServer::start().await;
    let origin = tagging_origin().await;
    let old = || SecretKey::new("the key we used until today").unwrap();
    let new = || SecretKey::new("the key we sign with from now").unwrap();
    for encrypted in [false, true] {
        let prefix = if encrypted { "e:" } else { "s:" };
        let with = |layer: CacheLayer<RedisStore>, ring: KeyRing| {
            if encrypted {
                layer.encrypt(ring)
            } else {
                layer.secret_key(ring)
            }
        };
        let before = with(
            CacheLayer::new(store(&redis.url(), prefix).await),
            KeyRing::new(old()),
        );
        get(&mut cached_client(before), &origin.url("/a/old"))
            .await
            .unwrap();
        let after = with(
            CacheLayer::new(store(&redis.url(), prefix).await),
            KeyRing::new(new()).with_previous(old()),
        );
        let inspector = after.inspector();
        get(&mut cached_client(after), &origin.url("/a/new"))
            .await
            .unwrap();
        assert!(inspector.contains(&origin.url("/a/old")).await.unwrap());
        assert_eq!(inspector.purge_tag(ALICE).await.unwrap(), 2, "{prefix}");
        assert!(!inspector.contains(&origin.url("/a/old")).await.unwrap());
        assert!(!inspector.contains(&origin.url("/a/new")).await.unwrap());
        let mut conn = raw(&redis.url()).await;
        for set in index_keys(&inspector, prefix, ALICE) {
            assert!(!exists(&mut conn, &set).await, "{set} was left: walked?");
        }
    }
}
