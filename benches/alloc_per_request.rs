//! Heap allocations per request through the whole gateway (issue #6).
//!
//! A counting `#[global_allocator]` wraps the system allocator. The mock
//! provider runs as a separate process (its allocations are not ours); the
//! gateway runs in this process from the library, with one shard; a client
//! on the main thread drives keep-alive HTTP/1.1 requests over a raw
//! `TcpStream`, reusing one request buffer and one read buffer, so that it
//! allocates nothing per request. Allocations made on the client thread are
//! counted apart (a thread-local flag), so the "gateway" columns are the
//! gateway's alone and the "client" column proves the client stays at zero.
//!
//! For each scenario: a warm-up (connection setup, upstream pool, lazy
//! buffers), a snapshot of the counters, N requests, another snapshot; the
//! difference divided by N is printed as a markdown table.
//!
//! `cargo bench --bench alloc_per_request` (N = 20000 after 2000 warm-up
//! requests; `ALLOC_REQUESTS` / `ALLOC_WARMUP` override). Without `--bench`
//! (as `cargo test --all-targets` runs it) it is a quick smoke run.
//! The mock is `SHARDGATE_BIN` if set, else the binary cargo built next to
//! this bench.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shardgate::config::Config;
use shardgate::server::BoundGateway;

// ---------------------------------------------------------------- allocator

/// Counts every allocation in the process, split by "on the client thread"
/// or not. Relaxed atomics: only the totals at the snapshots matter, and the
/// snapshots are taken while the counted work is quiescent.
struct Counting;

#[derive(Default)]
struct Counters {
    allocs: AtomicU64,
    reallocs: AtomicU64,
    bytes: AtomicU64,
}

static GATEWAY: Counters = Counters {
    allocs: AtomicU64::new(0),
    reallocs: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
};
static CLIENT: Counters = Counters {
    allocs: AtomicU64::new(0),
    reallocs: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
};

thread_local! {
    // `const` and no destructor: reading it inside the allocator neither
    // allocates nor registers anything, even during thread teardown.
    static ON_CLIENT: Cell<bool> = const { Cell::new(false) };
}

fn counters() -> &'static Counters {
    if ON_CLIENT.with(Cell::get) {
        &CLIENT
    } else {
        &GATEWAY
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let c = counters();
        c.allocs.fetch_add(1, Relaxed);
        c.bytes.fetch_add(layout.size() as u64, Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let c = counters();
        c.allocs.fetch_add(1, Relaxed);
        c.bytes.fetch_add(layout.size() as u64, Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Bytes count only the growth: a realloc that grows a buffer is
        // allocator traffic of (new - old) bytes, a shrink is none.
        let c = counters();
        c.reallocs.fetch_add(1, Relaxed);
        c.bytes
            .fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Copy, Default)]
struct Snapshot {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            allocs: self.allocs.load(Relaxed),
            reallocs: self.reallocs.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}

impl Snapshot {
    fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            allocs: self.allocs - before.allocs,
            reallocs: self.reallocs - before.reallocs,
            bytes: self.bytes - before.bytes,
        }
    }
}

/// Marks the current thread as the client while alive.
struct ClientScope;

impl ClientScope {
    fn enter() -> ClientScope {
        ON_CLIENT.with(|c| c.set(true));
        ClientScope
    }
}

impl Drop for ClientScope {
    fn drop(&mut self) {
        ON_CLIENT.with(|c| c.set(false));
    }
}

// ---------------------------------------------------------------- the mock

/// The mock provider process; killed when dropped (also on panic).
struct Mock {
    child: Child,
    addr: SocketAddr,
    // Kept open so the mock never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Mock {
    fn start() -> Mock {
        let bin = shardgate_bin();
        // Port 0: the mock binds a free port itself and prints it, so there
        // is no window in which another process could take a port we chose.
        let mut child = Command::new(&bin)
            .args(["mock-upstream", "--host", "127.0.0.1", "--port", "0"])
            .args(["--shards", "1", "--stream-chunks", "8"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            let n = stdout.read_line(&mut line).unwrap_or(0);
            if n == 0 {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the mock exited before printing its address");
            }
            if let Some(at) = line.find("listening on http://") {
                let text = line[at + "listening on http://".len()..].trim();
                break text.parse().expect("mock address");
            }
        };
        Mock {
            child,
            addr,
            _stdout: stdout,
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shardgate_bin() -> PathBuf {
    let bin = match std::env::var_os("SHARDGATE_BIN") {
        Some(p) => PathBuf::from(p),
        // Cargo builds the package's binaries for benches and sets this.
        None => PathBuf::from(env!("CARGO_BIN_EXE_shardgate")),
    };
    if !bin.is_file() {
        panic!(
            "{} not found: build it (cargo build --release --bin shardgate) \
             or point SHARDGATE_BIN at a shardgate binary",
            bin.display()
        );
    }
    bin
}

// ---------------------------------------------------------------- the gateway

/// A gateway running in this process; shut down and joined when dropped.
struct Gateway {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    fn start(mock: SocketAddr, access_log: Option<&std::path::Path>) -> Gateway {
        let keys: Vec<String> = (1..=50).map(|k| format!("\"ak-key-{k:02}\"")).collect();
        let mut text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
shards = 1
drain_timeout_ms = 1000

[[providers]]
name = "mock"
protocol = "openai"
base_url = "http://{mock}/v1"

[routing]
default_provider = "mock"

# Anthropic clients' model on the OpenAI mock: translated both ways.
[[models]]
name = "claude-mock"
provider = "mock"
upstream_model = "mock-model"

# A 50-key pool on the same mock (round robin).
[[providers]]
name = "pool"
protocol = "openai"
base_url = "http://{mock}/v1"
api_keys = [{keys}]

[[models]]
name = "pool-model"
provider = "pool"
upstream_model = "mock-model"
"#,
            keys = keys.join(", ")
        );
        if let Some(path) = access_log {
            text.push_str(&format!(
                "\n[log]\npath = {:?}\n",
                path.display().to_string()
            ));
        }
        // No environment: SHARDGATE_LISTEN and friends must not move it.
        let config = Config::from_toml_with_env(&text, "<alloc_per_request>", |_| None)
            .unwrap_or_else(|e| panic!("config: {e}"));
        let gateway = BoundGateway::bind(config).unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = gateway.local_addr;
        let stop = gateway.shutdown_flag();
        let thread = std::thread::spawn(move || {
            if let Err(e) = gateway.run() {
                panic!("gateway: {e}");
            }
        });
        Gateway {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------- the client

/// One keep-alive connection with a fixed read buffer. Nothing in
/// `request` allocates: the head is parsed by httparse into a stack array,
/// bodies are skipped in place (content-length or chunked).
struct Client {
    stream: TcpStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

enum ClientError {
    Io(std::io::Error),
    Closed,
    Malformed(&'static str),
    Status(u16),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Closed => f.write_str("connection closed by the server"),
            ClientError::Malformed(what) => write!(f, "malformed response: {what}"),
            ClientError::Status(code) => write!(f, "HTTP status {code}"),
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        // Bounded: a stuck gateway fails the bench instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            stream,
            buf: vec![0; 256 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Reads more bytes, moving the unread ones to the front when the
    /// buffer's tail is full.
    fn fill(&mut self) -> Result<(), ClientError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(ClientError::Malformed(
                    "response element larger than the buffer",
                ));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// Consumes `n` body bytes, reading as needed.
    fn skip(&mut self, mut n: usize) -> Result<(), ClientError> {
        loop {
            let have = (self.end - self.start).min(n);
            self.start += have;
            n -= have;
            if n == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    /// The next CRLF-terminated line (without CRLF) as a range of `buf`.
    fn line(&mut self) -> Result<(usize, usize), ClientError> {
        loop {
            if let Some(i) = memchr::memmem::find(&self.buf[self.start..self.end], b"\r\n") {
                let range = (self.start, self.start + i);
                self.start += i + 2;
                return Ok(range);
            }
            self.fill()?;
        }
    }

    /// Sends `req` and reads the whole response; returns the body's length.
    fn request(&mut self, req: &[u8]) -> Result<usize, ClientError> {
        self.stream.write_all(req)?;
        // Head.
        let (status, head_len, content_length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut cl = None;
                    let mut chunked = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            cl = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        }
                    }
                    break (resp.code.unwrap_or(0), n, cl, chunked);
                }
                Ok(httparse::Status::Partial) => self.fill()?,
                Err(_) => return Err(ClientError::Malformed("response head")),
            }
        };
        self.start += head_len;
        if status != 200 {
            return Err(ClientError::Status(status));
        }
        // Body.
        if let Some(n) = content_length {
            self.skip(n)?;
            return Ok(n);
        }
        if !chunked {
            return Err(ClientError::Malformed("neither content-length nor chunked"));
        }
        let mut total = 0;
        loop {
            let (a, b) = self.line()?;
            let line = &self.buf[a..b];
            let hex = match memchr::memchr(b';', line) {
                Some(i) => &line[..i],
                None => line,
            };
            let size = std::str::from_utf8(hex)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or(ClientError::Malformed("chunk size"))?;
            if size == 0 {
                // Trailers (none expected) up to the empty line.
                loop {
                    let (a, b) = self.line()?;
                    if a == b {
                        return Ok(total);
                    }
                }
            }
            self.skip(size)?;
            let (a, b) = self.line()?;
            if a != b {
                return Err(ClientError::Malformed("chunk not followed by CRLF"));
            }
            total += size;
        }
    }
}

// ---------------------------------------------------------------- scenarios

struct Scenario {
    name: &'static str,
    path: &'static str,
    anthropic: bool,
    body: &'static str,
    /// Checked in the first response: the answer has the expected shape.
    expect: &'static str,
    access_log: bool,
}

const CHAT: &str = r#"{"model":"mock-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32}"#;
const CHAT_STREAM: &str = r#"{"model":"mock-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32,"stream":true}"#;
const POOL: &str = r#"{"model":"pool-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32}"#;
const MESSAGES: &str = r#"{"model":"claude-mock","max_tokens":32,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;
const MESSAGES_STREAM: &str = r#"{"model":"claude-mock","max_tokens":32,"stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "(a) chat pass-through",
        path: "/v1/chat/completions",
        anthropic: false,
        body: CHAT,
        expect: "\"chat.completion\"",
        access_log: false,
    },
    Scenario {
        name: "(b) messages -> openai (translated)",
        path: "/v1/messages",
        anthropic: true,
        body: MESSAGES,
        expect: "\"type\":\"message\"",
        access_log: false,
    },
    Scenario {
        name: "(c) chat stream pass-through (8 chunks)",
        path: "/v1/chat/completions",
        anthropic: false,
        body: CHAT_STREAM,
        expect: "[DONE]",
        access_log: false,
    },
    Scenario {
        name: "(d) messages stream <- openai stream",
        path: "/v1/messages",
        anthropic: true,
        body: MESSAGES_STREAM,
        expect: "message_stop",
        access_log: false,
    },
    Scenario {
        name: "(f) chat via 50-key pool",
        path: "/v1/chat/completions",
        anthropic: false,
        body: POOL,
        expect: "\"chat.completion\"",
        access_log: false,
    },
    // Last: it needs a second gateway, started with the access log on.
    Scenario {
        name: "(e) chat pass-through, access log on",
        path: "/v1/chat/completions",
        anthropic: false,
        body: CHAT,
        expect: "\"chat.completion\"",
        access_log: true,
    },
];

fn request_bytes(addr: SocketAddr, path: &str, anthropic: bool, body: &str) -> Vec<u8> {
    let extra = if anthropic {
        "anthropic-version: 2023-06-01\r\n"
    } else {
        ""
    };
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{extra}\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request outside the counted windows, keeping the raw response so its
/// shape can be checked (this one may allocate).
fn check_shape(addr: SocketAddr, req: &[u8], expect: &str, name: &str) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = req.to_vec();
    // Ask the server to close, so reading to EOF gives the whole answer.
    let at = memchr::memmem::find(&req, b"\r\n").unwrap() + 2;
    req.splice(at..at, b"connection: close\r\n".iter().copied());
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains(expect),
        "{name}: unexpected answer (wanted 200 with {expect:?}):\n{text}"
    );
}

struct Row {
    name: &'static str,
    requests: u64,
    gateway: Snapshot,
    client: Snapshot,
    body_bytes: u64,
    /// The requests' own time (for req/s).
    secs: f64,
    /// Between the two snapshots (the requests and the settling after).
    window_secs: f64,
}

/// Warm-up, snapshot, `n` requests, snapshot.
fn measure(name: &'static str, addr: SocketAddr, req: &[u8], warmup: u64, n: u64) -> Row {
    let mut client = Client::connect(addr);
    let run = |client: &mut Client, count: u64| -> u64 {
        let _scope = ClientScope::enter();
        let mut body = 0u64;
        for i in 0..count {
            match client.request(req) {
                Ok(len) => body += len as u64,
                Err(e) => panic!("{name}: request {i}: {e}"),
            }
        }
        body
    };
    run(&mut client, warmup);
    // Let the work that trails a response (log records, pool returns,
    // the access log's batched writes) settle before each snapshot.
    let settle = Duration::from_millis(250);
    std::thread::sleep(settle);
    let (g0, c0) = (GATEWAY.snapshot(), CLIENT.snapshot());
    let t0 = Instant::now();
    let body_bytes = run(&mut client, n);
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let (g1, c1) = (GATEWAY.snapshot(), CLIENT.snapshot());
    let window_secs = t0.elapsed().as_secs_f64();
    Row {
        name,
        requests: n,
        gateway: g1.since(g0),
        client: c1.since(c0),
        body_bytes,
        secs,
        window_secs,
    }
}

fn per(x: u64, n: u64) -> f64 {
    x as f64 / n as f64
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer, got {v:?}")),
        Err(_) => default,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // then a short smoke run is enough.
    let bench = std::env::args().any(|a| a == "--bench");
    let warmup = env_u64("ALLOC_WARMUP", if bench { 2000 } else { 50 });
    let n = env_u64("ALLOC_REQUESTS", if bench { 20000 } else { 200 }).max(1);

    let mock = Mock::start();
    let log_dir = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();

    // The client against the mock directly: what the process allocates
    // when the gateway is idle (its background work) and the client alone.
    let idle;
    {
        let gateway = Gateway::start(mock.addr, None);
        // The gateway with no traffic at all: its timers' own allocations,
        // which every row below also contains (per second, not per request).
        std::thread::sleep(Duration::from_millis(500));
        let g0 = GATEWAY.snapshot();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        idle = (GATEWAY.snapshot().since(g0), t0.elapsed().as_secs_f64());
        let req = request_bytes(mock.addr, "/v1/chat/completions", false, CHAT);
        check_shape(mock.addr, &req, "\"chat.completion\"", "mock direct");
        rows.push(measure(
            "baseline: client -> mock (gateway idle)",
            mock.addr,
            &req,
            warmup,
            n,
        ));

        for s in SCENARIOS.iter().filter(|s| !s.access_log) {
            let req = request_bytes(gateway.addr, s.path, s.anthropic, s.body);
            check_shape(gateway.addr, &req, s.expect, s.name);
            rows.push(measure(s.name, gateway.addr, &req, warmup, n));
        }
    }
    {
        let log_path = log_dir.path().join("access.log");
        let gateway = Gateway::start(mock.addr, Some(&log_path));
        for s in SCENARIOS.iter().filter(|s| s.access_log) {
            let req = request_bytes(gateway.addr, s.path, s.anthropic, s.body);
            check_shape(gateway.addr, &req, s.expect, s.name);
            rows.push(measure(s.name, gateway.addr, &req, warmup, n));
        }
        drop(gateway);
        let logged = std::fs::read(&log_path)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0);
        println!("access log: {logged} records written");
    }

    // "(a)".."(f)" in order, the baseline last.
    rows.sort_by_key(|r| r.name);
    // The idle gateway's own rate (timers, pollers) over each row's
    // duration, per request: the part of "allocs/req" that is not caused by
    // the requests. An estimate: a busy shard parks less often.
    let idle_per_sec = idle.0.allocs as f64 / idle.1;
    println!();
    println!(
        "allocations per request, gateway in-process with 1 shard, {n} requests after {warmup} warm-up"
    );
    println!();
    println!(
        "| scenario | allocs/req | reallocs/req | bytes/req | of allocs/req: idle background (est.) \
         | client allocs/req | resp body bytes | req/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
            r.name,
            per(r.gateway.allocs, r.requests),
            per(r.gateway.reallocs, r.requests),
            per(r.gateway.bytes, r.requests),
            idle_per_sec * r.window_secs / r.requests as f64,
            per(r.client.allocs + r.client.reallocs, r.requests),
            per(r.body_bytes, r.requests),
            r.requests as f64 / r.secs,
        );
    }
    println!(
        "\nidle gateway (no requests): {:.0} allocs/s, {:.0} bytes/s",
        idle_per_sec,
        idle.0.bytes as f64 / idle.1
    );
    let client_allocs: u64 = rows
        .iter()
        .map(|r| r.client.allocs + r.client.reallocs)
        .sum();
    if client_allocs != 0 {
        println!("\nWARNING: the client allocated {client_allocs} times in the counted windows");
    }
}
