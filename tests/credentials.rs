//! Credential pools, OAuth credential files, routing rules and failover,
//! against the mock provider and its mock OAuth token endpoint.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-for-credential-tests";

/// A gateway config in front of `mock`: `[server]` etc. from the builder,
/// then `extra` TOML with the providers and models under test.
fn gateway_with(mock: &Proc, extra: &str) -> Proc {
    let mut b = ConfigBuilder::for_mock(mock)
        .no_default_provider()
        .admin_key(ADMIN);
    // The builder's own provider stays (named "mock"); tests add theirs.
    b.extra = extra.to_string();
    start_gateway(&b.build())
}

fn mock_url(mock: &Proc, prefix: &str) -> String {
    format!("http://127.0.0.1:{}{prefix}", mock.addr.port())
}

fn mock_stats(mock: &Proc) -> Value {
    Client::connect(mock.addr)
        .request(&get("/mock/stats"))
        .json()
}

fn admin_credentials(gw: &Proc) -> Value {
    let r = Client::connect(gw.addr).request(&get_with(
        "/admin/credentials",
        &[&format!("Authorization: Bearer {ADMIN}")],
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn chat_to(gw: &Proc, model: &str) -> Response {
    Client::connect(gw.addr).request(&chat(model, &[]))
}

/// Runs `n` requests from `threads` threads; returns their statuses.
fn concurrent(gw: &Proc, threads: usize, n: usize, request: Vec<u8>) -> Vec<u16> {
    let addr = gw.addr;
    let per = n / threads;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..per)
                    .map(|_| c.request(&request).status)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn write_oauth_file(dir: &Path, name: &str, access: &str, refresh: &str, expiry_ms: i64) {
    let v = json!({
        "access_token": access,
        "refresh_token": refresh,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "token_type": "Bearer",
        "id_token": "header.payload.sig",
        "expiry_date": expiry_ms,
        "custom_field_kept": {"nested": [1, 2, 3]}
    });
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn traffic_moves_off_failing_credentials_and_no_request_is_lost() {
    let mock = start_mock(&[]);
    let gw = gateway_with(
        &mock,
        &(format!(
            r#"
[[providers]]
name = "pool"
protocol = "openai"
base_url = "{}"
api_keys = ["key-fail429-a", "key-fail500-b", "key-fail401-c", "key-good-d", "key-good-e"]
pool = {{ error_threshold = 2, probe_interval_ms = 60000, cooldown_max_ms = 60000 }}

[[models]]
name = "pooled"
provider = "pool"
upstream_model = "mock-model"
"#,
            mock_url(&mock, "/v1")
        ) + "\n[routing]\nretries = 4\n"),
    );
    let statuses = concurrent(&gw, 4, 200, chat("pooled", &[]));
    assert_eq!(statuses.len(), 200);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every request answered: {statuses:?}"
    );

    let stats = mock_stats(&mock);
    let by_key = &stats["requests_by_key"];
    let count = |k: &str| by_key[k].as_u64().unwrap_or(0);
    let good = count("key-good-d") + count("key-good-e");
    assert!(
        good >= 200,
        "the healthy keys served every answer: {by_key}"
    );
    // Two shards each learn about each bad key on their own: a 429 puts
    // the key in cooldown at once, a 500 after `error_threshold` errors, a
    // 401 after one refusal and one confirmation.
    assert!(count("key-fail429-a") <= 2 * 2 + 4, "{by_key}");
    // Requests already in flight when a key is disabled still finish on
    // it: up to the four client threads more.
    assert!(count("key-fail500-b") <= 2 * 2 + 4, "{by_key}");
    assert!(count("key-fail401-c") <= 2 * 2 + 4, "{by_key}");

    let creds = poll(Duration::from_secs(3), || {
        let v = admin_credentials(&gw);
        let pool: Vec<Value> = v["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["provider"] == "pool")
            .cloned()
            .collect();
        (pool.len() == 5
            && pool
                .iter()
                .map(|c| c["requests"].as_u64().unwrap())
                .sum::<u64>()
                >= 200)
            .then_some(pool)
    })
    .expect("the admin view catches up");
    let state = |id: &str| {
        creds
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {creds:?}"))["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("key-1"), "cooling_down");
    assert_eq!(state("key-2"), "disabled");
    assert_eq!(state("key-3"), "disabled");
    assert_eq!(state("key-4"), "healthy");
    // Secrets never appear in admin output.
    let text = admin_credentials(&gw).to_string();
    for secret in ["key-fail429-a", "key-good-d", PROVIDER_KEY] {
        assert!(
            !text.contains(secret),
            "admin output leaks {secret}: {text}"
        );
    }
}

#[test]
fn no_usable_credential_is_a_503_in_the_clients_protocol() {
    let mock = start_mock(&[]);
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[[providers]]
name = "limited"
protocol = "openai"
base_url = "{}"
api_keys = ["key-fail429-only"]

[[models]]
name = "limited-model"
provider = "limited"
upstream_model = "mock-model"
"#,
            mock_url(&mock, "/v1")
        ),
    );
    // The only credential's 429 is relayed as it is; then it cools down
    // (retry-after: 2) and nothing is available. Each shard learns of the
    // 429 on its own, so up to one 429 per shard comes first.
    let body = json!({"model": "limited-model", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut statuses = Vec::new();
    let r = loop {
        let r = Client::connect(gw.addr).request(&post_json(
            "/v1/messages",
            &body.to_string(),
            &["anthropic-version: 2023-06-01"],
        ));
        statuses.push(r.status);
        if r.status != 429 || statuses.len() > 4 {
            break r;
        }
    };
    assert!(statuses.len() >= 2 && statuses.len() <= 3, "{statuses:?}");
    assert_eq!(r.status, 503, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limited-model"),
        "{v}"
    );
    assert!(r.header("retry-after").is_some());
}

#[test]
fn an_oauth_refresh_is_single_flight_under_200_concurrent_requests() {
    let mock = start_mock(&["--oauth-delay-ms", "300"]);
    let dir = tempfile::tempdir().unwrap();
    // A token the mock never issued (it answers 401) that is not near
    // expiry: the refresh comes from the 401s, all at once.
    write_oauth_file(
        dir.path(),
        "a.json",
        "at-stale-token",
        "rt-single",
        now_ms() + 3_600_000,
    );
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[[providers]]
name = "oauth"
protocol = "openai"
base_url = "{}"
oauth = {{ kind = "gemini-cli", paths = ["{}"], token_uri = "{}", client_id = "cid", client_secret = "csecret" }}

[[models]]
name = "o-model"
provider = "oauth"
upstream_model = "mock-model"
"#,
            mock_url(&mock, "/v1"),
            dir.path().display(),
            mock_url(&mock, "/oauth/token"),
        ),
    );
    let statuses = concurrent(&gw, 50, 200, chat("o-model", &[]));
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let stats = mock_stats(&mock);
    assert_eq!(stats["oauth_refreshes"], 1, "exactly one refresh: {stats}");
    // The file now holds the new token, with its other fields kept.
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("a.json")).unwrap()).unwrap();
    assert!(v["access_token"].as_str().unwrap().starts_with("at-"));
    assert_ne!(v["access_token"], "at-stale-token");
    assert_eq!(v["refresh_token"], "rt-single");
    assert_eq!(v["custom_field_kept"], json!({"nested": [1, 2, 3]}));
    assert!(v["expiry_date"].as_i64().unwrap() > now_ms());
    // Secrets are not in the gateway's output.
    let out = gw.stdout() + &gw.stderr();
    for secret in [
        "rt-single",
        "at-stale-token",
        "csecret",
        v["access_token"].as_str().unwrap(),
    ] {
        assert!(
            !out.contains(secret),
            "gateway output leaks {secret}: {out}"
        );
    }
}

#[test]
fn tokens_are_refreshed_ahead_of_expiry() {
    let mock = start_mock(&["--token-ttl-secs", "3"]);
    let dir = tempfile::tempdir().unwrap();
    // Expired already: refreshed at start, then again before each expiry.
    write_oauth_file(
        dir.path(),
        "q.json",
        "at-old",
        "rt-expiring",
        now_ms() - 1000,
    );
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[[providers]]
name = "qwen"
protocol = "openai"
base_url = "{}"
oauth = {{ kind = "qwen-code", paths = ["{}"], token_uri = "{}", client_id = "qwen-client", refresh_margin_ms = 2000 }}

[[models]]
name = "q-model"
provider = "qwen"
upstream_model = "mock-model"
"#,
            mock_url(&mock, "/v1"),
            dir.path().display(),
            mock_url(&mock, "/oauth/token"),
        ),
    );
    let started = Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_millis(3500) {
        statuses.push(chat_to(&gw, "q-model").status);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let refreshes = mock_stats(&mock)["oauth_refreshes"].as_u64().unwrap();
    assert!(
        refreshes >= 2,
        "refreshed at start and before the next expiry: {refreshes}"
    );
    let creds = admin_credentials(&gw);
    let c = &creds["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "qwen")
        .unwrap()
        .clone();
    assert_eq!(c["kind"], "oauth");
    assert!(c["token_expires_in_ms"].as_i64().unwrap() > 0, "{c}");
    assert!(c["refreshes"].as_u64().unwrap() >= 2, "{c}");
}

#[test]
fn a_rejected_refresh_token_disables_the_credential_loudly() {
    let mock = start_mock(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_oauth_file(
        dir.path(),
        "dead.json",
        "at-x",
        "rt-revoked-1",
        now_ms() - 1000,
    );
    write_oauth_file(
        dir.path(),
        "good.json",
        "at-y",
        "rt-good-1",
        now_ms() - 1000,
    );
    std::fs::write(dir.path().join("broken.json"), b"{not json").unwrap();
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[[providers]]
name = "g"
protocol = "gemini"
base_url = "{}"
oauth = {{ kind = "gemini-cli", paths = ["{}"], token_uri = "{}", client_id = "cid" }}

[[models]]
name = "g-model"
provider = "g"
upstream_model = "mock-model"
"#,
            mock_url(&mock, "/v1beta"),
            dir.path().display(),
            mock_url(&mock, "/oauth/token"),
        ),
    );
    // The bad file is reported at start, by path, and skipped.
    assert!(gw.stderr().contains("broken.json"), "{}", gw.stderr());
    let creds = poll(Duration::from_secs(5), || {
        let v = admin_credentials(&gw);
        let dead = v["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["state"] == "dead");
        dead.then_some(v)
    })
    .expect("the revoked credential is marked dead");
    let ours = creds["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["provider"] == "g")
        .count();
    assert_eq!(ours, 2, "the broken file is not a credential: {creds}");
    assert!(poll(Duration::from_secs(2), || gw
        .stderr()
        .contains("rejected")
        .then_some(()))
    .is_some());
    // The other credential serves.
    let r = chat_to(&gw, "g-model");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_credential_file_is_whole_after_kill_9_during_refreshes() {
    let mock = start_mock(&["--token-ttl-secs", "1"]);
    let dir = tempfile::tempdir().unwrap();
    write_oauth_file(dir.path(), "k.json", "at-k", "rt-kill", now_ms() - 1000);
    let config = |mock: &Proc| {
        format!(
            r#"
[[providers]]
name = "k"
protocol = "openai"
base_url = "{}"
oauth = {{ kind = "gemini-cli", paths = ["{}"], token_uri = "{}", client_id = "cid", refresh_margin_ms = 1000 }}

[[models]]
name = "k-model"
provider = "k"
"#,
            mock_url(mock, "/v1"),
            dir.path().display(),
            mock_url(mock, "/oauth/token"),
        )
    };
    for round in 0..8 {
        let mut gw = gateway_with(&mock, &config(&mock));
        // Token TTL 1 s with a 1 s margin: the gateway refreshes and writes
        // the file back continuously.
        std::thread::sleep(Duration::from_millis(150 + 97 * round));
        gw.signal(libc::SIGKILL);
        gw.wait_timeout(Duration::from_secs(5));
        let bytes = std::fs::read(dir.path().join("k.json")).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "round {round}: not whole JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(v["refresh_token"], "rt-kill");
        assert_eq!(v["custom_field_kept"], json!({"nested": [1, 2, 3]}));
    }
    assert!(mock_stats(&mock)["oauth_refreshes"].as_u64().unwrap() >= 3);
}

#[test]
fn new_and_removed_credential_files_are_picked_up() {
    let mock = start_mock(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_oauth_file(dir.path(), "one.json", "at-1", "rt-one", now_ms() - 1000);
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[[providers]]
name = "w"
protocol = "openai"
base_url = "{}"
oauth = {{ kind = "gemini-cli", paths = ["{}"], token_uri = "{}", client_id = "cid", poll_interval_ms = 200 }}

[[models]]
name = "w-model"
provider = "w"
"#,
            mock_url(&mock, "/v1"),
            dir.path().display(),
            mock_url(&mock, "/oauth/token"),
        ),
    );
    let count = |gw: &Proc| {
        admin_credentials(gw)["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["provider"] == "w")
            .count()
    };
    assert_eq!(count(&gw), 1);
    write_oauth_file(dir.path(), "two.json", "at-2", "rt-two", now_ms() - 1000);
    // A copy of an existing credential is a duplicate, not a new one.
    std::fs::copy(
        dir.path().join("one.json"),
        dir.path().join("one-copy.json"),
    )
    .unwrap();
    assert!(
        poll(Duration::from_secs(5), || (count(&gw) == 2).then_some(())).is_some(),
        "{}",
        admin_credentials(&gw)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&gw), 2, "the copy is not a third credential");
    std::fs::remove_file(dir.path().join("two.json")).unwrap();
    assert!(
        poll(Duration::from_secs(5), || (count(&gw) == 1).then_some(())).is_some(),
        "{}",
        admin_credentials(&gw)
    );
    let r = chat_to(&gw, "w-model");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn routing_rules_aliases_patterns_and_fallbacks() {
    let mock = start_mock(&[]);
    let base = mock_url(&mock, "/v1");
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[routing]
retries = 3

[[providers]]
name = "broken"
protocol = "openai"
base_url = "{base}"
api_keys = ["key-fail500-x"]

[[providers]]
name = "good"
protocol = "anthropic"
base_url = "{base}"
api_keys = ["key-good-anthropic"]

[[models]]
name = "primary"
provider = "broken"
upstream_model = "primary-upstream"
fallbacks = ["backup"]

[[models]]
name = "backup"
provider = "good"
upstream_model = "backup-upstream"
aliases = ["b"]
defaults = {{ temperature = 0.3, max_tokens = 77 }}

[[models]]
name = "fam-*"
provider = "good"
upstream_model = "family-*-v2"

[[models]]
name = "cheap"
provider = "good"
upstream_model = "cheap-upstream"

[[models]]
name = "thinker"
provider = "good"
upstream_model = "thinker-upstream"

[[models]]
name = "long"
provider = "good"
upstream_model = "long-upstream"

[[routing.rules]]
when = "background"
models = ["claude-3-5-haiku*"]
target = "cheap"

[[routing.rules]]
when = "thinking"
target = "thinker"

[[routing.rules]]
when = "long_context"
min_tokens = 2000
target = "long"
"#
        ),
    );
    let last_model = |mock: &Proc| -> String {
        let v = Client::connect(mock.addr)
            .request(&get("/mock/last-request"))
            .json();
        let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        body["model"].as_str().unwrap_or("").to_string()
    };
    // A failing primary falls back to another provider (and protocol).
    let r = chat_to(&gw, "primary");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_model(&mock), "backup-upstream");
    // Aliases, and the model's defaults where the client set nothing.
    let r = chat_to(&gw, "b");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = Client::connect(mock.addr)
        .request(&get("/mock/last-request"))
        .json();
    let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["model"], "backup-upstream");
    assert_eq!(body["max_tokens"], 77);
    assert_eq!(body["temperature"], 0.3);
    // Patterns, with the matched part substituted.
    chat_to(&gw, "fam-7b");
    assert_eq!(last_model(&mock), "family-7b-v2");
    // provider/model picks a provider explicitly.
    chat_to(&gw, "good/explicit-name");
    assert_eq!(last_model(&mock), "explicit-name");
    // Scenario rules.
    chat_to(&gw, "claude-3-5-haiku-20241022");
    assert_eq!(last_model(&mock), "cheap-upstream");
    let thinking = json!({"model": "b", "max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [{"role": "user", "content": "think"}]});
    Client::connect(gw.addr).request(&post_json(
        "/v1/messages",
        &thinking.to_string(),
        &["anthropic-version: 2023-06-01"],
    ));
    assert_eq!(last_model(&mock), "thinker-upstream");
    let long = json!({"model": "b", "messages": [{"role": "user", "content": "x".repeat(20_000)}]});
    Client::connect(gw.addr).request(&post_json("/v1/chat/completions", &long.to_string(), &[]));
    assert_eq!(last_model(&mock), "long-upstream");
    // Unknown models are still a 404.
    assert_eq!(chat_to(&gw, "nope").status, 404);
}

#[test]
fn a_concurrency_cap_queues_then_refuses() {
    let mock = start_mock(&[]);
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[[providers]]
name = "capped"
protocol = "openai"
base_url = "{}"
api_keys = ["key-good-capped"]
pool = {{ max_in_flight = 1, queue_limit = 1, queue_timeout_ms = 5000 }}

[[models]]
name = "slow"
provider = "capped"
upstream_model = "mock-slow-400"
"#,
            mock_url(&mock, "/v1")
        ),
    );
    let statuses = concurrent(&gw, 3, 3, chat("slow", &[]));
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    // Per shard: one in flight, one queued, the rest refused. With two
    // shards and three requests, at least two are served.
    assert!(ok >= 2, "{statuses:?}");
    assert_eq!(ok + refused, 3, "{statuses:?}");
}

#[test]
fn a_failed_refresh_is_retried_with_backoff() {
    let mock = start_mock(&[]);
    let dir = tempfile::tempdir().unwrap();
    // The mock's token endpoint fails the first refresh of an `rt-flaky`
    // token and grants the second.
    write_oauth_file(
        dir.path(),
        "f.json",
        "at-unknown",
        "rt-flaky-1",
        now_ms() + 3_600_000,
    );
    let gw = gateway_with(
        &mock,
        &format!(
            r#"
[[providers]]
name = "f"
protocol = "openai"
base_url = "{}"
oauth = {{ kind = "gemini-cli", paths = ["{}"], token_uri = "{}", client_id = "cid" }}

[[models]]
name = "f-model"
provider = "f"
upstream_model = "mock-model"
"#,
            mock_url(&mock, "/v1"),
            dir.path().display(),
            mock_url(&mock, "/oauth/token"),
        ),
    );
    // The first request's 401 asks for a refresh, which fails: the request
    // gets a clear error, not a hang.
    let r = chat_to(&gw, "f-model");
    assert!(
        matches!(r.status, 401 | 502 | 503),
        "{} {}",
        r.status,
        r.text()
    );
    // The control task retries (1 s backoff) and then the credential serves.
    let ok = poll(Duration::from_secs(8), || {
        (chat_to(&gw, "f-model").status == 200).then_some(())
    });
    assert!(ok.is_some(), "{}", admin_credentials(&gw));
    assert_eq!(mock_stats(&mock)["oauth_refreshes"], 2);
    assert!(gw.stderr().contains("refresh failed"), "{}", gw.stderr());
}
