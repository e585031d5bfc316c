//! The gateway service: routes client requests, authenticates them, and
//! forwards chat requests to the provider their model maps to.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWrite;
use smallvec::SmallVec;

use super::auth::{bearer_token, percent_decode, AuthOutcome, Authenticator};
use super::conn::{Request, Service};
use super::credentials::{start_control, CredKey, CredentialHub, NoCredential, ShardCredentials};
use super::errors::GatewayError;
use super::forward::forward_response;
use super::provider::{Operation, ProviderRoute, ANTHROPIC_VERSION};
use super::responder::{client_gone, client_went_away};
use super::shard::ShardState;
use super::translated::{relay_translated, send_error as send_translated_error, Translation};
use crate::config::{Config, RuleWhen};
use crate::http::{listed_in_connection, write, Method};
use crate::metrics::{InflightEntry, Route};
use crate::protocol::fast_path::{extract_routing_fields, rewrite_model, FieldError};
use crate::protocol::ir::{Dialect, EncodeOptions, ErrorInfo, ErrorKind, TranslateError};
use crate::protocol::json::write_string;
use crate::protocol::usage::scanner_for;
use crate::protocol::{json, translate};
use crate::routing::{
    pick, traits_of_body, Condition, ModelDefaults, ModelSpec, ModelTable, Outcome, Rule,
};
use crate::upstream::{exchange, Pool, UpstreamRequest};
use std::borrow::Cow;
use std::time::Instant;
use subtle::ConstantTimeEq;

use super::exchange::{error_class_of_upstream, BodyCapture, ErrorClass, Exchange};
use super::telemetry::{ShardLog, SharedTelemetry, Telemetry};
use crate::log::ModelName;

/// How often a shard closes expired idle upstream connections.
const POOL_SWEEP: Duration = Duration::from_secs(5);
/// Idle upstream connections kept per upstream and shard.
pub const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// The gateway as one shard runs it.
pub struct Gateway {
    config: Arc<Config>,
    shard: Rc<ShardState>,
    auth: Authenticator,
    providers: Vec<ProviderRoute>,
    pool: Rc<Pool>,
    /// The model list bodies, rendered once.
    models: ModelLists,
    /// Model names to providers, upstream names and fallbacks.
    table: ModelTable,
    /// Scenario rules, first match wins.
    rules: Vec<Rule>,
    /// This shard's credential cache.
    credentials: Rc<ShardCredentials>,
    /// Retry jitter state.
    jitter: Cell<u64>,
    /// simd-json's scratch space for translations on this shard.
    buffers: RefCell<simd_json::Buffers>,
    /// Spare buffers for request bodies and heads; taken and returned
    /// around each request so no borrow is held across an await.
    spare: RefCell<Vec<Vec<u8>>>,
    telemetry: Rc<Telemetry>,
    /// Provider names as the tracker shows them.
    provider_names: Vec<Cow<'static, str>>,
}

impl Gateway {
    /// The gateway for one shard, with its own upstream pool.
    pub fn new(
        config: Arc<Config>,
        shard: Rc<ShardState>,
        pool: Pool,
        telemetry: Arc<SharedTelemetry>,
        log: Option<ShardLog>,
        hub: Arc<CredentialHub>,
    ) -> Self {
        let pool = Rc::new(pool);
        let credentials = ShardCredentials::new(&config, hub.clone(), shard.id);
        if shard.id == 0 {
            start_control(config.clone(), hub, pool.clone());
        }
        let table = model_table(&config);
        let rules = config
            .rules
            .iter()
            .map(|r| Rule {
                condition: match &r.when {
                    RuleWhen::Background { models } => Condition::Background {
                        models: models.clone(),
                    },
                    RuleWhen::Thinking => Condition::Thinking,
                    RuleWhen::LongContext { min_tokens } => Condition::LongContext {
                        min_tokens: *min_tokens,
                    },
                    RuleWhen::WebSearch => Condition::WebSearch,
                },
                target: r.target.clone(),
            })
            .collect();
        let connections = {
            let shard = Rc::downgrade(&shard);
            move || shard.upgrade().map_or(0, |s| s.connections.get())
        };
        let telemetry = Telemetry::start(telemetry, shard.id, log, connections, {
            let pool = Rc::downgrade(&pool);
            move || pool.upgrade().map_or(0, |p| p.idle_count())
        });
        glommio::spawn_local({
            let pool = Rc::downgrade(&pool);
            async move {
                loop {
                    crate::runtime::sleep(POOL_SWEEP).await;
                    match pool.upgrade() {
                        Some(pool) => pool.sweep(),
                        None => return,
                    }
                }
            }
        })
        .detach();
        Gateway {
            auth: Authenticator::new(&config.client_keys),
            providers: config.providers.iter().map(ProviderRoute::new).collect(),
            models: render_models(&config),
            table,
            rules,
            credentials,
            jitter: Cell::new(0x9e37_79b9_7f4a_7c15 ^ (shard.id as u64 + 1)),
            buffers: RefCell::new(simd_json::Buffers::default()),
            provider_names: config
                .providers
                .iter()
                .map(|p| Cow::Owned(p.name.clone()))
                .collect(),
            config,
            telemetry,
            shard,
            pool,
            spare: RefCell::new(Vec::new()),
        }
    }

    fn take_buf(&self) -> Vec<u8> {
        self.spare.borrow_mut().pop().unwrap_or_default()
    }

    fn give_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() <= 256 * 1024 {
            buf.clear();
            self.spare.borrow_mut().push(buf);
        }
    }

    /// Answers a model request (generate or count tokens) that came in on
    /// `call.dialect`'s endpoint: route the model, then forward as is to a
    /// provider of the same protocol or translate for another.
    async fn model_call<S: AsyncWrite + Unpin>(
        &self,
        call: ModelCall,
        req: &Request<'_>,
        resp: &mut super::responder::Responder<'_, S>,
    ) -> io::Result<()> {
        let dialect = call.dialect;
        let mut scratch = self.take_buf();
        let (model, stream, model_token) = match &call.path_model {
            Some(m) => (
                m.clone(),
                call.op == Operation::Generate { stream: true },
                None,
            ),
            None => match extract_routing_fields(req.body, &mut scratch) {
                Ok(f) => (
                    f.model,
                    f.stream && call.op != Operation::CountTokens,
                    Some(f.model_token),
                ),
                Err(e) => {
                    self.give_buf(scratch);
                    return self.reject(resp, dialect, &field_error(e)).await;
                }
            },
        };
        self.give_buf(scratch);
        let body_cap = self.telemetry.body_cap();
        {
            let ex = resp.exchange();
            ex.model_requested = ModelName::new(&model);
            ex.stream = stream;
            if let Some(cap) = body_cap {
                ex.capture = Some(BodyCapture {
                    cap,
                    request: req.body[..req.body.len().min(cap)].to_vec(),
                    response: Vec::new(),
                });
            }
        }
        // Scenario rules may send the request to another model; the table
        // then names the provider, the upstream name and the fallbacks.
        let routed: &str = if self.rules.is_empty() {
            &model
        } else {
            let traits = traits_of_body(req.body);
            pick(&self.rules, &model, &traits).unwrap_or(&model)
        };
        let Some(primary) = self.table.resolve(routed) else {
            let err = GatewayError::new(
                404,
                "model_not_found",
                format!("the model `{model}` is not served by this gateway"),
            );
            return self.reject(resp, dialect, &err).await;
        };
        let fallbacks = self.table.fallback_targets(&primary);
        let mut targets: SmallVec<[_; 2]> = SmallVec::with_capacity(1 + fallbacks.len());
        targets.push(primary);
        targets.extend(fallbacks);

        let first_provider = targets[0].provider;
        let ex = resp.exchange();
        let tracked = self.telemetry.shared.tracker.begin(
            InflightEntry {
                id: ex.id.numeric,
                shard: self.shard.id as u16,
                started: ex.started,
                started_unix_us: ex.started_unix_us,
                client_protocol: dialect.name(),
                model: model.clone(),
                provider: None,
                credential: None,
            }
            .with_provider(self.provider_names[first_provider].clone()),
        );

        let max_attempts = 1 + self.config.retries as usize;
        let mut attempts = 0usize;
        // Credentials this request already failed on: not tried twice.
        let mut tried: SmallVec<[(CredKey, u64); 4]> = SmallVec::new();
        // What to answer if every attempt fails before one can be relayed.
        let mut failure: Option<Failure> = None;
        'targets: for (ti, target) in targets.iter().enumerate() {
            let provider = &self.providers[target.provider];
            let upstream_name: &str = &target.upstream_model;
            let is_last_target = ti + 1 == targets.len();
            let same_protocol = provider.dialect == dialect
                && target.defaults.is_none_or(|d| d.is_empty())
                && (call.op != Operation::CountTokens || dialect != Dialect::OpenAiChat);
            if call.op == Operation::CountTokens && !same_protocol {
                return self.estimate_tokens(dialect, req, resp).await;
            }
            // The body for this provider, built once however many of its
            // credentials are tried.
            let mut upstream_body = self.take_buf();
            let mut head_base = self.take_buf();
            let mut translation = None;
            if same_protocol {
                match (&model_token, upstream_name != model) {
                    (Some(token), true) => {
                        rewrite_model(req.body, token.clone(), upstream_name, &mut upstream_body)
                    }
                    _ => upstream_body.extend_from_slice(req.body),
                }
                if dialect == Dialect::OpenAiChat {
                    head_base.extend_from_slice(&provider.chat_head);
                } else {
                    // A Gemini client asking for a stream without `alt=sse`
                    // gets the JSON-array stream, straight from the provider.
                    let query: Option<&[u8]> = call.gemini_json_array.then_some(b"");
                    provider.write_head(call.op, upstream_name, query, &mut head_base);
                }
                forward_request_headers(req, &mut head_base);
                if dialect == Dialect::Anthropic && req.header("anthropic-version").is_none() {
                    write::header(&mut head_base, b"anthropic-version", ANTHROPIC_VERSION);
                }
            } else {
                let decoded = self.translate_request(
                    dialect,
                    provider.dialect,
                    req.body,
                    upstream_name,
                    stream,
                    target.defaults,
                    &mut upstream_body,
                );
                let (stream, include_usage) = match decoded {
                    Ok(v) => v,
                    Err(e) => {
                        self.give_buf(upstream_body);
                        self.give_buf(head_base);
                        let err = ErrorInfo {
                            status: 400,
                            kind: ErrorKind::InvalidRequest,
                            message: format!("invalid request: {e}"),
                        };
                        return send_translated_error(resp, dialect, &err).await;
                    }
                };
                resp.exchange().stream = stream;
                provider.write_head(
                    Operation::Generate { stream },
                    upstream_name,
                    None,
                    &mut head_base,
                );
                write::header(&mut head_base, b"content-type", b"application/json");
                if provider.dialect == Dialect::Anthropic {
                    write::header(&mut head_base, b"anthropic-version", ANTHROPIC_VERSION);
                }
                if let Some(ua) = req.header("user-agent") {
                    write::header(&mut head_base, b"user-agent", ua);
                }
                translation = Some((stream, include_usage));
            }

            loop {
                if attempts >= max_attempts {
                    self.give_buf(upstream_body);
                    self.give_buf(head_base);
                    break 'targets;
                }
                // A credential this request already failed on is passed
                // over; other requests move the round robin too, so coming
                // back to one does not mean the others were all tried.
                let mut passed_over = 0;
                let lease = loop {
                    match self.credentials.acquire(target.provider).await {
                        Ok(lease) if tried.contains(&(lease.key, lease.version)) => {
                            self.credentials.release(lease, Outcome::Cancelled);
                            passed_over += 1;
                            if passed_over >= self.credentials.count(target.provider) {
                                // This provider has nothing new to offer.
                                break None;
                            }
                        }
                        Ok(lease) => break Some(lease),
                        Err(why) => {
                            failure = Some(Failure::NoCredential {
                                provider: target.provider,
                                why,
                            });
                            break None;
                        }
                    }
                };
                let Some(lease) = lease else { break };
                attempts += 1;
                if attempts > 1 {
                    resp.exchange().retries = resp.exchange().retries.saturating_add(1);
                    crate::runtime::sleep(self.backoff(attempts)).await;
                }
                {
                    let ex = resp.exchange();
                    ex.provider = Some(target.provider as u16);
                    ex.model_served = ModelName::new(upstream_name);
                    ex.credential = self.credentials.hub().log_index(lease.key);
                }
                let mut head = self.take_buf();
                head.extend_from_slice(&head_base);
                head.extend_from_slice(&lease.auth);
                write::content_length(&mut head, upstream_body.len() as u64);
                head.extend_from_slice(b"\r\n");
                let upstream_req = UpstreamRequest {
                    method: Method::Post,
                    head: &head,
                    body: &upstream_body,
                };
                let timeouts = &self.config.timeouts;
                let upstream_started = Instant::now();
                let mut scratch = self.take_buf();
                // A client that goes away while the provider thinks takes
                // the upstream request with it. The exchange is pinned here
                // and raced by reference: moved into the race's async block
                // it would be stored twice in this future (the block's
                // capture and its awaitee), 4 KB more per request.
                let result = {
                    let mut waiting = std::pin::pin!(exchange(
                        &self.pool,
                        &provider.key,
                        &upstream_req,
                        timeouts.upstream_head,
                        &mut scratch,
                    ));
                    futures_lite::future::or(async { Some(waiting.as_mut().await) }, async {
                        client_gone(resp.socket()).await;
                        None
                    })
                    .await
                };
                self.give_buf(head);
                self.give_buf(scratch);
                let Some(result) = result else {
                    self.credentials.release(lease, Outcome::Cancelled);
                    self.give_buf(upstream_body);
                    self.give_buf(head_base);
                    return Err(client_went_away());
                };
                tried.push((lease.key, lease.version));
                let untried_here = self.credentials.count(target.provider)
                    > tried
                        .iter()
                        .filter(|(k, _)| k.provider as usize == target.provider)
                        .count();
                let more_to_try = attempts < max_attempts && (untried_here || !is_last_target);
                let upstream = match result {
                    Ok(upstream) => upstream,
                    Err(e) => {
                        self.credentials.release(lease, Outcome::Network);
                        resp.exchange().error = error_class_of_upstream(&e);
                        failure = Some(Failure::Upstream(GatewayError::new(
                            e.status(),
                            e.code(),
                            e.to_string(),
                        )));
                        if more_to_try {
                            continue;
                        }
                        break;
                    }
                };
                let status = upstream.head.status;
                let outcome = outcome_of(&upstream);
                // A failure the next credential or provider may not have:
                // try again, as long as nothing reached the client.
                let retryable = matches!(
                    outcome,
                    Outcome::RateLimited { .. } | Outcome::ServerError | Outcome::AuthFailed
                );
                // A refused OAuth token comes back refreshed: worth a retry
                // even when it is the only credential.
                let refreshed_soon = outcome == Outcome::AuthFailed
                    && attempts < max_attempts
                    && self.credentials.refreshable(target.provider);
                if retryable && (more_to_try || refreshed_soon) {
                    self.credentials.release(lease, outcome);
                    failure = Some(Failure::Status(status));
                    // The error body is not read: the connection is dropped.
                    drop(upstream);
                    continue;
                }
                {
                    let ex = resp.exchange();
                    ex.upstream_latency_us = Some(upstream_started.elapsed().as_micros() as u64);
                    ex.upstream_status = Some(status);
                    ex.error = if status >= 400 {
                        ErrorClass::UpstreamStatus
                    } else {
                        ErrorClass::None
                    };
                }
                self.give_buf(upstream_body);
                self.give_buf(head_base);
                let idle = timeouts.upstream_body_idle;
                let result = match translation {
                    None => {
                        let scan = scanner_for(provider.dialect);
                        forward_response(
                            upstream,
                            &self.pool,
                            idle,
                            resp,
                            tracked.as_ref(),
                            scan,
                            dialect,
                        )
                        .await
                    }
                    Some((stream, include_usage)) => {
                        let t = Translation {
                            client: dialect,
                            provider: provider.dialect,
                            client_model: &model,
                            stream,
                            opts: EncodeOptions {
                                created: resp.exchange().started_unix_us / 1_000_000,
                                include_usage,
                                json_array: call.gemini_json_array,
                            },
                            buffers: &self.buffers,
                        };
                        // Boxed: the translating relay's 2.7 KB would
                        // otherwise size every request's future, pass-through
                        // included; translation allocates per request anyway.
                        Box::pin(relay_translated(
                            upstream,
                            &self.pool,
                            idle,
                            resp,
                            tracked.as_ref(),
                            &t,
                        ))
                        .await
                    }
                };
                self.credentials.release(lease, outcome);
                return result;
            }
            self.give_buf(upstream_body);
            self.give_buf(head_base);
        }
        match failure {
            Some(Failure::NoCredential { provider, why }) => {
                let name = &self.config.providers[provider].name;
                let (status, message, retry_after) = match why {
                    NoCredential::Unavailable { retry_after } => (
                        503,
                        format!(
                            "no credential of provider `{name}` is available for the model `{model}` (all cooling down, disabled or rejected)"
                        ),
                        retry_after,
                    ),
                    NoCredential::Busy => (
                        429,
                        format!(
                            "every credential of provider `{name}` is at its concurrency limit for the model `{model}`; try again shortly"
                        ),
                        Some(Duration::from_secs(1)),
                    ),
                };
                resp.exchange().error = ErrorClass::UpstreamStatus;
                let info = ErrorInfo::new(status, message);
                let mut out = Vec::with_capacity(256);
                translate::encode_error(dialect, &info, &mut out);
                let secs = retry_after.map(|d| d.as_secs().max(1).to_string());
                let headers: Vec<(&[u8], &[u8])> = match &secs {
                    Some(s) => vec![(b"retry-after".as_slice(), s.as_bytes())],
                    None => Vec::new(),
                };
                resp.send(status, b"application/json", &headers, &out).await
            }
            Some(Failure::Upstream(err)) => self.reject(resp, dialect, &err).await,
            Some(Failure::Status(status)) => {
                let err = GatewayError::new(
                    if status >= 500 { 502 } else { status },
                    "upstream_failed",
                    format!("every attempt for the model `{model}` failed; the last upstream status was {status}"),
                );
                self.reject(resp, dialect, &err).await
            }
            None => {
                let err = GatewayError::new(502, "upstream_failed", "no attempt could be made");
                self.reject(resp, dialect, &err).await
            }
        }
    }

    /// The pause before attempt `n` (n >= 2): the base backoff doubled per
    /// attempt, with up to 50% random jitter so retries from many requests
    /// do not arrive together.
    fn backoff(&self, n: usize) -> Duration {
        let base = self.config.retry_backoff * (1u32 << (n.saturating_sub(2)).min(6));
        let jitter = self.jitter.get();
        // xorshift: cheap, per shard, good enough to spread retries.
        let mut x = jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter.set(x);
        base + base.mul_f64((x % 1000) as f64 / 2000.0)
    }

    /// Decodes a client body in `client`'s protocol and writes it in
    /// `provider`'s, naming `upstream_model`. Returns whether the answer is
    /// streamed and whether an OpenAI client wants the usage chunk.
    // The arguments are the two protocols and what the route decided;
    // bundling them would only move the list into a struct used once.
    #[allow(clippy::too_many_arguments)]
    fn translate_request(
        &self,
        client: Dialect,
        provider: Dialect,
        body: &[u8],
        upstream_model: &str,
        stream: bool,
        defaults: Option<&ModelDefaults>,
        out: &mut Vec<u8>,
    ) -> Result<(bool, bool), TranslateError> {
        let mut work = self.take_buf();
        work.extend_from_slice(body);
        let result = (|| {
            let tape = json::parse(&mut work, &mut self.buffers.borrow_mut())?;
            let mut ir = translate::decode_request(client, tape.as_value())?;
            if client == Dialect::Gemini {
                ir.stream = stream;
            }
            ir.model = Cow::Borrowed(upstream_model);
            if let Some(d) = defaults {
                ir.temperature = ir.temperature.or(d.temperature);
                ir.top_p = ir.top_p.or(d.top_p);
                ir.max_tokens = ir.max_tokens.or(d.max_tokens);
                if d.thinking == Some(false) {
                    ir.thinking = None;
                }
            }
            translate::encode_request(provider, &ir, out);
            Ok((ir.stream, ir.include_usage))
        })();
        self.give_buf(work);
        result
    }

    /// Answers a count-tokens request locally, for a provider that cannot
    /// count in the client's protocol.
    async fn estimate_tokens<S: AsyncWrite + Unpin>(
        &self,
        dialect: Dialect,
        req: &Request<'_>,
        resp: &mut super::responder::Responder<'_, S>,
    ) -> io::Result<()> {
        let mut work = self.take_buf();
        work.extend_from_slice(req.body);
        let parsed = json::parse(&mut work, &mut self.buffers.borrow_mut())
            .map(|tape| translate::estimate_tokens(&tape));
        self.give_buf(work);
        match parsed {
            Ok(n) => {
                resp.send_json_with(200, &[], |out| {
                    out.extend_from_slice(if dialect == Dialect::Gemini {
                        b"{\"totalTokens\":"
                    } else {
                        b"{\"input_tokens\":"
                    });
                    json::write_u64(out, n);
                    out.push(b'}');
                })
                .await
            }
            Err(e) => {
                let err = ErrorInfo::new(400, format!("invalid request: {e}"));
                send_translated_error(resp, dialect, &err).await
            }
        }
    }

    /// Sends a gateway error in the client's protocol: OpenAI's shape keeps
    /// the gateway's own error code, the others get their protocol's kinds.
    async fn reject<S: AsyncWrite + Unpin>(
        &self,
        resp: &mut super::responder::Responder<'_, S>,
        dialect: Dialect,
        err: &GatewayError,
    ) -> io::Result<()> {
        match dialect {
            Dialect::OpenAiChat | Dialect::OpenAiResponses => resp.send_error(err).await,
            _ => {
                let info = ErrorInfo::new(err.status, err.message.clone());
                send_translated_error(resp, dialect, &info).await
            }
        }
    }
}

/// Why no answer could be relayed, for the error sent instead.
enum Failure {
    NoCredential { provider: usize, why: NoCredential },
    Upstream(GatewayError),
    Status(u16),
}

/// How an upstream answer counts for its credential's health.
fn outcome_of(upstream: &crate::upstream::UpstreamResponse) -> Outcome {
    match upstream.head.status {
        429 => Outcome::RateLimited {
            retry_after: upstream
                .head
                .header(&upstream.head_bytes, "retry-after")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        401 | 403 => Outcome::AuthFailed,
        500..=599 => Outcome::ServerError,
        _ => Outcome::Success,
    }
}

/// A model request as its endpoint describes it.
struct ModelCall {
    dialect: Dialect,
    op: Operation,
    /// Gemini names the model in the path; the others in the body.
    path_model: Option<String>,
    /// Gemini `:streamGenerateContent` without `?alt=sse`: the answer is a
    /// JSON array streamed in pieces.
    gemini_json_array: bool,
}

impl ModelCall {
    fn body(dialect: Dialect, op: Operation) -> Self {
        ModelCall {
            dialect,
            op,
            path_model: None,
            gemini_json_array: false,
        }
    }
}

impl Service for Gateway {
    async fn call<S: AsyncWrite + Unpin>(
        &self,
        req: Request<'_>,
        resp: &mut super::responder::Responder<'_, S>,
    ) -> io::Result<()> {
        self.telemetry.recorder.request_started();
        if let Some(cors) = &self.config.cors {
            if let Some(done) = cors_headers(cors, &req, resp) {
                self.telemetry.recorder.request_finished();
                return done.await;
            }
        }
        let result = self.route(req, resp).await;
        self.telemetry.recorder.request_finished();
        result
    }

    fn finish(&self, exchange: &Exchange) {
        self.telemetry.record(exchange);
    }

    fn client_write_timeout(&self) -> std::time::Duration {
        self.config.timeouts.client_write
    }
}

impl Gateway {
    async fn route<S: AsyncWrite + Unpin>(
        &self,
        req: Request<'_>,
        resp: &mut super::responder::Responder<'_, S>,
    ) -> io::Result<()> {
        let method = req.head.method;
        resp.exchange().route = route_of(req.path());
        match req.path() {
            b"/health" => match method {
                Method::Get => {
                    resp.send(200, b"application/json", &[], b"{\"status\":\"ok\"}")
                        .await
                }
                _ => method_not_allowed(resp, b"GET, HEAD").await,
            },
            b"/ready" => match method {
                Method::Get | Method::Head if self.shard.global.ready() => {
                    resp.send(200, b"application/json", &[], b"{\"status\":\"ready\"}")
                        .await
                }
                Method::Get | Method::Head => {
                    resp.send(503, b"application/json", &[], b"{\"status\":\"not ready\"}")
                        .await
                }
                _ => method_not_allowed(resp, b"GET, HEAD").await,
            },
            b"/v1/models" | b"/v1beta/models" => match method {
                Method::Get | Method::Head => {
                    let (dialect, body) = if req.path() == b"/v1beta/models" {
                        (Dialect::Gemini, &self.models.gemini)
                    } else if req.header("anthropic-version").is_some() {
                        (Dialect::Anthropic, &self.models.anthropic)
                    } else {
                        (Dialect::OpenAiChat, &self.models.openai)
                    };
                    if let Some(err) = self.authenticate(&req, resp) {
                        return self.reject(resp, dialect, &err).await;
                    }
                    resp.send(200, b"application/json", &[], body).await
                }
                _ => method_not_allowed(resp, b"GET, HEAD").await,
            },
            b"/v1/chat/completions"
            | b"/v1/responses"
            | b"/v1/messages"
            | b"/v1/messages/count_tokens" => {
                let call = match req.path() {
                    b"/v1/chat/completions" => {
                        ModelCall::body(Dialect::OpenAiChat, Operation::Generate { stream: false })
                    }
                    b"/v1/responses" => ModelCall::body(
                        Dialect::OpenAiResponses,
                        Operation::Generate { stream: false },
                    ),
                    b"/v1/messages" => {
                        ModelCall::body(Dialect::Anthropic, Operation::Generate { stream: false })
                    }
                    _ => ModelCall::body(Dialect::Anthropic, Operation::CountTokens),
                };
                if method != Method::Post {
                    return method_not_allowed(resp, b"POST").await;
                }
                if let Some(err) = self.authenticate(&req, resp) {
                    return self.reject(resp, call.dialect, &err).await;
                }
                self.model_call(call, &req, resp).await
            }
            p if p.starts_with(b"/v1beta/models/") => {
                let Some(call) = gemini_call(&p[b"/v1beta/models/".len()..], req.query()) else {
                    let err = GatewayError::new(
                        404,
                        "not_found",
                        "unknown Gemini method: use :generateContent, :streamGenerateContent or :countTokens",
                    );
                    return self.reject(resp, Dialect::Gemini, &err).await;
                };
                if method != Method::Post {
                    return method_not_allowed(resp, b"POST").await;
                }
                if let Some(err) = self.authenticate(&req, resp) {
                    return self.reject(resp, Dialect::Gemini, &err).await;
                }
                self.model_call(call, &req, resp).await
            }
            b"/metrics" => match method {
                Method::Get | Method::Head => {
                    let body = self.telemetry.shared.prometheus();
                    resp.send(200, PROMETHEUS_TEXT, &[], body.as_bytes()).await
                }
                _ => method_not_allowed(resp, b"GET, HEAD").await,
            },
            b"/admin/credentials" => {
                if let Some(err) = self.authenticate_admin(&req) {
                    return resp.send_error(&err).await;
                }
                match method {
                    Method::Get | Method::Head => {
                        let body = self.credentials.hub().admin_json();
                        resp.send(200, b"application/json", &[], body.as_bytes())
                            .await
                    }
                    _ => method_not_allowed(resp, b"GET, HEAD").await,
                }
            }
            b"/admin/stats" | b"/admin/requests" => {
                if let Some(err) = self.authenticate_admin(&req) {
                    return resp.send_error(&err).await;
                }
                match method {
                    Method::Get | Method::Head => {
                        let body = if req.path() == b"/admin/stats" {
                            self.telemetry.shared.stats_json()
                        } else {
                            self.telemetry.shared.requests_json()
                        };
                        resp.send(200, b"application/json", &[], body.as_bytes())
                            .await
                    }
                    _ => method_not_allowed(resp, b"GET, HEAD").await,
                }
            }
            _ => {
                let err = GatewayError::new(404, "not_found", "unknown path");
                resp.send_error(&err).await
            }
        }
    }
}

impl Gateway {
    /// Admin endpoints: off (404) without an admin key, else the key must be
    /// presented as `Authorization: Bearer` or `x-admin-key`.
    fn authenticate_admin(&self, req: &Request<'_>) -> Option<GatewayError> {
        let Some(key) = &self.config.admin_key else {
            return Some(GatewayError::new(
                404,
                "admin_disabled",
                "admin endpoints are off: set [admin] key in the config",
            ));
        };
        let presented = req
            .header("x-admin-key")
            .or_else(|| req.header("authorization").and_then(bearer_token))
            .map(|v| v.trim_ascii());
        match presented {
            Some(p) if bool::from(p.ct_eq(key.expose().as_bytes())) => None,
            Some(_) => Some(GatewayError::new(
                401,
                "invalid_admin_key",
                "the admin key is not valid",
            )),
            None => Some(GatewayError::new(
                401,
                "missing_admin_key",
                "send the admin key as `Authorization: Bearer <key>` or `x-admin-key`",
            )),
        }
    }

    /// Checks the client key and records which one it was; `Some` is the
    /// error to answer with.
    fn authenticate<S: AsyncWrite + Unpin>(
        &self,
        req: &Request<'_>,
        resp: &mut super::responder::Responder<'_, S>,
    ) -> Option<GatewayError> {
        match self.auth.check(req) {
            AuthOutcome::Open => None,
            AuthOutcome::Key(i) => {
                resp.exchange().client_key = Some(i as u16);
                None
            }
            AuthOutcome::Missing => Some(GatewayError::new(
                401,
                "missing_api_key",
                "no API key given: send `Authorization: Bearer <key>`, `x-api-key`, `x-goog-api-key` or `?key=`",
            )),
            AuthOutcome::Invalid => Some(GatewayError::new(401, "invalid_api_key", "the API key is not valid")),
        }
    }
}

async fn method_not_allowed<S: AsyncWrite + Unpin>(
    resp: &mut super::responder::Responder<'_, S>,
    allow: &[u8],
) -> io::Result<()> {
    let err = GatewayError::new(405, "method_not_allowed", "method not allowed on this path");
    resp.send_json_with(405, &[(b"allow", allow)], |out| err.write_openai_body(out))
        .await
}

/// The Prometheus text exposition content type.
const PROMETHEUS_TEXT: &[u8] = b"text/plain; version=0.0.4; charset=utf-8";

fn route_of(path: &[u8]) -> Route {
    match path {
        b"/v1/chat/completions" => Route::ChatCompletions,
        b"/v1/responses" => Route::Responses,
        b"/v1/messages" => Route::Messages,
        b"/v1/messages/count_tokens" => Route::CountTokens,
        b"/v1/models" | b"/v1beta/models" => Route::Models,
        p if p.starts_with(b"/v1beta/models/") => {
            if p.ends_with(b":streamGenerateContent") {
                Route::GeminiStream
            } else if p.ends_with(b":countTokens") {
                Route::GeminiCountTokens
            } else {
                Route::GeminiGenerate
            }
        }
        b"/health" => Route::Health,
        b"/ready" => Route::Ready,
        b"/metrics" => Route::Metrics,
        p if p.starts_with(b"/admin/") => Route::Admin,
        _ => Route::Other,
    }
}

fn field_error(e: FieldError) -> GatewayError {
    match e {
        FieldError::InvalidJson(why) => GatewayError::new(
            400,
            "invalid_json",
            format!("the request body is not valid JSON: {why}"),
        ),
        FieldError::NotAnObject => GatewayError::new(
            400,
            "invalid_request",
            "the request body must be a JSON object",
        ),
        FieldError::MissingModel => {
            GatewayError::new(400, "missing_model", "the request has no `model`")
        }
        FieldError::WrongType(field) => {
            GatewayError::new(400, "invalid_type", format!("`{field}` has the wrong type"))
        }
    }
}

/// Headers the gateway never forwards upstream: hop-by-hop headers, the
/// framing it writes itself, and the client's own credentials.
const NOT_FORWARDED: &[&[u8]] = &[
    b"host",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"content-length",
    b"expect",
    b"authorization",
    b"x-api-key",
    b"x-goog-api-key",
    b"cookie",
    // The response is forwarded as the upstream encodes it; asking for a
    // compressed one would make later translation impossible.
    b"accept-encoding",
];

fn forward_request_headers(req: &Request<'_>, out: &mut Vec<u8>) {
    let has_connection = req.header("connection").is_some();
    for h in &req.head.headers {
        let name = h.name.get(req.raw_head);
        if NOT_FORWARDED.iter().any(|n| n.eq_ignore_ascii_case(name))
            || (has_connection && listed_in_connection(&req.head.headers, req.raw_head, name))
        {
            continue;
        }
        write::header(out, name, h.value.get(req.raw_head));
    }
}

/// Applies the CORS policy: an allowed origin gets its
/// `access-control-*` headers on every response, and a preflight is
/// answered here (it carries no credentials, so it precedes auth). Returns
/// the preflight answer to send, if it was one.
fn cors_headers<'r, 'a, S: AsyncWrite + Unpin>(
    cors: &crate::config::Cors,
    req: &Request<'_>,
    resp: &'r mut super::responder::Responder<'a, S>,
) -> Option<impl std::future::Future<Output = io::Result<()>> + use<'r, 'a, S>> {
    let origin = req.header("origin")?;
    if !cors.allows(origin) {
        return None;
    }
    let mut lines = Vec::with_capacity(160);
    write::header(&mut lines, b"access-control-allow-origin", origin);
    write::header(&mut lines, b"vary", b"origin");
    if req.head.method == Method::Options && req.header("access-control-request-method").is_some() {
        write::header(
            &mut lines,
            b"access-control-allow-methods",
            b"GET, POST, OPTIONS",
        );
        let headers = req
            .header("access-control-request-headers")
            .filter(|h| h.iter().all(|&b| b.is_ascii_alphanumeric() || b"-, _".contains(&b)))
            .unwrap_or(b"authorization, content-type, x-api-key, x-goog-api-key, anthropic-version, anthropic-beta");
        write::header(&mut lines, b"access-control-allow-headers", headers);
        write::header(
            &mut lines,
            b"access-control-max-age",
            itoa::Buffer::new().format(cors.max_age_secs).as_bytes(),
        );
        resp.always_add(&lines);
        resp.exchange().route = Route::Other;
        return Some(async move {
            // 204: no body, and no Content-Length (RFC 9110 8.6).
            resp.begin(204);
            resp.end_head(super::responder::BodyFraming::None);
            resp.flush().await
        });
    }
    write::header(
        &mut lines,
        b"access-control-expose-headers",
        b"x-request-id, retry-after",
    );
    resp.always_add(&lines);
    None
}

/// The routing table of the config's `[[models]]`.
pub fn model_table(config: &Config) -> ModelTable {
    let specs = config
        .models
        .iter()
        .map(|m| ModelSpec {
            name: m.name.clone(),
            aliases: m.aliases.clone(),
            provider: m.provider,
            upstream_model: m.upstream_model.clone(),
            fallbacks: m.fallbacks.clone(),
            defaults: ModelDefaults {
                temperature: m.defaults.temperature,
                top_p: m.defaults.top_p,
                max_tokens: m.defaults.max_tokens,
                thinking: m.defaults.thinking,
            },
        })
        .collect();
    let names: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
    // The config was validated: names are unique and globs well formed.
    ModelTable::new(specs, &names, config.default_provider)
        .unwrap_or_else(|e| panic!("model table from a validated config: {e}"))
}

/// Parses the rest of a Gemini model path, `{model}:{method}`, and the
/// query (`alt=sse` picks server-sent events for a stream).
fn gemini_call(rest: &[u8], query: Option<&[u8]>) -> Option<ModelCall> {
    let colon = memchr::memrchr(b':', rest)?;
    let op = match &rest[colon + 1..] {
        b"generateContent" => Operation::Generate { stream: false },
        b"streamGenerateContent" => Operation::Generate { stream: true },
        b"countTokens" => Operation::CountTokens,
        _ => return None,
    };
    let model = percent_decode(&rest[..colon]).into_owned();
    let model = String::from_utf8(model).ok().filter(|m| !m.is_empty())?;
    let alt_sse = query.is_some_and(|q| {
        q.split(|&b| b == b'&')
            .any(|pair| pair.eq_ignore_ascii_case(b"alt=sse"))
    });
    Some(ModelCall {
        dialect: Dialect::Gemini,
        op,
        path_model: Some(model),
        gemini_json_array: op == (Operation::Generate { stream: true }) && !alt_sse,
    })
}

/// The model list, rendered once in each protocol's shape.
struct ModelLists {
    openai: Vec<u8>,
    anthropic: Vec<u8>,
    gemini: Vec<u8>,
}

fn render_models(config: &Config) -> ModelLists {
    let mut openai = b"{\"object\":\"list\",\"data\":[".to_vec();
    let mut anthropic = b"{\"data\":[".to_vec();
    let mut gemini = b"{\"models\":[".to_vec();
    for (i, model) in config.models.iter().enumerate() {
        if i > 0 {
            openai.push(b',');
            anthropic.push(b',');
            gemini.push(b',');
        }
        openai.extend_from_slice(b"{\"id\":");
        write_string(&mut openai, &model.name);
        openai.extend_from_slice(b",\"object\":\"model\",\"created\":0,\"owned_by\":");
        write_string(&mut openai, &config.providers[model.provider].name);
        openai.push(b'}');

        anthropic.extend_from_slice(b"{\"type\":\"model\",\"id\":");
        write_string(&mut anthropic, &model.name);
        anthropic.extend_from_slice(b",\"display_name\":");
        write_string(&mut anthropic, &model.name);
        anthropic.extend_from_slice(b",\"created_at\":\"1970-01-01T00:00:00Z\"}");

        gemini.extend_from_slice(b"{\"name\":");
        write_string(&mut gemini, &format!("models/{}", model.name));
        gemini.extend_from_slice(b",\"displayName\":");
        write_string(&mut gemini, &model.name);
        gemini.extend_from_slice(
            b",\"supportedGenerationMethods\":[\"generateContent\",\"streamGenerateContent\",\"countTokens\"]}",
        );
    }
    openai.extend_from_slice(b"]}");
    anthropic.extend_from_slice(b"],\"has_more\":false,\"first_id\":");
    match (config.models.first(), config.models.last()) {
        (Some(first), Some(last)) => {
            write_string(&mut anthropic, &first.name);
            anthropic.extend_from_slice(b",\"last_id\":");
            write_string(&mut anthropic, &last.name);
        }
        _ => anthropic.extend_from_slice(b"null,\"last_id\":null"),
    }
    anthropic.push(b'}');
    gemini.extend_from_slice(b"]}");
    ModelLists {
        openai,
        anthropic,
        gemini,
    }
}
