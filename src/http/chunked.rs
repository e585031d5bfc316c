//! Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 section 7.1).

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedError {
    /// The chunk-size is not hex, is empty, or overflows u64.
    InvalidChunkSize,
    /// A chunk-size line (with extensions) is longer than allowed.
    LineTooLong,
    /// A line ended in a bare LF, or CRLF is missing after chunk data.
    BadLineEnding,
    /// Trailer section larger than allowed or malformed.
    InvalidTrailer,
}

/// Progress reported by [`ChunkedDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeProgress {
    /// Bytes of the input consumed (framing and data).
    pub consumed: usize,
    /// The last chunk and the trailer section have been consumed.
    pub done: bool,
}

/// Sans-IO chunked decoder. Feed it bytes as they arrive, split anywhere.
#[derive(Clone, Debug, Default)]
pub struct ChunkedDecoder {
    _private: (),
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        todo!("implemented by the codec")
    }

    /// Consumes framing and data from `input`, calling `on_data` with each run
    /// of body bytes. Stops at the end of the body (`done`) or of the input.
    pub fn decode(
        &mut self,
        input: &[u8],
        on_data: impl FnMut(&[u8]),
    ) -> Result<DecodeProgress, ChunkedError> {
        let _ = (input, on_data);
        todo!("implemented by the codec")
    }

    /// Whether the whole body has been consumed.
    pub fn is_done(&self) -> bool {
        todo!("implemented by the codec")
    }
}
