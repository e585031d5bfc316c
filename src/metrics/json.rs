//! The JSON stats document (`render_json_stats`) and the small JSON writing
//! helpers the in-flight tracker shares.
//!
//! Shape (latencies in microseconds, quantiles `null` when a histogram is
//! empty; counters since start; histograms as of each shard's last publish):
//!
//! ```json
//! {
//!   "shards": [{"shard": 0, "open_connections": 3, "inflight_requests": 1,
//!               "upstream_idle_connections": 4, "log_ring_used_bytes": 0,
//!               "log_ring_capacity_bytes": 1048576, "log_records_dropped": 0}],
//!   "gauges": {"open_connections": 3, "inflight_requests": 1, ...totals...},
//!   "counters": {
//!     "requests_by_route": {"chat_completions": 10, ...},
//!     "responses_by_status": {"200": 9, ..., "other": 0},
//!     "responses_by_class": {"1xx": 0, "2xx": 9, ...},
//!     "errors": {"upstream_timeout": 1},
//!     "providers": {"openai": 10},
//!     "models": {"gpt-4o": 10}
//!   },
//!   "latency_us": {
//!     "total": {"count": 10, "sum": 123456, "mean": 12345.6, "min": 900,
//!               "max": 50000, "p50": 10000, "p90": 20000, "p99": 50000,
//!               "p999": 50000},
//!     "upstream": {...}, "ttft": {...}
//!   },
//!   "inflight_tracker": {"tracked": 1, "capacity": 4096, "rejected": 0}
//! }
//! ```

use std::fmt::Write;

use super::labels::{Latency, Route, STATUS_CLASS_LABELS, STATUS_SLOT_LABELS};
use super::registry::{LatencySnapshot, MetricsSnapshot};
use super::shard::ShardGauges;

/// Appends `snapshot` to `out` as one JSON object (schema in the module
/// docs).
pub fn render_json_stats(snapshot: &MetricsSnapshot, out: &mut String) {
    let s = snapshot;
    out.push_str("{\"shards\":[");
    for (i, g) in s.shards.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"shard\":{},", g.shard);
        gauges(out, g);
        out.push('}');
    }
    out.push_str("],\"gauges\":{");
    gauges(out, &s.gauge_totals());

    out.push_str("},\"counters\":{\"requests_by_route\":");
    object(out, Route::ALL.iter().map(|r| (r.as_str(), s.requests(*r))));
    out.push_str(",\"responses_by_status\":");
    object(
        out,
        STATUS_SLOT_LABELS
            .iter()
            .copied()
            .zip(s.status_codes.iter().copied()),
    );
    out.push_str(",\"responses_by_class\":");
    object(
        out,
        STATUS_CLASS_LABELS
            .iter()
            .copied()
            .zip(s.status_classes.iter().copied()),
    );
    out.push_str(",\"errors\":");
    object(out, s.errors.iter().map(|(k, v)| (k.as_str(), *v)));
    out.push_str(",\"providers\":");
    object(out, s.providers.iter().map(|(k, v)| (k.as_str(), *v)));
    out.push_str(",\"models\":");
    object(out, s.models.iter().map(|(k, v)| (k.as_str(), *v)));

    out.push_str("},\"latency_us\":{");
    for (i, kind) in Latency::ALL.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, kind.json_key());
        out.push(':');
        latency(out, s.latency(*kind));
    }
    out.push_str("},\"inflight_tracker\":");
    match &s.tracker {
        Some(t) => {
            let _ = write!(
                out,
                "{{\"tracked\":{},\"capacity\":{},\"rejected\":{}}}",
                t.tracked, t.capacity, t.rejected
            );
        }
        None => out.push_str("null"),
    }
    out.push('}');
}

fn gauges(out: &mut String, g: &ShardGauges) {
    let _ = write!(
        out,
        "\"open_connections\":{},\"inflight_requests\":{},\"upstream_idle_connections\":{},\
         \"log_ring_used_bytes\":{},\"log_ring_capacity_bytes\":{},\"log_records_dropped\":{}",
        g.open_connections,
        g.inflight_requests,
        g.upstream_idle_connections,
        g.log_ring_used_bytes,
        g.log_ring_capacity_bytes,
        g.log_records_dropped
    );
}

fn latency(out: &mut String, l: &LatencySnapshot) {
    let _ = write!(
        out,
        "{{\"count\":{},\"sum\":{},\"mean\":",
        l.count(),
        l.sum_us
    );
    match l.mean_us() {
        Some(m) => {
            let _ = write!(out, "{m:.1}");
        }
        None => out.push_str("null"),
    }
    let empty = l.hist.is_empty();
    for (key, v) in [("min", l.hist.min()), ("max", l.hist.max())] {
        let _ = write!(out, ",\"{key}\":");
        opt_u64(out, (!empty).then_some(v));
    }
    for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        let _ = write!(out, ",\"{key}\":");
        opt_u64(out, l.quantile_us(q));
    }
    out.push('}');
}

fn opt_u64(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

fn object<'a>(out: &mut String, items: impl Iterator<Item = (&'a str, u64)>) {
    out.push('{');
    for (i, (k, v)) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, k);
        let _ = write!(out, ":{v}");
    }
    out.push('}');
}

/// Appends `s` as a JSON string literal (quotes included), escaping `"`, `\`
/// and control characters.
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn string_escapes() {
        let mut out = String::new();
        let input = "a\"b\\c\nd\u{1}é\u{7f}";
        super::string(&mut out, input);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, input);
    }
}
