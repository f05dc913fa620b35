//! `examples/axum_outbound.rs`, driven end to end over real sockets: client → axum server →
//! cached hyper-util client in the router state → upstream API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_client_cache::SecretKey;

use crate::common::hyper_client;

#[allow(dead_code)]
#[path = "../../examples/axum_outbound.rs"]
mod example;

#[tokio::test]
async fn the_handler_reports_miss_then_hit_and_the_upstream_is_called_once() {
    let upstream_hits = Arc::new(AtomicUsize::new(0));
    let upstream = example::start_upstream(upstream_hits.clone())
        .await
        .unwrap();
    let state = example::AppState {
        client: example::cached_client(SecretKey::generate().unwrap()),
        upstream,
    };
    let server = example::serve(example::app(state)).await.unwrap();
    let browser = hyper_client();
    for (path, expected) in [
        ("/profile/7", "miss"),
        ("/profile/7", "hit"),
        ("/profile/8", "miss"),
        ("/profile/7", "hit"),
    ] {
        let response = browser
            .get(format!("http://{server}{path}").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-upstream-cache"], expected, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let id = &path["/profile/".len()..];
        assert_eq!(body, format!(r#"{{"id":{id},"name":"user {id}"}}"#));
    }
    assert_eq!(upstream_hits.load(Ordering::SeqCst), 2);
}
