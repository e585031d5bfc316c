#![no_main]
//! Chunked decoder fed in random splits: data = [split seed, body...].
//! It never consumes more than it is given, and the split decode equals the
//! one-shot decode (data, error, where the body ends).
use libfuzzer_sys::fuzz_target;
use shardgate::http::chunked::{ChunkedDecoder, ChunkedError};

mod common;

/// (body, result: Ok(consumed when done / None) or the error)
fn decode_split(input: &[u8], seed: Option<u8>) -> (Vec<u8>, Result<Option<usize>, ChunkedError>) {
    let mut dec = ChunkedDecoder::new();
    let mut body = Vec::new();
    let pieces = match seed {
        Some(s) => common::pieces(input, s, 32),
        None => vec![input],
    };
    let mut offset = 0;
    for piece in pieces {
        match dec.decode(piece, |d| {
            assert!(!d.is_empty(), "on_data got an empty slice");
            body.extend_from_slice(d)
        }) {
            Ok(p) => {
                assert!(p.consumed <= piece.len(), "consumed more than given");
                assert_eq!(p.done, dec.is_done());
                if p.done {
                    return (body, Ok(Some(offset + p.consumed)));
                }
                assert_eq!(p.consumed, piece.len(), "stopped early without finishing");
                offset += piece.len();
            }
            Err(e) => {
                // Sticky: it keeps failing.
                assert_eq!(dec.decode(b"0\r\n\r\n", |_| {}), Err(e));
                return (body, Err(e));
            }
        }
    }
    (body, Ok(None))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let (whole_body, whole) = decode_split(input, None);
    let (split_body, split) = decode_split(input, Some(seed));
    assert_eq!(whole, split);
    if whole.is_ok() {
        assert_eq!(whole_body, split_body);
    }
    if let Ok(Some(end)) = whole {
        // The body's bytes, then re-encoded and decoded again, give the same.
        let mut again = Vec::new();
        shardgate::http::encode_chunk(&mut again, &whole_body);
        again.extend_from_slice(shardgate::http::LAST_CHUNK);
        let (body2, r2) = decode_split(&again, None);
        assert_eq!(r2, Ok(Some(again.len())));
        assert_eq!(body2, whole_body);
        assert!(end <= input.len());
    }
});
