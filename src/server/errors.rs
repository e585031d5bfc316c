//! Error bodies the gateway writes itself, in the client's protocol.
//!
//! Today every client endpoint speaks OpenAI's shape
//! (`{"error":{"message","type","code"}}`); the other protocols' shapes
//! arrive with their endpoints.

use crate::protocol::json::write_string;

/// An error the gateway answers with, before any response byte was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    /// OpenAI's error `type`, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// A stable machine-readable code, e.g. `model_not_found`.
    pub code: &'static str,
    pub message: String,
}

impl GatewayError {
    /// An error with the `type` OpenAI uses for `status`.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        let kind = match status {
            400 | 404 | 405 | 408 | 411 | 413 | 415 | 422 | 431 | 505 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            502 | 504 => "upstream_error",
            _ => "server_error",
        };
        GatewayError {
            status,
            kind,
            code,
            message: message.into(),
        }
    }

    /// Appends the OpenAI-shaped JSON body.
    pub fn write_openai_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"error\":{\"message\":");
        write_string(out, &self.message);
        out.extend_from_slice(b",\"type\":");
        write_string(out, self.kind);
        out.extend_from_slice(b",\"param\":null,\"code\":");
        write_string(out, self.code);
        out.extend_from_slice(b"}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_body_is_valid_json() {
        let mut out = Vec::new();
        GatewayError::new(404, "model_not_found", "model \"x\" is not served")
            .write_openai_body(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "model \"x\" is not served");
    }
}
