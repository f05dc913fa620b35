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

/// The client in the state retries (outside the cache): an upstream that fails once with a 503
/// is asked again, the 503 is not stored, the 200 is, and the next call is a hit.
#[tokio::test]
async fn the_boxed_client_in_the_state_retries_through_the_cache() {
    use bytes::Bytes;
    use http_body_util::Full;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let origin = crate::common::Origin::start(move |s| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let id = s.uri.path().trim_start_matches("/users/").to_owned();
        let status = if n == 0 { 503 } else { 200 };
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!(
                r#"{{"id":{id},"name":"user {id}"}}"#
            ))))
            .unwrap()
    })
    .await;
    let state = example::AppState {
        client: example::cached_client(SecretKey::generate().unwrap()),
        upstream: origin.addr,
    };
    let server = example::serve(example::app(state)).await.unwrap();
    let browser = hyper_client();
    for expected in ["miss", "hit"] {
        let response = browser
            .get(format!("http://{server}/profile/3").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-upstream-cache"], expected);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one 503, one 200, then a hit"
    );
}
