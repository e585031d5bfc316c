//! Request-head parsing and the body-framing decision (RFC 9112 section 6).

use std::mem::MaybeUninit;

/// HTTP request method. Methods the gateway never serves collapse into `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

impl Method {
    /// The method's name as it goes on the wire (`Other` renders as `OTHER`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other => "OTHER",
        }
    }
}

/// HTTP version of a message. HTTP/0.9 and HTTP/2 are rejected by the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Version {
    Http10,
    #[default]
    Http11,
}

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BodyFraming {
    /// No body (no Content-Length and no Transfer-Encoding, or `Content-Length: 0`).
    #[default]
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`; decode with [`crate::http::ChunkedDecoder`].
    Chunked,
}

/// Limits applied while parsing a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Largest head (request line + headers + final CRLF) accepted, in bytes.
    pub max_head_bytes: usize,
    /// Largest number of header fields accepted.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// A byte range into the buffer a head was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf` (the buffer the head was parsed from).
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    /// Length of the span in bytes.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One header field: name and value as spans into the parsed buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// A parsed request head. Reused between requests on a connection, so the
/// `headers` vector keeps its allocation.
#[derive(Clone, Debug, Default)]
pub struct RequestHead {
    pub method: Method,
    /// The raw request-target.
    pub target: Span,
    /// The target up to (not including) `?`.
    pub path: Span,
    /// The query string after `?`, if any.
    pub query: Option<Span>,
    pub version: Version,
    /// All header fields in order of appearance.
    pub headers: Vec<HeaderSpan>,
    pub framing: BodyFraming,
    /// Whether the connection may be kept open after this request: the
    /// version's default, overridden by `Connection: close` / `keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was present (HTTP/1.1 only).
    pub expect_continue: bool,
    /// Bytes the head occupies at the start of the buffer, final CRLF included.
    pub head_len: usize,
}

impl RequestHead {
    /// Value of the first header named `name` (ASCII case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|h| h.value.get(buf))
    }
}

/// Outcome of a parse attempt that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseStatus {
    /// A whole head was parsed; its length is in `head_len`.
    Complete,
    /// More bytes are needed.
    Partial,
}

/// Why a head was rejected. Every variant maps to a status code with
/// [`HeadError::status`]; after any of them the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head is larger than `max_head_bytes` (431).
    HeadTooLarge,
    /// More header fields than `max_headers` (431).
    TooManyHeaders,
    /// Request line or header syntax is invalid (400); the text says which part.
    Malformed(&'static str),
    /// A line ends in a bare LF instead of CRLF (400).
    BareLf,
    /// A header value is continued on the next line (obsolete line folding, 400).
    ObsFold,
    /// Both Content-Length and Transfer-Encoding are present (400).
    ContentLengthWithTransferEncoding,
    /// Content-Length appears more than once or with a list of values (400).
    RepeatedContentLength,
    /// Content-Length is not a plain decimal number that fits in u64 (400).
    InvalidContentLength,
    /// Transfer-Encoding whose final coding is not `chunked` (400).
    TransferEncodingNotChunked,
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferEncoding,
    /// Not HTTP/1.0 or HTTP/1.1 (505).
    UnsupportedVersion,
    /// The request line does not fit in `max_head_bytes` because of its
    /// request-target (414, RFC 9112 section 3).
    UriTooLong,
    /// A method the gateway does not implement and never will: `CONNECT`
    /// (it is not a proxy), or one longer than any registered method
    /// (501, RFC 9112 section 3, RFC 9110 section 9.1).
    MethodNotImplemented,
}

impl HeadError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UriTooLong => 414,
            HeadError::UnsupportedTransferEncoding | HeadError::MethodNotImplemented => 501,
            HeadError::UnsupportedVersion => 505,
            HeadError::Malformed(_)
            | HeadError::BareLf
            | HeadError::ObsFold
            | HeadError::ContentLengthWithTransferEncoding
            | HeadError::RepeatedContentLength
            | HeadError::InvalidContentLength
            | HeadError::TransferEncodingNotChunked => 400,
        }
    }

    /// A short, client-safe explanation.
    pub fn message(&self) -> &'static str {
        match self {
            HeadError::HeadTooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many header fields",
            // The detail strings are all static literals written in this
            // module, never echoes of client bytes, so they are safe to send.
            HeadError::Malformed(detail) => detail,
            HeadError::BareLf => "line ends in a bare LF instead of CRLF",
            HeadError::ObsFold => "obsolete line folding is not allowed",
            HeadError::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding present"
            }
            HeadError::RepeatedContentLength => "Content-Length repeated or a list",
            HeadError::InvalidContentLength => "invalid Content-Length",
            HeadError::TransferEncodingNotChunked => "final transfer coding is not chunked",
            HeadError::UnsupportedTransferEncoding => "unsupported transfer coding",
            HeadError::UnsupportedVersion => "HTTP version not supported",
            HeadError::UriTooLong => "request-target too long",
            HeadError::MethodNotImplemented => "method not implemented",
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.status())
    }
}

impl std::error::Error for HeadError {}

/// Header slots on the stack for one parse. `HeadLimits::max_headers` above
/// this is capped to it: the slots are `MaybeUninit`, so their number costs
/// nothing per parse, but they live on the stack (32 bytes each).
pub const MAX_HEADERS_CAP: usize = 128;

/// Longest method accepted: the longest method in the IANA registry,
/// `UPDATEREDIRECTREF`. Anything longer is longer than any method we
/// implement, which RFC 9112 section 3 says SHOULD get a 501; registered
/// methods we do not serve still reach the router (404/405 with `Allow`).
pub const MAX_METHOD_LEN: usize = 17;

/// Parses a request head from the start of `buf` into `head`.
///
/// Returns `Partial` while the head is incomplete and shorter than
/// `limits.max_head_bytes`; `HeadTooLarge` once it is not complete within that.
///
/// Only `buf[..head.head_len]` is the head: bytes after it (a body, or the
/// next pipelined request) are left alone. `head` is meaningful only after
/// `Ok(Complete)`; after `Partial` or an error its contents are unspecified.
/// Its `headers` vector is cleared and refilled, so once warm a parse does
/// not allocate.
///
/// Decisions beyond the RFC's MUSTs:
/// - At most [`MAX_HEADERS_CAP`] header fields, whatever `max_headers` says.
/// - Bare LF line endings anywhere in the head are rejected ([`HeadError::BareLf`])
///   although RFC 9112 section 2.2 lets a recipient accept them: a gateway
///   that reads lines differently from the upstream invites request smuggling.
/// - Obsolete line folding is rejected ([`HeadError::ObsFold`], section 5.2).
/// - HTTP/0.9 (`GET /` with no version) is [`HeadError::Malformed`] (400):
///   it is not a version we could name in a 505. A request line whose third
///   element looks like `HTTP/<digit>...` but is not 1.0/1.1 — HTTP/2.0,
///   HTTP/1.2, and the HTTP/2 prior-knowledge preface `PRI * HTTP/2.0` — is
///   [`HeadError::UnsupportedVersion`] (505). A lowercase `http/1.1` is 400.
/// - Request-target (RFC 9112 section 3.2): origin-form (`/path?query`);
///   asterisk-form (`*`) with OPTIONS only; absolute-form with an `http` or
///   `https` scheme, a non-empty authority and a path (`http://host/p?q`),
///   where `path`/`query` cover the URL's path and query, so that `path`
///   always starts with `/` (or is `*`) — `http://host` without a path is
///   rejected rather than inventing a `/` that is not in the buffer; the
///   authority is not checked against `Host` (the gateway does not route by
///   host). Authority-form (CONNECT) and anything else, and any `#fragment`
///   (not allowed in a request-target), are [`HeadError::Malformed`].
/// - Transfer-Encoding: see [`BodyFraming`] and the numbered rules in the code.
///   An unknown coding before a final `chunked` is 501, a final coding that
///   is not `chunked` (including `identity`) is 400 as RFC 9112 section 6.3
///   demands, and `chunked` applied twice is 400 (section 6.1: a sender
///   MUST NOT do that, so it is broken framing, not an unimplemented feature).
/// - `Host` (RFC 9112 section 3.2, all MUSTs): an HTTP/1.1 request without
///   one, any request with more than one field line, and a value that is
///   not `uri-host [ ":" port ]` characters are [`HeadError::Malformed`]
///   (400). An empty value is valid. The gateway does not route by host.
/// - A field whose name equals `Content-Length` or `Transfer-Encoding` once
///   `_` is read as `-` (`Transfer_Encoding`) is [`HeadError::Malformed`]:
///   servers that map names to CGI-style variables merge the two spellings,
///   so forwarding it next to our own framing would invite smuggling.
/// - `CONNECT` and methods longer than [`MAX_METHOD_LEN`] are
///   [`HeadError::MethodNotImplemented`] (501). A request line that does not
///   fit in `max_head_bytes` is 501 while the method is still unfinished,
///   [`HeadError::UriTooLong`] (414) while the target is, and
///   [`HeadError::HeadTooLarge`] (431) otherwise.
pub fn parse_request_head(
    buf: &[u8],
    limits: &HeadLimits,
    head: &mut RequestHead,
) -> Result<ParseStatus, HeadError> {
    // Never look past max_head_bytes: bounds the work per call and makes
    // "complete but longer than the limit" impossible by construction.
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, window, slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // A full window without a complete head means the head, once it
            // completes, is longer than allowed. Returning Partial here would
            // also stall a caller whose buffer is exactly max_head_bytes.
            return if buf.len() >= limits.max_head_bytes {
                Err(too_large_error(window))
            } else {
                Ok(ParseStatus::Partial)
            };
        }
        Err(e) => return Err(request_error(window, e)),
    };
    if head_len > u32::MAX as usize {
        // Spans are u32; only reachable with an absurd max_head_bytes.
        return Err(HeadError::HeadTooLarge);
    }
    // Complete heads always carry all three request-line parts.
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("invalid request line"));
    };

    // httparse has already enforced the field grammar: names are tokens and
    // values contain only HTAB, SP, VCHAR and obs-text (no NUL, CR, LF, other
    // CTLs or DEL), with surrounding whitespace trimmed. Here we only record
    // spans and the handful of fields that decide framing and persistence.
    head.headers.clear();
    head.headers.reserve(req.headers.len());
    let mut fields = FramingFields::default();
    let mut conn = ConnectionTokens::default();
    let mut expect_continue = false;
    let mut hosts = 0u32;
    let mut host_value: &[u8] = b"";
    // Bare LF check without rescanning the head. In a head httparse accepted
    // every CR is followed by LF, and every LF ends a line: a leading empty
    // line, the request line, a field line, or the final empty line. Each
    // field line therefore starts right after its predecessor's terminator,
    // and the last two terminators are the head's last four bytes. So the
    // head has no bare LF iff the two bytes before every field name are CRLF,
    // the head ends in CRLF CRLF, and leading empty lines are all CRLF.
    // (Debug builds cross-check this against a full memchr scan below.)
    let mut crlf_only = buf[head_len - 4..head_len] == *b"\r\n\r\n";
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let name_span = span_of(buf, name);
        let at = name_span.start as usize;
        crlf_only &= buf[at - 2..at] == *b"\r\n";
        head.headers.push(HeaderSpan {
            name: name_span,
            value: span_of(buf, h.value),
        });
        if !fields.observe(name, h.value) {
            match name.len() {
                4 if name.eq_ignore_ascii_case(b"host") => {
                    hosts += 1;
                    host_value = h.value;
                }
                10 if name.eq_ignore_ascii_case(b"connection") => conn.add_line(h.value),
                6 if name.eq_ignore_ascii_case(b"expect") => {
                    expect_continue |= h.value.eq_ignore_ascii_case(b"100-continue");
                }
                _ => {}
            }
        }
    }
    let method_span = span_of(buf, method.as_bytes());
    let leading = &buf[..method_span.start as usize];
    if !leading.is_empty() {
        crlf_only &= leading.chunks(2).all(|pair| pair == b"\r\n");
    }
    debug_assert_eq!(
        crlf_only,
        !has_bare_lf(&buf[..head_len]),
        "bare-LF shortcut is wrong"
    );
    if !crlf_only {
        return Err(HeadError::BareLf);
    }

    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::UnsupportedVersion),
    };
    let method = match method_from_bytes(method.as_bytes()) {
        Method::Other if method.len() > MAX_METHOD_LEN || method == "CONNECT" => {
            return Err(HeadError::MethodNotImplemented)
        }
        m => m,
    };
    let target_span = span_of(buf, target.as_bytes());
    let (path, query) = split_target(target.as_bytes(), target_span.start, method)?;

    head.method = method;
    head.target = target_span;
    head.path = path;
    head.query = query;
    head.version = version;
    head.framing = request_framing(version, &fields)?;
    // RFC 9112 section 3.2: three MUSTs about Host, all answered with 400.
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    if !is_valid_host(host_value) {
        return Err(HeadError::Malformed("invalid Host header"));
    }
    // RFC 9112 section 9.3: HTTP/1.1 persists unless "close"; HTTP/1.0
    // persists only with "keep-alive". "close" wins over "keep-alive".
    head.keep_alive = conn.keep_alive(version);
    // RFC 9110 section 10.1.1: a server MUST ignore 100-continue in an
    // HTTP/1.0 request. Other expectations are ignored (we never send 417).
    head.expect_continue = expect_continue && version == Version::Http11;
    head.head_len = head_len;
    Ok(ParseStatus::Complete)
}

/// Decides how the request body is delimited, RFC 9112 sections 6.1-6.3.
fn request_framing(version: Version, f: &FramingFields) -> Result<BodyFraming, HeadError> {
    // 0. Not a framing field, but close enough to be read as one elsewhere.
    if f.lookalike {
        return Err(HeadError::Malformed(
            "Content-Length or Transfer-Encoding spelled with '_'",
        ));
    }
    if f.te.present {
        // 1. Section 6.1: Transfer-Encoding in an HTTP/1.0 message means the
        //    framing is faulty (1.0 has no chunked); reject.
        if version == Version::Http10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        // 2. Section 6.1: a server MAY reject Content-Length together with
        //    Transfer-Encoding. We do: it is the classic smuggling shape.
        if f.cl_count > 0 {
            return Err(HeadError::ContentLengthWithTransferEncoding);
        }
        // 3. Section 6.3 rule 4: a request whose final coding is not chunked
        //    has no determinable length: MUST answer 400. An empty
        //    Transfer-Encoding has no final coding at all.
        if f.te.codings == 0 {
            return Err(HeadError::Malformed("empty Transfer-Encoding"));
        }
        if !f.te.last_is_chunked {
            return Err(HeadError::TransferEncodingNotChunked);
        }
        // 4. Section 6.1: a sender MUST NOT apply chunked more than once.
        if f.te.chunked > 1 {
            return Err(HeadError::Malformed("chunked applied more than once"));
        }
        // 5. Section 6.1: a coding we do not implement SHOULD get 501. We
        //    decode nothing but chunked (the body is forwarded as is).
        if f.te.other {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        // 6. Section 6.3 rule 4: final chunked -> chunked body.
        return Ok(BodyFraming::Chunked);
    }
    // 7. Section 6.3 rule 5 allows merging repeated identical Content-Length
    //    values; for requests we refuse any repetition or list instead:
    //    nothing legitimate sends one, and it removes a parser-differential.
    if f.cl_count > 1 || f.cl_list {
        return Err(HeadError::RepeatedContentLength);
    }
    // 8. Section 6.3 rule 6: a valid Content-Length is the body length.
    if f.cl_count == 1 {
        return match parse_content_length(f.cl_value) {
            Some(0) => Ok(BodyFraming::Empty),
            Some(n) => Ok(BodyFraming::Length(n)),
            None => Err(HeadError::InvalidContentLength),
        };
    }
    // 9. Section 6.3 rule 7: a request with neither has no body.
    Ok(BodyFraming::Empty)
}

/// Maps a method token; methods are case-sensitive (RFC 9110 section 9.1).
fn method_from_bytes(m: &[u8]) -> Method {
    match m {
        b"GET" => Method::Get,
        b"POST" => Method::Post,
        b"HEAD" => Method::Head,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"PATCH" => Method::Patch,
        _ => Method::Other,
    }
}

/// Splits a request-target into path and query spans (offsets from `base`,
/// the target's own offset in the buffer). See `parse_request_head` for the
/// accepted forms.
fn split_target(
    target: &[u8],
    base: u32,
    method: Method,
) -> Result<(Span, Option<Span>), HeadError> {
    if memchr::memchr(b'#', target).is_some() {
        return Err(HeadError::Malformed("fragment in request-target"));
    }
    let path_start = match target.first() {
        Some(b'/') => 0,
        Some(b'*') if target.len() == 1 => {
            // Asterisk-form exists only for a server-wide OPTIONS.
            if method != Method::Options {
                return Err(HeadError::Malformed("asterisk-form target without OPTIONS"));
            }
            let all = Span {
                start: base,
                end: base + 1,
            };
            return Ok((all, None));
        }
        _ => absolute_form_path_start(target)?,
    };
    let rest = &target[path_start..];
    let (path_len, query) = match memchr::memchr(b'?', rest) {
        Some(q) => {
            let q_start = base + (path_start + q + 1) as u32;
            let query = Span {
                start: q_start,
                end: base + target.len() as u32,
            };
            (q, Some(query))
        }
        None => (rest.len(), None),
    };
    let path = Span {
        start: base + path_start as u32,
        end: base + (path_start + path_len) as u32,
    };
    Ok((path, query))
}

/// Offset of the path in an absolute-form target `scheme://authority/path`.
fn absolute_form_path_start(target: &[u8]) -> Result<usize, HeadError> {
    const NOT_SUPPORTED: HeadError = HeadError::Malformed("unsupported request-target form");
    let after_scheme = if starts_with_ignore_case(target, b"http://") {
        7
    } else if starts_with_ignore_case(target, b"https://") {
        8
    } else {
        return Err(NOT_SUPPORTED);
    };
    let authority_len = target[after_scheme..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(target.len() - after_scheme);
    if authority_len == 0 {
        return Err(HeadError::Malformed(
            "absolute-form target without authority",
        ));
    }
    let path_start = after_scheme + authority_len;
    if target.get(path_start) != Some(&b'/') {
        return Err(HeadError::Malformed("absolute-form target without path"));
    }
    Ok(path_start)
}

/// Whether a Host value is made of `uri-host [ ":" port ]` characters
/// (RFC 3986 reg-name, IPv4 and IP-literal characters, `:` and digits).
/// Only the alphabet is checked: enough to refuse spaces, `/`, `@`, `?`,
/// `#`, quotes and non-ASCII, which is what could confuse something that
/// builds a URL from it.
fn is_valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| {
        matches!(b,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
            | b'-' | b'.' | b'_' | b'~' | b'%'
            | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            | b':' | b'[' | b']')
    })
}

/// The error for a head that does not fit in the window (`max_head_bytes`):
/// which part of an unfinished request line overflowed it, else 431. Runs
/// only on this error path.
fn too_large_error(window: &[u8]) -> HeadError {
    let line = &window[skip_empty_lines(window)..];
    if line.is_empty() || memchr::memchr(b'\n', line).is_some() {
        return HeadError::HeadTooLarge;
    }
    match memchr::memchr(b' ', line) {
        None => HeadError::MethodNotImplemented,
        Some(sp) if memchr::memchr(b' ', &line[sp + 1..]).is_none() => HeadError::UriTooLong,
        Some(_) => HeadError::HeadTooLarge,
    }
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Turns an httparse error on a request into ours. Runs only on the error
/// path, so it may rescan: httparse reports the first thing it disliked,
/// which for a bare LF or a folded line is usually a confusing "invalid
/// header name"; we look for those causes first so the error says why.
fn request_error(window: &[u8], err: httparse::Error) -> HeadError {
    let region = head_region(window);
    if has_bare_lf(region) {
        return HeadError::BareLf;
    }
    if has_obs_fold(region) {
        return HeadError::ObsFold;
    }
    match err {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => classify_version_error(window),
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid request line ending"),
        httparse::Error::Token | httparse::Error::Status => {
            HeadError::Malformed("invalid request line")
        }
    }
}

/// httparse says "Version" for anything that is not exactly HTTP/1.0 or 1.1
/// in the version position. Something shaped like `HTTP/<digit>` is a real
/// version we do not speak (505, e.g. HTTP/2.0 and the h2 preface); anything
/// else is a broken request line (400).
fn classify_version_error(window: &[u8]) -> HeadError {
    let start = skip_empty_lines(window);
    let line = &window[start..];
    let line_end = memchr::memchr2(b'\r', b'\n', line).unwrap_or(line.len());
    let line = &line[..line_end];
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return HeadError::Malformed("invalid request line");
    };
    if version.len() > 5 && version.starts_with(b"HTTP/") && version[5].is_ascii_digit() {
        HeadError::UnsupportedVersion
    } else {
        HeadError::Malformed("invalid HTTP version")
    }
}

/// The span of `part`, a subslice of `buf`, as offsets from `buf`'s start.
pub(super) fn span_of(buf: &[u8], part: &[u8]) -> Span {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    debug_assert!(start + part.len() <= buf.len(), "part is not inside buf");
    Span {
        start: start as u32,
        end: (start + part.len()) as u32,
    }
}

/// Whether any LF in `bytes` is not preceded by CR.
pub(super) fn has_bare_lf(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|p| p == 0 || bytes[p - 1] != b'\r')
}

/// Length of the empty lines httparse skips before a start line
/// (RFC 9112 section 2.2 lets a server ignore them).
pub(super) fn skip_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())
}

/// The head part of `buf` for error classification: up to the first empty
/// line (with either line ending), or all of it.
pub(super) fn head_region(buf: &[u8]) -> &[u8] {
    let start = skip_empty_lines(buf);
    for p in memchr::memchr_iter(b'\n', &buf[start..]).map(|p| p + start) {
        match buf.get(p + 1) {
            Some(b'\n') => return &buf[..p + 2],
            Some(b'\r') if buf.get(p + 2) == Some(&b'\n') => return &buf[..p + 3],
            _ => {}
        }
    }
    buf
}

/// Whether a line after the start line begins with SP or HTAB: obsolete line
/// folding, or whitespace before the first field (RFC 9112 sections 5.2, 2.2).
pub(super) fn has_obs_fold(region: &[u8]) -> bool {
    let start = skip_empty_lines(region);
    memchr::memchr_iter(b'\n', &region[start..])
        .any(|p| matches!(region.get(start + p + 1), Some(b' ' | b'\t')))
}

/// Calls `f` with each non-empty element of a comma-separated field value,
/// without surrounding OWS (RFC 9110 section 5.6.1: empty elements are
/// ignored).
pub(super) fn for_each_list_element(value: &[u8], mut f: impl FnMut(&[u8])) {
    for element in value.split(|&b| b == b',') {
        let element = element.trim_ascii();
        if !element.is_empty() {
            f(element);
        }
    }
}

/// Whether `name` is listed in a `Connection` header among `headers`: such
/// fields are hop-by-hop and a proxy must not forward them (RFC 9110
/// section 7.6.1).
pub fn listed_in_connection(headers: &[HeaderSpan], buf: &[u8], name: &[u8]) -> bool {
    let mut listed = false;
    for h in headers {
        if h.name.get(buf).eq_ignore_ascii_case(b"connection") {
            for_each_list_element(h.value.get(buf), |token| {
                listed |= token.eq_ignore_ascii_case(name);
            });
        }
    }
    listed
}

/// Parses `Content-Length = 1*DIGIT` into a u64: no sign, no whitespace, no
/// list, no overflow.
pub(super) fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// What the Transfer-Encoding field lines say, merged across lines.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TransferCodings {
    /// At least one Transfer-Encoding field line was present.
    pub(super) present: bool,
    /// Non-empty codings seen.
    pub(super) codings: u32,
    /// How many of them were `chunked`.
    pub(super) chunked: u32,
    /// A coding other than `chunked` was seen.
    pub(super) other: bool,
    /// The final coding is `chunked`.
    pub(super) last_is_chunked: bool,
}

impl TransferCodings {
    /// Adds one field line; codings are case-insensitive (RFC 9110
    /// section 10.1.4). `chunked;x=y` is not `chunked` (it has no parameters).
    pub(super) fn add_line(&mut self, value: &[u8]) {
        self.present = true;
        for_each_list_element(value, |coding| {
            self.codings += 1;
            self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if self.last_is_chunked {
                self.chunked += 1;
            } else {
                self.other = true;
            }
        });
    }
}

/// The header fields that decide body framing, collected in one pass.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FramingFields<'b> {
    pub(super) te: TransferCodings,
    /// Content-Length field lines seen.
    pub(super) cl_count: u32,
    /// A field named like a framing field with `_` for `-`.
    pub(super) lookalike: bool,
    /// The first Content-Length value contains a comma.
    pub(super) cl_list: bool,
    /// The first Content-Length value.
    pub(super) cl_value: &'b [u8],
}

impl<'b> FramingFields<'b> {
    /// Records the field if it is Content-Length or Transfer-Encoding and
    /// says whether it was. Lengths are compared first: most fields are
    /// neither, and that rejects them without a case-folding compare.
    pub(super) fn observe(&mut self, name: &[u8], value: &'b [u8]) -> bool {
        if name.len() == 14 && eq_name_loose(name, b"content-length") {
            if memchr::memchr(b'_', name).is_some() {
                self.lookalike = true;
                return true;
            }
            if self.cl_count == 0 {
                self.cl_value = value;
                self.cl_list = memchr::memchr(b',', value).is_some();
            }
            self.cl_count += 1;
            true
        } else if name.len() == 17 && eq_name_loose(name, b"transfer-encoding") {
            if memchr::memchr(b'_', name).is_some() {
                self.lookalike = true;
            } else {
                self.te.add_line(value);
            }
            true
        } else {
            false
        }
    }
}

/// Whether `name` equals `lower` (a lowercase field name) ignoring ASCII
/// case, with `_` in `name` also matching `-`. One pass, like
/// `eq_ignore_ascii_case`.
fn eq_name_loose(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower)
            .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// The `close` and `keep-alive` tokens of the Connection field lines.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ConnectionTokens {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
}

impl ConnectionTokens {
    /// Adds one Connection field line (tokens are case-insensitive).
    pub(super) fn add_line(&mut self, value: &[u8]) {
        for_each_list_element(value, |token| {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        });
    }

    /// Persistence per RFC 9112 section 9.3: `close` always wins; otherwise
    /// HTTP/1.1 persists by default and HTTP/1.0 only with `keep-alive`.
    pub(super) fn keep_alive(&self, version: Version) -> bool {
        !self.close && (version == Version::Http11 || self.keep_alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"POST /v1/chat/completions?stream=true HTTP/1.1\r\n\
Host: api.example.com\r\n\
Authorization: Bearer sk-test\r\n\
Content-Type: application/json\r\n\
Content-Length: 17\r\n\
\r\n\
{\"model\":\"gpt-x\"}";

    fn parse_with(
        buf: &[u8],
        limits: &HeadLimits,
    ) -> Result<(ParseStatus, RequestHead), HeadError> {
        let mut head = RequestHead::default();
        parse_request_head(buf, limits, &mut head).map(|s| (s, head))
    }

    fn ok(buf: &[u8]) -> RequestHead {
        match parse_with(buf, &HeadLimits::default()) {
            Ok((ParseStatus::Complete, head)) => head,
            other => panic!(
                "expected Complete for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn err(buf: &[u8]) -> HeadError {
        match parse_with(buf, &HeadLimits::default()) {
            Err(e) => e,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn with_headers(headers: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nHost: h\r\n{headers}\r\n").into_bytes()
    }

    fn framing(headers: &str) -> Result<BodyFraming, HeadError> {
        parse_with(&with_headers(headers), &HeadLimits::default()).map(|(_, h)| h.framing)
    }

    #[test]
    fn parses_sample_request() {
        let head = ok(SAMPLE);
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.target.get(SAMPLE), b"/v1/chat/completions?stream=true");
        assert_eq!(head.path.get(SAMPLE), b"/v1/chat/completions");
        assert_eq!(head.query.unwrap().get(SAMPLE), b"stream=true");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.framing, BodyFraming::Length(17));
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
        assert_eq!(&SAMPLE[head.head_len..], b"{\"model\":\"gpt-x\"}");
        let names: Vec<&[u8]> = head.headers.iter().map(|h| h.name.get(SAMPLE)).collect();
        assert_eq!(
            names,
            [
                &b"Host"[..],
                b"Authorization",
                b"Content-Type",
                b"Content-Length"
            ]
        );
        assert_eq!(
            head.header(SAMPLE, "authorization"),
            Some(&b"Bearer sk-test"[..])
        );
        assert_eq!(
            head.header(SAMPLE, "CONTENT-TYPE"),
            Some(&b"application/json"[..])
        );
        assert_eq!(head.header(SAMPLE, "x-missing"), None);
    }

    #[test]
    fn simple_get_has_no_body() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path.get(buf), b"/");
        assert_eq!(head.query, None);
        assert_eq!(head.framing, BodyFraming::Empty);
        assert_eq!(head.head_len, buf.len());
    }

    #[test]
    fn request_without_headers() {
        let buf = b"GET /a HTTP/1.0\r\n\r\n";
        let head = ok(buf);
        assert!(head.headers.is_empty());
        assert_eq!(head.head_len, buf.len());
    }

    #[test]
    fn empty_query_is_some_empty_span() {
        let buf = b"GET /a? HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.path.get(buf), b"/a");
        let q = head.query.unwrap();
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn query_keeps_later_question_marks() {
        let buf = b"GET /a?b=c?d HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.path.get(buf), b"/a");
        assert_eq!(head.query.unwrap().get(buf), b"b=c?d");
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let mut buf = Vec::new();
        buf.extend_from_slice(b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n");
        buf.extend_from_slice(b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n");
        buf.extend_from_slice(b"GET /thr");
        let mut head = RequestHead::default();
        let limits = HeadLimits::default();
        let mut rest = &buf[..];
        let mut paths = Vec::new();
        while parse_request_head(rest, &limits, &mut head).unwrap() == ParseStatus::Complete {
            paths.push(head.path.get(rest).to_vec());
            rest = &rest[head.head_len..];
        }
        assert_eq!(paths, [b"/one".to_vec(), b"/two".to_vec()]);
        assert_eq!(rest, b"GET /thr");
    }

    #[test]
    fn body_bytes_after_head_are_not_parsed() {
        // A body that would be a terrible head (bare LFs, NUL) must not matter.
        let buf = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\na\n\0\nb";
        let head = ok(buf);
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert_eq!(&buf[head.head_len..], b"a\n\0\nb");
    }

    #[test]
    fn partial_at_every_split_offset() {
        let head_len = ok(SAMPLE).head_len;
        for cut in 0..head_len {
            let r = parse_with(&SAMPLE[..cut], &HeadLimits::default());
            assert_eq!(r.map(|(s, _)| s), Ok(ParseStatus::Partial), "cut at {cut}");
        }
        for cut in head_len..=SAMPLE.len() {
            let (status, head) = parse_with(&SAMPLE[..cut], &HeadLimits::default()).unwrap();
            assert_eq!(status, ParseStatus::Complete, "cut at {cut}");
            assert_eq!(head.head_len, head_len);
            assert_eq!(head.framing, BodyFraming::Length(17));
        }
    }

    #[test]
    fn head_too_large() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let exact = HeadLimits {
            max_head_bytes: buf.len(),
            ..HeadLimits::default()
        };
        assert_eq!(parse_with(buf, &exact).unwrap().0, ParseStatus::Complete);
        let small = HeadLimits {
            max_head_bytes: buf.len() - 1,
            ..HeadLimits::default()
        };
        // Complete, but longer than allowed.
        assert_eq!(
            parse_with(buf, &small).unwrap_err(),
            HeadError::HeadTooLarge
        );
        // Incomplete and already filling the limit: cannot ever fit.
        let partial = &buf[..buf.len() - 1];
        assert_eq!(
            parse_with(partial, &small).unwrap_err(),
            HeadError::HeadTooLarge
        );
        // Incomplete and shorter than the limit: wait for more.
        assert_eq!(
            parse_with(&buf[..10], &small).unwrap().0,
            ParseStatus::Partial
        );
        // A never-ending header line hits the default limit too.
        let mut endless = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        endless.resize(HeadLimits::default().max_head_bytes, b'a');
        assert_eq!(err(&endless), HeadError::HeadTooLarge);
    }

    #[test]
    fn too_many_headers() {
        let limits = HeadLimits {
            max_headers: 3,
            ..HeadLimits::default()
        };
        let three = b"GET / HTTP/1.1\r\nHost: h\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(parse_with(three, &limits).unwrap().1.headers.len(), 3);
        let four = b"GET / HTTP/1.1\r\nHost: h\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(
            parse_with(four, &limits).unwrap_err(),
            HeadError::TooManyHeaders
        );
        // Before the extra field is complete, it is still just partial.
        assert_eq!(
            parse_with(&four[..four.len() - 6], &limits).unwrap().0,
            ParseStatus::Partial
        );
    }

    #[test]
    fn max_headers_is_capped() {
        let limits = HeadLimits {
            max_headers: 10_000,
            max_head_bytes: 64 * 1024,
        };
        let build = |n: usize| {
            // HTTP/1.0: no Host needed, so every field is one of the n.
            let mut s = String::from("GET / HTTP/1.0\r\n");
            for i in 0..n {
                s.push_str(&format!("X-H{i}: v\r\n"));
            }
            s.push_str("\r\n");
            s.into_bytes()
        };
        let at_cap = build(MAX_HEADERS_CAP);
        assert_eq!(
            parse_with(&at_cap, &limits).unwrap().1.headers.len(),
            MAX_HEADERS_CAP
        );
        let over = build(MAX_HEADERS_CAP + 1);
        assert_eq!(
            parse_with(&over, &limits).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn bare_lf_is_rejected_everywhere() {
        for buf in [
            &b"GET / HTTP/1.1\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\n",
            b"GET / HTTP/1.1\nHost: h\n\n",
            b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\nZ: w\r\n\r\n",
        ] {
            assert_eq!(
                err(buf),
                HeadError::BareLf,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn bare_lf_at_each_line_end_of_the_sample() {
        // Turn each CRLF of the head (leading empty lines included) into a
        // bare LF in turn; every variant must be rejected as BareLf.
        let mut sample = b"\r\n".to_vec();
        sample.extend_from_slice(SAMPLE);
        let head_len = ok(&sample).head_len;
        let crlfs: Vec<usize> = memchr::memmem::find_iter(&sample[..head_len], b"\r\n").collect();
        assert_eq!(crlfs.len(), 7);
        for at in crlfs {
            let mut buf = sample.clone();
            buf.remove(at);
            assert_eq!(
                err(&buf),
                HeadError::BareLf,
                "{:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.target, Span { start: 8, end: 10 });
        assert_eq!(head.path.get(buf), b"/x");
        assert_eq!(head.head_len, buf.len());
        assert_eq!(head.header(buf, "host"), Some(&b"h"[..]));
    }

    #[test]
    fn obs_fold_is_rejected() {
        for buf in [
            &b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  b\r\nX-B: c\r\n\r\n",
        ] {
            assert_eq!(
                err(buf),
                HeadError::ObsFold,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn control_bytes_in_fields_are_rejected() {
        for buf in [
            &b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: \x1b[31m\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\0A: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A : a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX(A): a\r\n\r\n",
            b"GET / HTTP/1.1\r\nno-colon\r\n\r\n",
            b"GET /a\0b HTTP/1.1\r\n\r\n",
            b"GET /a\x7f HTTP/1.1\r\n\r\n",
            b"G\0T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\rHost: h\r\n\r\n",
        ] {
            let e = err(buf);
            assert!(
                matches!(e, HeadError::Malformed(_)),
                "{:?} gave {e:?}",
                String::from_utf8_lossy(buf)
            );
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn tab_and_obs_text_are_allowed_in_values() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb \xc3\xa9\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.header(buf, "x-a"), Some(&b"a\tb \xc3\xa9"[..]));
    }

    #[test]
    fn values_are_trimmed_and_may_be_empty() {
        let buf =
            b"GET / HTTP/1.1\r\nHost: h\r\nX-A:   padded \t \r\nX-Empty:\r\nX-Blank:   \r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.header(buf, "x-a"), Some(&b"padded"[..]));
        assert_eq!(head.header(buf, "x-empty"), Some(&b""[..]));
        assert_eq!(head.header(buf, "x-blank"), Some(&b""[..]));
        for h in &head.headers {
            assert!(h.value.end as usize <= head.head_len);
            assert!(h.name.end <= h.value.start);
        }
    }

    #[test]
    fn http10_is_accepted() {
        let buf = b"GET / HTTP/1.0\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.version, Version::Http10);
        assert!(!head.keep_alive);
    }

    #[test]
    fn other_versions_are_rejected() {
        for (buf, want) in [
            (
                &b"GET / HTTP/2.0\r\n\r\n"[..],
                HeadError::UnsupportedVersion,
            ),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                HeadError::UnsupportedVersion,
            ),
            (
                b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
                HeadError::UnsupportedVersion,
            ),
            (b"GET / HTTP/3\r\n\r\n", HeadError::UnsupportedVersion),
            (b"GET / HTTP/0.9\r\n\r\n", HeadError::UnsupportedVersion),
            // Detected before the line is complete.
            (b"GET / HTTP/2", HeadError::UnsupportedVersion),
            // HTTP/0.9 simple-request: no version at all.
            (b"GET /\r\n", HeadError::Malformed("invalid request line")),
            (
                b"GET /\r\n\r\n",
                HeadError::Malformed("invalid request line"),
            ),
            (
                b"GET / http/1.1\r\n\r\n",
                HeadError::Malformed("invalid HTTP version"),
            ),
            (
                b"GET / FOO/1.1\r\n\r\n",
                HeadError::Malformed("invalid HTTP version"),
            ),
            (
                b"GET / HTTP/1.1 x\r\n\r\n",
                HeadError::Malformed("invalid request line ending"),
            ),
        ] {
            assert_eq!(err(buf), want, "{:?}", String::from_utf8_lossy(buf));
        }
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
    }

    #[test]
    fn malformed_request_lines() {
        for buf in [
            &b"GET  / HTTP/1.1\r\n\r\n"[..],
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET HTTP/1.1\r\n\r\n",
            b" GET / HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert!(
                matches!(err(buf), HeadError::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn methods_are_case_sensitive() {
        for (m, want) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("POST", Method::Post),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("PATCH", Method::Patch),
            ("get", Method::Other),
            ("Post", Method::Other),
            ("PROPFIND", Method::Other),
            ("CONNECTX", Method::Other),
        ] {
            let buf = format!("{m} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(ok(buf.as_bytes()).method, want, "{m}");
            if want != Method::Other {
                assert_eq!(want.as_str(), m);
            }
        }
    }

    #[test]
    fn asterisk_form_only_with_options() {
        let buf = b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.path.get(buf), b"*");
        assert_eq!(head.target.get(buf), b"*");
        assert_eq!(head.query, None);
        assert!(matches!(
            err(b"GET * HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            err(b"OPTIONS *x HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
    }

    #[test]
    fn absolute_form_uses_the_url_path() {
        let buf =
            b"GET http://example.com:8080/v1/models?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
        let head = ok(buf);
        assert_eq!(
            head.target.get(buf),
            b"http://example.com:8080/v1/models?x=1"
        );
        assert_eq!(head.path.get(buf), b"/v1/models");
        assert_eq!(head.query.unwrap().get(buf), b"x=1");

        let buf = b"POST HTTPS://h/ HTTP/1.1\r\nHost: h\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.path.get(buf), b"/");
        assert_eq!(head.query, None);
    }

    #[test]
    fn unsupported_targets_are_malformed() {
        for target in [
            "http://example.com",
            "http://example.com?x=1",
            "http:///path",
            "https://",
            "ftp://example.com/x",
            "example.com:443",
            "relative/path",
            "/a#frag",
            "http://h/a#frag",
            "?x",
        ] {
            let buf = format!("GET {target} HTTP/1.1\r\n\r\n");
            let e = err(buf.as_bytes());
            assert!(matches!(e, HeadError::Malformed(_)), "{target} gave {e:?}");
        }
    }

    #[test]
    fn content_length_framing() {
        assert_eq!(
            framing("Content-Length: 42\r\n"),
            Ok(BodyFraming::Length(42))
        );
        assert_eq!(
            framing("content-length:42\r\n"),
            Ok(BodyFraming::Length(42))
        );
        assert_eq!(
            framing("Content-Length:   42  \r\n"),
            Ok(BodyFraming::Length(42))
        );
        assert_eq!(framing("Content-Length: 0\r\n"), Ok(BodyFraming::Empty));
        assert_eq!(framing("Content-Length: 000\r\n"), Ok(BodyFraming::Empty));
        assert_eq!(
            framing("Content-Length: 007\r\n"),
            Ok(BodyFraming::Length(7))
        );
        assert_eq!(
            framing("Content-Length: 18446744073709551615\r\n"),
            Ok(BodyFraming::Length(u64::MAX))
        );
        assert_eq!(framing(""), Ok(BodyFraming::Empty));
    }

    #[test]
    fn invalid_content_length() {
        for v in [
            "",
            "+5",
            "-5",
            "5 5",
            "5\t5",
            "0x5",
            "5.0",
            "five",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(
                framing(&format!("Content-Length: {v}\r\n")),
                Err(HeadError::InvalidContentLength),
                "{v:?}"
            );
        }
    }

    #[test]
    fn repeated_content_length() {
        for h in [
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5,6\r\n",
            "Content-Length: 5,\r\n",
        ] {
            assert_eq!(framing(h), Err(HeadError::RepeatedContentLength), "{h:?}");
        }
    }

    #[test]
    fn chunked_framing() {
        for h in [
            "Transfer-Encoding: chunked\r\n",
            "transfer-encoding: CHUNKED\r\n",
            "Transfer-Encoding:   Chunked   \r\n",
            "Transfer-Encoding: , chunked ,\r\n",
            "Transfer-Encoding:\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert_eq!(framing(h), Ok(BodyFraming::Chunked), "{h:?}");
        }
    }

    #[test]
    fn transfer_encoding_rejections() {
        for (h, want) in [
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                HeadError::UnsupportedTransferEncoding,
            ),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                HeadError::UnsupportedTransferEncoding,
            ),
            (
                "Transfer-Encoding: identity, chunked\r\n",
                HeadError::UnsupportedTransferEncoding,
            ),
            (
                "Transfer-Encoding: identity\r\n",
                HeadError::TransferEncodingNotChunked,
            ),
            (
                "Transfer-Encoding: gzip\r\n",
                HeadError::TransferEncodingNotChunked,
            ),
            (
                "Transfer-Encoding: chunked, gzip\r\n",
                HeadError::TransferEncodingNotChunked,
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                HeadError::TransferEncodingNotChunked,
            ),
            (
                "Transfer-Encoding: chunked;q=1\r\n",
                HeadError::TransferEncodingNotChunked,
            ),
            (
                "Transfer-Encoding: chunkedx\r\n",
                HeadError::TransferEncodingNotChunked,
            ),
            (
                "Transfer-Encoding: chunked, chunked\r\n",
                HeadError::Malformed("chunked applied more than once"),
            ),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                HeadError::Malformed("chunked applied more than once"),
            ),
            (
                "Transfer-Encoding:\r\n",
                HeadError::Malformed("empty Transfer-Encoding"),
            ),
            (
                "Transfer-Encoding: , ,\r\n",
                HeadError::Malformed("empty Transfer-Encoding"),
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                HeadError::ContentLengthWithTransferEncoding,
            ),
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                HeadError::ContentLengthWithTransferEncoding,
            ),
            (
                "Content-Length: nope\r\nTransfer-Encoding: gzip\r\n",
                HeadError::ContentLengthWithTransferEncoding,
            ),
        ] {
            assert_eq!(framing(h), Err(want), "{h:?}");
        }
        assert_eq!(HeadError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(HeadError::TransferEncodingNotChunked.status(), 400);
    }

    #[test]
    fn transfer_encoding_in_http10_is_rejected() {
        let buf = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            err(buf),
            HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request")
        );
        let buf = b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(ok(buf).framing, BodyFraming::Length(3));
    }

    #[test]
    fn keep_alive_rules() {
        for (version, conn, want) in [
            ("1.1", "", true),
            ("1.1", "Connection: close\r\n", false),
            ("1.1", "Connection: CLOSE\r\n", false),
            ("1.1", "Connection: keep-alive, Close\r\n", false),
            ("1.1", "Connection: upgrade\r\nConnection: close\r\n", false),
            ("1.1", "Connection: closed\r\n", true),
            ("1.1", "Connection: keep-alive\r\n", true),
            ("1.0", "", false),
            ("1.0", "Connection: keep-alive\r\n", true),
            ("1.0", "Connection: Keep-Alive\r\n", true),
            ("1.0", "Connection: te ,  keep-alive \r\n", true),
            ("1.0", "Connection: keep-alive, close\r\n", false),
            ("1.0", "Connection: keep-alivex\r\n", false),
        ] {
            let buf = format!("GET / HTTP/{version}\r\nHost: h\r\n{conn}\r\n");
            assert_eq!(ok(buf.as_bytes()).keep_alive, want, "{buf:?}");
        }
    }

    #[test]
    fn expect_continue() {
        for (version, expect, want) in [
            ("1.1", "Expect: 100-continue\r\n", true),
            ("1.1", "expect: 100-Continue\r\n", true),
            ("1.1", "Expect:  100-continue \r\n", true),
            ("1.1", "Expect: 200-ok\r\n", false),
            ("1.1", "", false),
            ("1.0", "Expect: 100-continue\r\n", false),
        ] {
            let buf =
                format!("POST / HTTP/{version}\r\nHost: h\r\nContent-Length: 1\r\n{expect}\r\n");
            assert_eq!(ok(buf.as_bytes()).expect_continue, want, "{buf:?}");
        }
    }

    #[test]
    fn head_is_reset_and_reused() {
        let mut head = RequestHead::default();
        let limits = HeadLimits::default();
        let first = b"POST /a?q HTTP/1.0\r\nA: 1\r\nB: 2\r\nC: 3\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n";
        parse_request_head(first, &limits, &mut head).unwrap();
        assert_eq!(head.headers.len(), 5);
        let capacity = head.headers.capacity();
        let ptr = head.headers.as_ptr();

        let second = b"GET /b HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n";
        parse_request_head(second, &limits, &mut head).unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.path.get(second), b"/b");
        assert_eq!(head.query, None);
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.framing, BodyFraming::Empty);
        assert!(head.keep_alive);
        assert!(head.expect_continue);
        assert_eq!(head.head_len, second.len());
        // The vector kept its allocation: no allocation per parse once warm.
        assert_eq!(head.headers.capacity(), capacity);
        assert_eq!(head.headers.as_ptr(), ptr);
    }

    #[test]
    fn status_and_message_for_every_error() {
        let all = [
            (HeadError::HeadTooLarge, 431),
            (HeadError::TooManyHeaders, 431),
            (HeadError::Malformed("x"), 400),
            (HeadError::BareLf, 400),
            (HeadError::ObsFold, 400),
            (HeadError::ContentLengthWithTransferEncoding, 400),
            (HeadError::RepeatedContentLength, 400),
            (HeadError::InvalidContentLength, 400),
            (HeadError::TransferEncodingNotChunked, 400),
            (HeadError::UnsupportedTransferEncoding, 501),
            (HeadError::UnsupportedVersion, 505),
            (HeadError::UriTooLong, 414),
            (HeadError::MethodNotImplemented, 501),
        ];
        for (e, status) in all {
            assert_eq!(e.status(), status, "{e:?}");
            assert!(!e.message().is_empty());
            assert!(e.message().is_ascii());
        }
        assert_eq!(HeadError::HeadTooLarge.message(), "request head too large");
        assert_eq!(
            HeadError::Malformed("invalid header name").message(),
            "invalid header name"
        );
        assert_eq!(
            HeadError::BareLf.to_string(),
            "line ends in a bare LF instead of CRLF (400)"
        );
    }

    #[test]
    fn host_is_required_once_in_http11() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n\r\n"),
            HeadError::Malformed("missing Host header")
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            HeadError::Malformed("missing Host header")
        );
        // Absolute-form does not excuse a missing Host (RFC 9112 3.2).
        assert_eq!(
            err(b"GET http://h/ HTTP/1.1\r\n\r\n"),
            HeadError::Malformed("missing Host header")
        );
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost:\r\nHost:\r\n\r\n",
        ] {
            assert_eq!(
                err(buf),
                HeadError::Malformed("more than one Host header"),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // HTTP/1.0 may omit it.
        assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
    }

    #[test]
    fn host_value_must_be_a_uri_host_and_port() {
        for v in [
            "",
            "example.com",
            "Example.COM:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "a_b~c-d.e",
            "xn--bcher-kva.example",
            "%41b",
            "a!$&'()*+,;=b",
        ] {
            let buf = format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n");
            assert_eq!(
                ok(buf.as_bytes()).header(buf.as_bytes(), "host"),
                Some(v.as_bytes())
            );
        }
        for v in [
            &b"a b"[..],
            b"a\tb",
            b"a/b",
            b"user@evil",
            b"a?b",
            b"a#b",
            b"\"a\"",
            b"a\\b",
            b"<a>",
            b"caf\xc3\xa9",
            b"a|b",
        ] {
            let mut buf = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            buf.extend_from_slice(v);
            buf.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                err(&buf),
                HeadError::Malformed("invalid Host header"),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    #[test]
    fn framing_names_with_underscores_are_rejected() {
        for h in [
            "Transfer_Encoding: chunked\r\n",
            "transfer_encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nTRANSFER_ENCODING: gzip\r\n",
            "Content_Length: 5\r\n",
            "content_length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent_Length: 6\r\n",
        ] {
            assert_eq!(
                framing(h),
                Err(HeadError::Malformed(
                    "Content-Length or Transfer-Encoding spelled with '_'"
                )),
                "{h:?}"
            );
        }
        // Other names with underscores are just fields.
        for h in [
            "X_Content_Length: 5\r\n",
            "Content_Type: x\r\n",
            "Transfer_Encodings: x\r\n",
        ] {
            assert_eq!(framing(h), Ok(BodyFraming::Empty), "{h:?}");
        }
    }

    #[test]
    fn connect_and_overlong_methods_are_not_implemented() {
        assert_eq!(
            err(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            HeadError::MethodNotImplemented
        );
        assert_eq!(
            err(b"CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::MethodNotImplemented
        );
        let longest = "UPDATEREDIRECTREF";
        assert_eq!(longest.len(), MAX_METHOD_LEN);
        let buf = format!("{longest} / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(ok(buf.as_bytes()).method, Method::Other);
        let buf = format!("{longest}X / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(err(buf.as_bytes()), HeadError::MethodNotImplemented);
        let buf = format!("{} / HTTP/1.1\r\nHost: h\r\n\r\n", "A".repeat(10 * 1024));
        assert_eq!(err(buf.as_bytes()), HeadError::MethodNotImplemented);
        assert_eq!(HeadError::MethodNotImplemented.status(), 501);
    }

    #[test]
    fn overlong_request_line_says_which_part() {
        let limit = HeadLimits::default().max_head_bytes;
        let fill = |prefix: &[u8]| {
            let mut buf = prefix.to_vec();
            buf.resize(limit, b'a');
            buf
        };
        assert_eq!(err(&fill(b"")), HeadError::MethodNotImplemented);
        assert_eq!(err(&fill(b"GET /")), HeadError::UriTooLong);
        assert_eq!(err(&fill(b"\r\nGET /")), HeadError::UriTooLong);
        assert_eq!(
            err(&fill(b"GET / HTTP/1.1\r\nHost: h\r\nX: ")),
            HeadError::HeadTooLarge
        );
        // A window of nothing but empty lines has no request line at all.
        assert_eq!(err(&b"\r\n".repeat(limit / 2)), HeadError::HeadTooLarge);
        // A 100 KB target is judged on the window alone.
        let mut big = b"GET /".to_vec();
        big.resize(100 * 1024, b'a');
        big.extend_from_slice(b" HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(err(&big), HeadError::UriTooLong);
        assert_eq!(HeadError::UriTooLong.status(), 414);
        // Shorter than the window: still just partial.
        assert_eq!(
            parse_with(&fill(b"GET /")[..limit - 1], &HeadLimits::default())
                .unwrap()
                .0,
            ParseStatus::Partial
        );
    }

    #[test]
    fn list_elements_skip_empty_and_trim() {
        let mut seen = Vec::new();
        for_each_list_element(b" a ,,\tb\t, ,c", |e| seen.push(e.to_vec()));
        assert_eq!(seen, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }
}
