//! [`InflightTracker`]: a bounded, lock-free table of every request being
//! served, across all shards, for the admin "what is running now" view.
//!
//! # Layout
//!
//! The entries (model, provider, credential names: owned strings) live in a
//! [`sharded_slab::Slab`]: inserts and removes from a thread touch only that
//! thread's shard of the slab, and a reader on any thread can `get` an entry
//! safely while its owner removes it (the slot is freed when the last
//! reference goes). The slab cannot be iterated through `&self`, so next to it
//! the tracker keeps one *partition* per gateway shard: a fixed array of slot
//! indices holding the slab keys of the live entries (what `list` walks), a
//! lock-free free-list of those slots (which is also the capacity bound), and
//! the `bytes_streamed` counters. A shard only touches its own partition, so
//! `begin` and the guard's drop are a handful of uncontended atomic
//! operations: no lock, and no cache line shared with other shards.
//!
//! The capacity is split evenly over the partitions (the kernel spreads
//! connections evenly over the shards), so the total never exceeds the
//! configured maximum, and one shard can be full while another still has room.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sharded_slab::Slab;

use super::json;
use super::shard::truncate_str;

/// Longest model name kept in an entry, in bytes (cut at a char boundary).
pub const MAX_INFLIGHT_MODEL_BYTES: usize = 128;

/// Longest provider or credential label kept in an entry, in bytes.
pub const MAX_INFLIGHT_LABEL_BYTES: usize = 128;

/// One request being served, as handed to [`InflightTracker::begin`].
#[derive(Debug, Clone)]
pub struct InflightEntry {
    /// Request id (shown as 32 hex digits).
    pub id: u128,
    /// The shard serving the request; selects the tracker partition.
    pub shard: u16,
    /// When the request started (for the age).
    pub started: Instant,
    /// When the request started, in microseconds since the Unix epoch (for
    /// display).
    pub started_unix_us: u64,
    /// The client's protocol (`"openai"`, `"anthropic"`, `"gemini"`, ...).
    pub client_protocol: &'static str,
    /// The requested model, cut to [`MAX_INFLIGHT_MODEL_BYTES`] by `begin`.
    pub model: String,
    /// The provider serving it, once chosen.
    pub provider: Option<Cow<'static, str>>,
    /// A display label of the credential used (file name, key id): never the
    /// secret itself. Cut to [`MAX_INFLIGHT_LABEL_BYTES`].
    pub credential: Option<Cow<'static, str>>,
}

impl InflightEntry {
    /// An entry started now, without provider or credential.
    pub fn new(
        id: u128,
        shard: u16,
        client_protocol: &'static str,
        model: impl Into<String>,
    ) -> Self {
        InflightEntry {
            id,
            shard,
            started: Instant::now(),
            started_unix_us: unix_micros(),
            client_protocol,
            model: model.into(),
            provider: None,
            credential: None,
        }
    }

    /// Sets the provider.
    pub fn with_provider(mut self, provider: impl Into<Cow<'static, str>>) -> Self {
        self.provider = Some(provider.into());
        self
    }

    /// Sets the credential label (never the secret).
    pub fn with_credential(mut self, credential: impl Into<Cow<'static, str>>) -> Self {
        self.credential = Some(credential.into());
        self
    }
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn bound(s: &mut String, max: usize) {
    let n = truncate_str(s, max).len();
    s.truncate(n);
}

fn bound_cow(c: &mut Option<Cow<'static, str>>, max: usize) {
    if let Some(v) = c {
        if v.len() > max {
            let n = truncate_str(v, max).len();
            match v {
                Cow::Borrowed(b) => *b = &b[..n],
                Cow::Owned(o) => o.truncate(n),
            }
        }
    }
}

/// A copy of one tracked request, from [`InflightTracker::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightView {
    /// Request id.
    pub id: u128,
    /// Serving shard.
    pub shard: u16,
    /// Time since the request started, as of the `list` call.
    pub age: Duration,
    /// Start time in microseconds since the Unix epoch.
    pub started_unix_us: u64,
    /// Client protocol.
    pub client_protocol: &'static str,
    /// Model.
    pub model: String,
    /// Provider, if chosen.
    pub provider: Option<Cow<'static, str>>,
    /// Credential label, if chosen.
    pub credential: Option<Cow<'static, str>>,
    /// Response bytes streamed to the client so far.
    pub bytes_streamed: u64,
}

/// One shard's share of the tracker. Padded to keep partitions of different
/// shards off each other's cache lines.
#[repr(align(128))]
struct Partition {
    /// Slab key + 1 of the entry in each slot; 0 when the slot is free.
    keys: Box<[AtomicUsize]>,
    /// Bytes streamed by the entry in each slot.
    bytes: Box<[AtomicU64]>,
    /// Free-list links: slot index + 1 of the next free slot, 0 = end.
    next: Box<[AtomicU32]>,
    /// Free-list head: ABA tag in the high 32 bits, slot index + 1 in the
    /// low 32 bits (0 = empty list).
    head: AtomicU64,
    rejected: AtomicU64,
}

impl Partition {
    fn new(cap: usize) -> Self {
        let cap = cap.min(u32::MAX as usize - 1);
        // Slot i links to slot i + 1; the last to 0 (end).
        let next = (0..cap)
            .map(|i| AtomicU32::new(if i + 1 < cap { i as u32 + 2 } else { 0 }))
            .collect();
        Partition {
            keys: (0..cap).map(|_| AtomicUsize::new(0)).collect(),
            bytes: (0..cap).map(|_| AtomicU64::new(0)).collect(),
            next,
            head: AtomicU64::new(if cap > 0 { 1 } else { 0 }),
            rejected: AtomicU64::new(0),
        }
    }

    /// Pops a free slot (Treiber stack; the tag defeats ABA).
    fn pop(&self) -> Option<u32> {
        let mut head = self.head.load(Acquire);
        loop {
            let top = head as u32;
            if top == 0 {
                return None;
            }
            let idx = top - 1;
            let next = self.next[idx as usize].load(Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            match self.head.compare_exchange_weak(head, new, Acquire, Acquire) {
                Ok(_) => return Some(idx),
                Err(h) => head = h,
            }
        }
    }

    fn push(&self, idx: u32) {
        let mut head = self.head.load(Relaxed);
        loop {
            self.next[idx as usize].store(head as u32, Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(idx + 1);
            match self.head.compare_exchange_weak(head, new, Release, Relaxed) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }
}

/// The bounded table of in-flight requests. `Sync`: `begin` from any shard
/// thread, `list`/`render_json`/`len` from any thread, never a lock.
pub struct InflightTracker {
    slab: Slab<InflightEntry>,
    parts: Box<[Partition]>,
    capacity: usize,
}

impl InflightTracker {
    /// A tracker holding at most `capacity` requests, split over `shards`
    /// partitions (one per gateway shard; at least 1).
    pub fn new(capacity: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        let parts: Box<[Partition]> = (0..shards)
            .map(|i| Partition::new(capacity / shards + usize::from(i < capacity % shards)))
            .collect();
        let capacity = parts.iter().map(|p| p.keys.len()).sum();
        InflightTracker {
            slab: Slab::new(),
            parts,
            capacity,
        }
    }

    /// Starts tracking `entry` in partition `entry.shard` (modulo the
    /// partition count). Returns `None` when that partition is full (counted in [`rejected`](Self::rejected); the request
    /// should still be served, just not listed). The entry is removed when
    /// the guard drops: completion, error and client disconnect alike.
    ///
    /// The guard borrows the tracker; a `'static` task can hold both (own an
    /// `Rc`/`Arc` of the tracker in the task and borrow from it) without an
    /// `Arc` clone per request.
    pub fn begin(&self, mut entry: InflightEntry) -> Option<InflightGuard<'_>> {
        let p = usize::from(entry.shard) % self.parts.len();
        let part = &self.parts[p];
        let Some(idx) = part.pop() else {
            part.rejected.fetch_add(1, Relaxed);
            return None;
        };
        bound(&mut entry.model, MAX_INFLIGHT_MODEL_BYTES);
        bound_cow(&mut entry.provider, MAX_INFLIGHT_LABEL_BYTES);
        bound_cow(&mut entry.credential, MAX_INFLIGHT_LABEL_BYTES);
        let Some(key) = self.slab.insert(entry) else {
            // The slab's per-thread shard is full (not reachable with the
            // default config and a sane capacity).
            part.push(idx);
            part.rejected.fetch_add(1, Relaxed);
            return None;
        };
        part.bytes[idx as usize].store(0, Relaxed);
        part.keys[idx as usize].store(key + 1, Release);
        Some(InflightGuard {
            tracker: self,
            part: p as u32,
            idx,
            key,
        })
    }

    /// Requests currently tracked. Counts the occupied slots (O(capacity),
    /// a few microseconds for thousands of slots): keeping a live count
    /// instead would cost two more atomic read-modify-writes per request.
    pub fn len(&self) -> usize {
        self.occupied().count()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.occupied().next().is_none()
    }

    fn occupied(&self) -> impl Iterator<Item = &AtomicUsize> {
        self.parts
            .iter()
            .flat_map(|p| p.keys.iter())
            .filter(|k| k.load(Relaxed) != 0)
    }

    /// The maximum number of tracked requests.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `begin` calls refused because a partition was full, since start.
    pub fn rejected(&self) -> u64 {
        self.parts.iter().map(|p| p.rejected.load(Relaxed)).sum()
    }

    /// Replaces the contents of `out` with a copy of every tracked request,
    /// oldest first. Walks every slot (O(capacity)); for the admin endpoint,
    /// not the request path. Requests that finish during the walk may or may
    /// not appear.
    pub fn list(&self, out: &mut Vec<InflightView>) {
        out.clear();
        let now = Instant::now();
        for part in self.parts.iter() {
            for (i, k) in part.keys.iter().enumerate() {
                let k = k.load(Acquire);
                if k == 0 {
                    continue;
                }
                let Some(e) = self.slab.get(k - 1) else {
                    continue;
                };
                let bytes = part.bytes[i].load(Relaxed);
                // The slot was reused meanwhile: the entry we hold finished,
                // and `bytes` may belong to its successor.
                if part.keys[i].load(Acquire) != k {
                    continue;
                }
                out.push(InflightView {
                    id: e.id,
                    shard: e.shard,
                    age: now.saturating_duration_since(e.started),
                    started_unix_us: e.started_unix_us,
                    client_protocol: e.client_protocol,
                    model: e.model.clone(),
                    provider: e.provider.clone(),
                    credential: e.credential.clone(),
                    bytes_streamed: bytes,
                });
            }
        }
        out.sort_by(|a, b| b.age.cmp(&a.age).then(a.id.cmp(&b.id)));
    }

    /// Appends the tracked requests to `out` as JSON:
    /// `{"in_flight":N,"capacity":N,"rejected":N,"requests":[{"id":"<32 hex>",
    /// "shard":0,"age_ms":12,"started_unix_us":N,"protocol":"openai",
    /// "model":"...","provider":"..."|null,"credential":"..."|null,
    /// "bytes_streamed":N}, ...]}`, oldest first.
    pub fn render_json(&self, out: &mut String) {
        let mut views = Vec::new();
        self.list(&mut views);
        let _ = write!(
            out,
            "{{\"in_flight\":{},\"capacity\":{},\"rejected\":{},\"requests\":[",
            views.len(),
            self.capacity,
            self.rejected()
        );
        for (i, v) in views.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"id\":\"{:032x}\",\"shard\":{},\"age_ms\":{},\"started_unix_us\":{},\"protocol\":",
                v.id,
                v.shard,
                v.age.as_millis(),
                v.started_unix_us
            );
            json::string(out, v.client_protocol);
            out.push_str(",\"model\":");
            json::string(out, &v.model);
            for (key, val) in [("provider", &v.provider), ("credential", &v.credential)] {
                let _ = write!(out, ",\"{key}\":");
                match val {
                    Some(s) => json::string(out, s),
                    None => out.push_str("null"),
                }
            }
            let _ = write!(out, ",\"bytes_streamed\":{}}}", v.bytes_streamed);
        }
        out.push_str("]}");
    }
}

/// Keeps a request in the tracker; dropping it removes the entry.
///
/// `Send` and `Sync`, but meant to stay on the shard that began it.
pub struct InflightGuard<'a> {
    tracker: &'a InflightTracker,
    part: u32,
    idx: u32,
    key: usize,
}

impl InflightGuard<'_> {
    /// Adds `n` to the bytes streamed to the client.
    #[inline]
    pub fn add_bytes(&self, n: u64) {
        self.tracker.parts[self.part as usize].bytes[self.idx as usize].fetch_add(n, Relaxed);
    }

    /// Bytes streamed so far.
    pub fn bytes_streamed(&self) -> u64 {
        self.tracker.parts[self.part as usize].bytes[self.idx as usize].load(Relaxed)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let part = &self.tracker.parts[self.part as usize];
        part.keys[self.idx as usize].store(0, Release);
        // Deferred by the slab while a lister still holds the entry.
        self.tracker.slab.remove(self.key);
        part.push(self.idx);
    }
}

impl std::fmt::Debug for InflightGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InflightGuard")
            .field("part", &self.part)
            .field("idx", &self.idx)
            .field("bytes_streamed", &self.bytes_streamed())
            .finish()
    }
}
