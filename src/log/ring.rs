//! The per-shard SPSC ring of [`AccessRecord`] slots, and (when body
//! logging is on) the body ring beside it.
//!
//! One [`LogProducer`] (owned by the shard thread) and one [`LogConsumer`]
//! (owned by the writer thread) share a power-of-two array of fixed-size
//! slots. The producer never blocks, never allocates and never makes a
//! syscall: a push is a 248-byte copy and one `Release` store; when the ring is
//! full the record is dropped and counted.
//!
//! A slot holds the record and a `body` flag (in the slot's padding: the
//! slot stays one 256-byte cache-line-aligned block). Rings made by
//! [`log_ring_with_bodies`] also own a byte ring of bodies (`body.rs`):
//! [`LogProducer::push_with_body`] writes the body entry there first, tagged
//! with the record's index, then the record with `body` set. The consumer
//! takes the next body entry whenever it reads a flagged record: both rings
//! are FIFO, so the n-th flagged record pairs with the n-th body entry, and
//! the tag checks it. The body's `Release` store of the body ring's head
//! comes before the record's `Release` store of `head` in the producer's
//! program order, so a consumer that `Acquire`d the record also sees the
//! body entry.
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

use super::body::{byte_ring, ByteReader, ByteRing, ByteWriter};
use super::record::AccessRecord;

/// Default ring capacity in slots (16384 x 256 B = 4 MiB per shard; the
/// pages are only touched as the ring fills).
pub const DEFAULT_RING_CAPACITY: usize = 16_384;

/// Aligned to 128 bytes: a cache line plus the adjacent line that x86's
/// spatial prefetcher pulls in pairs.
#[repr(align(128))]
pub(super) struct CachePadded<T>(pub(super) T);

/// Fields written by the producer only.
struct ProducerSide {
    head: AtomicUsize,
    /// Ring full (or closed) drops. Single writer: load + store, no RMW.
    dropped: AtomicU64,
    /// Records the caller's sampler decided not to log.
    sampled_out: AtomicU64,
    /// Bodies not logged although their record was pushed (body ring full,
    /// body larger than the ring, or no body ring).
    bodies_dropped: AtomicU64,
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
    /// The body ring, when body logging is on.
    bodies: Option<ByteRing>,
}

/// What a slot holds: the record and whether a body entry goes with it.
/// The flag lives here rather than in `AccessRecord` so that the record's
/// public fields (built with struct literals by the server) do not change;
/// it fits in the slot's padding (249 -> 256 bytes).
#[derive(Clone, Copy)]
struct Entry {
    rec: AccessRecord,
    body: bool,
}

/// One record's slot, aligned to a cache line (248 -> 256 bytes) so that
/// two slots never share a line: the producer writing slot i+1 does not
/// steal the line the consumer is reading slot i from.
#[repr(align(64))]
struct Slot(UnsafeCell<MaybeUninit<Entry>>);

// SAFETY: `Shared` is only reached through one `LogProducer`, one
// `LogConsumer` and observers (`LogStats`, the handles' `usage`/`dropped`)
// that only load atomics. The atomics are
// Sync by themselves. The slots (`UnsafeCell`) are accessed only by the
// producer (writes to free slots `[head, tail + capacity)`) and the consumer
// (reads of occupied slots `[tail, head)`); the Acquire/Release handoff on
// `head` and `tail` described in the module docs makes those ranges disjoint
// and orders each write before the matching read and each read before the
// slot's next write. Observers never touch the slots. `Entry` is plain
// `Copy` data, so moving it between threads is fine. The body ring has its
// own `Sync` argument (`body.rs`).
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

    /// Bodies not logged although their record was pushed (see
    /// [`LogProducer::push_with_body`]).
    pub(crate) fn bodies_dropped(&self) -> u64 {
        let missing = self.bodies.as_ref().map_or(0, |b| b.missing());
        self.prod.0.bodies_dropped.load(Ordering::Relaxed) + missing
    }

    /// Bytes in use in the body ring (0 without one).
    pub(crate) fn body_usage(&self) -> usize {
        self.bodies.as_ref().map_or(0, |b| b.usage())
    }

    /// Capacity of the body ring in bytes (0 without one).
    pub(crate) fn body_capacity(&self) -> usize {
        self.bodies.as_ref().map_or(0, |b| b.capacity())
    }
}

/// Creates a ring of `capacity` slots, rounded up to a power of two (at
/// least 2). Give the producer to the shard, the consumer to
/// [`LogWriter::spawn`](super::LogWriter::spawn).
pub fn log_ring(capacity: usize) -> (LogProducer, LogConsumer) {
    make_ring(capacity, None)
}

/// Like [`log_ring`], plus a body ring of `body_ring_bytes` bytes (rounded
/// up to a power of two, between 4 KiB and 1 GiB; see
/// [`DEFAULT_BODY_RING_BYTES`](super::DEFAULT_BODY_RING_BYTES)) for
/// [`LogProducer::push_with_body`]. Create rings this way only when body
/// logging is on: rings from [`log_ring`] carry no body memory at all.
pub fn log_ring_with_bodies(capacity: usize, body_ring_bytes: usize) -> (LogProducer, LogConsumer) {
    make_ring(capacity, Some(body_ring_bytes))
}

fn make_ring(capacity: usize, body_bytes: Option<usize>) -> (LogProducer, LogConsumer) {
    let cap = capacity.max(2).next_power_of_two();
    let slots: Box<[Slot]> = (0..cap)
        .map(|_| Slot(UnsafeCell::new(MaybeUninit::uninit())))
        .collect();
    let (bodies, body_writer, body_reader) = match body_bytes.map(byte_ring) {
        Some((ring, w, r)) => (Some(ring), Some(w), Some(r)),
        None => (None, None, None),
    };
    let shared = Arc::new(Shared {
        prod: CachePadded(ProducerSide {
            head: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            sampled_out: AtomicU64::new(0),
            bodies_dropped: AtomicU64::new(0),
        }),
        cons: CachePadded(ConsumerSide {
            tail: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }),
        mask: cap - 1,
        slots,
        bodies,
    });
    (
        LogProducer {
            shared: shared.clone(),
            head: 0,
            cached_tail: 0,
            body_writer,
        },
        LogConsumer {
            shared,
            tail: 0,
            body_reader,
        },
    )
}

/// The shard's end of a log ring. Not `Clone`: there is exactly one.
pub struct LogProducer {
    shared: Arc<Shared>,
    /// Our copy of `head` (we are its only writer).
    head: usize,
    /// Last `tail` we loaded; the real one can only be larger.
    cached_tail: usize,
    /// Our end of the body ring (`Some` exactly when `shared.bodies` is).
    body_writer: Option<ByteWriter>,
}

impl LogProducer {
    /// Copies `rec` into the ring. Returns false, and counts the record as
    /// dropped, when the ring is full or its writer has shut down. Never
    /// blocks, allocates or makes a syscall.
    #[inline]
    pub fn push(&mut self, rec: &AccessRecord) -> bool {
        if !self.has_room() {
            self.count_drop();
            return false;
        }
        self.write(rec, false);
        true
    }

    /// Like [`push`](Self::push), with the request and response bodies of
    /// the request attached: the writer adds them to the record's line as
    /// `"request_body"` and `"response_body"`.
    ///
    /// Pass bodies that are already capped and redacted with
    /// [`redact_and_cap_with`](super::redact_and_cap_with) (or
    /// [`redact_and_cap`](super::redact_and_cap)): they are logged as given.
    ///
    /// Returns false, and counts the record as dropped, exactly when `push`
    /// would (record ring full or closed); the body is then not written
    /// either, so no body is ever left without its record. When the record
    /// fits but the body does not (body ring full, body larger than the
    /// ring, or a ring made by [`log_ring`] without a body ring), the
    /// record is pushed without a body, returns true, and the body is
    /// counted in [`bodies_dropped`](Self::bodies_dropped).
    ///
    /// Cost: `push` plus one copy of both bodies into the body ring and one
    /// more `Release` store. No lock, syscall or allocation.
    #[inline]
    pub fn push_with_body(
        &mut self,
        rec: &AccessRecord,
        request_body: &[u8],
        response_body: &[u8],
    ) -> bool {
        // Record room first: once it is there it cannot go away (only we
        // fill the ring), so the body written below always gets its record.
        if !self.has_room() {
            self.count_drop();
            return false;
        }
        let tag = self.head as u32;
        let attached = match (&mut self.body_writer, &self.shared.bodies) {
            // SAFETY: `w` is the writer `byte_ring` made together with
            // `ring` (see `make_ring`), and only this producer holds it;
            // `&mut self` makes its use exclusive.
            (Some(w), Some(ring)) => unsafe { w.push(ring, tag, request_body, response_body) },
            _ => false,
        };
        if !attached {
            self.count_body_drop();
        }
        self.write(rec, attached);
        true
    }

    /// True when slot `head` is free and the ring open.
    #[inline(always)]
    fn has_room(&mut self) -> bool {
        let s = &*self.shared;
        if self.head.wrapping_sub(self.cached_tail) > s.mask {
            self.cached_tail = s.cons.0.tail.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.cached_tail) > s.mask {
                return false;
            }
        }
        !s.cons.0.closed.load(Ordering::Relaxed)
    }

    /// Writes slot `head` and publishes it. Only after `has_room()`.
    #[inline(always)]
    fn write(&mut self, rec: &AccessRecord, body: bool) {
        let s = &*self.shared;
        let slot = &s.slots[self.head & s.mask];
        // SAFETY: `has_room` saw head - tail < capacity against a tail that
        // is <= the real one (and only we move head), so this slot is free:
        // the consumer finished reading it before its Release store of a
        // tail we Acquire-loaded, and will not read it before our Release
        // store of head below. We are the only producer (`&mut self`, no
        // Clone), so nobody else writes it. The slot is plain memory for one
        // `Entry`.
        unsafe { (*slot.0.get()).write(Entry { rec: *rec, body }) };
        self.head = self.head.wrapping_add(1);
        s.prod.0.head.store(self.head, Ordering::Release);
    }

    #[cold]
    fn count_drop(&self) {
        let d = &self.shared.prod.0.dropped;
        // Single writer: a plain load + store instead of a locked RMW.
        d.store(d.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    #[cold]
    fn count_body_drop(&self) {
        let d = &self.shared.prod.0.bodies_dropped;
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

    /// True when this ring has a body ring ([`log_ring_with_bodies`]).
    pub fn has_body_ring(&self) -> bool {
        self.shared.bodies.is_some()
    }

    /// Bodies not logged although their record was pushed (see
    /// [`push_with_body`](Self::push_with_body)).
    pub fn bodies_dropped(&self) -> u64 {
        self.shared.bodies_dropped()
    }

    /// Bytes in use in the body ring (0 without one).
    pub fn body_usage(&self) -> usize {
        self.shared.body_usage()
    }

    /// Capacity of the body ring in bytes (0 without one).
    pub fn body_capacity(&self) -> usize {
        self.shared.body_capacity()
    }
}

/// The request and response bodies attached to a record, as the producer
/// passed them to [`LogProducer::push_with_body`]. Borrowed from the body
/// ring for the duration of a drain callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bodies<'a> {
    /// The request body (capped and redacted by the producer's caller).
    pub request: &'a [u8],
    /// The response body (capped and redacted by the producer's caller).
    pub response: &'a [u8],
}

/// The writer's end of a log ring. Not `Clone`: there is exactly one.
pub struct LogConsumer {
    shared: Arc<Shared>,
    /// Our copy of `tail` (we are its only writer).
    tail: usize,
    /// Our end of the body ring (`Some` exactly when `shared.bodies` is).
    body_reader: Option<ByteReader>,
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
    /// Returns how many were consumed. Bodies attached to them are removed
    /// too, unseen (see [`drain_with_bodies`](Self::drain_with_bodies)).
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&AccessRecord)) -> usize {
        self.drain_while(max, |r, _| {
            f(r);
            true
        })
    }

    /// Calls `f` on up to `max` records, oldest first, with the bodies
    /// attached to them (`None` for records pushed without), removing
    /// both. Returns how many records were consumed.
    pub fn drain_with_bodies(
        &mut self,
        max: usize,
        mut f: impl FnMut(&AccessRecord, Option<Bodies<'_>>),
    ) -> usize {
        self.drain_while(max, |r, b| {
            f(r, b);
            true
        })
    }

    /// Like [`drain_with_bodies`](Self::drain_with_bodies), stopping early
    /// (after the record it was called on) when `f` returns false.
    pub(crate) fn drain_while(
        &mut self,
        max: usize,
        mut f: impl FnMut(&AccessRecord, Option<Bodies<'_>>) -> bool,
    ) -> usize {
        let s = &*self.shared;
        // One Acquire load per call, not per record.
        let head = s.prod.0.head.load(Ordering::Acquire);
        let avail = head.wrapping_sub(self.tail);
        let n = avail.min(max);
        let mut done = 0;
        let mut go = true;
        while done < n && go {
            let chunk = (n - done).min(RELEASE_EVERY);
            let mut i = 0;
            while i < chunk && go {
                let slot = &s.slots[self.tail & s.mask];
                // SAFETY: tail < head (loaded above), so the producer wrote
                // this slot and published it with a Release store of head
                // that we Acquire-loaded; it will not write the slot again
                // until our Release store of a tail past it. We are the only
                // consumer (`&mut self`, no Clone). The slot holds an
                // initialized `Entry`.
                let entry = unsafe { (*slot.0.get()).assume_init_ref() };
                go = match (entry.body, &mut self.body_reader, &s.bodies) {
                    // SAFETY: `r` is the reader `byte_ring` made together
                    // with `ring`, and only this consumer holds it (`&mut
                    // self`). The producer published the body entry before
                    // this record (see the module docs).
                    (true, Some(r), Some(ring)) => unsafe {
                        r.take(ring, self.tail as u32, |b| {
                            f(
                                &entry.rec,
                                b.map(|(request, response)| Bodies { request, response }),
                            )
                        })
                    },
                    _ => f(&entry.rec, None),
                };
                self.tail = self.tail.wrapping_add(1);
                i += 1;
            }
            s.cons.0.tail.store(self.tail, Ordering::Release);
            done += i;
        }
        done
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

    fn body_bytes(seq: u64, len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|j| (seq as u8).wrapping_mul(31).wrapping_add(j as u8) ^ salt)
            .collect()
    }

    #[test]
    fn slot_holds_record_and_flag_in_one_line() {
        assert_eq!(std::mem::size_of::<Entry>(), 256);
        assert_eq!(std::mem::size_of::<Slot>(), 256);
    }

    /// Two threads, a small body ring that wraps constantly, entries of
    /// varied sizes (empty ones too): each record arrives once, in order,
    /// with exactly its own bodies or none, and the ones without are the
    /// ones counted as dropped.
    #[test]
    fn bodies_spsc_stress_varied_sizes() {
        const N: u64 = 50_000;
        for (slots, bytes) in [(4usize, 4096usize), (64, 8192), (1024, 64 * 1024)] {
            let (mut p, mut c) = log_ring_with_bodies(slots, bytes);
            let producer = std::thread::spawn(move || {
                let mut i = 0;
                while i < N {
                    let a = body_bytes(i, (i.wrapping_mul(2_654_435_761) % 1300) as usize, 0);
                    let b = body_bytes(i, (i.wrapping_mul(40_503) % 700) as usize, 0x5a);
                    if p.push_with_body(&rec(i), &a, &b) {
                        i += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
                p
            });
            let (mut next, mut with, mut without, mut body_bytes_seen) = (0u64, 0u64, 0u64, 0usize);
            let mut batch = 1;
            while next < N {
                let n = c.drain_with_bodies(batch, |r, b| {
                    assert_eq!(r.timestamp_us, next, "slots {slots}");
                    assert_eq!(r.bytes_in, next.wrapping_mul(31));
                    match b {
                        Some(b) => {
                            let la = (next.wrapping_mul(2_654_435_761) % 1300) as usize;
                            let lb = (next.wrapping_mul(40_503) % 700) as usize;
                            assert_eq!(b.request, &body_bytes(next, la, 0)[..], "seq {next}");
                            assert_eq!(b.response, &body_bytes(next, lb, 0x5a)[..], "seq {next}");
                            body_bytes_seen += la + lb;
                            with += 1;
                        }
                        None => without += 1,
                    }
                    next += 1;
                });
                if n == 0 {
                    std::thread::yield_now();
                }
                batch = batch % 300 + 1;
            }
            let p = producer.join().unwrap();
            assert_eq!(without, p.bodies_dropped(), "slots {slots}");
            assert!(with > 0);
            assert!(
                body_bytes_seen > 20 * bytes,
                "{body_bytes_seen}: ring barely wrapped"
            );
            assert!(c.pop().is_none());
            assert_eq!(c.usage(), 0);
            assert_eq!(p.body_usage(), 0);
        }
    }
}
