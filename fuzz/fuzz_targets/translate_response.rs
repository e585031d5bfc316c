#![no_main]
//! Response translation: a provider answer in each provider dialect,
//! translated for every client dialect; the output must be JSON. Error
//! bodies go through decode_error/encode_error too.
use libfuzzer_sys::fuzz_target;
use shardgate::protocol::ir::{Dialect, EncodeOptions};
use shardgate::protocol::translate;
use simd_json::Buffers;

mod common;

const PROVIDERS: [Dialect; 3] = [Dialect::OpenAiChat, Dialect::Anthropic, Dialect::Gemini];
const CLIENTS: [Dialect; 4] = [
    Dialect::OpenAiChat,
    Dialect::OpenAiResponses,
    Dialect::Anthropic,
    Dialect::Gemini,
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let opts = EncodeOptions {
        created: u64::from(flags) << 24,
        include_usage: flags & 1 != 0,
        json_array: flags & 2 != 0,
    };
    let model = if flags & 4 != 0 { "client-model" } else { "m\"\\\u{0}é" };
    let mut buffers = Buffers::default();
    for provider in PROVIDERS {
        for client in CLIENTS {
            let mut body = input.to_vec();
            let mut out = Vec::new();
            if translate::translate_response(
                provider, client, &mut body, model, &opts, &mut buffers, &mut out,
            )
            .is_ok()
            {
                common::assert_json(&format!("{provider:?} -> {client:?}"), &out);
            }
        }
        let mut body = input.to_vec();
        let status = 400 + u16::from(flags);
        let err = translate::decode_error(provider, status, &mut body, &mut buffers);
        for client in CLIENTS {
            let mut out = Vec::new();
            translate::encode_error(client, &err, &mut out);
            common::assert_json(&format!("error {provider:?} -> {client:?}"), &out);
        }
    }
});
