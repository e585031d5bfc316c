//! Benchmarks of the access log: what a request pays to log (a push into its
//! shard's ring, with the writer's consumer draining on another core), what
//! the writer pays per record (JSON encoding), and the whole pipeline's
//! throughput to a file (rings -> writer thread -> io_uring -> tempfile).
//!
//! Run with `cargo bench --bench log_ring`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate::log::{
    encode_json_line, log_ring, AccessRecord, ClientProtocol, ErrorClass, HttpMethod, LogConsumer,
    LogProducer, LogSettings, LogWriter, ModelName, Names, RequestIdGen, Route,
    DEFAULT_RING_CAPACITY,
};

fn names() -> Names {
    Names {
        client_keys: vec!["team-frontend".into(), "ci".into()],
        providers: vec!["openai".into(), "anthropic".into(), "gemini-cli".into()],
        credentials: vec!["openai-key-3".into(), "oauth/gemini-cli-1.json".into()],
    }
}

/// A typical streamed chat request.
fn record(seq: u64, ids: &mut RequestIdGen) -> AccessRecord {
    AccessRecord {
        timestamp_us: 1_750_000_000_000_000 + seq * 37,
        request_id: ids.next_id(),
        shard: 0,
        client_key: Some(0),
        client_protocol: ClientProtocol::Anthropic,
        provider: Some(1),
        credential: Some(1),
        method: HttpMethod::Post,
        route: Route::Messages,
        model_requested: ModelName::new("claude-sonnet-4-20250514"),
        model_served: ModelName::new("claude-sonnet-4-20250514"),
        stream: true,
        status: 200,
        upstream_status: Some(200),
        bytes_in: 18_734,
        bytes_out: 4_210,
        latency_us: 2_345_678,
        upstream_latency_us: Some(2_300_000),
        ttfb_us: Some(412_000),
        input_tokens: Some(5_120),
        output_tokens: Some(312),
        cached_tokens: Some(4_096),
        retries: 0,
        error_class: ErrorClass::None,
    }
}

/// Pushes `iters` records into `producer`, retrying when the ring is full.
fn push_all(producer: &mut LogProducer, rec: &AccessRecord, iters: u64) -> Duration {
    let mut r = *rec;
    let t = Instant::now();
    for i in 0..iters {
        r.timestamp_us = i;
        while !producer.push(black_box(&r)) {
            std::hint::spin_loop();
        }
    }
    t.elapsed()
}

/// A consumer thread that copies every record out (as the encoder reads
/// them). `batched`: like the writer, it drains in batches and naps when it
/// found little (50 us here; the writer sleeps `poll_interval`, 5 ms), so
/// it reads lines the producer wrote a while ago. Not batched: it spins on
/// the ring and reads each record right behind the producer, the worst case
/// for cache-line traffic.
fn spawn_consumer(mut consumer: LogConsumer, batched: bool) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let join = std::thread::spawn(move || {
        let mut sum = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let n = consumer.drain(4096, |r| {
                let copy = *black_box(r);
                sum = sum.wrapping_add(copy.timestamp_us);
            });
            if batched && n < 256 {
                std::thread::sleep(Duration::from_micros(50));
            } else if n == 0 {
                std::hint::spin_loop();
            }
        }
        black_box(sum);
    });
    (stop, join)
}

/// Push into one default-size ring while a consumer thread drains it. A
/// push that finds the ring full is retried, so these are sustained rates.
fn bench_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));
    let mut ids = RequestIdGen::new(0, 1);
    let rec = record(1, &mut ids);
    for (name, batched) in [
        ("push_with_consumer", true),
        ("push_with_spinning_consumer", false),
    ] {
        let (mut producer, consumer) = log_ring(DEFAULT_RING_CAPACITY);
        let (stop, join) = spawn_consumer(consumer, batched);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| push_all(&mut producer, &rec, iters))
        });
        stop.store(true, Ordering::Relaxed);
        join.join().unwrap();
    }

    // The request-path cost alone: push with room to spare (the consumer is
    // the same thread and empties the ring between timed bursts).
    let (mut producer, mut consumer) = log_ring(DEFAULT_RING_CAPACITY);
    g.bench_function("push_uncontended", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut r = rec;
            while left > 0 {
                let burst = left.min(DEFAULT_RING_CAPACITY as u64);
                let t = Instant::now();
                for i in 0..burst {
                    r.timestamp_us = i;
                    black_box(producer.push(black_box(&r)));
                }
                total += t.elapsed();
                consumer.drain(usize::MAX, |r| {
                    black_box(r);
                });
                left -= burst;
            }
            total
        })
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let names = names();
    let mut ids = RequestIdGen::new(0, 1);
    let rec = record(1, &mut ids);
    let mut out = Vec::with_capacity(1024);
    encode_json_line(&rec, &names, &mut out);
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_line", |b| {
        b.iter(|| {
            out.clear();
            encode_json_line(black_box(&rec), black_box(&names), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// Records pushed by one producer (retrying when full) through the writer
/// into a tempfile, shutdown (final drain, write, fsync) included.
fn bench_writer(c: &mut Criterion) {
    let mut g = c.benchmark_group("writer");
    let names = names();
    let mut ids = RequestIdGen::new(0, 1);
    let rec = record(1, &mut ids);
    let mut line = Vec::new();
    encode_json_line(&rec, &names, &mut line);
    g.throughput(Throughput::Bytes(line.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("end_to_end_tempfile", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let settings = LogSettings {
                path: dir.path().join("access.log"),
                max_file_bytes: u64::MAX,
                ..Default::default()
            };
            let (mut producer, consumer) = log_ring(settings.ring_capacity);
            let writer = LogWriter::spawn(settings, names.clone(), vec![consumer]).unwrap();
            let stats = writer.stats();
            let mut r = rec;
            let t = Instant::now();
            for i in 0..iters {
                r.timestamp_us = 1_750_000_000_000_000 + i;
                while !producer.push(&r) {
                    std::thread::yield_now();
                }
            }
            writer.shutdown();
            let elapsed = t.elapsed();
            assert_eq!(
                stats.records_written.load(Ordering::Relaxed),
                iters,
                "records lost"
            );
            elapsed
        })
    });
    g.finish();
}

criterion_group!(benches, bench_push, bench_encode, bench_writer);
criterion_main!(benches);
