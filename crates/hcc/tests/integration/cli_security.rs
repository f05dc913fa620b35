//! `hcc` against a store someone else writes to (issue 27, item 9), run as a subprocess: planted
//! key names and URLs cannot drive the terminal, `verify --delete` leaves another key ring's
//! valid entries alone, and the Redis URL (its password) comes from the environment, never argv.

use std::process::{Command, Output};

use bytes::Bytes;
use hyper_client_cache::{CacheKey, CacheLayer, DiskStore, RedisStore, SecretKey, Store};
use tower::ServiceExt;

use crate::common::*;

const KEY_A: &str = "hcc security test key A, not secret";
const KEY_B: &str = "hcc security test key B, not secret";
/// A key name that, printed raw, erases its line and prints a reassuring summary, then turns
/// the rest of the line around (U+202E) and starts an 8-bit CSI (U+009B).
const EVIL_KEY: &str = "\x1b[2K\r1 entries verify, 0 do not\u{202e}\u{9b}31m";
/// A URL path a client may well have been asked for (http accepts UTF-8 in paths): stored, and
/// signed, with the entry.
const EVIL_PATH: &str = "/invoice-\u{202e}fdp.exe\u{9b}2J\u{2066}";

fn hcc(key: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hcc"))
        .args(args)
        .args(["--key-env", "HCC_SEC_TEST_KEY"])
        .env("HCC_SEC_TEST_KEY", key)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("hcc writes UTF-8")
}

/// No byte a terminal acts on: no C0 control but the line feed, no DEL, no C1 control, no
/// Unicode bidirectional or other format control.
fn assert_inert(what: &str, bytes: &[u8]) {
    for c in text(bytes).chars() {
        let format = matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{061c}' | '\u{00ad}');
        assert!(
            c == '\n' || !(c.is_control() || format),
            "{what}: raw {:?} in {:?}",
            c,
            text(bytes)
        );
    }
}

/// Fills `store` through a layer signing with `key`: one response per path.
async fn fill<St: Store + Sync>(store: St, key: &str, paths: &[&str])
where
    St::Future: Send,
{
    let layer = CacheLayer::new(store).secret_key(SecretKey::new(key).unwrap());
    let origin = tower::service_fn(|_req: http::Request<http_body_util::Empty<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(
            http::Response::builder()
                .header("cache-control", "max-age=600")
                .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
    });
    let svc = tower::ServiceBuilder::new().layer(layer).service(origin);
    for path in paths {
        let request = http::Request::get(format!("http://origin.test{path}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = svc.clone().oneshot(request).await.unwrap();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
    }
}

fn key_under(key: &str, path: &str) -> CacheKey {
    CacheLayer::new(())
        .secret_key(SecretKey::new(key).unwrap())
        .key_for(
            &http::Request::get(format!("http://origin.test{path}"))
                .body(())
                .unwrap(),
        )
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    text(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every command, text and JSON, over a store holding a planted key name with terminal escapes
/// and a signed entry whose URL carries a bidi override and a C1 control.
async fn planted_names_stay_inert<St: Store + Sync>(store: St, target: &[&str])
where
    St::Future: Send,
{
    fill(store.clone(), KEY_A, &["/plain", EVIL_PATH]).await;
    put_raw(
        &store,
        CacheKey::from_stored(EVIL_KEY),
        Bytes::from_static(b"garbage"),
    )
    .await;
    let evil_url = format!("http://origin.test{EVIL_PATH}");
    let run = |args: &[&str]| {
        let out = hcc(KEY_A, &[target, args].concat(), &[]);
        assert_inert(&format!("{args:?} stdout"), &out.stdout);
        assert_inert(&format!("{args:?} stderr"), &out.stderr);
        out
    };
    for args in [
        &["stats"][..],
        &["list"],
        &["list", "--expired"],
        &["show", &evil_url],
        &["show", "http://origin.test/\u{1b}[31mnothing"],
        &["verify"],
        &["stats", "--json"],
    ] {
        run(args);
    }

    // The alarm reads as the store is: the planted summary is an escaped part of the key.
    let out = run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert_eq!(
        report.lines().last(),
        Some("2 entries verify, 1 does not"),
        "{report}"
    );
    assert!(
        report.contains("\\x1b[2K\\r1 entries verify, 0 do not\\u{202e}\\u{9b}31m"),
        "{report}"
    );
    let listed = text(&run(&["list"]).stdout);
    assert!(
        listed.contains("/invoice-\\u{202e}fdp.exe\\u{9b}2J\\u{2066}"),
        "{listed}"
    );

    // JSON stays JSON, and says exactly what is stored once parsed.
    let lines = json_lines(&run(&["verify", "--json"]).stdout);
    assert_eq!(lines[0]["key"], EVIL_KEY);
    let lines = json_lines(&run(&["list", "--json"]).stdout);
    assert!(
        lines.iter().any(|l| l["url"] == evil_url.as_str()),
        "{lines:?}"
    );
    let lines = json_lines(&run(&["show", &evil_url, "--json"]).stdout);
    assert_eq!(lines[0]["url"], evil_url.as_str());
}

#[tokio::test]
async fn planted_names_cannot_drive_the_terminal_on_a_disk_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let path = dir.path().to_str().unwrap().to_owned();
    planted_names_stay_inert(store, &["--dir", &path]).await;
}

#[tokio::test]
async fn planted_names_cannot_drive_the_terminal_on_a_redis_store() {
    let server = RedisServer::start().await;
    let url = format!("redis://127.0.0.1:{}/", server.port);
    let store = RedisStore::builder(&url)
        .prefix("sec:")
        .connect()
        .await
        .unwrap();
    planted_names_stay_inert(store, &["--redis", &url, "--prefix", "sec:"]).await;
}

/// Two deployments, two key rings, one directory: `verify --delete` under ring A deletes what
/// fails under A's own key id (a tampered entry, a planted blob) and reports ring B's entries
/// without touching them; `--delete-foreign` deletes those too.
#[tokio::test]
async fn verify_delete_spares_another_key_rings_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let target = ["--dir", dir.path().to_str().unwrap()];
    fill(store.clone(), KEY_A, &["/a1", "/a2"]).await;
    fill(store.clone(), KEY_B, &["/b1", "/b2", "/b3"]).await;
    // One of A's entries altered (its key id is A's, its tag no longer matches), and a blob that
    // is no envelope at all.
    let tampered = key_under(KEY_A, "/a2");
    let mut blob = get_raw(&store, tampered.clone()).await.unwrap().to_vec();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    put_raw(&store, tampered.clone(), blob.into()).await;
    put_raw(
        &store,
        CacheKey::from_stored("planted"),
        Bytes::from_static(b"exploit!"),
    )
    .await;

    let out = hcc(
        KEY_A,
        &[&target[..], &["verify", "--delete", "--json"]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "B's entries are still reported");
    let lines = json_lines(&out.stdout);
    let summary = lines.last().unwrap();
    assert_eq!(summary["verified"], 1, "{lines:?}");
    assert_eq!(summary["invalid"], 5, "{lines:?}");
    assert_eq!(summary["foreign"], 3, "{lines:?}");
    assert_eq!(summary["deleted"], 2, "{lines:?}");
    for line in &lines[..lines.len() - 1] {
        let ours = line["key"] == tampered.as_str() || line["key"] == "planted";
        assert_eq!(line["foreign"], !ours, "{line}");
        assert_eq!(line["deleted"], ours, "{line}");
    }
    assert!(get_raw(&store, tampered).await.is_none());

    // B's deployment lost nothing.
    let out = hcc(KEY_B, &[&target[..], &["verify", "--json"]].concat(), &[]);
    let lines = json_lines(&out.stdout);
    let summary = lines.last().unwrap();
    assert_eq!(summary["verified"], 3, "{lines:?}");
    assert_eq!(summary["invalid"], 1, "A's one valid entry: {lines:?}");
    assert_eq!(summary["foreign"], 1, "{lines:?}");

    // The text report says which are kept and why.
    let out = hcc(KEY_A, &[&target[..], &["verify", "--delete"]].concat(), &[]);
    let report = text(&out.stdout);
    assert_eq!(report.matches("FOREIGN ").count(), 3, "{report}");
    assert_eq!(
        report.lines().last(),
        Some("1 entry verifies, 3 do not; 3 foreign kept (--delete-foreign deletes them)"),
        "{report}"
    );

    // Only when asked.
    let args = [
        &target[..],
        &["verify", "--delete", "--delete-foreign", "--json"],
    ]
    .concat();
    let lines = json_lines(&hcc(KEY_A, &args, &[]).stdout);
    assert_eq!(lines.last().unwrap()["deleted"], 3, "{lines:?}");
    let out = hcc(KEY_B, &[&target[..], &["stats", "--json"]].concat(), &[]);
    assert_eq!(json_lines(&out.stdout)[0]["entries"], 0);
    // Without --delete it is refused, rather than doing nothing silently.
    let out = hcc(
        KEY_A,
        &[&target[..], &["verify", "--delete-foreign"]].concat(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

const PASSWORD: &str = "hcc-test-redis-password-93f1";

/// A Redis server that wants [`PASSWORD`].
async fn password_server() -> (RedisServer, String) {
    let server = RedisServer::start().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", server.port);
    (server, url)
}

/// The URL, password included, comes from an environment variable: hcc reaches the server with
/// it, nothing of it is in hcc's arguments, and no message repeats it. On the command line a
/// URL with a password is refused.
#[tokio::test]
async fn the_redis_url_comes_from_the_environment_and_never_from_argv() {
    let (server, url) = password_server().await;
    let store = RedisStore::builder(&url)
        .prefix("pw:")
        .connect()
        .await
        .unwrap();
    fill(store, KEY_A, &["/1", "/2"]).await;

    let args = [
        "--redis-env",
        "HCC_SEC_TEST_REDIS",
        "--prefix",
        "pw:",
        "stats",
        "--json",
    ];
    assert!(args.iter().all(|a| !a.contains(PASSWORD)));
    let out = hcc(KEY_A, &args, &[("HCC_SEC_TEST_REDIS", &url)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json_lines(&out.stdout)[0]["entries"], 2);
    // The default variable.
    let args = ["--redis-env", "HCC_REDIS_URL", "--prefix", "pw:", "list"];
    let out = hcc(KEY_A, &args, &[("HCC_REDIS_URL", &url)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);

    // A password in argv is already in /proc/PID/cmdline for every user: refused, pointing at
    // the variable, without repeating it.
    let out = hcc(KEY_A, &["--redis", &url, "--prefix", "pw:", "stats"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--redis-env"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    let nodes = format!("redis://127.0.0.1:1,{url}");
    let out = hcc(KEY_A, &["--redis-cluster", &nodes, "stats"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--redis-cluster-env"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // A wrong password, a server that is gone, a variable that is not set: errors that do not
    // repeat the URL's password.
    let wrong = url.replace(PASSWORD, &format!("{PASSWORD}-wrong"));
    let gone = format!("redis://:{PASSWORD}@127.0.0.1:1/");
    for value in [&wrong, &gone, &format!("redis://:{PASSWORD}@[::1")] {
        let out = hcc(
            KEY_A,
            &["--redis-env", "HCC_SEC_TEST_REDIS", "stats"],
            &[("HCC_SEC_TEST_REDIS", value)],
        );
        assert_eq!(out.status.code(), Some(2), "{value}");
        let err = text(&out.stderr);
        assert!(!err.contains(PASSWORD), "{err}");
    }
    for flag in ["--redis-env", "--redis-cluster-env"] {
        let out = hcc(KEY_A, &[flag, "HCC_SEC_TEST_SURELY_UNSET", "stats"], &[]);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(
            err.contains("HCC_SEC_TEST_SURELY_UNSET") && err.contains("is not set"),
            "{err}"
        );
    }
    drop(server);
}
