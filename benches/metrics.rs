//! Cost of the metrics on the request path: recording one finished request
//! (counter increments and histogram records) and tracking one in-flight
//! request (begin + drop).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use shardgate::metrics::{
    InflightEntry, InflightTracker, Latency, MetricsConfig, MetricsRegistry, RequestSample, Route,
};

fn record(c: &mut Criterion) {
    let reg = MetricsRegistry::new(
        MetricsConfig::new(1)
            .error_classes(["timeout"])
            .providers(["openai", "anthropic"]),
    );
    let rec = reg.recorder(0).unwrap();
    // A realistic model table: the request's model is one of 20 known names.
    let models: Vec<String> = (0..20)
        .map(|i| format!("provider-model-name-{i}"))
        .collect();
    for m in &models {
        rec.count_model(m);
    }
    let mut g = c.benchmark_group("metrics");
    let mut i = 0u64;
    g.bench_function(
        "record_request (route+status+provider+model, 1 histogram)",
        |b| {
            b.iter(|| {
                i = i.wrapping_add(7919);
                let mut s = RequestSample::new(Route::ChatCompletions, 200, 1_000 + (i & 0xffff));
                s.provider = Some(1);
                s.model = Some(&models[(i % 20) as usize]);
                rec.record_request(black_box(&s));
            })
        },
    );
    g.bench_function("record_request (all 3 histograms)", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919);
            let mut s = RequestSample::new(Route::Messages, 200, 1_000 + (i & 0xffff));
            s.provider = Some(0);
            s.model = Some(&models[(i % 20) as usize]);
            s.upstream_us = Some(900 + (i & 0xfff));
            s.first_token_us = Some(300 + (i & 0xff));
            rec.record_request(black_box(&s));
        })
    });
    g.bench_function("record_latency (1 histogram)", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919);
            rec.record_latency(Latency::Total, black_box(1_000 + (i & 0xffff)));
        })
    });
    g.bench_function("publish (3 histograms, 3 sigfig)", |b| {
        b.iter(|| {
            rec.record_latency(Latency::Total, 1);
            rec.record_latency(Latency::Upstream, 1);
            rec.record_latency(Latency::FirstToken, 1);
            black_box(rec.publish())
        })
    });
    g.finish();
}

fn tracker(c: &mut Criterion) {
    let t = InflightTracker::new(4096, 2);
    // The server already knows when the request started; reading the clocks
    // (`InflightEntry::new` reads two) is measured separately.
    let started = Instant::now();
    let entry = |id: u128| InflightEntry {
        id,
        shard: 0,
        started,
        started_unix_us: 1_700_000_000_000_000,
        client_protocol: "openai",
        model: String::from("gpt-4o-mini"),
        provider: Some("openai".into()),
        credential: None,
    };
    let mut g = c.benchmark_group("inflight");
    let mut id = 0u128;
    g.bench_function("begin+drop (incl. model String alloc)", |b| {
        b.iter(|| {
            id += 1;
            let guard = t.begin(black_box(entry(id)));
            black_box(&guard);
        })
    });
    let hold: Vec<_> = (0..1000)
        .filter_map(|i| t.begin(InflightEntry::new(i, 1, "openai", "m")))
        .collect();
    g.bench_function("begin+add_bytes+drop, 1000 others live", |b| {
        b.iter(|| {
            id += 1;
            if let Some(g) = t.begin(entry(id)) {
                g.add_bytes(black_box(512));
            }
        })
    });
    drop(hold);
    g.bench_function("InflightEntry::new (2 clock reads + String)", |b| {
        b.iter(|| {
            id += 1;
            black_box(InflightEntry::new(
                id,
                0,
                "openai",
                String::from("gpt-4o-mini"),
            ));
        })
    });
    g.finish();
}

criterion_group!(benches, record, tracker);
criterion_main!(benches);
