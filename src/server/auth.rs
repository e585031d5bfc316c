//! Client authentication against the configured client keys.

use std::borrow::Cow;

use subtle::ConstantTimeEq;

use super::conn::Request;
use crate::config::ClientKey;

/// The outcome of checking a request's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No client keys are configured: every request is let through.
    Open,
    /// The request carries the key at this index of the configured keys.
    Key(usize),
    /// The request carries no key at all.
    Missing,
    /// The request carries a key that matches none.
    Invalid,
}

/// The configured client keys.
pub struct Authenticator {
    keys: Vec<Vec<u8>>,
}

impl Authenticator {
    /// An authenticator for `keys`; with none, every request is let through.
    pub fn new(keys: &[ClientKey]) -> Self {
        Authenticator {
            keys: keys
                .iter()
                .map(|k| k.secret.expose().as_bytes().to_vec())
                .collect(),
        }
    }

    /// Checks the key a request presents, as `Authorization: Bearer`,
    /// `x-api-key`, `x-goog-api-key` or the `key` query parameter (the
    /// first of those present is the one checked).
    pub fn check(&self, req: &Request<'_>) -> AuthOutcome {
        if self.keys.is_empty() {
            return AuthOutcome::Open;
        }
        let Some(presented) = presented_key(req) else {
            return AuthOutcome::Missing;
        };
        let presented: &[u8] = &presented;
        // Compare against every key without stopping early, so the time
        // taken does not tell which key (or which prefix) was close.
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            if bool::from(key.as_slice().ct_eq(presented)) {
                found = Some(i);
            }
        }
        match found {
            Some(i) => AuthOutcome::Key(i),
            None => AuthOutcome::Invalid,
        }
    }
}

/// The key a request presents: `Authorization` (a bearer token, else the
/// whole value), `x-api-key`, `x-goog-api-key`, or the `key` query
/// parameter (percent-decoded).
pub(crate) fn presented_key<'a>(req: &'a Request<'_>) -> Option<Cow<'a, [u8]>> {
    if let Some(value) = req.header("authorization") {
        let value = trim(value);
        return Some(Cow::Borrowed(bearer_token(value).unwrap_or(value)));
    }
    if let Some(value) = req.header("x-api-key") {
        return Some(Cow::Borrowed(trim(value)));
    }
    if let Some(value) = req.header("x-goog-api-key") {
        return Some(Cow::Borrowed(trim(value)));
    }
    req.query().and_then(|q| {
        q.split(|b| *b == b'&')
            .find_map(|pair| pair.strip_prefix(b"key="))
            .map(percent_decode)
    })
}

/// The token of an `Authorization: Bearer <token>` value (scheme matched
/// case-insensitively), if the value has that form.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    (value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ")).then(|| trim(&value[7..]))
}

/// Decodes `%XX` escapes (a `+` stays a `+`: keys never hold spaces, and a
/// key with a literal `+` must still match). A malformed escape is kept
/// as it is, so it simply fails to match.
pub(crate) fn percent_decode(v: &[u8]) -> Cow<'_, [u8]> {
    if !v.contains(&b'%') {
        return Cow::Borrowed(v);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let (Some(hi), Some(lo)) = (hex(v[i + 1]), hex(v[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_of_query_keys() {
        assert_eq!(
            &*percent_decode(b"sk-gw%2Bb64%2Fkey%3D%3D"),
            b"sk-gw+b64/key=="
        );
        assert_eq!(&*percent_decode(b"plain+key"), b"plain+key");
        assert_eq!(&*percent_decode(b"bad%zzx%4"), b"bad%zzx%4");
        assert_eq!(&*percent_decode(b"end%41"), b"endA");
    }

    #[test]
    fn trims_spaces_and_tabs() {
        assert_eq!(trim(b" \tkey \t"), b"key");
        assert_eq!(trim(b""), b"");
    }
}
