//! Scenario rules in the style of claude-code-router: send background
//! (small-model) requests, thinking requests, long contexts and web searches
//! to a model chosen for the job.
//!
//! Rules are ordered and the first match wins. The request's traits come from
//! [`traits_of_body`], a scan of the raw JSON body for a few keys, so routing
//! costs no parse: a handful of SIMD substring searches over the body.

use std::sync::LazyLock;

use memchr::memmem::{self, Finder};

/// The four needles' searchers, built once: building a `Finder` (picking
/// rare bytes, setting up the SIMD prefilter) costs more than scanning a
/// small body, and `memmem::find_iter` would rebuild it on every call.
static FINDERS: LazyLock<[Finder<'static>; 4]> = LazyLock::new(|| {
    [
        Finder::new(b"\"thinking"),
        Finder::new(b"\"reasoning"),
        Finder::new(b"\"web_search"),
        Finder::new(b"\"google"),
    ]
});

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The requested model matches one of these globs (any number of `*`),
    /// e.g. `"claude-3-5-haiku*"`: Claude Code asks its small model for
    /// titles, summaries and other background work.
    Background {
        /// Globs of small/background model names.
        models: Vec<String>,
    },
    /// The request asks for extended thinking / reasoning.
    Thinking,
    /// The estimated prompt size is at least `min_tokens`.
    LongContext {
        /// Threshold in estimated tokens (see [`traits_of_body`]).
        min_tokens: u64,
    },
    /// The request offers a server-side web search tool.
    WebSearch,
}

/// One scenario rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// When the rule applies.
    pub condition: Condition,
    /// A model name or `provider/model`, resolved through the model table.
    pub target: String,
}

/// What [`traits_of_body`] found in a request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTraits {
    /// Thinking/reasoning was requested.
    pub thinking: bool,
    /// Rough prompt size in tokens.
    pub estimated_tokens: u64,
    /// A web search tool is offered.
    pub web_search: bool,
}

/// The first rule matching `model` and `traits`, as its target.
pub fn pick<'r>(rules: &'r [Rule], model: &str, traits: &RequestTraits) -> Option<&'r str> {
    rules
        .iter()
        .find(|r| match &r.condition {
            Condition::Background { models } => models.iter().any(|g| glob_match(g, model)),
            Condition::Thinking => traits.thinking,
            Condition::LongContext { min_tokens } => traits.estimated_tokens >= *min_tokens,
            Condition::WebSearch => traits.web_search,
        })
        .map(|r| r.target.as_str())
}

/// Glob match with any number of `*` (no other metacharacters). Greedy with
/// one backtrack point, so linear in practice for model-name patterns.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position after the last '*' seen, and the text index it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last '*' eat one more byte and retry.
            pi = sp;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Reads a request's routing traits from its raw JSON body without parsing it.
///
/// Keys are found as `"key"` followed by optional whitespace and `:`. Inside a
/// JSON string every `"` is escaped, so a key's bytes cannot come from text
/// the user wrote; a value equal to a key name (`"type":"thinking"`) is told
/// apart by what follows it.
///
/// - `thinking`: Anthropic `"thinking":{"type":"enabled",...}` (not
///   `"disabled"`); OpenAI Chat `"reasoning_effort"` other than `"none"`;
///   OpenAI Responses `"reasoning":{"effort":...}` (effort other than
///   `"none"`; OpenRouter's `"max_tokens"` > 0 or `"enabled":true` too); Gemini `"thinkingConfig"`/`"thinking_config"` unless its
///   `thinkingBudget` is `0` (Gemini's way to switch thinking off).
/// - `web_search`: a `"type"` or `"name"` whose value starts with
///   `web_search` (Anthropic `web_search_20250305`, OpenAI Responses
///   `web_search`/`web_search_preview`), OpenAI Chat `"web_search_options"`,
///   or a Gemini `googleSearch`/`google_search` (and `...Retrieval`) tool.
/// - `estimated_tokens`: body bytes / 4. BPE tokenizers average about four
///   bytes of English or code per token, and JSON punctuation and keys cost
///   tokens too, so this is within tens of percent for text; it overcounts
///   inline base64 images (a 1 MB image counts 250k, the model bills ~1.5k)
///   and undercounts CJK (~3 bytes per token). Over-counting is the safe side
///   for a long-context threshold; counting exactly would mean a tokenizer
///   per model on the request path. O(1), since the length is known.
///
/// Cost: four substring searches over the body (`"thinking`, `"reasoning`,
/// `"web_search`, `"google`), each stopping at its first decisive hit.
pub fn traits_of_body(body: &[u8]) -> RequestTraits {
    RequestTraits {
        thinking: thinking_requested(body),
        estimated_tokens: body.len() as u64 / 4,
        web_search: web_search_offered(body),
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn skip_ws_back(b: &[u8], mut i: usize) -> usize {
    // `i` is one past the last byte to look at.
    while i > 0 && matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'\r') {
        i -= 1;
    }
    i
}

/// If a `:` follows `i` (after whitespace), the index of the value's first
/// byte: so the string ending just before `i` was a key.
fn value_after_key(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_ws(b, i);
    (b.get(i) == Some(&b':')).then(|| skip_ws(b, i + 1))
}

/// The bytes of the object starting at `b[i] == '{'`, up to its first `}`.
/// The objects looked into here (`thinking`, `reasoning`, `thinkingConfig`)
/// hold only scalars, so the first `}` ends them.
fn flat_object(b: &[u8], i: usize) -> Option<&[u8]> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let end = memchr::memchr(b'}', &b[i..]).map_or(b.len(), |e| i + e);
    Some(&b[i..end])
}

/// The value of `"key"` inside `obj` (a flat object), from its first byte.
fn field<'a>(obj: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(at) = memmem::find(&obj[from..], key) {
        let after = from + at + key.len();
        if let Some(v) = value_after_key(obj, after) {
            return Some(&obj[v..]);
        }
        from = after;
    }
    None
}

fn thinking_requested(b: &[u8]) -> bool {
    // `"thinking` finds Anthropic's `"thinking"` and Gemini's
    // `"thinkingConfig"`; `"reasoning` finds both OpenAI spellings.
    for at in FINDERS[0].find_iter(b) {
        let rest = &b[at + 9..];
        if rest.starts_with(b"\"") {
            let Some(v) = value_after_key(b, at + 10) else {
                continue;
            };
            if let Some(obj) = flat_object(b, v) {
                if field(obj, b"\"type\"").is_some_and(|t| t.starts_with(b"\"enabled\"")) {
                    return true;
                }
            }
        } else if rest.starts_with(b"Config\"") || rest.starts_with(b"_config\"") {
            let key_end = at + 9 + if rest[0] == b'C' { 7 } else { 8 };
            let Some(v) = value_after_key(b, key_end) else {
                continue;
            };
            if let Some(obj) = flat_object(b, v) {
                let off = ["\"thinkingBudget\"", "\"thinking_budget\""]
                    .iter()
                    .any(|k| field(obj, k.as_bytes()).is_some_and(is_zero));
                if !off {
                    return true;
                }
            }
        }
    }
    for at in FINDERS[1].find_iter(b) {
        let rest = &b[at + 10..];
        if rest.starts_with(b"_effort\"") {
            let Some(v) = value_after_key(b, at + 18) else {
                continue;
            };
            if b[v..].starts_with(b"\"") && !b[v..].starts_with(b"\"none\"") {
                return true;
            }
        } else if rest.starts_with(b"\"") {
            let Some(v) = value_after_key(b, at + 11) else {
                continue;
            };
            if let Some(obj) = flat_object(b, v) {
                // OpenAI Responses sets `effort`; OpenRouter's unified
                // `reasoning` object may instead set `max_tokens` or
                // `"enabled": true`.
                let effort = field(obj, b"\"effort\"")
                    .is_some_and(|e| e.starts_with(b"\"") && !e.starts_with(b"\"none\""));
                let budget = field(obj, b"\"max_tokens\"").is_some_and(|m| !is_zero(m));
                let enabled = field(obj, b"\"enabled\"").is_some_and(|e| e.starts_with(b"true"));
                if effort || budget || enabled {
                    return true;
                }
            }
        }
    }
    false
}

/// A JSON number that is zero: `0` not followed by more digits or a fraction
/// with a non-zero digit (`0`, `0.0` count; `05` is not JSON anyway).
fn is_zero(v: &[u8]) -> bool {
    if !v.starts_with(b"0") {
        return false;
    }
    let mut i = 1;
    if v.get(i) == Some(&b'.') {
        i += 1;
        while v.get(i) == Some(&b'0') {
            i += 1;
        }
    }
    !v.get(i).is_some_and(|c| c.is_ascii_digit())
}

fn web_search_offered(b: &[u8]) -> bool {
    for at in FINDERS[2].find_iter(b) {
        // A value of "type" or "name": look back over `:` to the key.
        let before = skip_ws_back(b, at);
        if before > 0 && b[before - 1] == b':' {
            let key_end = skip_ws_back(b, before - 1);
            let key = &b[..key_end];
            if key.ends_with(b"\"type\"") || key.ends_with(b"\"name\"") {
                return true;
            }
        }
        // OpenAI Chat Completions' `"web_search_options": {...}`.
        if b[at + 11..].starts_with(b"_options\"") && value_after_key(b, at + 20).is_some() {
            return true;
        }
    }
    for at in FINDERS[3].find_iter(b) {
        let rest = &b[at + 7..];
        let key_len = [
            &b"Search\""[..],
            b"SearchRetrieval\"",
            b"_search\"",
            b"_search_retrieval\"",
        ]
        .iter()
        .find(|k| rest.starts_with(k))
        .map(|k| k.len());
        if let Some(n) = key_len {
            if value_after_key(b, at + 7 + n).is_some() {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(body: &str) -> RequestTraits {
        traits_of_body(body.as_bytes())
    }

    #[test]
    fn glob() {
        assert!(glob_match("claude-3-5-haiku*", "claude-3-5-haiku-20241022"));
        assert!(glob_match("*haiku*", "claude-haiku-4-5"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(!glob_match("claude-3-5-haiku*", "claude-sonnet-4"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exact2"));
    }

    #[test]
    fn anthropic_thinking() {
        let on = r#"{"model":"claude-sonnet-4","max_tokens":2048,"thinking": { "type" : "enabled", "budget_tokens": 1024 },"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(t(on).thinking);
        let pretty = "{\n  \"thinking\":\n  {\n    \"budget_tokens\": 1024,\n    \"type\":\n \"enabled\"\n  }\n}";
        assert!(t(pretty).thinking);
        let off = r#"{"model":"claude-sonnet-4","thinking":{"type":"disabled"},"messages":[]}"#;
        assert!(!t(off).thinking);
        // Thinking blocks in the history are not a request for thinking.
        let history = r#"{"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"Let me see \"thinking\": {\"type\":\"enabled\"}","signature":"abc"}]}]}"#;
        assert!(!t(history).thinking);
        assert!(!t(r#"{"messages":[{"role":"user","content":"thinking"}]}"#).thinking);
    }

    #[test]
    fn openai_reasoning() {
        assert!(t(r#"{"model":"o3","reasoning_effort":"high","messages":[]}"#).thinking);
        assert!(t(r#"{"model":"o3","reasoning_effort" : "low"}"#).thinking);
        assert!(!t(r#"{"model":"gpt-5.1","reasoning_effort":"none"}"#).thinking);
        assert!(!t(r#"{"model":"o3","reasoning_effort":null}"#).thinking);
        let responses =
            r#"{"model":"o4-mini","input":"hi","reasoning":{"effort":"medium","summary":"auto"}}"#;
        assert!(t(responses).thinking);
        // A reasoning item replayed in the input is not a request.
        let items = r#"{"input":[{"type":"reasoning","id":"rs_1","summary":[]}],"reasoning":{"summary":"auto"}}"#;
        assert!(!t(items).thinking);
        assert!(t(r#"{"model":"x","reasoning":{"max_tokens":2000}}"#).thinking);
        assert!(t(r#"{"model":"x","reasoning":{"enabled": true}}"#).thinking);
        assert!(!t(r#"{"model":"x","reasoning":{"enabled":false,"max_tokens":0}}"#).thinking);
    }

    #[test]
    fn gemini_thinking() {
        let on = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"thinkingConfig":{"thinkingBudget":2048,"includeThoughts":true}}}"#;
        assert!(t(on).thinking);
        let dynamic = r#"{"generationConfig":{"thinkingConfig":{"thinkingBudget":-1}}}"#;
        assert!(t(dynamic).thinking);
        let snake = r#"{"generation_config":{"thinking_config":{"include_thoughts":true}}}"#;
        assert!(t(snake).thinking);
        let off = r#"{"generationConfig":{"thinkingConfig":{"thinkingBudget": 0}}}"#;
        assert!(!t(off).thinking);
    }

    #[test]
    fn web_search_tools() {
        let anthropic = r#"{"model":"claude-sonnet-4","tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}],"messages":[]}"#;
        assert!(t(anthropic).web_search);
        let responses =
            r#"{"model":"gpt-4.1","tools":[{ "type" : "web_search_preview" }],"input":"news"}"#;
        assert!(t(responses).web_search);
        assert!(t(r#"{"tools":[{"type":"web_search"}]}"#).web_search);
        assert!(
            t(r#"{"model":"gpt-4o-search-preview","web_search_options":{},"messages":[]}"#)
                .web_search
        );
        let gemini = r#"{"contents":[],"tools":[{"googleSearch":{}}]}"#;
        assert!(t(gemini).web_search);
        assert!(t(r#"{"tools":[{"google_search_retrieval":{}}]}"#).web_search);
        let plain = r#"{"tools":[{"type":"function","function":{"name":"read_file"}}],"messages":[{"role":"user","content":"use \"web_search\": please, or \"googleSearch\": {}"}]}"#;
        assert!(!t(plain).web_search);
        assert!(!t(r#"{"messages":[{"role":"user","content":"google it"}]}"#).web_search);
    }

    #[test]
    fn token_estimate_and_truncated_bodies() {
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
            "a".repeat(400_000)
        );
        assert_eq!(t(&body).estimated_tokens, body.len() as u64 / 4);
        assert!(t(&body).estimated_tokens > 100_000);
        // Cut anywhere, the scan neither panics nor invents traits.
        let full = r#"{"thinking":{"type":"enabled"},"tools":[{"type":"web_search"}],"reasoning_effort":"high","generationConfig":{"thinkingConfig":{"thinkingBudget":0}},"x":{"googleSearch":{}}}"#;
        for cut in 0..full.len() {
            let _ = traits_of_body(&full.as_bytes()[..cut]);
        }
        assert_eq!(t(""), RequestTraits::default());
    }

    #[test]
    fn rules_first_match_wins() {
        let rules = vec![
            Rule {
                condition: Condition::LongContext { min_tokens: 60_000 },
                target: "gemini/gemini-2.5-pro".into(),
            },
            Rule {
                condition: Condition::Background {
                    models: vec!["claude-3-5-haiku*".into(), "*-mini".into()],
                },
                target: "ollama/qwen2.5-coder".into(),
            },
            Rule {
                condition: Condition::Thinking,
                target: "think".into(),
            },
            Rule {
                condition: Condition::WebSearch,
                target: "search".into(),
            },
        ];
        let none = RequestTraits::default();
        let thinking = RequestTraits {
            thinking: true,
            ..none
        };
        let all = RequestTraits {
            thinking: true,
            estimated_tokens: 60_000,
            web_search: true,
        };
        assert_eq!(pick(&rules, "claude-sonnet-4", &none), None);
        assert_eq!(
            pick(&rules, "claude-3-5-haiku-2024", &thinking),
            Some("ollama/qwen2.5-coder")
        );
        assert_eq!(pick(&rules, "o4-mini", &none), Some("ollama/qwen2.5-coder"));
        assert_eq!(pick(&rules, "claude-sonnet-4", &thinking), Some("think"));
        assert_eq!(
            pick(&rules, "claude-3-5-haiku", &all),
            Some("gemini/gemini-2.5-pro")
        );
        let search = RequestTraits {
            web_search: true,
            estimated_tokens: 59_999,
            ..none
        };
        assert_eq!(pick(&rules, "claude-sonnet-4", &search), Some("search"));
        assert_eq!(pick(&[], "x", &all), None);
        // From a real body: Claude Code with thinking and a web search tool.
        let body = br#"{"model":"claude-sonnet-4","max_tokens":32000,"thinking":{"budget_tokens":31999,"type":"enabled"},"tools":[{"type":"web_search_20250305","name":"web_search"}],"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(
            pick(&rules[2..], "claude-sonnet-4", &traits_of_body(body)),
            Some("think")
        );
        assert_eq!(
            pick(&rules[3..], "claude-sonnet-4", &traits_of_body(body)),
            Some("search")
        );
    }
}
