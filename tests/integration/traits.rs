//! Compile-time checks: the service, its futures and its body fit `tokio::spawn`, axum state and
//! hyper servers. If any of these stops holding, this file stops compiling.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_client_cache::{
    BodyKeys, Cache, CacheBody, CacheLayer, Inspector, MemoryStore, ResponseFuture,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

type HyperClient = Client<HttpConnector, Empty<Bytes>>;

fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
fn send<T: Send + 'static>() {}
fn send_sync_unpin<T: Send + Sync + Unpin + 'static>() {}

#[test]
fn cache_types_are_send_sync_where_their_parts_are() {
    clone_send_sync::<Cache<HyperClient, MemoryStore>>();
    clone_send_sync::<CacheLayer<MemoryStore>>();
    clone_send_sync::<MemoryStore>();
    send::<ResponseFuture<HyperClient, MemoryStore, Empty<Bytes>>>();
    send_sync_unpin::<CacheBody<hyper::body::Incoming>>();
    send_sync_unpin::<CacheBody<http_body_util::Full<Bytes>>>();
    // The body-keying variant, over a client whose requests carry a `Full` body.
    type FullClient = Client<HttpConnector, http_body_util::Full<Bytes>>;
    clone_send_sync::<Cache<FullClient, MemoryStore, BodyKeys>>();
    clone_send_sync::<CacheLayer<MemoryStore, BodyKeys>>();
    send::<ResponseFuture<FullClient, MemoryStore, http_body_util::Full<Bytes>>>();
    clone_send_sync::<Inspector<MemoryStore>>();
}

/// The cached client goes into `axum::Router::with_state` and its response future into
/// `tokio::spawn` (the axum example does both at run time).
#[allow(dead_code)]
fn fits_axum_state_and_tokio_spawn(client: Cache<HyperClient, MemoryStore>) {
    let _router: axum::Router = axum::Router::new().with_state(client.clone());
    let request = http::Request::get("http://127.0.0.1/")
        .body(Empty::new())
        .unwrap();
    let _task = tokio::spawn(tower::ServiceExt::oneshot(client, request));
}
