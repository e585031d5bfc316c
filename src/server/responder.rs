//! Writing one response to a client connection.
//!
//! A handler renders the head into the responder's buffer, picks the body
//! framing, and either appends a whole body and flushes once (one write for
//! small answers) or streams the body piece by piece.

use std::io;
use std::time::Duration;

use futures_lite::{AsyncWrite, AsyncWriteExt};

use super::errors::GatewayError;
use super::exchange::Exchange;
use crate::http::{chunked, write, Version};

/// How often a request waiting on its upstream looks whether its client
/// went away.
const CLIENT_CHECK: Duration = Duration::from_millis(200);

/// Resolves once the client on socket `fd` has closed its side of the
/// connection (as nginx, a half-close counts), looked at every 200 ms;
/// never with no socket, or once the client sent more bytes (a pipelined
/// request hides any close behind it). Race it against an upstream wait,
/// so a request nobody waits for any more is dropped, and its upstream
/// request closed, without waiting for a write to the client to fail.
pub async fn client_gone(fd: Option<std::os::fd::RawFd>) {
    let Some(fd) = fd else {
        return std::future::pending().await;
    };
    loop {
        crate::runtime::sleep_coarse(CLIENT_CHECK).await;
        let mut byte = 0u8;
        // SAFETY: `fd` is the client socket, open while its request is
        // served; a one-byte buffer. MSG_PEEK leaves any data in place.
        let n = unsafe {
            libc::recv(
                fd,
                &mut byte as *mut u8 as *mut libc::c_void,
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return,
            n if n > 0 => return std::future::pending().await,
            _ => match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                _ => return,
            },
        }
    }
}

/// The error a request ends with when its client went away.
pub fn client_went_away() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the client went away")
}

/// How a response body is delimited on the client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no length header: 1xx, 204 and 304 responses.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients only; for HTTP/1.0
    /// clients the responder falls back to [`BodyFraming::Close`]).
    Chunked,
    /// The body ends when the connection closes.
    Close,
}

/// How long one write to a client may take unless the connection sets its
/// own (`timeouts.client_write_ms`).
pub const DEFAULT_CLIENT_WRITE: Duration = Duration::from_secs(30);

/// Writes all of `data` to `stream`, giving up after `limit` with
/// `TimedOut`: a client that stops reading fills its socket buffer and
/// would otherwise hold the connection (and what feeds it) forever. The
/// write is tried first without a timer, so a write that completes at once
/// (the usual case) costs no timer.
pub(crate) async fn write_all_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    limit: Duration,
) -> io::Result<()> {
    // The flush is a no-op on TCP; on TLS it pushes out the records still
    // held in the session.
    let mut write = std::pin::pin!(async {
        stream.write_all(data).await?;
        stream.flush().await
    });
    if let Some(done) = futures_lite::future::poll_once(write.as_mut()).await {
        return done;
    }
    match crate::runtime::timeout(limit, write).await {
        Some(done) => done,
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not read the response in time",
        )),
    }
}

/// The response side of one request on a client connection.
pub struct Responder<'a, S> {
    stream: &'a mut S,
    out: &'a mut Vec<u8>,
    version: Version,
    keep_alive: bool,
    /// The request was HEAD: heads are sent as for GET, bodies never.
    head_only: bool,
    framing: Option<BodyFraming>,
    exchange: &'a mut Exchange,
    /// Header lines every response head of this request carries (CORS).
    always: Vec<u8>,
    /// End the connection with a TCP reset instead of a close.
    reset: bool,
    /// The client socket, when the connection has one.
    socket: Option<std::os::fd::RawFd>,
    /// Limit of each write to the client.
    write_timeout: Duration,
}

impl<'a, S: AsyncWrite + Unpin> Responder<'a, S> {
    pub(crate) fn new(
        stream: &'a mut S,
        out: &'a mut Vec<u8>,
        version: Version,
        keep_alive: bool,
        head_only: bool,
        exchange: &'a mut Exchange,
    ) -> Self {
        out.clear();
        Responder {
            stream,
            out,
            version,
            keep_alive,
            head_only,
            framing: None,
            exchange,
            always: Vec::new(),
            reset: false,
            socket: None,
            write_timeout: DEFAULT_CLIENT_WRITE,
        }
    }

    /// Adds header lines (`name: value\r\n`) to whatever head this request
    /// answers with, errors included.
    pub fn always_add(&mut self, lines: &[u8]) {
        self.always.extend_from_slice(lines);
    }

    /// Records the client socket, for [`Responder::socket`].
    pub(crate) fn set_socket(&mut self, fd: std::os::fd::RawFd) {
        self.socket = Some(fd);
    }

    /// The client socket's fd, for services that watch it (the mock's
    /// fault modes). Reading from it steals the client's next request.
    pub fn socket(&self) -> Option<std::os::fd::RawFd> {
        self.socket
    }

    /// Asks for the connection to end with a TCP reset (SO_LINGER 0, no
    /// FIN) once the service returns, whatever was sent so far.
    pub fn reset_after(&mut self) {
        self.keep_alive = false;
        self.reset = true;
    }

    /// Whether no byte of the response reached the client yet (a head may
    /// be buffered: [`Responder::begin`] starts over).
    pub fn nothing_sent(&self) -> bool {
        self.exchange.bytes_out == 0
    }

    /// Whether [`Responder::reset_after`] was asked for.
    pub fn resets(&self) -> bool {
        self.reset
    }

    /// Sets the limit of each write to the client (a client that does not
    /// read for this long gets its connection closed).
    pub(crate) fn with_write_timeout(mut self, limit: Duration) -> Self {
        self.write_timeout = limit;
        self
    }

    /// What this request did so far; handlers fill in what they learn.
    pub fn exchange(&mut self) -> &mut Exchange {
        self.exchange
    }

    /// Records bytes that reached the client.
    fn sent(&mut self, n: usize) {
        if self.exchange.ttfb_us.is_none() {
            self.exchange.ttfb_us = Some(self.exchange.elapsed_us());
        }
        self.exchange.bytes_out += n as u64;
    }

    /// Whether the connection stays open after this response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Asks for the connection to be closed after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// The client's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Starts the head with its status line; add headers with
    /// [`Responder::header`], then call [`Responder::end_head`].
    pub fn begin(&mut self, status: u16) {
        self.out.clear();
        // A server answers with the highest HTTP/1.x version it speaks,
        // whatever the request's minor version (RFC 9110 section 6.2);
        // the framing still follows what the client understands.
        write::status_line(self.out, Version::Http11, status);
        write::header(self.out, b"x-request-id", self.exchange.id.as_bytes());
        self.out.extend_from_slice(&self.always);
        self.exchange.status = status;
    }

    /// Adds a header line to the head being built.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        write::header(self.out, name, value);
    }

    /// Ends the head with the framing and connection headers. Returns the
    /// framing actually used (chunked degrades to close for HTTP/1.0).
    pub fn end_head(&mut self, framing: BodyFraming) -> BodyFraming {
        let framing = match (framing, self.version) {
            (BodyFraming::Chunked, Version::Http10) => BodyFraming::Close,
            (f, _) => f,
        };
        match framing {
            BodyFraming::None => {}
            BodyFraming::Length(n) => write::content_length(self.out, n),
            BodyFraming::Chunked => write::header(self.out, b"transfer-encoding", b"chunked"),
            BodyFraming::Close => self.keep_alive = false,
        }
        match (self.keep_alive, self.version) {
            (false, _) => write::header(self.out, b"connection", b"close"),
            (true, Version::Http10) => write::header(self.out, b"connection", b"keep-alive"),
            (true, Version::Http11) => {}
        }
        self.out.extend_from_slice(b"\r\n");
        self.framing = Some(framing);
        framing
    }

    /// The output buffer: body bytes appended here go out with the next flush.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Appends body bytes in the response's framing (a chunk for chunked).
    pub fn push_body(&mut self, data: &[u8]) {
        if self.head_only {
            return;
        }
        match self.framing {
            Some(BodyFraming::Chunked) => chunked::encode_chunk(self.out, data),
            _ => self.out.extend_from_slice(data),
        }
    }

    /// Writes out everything buffered.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            write_all_within(self.stream, self.out, self.write_timeout).await?;
            let n = self.out.len();
            self.sent(n);
            self.out.clear();
        }
        Ok(())
    }

    /// Writes `data` straight to the client, after anything buffered. Used
    /// to pass through body bytes already in the right framing.
    pub async fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        if self.head_only {
            return self.flush().await;
        }
        if !self.out.is_empty() {
            if self.out.len() + data.len() <= 16 * 1024 {
                // One syscall for a small head plus the first body bytes.
                self.out.extend_from_slice(data);
                return self.flush().await;
            }
            self.flush().await?;
        }
        if !data.is_empty() {
            write_all_within(self.stream, data, self.write_timeout).await?;
            self.sent(data.len());
        }
        Ok(())
    }

    /// Ends a chunked body (writes the last chunk) and flushes.
    pub async fn finish(&mut self) -> io::Result<()> {
        if self.framing == Some(BodyFraming::Chunked) && !self.head_only {
            self.out.extend_from_slice(chunked::LAST_CHUNK);
        }
        self.flush().await
    }

    /// Sends a whole response with a body of `content_type`.
    pub async fn send(
        &mut self,
        status: u16,
        content_type: &[u8],
        extra_headers: &[(&[u8], &[u8])],
        body: &[u8],
    ) -> io::Result<()> {
        self.begin(status);
        self.header(b"content-type", content_type);
        for (name, value) in extra_headers {
            self.header(name, value);
        }
        self.end_head(BodyFraming::Length(body.len() as u64));
        if !self.head_only {
            self.out.extend_from_slice(body);
        }
        self.flush().await
    }

    /// Sends a JSON body whose bytes are written by `render`.
    pub async fn send_json_with(
        &mut self,
        status: u16,
        extra_headers: &[(&[u8], &[u8])],
        render: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        // The head needs the body's length, so the body is rendered first.
        let mut body = Vec::with_capacity(256);
        render(&mut body);
        self.send(status, b"application/json", extra_headers, &body)
            .await
    }

    /// Sends a gateway error as an OpenAI-shaped JSON body.
    pub async fn send_error(&mut self, err: &GatewayError) -> io::Result<()> {
        if self.exchange.error == super::exchange::ErrorClass::None {
            self.exchange.error = super::exchange::error_class_of_status(err.status);
        }
        self.send_json_with(err.status, &[], |out| err.write_openai_body(out))
            .await
    }
}
