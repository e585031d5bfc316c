#![no_main]
//! Same-protocol field extraction: when it succeeds, the body must be JSON
//! (serde_json agrees), and rewrite_model's output must extract the same
//! fields with the new model.
use libfuzzer_sys::fuzz_target;
use shardgate::protocol::fast_path::{extract_routing_fields, rewrite_model};

const NEW_MODELS: [&str; 4] = ["", "gpt-4o", "a\"b\\c\u{1}\n\u{7f}é", "claude-3-5-sonnet-20241022"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let mut scratch = Vec::new();
    let Ok(fields) = extract_routing_fields(body, &mut scratch) else {
        return;
    };
    // The scanner accepts lone UTF-16 surrogates (`"\ud83d"`: grammatical
    // RFC 8259, see the module docs) which serde_json refuses to decode
    // into a String, so validity is checked with IgnoredAny (no decoding),
    // and the model compared only when the body decodes.
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => {}
        // serde_json refuses nesting over 128; the scanner allows 1024.
        Err(e) if e.to_string().contains("recursion limit") => {}
        Err(e) => panic!("accepted a body serde_json rejects: {e}"),
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let obj = value.as_object().expect("accepted a non-object");
        // serde_json keeps the last duplicate; compare only a unique key.
        if String::from_utf8_lossy(body).matches("\"model\"").count() == 1 {
            assert_eq!(
                obj.get("model").and_then(|m| m.as_str()),
                Some(fields.model.as_str())
            );
        }
    }
    check_rewrite(body, &fields, pick);
});

fn check_rewrite(body: &[u8], fields: &shardgate::protocol::fast_path::RoutingFields, pick: u8) {
    let new_model = NEW_MODELS[usize::from(pick) % NEW_MODELS.len()];
    let mut out = Vec::new();
    rewrite_model(body, fields.model_token.clone(), new_model, &mut out);
    let again = extract_routing_fields(&out, &mut Vec::new())
        .unwrap_or_else(|e| panic!("rewritten body rejected: {e:?}"));
    assert_eq!(again.model, new_model);
    assert_eq!(again.stream, fields.stream);
    assert_eq!(again.model_token.start, fields.model_token.start);
}
