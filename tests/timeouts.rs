//! Client-side deadlines: header read (slowloris), body read, idle keep-alive.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn slow_head_gets_408_then_close() {
    let (mock, gw) = start_pair(&[], |c| c.timeout("header_read_ms", 500));
    let mut c = Client::connect(gw.addr);
    let start = Instant::now();
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n");
    c.set_read_timeout(Duration::from_secs(3));
    let r = c.response();
    let elapsed = start.elapsed();
    let err = r.assert_error(408, "request_timeout");
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2000),
        "408 after {elapsed:?}, expected about 500 ms"
    );
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn trickled_head_is_still_bounded_by_header_read() {
    // Bytes keep arriving, but the whole head does not: the deadline is for
    // the whole head, not per read.
    let (_mock, gw) = start_pair(&[], |c| c.timeout("header_read_ms", 600));
    let mut c = Client::connect(gw.addr);
    let start = Instant::now();
    c.send(b"GET /health HTTP/1.1\r\n");
    // Drip a header line every 100 ms until the gateway gives up (or for
    // at most 1.5 s).
    while start.elapsed() < Duration::from_millis(1500) {
        thread::sleep(Duration::from_millis(100));
        if c.try_send(b"X-Drip: x\r\n").is_err() {
            break;
        }
    }
    c.set_read_timeout(Duration::from_secs(3));
    let r = c.response();
    r.assert_error(408, "request_timeout");
    c.assert_closed(Duration::from_secs(3));
}

#[test]
fn slow_body_gets_408_then_close() {
    let (mock, gw) = start_pair(&[], |c| c.timeout("body_read_ms", 500));
    let mut c = Client::connect(gw.addr);
    let start = Instant::now();
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"model\":",
    );
    c.set_read_timeout(Duration::from_secs(3));
    let r = c.response();
    let elapsed = start.elapsed();
    r.assert_error(408, "request_timeout");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2000),
        "408 after {elapsed:?}, expected about 500 ms"
    );
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn slow_chunked_body_gets_408() {
    let (mock, gw) = start_pair(&[], |c| c.timeout("body_read_ms", 500));
    let mut c = Client::connect(gw.addr);
    c.send(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\n{\"mod\r\n",
    );
    c.set_read_timeout(Duration::from_secs(3));
    let r = c.response();
    r.assert_error(408, "request_timeout");
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn idle_keep_alive_connection_is_closed_silently() {
    let (_mock, gw) = start_pair(&[], |c| c.timeout("keep_alive_idle_ms", 500));
    let mut c = Client::connect(gw.addr);
    let r = c.request(&get("/health"));
    assert_eq!(r.status, 200);
    let idle_start = Instant::now();
    // Open for a while ...
    c.assert_silent_open(Duration::from_millis(300));
    // ... then closed without a response.
    c.assert_closed(Duration::from_secs(2));
    let elapsed = idle_start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2000),
        "closed after {elapsed:?}, expected about 500 ms"
    );
}

#[test]
fn fresh_connection_without_request_is_closed_after_idle_timeout() {
    let (_mock, gw) = start_pair(&[], |c| c.timeout("keep_alive_idle_ms", 500));
    let mut c = Client::connect(gw.addr);
    let start = Instant::now();
    c.assert_closed(Duration::from_secs(2));
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed after {elapsed:?}, expected about 500 ms"
    );
}

#[test]
fn activity_within_idle_timeout_keeps_connection() {
    let (_mock, gw) = start_pair(&[], |c| c.timeout("keep_alive_idle_ms", 600));
    let mut c = Client::connect(gw.addr);
    for _ in 0..4 {
        assert_eq!(c.request(&get("/health")).status, 200);
        thread::sleep(Duration::from_millis(300));
    }
    // 1.2 s in total, more than the idle timeout, but never idle that long.
    assert_eq!(c.request(&get("/health")).status, 200);
}

#[test]
fn client_that_stops_reading_a_stream_is_closed_after_client_write() {
    use std::io::Read;
    // ~17 MB of SSE: more than the kernel buffers between the gateway and
    // a client that stopped reading, so the gateway's writes block.
    let (_mock, gw) = start_pair(&["--stream-chunks", "100000"], |c| {
        c.timeout("client_write_ms", 500)
    });
    let req = post_json("/v1/chat/completions", &chat_body("mock-model", true), &[]);
    // Read promptly, the same stream is whole.
    let full = roundtrip(gw.addr, &req);
    assert_eq!(full.status, 200);
    assert!(full.text().ends_with("data: [DONE]\n\n"));

    let mut c = Client::connect(gw.addr);
    small_receive_buffer(&c.stream);
    c.send(&req);
    // Not reading for 3 s: the gateway blocks within a second, then gives
    // up 500 ms later.
    thread::sleep(Duration::from_secs(3));
    let mut got = Vec::new();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    match c.stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "connection still open after {:?} ({} bytes read): {e}",
            start.elapsed(),
            got.len()
        ),
    }
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    assert!(
        got.len() < full.body.len(),
        "the stream was not cut ({} of {} bytes)",
        got.len(),
        full.body.len()
    );
    assert!(!got.ends_with(b"0\r\n\r\n"), "the stream was not cut");
}
