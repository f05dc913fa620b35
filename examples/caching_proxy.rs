//! A caching reverse proxy: this crate's layer around a hyper-util client, served by hyper.
//! It exists to run the public HTTP caching test suite (cache-tests.fyi) against the layer:
//! see `scripts/conformance.sh` and `docs/conformance.md`.
//!
//! ```sh
//! cargo run --release --example caching_proxy -- --listen 127.0.0.1:8080 --origin http://127.0.0.1:8000 [--private]
//! ```
//!
//! Shared-cache rules unless `--private`. Only the authority of each request is rewritten (to the
//! origin's); method, path, query, headers and body are forwarded unchanged.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_client_cache::{BoxError, CacheLayer, MemoryStore};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{ServiceBuilder, ServiceExt};

struct Args {
    listen: SocketAddr,
    origin: http::uri::Authority,
    private: bool,
}

fn args() -> Result<Args, BoxError> {
    let mut listen = None;
    let mut origin = None;
    let mut private = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => listen = it.next(),
            "--origin" => origin = it.next(),
            "--private" => private = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let listen: SocketAddr = listen.ok_or("--listen ADDR:PORT is required")?.parse()?;
    if !listen.ip().is_loopback() {
        return Err("--listen must be a loopback address".into());
    }
    let origin: http::Uri = origin.ok_or("--origin URL is required")?.parse()?;
    let origin = origin
        .authority()
        .cloned()
        .ok_or("--origin needs host:port")?;
    Ok(Args {
        listen,
        origin,
        private,
    })
}

type ProxyBody = BoxBody<Bytes, BoxError>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = args()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let cache = ServiceBuilder::new()
        .layer(
            CacheLayer::new(MemoryStore::new(256 << 20))
                .shared(!args.private)
                // A reverse proxy is a surrogate of its origin: obey Surrogate-Control.
                .surrogate("hcc"),
        )
        .service(client);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "caching proxy on http://{} -> http://{} ({} cache)",
        args.listen,
        args.origin,
        if args.private { "private" } else { "shared" }
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let cache = cache.clone();
        let origin = args.origin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                let cache = cache.clone();
                let origin = origin.clone();
                async move {
                    let mut parts = req.uri().clone().into_parts();
                    parts.scheme = Some(http::uri::Scheme::HTTP);
                    parts.authority = Some(origin);
                    if parts.path_and_query.is_none() {
                        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                    }
                    match http::Uri::from_parts(parts) {
                        Ok(uri) => *req.uri_mut() = uri,
                        Err(e) => return Ok::<_, Infallible>(error_response(502, &e.to_string())),
                    }
                    match cache.oneshot(req).await {
                        Ok(response) => Ok(response.map(|b| b.map_err(Into::into).boxed())),
                        Err(e) => Ok(error_response(502, &e.to_string())),
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn error_response(status: u16, message: &str) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(message.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response
}
