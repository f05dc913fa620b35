//! What the services of one layer share beyond the store: the memos of opened entries
//! (`envelope/verified.rs`) forget what any of them, or the layer's `Inspector`, removes.

use std::convert::Infallible;
use std::future::Ready;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};

use crate::{CacheLayer, CacheStatus, MemoryStore, SecretKey};

/// The origin: a small response, fresh for 10 minutes.
fn respond(_req: Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    std::future::ready(Ok(Response::builder()
        .header("cache-control", "max-age=600")
        .body(Full::new(Bytes::from_static(b"secret plaintext")))
        .unwrap()))
}

fn request(method: Method) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("http://example.test/doc")
        .body(Full::default())
        .unwrap()
}

/// Sends `request` through `svc`, reads the body; its cache status.
async fn send<S>(svc: &mut S, request: Request<Full<Bytes>>) -> Option<CacheStatus>
where
    S: Service<Request<Full<Bytes>>, Response = Response<crate::CacheBody<Full<Bytes>>>>,
    S::Error: std::fmt::Debug,
{
    let response = svc.ready().await.unwrap().call(request).await.unwrap();
    let status = response.extensions().get::<CacheStatus>().copied();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn what_a_service_or_the_inspector_removes_no_memo_keeps() {
    let key = SecretKey::new("service test key, thirty-two by.").unwrap();
    let layer = CacheLayer::new(MemoryStore::default()).encrypt(key);
    let mut a = layer.layer(tower::service_fn(respond));
    let mut b = layer.layer(tower::service_fn(respond));
    let remembered = |a: &crate::Cache<_, _, _>, b: &crate::Cache<_, _, _>| {
        (
            a.config().verified.bytes() > 0,
            b.config().verified.bytes() > 0,
        )
    };

    send(&mut a, request(Method::GET)).await;
    assert_eq!(
        send(&mut a, request(Method::GET)).await,
        Some(CacheStatus::Hit)
    );
    assert_eq!(
        send(&mut b, request(Method::GET)).await,
        Some(CacheStatus::Hit)
    );
    assert_eq!(remembered(&a, &b), (true, true), "both opened it");

    // The inspector's delete: every service forgets the entry (plaintext here).
    let name = layer.key_for(&request(Method::GET));
    layer.inspector().delete(&name).await.unwrap();
    assert_eq!(remembered(&a, &b), (false, false));

    // A POST through one service invalidates the URL (RFC 9111 §4.4): the other forgets too.
    send(&mut a, request(Method::GET)).await;
    assert_eq!(
        send(&mut b, request(Method::GET)).await,
        Some(CacheStatus::Hit)
    );
    assert_eq!(remembered(&a, &b), (false, true));
    send(&mut a, request(Method::POST)).await;
    assert_eq!(remembered(&a, &b), (false, false));

    // A purge by tag, or a `Clear`, forgets everything.
    send(&mut a, request(Method::GET)).await;
    assert_eq!(
        send(&mut a, request(Method::GET)).await,
        Some(CacheStatus::Hit)
    );
    layer.inspector().clear().await.unwrap();
    assert_eq!(remembered(&a, &b), (false, false));
}

/// The memos forget a removed entry again once the store answered: a lookup between the
/// request being sent and the store removing it may open (and remember) the entry again.
#[tokio::test]
async fn an_entry_opened_while_it_is_being_deleted_is_forgotten_too() {
    let key = SecretKey::new("service test key, thirty-two by.").unwrap();
    let store = MemoryStore::default();
    let layer = CacheLayer::new(store.clone()).encrypt(key);
    let mut a = layer.layer(tower::service_fn(respond));
    send(&mut a, request(Method::GET)).await;
    let name = layer.key_for(&request(Method::GET));
    let delete = a
        .config()
        .call(&store, crate::StoreRequest::Delete { key: name.clone() });
    // Sent, not yet carried out: a hit opens the entry again.
    assert_eq!(
        send(&mut a, request(Method::GET)).await,
        Some(CacheStatus::Hit)
    );
    assert!(a.config().verified.bytes() > 0);
    delete.await.unwrap();
    assert_eq!(a.config().verified.bytes(), 0);
}

/// `key_for` names a request as the services do, and builds no service on the way: no memo is
/// registered (it used to be, a lock and an allocation per call), and the key is the one the
/// stored entry has, in every keying mode.
#[tokio::test]
async fn key_for_names_what_a_service_stores_and_registers_no_memo() {
    let key = || SecretKey::new("service test key, thirty-two by.").unwrap();
    for mode in ["unsigned", "signed", "encrypted"] {
        let store = MemoryStore::default();
        let layer = CacheLayer::new(store.clone());
        let layer = match mode {
            "signed" => layer.secret_key(key()),
            "encrypted" => layer.encrypt(key()),
            _ => layer,
        };
        for _ in 0..100 {
            layer.key_for(&request(Method::GET));
        }
        assert_eq!(layer.config.memos.registered(), 0, "{mode}");
        let mut svc = layer.layer(tower::service_fn(respond));
        send(&mut svc, request(Method::GET)).await;
        let name = layer.key_for(&request(Method::GET));
        let stored = svc
            .config()
            .call(
                &store,
                crate::StoreRequest::Get {
                    key: name,
                    max_len: usize::MAX,
                },
            )
            .await
            .unwrap();
        assert!(
            !matches!(stored, crate::StoreResponse::Blob(None)),
            "{mode}: nothing under the name key_for gives"
        );
        assert_eq!(layer.config.memos.registered(), 1, "{mode}");
    }
}
