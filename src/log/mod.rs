//! The access log: per-shard rings of fixed-size records, drained by one
//! writer thread that encodes JSON lines and writes them with io_uring.
//!
//! ```text
//!  shard 0: LogProducer::push ──► SPSC ring ──┐
//!  shard 1: LogProducer::push ──► SPSC ring ──┼─► "shardgate-log" thread:
//!  ...                                         │    drain → encode_json_line → buffer
//!  shard N: LogProducer::push ──► SPSC ring ──┘    → io_uring WRITE (double-buffered)
//!                                                  → FSYNC every second, rotation
//!                                                  → "shardgate-logz": gzip + prune
//! ```
//!
//! What it costs a request: filling an [`AccessRecord`] on the stack and
//! [`LogProducer::push`] — a 248-byte copy and one atomic store; no lock, no
//! syscall, no allocation, no formatting. When the ring is full (the disk or
//! the writer cannot keep up) the record is dropped and counted; the request
//! never waits. Formatting, writing, fsync, rotation and compression all run
//! on the writer's own threads.
//!
//! Use:
//!
//! ```no_run
//! # use shardgate::log::*;
//! let settings = LogSettings { path: "/var/log/shardgate/access.log".into(), ..Default::default() };
//! let (producers, consumers): (Vec<_>, Vec<_>) =
//!     (0..2).map(|_| log_ring(settings.ring_capacity)).unzip();
//! let names = Names { providers: vec!["openai".into()], ..Default::default() };
//! let writer = LogWriter::spawn(settings, names, consumers)?;
//! // move one producer to each shard; per request:
//! # let mut producer = producers.into_iter().next().unwrap();
//! let mut sampler = Sampler::new(sample_rate_from_env(1.0).unwrap(), 42);
//! let rec = AccessRecord { status: 200, ..Default::default() };
//! if sampler.keep(rec.is_error()) {
//!     producer.push(&rec); // false = dropped and counted
//! } else {
//!     producer.count_sampled_out();
//! }
//! // on shutdown, after the shards stopped:
//! writer.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Guarantees:
//!
//! * **Nothing lost on a clean shutdown**: [`LogWriterHandle::shutdown`]
//!   closes the rings, drains them completely, writes, fsyncs and joins.
//!   Records pushed after that are refused (`push` returns false) and
//!   counted in [`LogStats::records_dropped`].
//! * **Bounded memory**: each ring is fixed (capacity x 256 bytes, plus
//!   `body_ring_bytes` with body logging), the writer holds two buffers of
//!   at most ~4 x `batch_bytes` each (plus one line), and the compression
//!   queue is bounded.
//! * **Disk trouble is counted, not propagated**: failed writes drop their
//!   batch ([`LogStats::write_errors`], [`LogStats::records_lost`], one
//!   stderr line per 10 s at most) and the rings keep draining.
//!
//! # Body logging (off by default)
//!
//! Records stay fixed-size and body-free. When [`LogSettings::log_bodies`]
//! is on, each shard's ring also gets a bounded byte ring for bodies
//! ([`log_ring_with_bodies`], or [`LogSettings::ring`]; default
//! [`DEFAULT_BODY_RING_BYTES`] = 4 MiB per shard), and the shard logs with
//! [`LogProducer::push_with_body`]:
//!
//! ```no_run
//! # use shardgate::log::*;
//! let settings = LogSettings { log_bodies: true, ..Default::default() };
//! let (mut producer, consumer) = settings.ring();
//! let writer = LogWriter::spawn(settings.clone(), Names::default(), vec![consumer])?;
//! // Per shard, kept across requests (no allocation once warm):
//! let (mut scratch, mut req, mut resp) = (Vec::new(), Vec::new(), Vec::new());
//! // Per request:
//! # let (request_body, response_body) = (b"{}", b"{}");
//! let rec = AccessRecord { status: 200, ..Default::default() };
//! req.clear();
//! resp.clear();
//! redact_and_cap_with(request_body, settings.body_cap_bytes, &mut scratch, &mut req);
//! redact_and_cap_with(response_body, settings.body_cap_bytes, &mut scratch, &mut resp);
//! producer.push_with_body(&rec, &req, &resp);
//! # writer.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! * **Secrets**: bodies are logged exactly as pushed. Pass every body
//!   through [`redact_and_cap_with`] first (cap the size, blank out
//!   `api_key`-like values, `sk-...`, `Bearer ...`, `AIza...`); it is best
//!   effort, not a DLP filter, so body logs still deserve tight file
//!   permissions (the log is created 0640).
//! * **Format**: a record pushed with a body gets two more fields at the
//!   end of its line, `"request_body"` and `"response_body"`, JSON strings
//!   (escaped per RFC 8259, so a line stays one line; invalid UTF-8 becomes
//!   U+FFFD). Records pushed without a body have no such fields (absent,
//!   not `null`), so lines of the default configuration are unchanged.
//! * **Pairing**: the body entry is written first, then the record with a
//!   `body` flag in its ring slot (not in [`AccessRecord`], whose fields
//!   are unchanged); the writer takes the next body entry for each flagged
//!   record. Both rings are FIFO; each entry is also tagged with its
//!   record's index and checked.
//! * **Loss**: the record ring is checked first: when it is full the record
//!   and its body are dropped together ([`LogStats::records_dropped`]) and
//!   no body is ever left behind. When the record fits but the body does
//!   not (the body ring is full or the body is larger than the ring), the
//!   record is logged without the body and counted in
//!   [`LogStats::bodies_dropped`].
//! * **Cost on the shard**: redaction is one or two linear passes over at
//!   most `body_cap_bytes` of each body (plus whatever the server does to
//!   keep a capped copy of a streamed response), then `push_with_body`
//!   adds one copy of both bodies into the body ring and one `Release`
//!   store to `push` (about the cost of that `memcpy`: tens of ns for a few
//!   KiB). No lock, no syscall, and no allocation once the caller's buffers
//!   are warm; the body ring's pages are mapped lazily, so only its first
//!   lap takes page faults. On the writer: escaping the bodies (up to
//!   6 bytes out per byte in) and correspondingly larger writes and files;
//!   budget disk and `max_file_bytes` for it. Memory: `body_ring_bytes`
//!   per shard, mapped as it fills; the writer's batch buffer may exceed
//!   its cap by one line.
//!
//! This module depends on std, io-uring and (for gzip of rotated files)
//! flate2, nothing else in the crate.

mod body;
mod json;
mod record;
mod redact;
mod ring;
mod sample;
mod writer;

pub use body::DEFAULT_BODY_RING_BYTES;
pub use json::{
    encode_json_line, encode_json_line_with_bodies, write_json_bytes_lossy, write_json_str,
    write_rfc3339_micros,
};
pub use record::{
    AccessRecord, ClientProtocol, ErrorClass, HttpMethod, InlineStr, ModelName, Names,
    RequestIdGen, Route,
};
pub use redact::{redact_and_cap, redact_and_cap_with, REDACTED};
pub use ring::{
    log_ring, log_ring_with_bodies, Bodies, LogConsumer, LogProducer, DEFAULT_RING_CAPACITY,
};
pub use sample::{entropy_seed, parse_sample_rate, sample_rate_from_env, Sampler};
pub use writer::{LogSettings, LogStats, LogWriter, LogWriterHandle};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::io::Read;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn names() -> Names {
        Names {
            client_keys: vec!["alice".into(), "bob".into()],
            providers: vec!["openai".into(), "anthropic".into(), "gemini".into()],
            credentials: vec!["cred-a".into(), "cred-b".into()],
        }
    }

    fn record(shard: u16, seq: u64) -> AccessRecord {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&shard.to_be_bytes());
        id[8..].copy_from_slice(&seq.to_be_bytes());
        AccessRecord {
            timestamp_us: 1_709_210_096_000_000 + seq,
            request_id: id,
            shard,
            client_key: Some((seq % 2) as u16),
            client_protocol: ClientProtocol::OpenAiChat,
            provider: Some((seq % 3) as u16),
            credential: Some(1),
            method: HttpMethod::Post,
            route: Route::ChatCompletions,
            model_requested: ModelName::new("gpt-4o-mini"),
            model_served: ModelName::new("gpt-4o-mini-2024-07-18"),
            stream: seq % 2 == 0,
            status: 200,
            upstream_status: Some(200),
            bytes_in: 1000 + seq,
            bytes_out: 5000,
            latency_us: 123_456,
            upstream_latency_us: Some(120_000),
            ttfb_us: Some(30_000),
            input_tokens: Some(42),
            output_tokens: Some(7),
            cached_tokens: None,
            retries: 0,
            error_class: ErrorClass::None,
        }
    }

    fn test_settings(dir: &Path) -> LogSettings {
        LogSettings {
            path: dir.join("access.log"),
            poll_interval: Duration::from_millis(1),
            flush_interval: Duration::from_millis(10),
            fsync_interval: Some(Duration::from_millis(50)),
            ..Default::default()
        }
    }

    /// Pushes until accepted; returns how many pushes were refused.
    fn push_retry(p: &mut LogProducer, r: &AccessRecord) -> u64 {
        let mut refused = 0;
        while !p.push(r) {
            refused += 1;
            std::thread::yield_now();
        }
        refused
    }

    fn lines_of(bytes: &[u8]) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Every rotated file beside `path` (decompressed) plus the live file.
    fn all_lines(path: &Path) -> (Vec<serde_json::Value>, Vec<String>) {
        let dir = path.parent().unwrap();
        let mut rotated: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("access.log."))
            .collect();
        rotated.sort_by_key(|n| writer::rotated_key("access.log", n).unwrap());
        let mut lines = Vec::new();
        for n in &rotated {
            let raw = fs::read(dir.join(n)).unwrap();
            let bytes = if n.ends_with(".gz") {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            } else {
                raw
            };
            lines.extend(lines_of(&bytes));
        }
        lines.extend(lines_of(&fs::read(path).unwrap()));
        (lines, rotated)
    }

    fn check_complete(lines: &[serde_json::Value], shards: u16, per_shard: u64) {
        assert_eq!(lines.len() as u64, shards as u64 * per_shard);
        let mut next: HashMap<u64, u64> = HashMap::new();
        for v in lines {
            let shard = v["shard"].as_u64().unwrap();
            let seq = v["bytes_in"].as_u64().unwrap() - 1000;
            let want = next.entry(shard).or_insert(0);
            assert_eq!(seq, *want, "shard {shard}: order, loss or duplicate");
            *want += 1;
            assert_eq!(v["model"], "gpt-4o-mini");
            assert_eq!(v["credential"], "cred-b");
        }
        for s in 0..shards as u64 {
            assert_eq!(next.get(&s).copied().unwrap_or(0), per_shard);
        }
    }

    #[test]
    fn end_to_end_two_producers_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            ring_capacity: 1024,
            max_file_bytes: u64::MAX,
            ..test_settings(dir.path())
        };
        let path = settings.path.clone();
        let (producers, consumers): (Vec<_>, Vec<_>) =
            (0..2).map(|_| log_ring(settings.ring_capacity)).unzip();
        let writer = LogWriter::spawn(settings, names(), consumers).unwrap();
        let stats = writer.stats();
        const N: u64 = 50_000;
        let threads: Vec<_> = producers
            .into_iter()
            .enumerate()
            .map(|(shard, mut p)| {
                std::thread::spawn(move || {
                    let mut refused = 0;
                    for seq in 0..N {
                        refused += push_retry(&mut p, &record(shard as u16, seq));
                    }
                    (p, refused)
                })
            })
            .collect();
        let mut producers = Vec::new();
        let mut refused = 0;
        for t in threads {
            let (p, r) = t.join().unwrap();
            producers.push(p);
            refused += r;
        }
        writer.shutdown();
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 2 * N);
        assert_eq!(stats.records_dropped(), refused);
        assert_eq!(stats.write_errors.load(Ordering::Relaxed), 0);
        assert_eq!(stats.records_lost.load(Ordering::Relaxed), 0);
        let file = fs::read(&path).unwrap();
        assert_eq!(
            stats.bytes_written.load(Ordering::Relaxed),
            file.len() as u64
        );
        check_complete(&lines_of(&file), 2, N);
        assert!(stats.fsyncs.load(Ordering::Relaxed) >= 1);
        assert_eq!(stats.usage(), vec![0, 0]);

        // After shutdown, pushes are refused and counted.
        let before = stats.records_dropped();
        assert!(!producers[0].push(&record(0, 0)));
        assert_eq!(stats.records_dropped(), before + 1);
    }

    /// Shutdown while a producer keeps pushing: every record is either
    /// written or counted as dropped, and the file holds a gapless prefix.
    #[test]
    fn shutdown_with_live_producer_accounts_for_everything() {
        let dir = tempfile::tempdir().unwrap();
        let settings = test_settings(dir.path());
        let path = settings.path.clone();
        let (mut p, c) = log_ring(256);
        let writer = LogWriter::spawn(settings, names(), vec![c]).unwrap();
        let stats = writer.stats();
        let done = Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        let producer = std::thread::spawn(move || {
            let (mut attempted, mut accepted) = (0u64, 0u64);
            while !done2.load(Ordering::Relaxed) {
                if p.push(&record(0, attempted)) {
                    accepted += 1;
                }
                attempted += 1;
                if attempted % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            (attempted, accepted)
        });
        std::thread::sleep(Duration::from_millis(30));
        writer.shutdown();
        std::thread::sleep(Duration::from_millis(10));
        done.store(true, Ordering::Relaxed);
        let (attempted, accepted) = producer.join().unwrap();
        let written = stats.records_written.load(Ordering::Relaxed);
        assert!(written > 0);
        assert!(written <= accepted);
        assert_eq!(written + stats.records_dropped(), attempted);
        let lines = lines_of(&fs::read(&path).unwrap());
        assert_eq!(lines.len() as u64, written);
        // Pushes refused for a full ring skip sequence numbers, so only
        // check order here.
        let seqs: Vec<u64> = lines
            .iter()
            .map(|v| v["bytes_in"].as_u64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn shutdown_right_after_push_flushes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            flush_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(60),
            ..test_settings(dir.path())
        };
        let path = settings.path.clone();
        let (mut p, c) = log_ring(4096);
        let writer = LogWriter::spawn(settings, names(), vec![c]).unwrap();
        for seq in 0..3000 {
            assert!(p.push(&record(0, seq)));
        }
        let t = Instant::now();
        writer.shutdown();
        assert!(t.elapsed() < Duration::from_secs(5), "shutdown must unpark");
        check_complete(&lines_of(&fs::read(&path).unwrap()), 1, 3000);
    }

    #[test]
    fn appends_to_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = test_settings(dir.path());
        let path = settings.path.clone();
        for round in 0..2 {
            let (mut p, c) = log_ring(64);
            let writer = LogWriter::spawn(settings.clone(), names(), vec![c]).unwrap();
            for seq in 0..10 {
                push_retry(&mut p, &record(0, round * 10 + seq));
            }
            writer.shutdown();
        }
        check_complete(&lines_of(&fs::read(&path).unwrap()), 1, 20);
    }

    fn rotation_run(compress: bool, keep: usize, n: u64) -> (tempfile::TempDir, LogSettings) {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            max_file_bytes: 64 * 1024,
            batch_bytes: 8 * 1024,
            compress,
            keep,
            ..test_settings(dir.path())
        };
        let (mut p, c) = log_ring(256);
        let writer = LogWriter::spawn(settings.clone(), names(), vec![c]).unwrap();
        let stats = writer.stats();
        for seq in 0..n {
            push_retry(&mut p, &record(0, seq));
        }
        writer.shutdown();
        assert_eq!(stats.records_written.load(Ordering::Relaxed), n);
        assert!(stats.rotations.load(Ordering::Relaxed) >= 10);
        (dir, settings)
    }

    #[test]
    fn rotation_by_size_loses_nothing() {
        let (_dir, settings) = rotation_run(false, 1000, 5000);
        let (lines, rotated) = all_lines(&settings.path);
        check_complete(&lines, 1, 5000);
        assert!(rotated.len() >= 10);
        for n in &rotated {
            let size = fs::metadata(settings.path.parent().unwrap().join(n))
                .unwrap()
                .len();
            // Never larger than the limit plus one batch (hard cap 64 KiB).
            assert!(size <= 64 * 1024 + 64 * 1024 + 4096, "{n}: {size}");
            assert!(!n.ends_with(".gz"));
        }
    }

    #[test]
    fn rotation_keeps_only_keep() {
        let (_dir, settings) = rotation_run(false, 3, 5000);
        let (lines, rotated) = all_lines(&settings.path);
        assert_eq!(rotated.len(), 3, "{rotated:?}");
        // The newest records survive, in order, up to the end.
        let last = lines.last().unwrap();
        assert_eq!(last["bytes_in"], 1000 + 4999);
    }

    #[test]
    fn rotation_gzip_is_valid() {
        let (_dir, settings) = rotation_run(true, 1000, 5000);
        let (lines, rotated) = all_lines(&settings.path);
        check_complete(&lines, 1, 5000);
        assert!(rotated.iter().all(|n| n.ends_with(".gz")), "{rotated:?}");
        // Compressed at least 3x.
        let dir = settings.path.parent().unwrap();
        let gz_total: u64 = rotated
            .iter()
            .map(|n| fs::metadata(dir.join(n)).unwrap().len())
            .sum();
        assert!(
            gz_total * 3 < rotated.len() as u64 * 64 * 1024,
            "{gz_total}"
        );
    }

    #[test]
    fn daily_rotation_of_yesterdays_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            compress: false,
            ..test_settings(dir.path())
        };
        let path = settings.path.clone();
        let mut old = Vec::new();
        encode_json_line(&record(0, 0), &names(), &mut old);
        fs::write(&path, &old).unwrap();
        let yesterday = std::time::SystemTime::now() - Duration::from_secs(86_400 + 60);
        fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(yesterday)
            .unwrap();
        let (mut p, c) = log_ring(64);
        let writer = LogWriter::spawn(settings, names(), vec![c]).unwrap();
        let stats = writer.stats();
        push_retry(&mut p, &record(0, 1));
        writer.shutdown();
        assert_eq!(stats.rotations.load(Ordering::Relaxed), 1);
        let (lines, rotated) = all_lines(&path);
        assert_eq!(rotated.len(), 1);
        check_complete(&lines, 1, 2);
        assert_eq!(lines_of(&fs::read(&path).unwrap()).len(), 1);
    }

    #[test]
    fn write_errors_counted_and_rings_keep_draining() {
        // /dev/full: every write fails with ENOSPC.
        let settings = LogSettings {
            path: "/dev/full".into(),
            poll_interval: Duration::from_millis(1),
            flush_interval: Duration::from_millis(1),
            batch_bytes: 4096,
            ..Default::default()
        };
        let (mut p, c) = log_ring(64);
        let writer = LogWriter::spawn(settings, names(), vec![c]).unwrap();
        let stats = writer.stats();
        // Push far more than the ring holds: the writer must keep draining
        // despite every write failing, so pushes keep being accepted.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut accepted = 0u64;
        let mut seq = 0;
        while accepted < 20_000 && Instant::now() < deadline {
            if p.push(&record(0, seq)) {
                accepted += 1;
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
            seq += 1;
        }
        assert_eq!(accepted, 20_000, "ring got stuck");
        writer.shutdown();
        let errors = stats.write_errors.load(Ordering::Relaxed);
        assert!(errors > 0);
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 0);
        assert_eq!(stats.bytes_written.load(Ordering::Relaxed), 0);
        assert_eq!(stats.records_lost.load(Ordering::Relaxed), accepted);
        assert_eq!(stats.rotations.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sampled_out_and_usage_visible_in_stats() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            poll_interval: Duration::from_secs(60),
            ..test_settings(dir.path())
        };
        let (mut p0, c0) = log_ring(16);
        let (mut p1, c1) = log_ring(16);
        let mut sampler = Sampler::new(0.0, 1);
        // Start the writer, give it a moment to park in its (long) poll.
        let writer = LogWriter::spawn(settings, names(), vec![c0, c1]).unwrap();
        let stats = writer.stats();
        std::thread::sleep(Duration::from_millis(50));
        for seq in 0..5 {
            let r = record(1, seq);
            if sampler.keep(r.is_error()) {
                p1.push(&r);
            } else {
                p1.count_sampled_out();
            }
        }
        let mut err = record(0, 0);
        err.status = 502;
        err.error_class = ErrorClass::UpstreamTimeout;
        assert!(sampler.keep(err.is_error()));
        assert!(p0.push(&err));
        assert_eq!(stats.records_sampled_out(), 5);
        assert_eq!(stats.ring_count(), 2);
        assert_eq!(stats.ring_usage(0), 1);
        assert_eq!(stats.ring_usage(1), 0);
        writer.shutdown();
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 1);
        assert_eq!(stats.ring_usage(0), 0);
    }

    /// The deterministic body of record `seq` (varied sizes, JSON-hostile
    /// bytes included).
    fn body_of(seq: u64, which: u8) -> Vec<u8> {
        let len = (seq.wrapping_mul(7919) % 1500) as usize;
        let alphabet = b"ab\"\\\n{}:x\t\x01";
        (0..len)
            .map(|i| alphabet[(i as u64 + seq + which as u64) as usize % alphabet.len()])
            .collect()
    }

    fn str_field<'a>(v: &'a serde_json::Value, k: &str) -> Option<&'a str> {
        v.as_object().unwrap().get(k).map(|x| x.as_str().unwrap())
    }

    #[test]
    fn bodies_roundtrip_to_file_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            log_bodies: true,
            ..test_settings(dir.path())
        };
        let path = settings.path.clone();
        let (mut p, c) = settings.ring();
        assert!(p.has_body_ring());
        let writer = LogWriter::spawn(settings.clone(), names(), vec![c]).unwrap();
        let stats = writer.stats();
        let request = br#"{"model":"gpt-4o","api_key":"sk-proj-TOPSECRET0123456789","messages":[{"role":"user","content":"say \"hi\"\nplease"}]}"#;
        let response = b"data: {\"choices\":[{\"delta\":{\"content\":\"Bearer abc.def-ghi\"}}]}\n\ndata: [DONE]\n\n\xff";
        let (mut scratch, mut req, mut resp) = (Vec::new(), Vec::new(), Vec::new());
        let cap = settings.body_cap_bytes;
        redact_and_cap_with(request, cap, &mut scratch, &mut req);
        redact_and_cap_with(response, cap, &mut scratch, &mut resp);
        assert!(p.push_with_body(&record(0, 0), &req, &resp));
        assert!(p.push(&record(0, 1)));
        // A small cap: the body is cut, and the cut secret still redacted.
        req.clear();
        resp.clear();
        redact_and_cap_with(request, 40, &mut scratch, &mut req);
        redact_and_cap_with(b"", 40, &mut scratch, &mut resp);
        assert!(p.push_with_body(&record(0, 2), &req, &resp));
        writer.shutdown();

        let file = fs::read(&path).unwrap();
        for secret in [&b"TOPSECRET"[..], b"sk-proj", b"abc.def"] {
            assert!(
                !file.windows(secret.len()).any(|w| w == secret),
                "{} leaked",
                String::from_utf8_lossy(secret)
            );
        }
        let lines = lines_of(&file);
        check_complete(&lines, 1, 3);
        let body0 = str_field(&lines[0], "request_body").unwrap();
        let v: serde_json::Value = serde_json::from_str(body0).unwrap();
        assert_eq!(v["api_key"], "[REDACTED]");
        assert_eq!(v["messages"][0]["content"], "say \"hi\"\nplease");
        let resp0 = str_field(&lines[0], "response_body").unwrap();
        assert!(resp0.starts_with("data: {"));
        assert!(resp0.contains("[REDACTED]"));
        assert!(resp0.ends_with("data: [DONE]\n\n\u{FFFD}"));
        // No body: no body fields at all.
        assert!(lines[1].get("request_body").is_none());
        assert!(lines[1].get("response_body").is_none());
        let cut = str_field(&lines[2], "request_body").unwrap();
        assert!(cut.len() <= 40, "{cut}");
        assert!(cut.starts_with("{\"model\":\"gpt-4o\",\"api_key\":\"[RED"));
        assert_eq!(str_field(&lines[2], "response_body"), Some(""));
        assert_eq!(stats.bodies_dropped(), 0);
        assert_eq!(stats.records_written.load(Ordering::Relaxed), 3);
        assert_eq!(stats.body_ring_usage(0), 0);
        assert_eq!(stats.body_ring_capacity(0), DEFAULT_BODY_RING_BYTES);
    }

    #[test]
    fn body_ring_full_logs_record_without_body() {
        let dir = tempfile::tempdir().unwrap();
        let settings = test_settings(dir.path());
        let path = settings.path.clone();
        // 4 KiB: four entries of 16 + 1000 + 8 bytes fill it. No writer yet,
        // so nothing drains.
        let (mut p, c) = log_ring_with_bodies(64, 4096);
        assert_eq!(p.body_capacity(), 4096);
        let big = vec![b'z'; 1000];
        for seq in 0..6 {
            assert!(p.push_with_body(&record(0, seq), &big, b"response"));
        }
        assert_eq!(p.usage(), 6);
        assert_eq!(p.body_usage(), 4096);
        assert_eq!(p.bodies_dropped(), 2);
        assert_eq!(p.dropped(), 0);
        // Larger than the whole ring: never fits.
        let huge = vec![b'h'; 5000];
        assert!(p.push_with_body(&record(0, 6), &huge, b""));
        assert_eq!(p.bodies_dropped(), 3);
        let writer = LogWriter::spawn(settings, names(), vec![c]).unwrap();
        let stats = writer.stats();
        writer.shutdown();
        assert_eq!(stats.bodies_dropped(), 3);
        assert_eq!(stats.records_dropped(), 0);
        let lines = lines_of(&fs::read(&path).unwrap());
        check_complete(&lines, 1, 7);
        for (i, v) in lines.iter().enumerate() {
            if i < 4 {
                assert_eq!(str_field(v, "request_body").unwrap().as_bytes(), &big[..]);
                assert_eq!(str_field(v, "response_body"), Some("response"));
            } else {
                assert!(v.get("request_body").is_none(), "line {i}");
                assert!(v.get("response_body").is_none(), "line {i}");
            }
        }

        // A ring without a body ring: the record goes, the body is counted.
        let (mut p, _c) = log_ring(8);
        assert!(!p.has_body_ring());
        assert!(p.push_with_body(&record(0, 0), b"req", b"resp"));
        assert_eq!(p.usage(), 1);
        assert_eq!(p.bodies_dropped(), 1);
    }

    /// A full record ring refuses the record before writing the body, so
    /// the body ring never holds a body without its record and the pairing
    /// stays right afterwards.
    #[test]
    fn record_ring_full_leaves_no_orphan_body() {
        let (mut p, mut c) = log_ring_with_bodies(2, 4096);
        assert!(p.push_with_body(&record(0, 0), b"r0", b"s0"));
        assert!(p.push_with_body(&record(0, 1), b"r1", b"s1"));
        let used = p.body_usage();
        assert!(!p.push_with_body(&record(0, 2), b"r2", b"s2"));
        assert_eq!(p.dropped(), 1);
        assert_eq!(p.bodies_dropped(), 0);
        assert_eq!(p.body_usage(), used);
        let mut got = Vec::new();
        type Got = Vec<(u64, Option<(Vec<u8>, Vec<u8>)>)>;
        let take = |c: &mut LogConsumer, got: &mut Got| {
            c.drain_with_bodies(usize::MAX, |r, b| {
                got.push((
                    r.bytes_in - 1000,
                    b.map(|b| (b.request.to_vec(), b.response.to_vec())),
                ))
            })
        };
        assert_eq!(take(&mut c, &mut got), 2);
        assert!(p.push_with_body(&record(0, 3), b"r3", b"s3"));
        assert!(p.push(&record(0, 4)));
        // pop() and drain() skip the bodies but keep the pairing.
        assert_eq!(c.pop().unwrap().bytes_in, 1003);
        assert!(p.push_with_body(&record(0, 5), b"r5", b"s5"));
        assert_eq!(take(&mut c, &mut got), 2);
        let want = |s: u64| Some((format!("r{s}").into_bytes(), format!("s{s}").into_bytes()));
        assert_eq!(
            got,
            vec![(0, want(0)), (1, want(1)), (4, None), (5, want(5))]
        );
        assert_eq!(p.body_usage(), 0);
        assert_eq!(p.bodies_dropped(), 0);
    }

    /// Many records with bodies of varied sizes from a producer thread
    /// through a small body ring (it wraps hundreds of times) to the file:
    /// every record is logged in order, and each one either carries exactly
    /// its own bodies or none, with the latter counted.
    #[test]
    fn body_ring_wraps_under_a_producer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            max_file_bytes: u64::MAX,
            ..test_settings(dir.path())
        };
        let path = settings.path.clone();
        let (mut p, c) = log_ring_with_bodies(256, 16 * 1024);
        let writer = LogWriter::spawn(settings, names(), vec![c]).unwrap();
        let stats = writer.stats();
        const N: u64 = 20_000;
        let producer = std::thread::spawn(move || {
            let mut bytes = 0u64;
            for seq in 0..N {
                let (a, b) = (body_of(seq, 0), body_of(seq, 1));
                while !p.push_with_body(&record(0, seq), &a, &b) {
                    std::thread::yield_now();
                }
                bytes += (a.len() + b.len()) as u64;
            }
            (p, bytes)
        });
        let (p, bytes) = producer.join().unwrap();
        writer.shutdown();
        assert!(bytes > 1000 * 16 * 1024, "{bytes}");
        let lines = lines_of(&fs::read(&path).unwrap());
        check_complete(&lines, 1, N);
        let mut with = 0u64;
        for v in &lines {
            let seq = v["bytes_in"].as_u64().unwrap() - 1000;
            match (str_field(v, "request_body"), str_field(v, "response_body")) {
                (Some(a), Some(b)) => {
                    assert_eq!(a.as_bytes(), &body_of(seq, 0)[..], "seq {seq}");
                    assert_eq!(b.as_bytes(), &body_of(seq, 1)[..], "seq {seq}");
                    with += 1;
                }
                (None, None) => {}
                other => panic!("seq {seq}: {other:?}"),
            }
        }
        assert_eq!(with + stats.bodies_dropped(), N);
        assert_eq!(p.bodies_dropped(), stats.bodies_dropped());
        assert!(with > N / 10, "only {with} bodies attached");
        assert_eq!(stats.body_ring_usage(0), 0);
    }

    #[test]
    fn shutdown_drains_records_and_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let settings = LogSettings {
            flush_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(60),
            ..test_settings(dir.path())
        };
        let path = settings.path.clone();
        let (mut p, c) = log_ring_with_bodies(4096, 8 << 20);
        let writer = LogWriter::spawn(settings, names(), vec![c]).unwrap();
        let stats = writer.stats();
        const N: u64 = 3000;
        for seq in 0..N {
            assert!(p.push_with_body(&record(0, seq), &body_of(seq, 0), &body_of(seq, 1)));
        }
        assert_eq!(p.bodies_dropped(), 0);
        let t = Instant::now();
        writer.shutdown();
        assert!(t.elapsed() < Duration::from_secs(5), "shutdown must unpark");
        let lines = lines_of(&fs::read(&path).unwrap());
        check_complete(&lines, 1, N);
        for (seq, v) in lines.iter().enumerate() {
            let seq = seq as u64;
            assert_eq!(
                str_field(v, "request_body").unwrap().as_bytes(),
                &body_of(seq, 0)[..]
            );
            assert_eq!(
                str_field(v, "response_body").unwrap().as_bytes(),
                &body_of(seq, 1)[..]
            );
        }
        assert_eq!(stats.body_ring_usage(0), 0);
        assert_eq!(stats.ring_usage(0), 0);
        assert_eq!(stats.bodies_dropped(), 0);
        // After shutdown, pushes with bodies are refused like pushes.
        assert!(!p.push_with_body(&record(0, N), b"a", b"b"));
        assert_eq!(stats.records_dropped(), 1);
        assert_eq!(p.body_usage(), 0);
    }

    #[test]
    fn body_settings_validated() {
        let dir = tempfile::tempdir().unwrap();
        let ok = LogSettings {
            log_bodies: true,
            ..test_settings(dir.path())
        };
        let (p, _c) = ok.ring();
        assert_eq!(p.body_capacity(), DEFAULT_BODY_RING_BYTES);
        for bad in [
            LogSettings {
                body_cap_bytes: 0,
                ..ok.clone()
            },
            LogSettings {
                body_ring_bytes: 64 * 1024,
                body_cap_bytes: 16 * 1024,
                ..ok.clone()
            },
        ] {
            let e = LogWriter::spawn(bad, names(), vec![]).err().unwrap();
            assert!(e.to_string().contains("body"), "{e}");
        }
        // Off: the body knobs are not checked and rings carry no body ring.
        let off = LogSettings {
            body_cap_bytes: 0,
            ..test_settings(dir.path())
        };
        assert!(!off.ring().0.has_body_ring());
        LogWriter::spawn(off, names(), vec![]).unwrap().shutdown();
    }
}
