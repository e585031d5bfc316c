//! The serving side: shards, listeners, the client connection loop, and the
//! gateway service itself.
//!
//! - [`listener`] binds one SO_REUSEPORT socket per shard, after checking
//!   nobody else listens on the address.
//! - [`shard`] starts one pinned glommio executor per shard and drains them
//!   on shutdown.
//! - [`conn`] runs the HTTP/1.1 connection loop over the sans-IO codec and
//!   hands each request to a [`conn::Service`].
//! - [`gateway`] is the gateway's service; [`forward`] relays upstream
//!   responses; [`auth`] checks client keys.

pub mod auth;
pub mod conn;
pub mod credentials;
pub mod errors;
pub mod exchange;
pub mod forward;
pub mod gateway;
pub mod listener;
pub mod provider;
pub mod responder;
pub mod shard;
pub mod shutdown;
pub mod telemetry;
pub mod tls_listener;
pub mod translated;

use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::log::{LogProducer, LogSettings, LogWriter, LogWriterHandle, Names, Sampler};

use crate::config::Config;
use crate::http::HeadLimits;
use crate::upstream::{tls, Connector, DnsCache, Pool};
use conn::ConnSettings;
use shard::{GlobalState, ShardSpec};

/// Why the gateway could not run.
#[derive(Debug)]
pub enum ServeError {
    Listen(listener::ListenError),
    Tls(std::io::Error),
    Log(std::io::Error),
    Shards(shard::ShardError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Listen(e) => e.fmt(f),
            ServeError::Tls(e) => write!(f, "TLS setup failed: {e}"),
            ServeError::Log(e) => write!(f, "cannot open the access log: {e}"),
            ServeError::Shards(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ServeError {}

/// Connection settings derived from the config.
pub fn conn_settings(config: &Config) -> ConnSettings {
    ConnSettings {
        head_limits: HeadLimits {
            max_head_bytes: config.limits.max_head_bytes,
            max_headers: config.limits.max_headers,
        },
        max_body_bytes: config.limits.max_body_bytes,
        header_read: config.timeouts.header_read,
        body_read: config.timeouts.body_read,
        keep_alive_idle: config.timeouts.keep_alive_idle,
    }
}

/// The number of shards the config asks for.
pub fn shard_count(config: &Config) -> usize {
    config.shards.unwrap_or_else(shard::online_cpus).max(1)
}

/// A bound, not yet running gateway.
pub struct BoundGateway {
    config: Arc<Config>,
    listeners: Vec<std::net::TcpListener>,
    global: Arc<GlobalState>,
    tls: Arc<rustls::ClientConfig>,
    /// TLS for client connections, when configured.
    client_tls: Option<Arc<rustls::ServerConfig>>,
    telemetry: Arc<telemetry::SharedTelemetry>,
    /// The access log: its writer thread and each shard's ring producer.
    log: Option<(LogWriterHandle, Vec<LogProducer>)>,
    /// Every provider's credentials, loaded at bind.
    credentials: Arc<credentials::CredentialHub>,
    /// The address actually bound (the port resolved if 0 was asked).
    pub local_addr: std::net::SocketAddr,
}

impl BoundGateway {
    /// Binds the listeners and prepares TLS, so errors surface before any
    /// executor starts.
    pub fn bind(config: Config) -> Result<Self, ServeError> {
        let shards = shard_count(&config);
        shard::ensure_memlock(shards).map_err(ServeError::Shards)?;
        let (nofile, fds_needed) =
            shard::raise_nofile(shards, config.limits.max_connections_per_shard);
        if nofile < fds_needed {
            eprintln!(
                "shardgate: warning: the open-file limit is {nofile}, but {shards} shard(s) x \
                 max_connections_per_shard {} need about {fds_needed} fds for client connections \
                 alone (upstream connections come on top); raise it (ulimit -n, LimitNOFILE=) \
                 or lower the cap",
                config.limits.max_connections_per_shard
            );
        }
        let tls = tls::client_config(config.extra_ca_file.as_deref()).map_err(ServeError::Tls)?;
        let client_tls = match &config.client_tls {
            Some(t) => Some(tls_listener::server_config(t).map_err(ServeError::Tls)?),
            None => None,
        };
        let listeners =
            listener::bind_listeners(config.listen, shards).map_err(ServeError::Listen)?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|e| ServeError::Listen(listener::ListenError::Io(config.listen, e)))?;
        let credentials = credentials::CredentialHub::load(&config, shards);
        for problem in &credentials.load_errors {
            eprintln!("shardgate: {problem}");
        }
        let log = match &config.log.path {
            Some(path) => Some(
                start_log(&config, path, shards, credentials.log_names())
                    .map_err(ServeError::Log)?,
            ),
            None => None,
        };
        let provider_names: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let telemetry = telemetry::SharedTelemetry::new(
            shards,
            &provider_names,
            config.limits.max_tracked_requests,
            log.as_ref().map(|(writer, _)| writer.stats()),
        );
        Ok(BoundGateway {
            credentials,
            telemetry,
            log,
            config: Arc::new(config),
            client_tls,
            listeners,
            global: GlobalState::new(shards),
            tls,
            local_addr,
        })
    }

    /// The flag that starts a graceful shutdown when set.
    pub fn shutdown_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.global.shutdown.clone()
    }

    /// Runs every shard until shutdown has drained.
    pub fn run(self) -> Result<(), ServeError> {
        let config = self.config;
        let spec = ShardSpec {
            name: "shardgate",
            shards: self.listeners.len(),
            conn: conn_settings(&config),
            max_connections_per_shard: config.limits.max_connections_per_shard,
            drain: config.timeouts.drain,
            tls: self.client_tls,
        };
        let tls = self.tls;
        let telemetry = self.telemetry;
        let (writer, producers) = match self.log {
            Some((writer, producers)) => (Some(writer), producers.into_iter().map(Some).collect()),
            None => (None, Vec::new()),
        };
        let producers: Arc<Mutex<Vec<Option<LogProducer>>>> = Arc::new(Mutex::new(producers));
        let sample_rate = config.log.sample_rate;
        let hub = self.credentials;
        let seed = self.global.id_seed;
        let result = shard::run_shards(
            spec,
            self.listeners,
            self.global,
            move |state: Rc<shard::ShardState>| {
                let timeouts = &config.timeouts;
                let connector = Connector::new(
                    DnsCache::new(timeouts.dns_ttl),
                    tls.clone(),
                    timeouts.upstream_connect,
                );
                let pool = Pool::new(
                    connector,
                    timeouts.upstream_idle,
                    gateway::MAX_IDLE_PER_UPSTREAM,
                );
                // Each shard takes its own ring once, at start.
                let log = producers
                    .lock()
                    .unwrap()
                    .get_mut(state.id)
                    .and_then(Option::take)
                    .map(|producer| telemetry::ShardLog {
                        producer,
                        sampler: Sampler::new(sample_rate, seed ^ state.id as u64),
                        body_cap: config.log.log_bodies.then_some(config.log.body_cap_bytes),
                        scratch: Vec::new(),
                        request: Vec::new(),
                        response: Vec::new(),
                    });
                gateway::Gateway::new(
                    config.clone(),
                    state,
                    pool,
                    telemetry.clone(),
                    log,
                    hub.clone(),
                )
            },
        )
        .map_err(ServeError::Shards);
        // The shards have stopped: drain every ring, write and fsync.
        if let Some(writer) = writer {
            writer.shutdown();
        }
        result
    }
}

/// Creates one ring per shard and starts the log writer thread.
fn start_log(
    config: &Config,
    path: &std::path::Path,
    shards: usize,
    credential_names: Vec<String>,
) -> std::io::Result<(LogWriterHandle, Vec<LogProducer>)> {
    let c = &config.log;
    let settings = LogSettings {
        path: path.to_path_buf(),
        ring_capacity: c.ring_slots,
        batch_bytes: c.batch_bytes,
        flush_interval: c.flush_interval,
        fsync_interval: c.fsync_interval,
        max_file_bytes: c.max_file_bytes,
        rotate_daily: c.rotate_daily,
        compress: c.compress,
        keep: c.keep,
        log_bodies: c.log_bodies,
        body_cap_bytes: c.body_cap_bytes,
        body_ring_bytes: c.body_ring_bytes,
        ..LogSettings::default()
    };
    let (producers, consumers): (Vec<_>, Vec<_>) = (0..shards).map(|_| settings.ring()).unzip();
    let names = Names {
        client_keys: config.client_keys.iter().map(|k| k.id.clone()).collect(),
        providers: config.providers.iter().map(|p| p.name.clone()).collect(),
        credentials: credential_names,
    };
    let writer = LogWriter::spawn(settings, names, consumers)?;
    Ok((writer, producers))
}
