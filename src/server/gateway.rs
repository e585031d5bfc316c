//! The gateway service: routes client requests, authenticates them, and
//! forwards chat requests to the provider their model maps to.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncWrite;

use super::auth::{bearer_token, AuthOutcome, Authenticator};
use super::conn::{Request, Service};
use super::errors::GatewayError;
use super::forward::forward_response;
use super::shard::ShardState;
use crate::config::{Config, Provider, ProviderProtocol};
use crate::http::{listed_in_connection, write, Method};
use crate::metrics::{InflightEntry, Route};
use crate::protocol::fast_path::{extract_routing_fields, rewrite_model, FieldError};
use crate::protocol::json::write_string;
use crate::upstream::{exchange, Pool, PoolKey, UpstreamError, UpstreamRequest};
use std::borrow::Cow;
use std::time::Instant;
use subtle::ConstantTimeEq;

use super::exchange::{BodyCapture, ErrorClass, Exchange};
use super::telemetry::{ShardLog, SharedTelemetry, Telemetry};
use crate::log::ModelName;

/// How often a shard closes expired idle upstream connections.
const POOL_SWEEP: Duration = Duration::from_secs(5);
/// Idle upstream connections kept per upstream and shard.
pub const MAX_IDLE_PER_UPSTREAM: usize = 1024;

/// A provider as one shard uses it: its pool key and the pre-rendered
/// static part of every request head sent to it.
struct ProviderRoute {
    key: PoolKey,
    protocol: ProviderProtocol,
    /// `POST {prefix}/chat/completions HTTP/1.1`, host and credentials.
    chat_head: Vec<u8>,
}

impl ProviderRoute {
    fn new(provider: &Provider) -> Self {
        let url = &provider.base_url;
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(url.path_prefix.as_bytes());
        head.extend_from_slice(b"/chat/completions HTTP/1.1\r\n");
        let default_port = match url.scheme {
            crate::config::Scheme::Http => 80,
            crate::config::Scheme::Https => 443,
        };
        let host = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let host = if url.port == default_port {
            host
        } else {
            format!("{host}:{}", url.port)
        };
        write::header(&mut head, b"host", host.as_bytes());
        if let Some(key) = &provider.api_key {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(key.expose().as_bytes());
            write::header(&mut head, b"authorization", &value);
        }
        ProviderRoute {
            key: PoolKey::for_url(url),
            protocol: provider.protocol,
            chat_head: head,
        }
    }
}

/// The gateway as one shard runs it.
pub struct Gateway {
    config: Arc<Config>,
    shard: Rc<ShardState>,
    auth: Authenticator,
    providers: Vec<ProviderRoute>,
    pool: Rc<Pool>,
    /// The `GET /v1/models` body, rendered once.
    models_body: Vec<u8>,
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
    ) -> Self {
        let pool = Rc::new(pool);
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
            models_body: render_models(&config),
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

    async fn chat_completions<S: AsyncWrite + Unpin>(
        &self,
        req: &Request<'_>,
        resp: &mut super::responder::Responder<'_, S>,
    ) -> io::Result<()> {
        let mut scratch = self.take_buf();
        let fields = extract_routing_fields(req.body, &mut scratch);
        let fields = match fields {
            Ok(f) => f,
            Err(e) => {
                self.give_buf(scratch);
                return resp.send_error(&field_error(e)).await;
            }
        };
        let body_cap = self.telemetry.body_cap();
        {
            let ex = resp.exchange();
            ex.model_requested = ModelName::new(&fields.model);
            ex.stream = fields.stream;
            if let Some(cap) = body_cap {
                ex.capture = Some(BodyCapture {
                    cap,
                    request: req.body[..req.body.len().min(cap)].to_vec(),
                    response: Vec::new(),
                });
            }
        }
        let (provider_index, upstream_model) = match self.config.route(&fields.model) {
            Some(route) => (route.provider, route.upstream_model.as_deref()),
            None => match self.config.default_provider {
                Some(p) => (p, None),
                None => {
                    self.give_buf(scratch);
                    let err = GatewayError::new(
                        404,
                        "model_not_found",
                        format!("the model `{}` is not served by this gateway", fields.model),
                    );
                    return resp.send_error(&err).await;
                }
            },
        };
        let provider = &self.providers[provider_index];
        {
            let ex = resp.exchange();
            ex.provider = Some(provider_index as u16);
            ex.model_served = ModelName::new(upstream_model.unwrap_or(&fields.model));
        }
        if provider.protocol != ProviderProtocol::OpenAi {
            self.give_buf(scratch);
            return resp.send_error(&GatewayError::new(
                    501,
                    "translation_not_supported",
                    format!(
                        "the model `{}` maps to a provider that needs protocol translation, which this version does not do",
                        fields.model
                    ),
                ))
                .await;
        }
        let ex = resp.exchange();
        let tracked = self.telemetry.shared.tracker.begin(
            InflightEntry {
                id: ex.id.numeric,
                shard: self.shard.id as u16,
                started: ex.started,
                started_unix_us: ex.started_unix_us,
                client_protocol: "openai",
                model: fields.model.clone(),
                provider: None,
                credential: None,
            }
            .with_provider(self.provider_names[provider_index].clone()),
        );

        let mut rewritten = self.take_buf();
        let body: &[u8] = match upstream_model {
            Some(name) => {
                rewrite_model(req.body, fields.model_token.clone(), name, &mut rewritten);
                &rewritten
            }
            None => req.body,
        };
        let mut head = self.take_buf();
        head.extend_from_slice(&provider.chat_head);
        forward_request_headers(req, &mut head);
        write::content_length(&mut head, body.len() as u64);
        head.extend_from_slice(b"\r\n");

        let upstream_req = UpstreamRequest {
            method: Method::Post,
            head: &head,
            body,
        };
        let timeouts = &self.config.timeouts;
        let upstream_started = Instant::now();
        let result = exchange(
            &self.pool,
            &provider.key,
            &upstream_req,
            timeouts.upstream_head,
            &mut scratch,
        )
        .await;
        self.give_buf(head);
        self.give_buf(rewritten);
        self.give_buf(scratch);
        match result {
            Ok(upstream) => {
                let ex = resp.exchange();
                ex.upstream_latency_us = Some(upstream_started.elapsed().as_micros() as u64);
                ex.upstream_status = Some(upstream.head.status);
                if upstream.head.status >= 400 {
                    ex.error = ErrorClass::UpstreamStatus;
                }
                let idle = timeouts.upstream_body_idle;
                forward_response(upstream, &self.pool, idle, resp, tracked.as_ref()).await
            }
            Err(e) => {
                let err = GatewayError::new(e.status(), e.code(), e.to_string());
                resp.exchange().error = upstream_error_class(&e);
                resp.send_error(&err).await
            }
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
        let result = self.route(req, resp).await;
        self.telemetry.recorder.request_finished();
        result
    }

    fn finish(&self, exchange: &Exchange) {
        self.telemetry.record(exchange);
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
            b"/v1/models" => match method {
                Method::Get | Method::Head => {
                    if let Some(err) = self.authenticate(&req, resp) {
                        return resp.send_error(&err).await;
                    }
                    resp.send(200, b"application/json", &[], &self.models_body)
                        .await
                }
                _ => method_not_allowed(resp, b"GET, HEAD").await,
            },
            b"/v1/chat/completions" => match method {
                Method::Post => {
                    if let Some(err) = self.authenticate(&req, resp) {
                        return resp.send_error(&err).await;
                    }
                    self.chat_completions(&req, resp).await
                }
                _ => method_not_allowed(resp, b"POST").await,
            },
            b"/metrics" => match method {
                Method::Get | Method::Head => {
                    let body = self.telemetry.shared.prometheus();
                    resp.send(200, PROMETHEUS_TEXT, &[], body.as_bytes()).await
                }
                _ => method_not_allowed(resp, b"GET, HEAD").await,
            },
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
        b"/v1/models" => Route::Models,
        b"/health" => Route::Health,
        b"/ready" => Route::Ready,
        b"/metrics" => Route::Metrics,
        p if p.starts_with(b"/admin/") => Route::Admin,
        _ => Route::Other,
    }
}

fn upstream_error_class(e: &UpstreamError) -> ErrorClass {
    match e {
        UpstreamError::Dns(_) | UpstreamError::ConnectRefused(_) | UpstreamError::Tls(_) => {
            ErrorClass::UpstreamConnect
        }
        UpstreamError::ConnectTimeout
        | UpstreamError::HeadTimeout
        | UpstreamError::BodyIdleTimeout => ErrorClass::UpstreamTimeout,
        UpstreamError::Closed { .. } | UpstreamError::Io(_) | UpstreamError::BadResponse(_) => {
            ErrorClass::UpstreamProtocol
        }
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

fn render_models(config: &Config) -> Vec<u8> {
    let mut out = b"{\"object\":\"list\",\"data\":[".to_vec();
    for (i, model) in config.models.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_string(&mut out, &model.name);
        out.extend_from_slice(b",\"object\":\"model\",\"created\":0,\"owned_by\":");
        write_string(&mut out, &config.providers[model.provider].name);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}
