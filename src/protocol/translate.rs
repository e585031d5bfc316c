//! Dispatch over the codecs: decode in one dialect, encode in another.
//!
//! The gateway picks the client dialect from the endpoint and the provider
//! dialect from the route, then calls these functions. Everything here is
//! synchronous and works on caller-owned buffers; the stream translator
//! keeps its parser and codec state between the pieces of an upstream body.

use std::borrow::Cow;

use simd_json::Buffers;

use super::ir::{
    Dialect, EncodeOptions, ErrorInfo, Json, Request, Response, StopReason, StreamEvent,
    TranslateError, Usage,
};
use super::{anthropic, gemini, openai_chat, openai_responses};
use crate::sse;

/// Decodes a client request written in `dialect`.
pub fn decode_request<'a>(dialect: Dialect, root: Json<'a>) -> Result<Request<'a>, TranslateError> {
    match dialect {
        Dialect::OpenAiChat => openai_chat::decode_request(root),
        Dialect::OpenAiResponses => openai_responses::decode_request(root),
        Dialect::Anthropic => anthropic::decode_request(root),
        Dialect::Gemini => gemini::decode_request(root),
    }
}

/// Encodes a provider request in `dialect`. A Responses request goes to
/// OpenAI-compatible providers as Chat Completions, the API every one of
/// them has.
pub fn encode_request(dialect: Dialect, req: &Request<'_>, out: &mut Vec<u8>) {
    match dialect {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => openai_chat::encode_request(req, out),
        Dialect::Anthropic => anthropic::encode_request(req, out),
        Dialect::Gemini => gemini::encode_request(req, out),
    }
}

/// Decodes a provider's complete answer.
pub fn decode_response<'a>(
    dialect: Dialect,
    root: Json<'a>,
) -> Result<Response<'a>, TranslateError> {
    match dialect {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => openai_chat::decode_response(root),
        Dialect::Anthropic => anthropic::decode_response(root),
        Dialect::Gemini => gemini::decode_response(root),
    }
}

/// Encodes a complete answer for the client.
pub fn encode_response(
    dialect: Dialect,
    resp: &Response<'_>,
    opts: &EncodeOptions,
    out: &mut Vec<u8>,
) {
    match dialect {
        Dialect::OpenAiChat => openai_chat::encode_response(resp, opts, out),
        Dialect::OpenAiResponses => openai_responses::encode_response(resp, opts, out),
        Dialect::Anthropic => anthropic::encode_response(resp, opts, out),
        Dialect::Gemini => gemini::encode_response(resp, opts, out),
    }
}

/// Reads a provider's error body (any bytes) into an [`ErrorInfo`].
pub fn decode_error(
    dialect: Dialect,
    status: u16,
    body: &mut [u8],
    buffers: &mut Buffers,
) -> ErrorInfo {
    match dialect {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => {
            openai_chat::decode_error(status, body, buffers)
        }
        Dialect::Anthropic => anthropic::decode_error(status, body, buffers),
        Dialect::Gemini => gemini::decode_error(status, body, buffers),
    }
}

/// Writes an error body in the client's dialect.
pub fn encode_error(dialect: Dialect, err: &ErrorInfo, out: &mut Vec<u8>) {
    match dialect {
        Dialect::OpenAiChat | Dialect::OpenAiResponses => openai_chat::encode_error(err, out),
        Dialect::Anthropic => anthropic::encode_error(err, out),
        Dialect::Gemini => gemini::encode_error(err, out),
    }
}

/// Parses and decodes a complete provider answer and encodes it for the
/// client, with the model name the client asked for. Returns the usage and
/// stop reason for the access log.
pub fn translate_response(
    provider: Dialect,
    client: Dialect,
    body: &mut [u8],
    client_model: &str,
    opts: &EncodeOptions,
    buffers: &mut Buffers,
    out: &mut Vec<u8>,
) -> Result<(Usage, StopReason), TranslateError> {
    let tape = super::json::parse(body, buffers)?;
    let mut resp = decode_response(provider, tape.as_value())?;
    resp.model = Cow::Borrowed(client_model);
    encode_response(client, &resp, opts, out);
    Ok((resp.usage, resp.stop))
}

enum Decoder {
    OpenAiChat(openai_chat::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
}

enum Encoder {
    OpenAiChat(openai_chat::StreamEncoder),
    OpenAiResponses(openai_responses::StreamEncoder),
    Anthropic(anthropic::StreamEncoder),
    Gemini(gemini::StreamEncoder),
}

impl Encoder {
    fn event(&mut self, ev: &StreamEvent<'_>, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAiChat(e) => e.event(ev, out),
            Encoder::OpenAiResponses(e) => e.event(ev, out),
            Encoder::Anthropic(e) => e.event(ev, out),
            Encoder::Gemini(e) => e.event(ev, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAiChat(e) => e.finish(out),
            Encoder::OpenAiResponses(e) => e.finish(out),
            Encoder::Anthropic(e) => e.finish(out),
            Encoder::Gemini(e) => e.finish(out),
        }
    }

    fn error(&mut self, err: &ErrorInfo, out: &mut Vec<u8>) {
        match self {
            Encoder::OpenAiChat(e) => e.error(err, out),
            Encoder::OpenAiResponses(e) => e.error(err, out),
            Encoder::Anthropic(e) => e.error(err, out),
            Encoder::Gemini(e) => e.error(err, out),
        }
    }
}

/// Where a stream translation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Events are flowing.
    Open,
    /// The answer completed and its terminal bytes were written.
    Done,
    /// An error event was written; nothing more will be.
    Failed,
}

/// Translates one upstream event stream into the client's, piece by piece.
///
/// Each piece of upstream body is split into events by the SSE parser,
/// decoded into [`StreamEvent`]s and encoded for the client at once: the
/// translator holds at most one partial event, never the answer.
pub struct StreamTranslator {
    parser: sse::Parser,
    decoder: Decoder,
    encoder: Encoder,
    buffers: Buffers,
    client_model: String,
    usage: Usage,
    stop: Option<StopReason>,
    state: StreamState,
    error: Option<ErrorInfo>,
}

impl StreamTranslator {
    /// A translator from `provider`'s stream to `client`'s, naming the
    /// model `client_model` in every event that names one.
    pub fn new(
        provider: Dialect,
        client: Dialect,
        client_model: &str,
        opts: EncodeOptions,
    ) -> Self {
        let decoder = match provider {
            Dialect::OpenAiChat | Dialect::OpenAiResponses => {
                Decoder::OpenAiChat(openai_chat::StreamDecoder::new())
            }
            Dialect::Anthropic => Decoder::Anthropic(anthropic::StreamDecoder::new()),
            Dialect::Gemini => Decoder::Gemini(gemini::StreamDecoder::new()),
        };
        let encoder = match client {
            Dialect::OpenAiChat => Encoder::OpenAiChat(openai_chat::StreamEncoder::new(opts)),
            Dialect::OpenAiResponses => {
                Encoder::OpenAiResponses(openai_responses::StreamEncoder::new(opts))
            }
            Dialect::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new(opts)),
            Dialect::Gemini => Encoder::Gemini(gemini::StreamEncoder::new(opts)),
        };
        StreamTranslator {
            parser: sse::Parser::new(),
            decoder,
            encoder,
            buffers: Buffers::default(),
            client_model: client_model.to_owned(),
            usage: Usage::default(),
            stop: None,
            state: StreamState::Open,
            error: None,
        }
    }

    pub fn state(&self) -> StreamState {
        self.state
    }

    /// The usage reported by the final event (or `Usage::default()`).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Why the model stopped, once the stream finished.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// The error the stream ended with, if it failed.
    pub fn error(&self) -> Option<&ErrorInfo> {
        self.error.as_ref()
    }

    /// Translates a piece of upstream body, appending client bytes to
    /// `out`. After a failure, further input is ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.state != StreamState::Open {
            return;
        }
        let StreamTranslator {
            parser,
            decoder,
            encoder,
            buffers,
            client_model,
            usage,
            stop,
            ..
        } = self;
        let result = parser.feed::<ErrorInfo>(input, |event| {
            let mut emit = |ev: StreamEvent<'_>| {
                relay(ev, client_model, usage, stop, encoder, out);
            };
            match decoder {
                Decoder::OpenAiChat(d) => d.event(event, buffers, &mut emit),
                Decoder::Anthropic(d) => d.event(event, buffers, &mut emit),
                Decoder::Gemini(d) => d.event(event, buffers, &mut emit),
            }
        });
        if let Err(err) = result {
            self.fail(err, out);
        }
    }

    /// The upstream body ended cleanly: writes the client's terminal
    /// events, or an error event when the upstream stopped mid-answer.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.state != StreamState::Open {
            return;
        }
        let StreamTranslator {
            decoder,
            encoder,
            client_model,
            usage,
            stop,
            ..
        } = self;
        let mut emit = |ev: StreamEvent<'_>| {
            relay(ev, client_model, usage, stop, encoder, out);
        };
        let result = match decoder {
            Decoder::OpenAiChat(d) => d.finish(&mut emit),
            Decoder::Anthropic(d) => d.finish(&mut emit),
            Decoder::Gemini(d) => d.finish(&mut emit),
        };
        match result {
            Ok(()) => {
                self.encoder.finish(out);
                self.state = StreamState::Done;
            }
            Err(err) => self.fail(err, out),
        }
    }

    /// The upstream failed (a reset, a timeout): writes the client's error
    /// event. Nothing is written after it.
    pub fn fail(&mut self, err: ErrorInfo, out: &mut Vec<u8>) {
        if self.state != StreamState::Open {
            return;
        }
        self.encoder.error(&err, out);
        self.error = Some(err);
        self.state = StreamState::Failed;
    }
}

/// Writes `dialect`'s mid-stream error event on its own, for a stream the
/// gateway relays without translating (so it has no encoder state).
pub fn write_stream_error(dialect: Dialect, err: &ErrorInfo, out: &mut Vec<u8>) {
    let opts = EncodeOptions::default();
    match dialect {
        Dialect::OpenAiChat => openai_chat::StreamEncoder::new(opts).error(err, out),
        Dialect::OpenAiResponses => openai_responses::StreamEncoder::new(opts).error(err, out),
        Dialect::Anthropic => anthropic::StreamEncoder::new(opts).error(err, out),
        Dialect::Gemini => gemini::StreamEncoder::new(opts).error(err, out),
    }
}

impl From<sse::SseError> for ErrorInfo {
    fn from(e: sse::SseError) -> Self {
        ErrorInfo::new(
            502,
            format!("the provider's event stream is malformed: {e}"),
        )
    }
}

/// Passes one decoded event to the encoder, with the client's model name
/// and noting what the access log needs.
fn relay(
    ev: StreamEvent<'_>,
    client_model: &str,
    usage: &mut Usage,
    stop: &mut Option<StopReason>,
    encoder: &mut Encoder,
    out: &mut Vec<u8>,
) {
    match ev {
        StreamEvent::Start {
            id, input_tokens, ..
        } => {
            if input_tokens.is_some() {
                usage.input = input_tokens;
            }
            let ev = StreamEvent::Start {
                id,
                model: Cow::Borrowed(client_model),
                input_tokens,
            };
            encoder.event(&ev, out);
        }
        StreamEvent::Finish { stop: s, usage: u } => {
            *stop = Some(s);
            *usage = Usage {
                input: u.input.or(usage.input),
                output: u.output.or(usage.output),
                cached: u.cached.or(usage.cached),
            };
            encoder.event(
                &StreamEvent::Finish {
                    stop: s,
                    usage: *usage,
                },
                out,
            );
        }
        ev => encoder.event(&ev, out),
    }
}

/// A fast estimate of a request's prompt tokens, for the count-tokens
/// endpoints when the provider cannot count in the client's protocol:
/// about four bytes of string content per token, as tokenizers average on
/// English and code. Keys and structure are not counted.
pub fn estimate_tokens(tape: &simd_json::tape::Tape<'_>) -> u64 {
    use simd_json::tape::Node;
    let bytes: usize = tape
        .0
        .iter()
        .map(|n| match n {
            Node::String(s) => s.len(),
            _ => 0,
        })
        .sum();
    // Object keys are strings on the tape too; they are a small share of a
    // prompt and stand in for the per-message overhead tokenizers add.
    (bytes as u64).div_ceil(4).max(1)
}
