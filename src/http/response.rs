//! Response-head parsing, for the upstream side of the gateway.

use std::mem::MaybeUninit;

use super::request::{
    for_each_list_element, has_obs_fold, head_region, parse_content_length, skip_empty_lines,
    span_of, ConnectionTokens, TransferCodings, MAX_HEADERS_CAP,
};
use super::request::{HeadError, HeadLimits, HeaderSpan, Method, ParseStatus, Span, Version};

/// How the body of a response is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResponseFraming {
    /// No body: 1xx, 204, 304, a response to HEAD, or `Content-Length: 0`.
    #[default]
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body ends when the server closes the connection.
    UntilClose,
}

/// A parsed response head; reused between responses on a connection.
#[derive(Clone, Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: Span,
    pub version: Version,
    pub headers: Vec<HeaderSpan>,
    pub framing: ResponseFraming,
    /// Whether the upstream connection may be reused after this response.
    pub keep_alive: bool,
    /// Bytes the head occupies at the start of the buffer.
    pub head_len: usize,
}

impl ResponseHead {
    /// Value of the first header named `name` (ASCII case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.get(buf))
    }
}

/// Parses a response head from the start of `buf`.
///
/// `request_method` decides whether a body can follow (HEAD never has one).
/// A 1xx head parses as `Complete` with `framing == Empty`; the caller drops
/// `head_len` bytes and parses again for the final response.
///
/// Limits and `Partial`/`HeadTooLarge` behave as in
/// [`parse_request_head`](super::request::parse_request_head); `head` is
/// meaningful only after `Ok(Complete)`.
///
/// The upstream is trusted more than a client, so this is more lenient:
/// bare LF line endings are accepted (httparse's default), repeated identical
/// Content-Length values are merged (RFC 9112 section 6.3 rule 5), and
/// Transfer-Encoding wins over Content-Length (rule 3) — the caller must not
/// forward that Content-Length, and `keep_alive` is false for such a
/// response. Obsolete line folding is still rejected. See
/// `response_framing` for the numbered framing rules.
pub fn parse_response_head(
    buf: &[u8],
    limits: &HeadLimits,
    request_method: Method,
    head: &mut ResponseHead,
) -> Result<ParseStatus, HeadError> {
    // Same windowing as for requests: never parse past the limit.
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)];
    let mut res = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, window, slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_head_bytes {
                Err(HeadError::HeadTooLarge)
            } else {
                Ok(ParseStatus::Partial)
            };
        }
        Err(e) => return Err(response_error(window, e)),
    };
    if head_len > u32::MAX as usize {
        return Err(HeadError::HeadTooLarge);
    }
    let (Some(minor), Some(status)) = (res.version, res.code) else {
        return Err(HeadError::Malformed("invalid status line"));
    };
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::UnsupportedVersion),
    };
    // httparse accepts any three digits; status codes start at 100
    // (RFC 9110 section 15).
    if status < 100 {
        return Err(HeadError::Malformed("invalid status code"));
    }

    head.headers.clear();
    head.headers.reserve(res.headers.len());
    let mut te = TransferCodings::default();
    let mut cl = ContentLengths::default();
    let mut conn = ConnectionTokens::default();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        head.headers.push(HeaderSpan {
            name: span_of(buf, name),
            value: span_of(buf, h.value),
        });
        // Length checks first: they reject most fields without case folding.
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            cl.add_line(h.value);
        } else if name.len() == 17 && name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.add_line(h.value);
        } else if name.len() == 10 && name.eq_ignore_ascii_case(b"connection") {
            conn.add_line(h.value);
        }
    }

    let framing = response_framing(request_method, status, version, &te, &cl)?;
    head.status = status;
    head.reason = reason_span(buf);
    head.version = version;
    head.framing = framing;
    // A close-delimited body ends the connection by definition. TE together
    // with CL may be an attempt at response splitting (RFC 9112 section
    // 6.1): we read it by TE but do not trust the connection afterwards.
    head.keep_alive = conn.keep_alive(version)
        && framing != ResponseFraming::UntilClose
        && !(te.present && cl.lines > 0);
    head.head_len = head_len;
    Ok(ParseStatus::Complete)
}

/// Decides how the response body is delimited, RFC 9112 section 6.3.
fn response_framing(
    request_method: Method,
    status: u16,
    version: Version,
    te: &TransferCodings,
    cl: &ContentLengths,
) -> Result<ResponseFraming, HeadError> {
    // 1. Rule 1: a response to HEAD, any 1xx, 204 and 304 end at the head,
    //    whatever Content-Length or Transfer-Encoding say (they describe the
    //    representation a GET would have returned).
    if request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        return Ok(ResponseFraming::Empty);
    }
    // 2. Rule 2 (2xx to CONNECT is a tunnel) does not apply: the gateway
    //    never sends CONNECT upstream.
    if te.present {
        // 3. Section 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
        //    Guessing would forward a body with the wrong boundaries; fail so
        //    the client gets a clean 502 instead.
        if version == Version::Http10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        // 4. Section 6.1: chunked MUST NOT be applied twice; we would only
        //    undo one layer.
        if te.chunked > 1 {
            return Err(HeadError::Malformed("chunked applied more than once"));
        }
        // 5. Rules 3 and 4: Transfer-Encoding overrides Content-Length; a
        //    final chunked is chunked framing (other codings before it stay
        //    in the body, see the Transfer-Encoding header); any other final
        //    coding (or an empty field) means read until close.
        return Ok(if te.last_is_chunked {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        });
    }
    // 6. Rules 5 and 6: Content-Length, possibly repeated or a list of equal
    //    values; anything else is an unrecoverable framing error.
    if cl.lines > 0 {
        return match (cl.invalid, cl.value) {
            (false, Some(0)) => Ok(ResponseFraming::Empty),
            (false, Some(n)) => Ok(ResponseFraming::Length(n)),
            _ => Err(HeadError::InvalidContentLength),
        };
    }
    // 7. Rule 8: a response with neither is delimited by the close.
    Ok(ResponseFraming::UntilClose)
}

/// All Content-Length field lines of a response, merged per RFC 9112
/// section 6.3 rule 5.
#[derive(Clone, Copy, Debug, Default)]
struct ContentLengths {
    /// Field lines seen.
    lines: u32,
    /// The common value, once one valid value has been seen.
    value: Option<u64>,
    /// A value was not 1*DIGIT, differed from another, or a line was empty.
    invalid: bool,
}

impl ContentLengths {
    fn add_line(&mut self, value: &[u8]) {
        self.lines += 1;
        let mut elements = 0;
        for_each_list_element(value, |element| {
            elements += 1;
            match parse_content_length(element) {
                Some(n) if self.value.is_none_or(|v| v == n) => self.value = Some(n),
                _ => self.invalid = true,
            }
        });
        if elements == 0 {
            self.invalid = true;
        }
    }
}

/// The reason-phrase span. Computed from the buffer because httparse
/// returns a static `""` (not a slice of `buf`) when the phrase is missing
/// or contains obs-text. Only called on a head httparse accepted, so the
/// status-line is `HTTP/1.x SP 3DIGIT` followed by SP or a line ending.
fn reason_span(buf: &[u8]) -> Span {
    let after_code = skip_empty_lines(buf) + 12;
    if buf.get(after_code) != Some(&b' ') {
        let at = after_code as u32;
        return Span { start: at, end: at };
    }
    let start = after_code + 1;
    let len = memchr::memchr2(b'\r', b'\n', &buf[start..]).unwrap_or(buf.len() - start);
    Span {
        start: start as u32,
        end: (start + len) as u32,
    }
}

/// Turns an httparse error on a response into ours (error path only).
fn response_error(window: &[u8], err: httparse::Error) -> HeadError {
    if has_obs_fold(head_region(window)) {
        return HeadError::ObsFold;
    }
    match err {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => {
            // `HTTP/<digit>` that is not 1.0/1.1 is a version we do not
            // speak; anything else is not an HTTP/1 status line at all.
            let line = &window[skip_empty_lines(window)..];
            if line.len() > 5 && line.starts_with(b"HTTP/") && line[5].is_ascii_digit() {
                HeadError::UnsupportedVersion
            } else {
                HeadError::Malformed("invalid status line")
            }
        }
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::Status | httparse::Error::Token | httparse::Error::NewLine => {
            HeadError::Malformed("invalid status line")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(
        buf: &[u8],
        method: Method,
        limits: &HeadLimits,
    ) -> Result<(ParseStatus, ResponseHead), HeadError> {
        let mut head = ResponseHead::default();
        parse_response_head(buf, limits, method, &mut head).map(|s| (s, head))
    }

    fn ok_for(buf: &[u8], method: Method) -> ResponseHead {
        match parse_with(buf, method, &HeadLimits::default()) {
            Ok((ParseStatus::Complete, head)) => head,
            other => panic!(
                "expected Complete for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn ok(buf: &[u8]) -> ResponseHead {
        ok_for(buf, Method::Post)
    }

    fn err(buf: &[u8]) -> HeadError {
        match parse_with(buf, Method::Post, &HeadLimits::default()) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    /// (framing, keep_alive) of an HTTP/1.1 200 with these header lines.
    fn framing(headers: &str) -> Result<(ResponseFraming, bool), HeadError> {
        let buf = format!("HTTP/1.1 200 OK\r\n{headers}\r\n");
        parse_with(buf.as_bytes(), Method::Post, &HeadLimits::default())
            .map(|(_, h)| (h.framing, h.keep_alive))
    }

    const SAMPLE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Transfer-Encoding: chunked\r\n\
X-Request-Id: req_123\r\n\
\r\n\
5\r\nhello\r\n0\r\n\r\n";

    #[test]
    fn parses_sample_response() {
        let head = ok(SAMPLE);
        assert_eq!(head.status, 200);
        assert_eq!(head.reason.get(SAMPLE), b"OK");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.framing, ResponseFraming::Chunked);
        assert!(head.keep_alive);
        assert_eq!(head.headers.len(), 3);
        assert_eq!(head.header(SAMPLE, "x-request-id"), Some(&b"req_123"[..]));
        assert_eq!(&SAMPLE[head.head_len..], b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn partial_at_every_split_offset() {
        let head_len = ok(SAMPLE).head_len;
        for cut in 0..head_len {
            let r = parse_with(&SAMPLE[..cut], Method::Post, &HeadLimits::default());
            assert_eq!(r.map(|(s, _)| s), Ok(ParseStatus::Partial), "cut at {cut}");
        }
        for cut in head_len..=SAMPLE.len() {
            let head = ok(&SAMPLE[..cut]);
            assert_eq!(head.head_len, head_len);
        }
    }

    #[test]
    fn head_too_large_and_too_many_headers() {
        let buf = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
        let small = HeadLimits {
            max_head_bytes: buf.len() - 1,
            max_headers: 100,
        };
        assert_eq!(
            parse_with(buf, Method::Get, &small).unwrap_err(),
            HeadError::HeadTooLarge
        );
        let few = HeadLimits {
            max_head_bytes: 1024,
            max_headers: 1,
        };
        assert_eq!(
            parse_with(buf, Method::Get, &few).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn reason_phrase_spans() {
        let buf = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(ok(buf).reason.get(buf), b"Not Found");
        let buf = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
        let head = ok(buf);
        assert!(head.reason.is_empty());
        assert_eq!(head.reason.start, 12);
        let buf = b"HTTP/1.1 200 \r\n\r\n";
        assert!(ok(buf).reason.is_empty());
        // httparse hands back a static "" for obs-text; we still span the bytes.
        let buf = b"HTTP/1.1 200 \xc3\x89t\xc3\xa9\r\n\r\n";
        assert_eq!(ok(buf).reason.get(buf), b"\xc3\x89t\xc3\xa9");
        let buf = b"\r\nHTTP/1.1 500 Oops\nX: y\n\n";
        let head = ok(buf);
        assert_eq!(head.reason.get(buf), b"Oops");
        assert_eq!(head.status, 500);
    }

    #[test]
    fn bodiless_responses_are_empty() {
        let with_body_headers = "Content-Length: 10\r\nTransfer-Encoding: chunked\r\n";
        for (status, method) in [
            (200, Method::Head),
            (404, Method::Head),
            (204, Method::Post),
            (304, Method::Get),
            (100, Method::Post),
            (101, Method::Get),
            (103, Method::Get),
        ] {
            let buf = format!("HTTP/1.1 {status} X\r\n{with_body_headers}\r\n");
            let head = ok_for(buf.as_bytes(), method);
            assert_eq!(
                head.framing,
                ResponseFraming::Empty,
                "{status} to {method:?}"
            );
            assert_eq!(head.status, status);
        }
        // Even an invalid Content-Length does not matter when there is no body.
        let head = ok_for(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            Method::Head,
        );
        assert_eq!(head.framing, ResponseFraming::Empty);
        assert!(head.keep_alive);
    }

    #[test]
    fn interim_response_then_final() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut head = ResponseHead::default();
        let limits = HeadLimits::default();
        assert_eq!(
            parse_response_head(buf, &limits, Method::Post, &mut head),
            Ok(ParseStatus::Complete)
        );
        assert_eq!(head.status, 100);
        assert_eq!(head.framing, ResponseFraming::Empty);
        let rest = &buf[head.head_len..];
        parse_response_head(rest, &limits, Method::Post, &mut head).unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, ResponseFraming::Length(2));
        assert_eq!(&rest[head.head_len..], b"ok");
    }

    #[test]
    fn content_length_framing() {
        assert_eq!(
            framing("Content-Length: 42\r\n"),
            Ok((ResponseFraming::Length(42), true))
        );
        assert_eq!(
            framing("Content-Length: 0\r\n"),
            Ok((ResponseFraming::Empty, true))
        );
        // Rule 5: repeated identical values are merged.
        assert_eq!(
            framing("Content-Length: 42\r\nContent-Length: 42\r\n"),
            Ok((ResponseFraming::Length(42), true))
        );
        assert_eq!(
            framing("Content-Length: 42, 42\r\n"),
            Ok((ResponseFraming::Length(42), true))
        );
        for h in [
            "Content-Length: 42\r\nContent-Length: 43\r\n",
            "Content-Length: 42, 43\r\n",
            "Content-Length: 42, x\r\n",
            "Content-Length:\r\n",
            "Content-Length: 42\r\nContent-Length:\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 1 2\r\n",
            "Content-Length: 18446744073709551616\r\n",
        ] {
            assert_eq!(framing(h), Err(HeadError::InvalidContentLength), "{h:?}");
        }
    }

    #[test]
    fn transfer_encoding_framing() {
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\n"),
            Ok((ResponseFraming::Chunked, true))
        );
        assert_eq!(
            framing("Transfer-Encoding: gzip, chunked\r\n"),
            Ok((ResponseFraming::Chunked, true))
        );
        // Rule 3: TE wins over CL, but the connection is not reused.
        assert_eq!(
            framing("Content-Length: 10\r\nTransfer-Encoding: chunked\r\n"),
            Ok((ResponseFraming::Chunked, false))
        );
        // Rule 4: final coding not chunked -> close-delimited.
        assert_eq!(
            framing("Transfer-Encoding: gzip\r\n"),
            Ok((ResponseFraming::UntilClose, false))
        );
        assert_eq!(
            framing("Transfer-Encoding: chunked, gzip\r\n"),
            Ok((ResponseFraming::UntilClose, false))
        );
        assert_eq!(
            framing("Transfer-Encoding: chunked, chunked\r\n"),
            Err(HeadError::Malformed("chunked applied more than once"))
        );
        assert_eq!(
            err(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 response")
        );
    }

    #[test]
    fn close_delimited_and_keep_alive() {
        assert_eq!(framing(""), Ok((ResponseFraming::UntilClose, false)));
        assert_eq!(
            framing("Connection: close\r\nContent-Length: 1\r\n"),
            Ok((ResponseFraming::Length(1), false))
        );
        let head = ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(head.version, Version::Http10);
        assert!(!head.keep_alive);
        let head = ok(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n");
        assert!(head.keep_alive);
        let head = ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(head.framing, ResponseFraming::UntilClose);
        assert!(!head.keep_alive);
    }

    #[test]
    fn bare_lf_is_tolerated_but_obs_fold_is_not() {
        let buf = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok";
        let head = ok(buf);
        assert_eq!(head.framing, ResponseFraming::Length(2));
        assert_eq!(&buf[head.head_len..], b"ok");
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
            HeadError::ObsFold
        );
    }

    #[test]
    fn invalid_status_lines() {
        for (buf, want) in [
            (
                &b"HTTP/2.0 200 OK\r\n\r\n"[..],
                HeadError::UnsupportedVersion,
            ),
            (b"HTTP/1.2 200 OK\r\n\r\n", HeadError::UnsupportedVersion),
            (
                b"SSH-2.0-OpenSSH_9.6\r\n",
                HeadError::Malformed("invalid status line"),
            ),
            (
                b"http/1.1 200 OK\r\n\r\n",
                HeadError::Malformed("invalid status line"),
            ),
            (
                b"HTTP/1.1 20 OK\r\n\r\n",
                HeadError::Malformed("invalid status line"),
            ),
            (
                b"HTTP/1.1 2000 OK\r\n\r\n",
                HeadError::Malformed("invalid status line"),
            ),
            (
                b"HTTP/1.1 099 Low\r\n\r\n",
                HeadError::Malformed("invalid status code"),
            ),
            (
                b"HTTP/1.1 200 O\0K\r\n\r\n",
                HeadError::Malformed("invalid status line"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nX-A: \0\r\n\r\n",
                HeadError::Malformed("invalid header value"),
            ),
            (
                b"HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n",
                HeadError::Malformed("invalid header name"),
            ),
        ] {
            assert_eq!(err(buf), want, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn head_is_reset_and_reused() {
        let mut head = ResponseHead::default();
        let limits = HeadLimits::default();
        let first = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 5\r\n\r\n";
        parse_response_head(first, &limits, Method::Get, &mut head).unwrap();
        assert_eq!(head.headers.len(), 3);
        let ptr = head.headers.as_ptr();
        let second = b"HTTP/1.1 204 No Content\r\n\r\n";
        parse_response_head(second, &limits, Method::Get, &mut head).unwrap();
        assert_eq!(head.status, 204);
        assert!(head.headers.is_empty());
        assert_eq!(head.framing, ResponseFraming::Empty);
        assert_eq!(head.head_len, second.len());
        assert_eq!(head.reason.get(second), b"No Content");
        assert_eq!(head.headers.as_ptr(), ptr);
    }
}
