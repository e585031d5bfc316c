//! Rendering of response heads into caller buffers (chunks are rendered by
//! [`super::chunked::encode_chunk`]).
//!
//! Writers append to a `Vec<u8>` the caller reuses, so a warm connection
//! renders a response without allocating.

use super::request::Version;

/// The reason phrase for the status codes the gateway produces or forwards.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        529 => "Overloaded",
        _ => "Unknown",
    }
}

/// Appends a status line, e.g. `HTTP/1.1 200 OK\r\n`.
pub fn status_line(out: &mut Vec<u8>, version: Version, status: u16) {
    out.extend_from_slice(match version {
        Version::Http10 => b"HTTP/1.0 ",
        Version::Http11 => b"HTTP/1.1 ",
    });
    let mut code = itoa::Buffer::new();
    out.extend_from_slice(code.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one header line `name: value\r\n`.
pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a `Content-Length` header line.
pub fn content_length(out: &mut Vec<u8>, len: u64) {
    let mut n = itoa::Buffer::new();
    header(out, b"content-length", n.format(len).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_line_and_headers() {
        let mut out = Vec::new();
        status_line(&mut out, Version::Http11, 413);
        content_length(&mut out, 12);
        header(&mut out, b"x-a", b"b");
        assert_eq!(
            out,
            b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 12\r\nx-a: b\r\n"
        );
    }
}
