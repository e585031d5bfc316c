//! The Gemini API (`v1beta` `generateContent` / `streamGenerateContent`,
//! REST JSON), both as a client protocol and as a provider protocol.
//!
//! Gemini differs from the other protocols in a few ways this codec absorbs:
//! - the model and the stream flag live in the URL, so the request decoder
//!   leaves them to the caller and the request encoder never writes a model;
//! - function calls usually carry no id, so ids are generated (`call_<n>`)
//!   and function responses are paired with calls by name;
//! - a `thoughtSignature` may sit on any part (a thought, a text, a function
//!   call). A signature on a thought part is that thinking block's
//!   signature; a signature on any other part travels in the IR as an empty
//!   `Thinking` part (stream: an empty thinking block) right before the part
//!   it belongs to, and the encoders put it back on that part. Gemini 3
//!   rejects replayed function calls without a signature, so a model turn
//!   whose first function call has none (it came from another provider) gets
//!   Google's documented validator-skipping placeholder;
//! - a stream has no terminal event: it is complete once a `finishReason`
//!   has been seen.

use std::borrow::Cow;

use simd_json::prelude::{ValueAsScalar, ValueIntoString};
use simd_json::Buffers;

use crate::protocol::ir::*;
use crate::protocol::json::{self, write_f64, write_string, write_u64, write_value};
use crate::sse::{self, Event};

/// The placeholder signature Gemini accepts on a function call it did not
/// produce itself (a conversation started on another provider).
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// The response id used when Gemini sends no `responseId`.
const DEFAULT_ID: &str = "gemini-response";

/// Gemini accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;

// ---------------------------------------------------------------------------
// Small tape helpers
// ---------------------------------------------------------------------------

/// A field by its camelCase or snake_case name (the REST API accepts both);
/// `null` counts as absent.
fn field<'a>(v: Json<'a>, camel: &str, snake: &str) -> Option<Json<'a>> {
    v.get(camel)
        .or_else(|| if camel == snake { None } else { v.get(snake) })
        .filter(|x| x.as_null().is_none())
}

/// "`base.key`" for error messages, formatted only when an error is made.
fn path(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

fn opt_str<'a>(
    v: Json<'a>,
    camel: &str,
    snake: &str,
    base: &dyn Fn() -> String,
) -> Result<Option<&'a str>, TranslateError> {
    match field(v, camel, snake) {
        None => Ok(None),
        Some(x) => match x.into_string() {
            Some(s) => Ok(Some(s)),
            None => Err(TranslateError::wrong_type(
                &path(&base(), camel),
                "a string",
            )),
        },
    }
}

fn opt_u64(
    v: Json<'_>,
    camel: &str,
    snake: &str,
    base: &dyn Fn() -> String,
) -> Result<Option<u64>, TranslateError> {
    match field(v, camel, snake) {
        None => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) => Ok(Some(n)),
            // Protobuf's JSON mapping also allows integral floats (`40.0`).
            None => match x.cast_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e18 => Ok(Some(f as u64)),
                _ => Err(TranslateError::wrong_type(
                    &path(&base(), camel),
                    "a non-negative integer",
                )),
            },
        },
    }
}

fn opt_f64(
    v: Json<'_>,
    camel: &str,
    snake: &str,
    base: &dyn Fn() -> String,
) -> Result<Option<f64>, TranslateError> {
    match field(v, camel, snake) {
        None => Ok(None),
        Some(x) => match x.cast_f64() {
            Some(n) => Ok(Some(n)),
            None => Err(TranslateError::wrong_type(
                &path(&base(), camel),
                "a number",
            )),
        },
    }
}

fn opt_bool(v: Json<'_>, camel: &str, snake: &str) -> bool {
    field(v, camel, snake)
        .and_then(|x| x.as_bool())
        .unwrap_or(false)
}

fn u32_of(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Writes `,"key":` (or `"key":` first in an object).
fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    write_string(out, k);
    out.push(b':');
}

// ---------------------------------------------------------------------------
// Request decoding (client side)
// ---------------------------------------------------------------------------

/// Tracks function calls across a request, to give id-less calls generated
/// ids and id-less responses the id of the call they answer.
#[derive(Default)]
struct CallIds<'a> {
    /// Ids handed out so far (generated and given): `call_<n>` counts them.
    count: usize,
    /// Calls not answered yet, oldest first: (id, name).
    open: Vec<(Cow<'a, str>, &'a str)>,
}

impl<'a> CallIds<'a> {
    fn call(&mut self, id: Option<&'a str>, name: &'a str) -> Cow<'a, str> {
        let id = match id {
            Some(id) if !id.is_empty() => Cow::Borrowed(id),
            _ => Cow::Owned(format!("call_{}", self.count)),
        };
        self.count += 1;
        self.open.push((id.clone(), name));
        id
    }

    fn response(&mut self, id: Option<&'a str>, name: &str) -> Cow<'a, str> {
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            if let Some(i) = self.open.iter().position(|(open, _)| open == id) {
                self.open.remove(i);
            }
            return Cow::Borrowed(id);
        }
        if let Some(i) = self.open.iter().position(|(_, n)| *n == name) {
            return self.open.remove(i).0;
        }
        // A response to no call we saw: give it an id of its own.
        let id = format!("call_{}", self.count);
        self.count += 1;
        Cow::Owned(id)
    }
}

/// Decodes a Gemini `generateContent` request body. The model and the stream
/// flag come from the URL: they are left empty / false for the caller.
pub fn decode_request<'a>(root: Json<'a>) -> Result<Request<'a>, TranslateError> {
    if !root.is_object() {
        return Err(TranslateError::new(
            "the request body must be a JSON object",
        ));
    }
    let mut req = Request::default();

    if let Some(si) = field(root, "systemInstruction", "system_instruction") {
        if let Some(s) = si.into_string() {
            req.system.push(Part::Text(Cow::Borrowed(s)));
        } else if si.is_object() {
            if let Some(parts) = field(si, "parts", "parts") {
                let parts = parts.as_array().ok_or_else(|| {
                    TranslateError::wrong_type("systemInstruction.parts", "an array")
                })?;
                for (j, part) in parts.iter().enumerate() {
                    let base = || format!("systemInstruction.parts[{j}]");
                    if !part.is_object() {
                        return Err(TranslateError::wrong_type(&base(), "an object"));
                    }
                    match opt_str(part, "text", "text", &base)? {
                        Some(t) => req.system.push(Part::Text(Cow::Borrowed(t))),
                        None => req.system.push(Part::Raw {
                            dialect: Dialect::Gemini,
                            value: part,
                        }),
                    }
                }
            }
        } else {
            return Err(TranslateError::wrong_type(
                "systemInstruction",
                "an object or a string",
            ));
        }
    }

    let contents =
        field(root, "contents", "contents").ok_or_else(|| TranslateError::missing("contents"))?;
    let contents = contents
        .as_array()
        .ok_or_else(|| TranslateError::wrong_type("contents", "an array"))?;
    let mut ids = CallIds::default();
    req.messages.reserve(contents.len());
    for (i, content) in contents.iter().enumerate() {
        let base = || format!("contents[{i}]");
        if !content.is_object() {
            return Err(TranslateError::wrong_type(&base(), "an object"));
        }
        let role = match opt_str(content, "role", "role", &base)? {
            None | Some("user") | Some("function") | Some("tool") | Some("") => Role::User,
            Some("model") | Some("assistant") => Role::Assistant,
            Some(_) => {
                return Err(TranslateError::new(format!(
                    "`contents[{i}].role` must be \"user\" or \"model\""
                )))
            }
        };
        let Some(parts) = field(content, "parts", "parts") else {
            continue;
        };
        let parts = parts
            .as_array()
            .ok_or_else(|| TranslateError::wrong_type(&path(&base(), "parts"), "an array"))?;
        let mut out = Vec::with_capacity(parts.len());
        for (j, part) in parts.iter().enumerate() {
            decode_request_part(part, i, j, &mut ids, &mut out)?;
        }
        if !out.is_empty() {
            req.messages.push(Message { role, parts: out });
        }
    }

    if let Some(tools) = field(root, "tools", "tools") {
        let tools = tools
            .as_array()
            .ok_or_else(|| TranslateError::wrong_type("tools", "an array"))?;
        for (i, tool) in tools.iter().enumerate() {
            // googleSearch, codeExecution, urlContext... have no IR form.
            let Some(decls) = field(tool, "functionDeclarations", "function_declarations") else {
                continue;
            };
            let decls = decls.as_array().ok_or_else(|| {
                TranslateError::wrong_type(&format!("tools[{i}].functionDeclarations"), "an array")
            })?;
            for (j, decl) in decls.iter().enumerate() {
                let base = || format!("tools[{i}].functionDeclarations[{j}]");
                if !decl.is_object() {
                    return Err(TranslateError::wrong_type(&base(), "an object"));
                }
                let name = opt_str(decl, "name", "name", &base)?
                    .ok_or_else(|| TranslateError::missing(&path(&base(), "name")))?;
                let description = opt_str(decl, "description", "description", &base)?;
                let parameters = field(decl, "parameters", "parameters")
                    .or_else(|| field(decl, "parametersJsonSchema", "parameters_json_schema"));
                req.tools.push(Tool {
                    name: Cow::Borrowed(name),
                    description: description.map(Cow::Borrowed),
                    parameters,
                    strict: None,
                });
            }
        }
    }

    if let Some(tc) = field(root, "toolConfig", "tool_config") {
        if let Some(fc) = field(tc, "functionCallingConfig", "function_calling_config") {
            let base = || "toolConfig.functionCallingConfig".to_string();
            let allowed = match field(fc, "allowedFunctionNames", "allowed_function_names") {
                None => None,
                Some(a) => Some(a.as_array().ok_or_else(|| {
                    TranslateError::wrong_type(&path(&base(), "allowedFunctionNames"), "an array")
                })?),
            };
            req.tool_choice = match opt_str(fc, "mode", "mode", &base)? {
                Some("NONE") => Some(ToolChoice::None),
                Some("ANY") => {
                    let single = allowed
                        .filter(|a| a.len() == 1)
                        .and_then(|a| a.get(0))
                        .and_then(|n| n.into_string());
                    Some(match single {
                        Some(name) => ToolChoice::Tool(Cow::Borrowed(name)),
                        None => ToolChoice::Required,
                    })
                }
                // AUTO, VALIDATED (auto with schema-checked calls),
                // MODE_UNSPECIFIED and modes newer than this codec.
                Some(_) => Some(ToolChoice::Auto),
                None => None,
            };
        }
    }

    if let Some(gc) = field(root, "generationConfig", "generation_config") {
        let base = || "generationConfig".to_string();
        if !gc.is_object() {
            return Err(TranslateError::wrong_type("generationConfig", "an object"));
        }
        req.max_tokens = opt_u64(gc, "maxOutputTokens", "max_output_tokens", &base)?;
        req.temperature = opt_f64(gc, "temperature", "temperature", &base)?;
        req.top_p = opt_f64(gc, "topP", "top_p", &base)?;
        req.top_k = opt_u64(gc, "topK", "top_k", &base)?;
        if let Some(stops) = field(gc, "stopSequences", "stop_sequences") {
            let stops = stops.as_array().ok_or_else(|| {
                TranslateError::wrong_type("generationConfig.stopSequences", "an array")
            })?;
            for (i, s) in stops.iter().enumerate() {
                let s = s.into_string().ok_or_else(|| {
                    TranslateError::wrong_type(
                        &format!("generationConfig.stopSequences[{i}]"),
                        "a string",
                    )
                })?;
                req.stop.push(Cow::Borrowed(s));
            }
        }
        let mime = opt_str(gc, "responseMimeType", "response_mime_type", &base)?;
        let schema = field(gc, "responseSchema", "response_schema")
            .or_else(|| field(gc, "responseJsonSchema", "response_json_schema"));
        let json_mime = mime.is_some_and(|m| m.eq_ignore_ascii_case("application/json"));
        req.response_format = match (json_mime, schema) {
            (true, Some(schema)) => Some(ResponseFormat::JsonSchema {
                name: Cow::Borrowed("response"),
                schema,
                strict: None,
            }),
            (true, None) => Some(ResponseFormat::JsonObject),
            _ => None,
        };
        if let Some(tc) = field(gc, "thinkingConfig", "thinking_config") {
            let base = || "generationConfig.thinkingConfig".to_string();
            // thinkingBudget: 0 = off, -1 = dynamic, n = a budget.
            let budget = match field(tc, "thinkingBudget", "thinking_budget") {
                None => None,
                Some(b) => Some(b.as_i64().ok_or_else(|| {
                    TranslateError::wrong_type(&path(&base(), "thinkingBudget"), "an integer")
                })?),
            };
            let include = opt_bool(tc, "includeThoughts", "include_thoughts");
            let level = opt_str(tc, "thinkingLevel", "thinking_level", &base)?
                .and_then(|l| Effort::parse(&l.to_ascii_lowercase()));
            req.thinking = match budget {
                Some(0) => None,
                Some(b) if b > 0 => Some(Thinking {
                    budget_tokens: Some(b as u64),
                    effort: level,
                }),
                Some(_) => Some(Thinking {
                    budget_tokens: None,
                    effort: level,
                }),
                None if include || level.is_some() => Some(Thinking {
                    budget_tokens: None,
                    effort: level,
                }),
                None => None,
            };
        }
    }
    Ok(req)
}

/// Decodes one part of `contents[i].parts[j]` into `out` (a signature on a
/// non-thought part becomes an empty `Thinking` part before it).
fn decode_request_part<'a>(
    part: Json<'a>,
    i: usize,
    j: usize,
    ids: &mut CallIds<'a>,
    out: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let base = || format!("contents[{i}].parts[{j}]");
    if !part.is_object() {
        return Err(TranslateError::wrong_type(&base(), "an object"));
    }
    let signature = opt_str(part, "thoughtSignature", "thought_signature", &base)?;
    let thought = opt_bool(part, "thought", "thought");
    if let Some(t) = field(part, "text", "text") {
        let text = t
            .into_string()
            .ok_or_else(|| TranslateError::wrong_type(&path(&base(), "text"), "a string"))?;
        if thought {
            push_thought(out, text, signature);
        } else {
            push_signature(out, signature);
            out.push(Part::Text(Cow::Borrowed(text)));
        }
        return Ok(());
    }
    if let Some(inline) = field(part, "inlineData", "inline_data") {
        let base = || path(&base(), "inlineData");
        let media_type = opt_str(inline, "mimeType", "mime_type", &base)?
            .ok_or_else(|| TranslateError::missing(&path(&base(), "mimeType")))?;
        let data = opt_str(inline, "data", "data", &base)?
            .ok_or_else(|| TranslateError::missing(&path(&base(), "data")))?;
        push_signature(out, signature);
        out.push(Part::Image(Image::Base64 {
            media_type: Cow::Borrowed(media_type),
            data: Cow::Borrowed(data),
        }));
        return Ok(());
    }
    if let Some(file) = field(part, "fileData", "file_data") {
        let base = || path(&base(), "fileData");
        let uri = opt_str(file, "fileUri", "file_uri", &base)?
            .ok_or_else(|| TranslateError::missing(&path(&base(), "fileUri")))?;
        push_signature(out, signature);
        out.push(Part::Image(Image::Url(Cow::Borrowed(uri))));
        return Ok(());
    }
    if let Some(call) = field(part, "functionCall", "function_call") {
        let base = || path(&base(), "functionCall");
        let name = opt_str(call, "name", "name", &base)?
            .ok_or_else(|| TranslateError::missing(&path(&base(), "name")))?;
        let id = opt_str(call, "id", "id", &base)?;
        let arguments = match field(call, "args", "args") {
            Some(args) => Cow::Owned(json::value_to_string(&args)),
            None => Cow::Borrowed("{}"),
        };
        push_signature(out, signature);
        out.push(Part::ToolCall(ToolCall {
            id: ids.call(id, name),
            name: Cow::Borrowed(name),
            arguments,
        }));
        return Ok(());
    }
    if let Some(resp) = field(part, "functionResponse", "function_response") {
        let base = || path(&base(), "functionResponse");
        let name = opt_str(resp, "name", "name", &base)?
            .ok_or_else(|| TranslateError::missing(&path(&base(), "name")))?;
        let id = opt_str(resp, "id", "id", &base)?;
        let (content, is_error) = match field(resp, "response", "response") {
            None => (Cow::Borrowed(""), false),
            Some(r) => tool_response_text(r),
        };
        out.push(Part::ToolResult(ToolResult {
            call_id: ids.response(id, name),
            name: Some(Cow::Borrowed(name)),
            content: vec![Part::Text(content)],
            is_error,
        }));
        return Ok(());
    }
    out.push(Part::Raw {
        dialect: Dialect::Gemini,
        value: part,
    });
    Ok(())
}

/// The text of a `functionResponse.response`. `{"result": "<text>"}` and
/// `{"error": "<text>"}` (the shapes the SDKs and this codec's encoder
/// write) unwrap to their text; any other value is sent as JSON text.
fn tool_response_text<'a>(r: Json<'a>) -> (Cow<'a, str>, bool) {
    if let Some(obj) = r.as_object() {
        if obj.len() == 1 {
            if let Some((k, v)) = obj.iter().next() {
                if k == "result" || k == "error" {
                    let text = match v.into_string() {
                        Some(s) => Cow::Borrowed(s),
                        None => Cow::Owned(json::value_to_string(&v)),
                    };
                    return (text, k == "error");
                }
            }
        }
    }
    (Cow::Owned(json::value_to_string(&r)), false)
}

/// A thought part. Consecutive thought parts are one run of reasoning
/// whose last part carries the signature (streams send the text in pieces,
/// then the signature, maybe on an empty part): they join into one
/// `Thinking` part, which is the form Anthropic-style signatures need.
fn push_thought<'a>(out: &mut Vec<Part<'a>>, text: &'a str, signature: Option<&'a str>) {
    if let Some(Part::Thinking {
        text: prev,
        signature: prev_sig @ None,
    }) = out.last_mut()
    {
        if !text.is_empty() {
            prev.to_mut().push_str(text);
        }
        *prev_sig = signature.map(Cow::Borrowed);
        return;
    }
    out.push(Part::Thinking {
        text: Cow::Borrowed(text),
        signature: signature.map(Cow::Borrowed),
    });
}

/// A signature carried by a non-thought part, as the empty `Thinking` part
/// that precedes it in the IR.
fn push_signature<'a>(out: &mut Vec<Part<'a>>, signature: Option<&'a str>) {
    if let Some(sig) = signature {
        out.push(Part::Thinking {
            text: Cow::Borrowed(""),
            signature: Some(Cow::Borrowed(sig)),
        });
    }
}

// ---------------------------------------------------------------------------
// Request encoding (provider side)
// ---------------------------------------------------------------------------

/// Scratch space to check that a tool call's argument text is one JSON
/// object before writing it raw into a body.
#[derive(Default)]
struct ObjectCheck {
    bytes: Vec<u8>,
    buffers: Option<Buffers>,
}

impl ObjectCheck {
    /// `text` trimmed, if it is exactly one JSON object.
    fn object<'t>(&mut self, text: &'t str) -> Option<&'t str> {
        let t = text.trim();
        if !(t.starts_with('{') && t.ends_with('}')) {
            return None;
        }
        self.bytes.clear();
        self.bytes.extend_from_slice(t.as_bytes());
        let buffers = self.buffers.get_or_insert_with(Buffers::default);
        json::parse(&mut self.bytes, buffers).is_ok().then_some(t)
    }
}

/// Writes the contents array one part at a time, opening a new content only
/// when the role changes, so consecutive same-role messages merge and a
/// message with nothing Gemini can take leaves no empty content behind.
#[derive(Default)]
struct ContentsWriter {
    open: Option<Role>,
    contents: usize,
    parts: usize,
    /// Whether the open content already has a function call (only the first
    /// of parallel calls carries a signature).
    has_call: bool,
}

impl ContentsWriter {
    fn begin_part(&mut self, out: &mut Vec<u8>, role: Role) {
        if self.open != Some(role) {
            if self.open.is_some() {
                out.extend_from_slice(b"]}");
            }
            if self.contents > 0 {
                out.push(b',');
            }
            out.extend_from_slice(match role {
                Role::User => br#"{"role":"user","parts":["#,
                Role::Assistant => br#"{"role":"model","parts":["#,
            });
            self.open = Some(role);
            self.contents += 1;
            self.parts = 0;
            self.has_call = false;
        }
        if self.parts > 0 {
            out.push(b',');
        }
        self.parts += 1;
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            out.extend_from_slice(b"]}");
        }
    }
}

fn write_signature(out: &mut Vec<u8>, sig: Option<&str>) {
    if let Some(sig) = sig {
        out.extend_from_slice(br#","thoughtSignature":"#);
        write_string(out, sig);
    }
}

/// The media type of an image URL, from its extension.
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    if ext.eq_ignore_ascii_case("png") {
        "image/png"
    } else if ext.eq_ignore_ascii_case("gif") {
        "image/gif"
    } else if ext.eq_ignore_ascii_case("webp") {
        "image/webp"
    } else if ext.eq_ignore_ascii_case("heic") {
        "image/heic"
    } else if ext.eq_ignore_ascii_case("pdf") {
        "application/pdf"
    } else {
        "image/jpeg"
    }
}

fn write_image(out: &mut Vec<u8>, img: &Image<'_>) {
    match img {
        Image::Base64 { media_type, data } => {
            out.extend_from_slice(br#"{"inlineData":{"mimeType":"#);
            write_string(out, media_type);
            out.extend_from_slice(br#","data":"#);
            write_string(out, data);
            out.extend_from_slice(b"}}");
        }
        Image::Url(url) => {
            out.extend_from_slice(br#"{"fileData":{"mimeType":"#);
            write_string(out, guess_mime(url));
            out.extend_from_slice(br#","fileUri":"#);
            write_string(out, url);
            out.extend_from_slice(b"}}");
        }
    }
}

/// `{"name":..,"args":..` of a function call (the caller closes it).
fn write_call_body(out: &mut Vec<u8>, tc: &ToolCall<'_>, check: &mut ObjectCheck) {
    out.extend_from_slice(br#"{"name":"#);
    write_string(out, &tc.name);
    out.extend_from_slice(br#","args":"#);
    match check.object(&tc.arguments) {
        Some(obj) => out.extend_from_slice(obj.as_bytes()),
        None => out.extend_from_slice(b"{}"),
    }
}

/// The name of the call `id` answers, from the request's earlier calls.
fn call_name<'r>(req: &'r Request<'_>, id: &str) -> Option<&'r str> {
    req.messages
        .iter()
        .flat_map(|m| m.parts.iter())
        .find_map(|p| match p {
            Part::ToolCall(tc) if tc.id == id => Some(&*tc.name),
            _ => None,
        })
}

fn write_function_response(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    tr: &ToolResult<'_>,
    check: &mut ObjectCheck,
) {
    let name = match &tr.name {
        Some(n) => &**n,
        None => call_name(req, &tr.call_id).unwrap_or("unknown"),
    };
    let mut texts = tr.content.iter().filter_map(|p| match p {
        Part::Text(t) => Some(&**t),
        _ => None,
    });
    let first = texts.next().unwrap_or("");
    let joined;
    let text = match texts.next() {
        None => first,
        Some(second) => {
            let mut s = String::with_capacity(first.len() + second.len() + 1);
            s.push_str(first);
            s.push('\n');
            s.push_str(second);
            for t in texts {
                s.push('\n');
                s.push_str(t);
            }
            joined = s;
            &joined
        }
    };
    out.extend_from_slice(br#"{"functionResponse":{"name":"#);
    write_string(out, name);
    out.extend_from_slice(br#","response":"#);
    match (check.object(text), tr.is_error) {
        (Some(obj), false) => out.extend_from_slice(obj.as_bytes()),
        (Some(obj), true) => {
            out.extend_from_slice(br#"{"error":"#);
            out.extend_from_slice(obj.as_bytes());
            out.push(b'}');
        }
        (None, is_error) => {
            out.extend_from_slice(if is_error {
                br#"{"error":"#
            } else {
                br#"{"result":"#
            });
            write_string(out, text);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"}}");
}

/// Encodes the request as a Gemini `generateContent` body (the model goes
/// in the URL, so it is not written).
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) {
    let mut check = ObjectCheck::default();
    out.extend_from_slice(br#"{"contents":["#);
    let mut w = ContentsWriter::default();
    for msg in &req.messages {
        let role = msg.role;
        // A signature that belongs on the next part of this message.
        let mut sig: Option<&str> = None;
        for part in &msg.parts {
            match part {
                Part::Text(t) => {
                    // Gemini rejects empty text parts.
                    if t.is_empty() && sig.is_none() {
                        continue;
                    }
                    w.begin_part(out, role);
                    out.extend_from_slice(br#"{"text":"#);
                    write_string(out, t);
                    write_signature(out, sig.take());
                    out.push(b'}');
                }
                Part::Thinking { text, signature } => match signature {
                    // Unsigned thoughts are summaries Gemini reads nothing
                    // from; they are dropped.
                    None => {}
                    Some(s) if text.is_empty() => sig = Some(s),
                    Some(s) => {
                        w.begin_part(out, role);
                        out.extend_from_slice(br#"{"text":"#);
                        write_string(out, text);
                        out.extend_from_slice(br#","thought":true"#);
                        write_signature(out, Some(s));
                        out.push(b'}');
                    }
                },
                Part::RedactedThinking(_) => {}
                Part::Image(img) => {
                    w.begin_part(out, role);
                    write_image(out, img);
                    out.pop();
                    write_signature(out, sig.take());
                    out.push(b'}');
                }
                Part::ToolCall(tc) => {
                    w.begin_part(out, role);
                    out.extend_from_slice(br#"{"functionCall":"#);
                    write_call_body(out, tc, &mut check);
                    out.push(b'}');
                    let own = sig.take();
                    let sig = match own {
                        Some(s) => Some(s),
                        None if role == Role::Assistant && !w.has_call => Some(SKIP_SIGNATURE),
                        None => None,
                    };
                    write_signature(out, sig);
                    out.push(b'}');
                    w.has_call = true;
                }
                Part::ToolResult(tr) => {
                    w.begin_part(out, role);
                    write_function_response(out, req, tr, &mut check);
                    // Images a tool returned follow its response.
                    for p in &tr.content {
                        if let Part::Image(img) = p {
                            w.begin_part(out, role);
                            write_image(out, img);
                        }
                    }
                }
                Part::Raw {
                    dialect: Dialect::Gemini,
                    value,
                } => {
                    w.begin_part(out, role);
                    write_value(out, value);
                }
                Part::Raw { .. } => {}
            }
        }
        // A signature with no part after it (Gemini sends these on an empty
        // text part at the end of a turn) goes back the same way.
        if let Some(sig) = sig {
            w.begin_part(out, role);
            write_text_part(out, "", false, Some(sig));
        }
    }
    w.end(out);
    out.push(b']');

    // systemInstruction, written only if it has a part.
    let start = out.len();
    out.extend_from_slice(br#","systemInstruction":{"parts":["#);
    let mut n = 0;
    for part in &req.system {
        match part {
            Part::Text(t) if !t.is_empty() => {
                if n > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"text":"#);
                write_string(out, t);
                out.push(b'}');
                n += 1;
            }
            Part::Raw {
                dialect: Dialect::Gemini,
                value,
            } => {
                if n > 0 {
                    out.push(b',');
                }
                write_value(out, value);
                n += 1;
            }
            _ => {}
        }
    }
    if n == 0 {
        out.truncate(start);
    } else {
        out.extend_from_slice(b"]}");
    }

    if !req.tools.is_empty() {
        out.extend_from_slice(br#","tools":[{"functionDeclarations":["#);
        for (i, tool) in req.tools.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"name":"#);
            write_string(out, &tool.name);
            if let Some(d) = &tool.description {
                out.extend_from_slice(br#","description":"#);
                write_string(out, d);
            }
            if let Some(p) = tool.parameters.filter(|p| !is_empty_object_schema(*p)) {
                out.extend_from_slice(br#","parameters":"#);
                write_clean_schema(out, p);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}]");
        if let Some(choice) = &req.tool_choice {
            out.extend_from_slice(br#","toolConfig":{"functionCallingConfig":{"mode":"#);
            match choice {
                ToolChoice::Auto => out.extend_from_slice(br#""AUTO""#),
                ToolChoice::None => out.extend_from_slice(br#""NONE""#),
                ToolChoice::Required => out.extend_from_slice(br#""ANY""#),
                ToolChoice::Tool(name) => {
                    out.extend_from_slice(br#""ANY","allowedFunctionNames":["#);
                    write_string(out, name);
                    out.push(b']');
                }
            }
            out.extend_from_slice(b"}}");
        }
    }

    // generationConfig, written only if it has a field.
    let start = out.len();
    out.extend_from_slice(br#","generationConfig":{"#);
    let mut first = true;
    if let Some(n) = req.max_tokens {
        key(out, &mut first, "maxOutputTokens");
        write_u64(out, n);
    }
    if let Some(t) = req.temperature {
        key(out, &mut first, "temperature");
        write_f64(out, t);
    }
    if let Some(p) = req.top_p {
        key(out, &mut first, "topP");
        write_f64(out, p);
    }
    if let Some(k) = req.top_k {
        key(out, &mut first, "topK");
        write_u64(out, k);
    }
    if !req.stop.is_empty() {
        key(out, &mut first, "stopSequences");
        out.push(b'[');
        for (i, s) in req.stop.iter().take(MAX_STOP_SEQUENCES).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(out, s);
        }
        out.push(b']');
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            key(out, &mut first, "responseMimeType");
            write_string(out, "application/json");
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            key(out, &mut first, "responseMimeType");
            write_string(out, "application/json");
            key(out, &mut first, "responseSchema");
            write_clean_schema(out, *schema);
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(t) = &req.thinking {
        key(out, &mut first, "thinkingConfig");
        out.extend_from_slice(br#"{"thinkingBudget":"#);
        write_u64(out, t.budget());
        out.extend_from_slice(br#","includeThoughts":true}"#);
    }
    if first {
        out.truncate(start);
    } else {
        out.push(b'}');
    }
    out.push(b'}');
}

/// Whether a tool's parameters schema is an object without properties:
/// Gemini rejects `"properties": {}` on an object, and a function without
/// arguments is declared by leaving `parameters` out.
fn is_empty_object_schema(schema: Json<'_>) -> bool {
    let Some(obj) = schema.as_object() else {
        return true;
    };
    let is_object = match obj.get("type") {
        None => true,
        Some(t) => t
            .into_string()
            .is_some_and(|t| t.eq_ignore_ascii_case("object")),
    };
    let no_properties = obj
        .get("properties")
        .is_none_or(|p| p.as_object().is_none_or(|p| p.is_empty()));
    is_object && no_properties && obj.get("anyOf").is_none()
}

/// String formats Gemini accepts; others (`uri`, `email`...) are refused.
fn gemini_format(format: &str) -> bool {
    matches!(
        format,
        "date-time" | "enum" | "int32" | "int64" | "float" | "double"
    )
}

/// Writes `schema` keeping only what Gemini's Schema object accepts. The
/// walk recurses into `properties`, `items` and `anyOf`; depth is bounded
/// by the nesting limit of the parser that made the tape.
fn write_clean_schema(out: &mut Vec<u8>, schema: Json<'_>) {
    let Some(obj) = schema.as_object() else {
        // `true` or another non-object schema: anything goes.
        out.extend_from_slice(b"{}");
        return;
    };
    out.push(b'{');
    let mut first = true;
    let mut nullable = false;
    let has_nullable = obj.get("nullable").is_some();
    let has_enum = obj.get("enum").is_some();
    let has_any_of = obj.get("anyOf").is_some();
    // Gemini's enums are strings and want a type; `{"enum": [..]}` and
    // `{"const": x}` without one are string enums.
    if obj.get("type").is_none() && (has_enum || obj.get("const").is_some()) {
        key(out, &mut first, "type");
        write_string(out, "string");
    }
    for (k, v) in obj.iter() {
        match k {
            "type" => {
                if let Some(t) = v.into_string() {
                    key(out, &mut first, "type");
                    write_string(out, t);
                } else if let Some(types) = v.as_array() {
                    // ["string", "null"] -> "string" + nullable.
                    let mut chosen = None;
                    for t in types.iter() {
                        match t.into_string() {
                            Some("null") => nullable = true,
                            Some(t) if chosen.is_none() => chosen = Some(t),
                            _ => {}
                        }
                    }
                    if let Some(t) = chosen.or(nullable.then_some("null")) {
                        key(out, &mut first, "type");
                        write_string(out, t);
                    }
                    if chosen.is_none() {
                        nullable = false;
                    }
                }
            }
            "enum" => {
                if let Some(values) = v.as_array() {
                    key(out, &mut first, "enum");
                    write_enum(out, values.iter());
                }
            }
            "const" if !has_enum => {
                key(out, &mut first, "enum");
                write_enum(out, std::iter::once(v));
            }
            "anyOf" => write_schema_list(out, &mut first, v),
            // Gemini has no oneOf; anyOf is the nearest it accepts.
            "oneOf" if !has_any_of => write_schema_list(out, &mut first, v),
            "items" => {
                if v.is_object() {
                    key(out, &mut first, "items");
                    write_clean_schema(out, v);
                } else if let Some(first_item) = v.as_array().and_then(|a| a.get(0)) {
                    // A tuple: Gemini has one item schema.
                    key(out, &mut first, "items");
                    write_clean_schema(out, first_item);
                }
            }
            "properties" => {
                if let Some(props) = v.as_object() {
                    key(out, &mut first, "properties");
                    out.push(b'{');
                    for (i, (name, sub)) in props.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_string(out, name);
                        out.push(b':');
                        write_clean_schema(out, sub);
                    }
                    out.push(b'}');
                }
            }
            "format" => {
                if let Some(f) = v.into_string().filter(|f| gemini_format(f)) {
                    key(out, &mut first, "format");
                    write_string(out, f);
                }
            }
            "description" | "title" | "pattern" => {
                if let Some(s) = v.into_string() {
                    key(out, &mut first, k);
                    write_string(out, s);
                }
            }
            "nullable" => {
                if let Some(b) = v.as_bool() {
                    key(out, &mut first, k);
                    out.extend_from_slice(if b { b"true" } else { b"false" });
                }
            }
            "required" | "propertyOrdering" if v.is_array() => {
                key(out, &mut first, k);
                write_value(out, &v);
            }
            "minItems" | "maxItems" | "minimum" | "maximum" | "minLength" | "maxLength"
            | "minProperties" | "maxProperties"
                if v.cast_f64().is_some() =>
            {
                key(out, &mut first, k);
                write_value(out, &v);
            }
            _ => {}
        }
    }
    if nullable && !has_nullable {
        key(out, &mut first, "nullable");
        out.extend_from_slice(b"true");
    }
    out.push(b'}');
}

fn write_schema_list(out: &mut Vec<u8>, first: &mut bool, list: Json<'_>) {
    let Some(items) = list.as_array() else {
        return;
    };
    key(out, first, "anyOf");
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_clean_schema(out, item);
    }
    out.push(b']');
}

/// Gemini's `enum` is a list of strings: other values are written as their
/// JSON text.
fn write_enum<'v>(out: &mut Vec<u8>, values: impl Iterator<Item = Json<'v>>) {
    out.push(b'[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match v.into_string() {
            Some(s) => write_string(out, s),
            None => write_string(out, &json::value_to_string(&v)),
        }
    }
    out.push(b']');
}

// ---------------------------------------------------------------------------
// Response decoding (provider side)
// ---------------------------------------------------------------------------

fn finish_reason(reason: &str) -> StopReason {
    match reason {
        "MAX_TOKENS" => StopReason::MaxTokens,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            StopReason::ContentFilter
        }
        _ => StopReason::EndTurn,
    }
}

fn decode_usage(u: Json<'_>) -> Usage {
    let get = |k: &str, s: &str| field(u, k, s).and_then(|v| v.as_u64());
    let candidates = get("candidatesTokenCount", "candidates_token_count");
    let thoughts = get("thoughtsTokenCount", "thoughts_token_count");
    let output = match (candidates, thoughts) {
        (None, None) => None,
        (c, t) => Some(u32_of(c.unwrap_or(0).saturating_add(t.unwrap_or(0)))),
    };
    Usage {
        input: get("promptTokenCount", "prompt_token_count").map(u32_of),
        output,
        cached: get("cachedContentTokenCount", "cached_content_token_count").map(u32_of),
    }
}

/// A provider-side decode error (the gateway answers 502).
fn bad(field_path: &str, what: &str) -> TranslateError {
    TranslateError::wrong_type(field_path, what)
}

/// Decodes a Gemini `generateContent` response body.
pub fn decode_response<'a>(root: Json<'a>) -> Result<Response<'a>, TranslateError> {
    if !root.is_object() {
        return Err(TranslateError::new(
            "the response body must be a JSON object",
        ));
    }
    let top = String::new;
    let mut resp = Response {
        id: Cow::Borrowed(opt_str(root, "responseId", "response_id", &top)?.unwrap_or(DEFAULT_ID)),
        model: Cow::Borrowed(opt_str(root, "modelVersion", "model_version", &top)?.unwrap_or("")),
        ..Response::default()
    };
    if let Some(u) = field(root, "usageMetadata", "usage_metadata") {
        resp.usage = decode_usage(u);
    }
    let candidate = match field(root, "candidates", "candidates") {
        None => None,
        Some(c) => c
            .as_array()
            .ok_or_else(|| bad("candidates", "an array"))?
            .get(0),
    };
    let Some(candidate) = candidate else {
        // No candidate at all: the prompt itself was blocked.
        let blocked = field(root, "promptFeedback", "prompt_feedback")
            .and_then(|f| field(f, "blockReason", "block_reason"))
            .is_some();
        resp.stop = if blocked {
            StopReason::ContentFilter
        } else {
            StopReason::EndTurn
        };
        return Ok(resp);
    };
    let mut calls = 0usize;
    if let Some(content) = field(candidate, "content", "content") {
        if let Some(parts) = field(content, "parts", "parts") {
            let parts = parts
                .as_array()
                .ok_or_else(|| bad("candidates[0].content.parts", "an array"))?;
            for (j, part) in parts.iter().enumerate() {
                decode_response_part(part, j, &mut calls, &mut resp.content)?;
            }
        }
    }
    let base = || "candidates[0]".to_string();
    resp.stop = match opt_str(candidate, "finishReason", "finish_reason", &base)? {
        Some(r) => match finish_reason(r) {
            StopReason::EndTurn if calls > 0 => StopReason::ToolUse,
            s => s,
        },
        None if calls > 0 => StopReason::ToolUse,
        None => StopReason::EndTurn,
    };
    Ok(resp)
}

fn decode_response_part<'a>(
    part: Json<'a>,
    j: usize,
    calls: &mut usize,
    out: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let base = || format!("candidates[0].content.parts[{j}]");
    if !part.is_object() {
        return Err(bad(&base(), "an object"));
    }
    let signature = opt_str(part, "thoughtSignature", "thought_signature", &base)?;
    if let Some(t) = field(part, "text", "text") {
        let text = t
            .into_string()
            .ok_or_else(|| bad(&path(&base(), "text"), "a string"))?;
        if opt_bool(part, "thought", "thought") {
            push_thought(out, text, signature);
        } else {
            push_signature(out, signature);
            out.push(Part::Text(Cow::Borrowed(text)));
        }
    } else if let Some(call) = field(part, "functionCall", "function_call") {
        let base = || path(&base(), "functionCall");
        let name = opt_str(call, "name", "name", &base)?
            .ok_or_else(|| TranslateError::missing(&path(&base(), "name")))?;
        let id = match opt_str(call, "id", "id", &base)? {
            Some(id) if !id.is_empty() => Cow::Borrowed(id),
            _ => Cow::Owned(format!("call_{calls}")),
        };
        *calls += 1;
        let arguments = match field(call, "args", "args") {
            Some(args) => Cow::Owned(json::value_to_string(&args)),
            None => Cow::Borrowed("{}"),
        };
        push_signature(out, signature);
        out.push(Part::ToolCall(ToolCall {
            id,
            name: Cow::Borrowed(name),
            arguments,
        }));
    } else {
        // Images, executable code...: no place in a Response. A signature
        // on them is kept so the conversation can be replayed.
        push_signature(out, signature);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Response encoding (client side)
// ---------------------------------------------------------------------------

fn finish_reason_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
        StopReason::EndTurn | StopReason::StopSequence | StopReason::ToolUse => "STOP",
    }
}

fn write_usage(out: &mut Vec<u8>, u: &Usage) {
    let input = u64::from(u.input.unwrap_or(0));
    let output = u64::from(u.output.unwrap_or(0));
    out.extend_from_slice(br#","usageMetadata":{"promptTokenCount":"#);
    write_u64(out, input);
    out.extend_from_slice(br#","candidatesTokenCount":"#);
    write_u64(out, output);
    out.extend_from_slice(br#","totalTokenCount":"#);
    write_u64(out, input + output);
    if let Some(c) = u.cached {
        out.extend_from_slice(br#","cachedContentTokenCount":"#);
        write_u64(out, u64::from(c));
    }
    out.push(b'}');
}

/// `,"modelVersion":..,"responseId":..}`: the end of every response object.
fn write_response_tail(out: &mut Vec<u8>, model: &str, id: &str) {
    out.extend_from_slice(br#","modelVersion":"#);
    write_string(out, model);
    out.extend_from_slice(br#","responseId":"#);
    write_string(out, id);
    out.push(b'}');
}

fn write_text_part(out: &mut Vec<u8>, text: &str, thought: bool, sig: Option<&str>) {
    out.extend_from_slice(br#"{"text":"#);
    write_string(out, text);
    if thought {
        out.extend_from_slice(br#","thought":true"#);
    }
    write_signature(out, sig);
    out.push(b'}');
}

fn write_call_part(
    out: &mut Vec<u8>,
    tc: &ToolCall<'_>,
    sig: Option<&str>,
    check: &mut ObjectCheck,
) {
    out.extend_from_slice(br#"{"functionCall":"#);
    write_call_body(out, tc, check);
    out.extend_from_slice(br#","id":"#);
    write_string(out, &tc.id);
    out.push(b'}');
    write_signature(out, sig);
    out.push(b'}');
}

/// Encodes a complete answer as a Gemini `GenerateContentResponse`.
pub fn encode_response(resp: &Response<'_>, _opts: &EncodeOptions, out: &mut Vec<u8>) {
    let mut check = ObjectCheck::default();
    out.extend_from_slice(br#"{"candidates":[{"content":{"role":"model","parts":["#);
    let mut n = 0;
    let mut sig: Option<&str> = None;
    let sep = |out: &mut Vec<u8>, n: &mut usize| {
        if *n > 0 {
            out.push(b',');
        }
        *n += 1;
    };
    for part in &resp.content {
        match part {
            Part::Text(t) => {
                sep(out, &mut n);
                write_text_part(out, t, false, sig.take());
            }
            Part::Thinking { text, signature } => match signature {
                Some(s) if text.is_empty() => sig = Some(s),
                None if text.is_empty() => {}
                _ => {
                    sep(out, &mut n);
                    write_text_part(out, text, true, signature.as_deref());
                }
            },
            Part::ToolCall(tc) => {
                sep(out, &mut n);
                write_call_part(out, tc, sig.take(), &mut check);
            }
            _ => {}
        }
    }
    if n == 0 || sig.is_some() {
        sep(out, &mut n);
        write_text_part(out, "", false, sig);
    }
    out.extend_from_slice(br#"]},"finishReason":"#);
    write_string(out, finish_reason_name(resp.stop));
    out.extend_from_slice(br#","index":0}]"#);
    write_usage(out, &resp.usage);
    write_response_tail(out, &resp.model, &resp.id);
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

fn kind_of_status_name(name: &str) -> Option<ErrorKind> {
    Some(match name {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorKind::InvalidRequest,
        "UNAUTHENTICATED" => ErrorKind::Authentication,
        "PERMISSION_DENIED" => ErrorKind::PermissionDenied,
        "NOT_FOUND" => ErrorKind::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorKind::RateLimited,
        "UNAVAILABLE" => ErrorKind::Overloaded,
        "DEADLINE_EXCEEDED" => ErrorKind::Timeout,
        "INTERNAL" | "UNKNOWN" => ErrorKind::Api,
        _ => return None,
    })
}

fn status_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "INVALID_ARGUMENT",
        ErrorKind::Authentication => "UNAUTHENTICATED",
        ErrorKind::PermissionDenied => "PERMISSION_DENIED",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
        ErrorKind::Overloaded => "UNAVAILABLE",
        ErrorKind::Timeout => "DEADLINE_EXCEEDED",
        ErrorKind::Api => "INTERNAL",
    }
}

/// The ErrorInfo of a Gemini `{"error":{code,message,status}}` object;
/// `status` is the HTTP status to report, `None` to take the error's code.
fn error_of(err: Json<'_>, status: Option<u16>) -> Option<ErrorInfo> {
    if !err.is_object() {
        return None;
    }
    let status = status.unwrap_or_else(|| {
        err.get("code")
            .and_then(|c| c.as_u64())
            .filter(|c| (400..600).contains(c))
            .map_or(502, |c| c as u16)
    });
    let kind = err
        .get("status")
        .and_then(|s| s.into_string())
        .and_then(kind_of_status_name)
        .unwrap_or_else(|| ErrorKind::of_status(status));
    let message = err
        .get("message")
        .and_then(|m| m.into_string())
        .unwrap_or("the provider reported an error")
        .to_string();
    Some(ErrorInfo {
        status,
        kind,
        message,
    })
}

/// Decodes an upstream error body. Never fails: a body that is not Gemini's
/// error JSON becomes its own text (at most 500 characters).
pub fn decode_error(status: u16, body: &mut [u8], buffers: &mut Buffers) -> ErrorInfo {
    // The parse works in place and may leave the body changed: take the
    // fallback text first (errors are rare; the copy is small).
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let fallback: String = match text.char_indices().nth(500) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    };
    if let Ok(tape) = json::parse(body, buffers) {
        let root = tape.as_value();
        // Streaming (JSON array) endpoints wrap it: [{"error":{...}}].
        let obj = match root.as_array() {
            Some(a) => a.get(0),
            None => Some(root),
        };
        if let Some(info) = obj
            .and_then(|o| o.get("error"))
            .and_then(|e| error_of(e, Some(status)))
        {
            return info;
        }
    }
    let message = if fallback.is_empty() {
        format!("the provider answered with HTTP status {status}")
    } else {
        fallback
    };
    ErrorInfo::new(status, message)
}

fn write_error_object(err: &ErrorInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"error":{"code":"#);
    write_u64(out, u64::from(err.status));
    out.extend_from_slice(br#","message":"#);
    write_string(out, &err.message);
    out.extend_from_slice(br#","status":"#);
    write_string(out, status_name(err.kind));
    out.extend_from_slice(b"}}");
}

/// Encodes an error as Gemini's error body.
pub fn encode_error(err: &ErrorInfo, out: &mut Vec<u8>) {
    write_error_object(err, out);
}

// ---------------------------------------------------------------------------
// Stream decoding (provider side)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum OpenBlock {
    #[default]
    None,
    Text,
    Thinking,
}

/// Turns Gemini's `?alt=sse` stream (each event a whole
/// `GenerateContentResponse` chunk) into IR stream events.
///
/// Text and thought text of consecutive chunks extend one open block; a
/// function call arrives whole in one part, so it becomes a complete block
/// (start, one arguments delta, stop) at once.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    next_index: u32,
    open: OpenBlock,
    /// The finish reason seen, if any: the stream is complete.
    finish: Option<StopReason>,
    calls: usize,
    usage: Usage,
    done: bool,
}

fn stream_error(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(502, message)
}

impl StreamDecoder {
    /// A decoder for one upstream stream.
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    fn close(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        if self.open != OpenBlock::None {
            emit(StreamEvent::BlockStop {
                index: self.next_index - 1,
            });
            self.open = OpenBlock::None;
        }
    }

    fn start_block(&mut self, block: BlockKind<'_>, emit: &mut dyn FnMut(StreamEvent<'_>)) -> u32 {
        self.close(emit);
        let index = self.next_index;
        self.next_index += 1;
        emit(StreamEvent::BlockStart { index, block });
        index
    }

    /// Makes `kind` the open block, opening it if needed; returns its index.
    fn ensure(&mut self, kind: OpenBlock, emit: &mut dyn FnMut(StreamEvent<'_>)) -> u32 {
        if self.open != kind {
            let block = match kind {
                OpenBlock::Thinking => BlockKind::Thinking,
                _ => BlockKind::Text,
            };
            self.start_block(block, emit);
            self.open = kind;
        }
        self.next_index - 1
    }

    /// A signature of a non-thought part: an empty thinking block of its own.
    fn signature_block(&mut self, sig: &str, emit: &mut dyn FnMut(StreamEvent<'_>)) {
        let index = self.start_block(BlockKind::Thinking, emit);
        emit(StreamEvent::Delta {
            index,
            delta: Delta::Signature(Cow::Borrowed(sig)),
        });
        emit(StreamEvent::BlockStop { index });
    }

    /// Handles one SSE event (one `GenerateContentResponse` chunk).
    pub fn event(
        &mut self,
        event: Event<'_>,
        buffers: &mut Buffers,
        emit: &mut dyn FnMut(StreamEvent<'_>),
    ) -> Result<(), ErrorInfo> {
        if event.data.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let tape = json::parse(event.data, buffers)
            .map_err(|e| stream_error(format!("the provider sent a malformed event: {e}")))?;
        let root = tape.as_value();
        if !root.is_object() {
            return Err(stream_error(
                "the provider sent an event that is not a JSON object",
            ));
        }
        if let Some(err) = root.get("error") {
            return Err(error_of(err, None)
                .unwrap_or_else(|| stream_error("the provider sent a malformed error event")));
        }
        if self.done {
            return Ok(());
        }
        if !self.started {
            self.started = true;
            let id = field(root, "responseId", "response_id")
                .and_then(|v| v.into_string())
                .unwrap_or(DEFAULT_ID);
            let model = field(root, "modelVersion", "model_version")
                .and_then(|v| v.into_string())
                .unwrap_or("");
            emit(StreamEvent::Start {
                id: Cow::Borrowed(id),
                model: Cow::Borrowed(model),
                input_tokens: None,
            });
        }
        if let Some(u) = field(root, "usageMetadata", "usage_metadata") {
            self.usage = decode_usage(u);
        }
        let candidate = match field(root, "candidates", "candidates") {
            None => None,
            Some(c) => c
                .as_array()
                .ok_or_else(|| stream_error("`candidates` in a stream event must be an array"))?
                .get(0),
        };
        let Some(candidate) = candidate else {
            if field(root, "promptFeedback", "prompt_feedback")
                .and_then(|f| field(f, "blockReason", "block_reason"))
                .is_some()
            {
                self.finish = Some(StopReason::ContentFilter);
            }
            return Ok(());
        };
        if let Some(parts) =
            field(candidate, "content", "content").and_then(|c| field(c, "parts", "parts"))
        {
            let parts = parts.as_array().ok_or_else(|| {
                stream_error("`candidates[0].content.parts` in a stream event must be an array")
            })?;
            for part in parts.iter() {
                self.part(part, emit)?;
            }
        }
        if let Some(reason) =
            field(candidate, "finishReason", "finish_reason").and_then(|r| r.into_string())
        {
            self.finish = Some(finish_reason(reason));
        }
        Ok(())
    }

    fn part(
        &mut self,
        part: Json<'_>,
        emit: &mut dyn FnMut(StreamEvent<'_>),
    ) -> Result<(), ErrorInfo> {
        if !part.is_object() {
            return Err(stream_error("a part in a stream event is not an object"));
        }
        let sig =
            field(part, "thoughtSignature", "thought_signature").and_then(|s| s.into_string());
        if let Some(t) = field(part, "text", "text") {
            let text = t
                .into_string()
                .ok_or_else(|| stream_error("a part's `text` in a stream event is not a string"))?;
            if opt_bool(part, "thought", "thought") {
                let index = self.ensure(OpenBlock::Thinking, emit);
                if !text.is_empty() {
                    emit(StreamEvent::Delta {
                        index,
                        delta: Delta::Thinking(Cow::Borrowed(text)),
                    });
                }
                if let Some(sig) = sig {
                    emit(StreamEvent::Delta {
                        index,
                        delta: Delta::Signature(Cow::Borrowed(sig)),
                    });
                }
            } else {
                if let Some(sig) = sig {
                    self.signature_block(sig, emit);
                }
                if !text.is_empty() {
                    let index = self.ensure(OpenBlock::Text, emit);
                    emit(StreamEvent::Delta {
                        index,
                        delta: Delta::Text(Cow::Borrowed(text)),
                    });
                }
            }
        } else if let Some(call) = field(part, "functionCall", "function_call") {
            let name = field(call, "name", "name")
                .and_then(|n| n.into_string())
                .ok_or_else(|| stream_error("a `functionCall` in a stream event has no name"))?;
            if let Some(sig) = sig {
                self.signature_block(sig, emit);
            }
            let id = match field(call, "id", "id").and_then(|i| i.into_string()) {
                Some(id) if !id.is_empty() => Cow::Borrowed(id),
                _ => Cow::Owned(format!("call_{}", self.calls)),
            };
            self.calls += 1;
            let index = self.start_block(
                BlockKind::ToolCall {
                    id,
                    name: Cow::Borrowed(name),
                },
                emit,
            );
            let arguments = match field(call, "args", "args") {
                Some(args) => Cow::Owned(json::value_to_string(&args)),
                None => Cow::Borrowed("{}"),
            };
            emit(StreamEvent::Delta {
                index,
                delta: Delta::ToolArguments(arguments),
            });
            emit(StreamEvent::BlockStop { index });
        } else if let Some(sig) = sig {
            self.signature_block(sig, emit);
        }
        Ok(())
    }

    /// The upstream body ended: complete if a finish reason was seen.
    pub fn finish(&mut self, emit: &mut dyn FnMut(StreamEvent<'_>)) -> Result<(), ErrorInfo> {
        if self.done {
            return Ok(());
        }
        let Some(stop) = self.finish.filter(|_| self.started) else {
            return Err(stream_error(
                "the provider's stream ended before the answer was complete",
            ));
        };
        self.close(emit);
        self.done = true;
        let stop = match stop {
            StopReason::EndTurn if self.calls > 0 => StopReason::ToolUse,
            s => s,
        };
        emit(StreamEvent::Finish {
            stop,
            usage: self.usage,
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Stream encoding (client side)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum EncBlock {
    #[default]
    None,
    Text,
    Thinking {
        had_text: bool,
    },
    Tool,
    /// A block Gemini cannot show (redacted thinking).
    Hidden,
}

/// Writes IR stream events as Gemini stream chunks: server-sent events, or
/// (`json_array`) the elements of one JSON array sent in pieces.
#[derive(Default)]
pub struct StreamEncoder {
    opts: EncodeOptions,
    id: String,
    model: String,
    /// Chunks written so far (array separators).
    chunks: usize,
    block: EncBlock,
    tool_id: String,
    tool_name: String,
    tool_args: String,
    /// A signature waiting for the next part it belongs on.
    sig: Option<String>,
    check: ObjectCheck,
    /// An error was written: nothing may follow.
    closed: bool,
}

impl StreamEncoder {
    /// An encoder for one client stream.
    pub fn new(opts: EncodeOptions) -> Self {
        StreamEncoder {
            opts,
            id: DEFAULT_ID.to_string(),
            ..StreamEncoder::default()
        }
    }

    fn begin_chunk(&mut self, out: &mut Vec<u8>) {
        if self.opts.json_array {
            out.extend_from_slice(if self.chunks == 0 { b"[" } else { b",\r\n" });
        } else {
            sse::begin_event(out, None);
        }
        self.chunks += 1;
    }

    fn end_chunk(&self, out: &mut Vec<u8>) {
        if !self.opts.json_array {
            sse::end_event(out);
        }
    }

    /// Opens a chunk up to the start of its parts array.
    fn chunk_head(&mut self, out: &mut Vec<u8>) {
        self.begin_chunk(out);
        out.extend_from_slice(br#"{"candidates":[{"content":{"role":"model","parts":["#);
    }

    /// Closes a chunk opened with `chunk_head`.
    fn chunk_tail(&self, out: &mut Vec<u8>, finish: Option<(StopReason, &Usage)>) {
        out.extend_from_slice(b"]}");
        if let Some((stop, _)) = finish {
            out.extend_from_slice(br#","finishReason":"#);
            write_string(out, finish_reason_name(stop));
        }
        out.extend_from_slice(br#","index":0}]"#);
        if let Some((_, usage)) = finish {
            write_usage(out, usage);
        }
        write_response_tail(out, &self.model, &self.id);
        self.end_chunk(out);
    }

    fn text_chunk(&mut self, out: &mut Vec<u8>, text: &str, thought: bool, sig: Option<&str>) {
        self.chunk_head(out);
        write_text_part(out, text, thought, sig);
        self.chunk_tail(out, None);
    }

    /// Writes a waiting signature as a part of its own.
    fn flush_signature(&mut self, out: &mut Vec<u8>) {
        if let Some(sig) = self.sig.take() {
            self.text_chunk(out, "", true, Some(&sig));
        }
    }

    /// Appends the bytes for one IR event.
    pub fn event(&mut self, ev: &StreamEvent<'_>, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, .. } => {
                self.id.clear();
                self.id.push_str(id);
                self.model.clear();
                self.model.push_str(model);
            }
            StreamEvent::BlockStart { block, .. } => {
                self.block = match block {
                    BlockKind::Text => EncBlock::Text,
                    BlockKind::Thinking => {
                        // A signature left by a signature-only block belongs
                        // before this thinking, not on it.
                        self.flush_signature(out);
                        EncBlock::Thinking { had_text: false }
                    }
                    BlockKind::RedactedThinking(_) => EncBlock::Hidden,
                    BlockKind::ToolCall { id, name } => {
                        self.tool_id.clear();
                        self.tool_id.push_str(id);
                        self.tool_name.clear();
                        self.tool_name.push_str(name);
                        self.tool_args.clear();
                        EncBlock::Tool
                    }
                };
            }
            StreamEvent::Delta { delta, .. } => match (delta, self.block) {
                (Delta::Text(t), EncBlock::Text) if !t.is_empty() => {
                    let sig = self.sig.take();
                    self.text_chunk(out, t, false, sig.as_deref());
                }
                (Delta::Thinking(t), EncBlock::Thinking { .. }) if !t.is_empty() => {
                    self.block = EncBlock::Thinking { had_text: true };
                    self.text_chunk(out, t, true, None);
                }
                (Delta::Signature(s), EncBlock::Thinking { .. }) => {
                    self.sig = Some(s.to_string());
                }
                (Delta::ToolArguments(a), EncBlock::Tool) => self.tool_args.push_str(a),
                _ => {}
            },
            StreamEvent::BlockStop { .. } => {
                match self.block {
                    // A thinking block with text keeps its signature on a
                    // thought part; an empty one hands it to the next part.
                    EncBlock::Thinking { had_text: true } => self.flush_signature(out),
                    EncBlock::Tool => {
                        let sig = self.sig.take();
                        self.chunk_head(out);
                        let tc = ToolCall {
                            id: Cow::Borrowed(&self.tool_id),
                            name: Cow::Borrowed(&self.tool_name),
                            arguments: Cow::Borrowed(&self.tool_args),
                        };
                        write_call_part(out, &tc, sig.as_deref(), &mut self.check);
                        self.chunk_tail(out, None);
                    }
                    _ => {}
                }
                self.block = EncBlock::None;
            }
            StreamEvent::Finish { stop, usage } => {
                let sig = self.sig.take();
                self.chunk_head(out);
                write_text_part(out, "", false, sig.as_deref());
                self.chunk_tail(out, Some((*stop, usage)));
            }
        }
    }

    /// The stream completed: closes the JSON array (SSE needs nothing).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.opts.json_array {
            out.extend_from_slice(if self.chunks == 0 { b"[]" } else { b"]" });
        }
    }

    /// The stream failed: writes Gemini's error object as the last event
    /// (array: the last element, then the closing bracket).
    pub fn error(&mut self, err: &ErrorInfo, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.begin_chunk(out);
        write_error_object(err, out);
        if self.opts.json_array {
            out.push(b']');
        } else {
            sse::end_event(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Parses `text` and runs `f` on the tape's root value.
    fn with_tape<R>(text: &str, f: impl FnOnce(Json<'_>) -> R) -> R {
        let mut body = text.as_bytes().to_vec();
        let mut buffers = Buffers::default();
        let tape = json::parse(&mut body, &mut buffers).unwrap();
        f(tape.as_value())
    }

    fn as_json(out: &[u8]) -> Value {
        serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
    }

    fn encode_req(req: &Request<'_>) -> Value {
        let mut out = Vec::new();
        encode_request(req, &mut out);
        as_json(&out)
    }

    fn text<'a>(s: &'a str) -> Part<'a> {
        Part::Text(Cow::Borrowed(s))
    }

    // --- decode_request -------------------------------------------------

    #[test]
    fn decodes_a_full_request() {
        let body = r#"{
          "systemInstruction": {"parts": [{"text": "You are terse."}]},
          "contents": [
            {"role": "user", "parts": [
              {"text": "What is in this image, and the weather in Paris?"},
              {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
              {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a.jpg"}}
            ]},
            {"role": "model", "parts": [
              {"text": "Let me think", "thought": true, "thoughtSignature": "c2lnMQ=="},
              {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnMg=="},
              {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
              {"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}}}
            ]},
            {"role": "user", "parts": [
              {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
              {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
              {"functionResponse": {"name": "get_weather", "response": {"error": "no station"}}}
            ]},
            {"parts": [{"executableCode": {"language": "PYTHON", "code": "1"}}]}
          ],
          "tools": [
            {"functionDeclarations": [
              {"name": "get_weather", "description": "Weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}},
              {"name": "get_time", "parametersJsonSchema": {"type": "object"}}
            ]},
            {"googleSearch": {}}
          ],
          "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
          "generationConfig": {
            "maxOutputTokens": 1000, "temperature": 0.5, "topP": 0.9, "topK": 40,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT"},
            "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}
          }
        }"#;
        with_tape(body, |root| {
            let req = decode_request(root).unwrap();
            assert_eq!(req.model, "");
            assert!(!req.stream);
            assert!(matches!(&req.system[..], [Part::Text(t)] if t == "You are terse."));
            assert_eq!(req.messages.len(), 4);

            let user = &req.messages[0];
            assert_eq!(user.role, Role::User);
            assert!(
                matches!(&user.parts[1], Part::Image(Image::Base64 { media_type, data })
                if media_type == "image/png" && data == "iVBORw0KGgo=")
            );
            assert!(
                matches!(&user.parts[2], Part::Image(Image::Url(u)) if u == "https://example.com/a.jpg")
            );

            let model = &req.messages[1];
            assert_eq!(model.role, Role::Assistant);
            assert!(
                matches!(&model.parts[0], Part::Thinking { text, signature: Some(s) }
                if text == "Let me think" && s == "c2lnMQ==")
            );
            // The call's own signature travels as an empty thinking part.
            assert!(
                matches!(&model.parts[1], Part::Thinking { text, signature: Some(s) }
                if text.is_empty() && s == "c2lnMg==")
            );
            let calls: Vec<_> = model
                .parts
                .iter()
                .filter_map(|p| match p {
                    Part::ToolCall(tc) => Some((&*tc.id, &*tc.name, &*tc.arguments)),
                    _ => None,
                })
                .collect();
            assert_eq!(
                calls,
                vec![
                    ("call_0", "get_weather", r#"{"city":"Paris"}"#),
                    ("call_1", "get_time", r#"{"tz":"CET"}"#),
                    ("call_2", "get_weather", r#"{"city":"Lyon"}"#),
                ]
            );

            let results: Vec<_> = req.messages[2]
                .parts
                .iter()
                .map(|p| match p {
                    Part::ToolResult(tr) => {
                        let Part::Text(t) = &tr.content[0] else {
                            panic!()
                        };
                        (&*tr.call_id, tr.name.as_deref().unwrap(), &**t, tr.is_error)
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(
                results,
                vec![
                    ("call_0", "get_weather", r#"{"temp":21}"#, false),
                    ("call_1", "get_time", "12:00", false),
                    ("call_2", "get_weather", "no station", true),
                ]
            );
            // Unknown part kinds are kept raw; a missing role is user.
            assert_eq!(req.messages[3].role, Role::User);
            assert!(matches!(
                &req.messages[3].parts[0],
                Part::Raw {
                    dialect: Dialect::Gemini,
                    ..
                }
            ));

            assert_eq!(req.tools.len(), 2);
            assert_eq!(req.tools[0].description.as_deref(), Some("Weather"));
            assert!(req.tools[0].parameters.is_some() && req.tools[1].parameters.is_some());
            assert_eq!(
                req.tool_choice,
                Some(ToolChoice::Tool(Cow::Borrowed("get_weather")))
            );
            assert_eq!(req.max_tokens, Some(1000));
            assert_eq!(req.temperature, Some(0.5));
            assert_eq!(req.top_p, Some(0.9));
            assert_eq!(req.top_k, Some(40));
            assert_eq!(req.stop, vec![Cow::Borrowed("END")]);
            assert!(
                matches!(&req.response_format, Some(ResponseFormat::JsonSchema { name, .. }) if name == "response")
            );
            assert_eq!(
                req.thinking,
                Some(Thinking {
                    budget_tokens: Some(2048),
                    effort: None
                })
            );
        });
    }

    #[test]
    fn decodes_snake_case_and_given_ids() {
        let body = r#"{
          "system_instruction": "Be nice",
          "contents": [
            {"role": "model", "parts": [{"function_call": {"id": "abc", "name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"function_response": {"name": "f", "response": {"ok": true}}}]}
          ],
          "tool_config": {"function_calling_config": {"mode": "NONE"}},
          "generation_config": {"max_output_tokens": 5, "response_mime_type": "application/json",
                                "thinking_config": {"thinking_budget": 0}}
        }"#;
        with_tape(body, |root| {
            let req = decode_request(root).unwrap();
            assert!(matches!(&req.system[..], [Part::Text(t)] if t == "Be nice"));
            let Part::ToolCall(tc) = &req.messages[0].parts[0] else {
                panic!()
            };
            assert_eq!(tc.id, "abc");
            let Part::ToolResult(tr) = &req.messages[1].parts[0] else {
                panic!()
            };
            assert_eq!(
                tr.call_id, "abc",
                "an id-less response answers the open call"
            );
            assert_eq!(req.tool_choice, Some(ToolChoice::None));
            assert_eq!(req.max_tokens, Some(5));
            assert!(matches!(
                req.response_format,
                Some(ResponseFormat::JsonObject)
            ));
            assert_eq!(req.thinking, None, "a zero budget turns thinking off");
        });
    }

    #[test]
    fn joins_streamed_thought_parts_into_one_signed_block() {
        let body = r#"{"contents":[{"role":"model","parts":[
            {"text":"step 1, ","thought":true},{"text":"step 2","thought":true},
            {"text":"","thought":true,"thoughtSignature":"U0lH"},{"text":"Answer"}]}]}"#;
        with_tape(body, |root| {
            let req = decode_request(root).unwrap();
            let parts = &req.messages[0].parts;
            assert_eq!(parts.len(), 2);
            assert!(
                matches!(&parts[0], Part::Thinking { text, signature: Some(s) }
                if text == "step 1, step 2" && s == "U0lH")
            );
        });
    }

    #[test]
    fn rejects_malformed_requests_naming_the_field() {
        let cases = [
            ("[]", "JSON object"),
            ("{}", "`contents` is required"),
            (r#"{"contents": {}}"#, "`contents` must be an array"),
            (r#"{"contents": [1]}"#, "`contents[0]` must be an object"),
            (
                r#"{"contents": [{"role": "bot", "parts": []}]}"#,
                "`contents[0].role`",
            ),
            (
                r#"{"contents": [{"parts": "hi"}]}"#,
                "`contents[0].parts` must be an array",
            ),
            (
                r#"{"contents": [{"parts": [{"text": 5}]}]}"#,
                "`contents[0].parts[0].text` must be a string",
            ),
            (
                r#"{"contents": [{"parts": [{"functionCall": {"args": {}}}]}]}"#,
                "`contents[0].parts[0].functionCall.name` is required",
            ),
            (
                r#"{"contents": [{"parts": [{"inlineData": {"data": "x"}}]}]}"#,
                "`contents[0].parts[0].inlineData.mimeType` is required",
            ),
            (
                r#"{"contents": [], "tools": [{"functionDeclarations": [{}]}]}"#,
                "`tools[0].functionDeclarations[0].name` is required",
            ),
            (
                r#"{"contents": [], "generationConfig": {"temperature": "hot"}}"#,
                "`generationConfig.temperature` must be a number",
            ),
            (
                r#"{"contents": [], "generationConfig": {"maxOutputTokens": -1}}"#,
                "`generationConfig.maxOutputTokens`",
            ),
            (
                r#"{"contents": [], "generationConfig": {"stopSequences": [1]}}"#,
                "`generationConfig.stopSequences[0]` must be a string",
            ),
            (
                r#"{"contents": [], "systemInstruction": 3}"#,
                "`systemInstruction` must be",
            ),
        ];
        for (body, want) in cases {
            with_tape(body, |root| {
                let err = decode_request(root).unwrap_err();
                assert!(err.message.contains(want), "{body}: {err}");
            });
        }
    }

    // --- encode_request -------------------------------------------------

    #[test]
    fn encodes_a_request_merging_roles_and_naming_results() {
        with_tape(
            r##"{"schema": {"$schema": "x", "type": "object", "additionalProperties": false,
                 "properties": {
                   "city": {"type": ["string", "null"], "description": "City", "default": "Paris", "format": "uri"},
                   "unit": {"const": "c"},
                   "type": {"type": "string", "enum": ["a", 1]},
                   "tags": {"type": "array", "items": {"type": "string", "examples": ["x"]}, "minItems": 1},
                   "any": {"oneOf": [{"type": "integer", "exclusiveMinimum": 0}, {"$ref": "#/x"}]}
                 },
                 "required": ["city"]},
               "empty": {"type": "object", "properties": {}},
               "answer": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}}"##,
            |root| {
                let req = Request {
                    system: vec![text("Be brief."), text("")],
                    messages: vec![
                        Message {
                            role: Role::User,
                            parts: vec![text("Weather?")],
                        },
                        Message {
                            role: Role::User,
                            parts: vec![Part::Image(Image::Url(Cow::Borrowed(
                                "https://x.test/p.PNG?s=1",
                            )))],
                        },
                        Message {
                            role: Role::Assistant,
                            parts: vec![
                                Part::Thinking {
                                    text: Cow::Borrowed("unsigned"),
                                    signature: None,
                                },
                                text("Checking."),
                                Part::ToolCall(ToolCall {
                                    id: Cow::Borrowed("toolu_1"),
                                    name: Cow::Borrowed("get_weather"),
                                    arguments: Cow::Borrowed(" {\"city\": \"Paris\"} "),
                                }),
                                Part::ToolCall(ToolCall {
                                    id: Cow::Borrowed("toolu_2"),
                                    name: Cow::Borrowed("get_weather"),
                                    arguments: Cow::Borrowed("{broken"),
                                }),
                            ],
                        },
                        // Nothing Gemini can take: no empty content is left.
                        Message {
                            role: Role::User,
                            parts: vec![Part::RedactedThinking(Cow::Borrowed("x"))],
                        },
                        Message {
                            role: Role::User,
                            parts: vec![
                                Part::ToolResult(ToolResult {
                                    call_id: Cow::Borrowed("toolu_1"),
                                    name: None,
                                    content: vec![text("{\"temp\": 21}")],
                                    is_error: false,
                                }),
                                Part::ToolResult(ToolResult {
                                    call_id: Cow::Borrowed("toolu_2"),
                                    name: None,
                                    content: vec![
                                        text("bad"),
                                        text("args"),
                                        Part::Image(Image::Base64 {
                                            media_type: Cow::Borrowed("image/png"),
                                            data: Cow::Borrowed("AAA="),
                                        }),
                                    ],
                                    is_error: true,
                                }),
                                Part::ToolResult(ToolResult {
                                    call_id: Cow::Borrowed("nope"),
                                    name: None,
                                    content: vec![],
                                    is_error: false,
                                }),
                            ],
                        },
                        Message {
                            role: Role::User,
                            parts: vec![text("Thanks")],
                        },
                    ],
                    tools: vec![
                        Tool {
                            name: Cow::Borrowed("get_weather"),
                            description: Some(Cow::Borrowed("Weather")),
                            parameters: root.get("schema"),
                            strict: Some(true),
                        },
                        Tool {
                            name: Cow::Borrowed("noop"),
                            description: None,
                            parameters: root.get("empty"),
                            strict: None,
                        },
                    ],
                    tool_choice: Some(ToolChoice::Tool(Cow::Borrowed("get_weather"))),
                    max_tokens: Some(100),
                    temperature: Some(0.2),
                    top_p: Some(0.95),
                    top_k: Some(3),
                    stop: (0..7).map(|_| Cow::Borrowed("S")).collect(),
                    response_format: Some(ResponseFormat::JsonSchema {
                        name: Cow::Borrowed("answer"),
                        schema: root.get("answer").unwrap(),
                        strict: Some(true),
                    }),
                    thinking: Some(Thinking {
                        budget_tokens: None,
                        effort: Some(Effort::High),
                    }),
                    model: Cow::Borrowed("gemini-2.5-pro"),
                    ..Request::default()
                };
                let got = encode_req(&req);
                assert_eq!(
                    got,
                    json!({
                      "contents": [
                        {"role": "user", "parts": [
                          {"text": "Weather?"},
                          {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/p.PNG?s=1"}}
                        ]},
                        {"role": "model", "parts": [
                          {"text": "Checking."},
                          {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                           "thoughtSignature": SKIP_SIGNATURE},
                          {"functionCall": {"name": "get_weather", "args": {}}}
                        ]},
                        {"role": "user", "parts": [
                          {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                          {"functionResponse": {"name": "get_weather", "response": {"error": "bad\nargs"}}},
                          {"inlineData": {"mimeType": "image/png", "data": "AAA="}},
                          {"functionResponse": {"name": "unknown", "response": {"result": ""}}},
                          {"text": "Thanks"}
                        ]}
                      ],
                      "systemInstruction": {"parts": [{"text": "Be brief."}]},
                      "tools": [{"functionDeclarations": [
                        {"name": "get_weather", "description": "Weather", "parameters": {
                          "type": "object",
                          "properties": {
                            "city": {"type": "string", "description": "City", "nullable": true},
                            "unit": {"type": "string", "enum": ["c"]},
                            "type": {"type": "string", "enum": ["a", "1"]},
                            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            "any": {"anyOf": [{"type": "integer"}, {}]}
                          },
                          "required": ["city"]
                        }},
                        {"name": "noop"}
                      ]}],
                      "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
                      "generationConfig": {
                        "maxOutputTokens": 100, "temperature": 0.2, "topP": 0.95, "topK": 3,
                        "stopSequences": ["S", "S", "S", "S", "S"],
                        "responseMimeType": "application/json",
                        "responseSchema": {"type": "object", "properties": {"a": {"type": "string"}}},
                        "thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": true}
                      }
                    })
                );
            },
        );
    }

    #[test]
    fn signatures_go_back_on_the_parts_they_came_with() {
        let body = r#"{"contents":[
            {"role":"user","parts":[{"text":"hi"}]},
            {"role":"model","parts":[
              {"text":"plan","thought":true,"thoughtSignature":"VA=="},
              {"functionCall":{"name":"f","args":{"a":1}},"thoughtSignature":"Rg=="},
              {"functionCall":{"name":"g","args":{}}}]},
            {"role":"user","parts":[{"functionResponse":{"name":"f","response":{"result":"1"}}},
                                    {"functionResponse":{"name":"g","response":{"result":"2"}}}]}]}"#;
        with_tape(body, |root| {
            let req = decode_request(root).unwrap();
            let got = encode_req(&req);
            assert_eq!(
                got["contents"][1],
                json!({"role": "model", "parts": [
                    {"text": "plan", "thought": true, "thoughtSignature": "VA=="},
                    {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "Rg=="},
                    {"functionCall": {"name": "g", "args": {}}}
                ]})
            );
            assert_eq!(
                got["contents"][2]["parts"][1],
                json!({"functionResponse": {"name": "g", "response": {"result": "2"}}})
            );
            assert!(got.get("generationConfig").is_none());
            assert!(got.get("systemInstruction").is_none());
            assert!(got.get("tools").is_none());
        });
    }

    #[test]
    fn a_signature_at_the_end_of_a_turn_stays_there() {
        let req = Request {
            messages: vec![Message {
                role: Role::Assistant,
                parts: vec![
                    text("Hello"),
                    Part::Thinking {
                        text: Cow::Borrowed(""),
                        signature: Some(Cow::Borrowed("RQ==")),
                    },
                ],
            }],
            ..Request::default()
        };
        assert_eq!(
            encode_req(&req)["contents"],
            json!([{"role": "model", "parts": [{"text": "Hello"}, {"text": "", "thoughtSignature": "RQ=="}]}])
        );
    }

    #[test]
    fn tool_choice_modes() {
        for (choice, want) in [
            (ToolChoice::Auto, json!({"mode": "AUTO"})),
            (ToolChoice::None, json!({"mode": "NONE"})),
            (ToolChoice::Required, json!({"mode": "ANY"})),
        ] {
            let req = Request {
                tools: vec![Tool {
                    name: Cow::Borrowed("t"),
                    description: None,
                    parameters: None,
                    strict: None,
                }],
                tool_choice: Some(choice),
                ..Request::default()
            };
            assert_eq!(
                encode_req(&req)["toolConfig"]["functionCallingConfig"],
                want
            );
        }
    }

    // --- responses ------------------------------------------------------

    #[test]
    fn decodes_a_response_with_thinking_and_calls() {
        let body = r#"{
          "candidates": [{
            "content": {"role": "model", "parts": [
              {"text": "**Planning**", "thought": true},
              {"text": "I'll check."},
              {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lH"},
              {"functionCall": {"id": "given", "name": "get_time"}}
            ]},
            "finishReason": "STOP", "index": 0
          }],
          "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
                            "cachedContentTokenCount": 4, "totalTokenCount": 22},
          "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"
        }"#;
        with_tape(body, |root| {
            let resp = decode_response(root).unwrap();
            assert_eq!(resp.id, "resp-1");
            assert_eq!(resp.model, "gemini-2.5-flash");
            assert_eq!(resp.stop, StopReason::ToolUse);
            assert_eq!(
                resp.usage,
                Usage {
                    input: Some(10),
                    output: Some(12),
                    cached: Some(4)
                }
            );
            assert_eq!(resp.content.len(), 5);
            assert!(
                matches!(&resp.content[0], Part::Thinking { text, signature: None } if text == "**Planning**")
            );
            assert!(matches!(&resp.content[1], Part::Text(t) if t == "I'll check."));
            assert!(
                matches!(&resp.content[2], Part::Thinking { text, signature: Some(s) } if text.is_empty() && s == "U0lH")
            );
            assert!(matches!(&resp.content[3], Part::ToolCall(tc)
                if tc.id == "call_0" && tc.name == "get_weather" && tc.arguments == r#"{"city":"Paris"}"#));
            assert!(
                matches!(&resp.content[4], Part::ToolCall(tc) if tc.id == "given" && tc.arguments == "{}")
            );
        });
    }

    #[test]
    fn finish_reasons_and_blocked_prompts() {
        for (reason, want) in [
            ("STOP", StopReason::EndTurn),
            ("MAX_TOKENS", StopReason::MaxTokens),
            ("SAFETY", StopReason::ContentFilter),
            ("RECITATION", StopReason::ContentFilter),
            ("PROHIBITED_CONTENT", StopReason::ContentFilter),
            ("OTHER", StopReason::EndTurn),
        ] {
            let body = format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}]}},"finishReason":"{reason}"}}]}}"#
            );
            with_tape(&body, |root| {
                let resp = decode_response(root).unwrap();
                assert_eq!(resp.stop, want, "{reason}");
                assert_eq!(resp.id, DEFAULT_ID);
            });
        }
        with_tape(
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#,
            |root| {
                let resp = decode_response(root).unwrap();
                assert_eq!(resp.stop, StopReason::ContentFilter);
                assert!(resp.content.is_empty());
                assert_eq!(resp.usage.input, Some(3));
            },
        );
        for bad in [
            r#"{"candidates": {}}"#,
            r#"{"candidates": [{"content": {"parts": {}}}]}"#,
            r#"{"candidates": [{"content": {"parts": [{"text": 1}]}}]}"#,
            r#"{"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]}"#,
            r#"[]"#,
        ] {
            with_tape(bad, |root| assert!(decode_response(root).is_err(), "{bad}"));
        }
    }

    #[test]
    fn encodes_a_response() {
        let resp = Response {
            id: Cow::Borrowed("r1"),
            model: Cow::Borrowed("gemini-2.5-pro"),
            content: vec![
                Part::Thinking {
                    text: Cow::Borrowed("hmm"),
                    signature: Some(Cow::Borrowed("QQ==")),
                },
                Part::RedactedThinking(Cow::Borrowed("zzz")),
                text("Calling."),
                Part::Thinking {
                    text: Cow::Borrowed(""),
                    signature: Some(Cow::Borrowed("Qg==")),
                },
                Part::ToolCall(ToolCall {
                    id: Cow::Borrowed("call_9"),
                    name: Cow::Borrowed("f"),
                    arguments: Cow::Borrowed(r#"{"x":[1,2]}"#),
                }),
            ],
            stop: StopReason::ToolUse,
            usage: Usage {
                input: Some(10),
                output: Some(3),
                cached: Some(2),
            },
        };
        let mut out = Vec::new();
        encode_response(&resp, &EncodeOptions::default(), &mut out);
        assert_eq!(
            as_json(&out),
            json!({
              "candidates": [{"content": {"role": "model", "parts": [
                  {"text": "hmm", "thought": true, "thoughtSignature": "QQ=="},
                  {"text": "Calling."},
                  {"functionCall": {"name": "f", "args": {"x": [1, 2]}, "id": "call_9"}, "thoughtSignature": "Qg=="}
                ]}, "finishReason": "STOP", "index": 0}],
              "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 13,
                                "cachedContentTokenCount": 2},
              "modelVersion": "gemini-2.5-pro", "responseId": "r1"
            })
        );

        let empty = Response {
            stop: StopReason::MaxTokens,
            ..Response::default()
        };
        let mut out = Vec::new();
        encode_response(&empty, &EncodeOptions::default(), &mut out);
        let v = as_json(&out);
        assert_eq!(
            v["candidates"][0]["content"]["parts"],
            json!([{"text": ""}])
        );
        assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert!(v["usageMetadata"].get("cachedContentTokenCount").is_none());
    }

    // --- errors ---------------------------------------------------------

    #[test]
    fn decodes_and_encodes_errors() {
        let mut buffers = Buffers::default();
        let mut body = br#"{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}"#.to_vec();
        let e = decode_error(429, &mut body, &mut buffers);
        assert_eq!(
            e,
            ErrorInfo {
                status: 429,
                kind: ErrorKind::RateLimited,
                message: "Resource has been exhausted".into()
            }
        );

        let mut body = br#"[{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}]"#.to_vec();
        let e = decode_error(400, &mut body, &mut buffers);
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (400, ErrorKind::InvalidRequest, "API key not valid")
        );

        let mut body = b"<html>Bad Gateway</html>".to_vec();
        let e = decode_error(502, &mut body, &mut buffers);
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (502, ErrorKind::Api, "<html>Bad Gateway</html>")
        );

        let mut body = "é".repeat(600).into_bytes();
        assert_eq!(
            decode_error(500, &mut body, &mut buffers)
                .message
                .chars()
                .count(),
            500
        );
        let mut body = br#"{"detail": "x"}"#.to_vec();
        assert_eq!(
            decode_error(503, &mut body, &mut buffers).kind,
            ErrorKind::Overloaded
        );

        for (kind, status, name) in [
            (ErrorKind::InvalidRequest, 400, "INVALID_ARGUMENT"),
            (ErrorKind::RequestTooLarge, 413, "INVALID_ARGUMENT"),
            (ErrorKind::Authentication, 401, "UNAUTHENTICATED"),
            (ErrorKind::PermissionDenied, 403, "PERMISSION_DENIED"),
            (ErrorKind::NotFound, 404, "NOT_FOUND"),
            (ErrorKind::RateLimited, 429, "RESOURCE_EXHAUSTED"),
            (ErrorKind::Overloaded, 503, "UNAVAILABLE"),
            (ErrorKind::Timeout, 504, "DEADLINE_EXCEEDED"),
            (ErrorKind::Api, 500, "INTERNAL"),
        ] {
            let mut out = Vec::new();
            encode_error(
                &ErrorInfo {
                    status,
                    kind,
                    message: "m \"q\"".into(),
                },
                &mut out,
            );
            assert_eq!(
                as_json(&out),
                json!({"error": {"code": status, "message": "m \"q\"", "status": name}})
            );
        }
    }

    // --- streaming ------------------------------------------------------

    /// IR events as comparable text.
    fn show(ev: &StreamEvent<'_>) -> String {
        match ev {
            StreamEvent::Start {
                id,
                model,
                input_tokens,
            } => format!("start {id} {model} {input_tokens:?}"),
            StreamEvent::BlockStart { index, block } => match block {
                BlockKind::Text => format!("{index} text"),
                BlockKind::Thinking => format!("{index} thinking"),
                BlockKind::RedactedThinking(d) => format!("{index} redacted {d}"),
                BlockKind::ToolCall { id, name } => format!("{index} tool {id} {name}"),
            },
            StreamEvent::Delta { index, delta } => match delta {
                Delta::Text(t) => format!("{index} +text {t}"),
                Delta::Thinking(t) => format!("{index} +thinking {t}"),
                Delta::Signature(s) => format!("{index} +sig {s}"),
                Delta::ToolArguments(a) => format!("{index} +args {a}"),
            },
            StreamEvent::BlockStop { index } => format!("{index} stop"),
            StreamEvent::Finish { stop, usage } => format!(
                "finish {stop:?} {:?} {:?} {:?}",
                usage.input, usage.output, usage.cached
            ),
        }
    }

    /// The data of each SSE event in `bytes`.
    fn sse_events(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        sse::Parser::new()
            .feed::<sse::SseError>(bytes, |e| {
                all.push(e.data.clone());
                Ok(())
            })
            .unwrap();
        all
    }

    fn decode_stream(sse_text: &str) -> (Vec<String>, Result<(), ErrorInfo>) {
        let mut dec = StreamDecoder::new();
        let mut buffers = Buffers::default();
        let mut events = Vec::new();
        for mut data in sse_events(sse_text.as_bytes()) {
            let ev = Event {
                name: "",
                data: &mut data,
            };
            if let Err(e) = dec.event(ev, &mut buffers, &mut |ev| events.push(show(&ev))) {
                return (events, Err(e));
            }
        }
        let done = dec.finish(&mut |ev| events.push(show(&ev)));
        (events, done)
    }

    const TRANSCRIPT: &str = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Let me \",\"thought\": true}],\"role\": \"model\"},\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 20,\"totalTokenCount\": 20},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"think.\",\"thought\": true, \"thoughtSignature\": \"VFM=\"}],\"role\": \"model\"},\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The weather\"}],\"role\": \"model\"},\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" is:\"}],\"role\": \"model\"},\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [",
        "{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Paris\"}},\"thoughtSignature\": \"RkM=\"},",
        "{\"functionCall\": {\"name\": \"get_weather\",\"args\": {\"city\": \"Lyon\"}}}],\"role\": \"model\"},",
        "\"finishReason\": \"STOP\",\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 20,\"candidatesTokenCount\": 30,\"thoughtsTokenCount\": 12,\"totalTokenCount\": 62},",
        "\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"abc\"}\r\n\r\n",
    );

    #[test]
    fn decodes_a_full_stream() {
        let (events, done) = decode_stream(TRANSCRIPT);
        done.unwrap();
        assert_eq!(
            events,
            vec![
                "start abc gemini-2.5-flash None",
                "0 thinking",
                "0 +thinking Let me ",
                "0 +thinking think.",
                "0 +sig VFM=",
                "0 stop",
                "1 text",
                "1 +text The weather",
                "1 +text  is:",
                "1 stop",
                "2 thinking",
                "2 +sig RkM=",
                "2 stop",
                "3 tool call_0 get_weather",
                "3 +args {\"city\":\"Paris\"}",
                "3 stop",
                "4 tool call_1 get_weather",
                "4 +args {\"city\":\"Lyon\"}",
                "4 stop",
                "finish ToolUse Some(20) Some(42) None",
            ]
        );
    }

    #[test]
    fn stream_without_finish_reason_is_truncated() {
        let cut = TRANSCRIPT
            .split("data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall")
            .next()
            .unwrap();
        let cut = &cut[..cut.rfind("data:").unwrap()];
        let (events, done) = decode_stream(cut);
        assert!(events.iter().all(|e| !e.starts_with("finish")));
        let err = done.unwrap_err();
        assert_eq!((err.status, err.kind), (502, ErrorKind::Api));
        assert!(err.message.contains("ended before"), "{}", err.message);
        assert!(decode_stream("").1.is_err());
    }

    #[test]
    fn stream_errors_and_malformed_events() {
        let (_, done) = decode_stream(
            "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\n\n",
        );
        assert_eq!(
            done.unwrap_err(),
            ErrorInfo {
                status: 503,
                kind: ErrorKind::Overloaded,
                message: "The model is overloaded.".into()
            }
        );
        for bad in [
            "data: {\"candidates\": [\n\n",
            "data: [1]\n\n",
            "data: {\"candidates\": 5}\n\n",
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": 1}]}}]}\n\n",
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"args\": {}}}]}}]}\n\n",
        ] {
            let err = decode_stream(bad).1.unwrap_err();
            assert_eq!(err.status, 502, "{bad}");
        }
        // A blocked prompt ends the stream with no content.
        let (events, done) = decode_stream(
            "data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"}, \"usageMetadata\": {\"promptTokenCount\": 4}}\n\n",
        );
        done.unwrap();
        assert_eq!(
            events,
            vec![
                "start gemini-response  None",
                "finish ContentFilter Some(4) None None"
            ]
        );
        // MAX_TOKENS with the text block open: it is closed before Finish.
        let (events, done) = decode_stream(
            "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"finishReason\": \"MAX_TOKENS\"}]}\n\n",
        );
        done.unwrap();
        assert_eq!(
            events[1..],
            [
                "0 text",
                "0 +text a",
                "0 stop",
                "finish MaxTokens None None None"
            ]
        );
    }

    fn full_ir_sequence() -> Vec<StreamEvent<'static>> {
        vec![
            StreamEvent::Start {
                id: Cow::Borrowed("msg_1"),
                model: Cow::Borrowed("gemini-x"),
                input_tokens: Some(5),
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
                delta: Delta::Signature(Cow::Borrowed("U0k=")),
            },
            StreamEvent::BlockStop { index: 0 },
            StreamEvent::BlockStart {
                index: 1,
                block: BlockKind::Text,
            },
            StreamEvent::Delta {
                index: 1,
                delta: Delta::Text(Cow::Borrowed("Hi")),
            },
            StreamEvent::Delta {
                index: 1,
                delta: Delta::Text(Cow::Borrowed("")),
            },
            StreamEvent::BlockStop { index: 1 },
            StreamEvent::BlockStart {
                index: 2,
                block: BlockKind::Thinking,
            },
            StreamEvent::Delta {
                index: 2,
                delta: Delta::Signature(Cow::Borrowed("RkM=")),
            },
            StreamEvent::BlockStop { index: 2 },
            StreamEvent::BlockStart {
                index: 3,
                block: BlockKind::ToolCall {
                    id: Cow::Borrowed("toolu_1"),
                    name: Cow::Borrowed("get_weather"),
                },
            },
            StreamEvent::Delta {
                index: 3,
                delta: Delta::ToolArguments(Cow::Borrowed("{\"ci")),
            },
            StreamEvent::Delta {
                index: 3,
                delta: Delta::ToolArguments(Cow::Borrowed("ty\": \"Paris\"}")),
            },
            StreamEvent::BlockStop { index: 3 },
            StreamEvent::BlockStart {
                index: 4,
                block: BlockKind::ToolCall {
                    id: Cow::Borrowed("toolu_2"),
                    name: Cow::Borrowed("noop"),
                },
            },
            StreamEvent::BlockStop { index: 4 },
            StreamEvent::Finish {
                stop: StopReason::ToolUse,
                usage: Usage {
                    input: Some(5),
                    output: Some(9),
                    cached: None,
                },
            },
        ]
    }

    fn expected_chunks() -> Vec<Value> {
        let wrap = |part: Value| {
            json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}],
                   "modelVersion": "gemini-x", "responseId": "msg_1"})
        };
        vec![
            wrap(json!({"text": "hmm", "thought": true})),
            wrap(json!({"text": "", "thought": true, "thoughtSignature": "U0k="})),
            wrap(json!({"text": "Hi"})),
            wrap(
                json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "toolu_1"},
                        "thoughtSignature": "RkM="}),
            ),
            wrap(json!({"functionCall": {"name": "noop", "args": {}, "id": "toolu_2"}})),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                                   "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14},
                   "modelVersion": "gemini-x", "responseId": "msg_1"}),
        ]
    }

    #[test]
    fn encodes_a_stream_as_sse() {
        let mut enc = StreamEncoder::new(EncodeOptions::default());
        let mut out = Vec::new();
        for ev in &full_ir_sequence() {
            enc.event(ev, &mut out);
        }
        enc.finish(&mut out);
        let mut chunks = Vec::new();
        sse::Parser::new()
            .feed::<sse::SseError>(&out, |e| {
                assert_eq!(e.name, "");
                chunks.push(as_json(e.data));
                Ok(())
            })
            .unwrap();
        assert_eq!(chunks, expected_chunks());
        assert!(out.ends_with(b"\n\n"));
    }

    #[test]
    fn encodes_a_stream_as_a_json_array() {
        let opts = EncodeOptions {
            json_array: true,
            ..EncodeOptions::default()
        };
        let mut enc = StreamEncoder::new(opts);
        let mut out = Vec::new();
        for ev in &full_ir_sequence() {
            enc.event(ev, &mut out);
        }
        enc.finish(&mut out);
        assert_eq!(as_json(&out), Value::Array(expected_chunks()));

        let mut enc = StreamEncoder::new(opts);
        let mut out = Vec::new();
        enc.finish(&mut out);
        assert_eq!(out, b"[]");
    }

    #[test]
    fn stream_errors_are_the_last_thing_written() {
        let err = ErrorInfo::new(429, "slow down");
        let want =
            json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}});

        let mut enc = StreamEncoder::new(EncodeOptions::default());
        let mut out = Vec::new();
        let events = full_ir_sequence();
        for ev in &events[..7] {
            enc.event(ev, &mut out);
        }
        let before = out.len();
        enc.error(&err, &mut out);
        enc.finish(&mut out);
        let tail = std::str::from_utf8(&out[before..]).unwrap();
        let data = tail.strip_prefix("data: ").unwrap().trim_end();
        assert_eq!(as_json(data.as_bytes()), want);

        let opts = EncodeOptions {
            json_array: true,
            ..EncodeOptions::default()
        };
        let mut enc = StreamEncoder::new(opts);
        let mut out = Vec::new();
        for ev in &events[..7] {
            enc.event(ev, &mut out);
        }
        enc.error(&err, &mut out);
        enc.finish(&mut out);
        let v = as_json(&out);
        assert_eq!(v.as_array().unwrap().len(), 4);
        assert_eq!(v[3], want);

        let mut enc = StreamEncoder::new(opts);
        let mut out = Vec::new();
        enc.error(&err, &mut out);
        assert_eq!(as_json(&out), json!([want]));
    }

    #[test]
    fn stream_round_trip_keeps_text_calls_and_usage() {
        // Gemini upstream -> IR -> Gemini client stream -> the same parts.
        let mut dec = StreamDecoder::new();
        let mut enc = StreamEncoder::new(EncodeOptions::default());
        let mut buffers = Buffers::default();
        let mut out = Vec::new();
        for mut data in sse_events(TRANSCRIPT.as_bytes()) {
            let ev = Event {
                name: "",
                data: &mut data,
            };
            dec.event(ev, &mut buffers, &mut |ev| enc.event(&ev, &mut out))
                .unwrap();
        }
        dec.finish(&mut |ev| enc.event(&ev, &mut out)).unwrap();
        enc.finish(&mut out);
        let mut parts = Vec::new();
        let mut last = Value::Null;
        sse::Parser::new()
            .feed::<sse::SseError>(&out, |e| {
                let v = as_json(e.data);
                parts.extend(
                    v["candidates"][0]["content"]["parts"]
                        .as_array()
                        .unwrap()
                        .clone(),
                );
                last = v;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            parts,
            vec![
                json!({"text": "Let me ", "thought": true}),
                json!({"text": "think.", "thought": true}),
                json!({"text": "", "thought": true, "thoughtSignature": "VFM="}),
                json!({"text": "The weather"}),
                json!({"text": " is:"}),
                json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_0"}, "thoughtSignature": "RkM="}),
                json!({"functionCall": {"name": "get_weather", "args": {"city": "Lyon"}, "id": "call_1"}}),
                json!({"text": ""}),
            ]
        );
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 42);
    }
}
