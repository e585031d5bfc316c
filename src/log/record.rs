//! The access record: a fixed-size, `Copy`, heap-free description of one
//! request, small enough (<= 256 bytes) to be pushed through a per-shard ring
//! at tens of millions of records per second.
//!
//! Strings that vary per request (the model names) are stored inline and
//! truncated; strings that come from a small, fixed set (client key ids,
//! provider names, credential ids) are stored as `u16` indexes into a
//! [`Names`] table that the writer is given once at start. Secrets never enter
//! a record: a credential is identified by its *id* in the names table.

use std::fmt;

/// Names that records refer to by index, handed once to the writer.
///
/// Put ids and display names here, never secrets: whatever is in these tables
/// is written to the log verbatim. An index with no entry is rendered as
/// `"#<index>"` so that a stale table never loses information.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Client key ids (the configured name of each client API key).
    pub client_keys: Vec<String>,
    /// Provider names.
    pub providers: Vec<String>,
    /// Credential ids (file names or configured ids, never the secret).
    pub credentials: Vec<String>,
}

/// A string of at most `N` bytes (N <= 255) stored inline.
///
/// Built from a `&str` by [`InlineStr::new`], which truncates on a UTF-8
/// character boundary, so the content is always valid UTF-8.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InlineStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    /// Compile-time guard: the length must fit the `u8` length field.
    const FITS: () = assert!(N <= u8::MAX as usize, "InlineStr<N> needs N <= 255");

    /// The empty string.
    pub const EMPTY: Self = {
        #[allow(clippy::let_unit_value)]
        let () = Self::FITS;
        InlineStr {
            len: 0,
            bytes: [0; N],
        }
    };

    /// Copies `s`, truncated to at most `N` bytes on a character boundary.
    #[inline]
    pub fn new(s: &str) -> Self {
        let mut len = s.len().min(N);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut out = Self::EMPTY;
        out.bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        out.len = len as u8;
        out
    }

    /// The stored string.
    #[inline]
    pub fn as_str(&self) -> &str {
        let bytes = &self.bytes[..self.len as usize];
        // SAFETY: the fields are private and the only constructors are
        // `EMPTY` (zero length) and `new`, which copies a prefix of a `&str`
        // that ends on a char boundary, so `bytes` is always valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// All `N` bytes of storage (the string, then zeros).
    #[inline]
    pub(crate) fn raw_bytes(&self) -> &[u8; N] {
        &self.bytes
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the string is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<const N: usize> fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> From<&str> for InlineStr<N> {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// Inline model name: up to 64 bytes.
pub type ModelName = InlineStr<64>;

macro_rules! u8_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            #[default]
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The names, indexed by `self as u8`.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name written to the log.
            #[inline]
            pub fn as_str(self) -> &'static str {
                Self::NAMES[self as usize]
            }

            /// The variant with index `i`, if any.
            #[inline]
            pub fn from_u8(i: u8) -> Option<Self> {
                Self::ALL.get(i as usize).copied()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

u8_enum! {
    /// Why a request failed, as a small index into a static names table.
    /// `None` (the default) means it did not fail and is logged as `null`.
    pub enum ErrorClass {
        /// No error.
        None => "none",
        /// The client's request was malformed or invalid (4xx from us).
        BadRequest => "bad_request",
        /// Missing or wrong client key.
        Auth => "auth",
        /// Unknown route or model.
        NotFound => "not_found",
        /// Request body or head over its limit.
        PayloadTooLarge => "payload_too_large",
        /// Our own deadline for the client request expired.
        Timeout => "timeout",
        /// Could not connect to the upstream (DNS, TCP, TLS).
        UpstreamConnect => "upstream_connect",
        /// The upstream did not answer in time.
        UpstreamTimeout => "upstream_timeout",
        /// The upstream answered with an error status.
        UpstreamStatus => "upstream_status",
        /// The upstream's answer could not be parsed or translated.
        UpstreamProtocol => "upstream_protocol",
        /// The client went away before the answer was complete.
        ClientDisconnect => "client_disconnect",
        /// A bug or an unexpected internal failure.
        Internal => "internal",
    }
}

u8_enum! {
    /// The API dialect the client spoke.
    pub enum ClientProtocol {
        /// OpenAI `/v1/chat/completions`.
        OpenAiChat => "openai_chat",
        /// OpenAI `/v1/responses`.
        OpenAiResponses => "openai_responses",
        /// Anthropic `/v1/messages`.
        Anthropic => "anthropic",
        /// Gemini `generateContent` / `streamGenerateContent`.
        Gemini => "gemini",
        /// Anything else (health checks, model lists, unknown routes).
        Other => "other",
    }
}

u8_enum! {
    /// HTTP request method.
    pub enum HttpMethod {
        /// GET
        Get => "GET",
        /// POST
        Post => "POST",
        /// PUT
        Put => "PUT",
        /// DELETE
        Delete => "DELETE",
        /// PATCH
        Patch => "PATCH",
        /// HEAD
        Head => "HEAD",
        /// OPTIONS
        Options => "OPTIONS",
        /// Any other method.
        Other => "OTHER",
    }
}

u8_enum! {
    /// The route the request matched.
    pub enum Route {
        /// No route matched.
        Unknown => "unknown",
        /// `POST /v1/chat/completions`
        ChatCompletions => "chat_completions",
        /// `POST /v1/responses`
        Responses => "responses",
        /// `POST /v1/messages`
        Messages => "messages",
        /// `POST /v1/messages/count_tokens`
        CountTokens => "count_tokens",
        /// Gemini `:generateContent`
        GenerateContent => "generate_content",
        /// Gemini `:streamGenerateContent`
        StreamGenerateContent => "stream_generate_content",
        /// Gemini `:countTokens`
        GeminiCountTokens => "gemini_count_tokens",
        /// `POST /v1/embeddings` and Gemini `:embedContent`
        Embeddings => "embeddings",
        /// `GET /v1/models` and friends.
        Models => "models",
        /// Health check.
        Health => "health",
        /// Metrics endpoint.
        Metrics => "metrics",
        /// Some other route we serve.
        Other => "other",
    }
}

/// One access-log record. Fixed size, `Copy`, no heap.
///
/// Field order is chosen for packing (8-byte fields first); the JSON field
/// order is fixed by [`encode_json_line`](super::encode_json_line) instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessRecord {
    /// Request start, unix time in microseconds (UTC).
    pub timestamp_us: u64,
    /// Bytes of request body received from the client.
    pub bytes_in: u64,
    /// Bytes of response body sent to the client.
    pub bytes_out: u64,
    /// Total time from the request head to the last byte sent, microseconds.
    pub latency_us: u64,
    /// Time spent waiting on/streaming from the upstream, microseconds.
    pub upstream_latency_us: Option<u32>,
    /// Time to first byte of the answer sent to the client, microseconds.
    pub ttfb_us: Option<u32>,
    /// Prompt tokens as reported by the upstream.
    pub input_tokens: Option<u32>,
    /// Completion tokens as reported by the upstream.
    pub output_tokens: Option<u32>,
    /// Cached prompt tokens as reported by the upstream.
    pub cached_tokens: Option<u32>,
    /// Request id (rendered as 32 lowercase hex characters).
    pub request_id: [u8; 16],
    /// Shard (core) that served the request.
    pub shard: u16,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Index into [`Names::client_keys`].
    pub client_key: Option<u16>,
    /// Index into [`Names::providers`].
    pub provider: Option<u16>,
    /// Index into [`Names::credentials`].
    pub credential: Option<u16>,
    /// HTTP status the upstream answered with (last attempt).
    pub upstream_status: Option<u16>,
    /// Protocol the client spoke.
    pub client_protocol: ClientProtocol,
    /// HTTP method.
    pub method: HttpMethod,
    /// Matched route.
    pub route: Route,
    /// Whether the answer was streamed.
    pub stream: bool,
    /// Retries on other credentials/providers before the final attempt.
    pub retries: u8,
    /// Failure class, `ErrorClass::None` on success.
    pub error_class: ErrorClass,
    /// Model the client asked for (empty = absent).
    pub model_requested: ModelName,
    /// Model the upstream served (empty = absent).
    pub model_served: ModelName,
}

impl AccessRecord {
    /// A failure worth keeping regardless of sampling: status >= 400 or an
    /// error class other than `None`.
    #[inline]
    pub fn is_error(&self) -> bool {
        self.status >= 400 || self.error_class != ErrorClass::None
    }
}

/// Generates unique request ids on one shard without coordination: 8 bytes of
/// a per-process random prefix, the shard number and a 48-bit counter.
#[derive(Clone, Debug)]
pub struct RequestIdGen {
    prefix: [u8; 8],
    shard: u16,
    counter: u64,
}

impl RequestIdGen {
    /// `seed` should differ per process start (e.g. from the clock and pid);
    /// see [`RequestIdGen::from_entropy`].
    pub fn new(shard: u16, seed: u64) -> Self {
        RequestIdGen {
            prefix: super::sample::splitmix64(seed).to_be_bytes(),
            shard,
            counter: 0,
        }
    }

    /// Seeds from the wall clock, the process id and std's random hasher keys.
    pub fn from_entropy(shard: u16) -> Self {
        Self::new(shard, super::sample::entropy_seed())
    }

    /// The next id.
    #[inline]
    pub fn next_id(&mut self) -> [u8; 16] {
        self.counter = self.counter.wrapping_add(1);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.prefix);
        id[8..10].copy_from_slice(&self.shard.to_be_bytes());
        id[10..].copy_from_slice(&self.counter.to_be_bytes()[2..]);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_small() {
        assert!(std::mem::size_of::<AccessRecord>() <= 256);
        assert_eq!(std::mem::size_of::<AccessRecord>(), 248);
    }

    #[test]
    fn inline_str_truncates_on_char_boundary() {
        let s: InlineStr<4> = InlineStr::new("abcdef");
        assert_eq!(s.as_str(), "abcd");
        // "é" is 2 bytes: "aéé" = 5 bytes, truncating to 4 must not split.
        let s: InlineStr<4> = InlineStr::new("aéé");
        assert_eq!(s.as_str(), "aé");
        let s: InlineStr<4> = InlineStr::new("🦀x");
        assert_eq!(s.as_str(), "🦀");
        let s: InlineStr<3> = InlineStr::new("🦀");
        assert_eq!(s.as_str(), "");
        assert!(s.is_empty());
        let long = "m".repeat(100);
        let m = ModelName::new(&long);
        assert_eq!(m.len(), 64);
    }

    #[test]
    fn enum_names() {
        assert_eq!(ErrorClass::None.as_str(), "none");
        assert_eq!(ErrorClass::Internal.as_str(), "internal");
        assert_eq!(ErrorClass::ALL.len(), ErrorClass::NAMES.len());
        for (i, e) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
            assert_eq!(ErrorClass::from_u8(i as u8), Some(*e));
        }
        assert_eq!(ErrorClass::from_u8(200), None);
        assert_eq!(ClientProtocol::OpenAiChat.as_str(), "openai_chat");
        assert_eq!(ClientProtocol::Gemini.to_string(), "gemini");
        assert_eq!(HttpMethod::Post.as_str(), "POST");
        assert_eq!(Route::ChatCompletions.as_str(), "chat_completions");
    }

    #[test]
    fn request_ids_unique() {
        let mut g = RequestIdGen::new(3, 42);
        let a = g.next_id();
        let b = g.next_id();
        assert_ne!(a, b);
        assert_eq!(&a[8..10], &[0, 3]);
        let mut h = RequestIdGen::new(4, 42);
        assert_ne!(h.next_id(), a);
    }

    #[test]
    fn is_error() {
        let mut r = AccessRecord {
            status: 200,
            ..Default::default()
        };
        assert!(!r.is_error());
        r.status = 404;
        assert!(r.is_error());
        r.status = 200;
        r.error_class = ErrorClass::ClientDisconnect;
        assert!(r.is_error());
    }
}
