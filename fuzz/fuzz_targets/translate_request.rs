#![no_main]
//! Request translation: decode the body in every client dialect and encode
//! it for every provider dialect; every encoder output must be JSON.
use libfuzzer_sys::fuzz_target;
use shardgate::protocol::ir::Dialect;
use shardgate::protocol::{json, translate};
use simd_json::Buffers;

const CLIENTS: [Dialect; 4] = [
    Dialect::OpenAiChat,
    Dialect::OpenAiResponses,
    Dialect::Anthropic,
    Dialect::Gemini,
];
const PROVIDERS: [Dialect; 4] = CLIENTS;

fuzz_target!(|data: &[u8]| {
    let mut buffers = Buffers::default();
    for client in CLIENTS {
        let mut body = data.to_vec();
        let Ok(tape) = json::parse(&mut body, &mut buffers) else {
            return;
        };
        let Ok(mut req) = translate::decode_request(client, tape.as_value()) else {
            continue;
        };
        if client == Dialect::Gemini {
            // Gemini names the model in the URL; the gateway fills it in.
            req.model = "gemini-\"model\"\n".into();
            req.stream = data.len() % 2 == 0;
        }
        for provider in PROVIDERS {
            let mut out = Vec::new();
            translate::encode_request(provider, &req, &mut out);
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&out) {
                panic!(
                    "{client:?} -> {provider:?}: output is not JSON ({e}): {}",
                    String::from_utf8_lossy(&out)
                );
            }
        }
    }
});
