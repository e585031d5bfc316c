//! Helpers shared by the targets (included with `mod common;`).
#![allow(dead_code)]

/// Splits `data` into pieces whose lengths come from a small PRNG seeded by
/// `seed`: the fuzzer mutates the seed byte to try other splits. Pieces are
/// 1..=`max_piece` bytes (some empty ones too, which feeders must accept).
pub fn pieces(data: &[u8], seed: u8, max_piece: usize) -> Vec<&[u8]> {
    let mut state = u32::from(seed) * 2_654_435_761 ^ 0x9e37_79b9;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let r = state as usize;
        if r % 17 == 0 {
            out.push(&rest[..0]);
        }
        let n = 1 + r % max_piece.max(1);
        let n = n.min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// Every `data:` payload of an SSE text must be JSON (or `[DONE]`), and
/// every other non-empty line an `event:` line.
pub fn assert_sse_events_are_json(sse: &[u8]) {
    let text = std::str::from_utf8(sse).expect("encoder wrote non-UTF-8");
    for line in text.split('\n') {
        if line.is_empty() {
            continue;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            if data != "[DONE]" {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(data) {
                    panic!("event data is not JSON ({e}): {data}");
                }
            }
        } else {
            assert!(line.starts_with("event: "), "unexpected SSE line {line:?}");
        }
    }
}

/// The output must be one JSON value.
pub fn assert_json(what: &str, out: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(out) {
        panic!(
            "{what}: output is not JSON ({e}): {}",
            String::from_utf8_lossy(out)
        );
    }
}
