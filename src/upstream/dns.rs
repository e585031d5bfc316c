//! Per-shard DNS cache. Resolution runs on glommio's blocking thread pool so
//! the executor never waits on `getaddrinfo`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::UpstreamError;

struct Entry {
    addrs: Rc<[SocketAddr]>,
    expires: Instant,
}

/// Resolved addresses by (host, port), kept for a TTL.
pub struct DnsCache {
    ttl: Duration,
    entries: RefCell<HashMap<(String, u16), Entry>>,
}

impl DnsCache {
    /// An empty cache whose entries live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        DnsCache {
            ttl,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// The addresses of `host:port`. IP literals never touch the resolver.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Rc<[SocketAddr]>, UpstreamError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Rc::from([SocketAddr::new(ip, port)]));
        }
        let now = Instant::now();
        if let Some(entry) = self.entries.borrow().get(&(host.to_owned(), port)) {
            if entry.expires > now {
                return Ok(entry.addrs.clone());
            }
        }
        let owned_host = host.to_owned();
        let resolved = glommio::executor()
            .spawn_blocking(move || {
                (owned_host.as_str(), port)
                    .to_socket_addrs()
                    .map(|it| it.collect::<Vec<_>>())
            })
            .await;
        let addrs: Rc<[SocketAddr]> = match resolved {
            Ok(list) if !list.is_empty() => list.into(),
            _ => return Err(UpstreamError::Dns(host.to_owned())),
        };
        self.entries.borrow_mut().insert(
            (host.to_owned(), port),
            Entry {
                addrs: addrs.clone(),
                expires: Instant::now() + self.ttl,
            },
        );
        Ok(addrs)
    }
}
