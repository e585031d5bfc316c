//! Criterion benchmarks of protocol translation, the work the gateway does
//! when the client and the provider speak different APIs:
//!
//! - `request/*`: a client body copied into a reused buffer (as the gateway
//!   does), parsed into a tape, decoded into the IR, given the upstream
//!   model and encoded for the provider;
//! - `response/*`: a complete provider answer copied into a reused buffer and
//!   passed through `translate_response` (parse, decode, encode);
//! - `stream/*`: one whole upstream SSE answer through a new
//!   `StreamTranslator`, fed in 4 KiB pieces (a socket read's worth) and
//!   finished, the output buffer cleared after each piece as the gateway
//!   does;
//! - `passthrough/*`: the same-protocol fast path on the small chat body,
//!   `extract_routing_fields` + `rewrite_model`, as the baseline.
//!
//! Bodies are generated here, deterministically. "small" is a one-question
//! request (~0.55 KB), a three-sentence answer (~0.55 KB) or a six-token
//! stream (0.3 KB from Gemini, 1.4-2 KB from Anthropic and OpenAI, whose
//! events carry one token each). "40KB" and "200KB" requests are multi-turn
//! coding conversations (a tool call, its result and a conclusion per turn,
//! four tools with JSON schemas); answers and streams of those sizes are long
//! texts with code, then a tool call. The bench id carries the exact input
//! size; throughput is the input body's size, so results read as time per
//! body and MB/s.

use std::borrow::Cow;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use shardgate::protocol::fast_path::{extract_routing_fields, rewrite_model};
use shardgate::protocol::ir::{Dialect, EncodeOptions};
use shardgate::protocol::json;
use shardgate::protocol::translate::{self, StreamState, StreamTranslator};

const SIZES: [(&str, Option<usize>); 3] = [
    ("small", None),
    ("40KB", Some(40 * 1024)),
    ("200KB", Some(200 * 1024)),
];

/// Client dialect -> provider dialect, as the gateway translates them.
/// Answers go the other way.
const PAIRS: [(Dialect, Dialect); 5] = [
    (Dialect::OpenAiChat, Dialect::Anthropic),
    (Dialect::Anthropic, Dialect::OpenAiChat),
    (Dialect::Gemini, Dialect::OpenAiChat),
    (Dialect::OpenAiResponses, Dialect::OpenAiChat),
    (Dialect::OpenAiChat, Dialect::Gemini),
];

const OPTS: EncodeOptions = EncodeOptions {
    created: 1_700_000_000,
    include_usage: true,
    json_array: false,
};

/// The bytes one stream piece holds, like one read from the upstream socket.
const PIECE: usize = 4096;

fn short(d: Dialect) -> &'static str {
    match d {
        Dialect::OpenAiChat => "chat",
        Dialect::OpenAiResponses => "responses",
        Dialect::Anthropic => "anthropic",
        Dialect::Gemini => "gemini",
    }
}

fn model(d: Dialect) -> &'static str {
    match d {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => "gpt-4o-mini",
        Dialect::Anthropic => "claude-3-5-haiku-latest",
        Dialect::Gemini => "gemini-2.0-flash",
    }
}

// ------------------------------------------------------------ content

const SYSTEM: &str = "You are a helpful coding assistant working in the user's repository. Answer concisely, show code in fenced blocks, and read files before editing them.";

fn question(i: usize) -> String {
    format!(
        "Question {i}: why does `cargo build` fail with \"error[E0502]: cannot borrow `v` as mutable because it is also borrowed as immutable\"?\nHere is the code:\n\nfn main() {{\n    let mut v = vec![1, 2, 3];\n    let first = &v[0];\n    v.push(4);\n    println!(\"{{}}\", first);\n}}"
    )
}

fn answer(i: usize) -> String {
    format!("Let me look at the file first (turn {i}). The vector may reallocate on `push`, which would leave `first` dangling — café ☕.")
}

fn conclusion(i: usize) -> String {
    format!("Fixed in turn {i}: copy the value first (`let first = v[0];`) or push before taking the reference.\n\n```rust\nlet first = v[0];\nv.push(4);\n```")
}

const TOOL_RESULT: &str = "1\tfn main() {\n2\t    let mut v = vec![1, 2, 3];\n3\t    let first = &v[0];\n4\t    v.push(4);\n5\t    println!(\"{}\", first);\n6\t}";

fn tool_args() -> Value {
    json!({"path": "src/main.rs", "start_line": 1, "end_line": 40})
}

const TOOL_NAMES: [&str; 4] = ["read_file", "write_file", "run_command", "search_code"];

fn tool_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "Path relative to the workspace root"},
            "start_line": {"type": "integer", "description": "First line to read, from 1"},
            "end_line": {"type": "integer", "description": "Last line to read, inclusive"},
            "pattern": {"type": "string", "description": "A regular expression to search for"},
            "mode": {"type": "string", "enum": ["read", "write", "search"]}
        },
        "required": ["path"]
    })
}

const TOOL_DESCRIPTION: &str = "Works on a file of the workspace and returns the result with line numbers. Use it before editing.";

/// Sentence `i` of a long answer: prose and code with the escapes real text
/// has. Sentence 0 is short, for the small answers.
fn sentence(i: usize) -> String {
    match i {
        0 => "Bonjour ! Here is the fix.".to_owned(),
        _ if i % 3 == 0 => format!("```rust\nfn step_{i}(v: &mut Vec<u32>) -> u32 {{\n    let first = v[0];\n    v.push({i});\n    first\n}}\n```\n"),
        _ => format!("Step {i}: the borrow of `v` ends before `push`, so the \"cannot borrow\" error is gone; the tests pass — voilà. "),
    }
}

fn text(sentences: usize) -> String {
    (0..sentences).map(sentence).collect()
}

/// The smallest `n` whose rendering is at least `target` bytes.
fn fit(target: usize, render: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    let mut hi = 1;
    while render(hi).len() < target {
        hi *= 2;
    }
    let mut lo = hi / 2;
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if render(mid).len() < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    render(hi)
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

// ------------------------------------------------------------ requests

/// A request in `dialect`: the system prompt, `turns` full turns (question,
/// answer with a tool call, tool result, conclusion), then a last question.
/// Tools are declared when there are turns.
fn request(dialect: Dialect, turns: usize) -> Vec<u8> {
    let args = tool_args();
    let args_text = args.to_string();
    let tools = turns > 0;
    let body = match dialect {
        Dialect::OpenAiChat => {
            let mut msgs = vec![json!({"role": "system", "content": SYSTEM})];
            for i in 0..turns {
                msgs.push(json!({"role": "user", "content": question(i)}));
                msgs.push(
                    json!({"role": "assistant", "content": answer(i), "tool_calls": [
                    {"id": format!("call_{i}"), "type": "function",
                     "function": {"name": "read_file", "arguments": args_text}}]}),
                );
                msgs.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": TOOL_RESULT}));
                msgs.push(json!({"role": "assistant", "content": conclusion(i)}));
            }
            msgs.push(json!({"role": "user", "content": question(turns)}));
            let mut body = json!({"model": model(dialect), "messages": msgs, "max_tokens": 1024,
                "temperature": 0.2, "stream": false});
            if tools {
                body["tools"] = TOOL_NAMES
                    .iter()
                    .map(|name| {
                        json!({"type": "function", "function": {"name": name,
                        "description": TOOL_DESCRIPTION, "parameters": tool_schema()}})
                    })
                    .collect();
                body["tool_choice"] = json!("auto");
            }
            body
        }
        Dialect::OpenAiResponses => {
            let mut input = Vec::new();
            for i in 0..turns {
                input.push(json!({"role": "user", "content": question(i)}));
                input.push(json!({"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": answer(i)}]}));
                input.push(
                    json!({"type": "function_call", "call_id": format!("call_{i}"),
                    "name": "read_file", "arguments": args_text}),
                );
                input.push(
                    json!({"type": "function_call_output", "call_id": format!("call_{i}"),
                    "output": TOOL_RESULT}),
                );
                input.push(json!({"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": conclusion(i)}]}));
            }
            input.push(json!({"role": "user", "content": question(turns)}));
            let mut body = json!({"model": model(dialect), "instructions": SYSTEM, "input": input,
                "max_output_tokens": 1024, "temperature": 0.2, "stream": false});
            if tools {
                body["tools"] = TOOL_NAMES
                    .iter()
                    .map(|name| {
                        json!({"type": "function", "name": name,
                        "description": TOOL_DESCRIPTION, "parameters": tool_schema()})
                    })
                    .collect();
            }
            body
        }
        Dialect::Anthropic => {
            let mut msgs = Vec::new();
            for i in 0..turns {
                msgs.push(json!({"role": "user", "content": question(i)}));
                msgs.push(json!({"role": "assistant", "content": [
                    {"type": "text", "text": answer(i)},
                    {"type": "tool_use", "id": format!("toolu_{i}"), "name": "read_file", "input": args}]}));
                msgs.push(json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": TOOL_RESULT}]}));
                msgs.push(json!({"role": "assistant", "content": conclusion(i)}));
            }
            msgs.push(json!({"role": "user", "content": question(turns)}));
            let mut body = json!({"model": model(dialect), "system": SYSTEM, "messages": msgs,
                "max_tokens": 1024, "temperature": 0.2});
            if tools {
                body["tools"] = TOOL_NAMES
                    .iter()
                    .map(|name| {
                        json!({"name": name, "description": TOOL_DESCRIPTION,
                        "input_schema": tool_schema()})
                    })
                    .collect();
            }
            body
        }
        Dialect::Gemini => {
            let mut contents = Vec::new();
            for i in 0..turns {
                contents.push(json!({"role": "user", "parts": [{"text": question(i)}]}));
                contents.push(json!({"role": "model", "parts": [{"text": answer(i)},
                    {"functionCall": {"name": "read_file", "args": args}}]}));
                contents.push(json!({"role": "user", "parts": [{"functionResponse":
                    {"name": "read_file", "response": {"content": TOOL_RESULT}}}]}));
                contents.push(json!({"role": "model", "parts": [{"text": conclusion(i)}]}));
            }
            contents.push(json!({"role": "user", "parts": [{"text": question(turns)}]}));
            let mut body = json!({"systemInstruction": {"parts": [{"text": SYSTEM}]},
                "contents": contents,
                "generationConfig": {"maxOutputTokens": 1024, "temperature": 0.2}});
            if tools {
                body["tools"] = json!([{"functionDeclarations": TOOL_NAMES
                    .iter()
                    .map(|name| json!({"name": name, "description": TOOL_DESCRIPTION,
                        "parameters": tool_schema()}))
                    .collect::<Vec<_>>()}]);
            }
            body
        }
    };
    bytes(&body)
}

fn request_body(dialect: Dialect, size: Option<usize>) -> Vec<u8> {
    match size {
        None => request(dialect, 0),
        Some(target) => fit(target, |turns| request(dialect, turns)),
    }
}

// ------------------------------------------------------------ answers

/// A complete provider answer in `dialect`: `sentences` of text and, unless
/// the answer is a small one, a tool call.
fn response(dialect: Dialect, sentences: usize, tool_call: bool) -> Vec<u8> {
    let text = text(sentences);
    let args = tool_args();
    let body = match dialect {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => {
            let mut message = json!({"role": "assistant", "content": text, "refusal": null});
            if tool_call {
                message["tool_calls"] = json!([{"id": "call_Xb12", "type": "function",
                    "function": {"name": "read_file", "arguments": args.to_string()}}]);
            }
            json!({"id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1_700_000_000,
                "model": model(dialect), "system_fingerprint": "fp_0ba0d124f1",
                "choices": [{"index": 0, "message": message, "logprobs": null,
                    "finish_reason": if tool_call { "tool_calls" } else { "stop" }}],
                "usage": {"prompt_tokens": 1234, "completion_tokens": 321, "total_tokens": 1555,
                    "prompt_tokens_details": {"cached_tokens": 1024}}})
        }
        Dialect::Anthropic => {
            let mut content = vec![json!({"type": "text", "text": text})];
            if tool_call {
                content.push(
                    json!({"type": "tool_use", "id": "toolu_01Xb12", "name": "read_file",
                    "input": args}),
                );
            }
            json!({"id": "msg_01AbC123", "type": "message", "role": "assistant",
                "model": model(dialect), "content": content,
                "stop_reason": if tool_call { "tool_use" } else { "end_turn" },
                "stop_sequence": null,
                "usage": {"input_tokens": 1234, "output_tokens": 321,
                    "cache_read_input_tokens": 1024, "cache_creation_input_tokens": 0}})
        }
        Dialect::Gemini => {
            let mut parts = vec![json!({"text": text})];
            if tool_call {
                parts.push(json!({"functionCall": {"name": "read_file", "args": args}}));
            }
            json!({"candidates": [{"content": {"role": "model", "parts": parts},
                    "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 1234, "candidatesTokenCount": 321,
                    "totalTokenCount": 1555, "cachedContentTokenCount": 1024},
                "modelVersion": model(dialect), "responseId": "AbC123"})
        }
    };
    bytes(&body)
}

fn response_body(dialect: Dialect, size: Option<usize>) -> Vec<u8> {
    match size {
        None => response(dialect, 3, false),
        Some(target) => fit(target, |n| response(dialect, n, true)),
    }
}

// ------------------------------------------------------------ streams

/// Splits `text` into the pieces a token-by-token stream sends: words with
/// their trailing space (OpenAI, Anthropic), or `len`-byte runs (Gemini,
/// which streams larger chunks).
fn pieces(text: &str, len: Option<usize>) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        let cut = match len {
            None => c == ' ' || c == '\n',
            Some(n) => end - start >= n,
        };
        if cut {
            out.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn sse(out: &mut Vec<u8>, event: Option<&str>, data: &Value) {
    if let Some(name) = event {
        out.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, data).unwrap();
    out.extend_from_slice(b"\n\n");
}

/// A whole streamed answer from a provider speaking `dialect`: `sentences`
/// of text token by token, then (when `tool_call`) one tool call whose
/// arguments arrive in pieces, the stop reason and usage.
fn stream(dialect: Dialect, sentences: usize, tool_call: bool) -> Vec<u8> {
    let text = text(sentences);
    let args = tool_args().to_string();
    let mut out = Vec::new();
    match dialect {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-AbC123", "object": "chat.completion.chunk",
                    "created": 1_700_000_000, "model": model(dialect),
                    "system_fingerprint": "fp_0ba0d124f1",
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            };
            sse(
                &mut out,
                None,
                &chunk(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    Value::Null,
                ),
            );
            for p in pieces(&text, None) {
                sse(&mut out, None, &chunk(json!({"content": p}), Value::Null));
            }
            if tool_call {
                sse(
                    &mut out,
                    None,
                    &chunk(
                        json!({"tool_calls": [{"index": 0, "id": "call_Xb12",
                    "type": "function", "function": {"name": "read_file", "arguments": ""}}]}),
                        Value::Null,
                    ),
                );
                for p in pieces(&args, Some(8)) {
                    sse(
                        &mut out,
                        None,
                        &chunk(
                            json!({"tool_calls": [{"index": 0,
                        "function": {"arguments": p}}]}),
                            Value::Null,
                        ),
                    );
                }
            }
            sse(
                &mut out,
                None,
                &chunk(
                    json!({}),
                    json!(if tool_call { "tool_calls" } else { "stop" }),
                ),
            );
            sse(
                &mut out,
                None,
                &json!({"id": "chatcmpl-AbC123", "object": "chat.completion.chunk",
                "created": 1_700_000_000, "model": model(dialect), "choices": [],
                "usage": {"prompt_tokens": 1234, "completion_tokens": 321, "total_tokens": 1555}}),
            );
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        Dialect::Anthropic => {
            sse(
                &mut out,
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                "id": "msg_01AbC123", "type": "message", "role": "assistant", "model": model(dialect),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 1234, "output_tokens": 1}}}),
            );
            sse(
                &mut out,
                Some("content_block_start"),
                &json!({"type": "content_block_start",
                "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            sse(&mut out, Some("ping"), &json!({"type": "ping"}));
            for p in pieces(&text, None) {
                sse(
                    &mut out,
                    Some("content_block_delta"),
                    &json!({"type": "content_block_delta",
                    "index": 0, "delta": {"type": "text_delta", "text": p}}),
                );
            }
            sse(
                &mut out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            );
            if tool_call {
                sse(
                    &mut out,
                    Some("content_block_start"),
                    &json!({"type": "content_block_start",
                    "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01Xb12",
                        "name": "read_file", "input": {}}}),
                );
                for p in pieces(&args, Some(8)) {
                    sse(
                        &mut out,
                        Some("content_block_delta"),
                        &json!({"type": "content_block_delta",
                        "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}}),
                    );
                }
                sse(
                    &mut out,
                    Some("content_block_stop"),
                    &json!({"type": "content_block_stop", "index": 1}),
                );
            }
            sse(
                &mut out,
                Some("message_delta"),
                &json!({"type": "message_delta",
                "delta": {"stop_reason": if tool_call { "tool_use" } else { "end_turn" }, "stop_sequence": null},
                "usage": {"output_tokens": 321}}),
            );
            sse(
                &mut out,
                Some("message_stop"),
                &json!({"type": "message_stop"}),
            );
        }
        Dialect::Gemini => {
            let chunk = |parts: Value, last: bool| {
                let mut c = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 1234, "totalTokenCount": 1234},
                    "modelVersion": model(dialect), "responseId": "AbC123"});
                if last {
                    c["candidates"][0]["finishReason"] = json!("STOP");
                    c["usageMetadata"] = json!({"promptTokenCount": 1234,
                        "candidatesTokenCount": 321, "totalTokenCount": 1555});
                }
                c
            };
            let texts = pieces(&text, Some(120));
            for (i, p) in texts.iter().enumerate() {
                let last = !tool_call && i + 1 == texts.len();
                sse(&mut out, None, &chunk(json!([{"text": p}]), last));
            }
            if tool_call {
                sse(
                    &mut out,
                    None,
                    &chunk(
                        json!([{"functionCall": {"name": "read_file",
                    "args": tool_args()}}]),
                        true,
                    ),
                );
            }
        }
    }
    out
}

fn stream_body(dialect: Dialect, size: Option<usize>) -> Vec<u8> {
    match size {
        None => stream(dialect, 1, false),
        Some(target) => fit(target, |n| stream(dialect, n, true)),
    }
}

// ------------------------------------------------------------ benchmarks

fn requests(c: &mut Criterion) {
    let mut buffers = simd_json::Buffers::default();
    let mut work = Vec::new();
    let mut out = Vec::new();
    for (name, size) in SIZES {
        let mut group = c.benchmark_group(format!("request/{name}"));
        for (client, provider) in PAIRS {
            let body = request_body(client, size);
            let upstream = model(provider);
            let mut run = |work: &mut Vec<u8>, out: &mut Vec<u8>| {
                work.clear();
                work.extend_from_slice(black_box(&body));
                out.clear();
                let tape = json::parse(work, &mut buffers).expect("request parses");
                let mut req =
                    translate::decode_request(client, tape.as_value()).expect("request decodes");
                req.model = Cow::Borrowed(upstream);
                translate::encode_request(provider, &req, out);
                out.len()
            };
            // Once outside the measurement: the body must translate.
            assert!(run(&mut work, &mut out) > 0);
            group.throughput(Throughput::Bytes(body.len() as u64));
            let id = format!("{}->{}", short(client), short(provider));
            group.bench_function(BenchmarkId::new(id, body.len()), |b| {
                b.iter(|| run(&mut work, &mut out))
            });
        }
        group.finish();
    }
}

fn responses(c: &mut Criterion) {
    let mut buffers = simd_json::Buffers::default();
    let mut work = Vec::new();
    let mut out = Vec::new();
    for (name, size) in SIZES {
        let mut group = c.benchmark_group(format!("response/{name}"));
        for (client, provider) in PAIRS {
            let body = response_body(provider, size);
            let mut run = |work: &mut Vec<u8>, out: &mut Vec<u8>| {
                work.clear();
                work.extend_from_slice(black_box(&body));
                out.clear();
                translate::translate_response(
                    provider,
                    client,
                    work,
                    model(client),
                    &OPTS,
                    &mut buffers,
                    out,
                )
                .expect("answer translates");
                out.len()
            };
            assert!(run(&mut work, &mut out) > 0);
            group.throughput(Throughput::Bytes(body.len() as u64));
            let id = format!("{}->{}", short(provider), short(client));
            group.bench_function(BenchmarkId::new(id, body.len()), |b| {
                b.iter(|| run(&mut work, &mut out))
            });
        }
        group.finish();
    }
}

fn streams(c: &mut Criterion) {
    let mut out = Vec::new();
    for (name, size) in SIZES {
        let mut group = c.benchmark_group(format!("stream/{name}"));
        for (client, provider) in PAIRS {
            let body = stream_body(provider, size);
            let run = |out: &mut Vec<u8>| {
                let mut t = StreamTranslator::new(provider, client, model(client), OPTS);
                let mut written = 0;
                for piece in black_box(&body).chunks(PIECE) {
                    out.clear();
                    t.feed(piece, out);
                    written += out.len();
                }
                out.clear();
                t.finish(out);
                (t.state(), written + out.len())
            };
            let (state, written) = run(&mut out);
            assert_eq!(
                state,
                StreamState::Done,
                "{provider:?} -> {client:?} stream failed"
            );
            assert!(written > 0);
            group.throughput(Throughput::Bytes(body.len() as u64));
            let id = format!("{}->{}", short(provider), short(client));
            group.bench_function(BenchmarkId::new(id, body.len()), |b| {
                b.iter(|| run(&mut out))
            });
        }
        group.finish();
    }
}

/// The same-protocol fast path on the small chat request: the baseline a
/// translation is compared with.
fn passthrough(c: &mut Criterion) {
    let body = request_body(Dialect::OpenAiChat, None);
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    let mut group = c.benchmark_group("passthrough/small");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(BenchmarkId::new("chat->chat", body.len()), |b| {
        b.iter(|| {
            let fields = extract_routing_fields(black_box(&body), &mut scratch).unwrap();
            rewrite_model(&body, fields.model_token, "gpt-4o-2024-08-06", &mut out);
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, passthrough, requests, responses, streams);
criterion_main!(benches);
