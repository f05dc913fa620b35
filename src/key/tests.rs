//! Unit tests of keys and URI normalization.

use super::*;
use http::header;

fn key(method: &str, uri: &str) -> CacheKey {
    CacheKey::for_request(&Request::builder().method(method).uri(uri).body(()).unwrap())
}

#[test]
fn normalization_table() {
    let same = [
        ("http://example.com/", "HTTP://EXAMPLE.com:80/"),
        ("http://example.com", "http://example.com/"),
        ("https://example.com/x", "https://example.com:443/x"),
        ("http://e.com/p?a=1&b=2", "http://e.com/p?b=2&a=1"),
        ("http://e.com/p?a=1", "http://e.com/p?a=1&"),
    ];
    for (a, b) in same {
        assert_eq!(key("GET", a), key("GET", b), "{a} vs {b}");
    }
    let different = [
        ("http://e.com/p?a=1&a=2", "http://e.com/p?a=2&a=1"),
        ("http://e.com/P", "http://e.com/p"),
        ("http://e.com:8080/", "http://e.com/"),
        ("http://e.com/", "https://e.com/"),
    ];
    for (a, b) in different {
        assert_ne!(key("GET", a), key("GET", b), "{a} vs {b}");
    }
    assert_ne!(key("GET", "http://e.com/"), key("HEAD", "http://e.com/"));
}

#[test]
fn relative_uri_uses_host_header() {
    let rel = Request::get("/x")
        .header(header::HOST, "Example.com")
        .body(())
        .unwrap();
    assert_eq!(
        CacheKey::for_request(&rel),
        key("GET", "http://example.com/x")
    );
}

#[test]
fn ignored_parameters_leave_key_and_stored_uri() {
    let mut keying = Keying::new(&["api_key", "token"]);
    keying.ignored = vec!["utm_source".into(), "api_key".into()];
    let req = |uri: &str| Request::get(uri).body(()).unwrap();
    let a = keying.key_as(
        &req("http://e.com/p?a=1&utm_source=x&api_key=SECRET"),
        &Method::GET,
    );
    let b = keying.key_as(&req("http://e.com/p?a=1"), &Method::GET);
    assert_eq!(a, b);
    assert_ne!(
        keying.key_as(&req("http://e.com/p?a=1&token=T1"), &Method::GET),
        b
    );
    let stored = keying.stored_uri(
        &"http://e.com/p?a=1&utm_source=x&api_key=SECRET&Token=T1"
            .parse()
            .unwrap(),
    );
    assert_eq!(stored, "http://e.com/p?a=1&Token=REDACTED");
    assert_eq!(keying.stored_uri(&"/rel?x=1".parse().unwrap()), "/rel?x=1");
    // Userinfo is never kept; percent-encoded names are redacted and ignored as decoded.
    let uri = "http://u:PW@e.com:8080/p?TO%4bEN=S1&api%5Fkey=S2&flag&token"
        .parse()
        .unwrap();
    assert_eq!(
        keying.stored_uri(&uri),
        "http://e.com:8080/p?TO%4bEN=REDACTED&flag&token"
    );
    assert_eq!(keying.log_uri(&uri).to_string(), keying.stored_uri(&uri));
    assert_eq!(
        keying.stored_uri(&"http://u@e.com".parse().unwrap()),
        "http://e.com/"
    );
}

#[test]
fn invalidation_targets_stay_on_the_same_origin() {
    use crate::policy::invalidation::same_origin;
    let keying = Keying::new(&[]);
    let post = Request::post("http://e.com/items/1").body(()).unwrap();
    // What invalidation does with a `Location`: the policy's same-origin rule, then the key.
    struct Targets<'a>(&'a Keying);
    impl Targets<'_> {
        fn same_origin_get_key(&self, post: &Request<()>, r: &str) -> Option<CacheKey> {
            same_origin(post.uri(), r).map(|uri| self.0.get_key(uri))
        }
    }
    let targets = Targets(&keying);
    let get = |u: &str| keying.key_as(&Request::get(u).body(()).unwrap(), &Method::GET);
    assert_eq!(
        targets.same_origin_get_key(&post, "/items/2"),
        Some(get("http://e.com/items/2"))
    );
    assert_eq!(
        targets.same_origin_get_key(&post, "HTTP://E.COM/items/3"),
        Some(get("http://e.com/items/3"))
    );
    assert_eq!(
        targets.same_origin_get_key(&post, "http://other.com/items/2"),
        None
    );
    assert_eq!(
        targets.same_origin_get_key(&post, "https://e.com/items/2"),
        None
    );
    assert_eq!(targets.same_origin_get_key(&post, "relative/path"), None);
    assert_eq!(targets.same_origin_get_key(&post, "not a uri"), None);
}

#[test]
fn host_path_normalizes() {
    let uri: Uri = "HTTPS://API.Example.com:443/A/b?q=1".parse().unwrap();
    assert_eq!(host_path(&uri, None), "api.example.com/A/b");
    let uri: Uri = "http://e.com:8080".parse().unwrap();
    assert_eq!(host_path(&uri, None), "e.com:8080/");
    let uri: Uri = "/x".parse().unwrap();
    assert_eq!(host_path(&uri, Some("H.com")), "h.com/x");
}

#[test]
fn a_differing_host_header_is_keyed_besides_the_uri_authority() {
    let with_host =
        |uri: &str, host: &str| Request::get(uri).header("host", host).body(()).unwrap();
    // The connection target stays the authority; the Host that differs is keyed after a NUL.
    let r = with_host("http://10.0.0.1:8080/p?q=1", "Tenant.example");
    assert_eq!(
        normalized_target(&r, &[]),
        "http://10.0.0.1:8080/p?q=1\0host\0tenant.example"
    );
    assert_eq!(request_host_path(&r), "10.0.0.1:8080/p");
    assert_eq!(target_uri(&r), "http://10.0.0.1:8080/p?q=1");
    // The same authority in another case or with the default port adds nothing.
    let r = with_host("https://x/", "X:443");
    assert_eq!(normalized_target(&r, &[]), "https://x/");
    // `Host: example.com/a` + `/b` is not `example.com/a/b`.
    let odd = with_host("http://10.0.0.1/b", "example.com/a");
    let plain = Request::get("http://example.com/a/b").body(()).unwrap();
    assert_ne!(normalized_target(&odd, &[]), normalized_target(&plain, &[]));
    // A relative URI (as a server sees it) takes its authority from the Host.
    let r = with_host("/rel", "h.example");
    assert_eq!(normalized_target(&r, &[]), "http://h.example/rel");
    assert_eq!(target_uri(&r), "http://h.example/rel");
    assert!(host_is_keyable(&r));
    assert!(!host_is_keyable(&with_host("http://e.com/", "")));
    assert!(!host_is_keyable(&with_host("http://e.com/", "bad host")));
    assert!(!host_is_keyable(&with_host("http://e.com/", "e.com/a")));
}

#[test]
fn key_is_versioned_hex() {
    let k = key("GET", "http://e.com/");
    assert_eq!(k.as_str().len(), 5 + 64);
    assert!(k.as_str().starts_with("hcc1:"));
}
