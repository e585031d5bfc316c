#![no_main]
//! SSE parser fed in random splits: data = [split seed, stream...]. The
//! events (and any error) do not depend on the split.
use libfuzzer_sys::fuzz_target;
use shardgate::sse::{Parser, SseError};

mod common;

type Events = Vec<(String, Vec<u8>)>;

fn run(pieces: &[&[u8]]) -> (Events, Result<(), SseError>, bool) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    for piece in pieces {
        let r = parser.feed::<SseError>(piece, |ev| {
            events.push((ev.name.to_owned(), ev.data.clone()));
            Ok(())
        });
        if let Err(e) = r {
            return (events, Err(e), true);
        }
    }
    let mid = parser.is_mid_event();
    (events, Ok(()), mid)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let whole = run(&[input]);
    let split = run(&common::pieces(input, seed, 24));
    assert_eq!(whole, split);
    // A written event parses back to itself.
    if let Ok(name) = std::str::from_utf8(&input[..input.len().min(16)]) {
        if !name.contains(['\r', '\n']) {
            let payload = &input[input.len().min(16)..];
            if !payload.contains(&b'\r') {
                let mut out = Vec::new();
                let name = if name.is_empty() { None } else { Some(name) };
                shardgate::sse::write_event(&mut out, name, payload);
                let (events, r, mid) = run(&[&out]);
                assert_eq!(r, Ok(()));
                assert!(!mid);
                assert_eq!(events.len(), 1, "{out:?}");
                assert_eq!(events[0].1, payload);
            }
        }
    }
});
