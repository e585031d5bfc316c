//! The small surface of the async runtime the I/O layers use: timers
//! (guards on a per-shard timing wheel in [`timer`] and [`wheel`], precise
//! sleeps on glommio's timers), (in [`net`]) TCP streams driven by a
//! per-shard edge-triggered epoll, and (in [`buffers`]) the shard's free
//! lists of read buffers.
//!
//! Keeping timers behind these functions keeps glommio out of the rest of
//! the code, so the runtime can be swapped without touching callers.

pub mod buffers;
pub mod net;
pub mod timer;
pub mod wheel;

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `fut`, giving up after `dur`: `None` means it timed out (and `fut`
/// was dropped, which cancels any I/O it had in flight). The guard is on
/// the shard's timing wheel: it may fire up to [`timer::TICK`] late.
pub async fn timeout<F: Future>(dur: Duration, fut: F) -> Option<F::Output> {
    match Instant::now().checked_add(dur) {
        Some(at) => deadline(at, fut).await,
        // Later than any clock can say: never times out.
        None => Some(fut.await),
    }
}

/// Like [`timeout`], with an absolute deadline.
pub async fn deadline<F: Future>(at: Instant, fut: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        timer::Deadline::at(at).await;
        None
    })
    .await
}

/// Sleeps for `dur`, precisely (a glommio timer): for pacing and backoff.
pub async fn sleep(dur: Duration) {
    glommio::timer::sleep(dur).await;
}

/// Sleeps for at least `dur`, on the shard's timing wheel (up to
/// [`timer::TICK`] longer): for periodic checks that run for every request,
/// where a glommio timer each would cost more than the check.
pub async fn sleep_coarse(dur: Duration) {
    timer::Deadline::after(dur).await;
}

/// Runs `f`'s future on a fresh glommio executor on its own thread, with
/// the small io_uring memory the test machines' RLIMIT_MEMLOCK allows.
#[cfg(test)]
pub(crate) fn run_on_test_executor<F: Future<Output = ()> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) {
    glommio::LocalExecutorBuilder::default()
        .io_memory(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}
