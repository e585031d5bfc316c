//! [`MetricsRegistry`]: every shard's metrics plus the global names, and the
//! merged [`MetricsSnapshot`] a scrape renders.

use std::collections::HashMap;
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::inflight::InflightTracker;
use super::labels::{Latency, Route, STATUS_CLASSES, STATUS_SLOTS};
use super::shard::{new_histogram, ShardGauges, ShardMetrics, ShardRecorder, Timing};

/// Default bound on distinct model names per shard.
pub const DEFAULT_MAX_MODELS: usize = 256;

/// Default histogram precision: 3 significant digits (0.1 % value error).
pub const DEFAULT_HISTOGRAM_SIGFIG: u8 = 3;

/// Label used for counts that have no name of their own (model table
/// overflow, out-of-range error class or provider indices).
pub const OTHER_LABEL: &str = "other";

/// Construction parameters of a [`MetricsRegistry`].
#[derive(Clone)]
pub struct MetricsConfig {
    /// Number of shards.
    pub shards: usize,
    /// Error class names; `RequestSample::error_class` indexes this.
    pub error_classes: Vec<String>,
    /// Provider names; `RequestSample::provider` indexes this.
    pub providers: Vec<String>,
    /// Distinct model names counted per shard before the rest go to "other".
    pub max_models: usize,
    /// hdrhistogram significant digits (1..=5). 3 costs 184 KiB per
    /// histogram, 2 costs 26 KiB; each shard keeps 6 (3 kinds, local and
    /// published).
    pub histogram_sigfig: u8,
    /// The in-flight tracker whose size and rejections are exported, if any.
    pub tracker: Option<Arc<InflightTracker>>,
}

impl MetricsConfig {
    /// Defaults for `shards` shards: no error classes, no providers,
    /// [`DEFAULT_MAX_MODELS`], [`DEFAULT_HISTOGRAM_SIGFIG`], no tracker.
    pub fn new(shards: usize) -> Self {
        MetricsConfig {
            shards,
            error_classes: Vec::new(),
            providers: Vec::new(),
            max_models: DEFAULT_MAX_MODELS,
            histogram_sigfig: DEFAULT_HISTOGRAM_SIGFIG,
            tracker: None,
        }
    }

    /// Sets the error class names.
    pub fn error_classes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.error_classes = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the provider names.
    pub fn providers<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.providers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the per-shard bound on distinct model names.
    pub fn max_models(mut self, max: usize) -> Self {
        self.max_models = max;
        self
    }

    /// Sets the histogram precision (clamped to 1..=5).
    pub fn histogram_sigfig(mut self, sigfig: u8) -> Self {
        self.histogram_sigfig = sigfig;
        self
    }

    /// Exports `tracker`'s size and rejections with the metrics.
    pub fn tracker(mut self, tracker: Arc<InflightTracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }
}

/// All shards' metrics and the global names. Create it once at startup,
/// share it as `Arc`, give each shard its [`ShardRecorder`], and call
/// [`snapshot`](Self::snapshot) from the scrape handler (any thread).
pub struct MetricsRegistry {
    shards: Vec<Arc<ShardMetrics>>,
    error_classes: Vec<String>,
    providers: Vec<String>,
    sigfig: u8,
    tracker: Option<Arc<InflightTracker>>,
}

impl MetricsRegistry {
    /// Builds the registry and every shard's [`ShardMetrics`].
    pub fn new(config: MetricsConfig) -> Arc<Self> {
        let sigfig = config.histogram_sigfig.clamp(1, 5);
        let shards = (0..config.shards)
            .map(|i| {
                Arc::new(ShardMetrics::new(
                    u16::try_from(i).unwrap_or(u16::MAX),
                    config.error_classes.len(),
                    config.providers.len(),
                    config.max_models,
                    sigfig,
                ))
            })
            .collect();
        Arc::new(MetricsRegistry {
            shards,
            error_classes: config.error_classes,
            providers: config.providers,
            sigfig,
            tracker: config.tracker,
        })
    }

    /// The unique recorder of shard `shard`: `None` if `shard` is out of range
    /// or its recorder was already taken. Call once per shard, on or before
    /// the shard's thread starts.
    pub fn recorder(&self, shard: usize) -> Option<ShardRecorder> {
        self.shards.get(shard)?.take_recorder(self.sigfig)
    }

    /// Every shard's metrics, in shard order.
    pub fn shards(&self) -> &[Arc<ShardMetrics>] {
        &self.shards
    }

    /// Shard `shard`'s metrics (for the gauge setters).
    pub fn shard(&self, shard: usize) -> Option<&Arc<ShardMetrics>> {
        self.shards.get(shard)
    }

    /// The error class names.
    pub fn error_classes(&self) -> &[String] {
        &self.error_classes
    }

    /// The provider names.
    pub fn providers(&self) -> &[String] {
        &self.providers
    }

    /// The attached in-flight tracker, if any.
    pub fn tracker(&self) -> Option<&Arc<InflightTracker>> {
        self.tracker.as_ref()
    }

    /// Merges every shard into one snapshot: counters summed (live values),
    /// histograms added (as of each shard's last publish), gauges per shard.
    ///
    /// Takes each shard's histogram snapshot lock in turn for the time of one
    /// hdrhistogram add (tens of microseconds at 3 digits); shards only
    /// `try_lock` it, so a scrape never stalls a shard.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut routes = [0u64; Route::COUNT];
        let mut status_classes = [0u64; STATUS_CLASSES];
        let mut status_codes = [0u64; STATUS_SLOTS];
        let mut errors = vec![0u64; self.error_classes.len() + 1];
        let mut providers = vec![0u64; self.providers.len() + 1];
        let mut models = Merger::default();
        let mut model_other = 0u64;
        let mut shards = Vec::with_capacity(self.shards.len());
        let mut latency: [Timing; Latency::COUNT] = std::array::from_fn(|_| Timing {
            hist: new_histogram(self.sigfig),
            sum_us: 0,
        });

        for s in &self.shards {
            let c = s.counter_values();
            add_into(&mut routes, &c.routes);
            add_into(&mut status_classes, &c.status_classes);
            add_into(&mut status_codes, &c.status_codes);
            add_into(&mut errors, &c.errors);
            add_into(&mut providers, &c.providers);
            s.for_each_model(|name, n| match name {
                Some(name) => models.add(name, n),
                None => model_other += n,
            });
            shards.push(s.gauges());
            for kind in Latency::ALL {
                s.merge_published(kind, &mut latency[kind.index()]);
            }
        }

        let mut models = models.finish();
        models.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut models = Merger::from(models);
        if model_other > 0 {
            models.add(OTHER_LABEL, model_other);
        }

        MetricsSnapshot {
            shards,
            routes,
            status_classes,
            status_codes,
            errors: named(&self.error_classes, &errors),
            providers: named(&self.providers, &providers),
            models: models.finish(),
            latency: latency.map(|t| LatencySnapshot {
                hist: t.hist,
                sum_us: t.sum_us,
            }),
            tracker: self.tracker.as_ref().map(|t| TrackerStats {
                tracked: t.len() as u64,
                capacity: t.capacity() as u64,
                rejected: t.rejected(),
            }),
        }
    }
}

fn add_into(acc: &mut [u64], v: &[u64]) {
    for (a, b) in acc.iter_mut().zip(v) {
        *a = a.wrapping_add(*b);
    }
}

/// Pairs names with counts (the trailing count is "other"), dropping zero
/// "other" and merging duplicate names so every label set is unique.
fn named(names: &[String], counts: &[u64]) -> Vec<(String, u64)> {
    let mut m = Merger::default();
    for (name, &n) in names.iter().zip(counts) {
        m.add(name, n);
    }
    let other = counts.last().copied().unwrap_or(0);
    if other > 0 {
        m.add(OTHER_LABEL, other);
    }
    m.finish()
}

/// Name -> count in first-seen order with duplicates summed.
#[derive(Default)]
struct Merger {
    index: HashMap<String, usize>,
    items: Vec<(String, u64)>,
}

impl Merger {
    fn add(&mut self, name: &str, n: u64) {
        match self.index.get(name) {
            Some(&i) => self.items[i].1 += n,
            None => {
                self.index.insert(name.to_owned(), self.items.len());
                self.items.push((name.to_owned(), n));
            }
        }
    }

    fn finish(self) -> Vec<(String, u64)> {
        self.items
    }
}

impl From<Vec<(String, u64)>> for Merger {
    fn from(items: Vec<(String, u64)>) -> Self {
        let index = items
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        Merger { index, items }
    }
}

/// A merged latency histogram (microseconds) and the exact sum of its values.
#[derive(Clone)]
pub struct LatencySnapshot {
    /// The merged histogram, values in microseconds.
    pub hist: Histogram<u64>,
    /// Exact sum of the recorded values in microseconds.
    pub sum_us: u64,
}

impl LatencySnapshot {
    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0.0..=1.0) in microseconds, or `None` when
    /// nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q))
    }

    /// Mean in microseconds from the exact sum, or `None` when empty.
    pub fn mean_us(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_us as f64 / n as f64)
    }
}

/// Size of the in-flight tracker at snapshot time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Requests currently tracked.
    pub tracked: u64,
    /// The tracker's capacity.
    pub capacity: u64,
    /// `begin` calls refused because the tracker was full, since start.
    pub rejected: u64,
}

/// Every shard merged at one moment; what the renderers print.
#[derive(Clone)]
pub struct MetricsSnapshot {
    /// Gauges of each shard, in shard order.
    pub shards: Vec<ShardGauges>,
    /// Requests per route, indexed by [`Route::index`].
    pub routes: [u64; Route::COUNT],
    /// Responses per status class, indexed as
    /// [`STATUS_CLASS_LABELS`](super::STATUS_CLASS_LABELS).
    pub status_classes: [u64; STATUS_CLASSES],
    /// Responses per exact status slot, indexed as
    /// [`STATUS_SLOT_LABELS`](super::STATUS_SLOT_LABELS).
    pub status_codes: [u64; STATUS_SLOTS],
    /// Errors per class name (plus "other" if any index was out of range).
    pub errors: Vec<(String, u64)>,
    /// Upstream requests per provider name (plus "other" likewise).
    pub providers: Vec<(String, u64)>,
    /// Requests per model name, most requested first, plus "other" for the
    /// names that overflowed a shard's table. Names are unique.
    pub models: Vec<(String, u64)>,
    /// Latency histograms, indexed by [`Latency::index`].
    pub latency: [LatencySnapshot; Latency::COUNT],
    /// In-flight tracker size, if a tracker is attached.
    pub tracker: Option<TrackerStats>,
}

impl MetricsSnapshot {
    /// Requests counted for `route`.
    pub fn requests(&self, route: Route) -> u64 {
        self.routes[route.index()]
    }

    /// The merged histogram of `kind`.
    pub fn latency(&self, kind: Latency) -> &LatencySnapshot {
        &self.latency[kind.index()]
    }

    /// The count of model `name` (use [`OTHER_LABEL`] for the overflow).
    pub fn model(&self, name: &str) -> u64 {
        self.models
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    }

    /// Sum of every shard's gauges (the `shard` field is 0).
    pub fn gauge_totals(&self) -> ShardGauges {
        self.shards.iter().fold(ShardGauges::default(), |mut t, g| {
            t.open_connections += g.open_connections;
            t.inflight_requests += g.inflight_requests;
            t.upstream_idle_connections += g.upstream_idle_connections;
            t.log_ring_used_bytes += g.log_ring_used_bytes;
            t.log_ring_capacity_bytes += g.log_ring_capacity_bytes;
            t.log_records_dropped += g.log_records_dropped;
            t
        })
    }
}
