//! The mock provider's credential fixtures over loopback HTTP: the OAuth
//! token endpoint (`POST /oauth/token`), per-key faults in each protocol,
//! issued access tokens and their expiry, `--require-key`, and the
//! per-key / OAuth counters of `/mock/stats` with `/mock/reset-stats`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    OpenAi,
    Anthropic,
    Gemini,
}

const ALL: [Proto; 3] = [Proto::OpenAi, Proto::Anthropic, Proto::Gemini];

/// `POST /oauth/token` with a form body.
fn post_form(body: &str) -> Vec<u8> {
    format!(
        "POST /oauth/token HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn refresh(mock: &Proc, refresh_token: &str) -> Response {
    let body = format!(
        "grant_type=refresh_token&refresh_token={refresh_token}&client_id=mock-client.apps&client_secret=sec%3Dret"
    );
    roundtrip(mock.addr, &post_form(&body))
}

/// Refreshes `refresh_token` and returns the new access token.
fn access_token(mock: &Proc, refresh_token: &str) -> String {
    let r = refresh(mock, refresh_token);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// A model request in `proto` presenting `key` (in the protocol's header)
/// for `model`.
fn model_request(proto: Proto, model: &str, key: Option<&str>) -> Vec<u8> {
    let key_header;
    let mut headers: Vec<&str> = Vec::new();
    match proto {
        Proto::OpenAi => {
            if let Some(k) = key {
                key_header = format!("Authorization: Bearer {k}");
                headers.push(&key_header);
            }
            post_json("/v1/chat/completions", &chat_body(model, false), &headers)
        }
        Proto::Anthropic => {
            if let Some(k) = key {
                key_header = format!("x-api-key: {k}");
                headers.push(&key_header);
            }
            headers.push("anthropic-version: 2023-06-01");
            let body =
                json!({"model":model,"max_tokens":64,"messages":[{"role":"user","content":"Hi"}]});
            post_json("/v1/messages", &body.to_string(), &headers)
        }
        Proto::Gemini => {
            if let Some(k) = key {
                key_header = format!("x-goog-api-key: {k}");
                headers.push(&key_header);
            }
            let body = json!({"contents":[{"role":"user","parts":[{"text":"Hi"}]}]});
            let path = format!("/v1beta/models/{model}:generateContent");
            post_json(&path, &body.to_string(), &headers)
        }
    }
}

/// Asserts `r` is an error in `proto`'s shape with `status`.
#[track_caller]
fn assert_proto_error(proto: Proto, r: &Response, status: u16) {
    assert_eq!(r.status, status, "{proto:?}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    match proto {
        Proto::OpenAi => {
            let code = match status {
                401 => "invalid_api_key",
                403 => "permission_denied",
                429 => "rate_limited",
                _ => "mock_error",
            };
            assert_eq!(v["error"]["code"], code, "{v}");
            assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
        }
        Proto::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                _ => "api_error",
            };
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], kind, "{v}");
        }
        Proto::Gemini => {
            let name = match status {
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                429 => "RESOURCE_EXHAUSTED",
                _ => "INTERNAL",
            };
            assert_eq!(v["error"]["code"], status, "{v}");
            assert_eq!(v["error"]["status"], name, "{v}");
        }
    }
}

fn stats(mock: &Proc) -> Value {
    roundtrip(mock.addr, &get("/mock/stats")).json()
}

fn reset(mock: &Proc) {
    let r = roundtrip(mock.addr, &post_json("/mock/reset-stats", "", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn refresh_success_rotation_revoked_flaky_and_bad_requests() {
    let mock = start_mock(&[]);
    let r = refresh(&mock, "rt-good");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["access_token"], "at-1-rt-good");
    assert_eq!(v["expires_in"], 3600);
    assert_eq!(v["token_type"], "Bearer");
    assert!(v["scope"].is_string());
    assert!(v.get("refresh_token").is_none(), "{v}");
    assert_eq!(access_token(&mock, "rt-good"), "at-2-rt-good");

    // Values are percent-decoded; `rotate` tokens come back renewed.
    let v = refresh(&mock, "1%2F%2Frt-rotate%2Bx").json();
    assert_eq!(v["access_token"], "at-3-1//rt-rotate+x");
    assert_eq!(v["refresh_token"], "1//rt-rotate+x-r3");

    let r = refresh(&mock, "rt-revoked-1");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error":"invalid_grant","error_description":"Token has been expired or revoked."})
    );

    let statuses: Vec<u16> = (0..4)
        .map(|_| refresh(&mock, "rt-flaky-a").status)
        .collect();
    assert_eq!(statuses, [500, 200, 500, 200]);
    // Another flaky token has its own count.
    assert_eq!(refresh(&mock, "rt-flaky-b").status, 500);

    for bad in [
        "grant_type=authorization_code&code=x&client_id=c",
        "grant_type=refresh_token&client_id=c",
        "grant_type=refresh_token&refresh_token=rt-good",
        "refresh_token=rt-good&client_id=c",
    ] {
        let r = roundtrip(mock.addr, &post_form(bad));
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"], "invalid_request", "{bad}");
    }

    let v = stats(&mock);
    assert_eq!(v["oauth_refreshes"], 13, "{v}");
    assert_eq!(
        v["oauth_refreshes_by_token"],
        json!({"rt-good": 4, "1//rt-rotate+x": 1, "rt-revoked-1": 1, "rt-flaky-a": 4, "rt-flaky-b": 1}),
    );
    reset(&mock);
    let v = stats(&mock);
    assert_eq!(v["oauth_refreshes"], 0, "{v}");
    assert_eq!(v["oauth_refreshes_by_token"], json!({}));
    // Tokens keep being new after a reset; a flaky token starts over.
    assert_eq!(access_token(&mock, "rt-good"), "at-6-rt-good");
    assert_eq!(refresh(&mock, "rt-flaky-a").status, 500);
}

#[test]
fn issued_tokens_are_accepted_until_they_expire() {
    let mock = start_mock(&["--token-ttl-secs", "1"]);
    let r = refresh(&mock, "rt-short");
    assert_eq!(r.json()["expires_in"], 1);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let issued = Instant::now();
    for proto in ALL {
        let r = roundtrip(mock.addr, &model_request(proto, "mock-model", Some(&token)));
        assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        for bad in ["at-expired-1", "at-99-rt-short", "at-"] {
            let r = roundtrip(mock.addr, &model_request(proto, "mock-model", Some(bad)));
            assert_proto_error(proto, &r, 401);
        }
    }
    // OAuth providers of every protocol present the token as a bearer.
    let body = json!({"contents":[{"parts":[{"text":"Hi"}]}]}).to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let r = roundtrip(
        mock.addr,
        &post_json("/v1beta/models/g:generateContent", &body, &[&bearer]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        issued.elapsed() < Duration::from_millis(900),
        "too slow to test expiry"
    );

    std::thread::sleep(Duration::from_millis(1200).saturating_sub(issued.elapsed()));
    for proto in ALL {
        let r = roundtrip(mock.addr, &model_request(proto, "mock-model", Some(&token)));
        assert_proto_error(proto, &r, 401);
    }
    // A new refresh gives a working token again.
    let fresh = access_token(&mock, "rt-short");
    assert_ne!(fresh, token);
    let r = roundtrip(
        mock.addr,
        &model_request(Proto::OpenAi, "mock-model", Some(&fresh)),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn keys_with_fault_markers_fail_in_each_protocol() {
    let mock = start_mock(&[]);
    for proto in ALL {
        for status in [429u16, 500, 401, 403] {
            let key = format!("sk-fail{status}-1");
            // The key decides before the model name's scenario.
            for model in ["mock-model", "mock-error-400"] {
                let r = roundtrip(mock.addr, &model_request(proto, model, Some(&key)));
                assert_proto_error(proto, &r, status);
                let retry = r.header("retry-after");
                assert_eq!(retry, (status == 429).then_some("2"), "{proto:?}");
            }
        }
        let r = roundtrip(
            mock.addr,
            &model_request(proto, "mock-model", Some("sk-ok")),
        );
        assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        let r = roundtrip(mock.addr, &model_request(proto, "mock-model", None));
        assert_eq!(
            r.status, 200,
            "{proto:?}: no key is fine without --require-key"
        );
    }
    // Gemini's ?key= (percent-decoded), token counts and model lists too.
    let body = json!({"contents":[{"parts":[{"text":"Hi"}]}]}).to_string();
    let r = roundtrip(
        mock.addr,
        &post_json("/v1beta/models/g:countTokens?key=k%2Dfail429", &body, &[]),
    );
    assert_proto_error(Proto::Gemini, &r, 429);
    let r = roundtrip(
        mock.addr,
        &post_json(
            "/v1/messages/count_tokens",
            "{}",
            &["x-api-key: k-fail403", "anthropic-version: 2023-06-01"],
        ),
    );
    assert_proto_error(Proto::Anthropic, &r, 403);
    let r = roundtrip(
        mock.addr,
        &get_with("/v1/models", &["Authorization: Bearer k-fail401"]),
    );
    assert_proto_error(Proto::OpenAi, &r, 401);
    let r = roundtrip(mock.addr, &get("/v1beta/models?key=k-fail500"));
    assert_proto_error(Proto::Gemini, &r, 500);
    // Streaming requests are refused before any event.
    let r = roundtrip(
        mock.addr,
        &post_json(
            "/v1/chat/completions",
            &chat_body("mock-model", true),
            &["Authorization: Bearer sk-fail429"],
        ),
    );
    assert_proto_error(Proto::OpenAi, &r, 429);

    let v = stats(&mock);
    assert_eq!(v["requests_by_key"]["sk-fail429-1"], 6, "{v}");
    assert_eq!(v["requests_by_key"]["sk-ok"], 3, "{v}");
    assert_eq!(v["requests_by_key"]["k-fail429"], 1, "{v}");
    assert_eq!(v["requests_by_key"]["k-fail500"], 1, "{v}");
}

#[test]
fn require_key_counts_and_reset() {
    let mock = start_mock(&["--require-key"]);
    for proto in ALL {
        let r = roundtrip(mock.addr, &model_request(proto, "mock-model", None));
        assert_proto_error(proto, &r, 401);
        for _ in 0..2 {
            let r = roundtrip(
                mock.addr,
                &model_request(proto, "mock-model", Some("key-a")),
            );
            assert_eq!(r.status, 200, "{proto:?}: {}", r.text());
        }
    }
    let r = roundtrip(mock.addr, &get("/v1beta/models?key=key%2Db"));
    assert_eq!(r.status, 200);
    let v = stats(&mock);
    assert_eq!(v["requests_by_key"], json!({"key-a": 6, "key-b": 1}), "{v}");
    // The older counters are still there.
    assert_eq!(v["chat_requests"], 9, "{v}");
    assert_eq!(v["openai_requests"], 3, "{v}");
    assert_eq!(v["oauth_refreshes"], 0, "{v}");

    access_token(&mock, "rt-x");
    reset(&mock);
    let v = stats(&mock);
    assert_eq!(v["requests_by_key"], json!({}), "{v}");
    assert_eq!(v["oauth_refreshes"], 0, "{v}");
    assert_eq!(
        v["chat_requests"], 9,
        "reset leaves the other counters: {v}"
    );
}

#[test]
fn oauth_delay_holds_concurrent_refreshes() {
    let mock = start_mock(&["--oauth-delay-ms", "400"]);
    let addr = mock.addr;
    let started = Instant::now();
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let body = "grant_type=refresh_token&refresh_token=rt-slow&client_id=c";
                roundtrip(addr, &post_form(body))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    // Calls are counted when they arrive, while they wait.
    assert_eq!(stats(&mock)["oauth_refreshes_by_token"]["rt-slow"], 3);
    let mut tokens: Vec<String> = waiting
        .into_iter()
        .map(|t| {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["access_token"].as_str().unwrap().to_string()
        })
        .collect();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1100),
        "answered concurrently: {elapsed:?}"
    );
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "every refresh issues a new token");
}
