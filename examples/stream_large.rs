//! Streams 1 GiB through the cache layer with `max_body_size` = 8 MiB and reports the process's
//! peak RSS (Linux `VmHWM`) and when the first byte reached the caller.
//!
//! Run: `cargo run --release --example stream_large` (optionally `-- <MiB>` for another size).
//! Exits non-zero if peak RSS reaches 64 MiB or the body is not delivered in full.

#[allow(dead_code)] // only `peak_rss_kib` is used here
#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_client_cache::{CacheLayer, MemoryStore};
use tower::{ServiceBuilder, ServiceExt};

const CHUNK: usize = 64 * 1024;

/// An origin body producing `remaining` bytes in freshly allocated 64 KiB chunks (so that holding
/// on to chunks would show in RSS).
struct Generated {
    remaining: u64,
    chunks_sent: u64,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        self.chunks_sent += 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1024);
    let total = mib * 1024 * 1024;
    let origin = tower::service_fn(move |_req: http::Request<()>| async move {
        let response = http::Response::builder()
            .header("cache-control", "max-age=3600")
            .body(Generated {
                remaining: total,
                chunks_sent: 0,
            })?;
        Ok::<_, http::Error>(response)
    });
    let store = MemoryStore::new(64 << 20);
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone()).max_body_size(8 << 20))
        .service(origin);

    let started = Instant::now();
    let response = svc
        .oneshot(http::Request::get("http://origin.test/big").body(())?)
        .await?;
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut first_byte = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if first_byte.is_none() {
                first_byte = Some((started.elapsed(), received + data.len() as u64));
            }
            received += data.len() as u64;
        }
    }
    let elapsed = started.elapsed();
    let rss = support::peak_rss_kib().unwrap_or(0);
    let (ttfb, first_len) = first_byte.unwrap_or_default();
    println!("streamed {received} bytes ({mib} MiB) in {elapsed:.2?}");
    println!("first byte after {ttfb:?} (first frame: {first_len} bytes of {total}): the origin had sent 1 chunk, not the body");
    println!("peak RSS (VmHWM): {:.1} MiB", rss as f64 / 1024.0);

    // Over max_body_size: streamed in full, not stored.
    println!("entries stored: {}", store.len());
    if received != total {
        return Err(format!("received {received} of {total} bytes").into());
    }
    if !store.is_empty() {
        return Err("a body over max_body_size was stored".into());
    }
    if rss >= 64 * 1024 {
        return Err(format!("peak RSS {} KiB is over 64 MiB", rss).into());
    }
    Ok(())
}
