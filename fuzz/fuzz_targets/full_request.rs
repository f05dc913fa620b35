#![no_main]
//! A full request through the layer, with an arbitrary blob in the store and an arbitrary origin
//! response (status, header lines, body). Input: `blob \0\0 status(2 bytes) headers \0\0 body`.
//! Whatever happens, the layer must not panic, and with a key it must never serve the blob.

use std::convert::Infallible;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_client_cache::fuzzing::header_map;
use hyper_client_cache::{BadSignature, CacheLayer, CacheStatus, SecretKey, StoreRequest, StoreResponse};
use tower::{ServiceBuilder, ServiceExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == [0, 0]) {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (blob, rest) = split2(data);
    let (status_and_headers, body) = split2(rest);
    let (status, headers) = match status_and_headers {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]) % 1000, rest),
        _ => (200, &[][..]),
    };
    let status = http::StatusCode::from_u16(status.max(100)).unwrap_or(http::StatusCode::OK);
    let headers = header_map(headers);
    let body = Bytes::copy_from_slice(body);
    let blob = Bytes::copy_from_slice(blob);

    let store = tower::service_fn(move |req: StoreRequest| {
        let answer = match req {
            StoreRequest::Get { .. } => StoreResponse::Blob(Some(blob.clone())),
            _ => StoreResponse::Done,
        };
        std::future::ready(Ok::<_, Infallible>(answer))
    });
    let origin = tower::service_fn(move |_req: http::Request<()>| {
        let mut response = http::Response::new(Full::new(body.clone()));
        *response.status_mut() = status;
        *response.headers_mut() = headers.clone();
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let key = SecretKey::new("fuzzing key, 32 bytes long......").unwrap();
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store).secret_key(key))
        .service(origin);
    runtime().block_on(async move {
        let request = http::Request::get("http://fuzz.test/x").body(()).unwrap();
        match svc.oneshot(request).await {
            Ok(response) => {
                // The blob came from someone without the key: it is never served.
                assert_ne!(response.extensions().get::<CacheStatus>(), Some(&CacheStatus::Hit));
                let _ = response.into_body().collect().await;
            }
            Err(err) => assert!(err.downcast_ref::<BadSignature>().is_some(), "{err}"),
        }
    });
});
