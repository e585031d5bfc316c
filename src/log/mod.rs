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
//! * **Bounded memory**: each ring is fixed (capacity x 248 bytes), the
//!   writer holds two buffers of at most ~4 x `batch_bytes` each, and the
//!   compression queue is bounded.
//! * **Disk trouble is counted, not propagated**: failed writes drop their
//!   batch ([`LogStats::write_errors`], [`LogStats::records_lost`], one
//!   stderr line per 10 s at most) and the rings keep draining.
//!
//! Request/response bodies: not logged by default. Records stay fixed-size
//! and body-free on purpose; a future opt-in body log would keep its own
//! bounded buffer and pass every body through [`redact_and_cap`] (cap the
//! size, blank out secrets) before it leaves the shard. Only that function
//! exists today.
//!
//! This module depends on std, io-uring and (for gzip of rotated files)
//! flate2, nothing else in the crate.

mod json;
mod record;
mod redact;
mod ring;
mod sample;
mod writer;

pub use json::{encode_json_line, write_json_str, write_rfc3339_micros};
pub use record::{
    AccessRecord, ClientProtocol, ErrorClass, HttpMethod, InlineStr, ModelName, Names,
    RequestIdGen, Route,
};
pub use redact::{redact_and_cap, REDACTED};
pub use ring::{log_ring, LogConsumer, LogProducer, DEFAULT_RING_CAPACITY};
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
}
