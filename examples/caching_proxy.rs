//! A caching reverse proxy: this crate's layer around a hyper-util client, served by hyper.
//! It exists to run the public HTTP caching test suite (cache-tests.fyi) against the layer:
//! see `scripts/conformance.sh` and `docs/conformance.md`.
//!
//! ```sh
//! cargo run --release --example caching_proxy -- --listen 127.0.0.1:8080 --origin http://127.0.0.1:8000 \
//!     [--private] [--stale-on-error SECS] [--accept-language-ties]
//! ```
//!
//! Shared-cache rules unless `--private`; as a shared cache it obeys `CDN-Cache-Control`
//! (RFC 9213), as a reverse proxy in front of its origin may. `--stale-on-error SECS` serves a
//! stored response up to SECS stale when the origin cannot be reached or answers 500, 502, 503
//! or 504 (RFC 9111 §4.2.4 allows it when the cache is disconnected from the origin).
//! `--accept-language-ties` lets `Accept-Language` members of equal weight match in any order
//! (`CacheLayer::accept_language_ties`; the suite's origin sends one representation whatever
//! the request's languages, and one of its optimal tests expects that normalisation). Only the
//! authority of each request is rewritten (to the origin's); method, path, query, headers and
//! body are forwarded unchanged, except the hop-by-hop fields, which a proxy removes in both
//! directions on every path (RFC 9110 §7.6.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

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
    stale_on_error: Option<Duration>,
    language_ties: bool,
}

fn args() -> Result<Args, BoxError> {
    let mut listen = None;
    let mut origin = None;
    let mut private = false;
    let mut stale_on_error = None;
    let mut language_ties = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => listen = it.next(),
            "--origin" => origin = it.next(),
            "--private" => private = true,
            "--accept-language-ties" => language_ties = true,
            "--stale-on-error" => {
                let secs: u64 = it.next().ok_or("--stale-on-error SECS")?.parse()?;
                stale_on_error = Some(Duration::from_secs(secs));
            }
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
        stale_on_error,
        language_ties,
    })
}

type ProxyBody = BoxBody<Bytes, BoxError>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = args()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let mut layer = CacheLayer::new(MemoryStore::new(256 << 20)).shared(!args.private);
    if !args.private {
        // A reverse proxy acts for its origin, like a CDN: obey CDN-Cache-Control.
        layer = layer.cdn_cache_control();
    }
    if args.language_ties {
        layer = layer.accept_language_ties(true);
    }
    if let Some(max) = args.stale_on_error {
        layer = layer.serve_stale_on_error(max);
    }
    let cache = ServiceBuilder::new().layer(layer).service(client);
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
                    strip_hop_by_hop(req.headers_mut());
                    match cache.oneshot(req).await {
                        Ok(mut response) => {
                            strip_hop_by_hop(response.headers_mut());
                            Ok(response.map(|b| b.map_err(Into::into).boxed()))
                        }
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

/// RFC 9110 §7.6.1: "a proxy MUST ... remove any header or trailer field [listed in Connection]
/// ... and then remove the Connection header field itself", and "SHOULD" remove the other
/// hop-by-hop fields it knows (`Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`,
/// `Upgrade`). hyper frames the message itself (`Content-Length` or chunked).
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let listed: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
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
