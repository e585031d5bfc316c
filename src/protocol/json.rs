//! JSON helpers: parsing a body into a simd-json tape with a nesting limit,
//! and writing JSON text for the bodies the gateway builds itself.

use simd_json::prelude::*;
use simd_json::tape::{Node, Tape};
use simd_json::Buffers;

use super::ir::{Json, TranslateError};

/// The deepest nesting of arrays and objects a translated body may have.
/// Real requests stay under 20 (tool schemas are the deepest part); the
/// limit keeps every recursive walk over a value far from the stack's end.
pub const MAX_DEPTH: usize = 128;

/// Parses `body` in place into a tape whose strings borrow from `body`.
/// `buffers` are simd-json's scratch space, reused across requests.
///
/// Invalid JSON and nesting deeper than [`MAX_DEPTH`] are errors. The depth
/// is measured on the tape (simd-json's own parse is iterative), so a
/// hostile body of 100,000 nested arrays costs one linear pass and no
/// recursion.
pub fn parse<'a>(body: &'a mut [u8], buffers: &mut Buffers) -> Result<Tape<'a>, TranslateError> {
    let tape = simd_json::to_tape_with_buffers(body, buffers)
        .map_err(|e| TranslateError::new(format!("the body is not valid JSON: {e}")))?;
    if depth_exceeds(&tape.0, MAX_DEPTH) {
        return Err(TranslateError::new(format!(
            "the body nests arrays and objects deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(tape)
}

/// Whether the values on `nodes` nest deeper than `limit`. Each container
/// node records how many nodes it spans, so the open containers are a stack
/// of end positions.
fn depth_exceeds(nodes: &[Node<'_>], limit: usize) -> bool {
    let mut ends: Vec<usize> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        while ends.last().is_some_and(|&end| i > end) {
            ends.pop();
        }
        if let Node::Array { count, .. } | Node::Object { count, .. } = *node {
            if count > 0 {
                ends.push(i + count);
                if ends.len() > limit {
                    return true;
                }
            }
        }
    }
    false
}

/// Appends `value` as compact JSON text. Recursion is bounded by the
/// nesting limit [`parse`] enforces.
pub fn write_value(out: &mut Vec<u8>, value: &Json<'_>) {
    if let Some(obj) = value.as_object() {
        out.push(b'{');
        for (i, (k, v)) in obj.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(out, k);
            out.push(b':');
            write_value(out, &v);
        }
        out.push(b'}');
    } else if let Some(arr) = value.as_array() {
        out.push(b'[');
        for (i, v) in arr.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_value(out, &v);
        }
        out.push(b']');
    } else if let Some(s) = value.as_str() {
        write_string(out, s);
    } else if let Some(b) = value.as_bool() {
        out.extend_from_slice(if b { b"true" } else { b"false" });
    } else if let Some(n) = value.as_u64() {
        write_u64(out, n);
    } else if let Some(n) = value.as_i64() {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    } else if let Some(f) = value.as_f64() {
        write_f64(out, f);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends a JSON Schema as compact JSON text, with Gemini's OpenAPI-style
/// upper-case type names (`"OBJECT"`, `"STRING"`...) lower-cased: Gemini
/// clients write them so, and OpenAI and Anthropic reject them. Values
/// that are data rather than schemas (`enum`, `const`, `default`,
/// `example(s)`) are written untouched.
pub fn write_schema(out: &mut Vec<u8>, value: &Json<'_>) {
    if let Some(obj) = value.as_object() {
        out.push(b'{');
        for (i, (k, v)) in obj.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_schema_member(out, k, &v);
        }
        out.push(b'}');
    } else if let Some(arr) = value.as_array() {
        out.push(b'[');
        for (i, v) in arr.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_schema(out, &v);
        }
        out.push(b']');
    } else {
        write_value(out, value);
    }
}

/// One `"key":value` member of a schema object, written as
/// [`write_schema`] writes it.
pub fn write_schema_member(out: &mut Vec<u8>, key: &str, value: &Json<'_>) {
    write_string(out, key);
    out.push(b':');
    match key {
        "type" => write_schema_type(out, value),
        "enum" | "const" | "default" | "example" | "examples" => write_value(out, value),
        // Maps of names (which may be `type`, `enum`...) to schemas.
        "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
            match value.as_object() {
                Some(map) => {
                    out.push(b'{');
                    for (i, (name, schema)) in map.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_string(out, name);
                        out.push(b':');
                        write_schema(out, &schema);
                    }
                    out.push(b'}');
                }
                None => write_value(out, value),
            }
        }
        _ => write_schema(out, value),
    }
}

/// A schema's `type`: a name or a list of names, lower-cased.
fn write_schema_type(out: &mut Vec<u8>, value: &Json<'_>) {
    let name = |out: &mut Vec<u8>, v: &Json<'_>| match v.as_str() {
        Some(s) if s.bytes().any(|b| b.is_ascii_uppercase()) => {
            write_string(out, &s.to_ascii_lowercase())
        }
        _ => write_value(out, v),
    };
    if let Some(arr) = value.as_array() {
        out.push(b'[');
        for (i, v) in arr.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            name(out, &v);
        }
        out.push(b']');
    } else {
        name(out, value);
    }
}

/// `value` as compact JSON text in a new string.
pub fn value_to_string(value: &Json<'_>) -> String {
    let mut out = Vec::new();
    write_value(&mut out, value);
    // write_value only writes valid UTF-8: the strings come from &str.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends a number. Non-finite values (which JSON cannot carry) are
/// written as `null`.
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    use std::io::Write;
    if f.is_finite() {
        // Both print the shortest text that reads back as the same f64.
        // Display never uses an exponent, so 1e308 would become 309 digits
        // with no fraction: an integer too large for our own parser (and
        // an int, not a float, to others). Debug switches to `1e308` /
        // `1e-7` outside [1e-4, 1e16), so use it there.
        let a = f.abs();
        if a == 0.0 {
            // "-0" reads back as the integer 0, so a negative zero would
            // not survive a second round trip: write both zeros as 0.
            out.push(b'0');
        } else if !(1e-4..1e16).contains(&a) {
            let _ = write!(out, "{f:?}");
        } else {
            let _ = write!(out, "{f}");
        }
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Appends `s` as a JSON string literal (quotes included), escaping per
/// RFC 8259: `"` and `\`, and control characters.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        let mut body = text.as_bytes().to_vec();
        let mut buffers = Buffers::default();
        let tape = parse(&mut body, &mut buffers).unwrap();
        value_to_string(&tape.as_value())
    }

    #[test]
    fn writes_values_back_compactly() {
        assert_eq!(
            roundtrip(r#" {"a" : [1, -2, 2.5, true, null, "x\"y"], "b": {}, "c": []} "#),
            r#"{"a":[1,-2,2.5,true,null,"x\"y"],"b":{},"c":[]}"#
        );
    }

    /// Found by fuzz/json_parse: 1e308 was written as 309 digits, which
    /// `parse` itself rejects (an integer beyond u64).
    #[test]
    fn large_and_tiny_floats_are_written_so_they_parse_again() {
        assert_eq!(
            roundtrip("[1e308,-1.5E-10,1e16,2.5,-0.5,1e-4,123456.75]"),
            "[1e308,-1.5e-10,1e16,2.5,-0.5,0.0001,123456.75]"
        );
        let written = roundtrip(r#"[1,-0,1e308,-1.5E-10,"\u0000",-9223372036854775808]"#);
        let mut again = written.clone().into_bytes();
        let tape = parse(&mut again, &mut Buffers::default()).expect("written JSON parses");
        assert_eq!(value_to_string(&tape.as_value()), written);
    }

    #[test]
    fn rejects_absurd_nesting_without_recursing() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let mut body = deep.into_bytes();
        let mut buffers = Buffers::default();
        let err = parse(&mut body, &mut buffers).unwrap_err();
        assert!(err.message.contains("deeper than"), "{err}");

        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        let mut body = ok.into_bytes();
        assert!(parse(&mut body, &mut buffers).is_ok());
        let too_deep = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        let mut body = too_deep.into_bytes();
        assert!(parse(&mut body, &mut buffers).is_err());
    }

    #[test]
    fn schemas_get_lower_case_type_names_and_keep_their_data() {
        let mut body = br#"{"type":"OBJECT","properties":{"type":{"type":"STRING","enum":["A","B"]},"n":{"type":["INTEGER","null"],"default":"X"}},"required":["type"]}"#.to_vec();
        let mut buffers = Buffers::default();
        let tape = parse(&mut body, &mut buffers).unwrap();
        let mut out = Vec::new();
        write_schema(&mut out, &tape.as_value());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"object","properties":{"type":{"type":"string","enum":["A","B"]},"n":{"type":["integer","null"],"default":"X"}},"required":["type"]}"#
        );
    }

    #[test]
    fn rejects_invalid_json() {
        let mut buffers = Buffers::default();
        for bad in ["{", "{\"a\":}", "nul", "[1,]", ""] {
            let mut body = bad.as_bytes().to_vec();
            assert!(parse(&mut body, &mut buffers).is_err(), "{bad}");
        }
    }

    #[test]
    fn zero_is_written_without_a_sign_so_rewriting_is_stable() {
        // Found by fuzz/json_parse: -1.5E-10203685 is -0.0, written "-0",
        // which parses back as the integer 0 and is then written "0".
        let once = roundtrip("[-0.0,-1.5E-10203685,0.0]");
        assert_eq!(once, "[0,0,0]");
        assert_eq!(roundtrip(&once), once);
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        write_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"".as_bytes());
    }
}
