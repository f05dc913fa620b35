//! Compile-time checks: the service, its futures and its body fit `tokio::spawn`, axum state and
//! hyper servers. If any of these stops holding, this file stops compiling.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_client_cache::{Cache, CacheBody, CacheLayer, MemoryStore, ResponseFuture};
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
}
