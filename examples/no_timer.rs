//! The cache on a tokio runtime built without its timer (no `enable_time`), in a build whose
//! panics abort: a store that never answers still costs one `store_timeout`, and nothing panics
//! or aborts. `.ci/run` runs it with `panic = "abort"`:
//!
//! ```sh
//! cargo run --profile abort --example no_timer
//! ```
//!
//! (A plain `cargo run --example no_timer` shows the same with unwinding panics.) The process
//! exits 0 with one line per request; an abort would end it with a signal instead.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_client_cache::{CacheLayer, StoreRequest, StoreResponse};
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn main() -> Result<(), hyper_client_cache::BoxError> {
    // A store that never answers: every lookup can only end by the layer's timeout.
    let stalled =
        service_fn(|_: StoreRequest| std::future::pending::<Result<StoreResponse, Infallible>>());
    let origin = service_fn(|_: http::Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
            b"origin",
        ))))
    });
    let cache = ServiceBuilder::new()
        .layer(CacheLayer::new(stalled).store_timeout(Duration::from_millis(100)))
        .service(origin);
    // `new_current_thread` without `enable_time()`: tokio's timer is not there.
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async {
        for i in 0..3 {
            let started = Instant::now();
            let request =
                http::Request::get("http://origin.test/").body(Full::new(Bytes::new()))?;
            let response = cache.clone().oneshot(request).await?;
            let status = response
                .extensions()
                .get::<hyper_client_cache::CacheStatus>()
                .copied();
            let body = response.into_body().collect().await?.to_bytes();
            let waited = started.elapsed();
            println!("request {i}: {body:?} after {waited:?} ({status:?})");
            if body != "origin"
                || waited < Duration::from_millis(100)
                || waited > Duration::from_secs(5)
            {
                return Err("the store timeout did not bound the stalled lookup".into());
            }
        }
        Ok::<_, hyper_client_cache::BoxError>(())
    })?;
    println!("no panic, no abort: the timer thread bounded every store call");
    Ok(())
}
