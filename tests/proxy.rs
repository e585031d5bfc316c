//! Forwarding chat requests to the provider: bodies, model rewrite,
//! credentials, header hygiene, routing errors, upstream statuses.

mod common;

use common::*;

#[test]
fn non_stream_chat_is_proxied() {
    let (mock, gw) = start_pair(&[], |c| c);
    let body = chat_body("plain-model", false);
    let r = roundtrip(gw.addr, &post_json("/v1/chat/completions", &body, &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "chatcmpl-mock");
    assert_eq!(v["model"], "plain-model");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], MOCK_ANSWER);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // The mock counts a quarter of the body's bytes in, one per word out.
    assert_eq!(v["usage"]["prompt_tokens"], body.len() / 4);
    assert_eq!(v["usage"]["total_tokens"], body.len() / 4 + 8);
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );

    let rec = mock_last_request(&mock).expect("the mock saw the request");
    assert_eq!(rec.request_line(), "POST /v1/chat/completions HTTP/1.1");
    // Without a rewrite, the body is forwarded byte for byte.
    assert_eq!(rec.body, body);
    assert_eq!(
        rec.header_values("host"),
        vec![format!("127.0.0.1:{}", mock.addr.port())]
    );
    assert_eq!(
        rec.header_values("content-length"),
        vec![body.len().to_string()]
    );
    assert_eq!(rec.header_values("content-type"), vec!["application/json"]);
    assert_eq!(mock_stats(&mock).chat_requests, 1);
}

#[test]
fn model_is_rewritten_to_upstream_model() {
    let (mock, gw) = start_pair(&[], |c| {
        c.model("friendly-name", Some("mock-model-2024-07-18"))
    });
    let body = r#"{"model": "friendly-name", "temperature": 0.5, "messages":[{"role":"user","content":"model: friendly-name"}], "stream": false}"#;
    let r = roundtrip(gw.addr, &post_json("/v1/chat/completions", body, &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "mock-model-2024-07-18");

    let rec = mock_last_request(&mock).unwrap();
    // Only the model token changes; every other byte is the client's,
    // including the same text inside a message.
    let expected = body.replacen("\"friendly-name\"", "\"mock-model-2024-07-18\"", 1);
    assert_eq!(rec.body, expected);
    assert_eq!(
        rec.header_values("content-length"),
        vec![expected.len().to_string()]
    );
    let v = rec.body_json();
    assert_eq!(v["model"], "mock-model-2024-07-18");
    assert_eq!(v["messages"][0]["content"], "model: friendly-name");
}

#[test]
fn listed_model_without_rewrite_keeps_its_name() {
    let (mock, gw) = start_pair(&[], |c| c.model("listed-model", None).no_default_provider());
    let r = roundtrip(gw.addr, &chat("listed-model", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "listed-model");
    assert_eq!(
        mock_last_request(&mock).unwrap().body_json()["model"],
        "listed-model"
    );
}

#[test]
fn rewrite_escapes_the_upstream_model_name() {
    let (mock, gw) = start_pair(&[], |c| c.model("q", Some("we\"ird\\name")));
    let r = roundtrip(gw.addr, &chat("q", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        mock_last_request(&mock).unwrap().body_json()["model"],
        "we\"ird\\name"
    );
    assert_eq!(r.json()["model"], "we\"ird\\name");
}

#[test]
fn provider_key_replaces_the_client_key() {
    let (mock, gw) = start_pair(&[], |c| c);
    let r = roundtrip(
        gw.addr,
        &chat(
            "key-model",
            &[
                "Authorization: Bearer sk-client-key-999",
                "X-Api-Key: sk-client-key-888",
                "X-Goog-Api-Key: sk-client-key-777",
                "Cookie: session=sk-client-cookie",
            ],
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = mock_last_request(&mock).unwrap();
    assert_eq!(
        rec.header_values("authorization"),
        vec![format!("Bearer {PROVIDER_KEY}")]
    );
    for leaked in [
        "sk-client-key-999",
        "sk-client-key-888",
        "sk-client-key-777",
        "sk-client-cookie",
    ] {
        assert!(
            !rec.head.contains(leaked),
            "{leaked} forwarded: {}",
            rec.head
        );
    }
    assert!(rec.header_values("x-api-key").is_empty());
    assert!(rec.header_values("x-goog-api-key").is_empty());
    assert!(rec.header_values("cookie").is_empty());
    // And the provider key never comes back to the client.
    assert!(!r.text().contains(PROVIDER_KEY));
    assert!(r.headers.iter().all(|(_, v)| !v.contains(PROVIDER_KEY)));
}

#[test]
fn hop_by_hop_headers_are_dropped_and_end_to_end_ones_forwarded() {
    let (mock, gw) = start_pair(&[], |c| c);
    let r = roundtrip(
        gw.addr,
        &chat(
            "hdr-model",
            &[
                "X-Request-Tag: tag-42",
                "OpenAI-Organization: org-test",
                "Connection: keep-alive",
                "Keep-Alive: timeout=5",
                "TE: trailers",
                "Upgrade: websocket",
                "Proxy-Authorization: Basic c2VjcmV0",
                "Accept-Encoding: gzip",
            ],
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = mock_last_request(&mock).unwrap();
    assert_eq!(rec.header_values("x-request-tag"), vec!["tag-42"]);
    assert_eq!(rec.header_values("openai-organization"), vec!["org-test"]);
    for dropped in [
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "accept-encoding",
        "transfer-encoding",
    ] {
        assert!(
            rec.header_values(dropped).is_empty(),
            "{dropped} forwarded: {}",
            rec.head
        );
    }
    assert_eq!(rec.header_values("host").len(), 1, "{}", rec.head);
    assert_eq!(rec.header_values("content-length").len(), 1, "{}", rec.head);
    assert!(rec.header_values("connection").len() <= 1, "{}", rec.head);
    assert!(
        rec.header_values("connection")
            .iter()
            .all(|v| !v.eq_ignore_ascii_case("upgrade")),
        "{}",
        rec.head
    );
}

#[test]
fn unknown_model_without_default_provider_is_404() {
    let (mock, gw) = start_pair(&[], |c| c.model("only-model", None).no_default_provider());
    let r = roundtrip(gw.addr, &chat("other-model", &[]));
    let err = r.assert_error(404, "model_not_found");
    assert_eq!(err["type"], "invalid_request_error");
    assert!(
        err["message"].as_str().unwrap().contains("other-model"),
        "{err}"
    );
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn malformed_json_is_400_and_not_forwarded() {
    let (mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&post_json(
        "/v1/chat/completions",
        r#"{"model":"x","messages":[}"#,
        &[],
    ));
    r.assert_error(400, "invalid_json");
    let r = c.request(&post_json("/v1/chat/completions", "", &[]));
    r.assert_error(400, "invalid_json");
    let r = c.request(&post_json("/v1/chat/completions", r#"["model"]"#, &[]));
    r.assert_error(400, "invalid_request");
    let r = c.request(&post_json(
        "/v1/chat/completions",
        r#"{"messages":[]}"#,
        &[],
    ));
    r.assert_error(400, "missing_model");
    let r = c.request(&post_json(
        "/v1/chat/completions",
        r#"{"model":42,"messages":[]}"#,
        &[],
    ));
    r.assert_error(400, "invalid_type");
    let r = c.request(&post_json(
        "/v1/chat/completions",
        r#"{"model":"x","stream":"yes"}"#,
        &[],
    ));
    r.assert_error(400, "invalid_type");
    // The connection survives client errors.
    assert_eq!(c.request(&get("/health")).status, 200);
    assert_eq!(mock_stats(&mock).chat_requests, 0);
    assert!(mock_last_request(&mock).is_none());
}

#[test]
fn models_endpoint_lists_the_model_table() {
    let (mock, gw) = start_pair(&[], |c| {
        c.model("alpha", Some("mock-alpha")).model("beta", None)
    });
    let r = roundtrip(gw.addr, &get("/v1/models"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({
            "object": "list",
            "data": [
                {"id": "alpha", "object": "model", "created": 0, "owned_by": "mock"},
                {"id": "beta", "object": "model", "created": 0, "owned_by": "mock"},
            ]
        })
    );
    // Served by the gateway itself.
    assert_eq!(mock_stats(&mock).requests, 1);
}

#[test]
fn upstream_error_statuses_are_passed_through() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&chat("mock-error-500", &[]));
    r.assert_error(500, "mock_error");
    let r = c.request(&chat("mock-error-429", &[]));
    r.assert_error(429, "rate_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Both on one client connection, which stays usable. (The provider's
    // only key now cools down for its Retry-After: see tests/credentials.rs.)
    let r = c.request(&get("/v1/models"));
    assert_eq!(r.status, 200);
}

#[test]
fn upstream_connections_are_reused_across_requests() {
    // Many sequential requests through one client connection (one shard):
    // pooling must not confuse responses.
    let (mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    for i in 0..20 {
        let model = format!("seq-{i}");
        let r = c.request(&chat(&model, &[]));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["model"], model.as_str());
    }
    assert_eq!(mock_stats(&mock).chat_requests, 20);
}

#[test]
fn large_request_body_is_forwarded_intact() {
    let (mock, gw) = start_pair(&[], |c| c);
    // Over the gateway's 64 KiB coalescing limit and its read buffer.
    let content = "x".repeat(200 * 1024);
    let body =
        format!(r#"{{"model":"big-model","messages":[{{"role":"user","content":"{content}"}}]}}"#);
    let r = roundtrip(gw.addr, &post_json("/v1/chat/completions", &body, &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = mock_last_request(&mock).unwrap();
    assert_eq!(rec.body.len(), body.len());
    assert!(rec.body == body, "large body changed in transit");
}

#[test]
fn concurrent_clients_get_their_own_answers() {
    let (mock, gw) = start_pair(&[], |c| c);
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..5 {
                    let model = format!("c{i}-r{j}");
                    let r = c.request(&chat(&model, &[]));
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json()["model"], model.as_str());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    assert_eq!(mock_stats(&mock).chat_requests, 40);
}

#[test]
fn headers_named_in_connection_are_not_forwarded() {
    // RFC 9110 section 7.6.1: a proxy removes the fields the Connection
    // header lists, since they are hop-by-hop by declaration.
    let (mock, gw) = start_pair(&[], |c| c);
    let r = roundtrip(
        gw.addr,
        &chat(
            "conn-listed",
            &[
                "Connection: keep-alive, X-Hop-Secret",
                "X-Hop-Secret: hop-only",
            ],
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = mock_last_request(&mock).unwrap();
    assert!(
        rec.header_values("x-hop-secret").is_empty(),
        "a header listed in Connection was forwarded: {}",
        rec.head
    );
}

#[test]
fn duplicate_model_keys_are_refused() {
    // Routing by one `model` while the provider reads another would let a
    // client bypass the model table.
    let (mock, gw) = start_pair(&[], |c| {
        c.model("cheap", Some("mock-cheap")).no_default_provider()
    });
    let mut c = Client::connect(gw.addr);
    for body in [
        r#"{"model":"cheap","model":"expensive","messages":[]}"#,
        r#"{"model":"cheap","\u006dodel":"expensive","messages":[]}"#,
        r#"{"model":"cheap","stream":false,"stream":true,"messages":[]}"#,
    ] {
        let r = c.request(&post_json("/v1/chat/completions", body, &[]));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        r.assert_error(400, "invalid_json");
    }
    // An escaped key that is the only `model` is fine.
    let r = c.request(&post_json(
        "/v1/chat/completions",
        r#"{"\u006dodel":"cheap","messages":[]}"#,
        &[],
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "mock-cheap");
    assert_eq!(mock_stats(&mock).chat_requests, 1);
}
