//! The mock's Gemini `generateContent` wire shapes, written by hand (not
//! with the gateway's codecs, which this mock exists to test).

use simd_json::prelude::*;

use super::scenario::{Answer, Ask, Block, ToolDecl};
use super::stream::{Events, Kind};
use crate::protocol::json::{parse, value_to_string, write_string, write_u64};

/// How a streamed answer is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `?alt=sse`: each chunk is `data: {chunk}\r\n\r\n`.
    Sse,
    /// No `alt=sse`: one JSON array, sent element by element
    /// (`[{chunk}\r\n,{chunk}...]`).
    Array,
}

/// Reads what a `generateContent` request asks for: its function
/// declarations and whether the last content answers a function call.
/// Only called when the body mentions either.
pub fn inspect(body: &[u8], stream: bool) -> Result<Ask, String> {
    let mut copy = body.to_vec();
    let mut buffers = simd_json::Buffers::default();
    let tape = parse(&mut copy, &mut buffers).map_err(|e| e.message)?;
    let v = tape.as_value();
    let mut ask = Ask::plain(stream, body.len());
    if let Some(tools) = v.get("tools").and_then(|t| t.as_array()) {
        let decls = tools
            .iter()
            .filter_map(|t| t.get("functionDeclarations").and_then(|d| d.as_array()))
            .flat_map(|d| d.iter());
        for decl in decls {
            ask.add_tool(|| {
                let schema = decl
                    .get("parameters")
                    .or_else(|| decl.get("parametersJsonSchema"));
                Some(ToolDecl::new(decl.get("name")?.as_str()?, schema))
            });
        }
    }
    let last_parts = v
        .get("contents")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().last())
        .and_then(|c| c.get("parts"))
        .and_then(|p| p.as_array());
    let response = last_parts.and_then(|parts| {
        parts
            .iter()
            .find_map(|p| p.get("functionResponse"))
            .map(|r| r.get("response"))
    });
    if let Some(response) = response {
        // The response is a free-form object; a lone result string in it is
        // what a person would call the tool's answer.
        let text = response.and_then(|r| {
            ["result", "output", "content"]
                .iter()
                .find_map(|k| r.get(*k).and_then(|s| s.into_string()).map(str::to_string))
                .or_else(|| Some(value_to_string(&r)))
        });
        ask.tool_result = Some(text.unwrap_or_default());
    }
    Ok(ask)
}

/// Appends the parts of `block` in a non-streamed answer.
fn full_part(out: &mut Vec<u8>, block: &Block) {
    match block {
        Block::Thinking(t) => thought_part(out, t.full()),
        Block::Text(t) => text_part(out, t.full()),
        Block::ToolCall { name, args, .. } => call_part(out, name, args),
    }
}

fn thought_part(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"text\":");
    write_string(out, text);
    out.extend_from_slice(b",\"thought\":true}");
}

fn text_part(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"text\":");
    write_string(out, text);
    out.push(b'}');
}

fn call_part(out: &mut Vec<u8>, name: &str, args: &str) {
    out.extend_from_slice(b"{\"functionCall\":{\"name\":");
    write_string(out, name);
    out.extend_from_slice(b",\"args\":");
    // Built by sample_arguments: already compact JSON.
    out.extend_from_slice(args.as_bytes());
    out.extend_from_slice(b"}}");
}

/// A `GenerateContentResponse` whose parts (already JSON, comma-separated)
/// are `parts`; with `finish`, the last one of an answer. `output` and
/// `thoughts` are the token counts so far.
fn response(
    out: &mut Vec<u8>,
    model: &str,
    parts: &[u8],
    finish: bool,
    a: &Answer,
    output: u64,
    thoughts: u64,
) {
    out.extend_from_slice(b"{\"candidates\":[{\"content\":{\"parts\":[");
    out.extend_from_slice(parts);
    out.extend_from_slice(b"],\"role\":\"model\"}");
    if finish {
        out.extend_from_slice(b",\"finishReason\":\"STOP\"");
    }
    out.extend_from_slice(b",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":");
    write_u64(out, a.input_tokens);
    out.extend_from_slice(b",\"candidatesTokenCount\":");
    write_u64(out, output - thoughts);
    out.extend_from_slice(b",\"totalTokenCount\":");
    write_u64(out, a.input_tokens + output);
    if thoughts > 0 {
        out.extend_from_slice(b",\"thoughtsTokenCount\":");
        write_u64(out, thoughts);
    }
    out.extend_from_slice(b"},\"modelVersion\":");
    write_string(out, model);
    out.extend_from_slice(b",\"responseId\":\"mock-response\"}");
}

/// A non-streamed `generateContent` answer.
pub fn render_json(out: &mut Vec<u8>, model: &str, a: &Answer) {
    let mut parts = Vec::with_capacity(256);
    for (i, block) in a.blocks.iter().enumerate() {
        if i > 0 {
            parts.push(b',');
        }
        full_part(&mut parts, block);
    }
    response(
        out,
        model,
        &parts,
        true,
        a,
        a.output_tokens,
        a.thinking_tokens,
    );
}

/// The chunks of a streamed answer. Text and thoughts come a piece per
/// chunk; function calls come whole (Gemini never splits their arguments),
/// all of an answer's calls in one chunk. The last chunk carries the
/// finish reason and the final usage.
pub fn render_stream(model: &str, a: &Answer, framing: Framing) -> Events {
    // (parts JSON, output tokens it stands for, of which thoughts)
    let mut chunks: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    let mut calls: Vec<u8> = Vec::new();
    let mut call_tokens = 0;
    for block in &a.blocks {
        match block {
            Block::Thinking(_) | Block::Text(_) => {
                let thought = matches!(block, Block::Thinking(_));
                for piece in a.pieces(block) {
                    let mut part = Vec::with_capacity(piece.len() + 32);
                    if thought {
                        thought_part(&mut part, piece);
                    } else {
                        text_part(&mut part, piece);
                    }
                    chunks.push((part, 1, u64::from(thought)));
                }
            }
            Block::ToolCall { name, args, .. } => {
                if !calls.is_empty() {
                    calls.push(b',');
                }
                call_part(&mut calls, name, args);
                call_tokens += a.pieces(block).len() as u64;
            }
        }
    }
    if !calls.is_empty() {
        chunks.push((calls, call_tokens, 0));
    }
    if chunks.is_empty() {
        chunks.push((b"{\"text\":\"\"}".to_vec(), 0, 0));
    }
    let mut ev = Events::default();
    let (mut output, mut thoughts) = (0, 0);
    let last = chunks.len() - 1;
    for (i, (parts, n, t)) in chunks.iter().enumerate() {
        output += n;
        thoughts += t;
        let kind = if i == last {
            Kind::LastContent
        } else {
            Kind::Content
        };
        ev.push(kind, |out| {
            match (framing, i) {
                (Framing::Sse, _) => out.extend_from_slice(b"data: "),
                (Framing::Array, 0) => out.push(b'['),
                (Framing::Array, _) => out.extend_from_slice(b"\r\n,"),
            }
            response(out, model, parts, i == last, a, output, thoughts);
            match framing {
                Framing::Sse => out.extend_from_slice(b"\r\n\r\n"),
                Framing::Array if i == last => out.push(b']'),
                Framing::Array => {}
            }
        });
    }
    ev
}

/// Gemini's (Google RPC) status name for an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// An error body: `{"error":{"code","message","status"}}`.
pub fn render_error(out: &mut Vec<u8>, status: u16, message: &str) {
    out.extend_from_slice(b"{\"error\":{\"code\":");
    write_u64(out, u64::from(status));
    out.extend_from_slice(b",\"message\":");
    write_string(out, message);
    out.extend_from_slice(b",\"status\":");
    write_string(out, status_name(status));
    out.extend_from_slice(b"}}");
}

/// The element a stream that fails after it started ends with: a chunk
/// holding an error instead of candidates. In the array framing it also
/// closes the array, so the body stays one JSON value.
pub fn render_stream_error(out: &mut Vec<u8>, framing: Framing, first: bool) {
    match (framing, first) {
        (Framing::Sse, _) => out.extend_from_slice(b"data: "),
        (Framing::Array, true) => out.push(b'['),
        (Framing::Array, false) => out.extend_from_slice(b"\r\n,"),
    }
    render_error(out, 500, "mock provider: the stream failed");
    match framing {
        Framing::Sse => out.extend_from_slice(b"\r\n\r\n"),
        Framing::Array => out.push(b']'),
    }
}

/// The `countTokens` answer.
pub fn render_count(out: &mut Vec<u8>, tokens: u64) {
    out.extend_from_slice(b"{\"totalTokens\":");
    write_u64(out, tokens);
    out.extend_from_slice(b",\"promptTokensDetails\":[{\"modality\":\"TEXT\",\"tokenCount\":");
    write_u64(out, tokens);
    out.extend_from_slice(b"}]}");
}

/// The model list (`GET /v1beta/models`).
pub const MODEL_LIST: &[u8] = b"{\"models\":[{\"name\":\"models/mock-model\",\"version\":\"001\",\"displayName\":\"Mock Model\",\"description\":\"The shardgate mock provider.\",\"inputTokenLimit\":1048576,\"outputTokenLimit\":8192,\"supportedGenerationMethods\":[\"generateContent\",\"streamGenerateContent\",\"countTokens\"]}]}";

#[cfg(test)]
mod tests {
    use super::super::scenario::{Scenario, ToolDecl, ANSWER, THINKING};
    use super::super::stream::concat;
    use super::*;

    fn weather_ask(stream: bool) -> Ask {
        let mut ask = Ask::plain(stream, 40);
        ask.tools.push(ToolDecl {
            name: "get_weather".into(),
            args: r#"{"location":"Paris"}"#.into(),
        });
        ask
    }

    #[test]
    fn inspects_declarations_and_function_responses() {
        let body = br#"{"tools":[{"functionDeclarations":[{"name":"get_weather","parameters":{"type":"OBJECT","properties":{"location":{"type":"STRING"}}}},{"name":"b"}]}],
            "contents":[{"role":"user","parts":[{"text":"hi"}]},
              {"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{}}}]},
              {"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":"windy"}}}]}]}"#;
        let ask = inspect(body, false).unwrap();
        assert_eq!(ask.tools.len(), 2);
        assert_eq!(ask.tools[0].args, r#"{"location":"Paris"}"#);
        assert_eq!(ask.tool_result.as_deref(), Some("windy"));
        let body =
            br#"{"contents":[{"parts":[{"functionResponse":{"name":"f","response":{"t":20}}}]}]}"#;
        assert_eq!(
            inspect(body, false).unwrap().tool_result.as_deref(),
            Some(r#"{"t":20}"#)
        );
    }

    #[test]
    fn json_answers_parse() {
        let mut out = Vec::new();
        let a = Answer::build(&Scenario::of("think"), &weather_ask(false), 8);
        render_json(&mut out, "gemini-think", &a);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(parts[0]["thought"], true);
        assert_eq!(parts[0]["text"], THINKING);
        assert_eq!(parts[1]["functionCall"]["args"]["location"], "Paris");
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        let u = &v["usageMetadata"];
        assert_eq!(u["promptTokenCount"], 10);
        assert_eq!(
            u["totalTokenCount"].as_u64().unwrap(),
            10 + u["candidatesTokenCount"].as_u64().unwrap()
                + u["thoughtsTokenCount"].as_u64().unwrap()
        );

        out.clear();
        render_error(&mut out, 429, "quota");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(v["error"]["code"], 429);
    }

    #[test]
    fn both_stream_framings_carry_the_same_chunks() {
        let a = Answer::build(&Scenario::default(), &Ask::plain(true, 40), 8);
        let sse = String::from_utf8(concat(&render_stream("g", &a, Framing::Sse).0)).unwrap();
        let chunks: Vec<serde_json::Value> = sse
            .split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(chunks.len(), 8);
        let text: String = chunks
            .iter()
            .map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(text.trim_end(), ANSWER);
        assert!(chunks[..7]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none()));
        assert_eq!(chunks[7]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[7]["usageMetadata"]["candidatesTokenCount"], 8);

        let array = concat(&render_stream("g", &a, Framing::Array).0);
        assert!(array.starts_with(b"[{") && array.ends_with(b"}]"));
        let v: serde_json::Value = serde_json::from_slice(&array).unwrap();
        assert_eq!(v.as_array().unwrap(), &chunks);

        let mut err = Vec::new();
        render_stream_error(&mut err, Framing::Array, false);
        let mut cut = concat(&render_stream("g", &a, Framing::Array).cut());
        cut.extend_from_slice(&err);
        let v: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 4);
        assert_eq!(v[3]["error"]["code"], 500);
    }

    #[test]
    fn function_calls_come_in_one_chunk() {
        let a = Answer::build(&Scenario::of("parallel-tools"), &weather_ask(true), 8);
        let ev = render_stream("g", &a, Framing::Sse);
        assert_eq!(ev.0.len(), 1);
        let text = String::from_utf8(ev.0[0].bytes.clone()).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 2);
        assert!(parts
            .iter()
            .all(|p| p["functionCall"]["name"] == "get_weather"));
    }
}
