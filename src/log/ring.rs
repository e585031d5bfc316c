//! The per-shard SPSC ring of [`AccessRecord`] slots.
//!
//! One [`LogProducer`] (owned by the shard thread) and one [`LogConsumer`]
//! (owned by the writer thread) share a power-of-two array of fixed-size
//! slots. The producer never blocks, never allocates and never makes a
//! syscall: a push is a 248-byte copy and one `Release` store; when the ring is
//! full the record is dropped and counted.
//!
//! Protocol (Lamport's queue with cached indexes, as in Rigtorp's SPSC):
//!
//! * `head` counts records ever pushed; only the producer stores it.
//! * `tail` counts records ever consumed; only the consumer stores it.
//! * Both grow without bound (wrapping `usize`); slot = index & mask;
//!   occupied = head - tail, always in `0..=capacity`.
//! * The producer writes slot `head` only while `head - tail < capacity`,
//!   i.e. the slot is free: the consumer's `Release` store of `tail` (made
//!   after it finished reading the slot) is observed by the producer's
//!   `Acquire` load before the slot is reused.
//! * The consumer reads slot `tail` only while `tail < head`: the producer's
//!   `Release` store of `head` (made after it wrote the slot) is observed by
//!   the consumer's `Acquire` load before the read.
//! * The producer keeps a private copy of `tail` and reloads it only when
//!   the copy says full; the consumer loads `head` once per drained batch and
//!   publishes `tail` every 256 records, so the shared cache lines bounce
//!   once per batch, not per record. `head` and `tail` live on separate, padded cache lines.
//!
//! Exactly one producer and one consumer exist per ring: the handles are not
//! `Clone`, and `push`/`drain` take `&mut self`.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::record::AccessRecord;

/// Default ring capacity in slots (16384 x 256 B = 4 MiB per shard; the
/// pages are only touched as the ring fills).
pub const DEFAULT_RING_CAPACITY: usize = 16_384;

/// Aligned to 128 bytes: a cache line plus the adjacent line that x86's
/// spatial prefetcher pulls in pairs.
#[repr(align(128))]
struct CachePadded<T>(T);

/// Fields written by the producer only.
struct ProducerSide {
    head: AtomicUsize,
    /// Ring full (or closed) drops. Single writer: load + store, no RMW.
    dropped: AtomicU64,
    /// Records the caller's sampler decided not to log.
    sampled_out: AtomicU64,
}

/// Fields written by the consumer only.
struct ConsumerSide {
    tail: AtomicUsize,
    /// Set when the consumer will drain no more (shutdown or writer gone).
    closed: AtomicBool,
    /// Set when the consumer is gone: whatever is still in the ring is lost.
    finished: AtomicBool,
}

pub(crate) struct Shared {
    prod: CachePadded<ProducerSide>,
    cons: CachePadded<ConsumerSide>,
    mask: usize,
    slots: Box<[Slot]>,
}

/// One record's slot, aligned to a cache line (248 -> 256 bytes) so that
/// two slots never share a line: the producer writing slot i+1 does not
/// steal the line the consumer is reading slot i from.
#[repr(align(64))]
struct Slot(UnsafeCell<MaybeUninit<AccessRecord>>);

// SAFETY: `Shared` is only reached through one `LogProducer`, one
// `LogConsumer` and observers (`LogStats`, the handles' `usage`/`dropped`)
// that only load atomics. The atomics are
// Sync by themselves. The slots (`UnsafeCell`) are accessed only by the
// producer (writes to free slots `[head, tail + capacity)`) and the consumer
// (reads of occupied slots `[tail, head)`); the Acquire/Release handoff on
// `head` and `tail` described in the module docs makes those ranges disjoint
// and orders each write before the matching read and each read before the
// slot's next write. Observers never touch the slots. `AccessRecord` is plain
// `Copy` data, so moving it between threads is fine.
unsafe impl Sync for Shared {}

impl Shared {
    #[inline]
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Occupied slots, as seen from any thread (a snapshot).
    pub(crate) fn usage(&self) -> usize {
        // Load tail first: head only grows, so head >= this tail.
        let tail = self.cons.0.tail.load(Ordering::Acquire);
        let head = self.prod.0.head.load(Ordering::Acquire);
        head.wrapping_sub(tail).min(self.capacity())
    }

    /// Records dropped: ring-full and closed-ring pushes, plus records left in
    /// the ring after its consumer is gone.
    pub(crate) fn dropped(&self) -> u64 {
        let mut n = self.prod.0.dropped.load(Ordering::Relaxed);
        if self.cons.0.finished.load(Ordering::Acquire) {
            n += self.usage() as u64;
        }
        n
    }

    pub(crate) fn sampled_out(&self) -> u64 {
        self.prod.0.sampled_out.load(Ordering::Relaxed)
    }
}

/// Creates a ring of `capacity` slots, rounded up to a power of two (at
/// least 2). Give the producer to the shard, the consumer to
/// [`LogWriter::spawn`](super::LogWriter::spawn).
pub fn log_ring(capacity: usize) -> (LogProducer, LogConsumer) {
    let cap = capacity.max(2).next_power_of_two();
    let slots: Box<[Slot]> = (0..cap)
        .map(|_| Slot(UnsafeCell::new(MaybeUninit::uninit())))
        .collect();
    let shared = Arc::new(Shared {
        prod: CachePadded(ProducerSide {
            head: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            sampled_out: AtomicU64::new(0),
        }),
        cons: CachePadded(ConsumerSide {
            tail: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }),
        mask: cap - 1,
        slots,
    });
    (
        LogProducer {
            shared: shared.clone(),
            head: 0,
            cached_tail: 0,
        },
        LogConsumer { shared, tail: 0 },
    )
}

/// The shard's end of a log ring. Not `Clone`: there is exactly one.
pub struct LogProducer {
    shared: Arc<Shared>,
    /// Our copy of `head` (we are its only writer).
    head: usize,
    /// Last `tail` we loaded; the real one can only be larger.
    cached_tail: usize,
}

impl LogProducer {
    /// Copies `rec` into the ring. Returns false, and counts the record as
    /// dropped, when the ring is full or its writer has shut down. Never
    /// blocks, allocates or makes a syscall.
    #[inline]
    pub fn push(&mut self, rec: &AccessRecord) -> bool {
        let s = &*self.shared;
        if self.head.wrapping_sub(self.cached_tail) > s.mask {
            self.cached_tail = s.cons.0.tail.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.cached_tail) > s.mask {
                self.count_drop();
                return false;
            }
        }
        if s.cons.0.closed.load(Ordering::Relaxed) {
            self.count_drop();
            return false;
        }
        let slot = &s.slots[self.head & s.mask];
        // SAFETY: head - tail < capacity (checked above against a tail that
        // is <= the real one), so this slot is free: the consumer finished
        // reading it before its Release store of a tail we Acquire-loaded,
        // and will not read it before our Release store of head below. We
        // are the only producer (`&mut self`, no Clone), so nobody else
        // writes it. The slot is plain memory for one `AccessRecord`.
        unsafe { (*slot.0.get()).write(*rec) };
        self.head = self.head.wrapping_add(1);
        s.prod.0.head.store(self.head, Ordering::Release);
        true
    }

    #[cold]
    fn count_drop(&self) {
        let d = &self.shared.prod.0.dropped;
        // Single writer: a plain load + store instead of a locked RMW.
        d.store(d.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Counts one record that the caller's sampler decided not to log
    /// (summed into [`LogStats::records_sampled_out`](super::LogStats::records_sampled_out)).
    #[inline]
    pub fn count_sampled_out(&mut self) {
        let c = &self.shared.prod.0.sampled_out;
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Records dropped on this ring so far (full or closed).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped()
    }

    /// Occupied slots.
    pub fn usage(&self) -> usize {
        self.shared.usage()
    }

    /// Capacity in slots.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }
}

/// The writer's end of a log ring. Not `Clone`: there is exactly one.
pub struct LogConsumer {
    shared: Arc<Shared>,
    /// Our copy of `tail` (we are its only writer).
    tail: usize,
}

/// How many records `drain` reads before publishing the new tail, so that a
/// long drain frees space for the producer as it goes.
const RELEASE_EVERY: usize = 256;

impl LogConsumer {
    /// Removes and returns the oldest record, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<AccessRecord> {
        let mut out = None;
        self.drain(1, |r| out = Some(*r));
        out
    }

    /// Calls `f` on up to `max` records, oldest first, removing them.
    /// Returns how many were consumed.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&AccessRecord)) -> usize {
        let s = &*self.shared;
        // One Acquire load per call, not per record.
        let head = s.prod.0.head.load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail);
        let n = avail.min(max);
        let mut done = 0;
        while done < n {
            let chunk = (n - done).min(RELEASE_EVERY);
            for _ in 0..chunk {
                let slot = &s.slots[self.tail & s.mask];
                // SAFETY: tail < head (loaded above), so the producer wrote
                // this slot and published it with a Release store of head
                // that we Acquire-loaded; it will not write the slot again
                // until our Release store of a tail past it. We are the only
                // consumer (`&mut self`, no Clone). The slot holds an
                // initialized `AccessRecord`.
                let rec = unsafe { (*slot.0.get()).assume_init_ref() };
                f(rec);
                self.tail = self.tail.wrapping_add(1);
            }
            s.cons.0.tail.store(self.tail, Ordering::Release);
            done += chunk;
        }
        n
    }

    /// True when the ring looked empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.shared.prod.0.head.load(Ordering::Acquire) == self.tail
    }

    /// Stops accepting records: later pushes return false and are counted
    /// as dropped. Records already in the ring can still be drained.
    pub fn close(&self) {
        self.shared.cons.0.closed.store(true, Ordering::SeqCst);
    }

    /// Occupied slots.
    pub fn usage(&self) -> usize {
        self.shared.usage()
    }

    /// Capacity in slots.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Drop for LogConsumer {
    fn drop(&mut self) {
        let c = &self.shared.cons.0;
        c.closed.store(true, Ordering::SeqCst);
        c.finished.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> AccessRecord {
        AccessRecord {
            timestamp_us: seq,
            bytes_in: seq.wrapping_mul(31),
            ..Default::default()
        }
    }

    #[test]
    fn slots_are_whole_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 256);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn capacity_rounds_up() {
        assert_eq!(log_ring(0).0.capacity(), 2);
        assert_eq!(log_ring(3).0.capacity(), 4);
        assert_eq!(log_ring(16384).1.capacity(), 16384);
    }

    #[test]
    fn full_ring_drops_and_counts() {
        let (mut p, mut c) = log_ring(8);
        for i in 0..8 {
            assert!(p.push(&rec(i)));
        }
        assert_eq!(p.usage(), 8);
        assert!(!p.push(&rec(100)));
        assert!(!p.push(&rec(101)));
        assert_eq!(p.dropped(), 2);
        assert_eq!(c.pop().unwrap().timestamp_us, 0);
        assert!(p.push(&rec(8)));
        let mut got = Vec::new();
        c.drain(usize::MAX, |r| got.push(r.timestamp_us));
        assert_eq!(got, (1..=8).collect::<Vec<_>>());
        assert_eq!(c.usage(), 0);
        assert!(c.pop().is_none());
    }

    #[test]
    fn closed_ring_drops() {
        let (mut p, mut c) = log_ring(8);
        assert!(p.push(&rec(1)));
        c.close();
        assert!(!p.push(&rec(2)));
        assert_eq!(p.dropped(), 1);
        assert_eq!(c.pop().unwrap().timestamp_us, 1);
        drop(c);
        assert!(!p.push(&rec(3)));
        assert_eq!(p.dropped(), 2);
    }

    #[test]
    fn stranded_records_count_as_dropped() {
        let (mut p, c) = log_ring(8);
        assert!(p.push(&rec(1)));
        assert!(p.push(&rec(2)));
        assert_eq!(p.dropped(), 0);
        drop(c);
        assert_eq!(p.dropped(), 2);
    }

    #[test]
    fn sampled_out_counter() {
        let (mut p, c) = log_ring(8);
        p.count_sampled_out();
        p.count_sampled_out();
        assert_eq!(c.shared().sampled_out(), 2);
    }

    /// Two threads, a small ring so it wraps and fills constantly: every
    /// record arrives exactly once, in order, intact.
    #[test]
    fn spsc_stress_no_loss_no_dup_in_order() {
        const N: u64 = 1_000_000;
        for cap in [2usize, 16, 1024] {
            let (mut p, mut c) = log_ring(cap);
            let producer = std::thread::spawn(move || {
                let mut i = 0;
                let mut spins = 0u64;
                while i < N {
                    if p.push(&rec(i)) {
                        i += 1;
                    } else {
                        spins += 1;
                        std::thread::yield_now();
                    }
                }
                (p.dropped(), spins)
            });
            let mut next = 0u64;
            let mut batch = 1;
            while next < N {
                let n = c.drain(batch, |r| {
                    assert_eq!(r.timestamp_us, next, "cap {cap}");
                    assert_eq!(r.bytes_in, next.wrapping_mul(31));
                    next += 1;
                });
                if n == 0 {
                    std::thread::yield_now();
                }
                batch = batch % 700 + 1; // vary batch sizes
            }
            let (dropped, spins) = producer.join().unwrap();
            // Every failed push is a drop; the consumer still saw 0..N once each.
            assert_eq!(dropped, spins);
            assert!(c.pop().is_none());
            assert_eq!(c.usage(), 0);
        }
    }
}
