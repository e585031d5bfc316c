#![no_main]
//! Config::from_toml on arbitrary UTF-8: an error or a config, never a
//! panic; a config's summary renders.
use libfuzzer_sys::fuzz_target;
use shardgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text, "fuzz.toml") {
        Ok(config) => {
            let _ = config.summary();
            let _ = config.route("gpt-4o");
            let _ = config.route("claude-sonnet-4");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
