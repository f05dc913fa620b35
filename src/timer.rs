//! Timeouts that never panic and never abort, whatever runtime the cache runs on.
//!
//! `tokio::time::sleep` panics when the current runtime was built without its time driver, and
//! tokio has no way to ask whether it has one. The cache cannot choose its user's runtime, so
//! every timer goes through [`TimerProbe::sleep`]:
//!
//! - inside a tokio runtime, built with panics that unwind: tokio's timer (so paused test time
//!   applies); a runtime without one is found once, by catching that panic, remembered for the
//!   layer, and the timer thread below is used from then on;
//! - in a build with `panic = "abort"` (where catching is impossible and tokio's panic would
//!   end the process), outside any tokio runtime, or once a runtime without a timer was found:
//!   `futures-timer`'s one helper thread, which needs no runtime at all.
//!
//! Either way the store timeout and the coalescing wait keep their bounds.

use std::future::Future;
use std::pin::Pin;
#[cfg(panic = "unwind")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

/// Remembers, per layer, that the runtime has no timer.
#[derive(Debug, Default)]
pub(crate) struct TimerProbe {
    #[cfg(panic = "unwind")]
    unavailable: AtomicBool,
}

pin_project! {
    /// A deadline on tokio's timer, or on the timer thread.
    #[project = DeadlineProj]
    pub(crate) enum Deadline {
        Tokio { #[pin] sleep: Sleep },
        Thread { delay: futures_timer::Delay },
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            DeadlineProj::Tokio { sleep } => sleep.poll(cx),
            DeadlineProj::Thread { delay } => Pin::new(delay).poll(cx),
        }
    }
}

impl TimerProbe {
    /// A deadline `d` from now.
    pub(crate) fn sleep(&self, d: Duration) -> Deadline {
        #[cfg(panic = "unwind")]
        if !self.unavailable.load(Ordering::Relaxed) && crate::rt::handle().is_some() {
            use std::panic::{catch_unwind, AssertUnwindSafe};
            match catch_unwind(AssertUnwindSafe(|| tokio::time::sleep(d))) {
                Ok(sleep) => return Deadline::Tokio { sleep },
                Err(_) => {
                    self.unavailable.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        "the tokio runtime has no timer (enable_time): store timeouts and \
                         coalescing waits run on a timer thread"
                    );
                }
            }
        }
        Deadline::Thread {
            delay: futures_timer::Delay::new(d),
        }
    }

    /// Whether tokio's timer was found missing (tests).
    #[cfg(all(test, panic = "unwind"))]
    pub(crate) fn tokio_timer_missing(&self) -> bool {
        self.unavailable.load(Ordering::Relaxed)
    }
}

/// `future`, bounded by `d`. The timer is armed only if the future is not ready at its first
/// poll, so an instant store (memory) pays nothing for the bound.
pub(crate) fn timeout<F: Future>(probe: &Arc<TimerProbe>, d: Duration, future: F) -> Timed<F> {
    Timed {
        inner: future,
        sleep: None,
        arm: Some((d, probe.clone())),
    }
}

impl<F> Timed<F> {
    /// `future` with `deadline`.
    pub(crate) fn new(future: F, deadline: Deadline) -> Self {
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
    /// A future with a deadline (armed at its first pending poll).
    pub(crate) struct Timed<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Deadline>,
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
            this.sleep.set(Some(probe.sleep(d)));
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

    /// A store that never answers, on a runtime built without tokio's timer: still bounded
    /// (by the timer thread), no panic.
    #[test]
    fn no_tokio_timer_still_bounds_the_call() {
        let probe = Arc::new(TimerProbe::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let out = rt.block_on(timeout(
            &probe,
            Duration::from_millis(50),
            std::future::pending::<()>(),
        ));
        assert_eq!(out, Err(Elapsed));
        assert!(started.elapsed() >= Duration::from_millis(50));
        #[cfg(panic = "unwind")]
        assert!(probe.tokio_timer_missing(), "found once, remembered");
        // Outside any runtime too.
        let out = futures_util::FutureExt::now_or_never(async {
            timeout(&probe, Duration::from_secs(1), async { 3 }).await
        });
        assert_eq!(out, Some(Ok(3)));
    }
}
