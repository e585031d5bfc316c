//! The intermediate form every translation goes through.
//!
//! Each protocol is one decoder into these types and one encoder out of
//! them, so four client protocols and three provider protocols need seven
//! codecs, not twelve pairwise translators. The types borrow from the parsed
//! request or response buffer (`'a`): strings are slices of the simd-json
//! tape where the protocols agree on a field's shape, and owned only where a
//! translation has to build a new value (a tool call's arguments serialised
//! from an object, a generated tool call id).
//!
//! Invariants the decoders guarantee and the encoders rely on are written on
//! each type.

use std::borrow::Cow;

pub use super::usage::Usage;

/// A parsed JSON value, borrowed from a simd-json tape. Used where the
/// gateway passes a value along without understanding it (tool schemas,
/// unknown content blocks).
pub type Json<'a> = simd_json::tape::Value<'a, 'a>;

/// The protocol a body is written in. The first three are both client and
/// provider protocols; the Responses API is only spoken to clients (a
/// Responses request is sent to an `openai` provider as Chat Completions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    OpenAiChat,
    OpenAiResponses,
    Anthropic,
    Gemini,
}

impl Dialect {
    /// The name used in logs, metrics and the tracker.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::OpenAiChat => "openai",
            Dialect::OpenAiResponses => "openai-responses",
            Dialect::Anthropic => "anthropic",
            Dialect::Gemini => "gemini",
        }
    }
}

/// A chat request in no protocol in particular.
#[derive(Debug, Default)]
pub struct Request<'a> {
    /// The model as the client named it. Gemini carries it in the URL; its
    /// decoder leaves this empty and the caller fills it in.
    pub model: Cow<'a, str>,
    /// System prompt / instructions, in order. Only `Part::Text` (and, for
    /// the same protocol, `Part::Raw`) appear here.
    pub system: Vec<Part<'a>>,
    /// The conversation, oldest first. Tool results travel in `User`
    /// messages (as Anthropic and Gemini put them); the OpenAI encoders turn
    /// them back into `tool` role messages.
    pub messages: Vec<Message<'a>>,
    pub tools: Vec<Tool<'a>>,
    pub tool_choice: Option<ToolChoice<'a>>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<Cow<'a, str>>,
    pub response_format: Option<ResponseFormat<'a>>,
    /// Extended thinking / reasoning, when the client asked for it.
    pub thinking: Option<Thinking>,
    /// Whether the client wants an event stream. Gemini carries this in the
    /// URL (`:streamGenerateContent`); the caller fills it in.
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: the client wants a final
    /// chunk with usage. Other protocols always report usage.
    pub include_usage: bool,
    /// An end-user id for abuse tracking (`user`, `metadata.user_id`).
    pub user: Option<Cow<'a, str>>,
}

/// Who said a message. System prompts are not messages: see
/// [`Request::system`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug)]
pub struct Message<'a> {
    pub role: Role,
    pub parts: Vec<Part<'a>>,
}

/// A piece of message content.
#[derive(Debug)]
pub enum Part<'a> {
    Text(Cow<'a, str>),
    Image(Image<'a>),
    /// Model reasoning. `signature` is Anthropic's opaque check value; it
    /// must come back unchanged in the next turn, so it is kept even when
    /// the client protocol cannot show it (the encoders that cannot carry it
    /// drop the whole block, as a provider would reject it unsigned).
    Thinking {
        text: Cow<'a, str>,
        signature: Option<Cow<'a, str>>,
    },
    /// Anthropic's encrypted reasoning block.
    RedactedThinking(Cow<'a, str>),
    /// The model asking for a tool (assistant messages and responses).
    ToolCall(ToolCall<'a>),
    /// The answer to a tool call (user messages).
    ToolResult(ToolResult<'a>),
    /// A content block this gateway does not understand, kept as JSON. Only
    /// an encoder of the same dialect writes it back; others drop it.
    Raw {
        dialect: Dialect,
        value: Json<'a>,
    },
}

/// Image content.
#[derive(Debug)]
pub enum Image<'a> {
    /// Inline bytes, base64-encoded, with their media type
    /// (`image/png`...). A `data:` URL is decoded into this form.
    Base64 {
        media_type: Cow<'a, str>,
        data: Cow<'a, str>,
    },
    /// An `http(s)` URL the provider fetches itself.
    Url(Cow<'a, str>),
}

/// A tool call made by the model.
#[derive(Debug)]
pub struct ToolCall<'a> {
    /// The call's id; a tool result refers to it. Protocols without ids
    /// (Gemini) get generated ones, `call_<n>`.
    pub id: Cow<'a, str>,
    pub name: Cow<'a, str>,
    /// The arguments as JSON text (an object). OpenAI sends text already;
    /// the object forms of Anthropic and Gemini are serialised to it.
    pub arguments: Cow<'a, str>,
}

/// The result of a tool call, sent back by the client.
#[derive(Debug)]
pub struct ToolResult<'a> {
    /// The id of the [`ToolCall`] this answers.
    pub call_id: Cow<'a, str>,
    /// The tool's name when the protocol carries it (Gemini needs it; the
    /// encoders find it from the matching call when this is `None`).
    pub name: Option<Cow<'a, str>>,
    /// `Part::Text` and `Part::Image` only.
    pub content: Vec<Part<'a>>,
    pub is_error: bool,
}

/// A tool the model may call.
#[derive(Debug)]
pub struct Tool<'a> {
    pub name: Cow<'a, str>,
    pub description: Option<Cow<'a, str>>,
    /// JSON Schema of the arguments object. Encoders clean it of the keys
    /// their protocol rejects.
    pub parameters: Option<Json<'a>>,
    /// OpenAI's strict schema adherence flag.
    pub strict: Option<bool>,
}

/// How the model may use tools.
#[derive(Debug, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    /// The model decides (the default everywhere).
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call, any tool (OpenAI `required`, Anthropic `any`,
    /// Gemini mode `ANY`).
    Required,
    /// This tool.
    Tool(Cow<'a, str>),
}

/// The shape the answer must have.
#[derive(Debug)]
pub enum ResponseFormat<'a> {
    Text,
    /// Any JSON object (OpenAI `json_object`, Gemini
    /// `responseMimeType: application/json`).
    JsonObject,
    JsonSchema {
        name: Cow<'a, str>,
        schema: Json<'a>,
        strict: Option<bool>,
    },
}

/// Reasoning requested by the client. Protocols express it either as a
/// token budget (Anthropic, Gemini) or as an effort level (OpenAI); each
/// encoder converts with [`Thinking::budget`] / [`Thinking::effort`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thinking {
    pub budget_tokens: Option<u64>,
    pub effort: Option<Effort>,
}

/// OpenAI's reasoning effort levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Effort> {
        match s {
            "minimal" => Some(Effort::Minimal),
            "low" => Some(Effort::Low),
            "medium" => Some(Effort::Medium),
            "high" => Some(Effort::High),
            _ => None,
        }
    }
}

impl Thinking {
    /// A token budget: the one given, or one derived from the effort.
    /// Anthropic's minimum budget is 1024.
    pub fn budget(&self) -> u64 {
        if let Some(b) = self.budget_tokens {
            return b.max(1024);
        }
        match self.effort {
            Some(Effort::Minimal) | Some(Effort::Low) => 1024,
            Some(Effort::Medium) | None => 8192,
            Some(Effort::High) => 24576,
        }
    }

    /// An effort level: the one given, or one derived from the budget.
    pub fn effort(&self) -> Effort {
        if let Some(e) = self.effort {
            return e;
        }
        match self.budget_tokens {
            Some(b) if b < 4096 => Effort::Low,
            Some(b) if b < 16384 => Effort::Medium,
            Some(_) => Effort::High,
            None => Effort::Medium,
        }
    }
}

/// A complete (non-streamed) answer.
#[derive(Debug, Default)]
pub struct Response<'a> {
    pub id: Cow<'a, str>,
    /// The model the provider reports. The gateway replaces it with the
    /// name the client asked for before encoding.
    pub model: Cow<'a, str>,
    /// `Text`, `Thinking`, `RedactedThinking` and `ToolCall` parts, in the
    /// order the model produced them.
    pub content: Vec<Part<'a>>,
    pub stop: StopReason,
    pub usage: Usage,
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    /// A natural end (OpenAI `stop`, Anthropic `end_turn`, Gemini `STOP`).
    #[default]
    EndTurn,
    /// The token limit (`length`, `max_tokens`, `MAX_TOKENS`).
    MaxTokens,
    /// A client stop sequence matched (OpenAI reports this as `stop`).
    StopSequence,
    /// The model called tools (`tool_calls`, `tool_use`; Gemini says `STOP`
    /// and has function calls in the content).
    ToolUse,
    /// Output withheld by a safety filter (`content_filter`, `refusal`,
    /// `SAFETY`...).
    ContentFilter,
}

/// One step of a streamed answer, in no protocol in particular.
///
/// Stream decoders emit, in this order: one `Start`; then content blocks,
/// each as `BlockStart`, any number of `Delta`s, `BlockStop`, with indices
/// counting up from 0 and **never two blocks open at once**; then one
/// `Finish`. A decoder that sees the upstream end before `Finish` reports
/// an error instead (see `StreamDecoder::finish` in each codec).
#[derive(Debug)]
pub enum StreamEvent<'a> {
    /// The answer begins.
    Start {
        id: Cow<'a, str>,
        model: Cow<'a, str>,
        /// Prompt tokens, when the provider says so up front (Anthropic).
        input_tokens: Option<u32>,
    },
    BlockStart {
        index: u32,
        block: BlockKind<'a>,
    },
    Delta {
        index: u32,
        delta: Delta<'a>,
    },
    BlockStop {
        index: u32,
    },
    /// The answer is complete: why it stopped and the final usage.
    Finish {
        stop: StopReason,
        usage: Usage,
    },
}

/// What a content block holds.
#[derive(Debug)]
pub enum BlockKind<'a> {
    Text,
    Thinking,
    /// Anthropic's encrypted reasoning, whole at start.
    RedactedThinking(Cow<'a, str>),
    /// A tool call; its arguments arrive as `Delta::ToolArguments`.
    ToolCall {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
    },
}

/// An increment of the open block.
#[derive(Debug)]
pub enum Delta<'a> {
    Text(Cow<'a, str>),
    Thinking(Cow<'a, str>),
    /// Anthropic's thinking signature (sent once, before the block stops).
    Signature(Cow<'a, str>),
    /// A piece of a tool call's arguments JSON text. Concatenated, the
    /// pieces are the whole arguments object.
    ToolArguments(Cow<'a, str>),
}

/// What a response encoder needs to know beyond the answer itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodeOptions {
    /// Unix seconds, for the protocols that stamp answers (`created`).
    pub created: u64,
    /// OpenAI Chat: send the usage chunk at the end of a stream (the
    /// client's `stream_options.include_usage`).
    pub include_usage: bool,
    /// Gemini: stream as a JSON array (`:streamGenerateContent` without
    /// `?alt=sse`) instead of server-sent events.
    pub json_array: bool,
}

/// An error, as any protocol reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The HTTP status the client should see.
    pub status: u16,
    pub kind: ErrorKind,
    pub message: String,
}

/// The kinds of error the protocols distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 and other client mistakes.
    InvalidRequest,
    /// 401.
    Authentication,
    /// 403.
    PermissionDenied,
    /// 404.
    NotFound,
    /// 413.
    RequestTooLarge,
    /// 429.
    RateLimited,
    /// 503 and Anthropic's 529: the provider is overloaded.
    Overloaded,
    /// 504 / an upstream timeout.
    Timeout,
    /// 500, 502 and anything else on the server side.
    Api,
}

impl ErrorKind {
    /// The kind a bare HTTP status implies.
    pub fn of_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimited,
            503 | 529 => ErrorKind::Overloaded,
            504 => ErrorKind::Timeout,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Api,
        }
    }
}

impl ErrorInfo {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ErrorInfo {
            status,
            kind: ErrorKind::of_status(status),
            message: message.into(),
        }
    }
}

/// Why a body could not be translated. Always the client's fault when it
/// comes from a request decoder (the gateway answers 400), the provider's
/// when it comes from a response decoder (502).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateError {
    pub message: String,
}

impl TranslateError {
    pub fn new(message: impl Into<String>) -> Self {
        TranslateError {
            message: message.into(),
        }
    }

    /// "`field` must be a `what`".
    pub fn wrong_type(field: &str, what: &str) -> Self {
        TranslateError::new(format!("`{field}` must be {what}"))
    }

    /// "`field` is required".
    pub fn missing(field: &str) -> Self {
        TranslateError::new(format!("`{field}` is required"))
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TranslateError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_converts_between_budget_and_effort() {
        let t = Thinking {
            budget_tokens: Some(2000),
            effort: None,
        };
        assert_eq!(t.effort(), Effort::Low);
        assert_eq!(t.budget(), 2000);
        let t = Thinking {
            budget_tokens: None,
            effort: Some(Effort::High),
        };
        assert_eq!(t.budget(), 24576);
        let t = Thinking {
            budget_tokens: Some(10),
            effort: None,
        };
        assert_eq!(t.budget(), 1024, "Anthropic's minimum");
    }

    #[test]
    fn error_kinds_follow_status() {
        assert_eq!(ErrorKind::of_status(529), ErrorKind::Overloaded);
        assert_eq!(ErrorKind::of_status(422), ErrorKind::InvalidRequest);
        assert_eq!(ErrorKind::of_status(502), ErrorKind::Api);
    }
}
