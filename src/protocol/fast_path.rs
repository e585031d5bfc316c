//! Same-protocol fast path: read `model` and `stream`, rewrite `model`.
//!
//! When client and provider speak the same protocol the gateway forwards the
//! client's bytes untouched; all it needs from the body is the model (to pick
//! a provider pool) and whether the answer streams. [`extract_routing_fields`]
//! validates the whole body (a body the provider would reject must fail here,
//! where the client gets a clear error, and routing must never act on a
//! prefix of a broken body), reads the two top-level fields on the way, and
//! reports where the model's string token sits so [`rewrite_model`] can splice
//! in a provider's model name without re-serialising anything else.
//!
//! # Why a hand-written scanner and not simd-json
//!
//! The design calls for simd-json here, and the first implementation used it
//! (tape for validation, a walk of the tape's top level for the fields, and
//! the offset of simd-json's in-place string slice for the token). Measured
//! on realistic chat bodies (`benches/fast_path.rs`) the whole job took
//! 1.5 to 2.5 times as long as this scanner: 0.66 / 3.2 / 24 µs for
//! 0.5 / 4 / 40 KB against 0.26 / 2.2 / 11 µs. simd-json builds a tape, unescapes every
//! string and copies the body twice, none of which this job needs; with the
//! crate's runtime CPU detection (no `target-cpu` in this build) its stage-1
//! kernels are not even inlined; it needs several times the body in working
//! memory; and it cannot say where a value was in the input. sonic-rs, also
//! measured, was in between (0.60 / 2.7 / 19 µs) and its validating skip
//! recurses once per nesting level. So this is a single forward pass over
//! the original bytes: no copy, no allocation but the returned model,
//! constant memory, byte offsets for free. simd-json stays the parser for
//! translation, where a typed parse is the job, and is an oracle in the
//! tests here.
//!
//! # What is accepted
//!
//! - RFC 8259 JSON in UTF-8, optionally surrounded by whitespace; the top
//!   level must be an object for the fields to be read.
//! - `\uXXXX` escapes are checked for four hex digits only: lone UTF-16
//!   surrogates are grammatical JSON and JavaScript clients do produce them
//!   (`JSON.stringify` of a string cut inside a surrogate pair), so they are
//!   forwarded, except in `model`, which must decode to a Rust string.
//! - Numbers are checked against the grammar, not a range (`1e400` passes;
//!   the provider decides what it means).
//! - Nesting deeper than [`MAX_DEPTH`] is rejected ("nesting too deep"): the
//!   scanner is a loop whose container stack is a fixed bit set, so depth
//!   costs no native stack, only this bound.
//!
//! # Decisions
//!
//! - Only top-level keys count, compared after unescaping (`"\u006dodel"` is
//!   `model`, as for any parser upstream); a `"model"` key inside `messages`
//!   never matches.
//! - Duplicate top-level `model` or `stream` keys are rejected with
//!   [`FieldError::InvalidJson`]. Parsers disagree on duplicates (most keep
//!   the last, some the first, serde structs fail), so accepting them would
//!   let the gateway route and bill by one model while the provider serves
//!   another.
//! - `"stream": null` counts as absent; any other non-boolean is
//!   [`FieldError::WrongType`]`("stream")`.
//! - Syntax errors win over field errors: a body is reported as
//!   [`FieldError::InvalidJson`] if it is broken anywhere, even after a
//!   mistyped `model`.

use std::ops::Range;

/// The routing fields of a chat request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingFields {
    /// The `model` value, unescaped.
    pub model: String,
    /// `stream` (false when absent).
    pub stream: bool,
    /// Byte range of the model's JSON string token (quotes included) in the
    /// original body, for [`rewrite_model`].
    pub model_token: Range<usize>,
}

/// Why a body could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// The body is not valid JSON (with a short reason and byte offset if known).
    InvalidJson(String),
    /// The top-level value is not an object.
    NotAnObject,
    /// `model` is absent.
    MissingModel,
    /// `model` is not a string, or `stream` not a boolean (the field name).
    WrongType(&'static str),
}

/// The deepest nesting of arrays and objects accepted. Real requests stay
/// far below it (tool schemas nest a dozen levels); it only exists because
/// the scanner's container stack is a fixed bit set of this many levels.
pub const MAX_DEPTH: usize = 1024;

/// Validates `body` as JSON and extracts the routing fields.
///
/// `scratch` is a reusable buffer for parsers that need a mutable copy of
/// the body (simd-json parses in place). This scanner reads `body` where it
/// is and leaves `scratch` untouched, capacity included; the parameter stays
/// so callers keep their buffer should such a parser come back.
///
/// Only top-level keys count; see the module docs for what is accepted and
/// how duplicates, `null` and errors are handled. Allocates only the
/// returned `model` (and the message of an error).
pub fn extract_routing_fields(
    body: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<RoutingFields, FieldError> {
    let _ = scratch;

    // Validated up front so the scanner may treat every byte >= 0x80 inside a
    // string as content; outside strings the grammar rejects them anyway.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(invalid("invalid UTF-8", e.valid_up_to()));
    }
    let mut scanner = Scanner {
        body,
        pos: 0,
        found: Found::default(),
    };
    let top_is_object = scanner
        .document()
        .map_err(|Syntax(what, at)| invalid(what, at))?;
    if !top_is_object {
        return Err(FieldError::NotAnObject);
    }
    let Found {
        model,
        stream,
        error,
    } = scanner.found;
    if let Some(error) = error {
        return Err(error);
    }
    let token = model.ok_or(FieldError::MissingModel)?;
    Ok(RoutingFields {
        model: decode_model(&body[token.start + 1..token.end - 1])?,
        stream: stream.unwrap_or(false),
        model_token: token,
    })
}

/// Writes `body` into `out` with the model token replaced by `new_model`
/// (JSON-escaped), every other byte unchanged.
///
/// Escaping follows RFC 8259: `"` and `\` are backslash-escaped, control
/// characters become `\u00XX`, everything else is copied as UTF-8.
///
/// # Panics
///
/// If `model_token` is not a range inside `body` (a caller bug: it must come
/// from [`extract_routing_fields`] on the same body).
pub fn rewrite_model(body: &[u8], model_token: Range<usize>, new_model: &str, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(body.len() - model_token.len() + new_model.len() + 2);
    out.extend_from_slice(&body[..model_token.start]);
    out.push(b'"');
    push_escaped(new_model.as_bytes(), out);
    out.push(b'"');
    out.extend_from_slice(&body[model_token.end..]);
}

/// Appends `s` escaped as the contents of a JSON string.
fn push_escaped(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut copied = 0;
    for (i, &b) in s.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        // Copy the run of plain bytes before this one in one go.
        out.extend_from_slice(&s[copied..i]);
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        copied = i + 1;
    }
    out.extend_from_slice(&s[copied..]);
}

/// A syntax error: what was wrong and at which byte.
struct Syntax(&'static str, usize);

fn invalid(what: &str, at: usize) -> FieldError {
    FieldError::InvalidJson(format!("{what} at byte {at}"))
}

/// The top-level fields seen so far.
#[derive(Default)]
struct Found {
    /// Byte range of the `model` string token.
    model: Option<Range<usize>>,
    stream: Option<bool>,
    /// The first field error; reported only if the body is valid JSON.
    error: Option<FieldError>,
}

impl Found {
    fn fail(&mut self, error: FieldError) {
        self.error.get_or_insert(error);
    }
}

/// Which routing field the value being scanned belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    Model,
    Stream,
}

impl Field {
    fn wrong_type(self) -> FieldError {
        FieldError::WrongType(match self {
            Field::Stream => "stream",
            _ => "model",
        })
    }
}

/// A validating, non-recursive JSON scanner over the original body.
struct Scanner<'a> {
    body: &'a [u8],
    pos: usize,
    found: Found,
}

impl Scanner<'_> {
    /// Scans the whole document; returns whether the top level is an object.
    ///
    /// A loop over values rather than recursion, so nesting costs no native
    /// stack: the open containers are a bit set (1 = object, 0 = array).
    fn document(&mut self) -> Result<bool, Syntax> {
        let mut stack = [0u64; MAX_DEPTH / 64];
        let mut depth = 0usize;
        let top_is_object = self.skip_ws() == Some(b'{');
        // The field the next value belongs to (set by top-level keys only).
        let mut field = Field::Other;

        'value: loop {
            let Some(c) = self.skip_ws() else {
                return Err(Syntax("unexpected end", self.pos));
            };
            let this = std::mem::replace(&mut field, Field::Other);
            match c {
                b'{' | b'[' => {
                    if this != Field::Other {
                        self.found.fail(this.wrong_type());
                    }
                    if depth == MAX_DEPTH {
                        return Err(Syntax("nesting too deep", self.pos));
                    }
                    let is_object = c == b'{';
                    let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                    if is_object {
                        stack[word] |= bit;
                    } else {
                        stack[word] &= !bit;
                    }
                    depth += 1;
                    self.pos += 1;
                    let close = if is_object { b'}' } else { b']' };
                    if self.skip_ws() == Some(close) {
                        self.pos += 1;
                        depth -= 1;
                    } else {
                        if is_object {
                            field = self.key(depth == 1)?;
                        }
                        continue 'value;
                    }
                }
                b'"' => {
                    let start = self.pos;
                    self.string()?;
                    match this {
                        Field::Other => {}
                        Field::Model => {
                            if self.found.model.is_some() {
                                self.found.fail(duplicate("model"));
                            }
                            self.found.model = Some(start..self.pos);
                        }
                        Field::Stream => self.found.fail(this.wrong_type()),
                    }
                }
                b't' | b'f' | b'n' => {
                    let (literal, value) = match c {
                        b't' => (&b"true"[..], Some(true)),
                        b'f' => (&b"false"[..], Some(false)),
                        _ => (&b"null"[..], None),
                    };
                    if !self.body[self.pos..].starts_with(literal) {
                        return Err(Syntax("invalid literal", self.pos));
                    }
                    self.pos += literal.len();
                    match this {
                        Field::Other => {}
                        Field::Model => self.found.fail(this.wrong_type()),
                        Field::Stream => {
                            if self.found.stream.is_some() {
                                self.found.fail(duplicate("stream"));
                            }
                            self.found.stream = Some(value.unwrap_or(false));
                        }
                    }
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                    if this != Field::Other {
                        self.found.fail(this.wrong_type());
                    }
                }
                _ => return Err(Syntax("expected a value", self.pos)),
            }

            // A value is complete: close containers until one continues.
            loop {
                if depth == 0 {
                    return match self.skip_ws() {
                        None => Ok(top_is_object),
                        Some(_) => Err(Syntax("trailing data", self.pos)),
                    };
                }
                let in_object = stack[(depth - 1) / 64] & (1 << ((depth - 1) % 64)) != 0;
                match (self.skip_ws(), in_object) {
                    (Some(b','), true) => {
                        self.pos += 1;
                        self.skip_ws();
                        field = self.key(depth == 1)?;
                        continue 'value;
                    }
                    (Some(b','), false) => {
                        self.pos += 1;
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    _ => return Err(Syntax("expected ',' or a closing bracket", self.pos)),
                }
            }
        }
    }

    /// Skips whitespace; returns the next byte, if any.
    #[inline]
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&c) = self.body.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.pos += 1;
        }
        None
    }

    /// Scans an object key and its colon; classifies the key if it belongs
    /// to the top-level object.
    #[inline]
    fn key(&mut self, top_level: bool) -> Result<Field, Syntax> {
        if self.body.get(self.pos) != Some(&b'"') {
            return Err(Syntax("expected a key", self.pos));
        }
        let start = self.pos;
        self.string()?;
        let field = if top_level {
            classify(&self.body[start + 1..self.pos - 1])
        } else {
            Field::Other
        };
        if self.skip_ws() != Some(b':') {
            return Err(Syntax("expected ':'", self.pos));
        }
        self.pos += 1;
        Ok(field)
    }

    /// Scans the string whose opening quote is at `pos`.
    ///
    /// Strings are most of a chat body, so this is the hot loop; see
    /// [`Scanner::string_blocks`].
    #[inline(always)]
    fn string(&mut self) -> Result<(), Syntax> {
        #[cfg(target_arch = "x86_64")]
        {
            // Most strings are short and plain (keys, roles, ids): settle
            // them from 16 bytes here, inline, and leave the rest to the
            // out-of-line block scanner.
            let i = self.pos + 1;
            if let Some(lane) = self.body.get(i..i + 16).and_then(|b| b.try_into().ok()) {
                let (quote, special) = sse2::short_masks(lane);
                if quote.trailing_zeros() < special.trailing_zeros() {
                    self.pos = i + quote.trailing_zeros() as usize + 1;
                    return Ok(());
                }
            }
            self.string_blocks()
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.string_portable()
    }

    /// [`Scanner::string`], 64 bytes per step, with few branches.
    ///
    /// Chat text escapes a newline or a quote every few dozen bytes, so a
    /// scan that stops at each backslash spends its time on mispredicted
    /// branches. This one builds bit masks of quotes, backslashes and control
    /// bytes for a 64-byte block with SSE2 (in the x86_64 baseline, so no
    /// runtime detection) and resolves which bytes are escaped with integer
    /// arithmetic (simdjson's branchless escape scanner), so a block costs
    /// the same whatever it holds; only the (well-predicted) check of each
    /// escape's letter loops.
    #[cfg(target_arch = "x86_64")]
    #[inline(never)]
    fn string_blocks(&mut self) -> Result<(), Syntax> {
        const ODD_BITS: u64 = 0xaaaa_aaaa_aaaa_aaaa;
        let body = self.body;
        let mut i = self.pos + 1;
        // Whether the byte at `i` is escaped by a backslash ending the
        // previous block.
        let mut carry = 0u64;
        loop {
            // Past the end, zero padding: zero is a control byte, which ends
            // the scan as "unterminated".
            let padded;
            let block: &[u8; 64] = match body.get(i..i + 64).and_then(|b| b.try_into().ok()) {
                Some(block) => block,
                None => {
                    let rest = body.get(i..).unwrap_or_default();
                    let mut buffer = [0u8; 64];
                    buffer[..rest.len()].copy_from_slice(rest);
                    padded = buffer;
                    &padded
                }
            };
            let masks = sse2::Masks::new(block);

            // Bit k of `escaped` is set when byte k follows an odd run of
            // backslashes (see simdjson's json_escape_scanner).
            let potential = masks.backslash & !carry;
            let codes = ((potential << 1 | ODD_BITS).wrapping_sub(potential)) ^ ODD_BITS;
            let escaped = codes ^ (masks.backslash | carry);
            carry = (codes & masks.backslash) >> 63;

            let end = (masks.quote & !escaped).trailing_zeros();
            let before_end = 1u64.checked_shl(end).map_or(u64::MAX, |bit| bit - 1);
            let controls = masks.control & before_end;
            if controls != 0 {
                let at = i + controls.trailing_zeros() as usize;
                return Err(if at >= body.len() {
                    Syntax("unterminated string", self.pos)
                } else {
                    Syntax("control character in string", at)
                });
            }
            let mut letters = escaped & before_end;
            while letters != 0 {
                let k = letters.trailing_zeros() as usize;
                self.escape(i + k - 1)?;
                letters &= letters - 1;
            }
            if end < 64 {
                self.pos = i + end as usize + 1;
                return Ok(());
            }
            i += 64;
        }
    }

    /// [`Scanner::string`] for other targets: one special byte at a time, 8
    /// bytes per step.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn string_portable(&mut self) -> Result<(), Syntax> {
        let mut i = self.pos + 1;
        loop {
            let Some(j) = find_special(self.body, i) else {
                return Err(Syntax("unterminated string", self.pos));
            };
            match self.body[j] {
                b'"' => {
                    self.pos = j + 1;
                    return Ok(());
                }
                b'\\' => i = self.escape(j)?,
                _ => return Err(Syntax("control character in string", j)),
            }
        }
    }

    /// Checks the escape whose backslash is at `j`; returns the offset after
    /// it.
    #[inline]
    fn escape(&self, j: usize) -> Result<usize, Syntax> {
        match self.body.get(j + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(j + 2),
            Some(b'u') => match self.body.get(j + 2..j + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(j + 6),
                _ => Err(Syntax("invalid \\u escape", j)),
            },
            _ => Err(Syntax("invalid escape", j)),
        }
    }

    /// Scans a number (RFC 8259 grammar; the range is not checked).
    fn number(&mut self) -> Result<(), Syntax> {
        let start = self.pos;
        if self.body[self.pos] == b'-' {
            self.pos += 1;
        }
        match self.body.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Syntax("invalid number", start)),
        }
        if self.body.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Syntax("invalid number", start));
            }
        }
        if matches!(self.body.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.body.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Syntax("invalid number", start));
            }
        }
        // What follows (e.g. the `1` of `01`) is checked by the caller's
        // expectation of a delimiter.
        Ok(())
    }

    /// Skips ASCII digits; returns how many.
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.body.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }
}

fn duplicate(key: &str) -> FieldError {
    FieldError::InvalidJson(format!("duplicate top-level \"{key}\" key"))
}

/// Which routing field a top-level key names, given its raw (still escaped)
/// contents.
fn classify(raw: &[u8]) -> Field {
    let matches = |name: &str| {
        if raw.contains(&b'\\') {
            // Rare: decode and compare, stopping at the first difference.
            let mut expected = name.chars();
            Unescape::new(raw).all(|c| c.is_some() && c == expected.next())
                && expected.next().is_none()
        } else {
            raw == name.as_bytes()
        }
    };
    if matches("model") {
        Field::Model
    } else if matches("stream") {
        Field::Stream
    } else {
        Field::Other
    }
}

/// Decodes the contents of the model token.
fn decode_model(raw: &[u8]) -> Result<String, FieldError> {
    let mut model = String::with_capacity(raw.len());
    if raw.contains(&b'\\') {
        for c in Unescape::new(raw) {
            model.push(c.ok_or_else(|| {
                FieldError::InvalidJson("lone surrogate escape in \"model\"".to_owned())
            })?);
        }
    } else {
        // The body is valid UTF-8 and a token starts and ends at ASCII quotes.
        model.push_str(std::str::from_utf8(raw).map_err(|_| invalid("invalid UTF-8", 0))?);
    }
    Ok(model)
}

/// The characters of a scanned (so well-formed) JSON string's contents;
/// `None` for a lone surrogate escape.
struct Unescape<'a> {
    chars: std::str::Chars<'a>,
}

impl<'a> Unescape<'a> {
    fn new(raw: &'a [u8]) -> Self {
        // Scanned contents come from a body already checked to be UTF-8.
        Self {
            chars: std::str::from_utf8(raw).unwrap_or_default().chars(),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        (0..4).try_fold(0, |acc, _| {
            Some(acc * 16 + self.chars.next()?.to_digit(16)?)
        })
    }
}

impl Iterator for Unescape<'_> {
    type Item = Option<char>;

    fn next(&mut self) -> Option<Option<char>> {
        let c = self.chars.next()?;
        if c != '\\' {
            return Some(Some(c));
        }
        Some(match self.chars.next()? {
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate decodes only with a low one next.
                        let rest = self.chars.clone();
                        let low = (self.chars.next() == Some('\\')
                            && self.chars.next() == Some('u'))
                        .then(|| self.hex4())
                        .flatten()
                        .filter(|low| (0xDC00..=0xDFFF).contains(low));
                        match low {
                            Some(low) => {
                                char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                            }
                            None => {
                                self.chars = rest;
                                None
                            }
                        }
                    }
                    _ => char::from_u32(unit),
                }
            }
            other => Some(other),
        })
    }
}

/// The offset of the first `"`, `\` or control byte at or after `i`, 8
/// bytes per step.
#[inline]
fn find_special(b: &[u8], mut i: usize) -> Option<usize> {
    while let Some(chunk) = b.get(i..i + 8) {
        let mask = swar_special_mask(u64::from_le_bytes(chunk.try_into().ok()?));
        if mask != 0 {
            return Some(i + (mask.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| i + p)
}

/// Flags (high bit of each byte) the bytes of `w` that are `"`, `\` or
/// below 0x20. Only the lowest flag is exact (a borrow can flag bytes above
/// a true hit), which is all [`find_special`] uses.
#[inline]
fn swar_special_mask(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let quote = w ^ (LO * u64::from(b'"'));
    let backslash = w ^ (LO * u64::from(b'\\'));
    let zero_byte = |x: u64| x.wrapping_sub(LO) & !x;
    (zero_byte(quote) | zero_byte(backslash) | (w.wrapping_sub(LO * 0x20) & !w)) & HI
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_set1_epi8,
    };

    /// One bit per byte of a 64-byte block (bit k for byte k).
    pub(super) struct Masks {
        pub(super) quote: u64,
        pub(super) backslash: u64,
        /// Bytes below 0x20.
        pub(super) control: u64,
    }

    /// For 16 bytes: the quotes, and the backslashes and control bytes.
    #[inline]
    pub(super) fn short_masks(lane: &[u8; 16]) -> (u32, u32) {
        // SAFETY: as in `Masks::new`.
        let (quote, backslash, control) = unsafe { lane_masks(lane) };
        (quote, backslash | control)
    }

    /// Masks of quotes, backslashes and bytes below 0x20 in 16 bytes.
    ///
    /// # Safety
    ///
    /// The CPU must have SSE2, which every x86_64 CPU has (it is in the
    /// target's baseline features); the unaligned load reads the 16 bytes of
    /// `lane`.
    #[inline]
    unsafe fn lane_masks(lane: &[u8; 16]) -> (u32, u32, u32) {
        // SAFETY: see the function's contract.
        unsafe {
            let v = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
            let limit = _mm_set1_epi8(0x1f);
            // movemask fills the low 16 bits only.
            (
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8))) as u32,
                _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8))) as u32,
                // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
                _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, limit), limit)) as u32,
            )
        }
    }

    impl Masks {
        #[inline]
        pub(super) fn new(block: &[u8; 64]) -> Self {
            let mut masks = Masks {
                quote: 0,
                backslash: 0,
                control: 0,
            };
            for (k, lane) in block.chunks_exact(16).enumerate() {
                let lane: &[u8; 16] = lane.try_into().unwrap_or(&[0; 16]);
                // SAFETY: SSE2 is in the x86_64 baseline.
                let (quote, backslash, control) = unsafe { lane_masks(lane) };
                let shift = 16 * k;
                masks.quote |= u64::from(quote) << shift;
                masks.backslash |= u64::from(backslash) << shift;
                masks.control |= u64::from(control) << shift;
            }
            masks
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Whether serde_json rejects `body` only for a reason this scanner
    /// deliberately does not check (see the module docs).
    fn serde_is_stricter(err: &serde_json::Error) -> bool {
        let msg = err.to_string();
        [
            "number out of range",
            "surrogate",
            "hex escape",
            "recursion limit",
        ]
        .iter()
        .any(|reason| msg.contains(reason))
    }

    /// Extracts and checks the result against independent views: serde_json
    /// (validity, `model`, `stream`), simd-json (validity) and the token
    /// bytes themselves (they must decode to the model).
    fn extract(body: &[u8]) -> Result<RoutingFields, FieldError> {
        let result = extract_routing_fields(body, &mut Vec::new());
        let is_syntax_error = matches!(result, Err(FieldError::InvalidJson(ref why)) if !why.contains("duplicate") && !why.contains("surrogate"));
        let preview = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();

        match serde_json::from_slice::<Value>(body) {
            Ok(value) => {
                assert!(
                    !is_syntax_error,
                    "serde_json accepts {preview:?}: {result:?}"
                );
                if let Ok(fields) = &result {
                    assert_eq!(
                        value["model"].as_str(),
                        Some(fields.model.as_str()),
                        "{preview:?}"
                    );
                    assert_eq!(value["stream"].as_bool().unwrap_or(false), fields.stream);
                }
            }
            Err(e) => assert!(
                is_syntax_error || serde_is_stricter(&e),
                "serde_json rejects {preview:?} ({e}) but got {result:?}"
            ),
        }
        // simd-json (stricter on surrogates, no depth limit) as a second
        // validity oracle within the same limits.
        if body.len() < 100_000 {
            let simd_ok = simd_json::to_tape(&mut body.to_vec()).is_ok();
            if simd_ok && is_syntax_error {
                assert!(
                    matches!(result, Err(FieldError::InvalidJson(ref why)) if why.contains("nesting")),
                    "simd-json accepts {preview:?}: {result:?}"
                );
            }
        }

        if let Ok(fields) = &result {
            let token = &body[fields.model_token.clone()];
            let decoded: String = serde_json::from_slice(token).expect("token is a JSON string");
            assert_eq!(decoded, fields.model);
        }
        result
    }

    fn ok(body: &str) -> RoutingFields {
        extract(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e:?}"))
    }

    fn invalid(body: &[u8]) -> String {
        match extract(body) {
            Err(FieldError::InvalidJson(reason)) => reason,
            other => panic!(
                "{:?}: expected InvalidJson, got {other:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }

    /// Asserts that `body` rewrites to valid JSON equal to the original with
    /// only `model` changed, and that no byte outside the token moved.
    fn check_rewrite(body: &str, new_model: &str) {
        let fields = ok(body);
        let mut out = Vec::new();
        rewrite_model(
            body.as_bytes(),
            fields.model_token.clone(),
            new_model,
            &mut out,
        );

        let mut expected: Value = serde_json::from_str(body).unwrap();
        expected["model"] = Value::String(new_model.to_owned());
        let got: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
        assert_eq!(got, expected);

        let tail = body.len() - fields.model_token.end;
        assert_eq!(
            &out[..fields.model_token.start],
            &body.as_bytes()[..fields.model_token.start]
        );
        assert_eq!(
            &out[out.len() - tail..],
            &body.as_bytes()[fields.model_token.end..]
        );

        let again = extract(&out).unwrap();
        assert_eq!(
            (again.model.as_str(), again.stream),
            (new_model, fields.stream)
        );
    }

    #[test]
    fn plain() {
        let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        let f = ok(body);
        assert_eq!(f.model, "gpt-4o");
        assert!(!f.stream);
        assert_eq!(&body[f.model_token], r#""gpt-4o""#);
    }

    #[test]
    fn model_after_messages() {
        // The OpenAI SDKs put `messages` first.
        let f = ok(
            r#"{"messages": [{"role": "user", "content": "hi"}], "model": "m", "stream": true}"#,
        );
        assert_eq!((f.model.as_str(), f.stream), ("m", true));
    }

    #[test]
    fn escaped_model() {
        let body = r#"{"model":"a\"b\\c\/d\n\u0041\t","stream":false}"#;
        let f = ok(body);
        assert_eq!(f.model, "a\"b\\c/d\nA\t");
        assert_eq!(&body[f.model_token], r#""a\"b\\c\/d\n\u0041\t""#);
        assert_eq!(ok(r#"{"model":"x\\","n":1}"#).model, "x\\");
        assert_eq!(ok(r#"{"model":"\b\f\r\"\\"}"#).model, "\u{8}\u{c}\r\"\\");
    }

    #[test]
    fn unicode_model() {
        assert_eq!(ok(r#"{"model":"grüße-模型-😀"}"#).model, "grüße-模型-😀");
        assert_eq!(
            ok(r#"{"model":"\u00e9\ud83d\ude00\uFFFF"}"#).model,
            "é😀\u{ffff}"
        );
        assert_eq!(ok(r#"{"model":""}"#).model, "");
    }

    #[test]
    fn lone_surrogates() {
        // Forwarded where they do not matter (JavaScript clients send them)...
        let f = extract(
            br#"{"model":"m","messages":[{"content":"cut \ud83d"}],"x":"\ude00\ud800\u0041"}"#,
        );
        assert_eq!(f.unwrap().model, "m");
        // ...but a model name must be a real string.
        for model in [
            r#""\ud83d""#,
            r#""a\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\ud83d""#,
        ] {
            let body = format!(r#"{{"model":{model}}}"#);
            assert!(invalid(body.as_bytes()).contains("surrogate"), "{body}");
        }
        // And a key with one is not `model`.
        assert_eq!(
            extract(br#"{"model\ud800":"x"}"#),
            Err(FieldError::MissingModel)
        );
    }

    #[test]
    fn whitespace_variants() {
        let body = " \r\n\t{ \n\t\"stream\" \r\n: \ttrue ,\n \"model\"\n :\r\n \"m\" \n}\n\t ";
        let f = ok(body);
        assert_eq!((f.model.as_str(), f.stream), ("m", true));
        assert_eq!(&body[f.model_token], "\"m\"");
        assert_eq!(
            ok("{\"model\" :\"m\" , \"x\" : [ 1 , { } , [ ] ] }").model,
            "m"
        );
    }

    #[test]
    fn nested_model_keys_are_decoys() {
        let body = r#"{"messages":[{"role":"user","model":"decoy","content":{"model":"x"}}],
            "metadata":{"model":"gpt"},"tools":[{"model":"gpt"}],"model":"gpt"}"#;
        let f = ok(body);
        assert_eq!(f.model, "gpt");
        assert_eq!(f.model_token.start, body.rfind("\"gpt\"").unwrap());
        check_rewrite(body, "other");

        assert_eq!(
            extract(br#"{"messages":[{"model":"x"}],"m":{"model":"y"}}"#),
            Err(FieldError::MissingModel)
        );
        // A string that looks like a member.
        assert_eq!(
            ok(r#"{"content":"\"model\":\"fake\", {\"model\":1}","model":"real"}"#).model,
            "real"
        );
        // Nested values equal to the model, before it.
        let body = r#"{"a":{"model":"m"},"b":["m"],"model":"m"}"#;
        assert_eq!(ok(body).model_token.start, body.rfind("\"m\"").unwrap());
        // A nested `stream` does not count either.
        assert!(!ok(r#"{"model":"m","o":{"stream":true}}"#).stream);
    }

    #[test]
    fn keys_with_escapes() {
        assert_eq!(
            ok(r#"{"mo\u0064el":"m","\"model":"k","model\\":"k2"}"#).model,
            "m"
        );
        assert_eq!(ok(r#"{"\"model\"":"no","model":"yes"}"#).model, "yes");
        assert!(ok(r#"{"model":"m","\u0073tream":true}"#).stream);
        assert_eq!(
            extract(
                br#"{"Model":"a","models":"b","model ":"c","mode":"d","\u006dode":"e","":"f"}"#
            ),
            Err(FieldError::MissingModel)
        );
    }

    #[test]
    fn stream_values() {
        assert!(ok(r#"{"model":"m","stream":true}"#).stream);
        assert!(!ok(r#"{"model":"m","stream":false}"#).stream);
        assert!(!ok(r#"{"model":"m","stream":null}"#).stream);
        assert!(!ok(r#"{"model":"m"}"#).stream);
        for bad in [r#""yes""#, "1", "0", "[]", "{}", r#""true""#, "[true]"] {
            let body = format!(r#"{{"model":"m","stream":{bad}}}"#);
            assert_eq!(
                extract(body.as_bytes()),
                Err(FieldError::WrongType("stream")),
                "{body}"
            );
        }
    }

    #[test]
    fn missing_or_mistyped_model() {
        assert_eq!(extract(b"{}"), Err(FieldError::MissingModel));
        assert_eq!(
            extract(br#"{"stream":true}"#),
            Err(FieldError::MissingModel)
        );
        for bad in [
            "1",
            "null",
            "true",
            "false",
            "[\"m\"]",
            r#"{"name":"m"}"#,
            "-0.5e3",
        ] {
            let body = format!(r#"{{"model":{bad},"stream":true}}"#);
            assert_eq!(
                extract(body.as_bytes()),
                Err(FieldError::WrongType("model")),
                "{body}"
            );
        }
    }

    #[test]
    fn not_an_object() {
        for body in [
            "[]",
            r#"[{"model":"m"}]"#,
            r#""model""#,
            "1",
            "-2.5",
            "null",
            "true",
            " [1] ",
        ] {
            assert_eq!(
                extract(body.as_bytes()),
                Err(FieldError::NotAnObject),
                "{body}"
            );
        }
    }

    #[test]
    fn duplicates_are_rejected() {
        assert!(invalid(br#"{"model":"a","model":"b"}"#).contains("model"));
        assert!(invalid(br#"{"model":"a","mod\u0065l":"b"}"#).contains("model"));
        assert!(invalid(br#"{"model":"a","stream":true,"stream":false}"#).contains("stream"));
        assert!(invalid(br#"{"model":"a","stream":null,"stream":null}"#).contains("stream"));
        // Duplicates elsewhere are the provider's business.
        assert_eq!(
            ok(r#"{"model":"a","x":1,"x":2,"m":{"model":1,"model":2}}"#).model,
            "a"
        );
    }

    #[test]
    fn syntax_errors_win_over_field_errors() {
        assert!(invalid(br#"{"model":1,"x":tru}"#).contains("literal"));
        assert!(!invalid(br#"{"model":"a","model":"b""#).contains("duplicate"));
    }

    #[test]
    fn truncated_json() {
        let body = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"h\"i \u00e9 😀"}],"n":-1.5e+3,"x":null,"y":[false,0,{}]}"#;
        ok(body);
        for end in 0..body.len() {
            if body.is_char_boundary(end) {
                invalid(&body.as_bytes()[..end]);
            }
        }
    }

    #[test]
    fn trailing_garbage() {
        for body in [
            r#"{"model":"m"} x"#,
            r#"{"model":"m"}}"#,
            r#"{"model":"m"}{}"#,
            r#"{"model":"m"},"#,
            r#"{"model":"m"} """#,
            "{\"model\":\"m\"}\0",
            "{\"model\":\"m\"}\u{a0}",
        ] {
            assert!(invalid(body.as_bytes()).contains("trailing"), "{body}");
        }
    }

    #[test]
    fn malformed_json() {
        for body in [
            "",
            "   ",
            "{",
            "}",
            r#"{"model":"m",}"#,
            r#"{"model":"m" "x":1}"#,
            r#"{"model" "m"}"#,
            r#"{model:"m"}"#,
            r#"{'model':'m'}"#,
            r#"{"model":"m","x":tru}"#,
            r#"{"model":"m","x":nul}"#,
            r#"{"model":"m","x":True}"#,
            r#"{"model":"m","x":01}"#,
            r#"{"model":"m","x":1.}"#,
            r#"{"model":"m","x":.5}"#,
            r#"{"model":"m","x":+1}"#,
            r#"{"model":"m","x":1e}"#,
            r#"{"model":"m","x":-}"#,
            r#"{"model":"m","x":0x1}"#,
            r#"{"model":"m","x":NaN}"#,
            r#"{"model":"m","x":[1,]}"#,
            r#"{"model":"m","x":[,1]}"#,
            r#"{"model":"m","x":"\x"}"#,
            r#"{"model":"m","x":"\u12"}"#,
            r#"{"model":"m","x":"\u12g4"}"#,
            r#"{"model":"m","x":"\U0041"}"#,
            "{\"model\":\"a\nb\"}",
            "{\"model\":\"m\",\"x\":\"tab\there\"}",
            "{\"model\":\"m\",\"x\":\"\u{1f}\"}",
            "{\"model\":\"m\",\"x\":\"\u{0}\"}",
            "{\"model\":\"m\"\u{b}}",
            r#"{"model":"m"]"#,
            r#"{"model":"m","x":[}"#,
            r#"{"model":"m","x":{]}"#,
            r#"{"model":"m","x":{"a"}}"#,
            r#"{"model":"m","x":{"a":}}"#,
            r#"{"model":"m","x":{1:2}}"#,
        ] {
            invalid(body.as_bytes());
        }
    }

    #[test]
    fn invalid_utf8() {
        for bad in [
            &b"\xff"[..],
            b"\xc3",             // truncated two-byte sequence
            b"\xc0\xaf",         // overlong '/'
            b"\xed\xa0\x80",     // encoded surrogate
            b"\xf4\x90\x80\x80", // above U+10FFFF
            b"\x80",             // lone continuation byte
        ] {
            for template in [
                &br#"{"model":"aX"}"#[..],
                br#"{"model":"a","content":"X"}"#,
                br#"{"model":"a"}X"#,
            ] {
                let pos = template.iter().position(|&b| b == b'X').unwrap();
                let body = [&template[..pos], bad, &template[pos + 1..]].concat();
                assert!(invalid(&body).contains("UTF-8"));
            }
        }
    }

    fn nested(depth: usize, open: &str, inner: &str, close: &str) -> String {
        let mut s = open.repeat(depth);
        s.push_str(inner);
        s.push_str(&close.repeat(depth));
        s
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        // Runs on the test harness's small thread stack: it would overflow
        // at once if anything here recursed per nesting level.
        let arrays = nested(100_000, "[", "", "]");
        assert!(invalid(arrays.as_bytes()).contains("nesting too deep"));
        let objects = nested(100_000, r#"{"model":"#, "1", "}");
        assert!(invalid(objects.as_bytes()).contains("nesting too deep"));
        let body = format!(r#"{{"model":"m","messages":{arrays}}}"#);
        assert!(invalid(body.as_bytes()).contains("nesting too deep"));
        // Unclosed.
        invalid(&arrays.as_bytes()[..100_000]);
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        // The top-level object is one level.
        let inside = nested(MAX_DEPTH - 1, "[", "{}", "]");
        let body = format!(r#"{{"model":"m","x":{inside}}}"#);
        assert!(invalid(body.as_bytes()).contains("nesting too deep"));
        let inside = nested(MAX_DEPTH - 2, "[", "{}", "]");
        let body = format!(r#"{{"model":"m","x":{inside},"stream":true}}"#);
        let f = extract_routing_fields(body.as_bytes(), &mut Vec::new()).unwrap();
        assert_eq!((f.model.as_str(), f.stream), ("m", true));
        // Depth is counted per container, not per bracket seen.
        let wide = format!(r#"{{"model":"m","x":[{}]}}"#, vec!["[[]]"; 5_000].join(","));
        assert_eq!(ok(&wide).model, "m");
    }

    #[test]
    fn rewrite_round_trip() {
        let bodies = [
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"messages":[{"role":"user","content":"a\"b","model":"x"}],"model" : "m\\\"x","stream":true}"#,
            " {\n  \"model\": \"\\u00e9\",\n  \"stream\": null\n}\n",
            r#"{"mo\u0064el":"m","temperature":0.2,"tools":[{"type":"function"}]}"#,
            r#"{"model":""}"#,
        ];
        let models = [
            "gpt-4o-mini",
            "",
            "quote\"back\\slash",
            "ctl\u{0}\u{1f}\n\t\r\u{7f}",
            "模型😀",
            "/",
        ];
        for body in bodies {
            for model in models {
                check_rewrite(body, model);
            }
        }
    }

    #[test]
    fn rewrite_escapes() {
        let mut out = b"old contents".to_vec();
        rewrite_model(br#"{"model":"a"}"#, 9..12, "\"\\\u{1}\n\u{7f}é", &mut out);
        assert_eq!(
            out,
            "{\"model\":\"\\\"\\\\\\u0001\\u000a\u{7f}é\"}".as_bytes()
        );
    }

    #[test]
    fn scratch_is_untouched() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
        let mut scratch = Vec::with_capacity(4096);
        scratch.extend_from_slice(b"keep");
        extract_routing_fields(body.as_bytes(), &mut scratch).unwrap();
        assert_eq!(
            (scratch.as_slice(), scratch.capacity()),
            (&b"keep"[..], 4096)
        );
    }

    #[test]
    fn long_strings_use_every_scan_path() {
        // Specials at every offset of the 32-byte, 8-byte and tail loops.
        for len in 0..140 {
            for special in ["\\n", "\\\"", "\\u00e9", "é", "\\\\", "\\\\\\\\\\\""] {
                let mut content = "x".repeat(len);
                content.push_str(special);
                let body = format!(r#"{{"c":"{content}","model":"{content}"}}"#);
                let expected: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(ok(&body).model, expected["model"].as_str().unwrap());
                let raw = format!("{{\"model\":\"{}\u{1}\"}}", "x".repeat(len));
                invalid(raw.as_bytes());
                let open = format!("{{\"model\":\"{}", "x".repeat(len));
                invalid(open.as_bytes());
            }
        }
    }

    #[test]
    fn swar_mask_finds_the_first_special() {
        for i in 0..8 {
            for special in [b'"', b'\\', 0, 0x1f] {
                let mut w = [b'a'; 8];
                w[i] = special;
                // Noise above the hit must not move the answer.
                if i < 7 {
                    w[7] = 0x80;
                }
                let mask = swar_special_mask(u64::from_le_bytes(w));
                assert_eq!(mask.trailing_zeros() / 8, i as u32);
            }
        }
        assert_eq!(
            swar_special_mask(u64::from_le_bytes(*b" ~\x7f\x80\xff!#[")),
            0
        );
    }

    /// The string grammar one byte at a time: the end of the string token
    /// starting at `start`, or `None` if it is not a valid string.
    fn reference_string_end(body: &[u8], start: usize) -> Option<usize> {
        let mut i = start + 1;
        loop {
            match *body.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => match *body.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' if body.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => i += 1,
            }
        }
    }

    #[test]
    fn string_scanners_agree_with_the_grammar() {
        // Random strings over the characters that matter, long enough to
        // cross 64-byte blocks with runs of backslashes at every alignment.
        let alphabet = b"a\\\\\\\"\"nu0F/t\x01 \x1f\x7f";
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut valid = 0;
        for _ in 0..60_000 {
            let offset = rng.below(70);
            let mut body = vec![b' '; offset];
            body.push(b'"');
            for _ in 0..rng.below(200) {
                body.push(alphabet[rng.below(alphabet.len())]);
            }
            if rng.below(2) == 0 {
                body.push(b'"');
            }
            let expected = reference_string_end(&body, offset);
            valid += usize::from(expected.is_some());

            let mut portable = Scanner {
                body: &body,
                pos: offset,
                found: Found::default(),
            };
            let got = portable.string_portable().ok().map(|()| portable.pos);
            assert_eq!(
                got,
                expected,
                "portable: {:?}",
                String::from_utf8_lossy(&body)
            );
            let mut entry = Scanner {
                body: &body,
                pos: offset,
                found: Found::default(),
            };
            let got = entry.string().ok().map(|()| entry.pos);
            assert_eq!(
                got,
                expected,
                "string: {:?}",
                String::from_utf8_lossy(&body)
            );
            #[cfg(target_arch = "x86_64")]
            {
                let mut blocks = Scanner {
                    body: &body,
                    pos: offset,
                    found: Found::default(),
                };
                let got = blocks.string_blocks().ok().map(|()| blocks.pos);
                assert_eq!(
                    got,
                    expected,
                    "blocks: {:?}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        assert!((5_000..55_000).contains(&valid), "{valid} valid");
    }

    /// A small deterministic generator, so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn mutated_bodies_agree_with_serde_json() {
        // Start from valid bodies, then flip, insert, delete and truncate
        // bytes (biased towards JSON's own characters) and compare verdicts
        // with serde_json in `extract`.
        let seeds = [
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi \"there\"\n\u00e9"}]}"#,
            r#"{"messages":[{"role":"system","content":"be brief"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","function":{"name":"f","arguments":"{\"a\":1}"}}]}],"model":"m","temperature":0.7,"n":1,"stop":["\n\n"],"logit_bias":{"50256":-100}}"#,
            r#" { "model" : "x\\y" , "stream" : null , "a" : [ -0.0 , 1E+2 , 3e-1 , true , false , { } , [ ] ] } "#,
            r#"{"model":"模型","x":"😀","mo\u0064el2":{"model":"n"}}"#,
        ];
        let alphabet = b"{}[]\":,\\ \t\n0123456789-+.eEtrufalsn\x01\x80\xc3\xa9u";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for round in 0..40_000 {
            let mut body = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(body.len() + 1);
                let byte = alphabet[rng.below(alphabet.len())];
                match rng.below(4) {
                    0 if at < body.len() => body[at] = byte,
                    1 => body.insert(at, byte),
                    2 if at < body.len() => {
                        body.remove(at);
                    }
                    _ => body.truncate(at),
                }
            }
            accepted += usize::from(extract(&body).is_ok());
        }
        // Both verdicts must be well represented for the comparison to mean
        // anything.
        assert!((2_000..38_000).contains(&accepted), "{accepted} accepted");
    }
}
