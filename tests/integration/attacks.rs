//! Attacks on the guarantees of docs/security.md, written by a review of the second security
//! round: each test states a guarantee and fails if it does not hold. The ones marked
//! `#[ignore]` are known gaps, listed with their reason (and in the CHANGELOG's notes).

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, KeyRing, MemoryStore, SecretKey};

use crate::common::*;

fn get_req(url: &str) -> http::request::Builder {
    Request::get(url)
}

/// An origin that answers with its own name (so we can tell who produced a cached body).
async fn named(name: &'static str) -> Origin {
    Origin::fixed("max-age=600", name).await
}

// ---------------------------------------------------------------- Host rule

/// The connection goes to the URI's authority, but the key uses only the Host header: a request
/// sent to origin E with `Host: <victim>` plants E's response under the victim's key.
#[tokio::test]
async fn host_a_host_header_cannot_plant_an_entry_for_another_origin() {
    let victim = named("victim").await;
    let attacker = named("attacker").await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()).secret_key(test_key()));
    let planted = send(
        &mut client,
        get_req(&attacker.url("/account"))
            .header("host", victim.addr.to_string())
            .body(Empty::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(&planted.body[..], b"attacker");
    let got = get(&mut client, &victim.url("/account")).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..], victim.requests()),
        (Some(CacheStatus::Miss), &b"victim"[..], 1),
        "the victim's URL was answered with the attacker origin's response"
    );
}

/// A Host header that is not visible ASCII (obs-text) is ignored by the key (`to_str` fails)
/// although the origin routes on it: two virtual hosts share one entry.
#[tokio::test]
async fn host_an_obs_text_host_header_does_not_make_two_vhosts_share_an_entry() {
    let origin = Origin::start(|s| {
        let host = s.headers.get("host").map(|h| h.as_bytes().to_vec());
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(Full::new(Bytes::from(host.unwrap_or_default())))
            .unwrap()
    })
    .await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()).secret_key(test_key()));
    let url = origin.url("/t");
    let with_host = |h: &'static [u8]| {
        let mut r = Request::get(url.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap();
        r.headers_mut()
            .insert("host", HeaderValue::from_bytes(h).unwrap());
        r
    };
    let a = send(&mut client, with_host(b"tenant-a.example\xff"))
        .await
        .unwrap();
    let b = send(&mut client, with_host(b"tenant-b.example\xff"))
        .await
        .unwrap();
    assert_eq!(&a.body[..], b"tenant-a.example\xff");
    assert_eq!(
        &b.body[..],
        b"tenant-b.example\xff",
        "tenant b was served tenant a's entry ({:?})",
        b.cache
    );
}

/// Two Host headers: the key takes the first; an origin (or proxy) that takes the last sees a
/// different host than the key.
#[tokio::test]
async fn host_duplicate_host_headers_do_not_share_an_entry() {
    let origin = Origin::start(|s| {
        let last = s.headers.get_all("host").iter().next_back().cloned();
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(Full::new(Bytes::from(
                last.map(|h| h.as_bytes().to_vec()).unwrap_or_default(),
            )))
            .unwrap()
    })
    .await;
    let mut client = cached_client(CacheLayer::new(MemoryStore::default()).secret_key(test_key()));
    let url = origin.url("/t");
    let two = |second: &'static str| {
        let mut r = Request::get(url.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap();
        r.headers_mut()
            .append("host", HeaderValue::from_static("shared.example"));
        r.headers_mut()
            .append("host", HeaderValue::from_static(second));
        r
    };
    let a = send(&mut client, two("tenant-a.example")).await.unwrap();
    let b = send(&mut client, two("tenant-b.example")).await.unwrap();
    assert_eq!(&a.body[..], b"tenant-a.example");
    assert_eq!(&b.body[..], b"tenant-b.example", "{:?}", b.cache);
}

/// Odd Host values never panic and never collapse different hosts into one key.
#[test]
fn host_odd_values_keep_hosts_apart_and_do_not_panic() {
    use hyper_client_cache::CacheKey;
    let key = |uri: &str, host: Option<&str>| {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        CacheKey::for_request(&b.body(()).unwrap())
    };
    let plain = key("http://example.com/a", None);
    // The URI's authority is the connection target; a Host naming it (any case, default port)
    // adds nothing, any other Host keys an entry of its own.
    assert_eq!(key("http://example.com/a", Some("EXAMPLE.com:80")), plain);
    assert_ne!(key("http://x/a", Some("example.com")), plain);
    assert_eq!(key("http://x/a", Some("")), key("http://x/a", None));
    assert_ne!(key("http://example.com/a", Some("example.com.")), plain);
    assert_ne!(key("http://example.com/a", Some("a@example.com")), plain);
    assert_eq!(
        key("http://[::1]/a", None),
        key("http://[::1]/a", Some("[::1]:80"))
    );
    // A Host with a path in it collides with a plain URI of another path:
    assert_ne!(
        key("http://example.com/b", Some("example.com/a")),
        key("http://example.com/a/b", None),
        "Host `example.com/a` + path `/b` keys like `http://example.com/a/b`"
    );
}

/// For unsigned layers `CacheKey::for_request` is the layer's key (GET).
#[test]
fn host_for_request_agrees_with_an_unsigned_layer() {
    use hyper_client_cache::CacheKey;
    let layer = CacheLayer::new(MemoryStore::default());
    for (uri, host) in [
        ("http://E.com:80/a?b=2&a=1", None),
        ("http://10.0.0.1/x", Some("v.example")),
        ("https://e.com:443", Some("E.COM:443")),
        ("http://u:p@e.com/", None),
    ] {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        let r = b.body(()).unwrap();
        assert_eq!(layer.key_for(&r), CacheKey::for_request(&r), "{uri}");
    }
}

// ---------------------------------------------------------------- rotation

fn old_key() -> SecretKey {
    SecretKey::new("the key of last quarter").unwrap()
}
fn new_key() -> SecretKey {
    SecretKey::new("the key of this quarter").unwrap()
}
fn rotated(store: &MemoryStore) -> CacheLayer<MemoryStore> {
    CacheLayer::new(store.clone()).secret_key(KeyRing::new(new_key()).with_previous(old_key()))
}

/// The Inspector of a rotated layer sees (contains) and removes (delete_url) entries written
/// under the old names, which the layer still serves.
#[tokio::test]
async fn rotation_inspector_finds_and_deletes_old_name_entries() {
    let origin = Origin::counting(&[("cache-control", "max-age=600")]).await;
    let store = MemoryStore::default();
    let url = origin.url("/item");
    let mut before = cached_client(CacheLayer::new(store.clone()).secret_key(old_key()));
    assert_eq!(&get(&mut before, &url).await.unwrap().body[..], b"v1");
    let layer = rotated(&store);
    let mut client = cached_client(layer.clone());
    let hit = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (hit.cache, &hit.body[..]),
        (Some(CacheStatus::Hit), &b"v1"[..])
    );
    let inspector = layer.inspector();
    let contains = inspector.contains(&url).await.unwrap();
    let deleted = inspector.delete_url(&url).await.unwrap();
    let after = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (contains, deleted, after.cache, &after.body[..]),
        (true, 1, Some(CacheStatus::Miss), &b"v2"[..]),
        "(contains, deleted, status, body) after Inspector::delete_url during a rotation"
    );
}

/// An old-name entry that is revalidated (304) is stored again under its new name.
#[tokio::test]
async fn rotation_revalidated_old_entry_is_stored_under_the_new_name() {
    let origin = Origin::start(|s| {
        if s.headers.contains_key("if-none-match") {
            Response::builder()
                .status(304)
                .header("etag", "\"e\"")
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::new()))
                .unwrap()
        } else {
            Response::builder()
                .header("etag", "\"e\"")
                .header("cache-control", "max-age=60")
                .body(Full::new(Bytes::from_static(b"body")))
                .unwrap()
        }
    })
    .await;
    let clock = clock();
    let store = MemoryStore::with_clock(1 << 20, clock.clone());
    let url = origin.url("/r");
    let mut before = cached_client(
        CacheLayer::new(store.clone())
            .secret_key(old_key())
            .clock(clock.clone()),
    );
    get(&mut before, &url).await.unwrap();
    clock.advance(secs(120));
    let layer = rotated(&store).clock(clock.clone());
    let mut client = cached_client(layer.clone());
    let r = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (r.cache, &r.body[..]),
        (Some(CacheStatus::Revalidated), &b"body"[..])
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let new_name = layer.key_for(&Request::get(url.as_str()).body(()).unwrap());
    assert!(
        get_raw(&store, new_name).await.is_some(),
        "not re-stored under the new name"
    );
    let again = get(&mut client, &url).await.unwrap();
    assert_eq!(again.cache, Some(CacheStatus::Hit));
    // only-if-cached on an absent URL during a rotation: a 504.
    let mut r = Request::get(origin.url("/absent").as_str())
        .body(Empty::new())
        .unwrap();
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("only-if-cached"));
    assert_eq!(send(&mut client, r).await.unwrap().status, 504);
}

// ---------------------------------------------------------------- not_before and the Inspector

/// The Inspector of a layer with `not_before` treats entries older than it as the layer does
/// (a miss): `contains` is false.
#[tokio::test]
async fn not_before_inspector_agrees_with_the_layer() {
    let origin = Origin::counting(&[("cache-control", "max-age=600")]).await;
    let clock = clock();
    let url = origin.url("/nb");
    let base = layer(&clock);
    let mut client = cached_client(base.clone());
    get(&mut client, &url).await.unwrap();
    clock.advance(secs(10));
    let bounded = base.not_before(hyper_client_cache::Clock::now(&clock));
    let inspector = bounded.inspector();
    let listing = inspector.entries().await.unwrap();
    // Listed, as expired (so `delete_expired` removes it), and not "contained".
    let listed = listing.entries.iter().filter(|e| !e.is_expired).count();
    let contains = inspector.contains(&url).await.unwrap();
    let mut client = cached_client(bounded);
    let r = get(&mut client, &url).await.unwrap();
    assert_eq!(r.cache, Some(CacheStatus::Miss));
    assert_eq!(
        (listed, contains),
        (0, false),
        "(listed, contains) for an entry the layer treats as absent"
    );
}

// ---------------------------------------------------------------- redaction

/// A `;`-separated credential (`a=1;token=SECRET`, still split by some servers) and a
/// bracketed one (`token[]=SECRET`, PHP / Rails arrays) are stored redacted.
#[tokio::test]
async fn redaction_semicolon_and_bracket_names() {
    let origin = Origin::fixed("max-age=600", "ok").await;
    let mut leaks = Vec::new();
    for q in [
        "a=1;token=SECRET",
        "token[]=SECRET",
        "user[password]=SECRET",
        "Token=SECRET",
        "%74oken=SECRET",
        "tok%65n=SECRET",
    ] {
        let store = MemoryStore::default();
        let mut client = cached_client(CacheLayer::new(store.clone()).secret_key(test_key()));
        get(&mut client, &origin.url(&format!("/q?{q}")))
            .await
            .unwrap();
        let blobs = all_blobs(&store).await;
        assert!(!blobs.is_empty());
        let leaked = blobs.iter().any(|b| b.windows(6).any(|w| w == b"SECRET"));
        if leaked {
            leaks.push(q);
        }
    }
    assert!(leaks.is_empty(), "SECRET is in the store for {leaks:?}");
}

// ---------------------------------------------------------------- decoder cap / many fields

/// A 304 with many header fields, merged into a stored entry, must not make the caller's
/// response fail (or panic).
#[tokio::test]
async fn fields_a_large_304_merged_into_a_stored_entry_does_not_panic() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::{Service, ServiceBuilder, ServiceExt};
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let origin = tower::service_fn(move |req: Request<Empty<Bytes>>| {
        let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
        let mut response = Response::new(Full::new(Bytes::from_static(b"stored")));
        let h = response.headers_mut();
        h.insert("etag", HeaderValue::from_static("\"e\""));
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        if first {
            for i in 0..1_000u32 {
                h.insert(
                    http::HeaderName::from_bytes(format!("x-a-{i}").as_bytes()).unwrap(),
                    HeaderValue::from(i),
                );
            }
        } else {
            assert!(req.headers().contains_key("if-none-match"));
            *response.status_mut() = http::StatusCode::NOT_MODIFIED;
            *response.body_mut() = Full::new(Bytes::new());
            for i in 0..24_000u32 {
                response.headers_mut().insert(
                    http::HeaderName::from_bytes(format!("x-b-{i}").as_bytes()).unwrap(),
                    HeaderValue::from(i),
                );
            }
        }
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(origin);
    for _ in 0..2 {
        let request = Request::get("http://e.com/big").body(Empty::new()).unwrap();
        let fut = svc.ready().await.unwrap().call(request);
        let joined = tokio::spawn(fut).await;
        assert!(joined.is_ok(), "the request panicked: {:?}", joined.err());
        let response = joined.unwrap().unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body()).await;
        assert_eq!(body.unwrap().to_bytes(), "stored");
    }
}

// ---------------------------------------------------------------- keyed names for every key kind

#[test]
fn names_key_fn_match_headers_and_bodies_are_keyed() {
    let signed = CacheLayer::new(MemoryStore::default()).secret_key(test_key());
    let r = Request::get("http://e.com/a")
        .header("x-tenant", "t1")
        .body(())
        .unwrap();
    let a = signed
        .clone()
        .match_headers([http::HeaderName::from_static("x-tenant")]);
    let b = signed.clone().key_fn(|p| p.uri.path().to_owned());
    for k in [a.key_for(&r), b.key_for(&r)] {
        assert!(k.as_str().starts_with("hcc1k:"), "{k}");
    }
    // ...and under another secret they differ.
    let other = CacheLayer::new(MemoryStore::default())
        .secret_key(SecretKey::new("another secret of sixteen+ bytes").unwrap())
        .key_fn(|p| p.uri.path().to_owned());
    assert_ne!(other.key_for(&r), b.key_for(&r));
}

// ---------------------------------------------------------------- disk and redis

#[cfg(all(unix, feature = "disk", feature = "redis", feature = "test-util"))]
mod stores {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use bytes::Bytes;
    use hyper_client_cache::{CacheKey, DiskStore, RedisStore, StoreRequest, StoreResponse};
    use tower::ServiceExt;

    use crate::common::*;

    fn entry_path(dir: &Path) -> PathBuf {
        for shard in std::fs::read_dir(dir).unwrap().flatten() {
            if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                continue; // the size record
            }
            for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "hcc") {
                    return f.path();
                }
            }
        }
        panic!("no entry file")
    }

    async fn call(store: &DiskStore, r: StoreRequest) -> std::io::Result<StoreResponse> {
        tokio::time::timeout(Duration::from_secs(5), store.clone().oneshot(r))
            .await
            .expect("the disk store blocked")
    }

    /// A directory planted under an entry's name: the next write still stores the entry.
    #[tokio::test]
    #[ignore = "known gap: a directory planted under an entry's name blocks that key (misses, failed writes)"]
    async fn disk_a_directory_under_an_entrys_name_does_not_wedge_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let key = CacheKey::from_stored("k");
        put_raw(&store, key.clone(), Bytes::from_static(b"one")).await;
        let path = entry_path(dir.path());
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let miss = call(&store, StoreRequest::get(key.clone())).await;
        assert!(matches!(miss, Ok(StoreResponse::Blob(None))), "{miss:?}");
        let put = call(
            &store,
            StoreRequest::Put {
                key: key.clone(),
                blob: Bytes::from_static(b"two"),
                ttl: None,
            },
        )
        .await;
        let got = call(&store, StoreRequest::get(key.clone())).await;
        assert!(
            matches!(&got, Ok(StoreResponse::Blob(Some(b))) if &b[..] == b"two"),
            "put: {put:?}, get: {got:?}"
        );
    }

    /// A FIFO or a regular file where a shard directory belongs: misses, no block, and the next
    /// write replaces it.
    #[tokio::test]
    async fn disk_a_fifo_or_file_as_a_shard() {
        for kind in ["fifo", "file"] {
            let dir = tempfile::tempdir().unwrap();
            let store = DiskStore::open(dir.path()).unwrap();
            let key = CacheKey::from_stored("k");
            put_raw(&store, key.clone(), Bytes::from_static(b"one")).await;
            let shard = entry_path(dir.path()).parent().unwrap().to_owned();
            std::fs::remove_dir_all(&shard).unwrap();
            if kind == "fifo" {
                assert!(std::process::Command::new("mkfifo")
                    .arg(&shard)
                    .status()
                    .unwrap()
                    .success());
            } else {
                std::fs::write(&shard, b"x").unwrap();
            }
            let miss = call(&store, StoreRequest::get(key.clone())).await;
            assert!(
                matches!(miss, Ok(StoreResponse::Blob(None))),
                "{kind}: {miss:?}"
            );
            assert!(call(&store, StoreRequest::Keys).await.is_ok(), "{kind}");
            assert!(store.cleanup().await.is_ok(), "{kind}");
            let put = call(
                &store,
                StoreRequest::Put {
                    key: key.clone(),
                    blob: Bytes::from_static(b"two"),
                    ttl: None,
                },
            )
            .await;
            assert!(put.is_ok(), "{kind}: {put:?}");
            let got = call(&store, StoreRequest::get(key.clone())).await;
            assert!(
                matches!(&got, Ok(StoreResponse::Blob(Some(b))) if &b[..] == b"two"),
                "{kind}: {got:?}"
            );
        }
    }

    /// Links to `/` and to an outside directory in the cache directory (under a shard's name and
    /// another name): cleanup and clear never touch what is outside.
    #[tokio::test]
    async fn disk_cleanup_and_clear_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("00aa.hcc");
        std::fs::write(&victim, b"garbage, unparseable").unwrap();
        let tmp = outside.path().join(".tmp-1-1-0");
        std::fs::write(&tmp, b"t").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("ab")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("00")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("other")).unwrap();
        store.cleanup().await.unwrap();
        call(&store, StoreRequest::Clear).await.unwrap();
        assert!(
            victim.exists() && tmp.exists(),
            "cleanup/clear reached outside"
        );
    }

    /// Redis: a value exactly at the bound is returned, one byte over is not; `usize::MAX` is a
    /// plain GET; a prefix with glob characters lists and clears only its own keys.
    #[tokio::test]
    async fn redis_bounds_and_glob_prefix() {
        let redis = RedisServer::start().await;
        let store = RedisStore::builder(redis.url())
            .prefix("a*[b]?\\:")
            .connect()
            .await
            .unwrap();
        let other = RedisStore::builder(redis.url())
            .prefix("aX[b]?\\:")
            .connect()
            .await
            .unwrap();
        let other2 = RedisStore::builder(redis.url())
            .prefix("ab?\\:")
            .connect()
            .await
            .unwrap();
        let key = CacheKey::from_stored("k");
        put_raw(&store, key.clone(), Bytes::from(vec![7u8; 100])).await;
        put_raw(&other, key.clone(), Bytes::from_static(b"other")).await;
        put_raw(&other2, key.clone(), Bytes::from_static(b"other2")).await;
        let get = |max_len| {
            let store = store.clone();
            let key = key.clone();
            async move {
                match store
                    .oneshot(StoreRequest::Get { key, max_len })
                    .await
                    .unwrap()
                {
                    StoreResponse::Blob(b) => b.map(|b| b.len()),
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(get(100).await, Some(100));
        assert_eq!(get(99).await, None);
        assert_eq!(get(usize::MAX).await, Some(100));
        assert_eq!(get(usize::MAX - 1).await, Some(100));
        assert_eq!(get(0).await, None);
        match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
            StoreResponse::Keys(keys) => assert_eq!(keys, vec![key.clone()]),
            other => panic!("{other:?}"),
        }
        store.clone().oneshot(StoreRequest::Clear).await.unwrap();
        assert!(
            get_raw(&other, key.clone()).await.is_some(),
            "Clear removed another prefix's key"
        );
        assert!(
            get_raw(&other2, key.clone()).await.is_some(),
            "Clear removed another prefix's key"
        );
        assert!(get_raw(&store, key.clone()).await.is_none());
    }
}

// ---------------------------------------------------------------- more probes

/// An entry keyed by a Host header is listed with the connection URI; the Inspector's URL
/// operations on what it lists (delete_url of the listed URL, delete_matching on the Host) must
/// reach it.
#[tokio::test]
#[ignore = "known gap: the entry's URL is the request URI; the Host it was keyed with is not stored"]
async fn inspector_reaches_entries_keyed_by_a_host_header() {
    let origin = Origin::fixed("max-age=600", "tenant").await;
    let layer = CacheLayer::new(MemoryStore::default()).secret_key(test_key());
    let mut client = cached_client(layer.clone());
    let url = origin.url("/t");
    send(
        &mut client,
        Request::get(url.as_str())
            .header("host", "tenant-a.example")
            .body(Empty::new())
            .unwrap(),
    )
    .await
    .unwrap();
    let inspector = layer.inspector();
    let listed = inspector.entries().await.unwrap().entries[0].url.clone();
    let by_url = inspector.delete_url(&listed).await.unwrap();
    let by_glob = inspector
        .delete_matching("tenant-a.example/*")
        .await
        .unwrap();
    let left = inspector.count().await.unwrap();
    assert_eq!(
        left, 0,
        "listed as {listed}; delete_url(listed) removed {by_url}; \
         delete_matching(\"tenant-a.example/*\") removed {by_glob}"
    );
}

/// `not_before` also bounds stale-if-error: an old entry is not served when the origin fails.
#[tokio::test]
async fn not_before_applies_to_stale_if_error() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let n = Arc::new(AtomicUsize::new(0));
    let origin = Origin::start(move |_| {
        let status = if n.fetch_add(1, Ordering::SeqCst) == 0 {
            200
        } else {
            503
        };
        Response::builder()
            .status(status)
            .header("cache-control", "max-age=1, stale-if-error=86400")
            .body(Full::new(Bytes::from_static(b"old")))
            .unwrap()
    })
    .await;
    let clock = clock();
    let url = origin.url("/sie");
    let base = layer(&clock).serve_stale_on_error(secs(86400));
    get(&mut cached_client(base.clone()), &url).await.unwrap();
    clock.advance(secs(60));
    let stale = get(&mut cached_client(base.clone()), &url).await.unwrap();
    assert_eq!(stale.cache, Some(CacheStatus::StaleIfError), "control");
    let bounded = base.not_before(hyper_client_cache::Clock::now(&clock));
    let r = get(&mut cached_client(bounded), &url).await.unwrap();
    assert_eq!(r.status, 503, "{:?}", r.cache);
}

/// Odd request targets (asterisk, authority-form, empty or at-only userinfo) and an odd Host
/// never panic the layer (stored_uri / log_uri / target_uri).
#[tokio::test]
async fn odd_uris_do_not_panic() {
    use tower::{Service, ServiceBuilder, ServiceExt};
    let origin = tower::service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(
            Response::builder()
                .header("cache-control", "max-age=600")
                .header("location", "http://e.com/")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
    });
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()).secret_key(test_key()))
        .service(origin);
    for (uri, host) in [
        ("*", None),
        ("e.com:443", None),
        ("http://@e.com/", None),
        ("http://a:@e.com/?token", None),
        ("http://e.com/?=SECRET&&;", Some("a@b")),
        ("/relative?token=1", Some("[::1]:80")),
        ("/relative", Some("bad host with spaces")),
    ] {
        for method in [http::Method::GET, http::Method::POST] {
            let mut b = Request::builder().method(method).uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let fut = svc
                .ready()
                .await
                .unwrap()
                .call(b.body(Empty::new()).unwrap());
            let joined = tokio::spawn(fut).await;
            assert!(joined.is_ok(), "{uri} {host:?} panicked");
        }
    }
}

/// Exactly MAX_FIELDS (4096) header fields are stored and served; 4097 are not stored; the
/// caller gets every field either way.
#[tokio::test]
async fn fields_exactly_at_the_cap() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::{Service, ServiceBuilder, ServiceExt};
    for (total, stored) in [(10usize, true), (4000, true), (4096, true), (4097, false)] {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let origin = tower::service_fn(move |_req: Request<Empty<Bytes>>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut response = Response::new(Full::new(Bytes::from_static(b"cap")));
            let h = response.headers_mut();
            h.insert("cache-control", HeaderValue::from_static("max-age=600"));
            // With its own `Date`: a response without one gets one when stored (RFC 9110
            // §6.6.1), which counts against the cap like any field.
            let now = httpdate::fmt_http_date(std::time::SystemTime::now());
            h.insert("date", HeaderValue::from_str(&now).unwrap());
            for i in 0..total - 2 {
                h.append("x-n", HeaderValue::from(i));
            }
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        let mut svc = ServiceBuilder::new()
            .layer(CacheLayer::new(MemoryStore::default()).secret_key(test_key()))
            .service(origin);
        for _ in 0..2 {
            let r = Request::get("http://e.com/cap").body(Empty::new()).unwrap();
            let response = svc.ready().await.unwrap().call(r).await.unwrap();
            assert_eq!(response.headers().get_all("x-n").iter().count(), total - 2);
            let body = http_body_util::BodyExt::collect(response.into_body()).await;
            assert_eq!(body.unwrap().to_bytes(), "cap");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            if stored { 1 } else { 2 },
            "{total}"
        );
    }
}
