//! Coarse per-shard deadlines on a [`Wheel`], driven by one task per shard.
//!
//! [`Deadline`] is the future behind `runtime::timeout`, `runtime::deadline`
//! and `runtime::sleep_coarse`: guards that almost never fire. Arming one
//! links an entry into the shard's wheel (no allocation once warm, no
//! syscall, no glommio timer); dropping it unlinks the entry. One driver
//! task per shard sleeps on a single glommio timer until the wheel's next
//! due tick and wakes what is due. Deadlines fire up to one tick
//! ([`TICK`]) late, never early.
//!
//! Under load the driver wakes rarely: a request's guards are removed long
//! before they are due, so the wheel's earliest entry keeps moving out, and
//! an insert only wakes the driver early when it is due before the
//! driver's planned wake.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::wheel::{Key, Wheel};

/// The wheel's resolution: how late a deadline may fire.
pub const TICK: Duration = Duration::from_millis(1);
const TICK_NANOS: u128 = TICK.as_nanos();

/// One shard's wheel and what its driver task needs.
struct Shard {
    executor_id: usize,
    /// Tick 0.
    origin: Instant,
    wheel: RefCell<Wheel<Waker>>,
    /// The tick the driver sleeps until (`u64::MAX`: until an insert).
    planned: Cell<u64>,
    /// Set by an insert due before `planned`; the driver re-plans.
    kicked: Cell<bool>,
    driver: RefCell<Option<Waker>>,
}

thread_local! {
    static SHARD: RefCell<Option<Rc<Shard>>> = const { RefCell::new(None) };
}

/// The current executor's wheel, created (with its driver task) on first use.
fn shard() -> Rc<Shard> {
    let id = glommio::executor().id();
    SHARD.with(|cell| {
        if let Some(s) = cell.borrow().as_ref() {
            if s.executor_id == id {
                return s.clone();
            }
        }
        let s = Rc::new(Shard {
            executor_id: id,
            origin: Instant::now(),
            wheel: RefCell::new(Wheel::new()),
            planned: Cell::new(u64::MAX),
            kicked: Cell::new(false),
            driver: RefCell::new(None),
        });
        glommio::spawn_local(drive(Rc::downgrade(&s))).detach();
        *cell.borrow_mut() = Some(s.clone());
        s
    })
}

impl Shard {
    /// The first tick at or after `at`: the entry for `at` must not fire
    /// before it.
    fn tick_at_or_after(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos.div_ceil(TICK_NANOS)).unwrap_or(u64::MAX)
    }

    /// The last tick that has fully passed at `now`.
    fn tick_reached(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos / TICK_NANOS).unwrap_or(u64::MAX)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        self.origin + Duration::from_nanos(tick.saturating_mul(TICK_NANOS as u64))
    }

    fn kick(&self) {
        self.kicked.set(true);
        self.planned.set(0);
        let driver = self.driver.borrow_mut().take();
        if let Some(w) = driver {
            w.wake();
        }
    }
}

/// The driver: sleeps until the wheel's next due tick (or a kick), then
/// fires everything due. Ends when the shard's wheel is gone.
async fn drive(shard: Weak<Shard>) {
    let mut fired = Vec::new();
    loop {
        let Some(s) = shard.upgrade() else { return };
        let next = s.wheel.borrow().next_wake();
        s.planned.set(next.unwrap_or(u64::MAX));
        let kicked = std::future::poll_fn(|cx| {
            if s.kicked.replace(false) {
                return Poll::Ready(());
            }
            let mut driver = s.driver.borrow_mut();
            match driver.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *driver = Some(cx.waker().clone()),
            }
            Poll::Pending
        });
        match next {
            None => kicked.await,
            Some(tick) => {
                let wait = s.instant_of(tick).saturating_duration_since(Instant::now());
                futures_lite::future::or(glommio::timer::sleep(wait), kicked).await;
            }
        }
        let now = s.tick_reached(Instant::now());
        s.wheel.borrow_mut().advance(now, &mut fired);
        drop(s);
        // Woken outside the borrow: a waker's drop may end a task whose
        // own deadlines then leave the wheel.
        for w in fired.drain(..) {
            w.wake();
        }
    }
}

/// Resolves at a deadline (up to one [`TICK`] after it), on the current
/// shard's wheel. Cheap to create; the entry is armed on the first poll
/// and removed on drop.
pub struct Deadline {
    /// `None`: later than any `Instant`, never fires.
    at: Option<Instant>,
    armed: Option<(Rc<Shard>, Key)>,
    done: bool,
}

impl Deadline {
    /// A deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Deadline {
            at: Some(at),
            armed: None,
            done: false,
        }
    }

    /// A deadline `dur` from now (never, when that is past what `Instant`
    /// can hold).
    pub fn after(dur: Duration) -> Self {
        Deadline {
            at: Instant::now().checked_add(dur),
            armed: None,
            done: false,
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let this = &mut *self;
        match &this.armed {
            None => {
                let Some(at) = this.at else {
                    return Poll::Pending;
                };
                let s = shard();
                let tick = s.tick_at_or_after(at);
                let inserted = s.wheel.borrow_mut().insert(tick, cx.waker().clone());
                match inserted {
                    Err(_) => {
                        this.done = true;
                        Poll::Ready(())
                    }
                    Ok(key) => {
                        if tick < s.planned.get() {
                            s.kick();
                        }
                        this.armed = Some((s, key));
                        Poll::Pending
                    }
                }
            }
            Some((s, key)) => {
                let mut wheel = s.wheel.borrow_mut();
                if wheel.is_fired(*key) {
                    wheel.remove(*key);
                    drop(wheel);
                    this.armed = None;
                    this.done = true;
                    return Poll::Ready(());
                }
                let stale = match wheel.value_mut(*key) {
                    Some(w) if !w.will_wake(cx.waker()) => {
                        Some(std::mem::replace(w, cx.waker().clone()))
                    }
                    _ => None,
                };
                drop(wheel);
                // Dropped outside the borrow, like the driver's wakes.
                drop(stale);
                Poll::Pending
            }
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some((s, key)) = self.armed.take() {
            let value = s.wheel.borrow_mut().remove(key);
            drop(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::run_on_test_executor as on_executor;

    #[test]
    fn fires_after_its_deadline_and_not_before() {
        on_executor(|| async {
            for ms in [0u64, 1, 3, 25] {
                let start = Instant::now();
                Deadline::after(Duration::from_millis(ms)).await;
                let took = start.elapsed();
                assert!(
                    took >= Duration::from_millis(ms),
                    "{ms} ms fired after {took:?}"
                );
                assert!(
                    took < Duration::from_millis(ms + 50),
                    "{ms} ms fired after {took:?}"
                );
            }
        });
    }

    #[test]
    fn an_earlier_deadline_wakes_a_driver_planned_later() {
        on_executor(|| async {
            // The driver plans for the 10 s entry; the 5 ms one must kick it.
            let far = Deadline::after(Duration::from_secs(10));
            let far = futures_lite::future::poll_once(far).await;
            assert!(far.is_none());
            let start = Instant::now();
            Deadline::after(Duration::from_millis(5)).await;
            assert!(
                start.elapsed() < Duration::from_millis(100),
                "{:?}",
                start.elapsed()
            );
        });
    }

    #[test]
    fn dropped_deadlines_leave_the_wheel() {
        on_executor(|| async {
            for _ in 0..1000 {
                let mut d = Box::pin(Deadline::after(Duration::from_secs(60)));
                assert!(futures_lite::future::poll_once(d.as_mut()).await.is_none());
            }
            assert_eq!(shard().wheel.borrow().armed(), 0);
            // A timeout that loses its race leaves nothing behind either.
            let won = crate::runtime::timeout(Duration::from_secs(60), async { 7 }).await;
            assert_eq!(won, Some(7));
            let lost =
                crate::runtime::timeout(Duration::from_millis(2), std::future::pending::<()>())
                    .await;
            assert_eq!(lost, None);
            assert_eq!(shard().wheel.borrow().armed(), 0);
        });
    }

    #[test]
    fn a_deadline_past_any_instant_never_fires() {
        on_executor(|| async {
            let never = Deadline::after(Duration::MAX);
            assert!(futures_lite::future::poll_once(never).await.is_none());
            let done = crate::runtime::timeout(Duration::MAX, async { 3 }).await;
            assert_eq!(done, Some(3));
            assert_eq!(shard().wheel.borrow().armed(), 0);
        });
    }

    #[test]
    fn many_tasks_each_fire_once() {
        on_executor(|| async {
            let done = Rc::new(Cell::new(0u32));
            let mut tasks = Vec::new();
            for i in 0..200u64 {
                let done = done.clone();
                tasks.push(glommio::spawn_local(async move {
                    let at = Instant::now() + Duration::from_millis(i % 20);
                    Deadline::at(at).await;
                    assert!(Instant::now() >= at);
                    done.set(done.get() + 1);
                }));
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(done.get(), 200);
        });
    }
}
