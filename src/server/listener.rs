//! Binding the per-shard listening sockets.
//!
//! Every shard gets its own socket bound to the same address with
//! SO_REUSEPORT, so the kernel spreads new connections across shards. That
//! same option would let a second shardgate (or anything else using it)
//! silently share the port, so an existing listener is detected first.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog per shard socket.
const BACKLOG: i32 = 4096;

/// Why the listening sockets could not be set up.
#[derive(Debug)]
pub enum ListenError {
    /// Another process already listens on the address.
    AddressInUse(SocketAddr),
    /// Any other socket error.
    Io(SocketAddr, io::Error),
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenError::AddressInUse(addr) => write!(
                f,
                "another process is already listening on {addr}; stop it or choose another \
                 `listen` address (shardgate refuses to share a port: SO_REUSEPORT would \
                 silently split the traffic between both processes)"
            ),
            ListenError::Io(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
        }
    }
}

impl std::error::Error for ListenError {}

/// Creates `count` listening sockets on `addr` (SO_REUSEPORT). A port of 0
/// is resolved once, by the first socket, and shared by the others.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> Result<Vec<TcpListener>, ListenError> {
    if addr.port() != 0 {
        probe_free(addr)?;
    }
    let first = bind_one(addr)?;
    let actual = first.local_addr().map_err(|e| ListenError::Io(addr, e))?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind_one(actual)?);
    }
    Ok(listeners)
}

/// Binds a socket without SO_REUSEPORT: that fails exactly when some
/// socket already listens on the address. SO_REUSEADDR keeps TIME_WAIT
/// leftovers of an earlier run from counting as a listener.
fn probe_free(addr: SocketAddr) -> Result<(), ListenError> {
    let socket = new_socket(addr).map_err(|e| ListenError::Io(addr, e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| ListenError::Io(addr, e))?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(ListenError::AddressInUse(addr)),
        Err(e) => Err(ListenError::Io(addr, e)),
    }
}

fn bind_one(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let io = |e| ListenError::Io(addr, e);
    let socket = new_socket(addr).map_err(io)?;
    socket.set_reuse_address(true).map_err(io)?;
    socket.set_reuse_port(true).map_err(io)?;
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            ListenError::AddressInUse(addr)
        } else {
            ListenError::Io(addr, e)
        }
    })?;
    socket.listen(BACKLOG).map_err(io)?;
    Ok(socket.into())
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_all_shards_on_one_resolved_port() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0));
    }

    #[test]
    fn refuses_an_address_someone_listens_on() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        match bind_listeners(addr, 2) {
            Err(ListenError::AddressInUse(a)) => assert_eq!(a, addr),
            other => panic!("expected AddressInUse, got {other:?}"),
        }
    }

    #[test]
    fn refuses_a_reuseport_listener_too() {
        let first = bind_listeners("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let addr = first[0].local_addr().unwrap();
        assert!(matches!(
            bind_listeners(addr, 1),
            Err(ListenError::AddressInUse(_))
        ));
    }
}
