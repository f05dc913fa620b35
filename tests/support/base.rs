//! Test helpers shared by the crates of the workspace (included with `#[path]` by each crate's
//! `tests/integration/common.rs`): a real hyper origin on 127.0.0.1 and a cached hyper-util
//! client. Each crate uses some of them.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_client_cache::{
    BoxError, Cache, CacheBody, CacheLayer, CacheStatus, ManualClock, MemoryStore, SecretKey, Store,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};

/// The fixed epoch every freshness test starts from: 2023-11-14T22:13:20Z.
pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub fn clock() -> ManualClock {
    ManualClock::new(epoch())
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The signing key of the tests that need one but do not care which.
pub fn test_key() -> SecretKey {
    SecretKey::new("integration test key, not secret").unwrap()
}

/// A layer over a 1 MiB `MemoryStore`, both on `clock`, without a secret key.
pub fn unsigned_layer(clock: &ManualClock) -> CacheLayer<MemoryStore> {
    CacheLayer::new(MemoryStore::with_clock(1 << 20, clock.clone())).clock(clock.clone())
}

/// [`unsigned_layer`], signing with [`test_key`].
pub fn layer(clock: &ManualClock) -> CacheLayer<MemoryStore> {
    unsigned_layer(clock).secret_key(test_key())
}

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Handler = dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync;

/// A hyper HTTP/1 server on 127.0.0.1 (port chosen by the OS) that records every request.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(
        handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (seen2, count2) = (seen.clone(), count.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, seen, count) = (handler.clone(), seen2.clone(), count2.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (handler, seen, count) = (handler.clone(), seen.clone(), count.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                headers: parts.headers,
                                body,
                            };
                            let response = handler(&s);
                            seen.lock().unwrap().push(s);
                            count.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            count,
            task,
        }
    }

    /// An origin that always answers 200 with `cache_control` and `body`.
    pub async fn fixed(cache_control: &'static str, body: &'static str) -> Self {
        Self::start(move |_| {
            Response::builder()
                .header("cache-control", cache_control)
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        })
        .await
    }

    /// An origin that answers every request with a new body (`v1`, `v2`, ...) and `headers`.
    pub async fn counting(headers: &'static [(&'static str, &'static str)]) -> Self {
        let n = Arc::new(AtomicUsize::new(0));
        Self::start(move |_| {
            let v = n.fetch_add(1, Ordering::SeqCst) + 1;
            let mut b = Response::builder();
            for (name, value) in headers {
                b = b.header(*name, *value);
            }
            b.body(Full::new(Bytes::from(format!("v{v}")))).unwrap()
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// How many requests reached the origin.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type HyperClient = Client<HttpConnector, Empty<Bytes>>;

pub fn hyper_client() -> HyperClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A hyper-util client behind the cache layer, built the way users do.
pub fn cached_client<St: Store>(layer: CacheLayer<St>) -> Cache<HyperClient, St> {
    ServiceBuilder::new().layer(layer).service(hyper_client())
}

/// A fully read response.
pub struct Got {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub cache: Option<CacheStatus>,
    pub not_stored: Option<hyper_client_cache::NotStoredReason>,
    pub info: Option<hyper_client_cache::CacheInfo>,
}

pub async fn send<S, B>(svc: &mut S, request: Request<Empty<Bytes>>) -> Result<Got, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<CacheBody<B>>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let response = svc.ready().await?.call(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        cache: parts.extensions.get::<CacheStatus>().copied(),
        not_stored: parts.extensions.get().copied(),
        info: parts.extensions.get().cloned(),
        body,
    })
}

/// A GET of `url` carrying `ext` in its extensions (a per-request option).
pub fn with_ext<T: Clone + Send + Sync + 'static>(url: &str, ext: T) -> Request<Empty<Bytes>> {
    let mut r = Request::get(url).body(Empty::new()).unwrap();
    r.extensions_mut().insert(ext);
    r
}

pub async fn get<S, B>(svc: &mut S, url: &str) -> Result<Got, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<CacheBody<B>>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    send(svc, Request::get(url).body(Empty::new()).unwrap()).await
}

/// A cached hyper-util client whose requests carry a `Full` body (for methods with bodies).
pub fn full_body_client<St: Store>(
    layer: CacheLayer<St>,
) -> Cache<Client<HttpConnector, Full<Bytes>>, St> {
    ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http())
}

/// Every blob in a store, read through the `Store` service.
pub async fn all_blobs<St: Store>(store: &St) -> Vec<Bytes> {
    use hyper_client_cache::{StoreRequest, StoreResponse};
    let keys = match store.clone().oneshot(StoreRequest::Keys).await {
        Ok(StoreResponse::Keys(keys)) => keys,
        _ => panic!("store cannot list keys"),
    };
    let mut blobs = Vec::new();
    for key in keys {
        if let Some(blob) = get_raw(store, key).await {
            blobs.push(blob);
        }
    }
    blobs
}

/// Writes `blob` under `key` directly through the store, as an attacker with store access would.
pub async fn put_raw<St: Store>(store: &St, key: hyper_client_cache::CacheKey, blob: Bytes) {
    use hyper_client_cache::StoreRequest;
    let put = StoreRequest::Put {
        key,
        blob,
        ttl: None,
    };
    assert!(store.clone().oneshot(put).await.is_ok());
}

/// Reads the blob under `key` directly.
pub async fn get_raw<St: Store>(store: &St, key: hyper_client_cache::CacheKey) -> Option<Bytes> {
    use hyper_client_cache::{StoreRequest, StoreResponse};
    // Whatever shape the store answers with (one buffer, parts, a stream), as one buffer.
    match store.clone().oneshot(StoreRequest::get(key)).await {
        Ok(StoreResponse::Blob(b)) => b,
        Ok(StoreResponse::Parts(p)) => Some(p.to_bytes()),
        Ok(StoreResponse::Stream(s)) => s.collect(usize::MAX).await.ok().flatten(),
        _ => None,
    }
}

/// The key a layer signing with [`test_key`] stores `url` under (a keyed name).
pub fn key_for(url: &str) -> hyper_client_cache::CacheKey {
    CacheLayer::new(())
        .secret_key(test_key())
        .key_for(&Request::get(url).body(()).unwrap())
}

/// The key a layer without a secret stores `url` under.
pub fn unsigned_key_for(url: &str) -> hyper_client_cache::CacheKey {
    hyper_client_cache::CacheKey::for_request(&Request::get(url).body(()).unwrap())
}
