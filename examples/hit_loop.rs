//! Times one kind of 1 KiB hit in a plain loop (no benchmark harness): for old-against-new runs
//! and `perf record`, where criterion's own work would blur the profile.
//!
//! Run: `cargo run --release --example hit_loop -- <case> [hits]`, where `case` is `signed`,
//! `encrypted`, `unsigned`, or (with `--features zstd`) `signed-compress`: signed with
//! compression configured, the body under its threshold. Prints the mean time per hit; compare
//! two cases in alternating runs (docs/benchmarks.md). `miss-signed` and `miss-unsigned` time
//! misses instead: each request has a URL of its own, and its response is stored. A `-chunked`
//! suffix (`signed-chunked`, `miss-signed-chunked`) has the origin announce no length.
//! `fresh-signed` and `fresh-unsigned` time misses as `hit_path`'s miss benchmark does: each
//! through a service and a 1 MiB `MemoryStore` of its own, built before the clock starts and
//! dropped after it stops.

use std::convert::Infallible;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_client_cache::{BoxError, CacheLayer, MemoryStore, SecretKey};
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "signed".into());
    if let Some(mode) = case.strip_prefix("fresh-") {
        let n: u32 = match args.next() {
            Some(n) => n.parse()?,
            None => 100_000,
        };
        return fresh(mode, n).await;
    }
    let (misses, mode) = match case.strip_prefix("miss-") {
        Some(mode) => (true, mode.to_owned()),
        None => (false, case.clone()),
    };
    // `-chunked`: the origin's body announces no length (no `Content-Length`, no exact size).
    let (chunked, mode) = match mode.strip_suffix("-chunked") {
        Some(mode) => (true, mode.to_owned()),
        None => (false, mode),
    };
    let hits: u32 = match args.next() {
        Some(n) => n.parse()?,
        None => 200_000,
    };
    let key = SecretKey::new("benchmark key, 32 bytes long....")?;
    let layer = CacheLayer::new(MemoryStore::new(64 << 20));
    let layer = match mode.as_str() {
        "signed" => layer.secret_key(key),
        "encrypted" => layer.encrypt(key),
        "unsigned" => layer,
        #[cfg(feature = "zstd")]
        "signed-compress" => layer
            .secret_key(key)
            .compress(hyper_client_cache::Compression::new(
                hyper_client_cache::Codec::Zstd,
            )),
        other => return Err(format!("unknown case {other}").into()),
    };
    let origin = origin(move |body| {
        if chunked {
            let frame = Ok::<_, Infallible>(http_body::Frame::data(body));
            StreamBody::new(futures_util::stream::iter([frame])).boxed_unsync()
        } else {
            Full::new(body).boxed_unsync()
        }
    });
    let mut svc = ServiceBuilder::new().layer(layer).service(origin);
    let mut started = Instant::now();
    // One miss (stores it), then the hits.
    for i in 0..=hits {
        if i == 1 {
            started = Instant::now();
        }
        let id = if misses { i } else { 1 };
        let request = http::Request::get(format!("http://bench.local/item?id={id}")).body(())?;
        let response = svc.ready().await?.call(request).await?;
        std::hint::black_box(response.into_body().collect().await?.to_bytes());
    }
    let per_hit = started.elapsed().as_secs_f64() * 1e6 / f64::from(hits.max(1));
    let (one, all) = if misses {
        ("miss", "misses")
    } else {
        ("hit", "hits")
    };
    println!("{case}: {per_hit:.3} µs/{one} over {hits} {all}");
    Ok(())
}

/// `n` misses, each through a service and a store of its own (`hit_path`'s miss benchmark
/// without the harness): the services are built in batches of 1,000 before the clock starts,
/// and dropped after it stops.
async fn fresh(mode: &str, n: u32) -> Result<(), BoxError> {
    let key = SecretKey::new("benchmark key, 32 bytes long....")?;
    let layer = CacheLayer::new(());
    let layer = match mode {
        "signed" => layer.secret_key(key),
        "unsigned" => layer,
        other => return Err(format!("unknown case fresh-{other}").into()),
    };
    let origin = origin(Full::new);
    let mut timed = std::time::Duration::ZERO;
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1000);
        let mut services: Vec<_> = (0..batch)
            .map(|_| {
                ServiceBuilder::new()
                    .layer(layer.clone().with_store(MemoryStore::new(1 << 20)))
                    .service(origin.clone())
            })
            .collect();
        let started = Instant::now();
        for svc in &mut services {
            let request = http::Request::get("http://bench.local/item").body(())?;
            let response = svc.ready().await?.call(request).await?;
            std::hint::black_box(response.into_body().collect().await?.to_bytes());
        }
        timed += started.elapsed();
        drop(services);
        done += batch;
    }
    let per_miss = timed.as_secs_f64() * 1e6 / f64::from(n.max(1));
    println!("fresh-{mode}: {per_miss:.3} µs/miss over {n} misses, each through a new service");
    Ok(())
}

/// An origin as the benchmarks' (`benches/support`): a `Date`, a max-age, a few fields, and a
/// 1 KiB body made by `body`.
fn origin<B>(
    body: impl Fn(Bytes) -> B + Clone,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<B>,
    Error = BoxError,
    Future = std::future::Ready<Result<http::Response<B>, BoxError>>,
> + Clone {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let bytes = Bytes::from(vec![b'x'; 1024]);
    tower::service_fn(move |_req: http::Request<()>| {
        let response = http::Response::builder()
            .header("date", date.as_str())
            .header("cache-control", "max-age=3600")
            .header("content-type", "application/json")
            .header("etag", "\"abc\"")
            .header("server", "bench")
            .body(body(bytes.clone()));
        std::future::ready(response.map_err(BoxError::from))
    })
}
