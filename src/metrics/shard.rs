//! Per-shard metrics: [`ShardMetrics`] (shared, readable from any thread)
//! and [`ShardRecorder`] (the owning shard's unique write handle).
//!
//! # Single writer
//!
//! Every counter and shard-owned gauge in [`ShardMetrics`] is written by
//! exactly one thread: the one holding the shard's [`ShardRecorder`]. The
//! registry hands out one recorder per shard ([`MetricsRegistry::recorder`]),
//! the recorder is not `Clone` and not `Sync`, so that holds by
//! construction. A single writer needs no read-modify-write instruction: an
//! increment is a relaxed load plus a relaxed store of the same atomic, which
//! compiles to a plain `mov`/`add`/`mov` instead of a `lock xadd`. Scrapers on
//! other threads read the atomics with relaxed loads and see each counter
//! move forward monotonically (they may see counters of one request a few
//! nanoseconds apart; a scrape is not a transaction).
//!
//! The gauges "set by others" ([`ShardMetrics::set_upstream_idle`],
//! [`ShardMetrics::set_log_ring_usage`], [`ShardMetrics::set_log_dropped`])
//! are plain stores: last writer wins, from any thread.
//!
//! [`MetricsRegistry::recorder`]: super::MetricsRegistry::recorder

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, TryLockError};

use hdrhistogram::Histogram;

use super::labels::{status_class, status_slot, Latency, Route, STATUS_CLASSES, STATUS_SLOTS};

/// Longest model name kept, in bytes; longer names are cut at a character
/// boundary before they are counted.
pub const MAX_MODEL_NAME_BYTES: usize = 128;

/// Highest latency a histogram tracks: one hour, in microseconds. Larger
/// values are clamped to it (their exact value still goes into the sum).
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// Increments a counter that has a single writer (see the module docs).
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Adds to a single-writer signed gauge.
#[inline(always)]
fn bump_i(gauge: &AtomicI64, n: i64) {
    gauge.store(gauge.load(Relaxed).wrapping_add(n), Relaxed);
}

pub(crate) fn new_histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, sigfig)
        .expect("histogram bounds are valid for sigfig 0..=5")
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A published latency histogram: the histogram and the exact sum of the
/// recorded values in microseconds (hdrhistogram keeps no exact sum).
#[derive(Clone)]
pub(crate) struct Timing {
    pub(crate) hist: Histogram<u64>,
    pub(crate) sum_us: u64,
}

/// One model name slot of the bounded per-shard model table.
struct ModelSlot {
    name: OnceLock<Box<str>>,
    count: AtomicU64,
}

/// The per-shard model counters. Slots are filled in order by the owning
/// shard; `len` is published with `Release` after the slot's name is set, so a
/// scraper that loads `len` with `Acquire` finds every slot below it named.
struct ModelTable {
    slots: Box<[ModelSlot]>,
    len: AtomicUsize,
    other: AtomicU64,
}

/// Counters and gauges of one shard, readable from any thread.
///
/// Shared as `Arc<ShardMetrics>` between the owning shard (through its
/// [`ShardRecorder`]), the [`MetricsRegistry`](super::MetricsRegistry) and
/// whoever sets the externally owned gauges. Counters are live (a scrape
/// sees every request recorded before it); latency histograms are as fresh as
/// the shard's last [`ShardRecorder::publish`].
// 128-byte alignment keeps two shards' hot counters off one cache line pair
// (adjacent-line prefetch pulls lines in pairs).
#[repr(align(128))]
pub struct ShardMetrics {
    shard: u16,
    routes: [AtomicU64; Route::COUNT],
    status_classes: [AtomicU64; STATUS_CLASSES],
    status_codes: [AtomicU64; STATUS_SLOTS],
    /// One per error class name, plus a trailing "other" for bad indices.
    errors: Box<[AtomicU64]>,
    /// One per provider name, plus a trailing "other" for bad indices.
    providers: Box<[AtomicU64]>,
    models: ModelTable,
    open_connections: AtomicI64,
    inflight: AtomicI64,
    upstream_idle: AtomicU64,
    log_ring_used: AtomicU64,
    log_ring_capacity: AtomicU64,
    log_dropped: AtomicU64,
    published: [Mutex<Timing>; Latency::COUNT],
    recorder_taken: AtomicBool,
}

/// Point-in-time gauges of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardGauges {
    /// Shard index.
    pub shard: u16,
    /// Client connections currently open on the shard.
    pub open_connections: i64,
    /// Requests currently being served by the shard.
    pub inflight_requests: i64,
    /// Idle connections in the shard's upstream pool.
    pub upstream_idle_connections: u64,
    /// Bytes currently queued in the shard's log ring.
    pub log_ring_used_bytes: u64,
    /// Capacity of the shard's log ring in bytes.
    pub log_ring_capacity_bytes: u64,
    /// Log records dropped by the shard's log ring since start.
    pub log_records_dropped: u64,
}

/// Raw per-shard counter values, read by the registry when it merges shards.
pub(crate) struct CounterValues {
    pub(crate) routes: [u64; Route::COUNT],
    pub(crate) status_classes: [u64; STATUS_CLASSES],
    pub(crate) status_codes: [u64; STATUS_SLOTS],
    pub(crate) errors: Vec<u64>,
    pub(crate) providers: Vec<u64>,
}

fn atomics<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn load_all<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i].load(Relaxed))
}

impl ShardMetrics {
    pub(crate) fn new(
        shard: u16,
        error_classes: usize,
        providers: usize,
        max_models: usize,
        sigfig: u8,
    ) -> Self {
        let slots = (0..max_models)
            .map(|_| ModelSlot {
                name: OnceLock::new(),
                count: AtomicU64::new(0),
            })
            .collect();
        let timing = || {
            Mutex::new(Timing {
                hist: new_histogram(sigfig),
                sum_us: 0,
            })
        };
        ShardMetrics {
            shard,
            routes: atomics(),
            status_classes: atomics(),
            status_codes: atomics(),
            errors: (0..=error_classes).map(|_| AtomicU64::new(0)).collect(),
            providers: (0..=providers).map(|_| AtomicU64::new(0)).collect(),
            models: ModelTable {
                slots,
                len: AtomicUsize::new(0),
                other: AtomicU64::new(0),
            },
            open_connections: AtomicI64::new(0),
            inflight: AtomicI64::new(0),
            upstream_idle: AtomicU64::new(0),
            log_ring_used: AtomicU64::new(0),
            log_ring_capacity: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
            published: [timing(), timing(), timing()],
            recorder_taken: AtomicBool::new(false),
        }
    }

    /// Creates the unique recorder of this shard, or `None` if one was
    /// already created.
    pub(crate) fn take_recorder(self: &Arc<Self>, sigfig: u8) -> Option<ShardRecorder> {
        if self.recorder_taken.swap(true, AcqRel) {
            return None;
        }
        Some(ShardRecorder {
            metrics: Arc::clone(self),
            local: RefCell::new(Local {
                timings: std::array::from_fn(|_| LocalTiming {
                    timing: Timing {
                        hist: new_histogram(sigfig),
                        sum_us: 0,
                    },
                    dirty: false,
                }),
                models: HashMap::default(),
            }),
        })
    }

    /// The shard index.
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// Sets the number of idle connections in this shard's upstream pool.
    /// Any thread; last writer wins.
    pub fn set_upstream_idle(&self, idle: u64) {
        self.upstream_idle.store(idle, Relaxed);
    }

    /// Sets this shard's log ring usage (bytes queued, ring capacity in
    /// bytes). Any thread; last writer wins.
    pub fn set_log_ring_usage(&self, used_bytes: u64, capacity_bytes: u64) {
        self.log_ring_used.store(used_bytes, Relaxed);
        self.log_ring_capacity.store(capacity_bytes, Relaxed);
    }

    /// Sets the total number of log records this shard's log ring has dropped
    /// since start (a monotonic count kept by the log ring). Any thread.
    pub fn set_log_dropped(&self, total_dropped: u64) {
        self.log_dropped.store(total_dropped, Relaxed);
    }

    /// The current gauges of this shard.
    pub fn gauges(&self) -> ShardGauges {
        ShardGauges {
            shard: self.shard,
            open_connections: self.open_connections.load(Relaxed),
            inflight_requests: self.inflight.load(Relaxed),
            upstream_idle_connections: self.upstream_idle.load(Relaxed),
            log_ring_used_bytes: self.log_ring_used.load(Relaxed),
            log_ring_capacity_bytes: self.log_ring_capacity.load(Relaxed),
            log_records_dropped: self.log_dropped.load(Relaxed),
        }
    }

    /// Requests counted for `route` on this shard so far.
    pub fn requests(&self, route: Route) -> u64 {
        self.routes[route.index()].load(Relaxed)
    }

    pub(crate) fn counter_values(&self) -> CounterValues {
        CounterValues {
            routes: load_all(&self.routes),
            status_classes: load_all(&self.status_classes),
            status_codes: load_all(&self.status_codes),
            errors: self.errors.iter().map(|c| c.load(Relaxed)).collect(),
            providers: self.providers.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }

    /// Calls `f(name, count)` for every named model slot of this shard, then
    /// `f(None, overflow)` once for the names that did not fit.
    pub(crate) fn for_each_model(&self, mut f: impl FnMut(Option<&str>, u64)) {
        let len = self.models.len.load(Acquire);
        for slot in &self.models.slots[..len] {
            if let Some(name) = slot.name.get() {
                f(Some(name), slot.count.load(Relaxed));
            }
        }
        f(None, self.models.other.load(Relaxed));
    }

    /// Adds this shard's last published histogram of `kind` into `into`.
    pub(crate) fn merge_published(&self, kind: Latency, into: &mut Timing) {
        let p = self.published[kind.index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Same bounds and precision everywhere, so this cannot fail.
        let _ = into.hist.add(&p.hist);
        into.sum_us = into.sum_us.wrapping_add(p.sum_us);
    }

    /// Runs `f` while holding the published slot of `kind` (tests only).
    #[cfg(test)]
    pub(crate) fn with_published_locked(&self, kind: Latency, f: impl FnOnce()) {
        let _g = self.published[kind.index()].lock().unwrap();
        f();
    }
}

/// FxHash (the rustc hasher) with an overlapping-read tail, a few lines
/// instead of a dependency. The std SipHash costs ~15-20 ns for a model name;
/// HashDoS resistance buys nothing here because the table never holds more
/// than `max_models` entries. It only ever hashes `str` keys, so it ignores
/// the `0xff` terminator std feeds through `write_u8` after the bytes.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl FxHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[inline(always)]
fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn le32(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes(b[..4].try_into().expect("4 bytes")))
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        let mut rest = bytes;
        while rest.len() > 8 {
            self.add(le64(rest));
            rest = &rest[8..];
        }
        // The last 1..=8 bytes without a memcpy: one read that may overlap
        // bytes already hashed (or two overlapping 4-byte reads, or bytes).
        let tail = if len >= 8 {
            le64(&bytes[len - 8..])
        } else if len >= 4 {
            le32(bytes) | (le32(&bytes[len - 4..]) << 32)
        } else if len > 0 {
            u64::from(bytes[0])
                | (u64::from(bytes[len / 2]) << 8)
                | (u64::from(bytes[len - 1]) << 16)
        } else {
            0
        };
        self.add(tail ^ ((len as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, _terminator: u8) {}

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

struct LocalTiming {
    timing: Timing,
    /// Recorded into since the last successful publish.
    dirty: bool,
}

/// State only the owning shard touches.
struct Local {
    timings: [LocalTiming; Latency::COUNT],
    /// Model name -> slot index in the shard's [`ModelTable`].
    models: HashMap<Box<str>, u32, BuildHasherDefault<FxHasher>>,
}

/// What one finished request contributes to the metrics; see
/// [`ShardRecorder::record_request`].
#[derive(Debug, Clone, Copy)]
pub struct RequestSample<'a> {
    /// The route the request took.
    pub route: Route,
    /// The HTTP status sent to the client (499 when the client went away).
    pub status: u16,
    /// Error class index (into the registry's error class names), if the
    /// request failed.
    pub error_class: Option<u8>,
    /// Provider index (into the registry's provider names), if the request
    /// went upstream.
    pub provider: Option<u16>,
    /// The model, if the request named one. Pass the resolved model name, not
    /// arbitrary client input: the first `max_models` distinct names each get
    /// a counter for the life of the process, later ones count as "other".
    pub model: Option<&'a str>,
    /// Total latency in microseconds.
    pub total_us: u64,
    /// Upstream latency in microseconds, if the request went upstream.
    pub upstream_us: Option<u64>,
    /// Time to first token in microseconds, for streaming responses.
    pub first_token_us: Option<u64>,
}

impl<'a> RequestSample<'a> {
    /// A sample with only route, status and total latency set.
    pub fn new(route: Route, status: u16, total_us: u64) -> Self {
        RequestSample {
            route,
            status,
            error_class: None,
            provider: None,
            model: None,
            total_us,
            upstream_us: None,
            first_token_us: None,
        }
    }
}

/// The owning shard's write handle to its [`ShardMetrics`].
///
/// Exactly one exists per shard (from
/// [`MetricsRegistry::recorder`](super::MetricsRegistry::recorder)); it is
/// `Send` (move it onto the shard thread once) but not `Sync` and not `Clone`,
/// so only that thread records. Every method takes `&self`, so a shard can
/// keep it in an `Rc` and hand it to its connection tasks. No method takes a
/// lock except [`publish`](Self::publish), which only tries one.
pub struct ShardRecorder {
    metrics: Arc<ShardMetrics>,
    local: RefCell<Local>,
}

impl ShardRecorder {
    /// The shared metrics this recorder writes.
    pub fn metrics(&self) -> &Arc<ShardMetrics> {
        &self.metrics
    }

    /// Records one finished request: route, status class, exact status,
    /// error class, provider, model counters and the latency histograms.
    #[inline]
    pub fn record_request(&self, s: &RequestSample<'_>) {
        self.count_route(s.route);
        self.count_status(s.status);
        if let Some(e) = s.error_class {
            self.count_error(e);
        }
        if let Some(p) = s.provider {
            self.count_provider(p);
        }
        let mut local = self.local.borrow_mut();
        if let Some(m) = s.model {
            self.count_model_in(&mut local, m);
        }
        record_in(&mut local, Latency::Total, s.total_us);
        if let Some(us) = s.upstream_us {
            record_in(&mut local, Latency::Upstream, us);
        }
        if let Some(us) = s.first_token_us {
            record_in(&mut local, Latency::FirstToken, us);
        }
    }

    /// Counts one request on `route`.
    #[inline]
    pub fn count_route(&self, route: Route) {
        bump(&self.metrics.routes[route.index()], 1);
    }

    /// Counts one response with HTTP `status` (its class and its exact slot).
    #[inline]
    pub fn count_status(&self, status: u16) {
        bump(&self.metrics.status_classes[status_class(status)], 1);
        bump(&self.metrics.status_codes[status_slot(status)], 1);
    }

    /// Counts one error of class `class` (an index into the registry's error
    /// class names; out-of-range indices count as "other").
    #[inline]
    pub fn count_error(&self, class: u8) {
        let e = &self.metrics.errors;
        bump(&e[usize::from(class).min(e.len() - 1)], 1);
    }

    /// Counts one upstream request to `provider` (an index into the
    /// registry's provider names; out-of-range indices count as "other").
    #[inline]
    pub fn count_provider(&self, provider: u16) {
        let p = &self.metrics.providers;
        bump(&p[usize::from(provider).min(p.len() - 1)], 1);
    }

    /// Counts one request for `model`. Known names are a hash lookup and an
    /// increment; a new name takes the next free slot of the bounded table
    /// (one allocation, no lock); when the table is full it counts as "other".
    /// Names are cut to [`MAX_MODEL_NAME_BYTES`].
    #[inline]
    pub fn count_model(&self, model: &str) {
        let mut local = self.local.borrow_mut();
        self.count_model_in(&mut local, model);
    }

    #[inline]
    fn count_model_in(&self, local: &mut Local, model: &str) {
        let model = truncate_str(model, MAX_MODEL_NAME_BYTES);
        let table = &self.metrics.models;
        if let Some(&i) = local.models.get(model) {
            bump(&table.slots[i as usize].count, 1);
            return;
        }
        let n = local.models.len();
        if n < table.slots.len() {
            let slot = &table.slots[n];
            // Only this shard sets slots, each once, in order.
            let _ = slot.name.set(model.into());
            bump(&slot.count, 1);
            table.len.store(n + 1, Release);
            local.models.insert(model.into(), n as u32);
        } else {
            bump(&table.other, 1);
        }
    }

    /// Records one latency value of `kind`, in microseconds. Values above one
    /// hour are clamped in the histogram (the sum keeps the exact value).
    #[inline]
    pub fn record_latency(&self, kind: Latency, micros: u64) {
        record_in(&mut self.local.borrow_mut(), kind, micros);
    }

    /// A client connection was accepted.
    #[inline]
    pub fn connection_opened(&self) {
        bump_i(&self.metrics.open_connections, 1);
    }

    /// A client connection was closed.
    #[inline]
    pub fn connection_closed(&self) {
        bump_i(&self.metrics.open_connections, -1);
    }

    /// Sets the open-connections gauge outright (for a shard that counts
    /// its connections elsewhere and mirrors the count periodically).
    pub fn set_connections(&self, open: u64) {
        self.metrics
            .open_connections
            .store(open.min(i64::MAX as u64) as i64, Relaxed);
    }

    /// A request started (in-flight gauge +1). Pair with
    /// [`request_finished`](Self::request_finished), e.g. from a drop guard so
    /// a dropped request future still decrements.
    #[inline]
    pub fn request_started(&self) {
        bump_i(&self.metrics.inflight, 1);
    }

    /// A request finished or was abandoned (in-flight gauge -1).
    #[inline]
    pub fn request_finished(&self) {
        bump_i(&self.metrics.inflight, -1);
    }

    /// Publishes this shard's latency histograms for scrapers.
    ///
    /// Call it from a periodic timer on the shard (every second is the
    /// intended interval), and on demand before a scrape if fresher numbers
    /// are wanted. Scrapers see histograms as of the last publish, so they
    /// are up to one publish interval stale; counters and gauges are always
    /// live.
    ///
    /// Copies each histogram that changed since the last publish into its
    /// `Mutex`-protected snapshot slot (a memcpy of the counts array). It only
    /// *tries* the lock: if a scraper holds it right now, that histogram stays
    /// pending and the next publish carries it (the local histograms are
    /// cumulative, so nothing is lost). Returns `true` when everything is
    /// published. Never touched by the request path.
    pub fn publish(&self) -> bool {
        let mut local = self.local.borrow_mut();
        let mut all = true;
        for kind in Latency::ALL {
            let lt = &mut local.timings[kind.index()];
            if !lt.dirty {
                continue;
            }
            let mut slot = match self.metrics.published[kind.index()].try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    all = false;
                    continue;
                }
            };
            // Same bounds and precision, so this is a reset plus a memcpy.
            let _ = slot.hist.set_to(&lt.timing.hist);
            slot.sum_us = lt.timing.sum_us;
            lt.dirty = false;
        }
        all
    }
}

#[inline]
fn record_in(local: &mut Local, kind: Latency, micros: u64) {
    let lt = &mut local.timings[kind.index()];
    lt.timing.hist.saturating_record(micros);
    lt.timing.sum_us = lt.timing.sum_us.wrapping_add(micros);
    lt.dirty = true;
}
