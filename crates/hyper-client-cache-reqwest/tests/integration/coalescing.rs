//! Coalescing through reqwest (moved from the core's `fills.rs` and `default_deny.rs` with
//! the split into crates): the join pattern through the middleware and the tower service, and
//! a leader's own deadline.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper_client_cache::{BoxError, CacheLayer, CacheStatus, MemoryStore};
use hyper_client_cache_reqwest::ReqwestService;
use tower::{ServiceBuilder, ServiceExt};

use crate::common::*;

fn status<B>(response: &Response<B>) -> Option<CacheStatus> {
    response.extensions().get::<CacheStatus>().copied()
}

async fn text<B>(response: Response<B>) -> Result<Bytes, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(Into::into)?
        .to_bytes())
}

/// Through reqwest-middleware: two identical requests whose heads are awaited together and
/// whose bodies are read afterwards used to take `coalesce_timeout`, then both went to the
/// origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_pattern_through_reqwest_middleware_sends_one_request() {
    let origin = Origin::fixed("max-age=600", "shared body").await;
    let client = crate::reqwest::with_middleware(
        CacheLayer::new(MemoryStore::default()).coalesce_timeout(Duration::from_secs(3600)),
    );
    let url = origin.url("/joined");
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(client.get(&url).send(), client.get(&url).send())
    })
    .await
    .expect("the join finished");
    let (a, b) = (a.unwrap(), b.unwrap());
    let statuses = [crate::reqwest::status(&a), crate::reqwest::status(&b)];
    assert_eq!(a.text().await.unwrap(), "shared body");
    assert_eq!(b.text().await.unwrap(), "shared body");
    assert_eq!(origin.requests(), 1);
    assert!(
        statuses.contains(&Some(CacheStatus::Coalesced)),
        "{statuses:?}"
    );
}

/// The same through `ReqwestService` (the tower stack over a `reqwest::Client`) on a
/// multi-thread runtime: heads awaited together, bodies read afterwards, one origin request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_pattern_through_reqwest_service_sends_one_request() {
    let origin = Origin::fixed("max-age=600", "shared body").await;
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(MemoryStore::default()).coalesce_timeout(Duration::from_secs(3600)))
        .service(ReqwestService::new(reqwest::Client::new()));
    let url = origin.url("/joined");
    let request = || {
        http::Request::get(&url)
            .body(reqwest::Body::from(""))
            .unwrap()
    };
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(
            svc.clone().oneshot(request()),
            svc.clone().oneshot(request())
        )
    })
    .await
    .expect("the join finished");
    let (a, b) = (a.unwrap(), b.unwrap());
    let statuses = [status(&a), status(&b)];
    assert_eq!(text(a).await.unwrap(), "shared body");
    assert_eq!(text(b).await.unwrap(), "shared body");
    assert_eq!(origin.requests(), 1);
    assert!(
        statuses.contains(&Some(CacheStatus::Coalesced)),
        "{statuses:?}"
    );
}

/// #27 item 5 through reqwest: a leader whose request has `.timeout(150ms)` against an origin
/// that takes 800 ms used to fail its 5 waiters (no timeout of their own) with the leader's
/// error. They now get the origin's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_own_deadline_is_not_its_waiters_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // Bounded: the test sends 6 requests at most.
        for _ in 0..6 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                tokio::time::sleep(Duration::from_millis(800)).await;
                let body = "slow answer";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    let client = crate::reqwest::with_middleware(CacheLayer::new(MemoryStore::default()));
    let url = format!("http://{addr}/slow");
    let leader = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            client
                .get(&url)
                .timeout(Duration::from_millis(150))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                response.text().await.map_err(|e| e.to_string())
            })
        })
        .collect();
    assert!(leader.await.unwrap().is_err(), "the leader's own deadline");
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), "slow answer");
    }
    server.abort();
}
