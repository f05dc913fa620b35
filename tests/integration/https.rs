//! HTTPS with hyper-rustls on ring (no OpenSSL, no aws-lc) in front of the hyper-util client:
//! the recipe of docs/integration.md, against an HTTPS origin on 127.0.0.1 whose certificate a
//! throwaway CA issued.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_client_cache::{CacheLayer, CacheStatus, MemoryStore};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::{ServiceBuilder, ServiceExt};

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn https_origin(dir: &std::path::Path, count: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("cache-control", "max-age=60")
                                    .body(Full::new(Bytes::from(format!("secure v{n}"))))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_through_hyper_rustls_on_ring_is_cached() {
    let dir = crate::common::throwaway_certificates();
    let count = Arc::new(AtomicUsize::new(0));
    let addr = https_origin(dir.path(), count.clone()).await;

    // The recipe: trust roots (here the test CA; in production webpki-roots or the platform's),
    // ring as the provider, HTTPS only.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.path().join("ca.crt")).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(https);
    let cached = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()))
        .service(client);

    let url = format!("https://127.0.0.1:{}/account", addr.port());
    for expected in [CacheStatus::Miss, CacheStatus::Hit] {
        let request = Request::get(&url).body(Empty::new()).unwrap();
        let response = cached.clone().oneshot(request).await.unwrap();
        assert_eq!(response.extensions().get::<CacheStatus>(), Some(&expected));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "secure v1");
    }
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // `http://` to the same client: refused by `https_only`, never cached or sent in clear.
    let plain = Request::get(format!("http://127.0.0.1:{}/account", addr.port()))
        .body(Empty::new())
        .unwrap();
    assert!(cached.clone().oneshot(plain).await.is_err());
}
