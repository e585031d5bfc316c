//! The built-in mock provider: an OpenAI-compatible upstream for the demo,
//! the tests and the load scenarios. It runs on the same shard and
//! connection machinery as the gateway, so it is fast enough to measure
//! the gateway (and nginx) against.
//!
//! The model name picks a scenario:
//! - `mock-error-500`, `mock-error-429` (with `retry-after: 1`): that error;
//! - `mock-slow-<ms>`: waits that long before answering;
//! - `mock-close`: closes the connection without answering;
//! - anything else: a canned answer, streamed when the request says so.
//!
//! `GET /mock/stats` reports how many requests it received, and with
//! `--record-requests`, `GET /mock/last-request` shows the last chat
//! request's head and body (for tests of what the gateway forwards).

use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::AsyncWrite;

use crate::http::Method;
use crate::protocol::fast_path::extract_routing_fields;
use crate::protocol::json::write_string;
use crate::server::conn::{Request, Service};
use crate::server::errors::GatewayError;
use crate::server::responder::{BodyFraming, Responder};
use crate::server::shard::ShardState;

/// How the mock answers.
#[derive(Clone, Debug)]
pub struct MockSettings {
    /// Delay before every chat answer.
    pub latency: Duration,
    /// Content events in a streamed answer.
    pub stream_chunks: usize,
    /// Pause between streamed events.
    pub chunk_interval: Duration,
    /// Keep the last chat request for `GET /mock/last-request`.
    pub record_requests: bool,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            latency: Duration::ZERO,
            stream_chunks: 8,
            chunk_interval: Duration::ZERO,
            record_requests: false,
        }
    }
}

/// Counters shared by all shards of the mock.
#[derive(Default)]
pub struct MockStats {
    /// Every request received, whatever its path.
    pub requests: AtomicU64,
    /// Chat completion requests received.
    pub chat_requests: AtomicU64,
    last_request: Mutex<Option<Vec<u8>>>,
}

/// The mock service for one shard.
pub struct MockProvider {
    settings: Rc<MockSettings>,
    stats: Arc<MockStats>,
}

impl MockProvider {
    /// A mock shard sharing `stats` with the others.
    pub fn new(settings: MockSettings, stats: Arc<MockStats>, _shard: Rc<ShardState>) -> Self {
        MockProvider {
            settings: Rc::new(settings),
            stats,
        }
    }

    fn record(&self, req: &Request<'_>) {
        let mut out = b"{\"head\":".to_vec();
        write_string(&mut out, &String::from_utf8_lossy(req.raw_head));
        out.extend_from_slice(b",\"body\":");
        write_string(&mut out, &String::from_utf8_lossy(req.body));
        out.push(b'}');
        *self.stats.last_request.lock().unwrap() = Some(out);
    }

    async fn chat<S: AsyncWrite + Unpin>(
        &self,
        req: &Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        self.stats.chat_requests.fetch_add(1, Ordering::Relaxed);
        if self.settings.record_requests {
            self.record(req);
        }
        let mut scratch = Vec::new();
        let fields = match extract_routing_fields(req.body, &mut scratch) {
            Ok(f) => f,
            Err(e) => {
                let err = GatewayError::new(
                    400,
                    "invalid_request",
                    format!("mock: bad request body: {e:?}"),
                );
                return resp.send_error(&err).await;
            }
        };
        let model = fields.model.as_str();
        if !self.settings.latency.is_zero() {
            crate::runtime::sleep(self.settings.latency).await;
        }
        match model {
            "mock-error-500" => {
                let err = GatewayError::new(500, "mock_error", "mock provider: internal error");
                return resp.send_error(&err).await;
            }
            "mock-error-429" => {
                let err = GatewayError::new(429, "rate_limited", "mock provider: rate limited");
                return resp
                    .send_json_with(429, &[(b"retry-after", b"1")], |out| {
                        err.write_openai_body(out)
                    })
                    .await;
            }
            "mock-close" => {
                resp.close_after();
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock-close",
                ));
            }
            _ => {}
        }
        if let Some(ms) = model
            .strip_prefix("mock-slow-")
            .and_then(|m| m.parse::<u64>().ok())
        {
            crate::runtime::sleep(Duration::from_millis(ms)).await;
        }
        if fields.stream {
            self.stream_answer(model, resp).await
        } else {
            resp.send_json_with(200, &[], |out| render_completion(out, model))
                .await
        }
    }

    async fn stream_answer<S: AsyncWrite + Unpin>(
        &self,
        model: &str,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        resp.begin(200);
        resp.header(b"content-type", b"text/event-stream");
        resp.header(b"cache-control", b"no-cache");
        resp.end_head(BodyFraming::Chunked);
        let mut event = Vec::with_capacity(512);
        render_chunk(&mut event, model, Some("assistant"), "", None);
        resp.push_body(&event);
        resp.flush().await?;
        for i in 0..self.settings.stream_chunks {
            if !self.settings.chunk_interval.is_zero() {
                crate::runtime::sleep(self.settings.chunk_interval).await;
            }
            event.clear();
            let word = WORDS[i % WORDS.len()];
            render_chunk(&mut event, model, None, word, None);
            resp.push_body(&event);
            resp.flush().await?;
        }
        event.clear();
        render_chunk(&mut event, model, None, "", Some("stop"));
        event.extend_from_slice(b"data: [DONE]\n\n");
        resp.push_body(&event);
        resp.finish().await
    }
}

const WORDS: &[&str] = &[
    "Hello",
    " from",
    " the",
    " shardgate",
    " mock",
    " provider",
    ".",
    " ",
];
const ANSWER: &str = "Hello from the shardgate mock provider.";

fn render_completion(out: &mut Vec<u8>, model: &str) {
    out.extend_from_slice(b"{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":");
    write_string(out, model);
    out.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
    );
    write_string(out, ANSWER);
    out.extend_from_slice(
        b"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":8,\"total_tokens\":18}}",
    );
}

fn render_chunk(
    out: &mut Vec<u8>,
    model: &str,
    role: Option<&str>,
    content: &str,
    finish: Option<&str>,
) {
    out.extend_from_slice(b"data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":");
    write_string(out, model);
    out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
    if let Some(role) = role {
        out.extend_from_slice(b"\"role\":");
        write_string(out, role);
        out.push(b',');
    }
    if finish.is_none() {
        out.extend_from_slice(b"\"content\":");
        write_string(out, content);
    } else if out.last() == Some(&b',') {
        out.pop();
    }
    out.extend_from_slice(b"},\"finish_reason\":");
    match finish {
        Some(reason) => write_string(out, reason),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}]}\n\n");
}

impl Service for MockProvider {
    async fn call<S: AsyncWrite + Unpin>(
        &self,
        req: Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match (req.head.method, req.path()) {
            (Method::Post, b"/v1/chat/completions" | b"/chat/completions") => self.chat(&req, resp).await,
            (Method::Get, b"/v1/models" | b"/models") => {
                resp.send(
                    200,
                    b"application/json",
                    &[],
                    b"{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":\"model\",\"created\":0,\"owned_by\":\"mock\"}]}",
                )
                .await
            }
            (Method::Get, b"/mock/stats") => {
                let body = format!(
                    "{{\"requests\":{},\"chat_requests\":{}}}",
                    self.stats.requests.load(Ordering::Relaxed),
                    self.stats.chat_requests.load(Ordering::Relaxed)
                );
                resp.send(200, b"application/json", &[], body.as_bytes()).await
            }
            (Method::Get, b"/mock/last-request") => {
                let last = self.stats.last_request.lock().unwrap().clone();
                let body = last.unwrap_or_else(|| b"null".to_vec());
                resp.send(200, b"application/json", &[], &body).await
            }
            _ => {
                let err = GatewayError::new(404, "not_found", "mock provider: unknown path");
                resp.send_error(&err).await
            }
        }
    }
}

/// A bound, not yet running mock provider.
pub struct BoundMock {
    listeners: Vec<std::net::TcpListener>,
    global: Arc<crate::server::shard::GlobalState>,
    settings: MockSettings,
    /// The address actually bound.
    pub local_addr: std::net::SocketAddr,
    /// Counters, readable while it runs.
    pub stats: Arc<MockStats>,
}

impl BoundMock {
    /// Binds `shards` listeners on `addr` (port 0 picks a free port).
    pub fn bind(
        addr: std::net::SocketAddr,
        shards: usize,
        settings: MockSettings,
    ) -> Result<Self, String> {
        crate::server::shard::ensure_memlock(shards).map_err(|e| e.to_string())?;
        let listeners =
            crate::server::listener::bind_listeners(addr, shards).map_err(|e| e.to_string())?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        Ok(BoundMock {
            listeners,
            global: crate::server::shard::GlobalState::new(shards),
            settings,
            local_addr,
            stats: Arc::new(MockStats::default()),
        })
    }

    /// The flag that starts a graceful shutdown when set.
    pub fn shutdown_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.global.shutdown.clone()
    }

    /// Serves until shutdown.
    pub fn run(self) -> Result<(), crate::server::shard::ShardError> {
        use crate::server::conn::ConnSettings;
        let spec = crate::server::shard::ShardSpec {
            name: "mock",
            shards: self.listeners.len(),
            conn: ConnSettings {
                head_limits: crate::http::HeadLimits::default(),
                max_body_bytes: 64 * 1024 * 1024,
                header_read: Duration::from_secs(30),
                body_read: Duration::from_secs(60),
                keep_alive_idle: Duration::from_secs(300),
            },
            max_connections_per_shard: 100_000,
            drain: Duration::from_secs(5),
        };
        let settings = self.settings;
        let stats = self.stats;
        crate::server::shard::run_shards(spec, self.listeners, self.global, move |shard| {
            MockProvider::new(settings.clone(), stats.clone(), shard)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_bodies_are_valid_json() {
        let mut out = Vec::new();
        render_completion(&mut out, "m\"x");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "m\"x");
        for (role, content, finish) in [
            (Some("assistant"), "", None),
            (None, "hi", None),
            (None, "", Some("stop")),
        ] {
            let mut ev = Vec::new();
            render_chunk(&mut ev, "m", role, content, finish);
            let text = std::str::from_utf8(&ev).unwrap();
            let json = text.strip_prefix("data: ").unwrap().trim_end();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
        }
    }
}
