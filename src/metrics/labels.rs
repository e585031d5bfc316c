//! The fixed label sets: routes, HTTP status slots and latency kinds.
//!
//! Everything here is a closed set known at compile time, so the per-shard
//! counters are plain arrays indexed by these enums: no hashing, no
//! allocation on the request path.

/// The API route a request was dispatched to.
///
/// The router maps paths onto these; anything it does not know is
/// [`Route::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Route {
    /// `POST /v1/chat/completions` (OpenAI).
    ChatCompletions,
    /// `POST /v1/responses` (OpenAI Responses).
    Responses,
    /// `POST /v1/messages` (Anthropic).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic).
    CountTokens,
    /// `POST /v1beta/models/*:generateContent` (Gemini).
    GeminiGenerate,
    /// `POST /v1beta/models/*:streamGenerateContent` (Gemini).
    GeminiStream,
    /// `POST /v1beta/models/*:countTokens` (Gemini).
    GeminiCountTokens,
    /// `GET /v1/models` and friends.
    Models,
    /// Liveness probe.
    Health,
    /// Readiness probe.
    Ready,
    /// The metrics and stats endpoints themselves.
    Metrics,
    /// Admin endpoints (in-flight list, reloads, ...).
    Admin,
    /// Anything else (including 404s for unknown paths).
    Other,
}

impl Route {
    /// Number of routes; the length of per-route counter arrays.
    pub const COUNT: usize = 13;

    /// Every route, in index order.
    pub const ALL: [Route; Route::COUNT] = [
        Route::ChatCompletions,
        Route::Responses,
        Route::Messages,
        Route::CountTokens,
        Route::GeminiGenerate,
        Route::GeminiStream,
        Route::GeminiCountTokens,
        Route::Models,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Admin,
        Route::Other,
    ];

    /// The label value used in Prometheus and JSON output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Responses => "responses",
            Route::Messages => "messages",
            Route::CountTokens => "count_tokens",
            Route::GeminiGenerate => "gemini_generate",
            Route::GeminiStream => "gemini_stream",
            Route::GeminiCountTokens => "gemini_count_tokens",
            Route::Models => "models",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::Admin => "admin",
            Route::Other => "other",
        }
    }

    /// The index of this route in per-route arrays (`0..Route::COUNT`).
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// The HTTP status codes that get their own counter; every other code is
/// counted in the trailing `"other"` slot.
pub const STATUS_CODES: [u16; 15] = [
    200, 400, 401, 403, 404, 405, 408, 413, 429, 431, 499, 500, 502, 503, 504,
];

/// Number of exact-status slots: one per [`STATUS_CODES`] entry plus "other".
pub const STATUS_SLOTS: usize = STATUS_CODES.len() + 1;

/// Label values for the exact-status slots, in slot order.
pub const STATUS_SLOT_LABELS: [&str; STATUS_SLOTS] = [
    "200", "400", "401", "403", "404", "405", "408", "413", "429", "431", "499", "500", "502",
    "503", "504", "other",
];

/// The exact-status slot of `code`: its index in [`STATUS_CODES`], or
/// `STATUS_SLOTS - 1` ("other").
#[inline]
pub const fn status_slot(code: u16) -> usize {
    match code {
        200 => 0,
        400 => 1,
        401 => 2,
        403 => 3,
        404 => 4,
        405 => 5,
        408 => 6,
        413 => 7,
        429 => 8,
        431 => 9,
        499 => 10,
        500 => 11,
        502 => 12,
        503 => 13,
        504 => 14,
        _ => STATUS_SLOTS - 1,
    }
}

/// Number of status classes: 1xx .. 5xx plus "other" (codes outside 100..=599).
pub const STATUS_CLASSES: usize = 6;

/// Label values of the status classes, in index order.
pub const STATUS_CLASS_LABELS: [&str; STATUS_CLASSES] =
    ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The status class index of `code` (0 = 1xx ... 4 = 5xx, 5 = other).
#[inline]
pub const fn status_class(code: u16) -> usize {
    match code {
        100..=599 => (code / 100 - 1) as usize,
        _ => STATUS_CLASSES - 1,
    }
}

/// The latency histograms every shard keeps. All are recorded in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Latency {
    /// From the request head being parsed to the last response byte written.
    Total,
    /// From the upstream request being sent to the upstream response being complete.
    Upstream,
    /// From the request head being parsed to the first content token written
    /// to the client (streaming requests).
    FirstToken,
}

impl Latency {
    /// Number of latency kinds.
    pub const COUNT: usize = 3;

    /// Every kind, in index order.
    pub const ALL: [Latency; Latency::COUNT] =
        [Latency::Total, Latency::Upstream, Latency::FirstToken];

    /// Index in per-kind arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Short key used in the JSON stats (`total`, `upstream`, `ttft`).
    pub const fn json_key(self) -> &'static str {
        match self {
            Latency::Total => "total",
            Latency::Upstream => "upstream",
            Latency::FirstToken => "ttft",
        }
    }

    /// Prometheus family name (base unit seconds).
    pub const fn prometheus_name(self) -> &'static str {
        match self {
            Latency::Total => "shardgate_request_duration_seconds",
            Latency::Upstream => "shardgate_upstream_duration_seconds",
            Latency::FirstToken => "shardgate_time_to_first_token_seconds",
        }
    }

    /// Prometheus HELP text.
    pub const fn help(self) -> &'static str {
        match self {
            Latency::Total => "Total request latency, head parsed to last byte written.",
            Latency::Upstream => "Upstream latency, request sent to response complete.",
            Latency::FirstToken => "Time from request head to the first token sent to the client.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_index_in_order() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn status_slots_match_table() {
        for (i, &code) in STATUS_CODES.iter().enumerate() {
            assert_eq!(status_slot(code), i);
            assert_eq!(STATUS_SLOT_LABELS[i], code.to_string());
        }
        assert_eq!(status_slot(201), STATUS_SLOTS - 1);
        assert_eq!(status_class(99), 5);
        assert_eq!(status_class(100), 0);
        assert_eq!(status_class(204), 1);
        assert_eq!(status_class(599), 4);
        assert_eq!(status_class(600), 5);
    }
}
