//! What the benchmarks share: the body sizes, the key, and the in-process origin. Not a bench
//! itself; included with `#[path = "support/mod.rs"] mod support;` (and from
//! `benches/compare/src/compare.rs` with `#[path = "../../support/mod.rs"]`).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper_client_cache::SecretKey;
use tower::Service;

/// Body sizes of the hit benchmarks, with their labels.
pub const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (64 * 1024, "64KiB"), (1024 * 1024, "1MiB")];

pub type Reply = http::Response<Full<Bytes>>;

/// The signing (or encryption) key of every benchmark.
pub fn key() -> SecretKey {
    SecretKey::new("benchmark key, 32 bytes long....").unwrap()
}

/// An origin answering at once with `body`, `cache_control` and a few typical headers
/// (`content-type`, `etag`, `server`).
pub fn origin<B: Send + 'static>(
    body: Bytes,
    cache_control: &'static str,
) -> impl Service<
    http::Request<B>,
    Response = Reply,
    Error = Infallible,
    Future = std::future::Ready<Result<Reply, Infallible>>,
> + Clone
       + Send
       + 'static {
    // A `Date`, as every origin with a clock sends (RFC 9110 §6.6.1); a response stored without
    // one gets one, so a Date-less origin would measure a path no stored entry takes.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    tower::service_fn(move |_req: http::Request<B>| {
        let response = http::Response::builder()
            .header("date", date.as_str())
            .header("cache-control", cache_control)
            .header("content-type", "application/json")
            .header("etag", "\"abc\"")
            .header("server", "bench")
            .body(Full::new(body.clone()))
            .unwrap();
        std::future::ready(Ok(response))
    })
}
