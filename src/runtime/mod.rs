//! The small surface of the async runtime the I/O layers use: timers,
//! (in [`net`]) TCP streams driven by a per-shard edge-triggered epoll, and
//! (in [`buffers`]) the shard's free lists of read buffers.
//!
//! Keeping timers behind these functions keeps glommio out of the rest of
//! the code, so the runtime can be swapped without touching callers.

pub mod buffers;
pub mod net;

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `fut`, giving up after `dur`: `None` means it timed out (and `fut`
/// was dropped, which cancels any I/O it had in flight).
pub async fn timeout<F: Future>(dur: Duration, fut: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(dur).await;
        None
    })
    .await
}

/// Like [`timeout`], with an absolute deadline.
pub async fn deadline<F: Future>(at: Instant, fut: F) -> Option<F::Output> {
    timeout(at.saturating_duration_since(Instant::now()), fut).await
}

/// Sleeps for `dur`.
pub async fn sleep(dur: Duration) {
    glommio::timer::sleep(dur).await;
}
