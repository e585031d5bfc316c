//! Response-head parsing, for the upstream side of the gateway.

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
pub fn parse_response_head(
    buf: &[u8],
    limits: &HeadLimits,
    request_method: Method,
    head: &mut ResponseHead,
) -> Result<ParseStatus, HeadError> {
    let _ = (buf, limits, request_method, head);
    todo!("implemented by the codec")
}
