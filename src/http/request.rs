//! Request-head parsing and the body-framing decision (RFC 9112 section 6).

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
}

impl HeadError {
    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        todo!("implemented by the codec")
    }

    /// A short, client-safe explanation.
    pub fn message(&self) -> &'static str {
        todo!("implemented by the codec")
    }
}

/// Parses a request head from the start of `buf` into `head`.
///
/// Returns `Partial` while the head is incomplete and shorter than
/// `limits.max_head_bytes`; `HeadTooLarge` once it is not complete within that.
pub fn parse_request_head(
    buf: &[u8],
    limits: &HeadLimits,
    head: &mut RequestHead,
) -> Result<ParseStatus, HeadError> {
    let _ = (buf, limits, head);
    todo!("implemented by the codec")
}
