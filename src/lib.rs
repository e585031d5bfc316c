//! shardgate: a thread-per-core LLM API gateway.
//!
//! The crate is layered as `../shared/DESIGN.md` describes. The sans-IO cores
//! ([`http`], [`protocol`]) know nothing of sockets, executors or clocks; the
//! I/O layers ([`upstream`], [`server`]) drive them on glommio executors, one
//! pinned to each core. [`config`] is the validated configuration every layer
//! reads, and [`mock`] is the built-in mock provider used by the demo, the
//! tests and the load scenarios.

pub mod config;
pub mod credentials;
pub mod http;
pub mod log;
pub mod metrics;
pub mod mock;
pub mod protocol;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod sse;
pub mod upstream;
