#![no_main]
//! Credential files and token-endpoint answers: data = [flags, status low
//! byte, bytes...]. The bytes are read as a credential file (both kinds)
//! and as a token response; when both succeed the grant is applied and the
//! updated file must parse back with the new tokens.
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shardgate::credentials::write::apply_grant;
use shardgate::credentials::{oauth::parse_token_response, parse, OAuthKind};

fuzz_target!(|data: &[u8]| {
    let [flags, status_byte, bytes @ ..] = data else {
        return;
    };
    let status = match flags % 4 {
        0 => 200,
        1 => 400,
        2 => 100 + u16::from(*status_byte) * 2,
        _ => u16::from(*status_byte) << 8 | u16::from(*flags),
    };
    let kind = if flags & 0x80 != 0 { OAuthKind::QwenCode } else { OAuthKind::GeminiCli };
    let path = Path::new("/creds/fuzz.json");
    let cred = parse(path, bytes, kind);
    let grant = parse_token_response(status, bytes);
    if let Ok(c) = &cred {
        assert!(!c.refresh_token.is_empty());
        let _ = format!("{c:?}");
        let _ = c.needs_refresh(u64::from(*status_byte) << 40, u64::MAX);
    }
    if let Err(e) = &grant {
        let _ = e.to_string();
    }
    let (Ok(cred), Ok(grant)) = (cred, grant) else {
        return;
    };
    let now_ms = u64::MAX - u64::from(*status_byte);
    let updated = apply_grant(&cred, &grant, now_ms);
    let text = serde_json::to_vec_pretty(updated.fields()).unwrap();
    let back = parse(path, &text, kind).expect("written-back file does not parse");
    assert_eq!(back.access_token, grant.access_token);
    if let Some(rt) = &grant.refresh_token {
        if !rt.is_empty() {
            assert_eq!(&back.refresh_token, rt);
        }
    }
});
