//! The mock's OpenAI Chat Completions wire shapes, written by hand (not with
//! the gateway's codecs, which this mock exists to test).

use simd_json::prelude::*;

use super::scenario::{content_text, Answer, Ask, Block, Stop, ToolDecl};
use super::stream::{Events, Kind};
use crate::protocol::json::{parse, write_string, write_u64};
use crate::sse::{begin_event, end_event};

/// Reads what a chat completion request asks for. Only called when the
/// body mentions tools or stream options: the default scenario never
/// parses the body.
pub fn inspect(body: &[u8], stream: bool) -> Result<Ask, String> {
    let mut copy = body.to_vec();
    let mut buffers = simd_json::Buffers::default();
    let tape = parse(&mut copy, &mut buffers).map_err(|e| e.message)?;
    let v = tape.as_value();
    let mut ask = Ask::plain(stream, body.len());
    ask.include_usage = v
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(|b| b.as_bool())
        == Some(true);
    if let Some(tools) = v.get("tools").and_then(|t| t.as_array()) {
        for tool in tools.iter() {
            ask.add_tool(|| {
                let f = tool.get("function")?;
                Some(ToolDecl::new(f.get("name")?.as_str()?, f.get("parameters")))
            });
        }
    }
    let last = v
        .get("messages")
        .and_then(|m| m.as_array())
        .and_then(|m| m.iter().last());
    if let Some(last) = last {
        if last.get("role").and_then(|r| r.into_string()) == Some("tool") {
            ask.tool_result = Some(content_text(last.get("content")));
        }
    }
    Ok(ask)
}

fn finish_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn => "stop",
        Stop::ToolUse => "tool_calls",
    }
}

fn call_id(out: &mut Vec<u8>, index: usize) {
    out.extend_from_slice(b"\"call_mock_");
    write_u64(out, index as u64);
    out.push(b'"');
}

fn usage(out: &mut Vec<u8>, a: &Answer) {
    out.extend_from_slice(b"{\"prompt_tokens\":");
    write_u64(out, a.input_tokens);
    out.extend_from_slice(b",\"completion_tokens\":");
    write_u64(out, a.output_tokens);
    out.extend_from_slice(b",\"total_tokens\":");
    write_u64(out, a.input_tokens + a.output_tokens);
    out.push(b'}');
}

/// A `chat.completion` object.
pub fn render_json(out: &mut Vec<u8>, model: &str, a: &Answer) {
    out.extend_from_slice(b"{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":");
    write_string(out, model);
    out.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
    );
    match a.text() {
        Some(text) => write_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(thinking) = a.thinking() {
        out.extend_from_slice(b",\"reasoning_content\":");
        write_string(out, thinking);
    }
    let mut calls = a.tool_calls().peekable();
    if calls.peek().is_some() {
        out.extend_from_slice(b",\"tool_calls\":[");
        for (i, (index, name, args)) in calls.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"id\":");
            call_id(out, index);
            out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
            write_string(out, name);
            out.extend_from_slice(b",\"arguments\":");
            write_string(out, args);
            out.extend_from_slice(b"}}");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"finish_reason\":");
    write_string(out, finish_reason(a.stop));
    out.extend_from_slice(b"}],\"usage\":");
    usage(out, a);
    out.push(b'}');
}

/// One `chat.completion.chunk` event whose delta object's members
/// `delta` writes. `usage_null`: the client asked for usage, so every chunk
/// but the last carries `"usage":null`, as OpenAI sends it.
fn chunk(
    out: &mut Vec<u8>,
    model: &str,
    delta: impl FnOnce(&mut Vec<u8>),
    finish: Option<&str>,
    usage_null: bool,
) {
    begin_event(out, None);
    out.extend_from_slice(b"{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":");
    write_string(out, model);
    out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
    delta(out);
    out.extend_from_slice(b"},\"finish_reason\":");
    match finish {
        Some(reason) => write_string(out, reason),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}]");
    if usage_null {
        out.extend_from_slice(b",\"usage\":null");
    }
    out.push(b'}');
    end_event(out);
}

/// The chunk events of a streamed answer, `[DONE]` included.
pub fn render_stream(model: &str, a: &Answer, include_usage: bool) -> Events {
    let mut ev = Events::default();
    let u = include_usage;
    ev.push(Kind::Head, |out| {
        chunk(
            out,
            model,
            |o| o.extend_from_slice(b"\"role\":\"assistant\",\"content\":\"\""),
            None,
            u,
        )
    });
    for block in &a.blocks {
        match block {
            Block::Thinking(_) | Block::Text(_) => {
                let key: &[u8] = if matches!(block, Block::Thinking(_)) {
                    b"\"reasoning_content\":"
                } else {
                    b"\"content\":"
                };
                for piece in a.pieces(block) {
                    ev.push(Kind::Content, |out| {
                        chunk(
                            out,
                            model,
                            |o| {
                                o.extend_from_slice(key);
                                write_string(o, piece);
                            },
                            None,
                            u,
                        )
                    });
                }
            }
            Block::ToolCall { index, name, .. } => {
                // The call's id and name come first with empty arguments;
                // the arguments follow in pieces under the same index.
                ev.push(Kind::Head, |out| {
                    chunk(
                        out,
                        model,
                        |o| {
                            o.extend_from_slice(b"\"tool_calls\":[{\"index\":");
                            write_u64(o, *index as u64);
                            o.extend_from_slice(b",\"id\":");
                            call_id(o, *index);
                            o.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                            write_string(o, name);
                            o.extend_from_slice(b",\"arguments\":\"\"}}]");
                        },
                        None,
                        u,
                    )
                });
                for piece in a.pieces(block) {
                    ev.push(Kind::Content, |out| {
                        chunk(
                            out,
                            model,
                            |o| {
                                o.extend_from_slice(b"\"tool_calls\":[{\"index\":");
                                write_u64(o, *index as u64);
                                o.extend_from_slice(b",\"function\":{\"arguments\":");
                                write_string(o, piece);
                                o.extend_from_slice(b"}}]");
                            },
                            None,
                            u,
                        )
                    });
                }
            }
        }
    }
    ev.push(Kind::Tail, |out| {
        chunk(out, model, |_| {}, Some(finish_reason(a.stop)), u);
        if include_usage {
            begin_event(out, None);
            out.extend_from_slice(b"{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":");
            write_string(out, model);
            out.extend_from_slice(b",\"choices\":[],\"usage\":");
            usage(out, a);
            out.push(b'}');
            end_event(out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    });
    ev
}

/// OpenAI's `type` and `code` for an error status. The 429 and 500 codes
/// are the mock's historical ones, which tests of the gateway expect.
fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        429 => ("requests", "rate_limited"),
        529 => ("server_error", "overloaded"),
        _ => ("server_error", "mock_error"),
    }
}

/// An error body: `{"error":{"message","type","param","code"}}`.
pub fn render_error(out: &mut Vec<u8>, status: u16, message: &str) {
    let (kind, code) = error_kind(status);
    out.extend_from_slice(b"{\"error\":{\"message\":");
    write_string(out, message);
    out.extend_from_slice(b",\"type\":");
    write_string(out, kind);
    out.extend_from_slice(b",\"param\":null,\"code\":");
    write_string(out, code);
    out.extend_from_slice(b"}}");
}

/// The error event OpenAI sends when a stream fails after it started.
pub fn render_stream_error(out: &mut Vec<u8>) {
    begin_event(out, None);
    render_error(out, 500, "mock provider: the stream failed");
    end_event(out);
}

#[cfg(test)]
mod tests {
    use super::super::scenario::{Scenario, ToolDecl};
    use super::super::stream::{concat, data_json};
    use super::*;

    fn weather() -> ToolDecl {
        ToolDecl {
            name: "get_weather".into(),
            args: r#"{"location":"Paris"}"#.into(),
        }
    }

    #[test]
    fn inspects_tools_and_tool_results() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
            "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}}],
            "messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"c","content":[{"type":"text","text":"sunny"}]}]}"#;
        let ask = inspect(body, true).unwrap();
        assert!(ask.include_usage);
        assert_eq!(ask.tools, vec![weather()]);
        assert_eq!(ask.tool_result.as_deref(), Some("sunny"));
        assert!(inspect(b"{\"model\":", false).is_err());
    }

    #[test]
    fn json_answers_parse() {
        let mut ask = Ask::plain(false, 40);
        let mut out = Vec::new();
        render_json(
            &mut out,
            "m\"x",
            &Answer::build(&Scenario::default(), &ask, 8),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "m\"x");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            super::super::scenario::ANSWER
        );
        assert_eq!(v["usage"]["prompt_tokens"], 10);
        assert_eq!(v["usage"]["completion_tokens"], 8);

        ask.tools.push(weather());
        out.clear();
        render_json(
            &mut out,
            "m",
            &Answer::build(&Scenario::of("think"), &ask, 8),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], serde_json::Value::Null);
        assert!(msg["reasoning_content"].as_str().unwrap().len() > 10);
        assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(
            msg["tool_calls"][0]["function"]["arguments"],
            r#"{"location":"Paris"}"#
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

        out.clear();
        render_error(&mut out, 429, "slow down");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
    }

    #[test]
    fn streams_tool_calls_in_pieces_and_usage_last() {
        let mut ask = Ask::plain(true, 40);
        ask.tools.push(weather());
        let a = Answer::build(&Scenario::of("parallel-tools"), &ask, 8);
        let body = concat(&render_stream("m", &a, true).0);
        assert!(body.ends_with(b"data: [DONE]\n\n"));
        let chunks = data_json(&body);
        let mut args = [String::new(), String::new()];
        let mut ids = Vec::new();
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert!(c["usage"].is_null() && c.get("usage").is_some());
            if let Some(calls) = c["choices"][0]["delta"]["tool_calls"].as_array() {
                let i = calls[0]["index"].as_u64().unwrap() as usize;
                if let Some(id) = calls[0]["id"].as_str() {
                    ids.push(id.to_string());
                }
                args[i].push_str(calls[0]["function"]["arguments"].as_str().unwrap());
            }
        }
        assert_eq!(ids, ["call_mock_0", "call_mock_1"]);
        assert_eq!(args, [weather().args, weather().args]);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], serde_json::json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 6);
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    }
}
