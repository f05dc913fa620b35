//! Bodies on a miss: streamed to the caller, stored only when they end cleanly.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::channel::{Channel, Sender};
use http_body_util::BodyExt;
use hyper_client_cache::{BoxError, CacheLayer, CacheStatus, MemoryStore};
use tower::{Service, ServiceBuilder, ServiceExt};

type Ch = Channel<Bytes, BoxError>;
type Senders = tokio::sync::mpsc::UnboundedReceiver<Sender<Bytes, BoxError>>;

/// An in-process origin whose response body is fed by the test through a channel.
fn channel_origin(
    headers: &'static [(&'static str, &'static str)],
) -> (
    impl Service<Request<()>, Response = Response<Ch>, Error = Infallible, Future = impl Send> + Clone,
    Senders,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let svc = tower::service_fn(move |_req: Request<()>| {
        let (sender, body) = Channel::<Bytes, BoxError>::new(16);
        tx.send(sender).unwrap();
        let mut r = Response::builder();
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        std::future::ready(Ok::<_, Infallible>(r.body(body).unwrap()))
    });
    (svc, rx)
}

fn req() -> Request<()> {
    Request::get("http://origin.test/stream").body(()).unwrap()
}

const CACHEABLE: &[(&str, &str)] = &[("cache-control", "max-age=60")];

type Svc = hyper_client_cache::Cache<
    tower::util::BoxCloneService<Request<()>, Response<Ch>, Infallible>,
    MemoryStore,
>;

/// A cache (with `max_body_size`) over a channel origin, one request sent: the service, its
/// store, the response, and the sender that feeds the response body.
async fn miss(
    headers: &'static [(&'static str, &'static str)],
    max_body_size: usize,
) -> (
    Svc,
    MemoryStore,
    Response<hyper_client_cache::CacheBody<Ch>>,
    Sender<Bytes, BoxError>,
) {
    let (origin, mut senders) = channel_origin(headers);
    let store = MemoryStore::default();
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone()).max_body_size(max_body_size))
        .service(tower::util::BoxCloneService::new(origin));
    let response = svc.ready().await.unwrap().call(req()).await.unwrap();
    let sender = senders.recv().await.unwrap();
    (svc, store, response, sender)
}

const DEFAULT_MAX: usize = hyper_client_cache::DEFAULT_MAX_BODY_SIZE;

#[tokio::test]
async fn first_byte_reaches_the_caller_before_the_origin_finishes_and_full_body_is_stored() {
    let (mut svc, store, response, mut sender) = miss(CACHEABLE, DEFAULT_MAX).await;
    let mut body = response.into_body();

    sender
        .send_data(Bytes::from_static(b"first "))
        .await
        .unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "first ");
    assert!(store.is_empty(), "nothing stored before the end");

    sender
        .send_data(Bytes::from_static(b"second"))
        .await
        .unwrap();
    drop(sender);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
    assert_eq!(store.len(), 1);

    let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(
        hit.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    assert_eq!(
        hit.into_body().collect().await.unwrap().to_bytes(),
        "first second"
    );
}

#[tokio::test]
async fn upstream_error_halfway_is_seen_by_the_caller_and_nothing_is_stored() {
    let (_svc, store, response, mut sender) = miss(CACHEABLE, DEFAULT_MAX).await;
    sender.send_data(Bytes::from_static(b"half")).await.unwrap();
    sender.abort("connection reset".into());
    let err = response
        .into_body()
        .collect()
        .await
        .expect_err("error must reach the caller");
    // The cause is in the error's `source()` chain (its `Display` does not repeat it).
    let mut chain = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        chain = format!("{chain}: {e}");
        next = e.source();
    }
    assert!(chain.contains("connection reset"), "{chain}");
    assert!(store.is_empty());
}

#[tokio::test]
async fn caller_dropping_the_body_halfway_stores_nothing() {
    let (_svc, store, response, mut sender) = miss(CACHEABLE, DEFAULT_MAX).await;
    let mut body = response.into_body();
    sender.send_data(Bytes::from_static(b"half")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    drop(body);
    // The origin finishes anyway; nobody reads it.
    let _ = sender.send_data(Bytes::from_static(b"rest")).await;
    drop(sender);
    tokio::task::yield_now().await;
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_body_shorter_than_content_length_is_not_stored() {
    let (origin, mut senders) =
        channel_origin(&[("cache-control", "max-age=60"), ("content-length", "100")]);
    let store = MemoryStore::default();
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone()))
        .service(origin);
    let response = svc.ready().await.unwrap().call(req()).await.unwrap();
    let mut sender = senders.recv().await.unwrap();
    sender
        .send_data(Bytes::from_static(b"only ten!!"))
        .await
        .unwrap();
    drop(sender);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 10);
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_body_over_max_body_size_streams_in_full_and_is_not_stored() {
    let (_svc, store, response, mut sender) = miss(CACHEABLE, 1000).await;
    tokio::spawn(async move {
        for _ in 0..10 {
            sender
                .send_data(Bytes::from(vec![b'x'; 300]))
                .await
                .unwrap();
        }
    });
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 3000);
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_body_of_exactly_max_body_size_is_stored() {
    let (_svc, store, response, mut sender) = miss(CACHEABLE, 1000).await;
    sender
        .send_data(Bytes::from(vec![b'x'; 1000]))
        .await
        .unwrap();
    drop(sender);
    response.into_body().collect().await.unwrap();
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn trailers_survive_both_paths() {
    let (mut svc, store, response, mut sender) = miss(CACHEABLE, DEFAULT_MAX).await;
    sender.send_data(Bytes::from_static(b"data")).await.unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    sender.send_trailers(trailers).await.unwrap();
    drop(sender);
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "data");
    assert_eq!(store.len(), 1);

    // The hit replays the body, then the same trailers.
    let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(
        hit.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    let collected = hit.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "data");
}

#[tokio::test]
async fn a_cached_body_reports_its_exact_size() {
    let origin = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(http_body_util::Full::new(Bytes::from_static(b"12345")))
                .unwrap(),
        )
    });
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(origin);
    svc.ready()
        .await
        .unwrap()
        .call(req())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(hit.body().size_hint().exact(), Some(5));
    let mut body = hit.into_body();
    assert!(!body.is_end_stream());
    let frame: Frame<Bytes> = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "12345");
    assert!(body.is_end_stream());
}

#[tokio::test]
async fn an_empty_body_is_stored_even_if_nobody_polls_it() {
    let origin = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(204)
                .header("cache-control", "max-age=60")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
    });
    let store = MemoryStore::default();
    let mut svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone()))
        .service(origin);
    let response = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert!(response.body().is_end_stream());
    drop(response); // like a server that does not poll a 204's body
    assert_eq!(store.len(), 1);
    let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(
        (hit.status().as_u16(), hit.extensions().get::<CacheStatus>()),
        (204, Some(&CacheStatus::Hit))
    );
}

/// A chunk that counts its own release.
struct Tracked(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A stored body is not copied: the entry holds the origin's own chunks (signed or unsigned
/// mode; encrypted segments are new buffers), so storing an N-byte body holds N bytes, and a
/// memory store's hit is slices of them. Each chunk is released when the entry is: deleting it
/// releases all of them.
#[tokio::test]
async fn a_stored_body_is_the_origins_chunks_held_once_and_released_with_the_entry() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (mut svc, store, response, mut sender) = miss(CACHEABLE, DEFAULT_MAX).await;
    let released = std::sync::Arc::new(AtomicUsize::new(0));
    let mut body = response.into_body();
    let mut expected = Vec::new();
    let mut pointers = Vec::new();
    for i in 0..8u8 {
        let chunk = vec![i; 10_000];
        pointers.push(chunk.as_ptr() as usize);
        expected.extend_from_slice(&chunk);
        sender
            .send_data(Bytes::from_owner(Tracked(chunk, released.clone())))
            .await
            .unwrap();
        drop(body.frame().await.unwrap().unwrap());
    }
    drop(sender);
    assert!(body.frame().await.is_none());
    assert_eq!(store.len(), 1);
    assert_eq!(
        released.load(Ordering::SeqCst),
        0,
        "the entry holds the chunks"
    );
    let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(
        hit.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Hit)
    );
    let mut hit = hit.into_body();
    let mut got = Vec::new();
    while let Some(frame) = hit.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        // Zero copy, end to end: every frame of the hit lies in one of the origin's chunks.
        let at = data.as_ptr() as usize;
        assert!(
            pointers.iter().any(|&p| at >= p && at < p + 10_000),
            "a hit frame is not a slice of an origin chunk"
        );
        got.extend_from_slice(&data);
    }
    assert_eq!(got, expected);
    tower::ServiceExt::oneshot(store.clone(), hyper_client_cache::StoreRequest::Clear)
        .await
        .unwrap();
    assert_eq!(
        released.load(Ordering::SeqCst),
        8,
        "released with the entry"
    );
}

// ---- Review: streaming edge cases -------------------------------------------------------

/// A cache with `layer` over a channel origin: the service, the store, and the channel that
/// yields one body sender per origin request.
fn cache_over_channel(
    headers: &'static [(&'static str, &'static str)],
    layer: impl FnOnce(CacheLayer<MemoryStore>) -> CacheLayer<MemoryStore>,
) -> (Svc, MemoryStore, Senders) {
    let (origin, senders) = channel_origin(headers);
    let store = MemoryStore::default();
    let svc = ServiceBuilder::new()
        .layer(layer(CacheLayer::new(store.clone())))
        .service(tower::util::BoxCloneService::new(origin));
    (svc, store, senders)
}

fn test_key() -> hyper_client_cache::SecretKey {
    hyper_client_cache::SecretKey::new("body test key, thirty-two bytes.").unwrap()
}

/// Bodies of 0, exactly one and two segments (64 KiB), and one byte either side, through
/// each protection: what is served from the store is byte for byte what the origin sent.
#[tokio::test]
async fn segment_boundary_bodies_round_trip_through_the_cache() {
    const SEG: usize = 64 * 1024;
    for protect in 0..3 {
        for len in [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 2 * SEG + 1] {
            let (mut svc, store, mut senders) = cache_over_channel(CACHEABLE, |l| match protect {
                0 => l,
                1 => l.secret_key(test_key()),
                _ => l.encrypt(test_key()),
            });
            let response = svc.ready().await.unwrap().call(req()).await.unwrap();
            let mut sender = senders.recv().await.unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let feed = data.clone();
            let feeder = tokio::spawn(async move {
                for c in feed.chunks(10_007) {
                    sender.send_data(Bytes::copy_from_slice(c)).await.unwrap();
                }
            });
            let got = response.into_body().collect().await.unwrap().to_bytes();
            feeder.await.unwrap();
            assert_eq!(got.len(), len);
            assert_eq!(store.len(), 1, "protect {protect} len {len}");
            let hit = svc.ready().await.unwrap().call(req()).await.unwrap();
            assert_eq!(
                hit.extensions().get::<CacheStatus>(),
                Some(&CacheStatus::Hit),
                "protect {protect} len {len}"
            );
            assert_eq!(hit.into_body().collect().await.unwrap().to_bytes(), data);
        }
    }
}

/// A body longer than its Content-Length (the surplus in the same chunk and in a later one):
/// streamed to the caller, not stored.
#[tokio::test]
async fn a_body_longer_than_content_length_is_not_stored() {
    const HEADERS: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("content-length", "4")];
    for split in [false, true] {
        let (mut svc, store, mut senders) = cache_over_channel(HEADERS, |l| l.encrypt(test_key()));
        let response = svc.ready().await.unwrap().call(req()).await.unwrap();
        let mut sender = senders.recv().await.unwrap();
        let feeder = tokio::spawn(async move {
            if split {
                sender.send_data(Bytes::from_static(b"abcd")).await.unwrap();
                sender.send_data(Bytes::from_static(b"e")).await.unwrap();
            } else {
                sender
                    .send_data(Bytes::from_static(b"abcde"))
                    .await
                    .unwrap();
            }
        });
        let _ = response.into_body().collect().await;
        feeder.await.unwrap();
        assert!(store.is_empty(), "split {split}");
    }
}

/// A leader whose body goes over max_body_size mid-stream: the waiter that joined at its head
/// reads the same body (one origin request, #28: it used to be released to the origin once the
/// copy was abandoned), and nothing is stored.
#[tokio::test(start_paused = true)]
async fn a_leader_over_max_body_size_shares_its_body_and_stores_nothing() {
    let (svc, store, mut senders) = cache_over_channel(CACHEABLE, |l| {
        l.max_body_size(8)
            .coalesce_timeout(std::time::Duration::from_secs(3600))
    });
    let leader = svc.clone().oneshot(req()).await.unwrap();
    let mut leader_tx = senders.recv().await.unwrap();
    let waiter = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(
        waiter.extensions().get::<CacheStatus>(),
        Some(&CacheStatus::Coalesced)
    );
    leader_tx
        .send_data(Bytes::from_static(b"more than eight bytes"))
        .await
        .unwrap();
    drop(leader_tx);
    for response in [leader, waiter] {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "more than eight bytes");
    }
    assert!(senders.try_recv().is_err(), "one origin request");
    assert!(store.is_empty());
}

/// An upstream error in the middle of an encrypted body, after at least one full segment was
/// sealed: nothing is stored.
#[tokio::test]
async fn an_error_after_a_full_segment_stores_nothing() {
    let (mut svc, store, mut senders) = cache_over_channel(CACHEABLE, |l| l.encrypt(test_key()));
    let response = svc.ready().await.unwrap().call(req()).await.unwrap();
    let mut sender = senders.recv().await.unwrap();
    let feeder = tokio::spawn(async move {
        sender
            .send_data(Bytes::from(vec![1u8; 200 * 1024]))
            .await
            .unwrap();
        sender.abort("reset".into());
    });
    assert!(response.into_body().collect().await.is_err());
    feeder.await.unwrap();
    assert!(store.is_empty());
}

/// The origin's Content-Length sized the entry's buffer before a byte had arrived: with a
/// large `max_body_size`, a response that claimed a huge length (and sent 3 bytes) made the
/// cache allocate that much at once; above isize::MAX, a "capacity overflow" panic. The buffer
/// is reserved for at most 1 MiB now, and grows with the body.
#[tokio::test]
async fn a_huge_content_length_does_not_allocate_before_the_body_arrives() {
    const HEADERS: &[(&str, &str)] = &[
        ("cache-control", "max-age=60"),
        ("content-length", "9223372036854775808"),
    ];
    let (mut svc, store, mut senders) =
        cache_over_channel(HEADERS, |l| l.max_body_size(usize::MAX));
    let response = svc.ready().await.unwrap().call(req()).await.unwrap();
    let mut sender = senders.recv().await.unwrap();
    sender.send_data(Bytes::from_static(b"abc")).await.unwrap();
    drop(sender);
    let _ = response.into_body().collect().await;
    assert!(store.is_empty());
}

/// The same with a length an allocator refuses (1 TiB, under a 1 TiB `max_body_size`): the
/// process aborted ("memory allocation failed"), not even a panic.
#[tokio::test]
async fn a_one_tib_content_length_reserves_nothing_before_the_body() {
    const HEADERS: &[(&str, &str)] = &[
        ("cache-control", "max-age=60"),
        ("content-length", "1099511627776"),
    ];
    let (mut svc, store, mut senders) = cache_over_channel(HEADERS, |l| l.max_body_size(1 << 40));
    let response = svc.ready().await.unwrap().call(req()).await.unwrap();
    let mut sender = senders.recv().await.unwrap();
    sender.send_data(Bytes::from_static(b"abc")).await.unwrap();
    drop(sender);
    let _ = response.into_body().collect().await;
    assert!(store.is_empty());
}
