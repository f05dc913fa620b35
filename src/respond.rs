//! Responses the cache makes itself, from a stored entry or from nothing: pure builders with no
//! I/O, unit-tested here without sockets.
//!
//! - [`hit`]: a stored response served (fresh, stale where allowed, or just revalidated);
//! - [`not_modified`]: a `304` to a client's own conditional request (RFC 9111 §4.3.2);
//! - [`gateway_timeout`]: the `504` of `only-if-cached` with nothing usable (§5.2.1.7);
//! - [`serve`]: a hit for a ranged request: a `206` of the range ([`partial`]), a `416`
//!   ([`unsatisfiable`]), or the whole response (RFC 9110 §14, `policy/ranges.rs`).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Response, StatusCode};

use crate::body::CacheBody;
use crate::entry::{Entry, EntryHead};
use crate::key::CacheKey;
use crate::policy::freshness::age_value;
use crate::policy::ranges::{select, ByteRange, ContentRange, Selected};
use crate::policy::retention::expires_at;
use crate::policy::validation::not_modified_headers;
use crate::status::{CacheInfo, CacheStatus};

/// How fresh a stored response is when served: its freshness lifetime and current age (§4.2),
/// seen at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    pub(crate) lifetime: Duration,
    pub(crate) age: Duration,
    pub(crate) now: SystemTime,
}

/// What a response served from the store reports in its [`CacheInfo`].
pub(crate) fn hit_info(
    key: &CacheKey,
    head: &EntryHead,
    freshness: Freshness,
    revalidated: bool,
    blob_size: Option<usize>,
) -> CacheInfo {
    let Freshness { lifetime, age, now } = freshness;
    CacheInfo {
        from_cache: true,
        key: Some(key.clone()),
        created_at: Some(head.response_time),
        expires: expires_at(now, lifetime, age),
        is_expired: age >= lifetime,
        revalidated,
        size: blob_size,
    }
}

/// Rebuilds the stored response, with its current `Age` (RFC 9111 §4, §5.1; see
/// [`age_value`]). A HEAD is answered with the stored GET's header section and no body
/// (RFC 9110 §9.3.2).
pub(crate) fn hit<B>(
    entry: Entry,
    age: Duration,
    status: CacheStatus,
    head_only: bool,
    info: CacheInfo,
) -> Response<CacheBody<B>> {
    let Entry {
        head,
        body,
        trailers,
    } = entry;
    let body = if head_only {
        CacheBody::cached(Bytes::new(), None)
    } else {
        CacheBody::stored(body, trailers)
    };
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    stamp(response, age, status, info)
}

/// A response being stored, served to a request that waited for it (request coalescing): the
/// head exactly as a hit on the entry would have it, and `body` the shared body being filled.
pub(crate) fn from_fill<B>(
    head: &EntryHead,
    body: CacheBody<B>,
    age: Duration,
    info: CacheInfo,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers.clone();
    stamp(response, age, CacheStatus::Coalesced, info)
}

/// A stored response served for a request of `range` (with its `If-Range`), or of the whole
/// representation when `range` is `None`: [`hit`], [`partial`] or [`unsatisfiable`] as
/// `policy::ranges::select` says. The caller has checked that an incomplete entry (a stored
/// `206`) holds the range; one that does not is served as it is stored.
pub(crate) fn serve<B>(
    entry: Entry,
    age: Duration,
    status: CacheStatus,
    head_only: bool,
    info: CacheInfo,
    range: Option<(ByteRange, Option<&http::HeaderValue>)>,
) -> Response<CacheBody<B>> {
    let selected = match range {
        Some((range, if_range)) if !head_only => select(
            range,
            if_range,
            entry.head.status,
            &entry.head.headers,
            entry.body.len(),
        ),
        _ => None,
    };
    match selected {
        None | Some(Selected::Whole) => hit(entry, age, status, head_only, info),
        Some(Selected::Part(part)) => partial(entry, part, age, status, info),
        Some(Selected::Unsatisfiable { complete }) => {
            unsatisfiable(&entry.head, complete, age, status, info)
        }
    }
}

/// RFC 9110 §15.3.7: a `206` of one range of the stored representation, with its
/// `Content-Range` and `Content-Length`; the body is a slice of the stored one (no copy), without
/// trailers. The stored response may itself be an incomplete entry holding `part` (its own
/// `Content-Range` says where its bytes start).
pub(crate) fn partial<B>(
    entry: Entry,
    part: ContentRange,
    age: Duration,
    status: CacheStatus,
    info: CacheInfo,
) -> Response<CacheBody<B>> {
    let Entry { head, body, .. } = entry;
    // Only an incomplete entry's bytes start elsewhere than at 0 (a stored 200 that carries a
    // stray Content-Range is a whole representation).
    let offset = if head.status == StatusCode::PARTIAL_CONTENT {
        crate::policy::ranges::stored_range(&head.headers).map_or(0, |have| have.first)
    } else {
        0
    };
    // `select` checked that the part lies within the body; check again rather than trust it.
    let bounds = part
        .first
        .checked_sub(offset)
        .zip(part.last.checked_sub(offset))
        .filter(|&(a, b)| a <= b && b < body.len());
    let Some((start, last)) = bounds else {
        return unsatisfiable(&head, part.complete, age, status, info);
    };
    let mut response = Response::new(CacheBody::stored(body.slice(start, last + 1), None));
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_RANGE, part.header_value());
    headers.insert(
        header::CONTENT_LENGTH,
        http::HeaderValue::from(last + 1 - start),
    );
    // Digests of the whole content do not describe a part (RFC 9530's `Repr-Digest` does, and
    // stays).
    headers.remove("content-digest");
    headers.remove("content-md5");
    stamp(response, age, status, info)
}

/// RFC 9110 §15.5.17: `416 Range Not Satisfiable`, with `Content-Range: bytes */N` ("a server
/// generating a 416 ... SHOULD send a Content-Range header field with an unsatisfied-range
/// value"), and the stored validators and dates.
pub(crate) fn unsatisfiable<B>(
    head: &EntryHead,
    complete: u64,
    age: Duration,
    status: CacheStatus,
    info: CacheInfo,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::cached(Bytes::new(), None));
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    *response.version_mut() = head.version;
    let headers = response.headers_mut();
    // Not Cache-Control: the 416 is not the stored representation, and a cache further down
    // must not store it in that one's place.
    for name in [header::DATE, header::ETAG, header::LAST_MODIFIED] {
        for value in head.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let unsatisfied = format!("bytes */{complete}");
    if let Ok(value) = http::HeaderValue::from_str(&unsatisfied) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
    stamp(response, age, status, info)
}

/// What every response made from a stored one carries: its current `Age` (RFC 9111 §4, §5.1:
/// replacing any stored one), how it was answered, and its [`CacheInfo`].
fn stamp<B>(
    mut response: Response<B>,
    age: Duration,
    status: CacheStatus,
    info: CacheInfo,
) -> Response<B> {
    response.headers_mut().insert(header::AGE, age_value(age));
    response.extensions_mut().insert(status);
    response.extensions_mut().insert(info);
    response
}

/// §4.3.2: the client's own copy is current: `304 Not Modified` with the fields a 200 would
/// carry (RFC 9110 §15.4.5) and the stored response's `Age`.
pub(crate) fn not_modified<B>(
    head: &EntryHead,
    age: Duration,
    status: CacheStatus,
    info: CacheInfo,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::cached(Bytes::new(), None));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    *response.headers_mut() = not_modified_headers(&head.headers);
    stamp(response, age, status, info)
}

/// §5.2.1.7: "If it receives this directive, a cache SHOULD either respond using a stored
/// response consistent with the other constraints of the request message or respond with a 504
/// (Gateway Timeout) status code."
pub(crate) fn gateway_timeout<B>() -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::cached(Bytes::new(), None));
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    response
        .extensions_mut()
        .insert(CacheStatus::OnlyIfCachedMiss);
    response
}

/// A stored response's head as `http::response::Parts`, for the user's filter.
pub(crate) fn response_parts(head: &EntryHead) -> http::response::Parts {
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers.clone();
    response.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Expiry;
    use http::{HeaderMap, HeaderValue, Method, Version};
    use http_body_util::BodyExt;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn entry() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        // An Age the origin sent: a hit replaces it.
        headers.insert(header::AGE, HeaderValue::from_static("3"));
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        Entry {
            head: EntryHead {
                status: StatusCode::OK,
                version: Version::HTTP_11,
                headers,
                request_time: t(0),
                response_time: t(1),
                method: Method::GET,
                uri: Bytes::from_static(b"http://e.com/"),
                vary: Vec::new(),
                generation: 7,
                expiry: Expiry::Headers,
                fresh: None,
            },
            body: crate::entry::EntryBody::parts(vec![Bytes::from_static(b"hello")]),
            trailers: Some(trailers),
        }
    }

    fn key() -> CacheKey {
        CacheKey::for_request(&http::Request::get("http://e.com/").body(()).unwrap())
    }

    fn info(e: &Entry, age: u64) -> CacheInfo {
        let f = Freshness {
            lifetime: Duration::from_secs(60),
            age: Duration::from_secs(age),
            now: t(100),
        };
        hit_info(&key(), &e.head, f, false, Some(123))
    }

    #[tokio::test]
    async fn a_hit_rebuilds_the_stored_response_with_its_current_age() {
        let e = entry();
        let i = info(&e, 10);
        let response = hit::<http_body_util::Empty<Bytes>>(
            e,
            Duration::from_secs(10),
            CacheStatus::Hit,
            false,
            i.clone(),
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_11);
        let ages: Vec<_> = response.headers().get_all(header::AGE).iter().collect();
        assert_eq!(ages, [HeaderValue::from_static("10")]);
        assert_eq!(response.headers()[header::ETAG], "\"v1\"");
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::Hit)
        );
        assert_eq!(response.extensions().get::<CacheInfo>(), Some(&i));
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
        assert_eq!(collected.to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_range_is_a_slice_of_the_stored_body_not_a_copy() {
        let e = entry();
        let stored = e.body.to_bytes().unwrap();
        let i = info(&e, 0);
        let range = ByteRange::From {
            first: 1,
            last: Some(3),
        };
        let response = serve::<http_body_util::Empty<Bytes>>(
            e,
            Duration::ZERO,
            CacheStatus::Hit,
            false,
            i.clone(),
            Some((range, None)),
        );
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes 1-3/5");
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "3");
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_none(), "a part has no trailers");
        let part = collected.to_bytes();
        assert_eq!(part, "ell");
        // The same memory as the stored body (the blob), one byte in.
        assert_eq!(part.as_ptr(), stored[1..].as_ptr());

        // Unsatisfiable: 416 with the length; HEAD: the whole header section.
        let response = serve::<http_body_util::Empty<Bytes>>(
            entry(),
            Duration::ZERO,
            CacheStatus::Hit,
            false,
            i.clone(),
            Some((ByteRange::Suffix(0), None)),
        );
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */5");
        assert_eq!(response.headers()[header::ETAG], "\"v1\"");
        let head = serve::<http_body_util::Empty<Bytes>>(
            entry(),
            Duration::ZERO,
            CacheStatus::Hit,
            true,
            i,
            Some((range, None)),
        );
        assert_eq!(head.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_head_hit_has_the_header_section_and_no_body() {
        let e = entry();
        let i = info(&e, 0);
        let response =
            hit::<http_body_util::Empty<Bytes>>(e, Duration::ZERO, CacheStatus::Stale, true, i);
        // The stored Content-Length stays: it is what a GET would carry (RFC 9110 §9.3.2).
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "5");
        assert_eq!(response.headers()[header::AGE], "0");
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert!(collected.to_bytes().is_empty());
    }

    #[test]
    fn hit_info_reports_expiry_and_staleness() {
        let e = entry();
        let fresh = info(&e, 10);
        assert!(fresh.from_cache);
        assert_eq!(fresh.key, Some(key()));
        assert_eq!(fresh.created_at, Some(t(1)));
        assert_eq!(fresh.expires, Some(t(150)));
        assert!(!fresh.is_expired);
        assert_eq!(fresh.size, Some(123));
        let stale = info(&e, 60);
        assert!(stale.is_expired);
        assert_eq!(stale.expires, Some(t(100)));
    }

    #[tokio::test]
    async fn a_304_to_a_client_carries_only_the_fields_a_200_would_and_no_body() {
        let e = entry();
        let i = info(&e, 4);
        let response = not_modified::<http_body_util::Empty<Bytes>>(
            &e.head,
            Duration::from_secs(4),
            CacheStatus::Hit,
            i,
        );
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::ETAG], "\"v1\"");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "max-age=60");
        assert_eq!(response.headers()[header::AGE], "4");
        assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
        assert!(!response.headers().contains_key(header::CONTENT_TYPE));
        assert!(response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
    }

    #[test]
    fn only_if_cached_without_an_entry_is_a_504_from_the_cache() {
        let response = gateway_timeout::<()>();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            response.extensions().get::<CacheStatus>(),
            Some(&CacheStatus::OnlyIfCachedMiss)
        );
        assert!(response.headers().is_empty());
    }

    #[test]
    fn the_filter_sees_the_stored_status_version_and_headers() {
        let e = entry();
        let parts = response_parts(&e.head);
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers, e.head.headers);
    }
}
