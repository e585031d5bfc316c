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
pub mod errors;
pub mod forward;
pub mod gateway;
pub mod listener;
pub mod responder;
pub mod shard;
pub mod shutdown;

use std::rc::Rc;
use std::sync::Arc;

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
    Shards(shard::ShardError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Listen(e) => e.fmt(f),
            ServeError::Tls(e) => write!(f, "upstream TLS setup failed: {e}"),
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
    /// The address actually bound (the port resolved if 0 was asked).
    pub local_addr: std::net::SocketAddr,
}

impl BoundGateway {
    /// Binds the listeners and prepares TLS, so errors surface before any
    /// executor starts.
    pub fn bind(config: Config) -> Result<Self, ServeError> {
        let shards = shard_count(&config);
        shard::ensure_memlock(shards).map_err(ServeError::Shards)?;
        let tls = tls::client_config(config.extra_ca_file.as_deref()).map_err(ServeError::Tls)?;
        let listeners =
            listener::bind_listeners(config.listen, shards).map_err(ServeError::Listen)?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|e| ServeError::Listen(listener::ListenError::Io(config.listen, e)))?;
        Ok(BoundGateway {
            config: Arc::new(config),
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
        };
        let tls = self.tls;
        shard::run_shards(
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
                gateway::Gateway::new(config.clone(), state, pool)
            },
        )
        .map_err(ServeError::Shards)
    }
}
