//! The built-in mock provider: an upstream that speaks the OpenAI,
//! Anthropic and Gemini protocols, JSON and SSE, for the demo, the tests
//! and the load scenarios. It runs on the same shard and connection
//! machinery as the gateway, so it is fast enough to measure the gateway
//! (and nginx) against. Its answers are written by hand in each provider's
//! exact wire shapes, independently of the gateway's protocol codecs, so
//! that tests of those codecs can catch their bugs.
//!
//! # Endpoints
//!
//! - OpenAI: `POST /v1/chat/completions` (or `/chat/completions`), JSON or
//!   SSE (`"stream": true`; `stream_options.include_usage` adds the final
//!   usage chunk). `GET /v1/models` lists `mock-model`.
//! - Anthropic: `POST /v1/messages`, a message object or, with
//!   `"stream": true`, the events `message_start`, `ping`,
//!   `content_block_start` / `content_block_delta`... / `content_block_stop`
//!   per block, `message_delta`, `message_stop`.
//!   `POST /v1/messages/count_tokens` answers `{"input_tokens": N}`.
//!   `GET /v1/models` with an `anthropic-version` header answers in
//!   Anthropic's list shape.
//! - Gemini (model taken from the path): `POST
//!   /v1beta/models/{model}:generateContent` (JSON),
//!   `:streamGenerateContent?alt=sse` (`data: {chunk}\r\n\r\n` events),
//!   `:streamGenerateContent` without `alt=sse` (one JSON array streamed
//!   element by element: `[{chunk}\r\n,{chunk}...]`), `:countTokens`
//!   (`{"totalTokens": N}`); `GET /v1beta/models` lists `models/mock-model`.
//!   `/v1/models/{model}:...` works the same.
//! - `POST /oauth/token`: an OAuth token server for credential-file
//!   providers (Gemini CLI, Qwen Code). The body is a form
//!   (`grant_type=refresh_token&refresh_token=..&client_id=..
//!   [&client_secret=..]`, percent-decoded). By refresh token: `rt-revoked...`
//!   gets 400 `{"error":"invalid_grant","error_description":"Token has
//!   been expired or revoked."}`; `rt-flaky...` gets 500 on its odd-numbered
//!   calls (1st, 3rd...) and succeeds on the even ones; any other gets 200
//!   `{"access_token":"at-<n>-<refresh token>","expires_in":<ttl>,
//!   "token_type":"Bearer","scope":..}`, `n` a global counter (every
//!   refresh issues a new token, even after a stats reset), `ttl`
//!   `--token-ttl-secs` (3600), plus `"refresh_token":"<old>-r<n>"` when the
//!   old one contains `rotate`. Another `grant_type`, or a missing
//!   `refresh_token` or `client_id`: 400 `{"error":"invalid_request",..}`.
//!   `--oauth-delay-ms N` holds every answer N ms (calls are counted on
//!   arrival, so stats show the ones waiting).
//! - `GET /mock/stats`: `requests` (all), `chat_requests` (answers
//!   generated, any protocol), and `openai_requests`,
//!   `anthropic_requests`, `gemini_requests` (that protocol's model
//!   requests, token counts and refused ones included); `oauth_refreshes`
//!   (token endpoint calls), `oauth_refreshes_by_token` (`{refresh token:
//!   calls}`), `requests_by_key` (`{presented key: model requests}`),
//!   `peer_closed` (connections the peer closed while the mock was still
//!   sending an answer, or holding one back with `stall`: a gateway that
//!   drops its upstream request shows up here).
//! - `POST /mock/reset-stats`: zeroes `oauth_refreshes`,
//!   `oauth_refreshes_by_token` (so a `rt-flaky` token fails first again)
//!   and `requests_by_key`; the other counters and the issued tokens stay.
//! - `GET /mock/last-request` (with `--record-requests`): head and body of
//!   the last model request of any protocol, or `null`.
//!
//! # Keys
//!
//! Every model endpoint (generation, token counts, model lists) of every
//! protocol first looks at the presented key: `Authorization: Bearer`
//! (OpenAI, and OAuth providers of any protocol), `x-api-key`
//! (Anthropic), `x-goog-api-key` or `?key=` (Gemini). It counts the
//! request under that key, then, before any model-name scenario and before
//! `latency`:
//!
//! - a key starting with `at-` must be an access token `POST /oauth/token`
//!   issued and that has not expired, else 401 (so `at-expired...` and
//!   unknown `at-...` tokens always fail);
//! - a key containing `fail429` gets 429 with `retry-after: 2`, `fail500`
//!   500, `fail401` 401, `fail403` 403 (an issued token of a refresh token
//!   with a marker carries it too);
//! - a key containing `fault-<mode>` gets that fault (see Faults) on
//!   generation requests; token counts and model lists ignore it;
//! - with `--require-key`, no key at all gets 401;
//! - any other key (or none) changes nothing.
//!
//! Refusals have the protocol's error body (below). The check costs a
//! `memchr` and an uncontended per-shard lock (under 1% of the mock's time
//! at 140k req/s on one shard).
//!
//! # Scenarios
//!
//! The model name (the body's `model`, or Gemini's path) picks a scenario
//! by substring, the same for all three protocols; several combine.
//!
//! - default: the canned text `Hello from the shardgate mock provider.`
//!   Streamed, it is `stream_chunks` content events (the words of the
//!   answer, cycled), paced by `chunk_interval`, after `latency` (which
//!   applies to every answer). Usage: input tokens = body length / 4 (at
//!   least 1), output tokens = the number of content events the answer
//!   has when streamed; reported as OpenAI `usage` (and a final
//!   `"choices":[]` usage chunk with `include_usage`), Anthropic `usage` in
//!   `message_start` and `message_delta`, Gemini `usageMetadata` (in every
//!   chunk, running).
//! - tool call: when the request declares tools and its conversation does
//!   not end with a tool result, the answer is a call of the FIRST declared
//!   tool. Its arguments have every property of the tool's parameter
//!   schema, by type: `"Paris"` for strings named `location` or `city`,
//!   else `"mock"`; `1` for numbers and integers, `true` for booleans, `[]`,
//!   `{}`; an `enum` gives its first member. Streamed, the arguments JSON
//!   comes in three pieces (OpenAI `tool_calls` deltas after one with the
//!   index, id and name; Anthropic `input_json_delta`); Gemini sends the
//!   call whole in one `functionCall` part. Ends with `tool_calls` /
//!   `tool_use` / `STOP`. Call ids are `call_mock_<n>` / `toolu_mock_<n>`.
//! - tool result: when the conversation ends with a tool result (OpenAI: a
//!   `tool` message; Anthropic: a `tool_result` block in the last user
//!   message; Gemini: a `functionResponse` part in the last content, whose
//!   `result`, `output` or `content` string, else its JSON, is the text),
//!   the answer is the text `The tool said: <first 200 characters>`,
//!   streamed word by word.
//! - `parallel-tools`: two tool calls in one answer (the first two
//!   declared tools, or the first twice, with different ids).
//! - `think`: a reasoning block before the answer: OpenAI
//!   `reasoning_content` (message field or deltas); Anthropic a `thinking`
//!   block with a `signature` (streamed: `thinking_delta`s then a
//!   `signature_delta`); Gemini parts with `"thought": true`.
//! - `mock-error-<status>`: that status with the protocol's error body
//!   (OpenAI `{"error":{"message","type","param","code"}}`, Anthropic
//!   `{"type":"error","error":{"type","message"}}`, Gemini
//!   `{"error":{"code","message","status"}}`). Meant for 400, 401, 429
//!   (with `retry-after: 1`), 500 and 529 (Anthropic's overloaded); any
//!   400..=599 works.
//! - `mock-slow-<ms>`: waits that long before answering.
//! - `mock-close`: closes the connection without answering.
//! - `mock-stream-error`: streamed, up to three content events, then the
//!   protocol's mid-stream error (OpenAI `data: {"error":{...}}`,
//!   Anthropic `event: error` with an `overloaded_error`, Gemini a chunk
//!   `{"error":{...}}`, which also closes the JSON array) and the end of
//!   the body. Not streamed, an ordinary answer.
//! - `mock-stream-truncate`: streamed, up to three content events, then
//!   the connection closes mid-body: no `[DONE]`, `message_stop`,
//!   `finishReason` nor last HTTP chunk.
//!
//!
//! # Faults
//!
//! `fault-<mode>` in the model name (`mock-fault-<mode>`) or in the key
//! (the key's wins) picks a transport-level fault of a generation request,
//! in every protocol, after `latency`:
//!
//! - `reset-head`: the request is read, then the connection is reset
//!   (SO_LINGER 0: an RST, no byte and no FIN sent).
//! - `reset-body`: the head and half of the body (streamed: the head
//!   events and the first content events), then a reset.
//! - `stall`: the request is read and never answered; the connection
//!   stays open until the peer closes it (counted in `peer_closed`) or
//!   the mock shuts down.
//! - `garbage-head`: `HTTP/1.1 2xx garbage` and non-HTTP bytes instead of
//!   a head, then the connection closes.
//! - `truncated-sse`: the same as `mock-stream-truncate`.
//! - `trickle` / `trickle-<ms>`: the head at once, then the body (a stream
//!   in its chunk framing, up to the last chunk) one byte every 20 ms (or
//!   `<ms>`): slow but complete.
//! - `<status>` (`fault-500`, `fault-503`, `fault-429`...): the same as
//!   `mock-error-<status>` (429 with `retry-after: 1`).
//!
//! A refused connection cannot be a mode of a listening mock: point a
//! provider at a closed port for that.
//!
//! Only requests that need it are parsed in full (ones mentioning tools,
//! tool results or OpenAI's stream options); the default scenario reads
//! only `model` and `stream`, so it stays cheap under load tests.

mod anthropic;
mod fault;
mod gemini;
mod oauth;
mod openai;
mod scenario;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::AsyncWrite;
use memchr::memmem;

use crate::http::Method;
use crate::protocol::fast_path::{extract_routing_fields, FieldError};
use crate::protocol::json::write_string;
use crate::server::conn::{Request, Service};
use crate::server::errors::GatewayError;
use crate::server::responder::{BodyFraming, Responder};
use crate::server::shard::ShardState;

use fault::Fault;
use scenario::{input_tokens, Answer, Ask, Scenario};
use stream::Kind;

/// How the mock answers.
#[derive(Clone, Debug)]
pub struct MockSettings {
    /// Delay before every answer.
    pub latency: Duration,
    /// Content events in a streamed canned answer.
    pub stream_chunks: usize,
    /// Pause before each streamed content event.
    pub chunk_interval: Duration,
    /// Keep the last model request for `GET /mock/last-request`.
    pub record_requests: bool,
    /// How long an access token from `POST /oauth/token` is valid.
    pub token_ttl: Duration,
    /// Delay before `POST /oauth/token` answers.
    pub oauth_delay: Duration,
    /// Refuse model requests that present no key (401).
    pub require_key: bool,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            latency: Duration::ZERO,
            stream_chunks: 8,
            chunk_interval: Duration::ZERO,
            record_requests: false,
            token_ttl: Duration::from_secs(3600),
            oauth_delay: Duration::ZERO,
            require_key: false,
        }
    }
}

/// Counters shared by all shards of the mock.
#[derive(Default)]
pub struct MockStats {
    /// Every request received, whatever its path.
    pub requests: AtomicU64,
    /// Requests for a generated answer, any protocol.
    pub chat_requests: AtomicU64,
    /// OpenAI model requests.
    pub openai_requests: AtomicU64,
    /// Anthropic model requests (messages and token counts).
    pub anthropic_requests: AtomicU64,
    /// Gemini model requests (generate and count tokens).
    pub gemini_requests: AtomicU64,
    /// Connections the peer closed while the mock was still sending an
    /// answer or holding one back (`stall`).
    pub peer_closed: AtomicU64,
    last_request: Mutex<Option<Vec<u8>>>,
    /// The token server: issued tokens and refresh counts.
    oauth: oauth::OAuthState,
    /// Each shard's requests per presented key (a shard only locks its own
    /// map, so counting does not contend; the stats merge them).
    key_counts: Mutex<Vec<Arc<KeyCounts>>>,
}

/// Requests per presented key, of one shard.
type KeyCounts = Mutex<HashMap<Vec<u8>, u64>>;

impl MockStats {
    /// Requests per presented key, all shards together.
    pub fn requests_by_key(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for shard in self.key_counts.lock().unwrap().iter() {
            for (key, n) in shard.lock().unwrap().iter() {
                *all.entry(String::from_utf8_lossy(key).into_owned())
                    .or_default() += n;
            }
        }
        all
    }

    /// Zeroes the per-key and OAuth counters.
    pub fn reset_key_and_oauth_counts(&self) {
        for shard in self.key_counts.lock().unwrap().iter() {
            shard.lock().unwrap().clear();
        }
        self.oauth.reset();
    }
}

/// What the presented key asks of a model request.
enum KeyVerdict {
    /// Refused with this status and message.
    Refuse(u16, &'static str),
    /// Answered with this fault (generation requests only).
    Fault(Fault),
}

/// The protocol a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    OpenAi,
    Anthropic,
    Gemini(gemini::Framing),
}

/// The mock service for one shard.
pub struct MockProvider {
    settings: Rc<MockSettings>,
    shard: Rc<ShardState>,
    stats: Arc<MockStats>,
    /// This shard's entry in `stats.key_counts`.
    key_counts: Arc<KeyCounts>,
}

impl MockProvider {
    /// A mock shard sharing `stats` with the others.
    pub fn new(settings: MockSettings, stats: Arc<MockStats>, shard: Rc<ShardState>) -> Self {
        let key_counts = Arc::new(KeyCounts::default());
        stats.key_counts.lock().unwrap().push(key_counts.clone());
        MockProvider {
            settings: Rc::new(settings),
            shard,
            stats,
            key_counts,
        }
    }

    /// The key check every model request passes first: counts the
    /// presented key and returns the status (and message) it is refused
    /// with, or the fault it asks for, if any. Keys without `at-` or an
    /// `f` cost one byte search and one uncontended lock.
    fn check_key(&self, req: &Request<'_>) -> Option<KeyVerdict> {
        let key = match crate::server::auth::presented_key(req) {
            Some(key) if !key.is_empty() => key,
            _ if self.settings.require_key => {
                return Some(KeyVerdict::Refuse(401, "mock provider: no API key"))
            }
            _ => return None,
        };
        {
            let mut counts = self.key_counts.lock().unwrap();
            match counts.get_mut(&*key) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(key.to_vec(), 1);
                }
            }
        }
        if key.starts_with(b"at-") && !self.stats.oauth.valid(&key, Instant::now()) {
            return Some(KeyVerdict::Refuse(
                401,
                "mock provider: invalid or expired access token",
            ));
        }
        // Both markers start with an `f`.
        let from_f = &key[memchr::memchr(b'f', &key)?..];
        match oauth::key_fault(from_f) {
            Some(status) => Some(KeyVerdict::Refuse(status, oauth::fault_message(status))),
            None => fault::parse(from_f).map(KeyVerdict::Fault),
        }
    }

    /// Sends the refusal [`check_key`](Self::check_key) asks for, if any
    /// (`Err`); else the fault the key asks for (only generation requests
    /// act on it).
    async fn admit<S: AsyncWrite + Unpin>(
        &self,
        protocol: Protocol,
        req: &Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> Result<Option<Fault>, io::Result<()>> {
        match self.check_key(req) {
            None => Ok(None),
            Some(KeyVerdict::Fault(f)) => Ok(Some(f)),
            Some(KeyVerdict::Refuse(status, message)) => {
                Err(send_error_retry(protocol, status, message, b"2", resp).await)
            }
        }
    }

    /// Sends the refusal [`check_key`](Self::check_key) asks for, if any.
    async fn refuse<S: AsyncWrite + Unpin>(
        &self,
        protocol: Protocol,
        req: &Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> Option<io::Result<()>> {
        self.admit(protocol, req, resp).await.err()
    }

    /// Counts an answer the peer cut off by closing (`peer_closed`).
    fn count_peer_close(&self, result: io::Result<()>) -> io::Result<()> {
        if let Err(e) = &result {
            if fault::is_peer_close(e) {
                self.stats.peer_closed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// `POST /oauth/token`: a refresh-token grant.
    async fn token<S: AsyncWrite + Unpin>(
        &self,
        req: &Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        let form = oauth::parse_form(req.body);
        let call = self.stats.oauth.count(&form);
        if !self.settings.oauth_delay.is_zero() {
            crate::runtime::sleep(self.settings.oauth_delay).await;
        }
        let answer = self
            .stats
            .oauth
            .answer(&form, call, self.settings.token_ttl, Instant::now());
        let mut body = Vec::with_capacity(192);
        let status = answer.render(&mut body);
        resp.send(
            status,
            b"application/json",
            &[(b"cache-control", b"no-store")],
            &body,
        )
        .await
    }

    /// Counts and (when asked to) records a model request.
    fn received(&self, protocol: Protocol, generates: bool, req: &Request<'_>) {
        let counter = match protocol {
            Protocol::OpenAi => &self.stats.openai_requests,
            Protocol::Anthropic => &self.stats.anthropic_requests,
            Protocol::Gemini(_) => &self.stats.gemini_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if generates {
            self.stats.chat_requests.fetch_add(1, Ordering::Relaxed);
        }
        if self.settings.record_requests {
            let mut out = b"{\"head\":".to_vec();
            write_string(&mut out, &String::from_utf8_lossy(req.raw_head));
            out.extend_from_slice(b",\"body\":");
            write_string(&mut out, &String::from_utf8_lossy(req.body));
            out.push(b'}');
            *self.stats.last_request.lock().unwrap() = Some(out);
        }
    }

    /// `POST /v1/chat/completions` and `POST /v1/messages`: the model and
    /// `stream` are in the body.
    async fn chat<S: AsyncWrite + Unpin>(
        &self,
        protocol: Protocol,
        req: &Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        self.received(protocol, true, req);
        let key_fault = match self.admit(protocol, req, resp).await {
            Ok(f) => f,
            Err(done) => return done,
        };
        let mut scratch = Vec::new();
        let fields = match extract_routing_fields(req.body, &mut scratch) {
            Ok(f) => f,
            Err(e) => {
                let message = format!("mock: bad request body: {e:?}");
                return send_error(protocol, 400, &message, resp).await;
            }
        };
        self.answer(protocol, &fields.model, fields.stream, key_fault, req, resp)
            .await
    }

    /// `POST /v1beta/models/{model}:{method}`.
    async fn gemini<S: AsyncWrite + Unpin>(
        &self,
        model: &str,
        method: &str,
        req: &Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        let alt_sse = req
            .query()
            .is_some_and(|q| q.split(|&b| b == b'&').any(|p| p == b"alt=sse"));
        let framing = if alt_sse {
            gemini::Framing::Sse
        } else {
            gemini::Framing::Array
        };
        let protocol = Protocol::Gemini(framing);
        let stream = match method {
            "generateContent" => false,
            "streamGenerateContent" => true,
            "countTokens" => {
                self.received(protocol, false, req);
                if let Some(done) = self.refuse(protocol, req, resp).await {
                    return done;
                }
                let tokens = input_tokens(req.body.len());
                return resp
                    .send_json_with(200, &[], |out| gemini::render_count(out, tokens))
                    .await;
            }
            _ => {
                let message = format!("mock: unknown method {method:?}");
                return send_error(protocol, 404, &message, resp).await;
            }
        };
        self.received(protocol, true, req);
        let key_fault = match self.admit(protocol, req, resp).await {
            Ok(f) => f,
            Err(done) => return done,
        };
        // The body has no routing fields; this only checks it is JSON.
        let mut scratch = Vec::new();
        match extract_routing_fields(req.body, &mut scratch) {
            Ok(_) | Err(FieldError::MissingModel) => {}
            Err(e) => {
                let message = format!("mock: bad request body: {e:?}");
                return send_error(protocol, 400, &message, resp).await;
            }
        }
        self.answer(protocol, model, stream, key_fault, req, resp)
            .await
    }

    /// Answers a generation request for `model` as its scenario says (or
    /// as the key's fault, which wins over the model name's, says).
    async fn answer<S: AsyncWrite + Unpin>(
        &self,
        protocol: Protocol,
        model: &str,
        stream: bool,
        key_fault: Option<Fault>,
        req: &Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        let body = req.body;
        let mut scenario = Scenario::of(model);
        if !self.settings.latency.is_zero() {
            crate::runtime::sleep(self.settings.latency).await;
        }
        let fault = key_fault.or(scenario.fault);
        match fault {
            Some(Fault::TruncatedSse) => scenario.stream_truncate = true,
            Some(Fault::Status(status)) => scenario.error = Some(status),
            Some(Fault::ResetHead) => {
                resp.reset_after();
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock fault reset-head",
                ));
            }
            Some(Fault::Stall) => return self.stall(resp).await,
            Some(Fault::GarbageHead) => {
                resp.buffer().extend_from_slice(fault::GARBAGE_HEAD);
                resp.flush().await?;
                resp.close_after();
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock fault garbage-head",
                ));
            }
            _ => {}
        }
        if let Some(status) = scenario.error {
            return send_error(protocol, status, error_message(protocol, status), resp).await;
        }
        if scenario.close {
            resp.close_after();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock-close",
            ));
        }
        if let Some(ms) = scenario.slow_ms {
            crate::runtime::sleep(Duration::from_millis(ms)).await;
        }
        let ask = match inspect(protocol, body, stream) {
            Ok(ask) => ask,
            Err(e) => {
                let message = format!("mock: bad request body: {e}");
                return send_error(protocol, 400, &message, resp).await;
            }
        };
        let answer = Answer::build(&scenario, &ask, self.settings.stream_chunks);
        if !stream {
            let render = |out: &mut Vec<u8>| match protocol {
                Protocol::OpenAi => openai::render_json(out, model, &answer),
                Protocol::Anthropic => anthropic::render_json(out, model, &answer),
                Protocol::Gemini(_) => gemini::render_json(out, model, &answer),
            };
            return match fault {
                Some(f @ (Fault::ResetBody | Fault::Trickle(_))) => {
                    let mut json = Vec::with_capacity(512);
                    render(&mut json);
                    resp.begin(200);
                    resp.header(b"content-type", b"application/json");
                    resp.end_head(BodyFraming::Length(json.len() as u64));
                    self.faulty_body(f, &json, resp).await
                }
                _ => resp.send_json_with(200, &[], render).await,
            };
        }
        let events = match protocol {
            Protocol::OpenAi => openai::render_stream(model, &answer, ask.include_usage),
            Protocol::Anthropic => anthropic::render_stream(model, &answer),
            Protocol::Gemini(framing) => gemini::render_stream(model, &answer, framing),
        };
        let cut_short = scenario.stream_error || scenario.stream_truncate;
        let events = if cut_short { events.cut() } else { events.0 };

        resp.begin(200);
        let content_type: &[u8] = match protocol {
            Protocol::Gemini(gemini::Framing::Array) => b"application/json",
            _ => b"text/event-stream",
        };
        resp.header(b"content-type", content_type);
        resp.header(b"cache-control", b"no-cache");
        resp.end_head(BodyFraming::Chunked);
        if let Some(f @ Fault::Trickle(_)) = fault {
            let mut wire = Vec::with_capacity(4096);
            for ev in &events {
                crate::http::chunked::encode_chunk(&mut wire, &ev.bytes);
            }
            wire.extend_from_slice(crate::http::chunked::LAST_CHUNK);
            return self.faulty_body(f, &wire, resp).await;
        }
        let events = if fault == Some(Fault::ResetBody) {
            let mut cut = events;
            cut.truncate(cut.len().min(4));
            cut
        } else {
            events
        };
        for ev in &events {
            let content = matches!(ev.kind, Kind::Content | Kind::LastContent);
            if content && !self.settings.chunk_interval.is_zero() {
                resp.flush().await?;
                crate::runtime::sleep(self.settings.chunk_interval).await;
            }
            resp.push_body(&ev.bytes);
            // Head events go out with the first content event, in one write.
            if content {
                resp.flush().await?;
            }
        }
        if scenario.stream_error {
            let mut error = Vec::with_capacity(192);
            match protocol {
                Protocol::OpenAi => openai::render_stream_error(&mut error),
                Protocol::Anthropic => anthropic::render_stream_error(&mut error),
                Protocol::Gemini(framing) => {
                    gemini::render_stream_error(&mut error, framing, events.is_empty())
                }
            }
            resp.push_body(&error);
        } else if fault == Some(Fault::ResetBody) {
            resp.flush().await?;
            resp.reset_after();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock fault reset-body",
            ));
        } else if scenario.stream_truncate {
            // Without the last chunk the client sees the body cut off.
            resp.flush().await?;
            resp.close_after();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock-stream-truncate",
            ));
        }
        resp.finish().await
    }

    /// `stall`: never answers; returns once the peer closed (counted) or
    /// the mock shuts down.
    async fn stall<S: AsyncWrite + Unpin>(&self, resp: &mut Responder<'_, S>) -> io::Result<()> {
        resp.close_after();
        let closed = match resp.socket() {
            Some(fd) => fault::wait_peer_close(fd, || self.shard.shutdown.is_set()).await,
            None => false,
        };
        if closed {
            self.stats.peer_closed.fetch_add(1, Ordering::Relaxed);
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "mock fault stall",
        ))
    }

    /// Sends `wire` (body bytes already framed) after the head the
    /// responder holds: `reset-body` sends half of it then resets the
    /// connection, `trickle` one byte per interval.
    async fn faulty_body<S: AsyncWrite + Unpin>(
        &self,
        fault: Fault,
        wire: &[u8],
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        match fault {
            Fault::Trickle(every) => {
                resp.flush().await?;
                for &b in wire {
                    crate::runtime::sleep(every).await;
                    resp.buffer().push(b);
                    resp.flush().await?;
                }
                Ok(())
            }
            _ => {
                resp.buffer().extend_from_slice(&wire[..wire.len() / 2]);
                resp.flush().await?;
                resp.reset_after();
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "mock fault reset-body",
                ))
            }
        }
    }

    async fn stats_body<S: AsyncWrite + Unpin>(
        &self,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        let s = &self.stats;
        let mut body = format!(
            "{{\"requests\":{},\"chat_requests\":{},\"openai_requests\":{},\"anthropic_requests\":{},\"gemini_requests\":{},\"peer_closed\":{}",
            s.requests.load(Ordering::Relaxed),
            s.chat_requests.load(Ordering::Relaxed),
            s.openai_requests.load(Ordering::Relaxed),
            s.anthropic_requests.load(Ordering::Relaxed),
            s.gemini_requests.load(Ordering::Relaxed),
            s.peer_closed.load(Ordering::Relaxed),
        )
        .into_bytes();
        s.oauth.write_stats(&mut body);
        body.extend_from_slice(b",\"requests_by_key\":");
        let by_key = s.requests_by_key();
        oauth::write_counts(&mut body, by_key.iter().map(|(k, n)| (k.as_str(), *n)));
        body.push(b'}');
        resp.send(200, b"application/json", &[], &body).await
    }
}

/// Reads the request in full when the answer depends on more than the
/// model and `stream`: a cheap substring check keeps the default scenario
/// from parsing anything.
fn inspect(protocol: Protocol, body: &[u8], stream: bool) -> Result<Ask, String> {
    let has = |needle: &[u8]| memmem::find(body, needle).is_some();
    match protocol {
        Protocol::OpenAi
            if has(b"\"tools\"") || has(b"\"tool\"") || (stream && has(b"\"include_usage\"")) =>
        {
            openai::inspect(body, stream)
        }
        Protocol::Anthropic if has(b"\"tools\"") || has(b"\"tool_result\"") => {
            anthropic::inspect(body, stream)
        }
        Protocol::Gemini(_) if has(b"\"functionDeclarations\"") || has(b"\"functionResponse\"") => {
            gemini::inspect(body, stream)
        }
        _ => Ok(Ask::plain(stream, body.len())),
    }
}

/// The message of a `mock-error-<status>` answer.
fn error_message(protocol: Protocol, status: u16) -> &'static str {
    match (protocol, status) {
        (_, 400) => "mock provider: invalid request",
        (_, 401) => "mock provider: invalid API key",
        (_, 429) => "mock provider: rate limited",
        (Protocol::Anthropic, 529) => "Overloaded",
        (_, 529) => "mock provider: overloaded",
        _ => "mock provider: internal error",
    }
}

/// Sends an error in `protocol`'s shape (429s with `retry-after: 1`).
async fn send_error<S: AsyncWrite + Unpin>(
    protocol: Protocol,
    status: u16,
    message: &str,
    resp: &mut Responder<'_, S>,
) -> io::Result<()> {
    send_error_retry(protocol, status, message, b"1", resp).await
}

/// Sends an error in `protocol`'s shape, 429s with `retry-after: retry`.
async fn send_error_retry<S: AsyncWrite + Unpin>(
    protocol: Protocol,
    status: u16,
    message: &str,
    retry: &[u8],
    resp: &mut Responder<'_, S>,
) -> io::Result<()> {
    let retry: &[(&[u8], &[u8])] = if status == 429 {
        &[(b"retry-after", retry)]
    } else {
        &[]
    };
    resp.send_json_with(status, retry, |out| match protocol {
        Protocol::OpenAi => openai::render_error(out, status, message),
        Protocol::Anthropic => anthropic::render_error(out, status, message),
        Protocol::Gemini(_) => gemini::render_error(out, status, message),
    })
    .await
}

/// Splits a Gemini model path (`/v1beta/models/{model}:{method}`) into
/// model and method.
fn gemini_target(path: &[u8]) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix(b"/v1beta/models/")
        .or_else(|| path.strip_prefix(b"/v1/models/"))?;
    let rest = std::str::from_utf8(rest).ok()?;
    rest.rsplit_once(':')
}

const OPENAI_MODELS: &[u8] = b"{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":\"model\",\"created\":0,\"owned_by\":\"mock\"}]}";
const ANTHROPIC_MODELS: &[u8] = b"{\"data\":[{\"type\":\"model\",\"id\":\"mock-model\",\"display_name\":\"Mock Model\",\"created_at\":\"2024-01-01T00:00:00Z\"}],\"has_more\":false,\"first_id\":\"mock-model\",\"last_id\":\"mock-model\"}";

impl Service for MockProvider {
    async fn call<S: AsyncWrite + Unpin>(
        &self,
        req: Request<'_>,
        resp: &mut Responder<'_, S>,
    ) -> io::Result<()> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.path();
        match (req.head.method, path) {
            (Method::Post, b"/v1/chat/completions" | b"/chat/completions") => {
                let r = self.chat(Protocol::OpenAi, &req, resp).await;
                self.count_peer_close(r)
            }
            (Method::Post, b"/v1/messages") => {
                let r = self.chat(Protocol::Anthropic, &req, resp).await;
                self.count_peer_close(r)
            }
            (Method::Post, b"/v1/messages/count_tokens") => {
                self.received(Protocol::Anthropic, false, &req);
                if let Some(done) = self.refuse(Protocol::Anthropic, &req, resp).await {
                    return done;
                }
                let tokens = input_tokens(req.body.len());
                resp.send_json_with(200, &[], |out| anthropic::render_count(out, tokens))
                    .await
            }
            (Method::Get, b"/v1/models" | b"/models") => {
                let (protocol, list) = if req.header("anthropic-version").is_some() {
                    (Protocol::Anthropic, ANTHROPIC_MODELS)
                } else {
                    (Protocol::OpenAi, OPENAI_MODELS)
                };
                if let Some(done) = self.refuse(protocol, &req, resp).await {
                    return done;
                }
                resp.send(200, b"application/json", &[], list).await
            }
            (Method::Get, b"/v1beta/models") => {
                let protocol = Protocol::Gemini(gemini::Framing::Sse);
                if let Some(done) = self.refuse(protocol, &req, resp).await {
                    return done;
                }
                resp.send(200, b"application/json", &[], gemini::MODEL_LIST)
                    .await
            }
            (Method::Post, b"/oauth/token") => self.token(&req, resp).await,
            (Method::Get, b"/mock/stats") => self.stats_body(resp).await,
            (Method::Post, b"/mock/reset-stats") => {
                self.stats.reset_key_and_oauth_counts();
                resp.send(200, b"application/json", &[], b"{\"reset\":true}")
                    .await
            }
            (Method::Get, b"/mock/last-request") => {
                let last = self.stats.last_request.lock().unwrap().clone();
                let body = last.unwrap_or_else(|| b"null".to_vec());
                resp.send(200, b"application/json", &[], &body).await
            }
            (Method::Post, _) if gemini_target(path).is_some() => {
                let (model, method) = gemini_target(path).unwrap_or_default();
                let r = self.gemini(model, method, &req, resp).await;
                self.count_peer_close(r)
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
            tls: None,
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
    fn gemini_paths_name_model_and_method() {
        assert_eq!(
            gemini_target(b"/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
            Some(("gemini-2.0-flash", "streamGenerateContent"))
        );
        assert_eq!(
            gemini_target(b"/v1/models/m:countTokens"),
            Some(("m", "countTokens"))
        );
        assert_eq!(gemini_target(b"/v1beta/models"), None);
        assert_eq!(gemini_target(b"/v1beta/models/no-method"), None);
    }

    #[test]
    fn only_requests_that_need_it_are_parsed() {
        // Not JSON at all, but nothing in it asks for a parse.
        let plain = b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}] broken";
        assert_eq!(
            inspect(Protocol::OpenAi, plain, false),
            Ok(Ask::plain(false, plain.len()))
        );
        let tools = b"{\"tools\":[] broken";
        assert!(inspect(Protocol::OpenAi, tools, false).is_err());
        assert!(inspect(Protocol::Anthropic, tools, false).is_err());
        let usage = b"{\"stream_options\":{\"include_usage\":true}}";
        assert!(
            inspect(Protocol::OpenAi, usage, true)
                .unwrap()
                .include_usage
        );
        assert!(
            !inspect(Protocol::OpenAi, usage, false)
                .unwrap()
                .include_usage
        );
    }

    #[test]
    fn every_error_body_is_json_in_its_protocol_shape() {
        for status in [400, 401, 429, 500, 529] {
            let mut out = Vec::new();
            openai::render_error(&mut out, status, error_message(Protocol::OpenAi, status));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
            out.clear();
            anthropic::render_error(&mut out, status, "m");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["type"], "error");
            assert!(v["error"]["type"].as_str().unwrap().ends_with("error"));
            out.clear();
            gemini::render_error(&mut out, status, "m");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["error"]["code"], status);
        }
        let mut out = Vec::new();
        openai::render_stream_error(&mut out);
        anthropic::render_stream_error(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("data: {\"error\":"));
        assert!(text.contains("\n\nevent: error\ndata: {\"type\":\"error\""));
    }
}
