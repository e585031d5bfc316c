//! Request framing the gateway must refuse (RFC 9112; request smuggling
//! guards): each gets an error status, the connection is closed, and the
//! upstream never sees the request.

mod common;

use std::time::Duration;

use common::*;

/// Sends `raw` on a fresh connection; asserts `status` with an OpenAI error
/// body, `connection: close`, the connection closed, and no chat request at
/// the mock. Returns the error object.
#[track_caller]
fn assert_rejected(raw: &[u8], status: u16, code: &str) -> serde_json::Value {
    let (mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    c.set_read_timeout(Duration::from_secs(3));
    c.send(raw);
    let r = c.response();
    let err = r.assert_error(status, code);
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "headers: {:?}",
        r.headers
    );
    c.assert_closed(Duration::from_secs(3));
    let stats = mock_stats(&mock);
    assert_eq!(stats.chat_requests, 0, "the upstream must not see it");
    assert!(mock_last_request(&mock).is_none());
    err
}

const BODY: &str =
    r#"{"model":"smuggle","stream":false,"messages":[{"role":"user","content":"Hello"}]}"#;

fn post_with_headers(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n{headers}\r\n{body}").into_bytes()
}

#[test]
fn content_length_with_transfer_encoding_is_rejected() {
    let chunked = format!("{:x}\r\n{BODY}\r\n0\r\n\r\n", BODY.len());
    let raw = post_with_headers(
        &format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            chunked.len()
        ),
        &chunked,
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn transfer_encoding_before_content_length_is_rejected() {
    let chunked = format!("{:x}\r\n{BODY}\r\n0\r\n\r\n", BODY.len());
    let raw = post_with_headers(
        &format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            chunked.len()
        ),
        &chunked,
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn two_equal_content_lengths_are_rejected() {
    let raw = post_with_headers(
        &format!(
            "Content-Length: {}\r\nContent-Length: {}\r\n",
            BODY.len(),
            BODY.len()
        ),
        BODY,
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn two_different_content_lengths_are_rejected() {
    let raw = post_with_headers(
        &format!("Content-Length: {}\r\nContent-Length: 5\r\n", BODY.len()),
        BODY,
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn content_length_list_is_rejected() {
    let raw = post_with_headers(
        &format!("Content-Length: {}, {}\r\n", BODY.len(), BODY.len()),
        BODY,
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn non_numeric_content_length_is_rejected() {
    let (mock, gw) = start_pair(&[], |c| c);
    for bad in ["abc", "-1", "+10", "0x10", "1 0", "99999999999999999999999"] {
        let raw = post_with_headers(&format!("Content-Length: {bad}\r\n"), BODY);
        let mut c = Client::connect(gw.addr);
        c.set_read_timeout(Duration::from_secs(3));
        c.send(&raw);
        let r = c.response();
        assert_eq!(r.status, 400, "Content-Length: {bad}: {}", r.text());
        r.assert_error(400, "invalid_http_request");
        c.assert_closed(Duration::from_secs(3));
    }
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn malformed_chunk_size_is_rejected() {
    let raw = post_with_headers(
        "Transfer-Encoding: chunked\r\n",
        &format!("zz\r\n{BODY}\r\n0\r\n\r\n"),
    );
    assert_rejected(&raw, 400, "invalid_chunked_body");
}

#[test]
fn chunk_without_crlf_after_data_is_rejected() {
    // The chunk claims 4 bytes but 6 follow before the CRLF.
    let raw = post_with_headers("Transfer-Encoding: chunked\r\n", "4\r\nabcdef\r\n0\r\n\r\n");
    assert_rejected(&raw, 400, "invalid_chunked_body");
}

#[test]
fn bare_lf_line_endings_are_rejected() {
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\nHost: test\nContent-Length: {}\n\n{BODY}",
        BODY.len()
    );
    assert_rejected(raw.as_bytes(), 400, "invalid_http_request");
}

#[test]
fn a_single_bare_lf_header_line_is_rejected() {
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: test\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    assert_rejected(raw.as_bytes(), 400, "invalid_http_request");
}

#[test]
fn obs_fold_header_is_rejected() {
    let raw = post_with_headers(
        &format!(
            "X-Folded: first\r\n  second\r\nContent-Length: {}\r\n",
            BODY.len()
        ),
        BODY,
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn gzip_then_chunked_transfer_encoding_is_not_implemented() {
    let raw = post_with_headers(
        "Transfer-Encoding: gzip, chunked\r\n",
        &format!("{:x}\r\n{BODY}\r\n0\r\n\r\n", BODY.len()),
    );
    // An unsupported transfer coding: 501 per the codec's contract
    // (HeadError::UnsupportedTransferEncoding).
    assert_rejected(&raw, 501, "invalid_http_request");
}

#[test]
fn transfer_encoding_not_ending_in_chunked_is_rejected() {
    let raw = post_with_headers(
        "Transfer-Encoding: chunked, gzip\r\n",
        &format!("{:x}\r\n{BODY}\r\n0\r\n\r\n", BODY.len()),
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn unsupported_http_version_gets_505() {
    let raw = b"GET /health HTTP/2.0\r\nHost: test\r\n\r\n";
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    c.set_read_timeout(Duration::from_secs(3));
    c.send(raw);
    let r = c.response();
    r.assert_error(505, "invalid_http_request");
    c.assert_closed(Duration::from_secs(3));
}

#[test]
fn garbage_request_line_is_rejected() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut c = Client::connect(gw.addr);
    c.set_read_timeout(Duration::from_secs(3));
    c.send(b"HELLO THERE\r\n\r\n");
    let r = c.response();
    r.assert_error(400, "invalid_http_request");
    c.assert_closed(Duration::from_secs(3));
}

#[test]
fn smuggled_request_after_rejected_one_is_not_served() {
    // A CL+TE request whose chunked body "ends" early and hides a second
    // request: after the 400 nothing else may be answered.
    let (mock, gw) = start_pair(&[], |c| c);
    let hidden = chat("smuggled-model", &[]);
    let mut body = b"0\r\n\r\n".to_vec();
    body.extend_from_slice(&hidden);
    let mut raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let mut c = Client::connect(gw.addr);
    c.set_read_timeout(Duration::from_secs(3));
    c.send(&raw);
    let r = c.response();
    r.assert_error(400, "invalid_http_request");
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn chunked_applied_twice_is_rejected() {
    let raw = post_with_headers(
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        &format!("{:x}\r\n{BODY}\r\n0\r\n\r\n", BODY.len()),
    );
    assert_rejected(&raw, 400, "invalid_http_request");
}

#[test]
fn transfer_encoding_in_http10_is_rejected() {
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{BODY}\r\n0\r\n\r\n",
        BODY.len()
    );
    assert_rejected(raw.as_bytes(), 400, "invalid_http_request");
}

#[test]
fn overflowing_chunk_size_is_rejected() {
    let raw = post_with_headers(
        "Transfer-Encoding: chunked\r\n",
        "10000000000000000\r\nabc\r\n0\r\n\r\n",
    );
    assert_rejected(&raw, 400, "invalid_chunked_body");
}

#[test]
fn pipelined_request_after_connection_close_is_not_served() {
    let (mock, gw) = start_pair(&[], |c| c);
    let mut raw = get_with("/health", &["Connection: close"]);
    raw.extend_from_slice(&chat("after-close", &[]));
    let mut c = Client::connect(gw.addr);
    c.set_read_timeout(Duration::from_secs(3));
    c.send(&raw);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed(Duration::from_secs(3));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}
