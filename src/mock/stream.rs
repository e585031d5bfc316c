//! A streamed answer as a list of pre-rendered events, so that the
//! scenarios which cut a stream short can do it the same way for every
//! protocol.

/// What an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Before the content: `message_start`, a role chunk, a block start.
    Head,
    /// One piece of content; paced by the chunk interval.
    Content,
    /// Ends the answer: finish reason, usage, `[DONE]`, `message_stop`.
    /// A cut-off stream never sends these.
    Tail,
    /// The last piece of content, carrying the end of the answer with it
    /// (Gemini's last chunk has the finish reason): paced like content,
    /// never sent by a cut-off stream.
    LastContent,
}

/// One event's bytes, in the body's own framing (SSE or a JSON array
/// element), before HTTP chunking.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: Kind,
    pub bytes: Vec<u8>,
}

/// Events being collected for one answer.
#[derive(Default)]
pub struct Events(pub Vec<Event>);

impl Events {
    /// Appends an event of `kind` whose bytes `render` writes.
    pub fn push(&mut self, kind: Kind, render: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = Vec::with_capacity(192);
        render(&mut bytes);
        self.0.push(Event { kind, bytes });
    }

    /// The events a stream cut short sends: everything up to the third
    /// content event, and never a [`Kind::Tail`] event.
    pub fn cut(self) -> Vec<Event> {
        const KEEP: usize = 3;
        let mut kept = Vec::new();
        let mut contents = 0;
        for ev in self.0 {
            match ev.kind {
                Kind::Tail | Kind::LastContent => break,
                Kind::Content => contents += 1,
                Kind::Head => {}
            }
            kept.push(ev);
            if contents == KEEP {
                break;
            }
        }
        kept
    }
}

/// The event names of an Anthropic-style SSE body, in order (`event:` lines).
#[cfg(test)]
pub fn event_names(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_string)
        .collect()
}

/// The `data:` payloads of an SSE body, parsed as JSON (`[DONE]` skipped).
#[cfg(test)]
pub fn data_json(body: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

/// All events' bytes joined.
#[cfg(test)]
pub fn concat(events: &[Event]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| e.bytes.iter().copied())
        .collect()
}
