//! The cache's blob bound reaches the stores: an oversized value planted in a store is answered
//! as a miss without being read (disk) or transferred (Redis).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{CacheLayer, CacheStatus, DiskStore, RedisStore, StoreResponse};
use tower::ServiceExt;

use crate::common::*;

/// `store`, recording the length of every blob it answers a lookup with.
fn recording<St: hyper_client_cache::Store>(
    store: St,
) -> (impl hyper_client_cache::Store, Arc<Mutex<Vec<usize>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let store = store.map_response(move |response: StoreResponse| {
        if let StoreResponse::Blob(Some(blob)) = &response {
            log.lock().unwrap().push(blob.len());
        }
        response
    });
    (store, seen)
}

/// A valid entry file of exactly the layer's bound is served; one byte over it, the store
/// answers a miss and never hands the blob over.
#[tokio::test]
async fn a_disk_blob_over_the_layers_bound_is_never_handed_over() {
    let origin = Origin::fixed("max-age=600", "bounded body").await;
    let dir = tempfile::tempdir().unwrap();
    let url = origin.url("/bounded");
    let mut seed =
        cached_client(CacheLayer::new(DiskStore::open(dir.path()).unwrap()).secret_key(test_key()));
    get(&mut seed, &url).await.unwrap();
    let blob_len = get_raw(&DiskStore::open(dir.path()).unwrap(), key_for(&url))
        .await
        .expect("the seeded entry")
        .len();
    for (bound, expected) in [
        (blob_len, CacheStatus::Hit),
        (blob_len - 1, CacheStatus::Miss),
    ] {
        let (store, answered) = recording(DiskStore::open(dir.path()).unwrap());
        let mut client = cached_client(
            CacheLayer::new(store)
                .secret_key(test_key())
                .max_blob_size(bound),
        );
        let got = get(&mut client, &url).await.unwrap();
        let answered = answered.lock().unwrap().clone();
        println!(
            "bound {bound} (blob {blob_len}): {:?}, store answered blobs of {answered:?}",
            got.cache
        );
        assert_eq!(got.cache, Some(expected), "bound {bound}");
        assert!(
            answered.iter().all(|&len| len <= bound),
            "bound {bound}: the store handed over a blob of {answered:?} bytes"
        );
    }
}

const SPARSE_CHILD_ENV: &str = "HCC_TEST_SPARSE_CHILD";
/// Far larger than the layer's bound, but under the store's own 4 GiB entry limit.
const SPARSE_LEN: u64 = 1 << 30;

/// Runs as a child process of [`a_sparse_disk_file_over_the_bound_is_not_read`], so that its
/// peak memory is its own: one lookup of an entry whose file is a 1 GiB sparse file.
#[cfg(target_os = "linux")]
#[tokio::test]
#[ignore = "a helper: runs only as a child process of the sparse-file test"]
async fn child_sparse_lookup() {
    let Ok(dir) = std::env::var(SPARSE_CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let origin = Origin::fixed("no-store", "from the origin").await;
    let url = origin.url("/sparse");
    let store = DiskStore::open(&dir).unwrap();
    put_raw(&store, key_for(&url), Bytes::from_static(b"entry")).await;
    let path = entry_files(&dir).pop().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(SPARSE_LEN).unwrap();
    drop(file);
    let mut client = cached_client(
        CacheLayer::new(store)
            .secret_key(test_key())
            .max_blob_size(64 << 10)
            // Long enough for a read of the whole file to finish (and show in the peak).
            .store_timeout(Duration::from_secs(120)),
    );
    let got = get(&mut client, &url).await.unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    println!("SPARSE-CHILD peak memory {peak_kib} KiB for a {SPARSE_LEN}-byte sparse entry file");
    // `no-store`: the origin's answer is not written over the planted file.
    assert_eq!(got.cache, Some(CacheStatus::NotCacheable));
    assert_eq!(got.body, "from the origin");
    assert!(
        peak_kib < 256 << 10,
        "peak memory {peak_kib} KiB: the sparse file was read"
    );
    // Over this request's bound but within the store's own limit: perhaps another cache's
    // (with a larger bound) entry; left in place.
    assert_eq!(
        std::fs::metadata(&path).map(|m| m.len()).ok(),
        Some(SPARSE_LEN)
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_sparse_disk_file_over_the_bound_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = module_path!();
    let module = path.split_once("::").map_or(path, |(_, m)| m);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::child_sparse_lookup"),
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SPARSE_CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "the child process failed");
    assert!(
        stdout.contains("1 passed"),
        "the child did not run the lookup"
    );
}

async fn net_out_bytes(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// A value over the layer's bound planted in Redis is a miss, and is not sent to the client.
#[tokio::test]
async fn a_redis_value_over_the_bound_is_not_transferred() {
    let redis = RedisServer::start().await;
    let origin = Origin::fixed("max-age=600", "small").await;
    let url = origin.url("/big");
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let planted = 4usize << 20;
    for prefix in ["hcc:", "svc:a:"] {
        let name = format!("{prefix}{}", key_for(&url));
        let _: () = redis::cmd("SET")
            .arg(&name)
            .arg(vec![b'x'; planted])
            .query_async(&mut raw)
            .await
            .unwrap();
        let store = RedisStore::builder(redis.url())
            .prefix(prefix)
            .connect()
            .await
            .unwrap();
        let mut client = cached_client(
            CacheLayer::new(store)
                .secret_key(test_key())
                .max_blob_size(64 << 10)
                .store_timeout(Duration::from_secs(5)),
        );
        let before = net_out_bytes(&mut raw).await;
        let got = get(&mut client, &url).await.unwrap();
        let after = net_out_bytes(&mut raw).await;
        println!(
            "prefix {prefix}: {:?}, Redis sent {} bytes for a lookup of a {planted}-byte value",
            got.cache,
            after - before
        );
        assert_eq!(got.cache, Some(CacheStatus::Miss), "prefix {prefix}");
        assert!(
            after - before < 64 << 10,
            "prefix {prefix}: {} bytes sent: the planted value was transferred",
            after - before
        );
    }
}
