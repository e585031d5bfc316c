//! Client authentication with `[[auth.keys]]`, and the rule against
//! publishing an unauthenticated gateway.

mod common;

use std::time::Duration;

use common::*;

const ALICE: &str = "sk-gw-alice-0123456789";
const BOB: &str = "sk-gw-bob-9876543210";

fn start_with_keys() -> (Proc, Proc) {
    start_pair(&[], |c| c.key("alice", ALICE).key("bob", BOB))
}

#[test]
fn missing_key_is_401() {
    let (mock, gw) = start_with_keys();
    let r = roundtrip(gw.addr, &chat("m", &[]));
    let err = r.assert_error(401, "missing_api_key");
    assert_eq!(err["type"], "authentication_error");
    let r = roundtrip(gw.addr, &get("/v1/models"));
    r.assert_error(401, "missing_api_key");
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

#[test]
fn wrong_key_is_401() {
    let (mock, gw) = start_with_keys();
    let mut c = Client::connect(gw.addr);
    for header in [
        "Authorization: Bearer sk-gw-alice-012345678",
        "Authorization: Bearer sk-gw-alice-01234567890",
        "Authorization: Bearer SK-GW-ALICE-0123456789",
        "Authorization: sk-gw-wrong-0123456789",
        "x-api-key: sk-gw-nope-0123456789",
        "x-goog-api-key: sk-gw-nope-0123456789",
        "Authorization: Bearer ",
    ] {
        let r = c.request(&chat("m", &[header]));
        assert_eq!(r.status, 401, "{header}: {}", r.text());
        r.assert_error(401, "invalid_api_key");
    }
    let r = c.request(&chat("m", &[]).splice_path("/v1/chat/completions?key=wrong-key-123"));
    r.assert_error(401, "invalid_api_key");
    // The error never echoes a configured key.
    assert!(!r.text().contains(ALICE));
    assert_eq!(mock_stats(&mock).chat_requests, 0);
}

/// Replaces the request-target of a raw request.
trait SplicePath {
    fn splice_path(self, target: &str) -> Vec<u8>;
}

impl SplicePath for Vec<u8> {
    fn splice_path(self, target: &str) -> Vec<u8> {
        let text = String::from_utf8(self).unwrap();
        let (line, rest) = text.split_once("\r\n").unwrap();
        let mut parts = line.splitn(3, ' ');
        let method = parts.next().unwrap();
        parts.next();
        let version = parts.next().unwrap();
        format!("{method} {target} {version}\r\n{rest}").into_bytes()
    }
}

#[test]
fn right_key_is_accepted_in_every_position() {
    let (mock, gw) = start_with_keys();
    let mut c = Client::connect(gw.addr);
    let cases: Vec<(String, Vec<u8>)> = vec![
        (
            "bearer".into(),
            chat("auth-bearer", &[&format!("Authorization: Bearer {ALICE}")]),
        ),
        (
            "bearer lower-case scheme".into(),
            chat("auth-bearer-lc", &[&format!("authorization: bearer {BOB}")]),
        ),
        (
            "x-api-key".into(),
            chat("auth-x-api-key", &[&format!("x-api-key: {ALICE}")]),
        ),
        (
            "x-goog-api-key".into(),
            chat("auth-goog", &[&format!("x-goog-api-key: {BOB}")]),
        ),
        (
            "?key=".into(),
            chat("auth-query", &[])
                .splice_path(&format!("/v1/chat/completions?alt=sse&key={ALICE}")),
        ),
    ];
    for (what, req) in cases {
        let r = c.request(&req);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let rec = mock_last_request(&mock).unwrap();
        let model = r.json()["model"].as_str().unwrap().to_string();
        assert_eq!(rec.body_json()["model"], model.as_str(), "{what}");
        // The client key never reaches the provider; the provider key does.
        assert!(
            !rec.head.contains(ALICE) && !rec.head.contains(BOB),
            "{what}: client key forwarded: {}",
            rec.head
        );
        assert_eq!(
            rec.header_values("authorization"),
            vec![format!("Bearer {PROVIDER_KEY}")],
            "{what}"
        );
        assert_eq!(
            rec.request_line(),
            "POST /v1/chat/completions HTTP/1.1",
            "{what}"
        );
    }
    let r = c.request(&get_with(
        "/v1/models",
        &[&format!("Authorization: Bearer {ALICE}")],
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock_stats(&mock).chat_requests, 5);
}

#[test]
fn health_and_ready_need_no_key() {
    let (_mock, gw) = start_with_keys();
    let r = roundtrip(gw.addr, &get("/health"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
    let ready = poll_until(Duration::from_secs(3), || {
        let r = roundtrip(gw.addr, &get("/ready"));
        (r.status == 200).then_some(r)
    })
    .expect("/ready becomes 200 without a key");
    assert_eq!(ready.json()["status"], "ready");
}

#[test]
fn public_listen_without_keys_refuses_to_serve() {
    let mock = start_mock(&[]);
    let config = ConfigBuilder::for_mock(&mock).listen("0.0.0.0:0").build();
    let file = config_file(&config);
    let path = file.path().to_str().unwrap();
    let (status, stdout, stderr) = run_to_exit(
        &["serve", "--config", path],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "serve must fail; stdout {stdout:?}");
    assert!(
        !stdout.contains("listening on"),
        "it must not start listening: {stdout:?}"
    );
    assert!(
        stderr.contains("not loopback") && stderr.contains("[[auth.keys]]"),
        "stderr: {stderr:?}"
    );
    // The message points at the listen line of the file.
    let listen_line = config
        .lines()
        .position(|l| l.starts_with("listen"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("{path}:{listen_line}")),
        "stderr should name {path}:{listen_line}: {stderr:?}"
    );
    assert!(!stderr.contains(PROVIDER_KEY));

    let (status, stdout, stderr) = run_to_exit(
        &["check", "--config", path],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "check must fail; stdout {stdout:?}");
    assert!(stderr.contains("not loopback"), "stderr: {stderr:?}");
    assert!(!stdout.contains(": ok"), "stdout: {stdout:?}");
}

#[test]
fn public_listen_with_keys_or_opt_out_passes_check() {
    let base = ConfigBuilder::new("http://127.0.0.1:9/v1").listen("0.0.0.0:0");
    for config in [
        base.clone().key("alice", ALICE).build(),
        base.clone()
            .server("allow_unauthenticated_public", "true")
            .build(),
    ] {
        let file = config_file(&config);
        let path = file.path().to_str().unwrap();
        let (status, stdout, stderr) = run_to_exit(
            &["check", "--config", path],
            &[],
            &[],
            Duration::from_secs(10),
        );
        assert!(status.success(), "config:\n{config}\nstderr: {stderr}");
        assert!(stdout.contains(&format!("{path}: ok")), "{stdout}");
        assert!(stdout.contains("(public)"), "{stdout}");
        assert!(!stdout.contains(ALICE), "{stdout}");
    }
}

#[test]
fn percent_encoded_query_key_is_decoded() {
    // `?key=` is a URL query parameter: clients percent-encode reserved
    // characters in it (e.g. base64 keys with `+`, `/`, `=`).
    const KEY: &str = "sk-gw+b64/key==";
    let (_mock, gw) = start_pair(&[], |c| c.key("b64", KEY));
    let r = roundtrip(
        gw.addr,
        &chat("m", &[]).splice_path("/v1/chat/completions?key=sk-gw%2Bb64%2Fkey%3D%3D"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // And the same key in a header still works.
    let r = roundtrip(gw.addr, &chat("m", &[&format!("x-api-key: {KEY}")]));
    assert_eq!(r.status, 200, "{}", r.text());
}
