//! Attack tests on the Redis tag index (issue #27, items 7 and 8; each attack failed on 3784801):
//! tag text in Redis key names whatever the mode; a purge after a key rotation; a wrong-typed
//! set planted by a store writer (caching stopped, purge and clear failed); a set planted as a
//! member of another (unlinked by the other's purge); a member scored past any expiry (writes
//! failed).

use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{
    CacheKey, CacheLayer, Inspector, KeyRing, RedisStore, SecretKey, StoreRequest, StoreResponse,
};

use crate::common::*;
use crate::fleet_support::*;

const ALICE: &str = "customer-alice@example.com";
const INVOICE: &str = "invoice-4711";

fn k(name: &str) -> CacheKey {
    CacheKey::from_stored(format!("hcc1:tags-{name}"))
}

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

/// Item 8: `SET hcc:#tag:news x` by a store writer. A tagged write repairs the set (the entry
/// is stored and indexed), where it failed with WRONGTYPE: no `news` response was cached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_typed_set_does_not_stop_tagged_writes() {
    let redis = RedisServer::start().await;
    let s = RedisStore::connect(&redis.url()).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    let _: () = redis::cmd("SET")
        .arg("hcc:#tag:news")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let answer = put_tagged(&s, k("w"), "news")
        .await
        .expect("a tagged write over a wrong-typed set");
    assert!(matches!(answer, StoreResponse::Done), "{answer:?}");
    assert_eq!(read(&s, &k("w")).await.as_deref(), Some("tagged entry"));
    let kind: String = redis::cmd("TYPE")
        .arg("hcc:#tag:news")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "zset");
    let purged = call(&s, purge("news")).await;
    assert!(
        matches!(purged, StoreResponse::Purged { removed: 1, .. }),
        "{purged:?}"
    );

    // Through the layer: the planted string under the tag's set, and the response is cached.
    let origin = tagging_origin().await;
    let layer = CacheLayer::new(s).secret_key(test_key());
    for set in index_keys(&layer.inspector(), "hcc:", "news") {
        let _: () = redis::cmd("SET")
            .arg(&set)
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let mut client = cached_client(layer);
    get(&mut client, &origin.url("/n/1")).await.unwrap();
    get(&mut client, &origin.url("/n/1")).await.unwrap();
    assert_eq!(
        origin.requests(),
        1,
        "a news-tagged response was not cached"
    );
}

/// A signed cache's store and inspector over a Redis of its own, with the responses for `paths`
/// stored (tagged by [`tagging_origin`]), and a raw connection to plant keys with.
struct Tagged {
    redis: RedisServer,
    s: RedisStore,
    conn: redis::aio::MultiplexedConnection,
    origin: Origin,
    inspector: Inspector<RedisStore>,
}

async fn tagged(paths: &[&str]) -> Tagged {
    let redis = RedisServer::start().await;
    let s = RedisStore::connect(&redis.url()).await.unwrap();
    let conn = raw(&redis.url()).await;
    let origin = tagging_origin().await;
    let layer = CacheLayer::new(s.clone()).secret_key(test_key());
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    for path in paths {
        get(&mut client, &origin.url(path)).await.unwrap();
    }
    Tagged {
        redis,
        s,
        conn,
        origin,
        inspector,
    }
}

/// Item 8: a purge that meets a wrong-typed set answers `complete: false` (the inspector walks
/// the signed tags and still removes the tagged entries), where it failed with WRONGTYPE; and
/// `Clear` empties the namespace, where it failed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_clear_fall_back_past_a_wrong_typed_set() {
    // `_redis`: the server lives to the end of the test.
    let Tagged {
        redis: _redis,
        s,
        mut conn,
        origin,
        inspector,
    } = tagged(&["/n/1", "/n/2", "/s/1"]).await;
    let plant = |mut conn: redis::aio::MultiplexedConnection, sets: Vec<String>| async move {
        for set in sets {
            let _: () = redis::cmd("SET")
                .arg(&set)
                .arg("x")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    plant(conn.clone(), index_keys(&inspector, "hcc:", "news")).await;
    for set in index_keys(&inspector, "hcc:", "news") {
        let answer = call(&s, purge(set.strip_prefix("hcc:#tag:").unwrap())).await;
        assert!(
            matches!(
                answer,
                StoreResponse::Purged {
                    complete: false,
                    ..
                }
            ),
            "{answer:?}"
        );
    }
    assert_eq!(inspector.purge_tag("news").await.unwrap(), 2);
    assert!(!inspector.contains(&origin.url("/n/1")).await.unwrap());
    assert!(inspector.contains(&origin.url("/s/1")).await.unwrap());

    plant(conn.clone(), index_keys(&inspector, "hcc:", "sale")).await;
    inspector
        .clear()
        .await
        .expect("clear past a wrong-typed set");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("hcc:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "left after clear: {left:?}");
}

/// Item 8: `sale`'s set planted as a member of `news`'s set (and a key outside the namespace
/// beside it). The purge of `news` unlinked `sale`'s set, so the purge of `sale` found nothing
/// and said it was complete, while the `sale` entries were still served. Members that are not
/// entries of the namespace are never unlinked, and make the purge say it is not complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_planted_in_another_set_is_never_unlinked() {
    // `_redis`: the server lives to the end of the test.
    let Tagged {
        redis: _redis,
        s,
        mut conn,
        origin,
        inspector,
    } = tagged(&["/n/1", "/s/1", "/s/2"]).await;
    let _: () = redis::cmd("SET")
        .arg("other:app")
        .arg("kept")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sale = index_keys(&inspector, "hcc:", "sale");
    for news in index_keys(&inspector, "hcc:", "news") {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&news);
        for member in sale.iter().map(String::as_str).chain(["other:app"]) {
            zadd.arg(4_000_000_000_000u64).arg(member);
        }
        let _: () = zadd.query_async(&mut conn).await.unwrap();
        let answer = call(&s, purge(news.strip_prefix("hcc:#tag:").unwrap())).await;
        assert!(
            matches!(
                answer,
                StoreResponse::Purged {
                    complete: false,
                    ..
                }
            ),
            "a purge that met foreign members said it was complete: {answer:?}"
        );
    }
    for set in &sale {
        assert!(
            exists(&mut conn, set).await,
            "{set} was unlinked by news's purge"
        );
    }
    assert!(exists(&mut conn, "other:app").await);
    assert_eq!(inspector.purge_tag("sale").await.unwrap(), 2);
    assert!(!inspector.contains(&origin.url("/s/1")).await.unwrap());
    assert!(!inspector.contains(&origin.url("/s/2")).await.unwrap());
}

/// Item 8: a member scored `+inf` (or 1e300) in a tag's set: every write to the tag failed
/// (the set's expiry was set from that score). Such members are dropped on write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_scored_past_any_expiry_does_not_stop_tagged_writes() {
    let redis = RedisServer::start().await;
    let s = RedisStore::connect(&redis.url()).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    for score in ["+inf", "1e300"] {
        let _: () = redis::cmd("ZADD")
            .arg("hcc:#tag:news")
            .arg(score)
            .arg("hcc:planted")
            .query_async(&mut conn)
            .await
            .unwrap();
        let answer = put_tagged(&s, k(score), "news")
            .await
            .expect("a tagged write beside a member scored past any expiry");
        assert!(matches!(answer, StoreResponse::Done), "{answer:?}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg("hcc:#tag:news")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl < 700_000, "the set's PTTL is {ttl}");
    }
}

/// One `PutTagged` of a fixed blob with one tag, for 600 s; the store's error as it is.
async fn put_tagged(
    store: &RedisStore,
    key: CacheKey,
    tag: &str,
) -> Result<StoreResponse, redis::RedisError> {
    use tower::ServiceExt;
    store
        .clone()
        .oneshot(StoreRequest::PutTagged {
            key,
            blob: Bytes::from_static(b"tagged entry"),
            ttl: Some(Duration::from_secs(600)),
            tags: vec![tag.to_owned()],
        })
        .await
}
