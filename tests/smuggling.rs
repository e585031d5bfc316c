//! Request smuggling and malformed HTTP/1.1, table-driven.
//!
//! Every case is a raw byte request sent on a fresh connection to a real
//! gateway with the mock provider behind it, followed in the same write by a
//! pipelined chat request. The table says what must happen:
//!
//! - `Reject(status, code)`: that status with an OpenAI error JSON body and
//!   `connection: close`, then the connection closes without answering the
//!   pipelined request, and the mock's `chat_requests`/`openai_requests`
//!   counters do not move.
//! - `Serve(status, forwarded, then)`: a valid request (however odd it
//!   looks) answered with `status`; `forwarded` chat requests reach the mock
//!   (the configured upstream, never a host named in the request); with
//!   `Then::Answered` the pipelined request is answered too, which proves the
//!   gateway found the same message boundary the sender meant.
//!
//! Statuses follow RFC 9112/9110, decided per case (the `why` column):
//! 400 for broken syntax or framing, 501 for a transfer coding or method the
//! gateway does not implement, 505 for another HTTP version, 414/431/413 for
//! the size limits. Decisions beyond the RFC's MUSTs are documented on
//! `parse_request_head` (src/http/request.rs) and at the cases below.

mod common;

use std::time::Duration;

use common::*;

#[derive(Clone, Copy, Debug)]
enum Then {
    /// The pipelined request after it is answered (200 from the mock).
    Answered,
    /// The connection closes after the answer (HTTP/1.0 without keep-alive).
    Closed,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Reject(u16, &'static str),
    Serve(u16, u64, Then),
}
use Expect::*;

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    expect: Expect,
    why: &'static str,
}

const HEAD_ERR: &str = "invalid_http_request";
const CHUNK_ERR: &str = "invalid_chunked_body";
const TOO_LARGE: &str = "body_too_large";
/// `limits.max_body_bytes` of the gateway under test.
const MAX_BODY: usize = 4096;

fn body() -> String {
    chat_body("smuggle-case", false)
}

/// A valid chunked encoding of the chat body, in two chunks.
fn chunked_body() -> String {
    let b = body();
    let (a, z) = b.split_at(10);
    format!("{:x}\r\n{a}\r\n{:x}\r\n{z}\r\n0\r\n\r\n", a.len(), z.len())
}

/// `POST /v1/chat/completions HTTP/1.1` with Host, extra header lines
/// (each ending in CRLF, written as given) and a raw body.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n{headers}\r\n{body}").into_bytes()
}

/// A chunked POST with the given Transfer-Encoding header line(s).
fn te(lines: &str) -> Vec<u8> {
    post(lines, &chunked_body())
}

/// A Content-Length POST with the given Content-Length header line(s).
fn cl(lines: &str) -> Vec<u8> {
    post(lines, &body())
}

/// A chunked POST whose chunked body is `chunks` verbatim.
fn chunks(chunks: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", chunks)
}

/// A chunked body with one chunk `size_line` (size and extensions) whose data
/// is the chat body.
fn one_chunk(size_line: &str) -> Vec<u8> {
    chunks(&format!("{size_line}\r\n{}\r\n0\r\n\r\n", body()))
}

fn bytes(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn cases() -> Vec<Case> {
    let b = body();
    let n = b.len();
    let cb = chunked_body();
    let hex = format!("{n:x}");
    let case = |name, raw, expect, why| Case {
        name,
        raw,
        expect,
        why,
    };
    vec![
        // ---- Content-Length together with Transfer-Encoding ----
        case("cl_then_te", post(&format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", cb.len()), &cb),
            Reject(400, HEAD_ERR), "9112 6.1: MAY reject CL+TE; we do (classic CL.TE/TE.CL)"),
        case("te_then_cl", post(&format!("Transfer-Encoding: chunked\r\nContent-Length: {}\r\n", cb.len()), &cb),
            Reject(400, HEAD_ERR), "9112 6.1, as above, other order"),
        case("cl_then_te_obfuscated", post(&format!("Content-Length: {}\r\nTransfer-Encoding:  CHUNKED \r\n", cb.len()), &cb),
            Reject(400, HEAD_ERR), "case/OWS do not hide TE"),
        case("cl_zero_then_te_hiding_request", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\n{}", String::from_utf8(chat("hidden", &[])).unwrap())),
            Reject(400, HEAD_ERR), "CL+TE hiding a second request in the body"),
        // ---- Transfer-Encoding obfuscation ----
        case("te_Chunked", te("Transfer-Encoding: Chunked\r\n"), Serve(200, 1, Then::Answered),
            "9110 10.1.4: coding names are case-insensitive: valid"),
        case("te_CHUNKED", te("Transfer-Encoding: CHUNKED\r\n"), Serve(200, 1, Then::Answered),
            "case-insensitive: valid"),
        case("te_leading_space", te("Transfer-Encoding:  chunked\r\n"), Serve(200, 1, Then::Answered),
            "9112 5.1: OWS before the value is not part of it: valid"),
        case("te_trailing_space", te("Transfer-Encoding: chunked \r\n"), Serve(200, 1, Then::Answered),
            "OWS after the value is not part of it: valid"),
        case("te_leading_tab", te("Transfer-Encoding: \tchunked\r\n"), Serve(200, 1, Then::Answered),
            "HTAB is OWS: valid"),
        case("te_chunked_identity", te("Transfer-Encoding: chunked, identity\r\n"),
            Reject(400, HEAD_ERR), "9112 6.3 (4): final coding not chunked: MUST 400"),
        case("te_identity_chunked", te("Transfer-Encoding: identity, chunked\r\n"),
            Reject(501, HEAD_ERR), "identity is no registered transfer coding (9112 7): unknown coding, 9112 6.1 SHOULD 501"),
        case("te_gzip_chunked", te("Transfer-Encoding: gzip, chunked\r\n"),
            Reject(501, HEAD_ERR), "gzip transfer coding not implemented: 501"),
        case("te_chunked_gzip", te("Transfer-Encoding: chunked, gzip\r\n"),
            Reject(400, HEAD_ERR), "final coding not chunked: 400"),
        case("te_gzip_only", te("Transfer-Encoding: gzip\r\n"),
            Reject(400, HEAD_ERR), "final coding not chunked: 400"),
        case("te_unknown_then_chunked_two_lines", te("Transfer-Encoding: xchunked\r\nTransfer-Encoding: chunked\r\n"),
            Reject(501, HEAD_ERR), "field lines combine into one list (9110 5.3)"),
        case("te_chunked_chunked", te("Transfer-Encoding: chunked, chunked\r\n"),
            Reject(400, HEAD_ERR), "9112 6.1: sender MUST NOT chunk twice: broken framing"),
        case("te_two_headers", te("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Reject(400, HEAD_ERR), "two lines = chunked, chunked"),
        case("te_chunked_then_gzip_lines", te("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
            Reject(400, HEAD_ERR), "final coding (second line) not chunked"),
        case("te_chunked_param", te("Transfer-Encoding: chunked;q=1\r\n"),
            Reject(400, HEAD_ERR), "chunked takes no parameters: not chunked"),
        case("te_empty", te("Transfer-Encoding:\r\n"),
            Reject(400, HEAD_ERR), "no final coding at all"),
        case("te_underscore", te("Transfer_Encoding: chunked\r\n"),
            Reject(400, HEAD_ERR), "decision: a name equal to a framing field modulo _/- is ambiguous (CGI-style upstreams merge them): 400"),
        case("cl_underscore", post(&format!("Content_Length: {n}\r\n"), &b),
            Reject(400, HEAD_ERR), "as above for Content-Length"),
        case("te_space_before_colon", te("Transfer-Encoding : chunked\r\n"),
            Reject(400, HEAD_ERR), "9112 5.1: whitespace before the colon MUST be 400"),
        case("te_obs_fold", te("Transfer-Encoding: gzip,\r\n chunked\r\n"),
            Reject(400, HEAD_ERR), "9112 5.2: obs-fold outside message/http: we reject with 400"),
        case("te_obs_fold_empty_first", te("Transfer-Encoding:\r\n\tchunked\r\n"),
            Reject(400, HEAD_ERR), "obs-fold"),
        case("te_http10", format!("POST /v1/chat/completions HTTP/1.0\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n{cb}").into_bytes(),
            Reject(400, HEAD_ERR), "9112 6.1: TE in HTTP/1.0 means faulty framing"),
        case("te_vertical_tab", te("Transfer-Encoding: \x0bchunked\r\n"),
            Reject(400, HEAD_ERR), "VT is a CTL, not OWS"),
        // ---- Content-Length ----
        case("cl_list_equal", cl(&format!("Content-Length: {n}, {n}\r\n")),
            Reject(400, HEAD_ERR), "decision: 9112 6.3 (5) allows merging identical values; we refuse any list"),
        case("cl_two_equal_headers", cl(&format!("Content-Length: {n}\r\nContent-Length: {n}\r\n")),
            Reject(400, HEAD_ERR), "decision: as above, repeated lines"),
        case("cl_conflicting", cl(&format!("Content-Length: {n}\r\nContent-Length: 5\r\n")),
            Reject(400, HEAD_ERR), "9112 6.3 (5): MUST 400"),
        case("cl_plus", cl(&format!("Content-Length: +{n}\r\n")), Reject(400, HEAD_ERR), "Content-Length = 1*DIGIT"),
        case("cl_minus", cl("Content-Length: -1\r\n"), Reject(400, HEAD_ERR), "1*DIGIT"),
        case("cl_hex", cl("Content-Length: 0x10\r\n"), Reject(400, HEAD_ERR), "1*DIGIT"),
        case("cl_inner_space", cl("Content-Length: 1 0\r\n"), Reject(400, HEAD_ERR), "1*DIGIT"),
        case("cl_empty", cl("Content-Length:\r\n"), Reject(400, HEAD_ERR), "1*DIGIT: at least one"),
        case("cl_20_digits", cl("Content-Length: 99999999999999999999\r\n"), Reject(400, HEAD_ERR), "overflows u64: invalid"),
        case("cl_u64_max", cl("Content-Length: 18446744073709551615\r\n"), Reject(413, TOO_LARGE), "valid but above max_body_bytes"),
        case("cl_ows", cl(&format!("Content-Length:  {n} \t\r\n")), Serve(200, 1, Then::Answered),
            "OWS around a field value is not part of it: valid"),
        case("cl_leading_zeros", cl(&format!("Content-Length: 000{n}\r\n")), Serve(200, 1, Then::Answered),
            "1*DIGIT allows leading zeros"),
        case("cl_too_large", post(&format!("Content-Length: {}\r\n", MAX_BODY + 1), &"x".repeat(MAX_BODY + 1)),
            Reject(413, TOO_LARGE), "above max_body_bytes"),
        // ---- Chunk sizes and lines ----
        case("chunk_size_minus", one_chunk("-1"), Reject(400, CHUNK_ERR), "chunk-size = 1*HEXDIG"),
        case("chunk_size_plus", one_chunk("+a"), Reject(400, CHUNK_ERR), "1*HEXDIG"),
        case("chunk_size_0x", one_chunk(&format!("0x{hex}")), Reject(400, CHUNK_ERR), "1*HEXDIG: 0x is not hex"),
        case("chunk_size_leading_space", one_chunk(&format!(" {hex}")), Reject(400, CHUNK_ERR), "1*HEXDIG"),
        case("chunk_size_17_digits", one_chunk("10000000000000000"), Reject(400, CHUNK_ERR), "overflows u64"),
        case("chunk_size_18_digits", one_chunk("fffffffffffffffff0"), Reject(400, CHUNK_ERR), "overflows u64"),
        case("chunk_size_empty", one_chunk(""), Reject(400, CHUNK_ERR), "1*HEXDIG"),
        case("chunk_size_trailing_space", one_chunk(&format!("{hex} ")), Serve(200, 1, Then::Answered),
            "decision: BWS after the size tolerated (BWS before ';' is in the grammar; hyper/nginx accept it); the body is re-framed upstream so no differential"),
        case("chunk_size_inner_space", one_chunk("1 2"), Reject(400, CHUNK_ERR), "not one number"),
        case("chunk_missing_crlf_after_data", chunks(&format!("4\r\n{b}\r\n0\r\n\r\n")), Reject(400, CHUNK_ERR), "chunk-data CRLF"),
        case("chunk_data_longer_than_size", chunks(&format!("{:x}\r\n{b}X\r\n0\r\n\r\n", n)), Reject(400, CHUNK_ERR), "chunk-data CRLF"),
        case("chunk_ext_ok", one_chunk(&format!("{hex};name=value;q=\"a;b\"")), Serve(200, 1, Then::Answered),
            "9112 7.1.1: extensions allowed, ignored"),
        case("chunk_ext_bws", one_chunk(&format!("{hex} ; name = value")), Serve(200, 1, Then::Answered),
            "BWS around ';' and '=' is in the grammar"),
        case("chunk_ext_100k", one_chunk(&format!("{hex};x={}", "a".repeat(100 * 1024))), Reject(400, CHUNK_ERR),
            "unbounded extensions are a DoS: chunk-size line limit 4 KiB"),
        case("chunk_ext_nul", one_chunk(&format!("{hex};a=\0")), Reject(400, CHUNK_ERR), "CTLs are neither token nor quoted-string"),
        case("chunk_ext_ctl", one_chunk(&format!("{hex};a=\x01b")), Reject(400, CHUNK_ERR), "CTLs"),
        case("chunk_ext_bare_cr", one_chunk(&format!("{hex};a\rb")), Reject(400, CHUNK_ERR), "bare CR"),
        case("chunk_ext_bare_lf", chunks(&format!("{hex};a\n{b}\r\n0\r\n\r\n")), Reject(400, CHUNK_ERR), "bare LF"),
        case("chunk_size_bare_lf", chunks(&format!("{hex}\n{b}\r\n0\r\n\r\n")), Reject(400, CHUNK_ERR), "decision: bare LF rejected in chunk lines too"),
        case("chunk_data_bare_lf", chunks(&format!("{hex}\r\n{b}\n0\r\n\r\n")), Reject(400, CHUNK_ERR), "bare LF after data"),
        case("chunk_last_bare_lf", chunks(&format!("{hex}\r\n{b}\r\n0\n\n")), Reject(400, CHUNK_ERR), "bare LF in last-chunk"),
        case("chunk_size_bare_cr", chunks(&format!("{hex}\r{b}\r\n0\r\n\r\n")), Reject(400, CHUNK_ERR), "bare CR"),
        case("chunk_trailer_ok", chunks(&format!("{hex}\r\n{b}\r\n0\r\nX-Trailer: a\r\nContent-Length: 5\r\n\r\n")), Serve(200, 1, Then::Answered),
            "trailer fields are allowed and dropped (a Content-Length there changes nothing)"),
        case("chunk_trailer_obs_fold", chunks(&format!("{hex}\r\n{b}\r\n0\r\nX-Trailer: a\r\n b\r\n\r\n")), Reject(400, CHUNK_ERR), "obs-fold in trailers"),
        case("chunk_trailer_bare_lf", chunks(&format!("{hex}\r\n{b}\r\n0\r\nX-Trailer: a\n\r\n")), Reject(400, CHUNK_ERR), "bare LF in trailers"),
        case("chunk_trailer_nul", chunks(&format!("{hex}\r\n{b}\r\n0\r\nX-Trailer: a\0\r\n\r\n")), Reject(400, CHUNK_ERR), "NUL in trailer value"),
        case("chunked_too_large", chunks(&format!("{:x}\r\n{}\r\n0\r\n\r\n", MAX_BODY + 1, "x".repeat(MAX_BODY + 1))),
            Reject(413, TOO_LARGE), "decoded body above max_body_bytes"),
        case("chunked_too_large_many_chunks", chunks(&(format!("400\r\n{}\r\n", "y".repeat(1024)).repeat(5) + "0\r\n\r\n")),
            Reject(413, TOO_LARGE), "the limit is on the sum of the chunks"),
        // ---- Line endings and folding in the head ----
        case("head_bare_lf_all", format!("POST /v1/chat/completions HTTP/1.1\nHost: test\nContent-Length: {n}\n\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "decision: 9112 2.2 MAY accept bare LF; we reject (parser differential)"),
        case("head_bare_lf_one_line", format!("POST /v1/chat/completions HTTP/1.1\r\nHost: test\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "as above"),
        case("head_bare_lf_request_line", format!("POST /v1/chat/completions HTTP/1.1\nHost: test\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "as above"),
        case("head_bare_lf_final", format!("POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: {n}\r\n\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "as above"),
        case("head_bare_cr_request_line", format!("POST /v1/chat/completions HTTP/1.1\rHost: test\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "9112 2.2: bare CR MUST be invalid or replaced by SP"),
        case("head_bare_cr_value", cl(&format!("X-A: a\rContent-Length: {n}\r\n")),
            Reject(400, HEAD_ERR), "bare CR in a field value"),
        case("obs_fold_any_header", cl(&format!("X-Folded: first\r\n  second\r\nContent-Length: {n}\r\n")),
            Reject(400, HEAD_ERR), "9112 5.2"),
        case("obs_fold_tab", cl(&format!("X-Folded: first\r\n\tsecond\r\nContent-Length: {n}\r\n")),
            Reject(400, HEAD_ERR), "9112 5.2"),
        case("whitespace_before_first_field", format!("POST /v1/chat/completions HTTP/1.1\r\n Host: test\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "9112 2.2: whitespace between start line and first field"),
        // ---- Control bytes in names and values ----
        case("name_nul", cl(&format!("X\0A: a\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "field-name = token"),
        case("name_del", cl(&format!("X\x7fA: a\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "token"),
        case("name_0x01", cl(&format!("X\x01A: a\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "token"),
        case("name_high_byte", bytes(&[b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nX\xffA: a\r\n", format!("Content-Length: {n}\r\n\r\n{b}").as_bytes()]),
            Reject(400, HEAD_ERR), "token"),
        case("name_space_inside", cl(&format!("X A: a\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "token"),
        case("name_empty", cl(&format!(": a\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "token is 1*tchar"),
        case("line_without_colon", cl(&format!("X-A\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "field-line"),
        case("value_nul", cl(&format!("X-A: a\0b\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "9110 5.5: NUL MUST be rejected or replaced"),
        case("value_0x01", cl(&format!("X-A: a\x01b\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "CTL"),
        case("value_del", cl(&format!("X-A: a\x7fb\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "DEL"),
        case("value_lf_inside", cl(&format!("X-A: a\nb\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "bare LF"),
        case("value_cl_nul", cl(&format!("Content-Length: {n}\0\r\n")), Reject(400, HEAD_ERR), "NUL in Content-Length"),
        case("target_nul", format!("POST /v1/chat/completions\0 HTTP/1.1\r\nHost: test\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "request-target"),
        case("method_nul", format!("PO\0ST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "method = token"),
        case("value_high_bytes_ok", cl(&format!("X-A: caf\u{e9}\r\nContent-Length: {n}\r\n")), Serve(200, 1, Then::Answered),
            "obs-text is allowed in values"),
        // ---- Request-target forms and methods ----
        case("absolute_form", format!("POST http://evil.example/v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Serve(200, 1, Then::Answered), "9112 3.2.2: MUST accept absolute-form; routed by path to the configured upstream, never to the named host"),
        case("absolute_form_no_path", format!("POST http://evil.example HTTP/1.1\r\nHost: evil.example\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "decision: no path to route on"),
        case("absolute_form_other_scheme", format!("POST ftp://evil/v1/chat/completions HTTP/1.1\r\nHost: evil\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "only http(s) URIs"),
        case("fragment", format!("POST /v1/chat/completions#x HTTP/1.1\r\nHost: test\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "a request-target has no fragment"),
        case("options_asterisk", b"OPTIONS * HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), Serve(404, 0, Then::Answered),
            "9112 3.2.4: valid; no server-wide OPTIONS resource: 404, not proxied, connection kept"),
        case("get_asterisk", b"GET * HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), Reject(400, HEAD_ERR), "asterisk-form only for OPTIONS"),
        case("connect", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(),
            Reject(501, HEAD_ERR), "9110 9.1: not a proxy, CONNECT not implemented: 501"),
        case("huge_method", format!("{} /v1/chat/completions HTTP/1.1\r\nHost: test\r\n\r\n", "A".repeat(10 * 1024)).into_bytes(),
            Reject(501, HEAD_ERR), "9112 3: method longer than any implemented SHOULD 501"),
        case("huge_uri", format!("GET /{} HTTP/1.1\r\nHost: test\r\n\r\n", "a".repeat(100 * 1024)).into_bytes(),
            Reject(414, HEAD_ERR), "9112 3: target longer than we parse MUST 414"),
        case("huge_head", format!("GET /health HTTP/1.1\r\nHost: test\r\n{}\r\n", "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(500)).into_bytes(),
            Reject(431, HEAD_ERR), "9110 15.5.20 / 6585: head above max_head_bytes"),
        case("too_many_headers", format!("GET /health HTTP/1.1\r\nHost: test\r\n{}\r\n", "X-A: b\r\n".repeat(101)).into_bytes(),
            Reject(431, HEAD_ERR), "more fields than max_headers"),
        case("double_space_request_line", b"GET  /health HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), Reject(400, HEAD_ERR), "9112 3: single SP"),
        case("tab_request_line", b"GET\t/health HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), Reject(400, HEAD_ERR), "decision: SP only, no HTAB/VT/FF/CR"),
        // ---- Versions ----
        case("http09", b"GET /\r\n".to_vec(), Reject(400, HEAD_ERR), "HTTP/0.9 is not a version a 505 could name: 400"),
        case("http2_request_line", b"GET /health HTTP/2.0\r\nHost: test\r\n\r\n".to_vec(), Reject(505, HEAD_ERR), "9110 15.6.6: major version not supported"),
        case("http2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Reject(505, HEAD_ERR), "h2 prior knowledge on the HTTP/1 port"),
        case("http12", b"GET /health HTTP/1.2\r\nHost: test\r\n\r\n".to_vec(), Reject(505, HEAD_ERR),
            "decision: 9110 2.5 SHOULD process as 1.1; we refuse the unknown minor (nothing sends it; no differential)"),
        case("http_lowercase", b"GET /health http/1.1\r\nHost: test\r\n\r\n".to_vec(), Reject(400, HEAD_ERR), "HTTP-name is case-sensitive"),
        case("http_two_digit_minor", b"GET /health HTTP/1.10\r\nHost: test\r\n\r\n".to_vec(), Reject(400, HEAD_ERR), "HTTP-version = 1DIGIT.1DIGIT"),
        case("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), Reject(400, HEAD_ERR), "TLS on the plain port"),
        // ---- Host ----
        case("missing_host", format!("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "9112 3.2: MUST 400 an HTTP/1.1 request without Host"),
        case("two_hosts", cl(&format!("Host: evil\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "9112 3.2: MUST 400 more than one Host"),
        case("two_equal_hosts", cl(&format!("Host: test\r\nContent-Length: {n}\r\n")), Reject(400, HEAD_ERR), "9112 3.2: more than one field line"),
        case("host_invalid_value", format!("POST /v1/chat/completions HTTP/1.1\r\nHost: a b/c\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "9112 3.2: MUST 400 an invalid Host value"),
        case("host_with_userinfo", format!("POST /v1/chat/completions HTTP/1.1\r\nHost: user@evil\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Reject(400, HEAD_ERR), "9110 7.2: Host = uri-host [ \":\" port ], no userinfo"),
        case("host_empty_ok", format!("POST /v1/chat/completions HTTP/1.1\r\nHost:\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Serve(200, 1, Then::Answered), "9110 7.2: empty Host is valid"),
        case("host_ipv6_port_ok", format!("POST /v1/chat/completions HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: {n}\r\n\r\n{b}").into_bytes(),
            Serve(200, 1, Then::Answered), "IP-literal with port"),
        case("http10_without_host", b"GET /health HTTP/1.0\r\n\r\n".to_vec(), Serve(200, 0, Then::Closed),
            "Host is required only in HTTP/1.1; 1.0 closes by default"),
        case("http10_two_hosts", b"GET /health HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), Reject(400, HEAD_ERR),
            "9112 3.2: more than one Host in any request"),
    ]
}

/// The mock's request counters that a forwarded chat request moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counters {
    chat: u64,
    openai: u64,
}

fn counters(mock: &Proc) -> Counters {
    let r = roundtrip(mock.addr, &get("/mock/stats"));
    assert_eq!(r.status, 200, "mock stats: {}", r.text());
    let v = r.json();
    Counters {
        chat: v["chat_requests"].as_u64().expect("chat_requests"),
        openai: v["openai_requests"].as_u64().expect("openai_requests"),
    }
}

/// Runs one case; `Err` describes how it went wrong.
fn run(case: &Case, gw: &Proc, mock: &Proc) -> Result<(), String> {
    let before = counters(mock);
    let mut raw = case.raw.clone();
    raw.extend_from_slice(&chat("pipelined-after", &[]));
    let mut c = Client::connect(gw.addr);
    c.set_read_timeout(Duration::from_secs(5));
    // A large request may be cut short by the gateway's close: the answer
    // still has to arrive.
    let _ = c.try_send(&raw);
    let r = c
        .try_read_response()
        .map_err(|e| format!("no response: {e}"))?;
    let answered_after = match case.expect {
        Reject(status, code) => {
            if r.status != status {
                return Err(format!("status {} (want {status}): {}", r.status, r.text()));
            }
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                r.assert_error(status, code);
            }));
            if caught.is_err() {
                return Err(format!("bad error body: {}", r.text()));
            }
            if r.header("connection") != Some("close") {
                return Err(format!("no `connection: close`: {:?}", r.headers));
            }
            expect_closed(&mut c)?;
            0
        }
        Serve(status, _, then) => {
            if r.status != status {
                return Err(format!("status {} (want {status}): {}", r.status, r.text()));
            }
            match then {
                Then::Answered => {
                    let next = c
                        .try_read_response()
                        .map_err(|e| format!("pipelined request not answered: {e}"))?;
                    if next.status != 200 {
                        return Err(format!("pipelined request got {}", next.status));
                    }
                    let v = next.json();
                    if v["choices"][0]["message"]["content"] != MOCK_ANSWER {
                        return Err(format!("pipelined answer: {v}"));
                    }
                    1
                }
                Then::Closed => {
                    expect_closed(&mut c)?;
                    0
                }
            }
        }
    };
    let forwarded = match case.expect {
        Reject(..) => 0,
        Serve(_, n, _) => n,
    } + answered_after;
    let after = counters(mock);
    let want = Counters {
        chat: before.chat + forwarded,
        openai: before.openai + forwarded,
    };
    if after != want {
        return Err(format!(
            "mock counters {after:?}, want {want:?} (before {before:?})"
        ));
    }
    Ok(())
}

fn expect_closed(c: &mut Client) -> Result<(), String> {
    if !c.buffered().is_empty() {
        return Err(format!(
            "more bytes after the answer: {:?}",
            String::from_utf8_lossy(c.buffered())
        ));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.assert_closed(Duration::from_secs(4))
    }))
    .map_err(|_| "connection not closed (or more bytes sent)".to_string())
}

fn gateway() -> (Proc, Proc) {
    start_pair(&[], |c| c.shards(1).limit("max_body_bytes", MAX_BODY))
}

#[test]
fn smuggling_and_malformed_requests() {
    let cases = cases();
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    for c in &cases {
        assert!(!c.why.is_empty(), "{}: document the expectation", c.name);
    }

    let (mock, gw) = gateway();
    let start = counters(&mock);
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run(case, &gw, &mock) {
            failures.push(format!(
                "{} [{:?}; {}]: {e}",
                case.name, case.expect, case.why
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Over the whole suite: only the valid cases and their pipelined
    // followers reached the mock.
    let expected: u64 = cases
        .iter()
        .map(|c| match c.expect {
            Reject(..) => 0,
            Serve(_, n, Then::Answered) => n + 1,
            Serve(_, n, Then::Closed) => n,
        })
        .sum();
    let end = counters(&mock);
    assert_eq!(
        end.chat - start.chat,
        expected,
        "chat_requests over the suite"
    );
    assert_eq!(
        end.openai - start.openai,
        expected,
        "openai_requests over the suite"
    );
}

#[test]
fn absolute_form_is_routed_by_path_not_host() {
    let (mock, gw) = gateway();
    let b = body();
    let raw = format!(
        "POST http://evil.example:9/v1/chat/completions HTTP/1.1\r\nHost: evil.example:9\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    );
    let r = roundtrip(gw.addr, raw.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = mock_last_request(&mock).expect("forwarded to the configured upstream");
    assert_eq!(seen.request_line(), "POST /v1/chat/completions HTTP/1.1");
    let hosts = seen.header_values("host");
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert!(!hosts[0].contains("evil"), "client Host leaked: {hosts:?}");
    assert!(!seen.head.contains("evil"), "{}", seen.head);
}
