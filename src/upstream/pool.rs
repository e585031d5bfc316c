//! Per-shard upstream connection pool and the connector that fills it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::net::EpollStream as TcpStream;
use rustls::pki_types::ServerName;

use super::{DnsCache, UpstreamError, UpstreamStream};
use crate::config::{BaseUrl, Scheme};
use crate::runtime;
use crate::runtime::buffers;

/// Identity of an upstream endpoint: connections are reusable within a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub scheme: Scheme,
    pub host: Rc<str>,
    pub port: u16,
}

impl PoolKey {
    /// The key for a provider's base URL.
    pub fn for_url(url: &BaseUrl) -> Self {
        PoolKey {
            scheme: url.scheme,
            host: Rc::from(url.host.as_str()),
            port: url.port,
        }
    }
}

/// An upstream connection with its read buffer.
pub struct PooledConn {
    pub stream: UpstreamStream,
    pub key: PoolKey,
    /// Whether this connection served an earlier request (it may have been
    /// closed by the upstream while idle).
    pub reused: bool,
    /// Read buffer; bytes `start..end` are received and not yet consumed.
    pub buf: Vec<u8>,
    pub start: usize,
    pub end: usize,
    idle_since: Instant,
}

/// Size of an upstream connection's read buffer. Taken from the shard's
/// free list while the connection serves a request, given back while it
/// waits in the pool, so idle upstream connections hold no buffer.
const READ_BUF: usize = crate::runtime::buffers::UPSTREAM_READ;

impl PooledConn {
    fn new(stream: UpstreamStream, key: PoolKey) -> Self {
        PooledConn {
            stream,
            key,
            reused: false,
            // Taken by `make_room` before the first read.
            buf: Vec::new(),
            start: 0,
            end: 0,
            idle_since: Instant::now(),
        }
    }

    /// Received bytes not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes room at the end of the buffer: moves pending bytes to the
    /// front, and grows the buffer when it is full of pending bytes.
    pub fn make_room(&mut self) {
        if self.buf.is_empty() {
            self.buf = buffers::take(READ_BUF);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
    }
}

/// Opens new upstream connections: DNS, TCP connect, TLS handshake.
pub struct Connector {
    dns: DnsCache,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
}

impl Connector {
    /// A connector using `tls` for https upstreams.
    pub fn new(dns: DnsCache, tls: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        Connector {
            dns,
            tls,
            connect_timeout,
        }
    }

    /// Connects to `key`, trying each resolved address in turn; the TCP
    /// connect and the TLS handshake share one deadline.
    pub async fn connect(&self, key: &PoolKey) -> Result<PooledConn, UpstreamError> {
        let deadline = Instant::now() + self.connect_timeout;
        let addrs = self.dns.resolve(&key.host, key.port).await?;
        let mut last_err = UpstreamError::ConnectTimeout;
        let mut tcp = None;
        for addr in addrs.iter() {
            match runtime::deadline(deadline, TcpStream::connect(*addr)).await {
                Some(Ok(stream)) => {
                    tcp = Some(stream);
                    break;
                }
                Some(Err(e)) => last_err = UpstreamError::ConnectRefused(e),
                None => {
                    last_err = UpstreamError::ConnectTimeout;
                    break;
                }
            }
        }
        let tcp = tcp.ok_or(last_err)?;
        // Requests are written whole; Nagle would only delay them.
        let _ = tcp.set_nodelay(true);
        let stream = match key.scheme {
            Scheme::Http => UpstreamStream::Plain(tcp),
            Scheme::Https => {
                let name = ServerName::try_from(key.host.to_string()).map_err(|_| {
                    UpstreamError::Tls(std::io::Error::other("invalid TLS server name"))
                })?;
                let connector = futures_rustls::TlsConnector::from(self.tls.clone());
                match runtime::deadline(deadline, connector.connect(name, tcp)).await {
                    Some(Ok(tls)) => UpstreamStream::Tls(Box::new(tls)),
                    Some(Err(e)) => return Err(UpstreamError::Tls(e)),
                    None => return Err(UpstreamError::ConnectTimeout),
                }
            }
        };
        Ok(PooledConn::new(stream, key.clone()))
    }
}

/// Idle keep-alive connections of one shard, most recently used last.
pub struct Pool {
    connector: Connector,
    idle: RefCell<HashMap<PoolKey, Vec<PooledConn>>>,
    idle_timeout: Duration,
    max_idle_per_key: usize,
}

impl Pool {
    /// A pool whose idle connections expire after `idle_timeout`.
    pub fn new(connector: Connector, idle_timeout: Duration, max_idle_per_key: usize) -> Self {
        Pool {
            connector,
            idle: RefCell::new(HashMap::new()),
            idle_timeout,
            max_idle_per_key,
        }
    }

    /// An idle connection to `key` if one is fresh, else a new one.
    pub async fn acquire(&self, key: &PoolKey) -> Result<PooledConn, UpstreamError> {
        if let Some(conn) = self.take_idle(key) {
            return Ok(conn);
        }
        // Boxed: connecting (TCP, maybe TLS) is a 3.5 KB future, and the
        // pooled path every request takes would otherwise carry it.
        Box::pin(self.connector.connect(key)).await
    }

    /// A new connection, bypassing the idle list (used to retry a request
    /// whose pooled connection turned out to be closed).
    pub async fn connect_fresh(&self, key: &PoolKey) -> Result<PooledConn, UpstreamError> {
        Box::pin(self.connector.connect(key)).await
    }

    fn take_idle(&self, key: &PoolKey) -> Option<PooledConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        // Most recently used first: it is the least likely to have been
        // closed by the upstream's own idle timeout.
        while let Some(mut conn) = list.pop() {
            if now.duration_since(conn.idle_since) < self.idle_timeout {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last response ended cleanly.
    pub fn release(&self, mut conn: PooledConn) {
        if conn.start != conn.end {
            // Unsolicited bytes after a response: the connection's framing
            // can no longer be trusted.
            return;
        }
        conn.start = 0;
        conn.end = 0;
        buffers::give(std::mem::take(&mut conn.buf));
        conn.idle_since = Instant::now();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.key.clone()).or_default();
        if list.len() >= self.max_idle_per_key {
            list.remove(0);
        }
        list.push(conn);
    }

    /// Closes idle connections past their expiry.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| now.duration_since(c.idle_since) < self.idle_timeout);
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Number of idle connections held.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}
