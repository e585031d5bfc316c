//! Token usage as providers report it, found in response bytes without a
//! parse: the gateway forwards bodies untouched and only looks for the
//! usage numbers on the way.

use memchr::memmem;

/// Token counts reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u32>,
    pub output: Option<u32>,
    pub cached: Option<u32>,
}

/// Looks for OpenAI's usage fields (`prompt_tokens`, `completion_tokens`,
/// `cached_tokens`) in `bytes` and records the numbers found. Meant to be
/// called on each piece of a response as it passes; a field split across
/// two pieces is missed (usage then stays partly unknown, never wrong).
pub fn scan_openai_usage(bytes: &[u8], usage: &mut Usage) {
    // Usage is a few dozen bytes near the end; skip pieces without it fast.
    if memmem::find(bytes, b"_tokens\"").is_none() {
        return;
    }
    if let Some(n) = number_after(bytes, b"\"prompt_tokens\"") {
        usage.input = Some(n);
    }
    if let Some(n) = number_after(bytes, b"\"completion_tokens\"") {
        usage.output = Some(n);
    }
    if let Some(n) = number_after(bytes, b"\"cached_tokens\"") {
        usage.cached = Some(n);
    }
}

/// The unsigned integer following `key` and a colon (JSON whitespace
/// allowed), if there is one.
fn number_after(bytes: &[u8], key: &[u8]) -> Option<u32> {
    let at = memmem::find(bytes, key)? + key.len();
    let rest = &bytes[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_usage_in_a_completion() {
        let mut u = Usage::default();
        scan_openai_usage(
            br#"{"choices":[],"usage":{"prompt_tokens": 10,"completion_tokens":8,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            &mut u,
        );
        assert_eq!(
            u,
            Usage {
                input: Some(10),
                output: Some(8),
                cached: Some(4)
            }
        );
    }

    #[test]
    fn ignores_pieces_without_usage_and_bad_numbers() {
        let mut u = Usage::default();
        scan_openai_usage(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}",
            &mut u,
        );
        scan_openai_usage(br#"{"prompt_tokens":"x","completion_tokens":-1}"#, &mut u);
        assert_eq!(u, Usage::default());
    }
}
