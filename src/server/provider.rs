//! A provider as one shard uses it: where requests go, in which protocol,
//! and the pre-rendered parts of every request head sent to it.

use crate::config::{Provider, ProviderProtocol, Scheme};
use crate::http::write;
use crate::protocol::ir::Dialect;
use crate::upstream::PoolKey;

/// What a request asks the provider to do; picks the upstream path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Generate an answer, streamed or not.
    Generate { stream: bool },
    /// Count the prompt's tokens (Anthropic and Gemini have an endpoint).
    CountTokens,
}

/// The Anthropic API version sent when the client did not name one.
pub const ANTHROPIC_VERSION: &[u8] = b"2023-06-01";

/// One provider, ready to build request heads.
pub struct ProviderRoute {
    pub key: PoolKey,
    pub dialect: Dialect,
    /// `POST {prefix}/chat/completions HTTP/1.1` with the host: the static
    /// head of OpenAI's hot path.
    pub chat_head: Vec<u8>,
    /// The base URL's path prefix, e.g. `/v1` or `/v1beta`.
    prefix: String,
    /// The `host` header, rendered.
    host_and_auth: Vec<u8>,
}

impl ProviderRoute {
    pub fn new(provider: &Provider) -> Self {
        let url = &provider.base_url;
        let default_port = match url.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let host = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let host = if url.port == default_port {
            host
        } else {
            format!("{host}:{}", url.port)
        };
        let mut host_and_auth = Vec::with_capacity(128);
        write::header(&mut host_and_auth, b"host", host.as_bytes());
        // Credentials are not part of the static head: each request adds
        // the header of the credential its pool lent it.
        let dialect = match provider.protocol {
            ProviderProtocol::OpenAi => Dialect::OpenAiChat,
            ProviderProtocol::Anthropic => Dialect::Anthropic,
            ProviderProtocol::Gemini => Dialect::Gemini,
        };
        let mut route = ProviderRoute {
            key: PoolKey::for_url(url),
            dialect,
            chat_head: Vec::new(),
            prefix: url.path_prefix.clone(),
            host_and_auth,
        };
        let mut chat_head = Vec::with_capacity(256);
        route.write_head(
            Operation::Generate { stream: false },
            "",
            None,
            &mut chat_head,
        );
        route.chat_head = chat_head;
        route
    }

    /// Writes the request line and host for `op` on `model`
    /// (Gemini names the model in the path). `gemini_query` replaces the
    /// query Gemini's streaming path gets (`alt=sse`), for a client that
    /// asked for another stream format.
    pub fn write_head(
        &self,
        op: Operation,
        model: &str,
        gemini_query: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(self.prefix.as_bytes());
        match (self.dialect, op) {
            (Dialect::Anthropic, Operation::Generate { .. }) => out.extend_from_slice(b"/messages"),
            (Dialect::Anthropic, Operation::CountTokens) => {
                out.extend_from_slice(b"/messages/count_tokens")
            }
            (Dialect::Gemini, op) => {
                out.extend_from_slice(b"/models/");
                write_path_segment(out, model);
                match op {
                    Operation::Generate { stream: false } => {
                        out.extend_from_slice(b":generateContent")
                    }
                    Operation::Generate { stream: true } => {
                        out.extend_from_slice(b":streamGenerateContent");
                        match gemini_query {
                            Some(b"") => {}
                            Some(q) => {
                                out.push(b'?');
                                out.extend_from_slice(q);
                            }
                            None => out.extend_from_slice(b"?alt=sse"),
                        }
                    }
                    Operation::CountTokens => out.extend_from_slice(b":countTokens"),
                }
            }
            // OpenAI has no count endpoint; callers never ask for one.
            (_, _) => out.extend_from_slice(b"/chat/completions"),
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        out.extend_from_slice(&self.host_and_auth);
    }
}

/// Appends `s` percent-encoded as one path segment (RFC 3986 unreserved
/// characters pass as they are).
fn write_path_segment(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn route(protocol: &str, base: &str) -> ProviderRoute {
        let text = format!(
            "[[providers]]\nname = \"p\"\nprotocol = \"{protocol}\"\nbase_url = \"{base}\"\napi_key = \"k1\"\n"
        );
        let config = Config::from_toml(&text, "<test>").unwrap();
        ProviderRoute::new(&config.providers[0])
    }

    fn head(r: &ProviderRoute, op: Operation, model: &str, q: Option<&[u8]>) -> String {
        let mut out = Vec::new();
        r.write_head(op, model, q, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn each_protocol_gets_its_path_and_host() {
        let openai = route("openai", "https://api.example.com/v1");
        assert_eq!(
            String::from_utf8(openai.chat_head.clone()).unwrap(),
            "POST /v1/chat/completions HTTP/1.1\r\nhost: api.example.com\r\n"
        );
        let anthropic = route("anthropic", "http://127.0.0.1:9000/v1");
        assert_eq!(
            head(&anthropic, Operation::CountTokens, "m", None),
            "POST /v1/messages/count_tokens HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n"
        );
        let gemini = route("gemini", "https://g.example.com/v1beta");
        assert_eq!(
            head(&gemini, Operation::Generate { stream: true }, "gemini 2/x", None),
            "POST /v1beta/models/gemini%202%2Fx:streamGenerateContent?alt=sse HTTP/1.1\r\nhost: g.example.com\r\n"
        );
        assert!(head(
            &gemini,
            Operation::Generate { stream: true },
            "m",
            Some(b"")
        )
        .starts_with("POST /v1beta/models/m:streamGenerateContent HTTP/1.1\r\n"));
        assert!(
            head(&gemini, Operation::Generate { stream: false }, "m", None)
                .starts_with("POST /v1beta/models/m:generateContent HTTP/1.1\r\n")
        );
    }
}
