#![no_main]
//! Upstream response-head parser: data = [max_head_bytes u16 LE,
//! max_headers u8, request method u8, head bytes...].
use libfuzzer_sys::fuzz_target;
use shardgate::http::request::{HeadLimits, Method, ParseStatus};
use shardgate::http::response::{parse_response_head, ResponseHead};

const METHODS: [Method; 8] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Options,
    Method::Patch,
    Method::Other,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let limits = HeadLimits {
        max_head_bytes: usize::from(u16::from_le_bytes([data[0], data[1]])),
        max_headers: usize::from(data[2]),
    };
    let method = METHODS[usize::from(data[3]) % METHODS.len()];
    let buf = &data[4..];
    let mut head = ResponseHead::default();
    let Ok(ParseStatus::Complete) = parse_response_head(buf, &limits, method, &mut head) else {
        return;
    };
    let n = head.head_len;
    assert!(n <= buf.len() && n <= limits.max_head_bytes);
    assert!(head.headers.len() <= limits.max_headers);
    assert!((100..=999).contains(&head.status));
    let _ = head.reason.get(buf);
    for h in &head.headers {
        assert!(h.name.end as usize <= n && h.value.end as usize <= n);
    }
    let mut again = ResponseHead::default();
    assert_eq!(
        parse_response_head(&buf[..n], &limits, method, &mut again),
        Ok(ParseStatus::Complete)
    );
    assert_eq!(again.head_len, n);
    assert_eq!(again.framing, head.framing);
    assert_eq!(again.status, head.status);
    assert_eq!(again.headers, head.headers);
});
