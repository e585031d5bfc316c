//! Every client protocol against every provider protocol, through the real
//! gateway and the mock provider: text, streams, tool calls, tool results,
//! errors, and the body the provider received.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

/// The four client-facing APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientApi {
    Chat,
    Responses,
    Messages,
    Gemini,
}

const CLIENTS: [ClientApi; 4] = [
    ClientApi::Chat,
    ClientApi::Responses,
    ClientApi::Messages,
    ClientApi::Gemini,
];

/// Provider protocols, by the model name that routes to each.
const PROVIDERS: [(&str, &str); 3] = [
    ("openai", "to-openai"),
    ("anthropic", "to-anthropic"),
    ("gemini", "to-gemini"),
];

/// The gateway and mock, with three providers of the three protocols all
/// backed by the same mock, and models routing to each.
struct Setup {
    mock: Proc,
    gateway: Proc,
}

fn setup() -> Setup {
    setup_with(&[])
}

const ADMIN_KEY: &str = "admin-key-for-tests";

fn setup_with(mock_args: &[&str]) -> Setup {
    let mock = start_mock(mock_args);
    let port = mock.addr.port();
    let mut extra = String::new();
    for (protocol, prefix) in [("anthropic", "/v1"), ("gemini", "/v1beta")] {
        extra.push_str(&format!(
            "\n[[providers]]\nname = \"mock-{protocol}\"\nprotocol = \"{protocol}\"\nbase_url = \"http://127.0.0.1:{port}{prefix}\"\napi_key = \"{PROVIDER_KEY}-{protocol}\"\npool = {{ cooldown_max_ms = 0 }}\n"
        ));
    }
    for (protocol, model) in PROVIDERS {
        let provider = if protocol == "openai" {
            "mock".to_string()
        } else {
            format!("mock-{protocol}")
        };
        for (suffix, upstream) in [
            ("", "mock-model"),
            ("-429", "mock-error-429"),
            ("-400", "mock-error-400"),
            ("-truncate", "mock-stream-truncate"),
            ("-stream-error", "mock-stream-error"),
            ("-think", "mock-think"),
        ] {
            extra.push_str(&format!(
                "\n[[models]]\nname = \"{model}{suffix}\"\nprovider = \"{provider}\"\nupstream_model = \"{upstream}\"\n"
            ));
        }
    }
    let mut builder = ConfigBuilder::for_mock(&mock)
        .no_default_provider()
        .admin_key(ADMIN_KEY);
    // The error scenarios answer 429 on purpose: the keys must not cool
    // down between the cases.
    builder
        .provider_extra
        .push("pool = { cooldown_max_ms = 0 }".to_string());
    builder.extra = extra;
    let gateway = start_gateway(&builder.build());
    Setup { mock, gateway }
}

impl Setup {
    fn addr(&self) -> SocketAddr {
        self.gateway.addr
    }

    fn call(&self, request: Vec<u8>) -> Response {
        Client::connect(self.addr()).request(&request)
    }

    /// The last request the mock received: (request line, headers, body).
    fn last_upstream(&self) -> (String, Vec<(String, String)>, Value) {
        let mut c = Client::connect(self.mock.addr);
        let r = c.request(&get("/mock/last-request"));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let head = v["head"].as_str().expect("head");
        let body = v["body"].as_str().expect("body");
        let mut lines = head.lines();
        let line = lines.next().unwrap().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = serde_json::from_str(body).unwrap_or(Value::Null);
        (line, headers, body)
    }
}

fn weather_tool_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City name"}},
        "required": ["location"],
        "additionalProperties": false,
        "$schema": "http://json-schema.org/draft-07/schema#"
    })
}

/// What a conversation asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// A plain question.
    Text,
    /// A question with a tool declared: the mock calls it.
    ToolCall,
    /// The tool call and its result are in the history: the mock answers.
    ToolResult,
}

const TOOL_RESULT: &str = "18 degrees and sunny";

/// The HTTP request for `api`, in that API's own shape.
fn build_request(api: ClientApi, model: &str, stream: bool, turn: Turn) -> Vec<u8> {
    let schema = weather_tool_schema();
    match api {
        ClientApi::Chat => {
            let mut messages = vec![
                json!({"role": "system", "content": "You are terse."}),
                json!({"role": "user", "content": "Weather in Paris?"}),
            ];
            if turn == Turn::ToolResult {
                messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
                ]}));
                messages.push(
                    json!({"role": "tool", "tool_call_id": "call_abc", "content": TOOL_RESULT}),
                );
            }
            let mut body =
                json!({"model": model, "messages": messages, "max_tokens": 100, "stream": stream});
            if stream {
                body["stream_options"] = json!({"include_usage": true});
            }
            if turn != Turn::Text {
                body["tools"] = json!([{"type": "function", "function": {
                    "name": "get_weather", "description": "Current weather", "parameters": schema}}]);
            }
            post_json("/v1/chat/completions", &body.to_string(), &[])
        }
        ClientApi::Responses => {
            let mut input = vec![
                json!({"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}),
            ];
            if turn == Turn::ToolResult {
                input.push(json!({"type": "function_call", "call_id": "call_abc", "name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}));
                input.push(json!({"type": "function_call_output", "call_id": "call_abc", "output": TOOL_RESULT}));
            }
            let mut body = json!({"model": model, "instructions": "You are terse.", "input": input,
                "max_output_tokens": 100, "stream": stream, "store": false});
            if turn != Turn::Text {
                body["tools"] = json!([{"type": "function", "name": "get_weather",
                    "description": "Current weather", "parameters": schema, "strict": false}]);
            }
            post_json("/v1/responses", &body.to_string(), &[])
        }
        ClientApi::Messages => {
            let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
            if turn == Turn::ToolResult {
                messages.push(json!({"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {"location": "Paris"}}]}));
                messages.push(json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_abc", "content": TOOL_RESULT}]}));
            }
            let mut body = json!({"model": model, "system": "You are terse.", "messages": messages,
                "max_tokens": 100, "stream": stream});
            if turn != Turn::Text {
                body["tools"] = json!([{"name": "get_weather", "description": "Current weather", "input_schema": schema}]);
            }
            post_json(
                "/v1/messages",
                &body.to_string(),
                &["anthropic-version: 2023-06-01"],
            )
        }
        ClientApi::Gemini => {
            let mut contents =
                vec![json!({"role": "user", "parts": [{"text": "Weather in Paris?"}]})];
            if turn == Turn::ToolResult {
                contents.push(json!({"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]}));
                contents.push(json!({"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": TOOL_RESULT}}}]}));
            }
            let mut body = json!({"contents": contents,
                "systemInstruction": {"parts": [{"text": "You are terse."}]},
                "generationConfig": {"maxOutputTokens": 100}});
            if turn != Turn::Text {
                body["tools"] = json!([{"functionDeclarations": [
                    {"name": "get_weather", "description": "Current weather", "parameters": schema}]}]);
            }
            let path = if stream {
                format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("/v1beta/models/{model}:generateContent")
            };
            post_json(&path, &body.to_string(), &[])
        }
    }
}

/// An answer, whatever protocol it came in.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    /// (id, name, arguments)
    tool_calls: Vec<(String, String, Value)>,
    model: String,
    finish: String,
    output_tokens: Option<u64>,
}

fn parse_answer(api: ClientApi, v: &Value) -> Answer {
    let mut a = Answer::default();
    match api {
        ClientApi::Chat => {
            assert_eq!(v["object"], "chat.completion", "{v}");
            let m = &v["choices"][0]["message"];
            assert_eq!(m["role"], "assistant");
            a.text = m["content"].as_str().unwrap_or("").to_string();
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                assert_eq!(c["type"], "function");
                let args = c["function"]["arguments"]
                    .as_str()
                    .expect("arguments string");
                a.tool_calls.push((
                    c["id"].as_str().unwrap().into(),
                    c["function"]["name"].as_str().unwrap().into(),
                    serde_json::from_str(args).expect("arguments JSON"),
                ));
            }
            a.model = v["model"].as_str().unwrap().into();
            a.finish = v["choices"][0]["finish_reason"].as_str().unwrap().into();
            a.output_tokens = v["usage"]["completion_tokens"].as_u64();
        }
        ClientApi::Responses => {
            assert_eq!(v["object"], "response", "{v}");
            for item in v["output"].as_array().expect("output") {
                match item["type"].as_str().unwrap() {
                    "message" => {
                        for c in item["content"].as_array().unwrap() {
                            assert_eq!(c["type"], "output_text");
                            a.text.push_str(c["text"].as_str().unwrap());
                        }
                    }
                    "function_call" => a.tool_calls.push((
                        item["call_id"].as_str().unwrap().into(),
                        item["name"].as_str().unwrap().into(),
                        serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap(),
                    )),
                    _ => {}
                }
            }
            a.model = v["model"].as_str().unwrap().into();
            a.finish = v["status"].as_str().unwrap().into();
            a.output_tokens = v["usage"]["output_tokens"].as_u64();
        }
        ClientApi::Messages => {
            assert_eq!(v["type"], "message", "{v}");
            for b in v["content"].as_array().expect("content") {
                match b["type"].as_str().unwrap() {
                    "text" => a.text.push_str(b["text"].as_str().unwrap()),
                    "tool_use" => a.tool_calls.push((
                        b["id"].as_str().unwrap().into(),
                        b["name"].as_str().unwrap().into(),
                        b["input"].clone(),
                    )),
                    _ => {}
                }
            }
            a.model = v["model"].as_str().unwrap().into();
            a.finish = v["stop_reason"].as_str().unwrap().into();
            a.output_tokens = v["usage"]["output_tokens"].as_u64();
        }
        ClientApi::Gemini => {
            let cand = &v["candidates"][0];
            for p in cand["content"]["parts"].as_array().expect("parts") {
                if let Some(t) = p["text"].as_str() {
                    if p["thought"] != true {
                        a.text.push_str(t);
                    }
                }
                if let Some(fc) = p.get("functionCall") {
                    a.tool_calls.push((
                        fc["id"].as_str().unwrap_or("").into(),
                        fc["name"].as_str().unwrap().into(),
                        fc["args"].clone(),
                    ));
                }
            }
            a.model = v["modelVersion"].as_str().unwrap_or("").into();
            a.finish = cand["finishReason"].as_str().unwrap_or("").into();
            a.output_tokens = v["usageMetadata"]["candidatesTokenCount"].as_u64();
        }
    }
    a
}

/// SSE events of a body: (event name, data).
fn sse_events(body: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for block in body.replace("\r\n", "\n").split("\n\n") {
        if block.trim().is_empty() {
            continue;
        }
        let mut name = String::new();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            }
        }
        events.push((name, data.join("\n")));
    }
    events
}

/// Folds a streamed answer, checking the event sequence the protocol
/// requires on the way. `complete` is false when the stream is expected to
/// end with the protocol's error event.
fn parse_stream(api: ClientApi, body: &str, complete: bool) -> (Answer, Option<Value>) {
    let events = sse_events(body);
    assert!(!events.is_empty(), "no events in {body:?}");
    let mut a = Answer::default();
    let mut error = None;
    match api {
        ClientApi::Chat => {
            let mut args: Vec<(String, String, String)> = Vec::new();
            for (i, (_, data)) in events.iter().enumerate() {
                if data == "[DONE]" {
                    assert_eq!(i, events.len() - 1, "[DONE] must be last");
                    continue;
                }
                let v: Value = serde_json::from_str(data).expect("chunk JSON");
                if v.get("error").is_some() {
                    error = Some(v["error"].clone());
                    continue;
                }
                assert_eq!(v["object"], "chat.completion.chunk");
                a.model = v["model"].as_str().unwrap().into();
                if let Some(u) = v["usage"].as_object() {
                    a.output_tokens = u["completion_tokens"].as_u64();
                }
                let Some(choice) = v["choices"].get(0) else {
                    continue;
                };
                let d = &choice["delta"];
                if let Some(t) = d["content"].as_str() {
                    a.text.push_str(t);
                }
                for tc in d["tool_calls"].as_array().into_iter().flatten() {
                    let idx = tc["index"].as_u64().unwrap() as usize;
                    if idx == args.len() {
                        args.push((
                            tc["id"].as_str().expect("id on the first delta").into(),
                            tc["function"]["name"].as_str().unwrap().into(),
                            String::new(),
                        ));
                    }
                    args[idx]
                        .2
                        .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    a.finish = f.into();
                }
            }
            if complete {
                assert_eq!(events.last().unwrap().1, "[DONE]");
            }
            for (id, name, text) in args {
                a.tool_calls
                    .push((id, name, serde_json::from_str(&text).expect("args JSON")));
            }
        }
        ClientApi::Messages => {
            assert_eq!(events[0].0, "message_start", "{events:?}");
            let mut open: Option<(String, String, String, String)> = None;
            for (name, data) in &events {
                let v: Value = serde_json::from_str(data).expect("event JSON");
                assert_eq!(
                    v["type"].as_str(),
                    Some(name.as_str()),
                    "event name matches type"
                );
                match name.as_str() {
                    "message_start" => a.model = v["message"]["model"].as_str().unwrap().into(),
                    "content_block_start" => {
                        assert!(open.is_none(), "blocks do not overlap");
                        let b = &v["content_block"];
                        open = Some((
                            b["type"].as_str().unwrap().into(),
                            b["id"].as_str().unwrap_or("").into(),
                            b["name"].as_str().unwrap_or("").into(),
                            String::new(),
                        ));
                    }
                    "content_block_delta" => {
                        let d = &v["delta"];
                        let o = open.as_mut().expect("delta inside a block");
                        match d["type"].as_str().unwrap() {
                            "text_delta" => a.text.push_str(d["text"].as_str().unwrap()),
                            "input_json_delta" => o.3.push_str(d["partial_json"].as_str().unwrap()),
                            _ => {}
                        }
                    }
                    "content_block_stop" => {
                        let (kind, id, name, json) = open.take().expect("stop of an open block");
                        if kind == "tool_use" {
                            let args = if json.is_empty() {
                                json!({})
                            } else {
                                serde_json::from_str(&json).unwrap()
                            };
                            a.tool_calls.push((id, name, args));
                        }
                    }
                    "message_delta" => {
                        a.finish = v["delta"]["stop_reason"].as_str().unwrap().into();
                        a.output_tokens = v["usage"]["output_tokens"].as_u64();
                    }
                    "error" => error = Some(v["error"].clone()),
                    "ping" | "message_stop" => {}
                    other => panic!("unexpected event {other}"),
                }
            }
            if complete {
                assert_eq!(events.last().unwrap().0, "message_stop");
            }
        }
        ClientApi::Responses => {
            assert_eq!(events[0].0, "response.created", "{events:?}");
            for (seq, (name, data)) in events.iter().enumerate() {
                let v: Value = serde_json::from_str(data).expect("event JSON");
                assert_eq!(v["type"].as_str(), Some(name.as_str()));
                assert_eq!(v["sequence_number"], seq, "sequence numbers count up");
                match name.as_str() {
                    "response.output_text.delta" => a.text.push_str(v["delta"].as_str().unwrap()),
                    "response.completed" | "response.incomplete" => {
                        let full = parse_answer(ClientApi::Responses, &v["response"]);
                        assert_eq!(full.text, a.text, "completed response repeats the deltas");
                        a.tool_calls = full.tool_calls;
                        a.model = full.model;
                        a.finish = full.finish;
                        a.output_tokens = full.output_tokens;
                    }
                    "error" => error = Some(v.clone()),
                    _ => {}
                }
            }
            if complete {
                assert_eq!(events.last().unwrap().0, "response.completed");
            }
        }
        ClientApi::Gemini => {
            for (_, data) in &events {
                let v: Value = serde_json::from_str(data).expect("chunk JSON");
                if v.get("error").is_some() {
                    error = Some(v["error"].clone());
                    continue;
                }
                let part = parse_answer(ClientApi::Gemini, &v);
                a.text.push_str(&part.text);
                a.tool_calls.extend(part.tool_calls);
                if !part.finish.is_empty() {
                    a.finish = part.finish;
                }
                if part.output_tokens.is_some() {
                    a.output_tokens = part.output_tokens;
                }
                a.model = part.model;
            }
        }
    }
    (a, error)
}

fn same_protocol(api: ClientApi, provider: &str) -> bool {
    matches!(
        (api, provider),
        (ClientApi::Chat, "openai")
            | (ClientApi::Messages, "anthropic")
            | (ClientApi::Gemini, "gemini")
    )
}

#[test]
fn text_answers_reach_every_client_from_every_provider() {
    let s = setup();
    for api in CLIENTS {
        let mut texts = Vec::new();
        for (protocol, model) in PROVIDERS {
            let r = s.call(build_request(api, model, false, Turn::Text));
            assert_eq!(r.status, 200, "{api:?} via {protocol}: {}", r.text());
            let a = parse_answer(api, &r.json());
            assert!(!a.text.is_empty(), "{api:?} via {protocol}: empty text");
            assert!(a.tool_calls.is_empty());
            // Translated answers name the model the client asked for; a
            // same-protocol answer passes through with the provider's name.
            if !same_protocol(api, protocol) {
                assert_eq!(a.model, model, "{api:?} via {protocol}: model");
            }
            assert!(
                a.output_tokens.unwrap_or(0) > 0,
                "{api:?} via {protocol}: usage"
            );
            assert!(
                ["stop", "end_turn", "STOP", "completed"].contains(&a.finish.as_str()),
                "{api:?} via {protocol}: finish {}",
                a.finish
            );
            texts.push(a.text);
        }
        assert!(
            texts.windows(2).all(|w| w[0] == w[1]),
            "{api:?}: same text from every provider: {texts:?}"
        );
    }
}

#[test]
fn streams_reach_every_client_from_every_provider() {
    let s = setup();
    for api in CLIENTS {
        let mut texts = Vec::new();
        for (protocol, model) in PROVIDERS {
            let r = s.call(build_request(api, model, true, Turn::Text));
            assert_eq!(r.status, 200, "{api:?} via {protocol}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("text/event-stream"));
            let (a, error) = parse_stream(api, &r.text(), true);
            assert!(error.is_none(), "{api:?} via {protocol}: {error:?}");
            assert!(!a.text.is_empty(), "{api:?} via {protocol}: empty text");
            assert!(
                !a.finish.is_empty(),
                "{api:?} via {protocol}: no finish reason"
            );
            texts.push(a.text);
        }
        assert!(
            texts.windows(2).all(|w| w[0] == w[1]),
            "{api:?}: same text from every provider: {texts:?}"
        );
    }
}

#[test]
fn tool_calls_and_results_round_trip_for_every_pair() {
    let s = setup();
    for api in CLIENTS {
        for (protocol, model) in PROVIDERS {
            for stream in [false, true] {
                let what = format!("{api:?} via {protocol}, stream {stream}");
                let r = s.call(build_request(api, model, stream, Turn::ToolCall));
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                let a = if stream {
                    let (a, error) = parse_stream(api, &r.text(), true);
                    assert!(error.is_none(), "{what}: {error:?}");
                    a
                } else {
                    parse_answer(api, &r.json())
                };
                assert_eq!(a.tool_calls.len(), 1, "{what}: {a:?}");
                let (id, name, args) = &a.tool_calls[0];
                assert_eq!(name, "get_weather", "{what}");
                assert_eq!(args, &json!({"location": "Paris"}), "{what}");
                if api != ClientApi::Gemini {
                    assert!(!id.is_empty(), "{what}: tool call id");
                }
                assert!(
                    ["tool_calls", "tool_use", "STOP", "completed"].contains(&a.finish.as_str()),
                    "{what}: finish {}",
                    a.finish
                );

                // The provider received the tool in its own protocol.
                let (_, _, upstream) = s.last_upstream();
                let declared = match protocol {
                    "openai" => upstream["tools"][0]["function"]["name"].clone(),
                    "anthropic" => upstream["tools"][0]["name"].clone(),
                    _ => upstream["tools"][0]["functionDeclarations"][0]["name"].clone(),
                };
                assert_eq!(declared, "get_weather", "{what}: upstream body {upstream}");
                if protocol == "gemini" && api != ClientApi::Gemini {
                    let params = &upstream["tools"][0]["functionDeclarations"][0]["parameters"];
                    assert!(
                        params.get("$schema").is_none()
                            && params.get("additionalProperties").is_none(),
                        "{what}: schema cleaned for Gemini: {params}"
                    );
                }

                let r = s.call(build_request(api, model, stream, Turn::ToolResult));
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                let a = if stream {
                    parse_stream(api, &r.text(), true).0
                } else {
                    parse_answer(api, &r.json())
                };
                assert!(a.tool_calls.is_empty(), "{what}: {a:?}");
                assert!(
                    a.text.contains("18 degrees"),
                    "{what}: the tool result reached the provider: {:?}",
                    a.text
                );
            }
        }
    }
}

#[test]
fn tool_call_ids_stay_linked_across_protocols() {
    let s = setup();
    // An OpenAI client's call id reaches an Anthropic provider as the
    // tool_use id and its result's tool_use_id.
    s.call(build_request(
        ClientApi::Chat,
        "to-anthropic",
        false,
        Turn::ToolResult,
    ));
    let (line, headers, body) = s.last_upstream();
    assert!(line.starts_with("POST /v1/messages "), "{line}");
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(
        header("x-api-key"),
        Some(format!("{PROVIDER_KEY}-anthropic"))
    );
    assert!(
        header("authorization").is_none(),
        "no client credentials upstream"
    );
    assert_eq!(body["model"], "mock-model");
    assert_eq!(body["system"], "You are terse.");
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][0]["id"], "call_abc");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], "call_abc");

    // An Anthropic client's tool_use reaches an OpenAI provider as a call
    // and a `tool` message with the same id.
    s.call(build_request(
        ClientApi::Messages,
        "to-openai",
        false,
        Turn::ToolResult,
    ));
    let (line, headers, body) = s.last_upstream();
    assert!(line.starts_with("POST /v1/chat/completions "), "{line}");
    let auth = headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth, Some(format!("Bearer {PROVIDER_KEY}")));
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    assert_eq!(msgs[2]["tool_calls"][0]["id"], "toolu_abc");
    assert_eq!(msgs[3]["role"], "tool");
    assert_eq!(msgs[3]["tool_call_id"], "toolu_abc");
    // `max_completion_tokens`: OpenAI's reasoning models refuse `max_tokens`.
    assert_eq!(body["max_completion_tokens"], 100);

    // A Gemini client (no ids) to an OpenAI provider: generated ids link
    // the call and its response.
    s.call(build_request(
        ClientApi::Gemini,
        "to-openai",
        false,
        Turn::ToolResult,
    ));
    let (_, _, body) = s.last_upstream();
    let msgs = body["messages"].as_array().unwrap();
    let call_id = msgs
        .iter()
        .find_map(|m| m["tool_calls"][0]["id"].as_str())
        .expect("a tool call");
    let result_id = msgs
        .iter()
        .find_map(|m| m["tool_call_id"].as_str())
        .expect("a tool message");
    assert_eq!(call_id, result_id);

    // An OpenAI client to a Gemini provider: the model goes in the path,
    // the key in x-goog-api-key, the tool result as a functionResponse
    // naming the function.
    s.call(build_request(
        ClientApi::Chat,
        "to-gemini",
        true,
        Turn::ToolResult,
    ));
    let (line, headers, body) = s.last_upstream();
    assert!(
        line.starts_with("POST /v1beta/models/mock-model:streamGenerateContent?alt=sse "),
        "{line}"
    );
    let key = headers
        .iter()
        .find(|(k, _)| k == "x-goog-api-key")
        .map(|(_, v)| v.clone());
    assert_eq!(key, Some(format!("{PROVIDER_KEY}-gemini")));
    let contents = body["contents"].as_array().unwrap();
    let response = contents
        .iter()
        .flat_map(|c| c["parts"].as_array().unwrap())
        .find_map(|p| p.get("functionResponse"))
        .expect("a functionResponse");
    assert_eq!(response["name"], "get_weather");
    assert_eq!(
        body["systemInstruction"]["parts"][0]["text"],
        "You are terse."
    );
}

#[test]
fn upstream_errors_reach_the_client_in_its_own_shape() {
    let s = setup();
    for api in CLIENTS {
        for (protocol, model) in PROVIDERS {
            for stream in [false, true] {
                let what = format!("{api:?} via {protocol}, stream {stream}");
                let r = s.call(build_request(
                    api,
                    &format!("{model}-429"),
                    stream,
                    Turn::Text,
                ));
                assert_eq!(r.status, 429, "{what}: {}", r.text());
                assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
                // A same-protocol error passes through as the provider
                // wrote it (OpenAI's own 429 type is `requests`).
                let kind = if same_protocol(api, protocol) {
                    ""
                } else {
                    "rate"
                };
                assert_error_shape(api, &r.json(), kind, &what);
                if protocol != "gemini" {
                    assert!(
                        r.header("retry-after").is_some(),
                        "{what}: retry-after kept"
                    );
                }
            }
        }
    }
}

/// Checks `v` is `api`'s error body and its type/status mentions `kind`.
fn assert_error_shape(api: ClientApi, v: &Value, kind: &str, what: &str) {
    match api {
        ClientApi::Chat | ClientApi::Responses => {
            let e = &v["error"];
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {v}"
            );
            assert!(
                e["type"]
                    .as_str()
                    .is_some_and(|t| t.contains(kind) || kind.is_empty()),
                "{what}: {v}"
            );
        }
        ClientApi::Messages => {
            assert_eq!(v["type"], "error", "{what}: {v}");
            assert!(v["error"]["message"].as_str().is_some(), "{what}: {v}");
            assert!(
                v["error"]["type"]
                    .as_str()
                    .is_some_and(|t| t.contains(kind) || kind.is_empty()),
                "{what}: {v}"
            );
        }
        ClientApi::Gemini => {
            let e = &v["error"];
            assert!(e["code"].as_u64().is_some(), "{what}: {v}");
            assert!(e["message"].as_str().is_some(), "{what}: {v}");
            let status = e["status"].as_str().unwrap_or("");
            if kind == "rate" {
                assert_eq!(status, "RESOURCE_EXHAUSTED", "{what}: {v}");
            }
        }
    }
}

#[test]
fn a_stream_cut_off_upstream_ends_with_the_protocols_error_event() {
    let s = setup();
    for api in CLIENTS {
        for (protocol, model) in PROVIDERS {
            for suffix in ["-truncate", "-stream-error"] {
                let what = format!("{api:?} via {protocol}{suffix}");
                let r = s.call(build_request(
                    api,
                    &format!("{model}{suffix}"),
                    true,
                    Turn::Text,
                ));
                assert_eq!(r.status, 200, "{what}: {}", r.text());
                let (a, error) = parse_stream(api, &r.text(), false);
                assert!(error.is_some(), "{what}: no error event in {:?}", r.text());
                assert!(
                    !a.text.is_empty(),
                    "{what}: the events before the failure arrived"
                );
                let events = sse_events(&r.text());
                let last = events.last().unwrap();
                assert!(
                    last.1 != "[DONE]"
                        && last.0 != "message_stop"
                        && last.0 != "response.completed",
                    "{what}: a failed stream must not look complete: {last:?}"
                );
            }
        }
    }
}

#[test]
fn bad_requests_get_400_in_the_clients_shape() {
    let s = setup();
    let deep = format!(
        "{{\"model\":\"to-openai\",\"messages\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cases: Vec<(ClientApi, &str, String)> = vec![
        (
            ClientApi::Messages,
            "/v1/messages",
            "{\"model\":\"to-openai\",\"messages\":[".into(),
        ),
        (
            ClientApi::Messages,
            "/v1/messages",
            "{\"model\":\"to-openai\",\"max_tokens\":5,\"messages\":\"hi\"}".into(),
        ),
        (
            ClientApi::Messages,
            "/v1/messages",
            "{\"model\":\"to-openai\",\"messages\":[]}".into(),
        ),
        (ClientApi::Messages, "/v1/messages", deep.clone()),
        (
            ClientApi::Chat,
            "/v1/chat/completions",
            "{\"model\":\"to-anthropic\",\"messages\":[{\"role\":\"user\",\"content\":5}]}".into(),
        ),
        (
            ClientApi::Chat,
            "/v1/chat/completions",
            "{\"model\":\"to-anthropic\"}".into(),
        ),
        (
            ClientApi::Responses,
            "/v1/responses",
            "{\"model\":\"to-openai\",\"input\":7}".into(),
        ),
        (
            ClientApi::Responses,
            "/v1/responses",
            "{\"model\":\"to-openai\",\"input\":\"hi\",\"previous_response_id\":\"resp_1\"}".into(),
        ),
        (
            ClientApi::Gemini,
            "/v1beta/models/to-openai:generateContent",
            "{\"contents\":{}}".into(),
        ),
        (
            ClientApi::Gemini,
            "/v1beta/models/to-openai:generateContent",
            "not json".into(),
        ),
        (
            ClientApi::Gemini,
            "/v1beta/models/to-openai:generateContent",
            deep.replace("\"messages\"", "\"contents\""),
        ),
    ];
    for (api, path, body) in cases {
        let what = format!("{api:?} {path} {}", &body[..body.len().min(80)]);
        let headers: &[&str] = if api == ClientApi::Messages {
            &["anthropic-version: 2023-06-01"]
        } else {
            &[]
        };
        let r = s.call(post_json(path, &body, headers));
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_error_shape(api, &r.json(), "", &what);
    }
    // The gateway is still serving.
    let r = s.call(build_request(
        ClientApi::Messages,
        "to-openai",
        false,
        Turn::Text,
    ));
    assert_eq!(r.status, 200);
}

#[test]
fn unknown_models_and_missing_keys_answer_in_the_clients_shape() {
    let s = setup();
    let r = s.call(build_request(
        ClientApi::Messages,
        "no-such-model",
        false,
        Turn::Text,
    ));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = s.call(build_request(
        ClientApi::Gemini,
        "no-such-model",
        false,
        Turn::Text,
    ));
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    let r = s.call(post_json(
        "/v1beta/models/to-openai:embedContent",
        "{}",
        &[],
    ));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], 404);
}

#[test]
fn count_tokens_is_answered_for_every_provider() {
    let s = setup();
    for (protocol, model) in PROVIDERS {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "Hello there, how many tokens is this?"}]});
        let r = s.call(post_json(
            "/v1/messages/count_tokens",
            &body.to_string(),
            &["anthropic-version: 2023-06-01"],
        ));
        assert_eq!(r.status, 200, "{protocol}: {}", r.text());
        assert!(
            r.json()["input_tokens"].as_u64().unwrap() > 0,
            "{protocol}: {}",
            r.text()
        );

        let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hello there, how many tokens is this?"}]}]});
        let r = s.call(post_json(
            &format!("/v1beta/models/{model}:countTokens"),
            &body.to_string(),
            &[],
        ));
        assert_eq!(r.status, 200, "{protocol}: {}", r.text());
        assert!(
            r.json()["totalTokens"].as_u64().unwrap() > 0,
            "{protocol}: {}",
            r.text()
        );
    }
}

#[test]
fn model_lists_come_in_each_protocols_shape() {
    let s = setup();
    let r = s.call(get("/v1/models"));
    assert_eq!(r.json()["object"], "list");
    assert!(r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "to-gemini"));
    let r = s.call(get_with("/v1/models", &["anthropic-version: 2023-06-01"]));
    let v = r.json();
    assert_eq!(v["has_more"], false);
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["type"] == "model"));
    assert_eq!(v["first_id"], v["data"][0]["id"]);
    let r = s.call(get("/v1beta/models"));
    let v = r.json();
    assert!(v["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "models/to-anthropic"));
}

#[test]
fn gemini_streams_without_alt_sse_are_a_json_array() {
    let s = setup();
    for (protocol, model) in PROVIDERS {
        let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]});
        let r = s.call(post_json(
            &format!("/v1beta/models/{model}:streamGenerateContent"),
            &body.to_string(),
            &[],
        ));
        assert_eq!(r.status, 200, "{protocol}: {}", r.text());
        let v = r.json();
        let chunks = v
            .as_array()
            .unwrap_or_else(|| panic!("{protocol}: an array: {v}"));
        assert!(chunks.len() >= 2, "{protocol}: {v}");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
            .collect();
        assert!(!text.is_empty(), "{protocol}");
        assert!(
            chunks
                .iter()
                .any(|c| c["candidates"][0]["finishReason"].is_string()),
            "{protocol}: {v}"
        );
    }
}

#[test]
fn thinking_reaches_clients_that_can_show_it() {
    let s = setup();
    for (protocol, model) in PROVIDERS {
        let model = format!("{model}-think");
        // Anthropic client: thinking block first, text after.
        let r = s.call(build_request(
            ClientApi::Messages,
            &model,
            false,
            Turn::Text,
        ));
        assert_eq!(r.status, 200, "{protocol}: {}", r.text());
        let v = r.json();
        let kinds: Vec<&str> = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["type"].as_str())
            .collect();
        // Thinking from another provider has no Anthropic signature, and
        // an unsigned thinking block cannot be sent back: the text always
        // arrives, the thinking when the provider is Anthropic.
        assert!(kinds.contains(&"text"), "{protocol}: {v}");
        if protocol == "anthropic" {
            assert_eq!(kinds[0], "thinking", "{protocol}: {v}");
        }
        // OpenAI client: reasoning_content beside the answer.
        let r = s.call(build_request(ClientApi::Chat, &model, false, Turn::Text));
        let v = r.json();
        let m = &v["choices"][0]["message"];
        assert!(
            m["reasoning_content"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{protocol}: {v}"
        );
        assert!(
            m["content"].as_str().is_some_and(|t| !t.is_empty()),
            "{protocol}: {v}"
        );
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for up to `secs`.
fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_leaves_mid_stream_ends_the_upstream_request() {
    // 100 events 50 ms apart: the upstream would stream for 5 s.
    let s = setup_with(&["--stream-chunks", "100", "--chunk-interval-ms", "50"]);
    let admin = format!("Authorization: Bearer {ADMIN_KEY}");
    for (api, model) in [
        (ClientApi::Messages, "to-openai"),
        (ClientApi::Chat, "to-gemini"),
        (ClientApi::Chat, "to-openai"),
    ] {
        let mut c = Client::connect(s.addr());
        c.send(&build_request(api, model, true, Turn::Text));
        let head = c.read_head().expect("a head");
        assert_eq!(head.status, 200);
        c.read_chunk().expect("a first chunk").expect("not the end");
        let in_flight = |c: &mut Client| {
            c.request(&get_with("/admin/requests", &[&admin])).json()["in_flight"].as_u64()
        };
        assert_eq!(
            in_flight(&mut Client::connect(s.addr())),
            Some(1),
            "{api:?} via {model}"
        );
        drop(c);
        // The gateway notices at its next write, drops the upstream
        // connection (never pooling a half-read stream) and forgets the
        // request, long before the upstream would have finished.
        let started = std::time::Instant::now();
        poll(3, || {
            (in_flight(&mut Client::connect(s.addr())) == Some(0)).then_some(())
        })
        .unwrap_or_else(|| panic!("{api:?} via {model}: still in flight after the client left"));
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
        let idle: f64 = poll(3, || {
            let text = Client::connect(s.addr()).request(&get("/metrics")).text();
            let idle: f64 = text
                .lines()
                .filter(|l| l.starts_with("shardgate_upstream_idle_connections{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum();
            Some(idle)
        })
        .unwrap();
        assert_eq!(
            idle, 0.0,
            "{api:?} via {model}: the abandoned upstream connection was not pooled"
        );
    }
}
