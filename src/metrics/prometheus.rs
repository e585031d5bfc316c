//! Prometheus text exposition format 0.0.4.
//!
//! Families (all prefixed `shardgate_`):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `requests_total` | counter | `route` |
//! | `responses_total` | counter | `code` (fixed set + `other`) |
//! | `responses_by_class_total` | counter | `class` (`1xx`..`5xx`, `other`) |
//! | `errors_total` | counter | `class` |
//! | `provider_requests_total` | counter | `provider` |
//! | `model_requests_total` | counter | `model` |
//! | `open_connections`, `inflight_requests`, `upstream_idle_connections`, `log_ring_used_bytes`, `log_ring_capacity_bytes` | gauge | `shard` |
//! | `log_records_dropped_total` | counter | `shard` |
//! | `request_duration_seconds`, `upstream_duration_seconds`, `time_to_first_token_seconds` | histogram | `le` |
//! | `request_duration_quantiles_seconds`, `upstream_duration_quantiles_seconds`, `time_to_first_token_quantiles_seconds` | summary | `quantile` (0.5, 0.9, 0.99, 0.999; NaN when empty), from the same hdrhistograms |
//! | `inflight_tracked`, `inflight_tracker_capacity` | gauge | |
//! | `inflight_tracker_rejected_total` | counter | |
//!
//! Histogram buckets are fixed ([`BUCKET_BOUNDS_US`], 0.5 ms .. 60 s) and
//! computed from the hdrhistogram counts, so a bucket boundary is exact to the
//! histogram's precision (0.1 % at 3 significant digits). `_sum` is exact.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::labels::{Latency, Route, STATUS_CLASS_LABELS, STATUS_SLOT_LABELS};
use super::registry::MetricsSnapshot;

/// Upper bounds of the Prometheus histogram buckets in microseconds
/// (`+Inf` is implied).
pub const BUCKET_BOUNDS_US: [u64; 17] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 20_000_000, 30_000_000, 60_000_000,
];

/// The `le` label values of [`BUCKET_BOUNDS_US`], in seconds.
const BUCKET_LABELS: [&str; 17] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "20", "30", "60",
];

/// The quantiles exported as gauges and in the JSON stats.
pub const QUANTILES: [(f64, &str); 4] =
    [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")];

/// Appends `snapshot` to `out` in the Prometheus text format 0.0.4
/// (`Content-Type: text/plain; version=0.0.4; charset=utf-8`).
pub fn render_prometheus(snapshot: &MetricsSnapshot, out: &mut String) {
    let s = snapshot;

    header(
        out,
        "shardgate_requests_total",
        "counter",
        "Requests received, by route.",
    );
    for r in Route::ALL {
        sample(
            out,
            "shardgate_requests_total",
            &[("route", r.as_str())],
            s.requests(r),
        );
    }

    header(
        out,
        "shardgate_responses_total",
        "counter",
        "Responses sent, by HTTP status code.",
    );
    for (label, &n) in STATUS_SLOT_LABELS.iter().zip(&s.status_codes) {
        sample(out, "shardgate_responses_total", &[("code", label)], n);
    }

    header(
        out,
        "shardgate_responses_by_class_total",
        "counter",
        "Responses sent, by HTTP status class.",
    );
    for (label, &n) in STATUS_CLASS_LABELS.iter().zip(&s.status_classes) {
        sample(
            out,
            "shardgate_responses_by_class_total",
            &[("class", label)],
            n,
        );
    }

    named_counter(
        out,
        "shardgate_errors_total",
        "Errors, by error class.",
        "class",
        &s.errors,
    );
    named_counter(
        out,
        "shardgate_provider_requests_total",
        "Requests sent upstream, by provider.",
        "provider",
        &s.providers,
    );
    named_counter(
        out,
        "shardgate_model_requests_total",
        "Requests, by model (\"other\" once a shard's model table is full).",
        "model",
        &s.models,
    );

    type GaugeFn = fn(&super::ShardGauges) -> i64;
    let gauges: [(&str, &str, &str, GaugeFn); 6] = [
        (
            "shardgate_open_connections",
            "gauge",
            "Open client connections.",
            |g| g.open_connections,
        ),
        (
            "shardgate_inflight_requests",
            "gauge",
            "Requests being served.",
            |g| g.inflight_requests,
        ),
        (
            "shardgate_upstream_idle_connections",
            "gauge",
            "Idle connections in the upstream pool.",
            |g| g.upstream_idle_connections as i64,
        ),
        (
            "shardgate_log_ring_used_bytes",
            "gauge",
            "Bytes queued in the log ring.",
            |g| g.log_ring_used_bytes as i64,
        ),
        (
            "shardgate_log_ring_capacity_bytes",
            "gauge",
            "Capacity of the log ring.",
            |g| g.log_ring_capacity_bytes as i64,
        ),
        (
            "shardgate_log_records_dropped_total",
            "counter",
            "Log records dropped because the log ring was full.",
            |g| g.log_records_dropped as i64,
        ),
    ];
    let mut shard_label = String::new();
    for (name, kind, help, get) in gauges {
        header(out, name, kind, help);
        for g in &s.shards {
            shard_label.clear();
            let _ = write!(shard_label, "{}", g.shard);
            sample(out, name, &[("shard", &shard_label)], get(g));
        }
    }

    for kind in Latency::ALL {
        let l = s.latency(kind);
        histogram(out, kind, &l.hist, l.sum_us);
    }
    for kind in Latency::ALL {
        let l = s.latency(kind);
        let base = kind.prometheus_name().trim_end_matches("_seconds");
        let name = format!("{base}_quantiles_seconds");
        header(
            out,
            &name,
            "summary",
            "Quantiles of the histogram of the same base name, since start (NaN when empty).",
        );
        for (q, label) in QUANTILES {
            start_sample(out, &name, &[("quantile", label)]);
            match l.quantile_us(q) {
                Some(us) => write_seconds(out, us),
                None => out.push_str("NaN"),
            }
            out.push('\n');
        }
        start_sample(out, &format!("{name}_sum"), &[]);
        write_seconds(out, l.sum_us);
        out.push('\n');
        sample(out, &format!("{name}_count"), &[], l.count());
    }

    if let Some(t) = &s.tracker {
        header(
            out,
            "shardgate_inflight_tracked",
            "gauge",
            "Requests in the in-flight tracker.",
        );
        sample(out, "shardgate_inflight_tracked", &[], t.tracked);
        header(
            out,
            "shardgate_inflight_tracker_capacity",
            "gauge",
            "Capacity of the in-flight tracker.",
        );
        sample(out, "shardgate_inflight_tracker_capacity", &[], t.capacity);
        header(
            out,
            "shardgate_inflight_tracker_rejected_total",
            "counter",
            "Requests not tracked because the in-flight tracker was full (still served).",
        );
        sample(
            out,
            "shardgate_inflight_tracker_rejected_total",
            &[],
            t.rejected,
        );
    }
}

fn named_counter(out: &mut String, name: &str, help: &str, label: &str, items: &[(String, u64)]) {
    header(out, name, "counter", help);
    for (v, n) in items {
        sample(out, name, &[(label, v)], *n);
    }
}

fn histogram(out: &mut String, kind: Latency, h: &Histogram<u64>, sum_us: u64) {
    let name = kind.prometheus_name();
    header(out, name, "histogram", kind.help());
    let mut buckets = [0u64; BUCKET_BOUNDS_US.len() + 1];
    for v in h.iter_recorded() {
        // Bucket by the lowest value equivalent to the recorded one, so a
        // value recorded exactly on a bound lands at or below it.
        let low = h.lowest_equivalent(v.value_iterated_to());
        let i = BUCKET_BOUNDS_US.partition_point(|&b| b < low);
        buckets[i] += v.count_at_value();
    }
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, le) in BUCKET_LABELS.iter().enumerate() {
        cumulative += buckets[i];
        sample(out, &bucket, &[("le", le)], cumulative);
    }
    sample(out, &bucket, &[("le", "+Inf")], h.len());
    start_sample(out, &format!("{name}_sum"), &[]);
    write_seconds(out, sum_us);
    out.push('\n');
    sample(out, &format!("{name}_count"), &[], h.len());
}

/// Writes `# HELP` and `# TYPE` lines. HELP text escapes `\` and newline.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

fn start_sample(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    start_sample(out, name, labels);
    let _ = writeln!(out, "{value}");
}

/// Appends `v` as a Prometheus label value body: `\` -> `\\`, `"` -> `\"`,
/// newline -> `\n`.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes `us` microseconds as decimal seconds without float rounding noise.
fn write_seconds(out: &mut String, us: u64) {
    let (secs, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        let _ = write!(out, "{secs}");
    } else {
        let mut f = format!("{frac:06}");
        while f.ends_with('0') {
            f.pop();
        }
        let _ = write!(out, "{secs}.{f}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format() {
        let mut s = String::new();
        for us in [0, 1, 500, 1_000_000, 1_500_000, 60_000_123] {
            s.clear();
            write_seconds(&mut s, us);
            assert_eq!(s.parse::<f64>().unwrap(), us as f64 / 1e6, "{s}");
        }
        s.clear();
        write_seconds(&mut s, 2_500_000);
        assert_eq!(s, "2.5");
    }

    #[test]
    fn bucket_labels_match_bounds() {
        for (b, l) in BUCKET_BOUNDS_US.iter().zip(BUCKET_LABELS) {
            let mut s = String::new();
            write_seconds(&mut s, *b);
            assert_eq!(s, l);
        }
    }

    #[test]
    fn label_escaping() {
        let mut s = String::new();
        escape_label_value(&mut s, "a\\b\"c\nd");
        assert_eq!(s, "a\\\\b\\\"c\\nd");
    }
}
