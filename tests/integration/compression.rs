//! Compression at rest (`CacheLayer::compress`) end to end: a compressed multi-segment disk
//! entry streamed on a hit, entries with and without compression read by layers with and
//! without it, what is stored as it came (an encoded body, incompressible bytes), a hostile
//! origin's compression-friendly body over `max_body_size`, encrypted entries whose lengths say
//! nothing, a `MemoryStore` holding more within its bound, the byte metrics, the config file.

use std::convert::Infallible;
use std::future::ready;

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper_client_cache::{
    CacheConfig, CacheLayer, CacheMetrics, CacheStatus, Codec, Compression, DiskStore, MemoryStore,
    Store, StoreRequest, StoreResponse,
};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::common::*;

const SEGMENT: usize = 64 * 1024;

/// JSON-like text of `len` bytes (compresses several times).
pub(crate) fn json(len: usize, seed: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                r#"{{"id":{i},"login":"user-{}","html_url":"https://example.test/u/{i}","site_admin":false}},"#,
                i % 17
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Segments of 48 KiB of JSON and 16 KiB of noise.
fn mixed(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len + SEGMENT);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(&json(48 << 10, i));
        out.extend_from_slice(&noise(16 << 10, i + 1));
        i += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Bytes that do not compress.
fn noise(len: usize, mut seed: u64) -> Bytes {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub(crate) type Svc = tower::util::BoxCloneService<
    http::Request<()>,
    http::Response<hyper_client_cache::CacheBody<http_body_util::Full<Bytes>>>,
    hyper_client_cache::BoxError,
>;

/// A cache over `layer` whose origin answers every path with `body` (and `encoding`, if any).
pub(crate) fn cache<St: Store>(
    layer: CacheLayer<St>,
    body: Bytes,
    encoding: Option<&'static str>,
) -> Svc {
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(move |_req: http::Request<()>| {
            let mut response = http::Response::builder().header("cache-control", "max-age=600");
            if let Some(e) = encoding {
                response = response.header("content-encoding", e);
            }
            ready(Ok::<_, Infallible>(
                response
                    .body(http_body_util::Full::new(body.clone()))
                    .unwrap(),
            ))
        }));
    Svc::new(svc)
}

pub(crate) async fn fetch(svc: &mut Svc, path: &str) -> (Option<CacheStatus>, Bytes) {
    let request = http::Request::get(format!("http://example.test{path}"))
        .body(())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let status = response.extensions().get::<CacheStatus>().copied();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

async fn blob_sizes<St: Store>(store: &St) -> Vec<usize> {
    all_blobs(store).await.iter().map(Bytes::len).collect()
}

#[tokio::test]
async fn a_compressed_multi_segment_disk_entry_is_streamed_on_a_hit() {
    for codec in [Codec::Zstd, Codec::Lz4] {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let layer = CacheLayer::new(store.clone())
            .secret_key(test_key())
            .max_body_size(16 << 20)
            .compress(Compression::new(codec));
        let metrics: CacheMetrics = layer.metrics();
        // A quarter of each segment does not compress: the file is over DiskStore's 1 MiB
        // streaming threshold.
        let body = mixed(8 * (1 << 20) + 777);
        let mut svc = cache(layer, body.clone(), None);
        assert_eq!(fetch(&mut svc, "/big").await.1, body);
        let file = entry_files(dir.path()).pop().unwrap();
        let stored = std::fs::metadata(&file).unwrap().len() as usize;
        assert!(stored * 2 < body.len(), "{codec:?}: {stored} bytes on disk");
        assert!(stored > 1 << 20);
        // The metrics say what was saved: the body's bytes, and the head record's (a few
        // hundred bytes, under the threshold: stored as is).
        let head = metrics.compression_bytes_before() - body.len() as u64;
        assert!(head > 0 && head < 1024, "{head}");
        assert!(metrics.compression_bytes_after() < stored as u64);
        assert!(metrics.compression_bytes_after() * 2 < body.len() as u64);
        // The store streams the file, and the hit is streamed a segment at a time.
        let keys = match store.clone().oneshot(StoreRequest::Keys).await.unwrap() {
            StoreResponse::Keys(keys) => keys,
            other => panic!("{other:?}"),
        };
        let answer = store
            .clone()
            .oneshot(StoreRequest::get(keys[0].clone()))
            .await
            .unwrap();
        assert!(matches!(answer, StoreResponse::Stream(_)), "not streamed");
        let request = http::Request::get("http://example.test/big")
            .body(())
            .unwrap();
        let hit = svc.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(
            hit.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Hit)
        );
        assert_eq!(hit.body().size_hint().exact(), Some(body.len() as u64));
        let mut hit = hit.into_body();
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(frame) = hit.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= SEGMENT, "released a segment at a time");
            got.extend_from_slice(&data);
            frames += 1;
        }
        assert!(got == body, "{codec:?}: the hit's body differs");
        assert!(frames >= body.len() / SEGMENT);
    }
}

#[tokio::test]
async fn entries_with_and_without_compression_are_read_by_either_layer() {
    let body = json(3 * SEGMENT + 10, 2);
    for codec in [Codec::Zstd, Codec::Lz4] {
        let store = MemoryStore::new(64 << 20);
        let on = || {
            CacheLayer::new(store.clone())
                .secret_key(test_key())
                .compress(Compression::new(codec))
        };
        let off = || CacheLayer::new(store.clone()).secret_key(test_key());
        // Written with compression, read by a layer without it; then the other way round.
        let (mut writer, mut reader) = (
            cache(on(), body.clone(), None),
            cache(off(), Bytes::new(), None),
        );
        assert_eq!(fetch(&mut writer, "/a").await.0, Some(CacheStatus::Miss));
        assert_eq!(
            fetch(&mut reader, "/a").await,
            (Some(CacheStatus::Hit), body.clone())
        );
        let (mut writer, mut reader) = (
            cache(off(), body.clone(), None),
            cache(on(), Bytes::new(), None),
        );
        assert_eq!(fetch(&mut writer, "/b").await.0, Some(CacheStatus::Miss));
        assert_eq!(
            fetch(&mut reader, "/b").await,
            (Some(CacheStatus::Hit), body.clone())
        );
        let mut sizes = blob_sizes(&store).await;
        sizes.sort_unstable();
        assert!(
            sizes[0] * 3 < sizes[1],
            "one compressed, one not: {sizes:?}"
        );
    }
}

#[tokio::test]
async fn encoded_and_incompressible_bodies_are_stored_as_they_came() {
    for (body, encoding) in [
        // Text the origin says is gzip: not compressed again, whatever it looks like.
        (json(100_000, 3), Some("gzip")),
        (noise(100_000, 3), None),
    ] {
        let store = MemoryStore::new(64 << 20);
        let layer = CacheLayer::new(store.clone())
            .secret_key(test_key())
            .compress(Compression::default());
        let metrics = layer.metrics();
        let mut svc = cache(layer, body.clone(), encoding);
        fetch(&mut svc, "/c").await;
        assert!(blob_sizes(&store).await[0] > body.len(), "{encoding:?}");
        assert_eq!(
            fetch(&mut svc, "/c").await,
            (Some(CacheStatus::Hit), body.clone())
        );
        if encoding.is_none() {
            // Counted, at the size it was stored (the body and the head record, as they came).
            assert_eq!(
                metrics.compression_bytes_after(),
                metrics.compression_bytes_before()
            );
            assert!(metrics.compression_bytes_after() > body.len() as u64);
        }
    }
}

#[tokio::test]
async fn a_compression_friendly_body_over_max_body_size_is_not_stored() {
    const MAX: usize = 1 << 20;
    let store = MemoryStore::new(64 << 20);
    let layer = CacheLayer::new(store.clone())
        .secret_key(test_key())
        .max_body_size(MAX)
        .compress(Compression::default());
    let metrics = layer.metrics();
    // 16 MiB of zeros, a few KiB compressed, of no announced length.
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(|_req: http::Request<()>| {
            let chunks = (0..256).map(|_| {
                Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(vec![0u8; 64 << 10])))
            });
            ready(Ok::<_, Infallible>(
                http::Response::builder()
                    .header("cache-control", "max-age=600")
                    .body(http_body_util::StreamBody::new(futures_util::stream::iter(
                        chunks,
                    )))
                    .unwrap(),
            ))
        }));
    let mut svc = svc;
    let request = http::Request::get("http://example.test/bomb")
        .body(())
        .unwrap();
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let got = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 16 << 20, "the caller gets it all");
    assert!(all_blobs(&store).await.is_empty(), "nothing stored");
    assert_eq!(store.size_bytes(), 0);
    assert_eq!(metrics.stored(), 0);
    // Abandoned at max_body_size: never sealed whole.
    assert_eq!(metrics.compression_bytes_before(), 0);
}

#[tokio::test]
async fn encrypted_entries_are_not_compressed_unless_asked_so_their_lengths_say_nothing() {
    let sizes = |compression: Compression| async move {
        let mut out = Vec::new();
        for body in [json(50_000, 4), noise(50_000, 4)] {
            let store = MemoryStore::new(64 << 20);
            let layer = CacheLayer::new(store.clone())
                .encrypt(test_key())
                .compress(compression);
            fetch(&mut cache(layer, body, None), "/e").await;
            out.push(blob_sizes(&store).await[0]);
        }
        out
    };
    let configured = sizes(Compression::default()).await;
    // Equal but for the head's own few bytes (times, a date field) whatever the content.
    assert!(configured[0].abs_diff(configured[1]) < 16, "{configured:?}");
    let asked = sizes(Compression::default().when_encrypted(true)).await;
    assert!(asked[0] * 3 < asked[1], "{asked:?}");
}

#[tokio::test]
async fn a_memory_store_holds_more_compressible_entries_in_the_same_bound() {
    const BOUND: u64 = 512 << 10;
    let mut held = Vec::new();
    for compression in [None, Some(Compression::default())] {
        let store = MemoryStore::new(BOUND);
        let mut layer = CacheLayer::new(store.clone()).secret_key(test_key());
        if let Some(c) = compression {
            layer = layer.compress(c);
        }
        let mut svc = cache(layer, json(32 << 10, 5), None);
        for i in 0..100 {
            fetch(&mut svc, &format!("/m{i}")).await;
        }
        assert!(store.size_bytes() <= BOUND);
        held.push(store.len());
    }
    // Entries of 32 KiB: about 16 fit as they came; several times more compressed.
    assert!(held[0] <= 16, "{held:?}");
    assert!(held[1] >= 3 * held[0], "{held:?}");
}

#[tokio::test]
async fn a_config_file_turns_compression_on() {
    let config: CacheConfig = toml::from_str(
        r#"
        [compression]
        codec = "lz4"
        min_size = 1024
        "#,
    )
    .unwrap();
    assert_eq!(config.compression.as_ref().unwrap().codec, Some(Codec::Lz4));
    assert!(toml::from_str::<CacheConfig>("[compression]\ncodec = \"brotli\"").is_err());
    let body = json(40_000, 6);
    for (config, compressed) in [
        (config.clone(), true),
        (CacheConfig::default(), false),
        (
            toml::from_str("[compression]\nenabled = false").unwrap(),
            false,
        ),
    ] {
        let store = MemoryStore::new(64 << 20);
        let layer = CacheLayer::from_config(store.clone(), &config).unwrap();
        fetch(&mut cache(layer, body.clone(), None), "/f").await;
        let size = blob_sizes(&store).await[0];
        assert_eq!(size * 3 < body.len(), compressed, "{config:?}: {size}");
    }
}
