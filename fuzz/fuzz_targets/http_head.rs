#![no_main]
//! Request-head parser with arbitrary limits: data = [max_head_bytes u16 LE,
//! max_headers u8, head bytes...].
use libfuzzer_sys::fuzz_target;
use shardgate::http::request::{parse_request_head, HeadLimits, ParseStatus, RequestHead};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limits = HeadLimits {
        max_head_bytes: usize::from(u16::from_le_bytes([data[0], data[1]])),
        max_headers: usize::from(data[2]),
    };
    let buf = &data[3..];
    let mut head = RequestHead::default();
    let Ok(ParseStatus::Complete) = parse_request_head(buf, &limits, &mut head) else {
        return;
    };
    let n = head.head_len;
    assert!(n <= buf.len() && n <= limits.max_head_bytes);
    assert!(head.headers.len() <= limits.max_headers);
    for h in &head.headers {
        assert!(h.name.end as usize <= n && h.value.end as usize <= n);
        let _ = (h.name.get(buf), h.value.get(buf));
    }
    let path = head.path.get(buf);
    assert!(path.starts_with(b"/") || path == b"*", "path {path:?}");
    let _ = head.target.get(buf);
    if let Some(q) = head.query {
        assert!(q.end as usize <= n);
    }
    // The head alone parses the same: nothing after it was looked at.
    let mut again = RequestHead::default();
    assert_eq!(
        parse_request_head(&buf[..n], &limits, &mut again),
        Ok(ParseStatus::Complete)
    );
    assert_eq!(again.head_len, n);
    assert_eq!(again.framing, head.framing);
    assert_eq!(again.keep_alive, head.keep_alive);
    assert_eq!(again.headers, head.headers);
});
