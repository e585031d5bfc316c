//! The mock's credential side: the OAuth token endpoint (`POST
//! /oauth/token`, refresh-token grant only) and what a presented key makes
//! a model request do. All of it is test fixture: the tokens are
//! predictable and the stats show them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::json::{write_string, write_u64};

/// The scope every issued token claims.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform openid";

/// The fields of a token request form
/// (`application/x-www-form-urlencoded`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub refresh_token: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// Parses a form body; unknown fields are ignored, a repeated one keeps
/// its last value, names and values are percent-decoded (`+` is a space).
pub fn parse_form(body: &[u8]) -> TokenForm {
    let mut form = TokenForm::default();
    for pair in body.trim_ascii().split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let slot = match form_decode(name).as_str() {
            "grant_type" => &mut form.grant_type,
            "refresh_token" => &mut form.refresh_token,
            "client_id" => &mut form.client_id,
            "client_secret" => &mut form.client_secret,
            _ => continue,
        };
        *slot = Some(form_decode(value));
    }
    form
}

/// Decodes one form component: `+` is a space, `%XX` a byte; a malformed
/// escape is kept as it is.
fn form_decode(v: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < v.len() => match (hex(v[i + 1]), hex(v[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a token request gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// 400 `invalid_request`: not a refresh-token grant, or fields missing.
    Invalid,
    /// 400 `invalid_grant`: a `rt-revoked...` token.
    Revoked,
    /// 500: an odd-numbered call with a `rt-flaky...` token.
    Flaky,
    /// 200 with a new access token (and a new refresh token when the old
    /// one contains `rotate`).
    Issued {
        access_token: String,
        refresh_token: Option<String>,
        expires_in: u64,
    },
}

impl Refresh {
    /// The HTTP status and JSON body of this answer.
    pub fn render(&self, out: &mut Vec<u8>) -> u16 {
        match self {
            Refresh::Invalid => {
                out.extend_from_slice(b"{\"error\":\"invalid_request\",\"error_description\":\"mock provider: expected grant_type=refresh_token with refresh_token and client_id\"}");
                400
            }
            Refresh::Revoked => {
                out.extend_from_slice(b"{\"error\":\"invalid_grant\",\"error_description\":\"Token has been expired or revoked.\"}");
                400
            }
            Refresh::Flaky => {
                out.extend_from_slice(b"{\"error\":\"server_error\",\"error_description\":\"mock provider: flaky token endpoint\"}");
                500
            }
            Refresh::Issued {
                access_token,
                refresh_token,
                expires_in,
            } => {
                out.extend_from_slice(b"{\"access_token\":");
                write_string(out, access_token);
                out.extend_from_slice(b",\"expires_in\":");
                write_u64(out, *expires_in);
                out.extend_from_slice(b",\"token_type\":\"Bearer\",\"scope\":");
                write_string(out, SCOPE);
                if let Some(rt) = refresh_token {
                    out.extend_from_slice(b",\"refresh_token\":");
                    write_string(out, rt);
                }
                out.push(b'}');
                200
            }
        }
    }
}

/// The token server's state, shared by all shards.
#[derive(Default)]
pub struct OAuthState {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Tokens issued so far (never reset: every token is new).
    issued_count: u64,
    /// Each issued access token and when it expires.
    issued: HashMap<String, Instant>,
    /// Token endpoint calls (reset by `/mock/reset-stats`).
    refreshes: u64,
    /// Calls per refresh token (reset by `/mock/reset-stats`).
    by_token: HashMap<String, u64>,
}

impl OAuthState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a token endpoint call; returns its number (from 1) among the
    /// calls with this refresh token, or 0 without one.
    pub fn count(&self, form: &TokenForm) -> u64 {
        let mut inner = self.lock();
        inner.refreshes += 1;
        match &form.refresh_token {
            Some(rt) => {
                let n = inner.by_token.entry(rt.clone()).or_default();
                *n += 1;
                *n
            }
            None => 0,
        }
    }

    /// Answers the token request `form`, the `call`-th with its refresh
    /// token; an issued token lives `ttl` from `now`.
    pub fn answer(&self, form: &TokenForm, call: u64, ttl: Duration, now: Instant) -> Refresh {
        let (Some("refresh_token"), Some(rt), Some(_)) = (
            form.grant_type.as_deref(),
            form.refresh_token.as_deref(),
            form.client_id.as_deref(),
        ) else {
            return Refresh::Invalid;
        };
        if rt.is_empty() {
            return Refresh::Invalid;
        }
        if rt.starts_with("rt-revoked") {
            return Refresh::Revoked;
        }
        if rt.starts_with("rt-flaky") && call % 2 == 1 {
            return Refresh::Flaky;
        }
        let mut inner = self.lock();
        inner.issued_count += 1;
        let n = inner.issued_count;
        let access_token = format!("at-{n}-{rt}");
        inner.issued.insert(access_token.clone(), now + ttl);
        Refresh::Issued {
            access_token,
            refresh_token: rt.contains("rotate").then(|| format!("{rt}-r{n}")),
            expires_in: ttl.as_secs(),
        }
    }

    /// Whether `token` was issued here and has not expired at `now`.
    pub fn valid(&self, token: &[u8], now: Instant) -> bool {
        let Ok(token) = std::str::from_utf8(token) else {
            return false;
        };
        self.lock().issued.get(token).is_some_and(|&exp| now < exp)
    }

    /// Zeroes the call counters (issued tokens stay valid).
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.refreshes = 0;
        inner.by_token.clear();
    }

    /// Appends `,"oauth_refreshes":N,"oauth_refreshes_by_token":{...}`.
    pub fn write_stats(&self, out: &mut Vec<u8>) {
        let inner = self.lock();
        out.extend_from_slice(b",\"oauth_refreshes\":");
        write_u64(out, inner.refreshes);
        out.extend_from_slice(b",\"oauth_refreshes_by_token\":");
        let sorted: BTreeMap<&str, u64> = inner
            .by_token
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        write_counts(out, sorted);
    }
}

/// Writes `{"key":count,...}`.
pub fn write_counts<'a>(out: &mut Vec<u8>, counts: impl IntoIterator<Item = (&'a str, u64)>) {
    out.push(b'{');
    for (i, (key, n)) in counts.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_u64(out, n);
    }
    out.push(b'}');
}

/// The status a key's marker asks for: `fail429`, `fail500`, `fail401`,
/// `fail403` anywhere in it. A `memchr` for `f` in the common case (no
/// searcher to build: keys are short).
pub fn key_fault(key: &[u8]) -> Option<u16> {
    memchr::memchr_iter(b'f', key).find_map(|i| match key.get(i..i + 7)? {
        b"fail429" => Some(429),
        b"fail500" => Some(500),
        b"fail401" => Some(401),
        b"fail403" => Some(403),
        _ => None,
    })
}

/// The message of a key fault answer.
pub fn fault_message(status: u16) -> &'static str {
    match status {
        401 => "mock provider: invalid API key",
        403 => "mock provider: permission denied for this key",
        429 => "mock provider: rate limited for this key",
        _ => "mock provider: internal error for this key",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> TokenForm {
        parse_form(body.as_bytes())
    }

    fn refresh_form(rt: &str) -> TokenForm {
        form(&format!(
            "grant_type=refresh_token&refresh_token={rt}&client_id=c"
        ))
    }

    #[test]
    fn forms_are_percent_decoded() {
        let f = form("grant_type=refresh_token&refresh_token=1%2F%2Fab%2Bc+d&client_id=id.apps&client_secret=s%3D&x=y&\r\n");
        assert_eq!(f.grant_type.as_deref(), Some("refresh_token"));
        assert_eq!(f.refresh_token.as_deref(), Some("1//ab+c d"));
        assert_eq!(f.client_id.as_deref(), Some("id.apps"));
        assert_eq!(f.client_secret.as_deref(), Some("s="));
        let f = form("refresh_token=bad%zz%4&client_id&grant_type=a%41");
        assert_eq!(f.refresh_token.as_deref(), Some("bad%zz%4"));
        assert_eq!(f.client_id.as_deref(), Some(""));
        assert_eq!(f.grant_type.as_deref(), Some("aA"));
        assert_eq!(form(""), TokenForm::default());
        assert_eq!(form("end%41").grant_type, None);
        assert_eq!(form_decode(b"end%41"), "endA");
        assert_eq!(form_decode(b"%"), "%");
    }

    #[test]
    fn refreshes_issue_new_tokens_that_expire() {
        let s = OAuthState::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        let f = refresh_form("rt-good");
        let a = s.answer(&f, s.count(&f), ttl, now);
        let b = s.answer(&f, s.count(&f), ttl, now);
        let Refresh::Issued {
            access_token: a,
            refresh_token: None,
            expires_in: 60,
        } = a
        else {
            panic!("{a:?}")
        };
        let Refresh::Issued {
            access_token: b, ..
        } = b
        else {
            panic!("{b:?}")
        };
        assert_eq!(a, "at-1-rt-good");
        assert_eq!(b, "at-2-rt-good");
        assert!(s.valid(a.as_bytes(), now));
        assert!(s.valid(b.as_bytes(), now + Duration::from_secs(59)));
        assert!(!s.valid(b.as_bytes(), now + ttl));
        assert!(!s.valid(b"at-3-rt-good", now));
        assert!(!s.valid(b"at-expired-x", now));

        let f = refresh_form("rt-rotate-1");
        let r = s.answer(&f, s.count(&f), ttl, now);
        assert_eq!(
            r,
            Refresh::Issued {
                access_token: "at-3-rt-rotate-1".into(),
                refresh_token: Some("rt-rotate-1-r3".into()),
                expires_in: 60
            }
        );
        let mut out = Vec::new();
        assert_eq!(r.render(&mut out), 200);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["refresh_token"], "rt-rotate-1-r3");
        assert_eq!(v["token_type"], "Bearer");
    }

    #[test]
    fn revoked_flaky_and_bad_requests() {
        let s = OAuthState::default();
        let (now, ttl) = (Instant::now(), Duration::from_secs(1));
        let f = refresh_form("rt-revoked-x");
        assert_eq!(s.answer(&f, s.count(&f), ttl, now), Refresh::Revoked);
        let f = refresh_form("rt-flaky-1");
        let outcomes: Vec<bool> = (0..4)
            .map(|_| s.answer(&f, s.count(&f), ttl, now) == Refresh::Flaky)
            .collect();
        assert_eq!(outcomes, [true, false, true, false]);
        for bad in [
            "grant_type=authorization_code&refresh_token=r&client_id=c",
            "grant_type=refresh_token&client_id=c",
            "grant_type=refresh_token&refresh_token=r",
            "grant_type=refresh_token&refresh_token=&client_id=c",
            "refresh_token=r&client_id=c",
        ] {
            let f = form(bad);
            assert_eq!(
                s.answer(&f, s.count(&f), ttl, now),
                Refresh::Invalid,
                "{bad}"
            );
        }
        let mut out = Vec::new();
        assert_eq!(Refresh::Revoked.render(&mut out), 400);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "invalid_grant");

        let stats = |s: &OAuthState| {
            let mut out = b"{\"x\":0".to_vec();
            s.write_stats(&mut out);
            out.push(b'}');
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let v = stats(&s);
        assert_eq!(v["oauth_refreshes"], 10);
        assert_eq!(v["oauth_refreshes_by_token"]["rt-flaky-1"], 4);
        assert_eq!(v["oauth_refreshes_by_token"]["r"], 3);
        s.reset();
        let v = stats(&s);
        assert_eq!(v["oauth_refreshes"], 0);
        assert_eq!(v["oauth_refreshes_by_token"], serde_json::json!({}));
        // After a reset a flaky token fails first again.
        let f = refresh_form("rt-flaky-1");
        assert_eq!(s.answer(&f, s.count(&f), ttl, now), Refresh::Flaky);
    }

    #[test]
    fn key_markers() {
        assert_eq!(key_fault(b"sk-fail429-a"), Some(429));
        assert_eq!(key_fault(b"fail500"), Some(500));
        assert_eq!(key_fault(b"x-fail401"), Some(401));
        assert_eq!(key_fault(b"failure-fail403"), Some(403));
        assert_eq!(key_fault(b"sk-fail"), None);
        assert_eq!(key_fault(b"sk-fail4"), None);
        assert_eq!(key_fault(b"sk-plain"), None);
    }
}
