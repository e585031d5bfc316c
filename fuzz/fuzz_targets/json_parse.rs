#![no_main]
//! protocol::json::parse + write_value: what parses writes back as JSON
//! that serde_json reads as the same value, and that parses again to the
//! same text.
use libfuzzer_sys::fuzz_target;
use shardgate::protocol::json::{parse, write_value};
use simd_json::Buffers;

fuzz_target!(|data: &[u8]| {
    let mut body = data.to_vec();
    let mut buffers = Buffers::default();
    let Ok(tape) = parse(&mut body, &mut buffers) else {
        return;
    };
    let mut out = Vec::new();
    write_value(&mut out, &tape.as_value());
    let written: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!("write_value wrote invalid JSON ({e}): {}", String::from_utf8_lossy(&out))
    });
    let mut again = out.clone();
    let tape2 = parse(&mut again, &mut buffers).expect("written JSON does not parse again");
    let mut out2 = Vec::new();
    write_value(&mut out2, &tape2.as_value());
    assert_eq!(out, out2, "write_value is not a fixed point");
    // Same value as serde_json reads from the input (strings and structure;
    // numbers may be re-spelled, so compare after a serde round trip).
    if let Ok(original) = serde_json::from_slice::<serde_json::Value>(data) {
        if !has_float(&original) {
            assert_eq!(original, written);
        }
    }
});

fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}
