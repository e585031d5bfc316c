//! Forwarding an upstream response to the client as it arrives.
//!
//! The head goes out only once the upstream answered (so failures before
//! that become real statuses). The body is relayed piece by piece, never
//! buffered whole: an SSE stream reaches the client event by event.

use std::io;
use std::time::Duration;

use futures_lite::AsyncWrite;

use super::exchange::error_class_of_upstream;
use super::responder::{client_gone, client_went_away, BodyFraming, Responder};
use crate::http::{listed_in_connection, ResponseFraming};
use crate::metrics::InflightGuard;
use crate::protocol::ir::{Dialect, ErrorInfo};
use crate::protocol::translate::write_stream_error;
use crate::protocol::usage::Usage;
use crate::upstream::{BodyChunk, Pool, UpstreamResponse};

/// Response headers that describe the upstream connection, not the
/// message: the gateway writes its own.
const HOP_BY_HOP: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
];

/// How body bytes from upstream are written to the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// The bytes are already in the client's framing.
    AsIs,
    /// Decoded payload re-framed as chunks (close-delimited upstream).
    Rechunk,
    /// Decoded payload written bare (chunked upstream, HTTP/1.0 client).
    Decoded,
    /// Decoded payload re-framed as the gateway's own chunks: used for
    /// event streams, so that if the upstream fails mid-stream the gateway
    /// can still end the body with the protocol's error event.
    Reframe,
}

/// A whole (not streamed) answer up to this size is held until it has
/// all arrived, so that if the upstream fails in the middle the client
/// still gets a proper error status instead of a cut-off body. Answers
/// whose body came with their head (nearly all) cost nothing more.
const HOLD_MAX: u64 = 1024 * 1024;

/// Relays `upstream`'s head and body to the client, then returns the
/// connection to `pool` if the body ended cleanly and it may be reused.
/// `scan_usage` finds the token counts in the body as it passes (the
/// scanner for the provider's protocol).
pub async fn forward_response<S: AsyncWrite + Unpin>(
    mut upstream: UpstreamResponse,
    pool: &Pool,
    idle_timeout: Duration,
    resp: &mut Responder<'_, S>,
    tracked: Option<&InflightGuard<'_>>,
    scan_usage: fn(&[u8], &mut Usage),
    client: Dialect,
) -> io::Result<()> {
    resp.begin(upstream.head.status);
    let headers = &upstream.head.headers;
    let raw = &upstream.head_bytes;
    let has_connection = upstream.head.header(raw, "connection").is_some();
    for h in headers {
        let name = h.name.get(raw);
        if HOP_BY_HOP.iter().any(|n| n.eq_ignore_ascii_case(name))
            || (has_connection && listed_in_connection(headers, raw, name))
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-request-id") {
            // The gateway's own id is the one the client correlates with;
            // the provider's is kept under another name.
            resp.header(b"x-upstream-request-id", h.value.get(raw));
            continue;
        }
        resp.header(name, h.value.get(raw));
    }
    let wanted = match upstream.head.framing {
        // 1xx, 204 and 304 carry no body and no length (RFC 9110 8.6).
        ResponseFraming::Empty if matches!(upstream.head.status, 100..=199 | 204 | 304) => {
            BodyFraming::None
        }
        ResponseFraming::Empty => BodyFraming::Length(0),
        ResponseFraming::Length(n) => BodyFraming::Length(n),
        ResponseFraming::Chunked | ResponseFraming::UntilClose => BodyFraming::Chunked,
    };
    let event_stream = upstream
        .head
        .header(raw, "content-type")
        .is_some_and(|v| v.starts_with(b"text/event-stream"));
    let framing = resp.end_head(wanted);
    let relay = match (upstream.head.framing, framing) {
        (_, BodyFraming::Chunked) if event_stream => Relay::Reframe,
        (ResponseFraming::Chunked, BodyFraming::Chunked) => Relay::AsIs,
        (ResponseFraming::Chunked, _) => Relay::Decoded,
        (ResponseFraming::UntilClose, BodyFraming::Chunked) => Relay::Rechunk,
        _ => Relay::AsIs,
    };
    let hold = !event_stream
        && matches!(upstream.head.framing, ResponseFraming::Length(n) if n <= HOLD_MAX);

    let mut body = upstream.body();
    let mut decoded = Vec::new();
    let gone = client_gone(resp.socket());
    futures_lite::pin!(gone);
    loop {
        decoded.clear();
        let mut capture = resp.exchange().capture.as_mut();
        let next = body.next(&mut upstream.conn, idle_timeout, |data| {
            if matches!(relay, Relay::Decoded | Relay::Reframe) {
                decoded.extend_from_slice(data);
            }
            if let Some(c) = capture.as_mut() {
                c.push_response(data);
            }
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
        if let Ok(BodyChunk::Raw(raw)) = &chunk {
            scan_usage(raw, &mut resp.exchange().usage);
            if let Some(t) = tracked {
                t.add_bytes(raw.len() as u64);
            }
        }
        match chunk {
            Ok(BodyChunk::Raw(raw)) => match relay {
                Relay::AsIs if hold => resp.push_body(raw),
                Relay::AsIs => resp.write_raw(raw).await?,
                Relay::Rechunk => {
                    resp.push_body(raw);
                    resp.flush().await?;
                }
                Relay::Decoded => resp.write_raw(&decoded).await?,
                Relay::Reframe => {
                    if !decoded.is_empty() {
                        resp.push_body(&decoded);
                        resp.flush().await?;
                    }
                }
            },
            Ok(BodyChunk::End) => break,
            Err(e) => {
                resp.exchange().error = error_class_of_upstream(&e);
                if resp.nothing_sent() {
                    // Only the head is buffered: the client can still get
                    // a real status (502, or 504 for a silent upstream).
                    let err = ErrorInfo::new(
                        e.status(),
                        format!("the provider failed before its answer was complete: {e}"),
                    );
                    return super::translated::send_error(resp, client, &err).await;
                }
                if relay == Relay::Reframe {
                    // A blank line first ends any event the upstream left
                    // half-sent, so the error event stands on its own.
                    let mut event = b"\n\n".to_vec();
                    let err =
                        ErrorInfo::new(e.status(), format!("the provider failed mid-answer: {e}"));
                    write_stream_error(client, &err, &mut event);
                    resp.push_body(&event);
                    return resp.finish().await;
                }
                // The head is already out: all that is left is to end the
                // connection, so the client sees a truncated body rather
                // than a complete-looking one.
                resp.flush().await?;
                resp.close_after();
                return Ok(());
            }
        }
    }
    if matches!(relay, Relay::Rechunk | Relay::Reframe) {
        resp.finish().await?;
    } else {
        resp.flush().await?;
    }
    if upstream.head.keep_alive && body.is_done() {
        pool.release(upstream.conn);
    }
    Ok(())
}
