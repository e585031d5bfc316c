//! The client connection loop: read a request, hand it to a [`Service`],
//! repeat while the connection is kept alive.
//!
//! Requests on one connection are handled one at a time, in order, so
//! pipelined requests are answered in the order they arrived. Every wait has
//! a deadline: idle keep-alive, header read and body read.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::errors::GatewayError;
use super::exchange::{ErrorClass, Exchange, RequestId};
use super::responder::{write_all_within, Responder};
use super::shard::ShardState;
use crate::http::{
    parse_request_head, BodyFraming, ChunkedDecoder, HeadLimits, ParseStatus, RequestHead,
};
use crate::runtime;
use crate::runtime::buffers;

/// Limits and timeouts of client connections.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    pub head_limits: HeadLimits,
    pub max_body_bytes: u64,
    pub header_read: Duration,
    pub body_read: Duration,
    pub keep_alive_idle: Duration,
}

/// One request, as the service sees it.
pub struct Request<'a> {
    pub head: &'a RequestHead,
    /// The raw head bytes; `head`'s spans index this.
    pub raw_head: &'a [u8],
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The request path (without the query).
    pub fn path(&self) -> &[u8] {
        self.head.path.get(self.raw_head)
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&[u8]> {
        self.head.query.map(|q| q.get(self.raw_head))
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.header(self.raw_head, name)
    }
}

/// Something that answers requests; one instance per shard.
#[allow(async_fn_in_trait)] // shard-local futures: no Send bound is wanted
pub trait Service {
    /// Answers `req` through `resp`. An `Err` means the client connection
    /// failed and will be closed.
    async fn call<S: AsyncWrite + Unpin>(
        &self,
        req: Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()>;

    /// Called once per request after its answer (or failure), with what it
    /// did: the place for metrics and the access log.
    fn finish(&self, exchange: &Exchange) {
        let _ = exchange;
    }

    /// How long one write to a client may take before the connection is
    /// closed (a client that stopped reading). Here rather than in
    /// [`ConnSettings`] so that services without such a setting (the mock)
    /// keep the default.
    fn client_write_timeout(&self) -> std::time::Duration {
        super::responder::DEFAULT_CLIENT_WRITE
    }
}

/// Read buffer of a client connection, taken from the shard's free list
/// when a request's first bytes arrive and given back when it is answered;
/// grown for large bodies (and then freed, not kept).
const INITIAL_BUF: usize = buffers::CLIENT_READ;
const KEEP_BUF_MAX: usize = 64 * 1024;
/// Capacity of the response buffer a request starts with.
const OUT_BUF: usize = 1024;

thread_local! {
    /// Where idle connections read the first bytes of their next request
    /// (see [`Conn::read_idle`]); one per shard.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; INITIAL_BUF]);
}

/// How long a connection closed by the gateway keeps draining what the
/// client still sends, so the error response is not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 1024 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

enum ReadOutcome {
    Data,
    Eof,
    TimedOut,
    Shutdown,
}

struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    chunked_body: Vec<u8>,
    head: RequestHead,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Waits, until `until` or shutdown, for the first bytes of the next
    /// request without holding a read buffer: they are read into the
    /// shard's scratch buffer, which is never held across a wait, and only
    /// then copied into a buffer from the free list. An idle keep-alive
    /// connection thus holds no buffer at all; the copy is of the bytes one
    /// read returned, usually a whole small request.
    async fn read_idle(&mut self, until: Instant, state: &ShardState) -> ReadOutcome {
        debug_assert_eq!(self.start, self.end);
        let Conn {
            stream,
            buf,
            start,
            end,
            ..
        } = self;
        let read = futures_lite::future::poll_fn(|cx| {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match Pin::new(&mut *stream).poll_read(cx, &mut scratch[..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        // The scratch buffer is INITIAL_BUF long, so one
                        // buffer from the free list holds what it read.
                        if buf.is_empty() {
                            *buf = buffers::take(INITIAL_BUF);
                        }
                        buf[..n].copy_from_slice(&scratch[..n]);
                        *start = 0;
                        *end = n;
                        Poll::Ready(Ok(n))
                    }
                    other => other,
                }
            })
        });
        let waited = runtime::deadline(
            until,
            futures_lite::future::or(async { Some(read.await) }, async {
                state.shutdown.wait().await;
                None
            }),
        )
        .await;
        match waited {
            None => ReadOutcome::TimedOut,
            Some(None) => ReadOutcome::Shutdown,
            Some(Some(Ok(0))) | Some(Some(Err(_))) => ReadOutcome::Eof,
            Some(Some(Ok(_))) => ReadOutcome::Data,
        }
    }

    /// Hands the read buffer back to the shard's free list when no
    /// received byte is pending (an idle connection needs none), and drops
    /// the response and chunked-body buffers: the next request's 1 KiB
    /// response buffer comes from malloc's thread cache, cheaper than 1 KiB
    /// held by each of thousands of idle connections.
    fn release_buffers(&mut self) {
        if self.start == self.end {
            buffers::give(std::mem::take(&mut self.buf));
            self.start = 0;
            self.end = 0;
        }
        self.out = Vec::new();
        self.chunked_body = Vec::new();
    }

    /// Reads more bytes after `end`, growing the buffer when full.
    async fn read_more(&mut self, until: Option<Instant>, state: &ShardState) -> ReadOutcome {
        if self.buf.is_empty() {
            self.buf = buffers::take(INITIAL_BUF);
        }
        if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).max(INITIAL_BUF);
            self.buf.resize(grown, 0);
        }
        let end = self.end;
        let read = self.stream.read(&mut self.buf[end..]);
        let result = match until {
            Some(at) => runtime::deadline(at, read).await,
            // Waiting for a new request: an idle connection also ends on shutdown.
            None => {
                futures_lite::future::or(async { Some(read.await) }, async {
                    state.shutdown.wait().await;
                    None
                })
                .await
            }
        };
        match result {
            None if until.is_none() => ReadOutcome::Shutdown,
            None => ReadOutcome::TimedOut,
            Some(Ok(0)) | Some(Err(_)) => ReadOutcome::Eof,
            Some(Ok(n)) => {
                self.end += n;
                ReadOutcome::Data
            }
        }
    }

    async fn send_error_and_close(
        &mut self,
        version: crate::http::Version,
        err: GatewayError,
        exchange: &mut Exchange,
        write_timeout: Duration,
    ) {
        exchange.error = super::exchange::error_class_of_status(err.status);
        let mut resp = Responder::new(
            &mut self.stream,
            &mut self.out,
            version,
            false,
            false,
            exchange,
        )
        .with_write_timeout(write_timeout);
        if resp.send_error(&err).await.is_ok() {
            self.linger().await;
        }
    }

    /// Half-closes and drains the client for a moment, so a client still
    /// sending a body reads our error instead of a connection reset.
    async fn linger(&mut self) {
        let _ = self.stream.close().await;
        let deadline = Instant::now() + LINGER;
        let mut drained = 0;
        // On the heap: an array here would be part of every connection's
        // future, idle or not, for a path only failing requests take.
        let mut sink = vec![0u8; 4096];
        while drained < LINGER_MAX_BYTES {
            match runtime::deadline(deadline, self.stream.read(&mut sink)).await {
                Some(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

/// Serves one client connection until it closes, fails, times out, or the
/// shard shuts down.
pub async fn serve_connection<S, H>(
    stream: S,
    service: &H,
    settings: &ConnSettings,
    state: &ShardState,
) where
    S: AsyncRead + AsyncWrite + Unpin + AsRawFd,
    H: Service,
{
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        start: 0,
        end: 0,
        out: Vec::new(),
        chunked_body: Vec::new(),
        head: RequestHead::default(),
    };
    let write_timeout = service.client_write_timeout();
    // Answers a request that failed before reaching the service, records it,
    // and ends the connection.
    macro_rules! fail {
        ($version:expr, $err:expr, $id:expr, $started:expr) => {{
            let bytes_in = (conn.end - conn.start) as u64;
            let mut exchange = Exchange::new($id, $started, bytes_in);
            conn.send_error_and_close($version, $err, &mut exchange, write_timeout)
                .await;
            service.finish(&exchange);
            return;
        }};
    }
    loop {
        // Idle between requests: wait for the first byte of the next one.
        if conn.start == conn.end {
            conn.start = 0;
            conn.end = 0;
            if state.shutdown.is_set() {
                return;
            }
            let idle_until = Instant::now() + settings.keep_alive_idle;
            match conn.read_idle(idle_until, state).await {
                ReadOutcome::Data => {}
                _ => return,
            }
        }
        if conn.out.capacity() == 0 {
            conn.out = Vec::with_capacity(OUT_BUF);
        }

        // The head, within the header-read deadline.
        let started = Instant::now();
        let head_deadline = started + settings.header_read;
        loop {
            let pending = &conn.buf[conn.start..conn.end];
            match parse_request_head(pending, &settings.head_limits, &mut conn.head) {
                Ok(ParseStatus::Complete) => break,
                Ok(ParseStatus::Partial) => {}
                Err(e) => {
                    let err = GatewayError::new(e.status(), "invalid_http_request", e.message());
                    fail!(crate::http::Version::Http11, err, state.ids.next(), started)
                }
            }
            match conn.read_more(Some(head_deadline), state).await {
                ReadOutcome::Data => {}
                ReadOutcome::TimedOut => {
                    let err = GatewayError::new(
                        408,
                        "request_timeout",
                        "request head not received in time",
                    );
                    fail!(crate::http::Version::Http11, err, state.ids.next(), started)
                }
                _ => return,
            }
        }
        let version = conn.head.version;
        let head_len = conn.head.head_len;
        let request_id = conn
            .head
            .header(&conn.buf[conn.start..conn.end], "x-request-id")
            .and_then(RequestId::from_client)
            .unwrap_or_else(|| state.ids.next());

        // The body, within the body-read deadline.
        // Only a request with a body needs the clock read for its deadline.
        let body_deadline = match conn.head.framing {
            BodyFraming::Empty => started,
            _ => Instant::now() + settings.body_read,
        };
        let consumed_total = match conn.head.framing {
            BodyFraming::Empty => head_len,
            BodyFraming::Length(n) => {
                if n > settings.max_body_bytes {
                    let err = GatewayError::new(
                        413,
                        "body_too_large",
                        format!(
                            "request body exceeds the limit of {} bytes",
                            settings.max_body_bytes
                        ),
                    );
                    fail!(version, err, request_id, started)
                }
                let total = head_len + n as usize;
                if conn.end - conn.start < total {
                    if conn.head.expect_continue
                        && write_all_within(&mut conn.stream, CONTINUE, write_timeout)
                            .await
                            .is_err()
                    {
                        return;
                    }
                    // Room for the whole request, so the body is read once
                    // and handed over without another copy.
                    if conn.buf.len() < total {
                        conn.buf.copy_within(conn.start..conn.end, 0);
                        conn.end -= conn.start;
                        conn.start = 0;
                        conn.buf.resize(total, 0);
                    }
                    while conn.end - conn.start < total {
                        match conn.read_more(Some(body_deadline), state).await {
                            ReadOutcome::Data => {}
                            ReadOutcome::TimedOut => {
                                let err = GatewayError::new(
                                    408,
                                    "request_timeout",
                                    "request body not received in time",
                                );
                                fail!(version, err, request_id, started)
                            }
                            _ => return,
                        }
                    }
                }
                total
            }
            BodyFraming::Chunked => {
                if conn.head.expect_continue
                    && conn.end - conn.start == head_len
                    && write_all_within(&mut conn.stream, CONTINUE, write_timeout)
                        .await
                        .is_err()
                {
                    return;
                }
                match read_chunked_body(&mut conn, settings, state, body_deadline).await {
                    Ok(consumed) => head_len + consumed,
                    Err(Some(err)) => fail!(version, err, request_id, started),
                    Err(None) => return,
                }
            }
        };

        let raw = &conn.buf[conn.start..conn.start + consumed_total];
        let body: &[u8] = match conn.head.framing {
            BodyFraming::Chunked => &conn.chunked_body,
            _ => &raw[head_len..],
        };
        let request = Request {
            head: &conn.head,
            raw_head: &raw[..head_len],
            body,
        };
        let keep_alive = conn.head.keep_alive && !state.shutdown.is_set();
        let head_only = conn.head.method == crate::http::Method::Head;
        let mut exchange = Exchange::new(request_id, started, consumed_total as u64);
        exchange.set_method(conn.head.method);
        let fd = conn.stream.as_raw_fd();
        let mut responder = Responder::new(
            &mut conn.stream,
            &mut conn.out,
            version,
            keep_alive,
            head_only,
            &mut exchange,
        )
        .with_write_timeout(write_timeout);
        responder.set_socket(fd);
        // Boxed: the service's future is by far the largest part of a
        // connection's state (~12 KB), and only a request in flight needs
        // it; inline, every idle keep-alive connection would carry it.
        let result = Box::pin(service.call(request, &mut responder)).await;
        let keep_alive = responder.keep_alive();
        let reset = responder.resets();
        if result.is_err() {
            // The client went away (or its socket failed) mid-answer.
            if exchange.status == 0 {
                exchange.status = 499;
            }
            exchange.error = ErrorClass::ClientDisconnect;
        }
        service.finish(&exchange);
        if reset {
            // No FIN first: the socket closes (on drop) with a reset.
            set_linger_zero(conn.stream.as_raw_fd());
            return;
        }
        if result.is_err() || !keep_alive {
            let _ = conn.stream.close().await;
            return;
        }
        conn.start += consumed_total;
        conn.release_buffers();
        if conn.buf.len() > KEEP_BUF_MAX && conn.end - conn.start <= INITIAL_BUF {
            conn.buf.copy_within(conn.start..conn.end, 0);
            conn.end -= conn.start;
            conn.start = 0;
            conn.buf.truncate(INITIAL_BUF);
            conn.buf.shrink_to_fit();
        }
    }
}

/// Makes closing `fd` send a TCP reset (SO_LINGER on, 0 s).
fn set_linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and option buffer; failure only means a
    // normal close.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Decodes a chunked request body into `conn.chunked_body`. Returns the
/// bytes of framing consumed after the head; `Err(Some(..))` is an error to
/// answer with, `Err(None)` a connection that went away.
async fn read_chunked_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    settings: &ConnSettings,
    state: &ShardState,
    deadline: Instant,
) -> Result<usize, Option<GatewayError>> {
    conn.chunked_body.clear();
    let mut decoder = ChunkedDecoder::new();
    let mut offset = conn.head.head_len;
    loop {
        let input = &conn.buf[conn.start + offset..conn.end];
        let body = &mut conn.chunked_body;
        let mut too_large = false;
        let limit = settings.max_body_bytes;
        let progress = decoder
            .decode(input, |data| {
                if (body.len() + data.len()) as u64 > limit {
                    too_large = true;
                } else {
                    body.extend_from_slice(data);
                }
            })
            .map_err(|_| {
                Some(GatewayError::new(
                    400,
                    "invalid_chunked_body",
                    "malformed chunked request body",
                ))
            })?;
        if too_large {
            return Err(Some(GatewayError::new(
                413,
                "body_too_large",
                format!("request body exceeds the limit of {limit} bytes"),
            )));
        }
        offset += progress.consumed;
        if progress.done {
            return Ok(offset - conn.head.head_len);
        }
        // Everything before `offset` is framing already decoded: the buffer
        // only needs to keep the head and the undecoded tail.
        let head_end = conn.start + conn.head.head_len;
        let tail_start = conn.start + offset;
        conn.buf.copy_within(tail_start..conn.end, head_end);
        conn.end -= tail_start - head_end;
        offset = conn.head.head_len;
        match conn.read_more(Some(deadline), state).await {
            ReadOutcome::Data => {}
            ReadOutcome::TimedOut => {
                return Err(Some(GatewayError::new(
                    408,
                    "request_timeout",
                    "request body not received in time",
                )))
            }
            _ => return Err(None),
        }
    }
}
