//! Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 section 7.1).

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedError {
    /// The chunk-size is not hex, is empty, or overflows u64.
    InvalidChunkSize,
    /// A chunk-size line (with extensions) is longer than allowed.
    LineTooLong,
    /// A chunk extension contains a control byte (NUL, CTL other than
    /// HTAB, DEL): neither a token nor a quoted-string can.
    InvalidExtension,
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

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkedError::InvalidChunkSize => "invalid chunk size",
            ChunkedError::LineTooLong => "chunk-size line too long",
            ChunkedError::InvalidExtension => "control byte in a chunk extension",
            ChunkedError::BadLineEnding => "bad line ending in chunked body",
            ChunkedError::InvalidTrailer => "invalid trailer section",
        })
    }
}

impl std::error::Error for ChunkedError {}

/// Longest chunk-size line (size and extensions, without CRLF) accepted.
/// Extensions are ignored, so this only bounds what a peer can make us skip.
pub const MAX_SIZE_LINE: usize = 4096;

/// Largest trailer section (field lines and the final CRLF) accepted.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// The last chunk with an empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` to `out` as one chunk (`hex-size CRLF data CRLF`).
///
/// Empty `data` appends nothing: a zero-size chunk would end the body
/// (use [`LAST_CHUNK`] for that).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut i = digits.len();
    let mut n = data.len();
    while n != 0 {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
    }
    out.reserve(digits.len() - i + data.len() + 4);
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Where the decoder is in the chunked grammar (RFC 9112 section 7.1):
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
///
/// One state per position, so input may be split at any byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk-size.
    #[default]
    SizeStart,
    /// Inside the chunk-size hex digits.
    Size,
    /// Whitespace after the chunk-size (BWS before `;`, tolerated before CRLF
    /// as hyper and nginx do).
    SizeLws,
    /// Inside chunk extensions, up to CR. Ignored.
    Extension,
    /// Expecting the LF that ends the chunk-size line.
    SizeLf,
    /// Inside chunk-data.
    Data { remaining: u64 },
    /// Expecting the CR after chunk-data.
    DataCr,
    /// Expecting the LF after chunk-data.
    DataLf,
    /// At the start of a trailer field line, or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value, up to CR.
    TrailerValue,
    /// Expecting the LF that ends a trailer field line.
    TrailerLf,
    /// Expecting the LF of the CRLF that ends the body.
    EndLf,
    /// The body is complete.
    Done,
    /// An error was returned; it is returned again on every call.
    Failed(ChunkedError),
}

/// Sans-IO chunked decoder. Feed it bytes as they arrive, split anywhere.
///
/// ```
/// use shardgate::http::ChunkedDecoder;
///
/// let input = b"5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
/// let mut dec = ChunkedDecoder::new();
/// let mut body = Vec::new();
/// let p = dec.decode(input, |d| body.extend_from_slice(d)).unwrap();
/// assert!(p.done);
/// assert_eq!(body, b"hello");
/// assert!(input[p.consumed..].starts_with(b"GET /next")); // the next request
/// ```
///
/// Chunk extensions are skipped (after a check for control bytes); trailer fields are checked for syntax and
/// size, then dropped (the gateway does not forward them).
#[derive(Clone, Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk-size being parsed (checked arithmetic: overflow is an error).
    size: u64,
    /// Bytes of the current chunk-size line so far, CRLF excluded.
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes framing and data from `input`, calling `on_data` with each run
    /// of body bytes. Stops at the end of the body (`done`) or of the input.
    ///
    /// `on_data` receives subslices of `input` (no copy), never empty ones.
    /// Bytes after the end of the body are not consumed: they belong to the
    /// next message on the connection. After an error the decoder keeps
    /// returning that error.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<DecodeProgress, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Data { remaining } => {
                    // Hand out as much of the chunk as the input holds, in
                    // one slice: this is where the body bytes go, so no
                    // per-byte work here.
                    let available = input.len() - pos;
                    let n = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    on_data(&input[pos..pos + n]);
                    pos += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                State::Extension => {
                    // Extensions are skipped wholesale up to the next CR/LF.
                    let rest = &input[pos..];
                    let skip = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                    self.line_len += skip;
                    if self.line_len > MAX_SIZE_LINE {
                        return Err(self.fail(ChunkedError::LineTooLong));
                    }
                    // Not parsed, but no control bytes: whatever reads
                    // the extension after us (a log, a proxy) gets text.
                    if rest[..skip]
                        .iter()
                        .any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
                    {
                        return Err(self.fail(ChunkedError::InvalidExtension));
                    }
                    pos += skip;
                    match input.get(pos) {
                        Some(b'\r') => {
                            pos += 1;
                            self.state = State::SizeLf;
                        }
                        Some(_) => return Err(self.fail(ChunkedError::BadLineEnding)),
                        None => {}
                    }
                }
                State::Done => break,
                State::Failed(e) => return Err(e),
                _ => {
                    let b = input[pos];
                    pos += 1;
                    if let Err(e) = self.step(b) {
                        return Err(self.fail(e));
                    }
                }
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok(DecodeProgress {
            consumed: pos,
            done: self.state == State::Done,
        })
    }

    /// Whether the whole body has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn fail(&mut self, e: ChunkedError) -> ChunkedError {
        self.state = State::Failed(e);
        e
    }

    /// Advances over one framing byte. `decode` handles `Data` and
    /// `Extension` in bulk, and `Done`/`Failed` without consuming.
    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        self.state = match self.state {
            State::SizeStart | State::Size => {
                if let Some(d) = hex_value(b) {
                    // Leading zeros are fine; only the value must fit in u64.
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .ok_or(ChunkedError::InvalidChunkSize)?;
                    self.count_line_byte()?;
                    State::Size
                } else if self.state == State::SizeStart {
                    // Empty size, or a sign / whitespace before it.
                    return Err(ChunkedError::InvalidChunkSize);
                } else {
                    self.after_size(b)?
                }
            }
            State::SizeLws => self.after_size(b)?,
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkedError::BadLineEnding);
                }
                let size = std::mem::take(&mut self.size);
                self.line_len = 0;
                if size == 0 {
                    self.trailer_len = 0;
                    State::TrailerStart
                } else {
                    State::Data { remaining: size }
                }
            }
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkedError::BadLineEnding),
            },
            State::DataLf => match b {
                b'\n' => State::SizeStart,
                _ => return Err(ChunkedError::BadLineEnding),
            },
            State::TrailerStart => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(ChunkedError::BadLineEnding),
                    // A field name is a token; SP/HTAB here would be obs-fold.
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkedError::InvalidTrailer),
                }
            }
            State::TrailerName => {
                self.count_trailer_byte()?;
                match b {
                    b':' => State::TrailerValue,
                    b'\n' => return Err(ChunkedError::BadLineEnding),
                    _ if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkedError::InvalidTrailer),
                }
            }
            State::TrailerValue => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkedError::BadLineEnding),
                    // field-value: HTAB, SP, VCHAR, obs-text. No NUL, CTL, DEL.
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::TrailerValue,
                    _ => return Err(ChunkedError::InvalidTrailer),
                }
            }
            State::TrailerLf => {
                self.count_trailer_byte()?;
                match b {
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkedError::BadLineEnding),
                }
            }
            State::EndLf => {
                self.count_trailer_byte()?;
                match b {
                    b'\n' => State::Done,
                    _ => return Err(ChunkedError::BadLineEnding),
                }
            }
            State::Data { .. } | State::Extension | State::Done | State::Failed(_) => {
                unreachable!("decode() handles these states itself")
            }
        };
        Ok(())
    }

    /// A byte after at least one size digit that is not a digit.
    fn after_size(&mut self, b: u8) -> Result<State, ChunkedError> {
        match b {
            b'\r' => Ok(State::SizeLf),
            b'\n' => Err(ChunkedError::BadLineEnding),
            b';' => {
                self.count_line_byte()?;
                Ok(State::Extension)
            }
            b' ' | b'\t' => {
                self.count_line_byte()?;
                Ok(State::SizeLws)
            }
            // Includes a digit after whitespace ("1 2"): not one number.
            _ => Err(ChunkedError::InvalidChunkSize),
        }
    }

    fn count_line_byte(&mut self) -> Result<(), ChunkedError> {
        self.line_len += 1;
        if self.line_len > MAX_SIZE_LINE {
            Err(ChunkedError::LineTooLong)
        } else {
            Ok(())
        }
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILER_BYTES {
            Err(ChunkedError::InvalidTrailer)
        } else {
            Ok(())
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `tchar` of RFC 9110 section 5.6.2: the characters of a token.
fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one call: (body, consumed, done).
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let p = dec.decode(input, |d| body.extend_from_slice(d))?;
        assert_eq!(p.done, dec.is_done());
        Ok((body, p.consumed, p.done))
    }

    /// Feeds `input` as the given pieces, the way a connection loop would:
    /// unconsumed bytes are kept and prepended to the next piece.
    fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pending = Vec::new();
        let mut consumed = 0;
        for piece in pieces {
            pending.extend_from_slice(piece);
            let p = dec.decode(&pending, |d| {
                assert!(!d.is_empty(), "on_data got an empty slice");
                body.extend_from_slice(d)
            })?;
            consumed += p.consumed;
            pending.drain(..p.consumed);
            if p.done {
                break;
            }
        }
        Ok((body, consumed, dec.is_done()))
    }

    fn err(input: &[u8]) -> ChunkedError {
        match decode_all(input) {
            Err(e) => e,
            Ok(r) => panic!(
                "expected an error for {:?}, got {r:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    const SAMPLE: &[u8] = b"5\r\nhello\r\n6;name=\"va;lue\"\r\n world\r\n\
A \r\n0123456789\r\n000\r\nX-Trailer: yes\r\nX-Other:\t\xc3\xa9 \r\n\r\n";
    const SAMPLE_BODY: &[u8] = b"hello world0123456789";

    #[test]
    fn decodes_sample() {
        let (body, consumed, done) = decode_all(SAMPLE).unwrap();
        assert_eq!(body, SAMPLE_BODY);
        assert_eq!(consumed, SAMPLE.len());
        assert!(done);
    }

    #[test]
    fn every_split_offset_gives_the_same_body() {
        for cut in 0..=SAMPLE.len() {
            let (body, consumed, done) = decode_pieces(&[&SAMPLE[..cut], &SAMPLE[cut..]]).unwrap();
            assert_eq!(body, SAMPLE_BODY, "cut at {cut}");
            assert_eq!(consumed, SAMPLE.len(), "cut at {cut}");
            assert!(done, "cut at {cut}");
        }
    }

    #[test]
    fn every_pair_of_split_offsets_gives_the_same_body() {
        for a in 0..=SAMPLE.len() {
            for b in a..=SAMPLE.len() {
                let pieces = [&SAMPLE[..a], &SAMPLE[a..b], &SAMPLE[b..]];
                let (body, consumed, done) = decode_pieces(&pieces).unwrap();
                assert_eq!(
                    (body.as_slice(), consumed, done),
                    (SAMPLE_BODY, SAMPLE.len(), true)
                );
            }
        }
    }

    #[test]
    fn byte_at_a_time_with_a_fresh_slice_each_time() {
        // Unlike decode_pieces, nothing is carried over: the decoder must
        // consume every byte it is given until done.
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        for (i, b) in SAMPLE.iter().enumerate() {
            let p = dec
                .decode(std::slice::from_ref(b), |d| body.extend_from_slice(d))
                .unwrap();
            assert_eq!(p.consumed, 1, "byte {i}");
            assert_eq!(p.done, i == SAMPLE.len() - 1);
        }
        assert_eq!(body, SAMPLE_BODY);
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let mut input = SAMPLE.to_vec();
        input.extend_from_slice(b"POST /next HTTP/1.1\r\n\r\n");
        let mut dec = ChunkedDecoder::new();
        let p = dec.decode(&input, |_| {}).unwrap();
        assert!(p.done);
        assert_eq!(&input[p.consumed..], b"POST /next HTTP/1.1\r\n\r\n");
        // Once done, nothing more is consumed.
        let again = dec
            .decode(&input[p.consumed..], |_| panic!("no more data"))
            .unwrap();
        assert_eq!(
            again,
            DecodeProgress {
                consumed: 0,
                done: true
            }
        );
    }

    #[test]
    fn data_is_handed_out_zero_copy() {
        let input = b"b\r\nhello world\r\n0\r\n\r\n";
        let mut dec = ChunkedDecoder::new();
        let mut calls = 0;
        dec.decode(input, |d| {
            calls += 1;
            assert_eq!(d, b"hello world");
            assert_eq!(d.as_ptr(), input[3..].as_ptr());
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn empty_input_consumes_nothing() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(
            dec.decode(b"", |_| {}).unwrap(),
            DecodeProgress {
                consumed: 0,
                done: false
            }
        );
        assert!(!dec.is_done());
    }

    #[test]
    fn size_forms() {
        for (input, body) in [
            (&b"0\r\n\r\n"[..], &b""[..]),
            (b"00000000000000000000000001\r\nx\r\n0\r\n\r\n", b"x"),
            (b"F\r\n0123456789abcde\r\n0\r\n\r\n", b"0123456789abcde"),
            (b"f\r\n0123456789abcde\r\n0\r\n\r\n", b"0123456789abcde"),
            (b"1 \r\nx\r\n0\r\n\r\n", b"x"),
            (b"1\t \t\r\nx\r\n0\r\n\r\n", b"x"),
            (b"1 ; ext\r\nx\r\n0\r\n\r\n", b"x"),
            (b"1;a=b;c=\"d;e\"\r\nx\r\n0;last=1\r\n\r\n", b"x"),
        ] {
            let (got, consumed, done) = decode_all(input).unwrap();
            assert_eq!((got.as_slice(), consumed, done), (body, input.len(), true));
        }
        // The largest size parses (we never get to the data).
        let mut dec = ChunkedDecoder::new();
        let p = dec.decode(b"ffffffffffffffff\r\nabc", |_| {}).unwrap();
        assert_eq!(p.consumed, 21);
        assert!(!p.done);
    }

    #[test]
    fn invalid_chunk_sizes() {
        for input in [
            &b"\r\n"[..],
            b";ext\r\n",
            b"+5\r\n",
            b"-5\r\n",
            b" 5\r\n",
            b"\t5\r\n",
            b"0x5\r\n",
            b"g\r\n",
            b"5g\r\n",
            b"1 2\r\n",
            b"10000000000000000\r\n",
            b"fffffffffffffffff\r\n",
            b"5\r\nhello\r\n\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                err(input),
                ChunkedError::InvalidChunkSize,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bad_line_endings() {
        for input in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5 \nhello\r\n",
            b"5;ext\nhello\r\n",
            b"5\rhello\r\n",
            b"5;ext\rX",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\rX0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\n\rX",
            b"0\r\nX-A: b\n\r\n",
            b"0\r\nX-A: b\rX",
            b"0\r\nX-A\n",
        ] {
            assert_eq!(
                err(input),
                ChunkedError::BadLineEnding,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn data_without_its_crlf_yet_is_incomplete_not_an_error() {
        let (body, consumed, done) = decode_all(b"5\r\nhello").unwrap();
        assert_eq!((body.as_slice(), consumed, done), (&b"hello"[..], 8, false));
        let (_, consumed, done) = decode_all(b"5\r\nhello\r").unwrap();
        assert_eq!((consumed, done), (9, false));
    }

    #[test]
    fn size_line_length_limit() {
        let mut ok_line = b"1;".to_vec();
        ok_line.resize(MAX_SIZE_LINE, b'x');
        ok_line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_all(&ok_line).unwrap().0, b"x");

        let mut long = b"1;".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(err(&long), ChunkedError::LineTooLong);

        // Long runs of leading zeros or whitespace count too.
        let mut zeros = vec![b'0'; MAX_SIZE_LINE + 1];
        zeros.extend_from_slice(b"1\r\n");
        assert_eq!(err(&zeros), ChunkedError::LineTooLong);
        let mut spaces = b"1".to_vec();
        spaces.resize(MAX_SIZE_LINE + 1, b' ');
        assert_eq!(err(&spaces), ChunkedError::LineTooLong);

        // The limit is per line, across input splits.
        let mut dec = ChunkedDecoder::new();
        let mut line = b"1;".to_vec();
        line.resize(MAX_SIZE_LINE - 1, b'x');
        dec.decode(&line, |_| {}).unwrap();
        assert_eq!(dec.decode(b"yz", |_| {}), Err(ChunkedError::LineTooLong));
    }

    #[test]
    fn trailers() {
        let (body, _, done) =
            decode_all(b"1\r\nx\r\n0\r\nA: 1\r\nb-c:\r\nD:  spaced  out \r\n\r\n").unwrap();
        assert_eq!(body, b"x");
        assert!(done);
        for input in [
            &b"0\r\nno-colon\r\n\r\n"[..],
            b"0\r\n: empty-name\r\n\r\n",
            b"0\r\nA B: c\r\n\r\n",
            b"0\r\nA: 1\r\n folded\r\n\r\n",
            b"0\r\nA: 1\r\n\tfolded\r\n\r\n",
            b"0\r\nA: \0\r\n\r\n",
            b"0\r\nA: \x7f\r\n\r\n",
            b"0\r\nA: \x01\r\n\r\n",
            b"0\r\nA\0: x\r\n\r\n",
        ] {
            assert_eq!(
                err(input),
                ChunkedError::InvalidTrailer,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn trailer_size_limit() {
        // Trailer section of exactly MAX_TRAILER_BYTES (fields + final CRLF).
        // "0\r\n" + "X-Big: aaa...\r\n" + "\r\n", with a trailer section
        // (everything after "0\r\n") of exactly `total` bytes.
        let build = |total: usize| {
            let mut t = b"0\r\nX-Big: ".to_vec();
            t.resize(3 + total - 4, b'a');
            t.extend_from_slice(b"\r\n\r\n");
            t
        };
        let fits = build(MAX_TRAILER_BYTES);
        assert!(decode_all(&fits).unwrap().2);
        let over = build(MAX_TRAILER_BYTES + 1);
        assert_eq!(err(&over), ChunkedError::InvalidTrailer);
        // Many small fields add up too.
        let mut many = b"0\r\n".to_vec();
        while many.len() < MAX_TRAILER_BYTES + 10 {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(err(&many), ChunkedError::InvalidTrailer);
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(
            dec.decode(b"zz", |_| {}),
            Err(ChunkedError::InvalidChunkSize)
        );
        assert_eq!(
            dec.decode(b"0\r\n\r\n", |_| {}),
            Err(ChunkedError::InvalidChunkSize)
        );
        assert_eq!(dec.decode(b"", |_| {}), Err(ChunkedError::InvalidChunkSize));
        assert!(!dec.is_done());
    }

    #[test]
    fn encode_chunk_formats_and_round_trips() {
        let mut out = Vec::new();
        encode_chunk(&mut out, b"");
        assert!(out.is_empty(), "an empty chunk would end the body");
        encode_chunk(&mut out, b"0123456789");
        assert_eq!(out, b"a\r\n0123456789\r\n");

        let sizes = [1usize, 15, 16, 255, 256, 4095, 4096, 65536, 40_000];
        let mut body = Vec::new();
        let mut wire = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
            encode_chunk(&mut wire, &data);
            body.extend_from_slice(&data);
        }
        wire.extend_from_slice(LAST_CHUNK);
        let (decoded, consumed, done) = decode_all(&wire).unwrap();
        assert_eq!(decoded, body);
        assert_eq!(consumed, wire.len());
        assert!(done);

        let mut big = Vec::new();
        encode_chunk(&mut big, &vec![0u8; 0x1_0000]);
        assert!(big.starts_with(b"10000\r\n"));
    }

    #[test]
    fn control_bytes_in_extensions_are_rejected() {
        for input in [
            &b"1;a=\0\r\nx\r\n0\r\n\r\n"[..],
            b"1;a=\x01b\r\nx\r\n0\r\n\r\n",
            b"1;\x7f\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\x1b[31m\"\r\nx\r\n0\r\n\r\n",
            b"1\r\nx\r\n0;\0\r\n\r\n",
        ] {
            assert_eq!(
                err(input),
                ChunkedError::InvalidExtension,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // HTAB and obs-text (allowed in a quoted-string) pass.
        for input in [
            &b"1;a=\tb\r\nx\r\n0\r\n\r\n"[..],
            b"1;a=\"caf\xc3\xa9\"\r\nx\r\n0\r\n\r\n",
        ] {
            assert_eq!(decode_all(input).unwrap().0, b"x");
        }
        // Also when the extension arrives a byte at a time.
        let input = b"1;ab\0\r\n";
        let mut dec = ChunkedDecoder::new();
        let mut result = Ok(DecodeProgress {
            consumed: 0,
            done: false,
        });
        for b in input.chunks(1) {
            result = dec.decode(b, |_| {});
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ChunkedError::InvalidExtension));
    }

    #[test]
    fn error_display() {
        assert_eq!(
            ChunkedError::InvalidExtension.to_string(),
            "control byte in a chunk extension"
        );
        assert_eq!(
            ChunkedError::LineTooLong.to_string(),
            "chunk-size line too long"
        );
    }
}
