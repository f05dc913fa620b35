//! Entries that fail verification are never served (DESIGN.md §4, "Errors").

use bytes::Bytes;
use hyper_client_cache::{
    BadSignature, CacheLayer, CacheStatus, KeyRing, MemoryStore, OnBadSignature, SecretKey,
};

use crate::common::*;

fn right() -> SecretKey {
    SecretKey::new("the right key, shared by the fleet").unwrap()
}
fn wrong() -> SecretKey {
    SecretKey::new("somebody else's perfectly valid key").unwrap()
}

/// The name a cache signing with `key` stores `url` under.
fn name_under(key: SecretKey, url: &str) -> hyper_client_cache::CacheKey {
    let request = http::Request::get(url).body(()).unwrap();
    CacheLayer::new(()).secret_key(key).key_for(&request)
}

/// The name the fleet's caches (signing with [`right`]) store `url` under.
fn key_for(url: &str) -> hyper_client_cache::CacheKey {
    name_under(right(), url)
}

fn bad_signature(err: &hyper_client_cache::BoxError) -> &BadSignature {
    err.downcast_ref::<BadSignature>()
        .unwrap_or_else(|| panic!("expected BadSignature, got: {err}"))
}

#[tokio::test]
async fn exploit_bytes_written_over_an_entry_fail_with_bad_signature() {
    let origin = Origin::fixed("max-age=600", "genuine").await;
    let store = MemoryStore::default();
    let mut client = cached_client(CacheLayer::new(store.clone()).secret_key(right()));
    let url = origin.url("/data");
    get(&mut client, &url).await.unwrap();

    put_raw(&store, key_for(&url), Bytes::from_static(b"exploit!")).await;
    let err = get(&mut client, &url)
        .await
        .err()
        .expect("tampered entry must not be served");
    let bad = bad_signature(&err);
    assert_eq!(bad.key(), &key_for(&url));
    assert!(bad.is_malformed());
    let msg = err.to_string();
    assert!(msg.contains(key_for(&url).as_str()), "{msg}");
    assert!(msg.contains("signature did not match"), "{msg}");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn an_entry_signed_with_a_different_key_fails_with_bad_signature() {
    let origin = Origin::fixed("max-age=600", "genuine").await;
    let store = MemoryStore::default();
    let url = origin.url("/data");
    // An attacker with write access and their own key stores a validly signed response, and
    // puts it under the name our caches use (names are visible to whoever lists the store).
    let mut attacker = cached_client(CacheLayer::new(store.clone()).secret_key(wrong()));
    get(&mut attacker, &url).await.unwrap();
    let forged = get_raw(&store, name_under(wrong(), &url)).await.unwrap();
    put_raw(&store, key_for(&url), forged).await;

    let mut client = cached_client(CacheLayer::new(store.clone()).secret_key(right()));
    let err = get(&mut client, &url)
        .await
        .err()
        .expect("must not be served");
    assert!(bad_signature(&err).is_unknown_key());
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn refetch_option_deletes_and_fetches_a_fresh_valid_entry() {
    let origin = Origin::fixed("max-age=600", "genuine").await;
    let store = MemoryStore::default();
    let url = origin.url("/data");
    put_raw(&store, key_for(&url), Bytes::from_static(b"exploit!")).await;

    let mut client = cached_client(
        CacheLayer::new(store.clone())
            .secret_key(right())
            .on_bad_signature(OnBadSignature::Refetch),
    );
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(got.body, "genuine");
    assert_eq!(got.cache, Some(CacheStatus::Miss));
    assert_eq!(origin.requests(), 1);
    // The replacement is valid: the next request is a hit.
    let again = get(&mut client, &url).await.unwrap();
    assert_eq!(again.cache, Some(CacheStatus::Hit));
    assert_eq!(again.body, "genuine");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn refetch_deletes_the_entry_even_when_the_new_response_is_not_storable() {
    let origin = Origin::fixed("no-store", "fresh").await;
    let store = MemoryStore::default();
    let url = origin.url("/x");
    put_raw(&store, key_for(&url), Bytes::from_static(b"exploit!")).await;
    let mut client = cached_client(
        CacheLayer::new(store.clone())
            .secret_key(right())
            .on_bad_signature(OnBadSignature::Refetch),
    );
    assert_eq!(get(&mut client, &url).await.unwrap().body, "fresh");
    assert!(get_raw(&store, key_for(&url)).await.is_none());
}

#[tokio::test]
async fn a_validly_signed_blob_copied_to_another_key_is_rejected() {
    let origin = Origin::start(|s| {
        http::Response::builder()
            .header("cache-control", "max-age=600")
            .body(http_body_util::Full::new(Bytes::from(
                s.uri.path().to_owned(),
            )))
            .unwrap()
    })
    .await;
    let store = MemoryStore::default();
    let mut client = cached_client(CacheLayer::new(store.clone()).secret_key(right()));
    let (a, b) = (origin.url("/public"), origin.url("/account"));
    get(&mut client, &a).await.unwrap();
    get(&mut client, &b).await.unwrap();

    // Swap: the validly signed entry of /public is written under the key of /account.
    let blob_a = get_raw(&store, key_for(&a)).await.unwrap();
    put_raw(&store, key_for(&b), blob_a).await;
    let err = get(&mut client, &b)
        .await
        .err()
        .expect("swapped entry must not be served");
    assert!(bad_signature(&err).is_wrong_key());
    // The untouched entry still works.
    assert_eq!(
        get(&mut client, &a).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_entries_until_the_old_key_is_dropped() {
    // Entries are named under the key that was current when they were written; during a
    // rotation (the ring: new + old) the old names are looked up when the new ones miss, and
    // once the old key is dropped its entries are no longer found: misses, not errors.
    let origin = Origin::fixed("max-age=600", "x").await;
    let store = MemoryStore::default();
    let old = || SecretKey::new("the key of last quarter").unwrap();
    let new = || SecretKey::new("the key of this quarter").unwrap();
    let (u1, u2) = (origin.url("/one"), origin.url("/two"));

    let mut before = cached_client(CacheLayer::new(store.clone()).secret_key(old()));
    get(&mut before, &u1).await.unwrap();

    let mut rotated = cached_client(
        CacheLayer::new(store.clone()).secret_key(KeyRing::new(new()).with_previous(old())),
    );
    assert_eq!(
        get(&mut rotated, &u1).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    get(&mut rotated, &u2).await.unwrap();
    // New entries carry the new key id (envelope bytes 7..15).
    let blob = get_raw(&store, name_under(new(), &u2)).await.unwrap();
    assert_eq!(&blob[7..15], &new().key_id());

    let mut after = cached_client(CacheLayer::new(store.clone()).secret_key(new()));
    assert_eq!(
        get(&mut after, &u2).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
    assert_eq!(origin.requests(), 2);
    // /one was only ever stored under the old key's name: not found any more, refetched.
    assert_eq!(
        get(&mut after, &u1).await.unwrap().cache,
        Some(CacheStatus::Miss)
    );
    assert_eq!(origin.requests(), 3);
    // Under its old name the old-key entry would still be refused, never served.
    let old_blob = get_raw(&store, name_under(old(), &u1)).await.unwrap();
    put_raw(&store, name_under(new(), &u1), old_blob).await;
    let err = get(&mut after, &u1)
        .await
        .err()
        .expect("old-key entry must be refused");
    assert!(bad_signature(&err).is_unknown_key());
}

#[tokio::test]
async fn unsigned_cache_treats_garbage_as_a_miss_and_replaces_it() {
    let origin = Origin::fixed("max-age=600", "genuine").await;
    let store = MemoryStore::default();
    let url = origin.url("/u");
    put_raw(
        &store,
        unsigned_key_for(&url),
        Bytes::from_static(b"exploit!"),
    )
    .await;
    let mut client = cached_client(CacheLayer::new(store.clone()));
    let got = get(&mut client, &url).await.unwrap();
    assert_eq!(
        (got.cache, &got.body[..]),
        (Some(CacheStatus::Miss), &b"genuine"[..])
    );
    assert_eq!(
        get(&mut client, &url).await.unwrap().cache,
        Some(CacheStatus::Hit)
    );
}

#[tokio::test]
async fn a_signing_cache_refuses_unsigned_entries() {
    let origin = Origin::fixed("max-age=600", "x").await;
    let store = MemoryStore::default();
    let url = origin.url("/d");
    let mut unsigned = cached_client(CacheLayer::new(store.clone()));
    get(&mut unsigned, &url).await.unwrap();
    // The unsigned entry, put under the signing caches' name.
    let unsigned_blob = get_raw(&store, unsigned_key_for(&url)).await.unwrap();
    put_raw(&store, key_for(&url), unsigned_blob).await;
    let mut signed = cached_client(CacheLayer::new(store.clone()).secret_key(right()));
    let err = get(&mut signed, &url)
        .await
        .err()
        .expect("downgrade must be refused");
    assert!(bad_signature(&err).is_unsigned());
}

// ---- Review: one blob, two names ---------------------------------------------------------

async fn keys_of(store: &MemoryStore) -> Vec<hyper_client_cache::CacheKey> {
    use hyper_client_cache::{StoreRequest, StoreResponse};
    use tower::ServiceExt;
    match store.clone().oneshot(StoreRequest::Keys).await {
        Ok(StoreResponse::Keys(keys)) => keys,
        _ => panic!("cannot list"),
    }
}

fn with_accept(url: &str, accept: &str) -> http::Request<http_body_util::Empty<Bytes>> {
    http::Request::get(url)
        .header("accept", accept)
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// A varying response stored for `Accept: a` and `Accept: b` (one blob under the URL's key and
/// its variant's). The store's writer moves variant a's blob under variant b's name, under the
/// URL's key and under the partial name: a request with `Accept: b` never gets `a`'s body,
/// whatever the protection.
#[tokio::test]
async fn a_variant_blob_moved_to_another_variant_is_never_served() {
    for encrypt in [false, true] {
        let origin = Origin::start(|s| {
            let accept = s
                .headers
                .get("accept")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            http::Response::builder()
                .header("cache-control", "max-age=600")
                .header("vary", "accept")
                .body(http_body_util::Full::new(Bytes::from(accept)))
                .unwrap()
        })
        .await;
        let store = MemoryStore::default();
        let layer = CacheLayer::new(store.clone()).on_bad_signature(OnBadSignature::Refetch);
        let layer = if encrypt {
            layer.encrypt(right())
        } else {
            layer.secret_key(right())
        };
        let mut client = cached_client(layer);
        let url = origin.url("/v");
        assert_eq!(
            send(&mut client, with_accept(&url, "a"))
                .await
                .unwrap()
                .body,
            "a"
        );
        let primary = key_for(&url);
        let keys_after_a = keys_of(&store).await;
        let variant_a = keys_after_a
            .iter()
            .find(|k| **k != primary)
            .cloned()
            .expect("a variant name");
        assert!(variant_a
            .as_str()
            .starts_with(&format!("{}#", primary.as_str())));
        let blob_a = get_raw(&store, variant_a.clone()).await.unwrap();
        assert_eq!(
            get_raw(&store, primary.clone()).await.unwrap(),
            blob_a,
            "one blob"
        );
        assert_eq!(
            send(&mut client, with_accept(&url, "b"))
                .await
                .unwrap()
                .body,
            "b"
        );
        let variant_b = keys_of(&store)
            .await
            .into_iter()
            .find(|k| *k != primary && *k != variant_a)
            .expect("b's variant name");
        assert_eq!(origin.requests(), 2);

        // a's blob under b's variant name, and under the URL's key (where it opens, as a's
        // variant, sending b to its variant name).
        put_raw(&store, variant_b.clone(), blob_a.clone()).await;
        put_raw(&store, primary.clone(), blob_a.clone()).await;
        let got = send(&mut client, with_accept(&url, "b")).await.unwrap();
        assert_eq!(got.body, "b", "encrypt {encrypt}");
        assert_eq!(origin.requests(), 3, "refused and refetched");

        // a's blob under the partial name: a ranged request for b never sees a's bytes.
        put_raw(
            &store,
            hyper_client_cache::CacheKey::from_stored(format!("{}#partial", primary.as_str())),
            blob_a.clone(),
        )
        .await;
        let mut ranged = with_accept(&url, "b");
        ranged
            .headers_mut()
            .insert("range", http::HeaderValue::from_static("bytes=0-0"));
        let got = send(&mut client, ranged).await.unwrap();
        assert_ne!(got.body, "a", "encrypt {encrypt}");
    }
}

/// A command-line tool whose users changed the key variable: every entry written under the old
/// key is a clean miss (entries are named under the key), refetched and stored under the new
/// one; not a `BadSignature` on every request.
#[tokio::test]
async fn changing_the_secret_is_a_miss_for_every_old_entry_not_an_error() {
    let origin = Origin::fixed("max-age=600", "x").await;
    let store = MemoryStore::default();
    let urls: Vec<String> = (0..5).map(|i| origin.url(&format!("/cli/{i}"))).collect();
    let mut yesterday = cached_client(CacheLayer::new(store.clone()).secret_key(wrong()));
    for url in &urls {
        get(&mut yesterday, url).await.unwrap();
    }
    let mut today = cached_client(CacheLayer::new(store.clone()).secret_key(right()));
    for url in &urls {
        let got = get(&mut today, url).await.expect("a miss, not an error");
        assert_eq!(got.cache, Some(CacheStatus::Miss));
        assert_eq!(
            get(&mut today, url).await.unwrap().cache,
            Some(CacheStatus::Hit)
        );
    }
    assert_eq!(origin.requests(), 10);
}
