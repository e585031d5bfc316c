//! The TOML configuration: raw serde structs, validation, env overrides.
//!
//! Loading is two-phase: the file is deserialised into raw structs that deny
//! unknown keys, then validated into [`Config`], whose fields are ready to
//! use (parsed addresses, durations, resolved secrets, provider indices).
//! Every error names the file, the line and column, and a hint.
//!
//! Secrets (provider API keys, client keys) only ever live in [`Secret`], and
//! no error message, `Debug` output or [`Config::summary`] contains one: error
//! texts name the key, the provider or the environment variable, never the
//! value.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A secret string (API key, token). Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the few places that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderProtocol {
    /// OpenAI Chat Completions or any compatible API.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini API.
    Gemini,
}

impl ProviderProtocol {
    /// The name used in the config file: `openai`, `anthropic` or `gemini`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderProtocol::OpenAi => "openai",
            ProviderProtocol::Anthropic => "anthropic",
            ProviderProtocol::Gemini => "gemini",
        }
    }

    /// Parses the config-file name (exact, lower case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(ProviderProtocol::OpenAi),
            "anthropic" => Some(ProviderProtocol::Anthropic),
            "gemini" => Some(ProviderProtocol::Gemini),
            _ => None,
        }
    }
}

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP/1.1 over TCP.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
}

/// A provider's base URL, split for the upstream client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// The port, 80 or 443 when the URL names none.
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/v1` or `` (empty).
    pub path_prefix: String,
}

impl BaseUrl {
    /// Parses an `http(s)://host[:port][/path]` URL (as `base_url` and
    /// `oauth.token_uri` are written).
    pub fn parse(s: &str) -> Result<BaseUrl, String> {
        parse_base_url(s).map_err(|(m, _)| m)
    }
}

impl fmt::Display for BaseUrl {
    /// Writes the URL back in its canonical form (default port omitted,
    /// IPv6 literal in brackets), for summaries and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, default_port) = match self.scheme {
            Scheme::Http => ("http", 80),
            Scheme::Https => ("https", 443),
        };
        write!(f, "{scheme}://")?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != default_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path_prefix)
    }
}

/// A configured upstream provider.
#[derive(Clone, Debug)]
pub struct Provider {
    /// Unique name, referenced by `[[models]]` and `routing.default_provider`.
    pub name: String,
    /// The API the provider speaks.
    pub protocol: ProviderProtocol,
    /// Where requests go.
    pub base_url: BaseUrl,
    /// The first static API key (`api_key`, else the first of `api_keys`);
    /// `None` with no OAuth files sends no key.
    pub api_key: Option<Secret>,
    /// Every static API key of the pool: `api_key`, `api_keys`,
    /// `api_keys_env`, in that order, duplicates removed.
    pub api_keys: Vec<Secret>,
    /// OAuth credential files in the pool, if any.
    pub oauth: Option<OAuthSource>,
    /// How the pool picks a credential and tracks health.
    pub pool: PoolSettings,
}

/// OAuth credential files of a CLI tool, refreshed by the gateway.
#[derive(Clone, Debug)]
pub struct OAuthSource {
    /// `gemini-cli` or `qwen-code`: the file format.
    pub kind: String,
    /// Files, or directories whose `*.json` files are each a credential.
    pub paths: Vec<PathBuf>,
    /// The token endpoint; `None` uses the tool's own.
    pub token_uri: Option<String>,
    pub client_id: Option<Secret>,
    pub client_secret: Option<Secret>,
    /// Refresh this long before the access token expires.
    pub refresh_margin: Duration,
    /// Files open at once during a directory scan.
    pub max_open_files: usize,
    /// How often the files are checked when inotify is not available.
    pub poll_interval: Duration,
}

/// How a credential is chosen among the healthy ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionPolicy {
    RoundRobin,
    LeastInFlight,
}

/// Credential selection and health settings of one provider's pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub selection: SelectionPolicy,
    /// Requests in flight per credential; 0 = unlimited.
    pub max_in_flight: u32,
    /// Requests waiting for a credential under `max_in_flight`; beyond it, 429.
    pub queue_limit: usize,
    /// Longest wait in that queue before a 429.
    pub queue_timeout: Duration,
    /// Consecutive errors (5xx, network) that disable a credential.
    pub error_threshold: u32,
    /// Cooldown after a 429 without `Retry-After`.
    pub cooldown_default: Duration,
    /// Cap on a `Retry-After` cooldown.
    pub cooldown_max: Duration,
    /// How often a disabled credential is probed.
    pub probe_interval: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            selection: SelectionPolicy::RoundRobin,
            max_in_flight: 0,
            queue_limit: 256,
            queue_timeout: Duration::from_secs(10),
            error_threshold: 3,
            cooldown_default: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(60),
            probe_interval: Duration::from_secs(30),
        }
    }
}

/// One entry of the model table.
#[derive(Clone, Debug)]
pub struct ModelRoute {
    /// The model name clients ask for; may be a glob with `*`.
    pub name: String,
    /// Index into [`Config::providers`].
    pub provider: usize,
    /// The name sent upstream, when it differs from `name` (for a glob,
    /// `*` stands for the text the name's `*` matched).
    pub upstream_model: Option<String>,
    /// Other names clients may use for this model.
    pub aliases: Vec<String>,
    /// Models (or `provider/model`) tried in order when this one's
    /// provider has no usable credential or fails before answering.
    pub fallbacks: Vec<String>,
    /// Parameters applied when the client did not set them.
    pub defaults: ModelDefaults,
}

/// Per-model default parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelDefaults {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
    /// `false` strips thinking/reasoning from requests to this model.
    pub thinking: Option<bool>,
}

/// A scenario rule: requests matching `when` go to `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingRule {
    pub when: RuleWhen,
    /// A model name (or `provider/model`), resolved through the table.
    pub target: String,
}

/// The condition of a [`RoutingRule`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleWhen {
    /// The requested model matches one of these globs (small models that
    /// coding agents use for background work).
    Background { models: Vec<String> },
    /// The request asks for thinking / reasoning.
    Thinking,
    /// The request's estimated prompt tokens reach `min_tokens`.
    LongContext { min_tokens: u64 },
    /// The request declares a web-search tool.
    WebSearch,
}

/// A key clients authenticate with.
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// A name for logs and metrics; never the key itself.
    pub id: String,
    /// The key clients present.
    pub secret: Secret,
}

/// Size and count limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Larger request bodies get 413 without being read.
    pub max_body_bytes: u64,
    /// Request line plus headers; larger gets 431.
    pub max_head_bytes: usize,
    /// More header fields gets 431.
    pub max_headers: usize,
    /// Open client connections per shard; beyond it 503 and close.
    pub max_connections_per_shard: usize,
    /// Requests tracked for `/admin/requests` across all shards; beyond it
    /// requests are still served, just not listed.
    pub max_tracked_requests: usize,
}

/// Timeouts of the client side, the upstream side and shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole request head must arrive within this.
    pub header_read: Duration,
    /// Whole request body must arrive within this.
    pub body_read: Duration,
    /// An idle keep-alive client connection is closed after this.
    pub keep_alive_idle: Duration,
    /// One write to a client (a response, or a piece of a stream) must
    /// complete within this; a client that stops reading is closed.
    pub client_write: Duration,
    /// TCP (and TLS) connect to an upstream.
    pub upstream_connect: Duration,
    /// From request sent to upstream response head received.
    pub upstream_head: Duration,
    /// Longest silence allowed between two reads of an upstream response
    /// body (a stream that pauses longer is cut).
    pub upstream_body_idle: Duration,
    /// A pooled idle upstream connection is closed after this.
    pub upstream_idle: Duration,
    /// Resolved upstream addresses are cached this long.
    pub dns_ttl: Duration,
    /// On SIGINT/SIGTERM, in-flight requests get this long to finish.
    pub drain: Duration,
}

/// The access log (`[log]`). Off unless `path` is set.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// The log file; `None` turns the access log off.
    pub path: Option<PathBuf>,
    /// Fraction of successful requests kept (errors are always kept).
    /// Env override: `LOG_SAMPLE_RATE`.
    pub sample_rate: f64,
    /// Records are written at least this often.
    pub flush_interval: Duration,
    /// A write is issued as soon as this many bytes of records are ready.
    pub batch_bytes: usize,
    /// Records each shard's ring holds before new ones are dropped.
    pub ring_slots: usize,
    /// The file is rotated when it would grow past this size.
    pub max_file_bytes: u64,
    /// Also rotate when the UTC day changes.
    pub rotate_daily: bool,
    /// Rotated files kept.
    pub keep: usize,
    /// Gzip rotated files (off the request shards).
    pub compress: bool,
    /// fsync this often; `None` leaves it to the kernel.
    pub fsync_interval: Option<Duration>,
    /// Also log request and response bodies (redacted, capped).
    pub log_bodies: bool,
    /// Most bytes of each body logged.
    pub body_cap_bytes: usize,
    /// Per-shard ring for bodies in flight to the writer.
    pub body_ring_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            path: None,
            sample_rate: 1.0,
            flush_interval: Duration::from_millis(100),
            batch_bytes: 256 * 1024,
            ring_slots: 16384,
            max_file_bytes: 100 * 1024 * 1024,
            rotate_daily: true,
            keep: 7,
            compress: true,
            fsync_interval: Some(Duration::from_secs(1)),
            log_bodies: false,
            body_cap_bytes: 16 * 1024,
            body_ring_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address every shard listens on.
    pub listen: SocketAddr,
    /// Number of shards; `None` means one per online CPU.
    pub shards: Option<usize>,
    /// Allow a non-loopback listen address when no client key is configured.
    pub allow_unauthenticated_public: bool,
    /// Size and count limits.
    pub limits: Limits,
    /// Client, upstream and shutdown timeouts.
    pub timeouts: Timeouts,
    /// Keys clients authenticate with; empty means no authentication.
    pub client_keys: Vec<ClientKey>,
    /// Extra PEM CA bundle trusted for upstream TLS, beside webpki-roots.
    pub extra_ca_file: Option<PathBuf>,
    /// Upstream providers, in file order.
    pub providers: Vec<Provider>,
    /// The model table, in file order.
    pub models: Vec<ModelRoute>,
    /// Provider (index) for models not in the table; `None` answers 404.
    pub default_provider: Option<usize>,
    /// Scenario rules, first match wins.
    pub rules: Vec<RoutingRule>,
    /// Extra attempts on another credential or provider, before the first
    /// byte reached the client.
    pub retries: u32,
    /// Base of the jittered backoff between attempts.
    pub retry_backoff: Duration,
    /// The access log.
    pub log: LogConfig,
    /// Key for `/admin/*`; `None` turns the admin endpoints off.
    pub admin_key: Option<Secret>,
    /// TLS for client connections: certificate chain and private key PEM
    /// files. `None` serves plain HTTP.
    pub client_tls: Option<ClientTls>,
    /// Cross-origin access for browsers; `None` (the default) sends no
    /// CORS headers and answers no preflight.
    pub cors: Option<Cors>,
}

/// The client listener's TLS certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The CORS policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    /// Origins allowed (exact `scheme://host[:port]`), or `*` for any.
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age_secs: u64,
}

impl Cors {
    /// Whether `origin` may call the gateway from a browser.
    pub fn allows(&self, origin: &[u8]) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.as_bytes() == origin)
    }
}

/// Env var overriding `log.sample_rate`.
pub const ENV_LOG_SAMPLE_RATE: &str = "LOG_SAMPLE_RATE";

/// A configuration error, with where it is and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or a label like `<env>`).
    pub path: String,
    /// 1-based line and column, when the error has a place in the file.
    pub line: Option<usize>,
    /// 1-based column, counted in characters.
    pub column: Option<usize>,
    /// What is wrong; never contains a secret.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Env var overriding `server.listen`.
pub const ENV_LISTEN: &str = "SHARDGATE_LISTEN";
/// Env var overriding `server.shards`.
pub const ENV_SHARDS: &str = "SHARDGATE_SHARDS";

/// Upper bound on `shards`: far above any real core count, low enough that a
/// typo (`shards = 10000`) fails loudly instead of spawning thousands of
/// executors that each lock 512 KiB of memory.
const MAX_SHARDS: u64 = 1024;
/// Client keys shorter than this are guessable.
const MIN_CLIENT_KEY_CHARS: usize = 8;
const MIN_HEAD_BYTES: u64 = 1024;
const MAX_HEAD_BYTES: u64 = 1024 * 1024;

impl Config {
    /// Reads, parses, validates and applies env overrides.
    ///
    /// `api_key_env` / `key_env` and the `SHARDGATE_*` overrides are read from
    /// the process environment. The public-without-keys rule is checked once,
    /// on the effective listen address (after the override), so a file that
    /// listens on `0.0.0.0` can still be run on loopback via `SHARDGATE_LISTEN`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: origin.clone(),
            line: None,
            column: None,
            message: format!("cannot read the config file: {e}"),
            hint: Some(if e.kind() == std::io::ErrorKind::NotFound {
                "create it from examples/shardgate.toml, or pass the right path".to_string()
            } else {
                "check the path and its permissions".to_string()
            }),
        })?;
        let src = Source {
            text: &text,
            origin: &origin,
        };
        let (mut cfg, listen_span) = parse_unchecked(&src, &process_env)?;
        let listen_overridden = cfg.apply_env_values(&process_env)?;
        cfg.check_public_rule().map_err(|(message, hint)| {
            if listen_overridden {
                env_error(ENV_LISTEN, message, Some(hint))
            } else {
                src.error(listen_span, message, Some(hint))
            }
        })?;
        Ok(cfg)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    /// Env overrides are not applied.
    ///
    /// `api_key_env` / `key_env` are resolved from the process environment;
    /// use [`Config::from_toml_with_env`] to supply them some other way.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, origin, process_env)
    }

    /// Like [`Config::from_toml`], but `api_key_env` / `key_env` variables are
    /// looked up with `get_env` instead of the process environment (tests,
    /// embedding). `SHARDGATE_*` overrides are not applied.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        get_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let src = Source { text, origin };
        let (cfg, listen_span) = parse_unchecked(&src, &get_env)?;
        cfg.check_public_rule()
            .map_err(|(message, hint)| src.error(listen_span, message, Some(hint)))?;
        Ok(cfg)
    }

    /// Applies `SHARDGATE_LISTEN` (a socket address) and `SHARDGATE_SHARDS`
    /// (an integer, 0 = one per CPU), looked up with `get`, then re-checks
    /// the public-without-keys rule on the result.
    ///
    /// An unset or empty variable leaves the setting alone (so
    /// `SHARDGATE_LISTEN= shardgate` and compose files with unset
    /// substitutions behave). On error `self` is left unchanged, and the
    /// error's path is `<env NAME>`.
    pub fn apply_env_overrides(
        &mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let before = (self.listen, self.shards);
        let listen_overridden = self.apply_env_values(&get)?;
        if let Err((message, hint)) = self.check_public_rule() {
            (self.listen, self.shards) = before;
            return Err(if listen_overridden {
                env_error(ENV_LISTEN, message, Some(hint))
            } else {
                // Only reachable for a Config built or edited by hand: one
                // from `from_toml` already passed this rule.
                ConfigError {
                    path: "<config>".to_string(),
                    line: None,
                    column: None,
                    message,
                    hint: Some(hint),
                }
            });
        }
        Ok(())
    }

    /// Finds the route for a model name, if the table has one.
    pub fn route(&self, model: &str) -> Option<&ModelRoute> {
        self.models.iter().find(|m| m.name == model)
    }

    /// A multi-line human summary for `shardgate check`: listen address,
    /// shards, auth, limits, timeouts, providers and models.
    ///
    /// It never contains a secret: keys are reported as `key: set` or
    /// `key: none`, client keys by id only.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;

        let mut out = String::new();
        let scope = if is_loopback(&self.listen) {
            "loopback"
        } else {
            "public"
        };
        let _ = writeln!(out, "listen: {} ({scope})", self.listen);
        let _ = match self.shards {
            None => writeln!(out, "shards: one per online CPU"),
            Some(n) => writeln!(out, "shards: {n}"),
        };
        if self.client_keys.is_empty() {
            let _ = writeln!(out, "client auth: none (no [[auth.keys]])");
        } else {
            let ids: Vec<&str> = self.client_keys.iter().map(|k| k.id.as_str()).collect();
            let _ = writeln!(out, "client auth: {} key(s): {}", ids.len(), ids.join(", "));
        }
        let l = &self.limits;
        let _ = writeln!(
            out,
            "limits: body {} B, head {} B, {} headers, {} connections per shard",
            l.max_body_bytes, l.max_head_bytes, l.max_headers, l.max_connections_per_shard
        );
        let t = &self.timeouts;
        let _ = writeln!(
            out,
            "timeouts (ms): header_read {}, body_read {}, keep_alive_idle {}, client_write {}, \
             upstream_connect {}, upstream_head {}, upstream_body_idle {}, upstream_idle {}, \
             dns_ttl {}, drain {}",
            t.header_read.as_millis(),
            t.body_read.as_millis(),
            t.keep_alive_idle.as_millis(),
            t.client_write.as_millis(),
            t.upstream_connect.as_millis(),
            t.upstream_head.as_millis(),
            t.upstream_body_idle.as_millis(),
            t.upstream_idle.as_millis(),
            t.dns_ttl.as_millis(),
            t.drain.as_millis()
        );
        let _ = match &self.extra_ca_file {
            Some(p) => writeln!(out, "tls: webpki-roots + {}", p.display()),
            None => writeln!(out, "tls: webpki-roots"),
        };
        let _ = writeln!(out, "providers ({}):", self.providers.len());
        for p in &self.providers {
            let key = if p.api_key.is_some() { "set" } else { "none" };
            let _ = writeln!(
                out,
                "  {}: protocol {}, base_url {}, key: {key}",
                p.name,
                p.protocol.as_str(),
                p.base_url
            );
        }
        let _ = writeln!(out, "models ({}):", self.models.len());
        for m in &self.models {
            let provider = self.providers.get(m.provider).map_or("?", |p| &p.name);
            let _ = match &m.upstream_model {
                Some(up) => writeln!(out, "  {} -> {provider} (as {up})", m.name),
                None => writeln!(out, "  {} -> {provider}", m.name),
            };
        }
        let _ = match self.default_provider.and_then(|i| self.providers.get(i)) {
            Some(p) => writeln!(out, "default provider: {}", p.name),
            None => writeln!(out, "default provider: none (unlisted models get 404)"),
        };
        let _ = match &self.log.path {
            Some(p) => writeln!(
                out,
                "access log: {} (sample rate {}, rotate at {} B{}, keep {}{})",
                p.display(),
                self.log.sample_rate,
                self.log.max_file_bytes,
                if self.log.rotate_daily {
                    " and daily"
                } else {
                    ""
                },
                self.log.keep,
                if self.log.compress { ", gzip" } else { "" }
            ),
            None => writeln!(out, "access log: off (no [log] path)"),
        };
        let _ = writeln!(
            out,
            "admin endpoints: {}",
            if self.admin_key.is_some() {
                "on (key: set)"
            } else {
                "off (no [admin] key)"
            }
        );
        out
    }

    /// Parses the override variables into `self`; returns whether the listen
    /// address was overridden. All-or-nothing: both values are parsed before
    /// either is stored.
    fn apply_env_values(
        &mut self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<bool, ConfigError> {
        let non_empty = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let listen = match non_empty(ENV_LISTEN) {
            Some(v) => Some(parse_listen(v.trim()).map_err(|(m, h)| env_error(ENV_LISTEN, m, h))?),
            None => None,
        };
        let sample_rate = match non_empty(ENV_LOG_SAMPLE_RATE) {
            Some(v) => Some(parse_sample_rate(v.trim()).ok_or_else(|| {
                env_error(
                    ENV_LOG_SAMPLE_RATE,
                    format!("`{}` is not a number between 0 and 1", v.trim()),
                    Some("e.g. 0.1 keeps one successful request in ten".to_string()),
                )
            })?),
            None => None,
        };
        let shards = match non_empty(ENV_SHARDS) {
            Some(v) => {
                let n: u64 = v.trim().parse().map_err(|_| {
                    env_error(
                        ENV_SHARDS,
                        format!("`{}` is not a non-negative integer", v.trim()),
                        Some("use a shard count, or 0 for one per online CPU".to_string()),
                    )
                })?;
                Some(shards_from(n).map_err(|m| env_error(ENV_SHARDS, m, None))?)
            }
            None => None,
        };
        if let Some(addr) = listen {
            self.listen = addr;
        }
        if let Some(s) = shards {
            self.shards = s;
        }
        if let Some(rate) = sample_rate {
            self.log.sample_rate = rate;
        }
        Ok(listen.is_some())
    }

    /// The rule that keeps a forgotten `0.0.0.0` from publishing the
    /// operator's provider keys to the network: a non-loopback listen address
    /// needs client keys or an explicit opt-out. Returns (message, hint).
    fn check_public_rule(&self) -> Result<(), (String, String)> {
        if is_loopback(&self.listen)
            || !self.client_keys.is_empty()
            || self.allow_unauthenticated_public
        {
            return Ok(());
        }
        Err((
            format!(
                "listen address {} is not loopback and no client keys are configured: \
                 anyone who can reach it could spend your provider keys",
                self.listen
            ),
            "add [[auth.keys]] (id and key or key_env), or set \
             server.allow_unauthenticated_public = true if the network is trusted"
                .to_string(),
        ))
    }
}

// ---------------------------------------------------------------------------
// Phase 1: raw structs, exactly the file's shape. Defaults live in the
// `Default` impls and match examples/shardgate.toml. Values whose validation
// needs a place in the file are `Spanned`; a default value carries the empty
// span 0..0, which `Source::error` reports without a line (defaults are valid,
// so in practice it never reports one at all).
//
// No raw struct derives `Debug`: they hold secrets in plain `String`s.
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    limits: RawLimits,
    timeouts: RawTimeouts,
    tls: RawTls,
    auth: RawAuth,
    providers: Vec<RawProvider>,
    routing: RawRouting,
    models: Vec<RawModel>,
    log: RawLog,
    admin: RawAdmin,
    cors: RawCors,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawCors {
    allowed_origins: Vec<Spanned<String>>,
    max_age_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    path: Option<Spanned<String>>,
    sample_rate: Spanned<f64>,
    flush_interval_ms: Spanned<u64>,
    batch_bytes: Spanned<u64>,
    ring_slots: Spanned<u64>,
    max_file_bytes: Spanned<u64>,
    rotate_daily: bool,
    keep: Spanned<u64>,
    compress: bool,
    fsync_interval_ms: Spanned<u64>,
    log_bodies: bool,
    body_cap_bytes: Spanned<u64>,
    body_ring_bytes: Spanned<u64>,
}

impl Default for RawLog {
    fn default() -> Self {
        let d = LogConfig::default();
        RawLog {
            path: None,
            sample_rate: unspanned(d.sample_rate),
            flush_interval_ms: unspanned(d.flush_interval.as_millis() as u64),
            batch_bytes: unspanned(d.batch_bytes as u64),
            ring_slots: unspanned(d.ring_slots as u64),
            max_file_bytes: unspanned(d.max_file_bytes),
            rotate_daily: d.rotate_daily,
            keep: unspanned(d.keep as u64),
            compress: d.compress,
            fsync_interval_ms: unspanned(1000),
            log_bodies: d.log_bodies,
            body_cap_bytes: unspanned(d.body_cap_bytes as u64),
            body_ring_bytes: unspanned(d.body_ring_bytes as u64),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawAdmin {
    key: Option<Spanned<String>>,
    key_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    listen: Spanned<String>,
    shards: Spanned<u64>,
    allow_unauthenticated_public: bool,
    max_connections_per_shard: Spanned<u64>,
    drain_timeout_ms: Spanned<u64>,
    tls_cert_file: Option<Spanned<String>>,
    tls_key_file: Option<Spanned<String>>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: unspanned("127.0.0.1:3001".to_string()),
            shards: unspanned(0),
            allow_unauthenticated_public: false,
            max_connections_per_shard: unspanned(10_000),
            drain_timeout_ms: unspanned(10_000),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Spanned<u64>,
    max_head_bytes: Spanned<u64>,
    max_headers: Spanned<u64>,
    max_tracked_requests: Spanned<u64>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_body_bytes: unspanned(10 * 1024 * 1024),
            max_head_bytes: unspanned(16 * 1024),
            max_headers: unspanned(100),
            max_tracked_requests: unspanned(65536),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTimeouts {
    header_read_ms: Spanned<u64>,
    body_read_ms: Spanned<u64>,
    keep_alive_idle_ms: Spanned<u64>,
    client_write_ms: Spanned<u64>,
    upstream_connect_ms: Spanned<u64>,
    upstream_head_ms: Spanned<u64>,
    upstream_body_idle_ms: Spanned<u64>,
    upstream_idle_ms: Spanned<u64>,
    dns_ttl_ms: Spanned<u64>,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            header_read_ms: unspanned(10_000),
            body_read_ms: unspanned(30_000),
            keep_alive_idle_ms: unspanned(60_000),
            client_write_ms: unspanned(30_000),
            upstream_connect_ms: unspanned(5_000),
            upstream_head_ms: unspanned(120_000),
            upstream_body_idle_ms: unspanned(300_000),
            upstream_idle_ms: unspanned(30_000),
            dns_ttl_ms: unspanned(60_000),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawTls {
    extra_ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawAuth {
    keys: Vec<RawClientKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientKey {
    id: Spanned<String>,
    #[serde(default)]
    key: Option<Spanned<String>>,
    #[serde(default)]
    key_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: Spanned<String>,
    protocol: Spanned<String>,
    base_url: Spanned<String>,
    #[serde(default)]
    api_key: Option<Spanned<String>>,
    #[serde(default)]
    api_key_env: Option<Spanned<String>>,
    #[serde(default)]
    api_keys: Vec<Spanned<String>>,
    #[serde(default)]
    api_keys_env: Vec<Spanned<String>>,
    #[serde(default)]
    oauth: Option<RawOAuth>,
    #[serde(default)]
    pool: RawPool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    kind: Spanned<String>,
    paths: Vec<Spanned<String>>,
    #[serde(default)]
    token_uri: Option<Spanned<String>>,
    #[serde(default)]
    client_id: Option<Spanned<String>>,
    #[serde(default)]
    client_id_env: Option<Spanned<String>>,
    #[serde(default)]
    client_secret: Option<Spanned<String>>,
    #[serde(default)]
    client_secret_env: Option<Spanned<String>>,
    #[serde(default = "default_refresh_margin")]
    refresh_margin_ms: Spanned<u64>,
    #[serde(default = "default_max_open_files")]
    max_open_files: Spanned<u64>,
    #[serde(default = "default_poll_interval")]
    poll_interval_ms: Spanned<u64>,
}

fn default_refresh_margin() -> Spanned<u64> {
    unspanned(300_000)
}

fn default_max_open_files() -> Spanned<u64> {
    unspanned(64)
}

fn default_poll_interval() -> Spanned<u64> {
    unspanned(2_000)
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPool {
    selection: Spanned<String>,
    max_in_flight: Spanned<u64>,
    queue_limit: Spanned<u64>,
    queue_timeout_ms: Spanned<u64>,
    error_threshold: Spanned<u64>,
    cooldown_default_ms: Spanned<u64>,
    cooldown_max_ms: Spanned<u64>,
    probe_interval_ms: Spanned<u64>,
}

impl Default for RawPool {
    fn default() -> Self {
        let d = PoolSettings::default();
        RawPool {
            selection: unspanned("round_robin".to_string()),
            max_in_flight: unspanned(d.max_in_flight as u64),
            queue_limit: unspanned(d.queue_limit as u64),
            queue_timeout_ms: unspanned(d.queue_timeout.as_millis() as u64),
            error_threshold: unspanned(d.error_threshold as u64),
            cooldown_default_ms: unspanned(d.cooldown_default.as_millis() as u64),
            cooldown_max_ms: unspanned(d.cooldown_max.as_millis() as u64),
            probe_interval_ms: unspanned(d.probe_interval.as_millis() as u64),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRouting {
    default_provider: Option<Spanned<String>>,
    retries: Spanned<u64>,
    retry_backoff_ms: Spanned<u64>,
    rules: Vec<RawRule>,
}

impl Default for RawRouting {
    fn default() -> Self {
        RawRouting {
            default_provider: None,
            retries: unspanned(2),
            retry_backoff_ms: unspanned(20),
            rules: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    when: Spanned<String>,
    #[serde(default)]
    models: Vec<Spanned<String>>,
    #[serde(default)]
    min_tokens: Option<Spanned<u64>>,
    target: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Spanned<String>,
    provider: Spanned<String>,
    #[serde(default)]
    upstream_model: Option<Spanned<String>>,
    #[serde(default)]
    aliases: Vec<Spanned<String>>,
    #[serde(default)]
    fallbacks: Vec<Spanned<String>>,
    #[serde(default)]
    defaults: RawModelDefaults,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawModelDefaults {
    temperature: Option<Spanned<f64>>,
    top_p: Option<Spanned<f64>>,
    max_tokens: Option<Spanned<u64>>,
    thinking: Option<bool>,
}

fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn process_env(name: &str) -> Option<String> {
    // A non-UTF-8 value is treated as unset; the error hint says so.
    std::env::var(name).ok()
}

// ---------------------------------------------------------------------------
// Errors and locations
// ---------------------------------------------------------------------------

/// The text being parsed and its name, for turning spans into errors.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, message: String, hint: Option<String>) -> ConfigError {
        let (line, column) = if span.start == span.end {
            (None, None)
        } else {
            let (l, c) = line_col(self.text, span.start);
            (Some(l), Some(c))
        };
        ConfigError {
            path: self.origin.to_string(),
            line,
            column,
            message,
            hint,
        }
    }

    fn at<T>(&self, value: &Spanned<T>, message: String, hint: Option<String>) -> ConfigError {
        self.error(value.span(), message, hint)
    }

    fn line_of<T>(&self, value: &Spanned<T>) -> usize {
        line_col(self.text, value.span().start).0
    }
}

fn env_error(var: &str, message: String, hint: Option<String>) -> ConfigError {
    ConfigError {
        path: format!("<env {var}>"),
        line: None,
        column: None,
        message,
        hint,
    }
}

/// 1-based line and column (in characters, as an editor counts) of a byte
/// offset. Offsets past the end or inside a UTF-8 sequence are clamped.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Turns a toml/serde error into a ConfigError: location from its span,
/// literal values removed (the offending value may be a secret, and the
/// location already points at it), and a "did you mean" for unknown keys.
fn toml_error(src: &Source<'_>, err: &toml::de::Error) -> ConfigError {
    let raw = err.message().trim();
    let (message, hint) = if let Some(rest) = raw.strip_prefix("unknown field ") {
        unknown_key(rest)
    } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
        (redact_unexpected("invalid type", rest), None)
    } else if let Some(rest) = raw.strip_prefix("invalid value: ") {
        (redact_unexpected("invalid value", rest), None)
    } else {
        // Syntax errors come as "what\nexpected ..."; keep them on one line.
        (
            raw.lines().map(str::trim).collect::<Vec<_>>().join("; "),
            None,
        )
    };
    // Not `src.error`: a parse error at the end of input can have an empty
    // span, which must still get a location.
    let (line, column) = match err.span() {
        Some(span) => {
            let (l, c) = line_col(src.text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError {
        path: src.origin.to_string(),
        line,
        column,
        message,
        hint,
    }
}

/// `rest` is serde's "`name`, expected `a` or `b`" / "expected one of `a`, ...".
fn unknown_key(rest: &str) -> (String, Option<String>) {
    let ticked = backticked(rest);
    let Some((name, valid)) = ticked.split_first() else {
        return (format!("unknown key {rest}"), None);
    };
    let message = format!("unknown key `{name}`");
    if valid.is_empty() {
        return (message, None);
    }
    let hint = match closest(name, valid) {
        Some(best) => format!("did you mean \"{best}\"?"),
        None => format!(
            "valid keys here: {}",
            valid
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    (message, Some(hint))
}

/// The contents of every `...` pair in `s`, in order.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// `rest` is "integer `5`, expected u64": keep the kind, drop the literal.
fn redact_unexpected(what: &str, rest: &str) -> String {
    // The literal may itself contain ", expected", so split at the last one.
    match rest.rfind(", expected ") {
        Some(i) => {
            let unexpected = &rest[..i];
            let expected = &rest[i + ", expected ".len()..];
            let kind = unexpected
                .split(['`', '"'])
                .next()
                .unwrap_or(unexpected)
                .trim();
            format!("{what}: expected {expected}, found {kind}")
        }
        None => what.to_string(),
    }
}

/// The candidate nearest to `name` by edit distance, if near enough to be a
/// plausible typo (at most 2 edits, or a third of the name).
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------
// Phase 2: validation
// ---------------------------------------------------------------------------

/// Parses and validates everything except the public-without-keys rule, which
/// callers check on the effective listen address. Returns the listen span for
/// that check.
fn parse_unchecked(
    src: &Source<'_>,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Range<usize>), ConfigError> {
    let raw: RawConfig = toml::from_str(src.text).map_err(|e| toml_error(src, &e))?;
    let listen_span = raw.server.listen.span();
    let cfg = validate(src, raw, get_env)?;
    Ok((cfg, listen_span))
}

fn validate(
    src: &Source<'_>,
    raw: RawConfig,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let server = &raw.server;
    let listen =
        parse_listen(server.listen.get_ref()).map_err(|(m, h)| src.at(&server.listen, m, h))?;
    let shards =
        shards_from(*server.shards.get_ref()).map_err(|m| src.at(&server.shards, m, None))?;

    let limits = Limits {
        max_body_bytes: positive(src, &raw.limits.max_body_bytes, "limits.max_body_bytes")?,
        max_head_bytes: {
            let v = &raw.limits.max_head_bytes;
            if !(MIN_HEAD_BYTES..=MAX_HEAD_BYTES).contains(v.get_ref()) {
                return Err(src.at(
                    v,
                    format!(
                        "limits.max_head_bytes must be between {MIN_HEAD_BYTES} and {MAX_HEAD_BYTES} (1 MiB)"
                    ),
                    Some("the default, 16384, fits every real client".to_string()),
                ));
            }
            to_usize(src, v, "limits.max_head_bytes")?
        },
        max_headers: {
            positive(src, &raw.limits.max_headers, "limits.max_headers")?;
            to_usize(src, &raw.limits.max_headers, "limits.max_headers")?
        },
        max_connections_per_shard: {
            let v = &server.max_connections_per_shard;
            positive(src, v, "server.max_connections_per_shard")?;
            to_usize(src, v, "server.max_connections_per_shard")?
        },
        max_tracked_requests: {
            let v = &raw.limits.max_tracked_requests;
            positive(src, v, "limits.max_tracked_requests")?;
            to_usize(src, v, "limits.max_tracked_requests")?
        },
    };

    let t = &raw.timeouts;
    let timeouts = Timeouts {
        header_read: millis(src, &t.header_read_ms, "timeouts.header_read_ms")?,
        body_read: millis(src, &t.body_read_ms, "timeouts.body_read_ms")?,
        keep_alive_idle: millis(src, &t.keep_alive_idle_ms, "timeouts.keep_alive_idle_ms")?,
        client_write: millis(src, &t.client_write_ms, "timeouts.client_write_ms")?,
        upstream_connect: millis(src, &t.upstream_connect_ms, "timeouts.upstream_connect_ms")?,
        upstream_head: millis(src, &t.upstream_head_ms, "timeouts.upstream_head_ms")?,
        upstream_body_idle: millis(
            src,
            &t.upstream_body_idle_ms,
            "timeouts.upstream_body_idle_ms",
        )?,
        upstream_idle: millis(src, &t.upstream_idle_ms, "timeouts.upstream_idle_ms")?,
        dns_ttl: millis(src, &t.dns_ttl_ms, "timeouts.dns_ttl_ms")?,
        drain: millis(src, &server.drain_timeout_ms, "server.drain_timeout_ms")?,
    };

    // File existence is left to the TLS setup: validation stays pure so it
    // can run (and be tested) without touching the file system.
    let extra_ca_file = match &raw.tls.extra_ca_file {
        Some(p) if p.get_ref().trim().is_empty() => {
            return Err(src.at(
                p,
                "tls.extra_ca_file is empty".to_string(),
                Some("remove the line to trust only webpki-roots".to_string()),
            ))
        }
        Some(p) => Some(PathBuf::from(p.get_ref())),
        None => None,
    };

    let client_keys = validate_client_keys(src, &raw.auth.keys, get_env)?;
    let providers = validate_providers(src, &raw.providers, get_env)?;

    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    let lookup = |reference: &Spanned<String>, what: &str| -> Result<usize, ConfigError> {
        names
            .iter()
            .position(|n| n == reference.get_ref())
            .ok_or_else(|| {
                let hint = if names.is_empty() {
                    "no [[providers]] are defined; add one first".to_string()
                } else {
                    let list = names
                        .iter()
                        .map(|n| format!("\"{n}\""))
                        .collect::<Vec<_>>()
                        .join(", ");
                    match closest(reference.get_ref(), &names) {
                        Some(best) => format!("did you mean \"{best}\"? providers: {list}"),
                        None => format!("providers: {list}"),
                    }
                };
                src.at(
                    reference,
                    format!("{what} names unknown provider \"{}\"", reference.get_ref()),
                    Some(hint),
                )
            })
    };

    let mut models = Vec::with_capacity(raw.models.len());
    let mut seen_models: HashMap<&str, &Spanned<String>> = HashMap::new();
    for m in &raw.models {
        let name = m.name.get_ref();
        if name.trim().is_empty() {
            return Err(src.at(&m.name, "model name is empty".to_string(), None));
        }
        if name.matches('*').count() > 1 {
            return Err(src.at(
                &m.name,
                format!("model name \"{name}\" has more than one `*`"),
                Some("a pattern is prefix*suffix, e.g. \"claude-*\"".to_string()),
            ));
        }
        if let Some(first) = seen_models.insert(name, &m.name) {
            return Err(src.at(
                &m.name,
                format!("duplicate model name \"{name}\""),
                Some(format!("first defined on line {}", src.line_of(first))),
            ));
        }
        let provider = lookup(&m.provider, &format!("model \"{name}\""))?;
        let upstream_model = match &m.upstream_model {
            Some(u) if u.get_ref().trim().is_empty() => {
                return Err(src.at(
                    u,
                    format!("upstream_model of model \"{name}\" is empty"),
                    Some("remove it to send the model name unchanged".to_string()),
                ))
            }
            Some(u) => Some(u.get_ref().clone()),
            None => None,
        };
        let mut aliases = Vec::with_capacity(m.aliases.len());
        for a in &m.aliases {
            if a.get_ref().trim().is_empty() || a.get_ref().contains('*') {
                return Err(src.at(
                    a,
                    format!("model \"{name}\": an alias must be a plain, non-empty name"),
                    None,
                ));
            }
            if let Some(first) = seen_models.insert(a.get_ref(), a) {
                return Err(src.at(
                    a,
                    format!("duplicate model name or alias \"{}\"", a.get_ref()),
                    Some(format!("first defined on line {}", src.line_of(first))),
                ));
            }
            aliases.push(a.get_ref().clone());
        }
        let d = &m.defaults;
        for (v, key, max) in [
            (&d.temperature, "temperature", 2.0),
            (&d.top_p, "top_p", 1.0),
        ] {
            if let Some(v) = v {
                if !(0.0..=max).contains(v.get_ref()) {
                    return Err(src.at(
                        v,
                        format!("model \"{name}\": defaults.{key} must be between 0 and {max}"),
                        None,
                    ));
                }
            }
        }
        models.push(ModelRoute {
            name: name.clone(),
            provider,
            upstream_model,
            aliases,
            fallbacks: m.fallbacks.iter().map(|f| f.get_ref().clone()).collect(),
            defaults: ModelDefaults {
                temperature: d.temperature.as_ref().map(|v| *v.get_ref()),
                top_p: d.top_p.as_ref().map(|v| *v.get_ref()),
                max_tokens: d.max_tokens.as_ref().map(|v| *v.get_ref()),
                thinking: d.thinking,
            },
        });
    }
    // A fallback or rule target must name something routable: a model or
    // alias, or `provider/model` with a known provider.
    let routable = |target: &Spanned<String>, what: &str| -> Result<(), ConfigError> {
        let t = target.get_ref();
        let known_model = models
            .iter()
            .any(|m| m.name == *t || m.aliases.iter().any(|a| a == t) || glob_matches(&m.name, t));
        let known_provider = t
            .split_once('/')
            .is_some_and(|(p, rest)| !rest.is_empty() && names.contains(&p));
        if known_model || known_provider {
            Ok(())
        } else {
            Err(src.at(
                target,
                format!("{what} \"{t}\" is not a model in the table"),
                Some("name a [[models]] entry or alias, or use provider/model".to_string()),
            ))
        }
    };
    for m in &raw.models {
        for f in &m.fallbacks {
            routable(f, &format!("fallback of model \"{}\"", m.name.get_ref()))?;
        }
    }
    let mut rules = Vec::with_capacity(raw.routing.rules.len());
    for r in &raw.routing.rules {
        routable(&r.target, "routing rule target")?;
        let when = match r.when.get_ref().as_str() {
            "background" => {
                if r.models.is_empty() {
                    return Err(src.at(
                        &r.when,
                        "a background rule needs `models` (globs of small model names)".to_string(),
                        Some("e.g. models = [\"claude-3-5-haiku*\"]".to_string()),
                    ));
                }
                RuleWhen::Background {
                    models: r.models.iter().map(|m| m.get_ref().clone()).collect(),
                }
            }
            "thinking" => RuleWhen::Thinking,
            "long_context" => RuleWhen::LongContext {
                min_tokens: match &r.min_tokens {
                    Some(n) => *n.get_ref(),
                    None => {
                        return Err(src.at(
                            &r.when,
                            "a long_context rule needs `min_tokens`".to_string(),
                            None,
                        ))
                    }
                },
            },
            "web_search" => RuleWhen::WebSearch,
            other => {
                return Err(src.at(
                    &r.when,
                    format!("unknown rule condition \"{other}\""),
                    Some("one of: background, thinking, long_context, web_search".to_string()),
                ))
            }
        };
        rules.push(RoutingRule {
            when,
            target: r.target.get_ref().clone(),
        });
    }
    let retries = u32::try_from(*raw.routing.retries.get_ref())
        .ok()
        .filter(|&n| n <= 10)
        .ok_or_else(|| {
            src.at(
                &raw.routing.retries,
                "routing.retries must be at most 10".to_string(),
                None,
            )
        })?;
    let retry_backoff = millis(
        src,
        &raw.routing.retry_backoff_ms,
        "routing.retry_backoff_ms",
    )?;

    let default_provider = match &raw.routing.default_provider {
        Some(p) => Some(lookup(p, "routing.default_provider")?),
        None => None,
    };
    let log = validate_log(src, &raw.log)?;
    let admin_key = validate_admin_key(src, &raw.admin, &client_keys, get_env)?;
    let client_tls = match (&server.tls_cert_file, &server.tls_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            for f in [c, k] {
                if f.get_ref().trim().is_empty() {
                    return Err(src.at(f, "a TLS file path is empty".to_string(), None));
                }
            }
            Some(ClientTls {
                cert_file: PathBuf::from(c.get_ref()),
                key_file: PathBuf::from(k.get_ref()),
            })
        }
        (Some(f), None) | (None, Some(f)) => {
            return Err(src.at(
                f,
                "server.tls_cert_file and server.tls_key_file go together".to_string(),
                Some("set both (PEM files) to serve HTTPS, or neither for plain HTTP".to_string()),
            ))
        }
    };
    let cors = if raw.cors.allowed_origins.is_empty() {
        None
    } else {
        for o in &raw.cors.allowed_origins {
            let v = o.get_ref();
            let ok = v == "*"
                || ((v.starts_with("http://") || v.starts_with("https://"))
                    && !v.ends_with('/')
                    && !v.contains(char::is_whitespace));
            if !ok {
                return Err(src.at(
                    o,
                    format!("cors.allowed_origins: \"{v}\" is not an origin"),
                    Some("an origin is scheme://host[:port] with no path, e.g. \"https://app.example.com\", or \"*\"".to_string()),
                ));
            }
        }
        Some(Cors {
            allowed_origins: raw
                .cors
                .allowed_origins
                .iter()
                .map(|o| o.get_ref().clone())
                .collect(),
            max_age_secs: raw.cors.max_age_secs.unwrap_or(600),
        })
    };

    Ok(Config {
        listen,
        shards,
        allow_unauthenticated_public: server.allow_unauthenticated_public,
        limits,
        timeouts,
        client_keys,
        extra_ca_file,
        providers,
        models,
        default_provider,
        rules,
        retries,
        retry_backoff,
        log,
        admin_key,
        client_tls,
        cors,
    })
}

/// Whether `pattern` (with `*` matching any run of characters) matches
/// `name`. Plain names match only themselves.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    if !pattern.contains('*') {
        return pattern == name;
    }
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let (last, middle) = parts
        .split_last()
        .expect("a pattern with * has a part after it");
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn validate_client_keys(
    src: &Source<'_>,
    raw: &[RawClientKey],
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ClientKey>, ConfigError> {
    let mut keys: Vec<ClientKey> = Vec::with_capacity(raw.len());
    let mut seen_ids: HashMap<&str, &Spanned<String>> = HashMap::new();
    for k in raw {
        let id = k.id.get_ref();
        if id.trim().is_empty() {
            return Err(src.at(
                &k.id,
                "client key id is empty".to_string(),
                Some("give each key a name for logs and metrics, e.g. id = \"alice\"".to_string()),
            ));
        }
        if let Some(first) = seen_ids.insert(id, &k.id) {
            return Err(src.at(
                &k.id,
                format!("duplicate client key id \"{id}\""),
                Some(format!("first defined on line {}", src.line_of(first))),
            ));
        }
        // `place` is where a problem with the value is reported.
        let (secret, place, origin) = match (&k.key, &k.key_env) {
            (Some(_), Some(env)) => {
                return Err(src.at(
                    env,
                    format!("client key \"{id}\" has both key and key_env"),
                    Some("keep exactly one of them".to_string()),
                ))
            }
            (None, None) => {
                return Err(src.at(
                    &k.id,
                    format!("client key \"{id}\" has neither key nor key_env"),
                    Some("add key = \"...\" or key_env = \"VAR_NAME\"".to_string()),
                ))
            }
            (Some(key), None) => (key.get_ref().clone(), key.span(), "its key".to_string()),
            (None, Some(env)) => {
                let what = format!("key_env of client key \"{id}\"");
                let value = env_secret(src, env, &what, get_env)?;
                (
                    value,
                    env.span(),
                    format!("environment variable {}", env.get_ref()),
                )
            }
        };
        if secret.chars().count() < MIN_CLIENT_KEY_CHARS {
            return Err(src.error(
                place,
                format!(
                    "client key \"{id}\": {origin} is shorter than {MIN_CLIENT_KEY_CHARS} characters"
                ),
                Some("use a long random key, e.g. from `openssl rand -hex 24`".to_string()),
            ));
        }
        // Clients send the key in a header or query: whitespace or control
        // characters could never match, so they are a copy-paste accident.
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(src.error(
                place,
                format!("client key \"{id}\": {origin} contains whitespace or control characters"),
                Some("check for a trailing newline or a stray space".to_string()),
            ));
        }
        if let Some(other) = keys.iter().find(|c| c.secret.expose() == secret) {
            return Err(src.error(
                place,
                format!(
                    "client keys \"{}\" and \"{id}\" have the same key",
                    other.id
                ),
                Some(
                    "give every client its own key, so logs and revocation stay per client"
                        .to_string(),
                ),
            ));
        }
        keys.push(ClientKey {
            id: id.clone(),
            secret: Secret::new(secret),
        });
    }
    Ok(keys)
}

fn validate_providers(
    src: &Source<'_>,
    raw: &[RawProvider],
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Provider>, ConfigError> {
    let mut providers = Vec::with_capacity(raw.len());
    let mut seen: HashMap<&str, &Spanned<String>> = HashMap::new();
    for p in raw {
        let name = p.name.get_ref();
        if name.trim().is_empty() {
            return Err(src.at(&p.name, "provider name is empty".to_string(), None));
        }
        if let Some(first) = seen.insert(name, &p.name) {
            return Err(src.at(
                &p.name,
                format!("duplicate provider name \"{name}\""),
                Some(format!("first defined on line {}", src.line_of(first))),
            ));
        }
        let protocol = ProviderProtocol::from_name(p.protocol.get_ref()).ok_or_else(|| {
            let valid = ["openai", "anthropic", "gemini"];
            let hint = match closest(p.protocol.get_ref(), &valid) {
                Some(best) => format!("did you mean \"{best}\"? one of: openai, anthropic, gemini"),
                None => "one of: openai, anthropic, gemini".to_string(),
            };
            src.at(
                &p.protocol,
                format!(
                    "provider \"{name}\": unknown protocol \"{}\"",
                    p.protocol.get_ref()
                ),
                Some(hint),
            )
        })?;
        let base_url = parse_base_url(p.base_url.get_ref())
            .map_err(|(m, h)| src.at(&p.base_url, format!("provider \"{name}\": {m}"), h))?;
        let api_key = match (&p.api_key, &p.api_key_env) {
            (Some(_), Some(env)) => {
                return Err(src.at(
                    env,
                    format!("provider \"{name}\" has both api_key and api_key_env"),
                    Some("keep one of them (or neither, to send no key)".to_string()),
                ))
            }
            (Some(key), None) => {
                if key.get_ref().trim().is_empty() {
                    return Err(src.at(
                        key,
                        format!("provider \"{name}\": api_key is empty"),
                        Some("remove the line to send no key".to_string()),
                    ));
                }
                Some(Secret::new(key.get_ref().clone()))
            }
            (None, Some(env)) => {
                let what = format!("api_key_env of provider \"{name}\"");
                Some(Secret::new(env_secret(src, env, &what, get_env)?))
            }
            (None, None) => None,
        };
        let mut api_keys: Vec<Secret> = api_key.iter().cloned().collect();
        for key in &p.api_keys {
            if key.get_ref().trim().is_empty() {
                return Err(src.at(
                    key,
                    format!("provider \"{name}\": an api_keys entry is empty"),
                    None,
                ));
            }
            api_keys.push(Secret::new(key.get_ref().clone()));
        }
        for env in &p.api_keys_env {
            let what = format!("api_keys_env of provider \"{name}\"");
            api_keys.push(Secret::new(env_secret(src, env, &what, get_env)?));
        }
        let mut unique: Vec<Secret> = Vec::with_capacity(api_keys.len());
        for k in api_keys {
            if !unique.iter().any(|u| u.expose() == k.expose()) {
                unique.push(k);
            }
        }
        let api_keys = unique;
        let api_key = api_keys.first().cloned();
        let oauth = match &p.oauth {
            Some(o) => Some(validate_oauth(src, name, o, get_env)?),
            None => None,
        };
        let pool = validate_pool(src, name, &p.pool)?;
        providers.push(Provider {
            name: name.clone(),
            protocol,
            base_url,
            api_key,
            api_keys,
            oauth,
            pool,
        });
    }
    Ok(providers)
}

fn validate_oauth(
    src: &Source<'_>,
    provider: &str,
    o: &RawOAuth,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<OAuthSource, ConfigError> {
    let kind = o.kind.get_ref();
    if kind != "gemini-cli" && kind != "qwen-code" {
        return Err(src.at(
            &o.kind,
            format!("provider \"{provider}\": unknown oauth kind \"{kind}\""),
            Some("one of: gemini-cli, qwen-code".to_string()),
        ));
    }
    if o.paths.is_empty() {
        return Err(src.at(
            &o.kind,
            format!("provider \"{provider}\": oauth.paths is empty"),
            Some("name credential files or directories of them".to_string()),
        ));
    }
    let mut paths = Vec::with_capacity(o.paths.len());
    for p in &o.paths {
        if p.get_ref().trim().is_empty() {
            return Err(src.at(
                p,
                format!("provider \"{provider}\": an oauth path is empty"),
                None,
            ));
        }
        paths.push(PathBuf::from(p.get_ref()));
    }
    let token_uri = match &o.token_uri {
        Some(u) => {
            parse_base_url(u.get_ref()).map_err(|(m, h)| {
                src.at(
                    u,
                    format!("provider \"{provider}\": oauth.token_uri: {m}"),
                    h,
                )
            })?;
            Some(u.get_ref().clone())
        }
        None => None,
    };
    let secret = |inline: &Option<Spanned<String>>,
                  env: &Option<Spanned<String>>,
                  what: &str|
     -> Result<Option<Secret>, ConfigError> {
        match (inline, env) {
            (Some(_), Some(e)) => Err(src.at(
                e,
                format!("provider \"{provider}\" has both oauth.{what} and oauth.{what}_env"),
                None,
            )),
            (Some(v), None) => Ok(Some(Secret::new(v.get_ref().clone()))),
            (None, Some(e)) => {
                let label = format!("oauth.{what}_env of provider \"{provider}\"");
                Ok(Some(Secret::new(env_secret(src, e, &label, get_env)?)))
            }
            (None, None) => Ok(None),
        }
    };
    Ok(OAuthSource {
        kind: kind.clone(),
        paths,
        token_uri,
        client_id: secret(&o.client_id, &o.client_id_env, "client_id")?,
        client_secret: secret(&o.client_secret, &o.client_secret_env, "client_secret")?,
        refresh_margin: Duration::from_millis(*o.refresh_margin_ms.get_ref()),
        max_open_files: {
            positive(src, &o.max_open_files, "oauth.max_open_files")?;
            to_usize(src, &o.max_open_files, "oauth.max_open_files")?
        },
        poll_interval: millis(src, &o.poll_interval_ms, "oauth.poll_interval_ms")?,
    })
}

fn validate_pool(
    src: &Source<'_>,
    provider: &str,
    p: &RawPool,
) -> Result<PoolSettings, ConfigError> {
    let selection = match p.selection.get_ref().as_str() {
        "round_robin" => SelectionPolicy::RoundRobin,
        "least_in_flight" => SelectionPolicy::LeastInFlight,
        other => {
            return Err(src.at(
                &p.selection,
                format!("provider \"{provider}\": unknown pool.selection \"{other}\""),
                Some("one of: round_robin, least_in_flight".to_string()),
            ))
        }
    };
    let small = |v: &Spanned<u64>, key: &str| -> Result<u32, ConfigError> {
        u32::try_from(*v.get_ref()).map_err(|_| src.at(v, format!("{key} is too large"), None))
    };
    Ok(PoolSettings {
        selection,
        max_in_flight: small(&p.max_in_flight, "pool.max_in_flight")?,
        queue_limit: to_usize(src, &p.queue_limit, "pool.queue_limit")?,
        queue_timeout: millis(src, &p.queue_timeout_ms, "pool.queue_timeout_ms")?,
        error_threshold: {
            positive(src, &p.error_threshold, "pool.error_threshold")?;
            small(&p.error_threshold, "pool.error_threshold")?
        },
        // 0 is allowed: a 429 is relayed and the credential stays in use.
        cooldown_default: Duration::from_millis(*p.cooldown_default_ms.get_ref()),
        cooldown_max: Duration::from_millis(*p.cooldown_max_ms.get_ref()),
        probe_interval: millis(src, &p.probe_interval_ms, "pool.probe_interval_ms")?,
    })
}

/// Resolves a `*_env` setting. Errors name the variable, never its value.
fn env_secret(
    src: &Source<'_>,
    var: &Spanned<String>,
    what: &str,
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let name = var.get_ref();
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(src.at(
            var,
            format!("{what}: \"{name}\" is not a valid environment variable name"),
            None,
        ));
    }
    match get_env(name) {
        None => Err(src.at(
            var,
            format!("{what}: environment variable {name} is not set"),
            Some(format!(
                "export {name} before starting shardgate (it must be valid UTF-8)"
            )),
        )),
        Some(v) if v.trim().is_empty() => Err(src.at(
            var,
            format!("{what}: environment variable {name} is empty"),
            Some(format!("set {name} to the key")),
        )),
        Some(v) => Ok(v),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, (String, Option<String>)> {
    s.parse().map_err(|_| {
        (
            format!("listen address \"{s}\" is not an IP:port socket address"),
            Some(
                "use an IP literal and a port, e.g. \"127.0.0.1:3001\" or \"[::]:3001\" \
                 (host names are not resolved)"
                    .to_string(),
            ),
        )
    })
}

fn shards_from(n: u64) -> Result<Option<usize>, String> {
    match n {
        0 => Ok(None),
        n if n <= MAX_SHARDS => Ok(Some(n as usize)),
        n => Err(format!(
            "shards = {n} is more than {MAX_SHARDS}; use 0 for one per online CPU"
        )),
    }
}

fn parse_sample_rate(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
}

fn validate_log(src: &Source<'_>, raw: &RawLog) -> Result<LogConfig, ConfigError> {
    let path = match &raw.path {
        Some(p) if p.get_ref().trim().is_empty() => {
            return Err(src.at(
                p,
                "log.path is empty".to_string(),
                Some("remove it to turn the access log off".to_string()),
            ))
        }
        Some(p) => Some(PathBuf::from(p.get_ref())),
        None => None,
    };
    let rate = *raw.sample_rate.get_ref();
    if !(0.0..=1.0).contains(&rate) {
        return Err(src.at(
            &raw.sample_rate,
            "log.sample_rate must be between 0 and 1".to_string(),
            Some("1.0 keeps every request; errors are always kept".to_string()),
        ));
    }
    let ring_slots = to_usize(src, &raw.ring_slots, "log.ring_slots")?;
    if !ring_slots.is_power_of_two() || !(64..=1 << 22).contains(&ring_slots) {
        return Err(src.at(
            &raw.ring_slots,
            "log.ring_slots must be a power of two between 64 and 4194304".to_string(),
            Some("the default is 16384".to_string()),
        ));
    }
    let fsync_ms = *raw.fsync_interval_ms.get_ref();
    Ok(LogConfig {
        path,
        sample_rate: rate,
        flush_interval: millis(src, &raw.flush_interval_ms, "log.flush_interval_ms")?,
        batch_bytes: {
            positive(src, &raw.batch_bytes, "log.batch_bytes")?;
            to_usize(src, &raw.batch_bytes, "log.batch_bytes")?
        },
        ring_slots,
        max_file_bytes: positive(src, &raw.max_file_bytes, "log.max_file_bytes")?,
        rotate_daily: raw.rotate_daily,
        keep: to_usize(src, &raw.keep, "log.keep")?,
        compress: raw.compress,
        fsync_interval: (fsync_ms > 0).then(|| Duration::from_millis(fsync_ms)),
        log_bodies: raw.log_bodies,
        body_cap_bytes: {
            positive(src, &raw.body_cap_bytes, "log.body_cap_bytes")?;
            to_usize(src, &raw.body_cap_bytes, "log.body_cap_bytes")?
        },
        body_ring_bytes: {
            let v = &raw.body_ring_bytes;
            let n = to_usize(src, v, "log.body_ring_bytes")?;
            let cap = to_usize(src, &raw.body_cap_bytes, "log.body_cap_bytes")?;
            // The writer needs room for a few whole entries (two capped
            // bodies each) to make progress.
            if raw.log_bodies && n < 4 * (2 * cap + 16) {
                return Err(src.at(
                    v,
                    "log.body_ring_bytes must hold at least four capped request/response pairs"
                        .to_string(),
                    Some(format!(
                        "with body_cap_bytes = {cap}, use at least {}",
                        4 * (2 * cap + 16)
                    )),
                ));
            }
            n
        },
    })
}

fn validate_admin_key(
    src: &Source<'_>,
    raw: &RawAdmin,
    client_keys: &[ClientKey],
    get_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    let (value, place) = match (&raw.key, &raw.key_env) {
        (Some(_), Some(env)) => {
            return Err(src.at(
                env,
                "admin has both key and key_env".to_string(),
                Some("keep exactly one of them".to_string()),
            ))
        }
        (None, None) => return Ok(None),
        (Some(k), None) => (k.get_ref().clone(), k.span()),
        (None, Some(env)) => (env_secret(src, env, "admin.key_env", get_env)?, env.span()),
    };
    if value.chars().count() < 16 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(src.error(
            place,
            "the admin key must be at least 16 characters without whitespace".to_string(),
            Some("use a long random key, e.g. from `openssl rand -hex 24`".to_string()),
        ));
    }
    if client_keys.iter().any(|k| k.secret.expose() == value) {
        return Err(src.error(
            place,
            "the admin key is also a client key".to_string(),
            Some("give the admin endpoints their own key".to_string()),
        ));
    }
    Ok(Some(Secret::new(value)))
}

fn is_loopback(addr: &SocketAddr) -> bool {
    // `to_canonical` so that ::ffff:127.0.0.1 counts as loopback too.
    addr.ip().to_canonical().is_loopback()
}

fn positive(src: &Source<'_>, v: &Spanned<u64>, key: &str) -> Result<u64, ConfigError> {
    if *v.get_ref() == 0 {
        return Err(src.at(v, format!("{key} must be greater than 0"), None));
    }
    Ok(*v.get_ref())
}

fn to_usize(src: &Source<'_>, v: &Spanned<u64>, key: &str) -> Result<usize, ConfigError> {
    usize::try_from(*v.get_ref())
        .map_err(|_| src.at(v, format!("{key} is too large for this platform"), None))
}

fn millis(src: &Source<'_>, v: &Spanned<u64>, key: &str) -> Result<Duration, ConfigError> {
    positive(src, v, key).map(Duration::from_millis)
}

/// Splits and checks a provider base URL. Returns (message, hint) on error.
fn parse_base_url(s: &str) -> Result<BaseUrl, (String, Option<String>)> {
    let example =
        || Some("e.g. \"https://api.openai.com/v1\" or \"http://127.0.0.1:8080\"".to_string());
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            "base_url contains whitespace or control characters".to_string(),
            example(),
        ));
    }
    let strip = |prefix: &str| {
        s.get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| &s[prefix.len()..])
    };
    let (scheme, rest) = if let Some(rest) = strip("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = strip("http://") {
        (Scheme::Http, rest)
    } else {
        return Err((
            format!("base_url \"{s}\" must start with http:// or https://"),
            example(),
        ));
    };
    // Requests append their own path and query to the prefix, so a query or
    // fragment here would be silently mangled.
    if rest.contains('?') {
        return Err((
            "base_url must not have a query (?...)".to_string(),
            Some("put only scheme, host, port and path prefix in base_url".to_string()),
        ));
    }
    if rest.contains('#') {
        return Err((
            "base_url must not have a fragment (#...)".to_string(),
            Some("put only scheme, host, port and path prefix in base_url".to_string()),
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    // Not echoing the URL here: userinfo is a credential.
    if authority.contains('@') {
        return Err((
            "base_url must not contain user:password@".to_string(),
            Some("put the provider key in api_key or api_key_env".to_string()),
        ));
    }
    if authority.is_empty() {
        return Err((format!("base_url \"{s}\" has no host"), example()));
    }
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let end = after.find(']').ok_or_else(|| {
            (
                format!("base_url \"{s}\": unclosed [ in IPv6 address"),
                None,
            )
        })?;
        let ip: Ipv6Addr = after[..end].parse().map_err(|_| {
            (
                format!(
                    "base_url \"{s}\": \"{}\" is not an IPv6 address",
                    &after[..end]
                ),
                None,
            )
        })?;
        let tail = &after[end + 1..];
        let port = if tail.is_empty() {
            None
        } else if let Some(p) = tail.strip_prefix(':') {
            Some(p)
        } else {
            return Err((
                format!("base_url \"{s}\": unexpected \"{tail}\" after the IPv6 address"),
                None,
            ));
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err((
                format!("base_url \"{s}\": an IPv6 address must be in brackets"),
                Some("e.g. \"http://[::1]:8080\"".to_string()),
            ));
        }
        if host.is_empty() {
            return Err((format!("base_url \"{s}\" has no host"), example()));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err((
                format!("base_url \"{s}\": \"{host}\" is not a valid host name"),
                Some("use an ASCII (punycode) host name or an IP address".to_string()),
            ));
        }
        // DNS names are case-insensitive; one spelling keeps pool keys and
        // SNI consistent.
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err((
                    format!("base_url \"{s}\": \"{p}\" is not a valid port (1-65535)"),
                    None,
                ))
            }
        },
    };
    Ok(BaseUrl {
        scheme,
        host,
        port,
        path_prefix: path.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake environment for `from_toml_with_env` / `apply_env_overrides`.
    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(text, "test.toml", env(&[]))
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        }
    }

    const PROVIDER: &str = r#"
[[providers]]
name = "openai"
protocol = "openai"
base_url = "https://api.openai.com/v1"
"#;

    #[test]
    fn empty_text_gives_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:3001".parse().unwrap());
        assert_eq!(cfg.shards, None);
        assert!(!cfg.allow_unauthenticated_public);
        assert_eq!(
            cfg.limits,
            Limits {
                max_body_bytes: 10 * 1024 * 1024,
                max_head_bytes: 16384,
                max_headers: 100,
                max_connections_per_shard: 10_000,
                max_tracked_requests: 65536,
            }
        );
        assert_eq!(cfg.log, LogConfig::default());
        assert!(cfg.admin_key.is_none());
        assert_eq!(
            cfg.timeouts,
            Timeouts {
                header_read: Duration::from_millis(10_000),
                body_read: Duration::from_millis(30_000),
                keep_alive_idle: Duration::from_millis(60_000),
                client_write: Duration::from_millis(30_000),
                upstream_connect: Duration::from_millis(5_000),
                upstream_head: Duration::from_millis(120_000),
                upstream_body_idle: Duration::from_millis(300_000),
                upstream_idle: Duration::from_millis(30_000),
                dns_ttl: Duration::from_millis(60_000),
                drain: Duration::from_millis(10_000),
            }
        );
        assert!(cfg.client_keys.is_empty());
        assert!(cfg.extra_ca_file.is_none());
        assert!(cfg.providers.is_empty());
        assert!(cfg.models.is_empty());
        assert_eq!(cfg.default_provider, None);
        // Empty tables are the same as absent ones.
        let cfg2 = parse("[server]\n[limits]\n[timeouts]\n[tls]\n[auth]\n[routing]\n").unwrap();
        assert_eq!(cfg2.limits, cfg.limits);
        assert_eq!(cfg2.timeouts, cfg.timeouts);
    }

    #[test]
    fn example_file_parses_and_shows_the_defaults() {
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/shardgate.toml"
        ));
        let cfg = Config::from_toml_with_env(
            text,
            "examples/shardgate.toml",
            env(&[("OPENAI_API_KEY", "sk-test-1234")]),
        )
        .unwrap();
        let defaults = parse("").unwrap();
        // The example claims to show every key with its default.
        assert_eq!(cfg.listen, defaults.listen);
        assert_eq!(cfg.shards, defaults.shards);
        assert_eq!(cfg.limits, defaults.limits);
        assert_eq!(cfg.timeouts, defaults.timeouts);
        assert_eq!(cfg.providers.len(), 1);
        let p = &cfg.providers[0];
        assert_eq!(p.name, "openai");
        assert_eq!(p.protocol, ProviderProtocol::OpenAi);
        assert_eq!(
            p.base_url,
            BaseUrl {
                scheme: Scheme::Https,
                host: "api.openai.com".into(),
                port: 443,
                path_prefix: "/v1".into()
            }
        );
        assert_eq!(p.api_key.as_ref().unwrap().expose(), "sk-test-1234");
        assert_eq!(cfg.default_provider, Some(0));
        let route = cfg.route("gpt-4o-mini").unwrap();
        assert_eq!(route.provider, 0);
        assert_eq!(route.upstream_model, None);
        assert!(cfg.route("nope").is_none());

        // Without the variable, the error names it (and only it).
        let e = Config::from_toml_with_env(text, "examples/shardgate.toml", env(&[])).unwrap_err();
        assert!(e.message.contains("OPENAI_API_KEY"), "{e}");
        assert!(e.line.is_some());
    }

    #[test]
    fn unknown_key_has_line_column_and_hint() {
        let e = parse_err("# comment\n[server]\nlisen = \"127.0.0.1:1\"\n");
        assert_eq!(e.path, "test.toml");
        assert_eq!((e.line, e.column), (Some(3), Some(1)));
        assert_eq!(e.message, "unknown key `lisen`");
        assert_eq!(e.hint.as_deref(), Some("did you mean \"listen\"?"));
        assert_eq!(
            e.to_string(),
            "test.toml:3:1: unknown key `lisen`\n  hint: did you mean \"listen\"?"
        );

        let e = parse_err("[serverr]\n");
        assert_eq!(e.hint.as_deref(), Some("did you mean \"server\"?"));
        assert_eq!((e.line, e.column), (Some(1), Some(2)));

        let e = parse_err(&format!("{PROVIDER}api_key_evn = \"X\"\n"));
        assert_eq!(e.hint.as_deref(), Some("did you mean \"api_key_env\"?"));
        assert_eq!(e.line, Some(6));

        // Nothing close: list what is valid.
        let e = parse_err("[limits]\nzzzzzzzzzz = 1\n");
        let hint = e.hint.unwrap();
        assert!(hint.starts_with("valid keys here:"), "{hint}");
        assert!(hint.contains("`max_headers`"), "{hint}");
    }

    #[test]
    fn wrong_type_and_syntax_errors_have_locations() {
        let e = parse_err("[server]\nshards = \"four\"\n");
        assert_eq!((e.line, e.column), (Some(2), Some(10)));
        assert_eq!(e.message, "invalid type: expected u64, found string");
        assert!(!e.message.contains("four"));

        let e = parse_err("[server]\nshards = -1\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.starts_with("invalid value"), "{}", e.message);

        let e = parse_err("[server]\nallow_unauthenticated_public = \"yes\"\n");
        assert_eq!(e.line, Some(2));

        let e = parse_err("[server\n");
        assert_eq!(e.line, Some(1));
        assert!(!e.message.contains('\n'));

        let e = parse_err("[[providers]]\nname = \"a\"\n");
        assert!(
            e.message.contains("missing field `protocol`"),
            "{}",
            e.message
        );
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn bad_listen() {
        for bad in ["localhost:3001", "127.0.0.1", "127.0.0.1:99999", ""] {
            let e = parse_err(&format!("[server]\nlisten = \"{bad}\"\n"));
            assert_eq!((e.line, e.column), (Some(2), Some(10)), "{bad}");
            assert!(e.message.contains("listen"), "{e}");
            assert!(e.hint.is_some());
        }
        let cfg = parse("[server]\nlisten = \"[::1]:8080\"\n").unwrap();
        assert_eq!(cfg.listen, "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn shards_limits_and_timeouts_ranges() {
        assert_eq!(parse("[server]\nshards = 4\n").unwrap().shards, Some(4));
        assert_eq!(
            parse("[server]\nshards = 1024\n").unwrap().shards,
            Some(1024)
        );
        assert_eq!(parse_err("[server]\nshards = 1025\n").line, Some(2));

        for (table, key) in [
            ("limits", "max_body_bytes"),
            ("limits", "max_headers"),
            ("server", "max_connections_per_shard"),
            ("server", "drain_timeout_ms"),
            ("timeouts", "header_read_ms"),
            ("timeouts", "dns_ttl_ms"),
        ] {
            let e = parse_err(&format!("[{table}]\n{key} = 0\n"));
            assert_eq!(e.line, Some(2));
            assert!(e.message.contains(key), "{e}");
        }
        assert!(parse("[limits]\nmax_head_bytes = 1023\n").is_err());
        assert!(parse("[limits]\nmax_head_bytes = 1048577\n").is_err());
        assert_eq!(
            parse("[limits]\nmax_head_bytes = 1048576\n")
                .unwrap()
                .limits
                .max_head_bytes,
            1 << 20
        );
        let cfg = parse("[timeouts]\nupstream_head_ms = 250\n").unwrap();
        assert_eq!(cfg.timeouts.upstream_head, Duration::from_millis(250));
    }

    #[test]
    fn base_url_good_variants() {
        let ok = |s: &str| parse_base_url(s).unwrap();
        let u = ok("http://127.0.0.1:8080");
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path_prefix.as_str()),
            (Scheme::Http, "127.0.0.1", 8080, "")
        );
        let u = ok("https://Example.COM/");
        assert_eq!(
            (u.host.as_str(), u.port, u.path_prefix.as_str()),
            ("example.com", 443, "")
        );
        assert_eq!(ok("http://h").port, 80);
        assert_eq!(ok("https://h/v1beta/openai/").path_prefix, "/v1beta/openai");
        let u = ok("http://[::1]:9000/v1");
        assert_eq!(
            (u.host.as_str(), u.port, u.path_prefix.as_str()),
            ("::1", 9000, "/v1")
        );
        assert_eq!(u.to_string(), "http://[::1]:9000/v1");
        assert_eq!(ok("https://[2001:db8::1]").host, "2001:db8::1");
        assert_eq!(
            ok("HTTPS://api.x.com:443/v1").to_string(),
            "https://api.x.com/v1"
        );
    }

    #[test]
    fn base_url_bad_variants() {
        for bad in [
            "api.openai.com/v1",
            "ftp://host",
            "https://",
            "https:///v1",
            "http://:8080",
            "https://host?x=1",
            "https://host/v1?x=1",
            "https://host/v1#frag",
            "https://user:pass@host",
            "https://host:",
            "https://host:0",
            "https://host:65536",
            "https://host:+80",
            "https://host:abc",
            "http://::1:8080",
            "http://[::1",
            "http://[zz::1]",
            "http://[::1]x",
            "http://ho st",
            "http://hö.st",
        ] {
            assert!(parse_base_url(bad).is_err(), "accepted {bad}");
            let text = format!(
                "[[providers]]\nname = \"p\"\nprotocol = \"openai\"\nbase_url = \"{bad}\"\n"
            );
            let e = parse_err(&text);
            assert_eq!((e.line, e.column), (Some(4), Some(12)), "{bad}: {e}");
            assert!(e.message.starts_with("provider \"p\": "), "{e}");
        }
        // The userinfo error must not echo the password.
        let (m, _) = parse_base_url("https://user:hunter2@host").unwrap_err();
        assert!(!m.contains("hunter2"));
    }

    #[test]
    fn bad_protocol_has_hint() {
        let e = parse_err(
            "[[providers]]\nname = \"p\"\nprotocol = \"antropic\"\nbase_url = \"http://h\"\n",
        );
        assert_eq!(e.line, Some(3));
        assert!(e.hint.unwrap().contains("did you mean \"anthropic\"?"));
    }

    #[test]
    fn duplicate_names() {
        let e = parse_err(&format!("{PROVIDER}{PROVIDER}"));
        assert_eq!(e.message, "duplicate provider name \"openai\"");
        assert_eq!(e.line, Some(8));
        assert_eq!(e.hint.as_deref(), Some("first defined on line 3"));

        let e = parse_err(&format!(
            "{PROVIDER}[[models]]\nname = \"m\"\nprovider = \"openai\"\n[[models]]\nname = \"m\"\nprovider = \"openai\"\n"
        ));
        assert_eq!(e.message, "duplicate model name \"m\"");
        assert_eq!(e.line, Some(10));

        let e = parse_err(
            "[[auth.keys]]\nid = \"a\"\nkey = \"aaaaaaaaaa\"\n[[auth.keys]]\nid = \"a\"\nkey = \"bbbbbbbbbb\"\n",
        );
        assert_eq!(e.message, "duplicate client key id \"a\"");
        assert_eq!(e.line, Some(5));

        let e = parse_err(
            "[[providers]]\nname = \"\"\nprotocol = \"openai\"\nbase_url = \"http://h\"\n",
        );
        assert_eq!(e.message, "provider name is empty");
        let e = parse_err("[[auth.keys]]\nid = \"\"\nkey = \"aaaaaaaaaa\"\n");
        assert_eq!(e.message, "client key id is empty");
    }

    #[test]
    fn unknown_provider_reference() {
        let e = parse_err(&format!(
            "{PROVIDER}[[models]]\nname = \"m\"\nprovider = \"openia\"\n"
        ));
        assert_eq!((e.line, e.column), (Some(8), Some(12)));
        assert_eq!(e.message, "model \"m\" names unknown provider \"openia\"");
        assert_eq!(
            e.hint.as_deref(),
            Some("did you mean \"openai\"? providers: \"openai\"")
        );

        let e = parse_err(&format!(
            "{PROVIDER}[routing]\ndefault_provider = \"gemini\"\n"
        ));
        assert_eq!(e.line, Some(7));
        assert_eq!(e.hint.as_deref(), Some("providers: \"openai\""));

        let e = parse_err("[routing]\ndefault_provider = \"x\"\n");
        assert!(e.hint.unwrap().contains("no [[providers]]"));

        let cfg = parse(&format!(
            "{PROVIDER}[[providers]]\nname = \"local\"\nprotocol = \"anthropic\"\nbase_url = \"http://127.0.0.1:9\"\n\
             [routing]\ndefault_provider = \"local\"\n\
             [[models]]\nname = \"m\"\nprovider = \"local\"\nupstream_model = \"m-2024\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.default_provider, Some(1));
        assert_eq!(cfg.route("m").unwrap().provider, 1);
        assert_eq!(
            cfg.route("m").unwrap().upstream_model.as_deref(),
            Some("m-2024")
        );
    }

    #[test]
    fn provider_key_rules() {
        let e = parse_err(&format!(
            "{PROVIDER}api_key = \"sk-a\"\napi_key_env = \"K\"\n"
        ));
        assert!(e.message.contains("both api_key and api_key_env"), "{e}");
        assert_eq!(e.line, Some(7));

        let e = parse_err(&format!("{PROVIDER}api_key_env = \"MISSING_VAR\"\n"));
        assert_eq!(
            e.message,
            "api_key_env of provider \"openai\": environment variable MISSING_VAR is not set"
        );
        assert_eq!(e.line, Some(6));

        let text = format!("{PROVIDER}api_key_env = \"EMPTY_VAR\"\n");
        let e = Config::from_toml_with_env(&text, "t", env(&[("EMPTY_VAR", "")])).unwrap_err();
        assert!(e.message.contains("EMPTY_VAR is empty"), "{e}");

        let e = parse_err(&format!("{PROVIDER}api_key = \"\"\n"));
        assert!(e.message.contains("api_key is empty"), "{e}");

        let cfg = parse(PROVIDER).unwrap();
        assert!(cfg.providers[0].api_key.is_none());
        let cfg = parse(&format!("{PROVIDER}api_key = \"sk-inline\"\n")).unwrap();
        assert_eq!(
            cfg.providers[0].api_key.as_ref().unwrap().expose(),
            "sk-inline"
        );
    }

    #[test]
    fn client_key_rules() {
        let e = parse_err("[[auth.keys]]\nid = \"a\"\nkey = \"aaaaaaaaaa\"\nkey_env = \"A\"\n");
        assert!(e.message.contains("both key and key_env"), "{e}");
        assert_eq!(e.line, Some(4));

        let e = parse_err("[[auth.keys]]\nid = \"a\"\n");
        assert!(e.message.contains("neither key nor key_env"), "{e}");
        assert_eq!(e.line, Some(2));

        let e = parse_err("[[auth.keys]]\nid = \"a\"\nkey = \"short\"\n");
        assert!(e.message.contains("shorter than 8"), "{e}");
        assert_eq!(e.line, Some(3));

        let e = parse_err("[[auth.keys]]\nid = \"a\"\nkey = \"has space in it\"\n");
        assert!(e.message.contains("whitespace"), "{e}");

        let e = parse_err("[[auth.keys]]\nid = \"a\"\nkey_env = \"ALICE_KEY\"\n");
        assert!(e.message.contains("ALICE_KEY is not set"), "{e}");

        let text = "[[auth.keys]]\nid = \"a\"\nkey_env = \"ALICE_KEY\"\n\
                    [[auth.keys]]\nid = \"b\"\nkey = \"bbbbbbbbbbbb\"\n";
        let e = Config::from_toml_with_env(text, "t", env(&[("ALICE_KEY", "short")])).unwrap_err();
        assert!(
            e.message
                .contains("environment variable ALICE_KEY is shorter"),
            "{e}"
        );

        let cfg =
            Config::from_toml_with_env(text, "t", env(&[("ALICE_KEY", "aaaaaaaaaaaa")])).unwrap();
        assert_eq!(cfg.client_keys.len(), 2);
        assert_eq!(cfg.client_keys[0].id, "a");
        assert_eq!(cfg.client_keys[0].secret.expose(), "aaaaaaaaaaaa");

        let e = Config::from_toml_with_env(text, "t", env(&[("ALICE_KEY", "bbbbbbbbbbbb")]))
            .unwrap_err();
        assert_eq!(e.message, "client keys \"a\" and \"b\" have the same key");
        assert_eq!(e.line, Some(6));
    }

    #[test]
    fn public_listen_needs_keys_or_flag() {
        let e = parse_err("[server]\nlisten = \"0.0.0.0:3001\"\n");
        assert_eq!((e.line, e.column), (Some(2), Some(10)));
        assert!(e.message.contains("not loopback"), "{e}");
        let hint = e.hint.unwrap();
        assert!(hint.contains("[[auth.keys]]") && hint.contains("allow_unauthenticated_public"));

        assert!(parse("[server]\nlisten = \"[::]:3001\"\n").is_err());
        assert!(parse("[server]\nlisten = \"10.1.2.3:3001\"\n").is_err());
        assert!(parse("[server]\nlisten = \"[::1]:3001\"\n").is_ok());
        assert!(parse("[server]\nlisten = \"[::ffff:127.0.0.1]:3001\"\n").is_ok());
        assert!(parse("[server]\nlisten = \"127.9.9.9:3001\"\n").is_ok());
        assert!(parse(
            "[server]\nlisten = \"0.0.0.0:3001\"\nallow_unauthenticated_public = true\n"
        )
        .is_ok());
        assert!(parse(
            "[server]\nlisten = \"0.0.0.0:3001\"\n[[auth.keys]]\nid = \"a\"\nkey = \"aaaaaaaaaa\"\n"
        )
        .is_ok());
    }

    #[test]
    fn env_overrides() {
        let mut cfg = parse("").unwrap();
        cfg.apply_env_overrides(env(&[])).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:3001".parse().unwrap());

        cfg.apply_env_overrides(env(&[(ENV_LISTEN, " 127.0.0.1:9000 "), (ENV_SHARDS, "3")]))
            .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cfg.shards, Some(3));

        cfg.apply_env_overrides(env(&[(ENV_SHARDS, "0"), (ENV_LISTEN, "")]))
            .unwrap();
        assert_eq!(cfg.shards, None);
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());

        let e = cfg
            .apply_env_overrides(env(&[(ENV_LISTEN, "nonsense")]))
            .unwrap_err();
        assert_eq!(e.path, "<env SHARDGATE_LISTEN>");
        assert_eq!((e.line, e.column), (None, None));
        assert!(
            e.to_string()
                .starts_with("<env SHARDGATE_LISTEN>: listen address"),
            "{e}"
        );

        for bad in ["-1", "four", "1025", "2.5"] {
            let e = cfg
                .apply_env_overrides(env(&[(ENV_SHARDS, bad), (ENV_LISTEN, "127.0.0.1:1")]))
                .unwrap_err();
            assert_eq!(e.path, "<env SHARDGATE_SHARDS>", "{bad}");
            // All-or-nothing: the valid listen was not applied either.
            assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
        }

        // The public rule is re-checked on the overridden address.
        let e = cfg
            .apply_env_overrides(env(&[(ENV_LISTEN, "0.0.0.0:80"), (ENV_SHARDS, "2")]))
            .unwrap_err();
        assert_eq!(e.path, "<env SHARDGATE_LISTEN>");
        assert!(e.hint.unwrap().contains("[[auth.keys]]"));
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cfg.shards, None);

        let mut open = parse("[server]\nallow_unauthenticated_public = true\n").unwrap();
        open.apply_env_overrides(env(&[(ENV_LISTEN, "0.0.0.0:80")]))
            .unwrap();
        assert_eq!(open.listen, "0.0.0.0:80".parse().unwrap());
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shardgate.toml");
        std::fs::write(
            &path,
            format!("{PROVIDER}[[models]]\nname = \"m\"\nprovider = \"openai\"\n"),
        )
        .unwrap();
        // Only assert what SHARDGATE_* in the test runner's env cannot change.
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.providers[0].name, "openai");
        assert_eq!(cfg.route("m").unwrap().provider, 0);

        std::fs::write(&path, "[server]\nlisen = 1\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert_eq!(e.path, path.display().to_string());
        assert_eq!(e.line, Some(2));

        let missing = dir.path().join("nope.toml");
        let e = Config::load(&missing).unwrap_err();
        assert_eq!(e.line, None);
        assert!(e.message.starts_with("cannot read the config file"), "{e}");
        assert!(e.hint.is_some());
    }

    #[test]
    fn secrets_never_leak() {
        const PROVIDER_KEY: &str = "sk-provider-SECRET-1111";
        const ENV_KEY: &str = "sk-env-SECRET-2222";
        const CLIENT_KEY: &str = "client-SECRET-3333";
        const CLIENT_ENV_KEY: &str = "client-env-SECRET-4444";
        let vars = [("P2_KEY", ENV_KEY), ("BOB_KEY", CLIENT_ENV_KEY)];
        let text = format!(
            "[server]\nlisten = \"0.0.0.0:3001\"\n\
             [[auth.keys]]\nid = \"alice\"\nkey = \"{CLIENT_KEY}\"\n\
             [[auth.keys]]\nid = \"bob\"\nkey_env = \"BOB_KEY\"\n\
             [[providers]]\nname = \"p1\"\nprotocol = \"openai\"\nbase_url = \"https://a.example/v1\"\napi_key = \"{PROVIDER_KEY}\"\n\
             [[providers]]\nname = \"p2\"\nprotocol = \"gemini\"\nbase_url = \"https://b.example\"\napi_key_env = \"P2_KEY\"\n\
             [[providers]]\nname = \"p3\"\nprotocol = \"anthropic\"\nbase_url = \"http://[::1]:8080/\"\n\
             [[models]]\nname = \"m\"\nprovider = \"p2\"\n"
        );
        let secrets = [PROVIDER_KEY, ENV_KEY, CLIENT_KEY, CLIENT_ENV_KEY];
        let assert_clean = |what: &str, s: &str| {
            for secret in secrets {
                assert!(!s.contains(secret), "{what} leaks {secret}:\n{s}");
            }
        };

        let cfg = Config::from_toml_with_env(&text, "t", env(&vars)).unwrap();
        assert_eq!(
            cfg.providers[0].api_key.as_ref().unwrap().expose(),
            PROVIDER_KEY
        );
        assert_eq!(cfg.providers[1].api_key.as_ref().unwrap().expose(), ENV_KEY);
        assert_eq!(cfg.client_keys[1].secret.expose(), CLIENT_ENV_KEY);
        assert_clean("Debug", &format!("{cfg:?}"));
        assert_clean("Debug (pretty)", &format!("{cfg:#?}"));
        let summary = cfg.summary();
        assert_clean("summary", &summary);
        assert!(summary.contains("p1: protocol openai, base_url https://a.example/v1, key: set"));
        assert!(summary.contains("p3: protocol anthropic, base_url http://[::1]:8080, key: none"));
        assert!(summary.contains("alice, bob"));
        assert!(summary.contains("m -> p2"));
        assert!(summary.contains("listen: 0.0.0.0:3001 (public)"));

        // Errors that involve secrets in various ways.
        let mut errors = Vec::new();
        let dup = text.replace("key_env = \"BOB_KEY\"", &format!("key = \"{CLIENT_KEY}\""));
        errors.push(Config::from_toml_with_env(&dup, "t", env(&vars)).unwrap_err());
        let dup_env = [("P2_KEY", ENV_KEY), ("BOB_KEY", CLIENT_KEY)];
        errors.push(Config::from_toml_with_env(&text, "t", env(&dup_env)).unwrap_err());
        let short = [("P2_KEY", ENV_KEY), ("BOB_KEY", "x y")];
        errors.push(Config::from_toml_with_env(&text, "t", env(&short)).unwrap_err());
        let both = text.replace(
            "api_key_env = \"P2_KEY\"",
            &format!("api_key_env = \"P2_KEY\"\napi_key = \"{PROVIDER_KEY}\""),
        );
        errors.push(Config::from_toml_with_env(&both, "t", env(&vars)).unwrap_err());
        let spaced = text.replace(CLIENT_KEY, &format!("{CLIENT_KEY} "));
        errors.push(Config::from_toml_with_env(&spaced, "t", env(&vars)).unwrap_err());
        let userinfo = text.replace(
            "https://a.example",
            &format!("https://u:{CLIENT_KEY}@a.example"),
        );
        errors.push(Config::from_toml_with_env(&userinfo, "t", env(&vars)).unwrap_err());
        // A numeric key is a type error; serde would quote the number.
        let numeric = text.replace(&format!("\"{CLIENT_KEY}\""), "33331111");
        let e = Config::from_toml_with_env(&numeric, "t", env(&vars)).unwrap_err();
        assert!(!e.to_string().contains("33331111"), "{e}");
        errors.push(e);
        let bad_override = cfg
            .clone()
            .apply_env_overrides(env(&[(ENV_SHARDS, "x")]))
            .unwrap_err();
        errors.push(bad_override);
        for e in &errors {
            assert_clean("error", &e.to_string());
            assert_clean("error Debug", &format!("{e:?}"));
        }
    }

    #[test]
    fn display_formats() {
        let mut e = ConfigError {
            path: "f.toml".into(),
            line: Some(3),
            column: Some(7),
            message: "bad".into(),
            hint: None,
        };
        assert_eq!(e.to_string(), "f.toml:3:7: bad");
        e.hint = Some("fix it".into());
        assert_eq!(e.to_string(), "f.toml:3:7: bad\n  hint: fix it");
        e.line = None;
        e.column = None;
        assert_eq!(e.to_string(), "f.toml: bad\n  hint: fix it");
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "ab\néé = 1\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        // 'é' is 2 bytes: byte 7 is the third character on line 2.
        assert_eq!(line_col(text, 7), (2, 3));
        assert_eq!(line_col(text, 4), (2, 1)); // inside 'é': clamped back
        assert_eq!(line_col(text, 999), (3, 1));
        let e = parse_err("[server]\n# é\nlisten = 'é'\nfoo = 1\n");
        assert_eq!((e.line, e.column), (Some(4), Some(1)));
    }

    #[test]
    fn edit_distance_and_closest() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(closest("lisen", &["listen", "shards"]), Some("listen"));
        assert_eq!(closest("xyz", &["listen", "shards"]), None);
    }

    #[test]
    fn log_section_is_validated() {
        let cfg = parse(
            "[log]\npath = \"/tmp/a.log\"\nsample_rate = 0.25\nring_slots = 1024\nfsync_interval_ms = 0\n",
        )
        .unwrap();
        assert_eq!(cfg.log.path.as_deref(), Some(Path::new("/tmp/a.log")));
        assert_eq!(cfg.log.sample_rate, 0.25);
        assert_eq!(cfg.log.ring_slots, 1024);
        assert_eq!(cfg.log.fsync_interval, None);

        let e = parse("[log]\nsample_rate = 1.5\n").unwrap_err();
        assert_eq!(
            (e.line, e.message.contains("between 0 and 1")),
            (Some(2), true)
        );
        let e = parse("[log]\nring_slots = 1000\n").unwrap_err();
        assert!(e.message.contains("power of two"), "{e}");
        let e = parse("[log]\npath = \"\"\n").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn log_sample_rate_env_override() {
        let mut cfg = parse("").unwrap();
        cfg.apply_env_overrides(|k| (k == ENV_LOG_SAMPLE_RATE).then(|| "0.5".to_string()))
            .unwrap();
        assert_eq!(cfg.log.sample_rate, 0.5);
        let e = cfg
            .apply_env_overrides(|k| (k == ENV_LOG_SAMPLE_RATE).then(|| "2".to_string()))
            .unwrap_err();
        assert_eq!(e.path, "<env LOG_SAMPLE_RATE>");
    }

    #[test]
    fn admin_key_rules() {
        let cfg = parse("[admin]\nkey = \"admin-key-0123456789\"\n").unwrap();
        assert_eq!(cfg.admin_key.unwrap().expose(), "admin-key-0123456789");
        let e = parse("[admin]\nkey = \"short\"\n").unwrap_err();
        assert!(e.message.contains("at least 16"), "{e}");
        assert!(
            !e.to_string().contains("short\""),
            "the key must not be echoed: {e}"
        );
        let e = parse(
            "[[auth.keys]]\nid = \"a\"\nkey = \"same-key-0123456789\"\n[admin]\nkey = \"same-key-0123456789\"\n",
        )
        .unwrap_err();
        assert!(e.message.contains("also a client key"), "{e}");
    }

    #[test]
    fn credential_pools_collect_every_key_once() {
        let text = format!(
            "{PROVIDER}api_key = \"k-a\"\napi_keys = [\"k-b\", \"k-a\"]\napi_keys_env = [\"POOL_KEY\"]\n"
        );
        let cfg = Config::from_toml_with_env(&text, "t.toml", env(&[("POOL_KEY", "k-c")])).unwrap();
        let keys: Vec<&str> = cfg.providers[0]
            .api_keys
            .iter()
            .map(|k| k.expose())
            .collect();
        assert_eq!(keys, ["k-a", "k-b", "k-c"]);
        assert_eq!(cfg.providers[0].api_key.as_ref().unwrap().expose(), "k-a");
        assert_eq!(cfg.providers[0].pool, PoolSettings::default());
        let e = parse_err(&format!("{PROVIDER}api_keys = [\"\"]\n"));
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn oauth_sources_and_pool_settings_are_validated() {
        let cfg = parse(&format!(
            "{PROVIDER}oauth = {{ kind = \"qwen-code\", paths = [\"/creds\"], token_uri = \"http://127.0.0.1:9/token\", client_id = \"cid\" }}\npool = {{ selection = \"least_in_flight\", max_in_flight = 4, cooldown_max_ms = 0 }}\n"
        ))
        .unwrap();
        let p = &cfg.providers[0];
        let o = p.oauth.as_ref().unwrap();
        assert_eq!(o.kind, "qwen-code");
        assert_eq!(o.paths, [PathBuf::from("/creds")]);
        assert_eq!(o.refresh_margin, Duration::from_secs(300));
        assert_eq!(p.pool.selection, SelectionPolicy::LeastInFlight);
        assert_eq!(p.pool.max_in_flight, 4);
        assert_eq!(p.pool.cooldown_max, Duration::ZERO);

        let e = parse_err(&format!(
            "{PROVIDER}oauth = {{ kind = \"claude\", paths = [\"/x\"] }}\n"
        ));
        assert!(e.message.contains("unknown oauth kind"), "{e}");
        assert!(e.line.is_some());
        let e = parse_err(&format!(
            "{PROVIDER}oauth = {{ kind = \"gemini-cli\", paths = [] }}\n"
        ));
        assert!(e.message.contains("oauth.paths is empty"), "{e}");
        let e = parse_err(&format!(
            "{PROVIDER}oauth = {{ kind = \"gemini-cli\", paths = [\"/x\"], token_uri = \"ftp://x\" }}\n"
        ));
        assert!(e.message.contains("token_uri"), "{e}");
        let e = parse_err(&format!("{PROVIDER}pool = {{ selection = \"random\" }}\n"));
        assert!(e.message.contains("pool.selection"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("round_robin"));
        let e = parse_err(&format!("{PROVIDER}oauth = {{ kind = \"gemini-cli\", paths = [\"/x\"], client_secret_env = \"NOPE_UNSET\" }}\n"));
        assert!(e.message.contains("NOPE_UNSET"), "{e}");
    }

    #[test]
    fn models_take_aliases_patterns_fallbacks_and_defaults() {
        let cfg = parse(&format!(
            "{PROVIDER}\n[[models]]\nname = \"gpt-*\"\nprovider = \"openai\"\n\n[[models]]\nname = \"main\"\nprovider = \"openai\"\naliases = [\"m\"]\nfallbacks = [\"gpt-4o\", \"openai/other\"]\ndefaults = {{ temperature = 0.5, max_tokens = 100, thinking = false }}\n"
        ))
        .unwrap();
        let m = &cfg.models[1];
        assert_eq!(m.aliases, ["m"]);
        assert_eq!(m.fallbacks, ["gpt-4o", "openai/other"]);
        assert_eq!(m.defaults.temperature, Some(0.5));
        assert_eq!(m.defaults.max_tokens, Some(100));
        assert_eq!(m.defaults.thinking, Some(false));

        let model = |extra: &str| {
            format!("{PROVIDER}\n[[models]]\nname = \"main\"\nprovider = \"openai\"\n{extra}")
        };
        let e = parse_err(&model("fallbacks = [\"nowhere\"]\n"));
        assert!(e.message.contains("\"nowhere\" is not a model"), "{e}");
        let e = parse_err(&model("aliases = [\"main\"]\n"));
        assert!(e.message.contains("duplicate"), "{e}");
        let e = parse_err(&model("defaults = { temperature = 3.0 }\n"));
        assert!(e.message.contains("temperature"), "{e}");
        let e = parse_err(&format!(
            "{PROVIDER}\n[[models]]\nname = \"a*b*\"\nprovider = \"openai\"\n"
        ));
        assert!(e.message.contains("more than one"), "{e}");
    }

    #[test]
    fn routing_rules_are_validated_in_order() {
        let base = format!("{PROVIDER}\n[[models]]\nname = \"small\"\nprovider = \"openai\"\n");
        let cfg = parse(&format!(
            "{base}\n[routing]\nretries = 3\n\n[[routing.rules]]\nwhen = \"background\"\nmodels = [\"claude-3-5-haiku*\"]\ntarget = \"small\"\n\n[[routing.rules]]\nwhen = \"long_context\"\nmin_tokens = 1000\ntarget = \"openai/big\"\n\n[[routing.rules]]\nwhen = \"thinking\"\ntarget = \"small\"\n"
        ))
        .unwrap();
        assert_eq!(cfg.retries, 3);
        assert_eq!(
            cfg.rules.iter().map(|r| r.when.clone()).collect::<Vec<_>>(),
            [
                RuleWhen::Background {
                    models: vec!["claude-3-5-haiku*".into()]
                },
                RuleWhen::LongContext { min_tokens: 1000 },
                RuleWhen::Thinking
            ]
        );
        let rule = |r: &str| format!("{base}\n[[routing.rules]]\n{r}");
        let e = parse_err(&rule("when = \"background\"\ntarget = \"small\"\n"));
        assert!(e.message.contains("needs `models`"), "{e}");
        let e = parse_err(&rule("when = \"long_context\"\ntarget = \"small\"\n"));
        assert!(e.message.contains("min_tokens"), "{e}");
        let e = parse_err(&rule("when = \"sometimes\"\ntarget = \"small\"\n"));
        assert!(e.message.contains("unknown rule condition"), "{e}");
        let e = parse_err(&rule("when = \"thinking\"\ntarget = \"missing\"\n"));
        assert!(e.message.contains("not a model"), "{e}");
        let e = parse_err(&format!("{base}\n[routing]\nretries = 99\n"));
        assert!(e.message.contains("at most 10"), "{e}");
    }

    #[test]
    fn glob_matching() {
        assert!(glob_matches("claude-*", "claude-3-5-haiku"));
        assert!(glob_matches("*-mini", "gpt-4o-mini"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXcYYb"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("ab*ba", "aba"));
    }
}
