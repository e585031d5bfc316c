//! The per-shard SPSC byte ring that carries request/response bodies for
//! optional body logging (off by default).
//!
//! It sits beside a record ring (see [`log_ring_with_bodies`](super::log_ring_with_bodies))
//! and has the same shape: one writer (the shard), one reader (the log
//! writer thread), monotonic byte counters `head`/`tail` on separate padded
//! cache lines, `Release` stores / `Acquire` loads for the handoff, cached
//! copies of the other side's counter, no lock, no syscall, no allocation.
//!
//! Entries are variable-size and never split across the end of the buffer:
//!
//! ```text
//!  offset 0        4          8             12             16
//!         | size   | tag      | request_len | response_len | request bytes | response bytes | pad to 16 |
//! ```
//!
//! * All four header fields are `u32`, native endian (the ring never leaves
//!   the process).
//! * `size` is the whole entry (header, both bodies, padding), a multiple of
//!   [`ALIGN`] (16), so every entry starts 16-aligned and the space left
//!   before the end of the buffer is always 0 or at least one header.
//! * `tag` is the low 32 bits of the record-ring index of the record the
//!   body belongs to; the reader checks it against the record it is encoding
//!   (FIFO order already pairs them, the tag makes a bug visible instead of
//!   silently mislabelling bodies).
//! * When an entry does not fit in the space left before the end of the
//!   buffer, the writer fills that space with a skip entry (`request_len ==
//!   SKIP`, `size` = the space left) and writes the entry at offset 0. The
//!   skip entry and the entry are published by the same `Release` store.
//! * Room: an entry of `size` bytes at offset `o` needs `size` bytes, or
//!   `(capacity - o) + size` when it wraps; it is written only when
//!   `head - tail + need <= capacity`. An entry larger than the ring never
//!   fits and is refused (its record is still logged, without a body).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::ring::CachePadded;

/// Default size of a shard's body ring in bytes (4 MiB, touched only as it
/// fills).
pub const DEFAULT_BODY_RING_BYTES: usize = 4 << 20;

/// Smallest and largest body ring (the sizes fit the `u32` header fields).
const MIN_BYTES: usize = 4096;
const MAX_BYTES: usize = 1 << 30;

/// Entry alignment and header size.
const ALIGN: usize = 16;
const HEADER: usize = 16;

/// `request_len` of a skip entry (a real length is below `MAX_BYTES`).
const SKIP: u32 = u32::MAX;

/// Fields written by the writer (shard) only.
struct WriterSide {
    head: AtomicUsize,
}

/// Fields written by the reader (log writer thread) only.
struct ReaderSide {
    tail: AtomicUsize,
    /// Records flagged with a body whose entry was not found (a bug guard;
    /// stays 0).
    missing: AtomicU64,
}

/// The shared part of a body ring.
pub(crate) struct ByteRing {
    w: CachePadded<WriterSide>,
    r: CachePadded<ReaderSide>,
    mask: usize,
    buf: Box<[UnsafeCell<u8>]>,
}

// SAFETY: a `ByteRing` is shared by exactly one `ByteWriter` and one
// `ByteReader` (created together by `byte_ring`, neither is `Clone`, both
// are owned by the one `LogProducer` / `LogConsumer` of a ring and used
// through `&mut self`), plus observers that only load atomics. The writer
// writes only bytes in `[head, tail + capacity)` and the reader reads only
// bytes in `[tail, head)` (positions modulo capacity); the Release store of
// `head` after writing and its Acquire load before reading (and the same
// for `tail` in the other direction) make those ranges disjoint and order
// every write before the read of the same byte and every read before the
// next write. `u8` is plain data.
unsafe impl Sync for ByteRing {}

impl ByteRing {
    /// Capacity in bytes.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Bytes in use (entries and skip entries), a snapshot from any thread.
    pub(crate) fn usage(&self) -> usize {
        let tail = self.r.0.tail.load(Ordering::Acquire);
        let head = self.w.0.head.load(Ordering::Acquire);
        head.wrapping_sub(tail).min(self.capacity())
    }

    /// Bodies the reader could not pair with their record: flagged records
    /// with no entry, entries with no record (0 unless there is a bug).
    pub(crate) fn missing(&self) -> u64 {
        self.r.0.missing.load(Ordering::Relaxed)
    }

    /// Base pointer of the buffer. Writing through it is allowed: every
    /// byte is in an `UnsafeCell`.
    #[inline]
    fn base(&self) -> *mut u8 {
        // `UnsafeCell<u8>` has the layout of `u8`; `raw_get` of the first
        // cell keeps the provenance of the whole slice.
        UnsafeCell::raw_get(self.buf.as_ptr())
    }
}

/// Creates a body ring of at least `bytes` bytes (rounded up to a power of
/// two, between 4 KiB and 1 GiB) and its two private ends.
pub(crate) fn byte_ring(bytes: usize) -> (ByteRing, ByteWriter, ByteReader) {
    let cap = bytes.clamp(MIN_BYTES, MAX_BYTES).next_power_of_two();
    // Zeroed allocation: the pages are mapped lazily, as the ring fills.
    let zeroed: Box<[u8]> = vec![0u8; cap].into_boxed_slice();
    // SAFETY: `UnsafeCell<u8>` is `repr(transparent)` over `u8`, so a
    // `[u8]` of `cap` initialized bytes is a valid `[UnsafeCell<u8>]` of the
    // same length, with the same size and alignment for the allocator.
    let buf: Box<[UnsafeCell<u8>]> =
        unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [UnsafeCell<u8>]) };
    let ring = ByteRing {
        w: CachePadded(WriterSide {
            head: AtomicUsize::new(0),
        }),
        r: CachePadded(ReaderSide {
            tail: AtomicUsize::new(0),
            missing: AtomicU64::new(0),
        }),
        mask: cap - 1,
        buf,
    };
    (
        ring,
        ByteWriter {
            head: 0,
            cached_tail: 0,
        },
        ByteReader {
            tail: 0,
            cached_head: 0,
        },
    )
}

#[inline]
fn entry_size(request: usize, response: usize) -> Option<usize> {
    let n = HEADER.checked_add(request)?.checked_add(response)?;
    Some(n.checked_add(ALIGN - 1)? & !(ALIGN - 1))
}

/// The writer's private state. Not `Clone`: one per ring.
pub(crate) struct ByteWriter {
    /// Our copy of `head` (we are its only writer).
    head: usize,
    /// Last `tail` we loaded; the real one can only be larger.
    cached_tail: usize,
}

impl ByteWriter {
    /// Appends one entry (`request`, then `response`) tagged with `tag`.
    /// Returns false when there is no room (the caller counts the drop).
    ///
    /// # Safety
    ///
    /// `self` must be the writer created with `ring` by [`byte_ring`], and
    /// the only one using it (guaranteed by `&mut self` when the writer is
    /// not duplicated).
    #[inline]
    pub(crate) unsafe fn push(
        &mut self,
        ring: &ByteRing,
        tag: u32,
        request: &[u8],
        response: &[u8],
    ) -> bool {
        let cap = ring.capacity();
        let Some(size) = entry_size(request.len(), response.len()).filter(|&s| s <= cap) else {
            return false;
        };
        let off = self.head & ring.mask;
        let to_end = cap - off;
        let skip = if size <= to_end { 0 } else { to_end };
        let need = skip + size;
        if self.head.wrapping_sub(self.cached_tail) + need > cap {
            self.cached_tail = ring.r.0.tail.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.cached_tail) + need > cap {
                return false;
            }
        }
        let base = ring.base();
        // SAFETY (both blocks): `head - tail + need <= capacity` against a
        // tail that is <= the real one, so the `need` bytes from `head` on
        // (modulo capacity) are free: the reader finished reading them
        // before its Release store of a tail we Acquire-loaded, and reads
        // nothing at or past `head` before our Release store of head below.
        // Offsets: a skip header goes at `off`, where `to_end >= ALIGN =
        // HEADER` bytes are left (offsets are multiples of ALIGN); the entry
        // goes at `off` (when `size <= to_end`) or at 0 (`size <= cap`), so
        // every byte written is inside the buffer. The sources are caller
        // slices that cannot overlap the ring (it is private to us).
        unsafe {
            if skip > 0 {
                write_header(base.add(off), skip as u32, 0, SKIP, 0);
            }
            let at = if skip > 0 { 0 } else { off };
            let p = base.add(at);
            write_header(
                p,
                size as u32,
                tag,
                request.len() as u32,
                response.len() as u32,
            );
            std::ptr::copy_nonoverlapping(request.as_ptr(), p.add(HEADER), request.len());
            std::ptr::copy_nonoverlapping(
                response.as_ptr(),
                p.add(HEADER + request.len()),
                response.len(),
            );
        }
        self.head = self.head.wrapping_add(need);
        ring.w.0.head.store(self.head, Ordering::Release);
        true
    }
}

/// # Safety
///
/// `p` must point at `HEADER` writable bytes of the ring.
#[inline]
unsafe fn write_header(p: *mut u8, size: u32, tag: u32, request: u32, response: u32) {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&size.to_ne_bytes());
    h[4..8].copy_from_slice(&tag.to_ne_bytes());
    h[8..12].copy_from_slice(&request.to_ne_bytes());
    h[12..16].copy_from_slice(&response.to_ne_bytes());
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), p, HEADER) };
}

/// A decoded header.
struct Header {
    size: usize,
    tag: u32,
    request: u32,
    response: u32,
}

/// The reader's private state. Not `Clone`: one per ring.
pub(crate) struct ByteReader {
    /// Our copy of `tail` (we are its only writer).
    tail: usize,
    /// Last `head` we loaded; the real one can only be larger.
    cached_head: usize,
}

/// Whether tag `a` comes before tag `b` (record indexes, modulo 2^32).
#[inline]
fn older(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

impl ByteReader {
    /// Takes the body entry tagged `tag` (the next one, in FIFO order),
    /// passes its request and response bytes to `f`, then frees it. `f`
    /// gets `None` when no such entry is there (a bug: counted, and the
    /// record is logged without a body).
    ///
    /// # Safety
    ///
    /// `self` must be the reader created with `ring` by [`byte_ring`], and
    /// the only one using it.
    pub(crate) unsafe fn take<R>(
        &mut self,
        ring: &ByteRing,
        tag: u32,
        f: impl FnOnce(Option<(&[u8], &[u8])>) -> R,
    ) -> R {
        loop {
            let Some(h) = self.header(ring) else {
                return self.missing(ring, f);
            };
            if h.request == SKIP {
                // The writer wrapped: the entry is at offset 0.
                self.advance(ring, h.size);
                continue;
            }
            if h.tag != tag {
                // Cannot happen (FIFO pairs them); if it ever does, log no
                // wrong body, count it, and get back in step.
                if older(h.tag, tag) {
                    // A body nobody will ask for: free it, look again.
                    self.count_missing(ring);
                    self.advance(ring, h.size);
                    continue;
                }
                // The body of a later record: leave it for that record.
                return self.missing(ring, f);
            }
            let start = (self.tail & ring.mask) + HEADER;
            let (req, resp) = (h.request as usize, h.response as usize);
            // SAFETY: `header` checked that the entry lies inside the
            // buffer (it never wraps) and inside `[tail, head)` for a head
            // we Acquire-loaded after the writer's Release store that
            // published it, so its bytes are written and the writer will not
            // touch them before our Release store of a tail past them
            // (`advance`, after `f` returned; `f` cannot keep the slices:
            // their lifetime ends with the call).
            let out = unsafe {
                let p = ring.base().add(start);
                f(Some((
                    std::slice::from_raw_parts(p, req),
                    std::slice::from_raw_parts(p.add(req), resp),
                )))
            };
            self.advance(ring, h.size);
            return out;
        }
    }

    #[cold]
    fn missing<R>(&self, ring: &ByteRing, f: impl FnOnce(Option<(&[u8], &[u8])>) -> R) -> R {
        self.count_missing(ring);
        f(None)
    }

    #[cold]
    fn count_missing(&self, ring: &ByteRing) {
        let m = &ring.r.0.missing;
        // Single writer: a plain load + store instead of a locked RMW.
        m.store(m.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The header at `tail`, if an entry is there and looks sane.
    fn header(&mut self, ring: &ByteRing) -> Option<Header> {
        if self.cached_head.wrapping_sub(self.tail) < HEADER {
            self.cached_head = ring.w.0.head.load(Ordering::Acquire);
        }
        let avail = self.cached_head.wrapping_sub(self.tail);
        if avail < HEADER {
            return None;
        }
        let off = self.tail & ring.mask;
        let mut b = [0u8; HEADER];
        // SAFETY: at least HEADER published bytes start at `tail` (see
        // `take`); offsets are multiples of ALIGN = HEADER, so they do not
        // cross the end of the buffer.
        unsafe { std::ptr::copy_nonoverlapping(ring.base().add(off), b.as_mut_ptr(), HEADER) };
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            size: word(0) as usize,
            tag: word(4),
            request: word(8),
            response: word(12),
        };
        let body = if h.request == SKIP {
            0
        } else {
            h.request as usize + h.response as usize
        };
        let sane = h.size >= HEADER
            && h.size % ALIGN == 0
            && h.size <= avail
            && h.size <= ring.capacity() - off
            && HEADER + body <= h.size;
        if !sane {
            // Cannot happen; resynchronize rather than read garbage.
            debug_assert!(false, "corrupt body ring header at {}", self.tail);
            self.tail = self.cached_head;
            ring.r.0.tail.store(self.tail, Ordering::Release);
            return None;
        }
        Some(h)
    }

    /// Frees `size` bytes at `tail`.
    #[inline]
    fn advance(&mut self, ring: &ByteRing, size: usize) {
        self.tail = self.tail.wrapping_add(size);
        // Bodies are large next to this store: publish each one at once so
        // the shard gets the room back as soon as possible.
        ring.r.0.tail.store(self.tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring with its two ends, for the tests (one thread).
    struct Ring {
        ring: ByteRing,
        w: ByteWriter,
        r: ByteReader,
    }

    impl Ring {
        fn new(bytes: usize) -> Self {
            let (ring, w, r) = byte_ring(bytes);
            Ring { ring, w, r }
        }
        fn push(&mut self, tag: u32, a: &[u8], b: &[u8]) -> bool {
            // SAFETY: `w` was created with `ring`; single thread.
            unsafe { self.w.push(&self.ring, tag, a, b) }
        }
        fn take(&mut self, tag: u32) -> Option<(Vec<u8>, Vec<u8>)> {
            // SAFETY: `r` was created with `ring`; single thread.
            unsafe {
                self.r.take(&self.ring, tag, |e| {
                    e.map(|(a, b)| (a.to_vec(), b.to_vec()))
                })
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(entry_size(0, 0), Some(16));
        assert_eq!(entry_size(1, 0), Some(32));
        assert_eq!(entry_size(10, 6), Some(32));
        assert_eq!(entry_size(10, 7), Some(48));
        assert_eq!(entry_size(usize::MAX, 1), None);
        assert_eq!(byte_ring(0).0.capacity(), 4096);
        assert_eq!(byte_ring(5000).0.capacity(), 8192);
        assert_eq!(byte_ring(usize::MAX).0.capacity(), 1 << 30);
        assert!(older(u32::MAX, 0));
        assert!(!older(0, u32::MAX));
        assert!(!older(7, 7));
    }

    #[test]
    fn roundtrip_and_full() {
        let mut r = Ring::new(4096);
        assert!(r.push(0, b"hello", b"world!"));
        assert!(r.push(1, b"", b""));
        assert_eq!(r.ring.usage(), 32 + 16);
        assert_eq!(r.take(0), Some((b"hello".to_vec(), b"world!".to_vec())));
        assert_eq!(r.take(1), Some((vec![], vec![])));
        assert_eq!(r.ring.usage(), 0);
        // Fill: 4096 / 1024 = 4 entries of 16 + 1008 bytes.
        let mut r = Ring::new(4096);
        let big = vec![7u8; 1000];
        for t in 0..4 {
            assert!(r.push(t, &big, b"12345678"));
        }
        assert_eq!(r.ring.usage(), 4096);
        assert!(!r.push(4, b"", b""));
        assert_eq!(r.take(0).unwrap().0, big);
        assert!(r.push(4, b"", b"after"));
        for t in 1..4 {
            assert_eq!(r.take(t).unwrap().0, big);
        }
        assert_eq!(r.take(4).unwrap().1, b"after");
        assert_eq!(r.ring.usage(), 0);
        // Larger than the whole ring: refused, even when empty.
        assert!(!r.push(5, &vec![0u8; 4096 - 16], b"x"));
        // Exactly the whole ring: fits when the ring is empty at offset 0.
        let mut r = Ring::new(4096);
        assert!(r.push(5, &vec![0u8; 4096 - 16], b""));
        assert_eq!(r.ring.usage(), 4096);
        assert_eq!(r.take(5).unwrap().0.len(), 4096 - 16);
        assert_eq!(r.ring.missing(), 0);
    }

    #[test]
    fn wraps_with_skip_entry() {
        let mut r = Ring::new(4096);
        let a = vec![1u8; 3000 - 16];
        assert!(r.push(0, &a, b"")); // 3008 bytes at 0
        assert_eq!(r.take(0).unwrap().0, a);
        // 1088 left before the end: a 2000-byte entry wraps to offset 0.
        let b = vec![2u8; 1000];
        assert!(r.push(1, &b, &b));
        assert_eq!(r.ring.usage(), 1088 + 2016);
        assert_eq!(r.take(1), Some((b.clone(), b.clone())));
        assert_eq!(r.ring.usage(), 0);
        // Now at offset 2016: 2080 left, and a wrapping 3000-byte entry
        // would need 2080 + 3008 > 4096 even though the ring is empty.
        assert!(!r.push(2, &a, b""));
        assert!(r.push(2, &b, b""));
        assert_eq!(r.take(2).unwrap().0, b);
    }

    #[test]
    fn missing_and_stale_entries() {
        let mut r = Ring::new(4096);
        // Nothing there: None, counted.
        assert_eq!(r.take(0), None);
        assert_eq!(r.ring.missing(), 1);
        // A stale entry (its record never asks for it) is freed and
        // counted; the next one still pairs.
        assert!(r.push(5, b"old", b""));
        assert!(r.push(6, b"new", b""));
        assert_eq!(r.take(6).unwrap().0, b"new");
        assert_eq!(r.ring.missing(), 2);
        // An entry of a later record is left for it.
        assert!(r.push(8, b"eight", b""));
        assert_eq!(r.take(7), None);
        assert_eq!(r.ring.missing(), 3);
        assert_eq!(r.take(8).unwrap().0, b"eight");
        assert_eq!(r.ring.usage(), 0);
    }
}
