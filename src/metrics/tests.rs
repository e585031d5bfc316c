use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread;

use super::*;

fn registry(shards: usize) -> Arc<MetricsRegistry> {
    MetricsRegistry::new(
        MetricsConfig::new(shards)
            .error_classes(["upstream_timeout", "bad_request", "no_credential"])
            .providers(["openai", "anthropic", "gemini"]),
    )
}

/// Records `n` requests of a fixed mix on `rec`, latencies 1..=n ms.
fn record_mix(rec: &ShardRecorder, n: u64) {
    for i in 1..=n {
        let mut s = RequestSample::new(Route::ChatCompletions, 200, i * 1000);
        s.provider = Some(0);
        s.model = Some("gpt-4o");
        s.upstream_us = Some(i * 900);
        s.first_token_us = Some(i * 100);
        rec.record_request(&s);
        let mut e = RequestSample::new(Route::Messages, 504, 2_000_000);
        e.error_class = Some(0);
        e.provider = Some(1);
        e.model = Some("claude-sonnet");
        rec.record_request(&e);
    }
}

#[test]
fn counters_merge_across_shards() {
    let reg = registry(2);
    thread::scope(|s| {
        for i in 0..2 {
            let rec = reg.recorder(i).expect("recorder");
            s.spawn(move || {
                rec.connection_opened();
                rec.request_started();
                record_mix(&rec, 1000);
                rec.count_status(201); // "other" slot, 2xx class
                rec.count_error(200); // out of range -> "other"
                rec.count_provider(7); // out of range -> "other"
                assert!(rec.publish());
            });
        }
    });
    let snap = reg.snapshot();
    assert_eq!(snap.requests(Route::ChatCompletions), 2000);
    assert_eq!(snap.requests(Route::Messages), 2000);
    assert_eq!(snap.requests(Route::Health), 0);
    assert_eq!(snap.status_codes[status_slot(200)], 2000);
    assert_eq!(snap.status_codes[status_slot(504)], 2000);
    assert_eq!(snap.status_codes[STATUS_SLOTS - 1], 2);
    assert_eq!(snap.status_classes[1], 2002);
    assert_eq!(snap.status_classes[4], 2000);
    let errors: HashMap<_, _> = snap.errors.iter().cloned().collect();
    assert_eq!(errors["upstream_timeout"], 2000);
    assert_eq!(errors["bad_request"], 0);
    assert_eq!(errors[OTHER_LABEL], 2);
    let providers: HashMap<_, _> = snap.providers.iter().cloned().collect();
    assert_eq!(providers["openai"], 2000);
    assert_eq!(providers["anthropic"], 2000);
    assert_eq!(providers[OTHER_LABEL], 2);
    assert_eq!(snap.model("gpt-4o"), 2000);
    assert_eq!(snap.model("claude-sonnet"), 2000);
    assert_eq!(snap.model(OTHER_LABEL), 0);
    assert_eq!(snap.shards.len(), 2);
    let totals = snap.gauge_totals();
    assert_eq!(totals.open_connections, 2);
    assert_eq!(totals.inflight_requests, 2);
    assert_eq!(snap.latency(Latency::Total).count(), 4000);
    assert_eq!(snap.latency(Latency::Upstream).count(), 2000);
    assert_eq!(snap.latency(Latency::FirstToken).count(), 2000);
}

#[test]
fn recorder_is_unique_per_shard() {
    let reg = registry(2);
    assert!(reg.recorder(0).is_some());
    assert!(reg.recorder(0).is_none());
    assert!(reg.recorder(1).is_some());
    assert!(reg.recorder(2).is_none());
}

#[test]
fn histograms_publish_snapshot_merge() {
    let reg = registry(2);
    let r0 = reg.recorder(0).unwrap();
    let r1 = reg.recorder(1).unwrap();
    // Shard 0: 1..=10_000 µs; shard 1: 10_001..=20_000 µs.
    for v in 1..=10_000u64 {
        r0.record_latency(Latency::Total, v);
        r1.record_latency(Latency::Total, v + 10_000);
    }
    // Not published yet: scrapers see nothing (staleness up to one interval).
    assert_eq!(reg.snapshot().latency(Latency::Total).count(), 0);

    assert!(r0.publish());
    let snap = reg.snapshot();
    assert_eq!(snap.latency(Latency::Total).count(), 10_000);

    assert!(r1.publish());
    let snap = reg.snapshot();
    let l = snap.latency(Latency::Total);
    assert_eq!(l.count(), 20_000);
    assert_eq!(l.sum_us, (1..=20_000u64).sum::<u64>());
    let close = |got: u64, want: f64| (got as f64 - want).abs() / want < 0.002;
    let p50 = l.quantile_us(0.5).unwrap();
    let p90 = l.quantile_us(0.9).unwrap();
    let p99 = l.quantile_us(0.99).unwrap();
    let p999 = l.quantile_us(0.999).unwrap();
    assert!(close(p50, 10_000.0), "p50 {p50}");
    assert!(close(p90, 18_000.0), "p90 {p90}");
    assert!(close(p99, 19_800.0), "p99 {p99}");
    assert!(close(p999, 19_980.0), "p999 {p999}");
    assert!(p50 <= p90 && p90 <= p99 && p99 <= p999);
    assert!((l.mean_us().unwrap() - 10_000.5).abs() < 1e-9);
    assert_eq!(snap.latency(Latency::Upstream).quantile_us(0.5), None);

    // Publishing again is cumulative, not additive.
    r0.record_latency(Latency::Total, 5);
    assert!(r0.publish());
    assert!(r0.publish());
    assert_eq!(reg.snapshot().latency(Latency::Total).count(), 20_001);

    // Over one hour clamps in the histogram, the sum stays exact.
    r0.record_latency(Latency::Upstream, 10 * HISTOGRAM_MAX_US);
    r0.publish();
    let snap = reg.snapshot();
    let up = snap.latency(Latency::Upstream);
    assert_eq!(up.sum_us, 10 * HISTOGRAM_MAX_US);
    assert!(up.hist.max() >= HISTOGRAM_MAX_US);
}

#[test]
fn publish_never_waits_for_a_scrape() {
    let reg = registry(1);
    let rec = reg.recorder(0).unwrap();
    rec.record_latency(Latency::Total, 100);
    let shard = Arc::clone(&reg.shards()[0]);
    // A "scrape" holding the published slot: merge_published takes the lock,
    // so hold it through the same path from another thread.
    let held = std::sync::Barrier::new(2);
    let release = std::sync::Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            let mut t = shard::Timing {
                hist: shard::new_histogram(3),
                sum_us: 0,
            };
            shard.with_published_locked(Latency::Total, || {
                held.wait();
                release.wait();
            });
            shard.merge_published(Latency::Total, &mut t);
        });
        held.wait();
        assert!(!rec.publish(), "slot busy: publish must skip, not block");
        release.wait();
    });
    assert_eq!(reg.snapshot().latency(Latency::Total).count(), 0);
    assert!(rec.publish());
    assert_eq!(reg.snapshot().latency(Latency::Total).count(), 1);
}

#[test]
fn model_table_overflows_into_other() {
    let reg = MetricsRegistry::new(MetricsConfig::new(2).max_models(4));
    let r0 = reg.recorder(0).unwrap();
    let r1 = reg.recorder(1).unwrap();
    for i in 0..10 {
        r0.count_model(&format!("m{i}"));
        r0.count_model(&format!("m{i}"));
    }
    r1.count_model("m9");
    r1.count_model("m0");
    r1.count_model("other"); // a real model named "other" merges with the overflow
    let long = "é".repeat(200);
    r1.count_model(&long);
    r1.count_model(&long[..MAX_MODEL_NAME_BYTES]); // same name after the cut

    let snap = reg.snapshot();
    for i in 0..4 {
        let want = if i == 0 { 3 } else { 2 };
        assert_eq!(snap.model(&format!("m{i}")), want, "m{i}");
    }
    assert_eq!(snap.model("m9"), 1, "m9 has a slot on shard 1 only");
    assert_eq!(snap.model(OTHER_LABEL), 6 * 2 + 1);
    assert_eq!(snap.model(&long[..MAX_MODEL_NAME_BYTES]), 2);
    let names: HashSet<_> = snap.models.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), snap.models.len(), "names are unique");
    // Most requested first.
    assert!(snap.models.windows(2).take(3).all(|w| w[0].1 >= w[1].1));
}

fn busy_snapshot() -> (Arc<MetricsRegistry>, MetricsSnapshot) {
    let tracker = Arc::new(InflightTracker::new(8, 2));
    let reg = MetricsRegistry::new(
        MetricsConfig::new(2)
            .error_classes(["timeout", "weird \"class\"\\"])
            .providers(["openai", "anthropic"])
            .tracker(Arc::clone(&tracker)),
    );
    let r0 = reg.recorder(0).unwrap();
    let r1 = reg.recorder(1).unwrap();
    record_mix(&r0, 200);
    record_mix(&r1, 100);
    r1.count_model("evil\"model\\with\nnewline");
    r1.count_error(1);
    r1.connection_opened();
    reg.shard(1).unwrap().set_upstream_idle(3);
    reg.shard(0).unwrap().set_log_ring_usage(1024, 1 << 20);
    reg.shard(0).unwrap().set_log_dropped(7);
    r0.publish();
    r1.publish();
    let _g = tracker.begin(InflightEntry::new(1, 0, "openai", "gpt-4o"));
    let snap = reg.snapshot();
    (reg, snap)
}

/// A minimal check of the text format: every line is a HELP/TYPE comment or
/// `name{labels} value`; every sample belongs to a family declared by TYPE;
/// no series repeats. Returns the samples as `series -> value`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    fn is_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap();
            let name = parts.next().expect("metric name");
            assert!(is_name(name), "{line}");
            match kw {
                "HELP" => assert!(parts.next().is_some(), "{line}"),
                "TYPE" => {
                    let t = parts.next().unwrap();
                    assert!(["counter", "gauge", "histogram", "summary"].contains(&t));
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "dup {name}"
                    );
                }
                _ => panic!("unexpected comment {line}"),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).expect(line);
        let name = &line[..name_end];
        assert!(is_name(name), "bad name: {line}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                // label name
                let start = chars.peek().unwrap().0;
                let mut end = start;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        end = i;
                        break;
                    }
                }
                let lname = &r[start..end];
                assert!(is_name(lname), "bad label name {lname:?} in {line}");
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect(line).1 {
                        '\\' => match chars.next().expect(line).1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => panic!("bad escape \\{c} in {line}"),
                        },
                        '"' => break,
                        '\n' => panic!("raw newline"),
                        c => value.push(c),
                    }
                }
                labels.push((lname.to_owned(), value));
                match chars.next().expect(line) {
                    (_, ',') => continue,
                    (i, '}') => {
                        rest = &r[i + 1..];
                        break;
                    }
                    (_, c) => panic!("unexpected {c} in {line}"),
                }
            }
        }
        let value = rest.strip_prefix(' ').expect(line);
        let v: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let family = [
            name,
            name.trim_end_matches("_bucket"),
            name.trim_end_matches("_sum"),
        ]
        .into_iter()
        .chain([name.trim_end_matches("_count")])
        .find(|f| types.contains_key(*f))
        .unwrap_or_else(|| panic!("no TYPE for {name}"));
        if types[family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        let key = format!("{name}{labels:?}");
        assert!(samples.insert(key, v).is_none(), "duplicate series: {line}");
    }
    samples
}

#[test]
fn prometheus_text_parses() {
    let (_reg, snap) = busy_snapshot();
    let mut out = String::new();
    render_prometheus(&snap, &mut out);
    let samples = parse_prometheus(&out);
    let get = |k: &str| *samples.get(k).unwrap_or_else(|| panic!("missing {k}"));
    assert_eq!(
        get(r#"shardgate_requests_total[("route", "chat_completions")]"#),
        300.0
    );
    assert_eq!(
        get(r#"shardgate_model_requests_total[("model", "evil\"model\\with\nnewline")]"#),
        1.0
    );
    assert_eq!(
        get(r#"shardgate_errors_total[("class", "weird \"class\"\\")]"#),
        1.0
    );
    assert_eq!(
        get(r#"shardgate_upstream_idle_connections[("shard", "1")]"#),
        3.0
    );
    assert_eq!(
        get(r#"shardgate_log_records_dropped_total[("shard", "0")]"#),
        7.0
    );
    assert_eq!(get("shardgate_inflight_tracked[]"), 1.0);
    // Histogram: cumulative buckets, +Inf == count, sum exact.
    let count = get("shardgate_request_duration_seconds_count[]");
    assert_eq!(count, 600.0);
    assert_eq!(
        get(r#"shardgate_request_duration_seconds_bucket[("le", "+Inf")]"#),
        count
    );
    let mut prev = 0.0;
    for le in [
        "0.0005", "0.001", "0.0025", "0.01", "0.1", "0.25", "1", "2.5", "60",
    ] {
        let b = get(&format!(
            r#"shardgate_request_duration_seconds_bucket[("le", "{le}")]"#
        ));
        assert!(b >= prev, "buckets cumulative at {le}");
        prev = b;
    }
    // 300 OK requests at 1..=200 ms and 1..=100 ms; 300 errors at 2 s.
    assert_eq!(
        get(r#"shardgate_request_duration_seconds_bucket[("le", "0.0005")]"#),
        0.0
    );
    assert_eq!(
        get(r#"shardgate_request_duration_seconds_bucket[("le", "0.001")]"#),
        2.0
    );
    assert_eq!(
        get(r#"shardgate_request_duration_seconds_bucket[("le", "0.1")]"#),
        200.0
    );
    assert_eq!(
        get(r#"shardgate_request_duration_seconds_bucket[("le", "1")]"#),
        300.0
    );
    assert_eq!(
        get(r#"shardgate_request_duration_seconds_bucket[("le", "2.5")]"#),
        600.0
    );
    let want_sum =
        ((1..=200u64).sum::<u64>() + (1..=100u64).sum::<u64>()) as f64 / 1000.0 + 300.0 * 2.0;
    assert!((get("shardgate_request_duration_seconds_sum[]") - want_sum).abs() < 1e-6);
    let p50 = get(r#"shardgate_request_duration_quantiles_seconds[("quantile", "0.5")]"#);
    assert!(p50 > 0.09 && p50 < 0.21, "p50 {p50}");
    // Empty histogram quantiles are NaN, its buckets 0.
    let snap = registry(1).snapshot();
    out.clear();
    render_prometheus(&snap, &mut out);
    let samples = parse_prometheus(&out);
    assert!(
        samples[r#"shardgate_upstream_duration_quantiles_seconds[("quantile", "0.99")]"#].is_nan()
    );
    assert_eq!(samples["shardgate_upstream_duration_seconds_count[]"], 0.0);
}

#[test]
fn promtool_check_metrics() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let (_reg, snap) = busy_snapshot();
    let mut out = String::new();
    render_prometheus(&snap, &mut out);
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("NOTICE: promtool not on PATH ({e}); skipping `promtool check metrics`");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(out.as_bytes())
        .unwrap();
    let res = child.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        res.status.success() && msg.trim().is_empty(),
        "promtool: {msg}\n---\n{out}"
    );
    println!("promtool check metrics: OK");
}

#[test]
fn json_stats_valid() {
    let (_reg, snap) = busy_snapshot();
    let mut out = String::new();
    render_json_stats(&snap, &mut out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["counters"]["requests_by_route"]["chat_completions"], 300);
    assert_eq!(v["counters"]["responses_by_status"]["504"], 300);
    assert_eq!(v["counters"]["responses_by_class"]["2xx"], 300);
    assert_eq!(v["counters"]["models"]["evil\"model\\with\nnewline"], 1);
    assert_eq!(v["counters"]["errors"]["timeout"], 300);
    assert_eq!(v["counters"]["providers"]["anthropic"], 300);
    assert_eq!(v["shards"][1]["upstream_idle_connections"], 3);
    assert_eq!(v["gauges"]["open_connections"], 1);
    assert_eq!(v["gauges"]["log_records_dropped"], 7);
    let total = &v["latency_us"]["total"];
    assert_eq!(total["count"], 600);
    let p = |k: &str| total[k].as_u64().unwrap();
    assert!(p("min") <= p("p50") && p("p50") <= p("p90"));
    assert!(p("p90") <= p("p99") && p("p99") <= p("p999") && p("p999") <= p("max"));
    assert!((1_990_000..=2_010_000).contains(&p("p99")));
    assert_eq!(v["latency_us"]["ttft"]["count"], 300);
    assert_eq!(v["inflight_tracker"]["tracked"], 1);
    assert_eq!(v["inflight_tracker"]["capacity"], 8);

    let empty = registry(1).snapshot();
    out.clear();
    render_json_stats(&empty, &mut out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["latency_us"]["upstream"]["p50"].is_null());
    assert!(v["inflight_tracker"].is_null());
}

#[test]
fn histogram_memory() {
    for (sigfig, bytes) in [(3u8, 23_552 * 8), (2, 3_328 * 8)] {
        let h = shard::new_histogram(sigfig);
        assert_eq!(h.distinct_values() * 8, bytes, "sigfig {sigfig}");
    }
}

#[test]
fn tracker_begin_drop_and_list() {
    let t = InflightTracker::new(4, 1);
    assert_eq!(t.capacity(), 4);
    let g1 = t
        .begin(
            InflightEntry::new(0xabc, 0, "openai", "gpt-4o")
                .with_provider("openai")
                .with_credential("key-1"),
        )
        .unwrap();
    let mut long = InflightEntry::new(2, 0, "anthropic", "x".repeat(1000));
    long.credential = Some("é".repeat(100).into());
    let g2 = t.begin(long).unwrap();
    g1.add_bytes(100);
    g1.add_bytes(23);
    assert_eq!(g1.bytes_streamed(), 123);
    assert_eq!(t.len(), 2);

    let mut views = Vec::new();
    t.list(&mut views);
    assert_eq!(views.len(), 2);
    let v1 = views.iter().find(|v| v.id == 0xabc).unwrap();
    assert_eq!(v1.bytes_streamed, 123);
    assert_eq!(v1.provider.as_deref(), Some("openai"));
    assert_eq!(v1.client_protocol, "openai");
    let v2 = views.iter().find(|v| v.id == 2).unwrap();
    assert_eq!(v2.model.len(), MAX_INFLIGHT_MODEL_BYTES);
    assert!(v2.credential.as_ref().unwrap().len() <= MAX_INFLIGHT_LABEL_BYTES);

    let mut json = String::new();
    t.render_json(&mut json);
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["in_flight"], 2);
    let reqs = v["requests"].as_array().unwrap();
    let r = reqs
        .iter()
        .find(|r| r["id"] == format!("{:032x}", 0xabc))
        .unwrap();
    assert_eq!(r["bytes_streamed"], 123);
    assert_eq!(r["credential"], "key-1");
    assert_eq!(r["shard"], 0);
    assert!(r["age_ms"].is_u64());

    drop(g1);
    assert_eq!(t.len(), 1);
    drop(g2);
    assert!(t.is_empty());
    t.list(&mut views);
    assert!(views.is_empty());
}

#[test]
fn tracker_capacity_exhausted() {
    let t = InflightTracker::new(3, 1);
    let guards: Vec<_> = (0..3)
        .map(|i| t.begin(InflightEntry::new(i, 0, "openai", "m")).unwrap())
        .collect();
    assert!(t.begin(InflightEntry::new(9, 0, "openai", "m")).is_none());
    assert!(t.begin(InflightEntry::new(10, 0, "openai", "m")).is_none());
    assert_eq!(t.rejected(), 2);
    assert_eq!(t.len(), 3);
    drop(guards);
    assert_eq!(t.len(), 0);
    // Slots are reusable.
    let again: Vec<_> = (0..3)
        .map(|i| t.begin(InflightEntry::new(i, 0, "openai", "m")).unwrap())
        .collect();
    assert_eq!(t.len(), 3);
    drop(again);

    // Capacity split over shards: 5 over 2 -> 3 + 2; a zero-capacity tracker
    // rejects everything.
    let t = InflightTracker::new(5, 2);
    assert_eq!(t.capacity(), 5);
    let a: Vec<_> = (0..3)
        .filter_map(|i| t.begin(InflightEntry::new(i, 0, "o", "m")))
        .collect();
    let b: Vec<_> = (0..3)
        .filter_map(|i| t.begin(InflightEntry::new(i, 1, "o", "m")))
        .collect();
    assert_eq!((a.len(), b.len(), t.rejected()), (3, 2, 1));
    let z = InflightTracker::new(0, 4);
    assert!(z.begin(InflightEntry::new(1, 3, "o", "m")).is_none());
    assert_eq!(z.rejected(), 1);
}

#[test]
fn tracker_concurrent_begin_drop() {
    let t = InflightTracker::new(64, 2);
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        let workers: Vec<_> = (0..2u16)
            .map(|shard| {
                let t = &t;
                s.spawn(move || {
                    let mut held = Vec::new();
                    let mut ok = 0u64;
                    for i in 0..20_000u128 {
                        if let Some(g) = t.begin(InflightEntry::new(
                            i,
                            shard,
                            "openai",
                            format!("m{}", i % 7),
                        )) {
                            g.add_bytes(1);
                            ok += 1;
                            held.push(g);
                        }
                        if held.len() > (i % 40) as usize {
                            held.drain(..held.len() / 2);
                        }
                    }
                    ok
                })
            })
            .collect();
        // A lister on a third thread the whole time.
        s.spawn(|| {
            let mut v = Vec::new();
            let mut out = String::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                t.list(&mut v);
                assert!(v.len() <= 64);
                out.clear();
                t.render_json(&mut out);
            }
        });
        for w in workers {
            assert!(w.join().unwrap() > 0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(t.len(), 0);
    let mut v = Vec::new();
    t.list(&mut v);
    assert!(v.is_empty());
}

#[test]
fn model_hasher_spreads_short_names() {
    use std::hash::BuildHasher;
    let b = std::hash::BuildHasherDefault::<shard::FxHasher>::default();
    let mut names: Vec<String> = ["", "a", "b", "ab", "ba", "abc", "acb", "abcd", "abdc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend((0..200).map(|i| format!("provider-model-name-{i}")));
    names.extend((0..40).map(|i| "x".repeat(i)));
    names.sort();
    names.dedup();
    let hashes: HashSet<u64> = names.iter().map(|n| b.hash_one(n.as_str())).collect();
    assert_eq!(hashes.len(), names.len());
}

#[test]
fn thread_safety_bounds() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<ShardRecorder>(); // moved onto its shard once; not Sync (RefCell)
    send_sync::<ShardMetrics>();
    send_sync::<MetricsRegistry>();
    send_sync::<MetricsSnapshot>();
    send_sync::<InflightTracker>();
    send_sync::<InflightGuard<'static>>();
}
