//! One OAuth credential file: its formats, its parser, and the fingerprint
//! that names it.
//!
//! Both supported CLI tools store a flat JSON object. The parser pulls out the
//! fields the gateway needs and keeps the whole object, so that a write-back
//! (see [`super::write`]) preserves whatever else the tool put there.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Largest credential file accepted. Real ones are a few KiB; the limit keeps
/// a stray huge `*.json` in a credential directory from costing memory.
pub const MAX_FILE_SIZE: usize = 1024 * 1024;

/// Which CLI tool's credential format a file follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OAuthKind {
    /// Gemini CLI's `~/.gemini/oauth_creds.json`: `access_token`,
    /// `refresh_token`, `scope`, `token_type`, `id_token`, `expiry_date`
    /// (unix milliseconds).
    GeminiCli,
    /// Qwen Code's `~/.qwen/oauth_creds.json`: `access_token`,
    /// `refresh_token`, `token_type`, `resource_url`, `expiry_date` (unix
    /// milliseconds).
    QwenCode,
}

impl OAuthKind {
    /// Parses the config spelling: `"gemini-cli"` or `"qwen-code"`.
    pub fn parse(s: &str) -> Option<OAuthKind> {
        match s {
            "gemini-cli" => Some(OAuthKind::GeminiCli),
            "qwen-code" => Some(OAuthKind::QwenCode),
            _ => None,
        }
    }

    /// The config spelling, the inverse of [`OAuthKind::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthKind::GeminiCli => "gemini-cli",
            OAuthKind::QwenCode => "qwen-code",
        }
    }
}

impl fmt::Display for OAuthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential's stable identity: a 64-bit FNV-1a hash of its refresh token.
///
/// It is deterministic across runs and machines (no random hash keys), so it
/// can name a credential in logs, metrics and admin output. Showing it is safe:
/// 64 bits of a hash say nothing usable about a token of far more entropy.
///
/// A provider that rotates refresh tokens (Qwen does) gives the credential a
/// new fingerprint on each refresh; see [`super::scan::Changes::rekeyed`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(u64);

impl Fingerprint {
    /// The fingerprint of a refresh token.
    pub fn of(refresh_token: &str) -> Fingerprint {
        // FNV-1a, 64-bit: tiny, dependency-free and stable forever, which is
        // all an identifier needs (this is not a security boundary).
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        for &b in refresh_token.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        Fingerprint(h)
    }

    /// The raw 64-bit value.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Fingerprint {
    /// Sixteen lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// One OAuth credential, as read from (or about to be written to) its file.
///
/// `Debug` prints the path, kind, expiry and fingerprint only: never a token
/// or a secret, so a credential can be logged as a whole.
#[derive(Clone, PartialEq)]
pub struct OAuthCredential {
    /// The file it came from, as named by the config (or the config's
    /// directory joined with the file name).
    pub path: PathBuf,
    /// The file format.
    pub kind: OAuthKind,
    /// The bearer token for the provider; empty when the file has none yet
    /// (then the credential needs a refresh before use).
    pub access_token: String,
    /// The long-lived token used to get new access tokens; never empty.
    pub refresh_token: String,
    /// When `access_token` expires, unix milliseconds (`expiry_date`).
    pub expiry_ms: Option<u64>,
    /// Qwen's API host for this account (`resource_url`), when present.
    pub resource_url: Option<String>,
    /// The token endpoint the file names (`token_uri`); the config's wins.
    pub token_uri: Option<String>,
    /// The OAuth client id the file names (`client_id`); the config's wins.
    pub client_id: Option<String>,
    /// The OAuth client secret the file names (`client_secret`); the
    /// config's wins.
    pub client_secret: Option<String>,
    /// The whole JSON object, unknown fields included, for write-back.
    pub(super) fields: Map<String, Value>,
}

impl OAuthCredential {
    /// The credential's stable id (see [`Fingerprint`]).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.refresh_token)
    }

    /// The whole JSON object as read, unknown fields included.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Whether the access token is missing, or expires within `margin_ms` of
    /// `now_ms`. A file without `expiry_date` is taken as not expiring: the
    /// caller learns otherwise from a 401.
    pub fn needs_refresh(&self, now_ms: u64, margin_ms: u64) -> bool {
        self.access_token.is_empty()
            || self
                .expiry_ms
                .is_some_and(|e| e <= now_ms.saturating_add(margin_ms))
    }

    /// Builds a credential from a parsed JSON object, checking the fields the
    /// gateway relies on. Shared by [`parse`] and the write-back path, so a
    /// credential in memory always matches what its file would parse to.
    pub(super) fn from_fields(
        path: &Path,
        kind: OAuthKind,
        fields: Map<String, Value>,
    ) -> Result<OAuthCredential, FileError> {
        let refresh_token = match fields.get("refresh_token") {
            None | Some(Value::Null) => return Err(FileError::Missing("refresh_token")),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(FileError::EmptyField("refresh_token"))
            }
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(FileError::WrongType("refresh_token", "a string")),
        };
        // A file may hold only a refresh token (say, copied by hand): it is
        // usable after one refresh, so a missing access token is no error.
        let access_token = opt_string(&fields, "access_token")?.unwrap_or_default();
        let expiry_ms = expiry(&fields)?;
        let resource_url = opt_string(&fields, "resource_url")?;
        let token_uri = opt_string(&fields, "token_uri")?;
        let client_id = opt_string(&fields, "client_id")?;
        let client_secret = opt_string(&fields, "client_secret")?;
        Ok(OAuthCredential {
            path: path.to_path_buf(),
            kind,
            access_token,
            refresh_token,
            expiry_ms,
            resource_url,
            token_uri,
            client_id,
            client_secret,
            fields,
        })
    }
}

impl fmt::Debug for OAuthCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not derived: every token and secret stays out.
        f.debug_struct("OAuthCredential")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("fingerprint", &self.fingerprint())
            .field("expiry_ms", &self.expiry_ms)
            .finish_non_exhaustive()
    }
}

/// Why a credential file was not accepted. The messages name the field and
/// the problem, never a value, so they are safe to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileError {
    /// The file is larger than [`MAX_FILE_SIZE`] bytes.
    TooLarge(u64),
    /// The file is empty (often a writer caught between create and write).
    EmptyFile,
    /// Not valid JSON (serde_json's position-only syntax message).
    NotJson(String),
    /// Valid JSON, but not an object.
    NotObject,
    /// A required field is absent or null.
    Missing(&'static str),
    /// A required field is an empty string.
    EmptyField(&'static str),
    /// A field has the wrong type: (field, what was expected).
    WrongType(&'static str, &'static str),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::TooLarge(n) => {
                write!(f, "file too large ({n} bytes, limit {MAX_FILE_SIZE})")
            }
            FileError::EmptyFile => f.write_str("file is empty"),
            FileError::NotJson(e) => write!(f, "not JSON: {e}"),
            FileError::NotObject => f.write_str("not a JSON object"),
            FileError::Missing(field) => write!(f, "missing {field}"),
            FileError::EmptyField(field) => write!(f, "empty {field}"),
            FileError::WrongType(field, want) => write!(f, "{field} is not {want}"),
        }
    }
}

impl std::error::Error for FileError {}

/// Parses one credential file's bytes. `path` is recorded in the result (it
/// is not read here, so callers choose how to do the I/O).
pub fn parse(path: &Path, bytes: &[u8], kind: OAuthKind) -> Result<OAuthCredential, FileError> {
    if bytes.len() > MAX_FILE_SIZE {
        return Err(FileError::TooLarge(bytes.len() as u64));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(FileError::EmptyFile);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's syntax errors carry a position, not the input; build
        // the message from the parts anyway so no content can leak.
        FileError::NotJson(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    match value {
        Value::Object(fields) => OAuthCredential::from_fields(path, kind, fields),
        _ => Err(FileError::NotObject),
    }
}

/// An optional string field: absent or null is `None`, anything but a string
/// is an error.
fn opt_string(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, FileError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FileError::WrongType(name, "a string")),
    }
}

/// `expiry_date`: unix milliseconds as a JSON number, or as a string of
/// digits (some tools and hand edits write it quoted).
fn expiry(fields: &Map<String, Value>) -> Result<Option<u64>, FileError> {
    const WANT: &str = "unix milliseconds (a non-negative number)";
    match fields.get("expiry_date") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                // JavaScript writes whole numbers without a fraction, but a
                // float (1.7e12) still names a valid instant.
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                        Ok(Some(f as u64))
                    }
                    _ => Err(FileError::WrongType("expiry_date", WANT)),
                }
            }
        }
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| FileError::WrongType("expiry_date", WANT)),
        Some(_) => Err(FileError::WrongType("expiry_date", WANT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMINI: &str = r#"{
      "access_token": "ya29.secret-access",
      "refresh_token": "1//secret-refresh",
      "scope": "https://www.googleapis.com/auth/cloud-platform openid",
      "token_type": "Bearer",
      "id_token": "eyJ.secret-id.sig",
      "expiry_date": 1754000000000
    }"#;

    const QWEN: &str = r#"{
      "access_token": "qwen-secret-access",
      "refresh_token": "qwen-secret-refresh",
      "token_type": "Bearer",
      "resource_url": "portal.qwen.ai",
      "expiry_date": 1754000000123
    }"#;

    fn p() -> &'static Path {
        Path::new("/creds/a.json")
    }

    fn err(json: &str) -> FileError {
        parse(p(), json.as_bytes(), OAuthKind::GeminiCli).unwrap_err()
    }

    #[test]
    fn kind_parses_config_names() {
        assert_eq!(OAuthKind::parse("gemini-cli"), Some(OAuthKind::GeminiCli));
        assert_eq!(OAuthKind::parse("qwen-code"), Some(OAuthKind::QwenCode));
        assert_eq!(OAuthKind::parse("gemini"), None);
        for k in [OAuthKind::GeminiCli, OAuthKind::QwenCode] {
            assert_eq!(OAuthKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn parses_gemini_cli_file() {
        let c = parse(p(), GEMINI.as_bytes(), OAuthKind::GeminiCli).unwrap();
        assert_eq!(c.path, p());
        assert_eq!(c.kind, OAuthKind::GeminiCli);
        assert_eq!(c.access_token, "ya29.secret-access");
        assert_eq!(c.refresh_token, "1//secret-refresh");
        assert_eq!(c.expiry_ms, Some(1_754_000_000_000));
        assert_eq!(c.resource_url, None);
        assert_eq!(c.token_uri, None);
        assert_eq!(
            c.fields()["scope"],
            "https://www.googleapis.com/auth/cloud-platform openid"
        );
        assert_eq!(c.fields()["id_token"], "eyJ.secret-id.sig");
    }

    #[test]
    fn parses_qwen_code_file() {
        let c = parse(p(), QWEN.as_bytes(), OAuthKind::QwenCode).unwrap();
        assert_eq!(c.kind, OAuthKind::QwenCode);
        assert_eq!(c.access_token, "qwen-secret-access");
        assert_eq!(c.refresh_token, "qwen-secret-refresh");
        assert_eq!(c.resource_url.as_deref(), Some("portal.qwen.ai"));
        assert_eq!(c.expiry_ms, Some(1_754_000_000_123));
    }

    #[test]
    fn file_may_name_endpoint_and_client() {
        let c = parse(
            p(),
            br#"{"refresh_token":"r","token_uri":"http://127.0.0.1:9/token","client_id":"cid","client_secret":"cs"}"#,
            OAuthKind::GeminiCli,
        )
        .unwrap();
        assert_eq!(c.token_uri.as_deref(), Some("http://127.0.0.1:9/token"));
        assert_eq!(c.client_id.as_deref(), Some("cid"));
        assert_eq!(c.client_secret.as_deref(), Some("cs"));
        // Only a refresh token: usable after a refresh.
        assert_eq!(c.access_token, "");
        assert_eq!(c.expiry_ms, None);
        assert!(c.needs_refresh(0, 0));
    }

    #[test]
    fn expiry_forms() {
        let e = |v: &str| {
            parse(
                p(),
                format!(r#"{{"refresh_token":"r","expiry_date":{v}}}"#).as_bytes(),
                OAuthKind::QwenCode,
            )
            .map(|c| c.expiry_ms)
        };
        assert_eq!(e("1754000000000"), Ok(Some(1_754_000_000_000)));
        assert_eq!(e(r#""1754000000000""#), Ok(Some(1_754_000_000_000)));
        assert_eq!(e(r#"" 17 ""#), Ok(Some(17)));
        assert_eq!(e("1.754e12"), Ok(Some(1_754_000_000_000)));
        assert_eq!(e("null"), Ok(None));
        let wrong = Err(FileError::WrongType(
            "expiry_date",
            "unix milliseconds (a non-negative number)",
        ));
        assert_eq!(e("-5"), wrong);
        assert_eq!(e(r#""soon""#), wrong);
        assert_eq!(e("true"), wrong);
        assert_eq!(e("[1]"), wrong);
    }

    #[test]
    fn every_error() {
        assert!(matches!(err("{not json"), FileError::NotJson(_)));
        assert!(matches!(
            err(r#"{"refresh_token":"r"} trailing"#),
            FileError::NotJson(_)
        ));
        assert_eq!(err(""), FileError::EmptyFile);
        assert_eq!(err(" \n"), FileError::EmptyFile);
        assert_eq!(err("[1,2]"), FileError::NotObject);
        assert_eq!(err(r#""s""#), FileError::NotObject);
        assert_eq!(
            err(r#"{"access_token":"a"}"#),
            FileError::Missing("refresh_token")
        );
        assert_eq!(
            err(r#"{"refresh_token":null}"#),
            FileError::Missing("refresh_token")
        );
        assert_eq!(
            err(r#"{"refresh_token":""}"#),
            FileError::EmptyField("refresh_token")
        );
        assert_eq!(
            err(r#"{"refresh_token":5}"#),
            FileError::WrongType("refresh_token", "a string")
        );
        assert_eq!(
            err(r#"{"refresh_token":"r","access_token":{}}"#),
            FileError::WrongType("access_token", "a string")
        );
        assert_eq!(
            err(r#"{"refresh_token":"r","resource_url":1}"#),
            FileError::WrongType("resource_url", "a string")
        );
        let big = format!(
            r#"{{"refresh_token":"r","pad":"{}"}}"#,
            "x".repeat(MAX_FILE_SIZE)
        );
        assert_eq!(err(&big), FileError::TooLarge(big.len() as u64));
        // Messages name fields, never values.
        let msg = err(r#"{"refresh_token":"r","access_token":["secret-value"]}"#).to_string();
        assert!(!msg.contains("secret"), "{msg}");
        let msg = err(r#"{"refresh_token":"secret-value" oops}"#).to_string();
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn fingerprint_is_stable_and_printable() {
        // FNV-1a 64 reference values.
        assert_eq!(Fingerprint::of("").value(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fingerprint::of("a").value(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fingerprint::of("a").to_string(), "af63dc4c8601ec8c");
        assert_eq!(Fingerprint::of("").to_string().len(), 16);
        assert_ne!(Fingerprint::of("r1"), Fingerprint::of("r2"));
        let c = parse(p(), GEMINI.as_bytes(), OAuthKind::GeminiCli).unwrap();
        assert_eq!(c.fingerprint(), Fingerprint::of("1//secret-refresh"));
    }

    #[test]
    fn debug_prints_no_secret() {
        for (json, kind) in [(GEMINI, OAuthKind::GeminiCli), (QWEN, OAuthKind::QwenCode)] {
            let mut c = parse(p(), json.as_bytes(), kind).unwrap();
            c.client_secret = Some("client-secret-value".into());
            c.client_id = Some("client-secret-id".into());
            let d = format!("{c:?} {c:#?}");
            assert!(!d.contains("secret"), "{d}");
            assert!(d.contains(&c.fingerprint().to_string()), "{d}");
            assert!(d.contains("a.json"), "{d}");
        }
    }

    #[test]
    fn needs_refresh_uses_margin() {
        let c = parse(p(), QWEN.as_bytes(), OAuthKind::QwenCode).unwrap();
        let exp = c.expiry_ms.unwrap();
        assert!(!c.needs_refresh(exp - 10_000, 5_000));
        assert!(c.needs_refresh(exp - 10_000, 10_000));
        assert!(c.needs_refresh(exp + 1, 0));
    }
}
