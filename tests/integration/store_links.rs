//! `DiskStore` never follows a symbolic link below its directory: a shard directory replaced by a
//! link to another directory is not written, read, listed or cleaned through. The cache
//! directory itself may be a link (the user's choice).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{CacheKey, DiskStore, StoreRequest, StoreResponse};
use tower::ServiceExt;

use crate::common::*;

/// The files (or, at the top, the shard directories) in `dir`; the directory's size record
/// (`.size`) is not one of them.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".size")
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The entry file of `key` once written, and its bytes.
async fn entry_of(store: &DiskStore, key: &CacheKey) -> (PathBuf, Vec<u8>) {
    put_raw(store, key.clone(), Bytes::from_static(b"planted entry")).await;
    for shard in files_in(store.dir()) {
        for file in files_in(&shard) {
            if file.extension().is_some_and(|e| e == "hcc") {
                let bytes = std::fs::read(&file).unwrap();
                return (file, bytes);
            }
        }
    }
    panic!("no entry file written");
}

async fn keys(store: &DiskStore) -> Vec<CacheKey> {
    match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
        StoreResponse::Keys(keys) => keys,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_shard_directory_replaced_by_a_link_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let k = key_for("http://links/a");
    let (path, bytes) = entry_of(&store, &k).await;
    let shard = path.parent().unwrap().to_owned();
    let name = path.file_name().unwrap().to_owned();
    // The shard becomes a link to a directory outside the cache, holding a valid entry for `k`
    // and a junk file `cleanup` would remove.
    std::fs::remove_dir_all(&shard).unwrap();
    std::os::unix::fs::symlink(outside.path(), &shard).unwrap();
    let planted = outside.path().join(&name);
    std::fs::write(&planted, &bytes).unwrap();
    let junk = outside.path().join("junk.hcc");
    std::fs::write(&junk, b"junk").unwrap();
    // What `cleanup` takes for a crashed writer's debris: a temporary file an hour old.
    let stale = outside.path().join(".tmp-1-1-0000000000000000");
    let file = std::fs::File::create(&stale).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(file);

    let read = get_raw(&store, k.clone()).await;
    println!("read through the link: {read:?}");
    assert_eq!(read, None, "a blob outside the cache directory was served");
    let listed = keys(&store).await;
    println!("listed through the link: {listed:?}");
    assert!(listed.is_empty(), "keys listed from outside: {listed:?}");

    let cleaned = store.cleanup().await;
    println!(
        "cleanup: {cleaned:?}; outside now holds {:?}",
        files_in(outside.path())
    );
    assert!(
        junk.exists() && stale.exists(),
        "cleanup removed a file outside the cache directory"
    );
    store.clone().oneshot(StoreRequest::Clear).await.unwrap();
    store
        .clone()
        .oneshot(StoreRequest::Delete { key: k.clone() })
        .await
        .unwrap();
    println!(
        "after clear and delete, outside holds {:?}",
        files_in(outside.path())
    );
    assert_eq!(
        std::fs::read(&planted).ok().as_deref(),
        Some(&bytes[..]),
        "clear or delete removed a file outside the cache directory"
    );

    let put = StoreRequest::Put {
        key: k.clone(),
        blob: Bytes::from_static(b"written after"),
        ttl: Some(Duration::from_secs(600)),
    };
    let wrote = store.clone().oneshot(put).await;
    println!(
        "write: {wrote:?}; outside now holds {:?}",
        files_in(outside.path())
    );
    assert_eq!(
        files_in(outside.path()),
        [stale.clone(), planted.clone(), junk.clone()],
        "a write created a file outside the cache directory"
    );
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        bytes,
        "a write replaced a file outside"
    );
    // The link is replaced by a real shard directory: the store works again.
    assert!(wrote.is_ok());
    assert_eq!(
        get_raw(&store, k.clone()).await.as_deref(),
        Some(&b"written after"[..])
    );
    assert!(!std::fs::symlink_metadata(&shard).unwrap().is_symlink());
}

/// The cache directory itself being a link (say /var/cache -> /data) is the user's choice and
/// keeps working.
#[tokio::test]
async fn the_cache_directory_itself_may_be_a_link() {
    let real = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let link = parent.path().join("cache");
    std::os::unix::fs::symlink(real.path(), &link).unwrap();
    let store = DiskStore::open(&link).unwrap();
    let k = key_for("http://links/dir");
    put_raw(&store, k.clone(), Bytes::from_static(b"through the link")).await;
    assert_eq!(
        get_raw(&store, k.clone()).await.as_deref(),
        Some(&b"through the link"[..])
    );
    assert_eq!(keys(&store).await, std::slice::from_ref(&k));
    assert_eq!(store.cleanup().await.unwrap(), 0);
    let shards = files_in(real.path());
    assert_eq!(shards.len(), 1, "the entry is in the real directory");
    store.clone().oneshot(StoreRequest::Clear).await.unwrap();
    assert!(get_raw(&store, k).await.is_none());
}
