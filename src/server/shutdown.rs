//! Shutdown signalling: the process-wide flag set by SIGINT/SIGTERM, and its
//! shard-local mirror that connection tasks can wait on.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;

/// How often a shard looks at the process-wide flag. The flag is set from a
/// signal handler, which cannot wake glommio tasks on other threads, so each
/// shard polls it: 20 cheap loads per second.
const POLL: Duration = Duration::from_millis(50);

/// The shard-local view of shutdown.
#[derive(Default)]
pub struct ShutdownSignal {
    set: Cell<bool>,
    event: Event,
}

impl ShutdownSignal {
    /// Whether shutdown has begun.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Marks shutdown and wakes every waiter.
    pub fn trigger(&self) {
        if !self.set.replace(true) {
            self.event.notify(usize::MAX);
        }
    }

    /// Completes once shutdown has begun.
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let listener = self.event.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }

    /// Mirrors the process-wide `flag` into this signal; runs until it is set.
    pub async fn follow(&self, flag: Arc<AtomicBool>) {
        while !flag.load(Ordering::Relaxed) && !self.is_set() {
            crate::runtime::sleep(POLL).await;
        }
        self.trigger();
    }
}
