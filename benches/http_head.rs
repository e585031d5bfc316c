//! Benchmarks of the HTTP/1.1 codec's hot paths: parsing a realistic
//! request head (what every client request costs before routing) and
//! decoding a chunked body (what a streamed upload or upstream answer costs).
//!
//! Run with `cargo bench --bench http_head`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate::http::chunked::{encode_chunk, LAST_CHUNK};
use shardgate::http::{
    parse_request_head, parse_response_head, ChunkedDecoder, HeadLimits, Method, ParseStatus,
    RequestHead, ResponseHead,
};

/// A chat-completions request head as the official openai-python SDK sends
/// it (header order and x-stainless-* fields included), with a fake key.
const OPENAI_CHAT_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: api.openai.com\r\n\
Accept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\n\
Accept: application/json\r\n\
Content-Type: application/json\r\n\
User-Agent: OpenAI/Python 1.54.4\r\n\
X-Stainless-Lang: python\r\n\
X-Stainless-Package-Version: 1.54.4\r\n\
X-Stainless-OS: Linux\r\n\
X-Stainless-Arch: x64\r\n\
X-Stainless-Runtime: CPython\r\n\
X-Stainless-Runtime-Version: 3.12.3\r\n\
Authorization: Bearer sk-proj-4f2a9c7e1b8d3f6a0e5c2b9d7a4f1e8c3b6d9a2f5e8c1b4d7a0f3e6c9b2d5a8f\r\n\
X-Stainless-Async: false\r\n\
x-stainless-retry-count: 0\r\n\
Content-Length: 187\r\n\
\r\n";

/// A typical streaming answer head from an upstream provider.
const SSE_RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 05 Nov 2024 10:00:00 GMT\r\n\
Content-Type: text/event-stream; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\n\
Connection: keep-alive\r\n\
openai-organization: org-abc123\r\n\
openai-processing-ms: 212\r\n\
openai-version: 2020-10-01\r\n\
x-request-id: req_8f2c1a9e7b3d4f6a\r\n\
\r\n";

fn bench_heads(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let mut group = c.benchmark_group("http_head");

    group.throughput(Throughput::Bytes(OPENAI_CHAT_HEAD.len() as u64));
    // One head reused across iterations, as on a keep-alive connection: the
    // steady state does not allocate.
    let mut head = RequestHead::default();
    group.bench_function("parse_request_openai_chat", |b| {
        b.iter(|| {
            let status = parse_request_head(black_box(OPENAI_CHAT_HEAD), &limits, &mut head);
            assert_eq!(status, Ok(ParseStatus::Complete));
            black_box(&head);
        })
    });

    // The same head arriving in two reads: the first parse is Partial.
    let split = OPENAI_CHAT_HEAD.len() / 2;
    group.bench_function("parse_request_openai_chat_two_reads", |b| {
        b.iter(|| {
            let first =
                parse_request_head(black_box(&OPENAI_CHAT_HEAD[..split]), &limits, &mut head);
            assert_eq!(first, Ok(ParseStatus::Partial));
            let second = parse_request_head(black_box(OPENAI_CHAT_HEAD), &limits, &mut head);
            assert_eq!(second, Ok(ParseStatus::Complete));
            black_box(&head);
        })
    });

    group.throughput(Throughput::Bytes(SSE_RESPONSE_HEAD.len() as u64));
    let mut response = ResponseHead::default();
    group.bench_function("parse_response_sse", |b| {
        b.iter(|| {
            let status = parse_response_head(
                black_box(SSE_RESPONSE_HEAD),
                &limits,
                Method::Post,
                &mut response,
            );
            assert_eq!(status, Ok(ParseStatus::Complete));
            black_box(&response);
        })
    });
    group.finish();
}

fn bench_chunked(c: &mut Criterion) {
    // 40 KB of body in 1 KB chunks.
    let body: Vec<u8> = (0..40 * 1024).map(|i| (i % 251) as u8).collect();
    let mut wire = Vec::new();
    for chunk in body.chunks(1024) {
        encode_chunk(&mut wire, chunk);
    }
    wire.extend_from_slice(LAST_CHUNK);

    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("decode_40k_in_1k_chunks", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new();
            let mut total = 0;
            let p = dec.decode(black_box(&wire), |d| total += d.len()).unwrap();
            assert!(p.done);
            black_box(total)
        })
    });

    // The same body as it arrives from a socket: 1448-byte TCP segments
    // (Ethernet MSS with timestamps), so chunk boundaries straddle reads.
    group.bench_function("decode_40k_in_1k_chunks_mss_reads", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new();
            let mut total = 0;
            for segment in black_box(&wire).chunks(1448) {
                let p = dec.decode(segment, |d| total += d.len()).unwrap();
                debug_assert_eq!(p.consumed, segment.len());
            }
            assert!(dec.is_done());
            black_box(total)
        })
    });

    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("encode_40k_in_1k_chunks", |b| {
        let mut out = Vec::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            for chunk in black_box(&body).chunks(1024) {
                encode_chunk(&mut out, chunk);
            }
            out.extend_from_slice(LAST_CHUNK);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_heads, bench_chunked);
criterion_main!(benches);
