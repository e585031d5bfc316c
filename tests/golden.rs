//! Golden tests of the translators, for every client x provider pair:
//! the request a provider receives, the answer a client receives, and a
//! whole streamed answer as the client receives it.
//!
//! Inputs are in `tests/golden/input/` (real-shaped bodies of each
//! protocol, with images, tools, tool results and thinking); the expected
//! outputs are in `tests/golden/expected/`, pretty-printed so a change
//! shows up as a readable diff. After a deliberate change, regenerate them
//! with `GOLDEN_BLESS=1 cargo test --test golden` and review the diff.

use std::path::{Path, PathBuf};

use shardgate::protocol::ir::{Dialect, EncodeOptions};
use shardgate::protocol::json;
use shardgate::protocol::translate::{self, StreamState, StreamTranslator};
use simd_json::Buffers;

const CLIENTS: [(&str, Dialect); 4] = [
    ("chat", Dialect::OpenAiChat),
    ("responses", Dialect::OpenAiResponses),
    ("messages", Dialect::Anthropic),
    ("gemini", Dialect::Gemini),
];

const PROVIDERS: [(&str, Dialect); 3] = [
    ("openai", Dialect::OpenAiChat),
    ("anthropic", Dialect::Anthropic),
    ("gemini", Dialect::Gemini),
];

const OPTS: EncodeOptions = EncodeOptions {
    created: 1_700_000_000,
    include_usage: true,
    json_array: false,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn input(name: &str) -> Vec<u8> {
    let path = dir().join("input").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with the expected file, or writes it when blessing.
/// Returns a description of the mismatch instead of panicking, so one run
/// reports every pair that changed.
fn check(kind: &str, name: &str, actual: &str) -> Option<String> {
    let path = dir().join("expected").join(kind).join(name);
    if std::env::var_os("GOLDEN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{kind}/{name} differs from the golden file:\n--- expected\n{expected}\n--- actual\n{actual}"
        )),
        Err(e) => Some(format!(
            "{}: {e} (run with GOLDEN_BLESS=1 to create it)",
            path.display()
        )),
    }
}

fn pretty(json_bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(json_bytes).unwrap_or_else(|e| {
        panic!(
            "output is not JSON ({e}): {}",
            String::from_utf8_lossy(json_bytes)
        )
    });
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn requests_for_every_pair() {
    let mut failures = Vec::new();
    let mut buffers = Buffers::default();
    for (client_name, client) in CLIENTS {
        for (provider_name, provider) in PROVIDERS {
            let mut body = input(&format!("{client_name}.json"));
            let tape = json::parse(&mut body, &mut buffers).unwrap();
            let mut req = translate::decode_request(client, tape.as_value())
                .unwrap_or_else(|e| panic!("{client_name}: {e}"));
            // What the gateway fills in: the routed model, and for Gemini
            // the stream flag from the URL.
            req.model = "provider-model".into();
            if client == Dialect::Gemini {
                req.stream = true;
            }
            let mut out = Vec::new();
            translate::encode_request(provider, &req, &mut out);
            let name = format!("{client_name}-to-{provider_name}.json");
            failures.extend(check("request", &name, &pretty(&out)));
        }
    }
    report(failures);
}

#[test]
fn responses_for_every_pair() {
    let mut failures = Vec::new();
    let mut buffers = Buffers::default();
    for (provider_name, provider) in PROVIDERS {
        for (client_name, client) in CLIENTS {
            let mut body = input(&format!("{provider_name}.response.json"));
            let mut out = Vec::new();
            translate::translate_response(
                provider,
                client,
                &mut body,
                "client-model",
                &OPTS,
                &mut buffers,
                &mut out,
            )
            .unwrap_or_else(|e| panic!("{provider_name} -> {client_name}: {e}"));
            let name = format!("{provider_name}-to-{client_name}.json");
            failures.extend(check("response", &name, &pretty(&out)));
        }
    }
    report(failures);
}

/// Runs a whole upstream stream through a translator, fed `piece` bytes
/// at a time.
fn translate_stream(provider: Dialect, client: Dialect, stream: &[u8], piece: usize) -> String {
    let mut t = StreamTranslator::new(provider, client, "client-model", OPTS);
    let mut out = Vec::new();
    for chunk in stream.chunks(piece) {
        t.feed(chunk, &mut out);
    }
    t.finish(&mut out);
    assert_eq!(t.state(), StreamState::Done, "{:?}", t.error());
    String::from_utf8(out).expect("UTF-8 output")
}

/// Checks every event's data is JSON (OpenAI's `[DONE]` aside).
fn assert_events_are_json(sse: &str, what: &str) {
    for block in sse.split("\n\n").filter(|b| !b.trim().is_empty()) {
        for line in block.lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                if data != "[DONE]" {
                    serde_json::from_str::<serde_json::Value>(data)
                        .unwrap_or_else(|e| panic!("{what}: event data is not JSON ({e}): {data}"));
                }
            } else {
                assert!(
                    line.starts_with("event: "),
                    "{what}: unexpected line {line:?}"
                );
            }
        }
    }
}

#[test]
fn streams_for_every_pair() {
    let mut failures = Vec::new();
    for (provider_name, provider) in PROVIDERS {
        let stream = input(&format!("{provider_name}.stream.sse"));
        for (client_name, client) in CLIENTS {
            let what = format!("{provider_name} -> {client_name}");
            let whole = translate_stream(provider, client, &stream, stream.len());
            // However the upstream's bytes are split, the client gets the
            // same events.
            for piece in [1, 7, 64] {
                let split = translate_stream(provider, client, &stream, piece);
                assert_eq!(split, whole, "{what}: fed {piece} bytes at a time");
            }
            assert_events_are_json(&whole, &what);
            let name = format!("{provider_name}-to-{client_name}.sse");
            failures.extend(check("stream", &name, &whole));
        }
    }
    report(failures);
}

#[test]
fn gemini_json_array_streams_are_one_json_array() {
    for (provider_name, provider) in PROVIDERS {
        let stream = input(&format!("{provider_name}.stream.sse"));
        let opts = EncodeOptions {
            json_array: true,
            ..OPTS
        };
        let mut t = StreamTranslator::new(provider, Dialect::Gemini, "client-model", opts);
        let mut out = Vec::new();
        t.feed(&stream, &mut out);
        t.finish(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "{provider_name}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        });
        assert!(
            v.as_array().is_some_and(|a| a.len() >= 2),
            "{provider_name}: {v}"
        );
    }
}
