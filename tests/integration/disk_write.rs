//! A large stored miss is written to the store as the body passes (`StoreRequest::PutStream`),
//! never held whole: `DiskStore` writes it to a temporary file and renames it at the end; a body
//! that fails leaves nothing (no entry, no temporary file); a store that does not stream gets a
//! `PutParts` at the end; a store slower than the origin sets the body's pace and gets the entry;
//! a store that fails, or stalls for its timeout, loses the entry (counted), never the caller's
//! response; past `max_streamed_writes`, a streamed write is refused at once (counted).

use std::convert::Infallible;
use std::future::ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper_client_cache::store::{BlobWriter, Incoming, IncomingBlob};
use hyper_client_cache::{
    BoxError, CacheBody, CacheLayer, CacheMetrics, CacheStatus, DiskStore, Mac, StoreRequest,
    StoreResponse,
};
use tokio::sync::Notify;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common::*;

pub(crate) const LEN: usize = 3 * (1 << 20) + 777;
const CHUNK: usize = 100_000;

pub(crate) fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 4093) as u8).collect()
}

/// What the origin sends.
#[derive(Clone, Copy)]
enum Send {
    /// `len` bytes in chunks, with a `Content-Length` or without.
    Body { len: usize, sized: bool },
    /// `len` bytes, then an error.
    Failing { len: usize },
}

/// `opened` is notified when the store answered a `PutStream`: a failing body fails only then,
/// so that the write it aborts is one that was opened, however slow the blocking pool is.
fn response(send: Send, opened: Arc<Notify>) -> http::Response<BoxBody<Bytes, BoxError>> {
    let (len, fail, sized) = match send {
        Send::Body { len, sized } => (len, false, sized),
        Send::Failing { len } => (len, true, false),
    };
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = body(len)
        .chunks(CHUNK)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let failure = futures_util::stream::once(async move {
        opened.notified().await;
        Err::<Frame<Bytes>, BoxError>("the origin's connection broke".into())
    })
    .take(usize::from(fail));
    let frames = futures_util::stream::iter(frames).chain(failure);
    let mut builder = http::Response::builder().header("cache-control", "max-age=600");
    if sized {
        builder = builder.header("content-length", len);
    }
    builder
        // A chunk at a time, letting other tasks run between them, as a socket's reads do.
        .body(BodyExt::boxed(StreamBody::new(frames.then(
            |frame| async move {
                tokio::task::yield_now().await;
                frame
            },
        ))))
        .unwrap()
}

/// What the wrapped store does besides forwarding to its `DiskStore`.
#[derive(Clone, Copy)]
pub(crate) enum Behaviour {
    Forward,
    /// Answers `PutStream` with `Unsupported` (a store that does not stream).
    NoStreams,
    /// Takes `n` bytes of a streamed write, then fails it (a full disk).
    FailAfter(usize),
    /// Never takes a byte of a streamed write.
    Stall,
    /// Writes through to its `DiskStore`, after a pause of 1.5 s at the first buffer (within
    /// the store timeout): a disk that falls behind the origin for a while.
    Slow,
    /// Forwards everything but `Delete`, which fails.
    FailDeletes,
}

/// A `DiskStore` that records the requests it saw (and `opened` once a `PutStream` was answered).
#[derive(Clone)]
pub(crate) struct Watch {
    pub(crate) inner: DiskStore,
    pub(crate) seen: Arc<Mutex<Vec<&'static str>>>,
    pub(crate) behaviour: Behaviour,
    pub(crate) stalled: Arc<Mutex<Vec<IncomingBlob>>>,
    /// Notified when a forwarded `PutStream` was answered.
    pub(crate) opened: Arc<Notify>,
}

impl Watch {
    pub(crate) fn seen(&self) -> Vec<&'static str> {
        self.seen.lock().unwrap().clone()
    }
    pub(crate) fn count(&self, what: &str) -> usize {
        self.seen().iter().filter(|s| **s == what).count()
    }
}

impl Service<StoreRequest> for Watch {
    type Response = StoreResponse;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<StoreResponse, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: StoreRequest) -> Self::Future {
        let kind = match &req {
            StoreRequest::Get { .. } => "get",
            StoreRequest::Put { .. } => "put",
            StoreRequest::PutTagged { .. } => "put_tagged",
            StoreRequest::PutParts { .. } => "put_parts",
            StoreRequest::PutStream { .. } => "put_stream",
            StoreRequest::Delete { .. } => "delete",
            _ => "other",
        };
        self.seen.lock().unwrap().push(kind);
        let streaming = matches!(req, StoreRequest::PutStream { .. });
        if let (Behaviour::FailDeletes, StoreRequest::Delete { .. }) = (self.behaviour, &req) {
            return Box::pin(ready(Err("the store is read-only for deletes".into())));
        }
        match (self.behaviour, streaming) {
            (Behaviour::NoStreams, true) => Box::pin(ready(Ok(StoreResponse::Unsupported))),
            (Behaviour::FailAfter(n), true) => {
                let (writer, mut incoming) = BlobWriter::channel();
                tokio::spawn(async move {
                    let mut got = 0;
                    while let Some(item) = incoming.next().await {
                        if let Incoming::Data(data) = item {
                            got += data.len();
                            if got >= n {
                                return incoming.finish(Err("no space left on device".into()));
                            }
                        }
                    }
                });
                Box::pin(ready(Ok(StoreResponse::Writer(writer))))
            }
            (Behaviour::Stall, true) => {
                let (writer, incoming) = BlobWriter::channel();
                self.stalled.lock().unwrap().push(incoming);
                Box::pin(ready(Ok(StoreResponse::Writer(writer))))
            }
            (Behaviour::Slow, true) => {
                let inner = self.inner.clone().oneshot(req);
                Box::pin(async move {
                    let Ok(StoreResponse::Writer(mut disk)) = inner.await else {
                        return Err("the disk store did not stream".into());
                    };
                    let (writer, mut incoming) = BlobWriter::channel();
                    tokio::spawn(async move {
                        let mut n = 0;
                        while let Some(item) = incoming.next().await {
                            match item {
                                Incoming::Data(data) => {
                                    // A disk that stops for a while (a flush, a busy device)
                                    // after the first buffer, then keeps up.
                                    n += 1;
                                    if n == 1 {
                                        tokio::time::sleep(Duration::from_millis(1500)).await;
                                    }
                                    if disk.append(data).is_err() {
                                        return incoming.finish(Err("disk writer closed".into()));
                                    }
                                }
                                Incoming::Commit(prefix) => {
                                    let answer = disk.commit(prefix).await;
                                    return incoming.finish(answer);
                                }
                                _ => return incoming.finish(Err("unknown item".into())),
                            }
                        }
                    });
                    Ok(StoreResponse::Writer(writer))
                })
            }
            _ => {
                let fut = self.inner.clone().oneshot(req);
                let seen = self.seen.clone();
                let notify = self.opened.clone();
                Box::pin(async move {
                    let answer = fut.await?;
                    if streaming {
                        seen.lock().unwrap().push("opened");
                        notify.notify_one();
                    }
                    Ok(answer)
                })
            }
        }
    }
}

pub(crate) type Svc = tower::util::BoxCloneService<
    http::Request<()>,
    http::Response<CacheBody<BoxBody<Bytes, BoxError>>>,
    BoxError,
>;

/// Unsigned, BLAKE3-signed, HMAC-signed, encrypted.
pub(crate) const MODES: [u8; 4] = [0, 1, 2, 3];

/// `layer` in one of [`MODES`].
pub(crate) fn with_mode<St: hyper_client_cache::Store>(
    layer: CacheLayer<St>,
    mode: u8,
) -> CacheLayer<St> {
    match mode {
        0 => layer,
        1 => layer.secret_key(test_key()).mac(Mac::Blake3),
        2 => layer.secret_key(test_key()).mac(Mac::HmacSha256),
        _ => layer.encrypt(test_key()),
    }
}

fn cache(
    mode: u8,
    dir: &std::path::Path,
    behaviour: Behaviour,
    send: Send,
) -> (Svc, Watch, CacheMetrics) {
    cache_over(mode, DiskStore::open(dir).unwrap(), behaviour, send)
}

fn cache_over(
    mode: u8,
    disk: DiskStore,
    behaviour: Behaviour,
    send: Send,
) -> (Svc, Watch, CacheMetrics) {
    let store = Watch {
        inner: disk,
        seen: Arc::default(),
        behaviour,
        stalled: Arc::default(),
        opened: Arc::default(),
    };
    let opened = store.opened.clone();
    // A store that stalls makes the body wait this long before the write is given up.
    let timeout = match behaviour {
        Behaviour::Stall => Duration::from_millis(300),
        _ => Duration::from_secs(30),
    };
    let layer = with_mode(
        CacheLayer::new(store.clone())
            .store_timeout(timeout)
            .max_body_size(64 << 20),
        mode,
    );
    let metrics = layer.metrics();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(move |_req: http::Request<()>| {
            ready(Ok::<_, Infallible>(response(send, opened.clone())))
        }));
    (Svc::new(svc), store, metrics)
}

/// Reads `path` as a miss of `LEN` bytes the store refuses: the caller's response whole, nothing
/// stored, the refusal counted as one and not as a store write error.
async fn read_refused(svc: &mut Svc, metrics: &CacheMetrics, path: &str) {
    let (status, got, err) = read(svc, path).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(status, Some(CacheStatus::Miss));
    assert!(got == body(LEN), "the caller's response is whole");
    assert_eq!(metrics.stored(), 0);
    assert_eq!(metrics.store_refused(), 1, "the refusal is counted");
    assert_eq!(
        metrics.store_write_errors(),
        0,
        "as a refusal, not an error"
    );
}

pub(crate) fn request(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://example.test/{path}"))
        .body(())
        .unwrap()
}

/// The body's bytes, and the error that ended it.
async fn read(svc: &mut Svc, path: &str) -> (Option<CacheStatus>, Vec<u8>, Option<BoxError>) {
    let response = svc
        .ready()
        .await
        .unwrap()
        .call(request(path))
        .await
        .unwrap();
    let status = response.extensions().get::<CacheStatus>().cloned();
    let (got, err) = crate::entry_modes::read(response.into_body()).await;
    (status, got, err)
}

/// The temporary files in a `DiskStore` directory.
pub(crate) fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).unwrap().flatten() {
        if shard.path().is_dir() {
            for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
                if f.file_name().to_string_lossy().starts_with(".tmp-") {
                    out.push(f.path());
                }
            }
        }
    }
    out
}

/// Waits (bounded) until `done`; the background work it waits for has no other signal.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_large_miss_is_written_as_it_passes_and_hits_in_every_mode() {
    for sized in [true, false] {
        for mode in MODES {
            let dir = tempfile::tempdir().unwrap();
            let send = Send::Body { len: LEN, sized };
            let (mut svc, store, metrics) = cache(mode, dir.path(), Behaviour::Forward, send);
            let (status, got, err) = read(&mut svc, "large").await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(status, Some(CacheStatus::Miss));
            assert!(got == body(LEN));
            assert_eq!(metrics.stored(), 1, "mode {mode} sized {sized}");
            assert_eq!(
                (store.count("put_stream"), store.count("put_parts")),
                (1, 0),
                "mode {mode} sized {sized}: {:?}",
                store.seen()
            );
            assert!(temp_files(dir.path()).is_empty());
            let (status, got, err) = read(&mut svc, "large").await;
            assert!(err.is_none(), "mode {mode} sized {sized}: {err:?}");
            assert_eq!(status, Some(CacheStatus::Hit), "mode {mode} sized {sized}");
            assert!(
                got == body(LEN),
                "mode {mode} sized {sized}: the hit differs"
            );
        }
    }
}

#[tokio::test]
async fn a_small_miss_takes_the_path_it_always_took() {
    for sized in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let send = Send::Body {
            len: 200_000,
            sized,
        };
        let (mut svc, store, metrics) = cache(1, dir.path(), Behaviour::Forward, send);
        let (_, got, _) = read(&mut svc, "small").await;
        assert_eq!(got.len(), 200_000);
        assert_eq!(metrics.stored(), 1);
        assert_eq!(store.seen(), ["get", "put_parts"], "sized {sized}");
    }
}

#[tokio::test]
async fn a_body_that_fails_midway_leaves_no_entry_and_no_temporary_file() {
    for mode in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let send = Send::Failing { len: 2 * LEN };
        let (mut svc, store, metrics) = cache(mode, dir.path(), Behaviour::Forward, send);
        let (_, got, err) = read(&mut svc, "broken").await;
        assert!(err.is_some());
        assert_eq!(got.len(), 2 * LEN, "the caller got what the origin sent");
        // The write was opened (a temporary file made), then aborted.
        assert_eq!(store.count("opened"), 1);
        eventually("the temporary file removed", || {
            temp_files(dir.path()).is_empty()
        })
        .await;
        assert!(entry_files(dir.path()).is_empty());
        assert_eq!(metrics.stored(), 0);
        assert_eq!(
            metrics.store_write_errors(),
            0,
            "the origin's failure, not the store's"
        );
    }
}

#[tokio::test]
async fn a_store_that_does_not_stream_gets_the_entry_in_parts_and_is_not_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let send = Send::Body {
        len: LEN,
        sized: false,
    };
    let (mut svc, store, metrics) = cache(2, dir.path(), Behaviour::NoStreams, send);
    let (_, got, _) = read(&mut svc, "a").await;
    assert!(got == body(LEN));
    assert_eq!(store.seen(), ["get", "put_stream", "put_parts"]);
    let (_, got, _) = read(&mut svc, "b").await;
    assert!(got == body(LEN));
    assert_eq!(
        store.count("put_stream"),
        1,
        "remembered: {:?}",
        store.seen()
    );
    assert_eq!(store.count("put_parts"), 2);
    assert_eq!(metrics.stored(), 2);
    // Whole-write files (version 1) read as hits, streamed from disk.
    let (status, got, err) = read(&mut svc, "a").await;
    assert!(err.is_none());
    assert_eq!(status, Some(CacheStatus::Hit));
    assert!(got == body(LEN));
}

#[tokio::test]
async fn a_store_that_fails_or_falls_behind_loses_the_entry_not_the_response() {
    for (behaviour, len) in [
        (Behaviour::FailAfter(1 << 20), LEN),
        (Behaviour::Stall, 24 << 20),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let send = Send::Body { len, sized: false };
        let (mut svc, store, metrics) = cache(0, dir.path(), behaviour, send);
        let (status, got, err) = read(&mut svc, "x").await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(status, Some(CacheStatus::Miss));
        assert!(got == body(len), "the caller's response is whole");
        assert_eq!(
            metrics.store_write_errors(),
            1,
            "counted ({len}): {:?}",
            store.seen()
        );
        assert_eq!(metrics.stored(), 0);
        assert_eq!(store.count("put_stream"), 1);
        assert_eq!(store.count("put_parts"), 0);
        let (status, _, _) = read(&mut svc, "x").await;
        assert_eq!(status, Some(CacheStatus::Miss), "not stored");
    }
}

#[tokio::test]
async fn a_store_slower_than_the_origin_sets_the_pace_and_gets_the_entry() {
    // 40 MiB from an origin that never waits, into a store that pauses: the body would pass
    // what a write may hold (32 MiB), and without the body waiting for the store the entry
    // would be given up.
    for sized in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let len = 40 << 20;
        let send = Send::Body { len, sized };
        let (mut svc, store, metrics) = cache(0, dir.path(), Behaviour::Slow, send);
        let (status, got, err) = read(&mut svc, "x").await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(status, Some(CacheStatus::Miss));
        assert!(got == body(len), "the caller's response is whole");
        assert_eq!(metrics.store_write_errors(), 0, "{:?}", store.seen());
        assert_eq!(metrics.stored(), 1);
        let (status, got, err) = read(&mut svc, "x").await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(status, Some(CacheStatus::Hit));
        assert!(got == body(len));
        assert!(temp_files(dir.path()).is_empty());
    }
}

/// Opens a `PutStream` on the store directly.
async fn open_stream(store: &DiskStore, name: &str) -> StoreResponse {
    store
        .clone()
        .oneshot(StoreRequest::PutStream {
            key: hyper_client_cache::CacheKey::from_stored(name),
            ttl: None,
            tags: Vec::new(),
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn streamed_writes_past_the_cap_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::builder(dir.path())
        .max_streamed_writes(1)
        .open()
        .unwrap();
    let StoreResponse::Writer(mut first) = open_stream(&store, "a").await else {
        panic!("the first streamed write is taken");
    };
    // At the cap: refused, no temporary file made.
    assert!(matches!(
        open_stream(&store, "b").await,
        StoreResponse::NotStored
    ));
    assert_eq!(temp_files(dir.path()).len(), 1);
    // A commit gives its place back before it is answered.
    first.append(Bytes::from_static(b" and its body")).unwrap();
    assert!(matches!(
        first.commit(Bytes::from_static(b"a prefix")).await,
        Ok(StoreResponse::Done)
    ));
    let StoreResponse::Writer(second) = open_stream(&store, "b").await else {
        panic!("a place was given back");
    };
    drop(second);
    // No streamed writes at all.
    let none = DiskStore::builder(dir.path())
        .max_streamed_writes(0)
        .open()
        .unwrap();
    assert!(matches!(
        open_stream(&none, "c").await,
        StoreResponse::NotStored
    ));
}

#[tokio::test]
async fn a_large_miss_past_the_cap_is_not_stored_and_its_response_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskStore::builder(dir.path())
        .max_streamed_writes(1)
        .open()
        .unwrap();
    // Another write holds the only place.
    let StoreResponse::Writer(held) = open_stream(&disk, "elsewhere").await else {
        panic!("the first streamed write is taken");
    };
    let send = Send::Body {
        len: LEN,
        sized: true,
    };
    let (mut svc, _, metrics) = cache_over(2, disk, Behaviour::Forward, send);
    read_refused(&mut svc, &metrics, "large").await;
    // Once the place is free, the same response is stored.
    held.commit(Bytes::from_static(b"prefix")).await.unwrap();
    let (status, _, _) = read(&mut svc, "large").await;
    assert_eq!(status, Some(CacheStatus::Miss));
    assert_eq!(metrics.stored(), 1);
    let (status, got, _) = read(&mut svc, "large").await;
    assert_eq!(status, Some(CacheStatus::Hit));
    assert!(got == body(LEN));
}

/// A streamed entry that outgrows the store's entry limit as it is written (no `Content-Length`
/// to refuse it up front) is refused at its commit: counted as a refusal, not as a write error,
/// nothing left on disk, and the caller's response whole.
#[tokio::test]
async fn a_streamed_entry_that_outgrows_the_limit_is_a_refusal_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // An entry limit of 90% of 2 MiB: the 3 MiB body outgrows it halfway.
    let disk = DiskStore::builder(dir.path())
        .max_bytes(2 << 20)
        .open()
        .unwrap();
    let send = Send::Body {
        len: LEN,
        sized: false,
    };
    let (mut svc, store, metrics) = cache_over(2, disk, Behaviour::Forward, send);
    read_refused(&mut svc, &metrics, "outgrown").await;
    assert_eq!(store.count("put_stream"), 1, "{:?}", store.seen());
    eventually("the temporary file removed", || {
        temp_files(dir.path()).is_empty()
    })
    .await;
    assert!(entry_files(dir.path()).is_empty());
}
