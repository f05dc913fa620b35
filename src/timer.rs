//! Timeouts on tokio's timer, without panicking when the runtime has none.
//!
//! `tokio::time::sleep` panics when the current runtime was built without its time driver.
//! The cache cannot choose its user's runtime, so every timer goes through [`sleep`]: it returns
//! `None` (no timeout) instead, and remembers it for the layer so the check is not repeated.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

/// Remembers, per layer, that the runtime has no timer.
#[derive(Debug, Default)]
pub(crate) struct TimerProbe {
    unavailable: AtomicBool,
}

impl TimerProbe {
    /// A tokio sleep of `d`, or `None` when there is no tokio runtime with a timer here.
    pub(crate) fn sleep(&self, d: Duration) -> Option<Sleep> {
        if self.unavailable.load(Ordering::Relaxed) || crate::rt::handle().is_none() {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| tokio::time::sleep(d))) {
            Ok(sleep) => Some(sleep),
            Err(_) => {
                self.unavailable.store(true, Ordering::Relaxed);
                tracing::warn!(
                    "the tokio runtime has no timer (enable_time): store timeouts and request \
                     coalescing are off"
                );
                None
            }
        }
    }
}

/// `future`, bounded by `d` when a timer is available. The timer is armed only if the future is
/// not ready at its first poll, so an instant store (memory) pays nothing for the bound.
pub(crate) fn timeout<F: Future>(probe: &Arc<TimerProbe>, d: Duration, future: F) -> Timed<F> {
    Timed {
        inner: future,
        sleep: None,
        arm: Some((d, probe.clone())),
    }
}

impl<F> Timed<F> {
    /// `future` with `deadline`.
    pub(crate) fn new(future: F, deadline: Sleep) -> Self {
        Self {
            inner: future,
            sleep: Some(deadline),
            arm: None,
        }
    }
}

/// The deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

pin_project! {
    /// A future with an optional deadline.
    pub(crate) struct Timed<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        // The deadline to arm at the first pending poll.
        arm: Option<(Duration, Arc<TimerProbe>)>,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if let Some((d, probe)) = this.arm.take() {
            this.sleep.set(probe.sleep(d));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bounds_a_future_that_never_finishes() {
        let probe = Arc::new(TimerProbe::default());
        let started = tokio::time::Instant::now();
        let out = timeout(&probe, Duration::from_secs(2), std::future::pending::<()>()).await;
        assert_eq!(out, Err(Elapsed));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(
            timeout(&probe, Duration::from_secs(2), async { 7 }).await,
            Ok(7)
        );
    }

    #[test]
    fn no_timer_means_no_deadline_and_no_panic() {
        let probe = Arc::new(TimerProbe::default());
        assert!(probe.sleep(Duration::from_secs(1)).is_none(), "no runtime");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            // A future that is pending once, then ready: arming the timer fails quietly.
            let mut polled = false;
            let once = std::future::poll_fn(move |cx| {
                if polled {
                    Poll::Ready(1)
                } else {
                    polled = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            });
            assert_eq!(timeout(&probe, Duration::from_secs(1), once).await, Ok(1));
            assert!(probe.sleep(Duration::from_secs(1)).is_none());
        });
        assert!(probe.unavailable.load(Ordering::Relaxed));
    }
}
