//! Criterion benchmarks of the same-protocol fast path: reading `model` and
//! `stream` from OpenAI Chat Completions bodies of realistic shape and size,
//! and splicing in a new model.
//!
//! Bodies put `messages` before `model`, as the OpenAI SDKs send them, so the
//! whole body lies between the start and the field the router needs. Each
//! `extract/*` group also times a bare simd-json parse of the same body (tape
//! only, buffers reused): the floor of any simd-json-based implementation,
//! kept here because `src/protocol/fast_path.rs` replaced simd-json on this
//! path on the strength of that comparison.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardgate::protocol::fast_path::{extract_routing_fields, rewrite_model};

/// A tool definition like the ones coding agents send (JSON schema inside).
fn tool(i: usize) -> String {
    format!(
        r#"{{"type":"function","function":{{"name":"tool_{i}","description":"Reads a file from the workspace and returns its contents with line numbers. Use it before editing.","parameters":{{"type":"object","properties":{{"path":{{"type":"string","description":"Path relative to the workspace root"}},"start_line":{{"type":"integer","minimum":1}},"end_line":{{"type":"integer","minimum":1}}}},"required":["path"],"additionalProperties":false}}}}}}"#
    )
}

/// One conversation turn: a user question, an assistant answer with a tool
/// call, and the tool's result, with the escapes real text has (newlines,
/// quotes, code, a little non-ASCII).
fn turn(i: usize) -> String {
    format!(
        r#"{{"role":"user","content":"Question {i}: why does `cargo build` fail with \"error[E0502]: cannot borrow as mutable\"?\nHere is the code:\n\nfn main() {{\n    let mut v = vec![1, 2, 3];\n    let first = &v[0];\n    v.push(4);\n    println!(\"{{}}\", first);\n}}"}},{{"role":"assistant","content":"The vector may reallocate on `push`, which would leave `first` dangling, so the borrow checker rejects it.\n\nFix: copy the value first (`let first = v[0];`) or push before taking the reference. Voilà — café ☕ fixed.","tool_calls":[{{"id":"call_{i}","type":"function","function":{{"name":"tool_0","arguments":"{{\"path\":\"src/main.rs\",\"start_line\":1}}"}}}}]}},{{"role":"tool","tool_call_id":"call_{i}","content":"1\tfn main() {{\n2\t    let v = vec![1, 2, 3];\n3\t}}"}}"#
    )
}

/// Builds a chat body of roughly `target` bytes: a system prompt, then a
/// one-shot prompt (small bodies) or tools and conversation turns.
fn chat_body(target: usize) -> Vec<u8> {
    let system =
        r#"{"role":"system","content":"You are a helpful coding assistant. Answer concisely."}"#;
    let mut messages = String::from(system);
    let mut tools = Vec::new();
    let mut i = 0;
    let head = 120; // model, stream and options, added below
    while messages.len() + tools.iter().map(String::len).sum::<usize>() + head < target {
        if target >= 4096 && tools.len() < 4 {
            tools.push(tool(tools.len()));
        } else if target < 1024 {
            messages.push_str(&format!(
                r#",{{"role":"user","content":"Translate to French: \"good morning, {i}\"."}}"#
            ));
        } else {
            messages.push(',');
            messages.push_str(&turn(i));
        }
        i += 1;
    }
    let tools = if tools.is_empty() {
        String::new()
    } else {
        format!(r#","tools":[{}],"tool_choice":"auto""#, tools.join(","))
    };
    format!(
        r#"{{"messages":[{messages}]{tools},"model":"gpt-4o-mini","stream":true,"temperature":0.2,"max_tokens":1024,"stream_options":{{"include_usage":true}}}}"#
    )
    .into_bytes()
}

const SIZES: [(&str, usize); 3] = [("0.5KB", 512), ("4KB", 4096), ("40KB", 40960)];

fn extract(c: &mut Criterion) {
    for (name, size) in SIZES {
        let body = chat_body(size);
        let mut group = c.benchmark_group(format!("extract/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));

        let mut scratch = Vec::new();
        group.bench_function(BenchmarkId::new("scanner", body.len()), |b| {
            b.iter(|| extract_routing_fields(black_box(&body), &mut scratch).unwrap())
        });

        let mut buffers = simd_json::Buffers::default();
        let mut tape = Some(simd_json::Tape(Vec::new()));
        group.bench_function(BenchmarkId::new("simd-json-tape", body.len()), |b| {
            b.iter(|| {
                scratch.clear();
                scratch.extend_from_slice(black_box(&body));
                let mut t = tape.take().unwrap_or(simd_json::Tape(Vec::new())).reset();
                simd_json::fill_tape(&mut scratch, &mut buffers, &mut t).unwrap();
                let nodes = t.0.len();
                tape = Some(t.reset());
                nodes
            })
        });
        group.finish();
    }
}

fn rewrite(c: &mut Criterion) {
    for (name, size) in SIZES {
        let body = chat_body(size);
        let token = extract_routing_fields(&body, &mut Vec::new())
            .unwrap()
            .model_token;
        let mut group = c.benchmark_group(format!("rewrite/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        let mut out = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(body.len()), |b| {
            b.iter(|| {
                rewrite_model(
                    black_box(&body),
                    token.clone(),
                    "gpt-4o-2024-08-06",
                    &mut out,
                )
            })
        });
        group.finish();
    }
}

criterion_group!(benches, extract, rewrite);
criterion_main!(benches);
