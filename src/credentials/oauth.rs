//! The OAuth refresh exchange, sans-IO: the request body to POST and the
//! reading of the token endpoint's answer. The caller owns the HTTP client,
//! the clock and the retry policy.

use std::fmt;

use serde_json::{Map, Value};

use super::file::{OAuthCredential, OAuthKind};

/// Google's token endpoint, used by Gemini CLI credentials.
pub const GEMINI_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Qwen's token endpoint, used by Qwen Code credentials.
pub const QWEN_TOKEN_URL: &str = "https://chat.qwen.ai/api/v1/oauth2/token";

/// Content type of the body [`refresh_form`] builds.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

impl OAuthKind {
    /// The provider's public token endpoint for this kind of credential.
    pub fn default_token_url(self) -> &'static str {
        match self {
            OAuthKind::GeminiCli => GEMINI_TOKEN_URL,
            OAuthKind::QwenCode => QWEN_TOKEN_URL,
        }
    }
}

/// The token endpoint to use for `cred`: the config's (`configured`) wins,
/// then the file's `token_uri`, then the kind's default.
pub fn token_endpoint<'a>(cred: &'a OAuthCredential, configured: Option<&'a str>) -> &'a str {
    configured
        .or(cred.token_uri.as_deref())
        .unwrap_or(cred.kind.default_token_url())
}

/// The `application/x-www-form-urlencoded` body of a refresh request:
/// `grant_type=refresh_token&refresh_token=..` then `client_id` and
/// `client_secret` when known. The config's values (the arguments) win over
/// the file's; a value known to neither is left out (Qwen's public client
/// has no secret).
pub fn refresh_form(
    cred: &OAuthCredential,
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + cred.refresh_token.len());
    let mut pair = |name: &str, value: &str| {
        if !out.is_empty() {
            out.push(b'&');
        }
        form_encode(name, &mut out);
        out.push(b'=');
        form_encode(value, &mut out);
    };
    pair("grant_type", "refresh_token");
    pair("refresh_token", &cred.refresh_token);
    if let Some(id) = client_id.or(cred.client_id.as_deref()) {
        pair("client_id", id);
    }
    if let Some(secret) = client_secret.or(cred.client_secret.as_deref()) {
        pair("client_secret", secret);
    }
    out
}

/// Percent-encodes one form component (the WHATWG urlencoded serializer:
/// alphanumerics and `*-._` stay, space becomes `+`, every other byte `%XX`).
fn form_encode(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

/// A successful refresh: what the token endpoint granted.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The new bearer token.
    pub access_token: String,
    /// Lifetime of `access_token` in seconds, when the endpoint says.
    pub expires_in: Option<u64>,
    /// A new refresh token, when the endpoint rotates them (Qwen does); the
    /// old one is then dead.
    pub refresh_token: Option<String>,
    /// A new OpenID token (Google), when sent.
    pub id_token: Option<String>,
    /// The account's API host (Qwen), when sent.
    pub resource_url: Option<String>,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not derived: tokens stay out of logs.
        f.debug_struct("TokenGrant")
            .field("expires_in", &self.expires_in)
            .field("rotated_refresh_token", &self.refresh_token.is_some())
            .field("id_token", &self.id_token.is_some())
            .field("resource_url", &self.resource_url)
            .finish_non_exhaustive()
    }
}

/// Why a refresh failed. Messages hold the status and the endpoint's error
/// code and (trimmed) description, never a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshError {
    /// The endpoint refused the refresh token or the client for good
    /// (400/401 with `invalid_grant`, `invalid_client` or
    /// `unauthorized_client`): the credential is dead until someone logs in
    /// again. Do not retry.
    Rejected(String),
    /// Anything else (5xx, 429, other 4xx, a malformed answer, a network
    /// error the caller maps here): retry later with backoff. Unsure
    /// failures land here so that a credential is never dropped by mistake.
    Transient(String),
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefreshError::Rejected(m) => write!(f, "refresh rejected: {m}"),
            RefreshError::Transient(m) => write!(f, "refresh failed (transient): {m}"),
        }
    }
}

impl std::error::Error for RefreshError {}

/// Reads the token endpoint's answer: its HTTP status and body.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenGrant, RefreshError> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    };
    let error_code = object
        .as_ref()
        .and_then(|o| o.get("error"))
        .and_then(Value::as_str);
    if (200..300).contains(&status) && error_code.is_none() {
        let Some(o) = object else {
            return Err(RefreshError::Transient(format!(
                "status {status}: body is not a JSON object"
            )));
        };
        return grant(&o).map_err(|m| RefreshError::Transient(format!("status {status}: {m}")));
    }
    let message = describe(status, object.as_ref());
    let dead = matches!(
        error_code,
        Some("invalid_grant" | "invalid_client" | "unauthorized_client")
    );
    // Some endpoints answer an OAuth error with 200; the error code decides.
    if dead && matches!(status, 400 | 401 | 200..=299) {
        Err(RefreshError::Rejected(message))
    } else {
        Err(RefreshError::Transient(message))
    }
}

/// The fields of a successful answer.
fn grant(o: &Map<String, Value>) -> Result<TokenGrant, String> {
    let access_token = match o.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("no access_token in the answer".into()),
    };
    let expires_in = match o.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| *f >= 0.0 && f.is_finite())
                        .map(|f| f as u64)
                })
                .ok_or("expires_in is not a non-negative number")?,
        ),
        Some(Value::String(s)) => Some(s.trim().parse().map_err(|_| "expires_in is not a number")?),
        Some(_) => return Err("expires_in is not a number".into()),
    };
    let text = |name: &str| {
        o.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(TokenGrant {
        access_token,
        expires_in,
        refresh_token: text("refresh_token"),
        id_token: text("id_token"),
        resource_url: text("resource_url"),
    })
}

/// "status N: code: description", the description trimmed and stripped of
/// control characters (it is text from the network headed for a log).
fn describe(status: u16, o: Option<&Map<String, Value>>) -> String {
    let mut m = format!("status {status}");
    let Some(o) = o else { return m };
    if let Some(code) = o.get("error").and_then(Value::as_str) {
        m.push_str(": ");
        m.extend(code.chars().filter(|c| !c.is_control()).take(64));
    }
    if let Some(desc) = o.get("error_description").and_then(Value::as_str) {
        m.push_str(": ");
        m.extend(desc.chars().filter(|c| !c.is_control()).take(200));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::file::parse;
    use std::path::Path;

    fn cred(json: &str, kind: OAuthKind) -> OAuthCredential {
        parse(Path::new("/c/x.json"), json.as_bytes(), kind).unwrap()
    }

    #[test]
    fn form_is_encoded_and_config_wins() {
        let c = cred(
            r#"{"refresh_token":"1//a+b/c=d&e f","client_id":"file-id","client_secret":"file-secret"}"#,
            OAuthKind::GeminiCli,
        );
        let body = String::from_utf8(refresh_form(&c, Some("cfg-id.apps"), None)).unwrap();
        assert_eq!(
            body,
            "grant_type=refresh_token&refresh_token=1%2F%2Fa%2Bb%2Fc%3Dd%26e+f&client_id=cfg-id.apps&client_secret=file-secret"
        );
        let q = cred(r#"{"refresh_token":"é~"}"#, OAuthKind::QwenCode);
        let body = String::from_utf8(refresh_form(&q, Some("qwen-client"), None)).unwrap();
        assert_eq!(
            body,
            "grant_type=refresh_token&refresh_token=%C3%A9%7E&client_id=qwen-client"
        );
    }

    #[test]
    fn endpoint_precedence() {
        let c = cred(
            r#"{"refresh_token":"r","token_uri":"http://file/token"}"#,
            OAuthKind::GeminiCli,
        );
        assert_eq!(
            token_endpoint(&c, Some("http://cfg/token")),
            "http://cfg/token"
        );
        assert_eq!(token_endpoint(&c, None), "http://file/token");
        let g = cred(r#"{"refresh_token":"r"}"#, OAuthKind::GeminiCli);
        assert_eq!(token_endpoint(&g, None), GEMINI_TOKEN_URL);
        let q = cred(r#"{"refresh_token":"r"}"#, OAuthKind::QwenCode);
        assert_eq!(token_endpoint(&q, None), QWEN_TOKEN_URL);
    }

    #[test]
    fn parses_google_and_qwen_grants() {
        let g = parse_token_response(
            200,
            br#"{"access_token":"ya29.new","expires_in":3599,"scope":"s","token_type":"Bearer","id_token":"eyJ.new"}"#,
        )
        .unwrap();
        assert_eq!(g.access_token, "ya29.new");
        assert_eq!(g.expires_in, Some(3599));
        assert_eq!(g.refresh_token, None);
        assert_eq!(g.id_token.as_deref(), Some("eyJ.new"));
        let q = parse_token_response(
            200,
            br#"{"access_token":"q-new","refresh_token":"q-rot","token_type":"Bearer","expires_in":"21600","resource_url":"portal.qwen.ai"}"#,
        )
        .unwrap();
        assert_eq!(q.refresh_token.as_deref(), Some("q-rot"));
        assert_eq!(q.expires_in, Some(21600));
        assert_eq!(q.resource_url.as_deref(), Some("portal.qwen.ai"));
        let d = format!("{g:?}{q:?}");
        for token in ["ya29.new", "eyJ.new", "q-new", "q-rot"] {
            assert!(!d.contains(token), "{d}");
        }
    }

    #[test]
    fn classifies_failures() {
        let rejected = |s, b: &str| {
            matches!(
                parse_token_response(s, b.as_bytes()),
                Err(RefreshError::Rejected(_))
            )
        };
        let transient = |s, b: &str| {
            matches!(
                parse_token_response(s, b.as_bytes()),
                Err(RefreshError::Transient(_))
            )
        };
        assert!(rejected(
            400,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#
        ));
        assert!(rejected(401, r#"{"error":"invalid_client"}"#));
        assert!(rejected(400, r#"{"error":"unauthorized_client"}"#));
        assert!(rejected(200, r#"{"error":"invalid_grant"}"#));
        assert!(transient(400, r#"{"error":"invalid_request"}"#));
        assert!(transient(500, r#"{"error":"invalid_grant"}"#));
        assert!(transient(503, "<html>unavailable</html>"));
        assert!(transient(429, r#"{"error":"rate_limited"}"#));
        assert!(transient(400, "not json"));
        assert!(transient(200, "not json"));
        assert!(transient(200, r#"{"token_type":"Bearer"}"#));
        assert!(transient(200, r#"{"access_token":""}"#));
        assert!(transient(
            200,
            r#"{"access_token":"a","expires_in":"soon"}"#
        ));
        assert_eq!(
            parse_token_response(
                400,
                br#"{"error":"invalid_grant","error_description":"Bad\nRequest"}"#
            ),
            Err(RefreshError::Rejected(
                "status 400: invalid_grant: BadRequest".into()
            ))
        );
        let e = parse_token_response(502, b"").unwrap_err().to_string();
        assert_eq!(e, "refresh failed (transient): status 502");
    }
}
