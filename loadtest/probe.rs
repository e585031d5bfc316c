//! `load-probe`: the measuring client for three rows of the performance
//! table (issue #6), driven by `loadtest/run`. Loopback only. Every mode
//! prints `key=value` lines on stdout (times in whole microseconds) and
//! exits 0 only when the run was clean; diagnostics go to stderr.
//!
//! ```sh
//! load-probe latency --addr 127.0.0.1:3001 --path /v1/chat/completions --body-file chat.json \
//!     --rate 2000 --seconds 10 [--conns 1] [--warmup-secs 1] [--header 'k: v']...
//! load-probe streams --addr 127.0.0.1:3001 --path /v1/chat/completions --body-file stream.json \
//!     --streams 500 --events 64 --interval-ms 20 [--ramp-ms 1000] [--header 'k: v']...
//! load-probe idle --addr 127.0.0.1:3001 --path /v1/chat/completions --body-file chat.json \
//!     --conns 10000 --hold-secs 30 [--ready-file PATH] [--header 'k: v']...
//! ```
//!
//! # `latency`: request latency at a constant rate
//!
//! Request `i` is due at `start + i / rate`, spread round-robin over
//! `--conns` keep-alive connections (one blocking thread each; requests on
//! a connection are sequential). Latency is measured from the *due* time to
//! the last byte of the response body (content-length or chunked), not from
//! the send time. A closed-loop client that measures from the send time
//! stops sending while the server stalls and so never records the requests
//! the stall delayed ("coordinated omission"); here a stall shows up in
//! every request scheduled during it, as it would for independent users.
//! To keep timer slack out of the numbers each thread sleeps until ~100 µs
//! before the due time (with a 1 ns timer slack) and spins the rest.
//! `service_*` is measured from the actual send time, for diagnosis only.
//! The first `--warmup-secs` of the schedule is sent but not recorded.
//! Histogram: 1 µs buckets below 10 ms, 100 µs buckets up to 10 s.
//! `achieved_rate` is the measured requests over `--seconds`, or over the
//! time from the first measured due time to the last answer if longer.
//! Fails if any request got an I/O error (the connection is then reopened)
//! or a non-2xx, or the achieved rate is below 95% of `--rate`.
//!
//! # `streams`: time to first token and pacing of concurrent SSE streams
//!
//! Opens `--streams` concurrent streaming requests (started evenly over
//! `--ramp-ms`) against a mock started with `--stream-chunks E
//! --chunk-interval-ms I`. One thread drives them all: nonblocking sockets
//! in a level-triggered epoll, each ready socket read until EAGAIN, every
//! read timestamped as soon as it returns (a thread per stream made the
//! client's own scheduling the largest noise on a small machine). Streams
//! not finished `--ramp-ms + E * I + 60 s` after the start fail. Each
//! response is parsed incrementally (HTTP/1.1 head, chunked framing, SSE
//! events split at blank lines, whatever the read and chunk boundaries)
//! and timed from the moment the request was written (every event a read
//! completes gets that read's time): TTFB is the first body byte, TTFT the first
//! event with a non-empty `"content"` (OpenAI chat delta). A stream is
//! complete when its last event is `data: [DONE]` and the terminating
//! chunk follows. Pacing: the mock sends content events `I` ms apart, so an
//! event (after the first) is *held back* when it arrives more than
//! `max(5 ms, I / 2)` after `previous arrival + I`, i.e. something between
//! the mock and the client delayed it beyond the pacing (buffering,
//! coalescing, a busy shard). Events that arrive early (head and trailer
//! events sent back to back) are never late. Also reported: the largest gap
//! between consecutive events and the largest lateness. Fails if any stream
//! failed or was incomplete.
//!
//! # `idle`: many idle keep-alive connections
//!
//! Raises its RLIMIT_NOFILE soft limit to the hard limit, opens `--conns`
//! keep-alive connections (64 at a time: connect and send, then read the
//! answers), checks each answers one request with 2xx, writes `ready` to
//! `--ready-file` (so the runner can sample the server's memory), holds all
//! of them idle for `--hold-secs`, then sends one more request on each. A
//! connection the server closed meanwhile (EOF or reset before an answer)
//! is counted in `closed_by_server`. Fails on any error or closed
//! connection: within the server's keep-alive idle timeout none may close.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage:
  load-probe latency --addr 127.0.0.1:PORT --path PATH --body-file F --rate R --seconds S
                     [--conns 1] [--warmup-secs 1] [--header 'k: v']...
  load-probe streams --addr 127.0.0.1:PORT --path PATH --body-file F --streams N --events E
                     --interval-ms I [--ramp-ms 1000] [--header 'k: v']...
  load-probe idle    --addr 127.0.0.1:PORT --path PATH --body-file F --conns N --hold-secs S
                     [--ready-file PATH] [--header 'k: v']...
Prints key=value lines (times in µs); exits 1 when the run was not clean, 2 on bad arguments.";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;

// ---------------------------------------------------------------- histogram

/// Latency histogram: 1 µs buckets below 10 ms, 100 µs buckets up to 10 s
/// (beyond: the last bucket). Count, sum and maximum are exact.
struct Histogram {
    counts: Vec<u64>,
    n: u64,
    sum: u64,
    max: u64,
}

const FINE_LIMIT_US: u64 = 10_000;
const COARSE_US: u64 = 100;
const TOP_US: u64 = 10_000_000;
const BUCKETS: usize = (FINE_LIMIT_US + (TOP_US - FINE_LIMIT_US) / COARSE_US) as usize;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            n: 0,
            sum: 0,
            max: 0,
        }
    }

    fn bucket(us: u64) -> usize {
        if us < FINE_LIMIT_US {
            us as usize
        } else {
            ((FINE_LIMIT_US + (us - FINE_LIMIT_US) / COARSE_US) as usize).min(BUCKETS - 1)
        }
    }

    /// The highest value bucket `i` holds.
    fn bucket_value(i: usize) -> u64 {
        let i = i as u64;
        if i < FINE_LIMIT_US {
            i
        } else {
            FINE_LIMIT_US + (i - FINE_LIMIT_US + 1) * COARSE_US - 1
        }
    }

    fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
        self.n += 1;
        self.sum += us;
        self.max = self.max.max(us);
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    /// Nearest rank: the smallest value with at least `p` of the samples at
    /// or below it (bucket resolution, never above the maximum).
    fn percentile(&self, p: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let want = ((self.n as f64 * p).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                if i == BUCKETS - 1 {
                    return self.max; // the overflow bucket
                }
                return Self::bucket_value(i).min(self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> u64 {
        self.sum.checked_div(self.n).unwrap_or(0)
    }
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile_sorted(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

// ---------------------------------------------------------------- HTTP/1.1 response parser

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
    UntilEof,
    Done,
}

/// Incremental HTTP/1.1 response parser: feed it bytes as they arrive in
/// any split; body bytes (de-chunked) go to a callback.
struct HttpParser {
    phase: Phase,
    buf: Vec<u8>,
    status: u16,
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl HttpParser {
    fn new() -> Self {
        HttpParser {
            phase: Phase::Head,
            buf: Vec::with_capacity(1024),
            status: 0,
            close: false,
        }
    }

    fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether any byte of a response arrived.
    fn started(&self) -> bool {
        self.phase != Phase::Head || !self.buf.is_empty() || self.status != 0
    }

    fn parse_head(&mut self, head: &[u8]) -> Result<(), String> {
        let head = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(format!("bad status line {status_line:?}"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = version == "HTTP/1.0";
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line {line:?}"))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("bad content-length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                let v = value.to_ascii_lowercase();
                close = v.contains("close") || (close && !v.contains("keep-alive"));
            }
        }
        self.status = status;
        self.close = close;
        self.phase = if (100..200).contains(&status) {
            Phase::Head // an interim answer: the real one follows
        } else if status == 204 || status == 304 {
            Phase::Done
        } else if chunked {
            Phase::ChunkSize
        } else if let Some(n) = length {
            if n == 0 {
                Phase::Done
            } else {
                Phase::Length(n)
            }
        } else {
            self.close = true;
            Phase::UntilEof
        };
        Ok(())
    }

    /// Consumes `input`; calls `body` with each run of body bytes.
    fn feed(&mut self, input: &[u8], body: &mut impl FnMut(&[u8])) -> Result<(), String> {
        self.buf.extend_from_slice(input);
        let mut pos = 0;
        let result = loop {
            let rest = &self.buf[pos..];
            match self.phase {
                Phase::Head => match find(rest, b"\r\n\r\n") {
                    Some(end) => {
                        let head = rest[..end].to_vec();
                        pos += end + 4;
                        if let Err(e) = self.parse_head(&head) {
                            break Err(e);
                        }
                    }
                    None if rest.len() > MAX_HEAD => break Err("response head too long".into()),
                    None => break Ok(()),
                },
                Phase::Length(n) | Phase::ChunkData(n) => {
                    if rest.is_empty() {
                        break Ok(());
                    }
                    let take = (rest.len() as u64).min(n) as usize;
                    body(&rest[..take]);
                    pos += take;
                    let left = n - take as u64;
                    self.phase = match (self.phase, left) {
                        (Phase::Length(_), 0) => Phase::Done,
                        (Phase::Length(_), _) => Phase::Length(left),
                        (_, 0) => Phase::ChunkEnd,
                        _ => Phase::ChunkData(left),
                    };
                }
                Phase::ChunkSize => match find(rest, b"\r\n") {
                    Some(end) => {
                        let line = String::from_utf8_lossy(&rest[..end]);
                        let digits = line.split(';').next().unwrap_or("").trim();
                        let size = match u64::from_str_radix(digits, 16) {
                            Ok(size) => size,
                            Err(_) => break Err(format!("bad chunk size line {line:?}")),
                        };
                        pos += end + 2;
                        self.phase = if size == 0 {
                            Phase::Trailer
                        } else {
                            Phase::ChunkData(size)
                        };
                    }
                    None if rest.len() > 1024 => break Err("chunk size line too long".into()),
                    None => break Ok(()),
                },
                Phase::ChunkEnd => {
                    if rest.len() < 2 {
                        break Ok(());
                    }
                    if &rest[..2] != b"\r\n" {
                        break Err("chunk data not followed by CRLF".into());
                    }
                    pos += 2;
                    self.phase = Phase::ChunkSize;
                }
                Phase::Trailer => match find(rest, b"\r\n") {
                    Some(0) => {
                        pos += 2;
                        self.phase = Phase::Done;
                    }
                    Some(end) => pos += end + 2, // a trailer field: skipped
                    None if rest.len() > MAX_HEAD => break Err("trailer too long".into()),
                    None => break Ok(()),
                },
                Phase::UntilEof => {
                    if !rest.is_empty() {
                        body(rest);
                        pos += rest.len();
                    }
                    break Ok(());
                }
                Phase::Done => {
                    if rest.is_empty() {
                        break Ok(());
                    }
                    break Err(format!(
                        "{} unexpected bytes after the response",
                        rest.len()
                    ));
                }
            }
        };
        self.buf.drain(..pos);
        result
    }

    /// The peer closed the connection.
    fn eof(&mut self) -> Result<(), String> {
        match self.phase {
            Phase::UntilEof => {
                self.phase = Phase::Done;
                Ok(())
            }
            Phase::Done => Ok(()),
            p => Err(format!("connection closed in the response ({p:?})")),
        }
    }
}

// ---------------------------------------------------------------- SSE parser

/// Incremental SSE parser: lines end in LF or CRLF, an empty line ends an
/// event; an event's data is its `data:` values joined by LF. Events
/// without data are not dispatched; other fields are ignored.
struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    fn new() -> Self {
        SseParser {
            line: Vec::with_capacity(256),
            data: Vec::with_capacity(256),
            has_data: false,
        }
    }

    fn feed(&mut self, mut input: &[u8], on_event: &mut impl FnMut(&[u8])) {
        while !input.is_empty() {
            let Some(nl) = input.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(input);
                return;
            };
            self.line.extend_from_slice(&input[..nl]);
            input = &input[nl + 1..];
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            if self.line.is_empty() {
                if self.has_data {
                    on_event(&self.data);
                }
                self.data.clear();
                self.has_data = false;
            } else if let Some(value) = self.line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            self.line.clear();
        }
    }
}

/// Whether an event's data (OpenAI chat chunk JSON) carries a non-empty
/// `"content"` string.
fn has_content(data: &[u8]) -> bool {
    let key = b"\"content\"";
    let mut from = 0;
    while let Some(at) = find(&data[from..], key) {
        let mut i = from + at + key.len();
        let skip_ws = |i: &mut usize| {
            while data.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
                *i += 1;
            }
        };
        skip_ws(&mut i);
        if data.get(i) == Some(&b':') {
            i += 1;
            skip_ws(&mut i);
            if data.get(i) == Some(&b'"') && data.get(i + 1).is_some_and(|&b| b != b'"') {
                return true;
            }
        }
        from += at + key.len();
    }
    false
}

// ---------------------------------------------------------------- arguments

struct Common {
    addr: SocketAddr,
    request: Vec<u8>,
}

enum Mode {
    Latency {
        rate: f64,
        seconds: f64,
        conns: usize,
        warmup_secs: f64,
    },
    Streams {
        streams: usize,
        events: usize,
        interval_ms: u64,
        ramp_ms: u64,
    },
    Idle {
        conns: usize,
        hold_secs: f64,
        ready_file: Option<String>,
    },
}

/// The option/value pairs, taken one by one; leftovers are errors.
struct Flags {
    mode: String,
    pairs: Vec<(String, String)>,
}

impl Flags {
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(i).1)
    }

    fn get<T: std::str::FromStr>(&mut self, name: &str, default: Option<T>) -> Result<T, String> {
        match self.take(name) {
            Some(v) => v.parse().map_err(|_| format!("{name}: cannot parse {v:?}")),
            None => default.ok_or_else(|| format!("{} needs {name}", self.mode)),
        }
    }
}

fn parse_args(args: &[String]) -> Result<(Common, Mode), String> {
    let mut it = args.iter();
    let mode = it.next().ok_or("no mode given")?.clone();
    if !["latency", "streams", "idle"].contains(&mode.as_str()) {
        return Err(format!("unknown mode {mode:?} (latency, streams, idle)"));
    }
    let mut flags = Flags {
        mode: mode.clone(),
        pairs: Vec::new(),
    };
    let mut headers = Vec::new();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument {flag:?}"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--header" {
            let (k, v) = value
                .split_once(':')
                .ok_or_else(|| format!("--header {value:?}: expected 'name: value'"))?;
            if k.trim().is_empty() || k.contains(char::is_whitespace) {
                return Err(format!("--header {value:?}: bad name"));
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        } else if flags.pairs.iter().any(|(n, _)| n == flag) {
            return Err(format!("{flag} given twice"));
        } else {
            flags.pairs.push((flag.clone(), value.clone()));
        }
    }
    let addr: SocketAddr = flags.get("--addr", None)?;
    if !addr.ip().is_loopback() {
        return Err(format!("--addr {addr}: loopback addresses only"));
    }
    let path: String = flags.get("--path", None)?;
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return Err(format!(
            "--path {path:?}: must start with / and have no spaces"
        ));
    }
    let body_file: String = flags.get("--body-file", None)?;
    let body = std::fs::read(&body_file).map_err(|e| format!("--body-file {body_file}: {e}"))?;
    let mode = match mode.as_str() {
        "latency" => {
            let rate: f64 = flags.get("--rate", None)?;
            let seconds: f64 = flags.get("--seconds", None)?;
            let conns: usize = flags.get("--conns", Some(1))?;
            let warmup_secs: f64 = flags.get("--warmup-secs", Some(1.0))?;
            if !(rate > 0.0 && seconds > 0.0 && warmup_secs >= 0.0 && conns > 0) {
                return Err("--rate, --seconds and --conns must be > 0".into());
            }
            if rate * (seconds + warmup_secs) > 1e8 || seconds + warmup_secs > 3600.0 {
                return Err("too much: at most 1e8 requests and an hour".into());
            }
            if conns > 1000 {
                return Err("--conns: at most 1000".into());
            }
            Mode::Latency {
                rate,
                seconds,
                conns,
                warmup_secs,
            }
        }
        "streams" => {
            let streams: usize = flags.get("--streams", None)?;
            let events: usize = flags.get("--events", None)?;
            let interval_ms: u64 = flags.get("--interval-ms", None)?;
            let ramp_ms: u64 = flags.get("--ramp-ms", Some(1000))?;
            if streams == 0 || streams > 5000 {
                return Err("--streams must be 1..=5000".into());
            }
            if interval_ms > 60_000 || ramp_ms > 600_000 {
                return Err("--interval-ms or --ramp-ms too large".into());
            }
            Mode::Streams {
                streams,
                events,
                interval_ms,
                ramp_ms,
            }
        }
        "idle" => {
            let conns: usize = flags.get("--conns", None)?;
            let hold_secs: f64 = flags.get("--hold-secs", None)?;
            let ready_file = flags.take("--ready-file");
            if conns == 0 || !(0.0..=3600.0).contains(&hold_secs) {
                return Err("--conns must be > 0 and --hold-secs 0..=3600".into());
            }
            Mode::Idle {
                conns,
                hold_secs,
                ready_file,
            }
        }
        _ => unreachable!("checked above"),
    };
    if let Some((flag, _)) = flags.pairs.first() {
        return Err(format!("unknown option {flag} for {}", flags.mode));
    }
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("host") {
            return Err(format!("--header {k}: set by load-probe"));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    Ok((Common { addr, request }, mode))
}

// ---------------------------------------------------------------- I/O helpers

/// Raises the RLIMIT_NOFILE soft limit to the hard limit; returns it.
fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // rlim_t is u64 on Linux.
    lim.rlim_cur
}

/// Timer slack of this thread to 1 ns, so sleeps end when asked.
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Sleeps until ~100 µs before `due`, then spins.
fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(100);
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > SPIN {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

#[derive(Debug)]
enum Failure {
    /// EOF or reset before any byte of the answer: the server had closed.
    Closed(String),
    Io(io::Error),
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Failure::Closed(e) => write!(f, "closed by the server: {e}"),
            Failure::Io(e) => write!(f, "io error: {e}"),
            Failure::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Reads one whole response; returns (status, connection closes after).
fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> Result<(u16, bool), Failure> {
    let mut p = HttpParser::new();
    while !p.done() {
        let n = match s.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if !p.started() && peer_gone(&e) => return Err(Failure::Closed(e.to_string())),
            Err(e) => return Err(Failure::Io(e)),
        };
        if n == 0 {
            if !p.started() {
                return Err(Failure::Closed("EOF before the answer".into()));
            }
            p.eof().map_err(Failure::Protocol)?;
            break;
        }
        p.feed(&buf[..n], &mut |_| {}).map_err(Failure::Protocol)?;
    }
    Ok((p.status, p.close))
}

fn send(s: &mut TcpStream, req: &[u8]) -> Result<(), Failure> {
    s.write_all(req).map_err(|e| {
        if peer_gone(&e) {
            Failure::Closed(e.to_string())
        } else {
            Failure::Io(e)
        }
    })
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Up to this many failure descriptions go to stderr.
const EXAMPLES: usize = 5;

// ---------------------------------------------------------------- latency

struct LatencyStats {
    hist: Histogram,
    service: Histogram,
    requests: u64,
    ok: u64,
    non2xx: u64,
    errors: u64,
    connects: u64,
    last_end: Option<Instant>,
    examples: Vec<String>,
}

fn latency(common: &Common, rate: f64, seconds: f64, conns: usize, warmup_secs: f64) -> ExitCode {
    let warm = (rate * warmup_secs).round() as u64;
    let total = warm + (rate * seconds).round() as u64;
    let start = Instant::now() + Duration::from_millis(100);
    let due_of = move |i: u64| start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
    let measure_start = due_of(warm);
    let threads: Vec<_> = (0..conns)
        .map(|k| {
            let addr = common.addr;
            let req = common.request.clone();
            std::thread::spawn(move || {
                tight_timer_slack();
                let mut st = LatencyStats {
                    hist: Histogram::new(),
                    service: Histogram::new(),
                    requests: 0,
                    ok: 0,
                    non2xx: 0,
                    errors: 0,
                    connects: 0,
                    last_end: None,
                    examples: Vec::new(),
                };
                let mut buf = vec![0u8; 64 * 1024];
                let mut conn: Option<TcpStream> = None;
                let mut i = k as u64;
                while i < total {
                    let due = due_of(i);
                    wait_until(due);
                    let sent = Instant::now();
                    let result = (|| {
                        if conn.is_none() {
                            conn = Some(connect(addr).map_err(Failure::Io)?);
                            st.connects += 1;
                        }
                        let s = conn.as_mut().unwrap();
                        send(s, &req)?;
                        read_response(s, &mut buf)
                    })();
                    let end = Instant::now();
                    let measured = i >= warm;
                    match result {
                        Ok((status, close)) => {
                            if close {
                                conn = None;
                            }
                            if measured {
                                st.hist.record(us(end - due));
                                st.service.record(us(end - sent));
                                if (200..300).contains(&status) {
                                    st.ok += 1;
                                } else {
                                    st.non2xx += 1;
                                    if st.examples.len() < EXAMPLES {
                                        st.examples.push(format!("request {i}: status {status}"));
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            conn = None;
                            if measured {
                                st.errors += 1;
                                if st.examples.len() < EXAMPLES {
                                    st.examples.push(format!("request {i}: {e}"));
                                }
                            }
                        }
                    }
                    if measured {
                        st.requests += 1;
                        st.last_end = Some(end);
                    }
                    i += conns as u64;
                }
                st
            })
        })
        .collect();
    let mut hist = Histogram::new();
    let mut service = Histogram::new();
    let (mut requests, mut ok, mut non2xx, mut errors, mut connects) = (0, 0, 0, 0, 0);
    let mut last_end = measure_start;
    for t in threads {
        let st = t.join().expect("latency thread panicked");
        hist.merge(&st.hist);
        service.merge(&st.service);
        requests += st.requests;
        ok += st.ok;
        non2xx += st.non2xx;
        errors += st.errors;
        connects += st.connects;
        if let Some(e) = st.last_end {
            last_end = last_end.max(e);
        }
        for e in &st.examples {
            eprintln!("load-probe latency: {e}");
        }
    }
    // Completed requests per second of the measured schedule, or of the
    // longer time it took when the responses fell behind.
    let elapsed = (last_end - measure_start).as_secs_f64().max(seconds);
    let achieved = if elapsed > 0.0 {
        requests as f64 / elapsed
    } else {
        0.0
    };
    println!("requests={requests}");
    println!("ok={ok}");
    println!("non2xx={non2xx}");
    println!("errors={errors}");
    println!("connects={connects}");
    println!("target_rate={}", rate.round() as u64);
    println!("achieved_rate={}", achieved.round() as u64);
    println!("p50_us={}", hist.percentile(0.5));
    println!("p90_us={}", hist.percentile(0.9));
    println!("p99_us={}", hist.percentile(0.99));
    println!("p999_us={}", hist.percentile(0.999));
    println!("max_us={}", hist.max);
    println!("mean_us={}", hist.mean());
    println!("service_p50_us={}", service.percentile(0.5));
    println!("service_p99_us={}", service.percentile(0.99));
    let slow = achieved < 0.95 * rate;
    if slow {
        eprintln!("load-probe latency: achieved {achieved:.0}/s < 95% of {rate}/s");
    }
    if errors > 0 || non2xx > 0 || slow || requests == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------- streams

#[derive(Default)]
struct StreamResult {
    error: Option<String>,
    status: u16,
    complete: bool,
    ttfb_us: Option<u64>,
    ttft_us: Option<u64>,
    /// Arrival of every SSE event, µs after the request was written.
    events: Vec<u64>,
    content_events: u64,
}

/// One stream's answer, parsed as its bytes arrive. The caller timestamps
/// every read; that time goes to each SSE event the read's bytes complete.
struct StreamState {
    /// When the request's last byte was written.
    t0: Instant,
    http: HttpParser,
    sse: SseParser,
    done_seen: bool,
    after_done: bool,
    r: StreamResult,
}

impl StreamState {
    fn new(t0: Instant) -> Self {
        StreamState {
            t0,
            http: HttpParser::new(),
            sse: SseParser::new(),
            done_seen: false,
            after_done: false,
            r: StreamResult::default(),
        }
    }

    /// Whether the answer is over (whole, or failed): read no more.
    fn finished(&self) -> bool {
        self.r.error.is_some() || self.http.done()
    }

    /// Feeds the bytes of one read that returned at `now`.
    fn read(&mut self, bytes: &[u8], now: Instant) {
        let at = us(now.saturating_duration_since(self.t0));
        let StreamState {
            http,
            sse,
            done_seen,
            after_done,
            r,
            ..
        } = self;
        let mut on_event = |data: &[u8]| {
            r.events.push(at);
            if *done_seen {
                *after_done = true;
            }
            if data == b"[DONE]" {
                *done_seen = true;
            } else if has_content(data) {
                r.content_events += 1;
                r.ttft_us.get_or_insert(at);
            }
        };
        let mut ttfb = None;
        let mut on_body = |b: &[u8]| {
            if !b.is_empty() {
                ttfb.get_or_insert(at);
            }
            sse.feed(b, &mut on_event);
        };
        let fed = http.feed(bytes, &mut on_body);
        if self.r.ttfb_us.is_none() {
            self.r.ttfb_us = ttfb;
        }
        if let Err(e) = fed {
            self.fail(e);
        }
    }

    /// The peer closed the connection.
    fn eof(&mut self) {
        if let Err(e) = self.http.eof() {
            self.fail(e);
        }
    }

    /// Records the first error; later ones are consequences.
    fn fail(&mut self, e: String) {
        self.r.error.get_or_insert(e);
    }

    fn finish(self) -> StreamResult {
        let mut r = self.r;
        r.status = self.http.status;
        if r.error.is_none() && !(200..300).contains(&r.status) {
            r.error = Some(format!("status {}", r.status));
        }
        r.complete = r.error.is_none() && self.http.done() && self.done_seen && !self.after_done;
        r
    }
}

/// An epoll instance (level-triggered); an event's data is a caller's key.
struct Poller(OwnedFd);

impl Poller {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; a nonnegative result is a new fd we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is open and owned by nobody else.
        Ok(Poller(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: key };
        // SAFETY: both fds are open; `ev` is a valid local.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout`; returns the ready events (none on EINTR).
    fn wait<'a>(
        &self,
        evs: &'a mut [libc::epoll_event],
        timeout: Duration,
    ) -> io::Result<&'a [libc::epoll_event]> {
        // Whole milliseconds, rounded up so a wake is never early.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `evs` is writable for `evs.len()` events.
        let k = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                evs.as_mut_ptr(),
                evs.len() as libc::c_int,
                ms,
            )
        };
        if k < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(&[])
            } else {
                Err(e)
            };
        }
        Ok(&evs[..k as usize])
    }
}

/// Starts a nonblocking connect (TCP_NODELAY set); the bool is whether it
/// already completed.
fn connect_nonblocking(addr: SocketAddr) -> io::Result<(TcpStream, bool)> {
    // SAFETY: zeroed sockaddr structs are valid; the connect call gets the
    // length of the one filled in.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let (family, len) = match addr {
            SocketAddr::V4(a) => {
                let sin =
                    &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (libc::AF_INET, std::mem::size_of::<libc::sockaddr_in>())
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                (libc::AF_INET6, std::mem::size_of::<libc::sockaddr_in6>())
            }
        };
        let fd = libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = TcpStream::from_raw_fd(fd);
        sock.set_nodelay(true)?;
        let rc = libc::connect(
            fd,
            (&storage as *const libc::sockaddr_storage).cast(),
            len as libc::socklen_t,
        );
        if rc == 0 {
            return Ok((sock, true));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINPROGRESS) {
            Ok((sock, false))
        } else {
            Err(e)
        }
    }
}

/// Where one stream is.
enum Slot {
    /// Its start time has not come.
    Waiting,
    /// Connecting (until `connected`), then writing the request.
    Sending {
        sock: TcpStream,
        connected: bool,
        sent: usize,
    },
    Receiving {
        sock: TcpStream,
        state: StreamState,
    },
    Done(StreamResult),
}

fn failed_result(e: String) -> StreamResult {
    StreamResult {
        error: Some(e),
        ..StreamResult::default()
    }
}

fn failed(e: String) -> Slot {
    Slot::Done(failed_result(e))
}

const READABLE: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const WRITABLE: u32 = libc::EPOLLOUT as u32;

/// Drives all `n` streams from this one thread: nonblocking sockets in a
/// level-triggered epoll. Stream `k` starts at `start + k * ramp / n`; a
/// stream's clock starts when its request is written; each read is
/// timestamped as soon as it returns and the socket is read until EAGAIN.
/// Streams not finished by `deadline` fail.
fn run_streams(
    addr: SocketAddr,
    req: &[u8],
    n: usize,
    start: Instant,
    ramp: Duration,
    deadline: Instant,
) -> Vec<StreamResult> {
    tight_timer_slack();
    let poller = match Poller::new() {
        Ok(p) => p,
        Err(e) => {
            return (0..n)
                .map(|_| failed_result(format!("epoll: {e}")))
                .collect()
        }
    };
    let due = |k: usize| start + ramp.mul_f64(k as f64 / n as f64);
    let mut slots: Vec<Slot> = (0..n).map(|_| Slot::Waiting).collect();
    let mut next = 0; // the next stream to start
    let mut open = 0; // started, not done
    let mut buf = vec![0u8; 256 * 1024];
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];

    // Writes the rest of the request; a slot that is done sending becomes
    // `Receiving`, watched for input.
    let send = |k: usize, slot: Slot| -> Slot {
        let Slot::Sending {
            sock,
            connected,
            mut sent,
        } = slot
        else {
            return slot;
        };
        if !connected {
            match sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return failed(format!("connect: {e}")),
            }
        }
        while sent < req.len() {
            match (&sock).write(&req[sent..]) {
                Ok(w) => sent += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Slot::Sending {
                        sock,
                        connected: true,
                        sent,
                    };
                }
                Err(e) => return failed(format!("write: {e}")),
            }
        }
        let t0 = Instant::now();
        if let Err(e) = poller.ctl(libc::EPOLL_CTL_MOD, sock.as_raw_fd(), READABLE, k as u64) {
            return failed(format!("epoll: {e}"));
        }
        Slot::Receiving {
            sock,
            state: StreamState::new(t0),
        }
    };

    loop {
        let now = Instant::now();
        while next < n && due(next) <= now {
            let k = next;
            next += 1;
            slots[k] = match connect_nonblocking(addr) {
                Err(e) => failed(format!("connect: {e}")),
                Ok((sock, connected)) => {
                    match poller.ctl(libc::EPOLL_CTL_ADD, sock.as_raw_fd(), WRITABLE, k as u64) {
                        Err(e) => failed(format!("epoll: {e}")),
                        Ok(()) if connected => send(
                            k,
                            Slot::Sending {
                                sock,
                                connected,
                                sent: 0,
                            },
                        ),
                        Ok(()) => Slot::Sending {
                            sock,
                            connected,
                            sent: 0,
                        },
                    }
                }
            };
            if !matches!(slots[k], Slot::Done(_)) {
                open += 1;
            }
        }
        if (next == n && open == 0) || now >= deadline {
            break;
        }
        let wake = if next < n {
            due(next).min(deadline)
        } else {
            deadline
        };
        let ready = match poller.wait(&mut evs, wake.saturating_duration_since(now)) {
            Ok(ready) => ready,
            Err(e) => {
                eprintln!("load-probe streams: epoll_wait: {e}");
                break;
            }
        };
        for ev in ready {
            let k = ev.u64 as usize;
            let slot = std::mem::replace(&mut slots[k], Slot::Waiting);
            slots[k] = match slot {
                s @ Slot::Sending { .. } => send(k, s),
                Slot::Receiving { sock, mut state } => {
                    loop {
                        let got = (&sock).read(&mut buf);
                        let at = Instant::now();
                        match got {
                            Ok(0) => {
                                state.eof();
                                break;
                            }
                            Ok(m) => {
                                state.read(&buf[..m], at);
                                if state.finished() {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                state.fail(format!("read: {e}"));
                                break;
                            }
                        }
                    }
                    if state.finished() {
                        Slot::Done(state.finish()) // drops (closes) the socket
                    } else {
                        Slot::Receiving { sock, state }
                    }
                }
                s => s, // a stale event
            };
            if matches!(slots[k], Slot::Done(_)) {
                open -= 1;
            }
        }
    }

    let timed_out = || format!("timed out after {} ms", us(deadline - start) / 1000);
    slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Done(r) => r,
            Slot::Receiving { mut state, .. } => {
                state.fail(format!("read: {}", timed_out()));
                state.finish()
            }
            Slot::Sending { connected, .. } => {
                let what = if connected { "write" } else { "connect" };
                failed_result(format!("{what}: {}", timed_out()))
            }
            Slot::Waiting => failed_result("never started".into()),
        })
        .collect()
}

fn streams(common: &Common, n: usize, events: usize, interval_ms: u64, ramp_ms: u64) -> ExitCode {
    let nofile = raise_nofile();
    if n as u64 + 64 > nofile {
        eprintln!(
            "load-probe streams: {n} streams need {n} + 64 open files; RLIMIT_NOFILE is {nofile}"
        );
        return ExitCode::FAILURE;
    }
    let begin = Instant::now();
    let start = begin + Duration::from_millis(100);
    let ramp = Duration::from_millis(ramp_ms);
    // Generous but bounded: the whole answer should take events * interval.
    let deadline =
        start + ramp + Duration::from_millis(events as u64 * interval_ms) + Duration::from_secs(60);
    let results = run_streams(common.addr, &common.request, n, start, ramp, deadline);
    let duration = begin.elapsed();

    let tolerance_us = (5_000).max(interval_ms * 1000 / 2);
    let interval_us = interval_ms * 1000;
    let (mut complete, mut failed, mut events_total, mut held_back) = (0, 0, 0, 0);
    let (mut gap_max, mut late_max) = (0u64, 0u64);
    let mut events_min = u64::MAX;
    let mut content_min = u64::MAX;
    let mut ttft = Vec::with_capacity(n);
    let mut ttfb = Vec::with_capacity(n);
    let mut examples = 0;
    for r in &results {
        if let Some(e) = &r.error {
            failed += 1;
            if examples < EXAMPLES {
                eprintln!("load-probe streams: failed: {e}");
                examples += 1;
            }
        } else if r.complete {
            complete += 1;
        } else if examples < EXAMPLES {
            eprintln!(
                "load-probe streams: incomplete: {} events, no final data: [DONE]",
                r.events.len()
            );
            examples += 1;
        }
        events_total += r.events.len() as u64;
        events_min = events_min.min(r.events.len() as u64);
        content_min = content_min.min(r.content_events);
        ttft.extend(r.ttft_us);
        ttfb.extend(r.ttfb_us);
        for w in r.events.windows(2) {
            let gap = w[1] - w[0];
            gap_max = gap_max.max(gap);
            let late = gap.saturating_sub(interval_us);
            late_max = late_max.max(late);
            if late > tolerance_us {
                held_back += 1;
            }
        }
    }
    if content_min != u64::MAX && content_min < events as u64 && examples < EXAMPLES {
        eprintln!(
            "load-probe streams: a stream had {content_min} content events, expected {events}"
        );
    }
    ttft.sort_unstable();
    ttfb.sort_unstable();
    let incomplete = results.len() - complete;
    println!("streams={}", results.len());
    println!("complete={complete}");
    println!("failed={failed}");
    println!("events_total={events_total}");
    println!(
        "events_per_stream_min={}",
        if results.is_empty() { 0 } else { events_min }
    );
    println!(
        "content_events_per_stream_min={}",
        if results.is_empty() { 0 } else { content_min }
    );
    println!("ttft_p50_us={}", percentile_sorted(&ttft, 0.5));
    println!("ttft_p99_us={}", percentile_sorted(&ttft, 0.99));
    println!("ttft_max_us={}", ttft.last().copied().unwrap_or(0));
    println!("ttfb_p50_us={}", percentile_sorted(&ttfb, 0.5));
    println!("ttfb_p99_us={}", percentile_sorted(&ttfb, 0.99));
    println!("gap_max_us={gap_max}");
    println!("late_max_us={late_max}");
    println!("held_back={held_back}");
    println!("duration_ms={}", duration.as_millis());
    if failed > 0 || incomplete > 0 || results.len() < n {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------- idle

/// Sends `req` on every connection of `conns`, `WINDOW` at a time (send
/// to all of a window, then read their answers); returns per-connection
/// results in order.
fn round(conns: &mut [TcpStream], req: &[u8]) -> Vec<Result<u16, Failure>> {
    const WINDOW: usize = 64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(conns.len());
    for window in conns.chunks_mut(WINDOW) {
        let sent: Vec<Result<(), Failure>> = window.iter_mut().map(|s| send(s, req)).collect();
        for (s, sent) in window.iter_mut().zip(sent) {
            out.push(sent.and_then(|_| read_response(s, &mut buf).map(|(status, _)| status)));
        }
    }
    out
}

/// Whether the server closed `s` (EOF waiting), without blocking.
fn closed_while_idle(s: &TcpStream) -> Result<bool, Failure> {
    let mut b = [0u8; 1];
    // SAFETY: a 1-byte peek into a local buffer.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 {
        return Ok(true);
    }
    if n > 0 {
        return Err(Failure::Protocol(
            "unsolicited bytes on an idle connection".into(),
        ));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(false),
        _ if peer_gone(&e) => Ok(true),
        _ => Err(Failure::Io(e)),
    }
}

fn idle(common: &Common, n: usize, hold_secs: f64, ready_file: Option<&str>) -> ExitCode {
    let nofile = raise_nofile();
    if n as u64 + 64 > nofile {
        eprintln!(
            "load-probe idle: {n} connections need {n} + 64 open files; RLIMIT_NOFILE is {nofile} \
             (raise the hard limit: ulimit -Hn)"
        );
        return ExitCode::FAILURE;
    }
    let mut errors = 0u64;
    let mut examples = 0;
    let mut note = |what: &str, e: &dyn std::fmt::Display| {
        if examples < EXAMPLES {
            eprintln!("load-probe idle: {what}: {e}");
            examples += 1;
        }
    };
    let setup = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut ok_first = 0u64;
    // Connect in windows too, so the listen backlog never overflows.
    for k in (0..n).step_by(64) {
        let mut window = Vec::with_capacity(64);
        for _ in k..(k + 64).min(n) {
            match connect(common.addr) {
                Ok(s) => window.push(s),
                Err(e) => {
                    errors += 1;
                    note("connect", &e);
                }
            }
        }
        let results = round(&mut window, &common.request);
        for (s, r) in window.into_iter().zip(results) {
            match r {
                Ok(status) if (200..300).contains(&status) => {
                    ok_first += 1;
                    conns.push(s);
                }
                Ok(status) => {
                    errors += 1;
                    note("first request", &format!("status {status}"));
                }
                Err(e) => {
                    errors += 1;
                    note("first request", &e);
                }
            }
        }
    }
    let setup_ms = setup.elapsed().as_millis();
    if let Some(path) = ready_file {
        let tmp = format!("{path}.tmp");
        if let Err(e) = std::fs::write(&tmp, "ready\n").and_then(|_| std::fs::rename(&tmp, path)) {
            eprintln!("load-probe idle: --ready-file {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    std::thread::sleep(Duration::from_secs_f64(hold_secs));

    let mut closed_by_server = 0u64;
    let mut open = Vec::with_capacity(conns.len());
    for s in conns {
        match closed_while_idle(&s) {
            Ok(true) => closed_by_server += 1,
            Ok(false) => open.push(s),
            Err(e) => {
                errors += 1;
                note("idle connection", &e);
            }
        }
    }
    let mut ok_last = 0u64;
    for r in round(&mut open, &common.request) {
        match r {
            Ok(status) if (200..300).contains(&status) => ok_last += 1,
            Ok(status) => {
                errors += 1;
                note("last request", &format!("status {status}"));
            }
            Err(Failure::Closed(_)) => closed_by_server += 1,
            Err(e) => {
                errors += 1;
                note("last request", &e);
            }
        }
    }
    if closed_by_server > 0 {
        eprintln!("load-probe idle: the server closed {closed_by_server} idle connections");
    }
    println!("conns={n}");
    println!("ok_first={ok_first}");
    println!("ok_last={ok_last}");
    println!("closed_by_server={closed_by_server}");
    println!("errors={errors}");
    println!("setup_ms={setup_ms}");
    if errors > 0 || closed_by_server > 0 || ok_last < n as u64 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------- main

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty()
        || args
            .iter()
            .any(|a| a == "--help" || a == "-h" || a == "help")
    {
        println!("{USAGE}");
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let (common, mode) = match parse_args(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("load-probe: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Latency {
            rate,
            seconds,
            conns,
            warmup_secs,
        } => latency(&common, rate, seconds, conns, warmup_secs),
        Mode::Streams {
            streams: n,
            events,
            interval_ms,
            ramp_ms,
        } => streams(&common, n, events, interval_ms, ramp_ms),
        Mode::Idle {
            conns,
            hold_secs,
            ready_file,
        } => idle(&common, conns, hold_secs, ready_file.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunked SSE answer like the mock's, with events split across
    /// chunks and a chunk extension and trailer thrown in.
    fn wire() -> Vec<u8> {
        let events = [
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\r\n\r\n",
            "event: x\ndata: {\"choices\":[{\"delta\":{\"content\": \"world\"}}]}\n\n",
            ": comment\n\ndata: [DONE]\n\n",
        ];
        let body: String = events.concat();
        let mut w = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let b = body.as_bytes();
        let cuts = [0, 10, 70, 71, 130, b.len()];
        for c in cuts.windows(2) {
            w.extend_from_slice(format!("{:x};ext=1\r\n", c[1] - c[0]).as_bytes());
            w.extend_from_slice(&b[c[0]..c[1]]);
            w.extend_from_slice(b"\r\n");
        }
        w.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        w
    }

    /// Parses `parts` in order; returns the events, body and whether done.
    fn parse(parts: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>, bool) {
        let mut http = HttpParser::new();
        let mut sse = SseParser::new();
        let mut events = Vec::new();
        let mut body = Vec::new();
        for part in parts {
            http.feed(part, &mut |b: &[u8]| {
                body.extend_from_slice(b);
                sse.feed(b, &mut |e: &[u8]| events.push(e.to_vec()));
            })
            .unwrap();
        }
        (events, body, http.done())
    }

    #[test]
    fn chunked_sse_same_events_for_every_split() {
        let w = wire();
        let (events, body, done) = parse(&[&w]);
        assert!(done);
        assert_eq!(events.len(), 4);
        assert_eq!(events[3], b"[DONE]");
        let content: Vec<bool> = events.iter().map(|e| has_content(e)).collect();
        assert_eq!(content, [false, true, true, false]);
        for i in 0..=w.len() {
            for j in i..=w.len() {
                let got = parse(&[&w[..i], &w[i..j], &w[j..]]);
                assert_eq!(got, (events.clone(), body.clone(), true), "split {i} {j}");
            }
        }
        let bytes: Vec<&[u8]> = w.chunks(1).collect();
        assert_eq!(parse(&bytes), (events, body, true));
    }

    #[test]
    fn stream_state_times_events_by_the_read_that_completes_them() {
        let w = wire();
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        for i in 0..=w.len() {
            let mut st = StreamState::new(t0);
            st.read(&w[..i], ms(1));
            assert!(!st.finished() || i == w.len(), "split {i}");
            st.read(&w[i..], ms(2));
            assert!(st.finished());
            let r = st.finish();
            assert!(
                r.error.is_none() && r.complete && r.status == 200,
                "split {i}"
            );
            // What the first read alone completes is stamped 1 ms.
            let (first, body, _) = parse(&[&w[..i]]);
            let want: Vec<u64> = (0..4)
                .map(|e| if e < first.len() { 1000 } else { 2000 })
                .collect();
            assert_eq!(r.events, want, "split {i}");
            let ttfb = if body.is_empty() { 2000 } else { 1000 };
            assert_eq!(r.ttfb_us, Some(ttfb), "split {i}");
            let ttft = if first.len() >= 2 { 1000 } else { 2000 };
            assert_eq!(r.ttft_us, Some(ttft), "split {i}");
            assert_eq!(r.content_events, 2);
        }
        // Closed early, bytes after the end, and a non-2xx answer fail.
        let mut st = StreamState::new(t0);
        st.read(&w[..w.len() - 5], ms(1));
        st.eof();
        assert!(st.finished() && !st.finish().complete);
        let mut st = StreamState::new(t0);
        let mut extra = w.clone();
        extra.extend_from_slice(b"HTTP");
        st.read(&extra, ms(1));
        let r = st.finish();
        assert!(r.error.is_some() && !r.complete);
        let mut st = StreamState::new(t0);
        st.read(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n", ms(1));
        assert!(st.finished());
        assert_eq!(st.finish().error.as_deref(), Some("status 500"));
    }

    #[test]
    fn content_length_and_errors() {
        let mut p = HttpParser::new();
        let mut body = Vec::new();
        p.feed(
            b"HTTP/1.1 429 Too Many\r\nContent-Length: 5\r\nConnection: close\r\n\r\nab",
            &mut |b: &[u8]| body.extend_from_slice(b),
        )
        .unwrap();
        assert!(!p.done());
        assert!(p.eof().is_err());
        p.feed(b"cde", &mut |b: &[u8]| body.extend_from_slice(b))
            .unwrap();
        assert!(p.done() && p.close && p.status == 429 && body == b"abcde");
        assert!(p.feed(b"x", &mut |_| {}).is_err());
        let mut q = HttpParser::new();
        assert!(q
            .feed(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                &mut |_| {}
            )
            .is_err());
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), 500);
        assert_eq!(h.percentile(0.99), 990);
        assert_eq!(h.mean(), 500);
        h.record(25_049);
        h.record(20_000_000);
        assert_eq!(h.percentile(1.0), 20_000_000);
        assert_eq!(Histogram::bucket_value(Histogram::bucket(25_049)), 25_099);
        assert_eq!(Histogram::bucket(20_000_000), BUCKETS - 1);
        assert_eq!(percentile_sorted(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile_sorted(&[], 0.5), 0);
    }
}
