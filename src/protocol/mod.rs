//! Client and provider protocols (sans-IO).
//!
//! [`fast_path`] is the same-protocol forwarding path: it reads only the
//! fields routing needs from a request body and can rewrite the model name
//! while keeping every other byte as the client sent it.

pub mod fast_path;
pub mod json;
pub mod usage;
