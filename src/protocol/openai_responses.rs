//! OpenAI's Responses API (`POST /v1/responses`), client side only.
//!
//! Codex CLI and the official SDKs (`client.responses.create`,
//! `client.responses.stream`) speak it. A Responses request is translated to
//! the IR and sent to providers through another codec, so this module only
//! decodes requests and encodes answers: [`decode_request`],
//! [`encode_response`] and [`StreamEncoder`]. The error body has the same
//! shape as Chat Completions', so the OpenAI Chat `encode_error` serves it.
//!
//! The gateway keeps no conversation state: `previous_response_id` (and
//! `conversation`) are refused, and every answer says `store: false`.

use std::borrow::Cow;

use simd_json::prelude::*;

use crate::protocol::ir::*;
use crate::protocol::json::{write_string, write_u64};
use crate::sse::{begin_event, end_event};

// ---------------------------------------------------------------------------
// Request decoding
// ---------------------------------------------------------------------------

/// Client side: a Responses API request body (parsed to a tape) -> IR.
///
/// `input` items map as follows: messages by role (`system` and `developer`
/// go to [`Request::system`]); `function_call` items become
/// [`Part::ToolCall`] in an assistant message; `function_call_output` items
/// become [`Part::ToolResult`] in a user message; `reasoning` items become
/// [`Part::Thinking`] with their summary text. Assistant-side items
/// (assistant messages, reasoning, function calls) join a directly preceding
/// assistant message, so a turn of reasoning + text + calls stays one message
/// (Anthropic needs the thinking next to its tool calls); consecutive
/// function call outputs share one user message. Unknown item and content
/// types are kept as [`Part::Raw`].
pub fn decode_request<'a>(root: Json<'a>) -> Result<Request<'a>, TranslateError> {
    if root.as_object().is_none() {
        return Err(TranslateError::new(
            "the request body must be a JSON object",
        ));
    }
    let mut req = Request {
        model: Cow::Borrowed(
            opt_str(root, "model", || "model".into())?
                .ok_or_else(|| TranslateError::missing("model"))?,
        ),
        ..Request::default()
    };

    if non_null(root.get("previous_response_id")).is_some() {
        return Err(TranslateError::new(
            "`previous_response_id` is not supported: the gateway keeps no conversation state; send the whole conversation in `input`",
        ));
    }
    if non_null(root.get("conversation")).is_some() {
        return Err(TranslateError::new(
            "`conversation` is not supported: the gateway keeps no conversation state; send the whole conversation in `input`",
        ));
    }

    if let Some(text) = opt_str(root, "instructions", || "instructions".into())? {
        req.system.push(Part::Text(Cow::Borrowed(text)));
    }

    match non_null(root.get("input")) {
        None => return Err(TranslateError::missing("input")),
        Some(input) => {
            if let Some(text) = input.into_string() {
                req.messages.push(Message {
                    role: Role::User,
                    parts: vec![Part::Text(Cow::Borrowed(text))],
                });
            } else if let Some(items) = input.as_array() {
                for (i, item) in items.iter().enumerate() {
                    decode_item(&mut req, item, i)?;
                }
            } else {
                return Err(TranslateError::wrong_type(
                    "input",
                    "a string or an array of items",
                ));
            }
        }
    }

    if let Some(tools) = non_null(root.get("tools")) {
        let tools = tools
            .as_array()
            .ok_or_else(|| TranslateError::wrong_type("tools", "an array"))?;
        for (i, tool) in tools.iter().enumerate() {
            if let Some(t) = decode_tool(tool, i)? {
                req.tools.push(t);
            }
        }
    }

    if let Some(choice) = non_null(root.get("tool_choice")) {
        req.tool_choice = decode_tool_choice(choice)?;
    }
    req.parallel_tool_calls = opt_bool(root, "parallel_tool_calls")?;
    req.max_tokens = opt_u64(root, "max_output_tokens")?;
    req.temperature = opt_f64(root, "temperature")?;
    req.top_p = opt_f64(root, "top_p")?;
    req.stream = opt_bool(root, "stream")?.unwrap_or(false);
    req.user = opt_str(root, "user", || "user".into())?.map(Cow::Borrowed);

    if let Some(text) = non_null(root.get("text")) {
        if text.as_object().is_none() {
            return Err(TranslateError::wrong_type("text", "an object"));
        }
        if let Some(format) = non_null(text.get("format")) {
            req.response_format = Some(decode_format(format)?);
        }
    }

    if let Some(reasoning) = non_null(root.get("reasoning")) {
        if reasoning.as_object().is_none() {
            return Err(TranslateError::wrong_type("reasoning", "an object"));
        }
        req.thinking = match opt_str(reasoning, "effort", || "reasoning.effort".into())? {
            // "none" (GPT-5.1) asks for no reasoning at all.
            Some("none") => None,
            None => Some(Thinking {
                budget_tokens: None,
                effort: None,
            }),
            Some(e) => {
                // "xhigh" is newer than the IR's levels; High is the nearest.
                let effort = match e {
                    "xhigh" => Effort::High,
                    _ => Effort::parse(e).ok_or_else(|| {
                        TranslateError::new(format!(
                            "`reasoning.effort` must be one of none, minimal, low, medium, high; got `{e}`"
                        ))
                    })?,
                };
                Some(Thinking {
                    budget_tokens: None,
                    effort: Some(effort),
                })
            }
        };
    }

    // `include_usage`: the Responses API always reports usage in
    // `response.completed`, so there is nothing to ask for.
    Ok(req)
}

/// One element of `input`.
fn decode_item<'a>(req: &mut Request<'a>, item: Json<'a>, i: usize) -> Result<(), TranslateError> {
    if item.as_object().is_none() {
        return Err(TranslateError::wrong_type(
            &format!("input[{i}]"),
            "an object",
        ));
    }
    let ty = opt_str(item, "type", || format!("input[{i}].type"))?;
    match ty {
        None | Some("message") => decode_message(req, item, i),
        Some("function_call") => {
            let call = ToolCall {
                id: Cow::Borrowed(req_str(item, "call_id", || format!("input[{i}].call_id"))?),
                name: Cow::Borrowed(req_str(item, "name", || format!("input[{i}].name"))?),
                arguments: Cow::Borrowed(
                    opt_str(item, "arguments", || format!("input[{i}].arguments"))?.unwrap_or("{}"),
                ),
            };
            push_assistant(req, Part::ToolCall(call));
            Ok(())
        }
        Some("function_call_output") => {
            let call_id = req_str(item, "call_id", || format!("input[{i}].call_id"))?;
            let content = match non_null(item.get("output")) {
                None => Vec::new(),
                Some(out) => decode_output(out, i)?,
            };
            let part = Part::ToolResult(ToolResult {
                call_id: Cow::Borrowed(call_id),
                name: None,
                content,
                is_error: false,
            });
            match req.messages.last_mut() {
                Some(m)
                    if m.role == Role::User
                        && matches!(m.parts.last(), Some(Part::ToolResult(_))) =>
                {
                    m.parts.push(part)
                }
                _ => req.messages.push(Message {
                    role: Role::User,
                    parts: vec![part],
                }),
            }
            Ok(())
        }
        Some("reasoning") => {
            let text = reasoning_summary(item, i)?;
            // Without a summary there is nothing a provider could use: the
            // item's `encrypted_content` is OpenAI's own and means nothing
            // elsewhere.
            if !text.is_empty() {
                push_assistant(
                    req,
                    Part::Thinking {
                        text,
                        signature: None,
                    },
                );
            }
            Ok(())
        }
        Some(_) => {
            let part = Part::Raw {
                dialect: Dialect::OpenAiResponses,
                value: item,
            };
            match req.messages.last_mut() {
                Some(m) => m.parts.push(part),
                None => req.messages.push(Message {
                    role: Role::User,
                    parts: vec![part],
                }),
            }
            Ok(())
        }
    }
}

/// Appends an assistant-side part to a directly preceding assistant
/// message, or starts one.
fn push_assistant<'a>(req: &mut Request<'a>, part: Part<'a>) {
    match req.messages.last_mut() {
        Some(m) if m.role == Role::Assistant => m.parts.push(part),
        _ => req.messages.push(Message {
            role: Role::Assistant,
            parts: vec![part],
        }),
    }
}

/// A `message` item (`type` may be absent: the "easy input message").
fn decode_message<'a>(
    req: &mut Request<'a>,
    item: Json<'a>,
    i: usize,
) -> Result<(), TranslateError> {
    let role = match req_str(item, "role", || format!("input[{i}].role"))? {
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "system" | "developer" => None,
        other => {
            return Err(TranslateError::new(format!(
                "`input[{i}].role` must be user, assistant, system or developer; got `{other}`"
            )))
        }
    };
    let content = non_null(item.get("content"))
        .ok_or_else(|| TranslateError::missing(&format!("input[{i}].content")))?;
    let mut parts = Vec::new();
    if let Some(text) = content.into_string() {
        parts.push(Part::Text(Cow::Borrowed(text)));
    } else if let Some(arr) = content.as_array() {
        parts.reserve(arr.len());
        for (j, c) in arr.iter().enumerate() {
            let part = decode_content(c, i, j)?;
            // Only text (and this dialect's raw blocks) may stand in the
            // system prompt: anything else there is kept raw, which the
            // other encoders drop.
            parts.push(match (role, part) {
                (None, Part::Text(t)) => Part::Text(t),
                (None, _) => Part::Raw {
                    dialect: Dialect::OpenAiResponses,
                    value: c,
                },
                (Some(_), part) => part,
            });
        }
    } else {
        return Err(TranslateError::wrong_type(
            &format!("input[{i}].content"),
            "a string or an array",
        ));
    }
    match role {
        Some(Role::User) => req.messages.push(Message {
            role: Role::User,
            parts,
        }),
        Some(Role::Assistant) => {
            for p in parts {
                push_assistant(req, p);
            }
        }
        None => req.system.append(&mut parts),
    }
    Ok(())
}

/// One element of a message's `content` array.
fn decode_content<'a>(c: Json<'a>, i: usize, j: usize) -> Result<Part<'a>, TranslateError> {
    if c.as_object().is_none() {
        return Err(TranslateError::wrong_type(
            &format!("input[{i}].content[{j}]"),
            "an object",
        ));
    }
    let ty = req_str(c, "type", || format!("input[{i}].content[{j}].type"))?;
    match ty {
        "input_text" | "output_text" | "text" => {
            Ok(Part::Text(Cow::Borrowed(req_str(c, "text", || {
                format!("input[{i}].content[{j}].text")
            })?)))
        }
        "input_image" => match opt_str(c, "image_url", || {
            format!("input[{i}].content[{j}].image_url")
        })? {
            Some(url) => Ok(Part::Image(image_of_url(url))),
            // A `file_id` image refers to OpenAI's file store: raw.
            None => Ok(Part::Raw {
                dialect: Dialect::OpenAiResponses,
                value: c,
            }),
        },
        _ => Ok(Part::Raw {
            dialect: Dialect::OpenAiResponses,
            value: c,
        }),
    }
}

/// A `data:<type>;base64,<data>` URL becomes inline bytes; anything else is
/// a URL the provider fetches.
fn image_of_url(url: &str) -> Image<'_> {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some(comma) = rest.find(',') {
            if let Some(media_type) = rest[..comma].strip_suffix(";base64") {
                return Image::Base64 {
                    media_type: Cow::Borrowed(media_type),
                    data: Cow::Borrowed(&rest[comma + 1..]),
                };
            }
        }
    }
    Image::Url(Cow::Borrowed(url))
}

/// A `function_call_output`'s `output`: a string, or an array of
/// `input_text` / `input_image` parts (other kinds, such as files, cannot
/// travel in a tool result and are dropped).
fn decode_output<'a>(out: Json<'a>, i: usize) -> Result<Vec<Part<'a>>, TranslateError> {
    if let Some(text) = out.into_string() {
        return Ok(vec![Part::Text(Cow::Borrowed(text))]);
    }
    let arr = out.as_array().ok_or_else(|| {
        TranslateError::wrong_type(&format!("input[{i}].output"), "a string or an array")
    })?;
    let mut parts = Vec::with_capacity(arr.len());
    for (j, c) in arr.iter().enumerate() {
        if c.as_object().is_none() {
            return Err(TranslateError::wrong_type(
                &format!("input[{i}].output[{j}]"),
                "an object",
            ));
        }
        match opt_str(c, "type", || format!("input[{i}].output[{j}].type"))? {
            Some("input_text") | Some("output_text") | Some("text") => {
                parts.push(Part::Text(Cow::Borrowed(req_str(c, "text", || {
                    format!("input[{i}].output[{j}].text")
                })?)))
            }
            Some("input_image") => {
                if let Some(url) = opt_str(c, "image_url", || {
                    format!("input[{i}].output[{j}].image_url")
                })? {
                    parts.push(Part::Image(image_of_url(url)));
                }
            }
            _ => {}
        }
    }
    Ok(parts)
}

/// The text of a `reasoning` item's summary parts, joined by blank lines
/// (borrowed when there is only one).
fn reasoning_summary<'a>(item: Json<'a>, i: usize) -> Result<Cow<'a, str>, TranslateError> {
    let Some(summary) = non_null(item.get("summary")) else {
        return Ok(Cow::Borrowed(""));
    };
    let arr = summary
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type(&format!("input[{i}].summary"), "an array"))?;
    let mut text: Cow<'a, str> = Cow::Borrowed("");
    for (j, s) in arr.iter().enumerate() {
        if s.as_object().is_none() {
            return Err(TranslateError::wrong_type(
                &format!("input[{i}].summary[{j}]"),
                "an object",
            ));
        }
        let t = req_str(s, "text", || format!("input[{i}].summary[{j}].text"))?;
        if t.is_empty() {
            continue;
        }
        if text.is_empty() {
            text = Cow::Borrowed(t);
        } else {
            let owned = text.to_mut();
            owned.push_str("\n\n");
            owned.push_str(t);
        }
    }
    Ok(text)
}

/// One element of `tools`. Only function tools translate; OpenAI's hosted
/// tools (web_search, file_search, local_shell, custom...) are skipped.
fn decode_tool<'a>(tool: Json<'a>, i: usize) -> Result<Option<Tool<'a>>, TranslateError> {
    if tool.as_object().is_none() {
        return Err(TranslateError::wrong_type(
            &format!("tools[{i}]"),
            "an object",
        ));
    }
    if req_str(tool, "type", || format!("tools[{i}].type"))? != "function" {
        return Ok(None);
    }
    let parameters = match non_null(tool.get("parameters")) {
        None => None,
        Some(p) if p.as_object().is_some() => Some(p),
        Some(_) => {
            return Err(TranslateError::wrong_type(
                &format!("tools[{i}].parameters"),
                "an object",
            ))
        }
    };
    Ok(Some(Tool {
        name: Cow::Borrowed(req_str(tool, "name", || format!("tools[{i}].name"))?),
        description: opt_str(tool, "description", || format!("tools[{i}].description"))?
            .map(Cow::Borrowed),
        parameters,
        strict: match non_null(tool.get("strict")) {
            None => None,
            Some(v) => Some(v.as_bool().ok_or_else(|| {
                TranslateError::wrong_type(&format!("tools[{i}].strict"), "a boolean")
            })?),
        },
    }))
}

/// `tool_choice`: a mode string or `{type:"function", name}`. Choices of
/// hosted tools leave the choice unset (those tools are not translated).
fn decode_tool_choice<'a>(choice: Json<'a>) -> Result<Option<ToolChoice<'a>>, TranslateError> {
    if let Some(mode) = choice.as_str() {
        return mode_choice(mode, "tool_choice").map(Some);
    }
    if choice.as_object().is_none() {
        return Err(TranslateError::wrong_type(
            "tool_choice",
            "a string or an object",
        ));
    }
    match req_str(choice, "type", || "tool_choice.type".into())? {
        "function" => Ok(Some(ToolChoice::Tool(Cow::Borrowed(req_str(
            choice,
            "name",
            || "tool_choice.name".into(),
        )?)))),
        "allowed_tools" => match opt_str(choice, "mode", || "tool_choice.mode".into())? {
            Some(mode) => mode_choice(mode, "tool_choice.mode").map(Some),
            None => Ok(Some(ToolChoice::Auto)),
        },
        _ => Ok(None),
    }
}

fn mode_choice<'a>(mode: &str, field: &str) -> Result<ToolChoice<'a>, TranslateError> {
    match mode {
        "auto" => Ok(ToolChoice::Auto),
        "none" => Ok(ToolChoice::None),
        "required" => Ok(ToolChoice::Required),
        other => Err(TranslateError::new(format!(
            "`{field}` must be auto, none or required; got `{other}`"
        ))),
    }
}

/// `text.format`.
fn decode_format<'a>(format: Json<'a>) -> Result<ResponseFormat<'a>, TranslateError> {
    if format.as_object().is_none() {
        return Err(TranslateError::wrong_type("text.format", "an object"));
    }
    match req_str(format, "type", || "text.format.type".into())? {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let schema = non_null(format.get("schema"))
                .ok_or_else(|| TranslateError::missing("text.format.schema"))?;
            if schema.as_object().is_none() {
                return Err(TranslateError::wrong_type(
                    "text.format.schema",
                    "an object",
                ));
            }
            Ok(ResponseFormat::JsonSchema {
                name: Cow::Borrowed(req_str(format, "name", || "text.format.name".into())?),
                schema,
                strict: opt_bool(format, "strict")
                    .map_err(|_| TranslateError::wrong_type("text.format.strict", "a boolean"))?,
            })
        }
        other => Err(TranslateError::new(format!(
            "`text.format.type` must be text, json_object or json_schema; got `{other}`"
        ))),
    }
}

/// `v` unless it is JSON `null` (which the SDKs send for "not given").
fn non_null(v: Option<Json<'_>>) -> Option<Json<'_>> {
    v.filter(|v| v.as_null().is_none())
}

fn opt_str<'a>(
    obj: Json<'a>,
    key: &str,
    field: impl FnOnce() -> String,
) -> Result<Option<&'a str>, TranslateError> {
    match non_null(obj.get(key)) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .ok_or_else(|| TranslateError::wrong_type(&field(), "a string")),
    }
}

fn req_str<'a>(
    obj: Json<'a>,
    key: &str,
    field: impl Fn() -> String,
) -> Result<&'a str, TranslateError> {
    opt_str(obj, key, &field)?.ok_or_else(|| TranslateError::missing(&field()))
}

fn opt_bool(obj: Json<'_>, key: &str) -> Result<Option<bool>, TranslateError> {
    match non_null(obj.get(key)) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| TranslateError::wrong_type(key, "a boolean")),
    }
}

fn opt_u64(obj: Json<'_>, key: &str) -> Result<Option<u64>, TranslateError> {
    match non_null(obj.get(key)) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| TranslateError::wrong_type(key, "a non-negative integer")),
    }
}

fn opt_f64(obj: Json<'_>, key: &str) -> Result<Option<f64>, TranslateError> {
    match non_null(obj.get(key)) {
        None => Ok(None),
        Some(v) => v
            .cast_f64()
            .map(Some)
            .ok_or_else(|| TranslateError::wrong_type(key, "a number")),
    }
}

// ---------------------------------------------------------------------------
// Response encoding (shared by the whole answer and the stream)
// ---------------------------------------------------------------------------

/// The part of a response id after `resp_`: item ids are built from it
/// (`msg_<base>_<n>`...), so they are unique per answer and per item.
fn id_base(id: &str) -> &str {
    id.strip_prefix("resp_").unwrap_or(id)
}

/// Appends `s` JSON-escaped, without quotes.
fn write_escaped(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(s.as_bytes());
    } else {
        let start = out.len();
        write_string(out, s);
        out.pop();
        out.remove(start);
    }
}

/// Appends `"<prefix><base>[_<n>]"`.
fn write_id(out: &mut Vec<u8>, prefix: &str, base: &str, n: Option<u32>) {
    out.push(b'"');
    out.extend_from_slice(prefix.as_bytes());
    write_escaped(out, base);
    if let Some(n) = n {
        out.push(b'_');
        write_u64(out, n as u64);
    }
    out.push(b'"');
}

/// What the top-level response object says besides its output.
struct Envelope<'s> {
    base: &'s str,
    model: &'s str,
    created: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    status: &'static str,
    incomplete_reason: Option<&'static str>,
    /// `(code, message)` for a failed response.
    error: Option<(&'static str, &'s str)>,
    /// `None` while in progress (the API sends `usage: null` then).
    usage: Option<Usage>,
}

/// Writes a whole response object; `output` writes the items of the
/// `output` array (comma-separated).
fn write_response(out: &mut Vec<u8>, env: &Envelope<'_>, output: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"{\"id\":");
    write_id(out, "resp_", env.base, None);
    out.extend_from_slice(b",\"object\":\"response\",\"created_at\":");
    write_u64(out, env.created);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(env.status.as_bytes());
    out.extend_from_slice(b"\",\"error\":");
    match env.error {
        Some((code, message)) => {
            out.extend_from_slice(b"{\"code\":");
            write_string(out, code);
            out.extend_from_slice(b",\"message\":");
            write_string(out, message);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"incomplete_details\":");
    match env.incomplete_reason {
        Some(reason) => {
            out.extend_from_slice(b"{\"reason\":\"");
            out.extend_from_slice(reason.as_bytes());
            out.extend_from_slice(b"\"}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"instructions\":null,\"max_output_tokens\":null,\"model\":");
    write_string(out, env.model);
    out.extend_from_slice(b",\"output\":[");
    output(out);
    out.extend_from_slice(
        b"],\"parallel_tool_calls\":true,\"previous_response_id\":null,\
\"reasoning\":{\"effort\":null,\"summary\":null},\"store\":false,\"temperature\":null,\
\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":null,\
\"truncation\":\"disabled\",\"usage\":",
    );
    match &env.usage {
        Some(u) => write_usage(out, u),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"user\":null,\"metadata\":{}}");
}

fn write_usage(out: &mut Vec<u8>, u: &Usage) {
    let input = u.input.unwrap_or(0) as u64;
    let output = u.output.unwrap_or(0) as u64;
    out.extend_from_slice(b"{\"input_tokens\":");
    write_u64(out, input);
    out.extend_from_slice(b",\"input_tokens_details\":{\"cached_tokens\":");
    write_u64(out, u.cached.unwrap_or(0) as u64);
    out.extend_from_slice(b"},\"output_tokens\":");
    write_u64(out, output);
    out.extend_from_slice(b",\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":");
    write_u64(out, input + output);
    out.push(b'}');
}

/// `{"type":"output_text","text":..,"annotations":[]}`.
fn write_output_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"type\":\"output_text\",\"text\":");
    write_string(out, text);
    out.extend_from_slice(b",\"annotations\":[]}");
}

/// An assistant `message` item with one `output_text` part per text.
fn write_message_item<'t>(
    out: &mut Vec<u8>,
    base: &str,
    n: u32,
    status: &str,
    texts: impl Iterator<Item = &'t str>,
) {
    out.extend_from_slice(b"{\"type\":\"message\",\"id\":");
    write_id(out, "msg_", base, Some(n));
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\",\"role\":\"assistant\",\"content\":[");
    for (i, t) in texts.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_output_text(out, t);
    }
    out.extend_from_slice(b"]}");
}

/// A `reasoning` item; `summary` None writes an empty summary list.
fn write_reasoning_item(out: &mut Vec<u8>, base: &str, n: u32, summary: Option<&str>) {
    out.extend_from_slice(b"{\"type\":\"reasoning\",\"id\":");
    write_id(out, "rs_", base, Some(n));
    out.extend_from_slice(b",\"summary\":[");
    if let Some(text) = summary {
        out.extend_from_slice(b"{\"type\":\"summary_text\",\"text\":");
        write_string(out, text);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// A `function_call` item. `call_id` is the IR tool call id, which the
/// client sends back in `function_call_output`.
fn write_function_call_item(
    out: &mut Vec<u8>,
    base: &str,
    n: u32,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) {
    out.extend_from_slice(b"{\"type\":\"function_call\",\"id\":");
    write_id(out, "fc_", base, Some(n));
    out.extend_from_slice(b",\"call_id\":");
    write_string(out, call_id);
    out.extend_from_slice(b",\"name\":");
    write_string(out, name);
    out.extend_from_slice(b",\"arguments\":");
    write_string(out, arguments);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// The response status and `incomplete_details.reason` a stop implies.
fn status_of(stop: StopReason) -> (&'static str, Option<&'static str>) {
    match stop {
        StopReason::MaxTokens => ("incomplete", Some("max_output_tokens")),
        StopReason::ContentFilter => ("incomplete", Some("content_filter")),
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => ("completed", None),
    }
}

/// Client side: IR -> a Responses API `response` object.
///
/// Output items follow the content order: `Thinking` -> a `reasoning` item
/// with the text as its summary; a run of consecutive `Text` parts -> one
/// assistant `message`; `ToolCall` -> a `function_call` item. Anthropic's
/// redacted thinking has no Responses form and is dropped (as are parts
/// that never appear in answers).
pub fn encode_response(resp: &Response<'_>, opts: &EncodeOptions, out: &mut Vec<u8>) {
    let (status, incomplete_reason) = status_of(resp.stop);
    let base = id_base(&resp.id);
    let env = Envelope {
        base,
        model: &resp.model,
        created: opts.created,
        status,
        incomplete_reason,
        error: None,
        usage: Some(resp.usage),
    };
    write_response(out, &env, |out| {
        let mut n: u32 = 0;
        let parts = &resp.content;
        let mut i = 0;
        while i < parts.len() {
            let before = out.len();
            if n > 0 {
                out.push(b',');
            }
            match &parts[i] {
                Part::Text(_) => {
                    let start = i;
                    while i < parts.len() && matches!(parts[i], Part::Text(_)) {
                        i += 1;
                    }
                    let texts = parts[start..i].iter().map(|p| match p {
                        Part::Text(t) => t.as_ref(),
                        _ => "",
                    });
                    write_message_item(out, base, n, "completed", texts);
                    n += 1;
                    continue;
                }
                Part::Thinking { text, .. } => {
                    write_reasoning_item(out, base, n, Some(text));
                    n += 1;
                }
                Part::ToolCall(call) => {
                    write_function_call_item(
                        out,
                        base,
                        n,
                        &call.id,
                        &call.name,
                        &call.arguments,
                        "completed",
                    );
                    n += 1;
                }
                _ => out.truncate(before),
            }
            i += 1;
        }
    });
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

/// What a streamed output item is.
#[derive(Debug)]
enum ItemKind {
    Message,
    Reasoning,
    FunctionCall { call_id: String, name: String },
}

/// One output item of the answer being streamed.
#[derive(Debug)]
struct StreamItem {
    kind: ItemKind,
    /// The message text, reasoning summary or call arguments so far.
    text: String,
    done: bool,
}

/// Client side: IR stream events -> Responses API server-sent events.
///
/// Every event is `event: <type>` with data `{"type":<type>,
/// "sequence_number":<n>,...}`, numbered from 0. The stream opens with
/// `response.created` and `response.in_progress`; each IR block becomes an
/// output item (`response.output_item.added`, its content events, then
/// `response.output_item.done`); it ends with `response.completed` (or
/// `response.incomplete` when the answer hit the token limit or a filter),
/// whose `response` carries every output item in full.
///
/// That last event is why the encoder keeps each item's whole text: the
/// protocol repeats the complete answer at the end (clients such as the
/// OpenAI SDK take the final response from it, and `*.done` events carry
/// the full text too), so the text of a streamed answer is held once in
/// memory until the stream ends.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    opts: EncodeOptions,
    seq: u64,
    started: bool,
    /// The response id without `resp_` (see [`id_base`]).
    base: String,
    model: String,
    items: Vec<StreamItem>,
    /// The item of the open IR block; None when no block is open or the
    /// block has no Responses form (redacted thinking).
    open: Option<usize>,
    stop: StopReason,
    usage: Usage,
    /// Prompt tokens from `Start`, used when `Finish` lacks them.
    start_input: Option<u32>,
}

impl StreamEncoder {
    /// A new encoder; `opts.created` stamps the response's `created_at`.
    pub fn new(opts: EncodeOptions) -> Self {
        StreamEncoder {
            opts,
            ..StreamEncoder::default()
        }
    }

    /// Appends the events for one IR event.
    pub fn event(&mut self, ev: &StreamEvent<'_>, out: &mut Vec<u8>) {
        match ev {
            StreamEvent::Start {
                id,
                model,
                input_tokens,
            } => {
                self.base.clear();
                self.base.push_str(id_base(id));
                self.model.clear();
                self.model.push_str(model);
                self.start_input = *input_tokens;
                self.write_start(out);
            }
            StreamEvent::BlockStart { block, .. } => self.block_start(block, out),
            StreamEvent::Delta { delta, .. } => self.delta(delta, out),
            StreamEvent::BlockStop { .. } => self.block_stop(out),
            StreamEvent::Finish { stop, usage } => {
                self.stop = *stop;
                self.usage = *usage;
                if self.usage.input.is_none() {
                    self.usage.input = self.start_input;
                }
            }
        }
    }

    /// The stream completed: `response.completed` (or
    /// `response.incomplete`) with the whole response.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let (status, incomplete_reason) = status_of(self.stop);
        let ty = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.begin(out, ty);
        out.extend_from_slice(b",\"response\":");
        let env = Envelope {
            base: &self.base,
            model: &self.model,
            created: self.opts.created,
            status,
            incomplete_reason,
            error: None,
            usage: Some(self.usage),
        };
        write_response(out, &env, |out| {
            write_items(out, &self.base, &self.items, false)
        });
        self.end(out);
    }

    /// The stream failed: an `error` event, then `response.failed` carrying
    /// the items finished so far and the error.
    pub fn error(&mut self, err: &ErrorInfo, out: &mut Vec<u8>) {
        if !self.started {
            // The SDK's stream helper refuses any event before
            // `response.created`.
            self.base.push_str("failed");
            self.write_start(out);
        }
        let code = error_code(err.kind);
        self.begin(out, "error");
        out.extend_from_slice(b",\"code\":");
        write_string(out, code);
        out.extend_from_slice(b",\"message\":");
        write_string(out, &err.message);
        out.extend_from_slice(b",\"param\":null");
        self.end(out);

        self.begin(out, "response.failed");
        out.extend_from_slice(b",\"response\":");
        let env = Envelope {
            base: &self.base,
            model: &self.model,
            created: self.opts.created,
            status: "failed",
            incomplete_reason: None,
            error: Some((code, &err.message)),
            usage: None,
        };
        write_response(out, &env, |out| {
            write_items(out, &self.base, &self.items, true)
        });
        self.end(out);
    }

    /// `response.created` and `response.in_progress`.
    fn write_start(&mut self, out: &mut Vec<u8>) {
        self.started = true;
        for ty in ["response.created", "response.in_progress"] {
            self.begin(out, ty);
            out.extend_from_slice(b",\"response\":");
            let env = Envelope {
                base: &self.base,
                model: &self.model,
                created: self.opts.created,
                status: "in_progress",
                incomplete_reason: None,
                error: None,
                usage: None,
            };
            write_response(out, &env, |_| {});
            self.end(out);
        }
    }

    fn block_start(&mut self, block: &BlockKind<'_>, out: &mut Vec<u8>) {
        let kind = match block {
            BlockKind::Text => ItemKind::Message,
            BlockKind::Thinking => ItemKind::Reasoning,
            BlockKind::ToolCall { id, name } => ItemKind::FunctionCall {
                call_id: id.to_string(),
                name: name.to_string(),
            },
            BlockKind::RedactedThinking(_) => {
                self.open = None;
                return;
            }
        };
        let n = self.items.len() as u32;
        self.begin(out, "response.output_item.added");
        out.extend_from_slice(b",\"output_index\":");
        write_u64(out, n as u64);
        out.extend_from_slice(b",\"item\":");
        match &kind {
            ItemKind::Message => {
                write_message_item(out, &self.base, n, "in_progress", std::iter::empty())
            }
            ItemKind::Reasoning => write_reasoning_item(out, &self.base, n, None),
            ItemKind::FunctionCall { call_id, name } => {
                write_function_call_item(out, &self.base, n, call_id, name, "", "in_progress")
            }
        }
        self.end(out);
        match &kind {
            ItemKind::Message => {
                self.begin_item_event(out, "response.content_part.added", n, "msg_");
                out.extend_from_slice(b",\"content_index\":0,\"part\":");
                write_output_text(out, "");
                self.end(out);
            }
            ItemKind::Reasoning => {
                self.begin_item_event(out, "response.reasoning_summary_part.added", n, "rs_");
                out.extend_from_slice(
                    b",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":\"\"}",
                );
                self.end(out);
            }
            ItemKind::FunctionCall { .. } => {}
        }
        self.items.push(StreamItem {
            kind,
            text: String::new(),
            done: false,
        });
        self.open = Some(n as usize);
    }

    fn delta(&mut self, delta: &Delta<'_>, out: &mut Vec<u8>) {
        let Some(i) = self.open else { return };
        let n = i as u32;
        let (ty, prefix, piece) = match (&self.items[i].kind, delta) {
            (ItemKind::Message, Delta::Text(t)) => ("response.output_text.delta", "msg_", t),
            (ItemKind::Reasoning, Delta::Thinking(t)) => {
                ("response.reasoning_summary_text.delta", "rs_", t)
            }
            (ItemKind::FunctionCall { .. }, Delta::ToolArguments(t)) => {
                ("response.function_call_arguments.delta", "fc_", t)
            }
            // Signatures have no Responses form; mismatched deltas would
            // break the invariants and are ignored.
            _ => return,
        };
        if piece.is_empty() {
            return;
        }
        self.items[i].text.push_str(piece);
        self.begin_item_event(out, ty, n, prefix);
        match self.items[i].kind {
            ItemKind::Message => out.extend_from_slice(b",\"content_index\":0"),
            ItemKind::Reasoning => out.extend_from_slice(b",\"summary_index\":0"),
            ItemKind::FunctionCall { .. } => {}
        }
        out.extend_from_slice(b",\"delta\":");
        write_string(out, piece);
        if matches!(self.items[i].kind, ItemKind::Message) {
            out.extend_from_slice(b",\"logprobs\":[]");
        }
        self.end(out);
    }

    fn block_stop(&mut self, out: &mut Vec<u8>) {
        let Some(i) = self.open.take() else { return };
        let n = i as u32;
        let item = &self.items[i];
        // The events are written through a local sequence counter so the
        // item can stay borrowed.
        let mut seq = self.seq;
        let base = self.base.as_str();
        match &item.kind {
            ItemKind::Message => {
                begin_item(out, &mut seq, "response.output_text.done", base, n, "msg_");
                out.extend_from_slice(b",\"content_index\":0,\"text\":");
                write_string(out, &item.text);
                out.extend_from_slice(b",\"logprobs\":[]");
                end_data(out);
                begin_item(out, &mut seq, "response.content_part.done", base, n, "msg_");
                out.extend_from_slice(b",\"content_index\":0,\"part\":");
                write_output_text(out, &item.text);
                end_data(out);
            }
            ItemKind::Reasoning => {
                begin_item(
                    out,
                    &mut seq,
                    "response.reasoning_summary_text.done",
                    base,
                    n,
                    "rs_",
                );
                out.extend_from_slice(b",\"summary_index\":0,\"text\":");
                write_string(out, &item.text);
                end_data(out);
                begin_item(
                    out,
                    &mut seq,
                    "response.reasoning_summary_part.done",
                    base,
                    n,
                    "rs_",
                );
                out.extend_from_slice(
                    b",\"summary_index\":0,\"part\":{\"type\":\"summary_text\",\"text\":",
                );
                write_string(out, &item.text);
                out.push(b'}');
                end_data(out);
            }
            ItemKind::FunctionCall { name, .. } => {
                begin_item(
                    out,
                    &mut seq,
                    "response.function_call_arguments.done",
                    base,
                    n,
                    "fc_",
                );
                out.extend_from_slice(b",\"name\":");
                write_string(out, name);
                out.extend_from_slice(b",\"arguments\":");
                write_string(out, &item.text);
                end_data(out);
            }
        }
        begin_data(out, &mut seq, "response.output_item.done");
        out.extend_from_slice(b",\"output_index\":");
        write_u64(out, n as u64);
        out.extend_from_slice(b",\"item\":");
        write_item(out, base, n, item, "completed");
        end_data(out);
        self.seq = seq;
        self.items[i].done = true;
    }

    /// Starts an event: the SSE header and `{"type":..,"sequence_number":..`.
    fn begin(&mut self, out: &mut Vec<u8>, ty: &str) {
        begin_data(out, &mut self.seq, ty);
    }

    /// Starts an item event: adds `"item_id"` and `"output_index"`.
    fn begin_item_event(&mut self, out: &mut Vec<u8>, ty: &str, n: u32, prefix: &str) {
        begin_item(out, &mut self.seq, ty, &self.base, n, prefix);
    }

    fn end(&self, out: &mut Vec<u8>) {
        end_data(out);
    }
}

fn begin_data(out: &mut Vec<u8>, seq: &mut u64, ty: &str) {
    begin_event(out, Some(ty));
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\",\"sequence_number\":");
    write_u64(out, *seq);
    *seq += 1;
}

fn begin_item(out: &mut Vec<u8>, seq: &mut u64, ty: &str, base: &str, n: u32, prefix: &str) {
    begin_data(out, seq, ty);
    out.extend_from_slice(b",\"item_id\":");
    write_id(out, prefix, base, Some(n));
    out.extend_from_slice(b",\"output_index\":");
    write_u64(out, n as u64);
}

fn end_data(out: &mut Vec<u8>) {
    out.push(b'}');
    end_event(out);
}

/// One streamed item in its final form.
fn write_item(out: &mut Vec<u8>, base: &str, n: u32, item: &StreamItem, status: &str) {
    match &item.kind {
        ItemKind::Message => {
            write_message_item(out, base, n, status, std::iter::once(item.text.as_str()))
        }
        ItemKind::Reasoning => write_reasoning_item(out, base, n, Some(&item.text)),
        ItemKind::FunctionCall { call_id, name } => {
            write_function_call_item(out, base, n, call_id, name, &item.text, status)
        }
    }
}

/// The `output` array of the final response. `done_only`: leave out an
/// item cut off mid-way (a failed stream).
fn write_items(out: &mut Vec<u8>, base: &str, items: &[StreamItem], done_only: bool) {
    let mut first = true;
    for (n, item) in items.iter().enumerate() {
        if done_only && !item.done {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_item(out, base, n as u32, item, "completed");
    }
}

/// A Responses error code for an error kind. Codex CLI retries
/// `rate_limit_exceeded` (reading the delay from the message) and any
/// other code it does not know, such as `server_error`.
fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::RateLimited => "rate_limit_exceeded",
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "invalid_prompt",
        _ => "server_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json;
    use serde_json::{json, Value};
    use simd_json::Buffers;

    /// Decodes `text` and hands the request (or error) to `check`.
    fn with_request(text: &str, check: impl FnOnce(Result<Request<'_>, TranslateError>)) {
        let mut body = text.as_bytes().to_vec();
        let mut buffers = Buffers::default();
        let tape = json::parse(&mut body, &mut buffers).unwrap();
        check(decode_request(tape.as_value()));
    }

    fn decode_err(text: &str) -> String {
        let mut msg = String::new();
        with_request(text, |r| msg = r.unwrap_err().message);
        msg
    }

    fn text_of<'p>(p: &'p Part<'_>) -> &'p str {
        match p {
            Part::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// A request shaped like Codex CLI's (a second turn, after tool calls).
    const CODEX: &str = r#"{
      "model": "gpt-5-codex",
      "instructions": "You are Codex, a coding agent.",
      "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>workspace-write</permissions>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd=/repo</environment_context>"}]},
        {"type": "message", "role": "user", "content": [
          {"type": "input_text", "text": "Why does the build fail?"},
          {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}
        ]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "**Inspecting the repo**"}, {"type": "summary_text", "text": "Listing files."}], "content": null, "encrypted_content": "gAAAAB..."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "call_1"},
        {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"cat\",\"build.rs\"]}", "call_id": "call_2"},
        {"type": "function_call_output", "call_id": "call_1", "output": "Cargo.toml\nbuild.rs\nsrc"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "fn main() {}"}]},
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAC..."},
        {"type": "custom_tool_call", "call_id": "call_3", "name": "apply_patch", "input": "*** Begin Patch"},
        {"role": "user", "content": "thanks"}
      ],
      "tools": [
        {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": false,
         "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"], "additionalProperties": false}},
        {"type": "web_search"},
        {"type": "local_shell"}
      ],
      "tool_choice": "auto",
      "parallel_tool_calls": false,
      "reasoning": {"effort": "medium", "summary": "auto"},
      "store": false,
      "stream": true,
      "include": ["reasoning.encrypted_content"],
      "prompt_cache_key": "0199a2b4",
      "text": {"verbosity": "medium"}
    }"#;

    #[test]
    fn decodes_a_codex_request() {
        with_request(CODEX, |r| {
            let req = r.unwrap();
            assert_eq!(req.model, "gpt-5-codex");
            assert!(req.stream);
            assert_eq!(req.parallel_tool_calls, Some(false));
            assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
            assert_eq!(
                req.thinking,
                Some(Thinking {
                    budget_tokens: None,
                    effort: Some(Effort::Medium)
                })
            );
            assert!(req.response_format.is_none());

            assert_eq!(req.system.len(), 2);
            assert_eq!(text_of(&req.system[0]), "You are Codex, a coding agent.");
            assert_eq!(
                text_of(&req.system[1]),
                "<permissions>workspace-write</permissions>"
            );

            assert_eq!(req.messages.len(), 5, "{:#?}", req.messages);
            let m = &req.messages;
            assert_eq!(m[0].role, Role::User);
            assert_eq!(m[1].role, Role::User);
            assert_eq!(text_of(&m[1].parts[0]), "Why does the build fail?");
            match &m[1].parts[1] {
                Part::Image(Image::Base64 { media_type, data }) => {
                    assert_eq!(media_type, "image/png");
                    assert_eq!(data, "iVBORw0KGgo=");
                }
                other => panic!("{other:?}"),
            }

            // Reasoning, text and both calls are one assistant turn.
            assert_eq!(m[2].role, Role::Assistant);
            assert_eq!(m[2].parts.len(), 4);
            match &m[2].parts[0] {
                Part::Thinking { text, signature } => {
                    assert_eq!(text, "**Inspecting the repo**\n\nListing files.");
                    assert!(signature.is_none());
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(text_of(&m[2].parts[1]), "Let me look.");
            match (&m[2].parts[2], &m[2].parts[3]) {
                (Part::ToolCall(a), Part::ToolCall(b)) => {
                    assert_eq!((&*a.id, &*a.name), ("call_1", "shell"));
                    assert_eq!(a.arguments, r#"{"command":["ls"]}"#);
                    assert!(
                        matches!(a.arguments, Cow::Borrowed(_)) && matches!(a.id, Cow::Borrowed(_))
                    );
                    assert_eq!(b.id, "call_2");
                }
                other => panic!("{other:?}"),
            }

            // Both outputs in one user message; then the empty reasoning
            // item is skipped and the unknown item is kept raw there too.
            assert_eq!(m[3].role, Role::User);
            assert_eq!(m[3].parts.len(), 3);
            match (&m[3].parts[0], &m[3].parts[1]) {
                (Part::ToolResult(a), Part::ToolResult(b)) => {
                    assert_eq!(a.call_id, "call_1");
                    assert_eq!(text_of(&a.content[0]), "Cargo.toml\nbuild.rs\nsrc");
                    assert_eq!(b.call_id, "call_2");
                    assert_eq!(text_of(&b.content[0]), "fn main() {}");
                    assert!(!a.is_error && a.name.is_none());
                }
                other => panic!("{other:?}"),
            }
            match &m[3].parts[2] {
                Part::Raw { dialect, value } => {
                    assert_eq!(*dialect, Dialect::OpenAiResponses);
                    assert_eq!(value.get("name").unwrap().as_str(), Some("apply_patch"));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(m[4].role, Role::User);
            assert_eq!(text_of(&m[4].parts[0]), "thanks");

            assert_eq!(req.tools.len(), 1, "hosted tools are skipped");
            let t = &req.tools[0];
            assert_eq!(t.name, "shell");
            assert_eq!(t.description.as_deref(), Some("Runs a shell command"));
            assert_eq!(t.strict, Some(false));
            assert_eq!(
                json::value_to_string(t.parameters.as_ref().unwrap()),
                r#"{"type":"object","properties":{"command":{"type":"array","items":{"type":"string"}}},"required":["command"],"additionalProperties":false}"#
            );
        });
    }

    #[test]
    fn decodes_a_string_input_and_sampling_options() {
        let body = r#"{"model":"gpt-4.1","input":"Tell me a joke","instructions":null,
            "max_output_tokens":256,"temperature":1,"top_p":0.5,"user":"u-1",
            "previous_response_id":null,"tool_choice":{"type":"function","name":"get_weather"},
            "text":{"format":{"type":"json_schema","name":"joke","strict":true,
                "schema":{"type":"object","properties":{"setup":{"type":"string"}}}}},
            "reasoning":{"effort":"none"},"metadata":{"k":"v"},"truncation":"auto"}"#;
        with_request(body, |r| {
            let req = r.unwrap();
            assert!(req.system.is_empty());
            assert_eq!(req.messages.len(), 1);
            assert_eq!(req.messages[0].role, Role::User);
            assert_eq!(text_of(&req.messages[0].parts[0]), "Tell me a joke");
            assert_eq!(req.max_tokens, Some(256));
            assert_eq!(req.temperature, Some(1.0));
            assert_eq!(req.top_p, Some(0.5));
            assert_eq!(req.user.as_deref(), Some("u-1"));
            assert!(!req.stream);
            assert_eq!(
                req.tool_choice,
                Some(ToolChoice::Tool("get_weather".into()))
            );
            assert_eq!(req.thinking, None, "effort none is no reasoning");
            match req.response_format {
                Some(ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                }) => {
                    assert_eq!(name, "joke");
                    assert_eq!(strict, Some(true));
                    assert!(schema.get("properties").is_some());
                }
                other => panic!("{other:?}"),
            }
        });
        with_request(
            r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x/y.png"},{"type":"input_file","file_id":"file-1"}]}],"text":{"format":{"type":"json_object"}},"tool_choice":"required","reasoning":{"summary":"auto"}}"#,
            |r| {
                let req = r.unwrap();
                let parts = &req.messages[0].parts;
                assert!(matches!(&parts[0], Part::Image(Image::Url(u)) if u == "https://x/y.png"));
                assert!(matches!(&parts[1], Part::Raw { .. }));
                assert!(matches!(
                    req.response_format,
                    Some(ResponseFormat::JsonObject)
                ));
                assert_eq!(req.tool_choice, Some(ToolChoice::Required));
                assert_eq!(
                    req.thinking,
                    Some(Thinking {
                        budget_tokens: None,
                        effort: None
                    })
                );
            },
        );
    }

    #[test]
    fn refuses_malformed_requests() {
        let cases = [
            (
                r#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#,
                "`previous_response_id` is not supported",
            ),
            (r#"{"input":"hi"}"#, "`model` is required"),
            (r#"{"model":"m"}"#, "`input` is required"),
            (r#"{"model":7,"input":"hi"}"#, "`model` must be a string"),
            (
                r#"{"model":"m","input":5}"#,
                "`input` must be a string or an array",
            ),
            (r#"[1]"#, "must be a JSON object"),
            (
                r#"{"model":"m","input":[3]}"#,
                "`input[0]` must be an object",
            ),
            (
                r#"{"model":"m","input":[{"role":"tool","content":"x"}]}"#,
                "`input[0].role` must be user",
            ),
            (
                r#"{"model":"m","input":[{"content":"x"}]}"#,
                "`input[0].role` is required",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":7}]}"#,
                "`input[0].content` must be a string or an array",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_text"}]}]}"#,
                "`input[0].content[0].text` is required",
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}"#,
                "`input[0].call_id` is required",
            ),
            (
                r#"{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":1}]}"#,
                "`input[0].output` must be a string or an array",
            ),
            (
                r#"{"model":"m","input":"x","tools":{}}"#,
                "`tools` must be an array",
            ),
            (
                r#"{"model":"m","input":"x","tools":[{"type":"function"}]}"#,
                "`tools[0].name` is required",
            ),
            (
                r#"{"model":"m","input":"x","tool_choice":"any"}"#,
                "`tool_choice` must be auto",
            ),
            (
                r#"{"model":"m","input":"x","stream":"yes"}"#,
                "`stream` must be a boolean",
            ),
            (
                r#"{"model":"m","input":"x","max_output_tokens":-1}"#,
                "`max_output_tokens` must be a non-negative integer",
            ),
            (
                r#"{"model":"m","input":"x","reasoning":{"effort":"max"}}"#,
                "`reasoning.effort` must be one of",
            ),
            (
                r#"{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"n"}}}"#,
                "`text.format.schema` is required",
            ),
        ];
        for (body, want) in cases {
            let got = decode_err(body);
            assert!(got.contains(want), "{body}: got {got:?}, want {want:?}");
        }
    }

    fn encode(resp: &Response<'_>) -> Value {
        let mut out = Vec::new();
        encode_response(
            resp,
            &EncodeOptions {
                created: 1_700_000_000,
                ..Default::default()
            },
            &mut out,
        );
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn encodes_a_whole_response() {
        let resp = Response {
            id: "chatcmpl-42".into(),
            model: "gpt-4.1".into(),
            content: vec![
                Part::Thinking {
                    text: "Think.".into(),
                    signature: Some("sig".into()),
                },
                Part::Text("Hello ".into()),
                Part::Text("\"world\"".into()),
                Part::RedactedThinking("xx".into()),
                Part::ToolCall(ToolCall {
                    id: "call_9".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                }),
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: Some(10),
                output: Some(5),
                cached: Some(4),
            },
        };
        let v = encode(&resp);
        assert_eq!(v["id"], "resp_chatcmpl-42");
        assert_eq!(v["object"], "response");
        assert_eq!(v["created_at"], 1_700_000_000);
        assert_eq!(v["status"], "completed");
        assert_eq!(v["model"], "gpt-4.1");
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["incomplete_details"], Value::Null);
        assert_eq!(v["store"], false);
        assert_eq!(v["text"], json!({"format": {"type": "text"}}));
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
                   "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": 15})
        );
        assert_eq!(
            v["output"],
            json!([
                {"type": "reasoning", "id": "rs_chatcmpl-42_0",
                 "summary": [{"type": "summary_text", "text": "Think."}]},
                {"type": "message", "id": "msg_chatcmpl-42_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hello ", "annotations": []},
                             {"type": "output_text", "text": "\"world\"", "annotations": []}]},
                {"type": "function_call", "id": "fc_chatcmpl-42_2", "call_id": "call_9",
                 "name": "get_weather", "arguments": "{\"city\":\"Paris\"}", "status": "completed"}
            ])
        );
    }

    #[test]
    fn an_answer_cut_by_the_token_limit_is_incomplete() {
        for (stop, reason) in [
            (StopReason::MaxTokens, "max_output_tokens"),
            (StopReason::ContentFilter, "content_filter"),
        ] {
            let resp = Response {
                id: "resp_abc".into(),
                model: "m".into(),
                content: vec![Part::Text("partial".into())],
                stop,
                usage: Usage::default(),
            };
            let v = encode(&resp);
            assert_eq!(v["id"], "resp_abc", "no second prefix");
            assert_eq!(v["status"], "incomplete");
            assert_eq!(v["incomplete_details"], json!({"reason": reason}));
            assert_eq!(v["output"][0]["id"], "msg_abc_0");
            assert_eq!(v["usage"]["total_tokens"], 0);
        }
    }

    /// Parses encoder output back with the gateway's own SSE parser and
    /// checks the framing every event must have.
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let mut parser = crate::sse::Parser::new();
        let mut evs = Vec::new();
        parser
            .feed::<crate::sse::SseError>(out, |e| {
                let v: Value = serde_json::from_slice(e.data).unwrap();
                evs.push((e.name.to_string(), v));
                Ok(())
            })
            .unwrap();
        assert!(!parser.is_mid_event());
        for (i, (name, v)) in evs.iter().enumerate() {
            assert_eq!(v["type"], name.as_str());
            assert_eq!(v["sequence_number"], i as u64, "{name}");
        }
        evs
    }

    fn names(evs: &[(String, Value)]) -> Vec<&str> {
        evs.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn start(enc: &mut StreamEncoder, out: &mut Vec<u8>) {
        enc.event(
            &StreamEvent::Start {
                id: "msg_01".into(),
                model: "claude-sonnet".into(),
                input_tokens: Some(12),
            },
            out,
        );
    }

    #[test]
    fn streams_text_then_a_tool_call() {
        let mut enc = StreamEncoder::new(EncodeOptions {
            created: 77,
            ..Default::default()
        });
        let mut out = Vec::new();
        start(&mut enc, &mut out);
        let seq = [
            StreamEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Text("Hel".into()),
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Text("lo \"x\"\n".into()),
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockKind::ToolCall {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                },
            },
            StreamEvent::Delta {
                index: 1,
                delta: Delta::ToolArguments("{\"ci".into()),
            },
            StreamEvent::Delta {
                index: 1,
                delta: Delta::ToolArguments("ty\":\"Paris\"}".into()),
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::Finish {
                stop: StopReason::ToolUse,
                usage: Usage {
                    input: None,
                    output: Some(30),
                    cached: None,
                },
            },
        ];
        for ev in &seq {
            enc.event(ev, &mut out);
        }
        enc.finish(&mut out);
        let evs = events(&out);
        assert_eq!(
            names(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let r = &evs[0].1["response"];
        assert_eq!(r["id"], "resp_msg_01");
        assert_eq!(r["status"], "in_progress");
        assert_eq!(r["created_at"], 77);
        assert_eq!(r["model"], "claude-sonnet");
        assert_eq!(r["output"], json!([]));
        assert_eq!(r["usage"], Value::Null);
        assert_eq!(evs[1].1["response"], evs[0].1["response"]);

        let msg = "msg_msg_01_0";
        assert_eq!(
            evs[2].1,
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
                   "item": {"type": "message", "id": msg, "status": "in_progress", "role": "assistant", "content": []}})
        );
        assert_eq!(
            evs[3].1,
            json!({"type": "response.content_part.added", "sequence_number": 3, "item_id": msg,
                   "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}})
        );
        assert_eq!(
            evs[4].1,
            json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": msg,
                   "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []})
        );
        assert_eq!(evs[5].1["delta"], "lo \"x\"\n");
        let full = "Hello \"x\"\n";
        assert_eq!(
            evs[6].1,
            json!({"type": "response.output_text.done", "sequence_number": 6, "item_id": msg,
                   "output_index": 0, "content_index": 0, "text": full, "logprobs": []})
        );
        assert_eq!(
            evs[7].1,
            json!({"type": "response.content_part.done", "sequence_number": 7, "item_id": msg,
                   "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": full, "annotations": []}})
        );
        let msg_item = json!({"type": "message", "id": msg, "status": "completed", "role": "assistant",
                              "content": [{"type": "output_text", "text": full, "annotations": []}]});
        assert_eq!(
            evs[8].1,
            json!({"type": "response.output_item.done", "sequence_number": 8, "output_index": 0, "item": msg_item})
        );

        let fc = "fc_msg_01_1";
        assert_eq!(
            evs[9].1,
            json!({"type": "response.output_item.added", "sequence_number": 9, "output_index": 1,
                   "item": {"type": "function_call", "id": fc, "call_id": "toolu_1", "name": "get_weather",
                            "arguments": "", "status": "in_progress"}})
        );
        assert_eq!(
            evs[10].1,
            json!({"type": "response.function_call_arguments.delta", "sequence_number": 10,
                   "item_id": fc, "output_index": 1, "delta": "{\"ci"})
        );
        let args = "{\"city\":\"Paris\"}";
        assert_eq!(
            evs[12].1,
            json!({"type": "response.function_call_arguments.done", "sequence_number": 12,
                   "item_id": fc, "output_index": 1, "name": "get_weather", "arguments": args})
        );
        let fc_item = json!({"type": "function_call", "id": fc, "call_id": "toolu_1", "name": "get_weather",
                             "arguments": args, "status": "completed"});
        assert_eq!(evs[13].1["item"], fc_item);
        assert_eq!(evs[13].1["output_index"], 1);

        let done = &evs[14].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["id"], "resp_msg_01");
        assert_eq!(done["output"], json!([msg_item, fc_item]));
        assert_eq!(
            done["usage"],
            json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0},
                   "output_tokens": 30, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": 42}),
            "input tokens from Start when Finish lacks them"
        );
        sdk_accumulates(&evs);
    }

    /// What the openai-python stream helper (`ResponseStreamState`) needs:
    /// `response.created` first, each item announced before events refer
    /// to its `output_index`, content parts added before their deltas; and
    /// the accumulated snapshot agrees with the final response.
    fn sdk_accumulates(evs: &[(String, Value)]) {
        assert_eq!(evs[0].0, "response.created");
        let mut items: Vec<Value> = Vec::new();
        for (name, v) in &evs[1..] {
            let idx = v["output_index"].as_u64().map(|i| i as usize);
            match name.as_str() {
                "response.output_item.added" => {
                    assert_eq!(idx, Some(items.len()));
                    items.push(v["item"].clone());
                }
                "response.content_part.added" => {
                    let item = &mut items[idx.unwrap()];
                    item["content"]
                        .as_array_mut()
                        .unwrap()
                        .push(v["part"].clone());
                }
                "response.output_text.delta" => {
                    let item = &mut items[idx.unwrap()];
                    let c = v["content_index"].as_u64().unwrap() as usize;
                    let text = format!(
                        "{}{}",
                        item["content"][c]["text"].as_str().unwrap(),
                        v["delta"].as_str().unwrap()
                    );
                    item["content"][c]["text"] = text.into();
                    assert_eq!(item["id"], v["item_id"]);
                }
                "response.function_call_arguments.delta" => {
                    let item = &mut items[idx.unwrap()];
                    assert_eq!(item["type"], "function_call");
                    let args = format!(
                        "{}{}",
                        item["arguments"].as_str().unwrap(),
                        v["delta"].as_str().unwrap()
                    );
                    item["arguments"] = args.into();
                }
                "response.output_item.done" => {
                    let item = &mut items[idx.unwrap()];
                    assert_eq!(item["id"], v["item"]["id"]);
                    if item["type"] == "message" {
                        assert_eq!(item["content"], v["item"]["content"]);
                    }
                    if item["type"] == "function_call" {
                        assert_eq!(item["arguments"], v["item"]["arguments"]);
                    }
                    *item = v["item"].clone();
                }
                "response.completed" | "response.incomplete" => {
                    assert_eq!(v["response"]["output"], Value::Array(items.clone()));
                }
                _ => {
                    if let Some(i) = idx {
                        assert!(i < items.len(), "{name} before its item");
                    }
                }
            }
        }
    }

    #[test]
    fn streams_reasoning_and_reports_a_cut_answer_as_incomplete() {
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        start(&mut enc, &mut out);
        let seq = [
            StreamEvent::BlockStart {
                index: 0,
                block: BlockKind::Thinking,
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Thinking("Pondering".into()),
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Signature("c2ln".into()),
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockKind::RedactedThinking("opaque".into()),
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::BlockStart {
                index: 2,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 2,
                delta: Delta::Text("The answ".into()),
            },
            StreamEvent::BlockStop { index: 2 },
            StreamEvent::Finish {
                stop: StopReason::MaxTokens,
                usage: Usage {
                    input: Some(5),
                    output: Some(7),
                    cached: Some(1),
                },
            },
        ];
        for ev in &seq {
            enc.event(ev, &mut out);
        }
        enc.finish(&mut out);
        let evs = events(&out);
        assert_eq!(
            names(&evs),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.incomplete",
            ]
        );
        let rs = "rs_msg_01_0";
        assert_eq!(
            evs[2].1["item"],
            json!({"type": "reasoning", "id": rs, "summary": []})
        );
        assert_eq!(
            evs[3].1,
            json!({"type": "response.reasoning_summary_part.added", "sequence_number": 3, "item_id": rs,
                   "output_index": 0, "summary_index": 0, "part": {"type": "summary_text", "text": ""}})
        );
        assert_eq!(
            evs[4].1,
            json!({"type": "response.reasoning_summary_text.delta", "sequence_number": 4, "item_id": rs,
                   "output_index": 0, "summary_index": 0, "delta": "Pondering"})
        );
        assert_eq!(evs[5].1["text"], "Pondering");
        assert_eq!(
            evs[6].1["part"],
            json!({"type": "summary_text", "text": "Pondering"})
        );
        assert_eq!(
            evs[7].1["item"],
            json!({"type": "reasoning", "id": rs, "summary": [{"type": "summary_text", "text": "Pondering"}]})
        );
        // The redacted block made no item: the text is output 1.
        assert_eq!(evs[8].1["output_index"], 1);
        assert_eq!(evs[8].1["item"]["id"], "msg_msg_01_1");
        let r = &evs[14].1["response"];
        assert_eq!(r["status"], "incomplete");
        assert_eq!(
            r["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(r["output"].as_array().unwrap().len(), 2);
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 1);
        assert_eq!(r["usage"]["total_tokens"], 12);
        sdk_accumulates(&evs);
    }

    #[test]
    fn a_failed_stream_ends_with_error_and_response_failed() {
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        start(&mut enc, &mut out);
        for ev in [
            StreamEvent::BlockStart {
                index: 0,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 0,
                delta: Delta::Text("done".into()),
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 1,
                delta: Delta::Text("cut".into()),
            },
        ] {
            enc.event(&ev, &mut out);
        }
        let err = ErrorInfo::new(429, "Rate limited. Please try again in 2s.");
        enc.error(&err, &mut out);
        let evs = events(&out);
        let n = evs.len();
        assert_eq!(names(&evs[n - 2..]), ["error", "response.failed"]);
        assert_eq!(
            evs[n - 2].1,
            json!({"type": "error", "sequence_number": n - 2, "code": "rate_limit_exceeded",
                   "message": "Rate limited. Please try again in 2s.", "param": null})
        );
        let r = &evs[n - 1].1["response"];
        assert_eq!(r["status"], "failed");
        assert_eq!(
            r["error"],
            json!({"code": "rate_limit_exceeded", "message": "Rate limited. Please try again in 2s."})
        );
        assert_eq!(
            r["output"].as_array().unwrap().len(),
            1,
            "only finished items"
        );
        assert_eq!(r["output"][0]["content"][0]["text"], "done");

        // An error before anything was sent still starts with
        // response.created, which the SDK requires first.
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        enc.error(&ErrorInfo::new(502, "upstream went away"), &mut out);
        let evs = events(&out);
        assert_eq!(
            names(&evs),
            [
                "response.created",
                "response.in_progress",
                "error",
                "response.failed"
            ]
        );
        assert_eq!(evs[2].1["code"], "server_error");
    }

    #[test]
    fn ids_with_odd_characters_stay_valid_json() {
        let mut enc = StreamEncoder::default();
        let mut out = Vec::new();
        enc.event(
            &StreamEvent::Start {
                id: "a\"b\\c".into(),
                model: "m".into(),
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
        let evs = events(&out);
        assert_eq!(evs[0].1["response"]["id"], "resp_a\"b\\c");
        assert_eq!(evs[2].1["item"]["id"], "msg_a\"b\\c_0");
    }
}
