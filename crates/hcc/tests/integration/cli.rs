//! `hcc`, run as a subprocess against a `DiskStore` and a Redis server started here: stats,
//! list (text and JSON Lines, parsed back), show, purge by glob, verify finding a planted blob.

use std::process::Command;

use bytes::Bytes;
use hyper_client_cache::{CacheLayer, DiskStore, RedisStore, Store};
use tower::ServiceExt;

use crate::common::*;

const KEY_VAR: &str = "HCC_CLI_TEST_KEY";
const KEY: &str = "integration test key, not secret";

/// Fills `store` through a signing layer: three URLs under /a, two under /b.
async fn fill<St: Store + Sync>(store: St)
where
    St::Future: Send,
{
    let layer = CacheLayer::new(store).secret_key(test_key());
    let origin = tower::service_fn(|_req: http::Request<http_body_util::Empty<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(
            http::Response::builder()
                .header("cache-control", "max-age=600")
                .header("cache-tag", "everything")
                .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
    });
    let svc = tower::ServiceBuilder::new().layer(layer).service(origin);
    for path in ["/a/1", "/a/2", "/a/3", "/b/1", "/b/2"] {
        let request = http::Request::get(format!("http://origin.test{path}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = svc.clone().oneshot(request).await.unwrap();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
    }
}

fn hcc(target: &[&str], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hcc"))
        .args(target)
        .args(args)
        .env(KEY_VAR, KEY)
        .args(["--key-env", KEY_VAR])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The whole scenario against one store, named by `target`.
async fn scenario<St: Store + Sync>(store: St, target: &[&str])
where
    St::Future: Send,
{
    fill(store.clone()).await;

    let (code, out, err) = hcc(target, &["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stats["entries"], 5, "{out}");
    assert_eq!(stats["invalid"], 0, "{out}");

    let (code, out, _) = hcc(target, &["list", "--json", "--url", "origin.test/a/*"]);
    assert_eq!(code, 0);
    let listed = json_lines(&out);
    assert_eq!(listed.len(), 3, "{out}");
    for entry in &listed {
        assert!(entry["url"]
            .as_str()
            .unwrap()
            .starts_with("http://origin.test/a/"));
        assert_eq!(entry["status"], 200);
        assert_eq!(entry["method"], "GET");
        assert_eq!(entry["expired"], false);
        assert!(entry["size"].as_u64().unwrap() > 0);
        assert!(entry["expires"].as_u64().unwrap() > entry["created_at"].as_u64().unwrap());
    }
    let (_, text, _) = hcc(target, &["list"]);
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text.contains("200 GET http://origin.test/b/1"), "{text}");

    let (code, out, _) = hcc(target, &["show", "http://origin.test/b/2", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out)[0]["url"], "http://origin.test/b/2");
    let (code, _, err) = hcc(target, &["show", "http://origin.test/nothing"]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing matches"), "{err}");

    // A planted blob under one entry's name: verify finds it, and exits 1.
    let planted = key_for("http://origin.test/b/1");
    put_raw(&store, planted.clone(), Bytes::from_static(b"exploit!")).await;
    let (code, out, _) = hcc(target, &["verify", "--json"]);
    assert_eq!(code, 1, "{out}");
    let lines = json_lines(&out);
    assert_eq!(lines[0]["key"], planted.as_str());
    assert_eq!(lines[0]["bad_signature"], true);
    assert_eq!(lines.last().unwrap()["verified"], 4);
    assert_eq!(lines.last().unwrap()["invalid"], 1);

    for entry in &listed {
        assert_eq!(entry["tags"], serde_json::json!(["everything"]));
    }
    let (code, out, _) = hcc(target, &["purge", "--tag", "nothing-has-this", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out)[0]["deleted"], 0);

    // Purge by glob, then the rest.
    let (code, out, _) = hcc(target, &["purge", "--url", "origin.test/a/*", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out)[0]["deleted"], 3);
    let (_, out, _) = hcc(target, &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (stats["entries"].clone(), stats["invalid"].clone()),
        (1.into(), 1.into())
    );
    let (code, _, _) = hcc(target, &["verify", "--delete"]);
    assert_eq!(code, 1, "it still reports what it deleted");
    let (code, out, _) = hcc(target, &["verify"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = hcc(target, &["purge", "--tag", "everything", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        json_lines(&out)[0]["deleted"],
        1,
        "the one valid entry left"
    );
    let (code, _, _) = hcc(target, &["purge", "--all"]);
    assert_eq!(code, 0);
    let (_, out, _) = hcc(target, &["stats", "--json"]);
    assert!(out.contains("\"entries\":0"), "{out}");

    // A wrong key variable: every entry fails verification, nothing is shown as valid.
    fill(store.clone()).await;
    let out = Command::new(env!("CARGO_BIN_EXE_hcc"))
        .args(target)
        .args(["verify", "--key-env", "HCC_CLI_TEST_OTHER_KEY"])
        .env(
            "HCC_CLI_TEST_OTHER_KEY",
            "somebody else's perfectly valid key",
        )
        .output()
        .unwrap();
    // Entries are named under the key: under another key there is nothing of this cache's to
    // list as valid, and its own entries do not verify.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn hcc_on_a_disk_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    scenario(store, &["--dir", &path]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hcc_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let store = hyper_client_cache::RedisStore::cluster(cluster.urls())
        .connect()
        .await
        .unwrap();
    let nodes = cluster.urls()[..2].join(",");
    // The default prefix, named: a prefix goes with any Redis target.
    scenario(
        store.clone(),
        &["--redis-cluster", &nodes, "--prefix", "hcc:"],
    )
    .await;
    // The nodes from an environment variable (where a password would go).
    fill(store).await;
    let out = Command::new(env!("CARGO_BIN_EXE_hcc"))
        .args([
            "--redis-cluster-env",
            "HCC_CLI_TEST_CLUSTER",
            "stats",
            "--json",
        ])
        .env("HCC_CLI_TEST_CLUSTER", format!(" {} ", nodes))
        .env(KEY_VAR, KEY)
        .args(["--key-env", KEY_VAR])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(stats["entries"], 5, "{stats}");
}

#[tokio::test]
async fn hcc_on_a_redis_store() {
    let server = RedisServer::start().await;
    let url = format!("redis://127.0.0.1:{}/", server.port);
    let store = RedisStore::builder(&url)
        .prefix("cli-test:")
        .connect()
        .await
        .unwrap();
    scenario(store, &["--redis", &url, "--prefix", "cli-test:"]).await;
}

#[test]
fn the_key_is_never_an_argument_and_a_missing_variable_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hcc"))
        .args(["--dir", dir.path().to_str().unwrap(), "stats"])
        .args(["--key-env", "HCC_CLI_TEST_SURELY_UNSET"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HCC_CLI_TEST_SURELY_UNSET") && err.contains("is not set"),
        "{err}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_hcc"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("--key "), "{help}");
}

/// `Inspector::key_pages` on Redis: several pages (a `SCAN` step each), every key at least once,
/// and each page a small part of the whole.
#[tokio::test]
async fn key_pages_walk_a_redis_store_a_page_at_a_time() {
    use futures_util::StreamExt;
    let server = RedisServer::start().await;
    let url = format!("redis://127.0.0.1:{}/", server.port);
    let store = RedisStore::connect(&url).await.unwrap();
    let n = 5_000;
    for i in 0..n {
        put_raw(
            &store,
            hyper_client_cache::CacheKey::from_stored(format!("k{i}")),
            Bytes::from_static(b"x"),
        )
        .await;
    }
    let inspector = CacheLayer::new(store).inspector();
    let mut pages = std::pin::pin!(inspector.key_pages());
    let (mut seen, mut count, mut largest) = (std::collections::HashSet::new(), 0, 0);
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        count += 1;
        largest = largest.max(page.len());
        seen.extend(page.into_iter().map(|k| k.as_str().to_owned()));
    }
    assert_eq!(seen.len(), n);
    assert!(count > 2, "{count} pages");
    assert!(largest < n / 2, "a page of {largest} keys");
}

/// Runs `hcc` with exactly `args` (the key from `KEY_VAR`).
fn hcc_args(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hcc"))
        .args(args)
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// #29: `hcc list --dir D` failed with "unexpected argument" (store options had to precede
/// the subcommand, while `--key-env` worked in either place). Both orders now work, for every
/// store option; two targets are still refused.
#[tokio::test]
async fn store_options_go_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    fill(DiskStore::open(dir.path()).unwrap()).await;
    let d = dir.path().to_str().unwrap();
    let before = hcc_args(&["--dir", d, "--key-env", KEY_VAR, "list"]);
    let after = hcc_args(&["list", "--dir", d, "--key-env", KEY_VAR]);
    let mixed = hcc_args(&["--key-env", KEY_VAR, "list", "--dir", d]);
    assert_eq!(before.0, 0, "{}", before.2);
    assert_eq!(after.0, 0, "{}", after.2);
    assert_eq!(before.1.lines().count(), 5, "{}", before.1);
    assert_eq!(before.1, after.1);
    assert_eq!(before.1, mixed.1);
    let stats = hcc_args(&["stats", "--json", "--dir", d, "--key-env", KEY_VAR]);
    assert_eq!(stats.0, 0, "{}", stats.2);
    assert!(stats.1.contains("\"entries\":5"), "{}", stats.1);

    let two = hcc_args(&["--dir", d, "list", "--redis", "redis://127.0.0.1:1/"]);
    assert_eq!(two.0, 2, "two stores at once: {}", two.2);
    let none = hcc_args(&["list", "--key-env", KEY_VAR]);
    assert_eq!(none.0, 2);
    assert!(none.2.contains("--dir"), "{}", none.2);
}

/// #29: `show` took only a full URL and `--url` only a glob; a glob without the port matched
/// nothing, silently; counts said "1 entries".
#[tokio::test]
async fn show_and_url_take_a_url_or_a_glob_and_zero_matches_say_why() {
    let dir = tempfile::tempdir().unwrap();
    fill(DiskStore::open(dir.path()).unwrap()).await;
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| hcc_args(&[&["--dir", d, "--key-env", KEY_VAR], args].concat());

    let (code, out, err) = run(&["show", "origin.test/a/*", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_lines(&out).len(), 3, "{out}");
    let (code, out, _) = run(&["show", "HTTP://ORIGIN.test:80/b/1", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out)[0]["url"], "http://origin.test/b/1");
    let (code, out, _) = run(&["list", "--url", "http://origin.test/b/2", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out).len(), 1, "{out}");

    // The port is part of the host: the hint says so, on stderr (stdout stays clean).
    let (code, out, err) = run(&["list", "--url", "origin.test:8080/*", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out, "");
    assert!(
        err.contains("nothing matches") && err.contains("5 valid entries"),
        "{err}"
    );
    let (code, _, err) = run(&["show", "127.0.0.1/a/*"]);
    assert_eq!(code, 1);
    assert!(err.contains("port is part of the host"), "{err}");
    // With an entry on a port, the hint names it.
    let request = http::Request::get("http://127.0.0.1:8080/a/x")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let layer = CacheLayer::new(DiskStore::open(dir.path()).unwrap()).secret_key(test_key());
    let origin = tower::service_fn(|_req: http::Request<http_body_util::Empty<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(
            http::Response::builder()
                .header("cache-control", "max-age=600")
                .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
    });
    let response = tower::ServiceBuilder::new()
        .layer(layer)
        .service(origin)
        .oneshot(request)
        .await
        .unwrap();
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    let (code, _, err) = run(&["show", "127.0.0.1/a/*"]);
    assert_eq!(code, 1);
    assert!(err.contains("try `127.0.0.1:8080/a/*`"), "{err}");
    let (code, out, _) = run(&["purge", "--url", "127.0.0.1:8080/a/*"]);
    assert_eq!((code, out.trim()), (0, "1 entry deleted"));
    let (code, out, err) = run(&["purge", "--url", "elsewhere.test/*"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "0 entries deleted");
    assert!(err.contains("nothing matches"), "{err}");

    // Another key: nothing verifies, and the hint names the prefix and the key.
    let other = Command::new(env!("CARGO_BIN_EXE_hcc"))
        .args(["list", "--dir", d, "--key-env", "HCC_CLI_TEST_OTHER_KEY"])
        .env(
            "HCC_CLI_TEST_OTHER_KEY",
            "somebody else's perfectly valid key",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("--prefix") && err.contains("--key-env"),
        "{err}"
    );

    // Grammar.
    let (_, out, _) = run(&["purge", "--url", "http://origin.test/b/2"]);
    assert_eq!(out.trim(), "1 entry deleted");
    let (_, out, _) = run(&["purge", "--url", "origin.test/a/*"]);
    assert_eq!(out.trim(), "3 entries deleted");
    let (_, out, _) = run(&["stats"]);
    assert!(out.starts_with("1 entry, "), "{out}");
    let (_, out, _) = run(&["verify"]);
    assert_eq!(out.trim(), "1 entry verifies, 0 do not");
}

/// `purge --tag` on a disk store (no tag index): the walk finds the tagged entries.
#[tokio::test]
async fn purge_by_tag_works_on_a_disk_store() {
    let dir = tempfile::tempdir().unwrap();
    fill(DiskStore::open(dir.path()).unwrap()).await;
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = hcc_args(&[
        "purge",
        "--tag",
        "everything",
        "--dir",
        d,
        "--key-env",
        KEY_VAR,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "5 entries deleted");
}
