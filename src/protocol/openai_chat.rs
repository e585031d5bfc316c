//! OpenAI Chat Completions (`POST /v1/chat/completions`), both sides.
//!
//! Client side: [`decode_request`], [`encode_response`], [`StreamEncoder`],
//! [`encode_error`]. Provider side (any OpenAI-compatible upstream):
//! [`encode_request`], [`decode_response`], [`StreamDecoder`],
//! [`decode_error`].
//!
//! Decisions worth knowing:
//! - `system` and `developer` messages become [`Request::system`] wherever
//!   they appear; the encoder writes one leading `system` message.
//! - `tool` messages become [`Part::ToolResult`]s in a user message;
//!   consecutive ones share that message, and a user message right after
//!   them joins it too (Anthropic wants results and the next user turn in
//!   one message; OpenAI does not mind either way).
//! - Images inside tool results cannot travel in a `tool` message (it takes
//!   text only), so the encoder puts them in a user message right after the
//!   `tool` messages, each result's images introduced by a short text part.
//! - Thinking parts are dropped from requests: OpenAI-compatible providers
//!   reject reasoning in the history (DeepSeek answers 400).
//! - The stream decoder opens blocks lazily and one at a time. Tool calls
//!   stream live one after another; a call that starts while another one's
//!   arguments are still incomplete JSON (interleaved indices) is buffered
//!   and emitted whole when its turn comes (at the latest at the end).

use std::borrow::Cow;

use simd_json::prelude::*;
use simd_json::Buffers;

use crate::protocol::ir::*;
use crate::protocol::json::{self, write_f64, write_string, write_u64, write_value};
use crate::sse::{self, Event};

const DIALECT: Dialect = Dialect::OpenAiChat;

/// OpenAI rejects more than four stop sequences; extra ones (from protocols
/// that allow more) are dropped.
const MAX_STOP: usize = 4;

// ---------------------------------------------------------------------------
// Small readers
// ---------------------------------------------------------------------------

/// A string value, borrowed from the body (the trait's `as_str` would tie
/// it to the `Value` handle instead).
fn str_of<'a>(v: &Json<'a>) -> Option<&'a str> {
    (*v).into_string()
}

fn is_null(v: &Json<'_>) -> bool {
    v.as_null().is_some()
}

/// The value under `key`, with JSON `null` treated as absent (OpenAI
/// accepts `null` for every optional field).
fn field<'a>(obj: &Json<'a>, key: &str) -> Option<Json<'a>> {
    obj.get(key).filter(|v| !is_null(v))
}

fn want_str<'a>(v: &Json<'a>, path: &dyn Fn() -> String) -> Result<&'a str, TranslateError> {
    str_of(v).ok_or_else(|| TranslateError::wrong_type(&path(), "a string"))
}

fn want_bool(v: &Json<'_>, path: &str) -> Result<bool, TranslateError> {
    v.as_bool()
        .ok_or_else(|| TranslateError::wrong_type(path, "a boolean"))
}

fn want_u64(v: &Json<'_>, path: &str) -> Result<u64, TranslateError> {
    v.as_u64()
        .ok_or_else(|| TranslateError::wrong_type(path, "a non-negative integer"))
}

fn want_f64(v: &Json<'_>, path: &str) -> Result<f64, TranslateError> {
    v.cast_f64()
        .ok_or_else(|| TranslateError::wrong_type(path, "a number"))
}

/// A required string field of an object.
fn req_str<'a>(
    obj: &Json<'a>,
    key: &str,
    path: &dyn Fn() -> String,
) -> Result<&'a str, TranslateError> {
    match field(obj, key) {
        Some(v) => want_str(&v, &|| format!("{}.{key}", path())),
        None => Err(TranslateError::missing(&format!("{}.{key}", path()))),
    }
}

/// A token count as the IR keeps it (saturating: a count past u32 is junk).
fn count(v: Option<Json<'_>>) -> Option<u32> {
    v.and_then(|v| v.as_u64())
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// Reads OpenAI's `usage` object.
fn decode_usage(usage: &Json<'_>) -> Usage {
    Usage {
        input: count(usage.get("prompt_tokens")),
        output: count(usage.get("completion_tokens")),
        cached: count(
            usage
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens")),
        ),
    }
}

/// Splits `data:<mime>[;params];base64,<data>` into its media type and
/// payload; anything else is a URL the provider fetches.
fn decode_image_url(url: &str) -> Image<'_> {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some(comma) = rest.find(',') {
            let (meta, data) = (&rest[..comma], &rest[comma + 1..]);
            if let Some(meta) = meta.strip_suffix(";base64") {
                let media_type = meta.split(';').next().unwrap_or("");
                return Image::Base64 {
                    media_type: Cow::Borrowed(media_type),
                    data: Cow::Borrowed(data),
                };
            }
        }
    }
    Image::Url(Cow::Borrowed(url))
}

fn map_finish_reason(reason: &str) -> StopReason {
    match reason {
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        _ => StopReason::EndTurn,
    }
}

fn finish_reason_str(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn | StopReason::StopSequence => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

// ---------------------------------------------------------------------------
// decode_request
// ---------------------------------------------------------------------------

/// Client side: a Chat Completions request body -> IR.
pub fn decode_request<'a>(root: Json<'a>) -> Result<Request<'a>, TranslateError> {
    let obj = root
        .as_object()
        .ok_or_else(|| TranslateError::new("the request body must be a JSON object"))?;
    let mut req = Request::default();
    let mut messages = None;
    let (mut max_completion, mut max_tokens) = (None, None);
    let (mut functions, mut function_call) = (None, None);
    let mut model = None;
    for (key, v) in obj.iter() {
        if is_null(&v) {
            continue;
        }
        match key {
            "model" => model = Some(want_str(&v, &|| "model".into())?),
            "messages" => messages = Some(v),
            "tools" => req.tools = decode_tools(&v)?,
            "tool_choice" => req.tool_choice = Some(decode_tool_choice(&v)?),
            "functions" => functions = Some(v),
            "function_call" => function_call = Some(v),
            "parallel_tool_calls" => req.parallel_tool_calls = Some(want_bool(&v, key)?),
            "max_completion_tokens" => max_completion = Some(want_u64(&v, key)?),
            "max_tokens" => max_tokens = Some(want_u64(&v, key)?),
            "temperature" => req.temperature = Some(want_f64(&v, key)?),
            "top_p" => req.top_p = Some(want_f64(&v, key)?),
            "stop" => req.stop = decode_stop(&v)?,
            "response_format" => req.response_format = Some(decode_response_format(&v)?),
            "reasoning_effort" => req.thinking = decode_effort(&v)?,
            "stream" => req.stream = want_bool(&v, key)?,
            "stream_options" => {
                if !v.is_object() {
                    return Err(TranslateError::wrong_type(key, "an object"));
                }
                if let Some(iu) = field(&v, "include_usage") {
                    req.include_usage = want_bool(&iu, "stream_options.include_usage")?;
                }
            }
            "user" => req.user = Some(Cow::Borrowed(want_str(&v, &|| "user".into())?)),
            "n" if want_u64(&v, key)? > 1 => {
                return Err(TranslateError::new(
                    "`n` greater than 1 is not supported when the request is translated for another provider",
                ));
            }
            _ => {}
        }
    }
    req.model = Cow::Borrowed(model.ok_or_else(|| TranslateError::missing("model"))?);
    let messages = messages.ok_or_else(|| TranslateError::missing("messages"))?;
    decode_messages(&messages, &mut req)?;
    req.max_tokens = max_completion.or(max_tokens);
    if req.tools.is_empty() {
        if let Some(f) = functions {
            req.tools = decode_functions(&f)?;
        }
    }
    if req.tool_choice.is_none() {
        if let Some(fc) = function_call {
            req.tool_choice = Some(match str_of(&fc) {
                Some("auto") => ToolChoice::Auto,
                Some("none") => ToolChoice::None,
                Some(_) => {
                    return Err(TranslateError::wrong_type(
                        "function_call",
                        "\"auto\", \"none\" or an object",
                    ))
                }
                None => ToolChoice::Tool(Cow::Borrowed(req_str(&fc, "name", &|| {
                    "function_call".into()
                })?)),
            });
        }
    }
    Ok(req)
}

fn decode_messages<'a>(messages: &Json<'a>, req: &mut Request<'a>) -> Result<(), TranslateError> {
    let arr = messages
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("messages", "an array"))?;
    req.messages.reserve(arr.len());
    // Whether the last IR message holds `tool` results (so more results, or
    // the next user turn, join it).
    let mut in_results = false;
    // Legacy `function_call`s have no ids: number them and let the next
    // `function` message answer the latest one.
    let mut legacy_calls = 0usize;
    let mut legacy_id: Option<String> = None;
    for (i, m) in arr.iter().enumerate() {
        let path = || format!("messages[{i}]");
        if !m.is_object() {
            return Err(TranslateError::wrong_type(&path(), "an object"));
        }
        let role = req_str(&m, "role", &path)?;
        let content = field(&m, "content");
        let cpath = || format!("messages[{i}].content");
        match role {
            "system" | "developer" => {
                if let Some(c) = content {
                    decode_text_content(&c, &cpath, &mut req.system)?;
                }
            }
            "user" => {
                let c = content.ok_or_else(|| TranslateError::missing(&cpath()))?;
                let mut parts = Vec::new();
                decode_user_content(&c, &cpath, &mut parts)?;
                match req.messages.last_mut() {
                    Some(last) if in_results => last.parts.append(&mut parts),
                    _ => req.messages.push(Message {
                        role: Role::User,
                        parts,
                    }),
                }
                in_results = false;
            }
            "assistant" => {
                let mut parts = Vec::new();
                let reasoning = field(&m, "reasoning_content").or_else(|| field(&m, "reasoning"));
                if let Some(r) = reasoning {
                    let text = want_str(&r, &|| format!("messages[{i}].reasoning_content"))?;
                    if !text.is_empty() {
                        parts.push(Part::Thinking {
                            text: Cow::Borrowed(text),
                            signature: None,
                        });
                    }
                }
                if let Some(c) = content {
                    decode_assistant_content(&c, &cpath, &mut parts)?;
                }
                if let Some(r) = field(&m, "refusal") {
                    let text = want_str(&r, &|| format!("messages[{i}].refusal"))?;
                    if !text.is_empty() {
                        parts.push(Part::Text(Cow::Borrowed(text)));
                    }
                }
                if let Some(calls) = field(&m, "tool_calls") {
                    decode_tool_calls(&calls, &|| format!("messages[{i}].tool_calls"), &mut parts)?;
                }
                if let Some(fc) = field(&m, "function_call") {
                    let fpath = || format!("messages[{i}].function_call");
                    let name = req_str(&fc, "name", &fpath)?;
                    let id = format!("call_{legacy_calls}");
                    legacy_calls += 1;
                    legacy_id = Some(id.clone());
                    parts.push(Part::ToolCall(ToolCall {
                        id: Cow::Owned(id),
                        name: Cow::Borrowed(name),
                        arguments: decode_arguments(field(&fc, "arguments"), &fpath)?,
                    }));
                }
                req.messages.push(Message {
                    role: Role::Assistant,
                    parts,
                });
                in_results = false;
            }
            "tool" | "function" => {
                let (call_id, name) = if role == "tool" {
                    (Cow::Borrowed(req_str(&m, "tool_call_id", &path)?), None)
                } else {
                    let name = req_str(&m, "name", &path)?;
                    let id = legacy_id.clone().unwrap_or_else(|| format!("call_{name}"));
                    (Cow::Owned(id), Some(Cow::Borrowed(name)))
                };
                let mut result = Vec::new();
                if let Some(c) = content {
                    decode_tool_content(&c, &cpath, &mut result)?;
                }
                let part = Part::ToolResult(ToolResult {
                    call_id,
                    name,
                    content: result,
                    is_error: false,
                });
                match req.messages.last_mut() {
                    Some(last) if in_results => last.parts.push(part),
                    _ => req.messages.push(Message {
                        role: Role::User,
                        parts: vec![part],
                    }),
                }
                in_results = true;
            }
            _ => {
                return Err(TranslateError::wrong_type(
                    &format!("messages[{i}].role"),
                    "one of system, developer, user, assistant, tool",
                ))
            }
        }
    }
    Ok(())
}

/// Iterates the parts of an array content, checking each is an object with
/// a string `type`.
fn for_each_part<'a>(
    arr: &Json<'a>,
    path: &dyn Fn() -> String,
    mut f: impl FnMut(usize, &'a str, Json<'a>) -> Result<(), TranslateError>,
) -> Result<(), TranslateError> {
    let Some(arr) = arr.as_array() else {
        return Err(TranslateError::wrong_type(&path(), "a string or an array"));
    };
    for (j, part) in arr.iter().enumerate() {
        let ppath = || format!("{}[{j}]", path());
        if !part.is_object() {
            return Err(TranslateError::wrong_type(&ppath(), "an object"));
        }
        let ty = req_str(&part, "type", &ppath)?;
        f(j, ty, part)?;
    }
    Ok(())
}

fn text_of<'a>(
    part: &Json<'a>,
    key: &str,
    path: &dyn Fn() -> String,
    j: usize,
) -> Result<Part<'a>, TranslateError> {
    Ok(Part::Text(Cow::Borrowed(req_str(part, key, &|| {
        format!("{}[{j}]", path())
    })?)))
}

fn image_of<'a>(
    part: &Json<'a>,
    path: &dyn Fn() -> String,
    j: usize,
) -> Result<Part<'a>, TranslateError> {
    let ipath = || format!("{}[{j}].image_url", path());
    let iu = field(part, "image_url").ok_or_else(|| TranslateError::missing(&ipath()))?;
    // The documented form is an object; some clients send the URL bare.
    let url = match str_of(&iu) {
        Some(url) => url,
        None => req_str(&iu, "url", &ipath)?,
    };
    Ok(Part::Image(decode_image_url(url)))
}

/// System and developer content: text only.
fn decode_text_content<'a>(
    c: &Json<'a>,
    path: &dyn Fn() -> String,
    out: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    if let Some(s) = str_of(c) {
        out.push(Part::Text(Cow::Borrowed(s)));
        return Ok(());
    }
    for_each_part(c, path, |j, ty, part| {
        if ty != "text" {
            return Err(TranslateError::wrong_type(
                &format!("{}[{j}].type", path()),
                "\"text\" in a system message",
            ));
        }
        out.push(text_of(&part, "text", path, j)?);
        Ok(())
    })
}

fn decode_user_content<'a>(
    c: &Json<'a>,
    path: &dyn Fn() -> String,
    out: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    if let Some(s) = str_of(c) {
        out.push(Part::Text(Cow::Borrowed(s)));
        return Ok(());
    }
    for_each_part(c, path, |j, ty, part| {
        out.push(match ty {
            "text" => text_of(&part, "text", path, j)?,
            "image_url" => image_of(&part, path, j)?,
            _ => Part::Raw {
                dialect: DIALECT,
                value: part,
            },
        });
        Ok(())
    })
}

fn decode_assistant_content<'a>(
    c: &Json<'a>,
    path: &dyn Fn() -> String,
    out: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    if let Some(s) = str_of(c) {
        if !s.is_empty() {
            out.push(Part::Text(Cow::Borrowed(s)));
        }
        return Ok(());
    }
    for_each_part(c, path, |j, ty, part| {
        out.push(match ty {
            "text" => text_of(&part, "text", path, j)?,
            "refusal" => text_of(&part, "refusal", path, j)?,
            _ => Part::Raw {
                dialect: DIALECT,
                value: part,
            },
        });
        Ok(())
    })
}

/// Tool results carry text and images only; other part types are dropped.
fn decode_tool_content<'a>(
    c: &Json<'a>,
    path: &dyn Fn() -> String,
    out: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    if let Some(s) = str_of(c) {
        out.push(Part::Text(Cow::Borrowed(s)));
        return Ok(());
    }
    for_each_part(c, path, |j, ty, part| {
        match ty {
            "text" => out.push(text_of(&part, "text", path, j)?),
            "image_url" => out.push(image_of(&part, path, j)?),
            _ => {}
        }
        Ok(())
    })
}

/// `arguments` is JSON text; a few clients send the object itself, which is
/// serialised. Missing arguments mean none.
fn decode_arguments<'a>(
    args: Option<Json<'a>>,
    path: &dyn Fn() -> String,
) -> Result<Cow<'a, str>, TranslateError> {
    match args {
        None => Ok(Cow::Borrowed("{}")),
        Some(a) => match str_of(&a) {
            Some(s) => Ok(Cow::Borrowed(s)),
            None if a.is_object() => Ok(Cow::Owned(json::value_to_string(&a))),
            None => Err(TranslateError::wrong_type(
                &format!("{}.arguments", path()),
                "a string",
            )),
        },
    }
}

fn decode_tool_calls<'a>(
    calls: &Json<'a>,
    path: &dyn Fn() -> String,
    out: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let arr = calls
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type(&path(), "an array"))?;
    for (j, call) in arr.iter().enumerate() {
        let cpath = || format!("{}[{j}]", path());
        if !call.is_object() {
            return Err(TranslateError::wrong_type(&cpath(), "an object"));
        }
        if let Some(ty) = field(&call, "type") {
            if str_of(&ty) != Some("function") {
                return Err(TranslateError::wrong_type(
                    &format!("{}.type", cpath()),
                    "\"function\" (other tool call types cannot be translated)",
                ));
            }
        }
        let id = req_str(&call, "id", &cpath)?;
        let fpath = || format!("{}.function", cpath());
        let f = field(&call, "function").ok_or_else(|| TranslateError::missing(&fpath()))?;
        if !f.is_object() {
            return Err(TranslateError::wrong_type(&fpath(), "an object"));
        }
        out.push(Part::ToolCall(ToolCall {
            id: Cow::Borrowed(id),
            name: Cow::Borrowed(req_str(&f, "name", &fpath)?),
            arguments: decode_arguments(field(&f, "arguments"), &fpath)?,
        }));
    }
    Ok(())
}

/// One function definition (`tools[i].function` or legacy `functions[i]`).
fn decode_function<'a>(
    f: &Json<'a>,
    path: &dyn Fn() -> String,
) -> Result<Tool<'a>, TranslateError> {
    if !f.is_object() {
        return Err(TranslateError::wrong_type(&path(), "an object"));
    }
    let description = match field(f, "description") {
        Some(d) => Some(Cow::Borrowed(want_str(&d, &|| {
            format!("{}.description", path())
        })?)),
        None => None,
    };
    let strict = match field(f, "strict") {
        Some(s) => Some(want_bool(&s, &format!("{}.strict", path()))?),
        None => None,
    };
    Ok(Tool {
        name: Cow::Borrowed(req_str(f, "name", path)?),
        description,
        parameters: field(f, "parameters"),
        strict,
    })
}

fn decode_tools<'a>(v: &Json<'a>) -> Result<Vec<Tool<'a>>, TranslateError> {
    let arr = v
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("tools", "an array"))?;
    let mut tools = Vec::with_capacity(arr.len());
    for (i, t) in arr.iter().enumerate() {
        let path = || format!("tools[{i}]");
        if !t.is_object() {
            return Err(TranslateError::wrong_type(&path(), "an object"));
        }
        if let Some(ty) = field(&t, "type") {
            if str_of(&ty) != Some("function") {
                return Err(TranslateError::wrong_type(
                    &format!("tools[{i}].type"),
                    "\"function\" (other tool types cannot be translated)",
                ));
            }
        }
        let f = field(&t, "function")
            .ok_or_else(|| TranslateError::missing(&format!("tools[{i}].function")))?;
        tools.push(decode_function(&f, &|| format!("tools[{i}].function"))?);
    }
    Ok(tools)
}

fn decode_functions<'a>(v: &Json<'a>) -> Result<Vec<Tool<'a>>, TranslateError> {
    let arr = v
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("functions", "an array"))?;
    let mut tools = Vec::with_capacity(arr.len());
    for (i, f) in arr.iter().enumerate() {
        tools.push(decode_function(&f, &|| format!("functions[{i}]"))?);
    }
    Ok(tools)
}

fn decode_tool_choice<'a>(v: &Json<'a>) -> Result<ToolChoice<'a>, TranslateError> {
    const WHAT: &str = "\"auto\", \"none\", \"required\" or a function object";
    if let Some(s) = str_of(v) {
        return match s {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(TranslateError::wrong_type("tool_choice", WHAT)),
        };
    }
    if !v.is_object() || field(v, "type").and_then(|t| str_of(&t)) != Some("function") {
        return Err(TranslateError::wrong_type("tool_choice", WHAT));
    }
    let f = field(v, "function").ok_or_else(|| TranslateError::missing("tool_choice.function"))?;
    Ok(ToolChoice::Tool(Cow::Borrowed(req_str(
        &f,
        "name",
        &|| "tool_choice.function".into(),
    )?)))
}

fn decode_stop<'a>(v: &Json<'a>) -> Result<Vec<Cow<'a, str>>, TranslateError> {
    if let Some(s) = str_of(v) {
        return Ok(vec![Cow::Borrowed(s)]);
    }
    let arr = v
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("stop", "a string or an array of strings"))?;
    let mut stop = Vec::with_capacity(arr.len());
    for (i, s) in arr.iter().enumerate() {
        stop.push(Cow::Borrowed(want_str(&s, &|| format!("stop[{i}]"))?));
    }
    Ok(stop)
}

fn decode_response_format<'a>(v: &Json<'a>) -> Result<ResponseFormat<'a>, TranslateError> {
    if !v.is_object() {
        return Err(TranslateError::wrong_type("response_format", "an object"));
    }
    match req_str(v, "type", &|| "response_format".into())? {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let path = || "response_format.json_schema".to_string();
            let js = field(v, "json_schema").ok_or_else(|| TranslateError::missing(&path()))?;
            if !js.is_object() {
                return Err(TranslateError::wrong_type(&path(), "an object"));
            }
            let schema = field(&js, "schema")
                .ok_or_else(|| TranslateError::missing("response_format.json_schema.schema"))?;
            let strict = match field(&js, "strict") {
                Some(s) => Some(want_bool(&s, "response_format.json_schema.strict")?),
                None => None,
            };
            Ok(ResponseFormat::JsonSchema {
                name: Cow::Borrowed(req_str(&js, "name", &path)?),
                schema,
                strict,
            })
        }
        _ => Err(TranslateError::wrong_type(
            "response_format.type",
            "\"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

fn decode_effort(v: &Json<'_>) -> Result<Option<Thinking>, TranslateError> {
    let s = want_str(v, &|| "reasoning_effort".into())?;
    let effort = match s {
        "none" => return Ok(None),
        // Newer models' level above `high`; the IR's highest is the closest.
        "xhigh" => Effort::High,
        _ => Effort::parse(s).ok_or_else(|| {
            TranslateError::wrong_type(
                "reasoning_effort",
                "one of none, minimal, low, medium, high",
            )
        })?,
    };
    Ok(Some(Thinking {
        budget_tokens: None,
        effort: Some(effort),
    }))
}

// ---------------------------------------------------------------------------
// encode_request
// ---------------------------------------------------------------------------

/// Appends `s` JSON-escaped without the surrounding quotes (for strings
/// assembled from pieces, like a data URL).
fn write_str_body(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(s.as_bytes());
    } else {
        let start = out.len();
        write_string(out, s);
        out.pop();
        out.remove(start);
    }
}

/// Writes `,` before every element but the first.
fn sep(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

fn write_image(out: &mut Vec<u8>, image: &Image<'_>) {
    out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
    match image {
        Image::Url(url) => write_string(out, url),
        Image::Base64 { media_type, data } => {
            out.extend_from_slice(b"\"data:");
            write_str_body(out, media_type);
            out.extend_from_slice(b";base64,");
            write_str_body(out, data);
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"}}");
}

fn write_text_part(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
    write_string(out, text);
    out.push(b'}');
}

/// Provider side: IR -> a Chat Completions request body.
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"model\":");
    write_string(out, &req.model);
    out.extend_from_slice(b",\"messages\":[");
    let mut first = true;
    let mut system_open = false;
    for part in &req.system {
        if let Part::Text(text) = part {
            if system_open {
                out.extend_from_slice(b"\\n\\n");
            } else {
                sep(out, &mut first);
                out.extend_from_slice(b"{\"role\":\"system\",\"content\":\"");
                system_open = true;
            }
            write_str_body(out, text);
        }
    }
    if system_open {
        out.extend_from_slice(b"\"}");
    }
    for m in &req.messages {
        match m.role {
            Role::User => encode_user_message(m, out, &mut first),
            Role::Assistant => encode_assistant_message(m, out, &mut first),
        }
    }
    out.push(b']');

    if !req.tools.is_empty() {
        out.extend_from_slice(b",\"tools\":[");
        for (i, t) in req.tools.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
            write_string(out, &t.name);
            if let Some(d) = &t.description {
                out.extend_from_slice(b",\"description\":");
                write_string(out, d);
            }
            if let Some(p) = &t.parameters {
                out.extend_from_slice(b",\"parameters\":");
                write_value(out, p);
            }
            if let Some(s) = t.strict {
                out.extend_from_slice(if s {
                    b",\"strict\":true"
                } else {
                    b",\"strict\":false"
                });
            }
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
        // OpenAI rejects both fields without `tools`.
        if let Some(tc) = &req.tool_choice {
            out.extend_from_slice(b",\"tool_choice\":");
            match tc {
                ToolChoice::Auto => out.extend_from_slice(b"\"auto\""),
                ToolChoice::None => out.extend_from_slice(b"\"none\""),
                ToolChoice::Required => out.extend_from_slice(b"\"required\""),
                ToolChoice::Tool(name) => {
                    out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
                    write_string(out, name);
                    out.extend_from_slice(b"}}");
                }
            }
        }
        if let Some(p) = req.parallel_tool_calls {
            out.extend_from_slice(if p {
                b",\"parallel_tool_calls\":true"
            } else {
                b",\"parallel_tool_calls\":false"
            });
        }
    }
    if let Some(n) = req.max_tokens {
        // `max_tokens` is deprecated and rejected by reasoning models.
        out.extend_from_slice(b",\"max_completion_tokens\":");
        write_u64(out, n);
    }
    if let Some(t) = req.temperature {
        out.extend_from_slice(b",\"temperature\":");
        write_f64(out, t);
    }
    if let Some(p) = req.top_p {
        out.extend_from_slice(b",\"top_p\":");
        write_f64(out, p);
    }
    if !req.stop.is_empty() {
        out.extend_from_slice(b",\"stop\":[");
        for (i, s) in req.stop.iter().take(MAX_STOP).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(out, s);
        }
        out.push(b']');
    }
    if let Some(rf) = &req.response_format {
        out.extend_from_slice(b",\"response_format\":");
        match rf {
            ResponseFormat::Text => out.extend_from_slice(b"{\"type\":\"text\"}"),
            ResponseFormat::JsonObject => out.extend_from_slice(b"{\"type\":\"json_object\"}"),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => {
                out.extend_from_slice(b"{\"type\":\"json_schema\",\"json_schema\":{\"name\":");
                // OpenAI requires a name; other protocols have none.
                write_string(out, if name.is_empty() { "response" } else { name });
                out.extend_from_slice(b",\"schema\":");
                write_value(out, schema);
                if let Some(s) = strict {
                    out.extend_from_slice(if *s {
                        b",\"strict\":true"
                    } else {
                        b",\"strict\":false"
                    });
                }
                out.extend_from_slice(b"}}");
            }
        }
    }
    if let Some(t) = &req.thinking {
        out.extend_from_slice(b",\"reasoning_effort\":\"");
        out.extend_from_slice(t.effort().as_str().as_bytes());
        out.push(b'"');
    }
    if req.stream {
        // Always ask for usage: the gateway accounts for every stream.
        out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    }
    if let Some(u) = &req.user {
        out.extend_from_slice(b",\"user\":");
        write_string(out, u);
    }
    out.push(b'}');
}

/// A user message: its tool results first, as `tool` messages, then one
/// `user` message with the images of those results and the other parts.
fn encode_user_message(m: &Message<'_>, out: &mut Vec<u8>, first: &mut bool) {
    let mut rest = false;
    let mut result_images = false;
    for part in &m.parts {
        match part {
            Part::ToolResult(r) => {
                sep(out, first);
                out.extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
                write_string(out, &r.call_id);
                out.extend_from_slice(b",\"content\":\"");
                let mut texts = 0;
                for p in &r.content {
                    match p {
                        Part::Text(t) => {
                            if texts > 0 {
                                out.extend_from_slice(b"\\n");
                            }
                            texts += 1;
                            write_str_body(out, t);
                        }
                        Part::Image(_) => result_images = true,
                        _ => {}
                    }
                }
                if texts == 0 && r.content.iter().any(|p| matches!(p, Part::Image(_))) {
                    out.extend_from_slice(
                        b"(the tool returned images; they follow in the next user message)",
                    );
                }
                out.extend_from_slice(b"\"}");
            }
            Part::Text(_) | Part::Image(_) => rest = true,
            Part::Raw { dialect, .. } if *dialect == DIALECT => rest = true,
            _ => {}
        }
    }
    if !rest && !result_images {
        return;
    }
    sep(out, first);
    out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
    // The plain form when the message is one text part (most requests).
    if !result_images {
        let mut kept = m.parts.iter().filter(|p| {
            matches!(p, Part::Text(_) | Part::Image(_))
                || matches!(p, Part::Raw { dialect, .. } if *dialect == DIALECT)
        });
        if let (Some(Part::Text(t)), None) = (kept.next(), kept.next()) {
            write_string(out, t);
            out.push(b'}');
            return;
        }
    }
    out.push(b'[');
    let mut pfirst = true;
    if result_images {
        for part in &m.parts {
            let Part::ToolResult(r) = part else { continue };
            if !r.content.iter().any(|p| matches!(p, Part::Image(_))) {
                continue;
            }
            sep(out, &mut pfirst);
            out.extend_from_slice(b"{\"type\":\"text\",\"text\":\"Images returned by tool call ");
            write_str_body(out, &r.call_id);
            out.extend_from_slice(b":\"}");
            for p in &r.content {
                if let Part::Image(img) = p {
                    out.push(b',');
                    write_image(out, img);
                }
            }
        }
    }
    for part in &m.parts {
        match part {
            Part::Text(t) => {
                sep(out, &mut pfirst);
                write_text_part(out, t);
            }
            Part::Image(img) => {
                sep(out, &mut pfirst);
                write_image(out, img);
            }
            Part::Raw { dialect, value } if *dialect == DIALECT => {
                sep(out, &mut pfirst);
                write_value(out, value);
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"]}");
}

fn encode_assistant_message(m: &Message<'_>, out: &mut Vec<u8>, first: &mut bool) {
    sep(out, first);
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    let has_raw = m
        .parts
        .iter()
        .any(|p| matches!(p, Part::Raw { dialect, .. } if *dialect == DIALECT));
    let has_calls = m.parts.iter().any(|p| matches!(p, Part::ToolCall(_)));
    if has_raw {
        out.push(b'[');
        let mut pfirst = true;
        for part in &m.parts {
            match part {
                Part::Text(t) => {
                    sep(out, &mut pfirst);
                    write_text_part(out, t);
                }
                Part::Raw { dialect, value } if *dialect == DIALECT => {
                    sep(out, &mut pfirst);
                    write_value(out, value);
                }
                _ => {}
            }
        }
        out.push(b']');
    } else {
        // Text blocks are concatenated, as a streamed answer would read.
        let mut texts = m.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t),
            _ => None,
        });
        match texts.next() {
            None if has_calls => out.extend_from_slice(b"null"),
            None => out.extend_from_slice(b"\"\""),
            Some(t) => {
                out.push(b'"');
                write_str_body(out, t);
                for t in texts {
                    write_str_body(out, t);
                }
                out.push(b'"');
            }
        }
    }
    if has_calls {
        out.extend_from_slice(b",\"tool_calls\":[");
        let mut cfirst = true;
        for part in &m.parts {
            if let Part::ToolCall(c) = part {
                sep(out, &mut cfirst);
                out.extend_from_slice(b"{\"id\":");
                write_string(out, &c.id);
                out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                write_string(out, &c.name);
                out.extend_from_slice(b",\"arguments\":");
                // Providers parse the arguments; an empty string is not JSON.
                write_string(
                    out,
                    if c.arguments.is_empty() {
                        "{}"
                    } else {
                        &c.arguments
                    },
                );
                out.extend_from_slice(b"}}");
            }
        }
        out.push(b']');
    }
    out.push(b'}');
}

// ---------------------------------------------------------------------------
// decode_response / encode_response
// ---------------------------------------------------------------------------

/// Provider side: a non-streamed Chat Completions response -> IR.
pub fn decode_response<'a>(root: Json<'a>) -> Result<Response<'a>, TranslateError> {
    if !root.is_object() {
        return Err(TranslateError::new(
            "the response body must be a JSON object",
        ));
    }
    let Some(choices) = field(&root, "choices") else {
        if let Some(err) = field(&root, "error") {
            let msg = err
                .get("message")
                .and_then(|m| str_of(&m))
                .or_else(|| str_of(&err))
                .unwrap_or("(no message)");
            return Err(TranslateError::new(format!(
                "the provider answered with an error: {msg}"
            )));
        }
        return Err(TranslateError::missing("choices"));
    };
    let arr = choices
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("choices", "an array"))?;
    let choice = arr
        .get(0)
        .ok_or_else(|| TranslateError::new("`choices` is empty"))?;
    let message =
        field(&choice, "message").ok_or_else(|| TranslateError::missing("choices[0].message"))?;
    if !message.is_object() {
        return Err(TranslateError::wrong_type(
            "choices[0].message",
            "an object",
        ));
    }
    let mut resp = Response {
        id: Cow::Borrowed(root.get("id").and_then(|v| str_of(&v)).unwrap_or("")),
        model: Cow::Borrowed(root.get("model").and_then(|v| str_of(&v)).unwrap_or("")),
        ..Response::default()
    };
    let reasoning = field(&message, "reasoning_content").or_else(|| field(&message, "reasoning"));
    if let Some(text) = reasoning.and_then(|r| str_of(&r)).filter(|t| !t.is_empty()) {
        resp.content.push(Part::Thinking {
            text: Cow::Borrowed(text),
            signature: None,
        });
    }
    let mpath = || "choices[0].message.content".to_string();
    if let Some(c) = field(&message, "content") {
        decode_assistant_content(&c, &mpath, &mut resp.content)?;
        // Unknown part types have no place in a response.
        resp.content.retain(|p| !matches!(p, Part::Raw { .. }));
    }
    if let Some(text) = field(&message, "refusal").and_then(|r| str_of(&r)) {
        if !text.is_empty() {
            resp.content.push(Part::Text(Cow::Borrowed(text)));
        }
    }
    if let Some(calls) = field(&message, "tool_calls") {
        decode_tool_calls(
            &calls,
            &|| "choices[0].message.tool_calls".into(),
            &mut resp.content,
        )?;
    }
    if let Some(fc) = field(&message, "function_call") {
        let fpath = || "choices[0].message.function_call".to_string();
        resp.content.push(Part::ToolCall(ToolCall {
            id: Cow::Borrowed("call_0"),
            name: Cow::Borrowed(req_str(&fc, "name", &fpath)?),
            arguments: decode_arguments(field(&fc, "arguments"), &fpath)?,
        }));
    }
    let has_calls = resp.content.iter().any(|p| matches!(p, Part::ToolCall(_)));
    resp.stop = match field(&choice, "finish_reason").and_then(|f| str_of(&f)) {
        Some(r) => map_finish_reason(r),
        None => StopReason::EndTurn,
    };
    // Some compatible providers say `stop` after tool calls.
    if resp.stop == StopReason::EndTurn && has_calls {
        resp.stop = StopReason::ToolUse;
    }
    if let Some(u) = field(&root, "usage") {
        resp.usage = decode_usage(&u);
    }
    Ok(resp)
}

fn write_usage(out: &mut Vec<u8>, usage: &Usage) {
    let input = usage.input.unwrap_or(0);
    let output = usage.output.unwrap_or(0);
    out.extend_from_slice(b"{\"prompt_tokens\":");
    write_u64(out, input.into());
    out.extend_from_slice(b",\"completion_tokens\":");
    write_u64(out, output.into());
    out.extend_from_slice(b",\"total_tokens\":");
    write_u64(out, u64::from(input) + u64::from(output));
    out.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
    write_u64(out, usage.cached.unwrap_or(0).into());
    out.extend_from_slice(b"}}");
}

/// Client side: IR -> a `chat.completion` object.
pub fn encode_response(resp: &Response<'_>, opts: &EncodeOptions, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    write_string(out, &resp.id);
    out.extend_from_slice(b",\"object\":\"chat.completion\",\"created\":");
    write_u64(out, opts.created);
    out.extend_from_slice(b",\"model\":");
    write_string(out, &resp.model);
    out.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
    );
    let has_calls = resp.content.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let mut texts = resp.content.iter().filter_map(|p| match p {
        Part::Text(t) => Some(t),
        _ => None,
    });
    match texts.next() {
        None if has_calls => out.extend_from_slice(b"null"),
        None => out.extend_from_slice(b"\"\""),
        Some(t) => {
            out.push(b'"');
            write_str_body(out, t);
            for t in texts {
                write_str_body(out, t);
            }
            out.push(b'"');
        }
    }
    let mut thinking = resp.content.iter().filter_map(|p| match p {
        Part::Thinking { text, .. } => Some(text),
        _ => None,
    });
    if let Some(t) = thinking.next() {
        out.extend_from_slice(b",\"reasoning_content\":\"");
        write_str_body(out, t);
        for t in thinking {
            write_str_body(out, t);
        }
        out.push(b'"');
    }
    if has_calls {
        out.extend_from_slice(b",\"tool_calls\":[");
        let mut first = true;
        for part in &resp.content {
            if let Part::ToolCall(c) = part {
                sep(out, &mut first);
                out.extend_from_slice(b"{\"id\":");
                write_string(out, &c.id);
                out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                write_string(out, &c.name);
                out.extend_from_slice(b",\"arguments\":");
                write_string(out, &c.arguments);
                out.extend_from_slice(b"}}");
            }
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"");
    out.extend_from_slice(finish_reason_str(resp.stop).as_bytes());
    out.extend_from_slice(b"\"}],\"usage\":");
    write_usage(out, &resp.usage);
    out.push(b'}');
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// The text of a body that is not a usable error object, for messages.
fn body_text(body: &[u8]) -> String {
    let head = &body[..body.len().min(2000)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim();
    match text.char_indices().nth(500) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// The message of an `error` value (object or bare string).
fn error_message<'a>(err: &Json<'a>) -> Option<&'a str> {
    str_of(err)
        .or_else(|| err.get("message").and_then(|m| str_of(&m)))
        .filter(|m| !m.is_empty())
}

/// Provider side: an error body -> ErrorInfo, keeping the provider's status.
pub fn decode_error(status: u16, body: &mut [u8], buffers: &mut Buffers) -> ErrorInfo {
    // Parsing is in place and may rewrite the bytes: keep the text first.
    let fallback = body_text(body);
    let message = match json::parse(body, buffers) {
        Ok(tape) => {
            let root = tape.as_value();
            // Some compatible providers wrap the error object in an array.
            let root = match root.as_array() {
                Some(arr) => arr.get(0).unwrap_or(root),
                None => root,
            };
            root.get("error")
                .and_then(|e| error_message(&e))
                .or_else(|| root.get("message").and_then(|m| str_of(&m)))
                .map(str::to_string)
        }
        Err(_) => None,
    };
    let message = message.unwrap_or(fallback);
    ErrorInfo::new(
        status,
        if message.is_empty() {
            format!("the provider answered with HTTP status {status}")
        } else {
            message
        },
    )
}

fn error_type_and_code(kind: ErrorKind) -> (&'static str, Option<&'static str>) {
    match kind {
        ErrorKind::InvalidRequest => ("invalid_request_error", None),
        ErrorKind::Authentication => ("authentication_error", Some("invalid_api_key")),
        ErrorKind::PermissionDenied => ("permission_error", Some("permission_denied")),
        ErrorKind::NotFound => ("not_found_error", Some("not_found")),
        ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrorKind::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::Overloaded => ("server_error", Some("overloaded")),
        ErrorKind::Timeout => ("timeout_error", Some("timeout")),
        ErrorKind::Api => ("server_error", None),
    }
}

/// Client side: ErrorInfo -> `{"error":{message,type,param,code}}`.
pub fn encode_error(err: &ErrorInfo, out: &mut Vec<u8>) {
    let (ty, code) = error_type_and_code(err.kind);
    out.extend_from_slice(b"{\"error\":{\"message\":");
    write_string(out, &err.message);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"param\":null,\"code\":");
    match code {
        Some(c) => {
            out.push(b'"');
            out.extend_from_slice(c.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}}");
}

// ---------------------------------------------------------------------------
// StreamDecoder
// ---------------------------------------------------------------------------

fn bad_stream(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        status: 502,
        kind: ErrorKind::Api,
        message: message.into(),
    }
}

/// Tracks whether streamed tool arguments form a complete JSON value yet
/// (brackets balanced outside strings), so the decoder knows when a tool
/// call's block can be closed for the next one.
#[derive(Debug, Default)]
struct JsonScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    opened: bool,
}

impl JsonScan {
    fn feed(&mut self, s: &str) {
        for &b in s.as_bytes() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => {
                        self.depth += 1;
                        self.opened = true;
                    }
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
    }

    fn complete(&self) -> bool {
        self.opened && self.depth == 0 && !self.in_string
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Seen, not opened yet: arguments collect in `pending`.
    Waiting,
    /// Its block is the open one.
    Live,
    /// Its block was closed.
    Done,
}

/// One upstream tool call (by OpenAI's `index`).
#[derive(Debug)]
struct ToolSlot {
    index: Option<u64>,
    id: String,
    name: String,
    pending: String,
    state: SlotState,
    scan: JsonScan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Open {
    #[default]
    None,
    Text,
    Thinking,
    /// A tool slot (position in `tools`).
    Tool(usize),
}

/// Provider side: Chat Completions chunks -> IR stream events.
///
/// Finish is emitted at `[DONE]` because OpenAI sends the usage chunk after
/// the `finish_reason` chunk.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    done: bool,
    stop: Option<StopReason>,
    usage: Usage,
    next_block: u32,
    open: Open,
    open_index: u32,
    tools: Vec<ToolSlot>,
}

impl StreamDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// One SSE event (`data: {chunk}` or `data: [DONE]`).
    pub fn event(
        &mut self,
        event: Event<'_>,
        buffers: &mut Buffers,
        emit: &mut dyn FnMut(StreamEvent<'_>),
    ) -> Result<(), ErrorInfo> {
        if self.done {
            return Ok(());
        }
        let trimmed = event.data.trim_ascii();
        if trimmed == b"[DONE]" {
            self.complete(emit);
            return Ok(());
        }
        if trimmed.is_empty() {
            return Ok(());
        }
        let tape = json::parse(event.data, buffers).map_err(|e| {
            bad_stream(format!(
                "the provider sent a stream event that is not valid JSON ({})",
                e.message
            ))
        })?;
        let root = tape.as_value();
        if !root.is_object() {
            return Err(bad_stream(
                "the provider sent a stream event that is not a JSON object",
            ));
        }
        if let Some(err) = field(&root, "error") {
            return Err(stream_error(&err));
        }
        if !self.started {
            self.started = true;
            emit(StreamEvent::Start {
                id: Cow::Borrowed(root.get("id").and_then(|v| str_of(&v)).unwrap_or("")),
                model: Cow::Borrowed(root.get("model").and_then(|v| str_of(&v)).unwrap_or("")),
                input_tokens: None,
            });
        }
        if let Some(u) = field(&root, "usage") {
            let u = decode_usage(&u);
            self.usage.input = u.input.or(self.usage.input);
            self.usage.output = u.output.or(self.usage.output);
            self.usage.cached = u.cached.or(self.usage.cached);
        }
        let Some(choices) = field(&root, "choices") else {
            return Ok(());
        };
        let choices = choices
            .as_array()
            .ok_or_else(|| bad_stream("`choices` in a stream chunk is not an array"))?;
        for choice in choices.iter() {
            // Only the first choice is translated (`n` > 1 is refused).
            if choice.get("index").and_then(|i| i.as_u64()).unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = field(&choice, "delta") {
                self.delta(&delta, emit)?;
            }
            // Some compatible providers send `""` instead of null mid-stream.
            if let Some(reason) = field(&choice, "finish_reason")
                .and_then(|f| str_of(&f))
                .filter(|r| !r.is_empty())
            {
                self.stop = Some(map_finish_reason(reason));
            }
        }
        Ok(())
    }

    /// The upstream body ended: complete if a finish_reason (or `[DONE]`)
    /// was seen, an error otherwise.
    pub fn finish(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) -> Result<(), ErrorInfo> {
        if self.done {
            return Ok(());
        }
        if self.stop.is_some() {
            self.complete(emit);
            return Ok(());
        }
        Err(bad_stream(
            "the provider's stream ended before the answer was complete",
        ))
    }

    fn delta(
        &mut self,
        d: &Json<'_>,
        emit: &mut dyn FnMut(StreamEvent<'_>),
    ) -> Result<(), ErrorInfo> {
        if !d.is_object() {
            return Err(bad_stream("`delta` in a stream chunk is not an object"));
        }
        let reasoning = field(d, "reasoning_content").or_else(|| field(d, "reasoning"));
        if let Some(t) = reasoning.and_then(|r| str_of(&r)).filter(|t| !t.is_empty()) {
            self.open_plain(Open::Thinking, emit)?;
            emit(StreamEvent::Delta {
                index: self.open_index,
                delta: Delta::Thinking(Cow::Borrowed(t)),
            });
        }
        for key in ["content", "refusal"] {
            if let Some(t) = field(d, key)
                .and_then(|c| str_of(&c))
                .filter(|t| !t.is_empty())
            {
                self.open_plain(Open::Text, emit)?;
                emit(StreamEvent::Delta {
                    index: self.open_index,
                    delta: Delta::Text(Cow::Borrowed(t)),
                });
            }
        }
        if let Some(calls) = field(d, "tool_calls") {
            let calls = calls.as_array().ok_or_else(|| {
                bad_stream("`delta.tool_calls` in a stream chunk is not an array")
            })?;
            for call in calls.iter() {
                self.tool_delta(&call, emit)?;
            }
        }
        Ok(())
    }

    /// Makes a text or thinking block the open one.
    fn open_plain(
        &mut self,
        kind: Open,
        emit: &mut dyn FnMut(StreamEvent<'_>),
    ) -> Result<(), ErrorInfo> {
        if self.open == kind {
            return Ok(());
        }
        self.close_open(emit);
        let index = self.next_block;
        self.next_block += 1;
        emit(StreamEvent::BlockStart {
            index,
            block: if kind == Open::Text {
                BlockKind::Text
            } else {
                BlockKind::Thinking
            },
        });
        self.open = kind;
        self.open_index = index;
        Ok(())
    }

    fn close_open(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if self.open == Open::None {
            return;
        }
        if let Open::Tool(s) = self.open {
            self.tools[s].state = SlotState::Done;
        }
        emit(StreamEvent::BlockStop {
            index: self.open_index,
        });
        self.open = Open::None;
    }

    fn tool_delta(
        &mut self,
        call: &Json<'_>,
        emit: &mut dyn FnMut(StreamEvent<'_>),
    ) -> Result<(), ErrorInfo> {
        if !call.is_object() {
            return Err(bad_stream(
                "an entry of `delta.tool_calls` is not an object",
            ));
        }
        let index = call.get("index").and_then(|i| i.as_u64());
        let id = call
            .get("id")
            .and_then(|v| str_of(&v))
            .filter(|s| !s.is_empty());
        let function = field(call, "function");
        let name = function
            .and_then(|f| f.get("name"))
            .and_then(|n| str_of(&n))
            .filter(|s| !s.is_empty());
        let args: Cow<'_, str> = match function.and_then(|f| field(&f, "arguments")) {
            None => Cow::Borrowed(""),
            Some(a) => match str_of(&a) {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(json::value_to_string(&a)),
            },
        };

        let s = self.slot_for(index, id);
        let slot = &mut self.tools[s];
        if slot.id.is_empty() {
            if let Some(id) = id {
                slot.id.push_str(id);
            }
        }
        if slot.name.is_empty() {
            if let Some(name) = name {
                slot.name.push_str(name);
            }
        }
        match slot.state {
            SlotState::Live => {
                if !args.is_empty() {
                    slot.scan.feed(&args);
                    emit(StreamEvent::Delta {
                        index: self.open_index,
                        delta: Delta::ToolArguments(args),
                    });
                }
            }
            SlotState::Done => {
                if !args.trim().is_empty() {
                    return Err(bad_stream(
                        "the provider sent arguments for a tool call after other content had started; this stream cannot be translated",
                    ));
                }
            }
            SlotState::Waiting => {
                let can_open = !slot.name.is_empty()
                    && match self.open {
                        Open::Tool(t) => self.tools[t].scan.complete(),
                        _ => true,
                    };
                if can_open {
                    self.open_tool(s, emit);
                    if !args.is_empty() {
                        self.tools[s].scan.feed(&args);
                        emit(StreamEvent::Delta {
                            index: self.open_index,
                            delta: Delta::ToolArguments(args),
                        });
                    }
                } else {
                    self.tools[s].pending.push_str(&args);
                }
            }
        }
        Ok(())
    }

    /// The slot a tool call delta belongs to: by `index`, else by `id`, else
    /// the latest one.
    fn slot_for(&mut self, index: Option<u64>, id: Option<&str>) -> usize {
        let found = match (index, id) {
            (Some(k), _) => self.tools.iter().position(|t| t.index == Some(k)),
            (None, Some(id)) => self.tools.iter().position(|t| t.id == id),
            (None, None) => self.tools.len().checked_sub(1),
        };
        found.unwrap_or_else(|| {
            self.tools.push(ToolSlot {
                index,
                id: String::new(),
                name: String::new(),
                pending: String::new(),
                state: SlotState::Waiting,
                scan: JsonScan::default(),
            });
            self.tools.len() - 1
        })
    }

    /// Opens a waiting tool call's block and sends what it collected.
    fn open_tool(&mut self, s: usize, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        self.close_open(emit);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Open::Tool(s);
        self.open_index = index;
        let slot = &mut self.tools[s];
        slot.state = SlotState::Live;
        if slot.id.is_empty() {
            // Ids are kept as given; only a provider that sends none gets one.
            slot.id = format!("call_{s}");
        }
        emit(StreamEvent::BlockStart {
            index,
            block: BlockKind::ToolCall {
                id: Cow::Borrowed(&slot.id),
                name: Cow::Borrowed(&slot.name),
            },
        });
        if !slot.pending.is_empty() {
            slot.scan.feed(&slot.pending);
            emit(StreamEvent::Delta {
                index,
                delta: Delta::ToolArguments(Cow::Borrowed(&slot.pending)),
            });
            slot.pending = String::new();
        }
    }

    /// The stream is complete: close the open block, send tool calls still
    /// waiting, then Finish.
    fn complete(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        self.done = true;
        if !self.started {
            self.started = true;
            emit(StreamEvent::Start {
                id: Cow::Borrowed(""),
                model: Cow::Borrowed(""),
                input_tokens: None,
            });
        }
        self.close_open(emit);
        for s in 0..self.tools.len() {
            if self.tools[s].state == SlotState::Waiting {
                self.open_tool(s, emit);
                self.close_open(emit);
            }
        }
        let mut stop = self.stop.unwrap_or_default();
        if stop == StopReason::EndTurn && !self.tools.is_empty() {
            stop = StopReason::ToolUse;
        }
        emit(StreamEvent::Finish {
            stop,
            usage: self.usage,
        });
    }
}

/// An `error` object inside a stream chunk -> ErrorInfo. Its numeric `code`
/// is the status when it looks like one.
fn stream_error(err: &Json<'_>) -> ErrorInfo {
    let code = err.get("code");
    let status = code
        .and_then(|c| {
            c.as_u64()
                .or_else(|| str_of(&c).and_then(|s| s.parse().ok()))
        })
        .filter(|s| (400..600).contains(s))
        .map_or(502, |s| s as u16);
    let message = error_message(err).unwrap_or("the provider reported an error in the stream");
    ErrorInfo::new(status, message)
}

// ---------------------------------------------------------------------------
// StreamEncoder
// ---------------------------------------------------------------------------

/// Client side: IR stream events -> `chat.completion.chunk` events.
#[derive(Debug)]
pub struct StreamEncoder {
    opts: EncodeOptions,
    /// `{"id":..,"object":"chat.completion.chunk","created":..,"model":..`,
    /// the start of every chunk.
    head: Vec<u8>,
    /// Tool calls started so far (OpenAI numbers tool calls, not blocks).
    tool_calls: u32,
}

impl Default for StreamEncoder {
    fn default() -> Self {
        Self::new(EncodeOptions::default())
    }
}

impl StreamEncoder {
    /// An encoder for one answer.
    pub fn new(opts: EncodeOptions) -> Self {
        StreamEncoder {
            opts,
            head: Vec::new(),
            tool_calls: 0,
        }
    }

    fn set_head(&mut self, id: &str, model: &str) {
        self.head.clear();
        self.head.extend_from_slice(b"{\"id\":");
        write_string(&mut self.head, id);
        self.head
            .extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        write_u64(&mut self.head, self.opts.created);
        self.head.extend_from_slice(b",\"model\":");
        write_string(&mut self.head, model);
    }

    /// One chunk whose delta `write_delta` writes.
    fn chunk(
        &mut self,
        out: &mut Vec<u8>,
        finish: Option<&str>,
        write_delta: impl FnOnce(&mut Vec<u8>),
    ) {
        if self.head.is_empty() {
            self.set_head("", "");
        }
        sse::begin_event(out, None);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        write_delta(out);
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => write_string(out, f),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}");
        sse::end_event(out);
    }

    /// Appends the chunk(s) for one IR event.
    pub fn event(&mut self, ev: &StreamEvent<'_>, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Start { id, model, .. } => {
                self.set_head(id, model);
                self.chunk(out, None, |o| {
                    o.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}")
                });
            }
            StreamEvent::BlockStart {
                block: BlockKind::ToolCall { id, name },
                ..
            } => {
                let k = self.tool_calls;
                self.tool_calls += 1;
                self.chunk(out, None, |o| {
                    o.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                    write_u64(o, k.into());
                    o.extend_from_slice(b",\"id\":");
                    write_string(o, id);
                    o.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                    write_string(o, name);
                    o.extend_from_slice(b",\"arguments\":\"\"}}]}");
                });
            }
            StreamEvent::BlockStart { .. } | StreamEvent::BlockStop { .. } => {}
            StreamEvent::Delta { delta, .. } => match delta {
                Delta::Text(t) if !t.is_empty() => self.chunk(out, None, |o| {
                    o.extend_from_slice(b"{\"content\":");
                    write_string(o, t);
                    o.push(b'}');
                }),
                Delta::Thinking(t) if !t.is_empty() => self.chunk(out, None, |o| {
                    o.extend_from_slice(b"{\"reasoning_content\":");
                    write_string(o, t);
                    o.push(b'}');
                }),
                Delta::ToolArguments(a) if !a.is_empty() => {
                    let k = self.tool_calls.saturating_sub(1);
                    self.chunk(out, None, |o| {
                        o.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
                        write_u64(o, k.into());
                        o.extend_from_slice(b",\"function\":{\"arguments\":");
                        write_string(o, a);
                        o.extend_from_slice(b"}}]}");
                    });
                }
                _ => {}
            },
            StreamEvent::Finish { stop, usage } => {
                self.chunk(out, Some(finish_reason_str(*stop)), |o| {
                    o.extend_from_slice(b"{}")
                });
                if self.opts.include_usage {
                    sse::begin_event(out, None);
                    out.extend_from_slice(&self.head);
                    out.extend_from_slice(b",\"choices\":[],\"usage\":");
                    write_usage(out, usage);
                    out.push(b'}');
                    sse::end_event(out);
                }
            }
        }
    }

    /// The stream completed: `data: [DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        sse::write_event(out, None, b"[DONE]");
    }

    /// The stream failed: an `error` chunk, which the OpenAI SDKs raise as
    /// an APIError. No `[DONE]` follows.
    pub fn error(&mut self, err: &ErrorInfo, out: &mut Vec<u8>) {
        sse::begin_event(out, None);
        encode_error(err, out);
        sse::end_event(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Parses `text` and runs `f` on the tape's root (the tape borrows the
    /// body, so the check runs inside).
    fn with_json<R>(text: &str, f: impl FnOnce(Json<'_>) -> R) -> R {
        let mut body = text.as_bytes().to_vec();
        let mut buffers = Buffers::default();
        let tape = json::parse(&mut body, &mut buffers).unwrap();
        f(tape.as_value())
    }

    fn decode_err(text: &str) -> String {
        with_json(text, |v| decode_request(v).unwrap_err().message)
    }

    fn to_value(out: &[u8]) -> Value {
        serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
    }

    fn text(s: &str) -> Part<'_> {
        Part::Text(Cow::Borrowed(s))
    }

    #[test]
    fn decodes_a_full_request() {
        let body = r#"{
          "model": "gpt-4o",
          "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
              {"type": "text", "text": "What is in this image, and the weather?"},
              {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
              {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
              {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
            ]},
            {"role": "assistant", "content": null, "reasoning_content": "Need weather.",
             "tool_calls": [
               {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
               {"id": "call_def", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
             ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_def", "content": [{"type": "text", "text": "12:00"}]},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You're welcome."}
          ],
          "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true}}],
          "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
          "parallel_tool_calls": false,
          "max_tokens": 10, "max_completion_tokens": 500,
          "temperature": 1, "top_p": 0.5, "stop": "END",
          "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
          "reasoning_effort": "low", "stream": true, "stream_options": {"include_usage": true},
          "user": "u-1", "n": 1, "seed": 7
        }"#;
        with_json(body, |root| {
            let req = decode_request(root).unwrap();
            assert_eq!(req.model, "gpt-4o");
            assert!(
                matches!(&req.system[..], [Part::Text(a), Part::Text(b)] if a == "You are terse." && b == "Use tools.")
            );
            assert_eq!(req.messages.len(), 4);
            let user = &req.messages[0];
            assert_eq!(user.role, Role::User);
            assert!(matches!(&user.parts[0], Part::Text(t) if t.starts_with("What is")));
            assert!(
                matches!(&user.parts[1], Part::Image(Image::Base64 { media_type, data })
                if media_type == "image/png" && data == "iVBORw0KGgo=")
            );
            assert!(
                matches!(&user.parts[2], Part::Image(Image::Url(u)) if u == "https://example.com/a.jpg")
            );
            assert!(
                matches!(&user.parts[3], Part::Raw { dialect: Dialect::OpenAiChat, value }
                if value.get("type").and_then(|t| str_of(&t)) == Some("input_audio"))
            );
            let asst = &req.messages[1];
            assert_eq!(asst.role, Role::Assistant);
            assert!(
                matches!(&asst.parts[0], Part::Thinking { text, signature: None } if text == "Need weather.")
            );
            assert!(matches!(&asst.parts[1], Part::ToolCall(c)
                if c.id == "call_abc" && c.name == "get_weather" && c.arguments == "{\"city\":\"Paris\"}"));
            assert!(matches!(&asst.parts[2], Part::ToolCall(c) if c.id == "call_def"));
            // Both tool messages and the next user turn share one message.
            let results = &req.messages[2];
            assert_eq!(results.role, Role::User);
            assert_eq!(results.parts.len(), 3);
            assert!(matches!(&results.parts[0], Part::ToolResult(r)
                if r.call_id == "call_abc" && matches!(&r.content[..], [Part::Text(t)] if t == "18C")));
            assert!(matches!(&results.parts[1], Part::ToolResult(r)
                if r.call_id == "call_def" && matches!(&r.content[..], [Part::Text(t)] if t == "12:00")));
            assert!(matches!(&results.parts[2], Part::Text(t) if t == "Thanks"));
            assert!(
                matches!(&req.messages[3].parts[..], [Part::Text(t)] if t == "You're welcome.")
            );

            assert_eq!(req.tools.len(), 1);
            assert_eq!(req.tools[0].name, "get_weather");
            assert_eq!(req.tools[0].description.as_deref(), Some("Weather"));
            assert_eq!(req.tools[0].strict, Some(true));
            assert_eq!(
                json::value_to_string(req.tools[0].parameters.as_ref().unwrap()),
                r#"{"type":"object","properties":{"city":{"type":"string"}}}"#
            );
            assert_eq!(
                req.tool_choice,
                Some(ToolChoice::Tool(Cow::Borrowed("get_weather")))
            );
            assert_eq!(req.parallel_tool_calls, Some(false));
            assert_eq!(req.max_tokens, Some(500), "max_completion_tokens wins");
            assert_eq!(req.temperature, Some(1.0));
            assert_eq!(req.top_p, Some(0.5));
            assert_eq!(req.stop, vec![Cow::Borrowed("END")]);
            assert!(
                matches!(&req.response_format, Some(ResponseFormat::JsonSchema { name, strict: Some(true), schema })
                if name == "out" && json::value_to_string(schema) == r#"{"type":"object"}"#)
            );
            assert_eq!(
                req.thinking,
                Some(Thinking {
                    budget_tokens: None,
                    effort: Some(Effort::Low)
                })
            );
            assert!(req.stream && req.include_usage);
            assert_eq!(req.user.as_deref(), Some("u-1"));
            // Strings borrow from the body.
            assert!(matches!(req.model, Cow::Borrowed(_)));
        });
    }

    #[test]
    fn decodes_legacy_functions_and_plain_fields() {
        let body = r#"{"model":"m","messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{\"a\":1}"}},
            {"role":"function","name":"f","content":"ok"}],
          "functions":[{"name":"f","parameters":{"type":"object"}}],
          "function_call":{"name":"f"}, "stop":["a","b"], "max_tokens": 20, "reasoning_effort": null}"#;
        with_json(body, |root| {
            let req = decode_request(root).unwrap();
            assert_eq!(req.tools.len(), 1);
            assert_eq!(req.tool_choice, Some(ToolChoice::Tool(Cow::Borrowed("f"))));
            assert_eq!(req.max_tokens, Some(20));
            assert_eq!(req.stop.len(), 2);
            assert!(req.thinking.is_none());
            let Part::ToolCall(call) = &req.messages[1].parts[0] else {
                panic!()
            };
            let Part::ToolResult(result) = &req.messages[2].parts[0] else {
                panic!()
            };
            assert_eq!(call.id, result.call_id);
            assert_eq!(result.name.as_deref(), Some("f"));
        });
    }

    #[test]
    fn request_errors_name_the_field() {
        assert_eq!(decode_err(r#"{"model":"m"}"#), "`messages` is required");
        assert_eq!(decode_err(r#"{"messages":[]}"#), "`model` is required");
        assert_eq!(
            decode_err(r#"{"model":"m","messages":{}}"#),
            "`messages` must be an array"
        );
        assert_eq!(
            decode_err(
                r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":5}]}"#
            ),
            "`messages[1].content` must be a string or an array"
        );
        assert_eq!(
            decode_err(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text"}]}]}"#),
            "`messages[0].content[0].text` is required"
        );
        assert_eq!(
            decode_err(r#"{"model":"m","messages":[{"role":"user"}]}"#),
            "`messages[0].content` is required"
        );
        assert!(
            decode_err(r#"{"model":"m","messages":[{"role":"bot","content":"a"}]}"#)
                .starts_with("`messages[0].role` must be")
        );
        assert_eq!(
            decode_err(r#"{"model":"m","messages":[{"role":"tool","content":"a"}]}"#),
            "`messages[0].tool_call_id` is required"
        );
        assert_eq!(
            decode_err(
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"x","type":"function","function":{"arguments":"{}"}}]}]}"#
            ),
            "`messages[0].tool_calls[0].function.name` is required"
        );
        assert!(decode_err(r#"{"model":"m","messages":[],"n":2}"#).contains("`n`"));
        assert_eq!(
            decode_err(r#"{"model":"m","messages":[],"temperature":"hot"}"#),
            "`temperature` must be a number"
        );
        assert_eq!(
            decode_err(r#"{"model":"m","messages":[],"stop":[1]}"#),
            "`stop[0]` must be a string"
        );
        assert!(
            decode_err(r#"{"model":"m","messages":[],"tool_choice":"sometimes"}"#)
                .starts_with("`tool_choice` must be")
        );
        assert!(
            decode_err(r#"{"model":"m","messages":[],"reasoning_effort":"max"}"#)
                .starts_with("`reasoning_effort`")
        );
        assert!(decode_err(
            r#"{"model":"m","messages":[],"tools":[{"type":"custom","custom":{}}]}"#
        )
        .starts_with("`tools[0].type`"));
        assert_eq!(
            decode_err(r#"[1]"#),
            "the request body must be a JSON object"
        );
    }

    fn sample_request<'a>(schema: Json<'a>) -> Request<'a> {
        Request {
            model: Cow::Borrowed("gpt-4o-mini"),
            system: vec![text("Be brief."), text("Line \"two\".")],
            messages: vec![
                Message {
                    role: Role::User,
                    parts: vec![
                        text("Look:"),
                        Part::Image(Image::Base64 {
                            media_type: Cow::Borrowed("image/jpeg"),
                            data: Cow::Borrowed("/9j/4AAQ"),
                        }),
                    ],
                },
                Message {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Thinking {
                            text: Cow::Borrowed("hmm"),
                            signature: Some(Cow::Borrowed("sig")),
                        },
                        Part::RedactedThinking(Cow::Borrowed("xx")),
                        Part::ToolCall(ToolCall {
                            id: Cow::Borrowed("toolu_01"),
                            name: Cow::Borrowed("get_weather"),
                            arguments: Cow::Borrowed("{\"city\":\"Paris\"}"),
                        }),
                        Part::ToolCall(ToolCall {
                            id: Cow::Borrowed("toolu_02"),
                            name: Cow::Borrowed("snap"),
                            arguments: Cow::Borrowed(""),
                        }),
                    ],
                },
                Message {
                    role: Role::User,
                    parts: vec![
                        text("And now?"),
                        Part::ToolResult(ToolResult {
                            call_id: Cow::Borrowed("toolu_01"),
                            name: None,
                            content: vec![text("18C"), text("sunny")],
                            is_error: false,
                        }),
                        Part::ToolResult(ToolResult {
                            call_id: Cow::Borrowed("toolu_02"),
                            name: None,
                            content: vec![Part::Image(Image::Url(Cow::Borrowed(
                                "https://x/y.png",
                            )))],
                            is_error: false,
                        }),
                    ],
                },
            ],
            tools: vec![Tool {
                name: Cow::Borrowed("get_weather"),
                description: Some(Cow::Borrowed("Weather")),
                parameters: Some(schema),
                strict: None,
            }],
            tool_choice: Some(ToolChoice::Required),
            parallel_tool_calls: Some(true),
            max_tokens: Some(1024),
            temperature: Some(0.7),
            top_p: None,
            top_k: Some(40),
            stop: ["a", "b", "c", "d", "e"]
                .into_iter()
                .map(Cow::Borrowed)
                .collect(),
            response_format: Some(ResponseFormat::JsonObject),
            thinking: Some(Thinking {
                budget_tokens: Some(20000),
                effort: None,
            }),
            stream: true,
            include_usage: false,
            user: Some(Cow::Borrowed("u-9")),
        }
    }

    #[test]
    fn encodes_a_request() {
        with_json(
            r#"{"type":"object","properties":{"city":{"type":"string"}}}"#,
            |schema| {
                let req = sample_request(schema);
                let mut out = Vec::new();
                encode_request(&req, &mut out);
                let v = to_value(&out);
                assert_eq!(
                    v,
                    json!({
                      "model": "gpt-4o-mini",
                      "messages": [
                        {"role": "system", "content": "Be brief.\n\nLine \"two\"."},
                        {"role": "user", "content": [
                          {"type": "text", "text": "Look:"},
                          {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
                        ]},
                        {"role": "assistant", "content": null, "tool_calls": [
                          {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                          {"id": "toolu_02", "type": "function", "function": {"name": "snap", "arguments": "{}"}}
                        ]},
                        {"role": "tool", "tool_call_id": "toolu_01", "content": "18C\nsunny"},
                        {"role": "tool", "tool_call_id": "toolu_02", "content": "(the tool returned images; they follow in the next user message)"},
                        {"role": "user", "content": [
                          {"type": "text", "text": "Images returned by tool call toolu_02:"},
                          {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                          {"type": "text", "text": "And now?"}
                        ]}
                      ],
                      "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                      "tool_choice": "required",
                      "parallel_tool_calls": true,
                      "max_completion_tokens": 1024,
                      "temperature": 0.7,
                      "stop": ["a", "b", "c", "d"],
                      "response_format": {"type": "json_object"},
                      "reasoning_effort": "high",
                      "stream": true,
                      "stream_options": {"include_usage": true},
                      "user": "u-9"
                    })
                );
            },
        );
    }

    #[test]
    fn encoded_request_decodes_back() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"},
            {"role":"assistant","content":"Sure.","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"done"}],
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}"#;
        with_json(body, |root| {
            let req = decode_request(root).unwrap();
            let mut out = Vec::new();
            encode_request(&req, &mut out);
            assert_eq!(
                to_value(&out),
                json!({"model":"m","messages":[{"role":"user","content":"hi"},
                  {"role":"assistant","content":"Sure.","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                  {"role":"tool","tool_call_id":"c1","content":"done"}],
                  "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"})
            );
        });
    }

    #[test]
    fn tool_fields_need_tools() {
        let req = Request {
            model: Cow::Borrowed("m"),
            tool_choice: Some(ToolChoice::Auto),
            parallel_tool_calls: Some(false),
            messages: vec![Message {
                role: Role::User,
                parts: vec![text("x")],
            }],
            ..Request::default()
        };
        let mut out = Vec::new();
        encode_request(&req, &mut out);
        assert_eq!(
            to_value(&out),
            json!({"model":"m","messages":[{"role":"user","content":"x"}]})
        );
    }

    #[test]
    fn decodes_a_response() {
        let body = r#"{"id":"chatcmpl-123","object":"chat.completion","created":1741569952,"model":"gpt-4.1-2025-04-14",
          "choices":[{"index":0,"message":{"role":"assistant","content":"Let me check.","reasoning_content":"think",
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}],
            "refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"tool_calls"}],
          "usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
            "prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0}},"service_tier":"default"}"#;
        with_json(body, |root| {
            let resp = decode_response(root).unwrap();
            assert_eq!(resp.id, "chatcmpl-123");
            assert_eq!(resp.model, "gpt-4.1-2025-04-14");
            assert!(matches!(&resp.content[0], Part::Thinking { text, .. } if text == "think"));
            assert!(matches!(&resp.content[1], Part::Text(t) if t == "Let me check."));
            assert!(
                matches!(&resp.content[2], Part::ToolCall(c) if c.id == "call_1" && c.arguments == "{\"city\":\"Paris\"}")
            );
            assert_eq!(resp.stop, StopReason::ToolUse);
            assert_eq!(
                resp.usage,
                Usage {
                    input: Some(19),
                    output: Some(10),
                    cached: Some(3)
                }
            );
        });
        for (reason, stop) in [
            ("stop", StopReason::EndTurn),
            ("length", StopReason::MaxTokens),
            ("content_filter", StopReason::ContentFilter),
        ] {
            let body = format!(
                r#"{{"id":"x","model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"hi"}},"finish_reason":"{reason}"}}]}}"#
            );
            with_json(&body, |root| {
                let resp = decode_response(root).unwrap();
                assert_eq!(resp.stop, stop);
                assert_eq!(resp.usage, Usage::default());
            });
        }
        with_json(r#"{"id":"x","object":"chat.completion"}"#, |root| {
            assert_eq!(
                decode_response(root).unwrap_err().message,
                "`choices` is required"
            );
        });
        with_json(r#"{"choices":[{"message":"hi"}]}"#, |root| {
            assert_eq!(
                decode_response(root).unwrap_err().message,
                "`choices[0].message` must be an object"
            );
        });
        with_json(r#"{"error":{"message":"boom"}}"#, |root| {
            assert!(decode_response(root).unwrap_err().message.contains("boom"));
        });
    }

    #[test]
    fn encodes_a_response() {
        let resp = Response {
            id: Cow::Borrowed("msg_1"),
            model: Cow::Borrowed("claude"),
            content: vec![
                Part::Thinking {
                    text: Cow::Borrowed("plan"),
                    signature: Some(Cow::Borrowed("s")),
                },
                text("Checking "),
                text("now."),
                Part::ToolCall(ToolCall {
                    id: Cow::Borrowed("toolu_9"),
                    name: Cow::Borrowed("f"),
                    arguments: Cow::Borrowed("{\"a\":1}"),
                }),
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: Some(5),
                output: Some(7),
                cached: None,
            },
        };
        let mut out = Vec::new();
        encode_response(
            &resp,
            &EncodeOptions {
                created: 1700000000,
                ..Default::default()
            },
            &mut out,
        );
        assert_eq!(
            to_value(&out),
            json!({"id":"msg_1","object":"chat.completion","created":1700000000,"model":"claude",
              "choices":[{"index":0,"message":{"role":"assistant","content":"Checking now.","reasoning_content":"plan",
                "tool_calls":[{"id":"toolu_9","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}],
                "refusal":null},"logprobs":null,"finish_reason":"tool_calls"}],
              "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":0}}})
        );
        let resp = Response {
            content: vec![Part::ToolCall(ToolCall {
                id: Cow::Borrowed("c"),
                name: Cow::Borrowed("f"),
                arguments: Cow::Borrowed("{}"),
            })],
            stop: StopReason::StopSequence,
            ..Response::default()
        };
        let mut out = Vec::new();
        encode_response(&resp, &EncodeOptions::default(), &mut out);
        let v = to_value(&out);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["choices"][0]["message"]
            .get("reasoning_content")
            .is_none());
    }

    /// Runs an SSE transcript through a decoder; events as short strings.
    fn decode_stream(transcript: &str, finish: bool) -> (Vec<String>, Result<(), ErrorInfo>) {
        let mut parser = sse::Parser::new();
        let mut decoder = StreamDecoder::new();
        let mut buffers = Buffers::default();
        let mut events = Vec::new();
        // The decoder's error is kept aside: the parser's own error type is
        // SseError (a From impl here would be crate-wide).
        let mut result = Ok(());
        parser
            .feed::<sse::SseError>(transcript.as_bytes(), |ev| {
                if result.is_ok() {
                    result = decoder.event(ev, &mut buffers, &mut |e| events.push(show(&e)));
                }
                Ok(())
            })
            .unwrap();
        if result.is_ok() && finish {
            result = decoder.finish(&mut |e| events.push(show(&e)));
        }
        (events, result)
    }

    fn show(e: &StreamEvent<'_>) -> String {
        match e {
            StreamEvent::Start {
                id,
                model,
                input_tokens,
            } => format!("start {id} {model} {input_tokens:?}"),
            StreamEvent::BlockStart { index, block } => match block {
                BlockKind::Text => format!("{index}+text"),
                BlockKind::Thinking => format!("{index}+thinking"),
                BlockKind::RedactedThinking(_) => format!("{index}+redacted"),
                BlockKind::ToolCall { id, name } => format!("{index}+tool {id} {name}"),
            },
            StreamEvent::Delta { index, delta } => match delta {
                Delta::Text(t) => format!("{index} text {t}"),
                Delta::Thinking(t) => format!("{index} thinking {t}"),
                Delta::Signature(t) => format!("{index} sig {t}"),
                Delta::ToolArguments(t) => format!("{index} args {t}"),
            },
            StreamEvent::BlockStop { index } => format!("{index}-"),
            StreamEvent::Finish { stop, usage } => {
                format!(
                    "finish {stop:?} {:?} {:?} {:?}",
                    usage.input, usage.output, usage.cached
                )
            }
        }
    }

    fn chunk(delta: &str, finish: &str) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"system_fingerprint\":\"fp\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        )
    }

    #[test]
    fn decodes_a_full_stream() {
        let mut t = String::new();
        t += &chunk(
            r#"{"role":"assistant","content":"","refusal":null}"#,
            "null",
        );
        t += &chunk(r#"{"reasoning_content":"Let me "}"#, "null");
        t += &chunk(r#"{"reasoning_content":"think."}"#, "null");
        t += &chunk(r#"{"content":"Checking"}"#, "null");
        t += &chunk(r#"{"content":" both."}"#, "null");
        t += &chunk(
            r#"{"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"get_weather","arguments":""}}]}"#,
            "null",
        );
        t += &chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}"#,
            "null",
        );
        t += &chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"ty\": \"Par"}}]}"#,
            "null",
        );
        t += &chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"is\"}"}}]}"#,
            "null",
        );
        t += &chunk(
            r#"{"tool_calls":[{"index":1,"id":"call_B","type":"function","function":{"name":"get_time","arguments":""}}]}"#,
            "null",
        );
        t += &chunk(
            r#"{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}"#,
            "null",
        );
        t += &chunk("{}", "\"tool_calls\"");
        t += "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":82,\"completion_tokens\":17,\"total_tokens\":99,\"prompt_tokens_details\":{\"cached_tokens\":64}}}\n\n";
        t += "data: [DONE]\n\n";
        let (events, result) = decode_stream(&t, true);
        result.unwrap();
        assert_eq!(
            events,
            [
                "start chatcmpl-1 gpt-4o None",
                "0+thinking",
                "0 thinking Let me ",
                "0 thinking think.",
                "0-",
                "1+text",
                "1 text Checking",
                "1 text  both.",
                "1-",
                "2+tool call_A get_weather",
                "2 args {\"ci",
                "2 args ty\": \"Par",
                "2 args is\"}",
                "2-",
                "3+tool call_B get_time",
                "3 args {}",
                "3-",
                "finish ToolUse Some(82) Some(17) Some(64)",
            ]
        );
    }

    #[test]
    fn interleaved_tool_calls_become_sequential_blocks() {
        let mut t = String::new();
        t += &chunk(
            r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":"}},{"index":1,"id":"b","type":"function","function":{"name":"g","arguments":"{\"y\""}}]}"#,
            "null",
        );
        t += &chunk(
            r#"{"tool_calls":[{"index":1,"function":{"arguments":":2}"}}]}"#,
            "null",
        );
        t += &chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}"#,
            "null",
        );
        // A third call starts after the first is complete: it streams live.
        t += &chunk(
            r#"{"tool_calls":[{"index":2,"id":"c","type":"function","function":{"name":"h","arguments":"{}"}}]}"#,
            "null",
        );
        t += &chunk("{}", "\"tool_calls\"");
        // No [DONE]: the finish_reason makes the stream complete.
        let (events, result) = decode_stream(&t, true);
        result.unwrap();
        assert_eq!(
            events,
            [
                "start chatcmpl-1 gpt-4o None",
                "0+tool a f",
                "0 args {\"x\":",
                "0 args 1}",
                "0-",
                "1+tool c h",
                "1 args {}",
                "1-",
                "2+tool b g",
                "2 args {\"y\":2}",
                "2-",
                "finish ToolUse None None None",
            ]
        );
    }

    #[test]
    fn stream_ends_and_errors() {
        // Cut off before any finish_reason.
        let t = chunk(r#"{"content":"Hel"}"#, "null");
        let (events, result) = decode_stream(&t, true);
        assert_eq!(
            events,
            ["start chatcmpl-1 gpt-4o None", "0+text", "0 text Hel"]
        );
        let err = result.unwrap_err();
        assert_eq!((err.status, err.kind), (502, ErrorKind::Api));
        assert!(err.message.contains("ended before"));

        // An error chunk mid-stream.
        let t = chunk(r#"{"content":"Hel"}"#, "null")
            + "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"rate_limit_error\",\"code\":429}}\n\n";
        let (_, result) = decode_stream(&t, false);
        let err = result.unwrap_err();
        assert_eq!(
            (err.status, err.kind, err.message.as_str()),
            (429, ErrorKind::RateLimited, "Rate limit reached")
        );
        let (_, result) = decode_stream(
            "data: {\"error\":{\"message\":\"oops\",\"code\":\"server_error\"}}\n\n",
            false,
        );
        assert_eq!(result.unwrap_err().status, 502);

        // An empty finish_reason is not one.
        let t = chunk(r#"{"content":"Hel"}"#, "\"\"");
        assert!(decode_stream(&t, true).1.is_err());

        // Malformed data.
        let (_, result) = decode_stream("data: {\"choices\":[{\"delta\":\n\n", false);
        assert!(result.unwrap_err().message.contains("not valid JSON"));
        let (_, result) = decode_stream("data: {\"choices\":{}}\n\n", false);
        assert_eq!(result.unwrap_err().status, 502);
        let (_, result) = decode_stream("data: [1]\n\n", false);
        assert!(result.is_err());

        // [DONE] alone still gives a well-formed IR stream.
        let (events, result) = decode_stream("data: [DONE]\n\n", true);
        result.unwrap();
        assert_eq!(events, ["start   None", "finish EndTurn None None None"]);

        // Arguments for a call after text had started cannot be placed.
        let mut t = chunk(
            r#"{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\":"}}]}"#,
            "null",
        );
        t += &chunk(r#"{"content":"hm"}"#, "null");
        t += &chunk(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}"#,
            "null",
        );
        let (_, result) = decode_stream(&t, true);
        assert!(result.unwrap_err().message.contains("cannot be translated"));
    }

    #[test]
    fn stream_with_reasoning_field_and_length() {
        let mut t = String::new();
        t += &chunk(r#"{"role":"assistant","reasoning":"r"}"#, "null");
        t += &chunk(r#"{"content":"a"}"#, "null");
        t += "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";
        t += "data: [DONE]\n\n";
        let (events, result) = decode_stream(&t, true);
        result.unwrap();
        assert_eq!(
            events,
            [
                "start chatcmpl-1 gpt-4o None",
                "0+thinking",
                "0 thinking r",
                "0-",
                "1+text",
                "1 text a",
                "1-",
                "finish MaxTokens Some(3) Some(4) None",
            ]
        );
    }

    /// The `data:` payloads of an SSE byte string, parsed.
    fn sse_payloads(out: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("\n\n"));
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                assert!(!e.contains("event:"), "{e}");
                e.strip_prefix("data: ").unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn encodes_a_full_stream() {
        let mut enc = StreamEncoder::new(EncodeOptions {
            created: 42,
            include_usage: true,
            json_array: false,
        });
        let events = [
            StreamEvent::Start {
                id: Cow::Borrowed("msg_1"),
                model: Cow::Borrowed("m"),
                input_tokens: Some(9),
            },
            StreamEvent::BlockStart {
                index: 0,
                block: BlockKind::Thinking,
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Thinking(Cow::Borrowed("hmm")),
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Signature(Cow::Borrowed("sig")),
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockKind::RedactedThinking(Cow::Borrowed("xx")),
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::BlockStart {
                index: 2,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 2,
                delta: Delta::Text(Cow::Borrowed("Hi \"you\"")),
            },
            StreamEvent::BlockStop { index: 2 },
            StreamEvent::BlockStart {
                index: 3,
                block: BlockKind::ToolCall {
                    id: Cow::Borrowed("toolu_1"),
                    name: Cow::Borrowed("f"),
                },
            },
            StreamEvent::Delta {
                index: 3,
                delta: Delta::ToolArguments(Cow::Borrowed("{\"a\":")),
            },
            StreamEvent::Delta {
                index: 3,
                delta: Delta::ToolArguments(Cow::Borrowed("1}")),
            },
            StreamEvent::BlockStop { index: 3 },
            StreamEvent::BlockStart {
                index: 4,
                block: BlockKind::ToolCall {
                    id: Cow::Borrowed("toolu_2"),
                    name: Cow::Borrowed("g"),
                },
            },
            StreamEvent::BlockStop { index: 4 },
            StreamEvent::Finish {
                stop: StopReason::ToolUse,
                usage: Usage {
                    input: Some(9),
                    output: Some(20),
                    cached: Some(1),
                },
            },
        ];
        let mut out = Vec::new();
        for e in &events {
            enc.event(e, &mut out);
        }
        enc.finish(&mut out);
        let payloads = sse_payloads(&out);
        assert_eq!(payloads.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = payloads[..payloads.len() - 1]
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        let c = |delta: Value, finish: Value| {
            json!({"id":"msg_1","object":"chat.completion.chunk","created":42,"model":"m",
                   "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}]})
        };
        assert_eq!(
            chunks,
            vec![
                c(json!({"role":"assistant","content":""}), Value::Null),
                c(json!({"reasoning_content":"hmm"}), Value::Null),
                c(json!({"content":"Hi \"you\""}), Value::Null),
                c(
                    json!({"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"f","arguments":""}}]}),
                    Value::Null
                ),
                c(
                    json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}),
                    Value::Null
                ),
                c(
                    json!({"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}),
                    Value::Null
                ),
                c(
                    json!({"tool_calls":[{"index":1,"id":"toolu_2","type":"function","function":{"name":"g","arguments":""}}]}),
                    Value::Null
                ),
                c(json!({}), json!("tool_calls")),
                json!({"id":"msg_1","object":"chat.completion.chunk","created":42,"model":"m","choices":[],
                       "usage":{"prompt_tokens":9,"completion_tokens":20,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":1}}}),
            ]
        );

        // Without include_usage there is no usage chunk.
        let mut enc = StreamEncoder::new(EncodeOptions::default());
        let mut out = Vec::new();
        enc.event(
            &StreamEvent::Start {
                id: Cow::Borrowed("x"),
                model: Cow::Borrowed("m"),
                input_tokens: None,
            },
            &mut out,
        );
        enc.event(
            &StreamEvent::Finish {
                stop: StopReason::MaxTokens,
                usage: Usage::default(),
            },
            &mut out,
        );
        let payloads = sse_payloads(&out);
        assert_eq!(payloads.len(), 2);
        let last: Value = serde_json::from_str(&payloads[1]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn stream_encoder_error_and_roundtrip() {
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        enc.event(
            &StreamEvent::Start {
                id: Cow::Borrowed("x"),
                model: Cow::Borrowed("m"),
                input_tokens: None,
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
        out.clear();
        enc.error(&ErrorInfo::new(529, "Overloaded"), &mut out);
        let payloads = sse_payloads(&out);
        assert_eq!(payloads.len(), 1);
        let v: Value = serde_json::from_str(&payloads[0]).unwrap();
        assert_eq!(
            v,
            json!({"error":{"message":"Overloaded","type":"server_error","param":null,"code":"overloaded"}})
        );

        // What the encoder writes, the decoder reads back.
        let mut enc = StreamEncoder::new(EncodeOptions {
            created: 1,
            include_usage: true,
            json_array: false,
        });
        let mut out = Vec::new();
        for e in [
            StreamEvent::Start {
                id: Cow::Borrowed("id"),
                model: Cow::Borrowed("m"),
                input_tokens: None,
            },
            StreamEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Text(Cow::Borrowed("yo")),
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockKind::ToolCall {
                    id: Cow::Borrowed("t1"),
                    name: Cow::Borrowed("f"),
                },
            },
            StreamEvent::Delta {
                index: 1,
                delta: Delta::ToolArguments(Cow::Borrowed("{}")),
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::Finish {
                stop: StopReason::ToolUse,
                usage: Usage {
                    input: Some(1),
                    output: Some(2),
                    cached: None,
                },
            },
        ] {
            enc.event(&e, &mut out);
        }
        enc.finish(&mut out);
        let (events, result) = decode_stream(std::str::from_utf8(&out).unwrap(), true);
        result.unwrap();
        assert_eq!(
            events,
            [
                "start id m None",
                "0+text",
                "0 text yo",
                "0-",
                "1+tool t1 f",
                "1 args {}",
                "1-",
                "finish ToolUse Some(1) Some(2) Some(0)"
            ]
        );
    }

    #[test]
    fn encodes_errors() {
        let cases = [
            (400, "invalid_request_error", Value::Null),
            (401, "authentication_error", json!("invalid_api_key")),
            (403, "permission_error", json!("permission_denied")),
            (404, "not_found_error", json!("not_found")),
            (413, "invalid_request_error", json!("request_too_large")),
            (429, "rate_limit_error", json!("rate_limit_exceeded")),
            (503, "server_error", json!("overloaded")),
            (504, "timeout_error", json!("timeout")),
            (500, "server_error", Value::Null),
        ];
        for (status, ty, code) in cases {
            let mut out = Vec::new();
            encode_error(&ErrorInfo::new(status, "bad \"thing\""), &mut out);
            assert_eq!(
                to_value(&out),
                json!({"error":{"message":"bad \"thing\"","type":ty,"param":null,"code":code}}),
                "{status}"
            );
        }
    }

    #[test]
    fn decodes_errors() {
        let mut buffers = Buffers::default();
        let mut body = br#"{"error":{"message":"Incorrect API key provided: sk-...","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#.to_vec();
        let e = decode_error(401, &mut body, &mut buffers);
        assert_eq!(
            e,
            ErrorInfo {
                status: 401,
                kind: ErrorKind::Authentication,
                message: "Incorrect API key provided: sk-...".into()
            }
        );

        let mut body = br#"[{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}]"#.to_vec();
        let e = decode_error(429, &mut body, &mut buffers);
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::RateLimited, "Resource exhausted")
        );

        let mut body = b"<html>502 Bad Gateway</html>".to_vec();
        let e = decode_error(502, &mut body, &mut buffers);
        assert_eq!(
            (e.status, e.message.as_str()),
            (502, "<html>502 Bad Gateway</html>")
        );

        let mut body = "é".repeat(600).into_bytes();
        let e = decode_error(500, &mut body, &mut buffers);
        assert_eq!(e.message.chars().count(), 500);

        let mut body = br#"{"error":"model overloaded"}"#.to_vec();
        assert_eq!(
            decode_error(503, &mut body, &mut buffers).message,
            "model overloaded"
        );

        let mut body = Vec::new();
        assert!(decode_error(500, &mut body, &mut buffers)
            .message
            .contains("500"));
    }

    #[test]
    fn never_panics_on_odd_shapes() {
        let bodies = [
            r#"{"model":"m","messages":[null]}"#,
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":5}}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}"#,
            r#"{"model":"m","messages":[],"response_format":{"type":"json_schema"}}"#,
            r#"{"model":"m","messages":[],"stream_options":true}"#,
        ];
        for b in bodies {
            with_json(b, |root| {
                let _ = decode_request(root);
            });
        }
        with_json(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}"#,
            |root| {
                let req = decode_request(root).unwrap();
                assert!(
                    matches!(&req.messages[0].parts[0], Part::Image(Image::Url(_))),
                    "not base64: kept as a URL"
                );
            },
        );
    }
}
