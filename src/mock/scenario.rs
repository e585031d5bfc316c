//! What the mock answers, independent of the protocol it answers in: the
//! scenario the model name picks, what a request asks for ([`Ask`]), and the
//! answer built from both ([`Answer`]). The protocol modules only render an
//! [`Answer`] in their own wire shapes.

use simd_json::prelude::*;
use simd_json::tape::Value;

use crate::protocol::json::{write_string, write_value};

/// The canned answer of the default scenario.
pub const ANSWER: &str = "Hello from the shardgate mock provider.";

/// The streamed pieces of the canned answer, cycled `stream_chunks` times.
/// Tests compare streamed text against this list, so it stays as it is.
pub const WORDS: &[&str] = &[
    "Hello",
    " from",
    " the",
    " shardgate",
    " mock",
    " provider",
    ".",
    " ",
];

/// The reasoning of the `think` scenario.
pub const THINKING: &str = "The user wrote to the mock provider, so a canned answer will do.";

/// The signature of the mock's thinking blocks. Real signatures are opaque
/// base64; this one is base64 too so clients that decode it do not choke.
pub const SIGNATURE: &str = "bW9jay10aGlua2luZy1zaWduYXR1cmU=";

/// How many characters of a tool result the follow-up answer quotes.
const TOOL_RESULT_QUOTE: usize = 200;

/// What the model name asks of the mock. Several can combine (`think` with
/// a tool call, `mock-slow-50` with a stream error).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scenario {
    /// `mock-error-<status>`: answer with this error status.
    pub error: Option<u16>,
    /// `mock-slow-<ms>`: wait this long before answering.
    pub slow_ms: Option<u64>,
    /// `mock-close`: close the connection without answering.
    pub close: bool,
    /// `think`: a thinking block before the answer.
    pub think: bool,
    /// `parallel-tools`: two tool calls instead of one.
    pub parallel_tools: bool,
    /// `mock-stream-error`: a stream ends in the protocol's error event.
    pub stream_error: bool,
    /// `mock-stream-truncate`: a stream is cut off before its end.
    pub stream_truncate: bool,
    /// `mock-fault-<mode>`: a transport-level fault.
    pub fault: Option<super::fault::Fault>,
}

impl Scenario {
    /// Reads the scenario from a model name. Matching is by substring so
    /// that gateway model aliases and Gemini's `models/` prefix still work.
    pub fn of(model: &str) -> Scenario {
        let number_after = |tag: &str| {
            let at = model.find(tag)? + tag.len();
            let digits: &str = &model[at..];
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            digits[..end].parse::<u64>().ok()
        };
        Scenario {
            error: number_after("mock-error-")
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| matches!(s, 400..=599)),
            slow_ms: number_after("mock-slow-"),
            close: model.contains("mock-close"),
            think: model.contains("think"),
            parallel_tools: model.contains("parallel-tools"),
            stream_error: model.contains("mock-stream-error"),
            stream_truncate: model.contains("mock-stream-truncate"),
            fault: super::fault::parse(model.as_bytes()),
        }
    }
}

/// A tool the request declared, with the arguments the mock will call it
/// with (compact JSON, built from its parameter schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolDecl {
    pub name: String,
    pub args: String,
}

impl ToolDecl {
    /// A declaration named `name` whose parameters follow `schema` (a JSON
    /// schema object, or anything else for no parameters).
    pub fn new(name: &str, schema: Option<Value<'_, '_>>) -> ToolDecl {
        ToolDecl {
            name: name.to_string(),
            args: sample_arguments(schema),
        }
    }
}

/// What a request asks for, read the same way from every protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask {
    /// The client wants an event stream.
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`.
    pub include_usage: bool,
    /// The first two declared tools (only those are ever called).
    pub tools: Vec<ToolDecl>,
    /// The text of the tool result the conversation ends with, if it does.
    pub tool_result: Option<String>,
    /// Input token count reported back: a quarter of the body's length.
    pub input_tokens: u64,
}

impl Ask {
    /// A request with no tools and no tool result.
    pub fn plain(stream: bool, body_len: usize) -> Ask {
        Ask {
            stream,
            input_tokens: input_tokens(body_len),
            ..Ask::default()
        }
    }

    /// Keeps the first two tools of a declaration list (more are never
    /// called, so their schemas are not worth reading).
    pub fn add_tool(&mut self, tool: impl FnOnce() -> Option<ToolDecl>) {
        if self.tools.len() < 2 {
            if let Some(t) = tool() {
                self.tools.push(t);
            }
        }
    }
}

/// The input token count the mock reports for a body of `len` bytes.
pub fn input_tokens(len: usize) -> u64 {
    (len as u64 / 4).max(1)
}

/// Text of an answer: the canned answer (streamed as [`WORDS`]) or a text
/// made for this request (streamed word by word).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Text {
    Canned,
    Owned(String),
}

impl Text {
    /// The whole text, as a non-streamed answer carries it.
    pub fn full(&self) -> &str {
        match self {
            Text::Canned => ANSWER,
            Text::Owned(s) => s,
        }
    }

    /// The streamed pieces. The canned text keeps its historical shape:
    /// exactly `chunks` words, cycling through [`WORDS`].
    pub fn pieces(&self, chunks: usize) -> Vec<&str> {
        match self {
            Text::Canned => (0..chunks).map(|i| WORDS[i % WORDS.len()]).collect(),
            Text::Owned(s) => s.split_inclusive(' ').collect(),
        }
    }
}

/// One block of an answer, in answer order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// Reasoning shown before the answer (with [`SIGNATURE`]).
    Thinking(Text),
    Text(Text),
    /// A call of a declared tool; `index` counts tool calls from 0 and
    /// makes the call ids unique.
    ToolCall {
        index: usize,
        name: String,
        args: String,
    },
}

/// Why the answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    EndTurn,
    ToolUse,
}

/// A complete answer, ready to be rendered in any protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub blocks: Vec<Block>,
    pub stop: Stop,
    pub input_tokens: u64,
    /// How many content events a stream of this answer has; reported as
    /// the output token count whether streamed or not.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on thinking (Gemini reports it
    /// apart).
    pub thinking_tokens: u64,
    /// Content events per text block in a stream of the canned text.
    pub chunks: usize,
}

impl Answer {
    /// The answer to `ask` under `scenario`. `chunks` is the configured
    /// number of streamed content events of the canned text.
    pub fn build(scenario: &Scenario, ask: &Ask, chunks: usize) -> Answer {
        let mut blocks = Vec::with_capacity(3);
        if scenario.think {
            blocks.push(Block::Thinking(Text::Owned(THINKING.to_string())));
        }
        let stop = if let Some(result) = &ask.tool_result {
            let quoted: String = result.chars().take(TOOL_RESULT_QUOTE).collect();
            blocks.push(Block::Text(Text::Owned(format!("The tool said: {quoted}"))));
            Stop::EndTurn
        } else if let Some(first) = ask.tools.first() {
            let second = match (scenario.parallel_tools, ask.tools.get(1)) {
                (false, _) => None,
                (true, Some(t)) => Some(t),
                (true, None) => Some(first),
            };
            for (index, tool) in std::iter::once(first).chain(second).enumerate() {
                blocks.push(Block::ToolCall {
                    index,
                    name: tool.name.clone(),
                    args: tool.args.clone(),
                });
            }
            Stop::ToolUse
        } else {
            blocks.push(Block::Text(Text::Canned));
            Stop::EndTurn
        };
        let mut answer = Answer {
            blocks,
            stop,
            input_tokens: ask.input_tokens,
            output_tokens: 0,
            thinking_tokens: 0,
            chunks,
        };
        for block in &answer.blocks {
            let n = answer.pieces(block).len() as u64;
            answer.output_tokens += n;
            if matches!(block, Block::Thinking(_)) {
                answer.thinking_tokens += n;
            }
        }
        answer
    }

    /// The streamed pieces of `block`: words of a text, or a tool call's
    /// arguments JSON cut in three (so clients must join partial JSON).
    pub fn pieces<'b>(&self, block: &'b Block) -> Vec<&'b str> {
        match block {
            Block::Thinking(t) | Block::Text(t) => t.pieces(self.chunks),
            Block::ToolCall { args, .. } => split_in_three(args),
        }
    }

    /// The thinking text, if the answer has one.
    pub fn thinking(&self) -> Option<&str> {
        self.blocks.iter().find_map(|b| match b {
            Block::Thinking(t) => Some(t.full()),
            _ => None,
        })
    }

    /// The answer's text, if it has one.
    pub fn text(&self) -> Option<&str> {
        self.blocks.iter().find_map(|b| match b {
            Block::Text(t) => Some(t.full()),
            _ => None,
        })
    }

    /// The tool calls: (index, name, arguments JSON).
    pub fn tool_calls(&self) -> impl Iterator<Item = (usize, &str, &str)> {
        self.blocks.iter().filter_map(|b| match b {
            Block::ToolCall { index, name, args } => Some((*index, name.as_str(), args.as_str())),
            _ => None,
        })
    }
}

/// Cuts `s` into three pieces at character boundaries (empty pieces are
/// dropped, so very short strings give fewer).
fn split_in_three(s: &str) -> Vec<&str> {
    let mut cuts = [s.len() / 3, 2 * s.len() / 3];
    for cut in &mut cuts {
        while !s.is_char_boundary(*cut) {
            *cut += 1;
        }
    }
    [&s[..cuts[0]], &s[cuts[0]..cuts[1]], &s[cuts[1]..]]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect()
}

/// Arguments for a tool with parameter schema `schema`: every property gets
/// a sample value of its type (see the module docs of `mock`).
pub fn sample_arguments(schema: Option<Value<'_, '_>>) -> String {
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    let props = schema
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object());
    if let Some(props) = props {
        for (i, (name, prop)) in props.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(&mut out, name);
            out.push(b':');
            write_sample(&mut out, name, prop);
        }
    }
    out.push(b'}');
    // Only valid UTF-8 was written: the names and values come from &str.
    String::from_utf8(out).unwrap_or_default()
}

fn write_sample(out: &mut Vec<u8>, name: &str, prop: Value<'_, '_>) {
    // An enum's first member is the only kind of value sure to validate.
    if let Some(first) = prop.get("enum").and_then(|e| e.get_idx(0)) {
        write_value(out, &first);
        return;
    }
    // `type` may be a list (["string", "null"]); Gemini writes it upper case.
    let ty = match prop.get("type") {
        Some(t) if t.is_array() => t
            .as_array()
            .and_then(|a| {
                a.iter()
                    .filter_map(|v| v.into_string())
                    .find(|s| *s != "null")
            })
            .unwrap_or("string"),
        Some(t) => t.into_string().unwrap_or("string"),
        None => "string",
    };
    let value: &[u8] = match ty.to_ascii_lowercase().as_str() {
        "number" | "integer" => b"1",
        "boolean" => b"true",
        "array" => b"[]",
        "object" => b"{}",
        _ if matches!(name, "location" | "city") => b"\"Paris\"",
        _ => b"\"mock\"",
    };
    out.extend_from_slice(value);
}

/// The text of a tool result's content: a string, or the text parts of a
/// list of content blocks (`{"type":"text","text":...}`) joined.
pub fn content_text(content: Option<Value<'_, '_>>) -> String {
    let Some(content) = content else {
        return String::new();
    };
    if let Some(s) = content.as_str() {
        return s.to_string();
    }
    let mut text = String::new();
    if let Some(parts) = content.as_array() {
        for part in parts.iter() {
            if let Some(t) = part.get("text").and_then(|t| t.into_string()) {
                text.push_str(t);
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::json::parse;

    fn args_for(schema: &str) -> String {
        let mut body = schema.as_bytes().to_vec();
        let mut buffers = simd_json::Buffers::default();
        let tape = parse(&mut body, &mut buffers).unwrap();
        sample_arguments(Some(tape.as_value()))
    }

    #[test]
    fn scenarios_are_read_from_anywhere_in_the_name() {
        let s = Scenario::of("models/mock-error-429");
        assert_eq!(s.error, Some(429));
        assert_eq!(Scenario::of("x-mock-slow-25-think").slow_ms, Some(25));
        assert!(Scenario::of("claude-think").think);
        assert!(Scenario::of("mock-parallel-tools").parallel_tools);
        assert_eq!(Scenario::of("gpt-4o"), Scenario::default());
        assert_eq!(Scenario::of("mock-error-999").error, None);
    }

    #[test]
    fn arguments_follow_the_schema() {
        let args = args_for(
            r#"{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["celsius","fahrenheit"]},
            "days":{"type":"integer"},"x":{"type":["number","null"]},"ok":{"type":"BOOLEAN"},"l":{"type":"array"},"o":{"type":"object"},"s":{}}}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&args).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"location":"Paris","unit":"celsius","days":1,"x":1,"ok":true,"l":[],"o":{},"s":"mock"})
        );
        assert_eq!(args_for("{}"), "{}");
        assert_eq!(sample_arguments(None), "{}");
    }

    #[test]
    fn tool_arguments_stream_in_three_pieces() {
        let pieces = split_in_three(r#"{"city":"Paris"}"#);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), r#"{"city":"Paris"}"#);
        assert_eq!(split_in_three("é").concat(), "é");
    }

    #[test]
    fn answers_pick_tools_results_and_thinking() {
        let tool = ToolDecl {
            name: "get_weather".into(),
            args: r#"{"location":"Paris"}"#.into(),
        };
        let mut ask = Ask::plain(false, 100);
        assert_eq!(ask.input_tokens, 25);
        ask.tools.push(tool.clone());
        let a = Answer::build(&Scenario::of("m"), &ask, 8);
        assert_eq!(a.stop, Stop::ToolUse);
        assert_eq!(a.tool_calls().count(), 1);
        assert_eq!(a.output_tokens, 3);

        let a = Answer::build(&Scenario::of("parallel-tools"), &ask, 8);
        assert_eq!(a.tool_calls().map(|c| c.0).collect::<Vec<_>>(), [0, 1]);

        ask.tool_result = Some("x".repeat(300));
        let a = Answer::build(&Scenario::of("think"), &ask, 8);
        assert_eq!(a.stop, Stop::EndTurn);
        assert_eq!(a.thinking(), Some(THINKING));
        assert_eq!(a.text().unwrap().len(), "The tool said: ".len() + 200);
        assert!(a.thinking_tokens > 0 && a.output_tokens > a.thinking_tokens);

        let a = Answer::build(&Scenario::default(), &Ask::plain(true, 0), 8);
        assert_eq!(a.text(), Some(ANSWER));
        assert_eq!(a.output_tokens, 8);
        assert_eq!(a.input_tokens, 1);
    }
}
