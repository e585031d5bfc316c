//! Metrics: per-shard counters, gauges and latency histograms, their merged
//! snapshot, Prometheus and JSON rendering, and the in-flight request tracker.
//!
//! Depends on nothing else in the crate (only `std`, `hdrhistogram` and
//! `sharded-slab`).
//!
//! # Wiring
//!
//! ```text
//! startup:   let tracker  = Arc::new(InflightTracker::new(max_inflight, shards));
//!            let registry = MetricsRegistry::new(MetricsConfig::new(shards)
//!                               .error_classes(ERROR_NAMES).providers(provider_names)
//!                               .tracker(tracker.clone()));
//! shard i:   let rec = Rc::new(registry.recorder(i).unwrap());   // once, on the shard
//!            timer every 1 s: rec.publish();
//! request:   rec.request_started();
//!            let _g = tracker.begin(InflightEntry::new(id, i, "openai", model));
//!            ... rec.record_request(&sample); rec.request_finished();
//! scrape:    let snap = registry.snapshot();                    // any thread
//!            render_prometheus(&snap, &mut body);  /  render_json_stats(&snap, &mut body);
//! ```
//!
//! # Locking
//!
//! The request path takes no lock. Each shard's counters are atomics with a
//! single writer (the shard's [`ShardRecorder`]), incremented with a relaxed
//! load and store, no read-modify-write instruction; scrapers read them with
//! relaxed loads, so counters are always live. The model table is a fixed
//! array of slots (a `OnceLock` name and a counter each) that only the owning
//! shard fills, publishing its length with a release store; the shard finds
//! known names in its own unshared hash map, so even a new name takes no lock.
//! Latency histograms are recorded into shard-local hdrhistograms (not
//! thread-safe, so behind the recorder's `RefCell`); [`ShardRecorder::publish`],
//! called by the shard from a timer (every second), copies them into one
//! `Mutex<Histogram>` slot per kind, which only publish and the scrape touch;
//! publish only `try_lock`s, so the shard never waits. Scraped histograms are
//! therefore up to one publish interval stale. The [`InflightTracker`] is a
//! `sharded_slab::Slab` plus per-shard lock-free slot arrays; see its module.
//!
//! # Memory per shard
//!
//! A `Histogram<u64>` from 1 µs to 1 hour holds 23,552 counters (184 KiB) at 3
//! significant digits and 3,328 (26 KiB) at 2. A shard keeps 6 (3 kinds,
//! local and published): 1.08 MiB at 3 digits (the default), 156 KiB at 2
//! ([`MetricsConfig::histogram_sigfig`]). Everything else is small: counters
//! and gauges 768 bytes, the 256-slot model table 8 KiB, the recorder's name
//! index up to 13 KiB, plus the model names themselves (at most 128 bytes
//! each, kept twice). A scrape allocates 3 merged histograms (552 KiB at 3
//! digits) for its duration. [`InflightTracker`]: 20 bytes of slot arrays
//! per unit of capacity plus the sharded-slab pages (about 160 bytes per
//! entry, grown on demand, kept for reuse).

#![warn(missing_docs)]

mod inflight;
mod json;
mod labels;
mod prometheus;
mod registry;
mod shard;

#[cfg(test)]
mod tests;

pub use inflight::{
    InflightEntry, InflightGuard, InflightTracker, InflightView, MAX_INFLIGHT_LABEL_BYTES,
    MAX_INFLIGHT_MODEL_BYTES,
};
pub use json::render_json_stats;
pub use labels::{
    status_class, status_slot, Latency, Route, STATUS_CLASSES, STATUS_CLASS_LABELS, STATUS_CODES,
    STATUS_SLOTS, STATUS_SLOT_LABELS,
};
pub use prometheus::{escape_label_value, render_prometheus, BUCKET_BOUNDS_US, QUANTILES};
pub use registry::{
    LatencySnapshot, MetricsConfig, MetricsRegistry, MetricsSnapshot, TrackerStats,
    DEFAULT_HISTOGRAM_SIGFIG, DEFAULT_MAX_MODELS, OTHER_LABEL,
};
pub use shard::{
    RequestSample, ShardGauges, ShardMetrics, ShardRecorder, HISTOGRAM_MAX_US, MAX_MODEL_NAME_BYTES,
};
