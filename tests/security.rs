//! Security properties: secrets never leave the gateway, admin endpoints
//! need the admin key, and the CORS policy is off unless configured.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const ADMIN: &str = "admin-SECRET-key-0123456789";
const CLIENT_KEY: &str = "client-SECRET-key-aaaa";
const CLIENT_KEY_ENV: &str = "client-SECRET-from-env-bbbb";
const POOL_KEY_1: &str = "sk-pool-SECRET-1111";
const POOL_KEY_2: &str = "sk-pool-SECRET-2222";
const ACCESS_TOKEN: &str = "at-file-SECRET-access";
const REFRESH_TOKEN: &str = "rt-file-SECRET-refresh";
const CLIENT_SECRET: &str = "oauth-client-SECRET-cccc";
const ID_TOKEN: &str = "idtoken-SECRET-dddd";

#[test]
fn no_secret_from_the_config_appears_in_anything_the_gateway_writes() {
    let mock = start_mock(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(
        creds.join("a.json"),
        json!({"access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN,
               "id_token": ID_TOKEN, "expiry_date": 4_102_444_800_000u64})
        .to_string(),
    )
    .unwrap();
    let log = dir.path().join("access.log");
    let port = mock.addr.port();
    let mut b = ConfigBuilder::for_mock(&mock)
        .key("alice", CLIENT_KEY)
        .admin_key(ADMIN)
        .log_path(&log)
        .log("log_bodies", true)
        .log("flush_interval_ms", 10);
    b.extra = format!(
        r#"
[[auth.keys]]
id = "bob"
key_env = "SECURITY_TEST_CLIENT_KEY"

[[providers]]
name = "pool"
protocol = "anthropic"
base_url = "http://127.0.0.1:{port}/v1"
api_keys = ["{POOL_KEY_1}", "{POOL_KEY_2}"]

[[providers]]
name = "oauth"
protocol = "openai"
base_url = "http://127.0.0.1:{port}/v1"
oauth = {{ kind = "gemini-cli", paths = ["{}"], token_uri = "http://127.0.0.1:{port}/oauth/token", client_id = "cid", client_secret = "{CLIENT_SECRET}" }}

[[models]]
name = "via-pool"
provider = "pool"
upstream_model = "mock-model"

[[models]]
name = "via-pool-error"
provider = "pool"
upstream_model = "mock-error-500"

[[models]]
name = "via-oauth"
provider = "oauth"
upstream_model = "mock-model"
"#,
        creds.display()
    );
    let config = b.build();
    let file = config_file(&config);
    let path = file.path().to_str().unwrap().to_string();
    let mut gw = Proc::spawn_with_env(
        "gateway",
        &["serve", "--config", &path],
        &[("SECURITY_TEST_CLIENT_KEY", CLIENT_KEY_ENV)],
        vec![file],
    );

    // Everything the gateway says to clients, collected.
    let mut said = String::new();
    let mut call = |req: Vec<u8>| {
        let r = Client::connect(gw.addr).request(&req);
        said.push_str(&format!("{:?}\n{}\n", r.headers, r.text()));
        r.status
    };
    let auth = format!("Authorization: Bearer {CLIENT_KEY}");
    let auth2 = format!("x-api-key: {CLIENT_KEY_ENV}");
    let admin = format!("x-admin-key: {ADMIN}");
    assert_eq!(call(chat("via-pool", &[&auth])), 200);
    assert_eq!(call(chat("via-oauth", &[&auth2])), 200);
    call(chat("via-pool-error", &[&auth]));
    let body = json!({"model": "via-pool", "api_key": CLIENT_KEY, "messages": [{"role": "user", "content": "hi"}]});
    call(post_json(
        "/v1/chat/completions",
        &body.to_string(),
        &[&auth],
    ));
    call(chat("via-pool", &["Authorization: Bearer wrong-key"]));
    call(chat("via-pool", &[]));
    for path in [
        "/admin/stats",
        "/admin/requests",
        "/admin/credentials",
        "/metrics",
        "/v1/models",
    ] {
        call(get_with(path, &[&admin]));
    }
    // `check` prints a summary of the same config.
    let (_, check_out, check_err) = run_to_exit(
        &["check", "--config", &path],
        &[("SECURITY_TEST_CLIENT_KEY", CLIENT_KEY_ENV)],
        &[],
        Duration::from_secs(10),
    );

    gw.signal(libc::SIGTERM);
    gw.wait_timeout(Duration::from_secs(10));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.lines().count() >= 4,
        "the access log was written: {log_text}"
    );

    let everything = [
        ("responses", said),
        ("stdout", gw.stdout()),
        ("stderr", gw.stderr()),
        ("access log", log_text),
        ("check", check_out + &check_err),
    ];
    for secret in [
        ADMIN,
        CLIENT_KEY,
        CLIENT_KEY_ENV,
        POOL_KEY_1,
        POOL_KEY_2,
        PROVIDER_KEY,
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        CLIENT_SECRET,
        ID_TOKEN,
    ] {
        for (name, text) in &everything {
            assert!(
                !text.contains(secret),
                "{name} contains the secret {secret}:\n{text}"
            );
        }
    }
}

#[test]
fn admin_endpoints_need_the_admin_key() {
    let (_mock, gw) = start_pair(&[], |b| b.key("alice", CLIENT_KEY).admin_key(ADMIN));
    for path in ["/admin/stats", "/admin/requests", "/admin/credentials"] {
        let mut c = Client::connect(gw.addr);
        assert_eq!(c.request(&get(path)).status, 401, "{path} without a key");
        let r = c.request(&get_with(path, &["x-admin-key: not-the-admin-key-at-all"]));
        assert_eq!(r.status, 401, "{path} with a wrong key");
        let r = c.request(&get_with(
            path,
            &[&format!("Authorization: Bearer {CLIENT_KEY}")],
        ));
        assert_eq!(r.status, 401, "{path} with a client key");
        let r = c.request(&get_with(path, &[&format!("x-admin-key: {ADMIN}")]));
        assert_eq!(r.status, 200, "{path} with the admin key");
    }
    // Without an admin key in the config, the endpoints do not exist.
    let (_mock, gw) = start_pair(&[], |b| b);
    let r = Client::connect(gw.addr).request(&get("/admin/credentials"));
    assert_eq!(r.status, 404);
}

fn preflight(origin: &str) -> Vec<u8> {
    format!(
        "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn cors_is_off_by_default() {
    let (_mock, gw) = start_pair(&[], |b| b);
    let mut c = Client::connect(gw.addr);
    let r = c.request(&preflight("https://app.example.com"));
    assert_ne!(r.status, 204);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = c.request(&chat("m", &["Origin: https://app.example.com"]));
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn cors_answers_configured_origins_only() {
    let (_mock, gw) = start_pair(&[], |b| {
        b.key("alice", CLIENT_KEY)
            .section("cors", "allowed_origins", "[\"https://app.example.com\"]")
            .section("cors", "max_age_secs", 60)
    });
    let mut c = Client::connect(gw.addr);
    // A preflight needs no key: browsers send none.
    let r = c.request(&preflight("https://app.example.com"));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    assert!(r.header("content-length").is_none(), "204 has no length");
    // The real request carries the headers, errors too.
    let r = c.request(&chat(
        "m",
        &[
            "Origin: https://app.example.com",
            &format!("Authorization: Bearer {CLIENT_KEY}"),
        ],
    ));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("vary"), Some("origin"));
    let r = c.request(&chat("m", &["Origin: https://app.example.com"]));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // Another origin gets nothing.
    let mut c = Client::connect(gw.addr);
    let r = c.request(&preflight("https://evil.example"));
    assert!(r.header("access-control-allow-origin").is_none());
    let r = c.request(&chat(
        "m",
        &[
            "Origin: https://evil.example",
            &format!("Authorization: Bearer {CLIENT_KEY}"),
        ],
    ));
    assert!(r.header("access-control-allow-origin").is_none());
}
