//! Abusive clients against a real gateway on loopback: slowloris heads,
//! streams nobody reads, connection floods beyond the cap, and floods of
//! invalid keys. In each, every bad connection must end by its timeout or
//! limit, and a normal client running alongside must keep its latency.
//!
//! Latency bound (all four tests): the normal client's p99 under attack
//! must stay within `max(3 x baseline p99, baseline p99 + 25 ms)`, the
//! baseline being measured by the same client against the same processes
//! just before the attack. The ratio alone is too tight when the baseline
//! p99 is ~1 ms (one scheduler slice on this shared 2-core box is a few
//! ms); the additive slack alone would let a 20x regression pass on a fast
//! box. Either way a gateway that stalls behind the attackers (head-of-line
//! blocking on a shard, a full accept queue, buffering a stream) shows
//! 100 ms+ tails, far outside the bound.
//!
//! The tests in this file run one at a time (a lock), so they do not skew
//! each other's latency. Each prints its numbers (`--nocapture`).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it).
/// Returns the soft limit in force.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Whether this process may open `need` descriptors; says why not.
fn enough_fds(need: u64) -> bool {
    let have = raise_nofile();
    if have < need {
        eprintln!(
            "SKIPPED: RLIMIT_NOFILE is {have} (hard limit included) but this test needs {need} \
             descriptors; raise it (ulimit -n {need}) to run it"
        );
        return false;
    }
    true
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Open descriptors of `pid`.
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The sum over all label sets of the samples of metric `name` (with the
/// exact label text `labels`, e.g. `{code="503"}`, or "" for any).
fn metric(gw: &Proc, name: &str, labels: &str) -> f64 {
    let r = roundtrip(gw.addr, &get("/metrics"));
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let rest = key.strip_prefix(name)?;
            let matches = if labels.is_empty() {
                rest.is_empty() || rest.starts_with('{')
            } else {
                rest == labels
            };
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    let mut v = samples.to_vec();
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One normal request on a fresh connection (so the accept path is
/// measured too); panics unless it is a 200 with the mock's answer.
fn normal_request(addr: SocketAddr, headers: &[&str]) -> Duration {
    let start = Instant::now();
    let r = roundtrip(addr, &chat("mock-model", headers));
    let took = start.elapsed();
    assert_eq!(r.status, 200, "normal client: {}", r.text());
    assert!(
        r.text().contains(MOCK_ANSWER),
        "normal client: {}",
        r.text()
    );
    took
}

/// `n` sequential normal requests.
fn normal_samples(addr: SocketAddr, headers: &[&str], n: usize) -> Vec<Duration> {
    (0..n).map(|_| normal_request(addr, headers)).collect()
}

/// A normal client running sequential requests in the background until
/// stopped; `stop()` returns its latencies.
struct NormalClient {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<Duration>>,
}

impl NormalClient {
    fn start(addr: SocketAddr, headers: &'static [&'static str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = thread::spawn({
            let stop = stop.clone();
            move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    samples.push(normal_request(addr, headers));
                    // Sequential, paced: about 500 requests per second.
                    thread::sleep(Duration::from_millis(1));
                }
                samples
            }
        });
        NormalClient { stop, handle }
    }

    fn stop(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("normal client panicked")
    }
}

/// Asserts the latency bound (see the module docs) and prints the numbers.
fn check_latency(case: &str, baseline: &[Duration], attack: &[Duration]) {
    let base = percentile(baseline, 0.99);
    let p99 = percentile(attack, 0.99);
    let bound = (base * 3).max(base + Duration::from_millis(25));
    eprintln!(
        "[{case}] normal client: baseline n={} p50 {:.2} ms p99 {:.2} ms; under attack n={} p50 {:.2} ms \
         p99 {:.2} ms max {:.2} ms; bound {:.2} ms",
        baseline.len(),
        ms(percentile(baseline, 0.5)),
        ms(base),
        attack.len(),
        ms(percentile(attack, 0.5)),
        ms(p99),
        ms(percentile(attack, 1.0)),
        ms(bound)
    );
    assert!(
        attack.len() >= 50,
        "[{case}] the normal client made only {} requests during the attack",
        attack.len()
    );
    assert!(
        p99 <= bound,
        "[{case}] normal client p99 {:.2} ms under attack exceeds {:.2} ms (baseline p99 {:.2} ms)",
        ms(p99),
        ms(bound),
        ms(base)
    );
}

// ---------------------------------------------------------------------------
// (a) slowloris
// ---------------------------------------------------------------------------

struct Slow {
    stream: TcpStream,
    opened: Instant,
    last_byte: Instant,
    got: Vec<u8>,
}

const SLOW_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nX-Slow: ";

fn open_slow(addr: SocketAddr) -> Slow {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.write_all(SLOW_HEAD).expect("write head");
    stream.set_nonblocking(true).unwrap();
    let now = Instant::now();
    Slow {
        stream,
        opened: now,
        last_byte: now,
        got: Vec::new(),
    }
}

#[test]
fn slowloris_connections_are_closed_by_header_read_and_normal_clients_keep_latency() {
    const CONNS: usize = 2000;
    const HEADER_READ_MS: u64 = 2000;
    const ATTACK: Duration = Duration::from_secs(8);
    let _serial = serial();
    if !enough_fds(CONNS as u64 + 500) {
        return;
    }
    let (_mock, gw) = start_pair(&[], |c| c.timeout("header_read_ms", HEADER_READ_MS));
    let addr = gw.addr;
    normal_samples(addr, &[], 50); // warm up
    let fds_before = fd_count(gw.pid());
    let baseline = normal_samples(addr, &[], 400);

    // The attack: 2000 connections trickling a head one byte a second;
    // each one the gateway closes is replaced while the attack lasts, so
    // the pressure is constant.
    let attack_start = Instant::now();
    let mut slow: Vec<Slow> = (0..CONNS).map(|_| open_slow(addr)).collect();
    let opened_in = attack_start.elapsed();
    let normal = NormalClient::start(addr, &[]);
    let mut opened = CONNS;
    let mut lifetimes = Vec::new();
    let mut got_408 = 0usize;
    let mut closed_without_408 = 0usize;
    let mut peak_fds = 0usize;
    let give_up = attack_start + ATTACK + Duration::from_millis(HEADER_READ_MS + 5000);
    let mut normal = Some(normal);
    let mut normal_samples_attack = Vec::new();
    while !slow.is_empty() && Instant::now() < give_up {
        let attacking = attack_start.elapsed() < ATTACK;
        if !attacking {
            if let Some(n) = normal.take() {
                normal_samples_attack = n.stop();
            }
        }
        let mut i = 0;
        while i < slow.len() {
            let s = &mut slow[i];
            let mut buf = [0u8; 1024];
            let closed = match s.stream.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    s.got.extend_from_slice(&buf[..n]);
                    false
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if s.last_byte.elapsed() >= Duration::from_secs(1) {
                        s.last_byte = Instant::now();
                        // A write error means the gateway is gone: the next
                        // read reports it.
                        let _ = s.stream.write(b"a");
                    }
                    false
                }
                Err(_) => true,
            };
            if closed {
                let s = slow.swap_remove(i);
                lifetimes.push(s.opened.elapsed());
                if s.got.starts_with(b"HTTP/1.1 408 ") {
                    got_408 += 1;
                } else {
                    assert!(
                        s.got.is_empty(),
                        "slowloris connection got something else than 408: {:?}",
                        String::from_utf8_lossy(&s.got)
                    );
                    closed_without_408 += 1;
                }
                if attacking {
                    slow.push(open_slow(addr));
                    opened += 1;
                }
                continue;
            }
            i += 1;
        }
        peak_fds = peak_fds.max(fd_count(gw.pid()));
        thread::sleep(Duration::from_millis(50));
    }
    if let Some(n) = normal.take() {
        normal_samples_attack = n.stop();
    }
    let still_open = slow.len();
    drop(slow);

    let min = percentile(&lifetimes, 0.0);
    let max = percentile(&lifetimes, 1.0);
    eprintln!(
        "[slowloris] {opened} connections opened ({CONNS} at once in {:.0} ms, replaced for {}s); \
         {} closed: {got_408} with 408, {closed_without_408} silently; {still_open} still open; \
         lifetime min {:.0} ms p50 {:.0} ms p99 {:.0} ms max {:.0} ms (header_read_ms {HEADER_READ_MS}); \
         gateway fds {fds_before} before, peak {peak_fds}",
        ms(opened_in),
        ATTACK.as_secs(),
        lifetimes.len(),
        ms(min),
        ms(percentile(&lifetimes, 0.5)),
        ms(percentile(&lifetimes, 0.99)),
        ms(max),
    );
    assert_eq!(still_open, 0, "slowloris connections outlived the timeout");
    assert_eq!(lifetimes.len(), opened);
    // Closed by the header-read timeout: not before it, and not long after
    // (the poll loop adds up to ~100 ms, a loaded box some more).
    assert!(
        min >= Duration::from_millis(HEADER_READ_MS - 100),
        "a slowloris connection was closed after {min:?}, before the header-read timeout"
    );
    assert!(
        max <= Duration::from_millis(HEADER_READ_MS + 2000),
        "a slowloris connection lived {max:?}, header_read_ms is {HEADER_READ_MS}"
    );
    assert!(
        got_408 * 10 >= opened * 9,
        "only {got_408} of {opened} got a 408"
    );
    assert!(peak_fds >= CONNS, "the attack did not reach the gateway");
    check_latency("slowloris", &baseline, &normal_samples_attack);

    // Everything the attack opened is gone from the gateway.
    let fds_after = poll_until(Duration::from_secs(5), || {
        let n = fd_count(gw.pid());
        (n <= fds_before + 4).then_some(n)
    });
    assert!(
        fds_after.is_some(),
        "gateway fds did not return to {fds_before}: {}",
        fd_count(gw.pid())
    );
}

// ---------------------------------------------------------------------------
// (b) slow readers
// ---------------------------------------------------------------------------

#[test]
fn slow_readers_are_closed_by_client_write_and_not_buffered() {
    const READERS: usize = 8;
    const CLIENT_WRITE_MS: u64 = 2000;
    // The mock's streamed answer: 100000 content events (~17 MB), sent as
    // fast as the gateway takes them; far more than the socket buffers on
    // both sides of the gateway hold, so a reader that stops reading
    // blocks the gateway's writes (and anything the gateway buffered on
    // its own would show in its RSS).
    let _serial = serial();
    if !enough_fds(READERS as u64 + 200) {
        return;
    }
    // Two mocks: the big streams come from their own, so what the normal
    // client sees is the gateway (a mock shard busy writing a fast 17 MB
    // stream answers nothing else meanwhile).
    let big = start_mock(&["--stream-chunks", "100000"]);
    let extra = format!(
        "\n[[providers]]\nname = \"big\"\nprotocol = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\n\
         api_key = \"sk-big\"\n\n[[models]]\nname = \"big-stream\"\nprovider = \"big\"\n\
         upstream_model = \"mock-model\"\n",
        big.addr.port()
    );
    let (_mock, gw) = start_pair(&[], |mut c| {
        c.extra = extra;
        c.timeout("client_write_ms", CLIENT_WRITE_MS)
    });
    let addr = gw.addr;
    let stream_req = post_json("/v1/chat/completions", &chat_body("big-stream", true), &[]);
    // One full stream, read normally, for its size.
    let full = roundtrip(addr, &stream_req);
    assert_eq!(full.status, 200);
    assert!(full.text().ends_with("data: [DONE]\n\n"));
    let stream_bytes = full.body.len();
    drop(full);

    normal_samples(addr, &[], 50);
    let rss_before = rss_kib(gw.pid());
    let fds_before = fd_count(gw.pid());
    let baseline = normal_samples(addr, &[], 400);

    let started = Instant::now();
    let mut readers: Vec<TcpStream> = (0..READERS)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            small_receive_buffer(&s);
            s.write_all(&stream_req).unwrap();
            s
        })
        .collect();
    let normal = NormalClient::start(addr, &[]);
    let mut peak_rss = rss_before;
    let mut peak_fds = 0;
    // Until the gateway has closed every slow reader: its open connections
    // are only the normal client's and this probe's.
    // The gauge is published about once a second: the condition must hold
    // for longer than that, so a stale sample cannot end the wait early.
    let mut quiet_since: Option<Duration> = None;
    let closed_after = loop {
        peak_rss = peak_rss.max(rss_kib(gw.pid()));
        peak_fds = peak_fds.max(fd_count(gw.pid()));
        let open = metric(&gw, "shardgate_open_connections", "");
        let elapsed = started.elapsed();
        if open <= 2.0 && elapsed >= Duration::from_millis(CLIENT_WRITE_MS) {
            let since = *quiet_since.get_or_insert(elapsed);
            if elapsed - since >= Duration::from_millis(1500) {
                break since;
            }
        } else {
            quiet_since = None;
        }
        assert!(
            elapsed < Duration::from_millis(CLIENT_WRITE_MS + 15_000),
            "slow readers still open after {elapsed:?} ({open} open connections)"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let attack = normal.stop();

    // Client side: each reader, reading at last, finds a cut stream and
    // the connection closed.
    let mut cut = 0;
    let mut received = Vec::new();
    let mut outcomes = Vec::new();
    for r in &mut readers {
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut body = Vec::new();
        let outcome = match r.read_to_end(&mut body) {
            Ok(_) => "eof".to_string(),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => "reset".to_string(),
            Err(e) => format!("NOT CLOSED ({e})"),
        };
        outcomes.push(format!("{outcome} after {} bytes", body.len()));
        assert!(body.starts_with(b"HTTP/1.1 200 "));
        if !body.ends_with(b"data: [DONE]\n\n0\r\n\r\n") {
            cut += 1;
        }
        received.push(body.len());
    }
    let growth_mib = (peak_rss.saturating_sub(rss_before)) as f64 / 1024.0;
    let unbuffered_mib = (READERS * stream_bytes) as f64 / (1024.0 * 1024.0);
    eprintln!(
        "[slow readers] {READERS} readers of a {:.1} MB stream, client_write_ms {CLIENT_WRITE_MS}: \
         all closed by the gateway after {:.2} s, {cut} cut short; each had received {:.1}..{:.1} MB \
         (kernel buffers); gateway RSS {:.1} MB before, peak +{growth_mib:.1} MB (buffering them whole \
         would be {unbuffered_mib:.0} MB); fds {fds_before} before, peak {peak_fds}",
        stream_bytes as f64 / 1e6,
        ms(closed_after) / 1000.0,
        *received.iter().min().unwrap() as f64 / 1e6,
        *received.iter().max().unwrap() as f64 / 1e6,
        rss_before as f64 / 1024.0,
    );
    assert!(
        outcomes.iter().all(|o| !o.starts_with("NOT")),
        "slow readers: {outcomes:?}"
    );
    assert_eq!(
        cut, READERS,
        "every slow reader's stream is cut: {outcomes:?}"
    );
    assert!(
        growth_mib < 48.0,
        "gateway RSS grew {growth_mib:.1} MB with {READERS} slow readers"
    );
    check_latency("slow readers", &baseline, &attack);
}

// ---------------------------------------------------------------------------
// (c) connection flood beyond the cap
// ---------------------------------------------------------------------------

#[test]
fn connection_flood_beyond_the_cap_is_refused_promptly_and_counted() {
    const CAP: usize = 50; // per shard, 2 shards
    const FLOOD: usize = 600;
    let _serial = serial();
    if !enough_fds(FLOOD as u64 + 200) {
        return;
    }
    let (_mock, gw) = start_pair(&[], |c| c.server("max_connections_per_shard", CAP));
    let addr = gw.addr;
    normal_samples(addr, &[], 50);
    // A client that connected before the flood keeps its connection.
    let mut kept = Client::connect(addr);
    let chat_req = chat("mock-model", &[]);
    let keep_alive_sample = |c: &mut Client| {
        let start = Instant::now();
        let r = c.request(&chat_req);
        assert_eq!(r.status, 200, "{}", r.text());
        start.elapsed()
    };
    let baseline: Vec<Duration> = (0..400).map(|_| keep_alive_sample(&mut kept)).collect();
    let refused_before = metric(&gw, "shardgate_responses_total", "{code=\"503\"}");

    // The flood: connect, send nothing, see what happens.
    let started = Instant::now();
    let flood: Vec<(TcpStream, Instant)> = (0..FLOOD)
        .map(|_| {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            s.set_nonblocking(true).unwrap();
            (s, Instant::now())
        })
        .collect();
    let connected_in = started.elapsed();
    // Watch for a second: refused ones get 503 and a close.
    let mut state: Vec<(Vec<u8>, Option<Duration>)> = vec![(Vec::new(), None); FLOOD];
    let mut during = Vec::new();
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        for (i, (s, at)) in flood.iter().enumerate() {
            if state[i].1.is_some() {
                continue;
            }
            let mut buf = [0u8; 1024];
            match (&*s).read(&mut buf) {
                Ok(0) => state[i].1 = Some(at.elapsed()),
                Ok(n) => state[i].0.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => state[i].1 = Some(at.elapsed()),
            }
        }
        // The connection made before the flood is still served.
        during.push(keep_alive_sample(&mut kept));
        thread::sleep(Duration::from_millis(5));
    }
    let refused: Vec<Duration> = state.iter().filter_map(|(_, t)| *t).collect();
    let accepted = FLOOD - refused.len();
    for (got, closed) in &state {
        if closed.is_some() {
            let text = String::from_utf8_lossy(got);
            assert!(
                text.starts_with("HTTP/1.1 503 ") && text.contains("too_many_connections"),
                "refused connection got {text:?}"
            );
        } else {
            assert!(got.is_empty(), "accepted idle connection got bytes");
        }
    }
    // A new normal client while at the cap: a well-formed 503.
    let at_cap = roundtrip(addr, &chat_req);
    at_cap.assert_error(503, "too_many_connections");

    // The flood goes away: new clients are served again.
    let closed_at = Instant::now();
    drop(flood);
    let mut refused_after_close = 0;
    let mut served_again = None;
    let mut in_a_row = 0;
    // Served again: the first 200, and then 20 in a row (so both shards
    // are below their cap before /metrics is asked).
    while in_a_row < 20 {
        assert!(
            closed_at.elapsed() < Duration::from_secs(5),
            "not served again 5 s after the flood closed"
        );
        let r = roundtrip(addr, &chat_req);
        if r.status == 503 {
            refused_after_close += 1;
            in_a_row = 0;
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        served_again.get_or_insert_with(|| closed_at.elapsed());
        in_a_row += 1;
    }
    let served_again = served_again.unwrap();
    let refused_metric =
        metric(&gw, "shardgate_responses_total", "{code=\"503\"}") - refused_before;
    let after = normal_samples(addr, &[], 200);
    eprintln!(
        "[connection flood] cap {CAP}/shard x 2 shards, 1 kept-alive normal connection; {FLOOD} \
         connections in {:.0} ms: {accepted} accepted (held idle), {} refused with 503 (p50 {:.1} ms \
         p99 {:.1} ms max {:.1} ms after connect); gateway counted {refused_metric} 503s (the flood's + 1 \
         new client at the cap + {refused_after_close} while the flood closed); new clients served again {:.0} ms after the flood closed",
        ms(connected_in),
        refused.len(),
        ms(percentile(&refused, 0.5)),
        ms(percentile(&refused, 0.99)),
        ms(percentile(&refused, 1.0)),
        ms(served_again)
    );
    // With SO_REUSEPORT spreading 600 connections over 2 shards, both
    // shards reach their cap: exactly 2 x CAP are held, one by `kept`.
    assert_eq!(accepted, 2 * CAP - 1, "accepted connections");
    assert!(
        percentile(&refused, 1.0) < Duration::from_millis(1000),
        "refusals are prompt"
    );
    // Counted by the gateway: the refused flood plus the new client at the cap.
    assert_eq!(
        refused_metric as usize,
        refused.len() + 1 + refused_after_close,
        "503s in /metrics"
    );
    check_latency("connection flood (kept-alive client)", &baseline, &during);
    assert!(!after.is_empty());
}

// ---------------------------------------------------------------------------
// (d) invalid-key flood
// ---------------------------------------------------------------------------

const GOOD_KEY: &str = "sk-client-good-0123456789";

#[test]
fn invalid_key_flood_gets_401s_and_never_reaches_the_provider() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 5000;
    let _serial = serial();
    if !enough_fds(200) {
        return;
    }
    let (mock, gw) = start_pair(&[], |c| c.key("good", GOOD_KEY));
    let addr = gw.addr;
    static GOOD: &[&str] = &["Authorization: Bearer sk-client-good-0123456789"];
    normal_samples(addr, GOOD, 50);
    let baseline = normal_samples(addr, GOOD, 400);
    let mock_before = mock_stats(&mock).chat_requests;
    let before_401 = metric(&gw, "shardgate_responses_total", "{code=\"401\"}");

    let normal = NormalClient::start(addr, GOOD);
    let started = Instant::now();
    let flooders: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut lat = Vec::with_capacity(PER_THREAD);
                let mut c = Client::connect(addr);
                for i in 0..PER_THREAD {
                    // Wrong keys of every kind: wrong bearer, x-api-key,
                    // a prefix of the good key, the good key plus a byte.
                    let header = match i % 4 {
                        0 => format!("Authorization: Bearer sk-wrong-{t}-{i}"),
                        1 => format!("x-api-key: sk-client-bad-{i}"),
                        2 => format!("Authorization: Bearer {}", &GOOD_KEY[..GOOD_KEY.len() - 1]),
                        _ => format!("Authorization: Bearer {GOOD_KEY}x"),
                    };
                    let start = Instant::now();
                    let r = c.request(&chat("mock-model", &[&header]));
                    lat.push(start.elapsed());
                    r.assert_error(401, "invalid_api_key");
                    if r.header("connection") == Some("close") {
                        c = Client::connect(addr);
                    }
                }
                lat
            })
        })
        .collect();
    let mut rejected = Vec::new();
    for f in flooders {
        rejected.extend(f.join().expect("flooder panicked"));
    }
    let flood_time = started.elapsed();
    let attack = normal.stop();
    let normal_count = attack.len() as u64;
    let mock_after = mock_stats(&mock).chat_requests;
    let counted_401 = metric(&gw, "shardgate_responses_total", "{code=\"401\"}") - before_401;
    eprintln!(
        "[invalid keys] {} requests with wrong keys from {THREADS} threads in {:.2} s ({:.0}/s): \
         all 401, p50 {:.2} ms p99 {:.2} ms max {:.2} ms; gateway counted {counted_401} 401s; \
         mock saw {} chat requests = the normal client's {normal_count}",
        rejected.len(),
        flood_time.as_secs_f64(),
        rejected.len() as f64 / flood_time.as_secs_f64(),
        ms(percentile(&rejected, 0.5)),
        ms(percentile(&rejected, 0.99)),
        ms(percentile(&rejected, 1.0)),
        mock_after - mock_before,
    );
    assert_eq!(rejected.len(), THREADS * PER_THREAD);
    assert_eq!(counted_401 as usize, THREADS * PER_THREAD);
    assert_eq!(
        mock_after - mock_before,
        normal_count,
        "the mock received requests other than the normal client's"
    );
    assert!(
        percentile(&rejected, 0.99) < Duration::from_millis(50),
        "401s are quick"
    );
    check_latency("invalid keys", &baseline, &attack);
}
