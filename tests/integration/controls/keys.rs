//! What the cache key is made of: ignored parameters, matched headers, a custom key function,
//! request bodies.

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response};
use http_body_util::{Empty, Full};
use hyper_client_cache::{CacheStatus, KeyParts, NotStoredReason};

use crate::common::*;

#[tokio::test]
async fn ignored_parameters_leave_the_key_and_the_stored_data() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let layer = layer(&clock).ignored_parameters(["utm_source", "session"]);
    let inspector = layer.inspector();
    let mut client = cached_client(layer);
    get(
        &mut client,
        &origin.url("/p?a=1&utm_source=mail&session=SESSION1"),
    )
    .await
    .unwrap();
    let got = get(
        &mut client,
        &origin.url("/p?session=OTHER&a=1&utm_source=web"),
    )
    .await
    .unwrap();
    assert_eq!(got.cache, Some(CacheStatus::Hit));
    let listing = inspector.entries().await.unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].url, origin.url("/p?a=1"));
    // The origin still saw the parameters.
    assert!(origin.seen()[0]
        .uri
        .query()
        .unwrap()
        .contains("session=SESSION1"));
}

/// Both anchors store credentials, or let another user's token hit the first user's entry. A
/// header ignored for the key but listed in Vary still selects (a miss for another token), and
/// neither it nor the default credential names are stored in clear.
#[tokio::test]
async fn ignored_or_credential_headers_still_select_by_vary_and_are_not_stored() {
    let origin = Origin::start(|s| {
        let token = s
            .headers
            .get("x-user-token")
            .or(s.headers.get("authorization"))
            .map(|v| v.to_str().unwrap().to_lowercase())
            .unwrap_or_default();
        // The body names the user, not the token (the test looks for the token in the store).
        let user = token.split('-').next().unwrap_or_default().to_owned();
        Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "X-User-Token, Authorization")
            .body(Full::new(Bytes::from(format!("data of {user}"))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let layer = layer(&clock).ignored_parameters(["x-user-token", "api_key"]);
    let store = layer.store().clone();
    let mut client = cached_client(layer);
    let url = origin.url("/me?api_key=QUERYSECRET");
    let as_user = |header: &str, token: &str| {
        Request::get(&url)
            .header(header, token)
            .body(Empty::new())
            .unwrap()
    };
    for header in ["x-user-token", "authorization"] {
        let alice = send(&mut client, as_user(header, "ALICE-TOKEN"))
            .await
            .unwrap();
        assert_eq!(alice.body, "data of alice");
        let bob = send(&mut client, as_user(header, "BOB-TOKEN"))
            .await
            .unwrap();
        assert_eq!(
            bob.body, "data of bob",
            "{header}: Bob must not get Alice's entry"
        );
        assert_ne!(bob.cache, Some(CacheStatus::Hit));
        let alice = send(&mut client, as_user(header, "ALICE-TOKEN"))
            .await
            .unwrap();
        assert_eq!(alice.body, "data of alice");
        assert_eq!(alice.cache, Some(CacheStatus::Hit), "{header}");
    }
    for blob in all_blobs(&store).await {
        for secret in [&b"ALICE-TOKEN"[..], b"BOB-TOKEN", b"QUERYSECRET"] {
            assert!(
                !blob.windows(secret.len()).any(|w| w == secret),
                "{} stored in clear",
                String::from_utf8_lossy(secret)
            );
        }
    }
}

#[tokio::test]
async fn match_headers_adds_request_headers_to_the_key() {
    let origin = Origin::start(|s| {
        let tenant = s
            .headers
            .get("x-tenant")
            .map(|v| v.to_str().unwrap().to_owned());
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!("{tenant:?}"))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let mut client =
        cached_client(layer(&clock).match_headers([HeaderName::from_static("x-tenant")]));
    let url = origin.url("/t");
    let req = |t: &str| {
        Request::get(&url)
            .header("x-tenant", t)
            .body(Empty::new())
            .unwrap()
    };
    assert_eq!(
        send(&mut client, req("a")).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    let b = send(&mut client, req("b")).await.unwrap();
    assert_eq!(
        (b.cache, &b.body[..]),
        (Some(CacheStatus::Miss), &b"Some(\"b\")"[..])
    );
    let a = send(&mut client, req("a")).await.unwrap();
    assert_eq!(
        (a.cache, &a.body[..]),
        (Some(CacheStatus::Hit), &b"Some(\"a\")"[..])
    );
}

#[tokio::test]
async fn a_custom_key_function_replaces_the_key() {
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    // One entry per path, whatever the host or query.
    let mut client = cached_client(
        layer(&clock).key_fn(|p: &KeyParts<'_>| format!("{} {}", p.method, p.uri.path())),
    );
    let port = origin.addr.port();
    get(&mut client, &format!("http://127.0.0.1:{port}/k?x=1"))
        .await
        .unwrap();
    let got = get(&mut client, &format!("http://localhost:{port}/k?x=2"))
        .await
        .unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Hit), &b"v1"[..])
    );
    let info = got.info.unwrap();
    // A signing layer names even custom keys with its keyed digest.
    assert!(info.key.unwrap().as_str().starts_with("hcc1k:"));
}

#[tokio::test]
async fn post_bodies_are_part_of_the_key_when_allowed() {
    let origin = Origin::start(|s| {
        Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!(
                "answer to {}",
                String::from_utf8_lossy(&s.body)
            ))))
            .unwrap()
    })
    .await;
    let clock = clock();
    let url = origin.url("/graphql");
    let post = |body: &'static str| {
        Request::post(&url)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };

    // By default POST is not cached.
    let mut default = full_body_client(layer(&clock));
    send_full(&mut default, post("{q1}")).await;
    let got = send_full(&mut default, post("{q1}")).await;
    assert_eq!(got.1, Some(CacheStatus::NotCacheable));

    // Allowed, without body keys: still not cached (the key could not tell bodies apart).
    let mut no_keys =
        full_body_client(layer(&clock).allowed_methods([Method::GET, Method::HEAD, Method::POST]));
    let got = send_full(&mut no_keys, post("{q1}")).await;
    assert_eq!(got.2, Some(NotStoredReason::RequestBody));

    let mut client = tower::ServiceBuilder::new()
        .layer(
            layer(&clock)
                .allowed_methods([Method::GET, Method::HEAD, Method::POST])
                .key_request_bodies(16),
        )
        .service(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>(),
        );
    let before = origin.requests();
    let q1 = send_full(&mut client, post("{q1}")).await;
    assert_eq!(
        (q1.0.as_str(), q1.1),
        ("answer to {q1}", Some(CacheStatus::Miss))
    );
    let q2 = send_full(&mut client, post("{q2}")).await;
    assert_eq!(
        (q2.0.as_str(), q2.1),
        ("answer to {q2}", Some(CacheStatus::Miss))
    );
    let q1 = send_full(&mut client, post("{q1}")).await;
    assert_eq!(
        (q1.0.as_str(), q1.1),
        ("answer to {q1}", Some(CacheStatus::Hit))
    );
    assert_eq!(origin.requests(), before + 2);
    // The origin got the bodies unchanged.
    let seen = origin.seen();
    assert_eq!(seen[seen.len() - 1].body, "{q2}");
    // Over the limit: bypasses the cache, and the whole body still reaches the origin.
    let long = "{a query that is longer than sixteen bytes}";
    let got = send_full(&mut client, post(long)).await;
    assert_eq!(got.2, Some(NotStoredReason::RequestBody));
    assert_eq!(origin.seen().last().unwrap().body, long);
    // A cached POST does not invalidate anything.
    assert_eq!(
        send_full(&mut client, post("{q1}")).await.1,
        Some(CacheStatus::Hit)
    );
}

async fn send_full<S, B>(
    svc: &mut S,
    request: Request<Full<Bytes>>,
) -> (String, Option<CacheStatus>, Option<NotStoredReason>)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<hyper_client_cache::CacheBody<B>>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: Into<hyper_client_cache::BoxError>,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        String::from_utf8_lossy(&body).into_owned(),
        parts.extensions.get().copied(),
        parts.extensions.get().copied(),
    )
}

/// A request body whose size hint says 4 bytes but that yields more: reading it for the key
/// fails the request with an error (the body cannot be sent on unchanged), and nothing is stored.
#[tokio::test]
async fn a_body_longer_than_its_size_hint_fails_the_request() {
    #[derive(Default)]
    struct Lying(Option<Bytes>);
    impl From<Bytes> for Lying {
        fn from(b: Bytes) -> Self {
            Lying(Some(b))
        }
    }
    impl http_body::Body for Lying {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(4)
        }
    }
    let origin = Origin::counting(&[("cache-control", "max-age=60")]).await;
    let clock = clock();
    let mut client = tower::ServiceBuilder::new()
        .layer(
            layer(&clock)
                .allowed_methods([Method::POST])
                .key_request_bodies(16),
        )
        .service(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Lying>(),
        );
    let request = Request::post(origin.url("/lie"))
        .body(Lying(Some(Bytes::from(vec![b'x'; 100]))))
        .unwrap();
    use tower::{Service, ServiceExt};
    let err = client
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("request body"), "{err}");
    assert_eq!(origin.requests(), 0);
}
