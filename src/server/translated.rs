//! Relaying an upstream answer to a client that speaks another protocol.
//!
//! Errors and complete answers are read whole (they are one JSON value the
//! codecs must parse), translated and sent with a length. A streamed answer
//! is translated event by event as the upstream sends it: the client gets
//! each event as soon as its upstream event arrived, and the gateway holds
//! one partial event at most.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use futures_lite::AsyncWrite;
use simd_json::Buffers;

use super::exchange::{error_class_of_upstream, ErrorClass};
use super::responder::{client_gone, client_went_away, BodyFraming, Responder};
use crate::metrics::InflightGuard;
use crate::protocol::ir::{Dialect, EncodeOptions, ErrorInfo, ErrorKind};
use crate::protocol::translate::{self, StreamState, StreamTranslator};
use crate::upstream::{BodyChunk, Pool, UpstreamError, UpstreamResponse};

/// The largest complete answer or error body the gateway reads to
/// translate. Streamed answers have no such limit: they are never held.
pub const MAX_TRANSLATED_BODY: usize = 32 * 1024 * 1024;

/// The two sides of a translation and what the client asked for.
pub struct Translation<'a> {
    pub client: Dialect,
    pub provider: Dialect,
    /// The model name as the client gave it; every answer names this one.
    pub client_model: &'a str,
    pub stream: bool,
    pub opts: EncodeOptions,
    /// simd-json's scratch space, one per shard.
    pub buffers: &'a RefCell<Buffers>,
}

/// Relays `upstream`'s answer to the client in the client's protocol, then
/// returns the connection to `pool` if it may be reused.
pub async fn relay_translated<S: AsyncWrite + Unpin>(
    mut upstream: UpstreamResponse,
    pool: &Pool,
    idle_timeout: Duration,
    resp: &mut Responder<'_, S>,
    tracked: Option<&InflightGuard<'_>>,
    t: &Translation<'_>,
) -> io::Result<()> {
    let status = upstream.head.status;
    if t.stream && (200..300).contains(&status) {
        return relay_stream(upstream, pool, idle_timeout, resp, tracked, t).await;
    }
    let mut body = Vec::new();
    let client = resp.socket();
    if let Err(e) = read_whole(&mut upstream, idle_timeout, &mut body, tracked, client).await {
        let e = match e {
            ReadFailure::Upstream(e) => e,
            ReadFailure::ClientGone => return Err(client_went_away()),
        };
        resp.exchange().error = error_class_of_upstream(&e);
        let err = ErrorInfo::new(e.status(), format!("reading the provider's answer: {e}"));
        return send_error(resp, t.client, &err).await;
    }
    if upstream.head.keep_alive {
        pool.release(upstream.conn);
    }
    if !(200..300).contains(&status) {
        let err =
            translate::decode_error(t.provider, status, &mut body, &mut t.buffers.borrow_mut());
        let retry_after = upstream.head.header(&upstream.head_bytes, "retry-after");
        let retry_after = retry_after.map(<[u8]>::to_vec);
        let mut out = Vec::with_capacity(256);
        translate::encode_error(t.client, &err, &mut out);
        let headers: &[(&[u8], &[u8])] = match &retry_after {
            Some(v) => &[(b"retry-after", v)],
            None => &[],
        };
        return resp
            .send(err.status, b"application/json", headers, &out)
            .await;
    }
    let mut out = Vec::with_capacity(body.len() + 512);
    let result = translate::translate_response(
        t.provider,
        t.client,
        &mut body,
        t.client_model,
        &t.opts,
        &mut t.buffers.borrow_mut(),
        &mut out,
    );
    match result {
        Ok((usage, _stop)) => {
            resp.exchange().usage = usage;
            resp.send(200, b"application/json", &[], &out).await
        }
        Err(e) => {
            resp.exchange().error = ErrorClass::UpstreamProtocol;
            let err = ErrorInfo {
                status: 502,
                kind: ErrorKind::Api,
                message: format!("the provider's answer could not be translated: {e}"),
            };
            send_error(resp, t.client, &err).await
        }
    }
}

/// Sends `err` as a whole response in `dialect`.
pub async fn send_error<S: AsyncWrite + Unpin>(
    resp: &mut Responder<'_, S>,
    dialect: Dialect,
    err: &ErrorInfo,
) -> io::Result<()> {
    if resp.exchange().error == ErrorClass::None {
        resp.exchange().error = super::exchange::error_class_of_status(err.status);
    }
    let mut out = Vec::with_capacity(256);
    translate::encode_error(dialect, err, &mut out);
    resp.send(err.status, b"application/json", &[], &out).await
}

/// Why a whole answer could not be read.
enum ReadFailure {
    Upstream(UpstreamError),
    /// The client closed its connection meanwhile.
    ClientGone,
}

impl From<UpstreamError> for ReadFailure {
    fn from(e: UpstreamError) -> Self {
        ReadFailure::Upstream(e)
    }
}

/// Reads a whole answer, giving up when the client on socket `client`
/// goes away.
async fn read_whole(
    upstream: &mut UpstreamResponse,
    idle_timeout: Duration,
    out: &mut Vec<u8>,
    tracked: Option<&InflightGuard<'_>>,
    client: Option<std::os::fd::RawFd>,
) -> Result<(), ReadFailure> {
    let mut body = upstream.body();
    let mut too_big = false;
    let gone = client_gone(client);
    futures_lite::pin!(gone);
    loop {
        let next = body.next(&mut upstream.conn, idle_timeout, |data| {
            if out.len() + data.len() > MAX_TRANSLATED_BODY {
                too_big = true;
            } else {
                out.extend_from_slice(data);
            }
        });
        let chunk = futures_lite::future::or(async { Some(next.await) }, async {
            gone.as_mut().await;
            None
        })
        .await
        .ok_or(ReadFailure::ClientGone)??;
        match chunk {
            BodyChunk::Raw(raw) => {
                if let Some(t) = tracked {
                    t.add_bytes(raw.len() as u64);
                }
                if too_big {
                    return Err(UpstreamError::BadResponse("answer larger than 32 MiB").into());
                }
            }
            BodyChunk::End => {
                // A close-delimited body ends the connection's usefulness.
                upstream.head.keep_alive &= body.is_done();
                return Ok(());
            }
        }
    }
}

async fn relay_stream<S: AsyncWrite + Unpin>(
    mut upstream: UpstreamResponse,
    pool: &Pool,
    idle_timeout: Duration,
    resp: &mut Responder<'_, S>,
    tracked: Option<&InflightGuard<'_>>,
    t: &Translation<'_>,
) -> io::Result<()> {
    let mut translator = StreamTranslator::new(t.provider, t.client, t.client_model, t.opts);
    resp.begin(200);
    let content_type: &[u8] = if t.client == Dialect::Gemini && t.opts.json_array {
        b"application/json"
    } else {
        b"text/event-stream"
    };
    resp.header(b"content-type", content_type);
    resp.header(b"cache-control", b"no-cache");
    resp.end_head(BodyFraming::Chunked);

    let mut body = upstream.body();
    let mut decoded = Vec::new();
    let mut out = Vec::with_capacity(4096);
    let gone = client_gone(resp.socket());
    futures_lite::pin!(gone);
    loop {
        decoded.clear();
        let next = body.next(&mut upstream.conn, idle_timeout, |data| {
            decoded.extend_from_slice(data)
        });
        let chunk = futures_lite::future::or(async { Some(next.await) }, async {
            gone.as_mut().await;
            None
        })
        .await;
        let Some(chunk) = chunk else {
            // Nobody is waiting for the answer: drop the upstream request.
            return Err(client_went_away());
        };
        out.clear();
        match chunk {
            Ok(BodyChunk::Raw(raw)) => {
                if let Some(tr) = tracked {
                    tr.add_bytes(raw.len() as u64);
                }
                translator.feed(&decoded, &mut out);
            }
            Ok(BodyChunk::End) => translator.finish(&mut out),
            Err(e) if resp.nothing_sent() => {
                // Only the head is buffered: the client can still get a
                // real status (502, or 504 for a silent upstream).
                resp.exchange().error = error_class_of_upstream(&e);
                let err = ErrorInfo::new(
                    e.status(),
                    format!("the provider failed before its answer began: {e}"),
                );
                return send_error(resp, t.client, &err).await;
            }
            Err(e) => {
                resp.exchange().error = error_class_of_upstream(&e);
                let status = e.status();
                translator.fail(
                    ErrorInfo::new(status, format!("the provider failed mid-answer: {e}")),
                    &mut out,
                );
            }
        }
        if let Some(c) = resp.exchange().capture.as_mut() {
            c.push_response(&out);
        }
        resp.push_body(&out);
        if translator.state() != StreamState::Open {
            break;
        }
        resp.flush().await?;
    }
    {
        let ex = resp.exchange();
        ex.usage = translator.usage();
        if translator.state() == StreamState::Failed && ex.error == ErrorClass::None {
            ex.error = ErrorClass::UpstreamProtocol;
        }
    }
    resp.finish().await?;
    if upstream.head.keep_alive && body.is_done() && translator.state() == StreamState::Done {
        pool.release(upstream.conn);
    }
    Ok(())
}
