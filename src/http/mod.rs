//! Sans-IO HTTP/1.1 codec.
//!
//! Everything here works on byte slices the caller owns: request and response
//! heads are parsed with `httparse` into [`RequestHead`] / [`ResponseHead`]
//! whose fields are [`Span`]s into the caller's buffer, chunked bodies are
//! decoded incrementally by [`ChunkedDecoder`], and [`write`] renders heads
//! and chunks into caller-owned `Vec<u8>`s. No sockets, no executor, no clock.

pub mod chunked;
pub mod request;
pub mod response;
pub mod write;

pub use chunked::{encode_chunk, ChunkedDecoder, ChunkedError, DecodeProgress, LAST_CHUNK};
pub use request::{
    listed_in_connection, parse_request_head, BodyFraming, HeadError, HeadLimits, HeaderSpan,
    Method, ParseStatus, RequestHead, Span, Version,
};
pub use response::{parse_response_head, ResponseFraming, ResponseHead};
