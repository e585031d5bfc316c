//! The soak's constant-rate client (`loadtest/soak` runs it; wrk2 is not
//! packaged). Sends requests on a fixed schedule, request `i` at
//! `start + i / rate`, spread over `--conns` keep-alive connections (one
//! blocking thread each). Latency is measured from the scheduled time, not
//! the send time, so a stall shows up in every request it delayed (no
//! coordinated omission). Loopback only: the address must be 127.0.0.1.
//!
//! The request mix is a pure function of `i`: `--fault-pct` percent are
//! faults (mock scenarios `mock-error-500`, `mock-close`,
//! `mock-stream-truncate` over OpenAI and Anthropic), the rest OpenAI Chat
//! and Anthropic Messages, streamed and not. Every response is checked:
//!
//! - `ok`: 2xx with a whole body of the right shape (JSON with `choices` /
//!   `content`; a stream ending in `data: [DONE]` / `message_stop`);
//! - `error_response`: a non-2xx with a JSON `error` object;
//! - `stream_error`: a 2xx stream ending in the protocol's error event;
//! - `malformed`: anything else that arrived;
//! - `failed`: no response (connect, read or write error, 30 s timeout).
//!
//! `--rate max` runs a closed loop instead (each connection sends its next
//! request as soon as the previous answer is in, for `--seconds`): the soak
//! measures its maximum that way, with the same mix and the same client.
//!
//! Prints `key=value` lines: counts by outcome, kind and status class,
//! latency percentiles (µs; 10 µs buckets below 100 ms, 1 ms above),
//! achieved rate.
//!
//! ```sh
//! cargo run --release --example soak-client -- --addr 127.0.0.1:3001 --rate 2000 --seconds 30
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Latency histogram: 10 µs buckets up to 100 ms, then 1 ms buckets up to
/// 30 s (beyond: the last bucket; the exact maximum is kept apart).
const FINE_US: u64 = 10;
const FINE: usize = 10_000;
const COARSE_US: u64 = 1000;
const BUCKETS: usize = FINE + 30_000;

fn bucket_of(us: u64) -> usize {
    if us < FINE as u64 * FINE_US {
        (us / FINE_US) as usize
    } else {
        (FINE + ((us - FINE as u64 * FINE_US) / COARSE_US) as usize).min(BUCKETS - 1)
    }
}

/// The upper bound of bucket `i`, in µs.
fn bucket_top(i: usize) -> u64 {
    if i < FINE {
        (i as u64 + 1) * FINE_US
    } else {
        FINE as u64 * FINE_US + (i - FINE + 1) as u64 * COARSE_US
    }
}
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    OaJson,
    OaStream,
    AnJson,
    AnStream,
    Fault500,
    FaultClose,
    FaultTruncateOa,
    FaultTruncateAn,
}

const KINDS: [Kind; 8] = [
    Kind::OaJson,
    Kind::OaStream,
    Kind::AnJson,
    Kind::AnStream,
    Kind::Fault500,
    Kind::FaultClose,
    Kind::FaultTruncateOa,
    Kind::FaultTruncateAn,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::OaJson => "openai_json",
            Kind::OaStream => "openai_stream",
            Kind::AnJson => "anthropic_json",
            Kind::AnStream => "anthropic_stream",
            Kind::Fault500 => "fault_error_500",
            Kind::FaultClose => "fault_close",
            Kind::FaultTruncateOa => "fault_truncate_openai",
            Kind::FaultTruncateAn => "fault_truncate_anthropic",
        }
    }

    fn anthropic(self) -> bool {
        matches!(self, Kind::AnJson | Kind::AnStream | Kind::FaultTruncateAn)
    }

    fn stream(self) -> bool {
        matches!(
            self,
            Kind::OaStream | Kind::AnStream | Kind::FaultTruncateOa | Kind::FaultTruncateAn
        )
    }

    /// The kind of request `i`: a fixed, well-spread function of `i`.
    fn of(i: u64, fault_per_mille: u64) -> Kind {
        let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        let slot = h % 1000;
        if slot < fault_per_mille {
            return [
                Kind::Fault500,
                Kind::FaultClose,
                Kind::FaultTruncateOa,
                Kind::FaultTruncateAn,
            ][(h / 1000 % 4) as usize];
        }
        match (h / 1000) % 20 {
            0..=7 => Kind::OaJson,    // 40%
            8..=11 => Kind::OaStream, // 20%
            12..=15 => Kind::AnJson,  // 20%
            _ => Kind::AnStream,      // 20%
        }
    }

    fn request(self) -> Vec<u8> {
        let (path, model) = match self {
            Kind::OaJson | Kind::OaStream => ("/v1/chat/completions", "mock-model"),
            Kind::AnJson | Kind::AnStream => ("/v1/messages", "claude-mock"),
            Kind::Fault500 => ("/v1/chat/completions", "mock-error-500"),
            Kind::FaultClose => ("/v1/chat/completions", "mock-close"),
            Kind::FaultTruncateOa => ("/v1/chat/completions", "mock-stream-truncate"),
            Kind::FaultTruncateAn => ("/v1/messages", "claude-mock-stream-truncate"),
        };
        let body = if self.anthropic() {
            format!(
                r#"{{"model":"{model}","max_tokens":32,"stream":{},"messages":[{{"role":"user","content":"Say hello in one short sentence."}}]}}"#,
                self.stream()
            )
        } else {
            format!(
                r#"{{"model":"{model}","stream":{},"max_tokens":32,"messages":[{{"role":"user","content":"Say hello in one short sentence."}}]}}"#,
                self.stream()
            )
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if self.anthropic() {
            head.push_str("anthropic-version: 2023-06-01\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    ErrorResponse,
    StreamError,
    Malformed,
    Failed,
}

const OUTCOMES: [(Outcome, &str); 5] = [
    (Outcome::Ok, "ok"),
    (Outcome::ErrorResponse, "error_response"),
    (Outcome::StreamError, "stream_error"),
    (Outcome::Malformed, "malformed"),
    (Outcome::Failed, "failed"),
];

struct Stats {
    hist: Vec<u32>,
    max_us: u64,
    outcomes: [u64; 5],
    /// [kind][outcome]
    by_kind: [[u64; 5]; 8],
    /// 1xx..5xx, index 0 unused
    classes: [u64; 6],
    reconnects: u64,
    examples: Vec<String>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            hist: vec![0; BUCKETS],
            max_us: 0,
            outcomes: [0; 5],
            by_kind: [[0; 5]; 8],
            classes: [0; 6],
            reconnects: 0,
            examples: Vec::new(),
        }
    }

    fn merge(&mut self, o: &Stats) {
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
        self.max_us = self.max_us.max(o.max_us);
        for i in 0..5 {
            self.outcomes[i] += o.outcomes[i];
        }
        for k in 0..8 {
            for i in 0..5 {
                self.by_kind[k][i] += o.by_kind[k][i];
            }
        }
        for i in 0..6 {
            self.classes[i] += o.classes[i];
        }
        self.reconnects += o.reconnects;
        for e in &o.examples {
            if self.examples.len() < 10 {
                self.examples.push(e.clone());
            }
        }
    }

    fn percentile_us(&self, p: f64) -> u64 {
        let total: u64 = self.hist.iter().map(|n| *n as u64).sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += *n as u64;
            if seen >= want {
                return bucket_top(i).min(self.max_us);
            }
        }
        self.max_us
    }
}

struct Response {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before a response",
        ));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad("bad status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("closed in the head"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| bad("content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(bad("closed in a chunked body"));
            }
            let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("chunk size"))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?; // the empty trailer line
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(bad("chunk not followed by CRLF"));
            }
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if !(status == 204 || status == 304 || status < 200) {
        r.read_to_end(&mut body)?;
        close = true;
    }
    Ok(Response {
        status,
        close,
        body,
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn classify(kind: Kind, r: &Response) -> Outcome {
    if !(200..300).contains(&r.status) {
        let ok = serde_json::from_slice::<serde_json::Value>(&r.body)
            .map(|v| v.get("error").is_some_and(|e| e.is_object()))
            .unwrap_or(false);
        return if ok {
            Outcome::ErrorResponse
        } else {
            Outcome::Malformed
        };
    }
    if kind.stream() {
        let body = &r.body[..];
        let (done, error) = if kind.anthropic() {
            (
                contains(body, b"event: message_stop"),
                contains(body, b"event: error"),
            )
        } else {
            (
                body.ends_with(b"data: [DONE]\n\n"),
                contains(body, b"data: {\"error\""),
            )
        };
        return match (done, error) {
            (true, false) => Outcome::Ok,
            (false, true) => Outcome::StreamError,
            _ => Outcome::Malformed,
        };
    }
    match serde_json::from_slice::<serde_json::Value>(&r.body) {
        Ok(v) if kind.anthropic() && v.get("content").is_some_and(|c| c.is_array()) => Outcome::Ok,
        Ok(v) if !kind.anthropic() && v.get("choices").is_some_and(|c| c.is_array()) => Outcome::Ok,
        _ => Outcome::Malformed,
    }
}

struct Args {
    addr: SocketAddr,
    rate: f64,
    seconds: f64,
    conns: u64,
    fault_per_mille: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:3001".parse().unwrap(),
        rate: 1000.0,
        seconds: 10.0,
        conns: 64,
        fault_per_mille: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value.parse().expect("--addr HOST:PORT"),
            // `max`: closed loop, each connection sends its next request as
            // soon as the previous answer is in; the soak measures its
            // maximum this way, with the same mix and client as the run.
            "--rate" if value == "max" => args.rate = 0.0,
            "--rate" => args.rate = value.parse().expect("--rate N|max"),
            "--seconds" => args.seconds = value.parse().expect("--seconds N"),
            "--conns" => args.conns = value.parse().expect("--conns N"),
            "--fault-pct" => {
                args.fault_per_mille = (value.parse::<f64>().expect("--fault-pct P") * 10.0) as u64
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(args.addr.ip().is_loopback(), "loopback addresses only");
    assert!(args.rate >= 0.0 && args.seconds > 0.0 && args.conns > 0);
    args
}

fn main() {
    let args = parse_args();
    let closed_loop = args.rate == 0.0;
    let total = if closed_loop {
        u64::MAX
    } else {
        (args.rate * args.seconds) as u64
    };
    let start = Instant::now() + Duration::from_millis(200);
    let stop_at = start + Duration::from_secs_f64(args.seconds);
    let next_index = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..args.conns)
        .map(|k| {
            let addr = args.addr;
            let rate = args.rate;
            let conns = args.conns;
            let fault = args.fault_per_mille;
            let next_index = next_index.clone();
            std::thread::spawn(move || {
                let mut st = Stats::new();
                let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
                let mut i = if closed_loop {
                    std::thread::sleep(start.saturating_duration_since(Instant::now()));
                    next_index.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                } else {
                    k
                };
                while i < total {
                    let due = if closed_loop {
                        let now = Instant::now();
                        if now >= stop_at {
                            break;
                        }
                        now
                    } else {
                        start + Duration::from_secs_f64(i as f64 / rate)
                    };
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let kind = Kind::of(i, fault);
                    let req = kind.request();
                    let result = (|| -> io::Result<Response> {
                        if conn.is_none() {
                            let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                            s.set_nodelay(true)?;
                            s.set_read_timeout(Some(IO_TIMEOUT))?;
                            s.set_write_timeout(Some(IO_TIMEOUT))?;
                            let r = BufReader::with_capacity(64 * 1024, s.try_clone()?);
                            conn = Some((s, r));
                            st.reconnects += 1;
                        }
                        let (s, r) = conn.as_mut().unwrap();
                        s.write_all(&req)?;
                        read_response(r)
                    })();
                    let latency = due.elapsed();
                    let us = latency.as_micros() as u64;
                    st.hist[bucket_of(us)] += 1;
                    st.max_us = st.max_us.max(us);
                    let outcome = match &result {
                        Ok(r) => {
                            st.classes[(r.status / 100).min(5) as usize] += 1;
                            if r.close {
                                conn = None;
                            }
                            classify(kind, r)
                        }
                        Err(_) => {
                            conn = None;
                            Outcome::Failed
                        }
                    };
                    let oi = OUTCOMES.iter().position(|(o, _)| *o == outcome).unwrap();
                    st.outcomes[oi] += 1;
                    let ki = KINDS.iter().position(|x| *x == kind).unwrap();
                    st.by_kind[ki][oi] += 1;
                    if matches!(outcome, Outcome::Malformed | Outcome::Failed)
                        && st.examples.len() < 5
                    {
                        let what = match &result {
                            Ok(r) => format!(
                                "{} status {} body {:?}",
                                kind.name(),
                                r.status,
                                String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                            ),
                            Err(e) => format!("{} io error: {e}", kind.name()),
                        };
                        st.examples.push(what);
                    }
                    i = if closed_loop {
                        next_index.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    } else {
                        i + conns
                    };
                }
                st
            })
        })
        .collect();
    let mut all = Stats::new();
    for t in threads {
        all.merge(&t.join().expect("client thread panicked"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent: u64 = all.outcomes.iter().sum();
    println!("scheduled={}", if closed_loop { sent } else { total });
    println!("sent={sent}");
    println!("elapsed_s={elapsed:.2}");
    println!("achieved_rate={:.0}", sent as f64 / elapsed);
    for (i, (_, name)) in OUTCOMES.iter().enumerate() {
        println!("{name}={}", all.outcomes[i]);
    }
    for c in 1..=5 {
        println!("class_{c}xx={}", all.classes[c]);
    }
    for (k, kind) in KINDS.iter().enumerate() {
        let parts: Vec<String> = OUTCOMES
            .iter()
            .enumerate()
            .filter(|(i, _)| all.by_kind[k][*i] > 0)
            .map(|(i, (_, n))| format!("{n}:{}", all.by_kind[k][i]))
            .collect();
        println!("kind_{}={}", kind.name(), parts.join(","));
    }
    println!("connections_opened={}", all.reconnects);
    for (p, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999")] {
        println!("latency_{name}_us={}", all.percentile_us(p));
    }
    println!("latency_max_us={}", all.max_us);
    for e in &all.examples {
        println!("example={}", e.replace('\n', "\\n"));
    }
}
