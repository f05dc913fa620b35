//! What the tests of large entries (`segments`, `large_in_memory`) share: the four ways an entry
//! is proven (the layer for each, what each adds to a segment), the large body and its request,
//! and a body read frame by frame up to the error that ends it.

use bytes::Bytes;
use hyper_client_cache::{BoxError, CacheLayer, Mac, Store};

use crate::common::test_key;

/// The size of a body segment.
pub const SEGMENT: usize = 64 * 1024;

/// The large body's length: three segments' worth of MiB and a bit.
pub const LEN: usize = 3 * (1 << 20) + 777;

/// The large body.
pub fn body() -> Bytes {
    Bytes::from(
        (0..LEN)
            .map(|i| (i * 13 + i / 4093) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Its request.
pub fn request() -> http::Request<()> {
    http::Request::get("http://example.test/large")
        .body(())
        .unwrap()
}

/// A cache in front of an origin that answers the large body.
pub type Svc = tower::util::BoxCloneService<
    http::Request<()>,
    http::Response<hyper_client_cache::CacheBody<http_body_util::Full<Bytes>>>,
    BoxError,
>;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Unsigned,
    Blake3,
    Hmac,
    Encrypted,
}

pub const MODES: [Mode; 4] = [Mode::Unsigned, Mode::Blake3, Mode::Hmac, Mode::Encrypted];

impl Mode {
    pub fn layer<St: Store>(self, store: St) -> CacheLayer<St> {
        let layer = CacheLayer::new(store);
        match self {
            Mode::Unsigned => layer,
            Mode::Blake3 => layer.secret_key(test_key()).mac(Mac::Blake3),
            Mode::Hmac => layer.secret_key(test_key()).mac(Mac::HmacSha256),
            Mode::Encrypted => layer.encrypt(test_key()),
        }
    }

    /// Framing and proof bytes per segment.
    pub fn per_segment(self) -> usize {
        match self {
            Mode::Unsigned => 5 + 4,
            Mode::Blake3 | Mode::Hmac => 5 + 32,
            Mode::Encrypted => 5 + 12 + 16,
        }
    }
}

/// Reads a body frame by frame: the bytes released, and the error that ended it, if any.
pub async fn read<B>(mut body: B) -> (Vec<u8>, Option<BoxError>)
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    use http_body_util::BodyExt;
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// `layer` in front of an origin that answers the large body, fresh for 10 minutes.
pub fn serving<St: Store>(layer: CacheLayer<St>) -> Svc {
    use tower::ServiceBuilder;
    Svc::new(
        ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(|_req: http::Request<()>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .header("cache-control", "max-age=600")
                        .body(http_body_util::Full::new(body()))
                        .unwrap(),
                ))
            })),
    )
}

/// What an origin saw of each request: its `If-None-Match`.
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>;

/// `layer` in front of an origin that answers the large body with `cache_control` and a strong
/// `ETag`, and a conditional request with a `304`, fresh for 10 minutes from then (the stored
/// `Date` is the first response's: the age counts from it, RFC 9111 §4.2.3).
pub fn revalidating<St: Store>(layer: CacheLayer<St>, cache_control: &'static str) -> (Svc, Seen) {
    use tower::ServiceBuilder;
    let seen = Seen::default();
    let log = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(move |req: http::Request<()>| {
            let inm = req
                .headers()
                .get("if-none-match")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            log.lock().unwrap().push(inm.clone());
            let b = http::Response::builder().header("etag", "\"v1\"");
            std::future::ready(Ok::<_, std::convert::Infallible>(match inm {
                Some(_) => b
                    .status(304)
                    .header("cache-control", "max-age=600")
                    .body(http_body_util::Full::new(Bytes::new()))
                    .unwrap(),
                None => b
                    .header("cache-control", cache_control)
                    .body(http_body_util::Full::new(body()))
                    .unwrap(),
            }))
        }));
    (Svc::new(svc), seen)
}

/// Waits (bounded) for the origin's second request, a background refresh: its `If-None-Match`.
pub async fn refreshed(seen: &Seen) -> Option<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no background refresh"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    seen.lock().unwrap()[1].clone()
}

/// The error that ended a body at a changed segment: a checksum mismatch unsigned, counted
/// once as an unusable entry, else a `BadSignature` mismatch, counted once as such.
pub fn assert_ended_by_a_change(
    mode: Mode,
    err: &BoxError,
    metrics: &hyper_client_cache::CacheMetrics,
) {
    match mode {
        Mode::Unsigned => {
            assert!(err.to_string().contains("checksum"), "{err}");
            assert_eq!(metrics.bad_signatures(), 0);
            assert_eq!(metrics.unusable_entries(), 1);
        }
        _ => {
            let bad = err
                .downcast_ref::<hyper_client_cache::BadSignature>()
                .unwrap_or_else(|| panic!("{mode:?}: {err}"));
            assert!(bad.is_mismatch(), "{bad}");
            assert_eq!(metrics.bad_signatures(), 1);
            assert_eq!(metrics.unusable_entries(), 0);
        }
    }
}

/// What a body that met a change at `segment` released: verified bytes of the large body only,
/// none of the changed segment or after it (`what` names the case in a failure).
pub fn assert_only_verified(got: &[u8], segment: usize, what: &str) {
    assert!(
        got[..] == body()[..got.len()],
        "{what}: only verified bytes"
    );
    assert!(
        got.len() <= segment * SEGMENT,
        "{what}: {} bytes released, the changed segment starts at {}",
        got.len(),
        segment * SEGMENT
    );
}

/// Waits (bounded) until `store` no longer holds `key`: an entry deleted in the background.
pub async fn until_deleted<St: Store>(store: &St, key: hyper_client_cache::CacheKey) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while crate::common::get_raw(store, key.clone()).await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The request fails before any response, with `BadSignature` (`what` says which case).
pub async fn refused(svc: &mut Svc, what: &str) {
    use tower::{Service, ServiceExt};
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .expect_err("refused before any response");
    assert!(
        err.downcast_ref::<hyper_client_cache::BadSignature>()
            .is_some(),
        "{what}: {err}"
    );
}
