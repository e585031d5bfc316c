//! One request/response exchange over a pooled upstream connection.

use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::{Pool, PoolKey, PooledConn, UpstreamError};
use crate::http::{
    parse_response_head, ChunkedDecoder, HeadLimits, Method, ParseStatus, ResponseFraming,
    ResponseHead,
};
use crate::runtime;

/// A request ready for the wire: the rendered head (ending in the blank
/// line) and the body.
pub struct UpstreamRequest<'a> {
    pub method: Method,
    pub head: &'a [u8],
    pub body: &'a [u8],
}

/// A response whose head has arrived; the body is read with [`ResponseBody`].
pub struct UpstreamResponse {
    pub conn: PooledConn,
    /// Spans index `head_bytes`.
    pub head: ResponseHead,
    /// A copy of the raw head, so the connection buffer can be reused for
    /// body bytes while the head is still being forwarded.
    pub head_bytes: Vec<u8>,
}

impl UpstreamResponse {
    /// A reader over this response's body.
    pub fn body(&self) -> ResponseBody {
        ResponseBody::new(self.head.framing)
    }
}

/// Limits for upstream response heads: generous, the upstream is configured
/// by the operator, but still bounded.
const UPSTREAM_HEAD_LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 64 * 1024,
    max_headers: 128,
};

/// Requests smaller than this are copied into one buffer and written with
/// one syscall; larger ones are written as head then body.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Sends `req` to `key` over a pooled connection and waits for the response
/// head. A pooled connection found closed before it answered is replaced by
/// a fresh one and the request is sent again, once.
pub async fn exchange(
    pool: &Pool,
    key: &PoolKey,
    req: &UpstreamRequest<'_>,
    head_timeout: Duration,
    scratch: &mut Vec<u8>,
) -> Result<UpstreamResponse, UpstreamError> {
    let conn = pool.acquire(key).await?;
    match exchange_on(conn, req, head_timeout, scratch).await {
        Err(e) if e.retry_on_fresh_connection() => {
            let fresh = pool.connect_fresh(key).await?;
            exchange_on(fresh, req, head_timeout, scratch).await
        }
        other => other,
    }
}

async fn exchange_on(
    mut conn: PooledConn,
    req: &UpstreamRequest<'_>,
    head_timeout: Duration,
    scratch: &mut Vec<u8>,
) -> Result<UpstreamResponse, UpstreamError> {
    let reused = conn.reused;
    let write_failed = |e: std::io::Error| {
        if is_connection_gone(&e) {
            UpstreamError::Closed { reused }
        } else {
            UpstreamError::Io(e)
        }
    };
    if req.head.len() + req.body.len() <= COALESCE_LIMIT {
        scratch.clear();
        scratch.extend_from_slice(req.head);
        scratch.extend_from_slice(req.body);
        conn.stream.write_all(scratch).await.map_err(write_failed)?;
    } else {
        conn.stream
            .write_all(req.head)
            .await
            .map_err(write_failed)?;
        conn.stream
            .write_all(req.body)
            .await
            .map_err(write_failed)?;
    }

    let deadline = Instant::now() + head_timeout;
    let mut head = ResponseHead::default();
    let mut received_any = false;
    loop {
        if conn.end > conn.start {
            let pending = &conn.buf[conn.start..conn.end];
            match parse_response_head(pending, &UPSTREAM_HEAD_LIMITS, req.method, &mut head) {
                Ok(ParseStatus::Complete) => {
                    if (100..200).contains(&head.status) {
                        if head.status == 101 {
                            return Err(UpstreamError::BadResponse("unexpected protocol switch"));
                        }
                        // Interim response (100 Continue, 103 Early Hints): skip it.
                        conn.start += head.head_len;
                        continue;
                    }
                    let head_bytes = pending[..head.head_len].to_vec();
                    conn.start += head.head_len;
                    return Ok(UpstreamResponse {
                        conn,
                        head,
                        head_bytes,
                    });
                }
                Ok(ParseStatus::Partial) => {}
                Err(_) => return Err(UpstreamError::BadResponse("malformed response head")),
            }
        }
        conn.make_room();
        let end = conn.end;
        let read = runtime::deadline(deadline, conn.stream.read(&mut conn.buf[end..])).await;
        match read {
            None => return Err(UpstreamError::HeadTimeout),
            Some(Ok(0)) if !received_any => return Err(UpstreamError::Closed { reused }),
            Some(Ok(0)) => return Err(UpstreamError::BadResponse("truncated response head")),
            Some(Ok(n)) => {
                received_any = true;
                conn.end += n;
            }
            Some(Err(e)) if !received_any && is_connection_gone(&e) => {
                return Err(UpstreamError::Closed { reused })
            }
            Some(Err(e)) => return Err(UpstreamError::Io(e)),
        }
    }
}

fn is_connection_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
    )
}

/// What one read of a response body produced.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyChunk<'a> {
    /// Body bytes as they were on the wire (chunk framing included for a
    /// chunked body).
    Raw(&'a [u8]),
    /// The body ended cleanly.
    End,
}

/// Reads a response body piece by piece, tracking its framing so the end is
/// found without buffering and the connection can go back to the pool.
pub struct ResponseBody {
    framing: ResponseFraming,
    remaining: u64,
    chunked: ChunkedDecoder,
    done: bool,
    starved: bool,
}

impl ResponseBody {
    fn new(framing: ResponseFraming) -> Self {
        let remaining = match framing {
            ResponseFraming::Length(n) => n,
            _ => 0,
        };
        ResponseBody {
            framing,
            remaining,
            chunked: ChunkedDecoder::new(),
            done: matches!(framing, ResponseFraming::Empty | ResponseFraming::Length(0)),
            starved: false,
        }
    }

    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Returns the next piece of the body as raw wire bytes, calling
    /// `on_data` with the decoded payload bytes it contains. Waits at most
    /// `idle_timeout` for the upstream to send something.
    pub async fn next<'c>(
        &mut self,
        conn: &'c mut PooledConn,
        idle_timeout: Duration,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<BodyChunk<'c>, UpstreamError> {
        if self.done {
            return Ok(BodyChunk::End);
        }
        if conn.start == conn.end || self.starved {
            conn.make_room();
            let end = conn.end;
            let read = runtime::timeout(idle_timeout, conn.stream.read(&mut conn.buf[end..])).await;
            match read {
                None => return Err(UpstreamError::BodyIdleTimeout),
                Some(Ok(0)) => {
                    if self.framing == ResponseFraming::UntilClose {
                        self.done = true;
                        return Ok(BodyChunk::End);
                    }
                    return Err(UpstreamError::BadResponse("body ended early"));
                }
                Some(Ok(n)) => conn.end += n,
                Some(Err(e)) => return Err(UpstreamError::Io(e)),
            }
        }
        let start = conn.start;
        let pending = &conn.buf[start..conn.end];
        let taken = match self.framing {
            ResponseFraming::Empty => 0,
            ResponseFraming::Length(_) => {
                let n = pending.len().min(self.remaining as usize);
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                on_data(&pending[..n]);
                n
            }
            ResponseFraming::UntilClose => {
                on_data(pending);
                pending.len()
            }
            ResponseFraming::Chunked => {
                let progress = self
                    .chunked
                    .decode(pending, &mut on_data)
                    .map_err(|_| UpstreamError::BadResponse("malformed chunked body"))?;
                self.done = progress.done;
                progress.consumed
            }
        };
        conn.start += taken;
        // A decoder that takes nothing from non-empty input is waiting for
        // the rest of a line: the next call must read before decoding again.
        self.starved = taken == 0 && !self.done;
        Ok(BodyChunk::Raw(&conn.buf[start..start + taken]))
    }
}
