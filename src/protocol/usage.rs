//! Token usage as providers report it, found in response bytes without a
//! parse: the gateway forwards bodies untouched and only looks for the
//! usage numbers on the way.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// Token counts reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u32>,
    pub output: Option<u32>,
    pub cached: Option<u32>,
}

/// The searched keys, each a `Finder` built once: `memmem::find` builds
/// one (with its SIMD tables) on every call, and these run on every piece
/// of every response (~1% of the gateway's CPU in a profile).
macro_rules! finders {
    ($($name:ident = $needle:expr;)*) => {
        $(static $name: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new($needle));)*
    };
}
finders! {
    ANY_TOKENS = b"_tokens\"";
    ANY_TOKEN_COUNT = b"TokenCount\"";
    PROMPT_TOKENS = b"\"prompt_tokens\"";
    COMPLETION_TOKENS = b"\"completion_tokens\"";
    CACHED_TOKENS = b"\"cached_tokens\"";
    INPUT_TOKENS = b"\"input_tokens\"";
    CACHE_READ_INPUT_TOKENS = b"\"cache_read_input_tokens\"";
    CACHE_CREATION_INPUT_TOKENS = b"\"cache_creation_input_tokens\"";
    OUTPUT_TOKENS = b"\"output_tokens\"";
    PROMPT_TOKEN_COUNT = b"\"promptTokenCount\"";
    THOUGHTS_TOKEN_COUNT = b"\"thoughtsTokenCount\"";
    CANDIDATES_TOKEN_COUNT = b"\"candidatesTokenCount\"";
    CACHED_CONTENT_TOKEN_COUNT = b"\"cachedContentTokenCount\"";
}

/// Looks for OpenAI's usage fields (`prompt_tokens`, `completion_tokens`,
/// `cached_tokens`) in `bytes` and records the numbers found. Meant to be
/// called on each piece of a response as it passes; a field split across
/// two pieces is missed (usage then stays partly unknown, never wrong).
pub fn scan_openai_usage(bytes: &[u8], usage: &mut Usage) {
    // Usage is a few dozen bytes near the end; skip pieces without it fast.
    if ANY_TOKENS.find(bytes).is_none() {
        return;
    }
    if let Some(n) = number_after(bytes, &PROMPT_TOKENS) {
        usage.input = Some(n);
    }
    if let Some(n) = number_after(bytes, &COMPLETION_TOKENS) {
        usage.output = Some(n);
    }
    if let Some(n) = number_after(bytes, &CACHED_TOKENS) {
        usage.cached = Some(n);
    }
}

/// Looks for Anthropic's usage fields. `message_start` carries the input
/// count and `message_delta` the final output count, so scanning every
/// piece in order leaves the final numbers. The input is reported as the
/// whole prompt (cache reads included), the way OpenAI counts it.
pub fn scan_anthropic_usage(bytes: &[u8], usage: &mut Usage) {
    if ANY_TOKENS.find(bytes).is_none() {
        return;
    }
    if let Some(n) = number_after(bytes, &INPUT_TOKENS) {
        let cached = number_after(bytes, &CACHE_READ_INPUT_TOKENS);
        let created = number_after(bytes, &CACHE_CREATION_INPUT_TOKENS).unwrap_or(0);
        usage.input = Some(
            n.saturating_add(cached.unwrap_or(0))
                .saturating_add(created),
        );
        if cached.is_some() {
            usage.cached = cached;
        }
    }
    if let Some(n) = number_after(bytes, &OUTPUT_TOKENS) {
        usage.output = Some(n);
    }
}

/// Looks for Gemini's `usageMetadata` counts (cumulative in a stream, so
/// the last piece's numbers win). Thoughts count as output.
pub fn scan_gemini_usage(bytes: &[u8], usage: &mut Usage) {
    if ANY_TOKEN_COUNT.find(bytes).is_none() {
        return;
    }
    if let Some(n) = number_after(bytes, &PROMPT_TOKEN_COUNT) {
        usage.input = Some(n);
    }
    let thoughts = number_after(bytes, &THOUGHTS_TOKEN_COUNT).unwrap_or(0);
    if let Some(n) = number_after(bytes, &CANDIDATES_TOKEN_COUNT) {
        usage.output = Some(n.saturating_add(thoughts));
    }
    if let Some(n) = number_after(bytes, &CACHED_CONTENT_TOKEN_COUNT) {
        usage.cached = Some(n);
    }
}

/// The usage scanner for bodies written in `dialect`.
pub fn scanner_for(dialect: super::ir::Dialect) -> fn(&[u8], &mut Usage) {
    use super::ir::Dialect;
    match dialect {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => scan_openai_usage,
        Dialect::Anthropic => scan_anthropic_usage,
        Dialect::Gemini => scan_gemini_usage,
    }
}

/// The unsigned integer following `key` and a colon (JSON whitespace
/// allowed), if there is one.
fn number_after(bytes: &[u8], key: &Finder<'static>) -> Option<u32> {
    let at = key.find(bytes)? + key.needle().len();
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
    fn finds_anthropic_and_gemini_usage() {
        let mut u = Usage::default();
        scan_anthropic_usage(
            br#"event: message_start
data: {"message":{"usage":{"input_tokens":12,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            &mut u,
        );
        scan_anthropic_usage(
            br#"data: {"type":"message_delta","usage":{"output_tokens":30}}"#,
            &mut u,
        );
        assert_eq!(
            u,
            Usage {
                input: Some(17),
                output: Some(30),
                cached: Some(5)
            }
        );

        let mut u = Usage::default();
        scan_gemini_usage(
            br#"{"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"thoughtsTokenCount":2,"totalTokenCount":15}}"#,
            &mut u,
        );
        assert_eq!(
            u,
            Usage {
                input: Some(9),
                output: Some(6),
                cached: None
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
