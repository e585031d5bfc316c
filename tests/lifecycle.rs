//! Readiness, graceful drain on SIGTERM, and refusing a taken port.

mod common;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn ready_is_200_once_up() {
    let (_mock, gw) = start_pair(&[], |c| c);
    let mut statuses = Vec::new();
    let ready = poll_until(Duration::from_secs(3), || {
        let r = roundtrip(gw.addr, &get("/ready"));
        statuses.push(r.status);
        if r.status == 503 {
            assert_eq!(r.json()["status"], "not ready");
        }
        (r.status == 200).then_some(r)
    })
    .unwrap_or_else(|| panic!("/ready never became 200: {statuses:?}"));
    assert_eq!(ready.json(), serde_json::json!({"status": "ready"}));
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    // /ready is GET only.
    let r = roundtrip(gw.addr, &post_json("/ready", "{}", &[]));
    r.assert_error(405, "method_not_allowed");
}

/// Reads the rest of a chunked SSE body, returning the concatenated text.
fn read_stream_rest(c: &mut Client, mut text: String) -> String {
    while let Some(chunk) = c.read_chunk().unwrap_or_else(|e| {
        panic!("stream broken after {:?}: {e}", text);
    }) {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text
}

#[test]
fn sigterm_drains_in_flight_stream_and_exits_zero() {
    let (_mock, mut gw) = start_pair(
        &["--stream-chunks", "5", "--chunk-interval-ms", "200"],
        |c| c.server("drain_timeout_ms", 5000),
    );
    let addr = gw.addr;
    // An idle keep-alive connection, to see it closed on shutdown.
    let mut idle = Client::connect(addr);
    assert_eq!(idle.request(&get("/health")).status, 200);

    let mut c = Client::connect(addr);
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body("drain-model", true),
        &[],
    ));
    let head = c.read_head().expect("stream head");
    assert_eq!(head.status, 200);
    let first = c.read_chunk().unwrap().expect("first event");
    let text = String::from_utf8(first).unwrap();
    assert!(text.starts_with("data: "), "{text:?}");

    let sent_at = Instant::now();
    gw.signal(libc::SIGTERM);

    // The idle connection is closed promptly.
    idle.assert_closed(Duration::from_secs(2));

    // New connections are refused after a moment.
    let refused = poll_until(Duration::from_secs(2), || match TcpStream::connect_timeout(
        &addr,
        Duration::from_millis(200),
    ) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
        _ => None,
    });
    assert!(
        refused.is_some(),
        "still accepting connections 2 s after SIGTERM\n{}",
        gw.output_report()
    );

    // The in-flight stream completes.
    let text = read_stream_rest(&mut c, text);
    assert!(text.ends_with("data: [DONE]\n\n"), "stream: {text:?}");
    let events = sse_data(&text);
    assert_eq!(events.len(), 8, "{events:#?}");
    let contents = sse_contents(&events);
    assert_eq!(contents[1..], MOCK_WORDS[..5]);
    // And then the connection is closed (no keep-alive during shutdown).
    c.assert_closed(Duration::from_secs(2));

    let status = gw
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("gateway did not exit\n{}", gw.output_report()));
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        gw.output_report()
    );
    assert!(
        sent_at.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        sent_at.elapsed()
    );
    assert!(gw.stdout().contains("stopped"), "{}", gw.output_report());
}

#[test]
fn drain_timeout_bounds_shutdown() {
    // A stream far longer than the drain timeout: the gateway exits after
    // about drain_timeout_ms anyway.
    let (_mock, mut gw) = start_pair(
        &["--stream-chunks", "50", "--chunk-interval-ms", "200"],
        |c| c.server("drain_timeout_ms", 1000),
    );
    let mut c = Client::connect(gw.addr);
    c.send(&post_json(
        "/v1/chat/completions",
        &chat_body("long-stream", true),
        &[],
    ));
    assert_eq!(c.read_head().unwrap().status, 200);
    assert!(c.read_chunk().unwrap().is_some());
    let sent_at = Instant::now();
    gw.signal(libc::SIGTERM);
    let status = gw
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("gateway did not exit\n{}", gw.output_report()));
    let took = sent_at.elapsed();
    assert!(status.success(), "{status:?}\n{}", gw.output_report());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
        "exit after {took:?}, drain timeout is 1 s"
    );
    // The cut stream did not end with [DONE].
    let mut text = String::new();
    while let Ok(Some(chunk)) = c.read_chunk() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("[DONE]"), "{text:?}");
}

#[test]
fn sigterm_on_idle_gateway_exits_zero_quickly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (_mock, mut gw) = start_pair(&[], |c| c);
        assert_eq!(roundtrip(gw.addr, &get("/health")).status, 200);
        let start = Instant::now();
        gw.signal(sig);
        let status = gw
            .wait_timeout(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("no exit after signal {sig}\n{}", gw.output_report()));
        assert!(status.success(), "signal {sig}: {status:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn second_serve_on_the_same_port_is_refused() {
    let (mock, gw) = start_pair(&[], |c| c);
    let port = gw.addr.port();
    let config = ConfigBuilder::for_mock(&mock)
        .listen(&format!("127.0.0.1:{port}"))
        .build();
    let file = config_file(&config);
    let path = file.path().to_str().unwrap();
    let (status, stdout, stderr) = run_to_exit(
        &["serve", "--config", path],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "second serve must fail: {stdout}");
    assert!(stderr.contains("already listening"), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "stderr: {stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
    // The first one is unaffected.
    for _ in 0..6 {
        assert_eq!(roundtrip(gw.addr, &get("/health")).status, 200);
    }
}

#[test]
fn serve_on_a_port_held_by_another_program_is_refused() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let config = ConfigBuilder::new("http://127.0.0.1:9/v1")
        .listen(&format!("127.0.0.1:{port}"))
        .build();
    let file = config_file(&config);
    let path = file.path().to_str().unwrap();
    let (status, _stdout, stderr) = run_to_exit(
        &["serve", "--config", path],
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.success());
    assert!(stderr.contains("already listening"), "stderr: {stderr}");
    drop(holder);
}

#[test]
fn shards_flag_and_fixed_port_work() {
    // `serve --shards 1` on a fixed, free port.
    let mock = start_mock(&[]);
    let port = closed_port();
    let config = ConfigBuilder::for_mock(&mock)
        .listen(&format!("127.0.0.1:{port}"))
        .build();
    let file = config_file(&config);
    let path = file.path().to_str().unwrap().to_string();
    let gw = Proc::spawn(
        "gateway",
        &["serve", "--config", &path, "--shards", "1"],
        vec![file],
    );
    assert_eq!(gw.addr.port(), port);
    let r = roundtrip(gw.addr, &chat("fixed-port", &[]));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let (_mock, mut gw) = start_pair(&["--latency-ms", "800"], |c| {
        c.server("drain_timeout_ms", 5000)
    });
    let mut c = Client::connect(gw.addr);
    let start = Instant::now();
    c.send(&chat("in-flight", &[]));
    std::thread::sleep(Duration::from_millis(200));
    gw.signal(libc::SIGTERM);
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "in-flight");
    assert!(start.elapsed() >= Duration::from_millis(750));
    c.assert_closed(Duration::from_secs(2));
    let status = gw
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("gateway did not exit\n{}", gw.output_report()));
    assert!(status.success(), "{status:?}");
}
