//! Attack tests from the third review of the fleet features (each failed on 53a9325): a tagged
//! write's last step landing on another writer's entry, a set expiring before members a purge
//! marked, and the near cache on a TLS cluster addressed by hostname. Two take about a minute
//! (the index keeps members a minute past their entry).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{CacheKey, RedisStore, StoreRequest, StoreResponse};
use tower::ServiceExt;

use crate::common::*;
use crate::fleet_support::*;

fn k(name: &str) -> CacheKey {
    CacheKey::from_stored(format!("hcc1:review3-{name}"))
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, full: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(full)
        .query_async(conn)
        .await
        .unwrap()
}

async fn value(conn: &mut redis::aio::MultiplexedConnection, full: &str) -> Option<String> {
    redis::cmd("GET").arg(full).query_async(conn).await.unwrap()
}

fn tagged_with(
    key: &CacheKey,
    blob: &'static str,
    ttl: Option<Duration>,
    tag: &str,
) -> StoreRequest {
    StoreRequest::PutTagged {
        key: key.clone(),
        blob: Bytes::from_static(blob.as_bytes()),
        ttl,
        tags: vec![tag.to_owned()],
    }
}

/// A's tagged write (`a`) is held after its check, B's write (`b`) runs to `Done` on another
/// connection, then A's last step goes on: both must answer `Done`, and the key must hold B's
/// blob. Returns a raw connection, the key's full name, and B's store (for later calls).
async fn race_last_step(
    redis: &RedisServer,
    name: &str,
    a: StoreRequest,
    b: StoreRequest,
    b_blob: &str,
) -> (redis::aio::MultiplexedConnection, String, RedisStore) {
    let (proxy, gate) = gated_proxy_after(redis.port, b"ZSCORE").await;
    let slow = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let fast = RedisStore::connect(&redis.url()).await.unwrap();
    let mut conn = raw(&redis.url()).await;
    // Scripts loaded, as in any running fleet.
    call(&fast, tagged(&k("warm"), Duration::from_secs(600), "warm")).await;
    let full = format!("hcc:{}", k(name));
    gate.open.send_replace(false);
    let a = tokio::spawn(async move { slow.oneshot(a).await.map(|a| format!("{a:?}")) });
    wait_held(&gate, 1).await; // A checked; its last step is held
    let answer = call(&fast, b).await;
    assert!(matches!(answer, StoreResponse::Done), "{answer:?}");
    gate.open.send_replace(true);
    assert_eq!(a.await.unwrap().unwrap(), "Done");
    assert_eq!(value(&mut conn, &full).await.as_deref(), Some(b_blob));
    (conn, full, fast)
}

/// Writer A (`ttl: None`, tag `a`) has checked its key and sent its `PERSIST`, which is slow to
/// arrive (a slow link, a busy server, or A's future dropped by `store_timeout` with the command
/// already on the wire). Meanwhile writer B stores the same key (tag `b`, TTL 10 s) and answers
/// `Done`. A's `PERSIST` then lands on B's entry: B's entry never expires, while `b`'s member
/// is scored 70 s ahead. The entry carries `b` in no index after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_persist_never_lands_on_another_writers_entry() {
    let redis = RedisServer::start().await;
    let key = k("persist");
    let (mut conn, full, _) = race_last_step(
        &redis,
        "persist",
        tagged_with(&key, "A (tag a)", None, "a"),
        tagged_with(&key, "B (tag b)", Some(Duration::from_secs(10)), "b"),
        "B (tag b)",
    )
    .await;
    let left = pttl(&mut conn, &full).await;
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("hcc:#tag:b")
        .arg(&full)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (0..=10_000).contains(&left),
        "B's entry (TTL 10 s, tag b) now has PTTL {left} ms, while b's member is scored {score:?} \
         (≈ now + 70 s): A's PERSIST landed on it"
    );
}

/// The same with A's `PEXPIRE GT` (TTL 1 h, tag `a`) landing after B's write (TTL 10 s, tag
/// `b`): B's provisional `SET PX 5000` made the key's TTL short again, so "GT" does not protect
/// it; B's entry lives 1 h, `b`'s member 70 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_pexpire_never_stretches_another_writers_entry() {
    let redis = RedisServer::start().await;
    let key = k("pexpire");
    let (mut conn, full, _) = race_last_step(
        &redis,
        "pexpire",
        tagged_with(&key, "A (tag a)", Some(Duration::from_secs(3600)), "a"),
        tagged_with(&key, "B (tag b)", Some(Duration::from_secs(10)), "b"),
        "B (tag b)",
    )
    .await;
    let entry_ends: i64 = redis::cmd("PEXPIRETIME")
        .arg(&full)
        .query_async(&mut conn)
        .await
        .unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg("hcc:#tag:b")
        .arg(&full)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        entry_ends <= score as i64,
        "B's entry (tag b, TTL 10 s) expires at {entry_ends}, ~{} s after b's member ({score}): \
         A's PEXPIRE 3600000 GT landed on it",
        (entry_ends - score as i64) / 1000
    );
}

/// An untagged `Put` (TTL 2 s) between a tagged write's check and its `PERSIST`: the untagged
/// entry is kept for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_persist_never_lands_on_an_untagged_put() {
    let redis = RedisServer::start().await;
    let key = k("untagged");
    let (mut conn, full, _) = race_last_step(
        &redis,
        "untagged",
        tagged_with(&key, "A (tag a)", None, "a"),
        StoreRequest::Put {
            key: key.clone(),
            blob: Bytes::from_static(b"B (untagged)"),
            ttl: Some(Duration::from_secs(2)),
        },
        "B (untagged)",
    )
    .await;
    let left = pttl(&mut conn, &full).await;
    assert!(
        (0..=2_000).contains(&left),
        "an entry written with TTL 2 s has PTTL {left} ms"
    );
}

/// End to end (~62 s): A (TTL 1 h, tag `a`) and B (TTL 1 s, tag `b`) write one key, both answer
/// `Done`, B's entry stays. Once `b`'s member has expired (61 s), a purge of `b` answers
/// `Purged { removed: 0, complete: true }` and B's entry, which carries `b`, lives on for an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_the_tag_an_entry_carries_deletes_it_slow() {
    let redis = RedisServer::start().await;
    let key = k("e2e");
    let (mut conn, full, fast) = race_last_step(
        &redis,
        "e2e",
        tagged_with(&key, "A (tag a)", Some(Duration::from_secs(3600)), "a"),
        tagged_with(&key, "B (tag b)", Some(Duration::from_secs(1)), "b"),
        "B (tag b)",
    )
    .await;

    for _ in 0..700 {
        if !exists(&mut conn, "hcc:#tag:b").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let purged = call(&fast, purge("b")).await;
    assert!(
        !exists(&mut conn, &full).await,
        "B's entry carries tag b and survived a purge of b ({purged:?}); PTTL {} ms",
        pttl(&mut conn, &full).await
    );
}

/// A TLS cluster whose certificate names the nodes by hostname only (`DNS:localhost`, no IP
/// SAN: the usual certificate), announcing that hostname and telling clients to use it
/// (`cluster-preferred-endpoint-type hostname`, the setting that exists for exactly this). The
/// data connection follows the cluster (hostnames, TLS verifies). The tracker connects to the
/// IPs of `CLUSTER NODES` with the seed's TLS settings: the certificate does not match
/// 127.0.0.1, and the near cache cannot start (on 4bd4f49, which used the announced hostname,
/// it could).
#[cfg(all(feature = "redis-cluster", feature = "redis-tls"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_follows_the_preferred_endpoint_of_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(&format!(
        "openssl req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=hcc-test-ca"
    ));
    sh(&format!(
        "openssl req {ec} -keyout server.key -out server.csr -subj /CN=localhost"
    ));
    sh("printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf");
    sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf");
    let file = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let cli = |port: u16, args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                &file("ca.crt"),
                "-p",
                &port.to_string(),
            ])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    struct Kill(Vec<std::process::Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut children = Kill(Vec::new());
    let mut ports = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        let port = cluster_free_port();
        let d = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &file("server.crt"),
                "--tls-key-file",
                &file("server.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &file("ca.crt"),
                "--tls-auth-clients",
                "no",
            ])
            .args(["--tls-cluster", "yes", "--cluster-enabled", "yes"])
            .args(["--cluster-announce-hostname", "localhost"])
            .args(["--cluster-preferred-endpoint-type", "hostname"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(d.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.0.push(child);
        ports.push(port);
        dirs.push(d);
    }
    for &p in &ports {
        for _ in 0..200 {
            if cli(p, &["ping"]).contains("PONG") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addresses.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = cli(ports[0], &args);
    assert!(out.contains("All 16384 slots covered"), "{out}");
    for _ in 0..400 {
        if ports
            .iter()
            .all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
            && cli(ports[0], &["cluster", "nodes"])
                .matches(",localhost")
                .count()
                == 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let seeds: Vec<String> = ports
        .iter()
        .map(|p| format!("rediss://localhost:{p}"))
        .collect();
    let store = RedisStore::cluster(seeds)
        .tls_root_certificate(ca)
        .connect()
        .await
        .unwrap();
    // The data connection works.
    let put = StoreRequest::Put {
        key: k("tls-host"),
        blob: Bytes::from_static(b"v"),
        ttl: Some(Duration::from_secs(600)),
    };
    assert!(matches!(call(&store, put).await, StoreResponse::Done));
    let near = hyper_client_cache::NearCache::builder(store).start().await;
    assert!(
        near.is_ok(),
        "the near cache cannot start on a TLS cluster addressed by hostname: {:?}",
        near.err().map(|e| e.to_string())
    );
}

/// A purge that fails after its TAKE (both tries: the link flaps, Redis restarts; or it is
/// cancelled) leaves its batch marked (-1) "for the next purge to finish". Any later write of
/// another key under the tag with a short TTL then runs RECORD, whose `PEXPIREAT` takes the
/// highest score — the new member's, since the marked ones are -1 — and so cuts the set's life
/// to ~61 s. The set, with the marked member, expires before the next purge; the entry it
/// indexed (TTL 1 h) lives on, carrying the tag in no index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_write_after_a_failed_purge_keeps_the_marked_members_indexed_slow() {
    let redis = RedisServer::start().await;
    let Cutter {
        port: proxy, armed, ..
    } = cutting_proxy(redis.port, b"UNLINK", false).await;
    let writer = RedisStore::connect(&redis.url()).await.unwrap();
    let purger = RedisStore::connect(&format!("redis://127.0.0.1:{proxy}/0"))
        .await
        .unwrap();
    let mut conn = raw(&redis.url()).await;
    let long = format!("hcc:{}", k("long"));
    let answer = call(&writer, tagged(&k("long"), Duration::from_secs(3600), "m")).await;
    assert!(matches!(answer, StoreResponse::Done));
    call(&purger, purge("warm-up")).await; // scripts loaded, connection up

    armed.store(true, SeqCst);
    let failed = purger.clone().oneshot(purge("m")).await;
    armed.store(false, SeqCst);
    assert!(failed.is_err(), "{:?}", failed.map(|a| format!("{a:?}")));
    assert!(
        exists(&mut conn, &long).await,
        "the failed purge deleted nothing"
    );

    // Any later short write to the tag.
    let answer = call(&writer, tagged(&k("short"), Duration::from_secs(1), "m")).await;
    assert!(matches!(answer, StoreResponse::Done));
    let set_ends: i64 = redis::cmd("PEXPIRETIME")
        .arg("hcc:#tag:m")
        .query_async(&mut conn)
        .await
        .unwrap();
    let entry_ends: i64 = redis::cmd("PEXPIRETIME")
        .arg(&long)
        .query_async(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "set expires {} s before the marked member's entry",
        (entry_ends - set_ends) / 1000
    );
    for _ in 0..700 {
        if !exists(&mut conn, "hcc:#tag:m").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let purged = call(&writer, purge("m")).await;
    assert!(
        !exists(&mut conn, &long).await,
        "an entry tagged m survived a purge of m ({purged:?}): the set holding its marked member \
         expired {} s before it",
        (entry_ends - set_ends) / 1000
    );
}
