//! Same-protocol fast path: read `model` and `stream`, rewrite `model`.

use std::ops::Range;

/// The routing fields of a chat request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingFields {
    /// The `model` value, unescaped.
    pub model: String,
    /// `stream` (false when absent).
    pub stream: bool,
    /// Byte range of the model's JSON string token (quotes included) in the
    /// original body, for [`rewrite_model`].
    pub model_token: Range<usize>,
}

/// Why a body could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// The body is not valid JSON (with a short reason and byte offset if known).
    InvalidJson(String),
    /// The top-level value is not an object.
    NotAnObject,
    /// `model` is absent.
    MissingModel,
    /// `model` is not a string, or `stream` not a boolean (the field name).
    WrongType(&'static str),
}

/// Validates `body` as JSON and extracts the routing fields.
///
/// `scratch` is a reusable buffer (simd-json parses in place and needs a
/// mutable copy); its capacity is kept between calls.
pub fn extract_routing_fields(
    body: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<RoutingFields, FieldError> {
    let _ = (body, scratch);
    todo!("implemented by the fast-path helper")
}

/// Writes `body` into `out` with the model token replaced by `new_model`
/// (JSON-escaped), every other byte unchanged.
pub fn rewrite_model(body: &[u8], model_token: Range<usize>, new_model: &str, out: &mut Vec<u8>) {
    let _ = (body, model_token, new_model, out);
    todo!("implemented by the fast-path helper")
}
