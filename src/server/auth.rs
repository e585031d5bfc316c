//! Client authentication against the configured client keys.

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

fn presented_key<'a>(req: &'a Request<'_>) -> Option<&'a [u8]> {
    if let Some(value) = req.header("authorization") {
        let value = trim(value);
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(trim(&value[7..]));
        }
        return Some(value);
    }
    if let Some(value) = req.header("x-api-key") {
        return Some(trim(value));
    }
    if let Some(value) = req.header("x-goog-api-key") {
        return Some(trim(value));
    }
    req.query().and_then(|q| {
        q.split(|b| *b == b'&')
            .find_map(|pair| pair.strip_prefix(b"key="))
    })
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
