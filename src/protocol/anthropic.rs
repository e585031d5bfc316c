//! Anthropic Messages API (`anthropic-version: 2023-06-01`), both sides:
//! client requests and answers (`/v1/messages`), and the provider side
//! when an `anthropic` upstream serves a request of another protocol.
//!
//! Mapping decisions worth knowing:
//! - Usage: the IR counts prompt tokens as OpenAI does (everything the
//!   model read), so `input = input_tokens + cache_read_input_tokens +
//!   cache_creation_input_tokens` and `cached = cache_read_input_tokens`;
//!   the encoders subtract the cached part back out.
//! - Requests sent to Anthropic must alternate roles: consecutive messages
//!   of one role are merged, tool results go first in a user turn, and
//!   messages left empty (nothing Anthropic accepts) are dropped.
//! - Anthropic has no JSON mode: a requested JSON answer becomes a system
//!   instruction.
//! - Unsigned thinking is dropped on the way to Anthropic (it rejects it).

use std::borrow::Cow;
use std::fmt;

use simd_json::prelude::*;
use simd_json::Buffers;

use crate::protocol::ir::*;
use crate::protocol::json;
use crate::sse::{self, Event};

/// The system instruction standing in for a JSON response format.
const JSON_ONLY: &str = "Respond with a single JSON object only, no prose.";

/// The output budget when the client gave none: Anthropic requires one.
const DEFAULT_MAX_TOKENS: u64 = 4096;

// ---------------------------------------------------------------------------
// Decoding helpers
// ---------------------------------------------------------------------------

/// Where a value sits in a body, for error messages. Built on the stack as
/// the decoder descends and formatted only when an error is reported.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'static str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

fn wrong(at: &Path<'_>, key: &'static str, what: &str) -> TranslateError {
    TranslateError::wrong_type(&Path::Key(at, key).to_string(), what)
}

fn missing(at: &Path<'_>, key: &'static str) -> TranslateError {
    TranslateError::missing(&Path::Key(at, key).to_string())
}

/// A field of an object; `null` counts as absent (clients send explicit
/// nulls for unset options).
fn field<'a>(v: Json<'a>, key: &str) -> Option<Json<'a>> {
    v.get(key).filter(|x| x.as_null().is_none())
}

fn opt_str<'a>(
    v: Json<'a>,
    key: &'static str,
    at: &Path<'_>,
) -> Result<Option<&'a str>, TranslateError> {
    match field(v, key) {
        None => Ok(None),
        Some(x) => x
            .into_string()
            .map(Some)
            .ok_or_else(|| wrong(at, key, "a string")),
    }
}

fn req_str<'a>(v: Json<'a>, key: &'static str, at: &Path<'_>) -> Result<&'a str, TranslateError> {
    opt_str(v, key, at)?.ok_or_else(|| missing(at, key))
}

fn opt_u64(v: Json<'_>, key: &'static str, at: &Path<'_>) -> Result<Option<u64>, TranslateError> {
    match field(v, key) {
        None => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| wrong(at, key, "a non-negative integer")),
    }
}

fn opt_f64(v: Json<'_>, key: &'static str, at: &Path<'_>) -> Result<Option<f64>, TranslateError> {
    match field(v, key) {
        None => Ok(None),
        Some(x) => x
            .cast_f64()
            .map(Some)
            .ok_or_else(|| wrong(at, key, "a number")),
    }
}

fn opt_bool(v: Json<'_>, key: &'static str, at: &Path<'_>) -> Result<Option<bool>, TranslateError> {
    match field(v, key) {
        None => Ok(None),
        Some(x) => x
            .as_bool()
            .map(Some)
            .ok_or_else(|| wrong(at, key, "a boolean")),
    }
}

fn opt_obj<'a>(
    v: Json<'a>,
    key: &'static str,
    at: &Path<'_>,
) -> Result<Option<Json<'a>>, TranslateError> {
    match field(v, key) {
        None => Ok(None),
        Some(x) if x.is_object() => Ok(Some(x)),
        Some(_) => Err(wrong(at, key, "an object")),
    }
}

fn req_obj<'a>(v: Json<'a>, key: &'static str, at: &Path<'_>) -> Result<Json<'a>, TranslateError> {
    opt_obj(v, key, at)?.ok_or_else(|| missing(at, key))
}

/// Token counts saturate at `u32::MAX` rather than wrap.
fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Client side: an Anthropic Messages request body -> IR.
pub fn decode_request<'a>(root: Json<'a>) -> Result<Request<'a>, TranslateError> {
    if !root.is_object() {
        return Err(TranslateError::new("the body must be a JSON object"));
    }
    let at = Path::Root;
    let mut req = Request {
        model: Cow::Borrowed(req_str(root, "model", &at)?),
        ..Request::default()
    };

    if let Some(system) = field(root, "system") {
        let at = Path::Key(&at, "system");
        if let Some(s) = system.into_string() {
            req.system.push(Part::Text(Cow::Borrowed(s)));
        } else if let Some(blocks) = system.as_array() {
            req.system.reserve(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let at = Path::Index(&at, i);
                if !block.is_object() {
                    return Err(TranslateError::wrong_type(&at.to_string(), "an object"));
                }
                // Only text is defined for system blocks; anything else is
                // kept for an Anthropic upstream to judge.
                if req_str(block, "type", &at)? == "text" {
                    req.system
                        .push(Part::Text(Cow::Borrowed(req_str(block, "text", &at)?)));
                } else {
                    req.system.push(Part::Raw {
                        dialect: Dialect::Anthropic,
                        value: block,
                    });
                }
            }
        } else {
            return Err(TranslateError::wrong_type("system", "a string or an array"));
        }
    }

    let messages = field(root, "messages").ok_or_else(|| TranslateError::missing("messages"))?;
    let messages = messages
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("messages", "an array"))?;
    let mat = Path::Key(&at, "messages");
    req.messages.reserve(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let at = Path::Index(&mat, i);
        if !m.is_object() {
            return Err(TranslateError::wrong_type(&at.to_string(), "an object"));
        }
        let role = match req_str(m, "role", &at)? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => return Err(wrong(&at, "role", "\"user\" or \"assistant\"")),
        };
        let content = field(m, "content").ok_or_else(|| missing(&at, "content"))?;
        let parts = decode_content(content, &Path::Key(&at, "content"))?;
        req.messages.push(Message { role, parts });
    }

    if let Some(tools) = field(root, "tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| TranslateError::wrong_type("tools", "an array"))?;
        let tat = Path::Key(&at, "tools");
        req.tools.reserve(tools.len());
        for (i, t) in tools.iter().enumerate() {
            let at = Path::Index(&tat, i);
            if !t.is_object() {
                return Err(TranslateError::wrong_type(&at.to_string(), "an object"));
            }
            // Server tools (web_search_20250305, bash_20250124...) run at
            // Anthropic and mean nothing to another provider.
            if opt_str(t, "type", &at)?.is_some_and(|ty| ty != "custom") {
                continue;
            }
            req.tools.push(Tool {
                name: Cow::Borrowed(req_str(t, "name", &at)?),
                description: opt_str(t, "description", &at)?.map(Cow::Borrowed),
                parameters: opt_obj(t, "input_schema", &at)?,
                strict: opt_bool(t, "strict", &at)?,
            });
        }
    }

    if let Some(tc) = opt_obj(root, "tool_choice", &at)? {
        let at = Path::Key(&at, "tool_choice");
        req.tool_choice = Some(match req_str(tc, "type", &at)? {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool(Cow::Borrowed(req_str(tc, "name", &at)?)),
            _ => {
                return Err(wrong(
                    &at,
                    "type",
                    "one of \"auto\", \"any\", \"tool\", \"none\"",
                ))
            }
        });
        if opt_bool(tc, "disable_parallel_tool_use", &at)? == Some(true) {
            req.parallel_tool_calls = Some(false);
        }
    }

    req.max_tokens = Some(
        opt_u64(root, "max_tokens", &at)?.ok_or_else(|| TranslateError::missing("max_tokens"))?,
    );
    req.temperature = opt_f64(root, "temperature", &at)?;
    req.top_p = opt_f64(root, "top_p", &at)?;
    req.top_k = opt_u64(root, "top_k", &at)?;
    if let Some(stops) = field(root, "stop_sequences") {
        let stops = stops
            .as_array()
            .ok_or_else(|| TranslateError::wrong_type("stop_sequences", "an array"))?;
        req.stop.reserve(stops.len());
        for (i, s) in stops.iter().enumerate() {
            let s = s.into_string().ok_or_else(|| {
                TranslateError::wrong_type(&format!("stop_sequences[{i}]"), "a string")
            })?;
            req.stop.push(Cow::Borrowed(s));
        }
    }
    req.stream = opt_bool(root, "stream", &at)?.unwrap_or(false);

    if let Some(th) = opt_obj(root, "thinking", &at)? {
        let at = Path::Key(&at, "thinking");
        req.thinking = match req_str(th, "type", &at)? {
            "enabled" => Some(Thinking {
                budget_tokens: opt_u64(th, "budget_tokens", &at)?,
                effort: None,
            }),
            // The model picks its own budget: no number to pass on.
            "adaptive" => Some(Thinking {
                budget_tokens: None,
                effort: None,
            }),
            "disabled" => None,
            _ => {
                return Err(wrong(
                    &at,
                    "type",
                    "one of \"enabled\", \"adaptive\", \"disabled\"",
                ))
            }
        };
    }
    // `output_config.effort` is Anthropic's newer way to ask for reasoning
    // depth; it refines a thinking request rather than starting one.
    if let Some(oc) = opt_obj(root, "output_config", &at)? {
        let at = Path::Key(&at, "output_config");
        if let (Some(t), Some(e)) = (req.thinking.as_mut(), opt_str(oc, "effort", &at)?) {
            t.effort = Effort::parse(e);
        }
        if let Some(format) = opt_obj(oc, "format", &at)? {
            req.response_format = decode_output_format(format, &Path::Key(&at, "format"))?;
        }
    }
    // Structured outputs (beta): `output_format: {type: json_schema, schema}`.
    if let Some(format) = opt_obj(root, "output_format", &at)? {
        req.response_format = decode_output_format(format, &Path::Key(&at, "output_format"))?;
    }

    if let Some(meta) = opt_obj(root, "metadata", &at)? {
        req.user = opt_str(meta, "user_id", &Path::Key(&at, "metadata"))?.map(Cow::Borrowed);
    }
    Ok(req)
}

fn decode_output_format<'a>(
    format: Json<'a>,
    at: &Path<'_>,
) -> Result<Option<ResponseFormat<'a>>, TranslateError> {
    Ok(match req_str(format, "type", at)? {
        "json_schema" => Some(ResponseFormat::JsonSchema {
            name: Cow::Borrowed("output"),
            schema: req_obj(format, "schema", at)?,
            strict: Some(true),
        }),
        _ => None,
    })
}

/// A message's `content`: a string or an array of blocks.
fn decode_content<'a>(content: Json<'a>, at: &Path<'_>) -> Result<Vec<Part<'a>>, TranslateError> {
    if let Some(s) = content.into_string() {
        return Ok(vec![Part::Text(Cow::Borrowed(s))]);
    }
    let blocks = content
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type(&at.to_string(), "a string or an array"))?;
    let mut parts = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        parts.push(decode_block(block, &Path::Index(at, i))?);
    }
    Ok(parts)
}

/// One content block, in a request message or a response.
fn decode_block<'a>(block: Json<'a>, at: &Path<'_>) -> Result<Part<'a>, TranslateError> {
    if !block.is_object() {
        return Err(TranslateError::wrong_type(&at.to_string(), "an object"));
    }
    Ok(match req_str(block, "type", at)? {
        "text" => Part::Text(Cow::Borrowed(req_str(block, "text", at)?)),
        "image" => {
            let src = req_obj(block, "source", at)?;
            let sat = Path::Key(at, "source");
            match req_str(src, "type", &sat)? {
                "base64" => Part::Image(Image::Base64 {
                    media_type: Cow::Borrowed(req_str(src, "media_type", &sat)?),
                    data: Cow::Borrowed(req_str(src, "data", &sat)?),
                }),
                "url" => Part::Image(Image::Url(Cow::Borrowed(req_str(src, "url", &sat)?))),
                // Files API references and the like: Anthropic-only.
                _ => Part::Raw {
                    dialect: Dialect::Anthropic,
                    value: block,
                },
            }
        }
        "tool_use" => Part::ToolCall(ToolCall {
            id: Cow::Borrowed(req_str(block, "id", at)?),
            name: Cow::Borrowed(req_str(block, "name", at)?),
            arguments: match field(block, "input") {
                None => Cow::Borrowed("{}"),
                Some(v) if v.is_object() => Cow::Owned(json::value_to_string(&v)),
                Some(_) => return Err(wrong(at, "input", "an object")),
            },
        }),
        "tool_result" => {
            let call_id = Cow::Borrowed(req_str(block, "tool_use_id", at)?);
            let content = match field(block, "content") {
                None => Vec::new(),
                Some(c) => {
                    let mut parts = decode_content(c, &Path::Key(at, "content"))?;
                    // The IR carries text and images in tool results; other
                    // blocks (documents, search results) have no equivalent.
                    parts.retain(|p| matches!(p, Part::Text(_) | Part::Image(_)));
                    parts
                }
            };
            Part::ToolResult(ToolResult {
                call_id,
                name: None,
                content,
                is_error: opt_bool(block, "is_error", at)?.unwrap_or(false),
            })
        }
        "thinking" => Part::Thinking {
            text: Cow::Borrowed(req_str(block, "thinking", at)?),
            // An empty signature is no signature: it would not verify.
            signature: opt_str(block, "signature", at)?
                .filter(|s| !s.is_empty())
                .map(Cow::Borrowed),
        },
        "redacted_thinking" => Part::RedactedThinking(Cow::Borrowed(req_str(block, "data", at)?)),
        _ => Part::Raw {
            dialect: Dialect::Anthropic,
            value: block,
        },
    })
}

/// Whether Anthropic accepts this part in a message: it rejects empty text
/// blocks and unsigned thinking, and other protocols' raw blocks mean
/// nothing to it.
fn sendable(p: &Part<'_>) -> bool {
    match p {
        Part::Text(t) => !t.is_empty(),
        Part::Thinking { signature, .. } => signature.as_deref().is_some_and(|s| !s.is_empty()),
        Part::Raw { dialect, .. } => *dialect == Dialect::Anthropic,
        Part::Image(_) | Part::RedactedThinking(_) | Part::ToolCall(_) | Part::ToolResult(_) => {
            true
        }
    }
}

/// Provider side: IR -> an Anthropic Messages request body.
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"model\":");
    json::write_string(out, &req.model);

    let budget = req
        .thinking
        .filter(|_| thinking_possible(req))
        .map(|t| t.budget());
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(b) = budget {
        // Anthropic requires max_tokens > budget_tokens.
        if max_tokens <= b {
            max_tokens = b + DEFAULT_MAX_TOKENS;
        }
    }
    out.extend_from_slice(b",\"max_tokens\":");
    json::write_u64(out, max_tokens);

    write_system(req, out);

    out.extend_from_slice(b",\"messages\":[");
    write_messages(&req.messages, out);
    out.push(b']');

    if !req.tools.is_empty() {
        out.extend_from_slice(b",\"tools\":[");
        for (i, t) in req.tools.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            json::write_string(out, &t.name);
            if let Some(d) = t.description.as_deref().filter(|d| !d.is_empty()) {
                out.extend_from_slice(b",\"description\":");
                json::write_string(out, d);
            }
            out.extend_from_slice(b",\"input_schema\":");
            write_schema(t.parameters.as_ref(), out);
            out.push(b'}');
        }
        out.push(b']');

        // tool_choice is only accepted alongside tools.
        let disable_parallel = req.parallel_tool_calls == Some(false);
        let choice: Option<&[u8]> = match (&req.tool_choice, disable_parallel) {
            (None, false) => None,
            (None, true) | (Some(ToolChoice::Auto), _) => Some(b"{\"type\":\"auto\""),
            (Some(ToolChoice::Required), _) => Some(b"{\"type\":\"any\""),
            (Some(ToolChoice::None), _) => Some(b"{\"type\":\"none\""),
            (Some(ToolChoice::Tool(_)), _) => Some(b"{\"type\":\"tool\""),
        };
        if let Some(choice) = choice {
            out.extend_from_slice(b",\"tool_choice\":");
            out.extend_from_slice(choice);
            if let Some(ToolChoice::Tool(name)) = &req.tool_choice {
                out.extend_from_slice(b",\"name\":");
                json::write_string(out, name);
            }
            // `none` takes no other field.
            if disable_parallel && req.tool_choice != Some(ToolChoice::None) {
                out.extend_from_slice(b",\"disable_parallel_tool_use\":true");
            }
            out.push(b'}');
        }
    }

    if let Some(b) = budget {
        out.extend_from_slice(b",\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":");
        json::write_u64(out, b);
        out.push(b'}');
    } else {
        // Anthropic rejects sampling parameters while thinking.
        if let Some(t) = req.temperature {
            out.extend_from_slice(b",\"temperature\":");
            json::write_f64(out, t);
        }
        if let Some(p) = req.top_p {
            out.extend_from_slice(b",\"top_p\":");
            json::write_f64(out, p);
        }
        if let Some(k) = req.top_k {
            out.extend_from_slice(b",\"top_k\":");
            json::write_u64(out, k);
        }
    }
    if !req.stop.is_empty() {
        out.extend_from_slice(b",\"stop_sequences\":[");
        for (i, s) in req.stop.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json::write_string(out, s);
        }
        out.push(b']');
    }
    if let Some(user) = &req.user {
        out.extend_from_slice(b",\"metadata\":{\"user_id\":");
        json::write_string(out, user);
        out.push(b'}');
    }
    if req.stream {
        out.extend_from_slice(b",\"stream\":true");
    }
    out.push(b'}');
}

/// Whether Anthropic would accept thinking on this request. It refuses
/// thinking with a forced tool choice, and in a tool loop whose last
/// assistant turn does not start with a signed thinking block (which a
/// conversation from a client of another protocol never has). The answer
/// matters more than the reasoning, so thinking is left off then.
fn thinking_possible(req: &Request<'_>) -> bool {
    if !req.tools.is_empty()
        && matches!(
            req.tool_choice,
            Some(ToolChoice::Required) | Some(ToolChoice::Tool(_))
        )
    {
        return false;
    }
    // The last assistant turn as it will be sent: a run of assistant
    // messages, ignoring the ones with nothing sendable.
    let msgs = &req.messages;
    let has_content = |m: &Message<'_>| m.parts.iter().any(sendable);
    let mut end = msgs.len();
    while end > 0 && (msgs[end - 1].role != Role::Assistant || !has_content(&msgs[end - 1])) {
        end -= 1;
    }
    if end == 0 {
        return true;
    }
    let mut start = end - 1;
    while start > 0 && (msgs[start - 1].role == Role::Assistant || !has_content(&msgs[start - 1])) {
        start -= 1;
    }
    let group = &msgs[start..end];
    let parts = || {
        group
            .iter()
            .flat_map(|m| m.parts.iter())
            .filter(|p| sendable(p))
    };
    if !parts().any(|p| matches!(p, Part::ToolCall(_))) {
        return true;
    }
    matches!(
        parts().next(),
        Some(Part::Thinking { .. } | Part::RedactedThinking(_))
    )
}

/// `system`: a plain string when it is one text, else text blocks, plus the
/// JSON instruction standing in for a response format.
fn write_system(req: &Request<'_>, out: &mut Vec<u8>) {
    let schema = match &req.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some(Some(schema)),
        Some(ResponseFormat::JsonObject) => Some(None),
        Some(ResponseFormat::Text) | None => None,
    };
    let n = req.system.iter().filter(|p| sendable(p)).count();
    if n == 0 && schema.is_none() {
        return;
    }
    out.extend_from_slice(b",\"system\":");
    if n == 1 && schema.is_none() {
        if let Some(Part::Text(t)) = req.system.iter().find(|p| sendable(p)) {
            json::write_string(out, t);
            return;
        }
    }
    out.push(b'[');
    let mut first = true;
    for p in req.system.iter().filter(|p| sendable(p)) {
        match p {
            Part::Text(t) => {
                sep(out, &mut first);
                write_text_block(out, t);
            }
            Part::Raw { value, .. } => {
                sep(out, &mut first);
                json::write_value(out, value);
            }
            _ => {}
        }
    }
    if let Some(schema) = schema {
        sep(out, &mut first);
        match schema {
            None => write_text_block(out, JSON_ONLY),
            Some(s) => {
                let text = format!(
                    "{JSON_ONLY} It must match this JSON Schema: {}",
                    json::value_to_string(s)
                );
                write_text_block(out, &text);
            }
        }
    }
    out.push(b']');
}

fn sep(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

fn write_text_block(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
    json::write_string(out, text);
    out.push(b'}');
}

/// A tool's `input_schema`. Anthropic requires an object schema with a
/// `type`; a schema without one (OpenAI allows `{}`) gets `"type":"object"`.
fn write_schema(schema: Option<&Json<'_>>, out: &mut Vec<u8>) {
    let Some(obj) = schema.and_then(|s| s.as_object()) else {
        out.extend_from_slice(b"{\"type\":\"object\",\"properties\":{}}");
        return;
    };
    if obj.get("type").is_some() {
        json::write_value(out, schema.unwrap_or(&Json::null()));
        return;
    }
    out.extend_from_slice(b"{\"type\":\"object\"");
    for (k, v) in obj.iter() {
        out.push(b',');
        json::write_string(out, k);
        out.push(b':');
        json::write_value(out, &v);
    }
    out.push(b'}');
}

/// The conversation, merged into alternating turns: runs of messages of one
/// role (ignoring messages with nothing sendable in between) become one
/// message, and a user turn lists its tool results first.
fn write_messages(msgs: &[Message<'_>], out: &mut Vec<u8>) {
    let has_content = |m: &Message<'_>| m.parts.iter().any(sendable);
    let mut i = 0;
    let mut first_msg = true;
    while i < msgs.len() {
        if !has_content(&msgs[i]) {
            i += 1;
            continue;
        }
        let role = msgs[i].role;
        let mut end = i + 1;
        while end < msgs.len() && (msgs[end].role == role || !has_content(&msgs[end])) {
            end += 1;
        }
        let group = &msgs[i..end];
        i = end;

        sep(out, &mut first_msg);
        out.extend_from_slice(match role {
            Role::User => b"{\"role\":\"user\",\"content\":[",
            Role::Assistant => b"{\"role\":\"assistant\",\"content\":[",
        });
        let mut first = true;
        let parts = || {
            group
                .iter()
                .flat_map(|m| m.parts.iter())
                .filter(|p| sendable(p))
        };
        if role == Role::User {
            for p in parts().filter(|p| matches!(p, Part::ToolResult(_))) {
                sep(out, &mut first);
                write_part(out, p);
            }
            for p in parts().filter(|p| !matches!(p, Part::ToolResult(_))) {
                sep(out, &mut first);
                write_part(out, p);
            }
        } else {
            for p in parts() {
                sep(out, &mut first);
                write_part(out, p);
            }
        }
        out.extend_from_slice(b"]}");
    }
}

/// One sendable content block.
fn write_part(out: &mut Vec<u8>, p: &Part<'_>) {
    match p {
        Part::Text(t) => write_text_block(out, t),
        Part::Image(img) => write_image(out, img),
        Part::Thinking { text, signature } => {
            out.extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":");
            json::write_string(out, text);
            out.extend_from_slice(b",\"signature\":");
            json::write_string(out, signature.as_deref().unwrap_or(""));
            out.push(b'}');
        }
        Part::RedactedThinking(data) => {
            out.extend_from_slice(b"{\"type\":\"redacted_thinking\",\"data\":");
            json::write_string(out, data);
            out.push(b'}');
        }
        Part::ToolCall(call) => {
            out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
            write_tool_id(out, &call.id);
            out.extend_from_slice(b",\"name\":");
            json::write_string(out, &call.name);
            out.extend_from_slice(b",\"input\":");
            write_arguments(out, &call.arguments);
            out.push(b'}');
        }
        Part::ToolResult(r) => {
            out.extend_from_slice(b"{\"type\":\"tool_result\",\"tool_use_id\":");
            write_tool_id(out, &r.call_id);
            if r.content.iter().any(|p| match p {
                Part::Text(t) => !t.is_empty(),
                Part::Image(_) => true,
                _ => false,
            }) {
                out.extend_from_slice(b",\"content\":[");
                let mut first = true;
                for c in &r.content {
                    match c {
                        Part::Text(t) if !t.is_empty() => {
                            sep(out, &mut first);
                            write_text_block(out, t);
                        }
                        Part::Image(img) => {
                            sep(out, &mut first);
                            write_image(out, img);
                        }
                        _ => {}
                    }
                }
                out.push(b']');
            }
            if r.is_error {
                out.extend_from_slice(b",\"is_error\":true");
            }
            out.push(b'}');
        }
        Part::Raw { value, .. } => json::write_value(out, value),
    }
}

fn write_image(out: &mut Vec<u8>, img: &Image<'_>) {
    match img {
        Image::Base64 { media_type, data } => {
            out.extend_from_slice(
                b"{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":",
            );
            json::write_string(out, media_type);
            out.extend_from_slice(b",\"data\":");
            json::write_string(out, data);
            out.extend_from_slice(b"}}");
        }
        Image::Url(url) => {
            out.extend_from_slice(b"{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":");
            json::write_string(out, url);
            out.extend_from_slice(b"}}");
        }
    }
}

fn tool_id_char_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A tool call id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`): other
/// characters become `_`. The same rewrite on the call and its result keeps
/// them paired.
fn write_tool_id(out: &mut Vec<u8>, id: &str) {
    if id.bytes().all(tool_id_char_ok) {
        json::write_string(out, id);
        return;
    }
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii() && tool_id_char_ok(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    json::write_string(out, &clean);
}

/// A tool call's arguments as the `input` object: written as they are when
/// they are a JSON object, else `{}` (a model can emit broken arguments;
/// the body must stay valid JSON).
fn write_arguments(out: &mut Vec<u8>, args: &str) {
    let t = args.trim();
    if t.len() >= 2 && t.starts_with('{') && t.ends_with('}') {
        // simd-json parses in place, so it checks a scratch copy.
        let mut scratch = t.as_bytes().to_vec();
        let mut buffers = Buffers::new(scratch.len());
        if json::parse(&mut scratch, &mut buffers).is_ok() {
            out.extend_from_slice(t.as_bytes());
            return;
        }
    }
    out.extend_from_slice(b"{}");
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

fn decode_stop(s: &str) -> StopReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        // end_turn, pause_turn (a server tool paused the turn) and anything new.
        _ => StopReason::EndTurn,
    }
}

fn stop_str(s: StopReason) -> &'static str {
    match s {
        StopReason::EndTurn => "end_turn",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopSequence => "stop_sequence",
        StopReason::ToolUse => "tool_use",
        StopReason::ContentFilter => "refusal",
    }
}

/// Reads an Anthropic `usage` object into `usage`, keeping what it already
/// holds for fields the object lacks (a stream reports usage in pieces).
fn read_usage(u: Json<'_>, usage: &mut Usage, parts: &mut UsageParts) {
    if let Some(n) = u.get("input_tokens").and_then(|v| v.as_u64()) {
        parts.input = Some(n);
    }
    if let Some(n) = u.get("cache_read_input_tokens").and_then(|v| v.as_u64()) {
        parts.cache_read = n;
        usage.cached = Some(clamp_u32(n));
    }
    if let Some(n) = u
        .get("cache_creation_input_tokens")
        .and_then(|v| v.as_u64())
    {
        parts.cache_creation = n;
    }
    if let Some(n) = u.get("output_tokens").and_then(|v| v.as_u64()) {
        usage.output = Some(clamp_u32(n));
    }
    if let Some(input) = parts.input {
        usage.input = Some(clamp_u32(
            input
                .saturating_add(parts.cache_read)
                .saturating_add(parts.cache_creation),
        ));
    }
}

/// Anthropic's separate prompt token counts, summed into `Usage::input`.
#[derive(Clone, Copy, Debug, Default)]
struct UsageParts {
    input: Option<u64>,
    cache_read: u64,
    cache_creation: u64,
}

/// Provider side: an Anthropic Messages response body -> IR.
pub fn decode_response<'a>(root: Json<'a>) -> Result<Response<'a>, TranslateError> {
    if !root.is_object() {
        return Err(TranslateError::new("the response must be a JSON object"));
    }
    let at = Path::Root;
    let mut resp = Response {
        id: Cow::Borrowed(opt_str(root, "id", &at)?.unwrap_or("")),
        model: Cow::Borrowed(opt_str(root, "model", &at)?.unwrap_or("")),
        ..Response::default()
    };
    let content = field(root, "content").ok_or_else(|| TranslateError::missing("content"))?;
    let blocks = content
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("content", "an array"))?;
    let cat = Path::Key(&at, "content");
    resp.content.reserve(blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let at = Path::Index(&cat, i);
        if !block.is_object() {
            return Err(TranslateError::wrong_type(&at.to_string(), "an object"));
        }
        // Answers hold text, thinking and tool calls; anything else (server
        // tool use, web search results) stays Anthropic's.
        let part = match req_str(block, "type", &at)? {
            "text" | "tool_use" | "thinking" | "redacted_thinking" => decode_block(block, &at)?,
            _ => Part::Raw {
                dialect: Dialect::Anthropic,
                value: block,
            },
        };
        resp.content.push(part);
    }
    if let Some(s) = opt_str(root, "stop_reason", &at)? {
        resp.stop = decode_stop(s);
    }
    if let Some(u) = opt_obj(root, "usage", &at)? {
        read_usage(u, &mut resp.usage, &mut UsageParts::default());
    }
    Ok(resp)
}

/// The usage object of an answer: Anthropic's `input_tokens` excludes the
/// cached prompt tokens the IR's `input` includes.
fn write_usage_fields(out: &mut Vec<u8>, usage: &Usage) {
    out.extend_from_slice(b"\"input_tokens\":");
    let input = usage.input.unwrap_or(0);
    json::write_u64(
        out,
        u64::from(input.saturating_sub(usage.cached.unwrap_or(0))),
    );
    if let Some(c) = usage.cached {
        out.extend_from_slice(b",\"cache_read_input_tokens\":");
        json::write_u64(out, u64::from(c));
    }
    out.extend_from_slice(b",\"cache_creation_input_tokens\":0,\"output_tokens\":");
    json::write_u64(out, u64::from(usage.output.unwrap_or(0)));
}

/// Client side: IR -> an Anthropic Messages response body.
pub fn encode_response(resp: &Response<'_>, _opts: &EncodeOptions, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    json::write_string(out, &resp.id);
    out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    json::write_string(out, &resp.model);
    out.extend_from_slice(b",\"content\":[");
    let mut first = true;
    for p in &resp.content {
        // An answer keeps unsigned thinking: the client shows it, and an
        // empty text block is harmless in a response.
        match p {
            Part::Text(t) => {
                sep(out, &mut first);
                write_text_block(out, t);
            }
            Part::Thinking { .. }
            | Part::RedactedThinking(_)
            | Part::ToolCall(_)
            | Part::Raw {
                dialect: Dialect::Anthropic,
                ..
            } => {
                sep(out, &mut first);
                write_part(out, p);
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"],\"stop_reason\":");
    json::write_string(out, stop_str(resp.stop));
    out.extend_from_slice(b",\"stop_sequence\":null,\"usage\":{");
    write_usage_fields(out, &resp.usage);
    out.extend_from_slice(b"}}");
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Anthropic's error `type` names and the statuses it sends them with.
fn error_type_info(ty: &str) -> Option<(u16, ErrorKind)> {
    Some(match ty {
        "invalid_request_error" => (400, ErrorKind::InvalidRequest),
        "authentication_error" => (401, ErrorKind::Authentication),
        "billing_error" => (402, ErrorKind::PermissionDenied),
        "permission_error" => (403, ErrorKind::PermissionDenied),
        "not_found_error" => (404, ErrorKind::NotFound),
        "request_too_large" => (413, ErrorKind::RequestTooLarge),
        "rate_limit_error" => (429, ErrorKind::RateLimited),
        "api_error" => (500, ErrorKind::Api),
        "timeout_error" => (504, ErrorKind::Timeout),
        "overloaded_error" => (529, ErrorKind::Overloaded),
        _ => return None,
    })
}

fn error_type_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::Api => "api_error",
    }
}

/// The first 500 characters of a body, as text.
fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(500) {
        Some((end, _)) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// Provider side: an Anthropic error body (`{"type":"error","error":{...}}`,
/// or whatever a proxy in front of it sent) -> ErrorInfo, with the status
/// the provider gave.
pub fn decode_error(status: u16, body: &mut [u8], buffers: &mut Buffers) -> ErrorInfo {
    // The parse rewrites the body in place: keep the text for the fallback.
    let fallback = body_text(body);
    let mut info = ErrorInfo::new(status, fallback);
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return info;
    }
    let Ok(tape) = json::parse(body, buffers) else {
        return info;
    };
    let root = tape.as_value();
    let err = root.get("error").filter(|e| e.is_object()).unwrap_or(root);
    if let Some(kind) = err
        .get("type")
        .and_then(|t| t.into_string())
        .and_then(error_type_info)
    {
        info.kind = kind.1;
    }
    if let Some(msg) = err.get("message").and_then(|m| m.into_string()) {
        info.message = msg.to_string();
    }
    info
}

/// Client side: ErrorInfo -> Anthropic's error body.
pub fn encode_error(err: &ErrorInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
    json::write_string(out, error_type_name(err.kind));
    out.extend_from_slice(b",\"message\":");
    json::write_string(out, &err.message);
    out.extend_from_slice(b"}}");
}

// ---------------------------------------------------------------------------
// Streaming: provider side
// ---------------------------------------------------------------------------

fn malformed(what: impl fmt::Display) -> ErrorInfo {
    ErrorInfo {
        status: 502,
        kind: ErrorKind::Api,
        message: format!("the provider sent a malformed stream event: {what}"),
    }
}

/// Provider side: Anthropic's message stream -> IR stream events.
///
/// Anthropic sends one block at a time, but the decoder does not rely on
/// its indices: each forwarded block gets the next IR index, blocks of
/// unknown types (server tool use, search results) are skipped with all
/// their events, a block starting while another is open closes that one
/// first, and deltas for a block that is not the open one are dropped.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    finished: bool,
    /// The open upstream block: its Anthropic index and, when forwarded,
    /// its IR index.
    open: Option<(u64, Option<u32>)>,
    next_index: u32,
    stop: Option<StopReason>,
    usage: Usage,
    parts: UsageParts,
}

impl StreamDecoder {
    /// A decoder for one stream.
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Handles one upstream SSE event.
    pub fn event(
        &mut self,
        event: Event<'_>,
        buffers: &mut Buffers,
        emit: &mut dyn FnMut(StreamEvent<'_>),
    ) -> Result<(), ErrorInfo> {
        if self.finished {
            return Ok(());
        }
        let name = event.name;
        let tape = json::parse(event.data, buffers).map_err(|e| malformed(e.message))?;
        let root = tape.as_value();
        if !root.is_object() {
            return Err(malformed("the data is not a JSON object"));
        }
        let ty = match root.get("type").and_then(|t| t.into_string()) {
            Some(t) => t,
            None if !name.is_empty() => name,
            None => return Err(malformed("an event has no type")),
        };
        match ty {
            "message_start" => {
                if self.started {
                    return Ok(());
                }
                let msg = root
                    .get("message")
                    .filter(|m| m.is_object())
                    .ok_or_else(|| malformed("message_start without a message"))?;
                if let Some(u) = msg.get("usage").filter(|u| u.is_object()) {
                    read_usage(u, &mut self.usage, &mut self.parts);
                }
                self.started = true;
                emit(StreamEvent::Start {
                    id: Cow::Borrowed(msg.get("id").and_then(|v| v.into_string()).unwrap_or("")),
                    model: Cow::Borrowed(
                        msg.get("model").and_then(|v| v.into_string()).unwrap_or(""),
                    ),
                    input_tokens: self.usage.input,
                });
            }
            "content_block_start" => {
                self.require_start(ty)?;
                let index = block_index(root, ty)?;
                let block = root
                    .get("content_block")
                    .filter(|b| b.is_object())
                    .ok_or_else(|| malformed("content_block_start without a content_block"))?;
                self.close_open(emit);
                let str_of = |k: &str| block.get(k).and_then(|v| v.into_string()).unwrap_or("");
                let kind = match block
                    .get("type")
                    .and_then(|t| t.into_string())
                    .unwrap_or("")
                {
                    "text" => Some(BlockKind::Text),
                    "thinking" => Some(BlockKind::Thinking),
                    "redacted_thinking" => {
                        Some(BlockKind::RedactedThinking(Cow::Borrowed(str_of("data"))))
                    }
                    "tool_use" => Some(BlockKind::ToolCall {
                        id: Cow::Borrowed(str_of("id")),
                        name: Cow::Borrowed(str_of("name")),
                    }),
                    _ => None,
                };
                let Some(kind) = kind else {
                    self.open = Some((index, None));
                    return Ok(());
                };
                let ir = self.next_index;
                self.next_index += 1;
                self.open = Some((index, Some(ir)));
                emit(StreamEvent::BlockStart {
                    index: ir,
                    block: kind,
                });
                // The start normally carries empty content; pass on any it
                // does carry so nothing is lost.
                let text = str_of("text");
                if !text.is_empty() {
                    emit(StreamEvent::Delta {
                        index: ir,
                        delta: Delta::Text(Cow::Borrowed(text)),
                    });
                }
                let thinking = str_of("thinking");
                if !thinking.is_empty() {
                    emit(StreamEvent::Delta {
                        index: ir,
                        delta: Delta::Thinking(Cow::Borrowed(thinking)),
                    });
                }
                let signature = str_of("signature");
                if !signature.is_empty() {
                    emit(StreamEvent::Delta {
                        index: ir,
                        delta: Delta::Signature(Cow::Borrowed(signature)),
                    });
                }
                if let Some(input) = block.get("input").and_then(|v| v.as_object()) {
                    if !input.is_empty() {
                        let args = block.get("input").map(|v| json::value_to_string(&v));
                        emit(StreamEvent::Delta {
                            index: ir,
                            delta: Delta::ToolArguments(Cow::Owned(args.unwrap_or_default())),
                        });
                    }
                }
            }
            "content_block_delta" => {
                self.require_start(ty)?;
                let index = block_index(root, ty)?;
                let Some((open, Some(ir))) = self.open else {
                    return Ok(());
                };
                if open != index {
                    return Ok(());
                }
                let delta = root
                    .get("delta")
                    .filter(|d| d.is_object())
                    .ok_or_else(|| malformed("content_block_delta without a delta"))?;
                let get = |k: &str| {
                    delta
                        .get(k)
                        .and_then(|v| v.into_string())
                        .ok_or_else(|| malformed(format_args!("a delta without `{k}`")))
                };
                let d = match delta
                    .get("type")
                    .and_then(|t| t.into_string())
                    .unwrap_or("")
                {
                    "text_delta" => Delta::Text(Cow::Borrowed(get("text")?)),
                    "input_json_delta" => Delta::ToolArguments(Cow::Borrowed(get("partial_json")?)),
                    "thinking_delta" => Delta::Thinking(Cow::Borrowed(get("thinking")?)),
                    "signature_delta" => Delta::Signature(Cow::Borrowed(get("signature")?)),
                    // citations_delta and future kinds have no IR form.
                    _ => return Ok(()),
                };
                emit(StreamEvent::Delta {
                    index: ir,
                    delta: d,
                });
            }
            "content_block_stop" => {
                self.require_start(ty)?;
                let index = block_index(root, ty)?;
                if self.open.is_some_and(|(open, _)| open == index) {
                    self.close_open(emit);
                }
            }
            "message_delta" => {
                self.require_start(ty)?;
                if let Some(s) = root
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(|s| s.into_string())
                {
                    self.stop = Some(decode_stop(s));
                }
                if let Some(u) = root.get("usage").filter(|u| u.is_object()) {
                    read_usage(u, &mut self.usage, &mut self.parts);
                }
            }
            "message_stop" => {
                self.require_start(ty)?;
                self.close_open(emit);
                self.finished = true;
                emit(StreamEvent::Finish {
                    stop: self.stop.unwrap_or_default(),
                    usage: self.usage,
                });
            }
            "error" => {
                let err = root.get("error").filter(|e| e.is_object()).unwrap_or(root);
                let message = err
                    .get("message")
                    .and_then(|m| m.into_string())
                    .unwrap_or("the provider reported an error");
                let (status, kind) = err
                    .get("type")
                    .and_then(|t| t.into_string())
                    .and_then(error_type_info)
                    .unwrap_or((500, ErrorKind::Api));
                return Err(ErrorInfo {
                    status,
                    kind,
                    message: message.to_string(),
                });
            }
            // ping and event types added later.
            _ => {}
        }
        Ok(())
    }

    /// The upstream body ended: complete only after `message_stop`.
    pub fn finish(&mut self, _emit: &mut dyn FnMut(StreamEvent<'_>)) -> Result<(), ErrorInfo> {
        if self.finished {
            Ok(())
        } else {
            Err(ErrorInfo {
                status: 502,
                kind: ErrorKind::Api,
                message: "the provider's stream ended before the answer was complete".into(),
            })
        }
    }

    fn require_start(&self, ty: &str) -> Result<(), ErrorInfo> {
        if self.started {
            Ok(())
        } else {
            Err(malformed(format_args!("{ty} before message_start")))
        }
    }

    fn close_open(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if let Some((_, Some(ir))) = self.open.take() {
            emit(StreamEvent::BlockStop { index: ir });
        }
    }
}

fn block_index(root: Json<'_>, ty: &str) -> Result<u64, ErrorInfo> {
    root.get("index")
        .and_then(|i| i.as_u64())
        .ok_or_else(|| malformed(format_args!("{ty} without an index")))
}

// ---------------------------------------------------------------------------
// Streaming: client side
// ---------------------------------------------------------------------------

/// Client side: IR stream events -> Anthropic's server-sent events, as the
/// official SDKs and Claude Code read them.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    /// The open block, closed before an error event.
    open: Option<u32>,
    /// Prompt tokens announced in message_start.
    announced_input: Option<u32>,
}

impl StreamEncoder {
    /// An encoder for one stream.
    pub fn new(_opts: EncodeOptions) -> Self {
        StreamEncoder::default()
    }

    /// Appends the events for `ev`.
    pub fn event(&mut self, ev: &StreamEvent<'_>, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Start {
                id,
                model,
                input_tokens,
            } => {
                sse::begin_event(out, Some("message_start"));
                out.extend_from_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":");
                json::write_string(out, id);
                out.extend_from_slice(b",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
                json::write_string(out, model);
                // OpenAI upstreams count the prompt only at the end: 0 here,
                // the real number in message_delta.
                out.extend_from_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
                json::write_u64(out, u64::from(input_tokens.unwrap_or(0)));
                out.extend_from_slice(b",\"output_tokens\":0}}}");
                sse::end_event(out);
                self.announced_input = *input_tokens;
                sse::write_event(out, Some("ping"), b"{\"type\":\"ping\"}");
            }
            StreamEvent::BlockStart { index, block } => {
                sse::begin_event(out, Some("content_block_start"));
                out.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
                json::write_u64(out, u64::from(*index));
                out.extend_from_slice(b",\"content_block\":");
                match block {
                    BlockKind::Text => out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}"),
                    BlockKind::Thinking => out.extend_from_slice(
                        b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}",
                    ),
                    BlockKind::RedactedThinking(data) => {
                        out.extend_from_slice(b"{\"type\":\"redacted_thinking\",\"data\":");
                        json::write_string(out, data);
                        out.push(b'}');
                    }
                    BlockKind::ToolCall { id, name } => {
                        out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
                        json::write_string(out, id);
                        out.extend_from_slice(b",\"name\":");
                        json::write_string(out, name);
                        out.extend_from_slice(b",\"input\":{}}");
                    }
                }
                out.extend_from_slice(b"}");
                sse::end_event(out);
                self.open = Some(*index);
            }
            StreamEvent::Delta { index, delta } => {
                sse::begin_event(out, Some("content_block_delta"));
                out.extend_from_slice(b"{\"type\":\"content_block_delta\",\"index\":");
                json::write_u64(out, u64::from(*index));
                let (kind, key, text): (&[u8], &[u8], &str) = match delta {
                    Delta::Text(t) => (b"text_delta", b"text", t),
                    Delta::Thinking(t) => (b"thinking_delta", b"thinking", t),
                    Delta::Signature(t) => (b"signature_delta", b"signature", t),
                    Delta::ToolArguments(t) => (b"input_json_delta", b"partial_json", t),
                };
                out.extend_from_slice(b",\"delta\":{\"type\":\"");
                out.extend_from_slice(kind);
                out.extend_from_slice(b"\",\"");
                out.extend_from_slice(key);
                out.extend_from_slice(b"\":");
                json::write_string(out, text);
                out.extend_from_slice(b"}}");
                sse::end_event(out);
            }
            StreamEvent::BlockStop { index } => {
                self.write_block_stop(*index, out);
            }
            StreamEvent::Finish { stop, usage } => {
                if let Some(open) = self.open {
                    self.write_block_stop(open, out);
                }
                sse::begin_event(out, Some("message_delta"));
                out.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
                json::write_string(out, stop_str(*stop));
                out.extend_from_slice(b",\"stop_sequence\":null},\"usage\":{");
                // The SDKs take these numbers over message_start's.
                if usage.input.is_some() {
                    write_usage_fields(out, usage);
                } else {
                    if let Some(n) = self.announced_input {
                        out.extend_from_slice(b"\"input_tokens\":");
                        json::write_u64(out, u64::from(n));
                        out.push(b',');
                    }
                    out.extend_from_slice(b"\"output_tokens\":");
                    json::write_u64(out, u64::from(usage.output.unwrap_or(0)));
                }
                out.extend_from_slice(b"}}");
                sse::end_event(out);
            }
        }
    }

    /// Appends `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        sse::write_event(out, Some("message_stop"), b"{\"type\":\"message_stop\"}");
    }

    /// Closes an open block and appends an `error` event.
    pub fn error(&mut self, err: &ErrorInfo, out: &mut Vec<u8>) {
        if let Some(open) = self.open {
            self.write_block_stop(open, out);
        }
        sse::begin_event(out, Some("error"));
        encode_error(err, out);
        sse::end_event(out);
    }

    fn write_block_stop(&mut self, index: u32, out: &mut Vec<u8>) {
        sse::begin_event(out, Some("content_block_stop"));
        out.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":");
        json::write_u64(out, u64::from(index));
        out.push(b'}');
        sse::end_event(out);
        self.open = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Parses `text` and runs `f` on the decoded tape.
    fn with_tape<R>(text: &str, f: impl FnOnce(Json<'_>) -> R) -> R {
        let mut body = text.as_bytes().to_vec();
        let mut buffers = Buffers::default();
        let tape = json::parse(&mut body, &mut buffers).unwrap();
        f(tape.as_value())
    }

    fn decode_err(text: &str) -> String {
        with_tape(text, |v| decode_request(v).unwrap_err().message)
    }

    fn to_json(out: &[u8]) -> Value {
        serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
    }

    fn encode(req: &Request<'_>) -> Value {
        let mut out = Vec::new();
        encode_request(req, &mut out);
        to_json(&out)
    }

    fn text(s: &str) -> Part<'_> {
        Part::Text(Cow::Borrowed(s))
    }

    fn call<'a>(id: &'a str, name: &'a str, args: &'a str) -> Part<'a> {
        Part::ToolCall(ToolCall {
            id: Cow::Borrowed(id),
            name: Cow::Borrowed(name),
            arguments: Cow::Borrowed(args),
        })
    }

    fn result<'a>(id: &'a str, s: &'a str) -> Part<'a> {
        Part::ToolResult(ToolResult {
            call_id: Cow::Borrowed(id),
            name: None,
            content: vec![text(s)],
            is_error: false,
        })
    }

    fn msg(role: Role, parts: Vec<Part<'_>>) -> Message<'_> {
        Message { role, parts }
    }

    const FULL_REQUEST: &str = r#"{
        "model": "claude-sonnet-4-5",
        "max_tokens": 2048,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "EqQBCgIYAhIM"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris", "units": ["c"]}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [
                    {"type": "text", "text": "18C"},
                    {"type": "document", "source": {"type": "text", "data": "x", "media_type": "text/plain"}}
                ], "is_error": true},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "plain"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
            ]}
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather by city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"type": "custom", "name": "noop", "input_schema": {"type": "object"}}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "temperature": 1,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END"],
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1500},
        "metadata": {"user_id": "u-42"}
    }"#;

    #[test]
    fn decodes_a_full_request() {
        with_tape(FULL_REQUEST, |v| {
            let req = decode_request(v).unwrap();
            assert_eq!(req.model, "claude-sonnet-4-5");
            assert_eq!(req.max_tokens, Some(2048));
            assert!(matches!(&req.system[..], [Part::Text(t)] if t == "You are terse."));
            assert_eq!(req.messages.len(), 3);
            assert!(
                matches!(&req.messages[0].parts[..], [Part::Text(t)] if t == "What's the weather in Paris?")
            );
            let a = &req.messages[1];
            assert_eq!(a.role, Role::Assistant);
            assert!(
                matches!(&a.parts[0], Part::Thinking { text, signature: Some(s) } if text == "Use the tool." && s == "EqQBCgIYAhIM")
            );
            assert!(matches!(&a.parts[1], Part::RedactedThinking(d) if d == "EmwKAhgBEgy"));
            match &a.parts[3] {
                Part::ToolCall(c) => {
                    assert_eq!(c.id, "toolu_01A");
                    assert_eq!(c.name, "get_weather");
                    assert_eq!(c.arguments, r#"{"city":"Paris","units":["c"]}"#);
                }
                p => panic!("{p:?}"),
            }
            let u = &req.messages[2].parts;
            match &u[0] {
                Part::ToolResult(r) => {
                    assert_eq!(r.call_id, "toolu_01A");
                    assert!(r.is_error);
                    // The document has no IR form inside a tool result.
                    assert!(matches!(&r.content[..], [Part::Text(t)] if t == "18C"));
                }
                p => panic!("{p:?}"),
            }
            assert!(
                matches!(&u[1], Part::ToolResult(r) if !r.is_error && matches!(&r.content[..], [Part::Text(t)] if t == "plain"))
            );
            assert!(
                matches!(&u[2], Part::Image(Image::Base64 { media_type, data }) if media_type == "image/png" && data == "iVBOR")
            );
            assert!(
                matches!(&u[3], Part::Image(Image::Url(url)) if url == "https://example.com/a.png")
            );
            assert!(matches!(
                &u[4],
                Part::Raw {
                    dialect: Dialect::Anthropic,
                    ..
                }
            ));
            // The server tool is skipped.
            assert_eq!(req.tools.len(), 2);
            assert_eq!(req.tools[0].name, "get_weather");
            assert_eq!(req.tools[0].description.as_deref(), Some("Weather by city"));
            assert!(req.tools[0].parameters.is_some());
            assert_eq!(req.tools[1].name, "noop");
            assert_eq!(req.tool_choice, Some(ToolChoice::Required));
            assert_eq!(req.parallel_tool_calls, Some(false));
            assert_eq!(req.temperature, Some(1.0));
            assert_eq!(req.top_p, Some(0.9));
            assert_eq!(req.top_k, Some(40));
            assert_eq!(req.stop, vec!["END"]);
            assert!(req.stream);
            assert_eq!(
                req.thinking,
                Some(Thinking {
                    budget_tokens: Some(1500),
                    effort: None
                })
            );
            assert_eq!(req.user.as_deref(), Some("u-42"));
            // Strings borrow from the body.
            assert!(matches!(req.model, Cow::Borrowed(_)));
        });
    }

    #[test]
    fn decodes_simple_forms() {
        with_tape(
            r#"{"model":"m","max_tokens":5,"system":"Be nice.","messages":[{"role":"user","content":"hi"}],
                "tool_choice":{"type":"tool","name":"f"},"thinking":{"type":"disabled"},"temperature":null}"#,
            |v| {
                let req = decode_request(v).unwrap();
                assert!(matches!(&req.system[..], [Part::Text(t)] if t == "Be nice."));
                assert_eq!(req.tool_choice, Some(ToolChoice::Tool(Cow::Borrowed("f"))));
                assert_eq!(req.thinking, None);
                assert_eq!(req.temperature, None);
                assert!(!req.stream);
                assert_eq!(req.parallel_tool_calls, None);
            },
        );
    }

    #[test]
    fn request_errors_name_the_field() {
        let cases = [
            (r#"[1]"#, "the body must be a JSON object"),
            (r#"{"max_tokens":1,"messages":[]}"#, "`model` is required"),
            (r#"{"model":"m","messages":[]}"#, "`max_tokens` is required"),
            (
                r#"{"model":"m","max_tokens":-1,"messages":[]}"#,
                "`max_tokens` must be a non-negative integer",
            ),
            (r#"{"model":"m","max_tokens":1}"#, "`messages` is required"),
            (
                r#"{"model":"m","max_tokens":1,"messages":{}}"#,
                "`messages` must be an array",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":5}]}"#,
                "`messages[2].content` must be a string or an array",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"a"}]}"#,
                "`messages[0].role` must be \"user\" or \"assistant\"",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"f","input":"x"}]}]}"#,
                "`messages[0].content[0].input` must be an object",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"x"}}]}]}"#,
                "`messages[0].content[0].source.media_type` is required",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "`messages[0].content[0].type` is required",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[],"tools":[{"description":"x"}]}"#,
                "`tools[0].name` is required",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[],"tool_choice":{"type":"maybe"}}"#,
                "`tool_choice.type` must be one of",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[],"temperature":"hot"}"#,
                "`temperature` must be a number",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[],"stop_sequences":["a",1]}"#,
                "`stop_sequences[1]` must be a string",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[],"metadata":{"user_id":3}}"#,
                "`metadata.user_id` must be a string",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[],"system":3}"#,
                "`system` must be a string or an array",
            ),
        ];
        for (body, want) in cases {
            let got = decode_err(body);
            assert!(got.contains(want), "{body}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn encodes_a_request_with_merged_alternating_turns() {
        let req = Request {
            model: "claude-x".into(),
            system: vec![text("Be brief.")],
            messages: vec![
                msg(Role::User, vec![text("one")]),
                msg(Role::User, vec![text("two")]),
                // Nothing Anthropic accepts: dropped, and the turns around it merge.
                msg(
                    Role::Assistant,
                    vec![
                        Part::Thinking {
                            text: "hmm".into(),
                            signature: None,
                        },
                        text(""),
                    ],
                ),
                msg(Role::User, vec![text("three")]),
                msg(
                    Role::Assistant,
                    vec![
                        Part::Thinking {
                            text: "plan".into(),
                            signature: Some("sig".into()),
                        },
                        Part::RedactedThinking("enc".into()),
                        call("call:1/x", "f", r#" {"a": 1} "#),
                    ],
                ),
                msg(
                    Role::Assistant,
                    vec![call("c2", "g", "{not json}"), call("c3", "g", "")],
                ),
                msg(Role::User, vec![text("after")]),
                msg(
                    Role::User,
                    vec![
                        result("call:1/x", "r1"),
                        Part::Image(Image::Url("https://e/x.png".into())),
                        Part::ToolResult(ToolResult {
                            call_id: "c2".into(),
                            name: Some("g".into()),
                            content: vec![Part::Image(Image::Base64 {
                                media_type: "image/png".into(),
                                data: "AAA".into(),
                            })],
                            is_error: true,
                        }),
                    ],
                ),
            ],
            max_tokens: Some(100),
            temperature: Some(0.5),
            top_k: Some(3),
            stop: vec!["STOP".into()],
            user: Some("u1".into()),
            stream: true,
            ..Request::default()
        };
        let v = encode(&req);
        assert_eq!(
            v,
            json!({
                "model": "claude-x",
                "max_tokens": 100,
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "one"},
                        {"type": "text", "text": "two"},
                        {"type": "text", "text": "three"}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "plan", "signature": "sig"},
                        {"type": "redacted_thinking", "data": "enc"},
                        {"type": "tool_use", "id": "call_1_x", "name": "f", "input": {"a": 1}},
                        {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
                        {"type": "tool_use", "id": "c3", "name": "g", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1_x", "content": [{"type": "text", "text": "r1"}]},
                        {"type": "tool_result", "tool_use_id": "c2", "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}
                        ], "is_error": true},
                        {"type": "text", "text": "after"},
                        {"type": "image", "source": {"type": "url", "url": "https://e/x.png"}}
                    ]}
                ],
                "temperature": 0.5,
                "top_k": 3,
                "stop_sequences": ["STOP"],
                "metadata": {"user_id": "u1"},
                "stream": true
            })
        );
    }

    #[test]
    fn encodes_tools_choice_thinking_and_json_format() {
        with_tape(
            r#"{"schema":{"type":"object","properties":{"a":{"type":"string"}}},"bare":{"properties":{"q":{}}}}"#,
            |v| {
                let schema = v.get("schema").unwrap();
                let bare = v.get("bare").unwrap();
                let mut req = Request {
                    model: "m".into(),
                    system: vec![text("sys")],
                    messages: vec![msg(Role::User, vec![text("hi")])],
                    tools: vec![
                        Tool {
                            name: "a".into(),
                            description: Some("does a".into()),
                            parameters: Some(schema),
                            strict: Some(true),
                        },
                        Tool {
                            name: "b".into(),
                            description: None,
                            parameters: None,
                            strict: None,
                        },
                        Tool {
                            name: "c".into(),
                            description: Some("".into()),
                            parameters: Some(bare),
                            strict: None,
                        },
                    ],
                    tool_choice: Some(ToolChoice::Auto),
                    parallel_tool_calls: Some(false),
                    max_tokens: Some(1000),
                    temperature: Some(0.2),
                    top_p: Some(0.5),
                    thinking: Some(Thinking {
                        budget_tokens: None,
                        effort: Some(Effort::Low),
                    }),
                    response_format: Some(ResponseFormat::JsonSchema {
                        name: "x".into(),
                        schema,
                        strict: None,
                    }),
                    ..Request::default()
                };
                let v = encode(&req);
                assert_eq!(v["max_tokens"], 1024 + 4096, "raised above the budget");
                assert_eq!(
                    v["thinking"],
                    json!({"type": "enabled", "budget_tokens": 1024})
                );
                assert!(v.get("temperature").is_none() && v.get("top_p").is_none());
                assert_eq!(
                    v["tools"],
                    json!([
                        {"name": "a", "description": "does a", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
                        {"name": "b", "input_schema": {"type": "object", "properties": {}}},
                        {"name": "c", "input_schema": {"type": "object", "properties": {"q": {}}}}
                    ])
                );
                assert_eq!(
                    v["tool_choice"],
                    json!({"type": "auto", "disable_parallel_tool_use": true})
                );
                assert_eq!(
                    v["system"],
                    json!([
                        {"type": "text", "text": "sys"},
                        {"type": "text", "text": "Respond with a single JSON object only, no prose. It must match this JSON Schema: {\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}"}
                    ])
                );

                // Anthropic refuses thinking with a forced tool: the tool wins.
                req.tool_choice = Some(ToolChoice::Tool("a".into()));
                let v = encode(&req);
                assert_eq!(
                    v["tool_choice"],
                    json!({"type": "tool", "name": "a", "disable_parallel_tool_use": true})
                );
                assert!(v.get("thinking").is_none());
                assert_eq!(v["max_tokens"], 1000);
                assert_eq!(v["temperature"], 0.2);

                req.thinking = None;
                req.tool_choice = None;
                req.response_format = Some(ResponseFormat::JsonObject);
                req.system.clear();
                let v = encode(&req);
                assert_eq!(v["max_tokens"], 1000);
                assert_eq!(v["temperature"], 0.2);
                assert_eq!(
                    v["tool_choice"],
                    json!({"type": "auto", "disable_parallel_tool_use": true})
                );
                assert_eq!(v["system"], json!([{"type": "text", "text": JSON_ONLY}]));

                req.parallel_tool_calls = None;
                req.tool_choice = Some(ToolChoice::None);
                assert_eq!(encode(&req)["tool_choice"], json!({"type": "none"}));
                req.tool_choice = Some(ToolChoice::Required);
                assert_eq!(encode(&req)["tool_choice"], json!({"type": "any"}));
                req.tool_choice = None;
                assert!(encode(&req).get("tool_choice").is_none());
                req.tools.clear();
                req.tool_choice = Some(ToolChoice::Auto);
                assert!(
                    encode(&req).get("tool_choice").is_none(),
                    "no tools, no choice"
                );
            },
        );
    }

    #[test]
    fn thinking_is_left_off_in_a_tool_loop_without_signed_thinking() {
        let thinking = Some(Thinking {
            budget_tokens: Some(2000),
            effort: None,
        });
        let unsigned = Request {
            model: "m".into(),
            messages: vec![
                msg(Role::User, vec![text("q")]),
                msg(
                    Role::Assistant,
                    vec![text("calling"), call("c1", "f", "{}")],
                ),
                msg(Role::User, vec![result("c1", "ok")]),
            ],
            thinking,
            ..Request::default()
        };
        assert!(encode(&unsigned).get("thinking").is_none());

        let signed = Request {
            model: "m".into(),
            messages: vec![
                msg(Role::User, vec![text("q")]),
                msg(
                    Role::Assistant,
                    vec![Part::Thinking {
                        text: "t".into(),
                        signature: Some("s".into()),
                    }],
                ),
                msg(Role::Assistant, vec![call("c1", "f", "{}")]),
                msg(Role::User, vec![result("c1", "ok")]),
            ],
            thinking,
            ..Request::default()
        };
        assert_eq!(encode(&signed)["thinking"]["budget_tokens"], 2000);

        let no_tools = Request {
            model: "m".into(),
            messages: vec![
                msg(Role::User, vec![text("q")]),
                msg(Role::Assistant, vec![text("a")]),
                msg(Role::User, vec![text("q2")]),
            ],
            thinking,
            ..Request::default()
        };
        assert_eq!(encode(&no_tools)["thinking"]["budget_tokens"], 2000);
    }

    #[test]
    fn decodes_newer_reasoning_and_output_options() {
        with_tape(
            r#"{"model":"m","max_tokens":9,"messages":[],"thinking":{"type":"adaptive"},
                "output_config":{"effort":"high"},"output_format":{"type":"json_schema","schema":{"type":"object"}}}"#,
            |v| {
                let req = decode_request(v).unwrap();
                assert_eq!(
                    req.thinking,
                    Some(Thinking {
                        budget_tokens: None,
                        effort: Some(Effort::High)
                    })
                );
                assert!(matches!(
                    req.response_format,
                    Some(ResponseFormat::JsonSchema { .. })
                ));
            },
        );
    }

    #[test]
    fn encode_defaults_max_tokens_and_keeps_own_raw_blocks() {
        with_tape(
            r#"{"type":"document","source":{"type":"url","url":"u"}}"#,
            |raw| {
                let req = Request {
                    model: "m".into(),
                    system: vec![text("a"), text("b")],
                    messages: vec![msg(
                        Role::User,
                        vec![
                            Part::Raw {
                                dialect: Dialect::Anthropic,
                                value: raw,
                            },
                            Part::Raw {
                                dialect: Dialect::Gemini,
                                value: raw,
                            },
                        ],
                    )],
                    ..Request::default()
                };
                let v = encode(&req);
                assert_eq!(v["max_tokens"], 4096);
                assert_eq!(
                    v["system"],
                    json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
                );
                assert_eq!(
                    v["messages"],
                    json!([{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "u"}}]}])
                );
            },
        );
    }

    #[test]
    fn decoded_request_encodes_back() {
        with_tape(FULL_REQUEST, |v| {
            let req = decode_request(v).unwrap();
            let out = encode(&req);
            assert_eq!(
                out["messages"][1]["content"][3]["input"],
                json!({"city": "Paris", "units": ["c"]})
            );
            assert_eq!(out["messages"][2]["content"][0]["is_error"], true);
            assert_eq!(out["tools"].as_array().unwrap().len(), 2);
            assert_eq!(
                out["tool_choice"],
                json!({"type": "any", "disable_parallel_tool_use": true})
            );
            // `any` forces a tool, which Anthropic refuses with thinking.
            assert!(out.get("thinking").is_none());
            assert_eq!(out["temperature"], 1.0);
            assert_eq!(out["max_tokens"], 2048);
        });
    }

    const RESPONSE: &str = r#"{
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "WaUjzkyp"},
            {"type": "text", "text": "Sure, checking."},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "SF"}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": null,
        "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30, "output_tokens": 50}
    }"#;

    #[test]
    fn decodes_a_response() {
        with_tape(RESPONSE, |v| {
            let r = decode_response(v).unwrap();
            assert_eq!(r.id, "msg_01XFDUDYJgAACzvnptvVoYEL");
            assert_eq!(r.model, "claude-sonnet-4-5-20250929");
            assert_eq!(r.stop, StopReason::ToolUse);
            assert_eq!(
                r.usage,
                Usage {
                    input: Some(150),
                    output: Some(50),
                    cached: Some(30)
                }
            );
            assert!(
                matches!(&r.content[0], Part::Thinking { signature: Some(s), .. } if s == "WaUjzkyp")
            );
            assert!(matches!(&r.content[1], Part::Text(t) if t == "Sure, checking."));
            assert!(matches!(
                &r.content[2],
                Part::Raw {
                    dialect: Dialect::Anthropic,
                    ..
                }
            ));
            assert!(
                matches!(&r.content[3], Part::ToolCall(c) if c.arguments == r#"{"location":"SF"}"#)
            );
        });
        for (stop, want) in [
            ("end_turn", StopReason::EndTurn),
            ("max_tokens", StopReason::MaxTokens),
            ("stop_sequence", StopReason::StopSequence),
            ("pause_turn", StopReason::EndTurn),
            ("refusal", StopReason::ContentFilter),
        ] {
            let body = format!(
                r#"{{"id":"m","content":[],"stop_reason":"{stop}","usage":{{"input_tokens":1,"output_tokens":2}}}}"#
            );
            with_tape(&body, |v| {
                let r = decode_response(v).unwrap();
                assert_eq!(r.stop, want);
                assert_eq!(
                    r.usage,
                    Usage {
                        input: Some(1),
                        output: Some(2),
                        cached: None
                    }
                );
            });
        }
        for (body, want) in [
            (r#"{"id":"m"}"#, "`content` is required"),
            (r#"{"content":{}}"#, "`content` must be an array"),
            (
                r#"{"content":[{"type":"text"}]}"#,
                "`content[0].text` is required",
            ),
            (r#"{"content":[],"usage":3}"#, "`usage` must be an object"),
        ] {
            let got = with_tape(body, |v| decode_response(v).unwrap_err().message);
            assert!(got.contains(want), "{body}: {got}");
        }
    }

    #[test]
    fn encodes_a_response() {
        let resp = Response {
            id: "chatcmpl-1".into(),
            model: "claude-x".into(),
            content: vec![
                Part::Thinking {
                    text: "t".into(),
                    signature: None,
                },
                text("Hello"),
                call("call_1", "f", r#"{"x":[1,2]}"#),
                call("call_2", "g", "{\"x\":"),
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: Some(100),
                output: Some(7),
                cached: Some(40),
            },
        };
        let mut out = Vec::new();
        encode_response(&resp, &EncodeOptions::default(), &mut out);
        assert_eq!(
            to_json(&out),
            json!({
                "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": ""},
                    {"type": "text", "text": "Hello"},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": [1, 2]}},
                    {"type": "tool_use", "id": "call_2", "name": "g", "input": {}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 60, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 0, "output_tokens": 7}
            })
        );
        let mut out = Vec::new();
        encode_response(&Response::default(), &EncodeOptions::default(), &mut out);
        let v = to_json(&out);
        assert_eq!(v["content"], json!([]));
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"]["input_tokens"], 0);
        assert!(v["usage"].get("cache_read_input_tokens").is_none());
    }

    #[test]
    fn errors_round_trip() {
        let mut buffers = Buffers::default();
        let mut body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#.to_vec();
        let e = decode_error(529, &mut body, &mut buffers);
        assert_eq!(
            e,
            ErrorInfo {
                status: 529,
                kind: ErrorKind::Overloaded,
                message: "Overloaded".into()
            }
        );

        let mut body =
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
                .to_vec();
        let e = decode_error(400, &mut body, &mut buffers);
        assert_eq!(
            (e.status, e.kind),
            (400, ErrorKind::RateLimited),
            "the status stays, the type decides the kind"
        );

        let mut body = b"<html>502 Bad Gateway</html>".to_vec();
        let e = decode_error(502, &mut body, &mut buffers);
        assert_eq!(e, ErrorInfo::new(502, "<html>502 Bad Gateway</html>"));

        let mut body = b"{broken".to_vec();
        assert_eq!(
            decode_error(500, &mut body, &mut buffers).message,
            "{broken"
        );

        let mut body = "é".repeat(600).into_bytes();
        assert_eq!(
            decode_error(500, &mut body, &mut buffers)
                .message
                .chars()
                .count(),
            500
        );

        for (kind, name) in [
            (ErrorKind::InvalidRequest, "invalid_request_error"),
            (ErrorKind::Authentication, "authentication_error"),
            (ErrorKind::PermissionDenied, "permission_error"),
            (ErrorKind::NotFound, "not_found_error"),
            (ErrorKind::RequestTooLarge, "request_too_large"),
            (ErrorKind::RateLimited, "rate_limit_error"),
            (ErrorKind::Overloaded, "overloaded_error"),
            (ErrorKind::Timeout, "timeout_error"),
            (ErrorKind::Api, "api_error"),
        ] {
            let mut out = Vec::new();
            encode_error(
                &ErrorInfo {
                    status: 500,
                    kind,
                    message: "m \"q\"".into(),
                },
                &mut out,
            );
            assert_eq!(
                to_json(&out),
                json!({"type": "error", "error": {"type": name, "message": "m \"q\""}})
            );
            let e = decode_error(418, &mut out, &mut buffers);
            assert_eq!((e.kind, e.message.as_str()), (kind, "m \"q\""));
        }
    }

    // -- streaming ---------------------------------------------------------

    /// Runs an SSE transcript through the decoder, returning the IR events
    /// (Debug-formatted) and the result of the event that failed or of
    /// finish().
    fn decode_stream(transcript: &str) -> (Vec<String>, Result<(), ErrorInfo>) {
        let mut parser = sse::Parser::new();
        let mut dec = StreamDecoder::new();
        let mut buffers = Buffers::default();
        let mut events = Vec::new();
        let fed = parser.feed::<ErrorInfo>(transcript.as_bytes(), |ev| {
            dec.event(ev, &mut buffers, &mut |e| events.push(format!("{e:?}")))
        });
        if let Err(e) = fed {
            return (events, Err(e));
        }
        let r = dec.finish(&mut |e| events.push(format!("{e:?}")));
        (events, r)
    }

    const STREAM: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":10,"cache_creation_input_tokens":0,"output_tokens":1}}}"#,
        "\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me "}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"check."}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIY"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello \"there\""}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":1}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":2,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"query\":\"x\"}"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":2}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{\"loc"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"ation\": \"SF\"}"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":3}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":4,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":4,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":4}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );

    #[test]
    fn decodes_a_full_stream() {
        let (events, r) = decode_stream(STREAM);
        r.unwrap();
        let want = [
            r#"Start { id: "msg_1", model: "claude-sonnet-4-5", input_tokens: Some(35) }"#,
            "BlockStart { index: 0, block: Thinking }",
            r#"Delta { index: 0, delta: Thinking("Let me ") }"#,
            r#"Delta { index: 0, delta: Thinking("check.") }"#,
            r#"Delta { index: 0, delta: Signature("EqQBCgIY") }"#,
            "BlockStop { index: 0 }",
            "BlockStart { index: 1, block: Text }",
            r#"Delta { index: 1, delta: Text("Hello \"there\"") }"#,
            "BlockStop { index: 1 }",
            // The server tool block (upstream index 2) is skipped whole.
            r#"BlockStart { index: 2, block: ToolCall { id: "toolu_01", name: "get_weather" } }"#,
            r#"Delta { index: 2, delta: ToolArguments("") }"#,
            r#"Delta { index: 2, delta: ToolArguments("{\"loc") }"#,
            r#"Delta { index: 2, delta: ToolArguments("ation\": \"SF\"}") }"#,
            "BlockStop { index: 2 }",
            r#"BlockStart { index: 3, block: ToolCall { id: "toolu_02", name: "get_time" } }"#,
            r#"Delta { index: 3, delta: ToolArguments("{}") }"#,
            "BlockStop { index: 3 }",
            "Finish { stop: ToolUse, usage: Usage { input: Some(35), output: Some(89), cached: Some(10) } }",
        ];
        assert_eq!(events, want);
    }

    #[test]
    fn stream_decoder_handles_redacted_blocks_and_unclosed_blocks() {
        let transcript = concat!(
            r#"data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3,"output_tokens":1}}}"#,
            "\n\n",
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":"ENC"}}"#,
            "\n\n",
            // A new block while one is open, with a delta for a stale index.
            r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":"Hi"}}"#,
            "\n\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lost"}}"#,
            "\n\n",
            r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}"#,
            "\n\n",
            r#"data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":3,"cache_creation_input_tokens":4,"output_tokens":9}}"#,
            "\n\n",
            r#"data: {"type":"message_stop"}"#,
            "\n\n",
            r#"data: {"type":"content_block_start","index":9,"content_block":{"type":"text","text":""}}"#,
            "\n\n",
        );
        let (events, r) = decode_stream(transcript);
        r.unwrap();
        assert_eq!(
            events,
            [
                r#"Start { id: "m", model: "c", input_tokens: Some(3) }"#,
                r#"BlockStart { index: 0, block: RedactedThinking("ENC") }"#,
                "BlockStop { index: 0 }",
                "BlockStart { index: 1, block: Text }",
                r#"Delta { index: 1, delta: Text("Hi") }"#,
                "BlockStop { index: 1 }",
                "Finish { stop: MaxTokens, usage: Usage { input: Some(7), output: Some(9), cached: None } }",
            ]
        );
    }

    #[test]
    fn stream_decoder_reports_errors_and_truncation() {
        // Cut off before message_stop.
        let cut = STREAM.find("event: message_delta").unwrap();
        let (events, r) = decode_stream(&STREAM[..cut]);
        let e = r.unwrap_err();
        assert_eq!((e.status, e.kind), (502, ErrorKind::Api));
        assert!(e.message.contains("ended before the answer was complete"));
        assert!(!events.iter().any(|e| e.starts_with("Finish")));

        let (_, r) = decode_stream("");
        assert_eq!(r.unwrap_err().status, 502);

        let overloaded = concat!(
            r#"data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":3}}}"#,
            "\n\n",
            "event: error\n",
            r#"data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
            "\n\n",
        );
        let (_, r) = decode_stream(overloaded);
        assert_eq!(
            r.unwrap_err(),
            ErrorInfo {
                status: 529,
                kind: ErrorKind::Overloaded,
                message: "Overloaded".into()
            }
        );

        for bad in [
            "data: {not json\n\n",
            "data: [1]\n\n",
            "data: {}\n\n",
            concat!(
                r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                "\n\n"
            ),
            concat!(
                r#"data: {"type":"message_start","message":{"id":"m"}}"#,
                "\n\n",
                r#"data: {"type":"content_block_start","content_block":{"type":"text"}}"#,
                "\n\n"
            ),
            concat!(
                r#"data: {"type":"message_start","message":{"id":"m"}}"#,
                "\n\n",
                r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text"}}"#,
                "\n\n",
                r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}"#,
                "\n\n"
            ),
            r#"data: {"type":"message_start"}"#,
        ] {
            let (_, r) = decode_stream(&format!("{bad}\n\n"));
            let e = r.unwrap_err();
            assert_eq!((e.status, e.kind), (502, ErrorKind::Api), "{bad}");
        }
    }

    /// Splits SSE bytes into (event name, JSON data) pairs.
    fn sse_events(out: &[u8]) -> Vec<(String, Value)> {
        let mut parser = sse::Parser::new();
        let mut events = Vec::new();
        parser
            .feed::<sse::SseError>(out, |e| {
                events.push((e.name.to_string(), to_json(e.data)));
                Ok(())
            })
            .unwrap();
        assert!(!parser.is_mid_event());
        events
    }

    #[test]
    fn encodes_a_full_stream() {
        let mut enc = StreamEncoder::new(EncodeOptions::default());
        let mut out = Vec::new();
        let evs = [
            StreamEvent::Start {
                id: "msg_1".into(),
                model: "claude-x".into(),
                input_tokens: None,
            },
            StreamEvent::BlockStart {
                index: 0,
                block: BlockKind::Thinking,
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Thinking("hmm".into()),
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Signature("sig".into()),
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockKind::RedactedThinking("ENC".into()),
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::BlockStart {
                index: 2,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 2,
                delta: Delta::Text("Hi\n\"x\"".into()),
            },
            StreamEvent::BlockStop { index: 2 },
            StreamEvent::BlockStart {
                index: 3,
                block: BlockKind::ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                },
            },
            StreamEvent::Delta {
                index: 3,
                delta: Delta::ToolArguments("{\"a\":".into()),
            },
            StreamEvent::Delta {
                index: 3,
                delta: Delta::ToolArguments("1}".into()),
            },
            StreamEvent::BlockStop { index: 3 },
            StreamEvent::Finish {
                stop: StopReason::ToolUse,
                usage: Usage {
                    input: Some(50),
                    output: Some(12),
                    cached: Some(20),
                },
            },
        ];
        for ev in &evs {
            enc.event(ev, &mut out);
        }
        enc.finish(&mut out);
        let got = sse_events(&out);
        let want = vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "ENC"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Hi\n\"x\""}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 3}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 30, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0, "output_tokens": 12}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let want: Vec<(String, Value)> =
            want.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn stream_encoder_reports_known_input_and_errors_mid_block() {
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        enc.event(
            &StreamEvent::Start {
                id: "m".into(),
                model: "c".into(),
                input_tokens: Some(9),
            },
            &mut out,
        );
        enc.event(
            &StreamEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
            },
            &mut out,
        );
        enc.event(
            &StreamEvent::Delta {
                index: 0,
                delta: Delta::Text("par".into()),
            },
            &mut out,
        );
        enc.error(&ErrorInfo::new(529, "Overloaded"), &mut out);
        let got = sse_events(&out);
        assert_eq!(got[0].1["message"]["usage"]["input_tokens"], 9);
        assert_eq!(
            got[4],
            (
                "content_block_stop".to_string(),
                json!({"type": "content_block_stop", "index": 0})
            )
        );
        assert_eq!(
            got[5],
            (
                "error".to_string(),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            )
        );
        assert_eq!(got.len(), 6);

        // Finish without input in its usage repeats the announced count.
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        enc.event(
            &StreamEvent::Start {
                id: "m".into(),
                model: "c".into(),
                input_tokens: Some(9),
            },
            &mut out,
        );
        enc.event(
            &StreamEvent::Finish {
                stop: StopReason::EndTurn,
                usage: Usage {
                    input: None,
                    output: Some(3),
                    cached: None,
                },
            },
            &mut out,
        );
        let got = sse_events(&out);
        assert_eq!(
            got[2].1["usage"],
            json!({"input_tokens": 9, "output_tokens": 3})
        );
        assert_eq!(got[2].1["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn decoded_stream_reencodes_to_the_same_shape() {
        let mut parser = sse::Parser::new();
        let mut dec = StreamDecoder::new();
        let mut enc = StreamEncoder::default();
        let mut buffers = Buffers::default();
        let mut out = Vec::new();
        parser
            .feed::<ErrorInfo>(STREAM.as_bytes(), |ev| {
                dec.event(ev, &mut buffers, &mut |e| enc.event(&e, &mut out))
            })
            .unwrap();
        dec.finish(&mut |e| enc.event(&e, &mut out)).unwrap();
        enc.finish(&mut out);
        let got = sse_events(&out);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "content_block_start")
                .count(),
            4
        );
        let args: String = got
            .iter()
            .filter(|(_, v)| v["index"] == 2 && v["delta"]["type"] == "input_json_delta")
            .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"location": "SF"})
        );
        assert_eq!(names.last(), Some(&"message_stop"));
    }
}
