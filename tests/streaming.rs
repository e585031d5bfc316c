//! SSE streaming: events reach the client as the upstream sends them.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Reads a chunked SSE body, returning each `data:` payload with the time
/// (since `start`) at which its event was complete.
fn read_sse_events(c: &mut Client, start: Instant) -> Vec<(String, Duration)> {
    let mut pending = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = c.read_chunk().expect("a well-formed chunk") {
        pending.push_str(std::str::from_utf8(&chunk).expect("UTF-8 SSE"));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            for data in sse_data(&event) {
                events.push((data, start.elapsed()));
            }
        }
    }
    assert!(pending.is_empty(), "unterminated SSE event: {pending:?}");
    events
}

fn assert_mock_stream(events: &[String], model: &str, chunks: usize) {
    // role event, `chunks` content events, finish event, [DONE].
    assert_eq!(events.len(), chunks + 3, "events: {events:#?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let parsed: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("JSON event"))
        .collect();
    for v in &parsed {
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], model);
    }
    assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
    let contents: Vec<&str> = parsed[1..=chunks]
        .iter()
        .map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content")
        })
        .collect();
    let expected: Vec<&str> = (0..chunks)
        .map(|i| MOCK_WORDS[i % MOCK_WORDS.len()])
        .collect();
    assert_eq!(contents, expected);
    let last = &parsed[chunks + 1];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
}

#[test]
fn stream_events_arrive_as_they_are_produced() {
    let (_mock, gw) = start_pair(
        &["--stream-chunks", "5", "--chunk-interval-ms", "300"],
        |c| c.model("stream-model", Some("mock-stream")),
    );
    let mut c = Client::connect(gw.addr);
    let start = Instant::now();
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body("stream-model", true),
        &[],
    ));
    let head = c.read_head().expect("response head");
    let head_at = start.elapsed();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("content-length"), None);
    assert!(
        head_at < Duration::from_millis(250),
        "head after {head_at:?}"
    );

    let events = read_sse_events(&mut c, start);
    let total = start.elapsed();
    let data: Vec<String> = events.iter().map(|(d, _)| d.clone()).collect();
    assert_mock_stream(&data, "mock-stream", 5);

    let first_at = events[0].1;
    assert!(
        first_at < Duration::from_millis(250),
        "first event after {first_at:?}: the stream is being buffered"
    );
    assert!(
        total > Duration::from_millis(1200),
        "whole stream in {total:?}"
    );
    // Each content event comes after the upstream's pause, not all at the end.
    for pair in events[1..=5].windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap > Duration::from_millis(150),
            "events {:?} and {:?} only {gap:?} apart",
            pair[0].0,
            pair[1].0
        );
    }
    assert!(
        events[3].1 + Duration::from_millis(400) < total,
        "third content event at {:?}, stream ended at {total:?}",
        events[3].1
    );

    // The connection is reusable after the stream.
    let r = c.request(&get("/health"));
    assert_eq!(r.status, 200);
}

#[test]
fn stream_to_http10_client_is_close_delimited() {
    let (_mock, gw) = start_pair(&["--stream-chunks", "3"], |c| c);
    let body = chat_body("old-client", true);
    let mut c = Client::connect(gw.addr);
    let r = c.request(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.framing, Framing::Close, "headers: {:?}", r.headers);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    // The body is the bare event stream, no chunk framing.
    let text = r.text();
    assert!(text.starts_with("data: {"), "{text:?}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text:?}");
    assert_mock_stream(&sse_data(&text), "old-client", 3);
}

#[test]
fn many_streams_in_parallel_are_complete() {
    let (mock, gw) = start_pair(
        &["--stream-chunks", "20", "--chunk-interval-ms", "10"],
        |c| c,
    );
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..2 {
                    let model = format!("par-{i}-{j}");
                    c.send(&post_json(
                        "/v1/chat/completions",
                        &chat_body(&model, true),
                        &[],
                    ));
                    let head = c.read_head().expect("head");
                    assert_eq!(head.status, 200);
                    let start = Instant::now();
                    let events: Vec<String> = read_sse_events(&mut c, start)
                        .into_iter()
                        .map(|(d, _)| d)
                        .collect();
                    assert_mock_stream(&events, &model, 20);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("stream thread");
    }
    assert_eq!(mock_stats(&mock).chat_requests, 12);
}

#[test]
fn non_stream_request_to_streaming_mock_is_plain_json() {
    // A stream would take 10 x 300 ms; the plain answer must not wait for
    // it (the margin leaves room for a loaded CI machine).
    let (_mock, gw) = start_pair(
        &["--stream-chunks", "10", "--chunk-interval-ms", "300"],
        |c| c,
    );
    let start = Instant::now();
    let r = roundtrip(gw.addr, &chat("no-stream", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["model"], "no-stream");
    assert!(start.elapsed() < Duration::from_millis(2000));
}

#[test]
fn client_deadlines_do_not_apply_while_a_response_streams() {
    // header_read, body_read and keep_alive_idle are about the client's
    // request; a long answer must not be cut by them.
    let (_mock, gw) = start_pair(
        &["--stream-chunks", "4", "--chunk-interval-ms", "350"],
        |c| {
            c.timeout("header_read_ms", 300)
                .timeout("body_read_ms", 300)
                .timeout("keep_alive_idle_ms", 300)
        },
    );
    let mut c = Client::connect(gw.addr);
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body("long-answer", true),
        &[],
    ));
    assert_eq!(c.read_head().unwrap().status, 200);
    let events: Vec<String> = read_sse_events(&mut c, Instant::now())
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_mock_stream(&events, "long-answer", 4);
}

#[test]
fn pauses_in_a_stream_longer_than_upstream_head_timeout_are_fine() {
    // upstream_head_ms bounds the wait for the response head ("request
    // sent -> response head received"); it is not documented as a limit on
    // pauses between events of a stream that has started.
    let (_mock, gw) = start_pair(
        &["--stream-chunks", "3", "--chunk-interval-ms", "800"],
        |c| c.timeout("upstream_head_ms", 500),
    );
    let mut c = Client::connect(gw.addr);
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body("paused-model", true),
        &[],
    ));
    assert_eq!(c.read_head().unwrap().status, 200);
    let mut text = String::new();
    loop {
        match c.read_chunk() {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break,
            Err(e) => panic!("stream cut after {text:?}: {e}"),
        }
    }
    assert_mock_stream(&sse_data(&text), "paused-model", 3);
}

#[test]
fn pipelined_request_behind_a_stream_is_answered_after_it() {
    let (_mock, gw) = start_pair(
        &["--stream-chunks", "3", "--chunk-interval-ms", "100"],
        |c| c,
    );
    let mut raw = post_json(
        "/v1/chat/completions",
        &chat_body("first-stream", true),
        &[],
    );
    raw.extend_from_slice(&chat("second-plain", &[]));
    let mut c = Client::connect(gw.addr);
    c.send(&raw);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Chunked);
    assert_mock_stream(&sse_data(&r.text()), "first-stream", 3);
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "second-plain");
}

#[test]
fn client_leaving_mid_stream_does_not_hurt_the_gateway() {
    let (mock, gw) = start_pair(
        &["--stream-chunks", "10", "--chunk-interval-ms", "100"],
        |c| c,
    );
    for _ in 0..3 {
        let mut c = Client::connect(gw.addr);
        c.send(&post_json(
            "/v1/chat/completions",
            &chat_body("abandoned", true),
            &[],
        ));
        assert_eq!(c.read_head().unwrap().status, 200);
        assert!(c.read_chunk().unwrap().is_some());
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Client::connect(gw.addr);
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body("after-abandon", true),
        &[],
    ));
    let head = c.read_head().unwrap();
    assert_eq!(head.status, 200);
    let events: Vec<String> = read_sse_events(&mut c, Instant::now())
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_mock_stream(&events, "after-abandon", 10);
    assert_eq!(mock_stats(&mock).chat_requests, 4);
}
