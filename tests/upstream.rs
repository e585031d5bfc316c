//! Upstream failures become real statuses with OpenAI error bodies.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn connection_refused_is_502() {
    let port = closed_port();
    let config = ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build();
    let gw = start_gateway(&config);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&chat("any-model", &[]));
    let err = r.assert_error(502, "upstream_connect_refused");
    assert_eq!(err["type"], "upstream_error");
    // The client connection stays usable after an upstream failure.
    assert_eq!(c.request(&get("/health")).status, 200);
}

#[test]
fn slow_upstream_head_is_504() {
    let (mock, gw) = start_pair(&[], |c| c.timeout("upstream_head_ms", 500));
    let mut c = Client::connect(gw.addr);
    let start = Instant::now();
    let r = c.request(&chat("mock-slow-3000", &[]));
    let elapsed = start.elapsed();
    let err = r.assert_error(504, "upstream_timeout");
    assert_eq!(err["type"], "upstream_error");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(2500),
        "504 after {elapsed:?}, expected about 500 ms"
    );
    assert_eq!(mock_stats(&mock).chat_requests, 1);
    // A fast request right after works (the timed-out upstream connection
    // must not be reused for it).
    let r = c.request(&chat("fast-after-slow", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "fast-after-slow");
}

#[test]
fn upstream_closing_without_answer_is_502() {
    let (mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&chat("mock-close", &[]));
    let err = r.assert_error(502, "upstream_closed");
    assert_eq!(err["type"], "upstream_error");
    assert!(mock_stats(&mock).chat_requests >= 1);
    let r = c.request(&chat("after-close", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn upstream_closing_a_pooled_connection_is_retried_once() {
    // Warm the pool, then the upstream closes the pooled connection on the
    // next request: the gateway retries it on a fresh connection, which
    // the mock also closes, so the client sees one 502, not a hang.
    let (mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(&chat("warm-up", &[])).status, 200);
    let before = mock_stats(&mock).chat_requests;
    let r = c.request(&chat("mock-close", &[]));
    r.assert_error(502, "upstream_closed");
    let after = mock_stats(&mock).chat_requests;
    assert!(
        (1..=2).contains(&(after - before)),
        "mock-close sent {} times",
        after - before
    );
}

/// A fake upstream on a std listener: reads each request (head and
/// Content-Length body), writes `respond()`, and closes the connection.
fn fake_upstream(respond: fn() -> Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let mut wanted = None;
            loop {
                if wanted.is_none() {
                    if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        wanted = Some(end + 4 + len);
                    }
                }
                if wanted.is_some_and(|w| req.len() >= w) {
                    break;
                }
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(&respond());
            let _ = s.flush();
            // Dropping `s` closes the connection.
        }
    });
    port
}

#[test]
fn garbage_from_upstream_is_502() {
    let port = fake_upstream(|| b"this is not http\r\n\r\n".to_vec());
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let r = roundtrip(gw.addr, &chat("m", &[]));
    let err = r.assert_error(502, "upstream_bad_response");
    assert_eq!(err["type"], "upstream_error");
}

#[test]
fn close_delimited_upstream_body_is_rechunked() {
    let port = fake_upstream(|| {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"id\":\"close-delimited\"}"
            .to_vec()
    });
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let mut c = Client::connect(gw.addr);
    let r = c.request(&chat("m", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.framing, Framing::Chunked, "headers {:?}", r.headers);
    assert_eq!(r.text(), "{\"id\":\"close-delimited\"}");
    // The client connection outlives the upstream one.
    assert_eq!(c.request(&get("/health")).status, 200);
}

#[test]
fn truncated_upstream_body_is_not_presented_as_complete() {
    // The upstream promises 100 bytes and sends 10: the client must not see
    // a complete-looking response. A whole answer is held until it has all
    // arrived, so nothing reached the client yet: it gets a 502 instead.
    let port = fake_upstream(|| {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":\"tr".to_vec()
    });
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let mut c = Client::connect(gw.addr);
    c.set_read_timeout(Duration::from_secs(3));
    let r = c.request(&chat("m", &[]));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("before its answer was complete")));
}

#[test]
fn upstream_response_headers_are_forwarded_without_hop_by_hop() {
    let port = fake_upstream(|| {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: req-123\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}".to_vec()
    });
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let r = roundtrip(gw.addr, &chat("m", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    // The gateway's request id wins; the provider's is kept aside.
    assert_eq!(r.headers_named("x-request-id").len(), 1);
    assert_eq!(r.header("x-request-id").map(str::len), Some(32));
    assert_eq!(r.header("x-upstream-request-id"), Some("req-123"));
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.headers_named("content-length"), vec!["2"]);
    assert_eq!(r.text(), "{}");
}

#[test]
fn upstream_204_is_relayed_without_body_or_content_length() {
    // RFC 9110 section 8.6: no Content-Length in a 204 response.
    let port = fake_upstream(|| b"HTTP/1.1 204 No Content\r\nX-Seen: yes\r\n\r\n".to_vec());
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let mut c = Client::connect(gw.addr);
    let r = c.request(&chat("m", &[]));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("x-seen"), Some("yes"));
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        None,
        "a 204 must not carry Content-Length: {:?}",
        r.headers
    );
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(c.request(&get("/health")).status, 200);
}

#[test]
fn upstream_closing_after_each_response_is_handled() {
    // The fake upstream says keep-alive but closes after every response:
    // the pooled connection is found dead and the request goes out again
    // on a fresh one.
    let port = fake_upstream(|| {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: 11\r\n\r\n{\"ok\":true}".to_vec()
    });
    let gw = start_gateway(
        &ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1"))
            .shards(1)
            .build(),
    );
    let mut c = Client::connect(gw.addr);
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(50));
        let r = c.request(&chat("m", &[]));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "{\"ok\":true}");
    }
}

#[test]
fn interim_upstream_response_is_skipped() {
    let port = fake_upstream(|| {
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".to_vec()
    });
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let mut c = Client::connect(gw.addr);
    let r = c.request(&chat("m", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "{}");
    assert_eq!(c.request(&get("/health")).status, 200);
}

/// A large chunked upstream body with odd chunk sizes, an extension and a
/// trailer.
fn big_chunked_response() -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for (i, size) in [1usize, 7, 4096, 33000, 100_000, 3].iter().enumerate() {
        let data: Vec<u8> = (0..*size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        if i == 2 {
            out.extend_from_slice(format!("{size:x};name=value\r\n").as_bytes());
        } else {
            out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        }
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    out
}

fn big_chunked_payload() -> Vec<u8> {
    let mut out = Vec::new();
    for (i, size) in [1usize, 7, 4096, 33000, 100_000, 3].iter().enumerate() {
        out.extend((0..*size).map(|j| b'a' + ((i + j) % 26) as u8));
    }
    out
}

#[test]
fn large_chunked_upstream_body_is_relayed_exactly() {
    let port = fake_upstream(big_chunked_response);
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let mut c = Client::connect(gw.addr);
    let r = c.request(&chat("m", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Chunked);
    assert!(r.body == big_chunked_payload(), "body differs");
    assert_eq!(c.request(&get("/health")).status, 200);

    // Decoded for an HTTP/1.0 client.
    let body = chat_body("m", false);
    let r = roundtrip(
        gw.addr,
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Close);
    assert!(r.body == big_chunked_payload(), "HTTP/1.0 body differs");
}

#[test]
fn large_content_length_upstream_body_is_relayed_exactly() {
    fn respond() -> Vec<u8> {
        let payload = big_chunked_payload();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        out.extend_from_slice(&payload);
        out
    }
    let port = fake_upstream(respond);
    let gw = start_gateway(&ConfigBuilder::new(&format!("http://127.0.0.1:{port}/v1")).build());
    let r = roundtrip(gw.addr, &chat("m", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.framing, Framing::Length(big_chunked_payload().len()));
    assert!(r.body == big_chunked_payload(), "body differs");
}

#[test]
fn upstream_by_host_name_is_resolved() {
    let mock = start_mock(&[]);
    let config = ConfigBuilder::new(&format!("http://localhost:{}/v1", mock.addr.port())).build();
    let gw = start_gateway(&config);
    let r = roundtrip(gw.addr, &chat("dns-model", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = mock_last_request(&mock).unwrap();
    assert_eq!(
        rec.header_values("host"),
        vec![format!("localhost:{}", mock.addr.port())]
    );
}
