//! The shipped stores: every one passes the conformance suite; Disk and Redis through the layer,
//! across processes, and while failing.

use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::store::conformance::{check_store, honours_bound};
use hyper_client_cache::{
    CacheLayer, CacheStatus, DiskStore, MemoryStore, RedisStore, SecretKey, StoreRequest,
    StoreResponse,
};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_conformance() {
    let clock = clock();
    let store = MemoryStore::with_clock(64 << 20, clock.clone());
    check_store(store, |d| {
        clock.advance(d);
        async {}
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_store_conformance() {
    // Durable writes (the default), and writes without the `fsync` (`sync(false)`).
    for sync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let store = DiskStore::builder(dir.path())
            .clock(clock.clone())
            .sync(sync)
            .open()
            .unwrap();
        honours_bound(&store).await;
        let advance = clock.clone();
        check_store(store, move |d| {
            advance.advance(d);
            async {}
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conformance() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    honours_bound(&store).await;
    // Redis expires keys on its own clock: time has to really pass.
    check_store(store, tokio::time::sleep).await;
}

#[tokio::test]
async fn redis_namespaces_are_separate() {
    let redis = RedisServer::start().await;
    let a = RedisStore::builder(redis.url())
        .prefix("a:")
        .connect()
        .await
        .unwrap();
    let b = RedisStore::builder(redis.url())
        .prefix("a*:")
        .connect()
        .await
        .unwrap();
    put_raw(&a, key_for("http://x/"), Bytes::from_static(b"1")).await;
    put_raw(&b, key_for("http://y/"), Bytes::from_static(b"2")).await;
    use tower::ServiceExt;
    let list = |s: RedisStore| async move {
        match s.oneshot(StoreRequest::Keys).await.unwrap() {
            StoreResponse::Keys(k) => k,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(list(a.clone()).await, [key_for("http://x/")]);
    assert_eq!(list(b.clone()).await, [key_for("http://y/")]);
    a.clone().oneshot(StoreRequest::Clear).await.unwrap();
    assert!(
        get_raw(&b, key_for("http://y/")).await.is_some(),
        "clearing a: must not touch a*:"
    );
}

#[tokio::test]
async fn disk_store_serves_hits_through_the_layer_and_survives_a_restart() {
    let origin = Origin::fixed("max-age=600", "persisted").await;
    let dir = tempfile::tempdir().unwrap();
    let url = origin.url("/p");
    {
        let mut client = cached_client(
            CacheLayer::new(DiskStore::open(dir.path()).unwrap()).secret_key(test_key()),
        );
        get(&mut client, &url).await.unwrap();
        assert_eq!(
            get(&mut client, &url).await.unwrap().cache,
            Some(CacheStatus::Hit)
        );
    }
    // A new store over the same directory: a process restart.
    let mut client =
        cached_client(CacheLayer::new(DiskStore::open(dir.path()).unwrap()).secret_key(test_key()));
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Hit), &b"persisted"[..])
    );
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn a_truncated_or_garbled_disk_file_is_a_miss_and_is_replaced() {
    // What a crash of the machine may leave under an entry's name, with `sync(false)` (no
    // `fsync` before the rename): the same safe misses.
    for sync in [true, false] {
        torn_files_are_misses(sync).await;
    }
}

async fn torn_files_are_misses(sync: bool) {
    let origin = Origin::fixed("max-age=600", "genuine body").await;
    let dir = tempfile::tempdir().unwrap();
    let url = origin.url("/t");
    let store = DiskStore::builder(dir.path()).sync(sync).open().unwrap();
    let mut client = cached_client(CacheLayer::new(store).secret_key(test_key()));
    get(&mut client, &url).await.unwrap();
    let files = entry_files(dir.path());
    assert_eq!(files.len(), 1);
    let file = &files[0];
    let whole = std::fs::read(file).unwrap();

    type Damage<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
    let damage: [Damage<'_>; 4] = [
        &|b| b[..b.len() / 2].to_vec(), // torn write
        &|_| Vec::new(),                // renamed, but its data never reached the disk
        &|_| b"exploit!".to_vec(),      // garbage
        &|b| {
            let mut v = b.to_vec();
            let n = v.len();
            v[n - 3] ^= 0xff;
            v
        }, // bit rot in the blob
    ];
    for (i, damage) in damage.iter().enumerate() {
        std::fs::write(file, damage(&whole)).unwrap();
        let got = get(&mut client, &url)
            .await
            .unwrap_or_else(|e| panic!("case {i}, sync {sync}: {e}"));
        assert_eq!(got.cache, Some(CacheStatus::Miss), "case {i}, sync {sync}");
        assert_eq!(got.body, "genuine body");
        // Replaced by a whole entry: the next request is a hit.
        assert_eq!(
            get(&mut client, &url).await.unwrap().cache,
            Some(CacheStatus::Hit),
            "case {i}, sync {sync}"
        );
    }
}

#[tokio::test]
async fn disk_store_byte_bound_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = DiskStore::builder(dir.path())
        .max_bytes(10_000)
        .clock(clock.clone())
        .open()
        .unwrap();
    for i in 0..40 {
        clock.advance(Duration::from_secs(1));
        put_raw(
            &store,
            key_for(&format!("http://x/{i}")),
            Bytes::from(vec![7u8; 1000]),
        )
        .await;
        let on_disk: u64 = entry_files(dir.path())
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert!(
            on_disk <= 10_000 + 1200,
            "after {i}: {on_disk} bytes on disk"
        );
    }
    // The most recent entries survived, the oldest went first.
    assert!(get_raw(&store, key_for("http://x/39")).await.is_some());
    assert!(get_raw(&store, key_for("http://x/0")).await.is_none());
}

#[tokio::test]
async fn disk_store_reads_refresh_recency_on_the_stores_clock() {
    let dir = tempfile::tempdir().unwrap();
    // A clock far from the file system's: writes and reads must both use it.
    let clock = clock();
    let store = DiskStore::builder(dir.path())
        .max_bytes(10_000)
        .clock(clock.clone())
        .open()
        .unwrap();
    let k = |i: usize| key_for(&format!("http://r/{i}"));
    for i in 0..8 {
        clock.advance(Duration::from_secs(1));
        put_raw(&store, k(i), Bytes::from(vec![1u8; 1000])).await;
    }
    clock.advance(Duration::from_secs(1));
    assert!(
        get_raw(&store, k(0)).await.is_some(),
        "read: now the most recent"
    );
    for i in 8..12 {
        clock.advance(Duration::from_secs(1));
        put_raw(&store, k(i), Bytes::from(vec![1u8; 1000])).await;
    }
    assert!(get_raw(&store, k(0)).await.is_some(), "recently read, kept");
    assert!(
        get_raw(&store, k(1)).await.is_none(),
        "least recently used, evicted"
    );
    assert!(get_raw(&store, k(11)).await.is_some());
}

#[tokio::test]
async fn a_disk_entry_larger_than_the_bound_is_not_stored_and_evicts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = DiskStore::builder(dir.path())
        .max_bytes(10_000)
        .clock(clock.clone())
        .open()
        .unwrap();
    let k = |i: usize| key_for(&format!("http://big/{i}"));
    for i in 0..5 {
        clock.advance(Duration::from_secs(1));
        put_raw(&store, k(i), Bytes::from(vec![2u8; 1000])).await;
    }
    // An older version of the big one: replaced by nothing, since its new version is not kept.
    put_raw(&store, k(9), Bytes::from_static(b"old version")).await;
    put_raw(&store, k(9), Bytes::from(vec![3u8; 9500])).await;
    assert!(get_raw(&store, k(9)).await.is_none());
    for i in 0..5 {
        assert!(get_raw(&store, k(i)).await.is_some(), "entry {i} survived");
    }
}

/// A file under an entry's name that is larger than any entry the store writes (planted, or
/// sparse) is removed without being read into memory: reading a sparse terabyte would abort.
/// (Linux only: elsewhere the file system may not make the terabyte sparse.)
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_disk_file_larger_than_any_entry_is_removed_unread() {
    for bound in [Some(10_000), None] {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = DiskStore::builder(dir.path());
        if let Some(bound) = bound {
            builder = builder.max_bytes(bound);
        }
        let store = builder.open().unwrap();
        let k = key_for("http://huge/");
        put_raw(&store, k.clone(), Bytes::from_static(b"entry")).await;
        let path = entry_files(dir.path()).pop().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Sparse: takes no space, but claims a terabyte.
        file.set_len(1 << 40).unwrap();
        drop(file);
        let size = store.size_bytes();
        assert!(
            get_raw(&store, k.clone()).await.is_none(),
            "bound {bound:?}"
        );
        assert!(!path.exists(), "bound {bound:?}: removed");
        // The terabyte was never counted, so removing it does not lower the estimate.
        assert_eq!(store.size_bytes(), size, "bound {bound:?}");
        put_raw(&store, k.clone(), Bytes::from_static(b"again")).await;
        assert_eq!(get_raw(&store, k).await.as_deref(), Some(&b"again"[..]));
    }
}

/// With a bound, an entry file of exactly 90% of it is stored, one byte more is not.
#[tokio::test]
async fn the_disk_entry_limit_is_exactly_ninety_percent_of_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::builder(dir.path())
        .max_bytes(10_000)
        .open()
        .unwrap();
    let k = key_for("http://limit/");
    // magic, version, expiry, key length, key, blob length, CRC-32
    let overhead = 4 + 1 + 8 + 2 + k.as_str().len() + 8 + 4;
    put_raw(&store, k.clone(), Bytes::from(vec![1u8; 9000 - overhead])).await;
    assert_eq!(
        get_raw(&store, k.clone()).await.map(|b| b.len()),
        Some(9000 - overhead)
    );
    assert_eq!(store.size_bytes(), 9000);
    put_raw(&store, k.clone(), Bytes::from(vec![1u8; 9001 - overhead])).await;
    assert!(get_raw(&store, k).await.is_none());
    assert_eq!(store.size_bytes(), 0);
}

#[tokio::test]
async fn disk_store_size_follows_deletes() {
    use tower::ServiceExt;
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    put_raw(&store, key_for("http://s/a"), Bytes::from(vec![0u8; 1000])).await;
    put_raw(&store, key_for("http://s/b"), Bytes::from(vec![0u8; 1000])).await;
    assert!(store.size_bytes() > 2000);
    let delete = StoreRequest::Delete {
        key: key_for("http://s/a"),
    };
    store.clone().oneshot(delete).await.unwrap();
    let zero_ttl = StoreRequest::Put {
        key: key_for("http://s/b"),
        blob: Bytes::from_static(b"x"),
        ttl: Some(Duration::ZERO),
    };
    store.clone().oneshot(zero_ttl).await.unwrap();
    assert_eq!(store.size_bytes(), 0);
    assert!(entry_files(dir.path()).is_empty());
}

/// Several processes (here: several stores, each with its own state) evicting at once remove
/// the excess once between them, not once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evictions_over_one_directory_remove_the_excess_once() {
    let dir = tempfile::tempdir().unwrap();
    let filler = DiskStore::open(dir.path()).unwrap();
    for i in 0..12 {
        put_raw(
            &filler,
            key_for(&format!("http://e/{i}")),
            Bytes::from(vec![4u8; 1000]),
        )
        .await;
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = DiskStore::builder(dir.path())
                .max_bytes(10_000)
                .open()
                .unwrap();
            tokio::spawn(async move {
                put_raw(
                    &store,
                    key_for(&format!("http://w/{w}")),
                    Bytes::from(vec![5u8; 100]),
                )
                .await;
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let on_disk: u64 = entry_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(on_disk <= 10_000, "{on_disk} bytes left: over the bound");
    assert!(
        on_disk >= 7_000,
        "{on_disk} bytes left: evicted far more than the excess"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn disk_store_never_follows_a_link_or_blocks_on_a_fifo_under_an_entrys_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let k = key_for("http://special/");
    put_raw(&store, k.clone(), Bytes::from_static(b"entry")).await;
    let path = entry_files(dir.path()).pop().unwrap();
    let plant: [&dyn Fn(&std::path::Path); 2] = [
        &|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
        &|p| {
            let made = std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap();
            assert!(made.success());
        },
    ];
    for (i, plant) in plant.iter().enumerate() {
        let _ = std::fs::remove_file(&path);
        plant(&path);
        let read = tokio::time::timeout(Duration::from_secs(10), get_raw(&store, k.clone()))
            .await
            .unwrap_or_else(|_| panic!("case {i}: the read blocked"));
        assert!(read.is_none(), "case {i}");
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "case {i}: removed"
        );
        // And listing or cleaning up does not block on it either.
        plant(&path);
        tokio::time::timeout(Duration::from_secs(10), store.cleanup())
            .await
            .unwrap_or_else(|_| panic!("case {i}: cleanup blocked"))
            .unwrap();
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "case {i}: cleaned up"
        );
    }
}

#[tokio::test]
async fn disk_cleanup_removes_expired_entries_and_debris() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let store = DiskStore::builder(dir.path())
        .clock(clock.clone())
        .open()
        .unwrap();
    use tower::ServiceExt;
    for (i, ttl) in [(0, Some(Duration::from_secs(5))), (1, None)] {
        let put = StoreRequest::Put {
            key: key_for(&format!("http://c/{i}")),
            blob: Bytes::from_static(b"x"),
            ttl,
        };
        store.clone().oneshot(put).await.unwrap();
    }
    std::fs::write(dir.path().join("ab").join("not-an-entry.hcc"), b"junk").ok();
    std::fs::create_dir_all(dir.path().join("ab")).unwrap();
    std::fs::write(dir.path().join("ab").join("not-an-entry.hcc"), b"junk").unwrap();
    clock.advance(Duration::from_secs(6));
    assert_eq!(
        store.cleanup().await.unwrap(),
        2,
        "the expired entry and the junk file"
    );
    assert_eq!(entry_files(dir.path()).len(), 1);
}

#[tokio::test]
async fn redis_killed_mid_run_every_request_succeeds_and_caching_resumes_after_restart() {
    let origin = Origin::fixed("max-age=600", "always").await;
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let layer = CacheLayer::new(store)
        .secret_key(test_key())
        .store_timeout(Duration::from_millis(500));
    let metrics = layer.metrics();
    let mut client = cached_client(layer);
    let url = origin.url("/r");
    get(&mut client, &url).await.unwrap();
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );

    redis.kill();
    for i in 0..5 {
        let got = get(&mut client, &url)
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(got.body, "always");
        assert_eq!(
            got.cache,
            Some(CacheStatus::StoreUnavailable),
            "request {i}"
        );
    }
    // Failed lookups, then (once the circuit breaker opened) lookups not made at all.
    assert!(metrics.store_read_errors() + metrics.store_skipped() >= 5);

    // Same port, empty server: the connection manager reconnects by itself (the breaker lets a
    // probe through within a second).
    let _redis = RedisServer::start_on(port).await;
    let mut resumed = false;
    for _ in 0..50 {
        let got = get(&mut client, &url).await.unwrap();
        if got.cache == Some(CacheStatus::Hit) {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        resumed,
        "caching must resume after Redis is back, without a new client"
    );
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let origin = Origin::fixed("max-age=600", "m").await;
    let layer = CacheLayer::new(MemoryStore::default());
    let metrics = layer.metrics();
    let mut client = cached_client(layer);
    for _ in 0..3 {
        get(&mut client, &origin.url("/m")).await.unwrap();
    }
    assert_eq!(
        (metrics.misses(), metrics.hits(), metrics.stored()),
        (1, 2, 1)
    );
}

// ---- two processes sharing one store ----

const CHILD_ENV: &str = "HCC_TEST_CHILD";

/// Runs as a separate process (this test binary, re-executed by the tests below): one GET
/// through a cache on the store and with the key the parent chose.
#[tokio::test]
#[ignore = "a helper: runs only as a child process of the cross-process tests"]
async fn child_process_fetch() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (store, secret, url) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let secret = SecretKey::new(secret).unwrap();
    let got = if let Some(dir) = store.strip_prefix("disk:") {
        let mut c =
            cached_client(CacheLayer::new(DiskStore::open(dir).unwrap()).secret_key(secret));
        get(&mut c, url).await.unwrap()
    } else {
        let s = RedisStore::connect(store).await.unwrap();
        let mut c = cached_client(CacheLayer::new(s).secret_key(secret));
        get(&mut c, url).await.unwrap()
    };
    assert_eq!(got.cache, Some(CacheStatus::Miss));
}

/// This module's path in the test binary (`integration::` stripped), for the test filter.
fn test_module() -> &'static str {
    let path = module_path!();
    path.split_once("::").map_or(path, |(_, module)| module)
}

fn run_child(store: &str, secret: &str, url: &str) {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{}::child_process_fetch", test_module()),
            "--ignored",
            "--quiet",
        ])
        .env(CHILD_ENV, format!("{store}|{secret}|{url}"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the child process failed");
}

async fn cross_process<St: hyper_client_cache::Store>(spec: &str, make: impl Fn() -> St) {
    let origin = Origin::fixed("max-age=600", "from the other process").await;
    let shared = "the fleet's shared key, 32 bytes";
    let (u1, u2) = (origin.url("/shared"), origin.url("/foreign"));

    run_child(spec, shared, &u1);
    let mut same_key =
        cached_client(CacheLayer::new(make()).secret_key(SecretKey::new(shared).unwrap()));
    let got = get(&mut same_key, &u1).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Hit), &b"from the other process"[..])
    );
    assert_eq!(
        origin.requests(),
        1,
        "the parent was served the child's entry"
    );

    run_child(spec, "another key entirely, 32 bytes..", &u2);
    // Another key names its entries differently (keyed names): not found, a miss.
    let got = get(&mut same_key, &u2).await.unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Miss));
    assert_eq!(origin.requests(), 3, "the child's entry was not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_disk_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    cross_process(&format!("disk:{}", path.display()), || {
        DiskStore::open(&path).unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_redis() {
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    cross_process(&redis.url(), || store.clone()).await;
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn redis_over_tls_with_a_private_ca() {
    let server = TlsRedisServer::start();
    // Wait (bounded) for the server, through the real TLS client.
    let mut store = None;
    for _ in 0..100 {
        match RedisStore::builder(server.url())
            .tls_root_certificate(server.ca_pem.clone())
            .connect()
            .await
        {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let store = store.expect("TLS redis-server did not accept the connection");
    let origin = Origin::fixed("max-age=600", "over tls").await;
    let mut client = cached_client(CacheLayer::new(store).secret_key(test_key()));
    get(&mut client, &origin.url("/tls")).await.unwrap();
    let got = get(&mut client, &origin.url("/tls")).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Hit), &b"over tls"[..])
    );

    // Without the private CA, the server's certificate is not trusted: no connection.
    let untrusted = RedisStore::builder(server.url()).connect().await;
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown CA must be refused"
    );
}

/// The Redis tag index: a sorted set per tag, written with each tagged entry, expiring with its
/// last member, cleaned of expired members as it is written; never listed as an entry; a purge
/// deletes only keys of the namespace (and says it is not complete when it met another); too
/// many tags are refused.
#[tokio::test]
async fn redis_tag_index_is_kept_with_the_entries() {
    use tower::ServiceExt;
    let redis = RedisServer::start().await;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let tagged = |key: &str, ttl_ms: u64, tags: &[&str]| StoreRequest::PutTagged {
        key: hyper_client_cache::CacheKey::from_stored(key),
        blob: Bytes::from_static(b"blob"),
        ttl: Some(Duration::from_millis(ttl_ms)),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    };
    let answer = |r: Result<StoreResponse, redis::RedisError>| format!("{:?}", r.unwrap());
    assert_eq!(
        answer(
            store
                .clone()
                .oneshot(tagged("hcc1:long", 600_000, &["t"]))
                .await
        ),
        "Done"
    );
    assert_eq!(
        answer(
            store
                .clone()
                .oneshot(tagged("hcc1:short", 50, &["t"]))
                .await
        ),
        "Done"
    );
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("hcc:#tag:t")
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members, ["hcc:hcc1:short", "hcc:hcc1:long"]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg("hcc:#tag:t")
        .query_async(&mut raw)
        .await
        .unwrap();
    // Members are scored a minute past their entry's expiry (the entry is written after them).
    assert!(
        ttl > 650_000 && ttl <= 660_000,
        "the set lives as long as its last member, plus the margin: {ttl}"
    );
    // A member whose time has passed (scored in the past here, as "short" will be a minute
    // after it expired) is dropped by the next write to the tag.
    let _: () = redis::cmd("ZADD")
        .arg("hcc:#tag:t")
        .arg(1)
        .arg("hcc:hcc1:short")
        .query_async(&mut raw)
        .await
        .unwrap();
    store
        .clone()
        .oneshot(tagged("hcc1:other", 600_000, &["t"]))
        .await
        .unwrap();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("hcc:#tag:t")
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members, ["hcc:hcc1:long", "hcc:hcc1:other"]);
    // The index is not listed as entries (once "short" itself has expired, bounded wait).
    for _ in 0..200 {
        let n: i64 = redis::cmd("EXISTS")
            .arg("hcc:hcc1:short")
            .query_async(&mut raw)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(mut k) => {
            k.sort();
            let names: Vec<&str> = k.iter().map(|k| k.as_str()).collect();
            assert_eq!(names, ["hcc1:long", "hcc1:other"]);
        }
        other => panic!("{other:?}"),
    }
    // A store writer adds a key outside the namespace to the set: the purge leaves it, and says
    // the index may be incomplete (whoever wrote to it may have taken members out too).
    let _: () = redis::cmd("SET")
        .arg("outside")
        .arg("x")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("hcc:#tag:t")
        .arg(1e15)
        .arg("outside")
        .query_async(&mut raw)
        .await
        .unwrap();
    match store
        .clone()
        .oneshot(StoreRequest::PurgeTag { tag: "t".into() })
        .await
        .unwrap()
    {
        StoreResponse::Purged { removed, complete } => assert_eq!((removed, complete), (2, false)),
        other => panic!("{other:?}"),
    }
    let exists: (bool, bool, bool) = redis::pipe()
        .exists("hcc:hcc1:long")
        .exists("hcc:#tag:t")
        .exists("outside")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, (false, false, true));
    // 65 tags: not stored, and nothing left under the key.
    store
        .clone()
        .oneshot(tagged("hcc1:many", 600_000, &["x"]))
        .await
        .unwrap();
    let many: Vec<String> = (0..65).map(|i| format!("tag{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        answer(
            store
                .clone()
                .oneshot(tagged("hcc1:many", 600_000, &many))
                .await
        ),
        "NotStored"
    );
    let left: bool = redis::cmd("EXISTS")
        .arg("hcc:hcc1:many")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!left);
}
