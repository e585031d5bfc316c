//! The client side of the HTTP/1.1 server: keep-alive, pipelining,
//! HTTP/1.0, request bodies (chunked, 100-continue), limits, routing errors.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn assert_health(r: &Response) {
    assert_eq!(r.status, 200, "health: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
}

fn assert_models(r: &Response, ids: &[&str]) {
    assert_eq!(r.status, 200, "models: {}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    let got: Vec<&str> = v["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, ids);
}

#[test]
fn keep_alive_serves_three_requests_on_one_connection() {
    let (mock, gw) = start_pair(&[], |c| c.model("model-a", None));
    let mut c = Client::connect(gw.addr);

    let r1 = c.request(&get("/health"));
    assert_health(&r1);
    assert_eq!(r1.version, "HTTP/1.1");
    assert_eq!(
        r1.header("connection"),
        None,
        "HTTP/1.1 keep-alive needs no header"
    );

    let r2 = c.request(&get("/v1/models"));
    assert_models(&r2, &["model-a"]);

    let r3 = c.request(&chat("model-a", &[]));
    assert_eq!(r3.status, 200, "chat: {}", r3.text());
    assert_eq!(r3.json()["choices"][0]["message"]["content"], MOCK_ANSWER);
    assert_eq!(r3.header("connection"), None);

    // Still open: a fourth request works too.
    let r4 = c.request(&get("/health"));
    assert_health(&r4);
    assert_eq!(mock_stats(&mock).chat_requests, 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_mock, gw) = start_pair(&[], |c| c.model("model-a", None).model("model-b", None));
    let mut c = Client::connect(gw.addr);
    let mut all = get("/health");
    all.extend_from_slice(&get("/v1/models"));
    all.extend_from_slice(&get("/health"));
    c.send(&all);
    assert_health(&c.response());
    assert_models(&c.response(), &["model-a", "model-b"]);
    assert_health(&c.response());
    // Nothing else was sent.
    c.assert_silent_open(Duration::from_millis(200));
}

#[test]
fn pipelined_chat_requests_with_bodies_are_answered_in_order() {
    let (mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let mut all = Vec::new();
    for model in ["pipe-one", "pipe-two", "pipe-three"] {
        all.extend_from_slice(&chat(model, &[]));
    }
    c.send(&all);
    for model in ["pipe-one", "pipe-two", "pipe-three"] {
        let r = c.response();
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert_eq!(r.json()["model"], model);
    }
    assert_eq!(mock_stats(&mock).chat_requests, 3);
    assert_eq!(
        mock_last_request(&mock).unwrap().body_json()["model"],
        "pipe-three"
    );
}

#[test]
fn http10_with_keep_alive_is_kept_alive() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let req = b"GET /health HTTP/1.0\r\nHost: test\r\nConnection: keep-alive\r\n\r\n";
    let r = c.request(req);
    assert_health(&r);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(matches!(r.framing, Framing::Length(_)), "{:?}", r.framing);

    // The same socket serves a second request.
    let r = c.request(req);
    assert_health(&r);
    assert_eq!(r.header("connection"), Some("keep-alive"));
}

#[test]
fn http10_without_keep_alive_is_closed_after_the_response() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(b"GET /health HTTP/1.0\r\nHost: test\r\n\r\n");
    assert_health(&r);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed(Duration::from_secs(2));
}

#[test]
fn http11_connection_close_is_honoured() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&get_with("/health", &["Connection: close"]));
    assert_health(&r);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed(Duration::from_secs(2));
}

#[test]
fn chunked_upload_is_forwarded_with_content_length() {
    let (mock, gw) = start_pair(&[], |c| c);
    let body = chat_body("chunked-model", false);
    let (a, b) = body.split_at(17);
    let mut c = Client::connect(gw.addr);
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    );
    // Chunks in separate writes, one with a chunk extension.
    c.send(format!("{:x}\r\n{a}\r\n", a.len()).as_bytes());
    thread::sleep(Duration::from_millis(50));
    c.send(format!("{:X};ext=1\r\n{b}\r\n", b.len()).as_bytes());
    thread::sleep(Duration::from_millis(50));
    c.send(b"0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "chunked-model");

    let rec = mock_last_request(&mock).expect("the mock saw the request");
    assert_eq!(rec.body, body, "de-chunked body forwarded byte for byte");
    assert_eq!(
        rec.header_values("content-length"),
        vec![body.len().to_string()]
    );
    assert!(
        rec.header_values("transfer-encoding").is_empty(),
        "head: {}",
        rec.head
    );

    // The connection is still usable afterwards.
    assert_health(&c.request(&get("/health")));
}

#[test]
fn chunked_upload_with_trailer_then_next_request() {
    let (mock, gw) = start_pair(&[], |c| c);
    let body = chat_body("trailer-model", false);
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\nX-Trailer: yes\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&get("/health"));
    let mut c = Client::connect(gw.addr);
    c.send(&req);
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "trailer-model");
    assert_health(&c.response());
    assert_eq!(mock_last_request(&mock).unwrap().body, body);
}

#[test]
fn expect_100_continue_gets_interim_response_before_body() {
    let (mock, gw) = start_pair(&[], |c| c);
    let body = chat_body("continue-model", false);
    let mut c = Client::connect(gw.addr);
    c.send(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // The client waits for 100 Continue before sending the body.
    c.set_read_timeout(Duration::from_secs(2));
    let interim = c.response();
    assert_eq!(interim.status, 100, "{interim:?}");
    assert_eq!(interim.version, "HTTP/1.1");
    assert!(interim.body.is_empty());
    assert_eq!(mock_stats(&mock).chat_requests, 0);

    c.set_read_timeout(READ_TIMEOUT);
    c.send(body.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "continue-model");
    assert_eq!(mock_last_request(&mock).unwrap().body, body);
}

#[test]
fn expect_100_continue_with_chunked_body() {
    let (mock, gw) = start_pair(&[], |c| c);
    let body = chat_body("continue-chunked", false);
    let mut c = Client::connect(gw.addr);
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\
          Expect: 100-continue\r\n\r\n",
    );
    c.set_read_timeout(Duration::from_secs(2));
    assert_eq!(c.response().status, 100);
    c.set_read_timeout(READ_TIMEOUT);
    c.send(format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock_last_request(&mock).unwrap().body, body);
}

#[test]
fn content_length_over_limit_gets_413_without_reading_the_body() {
    let (mock, gw) = start_pair(&[], |c| c.limit("max_body_bytes", 1024));
    let mut c = Client::connect(gw.addr);
    // Only the head: the answer must come without the body being sent.
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Content-Length: 2000\r\n\r\n",
    );
    c.set_read_timeout(Duration::from_secs(2));
    let r = c.response();
    let err = r.assert_error(413, "body_too_large");
    assert_eq!(err["type"], "invalid_request_error");
    assert!(
        err["message"].as_str().unwrap().contains("1024"),
        "message names the limit: {err}"
    );
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn content_length_over_limit_with_expect_gets_413_not_100() {
    let (mock, gw) = start_pair(&[], |c| c.limit("max_body_bytes", 1024));
    let mut c = Client::connect(gw.addr);
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Content-Length: 2000\r\nExpect: 100-continue\r\n\r\n",
    );
    c.set_read_timeout(Duration::from_secs(2));
    // The final status comes at once: no 100 Continue for a body that
    // would be refused.
    let r = c.response();
    r.assert_error(413, "body_too_large");
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn body_at_the_limit_is_accepted() {
    let (mock, gw) = start_pair(&[], |c| c.limit("max_body_bytes", 1024));
    let mut body = chat_body("limit-model", false);
    // Pad with whitespace (valid JSON) to exactly the limit.
    body.insert_str(body.len() - 1, &" ".repeat(1024 - body.len()));
    assert_eq!(body.len(), 1024);
    let r = roundtrip(gw.addr, &post_json("/v1/chat/completions", &body, &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock_last_request(&mock).unwrap().body, body);
}

#[test]
fn chunked_body_over_limit_gets_413() {
    let (mock, gw) = start_pair(&[], |c| c.limit("max_body_bytes", 1024));
    let mut c = Client::connect(gw.addr);
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = format!("200\r\n{}\r\n", "x".repeat(0x200));
    // 3 x 512 bytes: over the limit at the third chunk.
    for _ in 0..3 {
        if c.try_send(chunk.as_bytes()).is_err() {
            break;
        }
    }
    c.set_read_timeout(Duration::from_secs(3));
    let r = c.response();
    r.assert_error(413, "body_too_large");
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn too_many_headers_get_431() {
    let (_mock, gw) = start_pair(&[], |c| c.limit("max_headers", 10));
    let headers: Vec<String> = (0..20).map(|i| format!("X-Filler-{i}: {i}")).collect();
    let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut c = Client::connect(gw.addr);
    let r = c.request(&get_with("/health", &refs));
    r.assert_error(431, "invalid_http_request");
    assert_eq!(r.reason, "Request Header Fields Too Large");
    c.assert_closed(Duration::from_secs(3));

    // Within the limit is fine (Host + 9).
    let r = roundtrip(gw.addr, &get_with("/health", &refs[..9]));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn oversized_head_gets_431() {
    let (_mock, gw) = start_pair(&[], |c| c.limit("max_head_bytes", 1024));
    let big = format!("X-Big: {}", "a".repeat(2000));
    let mut c = Client::connect(gw.addr);
    let r = c.request(&get_with("/health", &[&big]));
    r.assert_error(431, "invalid_http_request");
    c.assert_closed(Duration::from_secs(3));

    // An incomplete head that already exceeds the limit is rejected too,
    // without waiting for its end.
    let mut c = Client::connect(gw.addr);
    c.send(
        format!(
            "GET /health HTTP/1.1\r\nHost: test\r\nX-Big: {}",
            "b".repeat(3000)
        )
        .as_bytes(),
    );
    c.set_read_timeout(Duration::from_secs(2));
    let r = c.response();
    r.assert_error(431, "invalid_http_request");

    let r = roundtrip(gw.addr, &get_with("/health", &["X-Small: 1"]));
    assert_eq!(r.status, 200);
}

#[test]
fn unknown_path_gets_404_json() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&get("/v1/nope"));
    let err = r.assert_error(404, "not_found");
    assert_eq!(err["type"], "invalid_request_error");
    // An error answer does not end the connection.
    assert_health(&c.request(&get("/health")));
}

#[test]
fn wrong_method_gets_405_with_allow() {
    let (mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&get("/v1/chat/completions"));
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));

    let r = c.request(&post_json("/health", "{}", &[]));
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    let r = c.request(b"DELETE /v1/models HTTP/1.1\r\nHost: test\r\n\r\n");
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    assert_health(&c.request(&get("/health")));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn query_string_does_not_change_routing() {
    let (_mock, gw) = start_pair(&[], |c| c);
    assert_health(&roundtrip(gw.addr, &get("/health?probe=1")));
}

#[test]
fn many_sequential_connections_are_served() {
    // Both shards get connections (SO_REUSEPORT): every one must work.
    let (_mock, gw) = start_pair(&[], |c| c);
    let start = Instant::now();
    for _ in 0..40 {
        assert_health(&roundtrip(gw.addr, &get("/health")));
    }
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn head_request_gets_no_body() {
    // Whatever the status, a response to HEAD carries no body: body bytes
    // would be read by the client as the start of the next response.
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    c.send(b"HEAD /health HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = c.read_head().expect("HEAD response head");
    assert!(
        head.status == 200 || head.status == 405,
        "HEAD /health: {}",
        head.status
    );
    // The next response must start right after the head.
    c.send(&get("/health"));
    let r = c.response();
    assert_health(&r);
}

#[test]
fn connections_over_the_per_shard_limit_get_503() {
    let (_mock, gw) = start_pair(&[], |c| c.shards(1).server("max_connections_per_shard", 1));
    let mut first = Client::connect(gw.addr);
    assert_health(&first.request(&get("/health")));

    let mut second = Client::connect(gw.addr);
    second.set_read_timeout(Duration::from_secs(3));
    let r = second.response();
    let err = r.assert_error(503, "too_many_connections");
    assert_eq!(err["type"], "server_error");
    assert_eq!(r.header("connection"), Some("close"));
    second.assert_closed(Duration::from_secs(2));

    // The first connection still works; once it is gone there is room again.
    assert_health(&first.request(&get("/health")));
    drop(first);
    let ok = poll_until(Duration::from_secs(2), || {
        let mut c = Client::connect(gw.addr);
        c.send(&get("/health"));
        c.try_read_response().ok().filter(|r| r.status == 200)
    });
    assert!(ok.is_some(), "no room after the first connection closed");
}

#[test]
fn request_bodies_of_unrouted_requests_are_skipped() {
    // A 404 and a 405 for requests with bodies: the bodies are consumed, so
    // the next request on the connection parses from the right place.
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&post_json("/v1/nope", "{\"GET /x HTTP/1.1\":1}", &[]));
    r.assert_error(404, "not_found");
    let r = c.request(&post_json("/health", "GET /health HTTP/1.1\r\n\r\n", &[]));
    r.assert_error(405, "method_not_allowed");
    let mut chunked =
        b"POST /v1/nope HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    c.request(&chunked).assert_error(404, "not_found");
    assert_health(&c.request(&get("/health")));
}

#[test]
fn fifty_pipelined_requests_in_one_write() {
    // More than the initial 8 KiB read buffer of pipelined requests.
    let (_mock, gw) = start_pair(&[], |c| c.model("m1", None));
    let mut all = Vec::new();
    for i in 0..50 {
        if i % 2 == 0 {
            all.extend_from_slice(&get_with(
                "/health",
                &[
                    &format!("X-Seq: {i}"),
                    &format!("X-Pad: {}", "p".repeat(400)),
                ],
            ));
        } else {
            all.extend_from_slice(&get("/v1/models"));
        }
    }
    assert!(all.len() > 8 * 1024, "{}", all.len());
    let mut c = Client::connect(gw.addr);
    c.send(&all);
    for i in 0..50 {
        let r = c.response();
        if i % 2 == 0 {
            assert_health(&r);
        } else {
            assert_models(&r, &["m1"]);
        }
    }
    c.assert_silent_open(Duration::from_millis(200));
}

#[test]
fn request_sent_byte_by_byte_is_served() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    for b in get_with("/health", &["X-Slow: yes"]) {
        c.send(&[b]);
        thread::sleep(Duration::from_millis(2));
    }
    assert_health(&c.response());
}

#[test]
fn header_names_are_case_insensitive() {
    let (mock, gw) = start_pair(&[], |c| c);
    let body = chat_body("case-model", false);
    let mut c = Client::connect(gw.addr);
    let r = c.request(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHOST: test\r\nCONTENT-LENGTH: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.request(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\ntransfer-encoding: Chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock_last_request(&mock).unwrap().body, body);
}

#[test]
fn absolute_form_target_is_routed_by_path() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let r = roundtrip(
        gw.addr,
        b"GET http://test/health HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    assert_health(&r);
}

#[test]
fn http10_expect_100_continue_gets_no_interim_response() {
    // RFC 9110 section 10.1.1: no 100 (Continue) to an HTTP/1.0 client.
    let (_mock, gw) = start_pair(&[], |c| c);
    let body = chat_body("old-expect", false);
    let mut c = Client::connect(gw.addr);
    c.send(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nHost: test\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.assert_silent_open(Duration::from_millis(400));
    c.send(body.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "old-expect");
}
