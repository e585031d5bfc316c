//! The mock provider on its own, over loopback HTTP: each protocol (OpenAI,
//! Anthropic, Gemini) x {JSON, stream} x {text, tool call, tool result,
//! thinking, errors}, plus the cut-short streams and the side endpoints.
//! Every answer is read back into one protocol-neutral [`Summary`], so the
//! same expectations hold for all three protocols.

mod common;

use common::*;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    OpenAi,
    Anthropic,
    Gemini,
}

const ALL: [Proto; 3] = [Proto::OpenAi, Proto::Anthropic, Proto::Gemini];

/// What a conversation sent to the mock contains.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Convo {
    /// One user message.
    Plain,
    /// One user message and the get_weather tool.
    Tools,
    /// The tool was called and its result is the last message.
    ToolResult,
}

const TOOL_RESULT: &str = "22 degrees and sunny";

fn weather_schema() -> Value {
    json!({"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location"]})
}

fn time_schema() -> Value {
    json!({"type":"object","properties":{"zone":{"type":"string"},"utc":{"type":"boolean"},"offset":{"type":"integer"}}})
}

/// The request (path, body) for `proto`.
fn request(proto: Proto, model: &str, stream: bool, convo: Convo) -> (String, String) {
    let tools = convo != Convo::Plain;
    let ask = "What is the weather in Paris?";
    match proto {
        Proto::OpenAi => {
            let mut messages = vec![json!({"role":"user","content":ask})];
            if convo == Convo::ToolResult {
                messages.push(json!({"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]}));
                messages.push(json!({"role":"tool","tool_call_id":"call_1","content":TOOL_RESULT}));
            }
            let mut body = json!({"model":model,"stream":stream,"messages":messages});
            if stream {
                body["stream_options"] = json!({"include_usage":true});
            }
            if tools {
                body["tools"] = json!([
                    {"type":"function","function":{"name":"get_weather","parameters":weather_schema()}},
                    {"type":"function","function":{"name":"get_time","parameters":time_schema()}}
                ]);
            }
            ("/v1/chat/completions".into(), body.to_string())
        }
        Proto::Anthropic => {
            let mut messages = vec![json!({"role":"user","content":ask})];
            if convo == Convo::ToolResult {
                messages.push(json!({"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"location":"Paris"}}]}));
                messages.push(json!({"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":TOOL_RESULT}]}]}));
            }
            let mut body =
                json!({"model":model,"max_tokens":256,"stream":stream,"messages":messages});
            if tools {
                body["tools"] = json!([
                    {"name":"get_weather","description":"Weather","input_schema":weather_schema()},
                    {"name":"get_time","input_schema":time_schema()}
                ]);
            }
            ("/v1/messages".into(), body.to_string())
        }
        Proto::Gemini => {
            let mut contents = vec![json!({"role":"user","parts":[{"text":ask}]})];
            if convo == Convo::ToolResult {
                contents.push(json!({"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"location":"Paris"}}}]}));
                contents.push(json!({"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"result":TOOL_RESULT}}}]}));
            }
            let mut body = json!({"contents":contents});
            if tools {
                body["tools"] = json!([{"functionDeclarations":[
                    {"name":"get_weather","parameters":weather_schema()},
                    {"name":"get_time","parameters":time_schema()}
                ]}]);
            }
            let path = if stream {
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("/v1beta/models/{model}:generateContent")
            };
            (path, body.to_string())
        }
    }
}

fn headers(proto: Proto) -> Vec<&'static str> {
    match proto {
        Proto::OpenAi => vec!["Authorization: Bearer sk-test"],
        Proto::Anthropic => vec!["x-api-key: sk-ant-test", "anthropic-version: 2023-06-01"],
        Proto::Gemini => vec!["x-goog-api-key: test"],
    }
}

/// An answer in no protocol in particular.
#[derive(Debug, Default)]
struct Summary {
    thinking: String,
    text: String,
    /// (id, name, arguments)
    calls: Vec<(String, String, Value)>,
    /// `stop`, `tool_calls` / `end_turn`, `tool_use` / `STOP`.
    finish: String,
    input_tokens: u64,
    output_tokens: u64,
}

/// One SSE event: (name, data).
fn sse_events(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("\r\n", "\n");
    assert!(
        text.ends_with("\n\n"),
        "SSE body ends with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Vec::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

fn parse(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"))
}

fn summarize_json(proto: Proto, v: &Value) -> Summary {
    let mut s = Summary::default();
    match proto {
        Proto::OpenAi => {
            assert_eq!(v["object"], "chat.completion");
            let msg = &v["choices"][0]["message"];
            assert_eq!(msg["role"], "assistant");
            s.text = msg["content"].as_str().unwrap_or_default().to_string();
            s.thinking = msg["reasoning_content"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for call in msg["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(call["type"], "function");
                let args = call["function"]["arguments"]
                    .as_str()
                    .expect("arguments string");
                s.calls.push((
                    call["id"].as_str().unwrap().into(),
                    call["function"]["name"].as_str().unwrap().into(),
                    parse(args),
                ));
            }
            s.finish = v["choices"][0]["finish_reason"].as_str().unwrap().into();
            s.input_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
            s.output_tokens = v["usage"]["completion_tokens"].as_u64().unwrap();
            assert_eq!(
                v["usage"]["total_tokens"].as_u64().unwrap(),
                s.input_tokens + s.output_tokens
            );
        }
        Proto::Anthropic => {
            assert_eq!(v["type"], "message");
            assert_eq!(v["role"], "assistant");
            for block in v["content"].as_array().unwrap() {
                match block["type"].as_str().unwrap() {
                    "thinking" => {
                        assert!(block["signature"].as_str().is_some_and(|s| !s.is_empty()));
                        s.thinking.push_str(block["thinking"].as_str().unwrap());
                    }
                    "text" => s.text.push_str(block["text"].as_str().unwrap()),
                    "tool_use" => s.calls.push((
                        block["id"].as_str().unwrap().into(),
                        block["name"].as_str().unwrap().into(),
                        block["input"].clone(),
                    )),
                    other => panic!("unexpected block {other}"),
                }
            }
            assert_eq!(v["stop_sequence"], Value::Null);
            s.finish = v["stop_reason"].as_str().unwrap().into();
            s.input_tokens = v["usage"]["input_tokens"].as_u64().unwrap();
            s.output_tokens = v["usage"]["output_tokens"].as_u64().unwrap();
        }
        Proto::Gemini => gemini_chunk(&mut s, v),
    }
    s
}

/// Adds a Gemini response (whole or one chunk) to `s`.
fn gemini_chunk(s: &mut Summary, v: &Value) {
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    for part in cand["content"]["parts"].as_array().unwrap() {
        if let Some(call) = part.get("functionCall") {
            s.calls.push((
                String::new(),
                call["name"].as_str().unwrap().into(),
                call["args"].clone(),
            ));
        } else if part["thought"] == true {
            s.thinking.push_str(part["text"].as_str().unwrap());
        } else {
            s.text.push_str(part["text"].as_str().unwrap());
        }
    }
    if let Some(f) = cand["finishReason"].as_str() {
        s.finish = f.into();
    }
    let u = &v["usageMetadata"];
    s.input_tokens = u["promptTokenCount"].as_u64().unwrap();
    let thoughts = u["thoughtsTokenCount"].as_u64().unwrap_or(0);
    s.output_tokens = u["candidatesTokenCount"].as_u64().unwrap() + thoughts;
    assert_eq!(
        u["totalTokenCount"].as_u64().unwrap(),
        s.input_tokens + s.output_tokens
    );
}

fn summarize_stream(proto: Proto, body: &[u8]) -> Summary {
    let events = sse_events(body);
    let mut s = Summary::default();
    match proto {
        Proto::OpenAi => {
            assert_eq!(events.last().unwrap().1, "[DONE]");
            let mut args: Vec<String> = Vec::new();
            for (name, data) in &events[..events.len() - 1] {
                assert_eq!(name, "");
                let v = parse(data);
                assert_eq!(v["object"], "chat.completion.chunk");
                if let Some(u) = v["usage"].as_object() {
                    assert_eq!(v["choices"], json!([]), "usage comes alone, last");
                    s.input_tokens = u["prompt_tokens"].as_u64().unwrap();
                    s.output_tokens = u["completion_tokens"].as_u64().unwrap();
                    continue;
                }
                let choice = &v["choices"][0];
                let delta = &choice["delta"];
                if let Some(t) = delta["content"].as_str() {
                    s.text.push_str(t);
                }
                if let Some(t) = delta["reasoning_content"].as_str() {
                    s.thinking.push_str(t);
                }
                for call in delta["tool_calls"].as_array().into_iter().flatten() {
                    let i = call["index"].as_u64().unwrap() as usize;
                    if let Some(id) = call["id"].as_str() {
                        assert_eq!(i, s.calls.len(), "a new call takes the next index");
                        let name = call["function"]["name"].as_str().unwrap();
                        s.calls.push((id.into(), name.into(), Value::Null));
                        args.push(String::new());
                    }
                    args[i].push_str(call["function"]["arguments"].as_str().unwrap());
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    s.finish = f.into();
                }
            }
            for (call, args) in s.calls.iter_mut().zip(args) {
                call.2 = parse(&args);
            }
        }
        Proto::Anthropic => {
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names[..2], ["message_start", "ping"]);
            assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
            let mut open: Option<(u64, String)> = None;
            let mut args = String::new();
            for (name, data) in &events {
                let v = parse(data);
                assert_eq!(v["type"], name.as_str(), "event name matches data type");
                match name.as_str() {
                    "message_start" => {
                        s.input_tokens = v["message"]["usage"]["input_tokens"].as_u64().unwrap()
                    }
                    "content_block_start" => {
                        assert!(open.is_none(), "blocks do not overlap");
                        let block = &v["content_block"];
                        let kind = block["type"].as_str().unwrap().to_string();
                        if kind == "tool_use" {
                            assert_eq!(block["input"], json!({}));
                            s.calls.push((
                                block["id"].as_str().unwrap().into(),
                                block["name"].as_str().unwrap().into(),
                                Value::Null,
                            ));
                            args.clear();
                        }
                        open = Some((v["index"].as_u64().unwrap(), kind));
                    }
                    "content_block_delta" => {
                        let (index, kind) = open.as_ref().expect("delta inside a block");
                        assert_eq!(v["index"], *index);
                        let d = &v["delta"];
                        match (kind.as_str(), d["type"].as_str().unwrap()) {
                            ("text", "text_delta") => s.text.push_str(d["text"].as_str().unwrap()),
                            ("thinking", "thinking_delta") => {
                                s.thinking.push_str(d["thinking"].as_str().unwrap())
                            }
                            ("thinking", "signature_delta") => {
                                assert!(!d["signature"].as_str().unwrap().is_empty())
                            }
                            ("tool_use", "input_json_delta") => {
                                args.push_str(d["partial_json"].as_str().unwrap())
                            }
                            other => panic!("unexpected delta {other:?}"),
                        }
                    }
                    "content_block_stop" => {
                        let (index, kind) = open.take().expect("stop of an open block");
                        assert_eq!(v["index"], index);
                        if kind == "tool_use" {
                            s.calls.last_mut().unwrap().2 = parse(&args);
                        }
                    }
                    "message_delta" => {
                        s.finish = v["delta"]["stop_reason"].as_str().unwrap().into();
                        s.output_tokens = v["usage"]["output_tokens"].as_u64().unwrap();
                    }
                    "ping" | "message_stop" => {}
                    other => panic!("unexpected event {other}"),
                }
            }
        }
        Proto::Gemini => {
            for (name, data) in &events {
                assert_eq!(name, "");
                gemini_chunk(&mut s, &parse(data));
            }
        }
    }
    s
}

/// Sends the request and reads the answer back into a [`Summary`].
fn ask(mock: &Proc, proto: Proto, model: &str, stream: bool, convo: Convo) -> (Summary, usize) {
    let (path, body) = request(proto, model, stream, convo);
    let r = roundtrip(mock.addr, &post_json(&path, &body, &headers(proto)));
    assert_eq!(r.status, 200, "{proto:?} {model}: {}", r.text());
    let summary = if stream {
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        assert_eq!(r.framing, Framing::Chunked);
        summarize_stream(proto, &r.body)
    } else {
        assert_eq!(r.header("content-type"), Some("application/json"));
        summarize_json(proto, &r.json())
    };
    (summary, body.len())
}

fn stop_reason(proto: Proto, tool: bool) -> &'static str {
    match (proto, tool) {
        (Proto::OpenAi, false) => "stop",
        (Proto::OpenAi, true) => "tool_calls",
        (Proto::Anthropic, false) => "end_turn",
        (Proto::Anthropic, true) => "tool_use",
        (Proto::Gemini, _) => "STOP",
    }
}

#[test]
fn canned_text_with_usage() {
    let mock = start_mock(&[]);
    for proto in ALL {
        for stream in [false, true] {
            let (s, len) = ask(&mock, proto, "mock-model", stream, Convo::Plain);
            let expected = if stream {
                MOCK_WORDS.concat()
            } else {
                MOCK_ANSWER.to_string()
            };
            assert_eq!(s.text, expected, "{proto:?} stream={stream}");
            assert!(s.thinking.is_empty() && s.calls.is_empty());
            assert_eq!(s.finish, stop_reason(proto, false));
            assert_eq!(s.input_tokens, len as u64 / 4, "{proto:?}");
            assert_eq!(s.output_tokens, 8, "{proto:?}");
        }
    }
}

#[test]
fn tools_are_called_with_arguments_from_their_schema() {
    let mock = start_mock(&[]);
    for proto in ALL {
        for stream in [false, true] {
            let (s, _) = ask(&mock, proto, "mock-model", stream, Convo::Tools);
            assert_eq!(s.calls.len(), 1, "{proto:?} stream={stream}: {s:?}");
            let (id, name, args) = &s.calls[0];
            assert_eq!(name, "get_weather");
            assert_eq!(args, &json!({"location":"Paris","unit":"celsius"}));
            match proto {
                Proto::OpenAi => assert_eq!(id, "call_mock_0"),
                Proto::Anthropic => assert_eq!(id, "toolu_mock_0"),
                Proto::Gemini => {}
            }
            assert!(s.text.is_empty());
            assert_eq!(s.finish, stop_reason(proto, true));
        }
    }
}

#[test]
fn parallel_tools_call_the_first_two_tools() {
    let mock = start_mock(&[]);
    for proto in ALL {
        for stream in [false, true] {
            let (s, _) = ask(&mock, proto, "mock-parallel-tools", stream, Convo::Tools);
            let names: Vec<&str> = s.calls.iter().map(|c| c.1.as_str()).collect();
            assert_eq!(
                names,
                ["get_weather", "get_time"],
                "{proto:?} stream={stream}"
            );
            assert_eq!(s.calls[1].2, json!({"zone":"mock","utc":true,"offset":1}));
            if proto != Proto::Gemini {
                assert_ne!(s.calls[0].0, s.calls[1].0, "distinct call ids");
            }
        }
    }
}

#[test]
fn a_tool_result_is_answered_with_text() {
    let mock = start_mock(&[]);
    for proto in ALL {
        for stream in [false, true] {
            let (s, _) = ask(&mock, proto, "mock-model", stream, Convo::ToolResult);
            assert_eq!(
                s.text,
                format!("The tool said: {TOOL_RESULT}"),
                "{proto:?} stream={stream}"
            );
            assert!(s.calls.is_empty());
            assert_eq!(s.finish, stop_reason(proto, false));
        }
    }
}

#[test]
fn think_models_reason_first() {
    let mock = start_mock(&[]);
    for proto in ALL {
        for stream in [false, true] {
            let (s, _) = ask(&mock, proto, "mock-think", stream, Convo::Plain);
            assert!(s.thinking.len() > 10, "{proto:?} stream={stream}: {s:?}");
            assert!(s.text.starts_with("Hello from"));
            assert!(s.output_tokens > 8);
            let (s, _) = ask(&mock, proto, "mock-think", stream, Convo::Tools);
            assert!(!s.thinking.is_empty() && s.calls.len() == 1);
        }
    }
}

#[test]
fn errors_have_each_protocols_shape() {
    let mock = start_mock(&[]);
    for proto in ALL {
        for status in [400u16, 401, 429, 500, 529] {
            let model = format!("mock-error-{status}");
            let (path, body) = request(proto, &model, false, Convo::Plain);
            let r = roundtrip(mock.addr, &post_json(&path, &body, &headers(proto)));
            assert_eq!(r.status, status, "{proto:?}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("retry-after").is_some(), status == 429);
            let v = r.json();
            match proto {
                Proto::OpenAi => {
                    assert!(v["error"]["message"].is_string());
                    assert!(v["error"]["type"].is_string());
                    assert!(v["error"].get("code").is_some());
                }
                Proto::Anthropic => {
                    assert_eq!(v["type"], "error");
                    let kind = match status {
                        400 => "invalid_request_error",
                        401 => "authentication_error",
                        429 => "rate_limit_error",
                        529 => "overloaded_error",
                        _ => "api_error",
                    };
                    assert_eq!(v["error"]["type"], kind);
                    assert!(v["error"]["message"].is_string());
                }
                Proto::Gemini => {
                    assert_eq!(v["error"]["code"], status);
                    assert!(v["error"]["message"].is_string());
                    assert!(v["error"]["status"].is_string());
                }
            }
        }
    }
    // The historical OpenAI codes the gateway's tests rely on.
    let r = roundtrip(mock.addr, &chat("mock-error-429", &[]));
    r.assert_error(429, "rate_limited");
    let r = roundtrip(mock.addr, &chat("mock-error-500", &[]));
    r.assert_error(500, "mock_error");
}

#[test]
fn stream_errors_end_the_body_with_the_protocols_error_event() {
    let mock = start_mock(&[]);
    for proto in ALL {
        let (path, body) = request(proto, "mock-stream-error", true, Convo::Plain);
        let r = roundtrip(mock.addr, &post_json(&path, &body, &headers(proto)));
        assert_eq!(r.status, 200);
        let events = sse_events(&r.body);
        let (name, data) = events.last().unwrap();
        let v = parse(data);
        match proto {
            Proto::OpenAi => {
                assert!(v["error"]["message"].is_string(), "{v}");
                assert!(!r.text().contains("[DONE]"));
            }
            Proto::Anthropic => {
                assert_eq!(name, "error");
                assert_eq!(v["type"], "error");
                assert_eq!(v["error"]["type"], "overloaded_error");
                assert!(!r.text().contains("message_stop"));
            }
            Proto::Gemini => {
                assert_eq!(v["error"]["code"], 500);
                assert!(!r.text().contains("finishReason"));
            }
        }
        let contents = r.text().matches("Hello").count() + r.text().matches(" from").count();
        assert_eq!(contents, 2, "{proto:?}: some content came first");
    }
}

#[test]
fn truncated_streams_close_mid_body() {
    let mock = start_mock(&[]);
    for proto in ALL {
        let (path, body) = request(proto, "mock-stream-truncate", true, Convo::Plain);
        let mut c = Client::connect(mock.addr);
        c.send(&post_json(&path, &body, &headers(proto)));
        let head = c.read_head().unwrap();
        assert_eq!(head.status, 200);
        let mut received = Vec::new();
        let end = loop {
            match c.read_chunk() {
                Ok(Some(data)) => received.extend_from_slice(&data),
                Ok(None) => panic!("{proto:?}: the body was ended properly"),
                Err(e) => break e,
            }
        };
        assert_eq!(end.kind(), std::io::ErrorKind::UnexpectedEof, "{end}");
        let text = String::from_utf8(received).unwrap();
        assert!(text.contains("Hello"), "{proto:?}: {text}");
        for terminal in [
            "[DONE]",
            "message_stop",
            "finishReason",
            "finish_reason\":\"stop",
        ] {
            assert!(!text.contains(terminal), "{proto:?}: {text}");
        }
    }
}

#[test]
fn gemini_streams_a_json_array_without_alt_sse() {
    let mock = start_mock(&["--stream-chunks", "4"]);
    let (_, body) = request(Proto::Gemini, "gemini-think", true, Convo::Plain);
    let r = roundtrip(
        mock.addr,
        &post_json(
            "/v1beta/models/gemini-think:streamGenerateContent",
            &body,
            &[],
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.body.starts_with(b"[{") && r.text().contains("}\r\n,{"));
    let chunks = r.json();
    let mut s = Summary::default();
    for chunk in chunks.as_array().unwrap() {
        gemini_chunk(&mut s, chunk);
    }
    assert!(!s.thinking.is_empty());
    assert_eq!(s.text, MOCK_WORDS[..4].concat());
    assert_eq!(s.finish, "STOP");
}

#[test]
fn token_counts_model_lists_stats_and_recording() {
    let mock = start_mock(&[]);
    let body = r#"{"model":"claude-x","messages":[{"role":"user","content":"Hello there"}]}"#;
    let r = roundtrip(
        mock.addr,
        &post_json(
            "/v1/messages/count_tokens",
            body,
            &["anthropic-version: 2023-06-01"],
        ),
    );
    assert_eq!(r.json(), json!({"input_tokens": body.len() / 4}));
    let rec = mock_last_request(&mock).unwrap();
    assert_eq!(
        rec.request_line(),
        "POST /v1/messages/count_tokens HTTP/1.1"
    );
    assert_eq!(rec.header_values("anthropic-version"), ["2023-06-01"]);

    let body = r#"{"contents":[{"parts":[{"text":"Hello"}]}]}"#;
    let r = roundtrip(
        mock.addr,
        &post_json("/v1beta/models/gemini-x:countTokens", body, &[]),
    );
    assert_eq!(r.json()["totalTokens"], body.len() / 4);

    let r = roundtrip(mock.addr, &get("/v1beta/models"));
    assert_eq!(r.json()["models"][0]["name"], "models/mock-model");
    let r = roundtrip(mock.addr, &get("/v1/models"));
    assert_eq!(r.json()["data"][0]["object"], "model");
    let r = roundtrip(
        mock.addr,
        &get_with("/v1/models", &["anthropic-version: 2023-06-01"]),
    );
    assert_eq!(r.json()["data"][0]["type"], "model");

    ask(&mock, Proto::Gemini, "gemini-x", false, Convo::Plain);
    let rec = mock_last_request(&mock).unwrap();
    assert_eq!(
        rec.request_line(),
        "POST /v1beta/models/gemini-x:generateContent HTTP/1.1"
    );
    ask(&mock, Proto::OpenAi, "gpt-x", true, Convo::Plain);
    ask(&mock, Proto::Anthropic, "claude-x", false, Convo::Plain);
    assert!(mock_last_request(&mock).unwrap().body.contains("claude-x"));

    let v = roundtrip(mock.addr, &get("/mock/stats")).json();
    assert_eq!(v["chat_requests"], 3, "{v}");
    assert_eq!(v["openai_requests"], 1, "{v}");
    assert_eq!(v["anthropic_requests"], 2, "{v}");
    assert_eq!(v["gemini_requests"], 2, "{v}");

    // Bodies that are not JSON are refused in the protocol's shape.
    let r = roundtrip(mock.addr, &post_json("/v1/messages", "{nope", &[]));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    let r = roundtrip(
        mock.addr,
        &post_json("/v1beta/models/g:generateContent", "{nope", &[]),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
}
