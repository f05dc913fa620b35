//! The tokio runtime, where the cache needs one: finishing work after the response was handed
//! over. Without a runtime that work is dropped (and logged), never a panic.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

/// The current tokio runtime, if the caller runs inside one.
pub(crate) fn handle() -> Option<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().ok()
}

/// Runs `work` on the current tokio runtime; without one, drops it with a debug log saying
/// `what` was lost.
pub(crate) fn spawn_or_drop<F>(work: F, what: &'static str)
where
    F: Future<Output = ()> + Send + 'static,
{
    match handle() {
        Some(handle) => {
            handle.spawn(work);
        }
        None => tracing::debug!("no tokio runtime to finish {what}; dropped"),
    }
}

/// Polls `work` once at once (an in-memory store finishes there, so the next request sees the
/// entry), then finishes it on the tokio runtime if it is still pending.
pub(crate) fn run_soon(mut work: Pin<Box<dyn Future<Output = ()> + Send + 'static>>) {
    let mut cx = Context::from_waker(Waker::noop());
    if work.as_mut().poll(&mut cx).is_pending() {
        spawn_or_drop(work, "a store write");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn ready_work_runs_at_once_and_pending_work_without_a_runtime_is_dropped() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        run_soon(Box::pin(async move { flag.store(true, Ordering::SeqCst) }));
        assert!(ran.load(Ordering::SeqCst));
        // Pending, no runtime: dropped, no panic.
        run_soon(Box::pin(std::future::pending()));
        spawn_or_drop(std::future::pending(), "a test");
    }

    #[tokio::test]
    async fn pending_work_finishes_on_the_runtime() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        run_soon(Box::pin(async move {
            let _ = rx.await;
            let _ = done_tx.send(());
        }));
        let _ = tx.send(());
        done_rx.await.unwrap();
    }
}
