//! Server-sent events (sans-IO): a parser that takes bytes as they arrive
//! and yields whole events, and the writer for the events the gateway sends.
//!
//! The parser follows the WHATWG event-stream rules that matter between
//! machines: lines end in LF, CRLF or CR; `data:` lines of one event are
//! joined with LF; `event:` names it; a blank line dispatches it; lines
//! starting with `:` are comments; one space after the colon is dropped.
//! `id:` and `retry:` are accepted and ignored (no client here reconnects).
//!
//! Boundaries are found with memchr, and an event's data is collected into
//! a buffer the parser owns and reuses, so a stream costs no allocation per
//! event once warm. The data buffer is handed out mutably because simd-json
//! parses in place.

use memchr::memchr2;

/// The longest event the parser accepts, data and name together. A stream
/// that sends a longer one is broken or hostile; the parser reports it
/// rather than buffering without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug)]
pub struct Event<'a> {
    /// The `event:` field; empty when the event had none (the default
    /// `message` type).
    pub name: &'a str,
    /// The `data:` lines joined with `\n`. Mutable so it can be parsed in
    /// place; its contents are undefined after the event is handled.
    pub data: &'a mut Vec<u8>,
}

/// Why a stream could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseError {
    /// An event grew past [`MAX_EVENT_BYTES`].
    EventTooLarge,
    /// A field name or value is not UTF-8 (event names must be text; data is
    /// checked by the JSON parser that reads it).
    InvalidUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::EventTooLarge => write!(f, "an event is larger than {MAX_EVENT_BYTES} bytes"),
            SseError::InvalidUtf8 => f.write_str("an event name is not UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

/// An incremental event-stream parser.
#[derive(Default)]
pub struct Parser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The event being collected.
    name: String,
    data: Vec<u8>,
    /// Whether the event has at least one `data` line (an event with a name
    /// and no data is not dispatched, as browsers do).
    has_data: bool,
    /// The previous chunk ended in CR: an LF starting this one belongs to it.
    after_cr: bool,
}

impl Parser {
    pub fn new() -> Self {
        Parser::default()
    }

    /// Feeds `input`, calling `on_event` for every event completed by it.
    /// `on_event` returning `Err` stops the parse and passes its error on.
    pub fn feed<E: From<SseError>>(
        &mut self,
        mut input: &[u8],
        mut on_event: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if input.is_empty() {
            return Ok(());
        }
        if self.after_cr {
            self.after_cr = false;
            if input.first() == Some(&b'\n') {
                input = &input[1..];
            }
        }
        while let Some(end) = memchr2(b'\n', b'\r', input) {
            let line_end_cr = input[end] == b'\r';
            if self.line.is_empty() {
                self.line_done(&input[..end], &mut on_event)?;
            } else {
                self.check_size(end)?;
                self.line.extend_from_slice(&input[..end]);
                let line = std::mem::take(&mut self.line);
                let result = self.line_done(&line, &mut on_event);
                self.line = line;
                self.line.clear();
                result?;
            }
            input = &input[end + 1..];
            if line_end_cr {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if !input.is_empty() {
            self.check_size(input.len())?;
            self.line.extend_from_slice(input);
        }
        Ok(())
    }

    /// Whether the parser holds part of an event: a stream that ends here
    /// was cut off mid-event.
    pub fn is_mid_event(&self) -> bool {
        !self.line.is_empty() || self.has_data || !self.name.is_empty()
    }

    fn check_size(&self, more: usize) -> Result<(), SseError> {
        if self.line.len() + self.data.len() + self.name.len() + more > MAX_EVENT_BYTES {
            Err(SseError::EventTooLarge)
        } else {
            Ok(())
        }
    }

    fn line_done<E: From<SseError>>(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let result = on_event(Event {
                    name: &self.name,
                    data: &mut self.data,
                });
                self.data.clear();
                self.name.clear();
                return result;
            }
            self.name.clear();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.check_size(value.len() + 1)?;
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                let name = std::str::from_utf8(value).map_err(|_| SseError::InvalidUtf8)?;
                self.name.clear();
                self.name.push_str(name);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Appends one event: an optional `event:` line, the data (one `data:` line
/// per line of it), and the blank line that ends it.
pub fn write_event(out: &mut Vec<u8>, name: Option<&str>, data: &[u8]) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Starts an event whose single-line data the caller appends next (JSON
/// written straight into `out`, no intermediate buffer); finish it with
/// [`end_event`]. The data must not contain a line break, which holds for
/// compact JSON.
pub fn begin_event(out: &mut Vec<u8>, name: Option<&str>) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
}

/// Ends an event begun with [`begin_event`].
pub fn end_event(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = Parser::new();
        let mut events = Vec::new();
        for c in chunks {
            p.feed::<SseError>(c, |e| {
                events.push((
                    e.name.to_string(),
                    String::from_utf8(e.data.clone()).unwrap(),
                ));
                Ok(())
            })
            .unwrap();
        }
        events
    }

    #[test]
    fn parses_named_and_unnamed_events() {
        let events = parse_all(&[b"event: message_start\ndata: {\"a\":1}\n\ndata: [DONE]\n\n"]);
        assert_eq!(
            events,
            vec![
                ("message_start".into(), "{\"a\":1}".into()),
                ("".into(), "[DONE]".into())
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let stream: &[u8] =
            b": comment\r\nevent: e1\r\ndata:x\r\ndata: y\r\n\r\nid: 3\nretry: 10\ndata: z\r\rdata:\n\n";
        let whole = parse_all(&[stream]);
        assert_eq!(
            whole,
            vec![
                ("e1".into(), "x\ny".into()),
                ("".into(), "z".into()),
                ("".into(), "".into())
            ]
        );
        for i in 0..stream.len() {
            for j in i..stream.len() {
                let got = parse_all(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(got, whole, "split at {i} and {j}");
            }
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        assert!(parse_all(&[b"event: ping\n\n"]).is_empty());
        let mut p = Parser::new();
        p.feed::<SseError>(b"data: partial", |_| Ok(())).unwrap();
        assert!(p.is_mid_event());
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = Parser::new();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(&big);
        assert_eq!(
            p.feed::<SseError>(&line, |_| Ok(())),
            Err(SseError::EventTooLarge)
        );
    }

    #[test]
    fn writer_output_parses_back() {
        let mut out = Vec::new();
        write_event(&mut out, Some("delta"), b"line1\nline2");
        begin_event(&mut out, None);
        out.extend_from_slice(b"{\"x\":1}");
        end_event(&mut out);
        assert_eq!(
            parse_all(&[&out]),
            vec![
                ("delta".into(), "line1\nline2".into()),
                ("".into(), "{\"x\":1}".into())
            ]
        );
    }
}
