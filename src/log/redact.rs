//! Capping and redaction of request/response bodies for optional body
//! logging (off by default). Best effort by design: it removes the secrets
//! that LLM API bodies are known to carry, it is not a general DLP filter.

/// Replacement written in place of a secret.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// JSON keys whose values are secrets, normalized: ASCII lowercase with `_`
/// and `-` removed (so `api_key`, `API-Key` and `apiKey` all match `apikey`).
const SECRET_KEYS: &[&[u8]] = &[
    b"apikey",
    b"key",
    b"token",
    b"accesstoken",
    b"refreshtoken",
    b"idtoken",
    b"authorization",
    b"password",
    b"secret",
    b"clientsecret",
    b"xapikey",
    b"xgoogapikey",
];

/// Appends to `out` the first `cap` bytes of `body` with secrets replaced by
/// `[REDACTED]`; what is appended is never longer than `cap` bytes.
///
/// * The value of any JSON key named like a secret (`api_key`, `key`,
///   `token`, `access_token`, `refresh_token`, `authorization`, `password`,
///   `secret`, ... compared case-insensitively, ignoring `_` and `-`) is
///   replaced when it is a string or a number; objects and arrays are kept
///   and searched in turn.
/// * Anywhere in the text, `sk-...` keys (OpenAI, Anthropic), `Bearer ...`
///   tokens and Google `AIza...` keys are replaced.
/// * A secret cut short by the cap is still recognized and replaced.
/// * Cuts are moved back to a UTF-8 character boundary when they would
///   split one.
///
/// Allocates a scratch buffer per call; on the request path use
/// [`redact_and_cap_with`] and keep the buffers.
pub fn redact_and_cap(body: &[u8], cap: usize, out: &mut Vec<u8>) {
    let mut scratch = Vec::new();
    redact_and_cap_with(body, cap, &mut scratch, out);
}

/// [`redact_and_cap`] with a caller-owned `scratch` buffer (cleared first,
/// its content afterwards is unspecified). With `scratch` and `out` kept
/// per shard (clear `out` before each request), no allocation happens once
/// both have grown to the largest body seen (about `cap` plus the growth of
/// redaction markers).
pub fn redact_and_cap_with(body: &[u8], cap: usize, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    let input = &body[..utf8_floor(body, cap)];
    scratch.clear();
    scratch.reserve(input.len() + 16);
    redact_json_keys(input, scratch);
    let stage = &scratch[..];
    let start = out.len();
    redact_tokens(stage, out);
    let written = &out[start..];
    if written.len() > cap {
        let keep = utf8_floor(written, cap);
        out.truncate(start + keep);
    }
}

/// Largest `n <= cap` (and <= len) that does not cut a UTF-8 sequence of an
/// otherwise valid text (backs off over at most 3 continuation bytes).
fn utf8_floor(b: &[u8], cap: usize) -> usize {
    if cap >= b.len() {
        return b.len();
    }
    let mut n = cap;
    let mut steps = 0;
    while n > 0 && steps < 3 && (b[n] & 0xC0) == 0x80 {
        n -= 1;
        steps += 1;
    }
    if (b[n] & 0xC0) == 0x80 {
        cap // not UTF-8 text anyway
    } else {
        n
    }
}

/// End (index of the closing quote) of the JSON string starting with the
/// quote at `start`, or None when the input ends first.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn is_secret_key(key: &[u8]) -> bool {
    if key.len() > 32 {
        return false;
    }
    let mut norm = [0u8; 32];
    let mut n = 0;
    for &c in key {
        if c != b'_' && c != b'-' {
            norm[n] = c.to_ascii_lowercase();
            n += 1;
        }
    }
    SECRET_KEYS.contains(&&norm[..n])
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Stage 1: replace the values of secret-named keys.
fn redact_json_keys(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let Some(end) = string_end(b, i) else {
            out.extend_from_slice(&b[i..]);
            return;
        };
        out.extend_from_slice(&b[i..=end]);
        let key = &b[i + 1..end];
        i = end + 1;
        let colon = skip_ws(b, i);
        if colon >= b.len() || b[colon] != b':' || !is_secret_key(key) {
            continue;
        }
        let v = skip_ws(b, colon + 1);
        out.extend_from_slice(&b[i..v]);
        i = v;
        if i >= b.len() {
            return;
        }
        match b[i] {
            b'"' => {
                out.push(b'"');
                out.extend_from_slice(REDACTED);
                out.push(b'"');
                match string_end(b, i) {
                    Some(e) => i = e + 1,
                    None => return,
                }
            }
            b'{' | b'[' => {} // scanned as usual: nested keys still apply
            _ => {
                let mut e = i;
                while e < b.len()
                    && !matches!(b[e], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                {
                    e += 1;
                }
                let scalar = &b[i..e];
                if matches!(scalar, b"null" | b"true" | b"false") {
                    out.extend_from_slice(scalar);
                } else {
                    out.push(b'"');
                    out.extend_from_slice(REDACTED);
                    out.push(b'"');
                }
                i = e;
            }
        }
    }
}

#[inline]
fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

#[inline]
fn is_bearer_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// Length of the run at `b[from..]` of chars matching `pred`.
fn run(b: &[u8], from: usize, pred: fn(u8) -> bool) -> usize {
    b[from..].iter().take_while(|&&c| pred(c)).count()
}

/// Stage 2: replace `sk-...`, `Bearer ...` and `AIza...` anywhere.
fn redact_tokens(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if boundary {
            if let Some(len) = token_at(b, i) {
                out.extend_from_slice(REDACTED);
                i += len;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
}

/// If a secret token starts at `i`, its length.
fn token_at(b: &[u8], i: usize) -> Option<usize> {
    let rest = &b[i..];
    // A run reaching the end of the (capped) input may be a cut-off secret:
    // replace it whatever its length.
    let long_or_cut = |prefix: usize, n: usize, min: usize| {
        (n > 0 && (n >= min || i + prefix + n == b.len())).then_some(prefix + n)
    };
    if rest.starts_with(b"sk-") {
        return long_or_cut(3, run(b, i + 3, is_key_char), 16);
    }
    if rest.starts_with(b"AIza") {
        return long_or_cut(4, run(b, i + 4, is_key_char), 30);
    }
    if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"bearer ") {
        let spaces = run(b, i + 7, |c| c == b' ');
        let n = run(b, i + 7 + spaces, is_bearer_char);
        return (n > 0).then_some(7 + spaces + n);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red(body: &str, cap: usize) -> String {
        let mut out = Vec::new();
        redact_and_cap(body.as_bytes(), cap, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn secret_keys_redacted_case_insensitive() {
        let body = r#"{"model":"gpt-4o","api_key":"abc123","Token": "t0k","nested":{"PASSWORD":"hunter2","refresh_token":"r","access_token":"a","authorization":"xyz","secret":"s","key":"k","max_tokens":100}}"#;
        let got = red(body, 10_000);
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["api_key"], "[REDACTED]");
        assert_eq!(v["Token"], "[REDACTED]");
        let n = &v["nested"];
        for k in [
            "PASSWORD",
            "refresh_token",
            "access_token",
            "authorization",
            "secret",
            "key",
        ] {
            assert_eq!(n[k], "[REDACTED]", "{k}");
        }
        assert_eq!(n["max_tokens"], 100);
        for s in ["abc123", "t0k", "hunter2", "xyz"] {
            assert!(!got.contains(s), "{s} leaked in {got}");
        }
    }

    #[test]
    fn number_values_and_literals() {
        let got = red(r#"{"password": 123456, "token": null, "key":true}"#, 1000);
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["password"], "[REDACTED]");
        assert!(v["token"].is_null());
        assert_eq!(v["key"], true);
    }

    #[test]
    fn escaped_quotes_in_values() {
        let got = red(r#"{"secret":"a\"b\\","x":"y"}"#, 1000);
        assert_eq!(got, r#"{"secret":"[REDACTED]","x":"y"}"#);
    }

    #[test]
    fn objects_under_secret_keys_are_searched() {
        let got = red(r#"{"key":{"name":"n","token":"t"}}"#, 1000);
        assert_eq!(got, r#"{"key":{"name":"n","token":"[REDACTED]"}}"#);
    }

    #[test]
    fn token_patterns_anywhere() {
        let got = red(
            r#"{"messages":[{"role":"user","content":"my key is sk-proj-ABCDEFGHIJKLMNOPQRSTUV and sk-ant-api03-xyzxyzxyzxyzxyzxyz, header Authorization: Bearer eyJhbGciOi.J9.x_y, google AIzaSyA1234567890abcdefghijklmnopqrstu"}]}"#,
            10_000,
        );
        assert!(!got.contains("ABCDEFGH"), "{got}");
        assert!(!got.contains("xyzxyz"), "{got}");
        assert!(!got.contains("eyJhbG"), "{got}");
        assert!(!got.contains("AIzaSy"), "{got}");
        assert_eq!(got.matches("[REDACTED]").count(), 4, "{got}");
        serde_json::from_str::<serde_json::Value>(&got).unwrap();
    }

    #[test]
    fn no_false_positives_inside_words() {
        let body = "task-manager risk-free sk-learn AIzard bearer";
        assert_eq!(red(body, 1000), body);
    }

    #[test]
    fn cap_truncates_and_redacts_cut_secrets() {
        let body = r#"{"model":"m","api_key":"sk-0123456789abcdef"}"#;
        // Cut in the middle of the secret value.
        let cut = body.find("sk-").unwrap() + 6;
        let got = red(body, cut);
        assert!(got.len() <= cut);
        assert!(!got.contains("sk-012"), "{got}");
        // Cut right after a short sk- prefix outside of a secret key.
        let got = red("see sk-abcdefghijklmnopqrstuvwxyz", 10);
        assert!(!got.contains("sk-abc"), "{got}");
        assert!(got.len() <= 10);
    }

    #[test]
    fn output_never_exceeds_cap() {
        let body = r#"{"key":1,"key":2,"key":3,"key":4}"#;
        for cap in 0..body.len() + 5 {
            let mut out = b"prefix".to_vec();
            redact_and_cap(body.as_bytes(), cap, &mut out);
            assert!(out.len() - 6 <= cap, "cap {cap}");
            assert!(out.starts_with(b"prefix"));
            let s = &out[6..];
            for d in [b"1", b"2", b"3", b"4"] {
                assert!(!s.windows(1).any(|w| w == d), "cap {cap}: {s:?}");
            }
        }
    }

    #[test]
    fn with_scratch_matches_and_reuses() {
        let body = br#"{"api_key":"sk-0123456789abcdefghij","messages":[{"content":"hi"}]}"#;
        let mut want = Vec::new();
        redact_and_cap(body, 40, &mut want);
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        redact_and_cap_with(body, 40, &mut scratch, &mut out);
        assert_eq!(out, want);
        let (sp, op) = (scratch.as_ptr(), out.as_ptr());
        for _ in 0..10 {
            out.clear();
            redact_and_cap_with(body, 40, &mut scratch, &mut out);
            assert_eq!(out, want);
        }
        // Warm: the same buffers, no reallocation.
        assert_eq!((scratch.as_ptr(), out.as_ptr()), (sp, op));
    }

    #[test]
    fn cap_respects_utf8() {
        let got = red("héllo", 2); // 'é' is bytes 1..3
        assert_eq!(got, "h");
        let got = red("🦀🦀", 5);
        assert_eq!(got, "🦀");
        assert_eq!(red("", 10), "");
        assert_eq!(red("abc", 0), "");
    }
}
