//! Observability: the access log (`[log]`), sampling, secrets kept out of
//! every output, `/metrics`, the admin endpoints (`[admin]`) and the
//! in-flight tracker behind `/admin/requests`.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The fields of an access-log line, in the order they are written.
const LOG_FIELDS: [&str; 24] = [
    "ts",
    "request_id",
    "shard",
    "client_key",
    "client_protocol",
    "provider",
    "credential",
    "method",
    "route",
    "model",
    "model_served",
    "stream",
    "status",
    "upstream_status",
    "bytes_in",
    "bytes_out",
    "latency_us",
    "upstream_latency_us",
    "ttfb_us",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "retries",
    "error",
];

/// A client request id in UUID form, and how the access log writes it.
const CLIENT_ID: &str = "01234567-89ab-cdef-fedc-ba9876543210";
const CLIENT_ID_LOGGED: &str = "0123456789abcdeffedcba9876543210";

const ADMIN_KEY: &str = "admin-secret-key-0123456789";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Starts a gateway with `config` and extra environment. `LOG_SAMPLE_RATE`
/// is set empty (= ignored) unless `env` sets it, so the caller's
/// environment cannot change what a test sees.
fn start_gateway_env(config: &ConfigBuilder, env: &[(&str, &str)]) -> Proc {
    let file = config_file(&config.build());
    let path = file.path().to_str().unwrap().to_string();
    let mut all: Vec<(&str, &str)> = Vec::new();
    if !env.iter().any(|(k, _)| *k == "LOG_SAMPLE_RATE") {
        all.push(("LOG_SAMPLE_RATE", ""));
    }
    all.extend_from_slice(env);
    Proc::spawn_with_env("gateway", &["serve", "--config", &path], &all, vec![file])
}

/// SIGTERM, then expects exit status 0 within 5 s.
#[track_caller]
fn stop(gw: &mut Proc) {
    gw.signal(libc::SIGTERM);
    let status = gw
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("gateway did not exit after SIGTERM\n{}", gw.output_report()));
    assert!(
        status.success(),
        "gateway exit status {status:?}\n{}",
        gw.output_report()
    );
}

/// Every line of the access log, parsed; checks that each is a JSON object
/// with exactly [`LOG_FIELDS`], in order.
#[track_caller]
fn read_log(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the access log {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "log does not end with a newline: {text:?}"
    );
    text.lines().map(check_log_line).collect()
}

#[track_caller]
fn check_log_line(line: &str) -> Value {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("log line is not an object: {line}"));
    let keys: HashSet<&str> = obj.keys().map(String::as_str).collect();
    let want: HashSet<&str> = LOG_FIELDS.iter().copied().collect();
    assert_eq!(keys, want, "fields of {line}");
    // In the documented order.
    let positions: Vec<usize> = LOG_FIELDS
        .iter()
        .map(|f| line.find(&format!("\"{f}\":")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "field order in {line}"
    );
    let id = v["request_id"].as_str().expect("request_id string");
    assert!(is_hex32(id), "request_id {id:?} in {line}");
    let ts = v["ts"].as_str().expect("ts string");
    assert!(
        ts.len() == 27 && ts.ends_with('Z') && &ts[10..11] == "T" && ts.starts_with("20"),
        "ts {ts:?}"
    );
    for f in [
        "shard",
        "status",
        "bytes_in",
        "bytes_out",
        "latency_us",
        "retries",
    ] {
        assert!(v[f].is_u64(), "{f} in {line}");
    }
    assert!(v["stream"].is_boolean(), "stream in {line}");
    v
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A request id as the access log writes it: 32 lowercase hex digits.
fn normalized_id(id: &str) -> String {
    id.chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The response's `x-request-id`, which every response must carry.
#[track_caller]
fn request_id_of(r: &Response) -> String {
    let ids = r.headers_named("x-request-id");
    assert_eq!(ids.len(), 1, "x-request-id headers: {:?}", r.headers);
    ids[0].to_string()
}

/// How many bytes `r` took on the wire (Content-Length framed responses).
fn wire_len(r: &Response) -> u64 {
    let mut n = format!("{} {} {}\r\n", r.version, r.status, r.reason).len();
    for (name, value) in &r.headers {
        n += name.len() + 2 + value.len() + 2;
    }
    (n + 2 + r.body.len()) as u64
}

/// The value of the Prometheus sample `series` (name with labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse().expect("sample value"))
    })
}

#[track_caller]
fn metric_required(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// The sum of every sample of family `name` (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[track_caller]
fn scrape(addr: std::net::SocketAddr) -> String {
    let r = roundtrip(addr, &get("/metrics"));
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.text()
}

/// `GET path` with the admin key as `Authorization: Bearer`.
#[track_caller]
fn admin_get(addr: std::net::SocketAddr, path: &str) -> Value {
    let r = roundtrip(
        addr,
        &get_with(path, &[&format!("Authorization: Bearer {ADMIN_KEY}")]),
    );
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// Polls `/admin/requests` until `in_flight == n` (up to `timeout`).
#[track_caller]
fn wait_in_flight(addr: std::net::SocketAddr, n: u64, timeout: Duration) -> Value {
    let mut last = Value::Null;
    poll_until(timeout, || {
        last = admin_get(addr, "/admin/requests");
        (last["in_flight"].as_u64() == Some(n)).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("/admin/requests never showed {n} in flight; last: {last:#}"))
}

/// Sends a streamed chat request and reads the head and the first chunk.
#[track_caller]
fn start_stream(addr: std::net::SocketAddr, model: &str) -> (Client, String) {
    let mut c = Client::connect(addr);
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body(model, true),
        &[],
    ));
    let head = c.read_head().expect("stream head");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let id = request_id_of(&head);
    let first = c.read_chunk().expect("first chunk").expect("not the last");
    assert!(!first.is_empty());
    (c, id)
}

/// Reads the rest of a chunked body.
#[track_caller]
fn finish_stream(c: &mut Client) -> String {
    let mut text = String::new();
    while let Some(chunk) = c.read_chunk().expect("stream chunk") {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text
}

// ---------------------------------------------------------------------------
// 1. The access log
// ---------------------------------------------------------------------------

#[test]
fn access_log_has_one_line_per_request() {
    const CONNS: usize = 4;
    const PER_CONN: usize = 50;
    const N: usize = CONNS * PER_CONN;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mock = start_mock(&[]);
    let mut gw = start_gateway_env(
        &ConfigBuilder::for_mock(&mock)
            .model("log-model", Some("mock-served"))
            .log_path(&log),
        &[],
    );
    let addr = gw.addr;
    let chat_req = chat("log-model", &[]);

    // N chat requests over CONNS keep-alive connections: (id, wire bytes out).
    let chats: Vec<(String, u64)> = thread::scope(|s| {
        let handles: Vec<_> = (0..CONNS)
            .map(|_| {
                let chat_req = &chat_req;
                s.spawn(move || {
                    let mut c = Client::connect(addr);
                    (0..PER_CONN)
                        .map(|_| {
                            let r = c.request(chat_req);
                            assert_eq!(r.status, 200, "{}", r.text());
                            assert!(matches!(r.framing, Framing::Length(_)));
                            (request_id_of(&r), wire_len(&r))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(chats.len(), N);
    for (id, _) in &chats {
        assert!(is_hex32(id), "generated x-request-id {id:?}");
    }

    let mut c = Client::connect(addr);
    let not_found = c.request(&get("/no/such/path"));
    not_found.assert_error(404, "not_found");
    let bad_json = post_json("/v1/chat/completions", "{\"model\": \"x\", ", &[]);
    let bad = c.request(&bad_json);
    assert_eq!(bad.status, 400, "{}", bad.text());
    let with_id = chat("log-model", &[&format!("x-request-id: {CLIENT_ID}")]);
    let client_id = c.request(&with_id);
    assert_eq!(client_id.status, 200);
    // The client's id is kept, as sent.
    assert_eq!(request_id_of(&client_id), CLIENT_ID);
    drop(c);

    stop(&mut gw);
    let lines = read_log(&log);
    assert_eq!(lines.len(), N + 3, "log lines");

    let by_id: HashMap<&str, &Value> = lines
        .iter()
        .map(|v| (v["request_id"].as_str().unwrap(), v))
        .collect();
    assert_eq!(
        by_id.len(),
        lines.len(),
        "request ids in the log are unique"
    );

    // Every response's id is in the log, and every chat line is a success
    // with the mock's usage.
    let mut response_ids: HashSet<String> = HashSet::new();
    for (id, bytes_out) in &chats {
        let line = by_id
            .get(normalized_id(id).as_str())
            .unwrap_or_else(|| panic!("response id {id} not in the log"));
        assert_eq!(line["bytes_out"], *bytes_out, "{line}");
        response_ids.insert(normalized_id(id));
    }
    for r in [&not_found, &bad, &client_id] {
        response_ids.insert(normalized_id(&request_id_of(r)));
    }
    let log_ids: HashSet<String> = by_id.keys().map(|s| s.to_string()).collect();
    assert_eq!(response_ids, log_ids, "ids in responses vs ids in the log");
    assert!(log_ids.contains(CLIENT_ID_LOGGED));

    // The mock reports a quarter of the (rewritten) body's bytes as input.
    let upstream_input_tokens = mock_last_request(&mock).expect("recorded").body.len() / 4;
    let chat_lines: Vec<&Value> = lines
        .iter()
        .filter(|v| v["route"] == "chat_completions" && v["status"] == 200)
        .collect();
    assert_eq!(chat_lines.len(), N + 1);
    for v in &chat_lines {
        assert_eq!(v["provider"], "mock", "{v}");
        assert_eq!(v["client_protocol"], "openai_chat", "{v}");
        assert_eq!(v["method"], "POST", "{v}");
        assert_eq!(v["model"], "log-model", "{v}");
        assert_eq!(v["model_served"], "mock-served", "{v}");
        assert_eq!(v["stream"], false, "{v}");
        assert_eq!(v["upstream_status"], 200, "{v}");
        assert_eq!(v["input_tokens"], upstream_input_tokens, "{v}");
        assert_eq!(v["output_tokens"], 8, "{v}");
        assert_eq!(v["retries"], 0, "{v}");
        assert_eq!(v["error"], Value::Null, "{v}");
        assert_eq!(v["client_key"], Value::Null, "{v}");
        // The credential by its label (provider/key-N), never the key.
        assert_eq!(v["credential"], "mock/key-1", "{v}");
        assert!(v["shard"].as_u64().unwrap() < 2, "{v}");
        let latency = v["latency_us"].as_u64().unwrap();
        let upstream = v["upstream_latency_us"].as_u64().expect("upstream latency");
        let ttfb = v["ttfb_us"].as_u64().expect("ttfb");
        assert!(upstream <= latency && ttfb <= latency, "{v}");
        assert!(v["bytes_out"].as_u64().unwrap() > 0);
    }
    let plain_in = chat_req.len() as u64;
    assert_eq!(
        chat_lines
            .iter()
            .filter(|v| v["bytes_in"] == plain_in)
            .count(),
        N,
        "bytes_in of the plain chat requests"
    );

    let v = by_id[CLIENT_ID_LOGGED];
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], with_id.len() as u64);

    let v = by_id[normalized_id(&request_id_of(&not_found)).as_str()];
    assert_eq!(v["status"], 404, "{v}");
    assert_eq!(v["error"], "not_found", "{v}");
    assert_eq!(v["method"], "GET", "{v}");
    assert_eq!(v["provider"], Value::Null, "{v}");
    assert_eq!(v["upstream_status"], Value::Null, "{v}");

    let v = by_id[normalized_id(&request_id_of(&bad)).as_str()];
    assert_eq!(v["status"], 400, "{v}");
    assert_eq!(v["error"], "bad_request", "{v}");
    assert_eq!(v["route"], "chat_completions", "{v}");
    assert_eq!(v["upstream_status"], Value::Null, "{v}");
    assert_eq!(v["bytes_in"], bad_json.len() as u64, "{v}");
}

// ---------------------------------------------------------------------------
// 2. Sampling
// ---------------------------------------------------------------------------

/// Sends successes and errors; returns the ids of the error responses.
fn successes_and_errors(addr: std::net::SocketAddr) -> Vec<String> {
    let mut c = Client::connect(addr);
    for _ in 0..20 {
        let r = c.request(&chat("sampled", &[]));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(c.request(&get("/health")).status, 200);
    let not_found = c.request(&get("/nope"));
    not_found.assert_error(404, "not_found");
    let bad = c.request(&post_json("/v1/chat/completions", "{nope", &[]));
    assert_eq!(bad.status, 400);
    let upstream_500 = c.request(&chat("mock-error-500", &[]));
    assert_eq!(upstream_500.status, 500, "{}", upstream_500.text());
    [&not_found, &bad, &upstream_500]
        .iter()
        .map(|r| normalized_id(&request_id_of(r)))
        .collect()
}

#[track_caller]
fn assert_only_errors_logged(log: &Path, error_ids: &[String]) {
    let lines = read_log(log);
    let ids: Vec<&str> = lines
        .iter()
        .map(|v| v["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, error_ids, "logged lines: {lines:#?}");
    assert_eq!(lines[0]["error"], "not_found");
    assert_eq!(lines[1]["error"], "bad_request");
    assert_eq!(lines[2]["error"], "upstream_status");
    assert_eq!(lines[2]["status"], 500);
    assert_eq!(lines[2]["upstream_status"], 500);
    assert_eq!(lines[2]["provider"], "mock");
}

#[test]
fn sample_rate_zero_keeps_only_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mock = start_mock(&[]);
    let mut gw = start_gateway_env(
        &ConfigBuilder::for_mock(&mock)
            .shards(1)
            .log_path(&log)
            .log("sample_rate", "0.0"),
        &[],
    );
    let errors = successes_and_errors(gw.addr);
    stop(&mut gw);
    assert_only_errors_logged(&log, &errors);
}

#[test]
fn log_sample_rate_env_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mock = start_mock(&[]);
    let config = ConfigBuilder::for_mock(&mock)
        .shards(1)
        .log_path(&log)
        .log("sample_rate", "1.0");
    let mut gw = start_gateway_env(&config, &[("LOG_SAMPLE_RATE", "0")]);
    let errors = successes_and_errors(gw.addr);
    stop(&mut gw);
    assert_only_errors_logged(&log, &errors);

    // A bad value is refused at start, naming the variable.
    let file = config_file(&config.build());
    let (status, _out, err) = run_to_exit(
        &["serve", "--config", file.path().to_str().unwrap()],
        &[("LOG_SAMPLE_RATE", "1.5")],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(err.contains("LOG_SAMPLE_RATE"), "stderr: {err}");
}

// ---------------------------------------------------------------------------
// 3. Secrets never logged
// ---------------------------------------------------------------------------

#[test]
fn secrets_never_appear_in_any_output() {
    const ALICE_KEY: &str = "sk-gw-alice-secret-4567";
    const WRONG: [&str; 4] = [
        "sk-gw-wrong-bearer-0001",
        "sk-gw-wrong-xapikey-0002",
        "sk-gw-wrong-query-0003",
        "admin-wrong-key-0123456789",
    ];
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mock = start_mock(&["--stream-chunks", "6", "--chunk-interval-ms", "100"]);
    let mut gw = start_gateway_env(
        &ConfigBuilder::for_mock(&mock)
            .key("alice", ALICE_KEY)
            .log_path(&log)
            .admin_key(ADMIN_KEY),
        &[],
    );
    let addr = gw.addr;
    let mut c = Client::connect(addr);
    let body = chat_body("secret-model", false);
    let good = [
        post_json(
            "/v1/chat/completions",
            &body,
            &[&format!("Authorization: Bearer {ALICE_KEY}")],
        ),
        post_json(
            "/v1/chat/completions",
            &body,
            &[&format!("x-api-key: {ALICE_KEY}")],
        ),
        post_json(
            "/v1/chat/completions",
            &body,
            &[&format!("x-goog-api-key: {ALICE_KEY}")],
        ),
        post_json(&format!("/v1/chat/completions?key={ALICE_KEY}"), &body, &[]),
    ];
    for req in &good {
        let r = c.request(req);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The provider key did reach the provider (it is a live secret).
    let recorded = mock_last_request(&mock).expect("a chat request");
    assert_eq!(
        recorded.header_values("authorization"),
        vec![format!("Bearer {PROVIDER_KEY}")]
    );
    let bad = [
        post_json(
            "/v1/chat/completions",
            &body,
            &[&format!("Authorization: Bearer {}", WRONG[0])],
        ),
        post_json(
            "/v1/chat/completions",
            &body,
            &[&format!("x-api-key: {}", WRONG[1])],
        ),
        post_json(
            &format!("/v1/chat/completions?key={}", WRONG[2]),
            &body,
            &[],
        ),
        post_json("/v1/chat/completions", &body, &[]),
    ];
    for req in &bad {
        let r = c.request(req);
        assert_eq!(r.status, 401, "{}", r.text());
    }
    let r = c.request(&get_with(
        "/v1/models",
        &[&format!("Authorization: Bearer {ALICE_KEY}")],
    ));
    assert_eq!(r.status, 200);
    let r = c.request(&get_with(
        "/admin/stats",
        &[&format!("x-admin-key: {}", WRONG[3])],
    ));
    r.assert_error(401, "invalid_admin_key");

    // The admin and metrics views, with a stream in flight.
    let mut s = Client::connect(addr);
    s.send(&post_json(
        "/v1/chat/completions",
        &chat_body("secret-stream", true),
        &[&format!("Authorization: Bearer {ALICE_KEY}")],
    ));
    assert_eq!(s.read_head().unwrap().status, 200);
    let requests = wait_in_flight(addr, 1, Duration::from_secs(2));
    assert_eq!(requests["requests"][0]["model"], "secret-stream");
    let stats = admin_get(addr, "/admin/stats");
    let metrics = scrape(addr);
    finish_stream(&mut s);
    let requests_after = wait_in_flight(addr, 0, Duration::from_secs(3));
    drop((c, s));

    stop(&mut gw);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let lines = read_log(&log);
    let outputs = [
        ("access log", log_text),
        ("gateway stdout", gw.stdout()),
        ("gateway stderr", gw.stderr()),
        ("/metrics", metrics),
        ("/admin/stats", stats.to_string()),
        ("/admin/requests", requests.to_string()),
        ("/admin/requests after", requests_after.to_string()),
    ];
    let secrets = [PROVIDER_KEY, ALICE_KEY, ADMIN_KEY]
        .into_iter()
        .chain(WRONG);
    for secret in secrets {
        for (what, text) in &outputs {
            assert!(
                !text.contains(secret),
                "{what} contains the secret {secret:?}:\n{text}"
            );
        }
    }

    // Authenticated chat lines name the key by its id, failed ones by none.
    let chats: Vec<&Value> = lines
        .iter()
        .filter(|v| v["route"] == "chat_completions")
        .collect();
    assert_eq!(chats.len(), good.len() + bad.len() + 1);
    for v in &chats {
        match v["status"].as_u64().unwrap() {
            200 => assert_eq!(v["client_key"], "alice", "{v}"),
            401 => {
                assert_eq!(v["client_key"], Value::Null, "{v}");
                assert_eq!(v["error"], "auth", "{v}");
            }
            s => panic!("unexpected status {s}: {v}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 4. /metrics
// ---------------------------------------------------------------------------

#[test]
fn metrics_count_requests_and_pass_promtool() {
    const K: u64 = 7;
    let (_mock, gw) = start_pair(&["--stream-chunks", "3"], |c| c);
    let addr = gw.addr;
    let mut c = Client::connect(addr);
    for _ in 0..K - 1 {
        let r = c.request(&chat("metrics-model", &[]));
        assert_eq!(r.status, 200);
    }
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body("metrics-model", true),
        &[],
    ));
    assert_eq!(c.read_head().unwrap().status, 200);
    finish_stream(&mut c);
    let r = c.request(&get("/nope"));
    assert_eq!(r.status, 404);

    // Counters are live.
    let text = scrape(addr);
    let chat_series = "shardgate_requests_total{route=\"chat_completions\"}";
    assert_eq!(metric_required(&text, chat_series), K as f64, "{text}");
    assert_eq!(
        metric_required(
            &text,
            "shardgate_provider_requests_total{provider=\"mock\"}"
        ),
        K as f64
    );
    assert_eq!(
        metric_required(
            &text,
            "shardgate_model_requests_total{model=\"metrics-model\"}"
        ),
        K as f64
    );
    assert!(metric_required(&text, "shardgate_responses_total{code=\"200\"}") >= K as f64);
    assert_eq!(
        metric_required(&text, "shardgate_responses_total{code=\"404\"}"),
        1.0
    );

    // Histograms are published every second.
    thread::sleep(Duration::from_millis(1200));
    let mut text = scrape(addr);
    let upstream_count = "shardgate_upstream_duration_seconds_count";
    if metric(&text, upstream_count) != Some(K as f64) {
        text = poll_until(Duration::from_secs(3), || {
            let t = scrape(addr);
            (metric(&t, upstream_count) == Some(K as f64)).then_some(t)
        })
        .unwrap_or_else(|| panic!("{upstream_count} never reached {K}:\n{}", scrape(addr)));
    }
    assert_eq!(metric_required(&text, chat_series), K as f64);
    assert_eq!(
        metric_required(&text, "shardgate_time_to_first_token_seconds_count"),
        1.0
    );
    // Every request but this scrape: K chats, the 404 and the first scrape.
    assert!(metric_required(&text, "shardgate_request_duration_seconds_count") >= (K + 1) as f64);
    for family in [
        "shardgate_request_duration_seconds",
        "shardgate_upstream_duration_seconds",
        "shardgate_time_to_first_token_seconds",
    ] {
        let buckets: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{family}_bucket{{")))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), 18, "{family} buckets");
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{family}");
        let count = metric_required(&text, &format!("{family}_count"));
        assert_eq!(
            metric_required(&text, &format!("{family}_bucket{{le=\"+Inf\"}}")),
            count
        );
        assert!(metric_required(&text, &format!("{family}_sum")) > 0.0);
    }
    // The scrape itself is the one request in flight.
    assert_eq!(metric_sum(&text, "shardgate_inflight_requests"), 1.0);
    assert_eq!(metric_required(&text, "shardgate_inflight_tracked"), 0.0);

    // HEAD has the same head and no body.
    let head_req = b"HEAD /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut h = Client::connect(addr);
    h.send(head_req);
    let head = h.read_head().unwrap();
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").is_some());

    promtool_check(&text);
}

/// `promtool check metrics` on `text`, when promtool is installed.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("NOTICE: promtool not on PATH; skipping `promtool check metrics`");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- input:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// 5. Admin endpoints
// ---------------------------------------------------------------------------

#[test]
fn admin_endpoints_are_off_without_a_key() {
    let (_mock, gw) = start_pair(&[], |c| c);
    for path in ["/admin/stats", "/admin/requests"] {
        let r = roundtrip(gw.addr, &get(path));
        r.assert_error(404, "admin_disabled");
        let r = roundtrip(
            gw.addr,
            &get_with(path, &[&format!("Authorization: Bearer {ADMIN_KEY}")]),
        );
        r.assert_error(404, "admin_disabled");
    }
}

#[test]
fn admin_endpoints_need_the_admin_key() {
    let (_mock, gw) = start_pair(&[], |c| c.admin_key(ADMIN_KEY));
    let mut c = Client::connect(gw.addr);
    for path in ["/admin/stats", "/admin/requests"] {
        c.request(&get(path)).assert_error(401, "missing_admin_key");
        for header in [
            "Authorization: Bearer admin-secret-key-012345678".to_string(),
            "Authorization: Bearer admin-secret-key-01234567890".to_string(),
            "x-admin-key: wrong-admin-key-0123456789".to_string(),
        ] {
            let r = c.request(&get_with(path, &[&header]));
            r.assert_error(401, "invalid_admin_key");
            assert!(!r.text().contains(ADMIN_KEY));
        }
        // The right key in a scheme other than Bearer, or an empty Bearer, is
        // not accepted (the gateway calls it missing; invalid would do too).
        for header in [
            "Authorization: Bearer ".to_string(),
            format!("Authorization: {ADMIN_KEY}"),
            format!("Authorization: Basic {ADMIN_KEY}"),
        ] {
            let r = c.request(&get_with(path, &[&header]));
            assert_eq!(r.status, 401, "{header}: {}", r.text());
            let code = r.json()["error"]["code"].clone();
            assert!(
                code == "missing_admin_key" || code == "invalid_admin_key",
                "{header}: {code}"
            );
            assert!(!r.text().contains(ADMIN_KEY));
        }
        for header in [
            format!("Authorization: Bearer {ADMIN_KEY}"),
            format!("authorization: bearer {ADMIN_KEY}"),
            format!("x-admin-key: {ADMIN_KEY}"),
        ] {
            let r = c.request(&get_with(path, &[&header]));
            assert_eq!(r.status, 200, "{header}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert!(r.json().is_object());
        }
        let r = c.request(&post_json(
            path,
            "{}",
            &[&format!("x-admin-key: {ADMIN_KEY}")],
        ));
        r.assert_error(405, "method_not_allowed");
    }
}

#[track_caller]
fn assert_latency_shape(v: &Value, filled: bool) {
    let keys: HashSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let want: HashSet<&str> = [
        "count", "sum", "mean", "min", "max", "p50", "p90", "p99", "p999",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want, "{v}");
    if filled {
        let q: Vec<u64> = ["min", "p50", "p90", "p99", "p999", "max"]
            .iter()
            .map(|k| v[*k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")))
            .collect();
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "quantiles {v}");
        assert!(v["count"].as_u64().unwrap() > 0);
        assert!(v["mean"].as_f64().is_some());
    } else {
        assert_eq!(v["count"], 0, "{v}");
        for k in ["mean", "min", "max", "p50", "p90", "p99", "p999"] {
            assert_eq!(v[k], Value::Null, "{k} in {v}");
        }
    }
}

#[test]
fn admin_stats_and_requests() {
    let (_mock, gw) = start_pair(
        &["--stream-chunks", "10", "--chunk-interval-ms", "200"],
        |c| c.admin_key(ADMIN_KEY),
    );
    let addr = gw.addr;

    // Before any traffic.
    let stats = admin_get(addr, "/admin/stats");
    for kind in ["total", "upstream", "ttft"] {
        assert_latency_shape(&stats["latency_us"][kind], false);
    }
    let empty = admin_get(addr, "/admin/requests");
    assert_eq!(empty["in_flight"], 0);
    assert_eq!(empty["requests"], serde_json::json!([]));
    assert!(empty["capacity"].as_u64().unwrap() > 0);

    // Five chats, then let the histograms be published.
    let mut c = Client::connect(addr);
    for _ in 0..5 {
        assert_eq!(c.request(&chat("stats-model", &[])).status, 200);
    }
    drop(c);
    thread::sleep(Duration::from_millis(1200));
    let stats = poll_until(Duration::from_secs(3), || {
        let s = admin_get(addr, "/admin/stats");
        (s["latency_us"]["upstream"]["count"] == 5).then_some(s)
    })
    .expect("upstream latency count 5");
    let shards = stats["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2);
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"], i as u64);
        for g in [
            "open_connections",
            "inflight_requests",
            "upstream_idle_connections",
            "log_ring_used_bytes",
            "log_ring_capacity_bytes",
            "log_records_dropped",
        ] {
            assert!(s[g].is_number(), "{g} in {s}");
        }
    }
    assert!(stats["gauges"]["open_connections"].is_number());
    let counters = &stats["counters"];
    assert_eq!(counters["requests_by_route"]["chat_completions"], 5);
    assert!(counters["responses_by_status"]["200"].as_u64().unwrap() >= 5);
    assert!(counters["responses_by_class"]["2xx"].as_u64().unwrap() >= 5);
    assert!(counters["errors"].is_object());
    assert_eq!(counters["providers"]["mock"], 5);
    assert_eq!(counters["models"]["stats-model"], 5);
    assert_latency_shape(&stats["latency_us"]["total"], true);
    assert_latency_shape(&stats["latency_us"]["upstream"], true);
    assert_latency_shape(&stats["latency_us"]["ttft"], false);
    let tracker = &stats["inflight_tracker"];
    assert_eq!(tracker["tracked"], 0);
    assert_eq!(tracker["rejected"], 0);
    assert!(tracker["capacity"].as_u64().unwrap() > 0);

    // A stream in flight is listed while it runs.
    let (mut s, id) = start_stream(addr, "inflight-model");
    let listed = poll_until(Duration::from_secs(2), || {
        let v = admin_get(addr, "/admin/requests");
        (v["requests"][0]["bytes_streamed"].as_u64() > Some(0)).then_some(v)
    })
    .expect("the stream listed with bytes_streamed > 0");
    assert_eq!(listed["in_flight"], 1, "{listed:#}");
    let entries = listed["requests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{listed:#}");
    let e = &entries[0];
    assert_eq!(e["id"], id.as_str(), "{e}");
    assert_eq!(e["model"], "inflight-model", "{e}");
    assert_eq!(e["provider"], "mock", "{e}");
    assert_eq!(e["protocol"], "openai", "{e}");
    assert!(e["shard"].as_u64().unwrap() < 2);
    assert!(e["age_ms"].is_u64() && e["started_unix_us"].as_u64().unwrap() > 0);
    let stats = admin_get(addr, "/admin/stats");
    assert_eq!(stats["inflight_tracker"]["tracked"], 1);

    let text = finish_stream(&mut s);
    assert!(text.contains("[DONE]"));
    wait_in_flight(addr, 0, Duration::from_secs(3));
    let after = admin_get(addr, "/admin/requests");
    assert_eq!(after["requests"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------
// 6. No tracker leaks when clients go away
// ---------------------------------------------------------------------------

#[test]
fn dropped_streams_leave_no_tracked_requests() {
    const STREAMS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mock = start_mock(&["--stream-chunks", "10", "--chunk-interval-ms", "100"]);
    let mut gw = start_gateway_env(
        &ConfigBuilder::for_mock(&mock)
            .admin_key(ADMIN_KEY)
            .log_path(&log),
        &[],
    );
    let addr = gw.addr;

    let mut clients = Vec::new();
    for _ in 0..STREAMS {
        let mut c = Client::connect(addr);
        c.send(&post_json(
            "/v1/chat/completions",
            &chat_body("leak-model", true),
            &[],
        ));
        clients.push(c);
    }
    let mut ids = HashSet::new();
    for c in &mut clients {
        let head = c.read_head().expect("stream head");
        assert_eq!(head.status, 200);
        ids.insert(request_id_of(&head));
        c.read_chunk().expect("first chunk").expect("data");
    }
    let listed = wait_in_flight(addr, STREAMS as u64, Duration::from_secs(2));
    let listed_ids: HashSet<String> = listed["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed_ids, ids);

    // Half the clients go away mid-stream; the rest read to the end.
    let kept = clients.split_off(STREAMS / 2);
    drop(clients);
    for mut c in kept {
        assert!(finish_stream(&mut c).contains("[DONE]"));
    }
    wait_in_flight(addr, 0, Duration::from_secs(5));
    let metrics = poll_until(Duration::from_secs(2), || {
        let t = scrape(addr);
        // The scrape itself is the one request in flight.
        (metric_sum(&t, "shardgate_inflight_requests") == 1.0).then_some(t)
    })
    .expect("inflight_requests gauge back to 1 (the scrape)");
    assert_eq!(metric_required(&metrics, "shardgate_inflight_tracked"), 0.0);
    assert_eq!(
        metric_required(
            &metrics,
            "shardgate_requests_total{route=\"chat_completions\"}"
        ),
        STREAMS as f64
    );

    // Still serving.
    let r = roundtrip(addr, &chat("after-leak", &[]));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], MOCK_ANSWER);
    let (mut s, _) = start_stream(addr, "after-leak-stream");
    assert!(finish_stream(&mut s).contains("[DONE]"));

    stop(&mut gw);
    let lines = read_log(&log);
    let streams: Vec<&Value> = lines
        .iter()
        .filter(|v| v["route"] == "chat_completions" && v["stream"] == true)
        .collect();
    assert_eq!(streams.len(), STREAMS + 1);
    let disconnected = streams
        .iter()
        .filter(|v| v["error"] == "client_disconnect")
        .count();
    assert_eq!(disconnected, STREAMS / 2, "stream lines: {streams:#?}");
}

// ---------------------------------------------------------------------------
// 7. Log write failures
// ---------------------------------------------------------------------------

#[test]
fn failing_log_writes_do_not_stop_serving() {
    let mock = start_mock(&[]);
    let mut gw = start_gateway_env(
        &ConfigBuilder::for_mock(&mock)
            .log_path(Path::new("/dev/full"))
            .log("flush_interval_ms", 10),
        &[],
    );
    let mut c = Client::connect(gw.addr);
    for i in 0..50 {
        let r = c.request(&chat("full-disk", &[]));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        if i == 25 {
            // Let the writer hit the error while requests keep coming.
            thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(c.request(&get("/health")).status, 200);
    drop(c);
    stop(&mut gw);
    let err = gw.stderr();
    assert!(
        err.contains("access log"),
        "expected the write failure on stderr:\n{}",
        gw.output_report()
    );
}

#[test]
fn log_in_a_missing_directory_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("no-such-dir").join("access.log");
    let config = ConfigBuilder::new("http://127.0.0.1:9/v1").log_path(&log);
    let file = config_file(&config.build());
    let (status, out, err) = run_to_exit(
        &["serve", "--config", file.path().to_str().unwrap()],
        &[("LOG_SAMPLE_RATE", "")],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains(log.to_str().unwrap()),
        "stderr does not name the log path:\n{err}"
    );
    assert!(!out.contains("listening on"), "stdout: {out}");
}

#[test]
fn bodies_are_logged_redacted_and_capped_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mock = start_mock(&[]);
    let mut gw = start_gateway_env(
        &ConfigBuilder::for_mock(&mock)
            .shards(1)
            .log_path(&log)
            .log("log_bodies", "true")
            .log("body_cap_bytes", "4096")
            .log("body_ring_bytes", "65536"),
        &[],
    );
    let secret = "sk-body-secret-0123456789";
    let body = format!(
        r#"{{"model":"body-model","api_key":"{secret}","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8000)
    );
    let mut c = Client::connect(gw.addr);
    let r = c.request(&post_json("/v1/chat/completions", &body, &[]));
    assert_eq!(r.status, 200, "{}", r.text());
    // A streamed answer is captured as payload (no chunk framing).
    let r = c.request(&post_json(
        "/v1/chat/completions",
        &chat_body("body-stream", true),
        &[],
    ));
    assert_eq!(r.status, 200);
    stop(&mut gw);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(secret), "the secret reached the log");
    // read_log checks the default field set; body lines have two more.
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let req_body = lines[0]["request_body"].as_str().unwrap();
    assert!(
        req_body.len() <= 4096,
        "request body not capped: {}",
        req_body.len()
    );
    assert!(req_body.contains("body-model"));
    assert!(req_body.contains("[REDACTED]"));
    let resp_body = lines[0]["response_body"].as_str().unwrap();
    assert!(resp_body.contains("Hello from the shardgate mock provider."));
    let stream_body = lines[1]["response_body"].as_str().unwrap();
    assert!(stream_body.starts_with("data: {"), "{stream_body}");
    assert!(stream_body.contains("[DONE]"));
}

#[test]
fn bodies_are_not_logged_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mock = start_mock(&[]);
    let mut gw = start_gateway_env(
        &ConfigBuilder::for_mock(&mock).shards(1).log_path(&log),
        &[],
    );
    let mut c = Client::connect(gw.addr);
    assert_eq!(c.request(&chat("m", &[])).status, 200);
    stop(&mut gw);
    let lines = read_log(&log);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].get("request_body").is_none());
    assert!(lines[0].get("response_body").is_none());
}
