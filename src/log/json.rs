//! Sans-IO JSON-lines encoding of [`AccessRecord`]s.
//!
//! Hand-written (no serde, no chrono) because it runs for every logged
//! request on the writer thread and the module may depend on nothing but std
//! and io-uring. Measured design: the caller's `Vec` is grown once per line
//! by an upper bound of the line's length, and the line is written through a
//! [`Cursor`] over that slice, so the ~40 small pieces of a line cost no
//! capacity checks and no `memcpy` calls (fixed-size copies, digits written
//! in place); the tail is then truncated to the real length.

use super::record::{AccessRecord, ErrorClass, InlineStr, Names};

/// Longest possible line without its five strings (every number at its
/// maximum width, the longest enum names), rounded up.
const FIXED_MAX: usize = 800;
/// Slack after the end of the line for fixed-size copies (enum names are
/// copied 32 bytes at a time, inline strings `N` bytes at a time).
const SLACK: usize = 64;

/// A string field of a line: a name from a table, an index with no name
/// (`"#<index>"`), or absent (`null`).
#[derive(Clone, Copy)]
enum Field<'a> {
    Null,
    Str(&'a str, bool),
    Inline(&'a InlineStr<64>, bool),
    Unknown(u16),
}

impl Field<'_> {
    /// Most bytes this field can take.
    #[inline]
    fn bound(&self) -> usize {
        match *self {
            Field::Null => 4,
            Field::Str(s, clean) => escaped_bound(s.len(), clean),
            Field::Inline(s, clean) => escaped_bound(s.len(), clean),
            Field::Unknown(_) => 8,
        }
    }
}

#[inline]
fn escaped_bound(len: usize, clean: bool) -> usize {
    if clean {
        len + 2
    } else {
        len * 6 + 2
    }
}

/// True when no byte of `b` needs escaping (no early exit: vectorizes).
#[inline]
fn is_clean(b: &[u8]) -> bool {
    !b.iter().fold(false, |acc, &c| {
        acc | (c < 0x20) | (c == b'"') | (c == b'\\')
    })
}

fn name_field(idx: Option<u16>, table: &[String]) -> Field<'_> {
    match idx {
        None => Field::Null,
        Some(i) => match table.get(i as usize) {
            Some(n) => Field::Str(n, is_clean(n.as_bytes())),
            None => Field::Unknown(i),
        },
    }
}

fn model_field(m: &InlineStr<64>) -> Field<'_> {
    if m.is_empty() {
        Field::Null
    } else {
        Field::Inline(m, is_clean(m.as_str().as_bytes()))
    }
}

/// Appends `rec` to `out` as one JSON object followed by `'\n'`.
///
/// Fields, in order: `ts` (RFC 3339 UTC with microseconds), `request_id` (32
/// hex chars), `shard`, `client_key`, `client_protocol`, `provider`,
/// `credential`, `method`, `route`, `model`, `model_served`, `stream`,
/// `status`, `upstream_status`, `bytes_in`, `bytes_out`, `latency_us`,
/// `upstream_latency_us`, `ttfb_us`, `input_tokens`, `output_tokens`,
/// `cached_tokens`, `retries`, `error`.
///
/// Absent values (`None`, an empty model name, `ErrorClass::None`) are
/// `null`. Name indexes are resolved through `names`; an index with no entry
/// is written as `"#<index>"`. Strings are escaped per RFC 8259.
pub fn encode_json_line(rec: &AccessRecord, names: &Names, out: &mut Vec<u8>) {
    let key = name_field(rec.client_key, &names.client_keys);
    let provider = name_field(rec.provider, &names.providers);
    let credential = name_field(rec.credential, &names.credentials);
    let model = model_field(&rec.model_requested);
    let served = model_field(&rec.model_served);
    let bound = FIXED_MAX
        + SLACK
        + key.bound()
        + provider.bound()
        + credential.bound()
        + model.bound()
        + served.bound();
    let start = out.len();
    out.resize(start + bound, 0);
    let mut c = Cursor::new(&mut out[start..]);

    c.lit(b"{\"ts\":\"");
    c.rfc3339(rec.timestamp_us);
    c.lit(b"\",\"request_id\":\"");
    c.hex16(&rec.request_id);
    c.lit(b"\",\"shard\":");
    c.u64(rec.shard as u64);
    c.lit(b",\"client_key\":");
    c.field(key);
    c.lit(b",\"client_protocol\":\"");
    c.padded(&PROTOCOL_PADDED[rec.client_protocol as usize]);
    c.lit(b"\",\"provider\":");
    c.field(provider);
    c.lit(b",\"credential\":");
    c.field(credential);
    c.lit(b",\"method\":\"");
    c.padded(&METHOD_PADDED[rec.method as usize]);
    c.lit(b"\",\"route\":\"");
    c.padded(&ROUTE_PADDED[rec.route as usize]);
    c.lit(b"\",\"model\":");
    c.field(model);
    c.lit(b",\"model_served\":");
    c.field(served);
    if rec.stream {
        c.lit(b",\"stream\":true,\"status\":");
    } else {
        c.lit(b",\"stream\":false,\"status\":");
    }
    c.u64(rec.status as u64);
    c.lit(b",\"upstream_status\":");
    c.opt(rec.upstream_status.map(u64::from));
    c.lit(b",\"bytes_in\":");
    c.u64(rec.bytes_in);
    c.lit(b",\"bytes_out\":");
    c.u64(rec.bytes_out);
    c.lit(b",\"latency_us\":");
    c.u64(rec.latency_us);
    c.lit(b",\"upstream_latency_us\":");
    c.opt(rec.upstream_latency_us.map(u64::from));
    c.lit(b",\"ttfb_us\":");
    c.opt(rec.ttfb_us.map(u64::from));
    c.lit(b",\"input_tokens\":");
    c.opt(rec.input_tokens.map(u64::from));
    c.lit(b",\"output_tokens\":");
    c.opt(rec.output_tokens.map(u64::from));
    c.lit(b",\"cached_tokens\":");
    c.opt(rec.cached_tokens.map(u64::from));
    c.lit(b",\"retries\":");
    c.u64(rec.retries as u64);
    if rec.error_class == ErrorClass::None {
        c.lit(b",\"error\":null}\n");
    } else {
        c.lit(b",\"error\":\"");
        c.padded(&ERROR_PADDED[rec.error_class as usize]);
        c.lit(b"\"}\n");
    }
    let len = c.pos;
    out.truncate(start + len);
}

/// [`encode_json_line`] plus the bodies attached to the record: the line
/// ends with `,"request_body":"...","response_body":"..."}` and `'\n'`.
///
/// The bodies are written as JSON strings: escaped per RFC 8259 (so the
/// line stays one line) and decoded as UTF-8 with every invalid sequence
/// replaced by U+FFFD, as [`String::from_utf8_lossy`] does (see
/// [`write_json_bytes_lossy`]). They are written as given: redact and cap
/// them before they are pushed. Lines of records without bodies have no
/// such fields (they are left out, not `null`).
pub fn encode_json_line_with_bodies(
    rec: &AccessRecord,
    names: &Names,
    request_body: &[u8],
    response_body: &[u8],
    out: &mut Vec<u8>,
) {
    encode_json_line(rec, names, out);
    debug_assert!(out.ends_with(b"}\n"));
    out.truncate(out.len() - 2);
    out.reserve(request_body.len() + response_body.len() + 2 * ESCAPE_SLACK + 40);
    out.extend_from_slice(b",\"request_body\":");
    write_json_bytes_lossy(request_body, out);
    out.extend_from_slice(b",\"response_body\":");
    write_json_bytes_lossy(response_body, out);
    out.extend_from_slice(b"}\n");
}

/// Room reserved up front for escapes; more is reserved as needed.
const ESCAPE_SLACK: usize = 64;

/// Appends `bytes` as a quoted JSON string: valid UTF-8 is copied (escaped
/// per RFC 8259 like [`write_json_str`]), each maximal invalid sequence
/// becomes U+FFFD, exactly as in [`String::from_utf8_lossy`].
pub fn write_json_bytes_lossy(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        escape_into(chunk.valid().as_bytes(), out);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
    out.push(b'"');
}

/// Appends `s` (valid UTF-8) escaped, without quotes: runs of bytes that
/// need no escape are copied in one piece.
fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    let mut run = 0;
    for (i, &b) in s.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&s[run..i]);
        run = i + 1;
        if short != 0 {
            out.extend_from_slice(&[b'\\', short]);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        }
    }
    out.extend_from_slice(&s[run..]);
}

/// Enum names padded to 32 bytes, with their real length, so that they can
/// be copied with one fixed-size move.
type Padded = ([u8; 32], usize);

const fn pad_all<const M: usize>(names: &[&str]) -> [Padded; M] {
    let mut out = [([0u8; 32], 0usize); M];
    let mut i = 0;
    while i < names.len() {
        let b = names[i].as_bytes();
        assert!(b.len() <= 32);
        let mut j = 0;
        while j < b.len() {
            out[i].0[j] = b[j];
            j += 1;
        }
        out[i].1 = b.len();
        i += 1;
    }
    out
}

use super::record::{ClientProtocol, HttpMethod, Route};
static PROTOCOL_PADDED: [Padded; 16] = pad_all(ClientProtocol::NAMES);
static METHOD_PADDED: [Padded; 16] = pad_all(HttpMethod::NAMES);
static ROUTE_PADDED: [Padded; 16] = pad_all(Route::NAMES);
static ERROR_PADDED: [Padded; 16] = pad_all(ErrorClass::NAMES);

/// A write position in a byte slice that the caller sized for the worst
/// case. Out-of-bounds writes panic (a bug in the bounds above), they never
/// corrupt memory.
pub(crate) struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Copies a literal (its length is a constant once inlined).
    #[inline(always)]
    fn lit(&mut self, s: &[u8]) {
        self.buf[self.pos..self.pos + s.len()].copy_from_slice(s);
        self.pos += s.len();
    }

    /// Copies a padded enum name: 32 bytes moved, `len` kept.
    #[inline(always)]
    fn padded(&mut self, p: &Padded) {
        self.buf[self.pos..self.pos + 32].copy_from_slice(&p.0);
        self.pos += p.1;
    }

    #[inline]
    fn field(&mut self, f: Field<'_>) {
        match f {
            Field::Null => self.lit(b"null"),
            Field::Str(s, true) => {
                self.buf[self.pos] = b'"';
                let b = s.as_bytes();
                self.buf[self.pos + 1..self.pos + 1 + b.len()].copy_from_slice(b);
                self.pos += b.len() + 1;
                self.buf[self.pos] = b'"';
                self.pos += 1;
            }
            Field::Inline(s, true) => {
                // Copy all 64 bytes (a fixed-size move), keep `len`.
                self.buf[self.pos] = b'"';
                self.buf[self.pos + 1..self.pos + 65].copy_from_slice(s.raw_bytes());
                self.pos += s.len() + 1;
                self.buf[self.pos] = b'"';
                self.pos += 1;
            }
            Field::Str(s, false) => self.escaped(s),
            Field::Inline(s, false) => self.escaped(s.as_str()),
            Field::Unknown(i) => {
                self.lit(b"\"#");
                self.u64(i as u64);
                self.lit(b"\"");
            }
        }
    }

    /// Writes `s` quoted and escaped per RFC 8259: `"` and `\\` are
    /// backslash-escaped, control characters use the short forms (`\\n`,
    /// `\\r`, `\\t`, `\\b`, `\\f`) or `\\u00XX`; everything else, non-ASCII
    /// included, is copied (the input is valid UTF-8).
    fn escaped(&mut self, s: &str) {
        self.buf[self.pos] = b'"';
        self.pos += 1;
        for &b in s.as_bytes() {
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x08 => b'b',
                0x0c => b'f',
                0..=0x1f => 0,
                _ => {
                    self.buf[self.pos] = b;
                    self.pos += 1;
                    continue;
                }
            };
            if short != 0 {
                self.buf[self.pos] = b'\\';
                self.buf[self.pos + 1] = short;
                self.pos += 2;
            } else {
                self.buf[self.pos..self.pos + 4].copy_from_slice(b"\\u00");
                self.buf[self.pos + 4] = HEX[(b >> 4) as usize];
                self.buf[self.pos + 5] = HEX[(b & 15) as usize];
                self.pos += 6;
            }
        }
        self.buf[self.pos] = b'"';
        self.pos += 1;
    }

    #[inline]
    fn opt(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.u64(v),
            None => self.lit(b"null"),
        }
    }

    /// Decimal digits of `v`, written in place (two at a time, backwards).
    #[inline]
    fn u64(&mut self, mut v: u64) {
        let n = match v.checked_ilog10() {
            Some(l) => l as usize + 1,
            None => 1,
        };
        let digits = &mut self.buf[self.pos..self.pos + n];
        let mut i = n;
        while v >= 100 {
            let r = (v % 100) as usize * 2;
            v /= 100;
            i -= 2;
            digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
        }
        if v >= 10 {
            let r = v as usize * 2;
            digits[..2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
        } else {
            digits[0] = b'0' + v as u8;
        }
        self.pos += n;
    }

    /// Exactly two digits of `v` (< 100) at `at`.
    #[inline(always)]
    fn two(d: &mut [u8], at: usize, v: u32) {
        let r = v as usize * 2;
        d[at..at + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    }

    #[inline]
    fn hex16(&mut self, bytes: &[u8; 16]) {
        let d = &mut self.buf[self.pos..self.pos + 32];
        for (i, &b) in bytes.iter().enumerate() {
            d[2 * i] = HEX[(b >> 4) as usize];
            d[2 * i + 1] = HEX[(b & 15) as usize];
        }
        self.pos += 32;
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 bytes) of a unix time in micros.
    fn rfc3339(&mut self, unix_us: u64) {
        let secs = unix_us / 1_000_000;
        let micros = (unix_us % 1_000_000) as u32;
        let days = (secs / 86_400) as i64;
        let sod = (secs % 86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        if (0..=9999).contains(&y) {
            let y = y as u32;
            let o = &mut self.buf[self.pos..self.pos + 4];
            Self::two(o, 0, y / 100);
            Self::two(o, 2, y % 100);
            self.pos += 4;
        } else {
            // Past year 9999: out of RFC 3339's range, still unambiguous.
            self.u64(y as u64);
        }
        let o = &mut self.buf[self.pos..self.pos + 23];
        o[0] = b'-';
        Self::two(o, 1, m);
        o[3] = b'-';
        Self::two(o, 4, d);
        o[6] = b'T';
        Self::two(o, 7, sod / 3600);
        o[9] = b':';
        Self::two(o, 10, sod / 60 % 60);
        o[12] = b':';
        Self::two(o, 13, sod % 60);
        o[15] = b'.';
        Self::two(o, 16, micros / 10_000);
        Self::two(o, 18, micros / 100 % 100);
        Self::two(o, 20, micros % 100);
        o[22] = b'Z';
        self.pos += 23;
    }
}

/// Runs `f` on a cursor over room for `max` bytes at the end of `out`.
fn with_cursor(out: &mut Vec<u8>, max: usize, f: impl FnOnce(&mut Cursor<'_>)) {
    let start = out.len();
    out.resize(start + max + SLACK, 0);
    let mut c = Cursor::new(&mut out[start..]);
    f(&mut c);
    let len = c.pos;
    out.truncate(start + len);
}

/// Appends the decimal form of `v`.
#[cfg(test)]
fn write_u64(v: u64, out: &mut Vec<u8>) {
    with_cursor(out, 20, |c| c.u64(v));
}

/// Appends `s` as a quoted JSON string, escaped per RFC 8259.
pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    let clean = is_clean(s.as_bytes());
    with_cursor(out, escaped_bound(s.len(), clean), |c| {
        c.field(Field::Str(s, clean))
    });
}

/// Appends `unix_us` as RFC 3339 UTC with microseconds,
/// e.g. `1970-01-01T00:00:00.000000Z`.
pub fn write_rfc3339_micros(unix_us: u64, out: &mut Vec<u8>) {
    with_cursor(out, 64, |c| c.rfc3339(unix_us));
}

/// Civil date (year, month 1-12, day 1-31) of `days` since 1970-01-01.
/// Howard Hinnant's `civil_from_days`, valid for the whole `i64` day range
/// we can get from a `u64` of microseconds.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYYMMDD-HHMMSS` of a unix time in seconds (UTC), for rotated file names.
pub fn compact_utc(unix_secs: u64) -> String {
    let (y, m, d) = civil_from_days((unix_secs / 86_400) as i64);
    let sod = unix_secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::super::record::*;
    use super::*;
    use serde_json::Value;

    fn rfc(us: u64) -> String {
        let mut v = Vec::new();
        write_rfc3339_micros(us, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc(1), "1970-01-01T00:00:00.000001Z");
        // 2024-02-29T12:34:56.789012Z (leap day).
        assert_eq!(rfc(1_709_210_096_789_012), "2024-02-29T12:34:56.789012Z");
        // 2000-02-29 (leap year divisible by 400).
        assert_eq!(rfc(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        // 2100-03-01: 2100 is not a leap year, the day after 02-28 is 03-01.
        assert_eq!(rfc(4_107_456_000_000_000), "2100-02-28T00:00:00.000000Z");
        assert_eq!(
            rfc(4_107_456_000_000_000 + 86_400_000_000),
            "2100-03-01T00:00:00.000000Z"
        );
        assert_eq!(rfc(1_735_689_599_999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(rfc(1_735_689_600_000_000), "2025-01-01T00:00:00.000000Z");
        // Must not panic on the extreme.
        let _ = rfc(u64::MAX);
    }

    #[test]
    fn civil_matches_day_by_day_walk() {
        // Walk every day from 1970 to 2200 and compare with a naive calendar.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..(230 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let dim = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][m as usize - 1];
            d += 1;
            if d > dim {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn compact() {
        assert_eq!(compact_utc(1_709_210_096), "20240229-123456");
    }

    #[test]
    fn integers() {
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    fn names() -> Names {
        Names {
            client_keys: vec!["team-a".into(), "ci\"bot".into()],
            providers: vec!["openai".into(), "anthropic".into()],
            credentials: vec!["cred-0".into(), "oauth/qwen.json".into()],
        }
    }

    fn full_record() -> AccessRecord {
        AccessRecord {
            timestamp_us: 1_709_210_096_789_012,
            request_id: [
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
                0x32, 0x10,
            ],
            shard: 1,
            client_key: Some(1),
            client_protocol: ClientProtocol::Anthropic,
            provider: Some(0),
            credential: Some(1),
            method: HttpMethod::Post,
            route: Route::Messages,
            model_requested: ModelName::new("claude-sonnet-4"),
            model_served: ModelName::new("gpt-4o"),
            stream: true,
            status: 200,
            upstream_status: Some(201),
            bytes_in: 1234,
            bytes_out: u64::MAX,
            latency_us: 56_789,
            upstream_latency_us: Some(50_000),
            ttfb_us: Some(1_500),
            input_tokens: Some(10),
            output_tokens: Some(20),
            cached_tokens: Some(0),
            retries: 2,
            error_class: ErrorClass::UpstreamStatus,
        }
    }

    fn encode(rec: &AccessRecord, names: &Names) -> Value {
        let mut out = Vec::new();
        encode_json_line(rec, names, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn every_field() {
        let v = encode(&full_record(), &names());
        let o = v.as_object().unwrap();
        let expected = [
            "ts",
            "request_id",
            "shard",
            "client_key",
            "client_protocol",
            "provider",
            "credential",
            "method",
            "route",
            "model",
            "model_served",
            "stream",
            "status",
            "upstream_status",
            "bytes_in",
            "bytes_out",
            "latency_us",
            "upstream_latency_us",
            "ttfb_us",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "retries",
            "error",
        ];
        assert_eq!(o.len(), expected.len());
        for k in expected {
            assert!(o.contains_key(k), "missing {k}");
        }
        assert_eq!(v["ts"], "2024-02-29T12:34:56.789012Z");
        assert_eq!(v["request_id"], "0123456789abcdeffedcba9876543210");
        assert_eq!(v["shard"], 1);
        assert_eq!(v["client_key"], "ci\"bot");
        assert_eq!(v["client_protocol"], "anthropic");
        assert_eq!(v["provider"], "openai");
        assert_eq!(v["credential"], "oauth/qwen.json");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["route"], "messages");
        assert_eq!(v["model"], "claude-sonnet-4");
        assert_eq!(v["model_served"], "gpt-4o");
        assert_eq!(v["stream"], true);
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream_status"], 201);
        assert_eq!(v["bytes_in"], 1234);
        assert_eq!(v["bytes_out"], u64::MAX);
        assert_eq!(v["latency_us"], 56_789);
        assert_eq!(v["upstream_latency_us"], 50_000);
        assert_eq!(v["ttfb_us"], 1_500);
        assert_eq!(v["input_tokens"], 10);
        assert_eq!(v["output_tokens"], 20);
        assert_eq!(v["cached_tokens"], 0);
        assert_eq!(v["retries"], 2);
        assert_eq!(v["error"], "upstream_status");
    }

    #[test]
    fn nulls() {
        let rec = AccessRecord::default();
        let v = encode(&rec, &Names::default());
        for k in [
            "client_key",
            "provider",
            "credential",
            "model",
            "model_served",
            "upstream_status",
            "upstream_latency_us",
            "ttfb_us",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "error",
        ] {
            assert!(v[k].is_null(), "{k} should be null: {}", v[k]);
        }
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["request_id"], "0".repeat(32));
        assert_eq!(v["stream"], false);
        assert_eq!(v["status"], 0);
        assert_eq!(v["client_protocol"], "openai_chat");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["route"], "unknown");
    }

    #[test]
    fn unknown_name_index() {
        let rec = AccessRecord {
            client_key: Some(7),
            provider: Some(65535),
            ..Default::default()
        };
        let v = encode(&rec, &names());
        assert_eq!(v["client_key"], "#7");
        assert_eq!(v["provider"], "#65535");
    }

    #[test]
    fn odd_model_names() {
        let odd = [
            "a\"b\\c",
            "line\nbreak\r\ttab",
            "\u{0}\u{1}\u{1f}\u{8}\u{c}",
            "ünïcødé/模型-🦀",
            "</script>",
            "\u{7f}\u{2028}\u{2029}",
        ];
        for m in odd {
            let rec = AccessRecord {
                model_requested: ModelName::new(m),
                model_served: ModelName::new(m),
                ..Default::default()
            };
            let v = encode(&rec, &names());
            assert_eq!(v["model"], m);
            assert_eq!(v["model_served"], m);
        }
        // Truncated at 64 bytes on a char boundary, still valid JSON.
        let long = "é".repeat(40); // 80 bytes
        let rec = AccessRecord {
            model_requested: ModelName::new(&long),
            ..Default::default()
        };
        let v = encode(&rec, &names());
        assert_eq!(v["model"].as_str().unwrap(), "é".repeat(32));
    }

    /// The longest line without its strings stays within `FIXED_MAX`.
    #[test]
    fn worst_case_fits_fixed_bound() {
        let rec = AccessRecord {
            timestamp_us: u64::MAX,
            request_id: [0xff; 16],
            shard: u16::MAX,
            client_key: None,
            client_protocol: ClientProtocol::OpenAiResponses,
            provider: None,
            credential: None,
            method: HttpMethod::Options,
            route: Route::StreamGenerateContent,
            model_requested: ModelName::EMPTY,
            model_served: ModelName::EMPTY,
            stream: false,
            status: u16::MAX,
            upstream_status: Some(u16::MAX),
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            latency_us: u64::MAX,
            upstream_latency_us: Some(u32::MAX),
            ttfb_us: Some(u32::MAX),
            input_tokens: Some(u32::MAX),
            output_tokens: Some(u32::MAX),
            cached_tokens: Some(u32::MAX),
            retries: u8::MAX,
            error_class: ErrorClass::UpstreamProtocol,
        };
        let mut out = Vec::new();
        encode_json_line(&rec, &Names::default(), &mut out);
        assert!(out.len() + 5 * 4 <= FIXED_MAX, "{}", out.len());
        serde_json::from_slice::<Value>(&out).unwrap();
        for names in [
            ClientProtocol::NAMES,
            HttpMethod::NAMES,
            Route::NAMES,
            ErrorClass::NAMES,
        ] {
            assert!(names.len() <= 16);
            assert!(names.iter().all(|n| n.len() <= 32));
        }
    }

    /// Random records with nasty strings: always valid JSON with the same
    /// values, appended after existing content.
    #[test]
    fn random_records_roundtrip() {
        let alphabet: Vec<char> = "ab\"\\\n\r\t\u{0}\u{1f}\u{7f}é模🦀/ -_.".chars().collect();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = b"previous line\n".to_vec();
        for _ in 0..2000 {
            let mut string = |max: u64| -> String {
                let n = next() % (max + 1);
                (0..n)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            let names = Names {
                client_keys: vec![string(40)],
                providers: vec![string(300)],
                credentials: vec![string(10)],
            };
            let m1 = string(80);
            let m2 = string(80);
            let rec = AccessRecord {
                timestamp_us: next() >> (next() % 64),
                bytes_in: next() >> (next() % 64),
                client_key: Some(0),
                provider: Some(0),
                credential: Some((next() % 2) as u16),
                model_requested: ModelName::new(&m1),
                model_served: ModelName::new(&m2),
                upstream_status: (next() % 2 == 0).then_some(503),
                ..Default::default()
            };
            let start = out.len();
            encode_json_line(&rec, &names, &mut out);
            let v: Value = serde_json::from_slice(&out[start..]).unwrap();
            assert_eq!(v["client_key"], names.client_keys[0].as_str());
            assert_eq!(v["provider"], names.providers[0].as_str());
            for (k, m) in [
                ("model", rec.model_requested),
                ("model_served", rec.model_served),
            ] {
                if m.is_empty() {
                    assert!(v[k].is_null());
                } else {
                    assert_eq!(v[k], m.as_str());
                }
            }
            assert_eq!(v["bytes_in"], rec.bytes_in);
            let mut ts = Vec::new();
            write_rfc3339_micros(rec.timestamp_us, &mut ts);
            assert_eq!(v["ts"].as_str().unwrap().as_bytes(), &ts[..]);
        }
        assert!(out.starts_with(b"previous line\n"));
    }

    #[test]
    fn lossy_bytes_match_from_utf8_lossy() {
        let cases: &[&[u8]] = &[
            b"",
            b"plain",
            b"quote\" back\\ nl\n cr\r tab\t bs\x08 ff\x0c nul\x00 us\x1f del\x7f",
            "ünïcødé 模型 🦀 \u{2028}".as_bytes(),
            b"\xff",
            b"a\xffb\xfe\xfdc",
            b"\xe6\xa8",                     // cut 3-byte sequence
            b"\xf0\x9f\xa6",                 // cut 4-byte sequence
            b"ok\xf0\x9f\xa6\x80ok\xc0\xaf", // valid crab, overlong '/'
            b"\xed\xa0\x80",                 // surrogate
        ];
        for &c in cases {
            let mut out = b"x".to_vec();
            write_json_bytes_lossy(c, &mut out);
            assert!(!out[1..].contains(&b'\n'));
            let s = std::str::from_utf8(&out[1..]).unwrap();
            let v: Value = serde_json::from_str(s).unwrap();
            assert_eq!(v.as_str().unwrap(), String::from_utf8_lossy(c), "{c:?}");
        }
        // Control characters use the short forms, like write_json_str.
        let mut a = Vec::new();
        write_json_bytes_lossy(b"\"\\\n\r\t\x08\x0c\x01", &mut a);
        assert_eq!(a, b"\"\\\"\\\\\\n\\r\\t\\b\\f\\u0001\"");
    }

    #[test]
    fn line_with_bodies() {
        let mut out = Vec::new();
        encode_json_line_with_bodies(
            &full_record(),
            &names(),
            b"{\"messages\":[{\"content\":\"line1\nline2\"}]}",
            b"data: {\"x\":1}\n\ndata: [DONE]\n\n\xff",
            &mut out,
        );
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 26);
        // The bodies come last, in this order.
        let text = std::str::from_utf8(&out).unwrap();
        let at = |k: &str| text.find(k).unwrap();
        assert!(at("\"error\":") < at("\"request_body\":"));
        assert!(at("\"request_body\":") < at("\"response_body\":"));
        assert_eq!(
            v["request_body"],
            "{\"messages\":[{\"content\":\"line1\nline2\"}]}"
        );
        assert_eq!(
            v["response_body"],
            "data: {\"x\":1}\n\ndata: [DONE]\n\n\u{FFFD}"
        );
        assert_eq!(v["error"], "upstream_status");
        // Everything before the bodies is the plain line.
        let mut plain = Vec::new();
        encode_json_line(&full_record(), &names(), &mut plain);
        assert!(out.starts_with(&plain[..plain.len() - 2]));
    }

    #[test]
    fn escapes_short_forms() {
        let mut out = Vec::new();
        write_json_str("\"\\\n\r\t\u{8}\u{c}\u{1}", &mut out);
        assert_eq!(out, b"\"\\\"\\\\\\n\\r\\t\\b\\f\\u0001\"");
    }
}
