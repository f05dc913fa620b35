//! The storability table (RFC 9111 §3) and the user's expiry settings.
use super::*;
use crate::policy::fields::strip_unstorable;
use http::HeaderValue;
use std::time::UNIX_EPOCH;

fn check(
    method: Method,
    req: &[(&'static str, &'static str)],
    status: u16,
    res: &[(&'static str, &'static str)],
    shared: bool,
) -> Storability {
    let mut rq = HeaderMap::new();
    for (n, v) in req {
        rq.append(*n, HeaderValue::from_static(v));
    }
    let mut rs = HeaderMap::new();
    for (n, v) in res {
        rs.append(*n, HeaderValue::from_static(v));
    }
    let x = Exchange {
        method: &method,
        method_allowed: false,
        request_headers: &rq,
        request_cc: &RequestDirectives::parse(&rq),
        status: StatusCode::from_u16(status).unwrap(),
        response_headers: &rs,
        response_cc: &ResponseDirectives::parse(&rs),
        response_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        age: Duration::ZERO,
        credentials: &[http::HeaderName::from_static("x-session-token")],
        shared_set_cookie: false,
    };
    storability(&x, shared)
}

#[test]
fn storability_table() {
    use NotStorable as N;
    let store60 = Storability::Store {
        lifetime: Duration::from_secs(60),
    };
    let cc = "cache-control";
    type Fields = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Method, Fields, u16, Fields, bool, Storability)> = vec![
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60")],
            false,
            store60.clone(),
        ),
        (
            Method::POST,
            vec![],
            200,
            vec![(cc, "max-age=60")],
            false,
            Storability::DoNotStore(N::Method),
        ),
        (
            Method::GET,
            vec![],
            404,
            vec![(cc, "max-age=60")],
            false,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![],
            307,
            vec![(cc, "max-age=60")],
            false,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![],
            206,
            vec![(cc, "max-age=60")],
            false,
            Storability::DoNotStore(N::Status),
        ),
        // §3.3: an incomplete response that says exactly what it holds, for one range.
        (
            Method::GET,
            vec![("range", "bytes=0-4")],
            206,
            vec![
                (cc, "max-age=60"),
                ("content-range", "bytes 0-4/10"),
                ("content-length", "5"),
            ],
            false,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![("range", "bytes=0-4")],
            206,
            vec![
                (cc, "max-age=60"),
                ("content-range", "bytes 0-4/10"),
                ("content-length", "4"),
            ],
            false,
            Storability::DoNotStore(N::Status),
        ),
        (
            Method::GET,
            vec![("range", "bytes=0-4, 6-7")],
            206,
            vec![
                (cc, "max-age=60"),
                ("content-type", "multipart/byteranges; boundary=x"),
            ],
            false,
            Storability::DoNotStore(N::Status),
        ),
        (
            Method::GET,
            vec![("range", "bytes=0-4")],
            206,
            vec![
                (cc, "max-age=60"),
                ("content-range", "bytes 0-4/10"),
                ("content-length", "5"),
                ("vary", "accept"),
            ],
            false,
            Storability::DoNotStore(N::Status),
        ),
        (
            Method::GET,
            vec![],
            304,
            vec![(cc, "max-age=60")],
            false,
            Storability::DoNotStore(N::Status),
        ),
        (
            Method::GET,
            vec![],
            500,
            vec![(cc, "max-age=60")],
            false,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![],
            599,
            vec![(cc, "max-age=60")],
            false,
            store60.clone(),
        ),
        // Heuristic: Last-Modified 6400 s before reception (no Date) → 640 s.
        (
            Method::GET,
            vec![],
            200,
            vec![("last-modified", "Tue, 14 Nov 2023 20:26:40 GMT")],
            false,
            Storability::Store {
                lifetime: Duration::from_secs(640),
            },
        ),
        (
            Method::GET,
            vec![],
            302,
            vec![("last-modified", "Tue, 14 Nov 2023 20:26:40 GMT")],
            false,
            Storability::DoNotStore(N::NoFreshness),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60, no-store")],
            false,
            Storability::DoNotStore(N::ResponseNoStore),
        ),
        (
            Method::GET,
            vec![(cc, "no-store")],
            200,
            vec![(cc, "max-age=60")],
            false,
            Storability::DoNotStore(N::RequestNoStore),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60, no-cache")],
            false,
            Storability::DoNotStore(N::NoCache),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "no-cache"), ("etag", "\"e\"")],
            false,
            Storability::Store {
                lifetime: Duration::ZERO,
            },
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=0"), ("etag", "\"e\"")],
            false,
            Storability::Store {
                lifetime: Duration::ZERO,
            },
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60, private")],
            false,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60, private")],
            true,
            Storability::DoNotStore(N::Private),
        ),
        (
            Method::GET,
            vec![("authorization", "x")],
            200,
            vec![(cc, "max-age=60")],
            false,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![("authorization", "x")],
            200,
            vec![(cc, "max-age=60")],
            true,
            Storability::DoNotStore(N::Authorization),
        ),
        (
            Method::GET,
            vec![("authorization", "x")],
            200,
            vec![(cc, "max-age=60, public")],
            true,
            store60.clone(),
        ),
        // A credential field the user listed counts as Authorization does (shared only).
        (
            Method::GET,
            vec![("x-session-token", "x")],
            200,
            vec![(cc, "max-age=60")],
            true,
            Storability::DoNotStore(N::Authorization),
        ),
        (
            Method::GET,
            vec![("x-session-token", "x")],
            200,
            vec![(cc, "s-maxage=60")],
            true,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![("x-session-token", "x")],
            200,
            vec![(cc, "max-age=60")],
            false,
            store60.clone(),
        ),
        // Set-Cookie: not in a shared cache (even `public`), as received in a private one.
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60, public"), ("set-cookie", "a=b")],
            true,
            Storability::DoNotStore(N::SetCookie),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60"), ("set-cookie", "a=b")],
            false,
            store60.clone(),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=60"), ("vary", "*")],
            false,
            Storability::DoNotStore(N::VaryStar),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![],
            false,
            Storability::DoNotStore(N::NoFreshness),
        ),
        (
            Method::GET,
            vec![],
            200,
            vec![(cc, "max-age=0")],
            false,
            Storability::DoNotStore(N::Stale),
        ),
    ];
    for (i, (m, rq, st, rs, shared, want)) in cases.into_iter().enumerate() {
        assert_eq!(check(m, &rq, st, &rs, shared), want, "case {i}");
    }
}

#[test]
fn must_understand_overrides_no_store_only_for_understood_statuses() {
    let cc = "cache-control";
    let mu = "max-age=60, must-understand, no-store";
    let store60 = Storability::Store {
        lifetime: Duration::from_secs(60),
    };
    assert_eq!(check(Method::GET, &[], 200, &[(cc, mu)], false), store60);
    assert_eq!(
        check(Method::GET, &[], 599, &[(cc, mu)], false),
        Storability::DoNotStore(NotStorable::Status)
    );
    assert_eq!(
        check(
            Method::GET,
            &[],
            599,
            &[(cc, "max-age=60, must-understand")],
            false
        ),
        Storability::DoNotStore(NotStorable::Status)
    );
    // The request's no-store still wins.
    assert_eq!(
        check(Method::GET, &[(cc, "no-store")], 200, &[(cc, mu)], false),
        Storability::DoNotStore(NotStorable::RequestNoStore)
    );
}

#[test]
fn strips_hop_by_hop_and_connection_listed() {
    let mut h = HeaderMap::new();
    h.insert("connection", HeaderValue::from_static("close, x-hop"));
    h.insert("x-hop", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
    h.insert("x-end-to-end", HeaderValue::from_static("kept"));
    strip_unstorable(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["x-end-to-end"], "kept");
}
