//! Several processes over one `DiskStore` directory (#21 item 5): the byte bound holds across
//! them, and the temporary files of writers that were killed are removed by the next `cleanup`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_client_cache::{CacheKey, DiskStore, StoreRequest};
use tower::ServiceExt;

const CHILD_ENV: &str = "HCC_TEST_DISK_WRITER";
const MAX_BYTES: u64 = 1 << 20;
const ENTRY: usize = 16 << 10;

/// Runs as a child process: writes 16 KiB entries under fresh keys into the directory, as fast
/// as it can, until killed (or 20 000 writes).
#[tokio::test]
#[ignore = "a helper: runs only as a child process of the test below"]
async fn child_disk_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, id) = spec.split_once('|').unwrap();
    let store = DiskStore::builder(dir).max_bytes(MAX_BYTES).open().unwrap();
    let blob = Bytes::from(vec![b'x'; ENTRY]);
    for i in 0..20_000 {
        let put = StoreRequest::Put {
            key: CacheKey::from_stored(format!("writer-{id}-{}-{i}", std::process::id())),
            blob: blob.clone(),
            ttl: None,
        };
        store.clone().oneshot(put).await.unwrap();
    }
}

fn spawn_writer(dir: &Path, id: usize) -> Child {
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, m)| m);
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("{module}::child_disk_writer"),
            "--ignored",
            "--quiet",
        ])
        .env(CHILD_ENV, format!("{}|{id}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Bytes of entry files, and the names of temporary files, as a `du` would see them.
fn measure(dir: &Path) -> (u64, Vec<String>) {
    let (mut bytes, mut tmp) = (0, Vec::new());
    for shard in std::fs::read_dir(dir).unwrap().flatten() {
        if !shard.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".hcc") {
                bytes += f.metadata().map_or(0, |m| m.len());
            } else if name.starts_with(".tmp-") {
                tmp.push(name);
            }
        }
    }
    (bytes, tmp)
}

#[tokio::test]
async fn four_processes_with_kills_stay_within_the_bound_and_leave_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut writers: Vec<Child> = (0..4).map(|i| spawn_writer(dir.path(), i)).collect();
    let started = Instant::now();
    let mut last_kill = Instant::now();
    let mut next = 0;
    let (mut peak, mut samples, mut kills) = (0u64, 0usize, 0usize);
    // Sampled every 10 ms for 4 s; one writer killed (SIGKILL) and replaced every 500 ms.
    while started.elapsed() < Duration::from_secs(4) {
        let (bytes, _) = measure(dir.path());
        peak = peak.max(bytes);
        samples += 1;
        if last_kill.elapsed() >= Duration::from_millis(500) {
            let victim = next % writers.len();
            let _ = writers[victim].kill();
            let _ = writers[victim].wait();
            writers[victim] = spawn_writer(dir.path(), 10 + next);
            next += 1;
            kills += 1;
            last_kill = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in &mut writers {
        let _ = w.kill();
        let _ = w.wait();
    }
    eprintln!(
        "peak {peak} bytes = {:.3} x the bound ({samples} samples, {kills} kills)",
        peak as f64 / MAX_BYTES as f64
    );
    assert!(
        samples > 100 && kills >= 6,
        "{samples} samples, {kills} kills"
    );
    assert!(
        peak as f64 <= MAX_BYTES as f64 * 1.1,
        "the directory reached {peak} bytes, more than 1.1 x {MAX_BYTES}"
    );
    assert!(
        peak > MAX_BYTES / 2,
        "the writers did fill it ({peak} bytes)"
    );

    // Every writer is dead now: the next cleanup removes every temporary file at once (not
    // after ten minutes).
    let store = DiskStore::builder(dir.path())
        .max_bytes(MAX_BYTES)
        .open()
        .unwrap();
    store.cleanup().await.unwrap();
    let (_, tmp) = measure(dir.path());
    assert!(tmp.is_empty(), "left behind: {tmp:?}");
    // And the size record agrees with the directory again.
    assert_eq!(store.size_bytes(), measure(dir.path()).0);
}
