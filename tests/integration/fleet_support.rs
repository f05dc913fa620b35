//! What the fleet tests (near cache, tag index, cluster) share: store calls that panic with the
//! store's error, a raw Redis connection, bounded polling, and proxies in front of Redis that
//! hold back or cut a chosen command (to interleave one client's round trips with another's).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_client_cache::{CacheKey, Store, StoreRequest, StoreResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// One store call; panics with the store's error.
pub async fn call<S: Store>(store: &S, request: StoreRequest) -> StoreResponse {
    match store.clone().oneshot(request).await {
        Ok(answer) => answer,
        Err(e) => panic!(
            "store failed: {}",
            Into::<hyper_client_cache::BoxError>::into(e)
        ),
    }
}

/// `value` under `key` for 600 s.
pub async fn put<S: Store>(store: &S, key: &CacheKey, value: &str) {
    let request = StoreRequest::Put {
        key: key.clone(),
        blob: Bytes::from(value.to_owned()),
        ttl: Some(Duration::from_secs(600)),
    };
    match call(store, request).await {
        StoreResponse::Done => {}
        other => panic!("{other:?}"),
    }
}

/// What `key` holds, as text.
pub async fn read<S: Store>(store: &S, key: &CacheKey) -> Option<String> {
    match call(store, StoreRequest::get(key.clone())).await {
        StoreResponse::Blob(b) => b.map(|b| String::from_utf8(b.to_vec()).unwrap()),
        other => panic!("{other:?}"),
    }
}

/// A `PutTagged` of a fixed blob with one tag.
pub fn tagged(key: &CacheKey, ttl: Duration, tag: &str) -> StoreRequest {
    StoreRequest::PutTagged {
        key: key.clone(),
        blob: Bytes::from_static(b"tagged entry"),
        ttl: Some(ttl),
        tags: vec![tag.to_owned()],
    }
}

/// A `PurgeTag`.
pub fn purge(tag: &str) -> StoreRequest {
    StoreRequest::PurgeTag {
        tag: tag.to_owned(),
    }
}

/// A connection of the test's own to the server at `url`.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Whether the (full) Redis key exists.
pub async fn exists(conn: &mut redis::aio::MultiplexedConnection, full: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(full)
        .query_async(conn)
        .await
        .unwrap();
    n == 1
}

/// Polls (bounded: 20 s; a loaded 2-core machine running the whole suite has taken over 5 s
/// for 30 invalidations of a cluster) until `cond` holds.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..4000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Kills the client of the server on `port` that has tracking on (a near cache's tracking
/// connection), as `CLIENT KILL ID` does.
pub async fn kill_tracking_client(port: u16) {
    let mut conn = raw(&format!("redis://127.0.0.1:{port}/")).await;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    let id = list
        .lines()
        .find(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .expect("a client with tracking on")
        .to_owned();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A proxy that, while the gate is shut, holds back a client chunk (then forwards it once the
/// gate opens): the chunk containing the needle, or with [`gated_proxy_after`] the first chunk
/// after it ("whatever the writer does once it has checked").
pub struct Gate {
    pub open: tokio::sync::watch::Sender<bool>,
    pub held: Arc<AtomicUsize>,
}

/// See [`Gate`]: holds the chunk that contains `needle`.
pub async fn gated_proxy(redis_port: u16, needle: &'static [u8]) -> (u16, Gate) {
    gated(redis_port, needle, false).await
}

/// See [`Gate`]: holds the first chunk after one that contains `after`.
pub async fn gated_proxy_after(redis_port: u16, after: &'static [u8]) -> (u16, Gate) {
    gated(redis_port, after, true).await
}

async fn gated(redis_port: u16, needle: &'static [u8], next: bool) -> (u16, Gate) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open, watch) = tokio::sync::watch::channel(true);
    let held = Arc::new(AtomicUsize::new(0));
    let held2 = held.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", redis_port))
                .await
                .unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let mut watch = watch.clone();
            let held = held2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut seen = false;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    let matches = chunk.windows(needle.len()).any(|w| w == needle);
                    let hold = if next { seen } else { matches };
                    if hold && !*watch.borrow() {
                        seen = false;
                        held.fetch_add(1, SeqCst);
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            watch.wait_for(|open| *open),
                        )
                        .await;
                    }
                    seen |= matches;
                    if sw.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, Gate { open, held })
}

/// A proxy in front of Redis that, while armed, cuts a connection (both ways, the chunk not
/// forwarded) when a client chunk contains its needle: a connection reset at the worst moment.
pub struct Cutter {
    /// Where clients connect.
    pub port: u16,
    /// Cut while set. A proxy made with `once` disarms itself at the first cut.
    pub armed: Arc<AtomicBool>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

/// See [`Cutter`].
pub async fn cutting_proxy(redis_port: u16, needle: &'static [u8], once: bool) -> Cutter {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let armed = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (armed2, accepted2) = (armed.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            accepted2.fetch_add(1, SeqCst);
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let back = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let armed = armed2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    let cut = chunk.windows(needle.len()).any(|w| w == needle)
                        && if once {
                            armed.swap(false, SeqCst)
                        } else {
                            armed.load(SeqCst)
                        };
                    if cut || sw.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    Cutter {
        port,
        armed,
        accepted,
    }
}

/// Waits (bounded) until `n` chunks are held.
pub async fn wait_held(gate: &Gate, n: usize) {
    for _ in 0..1000 {
        if gate.held.load(SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("nothing held");
}
