//! Client and provider protocols (sans-IO).
//!
//! [`fast_path`] is the same-protocol forwarding path: it reads only the
//! fields routing needs from a request body and can rewrite the model name
//! while keeping every other byte as the client sent it.
//!
//! Translation between protocols goes through one intermediate form,
//! [`ir`]: each protocol module decodes into it and encodes out of it.

pub mod fast_path;
pub mod ir;
pub mod json;
pub mod translate;
pub mod usage;

pub mod anthropic;
pub mod gemini;
pub mod openai_chat;
pub mod openai_responses;
