//! Test harness for the black-box integration tests: spawns `shardgate`
//! processes (gateway and mock provider) on ephemeral ports and talks to
//! them over raw `std::net::TcpStream`s, with a small HTTP/1.1 response
//! reader of its own (the crate's codec is what is under test, so it is not
//! used here).
//!
//! Every test builds its own processes, so tests run in parallel.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

/// How long a process gets to print its "listening on" line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default read timeout of test sockets: long enough for a loaded machine,
/// short enough that a hang fails the test well under its budget.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The provider key every generated config gives the mock provider.
pub const PROVIDER_KEY: &str = "sk-provider-secret-123";

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A running `shardgate` child process. Dropping it stops it: SIGTERM, then
/// SIGKILL if it has not exited after a grace period.
pub struct Proc {
    pub child: Child,
    /// The address from the "listening on http://ADDR" line.
    pub addr: SocketAddr,
    pub name: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
    /// Kept alive as long as the process (e.g. its config file).
    _keep: Vec<tempfile::NamedTempFile>,
}

/// Collects everything a pipe produces into `sink`, forwarding complete
/// lines to `lines` as well (when given).
fn drain_pipe<R: Read + Send + 'static>(
    pipe: R,
    sink: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    sink.lock().unwrap().push_str(&line);
                    if let Some(tx) = &lines {
                        let _ = tx.send(line.clone());
                    }
                }
            }
        }
    });
}

impl Proc {
    /// Spawns `shardgate ARGS` and waits for its "listening on http://ADDR"
    /// line. Panics (with the process's stderr) if it does not come.
    pub fn spawn(name: &str, args: &[&str], keep: Vec<tempfile::NamedTempFile>) -> Proc {
        Proc::spawn_with_env(name, args, &[], keep)
    }

    /// Like [`Proc::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        keep: Vec<tempfile::NamedTempFile>,
    ) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "1")
            .env_remove("SHARDGATE_LISTEN")
            .env_remove("SHARDGATE_SHARDS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        drain_pipe(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        drain_pipe(child.stderr.take().unwrap(), stderr.clone(), None);

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line
                        .find("listening on http://")
                        .map(|p| p + "listening on http://".len())
                        .or_else(|| {
                            line.find("listening on https://")
                                .map(|p| p + "listening on https://".len())
                        });
                    if let Some(start) = found {
                        let text = line[start..].trim();
                        let addr: SocketAddr = text
                            .parse()
                            .unwrap_or_else(|e| panic!("{name}: bad address {text:?}: {e}"));
                        break addr;
                    }
                }
                Err(_) => {
                    // Timed out, or stdout closed (the process exited).
                    thread::sleep(Duration::from_millis(100));
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    let _ = child.wait();
                    thread::sleep(Duration::from_millis(100));
                    panic!(
                        "{name} ({BIN} {args:?}) did not report its address within {STARTUP_TIMEOUT:?} \
                         (exit status: {status:?})\n--- stdout:\n{}\n--- stderr:\n{}",
                        stdout.lock().unwrap(),
                        stderr.lock().unwrap()
                    );
                }
            }
        };
        Proc {
            child,
            addr,
            name: name.to_string(),
            stdout,
            stderr,
            exited: None,
            _keep: keep,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                // Let the pipe threads pick up the last output.
                thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the process printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What the process printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A description of the process's output, for assertion messages.
    pub fn output_report(&self) -> String {
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) with our own child's pid, which has not been reaped.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        if self.wait_timeout(Duration::from_millis(1500)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `shardgate ARGS` to completion (killing it after `timeout`) and
/// returns (status, stdout, stderr).
pub fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    env_remove: &[&str],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("SHARDGATE_LISTEN")
        .env_remove("SHARDGATE_SHARDS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in env_remove {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().expect("spawn shardgate");
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    drain_pipe(child.stdout.take().unwrap(), stdout.clone(), None);
    drain_pipe(child.stderr.take().unwrap(), stderr.clone(), None);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "shardgate {args:?} did not exit within {timeout:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    thread::sleep(Duration::from_millis(50));
    let out = stdout.lock().unwrap().clone();
    let err = stderr.lock().unwrap().clone();
    (status, out, err)
}

/// Starts the mock provider: `mock-upstream --port 0 --shards 1
/// --record-requests EXTRA...`.
pub fn start_mock(extra: &[&str]) -> Proc {
    let mut args = vec![
        "mock-upstream",
        "--port",
        "0",
        "--shards",
        "1",
        "--record-requests",
    ];
    args.extend_from_slice(extra);
    Proc::spawn("mock", &args, Vec::new())
}

/// Writes `text` to a temporary config file.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("shardgate-test-")
        .suffix(".toml")
        .tempfile()
        .expect("temp config file");
    file.write_all(text.as_bytes()).expect("write config");
    file.flush().expect("flush config");
    file
}

/// Starts `serve --config <file with text>`.
pub fn start_gateway(config: &str) -> Proc {
    let file = config_file(config);
    let path = file.path().to_str().unwrap().to_string();
    Proc::spawn("gateway", &["serve", "--config", &path], vec![file])
}

/// Starts a mock provider (with `mock_args`) and a gateway in front of it
/// with the config `build` makes from a [`ConfigBuilder`] for the mock.
pub fn start_pair(
    mock_args: &[&str],
    build: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> (Proc, Proc) {
    let mock = start_mock(mock_args);
    let config = build(ConfigBuilder::for_mock(&mock)).build();
    let gateway = start_gateway(&config);
    (mock, gateway)
}

/// A port nothing listens on (bound then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// One `[[models]]` entry.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub name: String,
    pub upstream_model: Option<String>,
}

/// Builds a gateway config: provider `mock` (protocol openai) with the
/// provider key [`PROVIDER_KEY`], `routing.default_provider = "mock"`,
/// listening on 127.0.0.1:0 with two shards.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    pub listen: String,
    pub shards: u32,
    pub base_url: String,
    pub default_provider: bool,
    pub models: Vec<ModelEntry>,
    pub keys: Vec<(String, String)>,
    pub server: Vec<(String, String)>,
    pub limits: Vec<(String, String)>,
    pub timeouts: Vec<(String, String)>,
    pub extra_ca_file: Option<PathBuf>,
    /// Other tables (`[log]`, `[admin]`, ...): (table, [(name, raw TOML value)]),
    /// written after the model table.
    pub sections: Vec<(String, Vec<(String, String)>)>,
    /// Raw TOML appended at the end.
    pub extra: String,
    /// Raw TOML lines added to the `mock` provider's table.
    pub provider_extra: Vec<String>,
}

impl ConfigBuilder {
    /// A config whose provider is at `base_url`.
    pub fn new(base_url: &str) -> Self {
        ConfigBuilder {
            listen: "127.0.0.1:0".to_string(),
            shards: 2,
            base_url: base_url.to_string(),
            default_provider: true,
            models: Vec::new(),
            keys: Vec::new(),
            server: vec![("drain_timeout_ms".into(), "2000".into())],
            limits: Vec::new(),
            timeouts: Vec::new(),
            extra_ca_file: None,
            sections: Vec::new(),
            extra: String::new(),
            provider_extra: Vec::new(),
        }
    }

    /// A config in front of a running mock provider.
    pub fn for_mock(mock: &Proc) -> Self {
        ConfigBuilder::new(&format!("http://127.0.0.1:{}/v1", mock.addr.port()))
    }

    pub fn shards(mut self, n: u32) -> Self {
        self.shards = n;
        self
    }

    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_string();
        self
    }

    pub fn no_default_provider(mut self) -> Self {
        self.default_provider = false;
        self
    }

    pub fn model(mut self, name: &str, upstream_model: Option<&str>) -> Self {
        self.models.push(ModelEntry {
            name: name.to_string(),
            upstream_model: upstream_model.map(str::to_string),
        });
        self
    }

    pub fn key(mut self, id: &str, key: &str) -> Self {
        self.keys.push((id.to_string(), key.to_string()));
        self
    }

    /// Sets `[server] name = value` (value is raw TOML).
    pub fn server(mut self, name: &str, value: impl ToString) -> Self {
        self.server.retain(|(n, _)| n != name);
        self.server.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets `[limits] name = value` (value is raw TOML).
    pub fn limit(mut self, name: &str, value: impl ToString) -> Self {
        self.limits.retain(|(n, _)| n != name);
        self.limits.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets `[timeouts] name = value` (value is raw TOML).
    pub fn timeout(mut self, name: &str, value: impl ToString) -> Self {
        self.timeouts.retain(|(n, _)| n != name);
        self.timeouts.push((name.to_string(), value.to_string()));
        self
    }

    pub fn extra_ca_file(mut self, path: &Path) -> Self {
        self.extra_ca_file = Some(path.to_path_buf());
        self
    }

    /// Sets `[table] name = value` (value is raw TOML) for a table the
    /// builder has no field for, e.g. `[log]` or `[admin]`.
    pub fn section(mut self, table: &str, name: &str, value: impl ToString) -> Self {
        let entries = match self.sections.iter().position(|(t, _)| t == table) {
            Some(i) => &mut self.sections[i].1,
            None => {
                self.sections.push((table.to_string(), Vec::new()));
                &mut self.sections.last_mut().unwrap().1
            }
        };
        entries.retain(|(n, _)| n != name);
        entries.push((name.to_string(), value.to_string()));
        self
    }

    /// Turns the access log on: `[log] path = path`.
    pub fn log_path(self, path: &Path) -> Self {
        let value = toml_str(path.to_str().expect("UTF-8 log path"));
        self.section("log", "path", value)
    }

    /// Sets `[log] name = value` (value is raw TOML).
    pub fn log(self, name: &str, value: impl ToString) -> Self {
        self.section("log", name, value)
    }

    /// Turns the admin endpoints on: `[admin] key = key`.
    pub fn admin_key(self, key: &str) -> Self {
        self.section("admin", "key", toml_str(key))
    }

    /// The TOML text.
    pub fn build(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "[server]");
        let _ = writeln!(t, "listen = {}", toml_str(&self.listen));
        let _ = writeln!(t, "shards = {}", self.shards);
        for (k, v) in &self.server {
            let _ = writeln!(t, "{k} = {v}");
        }
        if !self.limits.is_empty() {
            let _ = writeln!(t, "\n[limits]");
            for (k, v) in &self.limits {
                let _ = writeln!(t, "{k} = {v}");
            }
        }
        if !self.timeouts.is_empty() {
            let _ = writeln!(t, "\n[timeouts]");
            for (k, v) in &self.timeouts {
                let _ = writeln!(t, "{k} = {v}");
            }
        }
        if let Some(ca) = &self.extra_ca_file {
            let _ = writeln!(t, "\n[tls]");
            let _ = writeln!(t, "extra_ca_file = {}", toml_str(ca.to_str().unwrap()));
        }
        for (id, key) in &self.keys {
            let _ = writeln!(t, "\n[[auth.keys]]");
            let _ = writeln!(t, "id = {}", toml_str(id));
            let _ = writeln!(t, "key = {}", toml_str(key));
        }
        let _ = writeln!(t, "\n[[providers]]");
        let _ = writeln!(t, "name = \"mock\"");
        let _ = writeln!(t, "protocol = \"openai\"");
        let _ = writeln!(t, "base_url = {}", toml_str(&self.base_url));
        let _ = writeln!(t, "api_key = {}", toml_str(PROVIDER_KEY));
        for line in &self.provider_extra {
            let _ = writeln!(t, "{line}");
        }
        if self.default_provider {
            let _ = writeln!(t, "\n[routing]");
            let _ = writeln!(t, "default_provider = \"mock\"");
        }
        for m in &self.models {
            let _ = writeln!(t, "\n[[models]]");
            let _ = writeln!(t, "name = {}", toml_str(&m.name));
            let _ = writeln!(t, "provider = \"mock\"");
            if let Some(up) = &m.upstream_model {
                let _ = writeln!(t, "upstream_model = {}", toml_str(up));
            }
        }
        for (table, entries) in &self.sections {
            let _ = writeln!(t, "\n[{table}]");
            for (k, v) in entries {
                let _ = writeln!(t, "{k} = {v}");
            }
        }
        t.push_str(&self.extra);
        t
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// `GET path HTTP/1.1` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// `GET path HTTP/1.1` with extra header lines (`"name: value"`).
pub fn get_with(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\nHost: test\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A `POST path HTTP/1.1` with a JSON body and Content-Length, plus extra
/// header lines (`"name: value"`).
pub fn post_json(path: &str, body: &str, headers: &[&str]) -> Vec<u8> {
    let mut s = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

/// A chat request body for `model`.
pub fn chat_body(model: &str, stream: bool) -> String {
    format!(
        "{{\"model\":{},\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}",
        serde_json::Value::String(model.to_string())
    )
}

/// `POST /v1/chat/completions` for `model`, non-streaming.
pub fn chat(model: &str, headers: &[&str]) -> Vec<u8> {
    post_json("/v1/chat/completions", &chat_body(model, false), headers)
}

/// The answer the mock provider gives to every non-streamed chat request.
pub const MOCK_ANSWER: &str = "Hello from the shardgate mock provider.";

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// A response as read off the wire.
#[derive(Clone, Debug)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the body was delimited.
    pub framing: Framing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    Close,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (case-insensitive).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts an OpenAI-shaped error: `status`, JSON content type,
    /// `{"error":{"message":..,"type":..,"code":code}}`. Returns the error object.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "expected status {status} ({code}), got {} with body {:?}",
            self.status,
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error content type; headers {:?}",
            self.headers
        );
        let v = self.json();
        let err = v
            .get("error")
            .unwrap_or_else(|| panic!("no `error` object in {v}"))
            .clone();
        assert_eq!(err["code"], code, "error code in {v}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error message in {v}"
        );
        assert!(err["type"].as_str().is_some(), "error type in {v}");
        err
    }
}

/// A client connection with its own read buffer (so pipelined responses
/// and partial reads are handled).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Set once the peer closed its side.
    eof: bool,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Client {
    /// Connects with the default read timeout.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes all of `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to gateway: {e}"));
    }

    /// Like `send`, but returns the error instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads more bytes into the buffer; Ok(0) at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = [0u8; 16 * 1024];
        let n = self.stream.read(&mut tmp)?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads a CRLF-terminated line (without the CRLF). A bare LF is an error.
    fn read_line(&mut self, limit: usize) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                if pos == 0 || self.buf[pos - 1] != b'\r' {
                    return Err(bad(format!(
                        "line not terminated by CRLF: {:?}",
                        String::from_utf8_lossy(&self.buf[..=pos])
                    )));
                }
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return String::from_utf8(line[..line.len() - 2].to_vec())
                    .map_err(|_| bad("line is not UTF-8"));
            }
            if self.buf.len() > limit {
                return Err(bad("line too long"));
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed in the middle of a line (have {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    /// Reads exactly `n` bytes.
    fn read_exact_buf(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {} of {n} bytes", self.buf.len()),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads a response head: status line and header fields. A 1xx head is
    /// returned like any other (the caller reads the final one next).
    pub fn read_head(&mut self) -> io::Result<Response> {
        let status_line = self.read_line(16 * 1024)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        if version != "HTTP/1.1" && version != "HTTP/1.0" {
            return Err(bad(format!("bad status line {status_line:?}")));
        }
        let code = parts.next().unwrap_or_default();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("bad status code in {status_line:?}")));
        }
        let status: u16 = code.parse().unwrap();
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let line = self.read_line(64 * 1024)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("header line without colon: {line:?}")))?;
            if name.is_empty()
                || name
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(bad(format!("bad header name in {line:?}")));
            }
            headers.push((name.to_string(), value.trim().to_string()));
            if headers.len() > 200 {
                return Err(bad("too many response headers"));
            }
        }
        Ok(Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            framing: Framing::None,
        })
    }

    /// The framing a response's body uses (RFC 9112 section 6.3).
    pub fn framing_of(head: &Response, request_was_head: bool) -> io::Result<Framing> {
        if request_was_head || (100..200).contains(&head.status) || matches!(head.status, 204 | 304)
        {
            return Ok(Framing::None);
        }
        let te = head.headers_named("transfer-encoding");
        let cl = head.headers_named("content-length");
        if !te.is_empty() {
            if !cl.is_empty() {
                return Err(bad(
                    "response has both Transfer-Encoding and Content-Length",
                ));
            }
            if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
                return Err(bad(format!("unexpected transfer-encoding {te:?}")));
            }
            if head.version == "HTTP/1.0" {
                return Err(bad("chunked response to an HTTP/1.0 client"));
            }
            return Ok(Framing::Chunked);
        }
        match cl.as_slice() {
            [] => Ok(Framing::Close),
            [one] => {
                if one.is_empty() || !one.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("bad content-length {one:?}")));
                }
                Ok(Framing::Length(
                    one.parse().map_err(|_| bad("content-length"))?,
                ))
            }
            many => Err(bad(format!("several content-length headers {many:?}"))),
        }
    }

    /// Reads the next chunk of a chunked body: `Some(data)`, or `None` after
    /// the last chunk and the trailer section.
    pub fn read_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let line = self.read_line(4096)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("bad chunk size line {line:?}")));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
        if size == 0 {
            // Trailer section up to the empty line.
            loop {
                if self.read_line(16 * 1024)?.is_empty() {
                    return Ok(None);
                }
            }
        }
        let data = self.read_exact_buf(size)?;
        let crlf = self.read_exact_buf(2)?;
        if crlf != b"\r\n" {
            return Err(bad(format!("chunk data not followed by CRLF: {crlf:?}")));
        }
        Ok(Some(data))
    }

    /// Reads a body of `framing`.
    pub fn read_body(&mut self, framing: Framing) -> io::Result<Vec<u8>> {
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => self.read_exact_buf(n),
            Framing::Chunked => {
                let mut body = Vec::new();
                while let Some(chunk) = self.read_chunk()? {
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
            Framing::Close => {
                while self.fill()? > 0 {}
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }

    /// Reads one whole response (a 1xx interim response counts as one).
    pub fn try_read_response(&mut self) -> io::Result<Response> {
        let mut head = self.read_head()?;
        let framing = Client::framing_of(&head, false)?;
        head.body = self.read_body(framing)?;
        head.framing = framing;
        Ok(head)
    }

    /// Reads one whole response; panics on any error.
    #[track_caller]
    pub fn response(&mut self) -> Response {
        match self.try_read_response() {
            Ok(r) => r,
            Err(e) => panic!(
                "reading a response failed: {e} (unconsumed: {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Sends `bytes` and reads one response.
    #[track_caller]
    pub fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.response()
    }

    /// Asserts that the peer closes the connection within `within` without
    /// sending anything more (EOF or a reset both count as closed).
    #[track_caller]
    pub fn assert_closed(&mut self, within: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream.set_read_timeout(Some(within)).unwrap();
        let start = Instant::now();
        let mut tmp = [0u8; 4096];
        if self.eof {
            return;
        }
        match self.stream.read(&mut tmp) {
            Ok(0) => self.eof = true,
            Ok(n) => panic!(
                "expected the connection to be closed, got {n} more bytes: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                self.eof = true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "connection still open after {:?} (expected it closed)",
                    start.elapsed()
                )
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// Asserts that nothing arrives and the connection stays open for `for_`.
    #[track_caller]
    pub fn assert_silent_open(&mut self, for_: Duration) {
        assert!(self.buf.is_empty(), "unexpected bytes {:?}", self.buf);
        self.stream.set_read_timeout(Some(for_)).unwrap();
        let mut tmp = [0u8; 1024];
        let result = self.stream.read(&mut tmp);
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        match result {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Ok(0) => panic!("connection closed early"),
            Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&tmp[..n])),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Opens a connection, sends `bytes`, reads one response.
#[track_caller]
pub fn roundtrip(addr: SocketAddr, bytes: &[u8]) -> Response {
    Client::connect(addr).request(bytes)
}

// ---------------------------------------------------------------------------
// Mock provider introspection
// ---------------------------------------------------------------------------

/// The mock provider's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MockStats {
    pub requests: u64,
    pub chat_requests: u64,
}

/// `GET /mock/stats` (this request itself is counted in `requests`).
#[track_caller]
pub fn mock_stats(mock: &Proc) -> MockStats {
    let r = roundtrip(mock.addr, &get("/mock/stats"));
    assert_eq!(r.status, 200, "mock stats: {}", r.text());
    let v = r.json();
    MockStats {
        requests: v["requests"].as_u64().expect("requests"),
        chat_requests: v["chat_requests"].as_u64().expect("chat_requests"),
    }
}

/// The last chat request the mock received, as (head, body).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub head: String,
    pub body: String,
}

impl Recorded {
    /// The request line.
    pub fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    /// Header fields of the recorded head, names lower-cased.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or((l, ""));
                (n.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect()
    }

    /// Every value of header `name`.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers()
            .into_iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .collect()
    }

    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("recorded body is not JSON ({e}): {:?}", self.body))
    }
}

/// `GET /mock/last-request`: `None` when the mock saw no chat request.
#[track_caller]
pub fn mock_last_request(mock: &Proc) -> Option<Recorded> {
    let r = roundtrip(mock.addr, &get("/mock/last-request"));
    assert_eq!(r.status, 200, "mock last-request: {}", r.text());
    let v = r.json();
    if v.is_null() {
        return None;
    }
    Some(Recorded {
        head: v["head"].as_str().expect("head").to_string(),
        body: v["body"].as_str().expect("body").to_string(),
    })
}

// ---------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------

/// Splits an SSE body into the `data:` payloads of its events.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The content deltas of parsed OpenAI chunk events (skipping `[DONE]`).
pub fn sse_contents(events: &[String]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_str(e)
                .unwrap_or_else(|err| panic!("SSE event is not JSON ({err}): {e:?}"));
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The words the mock provider streams, in order (cycled).
pub const MOCK_WORDS: &[&str] = &[
    "Hello",
    " from",
    " the",
    " shardgate",
    " mock",
    " provider",
    ".",
    " ",
];

/// Caps a socket's receive buffer at 64 KiB (which also stops the kernel
/// growing it): loopback autotuning would otherwise let a client that never
/// reads absorb tens of MB, and the gateway's writes would never block.
pub fn small_receive_buffer(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF)");
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
