//! Upstream failures, each with the status a client should see.

use std::fmt;

/// Why an upstream exchange failed before a response head was received, or
/// while its body was being read.
#[derive(Debug)]
pub enum UpstreamError {
    /// The host name did not resolve.
    Dns(String),
    /// The TCP connection was refused or reset during connect.
    ConnectRefused(std::io::Error),
    /// The TCP connect did not complete in time.
    ConnectTimeout,
    /// The TLS handshake failed (bad certificate, protocol error).
    Tls(std::io::Error),
    /// The response head did not arrive in time.
    HeadTimeout,
    /// The upstream went silent in the middle of a response body.
    BodyIdleTimeout,
    /// The connection closed or failed before a complete response head.
    /// `reused` marks a pooled connection: the request is safe to retry once
    /// on a fresh connection, since the upstream did not answer it.
    Closed { reused: bool },
    /// An I/O error while exchanging data.
    Io(std::io::Error),
    /// The upstream answered with something that is not a valid HTTP response.
    BadResponse(&'static str),
}

impl UpstreamError {
    /// The status the gateway answers with when this happens before any
    /// byte reached the client.
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::ConnectTimeout
            | UpstreamError::HeadTimeout
            | UpstreamError::BodyIdleTimeout => 504,
            _ => 502,
        }
    }

    /// A short machine-readable class, for error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Dns(_) => "upstream_dns_failure",
            UpstreamError::ConnectRefused(_) => "upstream_connect_refused",
            UpstreamError::ConnectTimeout => "upstream_connect_timeout",
            UpstreamError::Tls(_) => "upstream_tls_failure",
            UpstreamError::HeadTimeout => "upstream_timeout",
            UpstreamError::BodyIdleTimeout => "upstream_body_timeout",
            UpstreamError::Closed { .. } => "upstream_closed",
            UpstreamError::Io(_) => "upstream_io_error",
            UpstreamError::BadResponse(_) => "upstream_bad_response",
        }
    }

    /// Whether the request may be retried on a fresh connection: only when a
    /// reused pooled connection turned out to be closed before answering.
    pub fn retry_on_fresh_connection(&self) -> bool {
        matches!(self, UpstreamError::Closed { reused: true })
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Dns(host) => write!(f, "could not resolve upstream host {host}"),
            UpstreamError::ConnectRefused(e) => write!(f, "upstream connection failed: {e}"),
            UpstreamError::ConnectTimeout => f.write_str("upstream connect timed out"),
            UpstreamError::Tls(e) => write!(f, "upstream TLS handshake failed: {e}"),
            UpstreamError::HeadTimeout => f.write_str("upstream did not answer in time"),
            UpstreamError::BodyIdleTimeout => {
                f.write_str("upstream went silent in the middle of its answer")
            }
            UpstreamError::Closed { .. } => {
                f.write_str("upstream closed the connection before answering")
            }
            UpstreamError::Io(e) => write!(f, "upstream I/O error: {e}"),
            UpstreamError::BadResponse(why) => write!(f, "invalid upstream response: {why}"),
        }
    }
}

impl std::error::Error for UpstreamError {}
