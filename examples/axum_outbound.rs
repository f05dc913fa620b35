//! An axum 0.8 server whose handler calls an upstream JSON API through a cached hyper-util
//! client kept in the router `State`, with a timeout and a retry around the cache, behind one
//! nameable type ([`BoxedClient`]: no hyper types in the state).
//!
//! Everything runs on 127.0.0.1: the example starts the upstream API, then the axum server, then
//! calls the server twice. The first call's upstream request is a miss, the second a hit: the
//! handler logs it and reports it in an `x-upstream-cache` response header.
//!
//! ```text
//! cargo run --example axum_outbound
//! ```
//!
//! `tests/integration/axum.rs` includes this file and drives the same server over real sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::time::Duration;

use hyper_client_cache::{
    boxed_client, BoxError, BoxedClient, CacheLayer, CacheStatus, MemoryStore, SecretKey,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};

/// The outbound client: timeout, retry, cache, hyper-util `Client`, boxed into one type that is
/// `Clone + Send + Sync`, so it goes straight into the router state. (Without the layers around
/// the cache, `Cache<Client<HttpConnector, Empty<Bytes>>, MemoryStore>` names it as well.)
pub type UpstreamClient = BoxedClient;

/// Retries a request once when the upstream answers 503 or the connection fails: each attempt
/// goes through the cache (docs/integration.md, "Recommended order"), so only a successful one
/// is stored.
#[derive(Clone)]
pub struct RetryOnce(bool);

impl<B> tower::retry::Policy<http::Request<Empty<Bytes>>, http::Response<B>, BoxError>
    for RetryOnce
{
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut http::Request<Empty<Bytes>>,
        result: &mut Result<http::Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let failed = match result {
            Ok(response) => response.status() == StatusCode::SERVICE_UNAVAILABLE,
            Err(_) => true,
        };
        (failed && std::mem::replace(&mut self.0, false)).then(|| std::future::ready(()))
    }

    fn clone_request(
        &mut self,
        req: &http::Request<Empty<Bytes>>,
    ) -> Option<http::Request<Empty<Bytes>>> {
        let mut clone = http::Request::new(Empty::new());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The cached client.
    pub client: UpstreamClient,
    /// Where the upstream API listens.
    pub upstream: SocketAddr,
}

/// The cached client, as an application would build it once at start-up.
pub fn cached_client(key: SecretKey) -> UpstreamClient {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    boxed_client(
        ServiceBuilder::new()
            .timeout(Duration::from_secs(10))
            .retry(RetryOnce(true))
            .layer(CacheLayer::new(MemoryStore::new(32 << 20)).secret_key(key))
            .service(client),
    )
}

/// The application's router: `GET /profile/{id}` fetches `/users/{id}` from the upstream API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/profile/{id}", get(profile))
        .with_state(state)
}

async fn profile(State(state): State<AppState>, Path(id): Path<u32>) -> Response {
    let uri = format!("http://{}/users/{id}", state.upstream);
    let request = match http::Request::get(&uri).body(Empty::new()) {
        Ok(request) => request,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    // A clone per request: cheap, and the way tower services are shared across tasks.
    let mut client = state.client.clone();
    let upstream = match client.ready().await {
        Ok(ready) => ready.call(request).await,
        Err(e) => Err(e),
    };
    let upstream = match upstream {
        Ok(response) => response,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    };
    let cache = upstream
        .extensions()
        .get::<CacheStatus>()
        .map_or_else(|| "none".to_owned(), ToString::to_string);
    let status = upstream.status();
    let body = match upstream.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream body: {e}")).into_response(),
    };
    println!("GET {uri} -> {status}, cache: {cache}");
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert("x-upstream-cache", value);
    }
    response
}

/// Serves `router` on a free 127.0.0.1 port; returns the address.
pub async fn serve(router: Router) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("server stopped: {e}");
        }
    });
    Ok(addr)
}

/// A small upstream JSON API: `GET /users/{id}`, cacheable for 60 s. Counts the requests it
/// answers.
pub async fn start_upstream(hits: Arc<AtomicUsize>) -> std::io::Result<SocketAddr> {
    let router = Router::new().route(
        "/users/{id}",
        get(move |Path(id): Path<u32>| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "max-age=60"),
                    ],
                    format!(r#"{{"id":{id},"name":"user {id}"}}"#),
                )
            }
        }),
    );
    serve(router).await
}

#[allow(dead_code)] // `tests/integration/axum.rs` includes this file without calling `main`.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let upstream_hits = Arc::new(AtomicUsize::new(0));
    let upstream = start_upstream(upstream_hits.clone()).await?;
    // Real code: SecretKey::from_env("HTTP_CACHE_KEY")?
    let state = AppState {
        client: cached_client(SecretKey::generate()?),
        upstream,
    };
    let server = serve(app(state)).await?;
    println!("upstream API on http://{upstream}, axum server on http://{server}");

    let browser: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    for round in 1..=2 {
        let response = browser
            .get(format!("http://{server}/profile/7").parse()?)
            .await?;
        let cache = response
            .headers()
            .get("x-upstream-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "call {round}: x-upstream-cache: {cache}, body: {}",
            String::from_utf8_lossy(&body)
        );
    }
    println!(
        "the upstream API answered {} request(s)",
        upstream_hits.load(Ordering::SeqCst)
    );
    Ok(())
}
