//! The upstream side: connections to providers, pooled per shard.
//!
//! - [`Connector`] turns a [`crate::config::BaseUrl`] into a connected
//!   [`UpstreamStream`] (DNS through [`DnsCache`], TCP, then TLS via rustls).
//! - [`Pool`] keeps idle keep-alive connections per shard, keyed by
//!   scheme/host/port, and expires them.
//! - [`exchange`] sends one request and reads the response head; the caller
//!   then streams the body with [`ResponseBody`] and hands the connection
//!   back to the pool when the body ended cleanly.
//!
//! Everything here is shard-local (`Rc`, `RefCell`): no locks.

mod client;
mod dns;
mod error;
mod pool;
mod stream;
pub mod tls;

pub use client::{exchange, BodyChunk, ResponseBody, UpstreamRequest, UpstreamResponse};
pub use dns::DnsCache;
pub use error::UpstreamError;
pub use pool::{Connector, Pool, PoolKey, PooledConn};
pub use stream::UpstreamStream;
