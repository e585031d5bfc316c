//! The mock's Anthropic Messages wire shapes, written by hand (not with the
//! gateway's codecs, which this mock exists to test).

use simd_json::prelude::*;

use super::scenario::{content_text, Answer, Ask, Block, Stop, ToolDecl, SIGNATURE};
use super::stream::{Events, Kind};
use crate::protocol::json::{parse, write_string, write_u64};
use crate::sse::{begin_event, end_event};

/// Reads what a Messages request asks for: its tools and whether the last
/// user message carries a `tool_result` block. Only called when the body
/// mentions either.
pub fn inspect(body: &[u8], stream: bool) -> Result<Ask, String> {
    let mut copy = body.to_vec();
    let mut buffers = simd_json::Buffers::default();
    let tape = parse(&mut copy, &mut buffers).map_err(|e| e.message)?;
    let v = tape.as_value();
    let mut ask = Ask::plain(stream, body.len());
    if let Some(tools) = v.get("tools").and_then(|t| t.as_array()) {
        for tool in tools.iter() {
            ask.add_tool(|| {
                Some(ToolDecl::new(
                    tool.get("name")?.as_str()?,
                    tool.get("input_schema"),
                ))
            });
        }
    }
    let last = v
        .get("messages")
        .and_then(|m| m.as_array())
        .and_then(|m| m.iter().last());
    if let Some(last) = last.filter(|m| m.get("role").and_then(|r| r.into_string()) == Some("user"))
    {
        let blocks = last.get("content").and_then(|c| c.as_array());
        let result = blocks.and_then(|b| {
            b.iter()
                .find(|b| b.get("type").and_then(|t| t.into_string()) == Some("tool_result"))
        });
        if let Some(result) = result {
            ask.tool_result = Some(content_text(result.get("content")));
        }
    }
    Ok(ask)
}

fn stop_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn => "end_turn",
        Stop::ToolUse => "tool_use",
    }
}

fn tool_id(out: &mut Vec<u8>, index: usize) {
    out.extend_from_slice(b"\"toolu_mock_");
    write_u64(out, index as u64);
    out.push(b'"');
}

fn usage(out: &mut Vec<u8>, input: u64, output: u64) {
    out.extend_from_slice(b"{\"input_tokens\":");
    write_u64(out, input);
    out.extend_from_slice(
        b",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":",
    );
    write_u64(out, output);
    out.push(b'}');
}

/// The message object up to and including the `[` opening its content
/// list; the caller writes the rest.
fn message_head(out: &mut Vec<u8>, model: &str) {
    out.extend_from_slice(
        b"{\"id\":\"msg_mock\",\"type\":\"message\",\"role\":\"assistant\",\"model\":",
    );
    write_string(out, model);
    out.extend_from_slice(b",\"content\":[");
}

/// A `message` object.
pub fn render_json(out: &mut Vec<u8>, model: &str, a: &Answer) {
    message_head(out, model);
    for (i, block) in a.blocks.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match block {
            Block::Thinking(t) => {
                out.extend_from_slice(b"{\"type\":\"thinking\",\"thinking\":");
                write_string(out, t.full());
                out.extend_from_slice(b",\"signature\":");
                write_string(out, SIGNATURE);
                out.push(b'}');
            }
            Block::Text(t) => {
                out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                write_string(out, t.full());
                out.push(b'}');
            }
            Block::ToolCall { index, name, args } => {
                out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
                tool_id(out, *index);
                out.extend_from_slice(b",\"name\":");
                write_string(out, name);
                out.extend_from_slice(b",\"input\":");
                // Built by sample_arguments: already compact JSON.
                out.extend_from_slice(args.as_bytes());
                out.push(b'}');
            }
        }
    }
    out.extend_from_slice(b"],\"stop_reason\":");
    write_string(out, stop_reason(a.stop));
    out.extend_from_slice(b",\"stop_sequence\":null,\"usage\":");
    usage(out, a.input_tokens, a.output_tokens);
    out.push(b'}');
}

/// One named event whose data `data` writes.
fn event(out: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    begin_event(out, Some(name));
    data(out);
    end_event(out);
}

fn delta(out: &mut Vec<u8>, index: usize, kind: &str, field: &str, value: &str) {
    event(out, "content_block_delta", |o| {
        o.extend_from_slice(b"{\"type\":\"content_block_delta\",\"index\":");
        write_u64(o, index as u64);
        o.extend_from_slice(b",\"delta\":{\"type\":");
        write_string(o, kind);
        o.push(b',');
        write_string(o, field);
        o.push(b':');
        write_string(o, value);
        o.extend_from_slice(b"}}");
    });
}

/// The event sequence of a streamed answer: `message_start`, `ping`, each
/// block's start / deltas / stop, `message_delta`, `message_stop`.
pub fn render_stream(model: &str, a: &Answer) -> Events {
    let mut ev = Events::default();
    ev.push(Kind::Head, |out| {
        event(out, "message_start", |o| {
            o.extend_from_slice(b"{\"type\":\"message_start\",\"message\":");
            message_head(o, model);
            o.extend_from_slice(b"],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
            // Anthropic reports the input here and a running output count
            // that the final message_delta replaces.
            usage(o, a.input_tokens, 1);
            o.extend_from_slice(b"}}");
        });
        event(out, "ping", |o| {
            o.extend_from_slice(b"{\"type\": \"ping\"}")
        });
    });
    for (i, block) in a.blocks.iter().enumerate() {
        ev.push(Kind::Head, |out| {
            event(out, "content_block_start", |o| {
                o.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
                write_u64(o, i as u64);
                o.extend_from_slice(b",\"content_block\":");
                match block {
                    Block::Thinking(_) => o.extend_from_slice(
                        b"{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}",
                    ),
                    Block::Text(_) => o.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}"),
                    Block::ToolCall { index, name, .. } => {
                        o.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
                        tool_id(o, *index);
                        o.extend_from_slice(b",\"name\":");
                        write_string(o, name);
                        o.extend_from_slice(b",\"input\":{}}");
                    }
                }
                o.push(b'}');
            })
        });
        let (kind, field) = match block {
            Block::Thinking(_) => ("thinking_delta", "thinking"),
            Block::Text(_) => ("text_delta", "text"),
            Block::ToolCall { .. } => ("input_json_delta", "partial_json"),
        };
        for piece in a.pieces(block) {
            ev.push(Kind::Content, |out| delta(out, i, kind, field, piece));
        }
        ev.push(Kind::Head, |out| {
            if matches!(block, Block::Thinking(_)) {
                delta(out, i, "signature_delta", "signature", SIGNATURE);
            }
            event(out, "content_block_stop", |o| {
                o.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":");
                write_u64(o, i as u64);
                o.push(b'}');
            });
        });
    }
    ev.push(Kind::Tail, |out| {
        event(out, "message_delta", |o| {
            o.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
            write_string(o, stop_reason(a.stop));
            o.extend_from_slice(b",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
            write_u64(o, a.output_tokens);
            o.extend_from_slice(b"}}");
        });
        event(out, "message_stop", |o| {
            o.extend_from_slice(b"{\"type\":\"message_stop\"}")
        });
    });
    ev
}

/// Anthropic's error `type` for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error body: `{"type":"error","error":{"type","message"}}`.
pub fn render_error(out: &mut Vec<u8>, status: u16, message: &str) {
    out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
    write_string(out, error_type(status));
    out.extend_from_slice(b",\"message\":");
    write_string(out, message);
    out.extend_from_slice(b"}}");
}

/// The `error` event Anthropic sends when a stream fails after it started
/// (typically an overload).
pub fn render_stream_error(out: &mut Vec<u8>) {
    event(out, "error", |o| render_error(o, 529, "Overloaded"));
}

/// The `count_tokens` answer.
pub fn render_count(out: &mut Vec<u8>, tokens: u64) {
    out.extend_from_slice(b"{\"input_tokens\":");
    write_u64(out, tokens);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::super::scenario::{Scenario, ToolDecl, ANSWER, THINKING};
    use super::super::stream::{concat, data_json, event_names};
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
    fn inspects_tools_and_tool_results() {
        let body = br#"{"model":"m","max_tokens":10,
            "tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
            "messages":[{"role":"user","content":"hi"},
              {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"get_weather","input":{}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"rainy"}]}]}"#;
        let ask = inspect(body, false).unwrap();
        assert_eq!(ask.tools[0].args, r#"{"city":"Paris"}"#);
        assert_eq!(ask.tool_result.as_deref(), Some("rainy"));
    }

    #[test]
    fn json_answers_parse() {
        let mut out = Vec::new();
        let a = Answer::build(&Scenario::of("think"), &weather_ask(false), 8);
        render_json(&mut out, "claude", &a);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["type"], "thinking");
        assert_eq!(v["content"][0]["signature"], SIGNATURE);
        assert_eq!(v["content"][1]["type"], "tool_use");
        assert_eq!(v["content"][1]["input"]["location"], "Paris");
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["usage"]["input_tokens"], 10);

        out.clear();
        render_error(&mut out, 529, "Overloaded");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
    }

    #[test]
    fn stream_events_come_in_order() {
        let a = Answer::build(&Scenario::of("think"), &Ask::plain(true, 40), 3);
        let body = concat(&render_stream("claude", &a).0);
        let mut expected = vec!["message_start", "ping", "content_block_start"];
        expected.extend(std::iter::repeat_n(
            "content_block_delta",
            THINKING.split(' ').count() + 1,
        ));
        expected.extend(["content_block_stop", "content_block_start"]);
        expected.extend(["content_block_delta"; 3]);
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(event_names(&body), expected);
        let data = data_json(&body);
        assert_eq!(data.len(), expected.len());
        for (d, name) in data.iter().zip(&expected) {
            assert_eq!(d["type"], *name);
        }
        let thinking: String = data
            .iter()
            .filter_map(|d| d["delta"]["thinking"].as_str())
            .collect();
        assert_eq!(thinking, THINKING);
        let signature = 3 + THINKING.split(' ').count();
        assert_eq!(data[signature]["delta"]["type"], "signature_delta");
        assert_eq!(data[signature]["delta"]["signature"], SIGNATURE);
        let text: String = data
            .iter()
            .filter_map(|d| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, ANSWER[..ANSWER.find(" the").unwrap() + 4]);
        assert_eq!(data[0]["message"]["usage"]["input_tokens"], 10);
        assert_eq!(
            data[data.len() - 2]["usage"]["output_tokens"],
            a.output_tokens
        );
    }

    #[test]
    fn tool_input_streams_as_partial_json() {
        let a = Answer::build(&Scenario::default(), &weather_ask(true), 8);
        let data = data_json(&concat(&render_stream("claude", &a).0));
        assert_eq!(data[1]["type"], "ping");
        assert_eq!(data[2]["content_block"]["type"], "tool_use");
        let parts: Vec<&str> = data
            .iter()
            .filter_map(|d| d["delta"]["partial_json"].as_str())
            .collect();
        assert!(parts.len() >= 3);
        assert_eq!(parts.concat(), r#"{"location":"Paris"}"#);
        assert_eq!(data[data.len() - 2]["delta"]["stop_reason"], "tool_use");
    }
}
