#![no_main]
//! Stream translation: arbitrary bytes as an upstream SSE stream through
//! StreamTranslator for every provider -> client pair, fed in random
//! splits: data = [flags, split seed, stream...]. No panic; every event's
//! data is JSON (or [DONE]); the output does not depend on the split.
use libfuzzer_sys::fuzz_target;
use shardgate::protocol::ir::{Dialect, EncodeOptions};
use shardgate::protocol::translate::{StreamState, StreamTranslator};

mod common;

const PROVIDERS: [Dialect; 3] = [Dialect::OpenAiChat, Dialect::Anthropic, Dialect::Gemini];
const CLIENTS: [Dialect; 4] = [
    Dialect::OpenAiChat,
    Dialect::OpenAiResponses,
    Dialect::Anthropic,
    Dialect::Gemini,
];

fn run(provider: Dialect, client: Dialect, opts: EncodeOptions, pieces: &[&[u8]]) -> (Vec<u8>, StreamState) {
    let mut t = StreamTranslator::new(provider, client, "client-model", opts);
    let mut out = Vec::new();
    for piece in pieces {
        t.feed(piece, &mut out);
    }
    t.finish(&mut out);
    assert_ne!(t.state(), StreamState::Open);
    (out, t.state())
}

fuzz_target!(|data: &[u8]| {
    let [flags, seed, input @ ..] = data else {
        return;
    };
    let opts = EncodeOptions {
        created: 1_700_000_000,
        include_usage: flags & 1 != 0,
        json_array: false,
    };
    let split = common::pieces(input, *seed, 48);
    for provider in PROVIDERS {
        for client in CLIENTS {
            let whole = run(provider, client, opts, &[input]);
            common::assert_sse_events_are_json(&whole.0);
            let parts = run(provider, client, opts, &split);
            assert!(
                whole == parts,
                "{provider:?} -> {client:?}: output depends on the split:\n{}\n---\n{}",
                String::from_utf8_lossy(&whole.0),
                String::from_utf8_lossy(&parts.0)
            );
        }
    }
});
