//! Criterion benchmarks of the per-request routing work: resolving a model
//! name, scanning a body for routing traits, and choosing (then releasing) a
//! credential.
//!
//! The pool benchmarks time one `select` plus one `finish(Success)`, the pair
//! every request pays; "50_40_cooling" checks that cooling credentials cost
//! nothing per selection (they sit in the heap, not in the ring), and
//! "50_all_loaded" is least-in-flight's worst case (a full scan).

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardgate::routing::{
    traits_of_body, CredentialPool, HealthSettings, ModelSpec, ModelTable, Outcome, Policy,
    Selection,
};

/// 40 exact models (each with an alias) and 10 globs, the last a catch-all.
fn table() -> ModelTable {
    let providers: Vec<String> = ["openai", "anthropic", "gemini", "openrouter"]
        .map(String::from)
        .to_vec();
    let mut specs = Vec::new();
    for i in 0..40 {
        specs.push(ModelSpec {
            name: format!("model-family-{i}-2025-06-01"),
            aliases: vec![format!("m{i}")],
            provider: i % 4,
            upstream_model: Some(format!("upstream-{i}")),
            ..ModelSpec::default()
        });
    }
    for i in 0..9 {
        specs.push(ModelSpec {
            name: format!("family{i}-*"),
            provider: i % 4,
            upstream_model: Some(format!("vendor.family{i}-*-v1")),
            ..ModelSpec::default()
        });
    }
    specs.push(ModelSpec {
        name: "*".into(),
        provider: 0,
        ..ModelSpec::default()
    });
    ModelTable::new(specs, &providers, None).unwrap()
}

fn resolve(c: &mut Criterion) {
    let t = table();
    let mut g = c.benchmark_group("resolve");
    for (name, model) in [
        ("exact", "model-family-37-2025-06-01"),
        ("alias", "m12"),
        ("provider_slash", "openrouter/meta-llama/llama-3.3-70b"),
        ("glob_last_substituted", "family8-large-latest"),
        ("catch_all", "unknown-model"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(t.resolve(black_box(model)).map(|t| t.provider)))
        });
    }
    g.finish();
}

/// An Anthropic Messages body of roughly `target` bytes, shaped like Claude
/// Code's: system prompt, tools, a history with thinking blocks and tool
/// results, and (when `traits`) thinking enabled and a web search tool at the
/// end, where a scan finds them last.
fn anthropic_body(target: usize, traits: bool) -> Vec<u8> {
    let mut messages = String::new();
    let mut i = 0;
    while messages.len() + 600 < target {
        if !messages.is_empty() {
            messages.push(',');
        }
        messages.push_str(&format!(
            r#"{{"role":"user","content":[{{"type":"text","text":"Step {i}: why does `cargo test` fail with \"thread 'main' panicked\"? Here is the output:\n\nrunning 3 tests\ntest a ... ok\ntest b ... FAILED\n"}}]}},{{"role":"assistant","content":[{{"type":"thinking","thinking":"The user wants to know why test b fails; I should read the file first.","signature":"EqQBCkYIARgCIkB{i}"}},{{"type":"tool_use","id":"toolu_{i}","name":"Read","input":{{"file_path":"/src/lib.rs"}}}}]}},{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_{i}","content":"1\tfn b() {{\n2\t    assert_eq!(1, 2);\n3\t}}"}}]}}"#
        ));
        i += 1;
    }
    let tail = if traits {
        r#","thinking":{"type":"enabled","budget_tokens":31999},"tools":[{"name":"Read","description":"Reads a file","input_schema":{"type":"object","properties":{"file_path":{"type":"string"}}}},{"type":"web_search_20250305","name":"web_search","max_uses":5}]"#
    } else {
        r#","tools":[{"name":"Read","description":"Reads a file","input_schema":{"type":"object","properties":{"file_path":{"type":"string"}}}}]"#
    };
    format!(
        r#"{{"model":"claude-sonnet-4-20250514","max_tokens":32000,"stream":true,"system":[{{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude."}}],"messages":[{messages}]{tail}}}"#
    )
    .into_bytes()
}

fn traits(c: &mut Criterion) {
    let mut g = c.benchmark_group("traits_of_body");
    for size in [512usize, 40 * 1024] {
        for with in [false, true] {
            let body = anthropic_body(size, with);
            g.throughput(Throughput::Bytes(body.len() as u64));
            let label = if with { "thinking+search" } else { "plain" };
            let id = BenchmarkId::new(label, format!("{}B", body.len()));
            g.bench_with_input(id, &body, |b, body| {
                b.iter(|| black_box(traits_of_body(black_box(body))))
            });
        }
    }
    g.finish();
}

fn pools(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut g = c.benchmark_group("select_finish");
    for policy in [Policy::RoundRobin, Policy::LeastInFlight] {
        for (label, n, cooling, held) in [
            ("1", 1, 0, 0),
            ("50", 50, 0, 0),
            ("50_40_cooling", 50, 40, 0),
            // Every slot already has a request in flight: least-in-flight can
            // no longer stop at the first idle slot and scans all 50.
            ("50_all_loaded", 50, 0, 50),
        ] {
            let mut pool = CredentialPool::new(n, policy, HealthSettings::default());
            for _ in 0..held {
                assert!(matches!(pool.select(t0), Selection::Chosen(_)));
            }
            // Cool 40 down for the full 60 s cap; the bench's clock stays at t0.
            for _ in 0..cooling {
                let Selection::Chosen(id) = pool.select(t0) else {
                    panic!("fresh pool")
                };
                let limited = Outcome::RateLimited {
                    retry_after: Some(Duration::from_secs(3600)),
                };
                pool.finish(id, limited, t0);
            }
            g.bench_function(BenchmarkId::new(format!("{policy:?}"), label), |b| {
                b.iter(|| {
                    let Selection::Chosen(id) = pool.select(black_box(t0)) else {
                        panic!("a credential is free")
                    };
                    black_box(pool.finish(id, Outcome::Success, t0))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, resolve, traits, pools);
criterion_main!(benches);
