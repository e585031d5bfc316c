//! Per-shard telemetry: the shard's metrics recorder, the process-wide
//! registry and in-flight tracker, and the admin endpoints that read them.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{
    render_json_stats, render_prometheus, InflightTracker, MetricsConfig, MetricsRegistry,
    RequestSample, ShardRecorder,
};

use super::exchange::{ErrorClass, Exchange};
use crate::log::{
    redact_and_cap_with, AccessRecord, ClientProtocol, LogProducer, LogStats, Route as LogRoute,
    Sampler,
};
use crate::metrics::Route;
use std::cell::RefCell;
use std::fmt::Write as _;

/// How often a shard publishes its histograms for scrapes.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// What all shards share: the registry, the tracker and the log writer's
/// counters.
pub struct SharedTelemetry {
    pub registry: Arc<MetricsRegistry>,
    pub tracker: Arc<InflightTracker>,
    pub log: Option<Arc<LogStats>>,
}

impl SharedTelemetry {
    /// Telemetry for `shards` shards serving `providers` (names, in config
    /// order), tracking at most `max_tracked` in-flight requests.
    pub fn new(
        shards: usize,
        providers: &[String],
        max_tracked: usize,
        log: Option<Arc<LogStats>>,
    ) -> Arc<Self> {
        let tracker = Arc::new(InflightTracker::new(max_tracked, shards));
        let registry = MetricsRegistry::new(
            MetricsConfig::new(shards)
                .error_classes(ErrorClass::ALL.iter().map(|c| c.as_str()))
                .providers(providers.iter().cloned())
                .tracker(tracker.clone()),
        );
        Arc::new(SharedTelemetry {
            registry,
            tracker,
            log,
        })
    }

    /// The Prometheus text exposition of every shard's metrics.
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        render_prometheus(&self.registry.snapshot(), &mut out);
        if let Some(log) = &self.log {
            for (name, help, value) in log_counters(log) {
                let _ = write!(
                    out,
                    "# HELP shardgate_log_{name}_total {help}\n# TYPE shardgate_log_{name}_total counter\nshardgate_log_{name}_total {value}\n"
                );
            }
        }
        out
    }

    /// The same as JSON with percentiles.
    pub fn stats_json(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        render_json_stats(&self.registry.snapshot(), &mut out);
        if let Some(log) = &self.log {
            // Appended as one more member of the top-level object.
            if out.ends_with('}') {
                out.pop();
                out.push_str(",\"log\":{");
                for (i, (name, _, value)) in log_counters(log).iter().enumerate() {
                    let _ = write!(out, "{}\"{name}\":{value}", if i > 0 { "," } else { "" });
                }
                out.push_str("}}");
            }
        }
        out
    }

    /// Every in-flight request as JSON.
    pub fn requests_json(&self) -> String {
        let mut out = String::with_capacity(1024);
        self.tracker.render_json(&mut out);
        out
    }
}

/// The log writer's counters as (name, help, value).
///
/// Ring-full drops are not here: each shard reports its own
/// (`shardgate_log_records_dropped_total{shard=..}`).
fn log_counters(log: &LogStats) -> [(&'static str, &'static str, u64); 6] {
    use std::sync::atomic::Ordering::Relaxed;
    [
        (
            "records_written",
            "Access-log records written to the file.",
            log.records_written.load(Relaxed),
        ),
        (
            "records_sampled_out",
            "Successful requests not logged because of sampling.",
            log.records_sampled_out(),
        ),
        (
            "write_errors",
            "Failed access-log writes (disk full, I/O errors).",
            log.write_errors.load(Relaxed),
        ),
        (
            "records_lost",
            "Access-log records lost to failed writes.",
            log.records_lost.load(Relaxed),
        ),
        (
            "bytes_written",
            "Bytes written to the access log.",
            log.bytes_written.load(Relaxed),
        ),
        (
            "rotations",
            "Access-log file rotations.",
            log.rotations.load(Relaxed),
        ),
    ]
}

/// One shard's side of the access log: its ring and its sampler.
pub struct ShardLog {
    pub producer: LogProducer,
    pub sampler: Sampler,
    /// `Some(cap)` when bodies are logged, capped at `cap` bytes each.
    pub body_cap: Option<usize>,
    /// Reused buffers for redacting bodies.
    pub scratch: Vec<u8>,
    pub request: Vec<u8>,
    pub response: Vec<u8>,
}

/// One shard's telemetry.
pub struct Telemetry {
    pub shared: Arc<SharedTelemetry>,
    pub recorder: ShardRecorder,
    shard: u16,
    log: Option<RefCell<ShardLog>>,
}

impl Telemetry {
    /// The telemetry of shard `id`; starts its publishing timer, which also
    /// mirrors the gauges counted elsewhere (open client connections, idle
    /// upstream connections).
    pub fn start(
        shared: Arc<SharedTelemetry>,
        id: usize,
        log: Option<ShardLog>,
        connections: impl Fn() -> usize + 'static,
        idle_upstream: impl Fn() -> usize + 'static,
    ) -> Rc<Self> {
        let recorder = shared
            .registry
            .recorder(id)
            .expect("one recorder per shard");
        let telemetry = Rc::new(Telemetry {
            shared,
            recorder,
            shard: id as u16,
            log: log.map(RefCell::new),
        });
        glommio::spawn_local({
            let weak = Rc::downgrade(&telemetry);
            async move {
                loop {
                    crate::runtime::sleep(PUBLISH_EVERY).await;
                    let Some(t) = weak.upgrade() else { return };
                    t.recorder.publish();
                    t.recorder.set_connections(connections() as u64);
                    if let Some(log) = &t.log {
                        let log = log.borrow();
                        let slot = std::mem::size_of::<AccessRecord>() as u64;
                        let metrics = t.recorder.metrics();
                        metrics.set_log_ring_usage(
                            log.producer.usage() as u64 * slot,
                            log.producer.capacity() as u64 * slot,
                        );
                        metrics.set_log_dropped(log.producer.dropped());
                    }
                    t.recorder
                        .metrics()
                        .set_upstream_idle(idle_upstream() as u64);
                }
            }
        })
        .detach();
        telemetry
    }

    /// The body cap when request/response bodies are logged.
    pub fn body_cap(&self) -> Option<usize> {
        self.log.as_ref().and_then(|l| l.borrow().body_cap)
    }

    /// Records a finished request.
    pub fn record(&self, ex: &Exchange) {
        let error_class = (ex.error != ErrorClass::None).then_some(ex.error as u8);
        let total_us = ex.elapsed_us();
        self.recorder.record_request(&RequestSample {
            route: ex.route,
            status: ex.status,
            error_class,
            provider: ex.provider,
            model: (!ex.model_served.is_empty()).then(|| ex.model_served.as_str()),
            total_us,
            upstream_us: ex.upstream_latency_us,
            first_token_us: if ex.stream { ex.ttfb_us } else { None },
        });
        if let Some(log) = &self.log {
            let mut log = log.borrow_mut();
            let is_error = ex.status >= 400 || ex.error != ErrorClass::None;
            if log.sampler.keep(is_error) {
                // A full ring drops the record and counts it: the request
                // never waits for the log.
                let record = self.access_record(ex, total_us);
                match (&ex.capture, log.body_cap) {
                    (Some(capture), Some(cap)) => {
                        let ShardLog {
                            producer,
                            scratch,
                            request,
                            response,
                            ..
                        } = &mut *log;
                        request.clear();
                        response.clear();
                        redact_and_cap_with(&capture.request, cap, scratch, request);
                        redact_and_cap_with(&capture.response, cap, scratch, response);
                        producer.push_with_body(&record, request, response);
                    }
                    _ => {
                        log.producer.push(&record);
                    }
                }
            } else {
                log.producer.count_sampled_out();
            }
        }
    }

    fn access_record(&self, ex: &Exchange, total_us: u64) -> AccessRecord {
        let micros = |us: Option<u64>| us.map(|v| v.min(u64::from(u32::MAX)) as u32);
        AccessRecord {
            timestamp_us: ex.started_unix_us,
            bytes_in: ex.bytes_in,
            bytes_out: ex.bytes_out,
            latency_us: total_us,
            upstream_latency_us: micros(ex.upstream_latency_us),
            ttfb_us: micros(ex.ttfb_us),
            input_tokens: ex.usage.input,
            output_tokens: ex.usage.output,
            cached_tokens: ex.usage.cached,
            request_id: ex.id.numeric.to_be_bytes(),
            shard: self.shard,
            status: ex.status,
            client_key: ex.client_key,
            provider: ex.provider,
            credential: ex.credential,
            upstream_status: ex.upstream_status,
            client_protocol: match ex.route {
                Route::ChatCompletions => ClientProtocol::OpenAiChat,
                Route::Responses => ClientProtocol::OpenAiResponses,
                Route::Messages | Route::CountTokens => ClientProtocol::Anthropic,
                Route::GeminiGenerate | Route::GeminiStream | Route::GeminiCountTokens => {
                    ClientProtocol::Gemini
                }
                _ => ClientProtocol::Other,
            },
            method: ex.method,
            route: log_route(ex.route),
            stream: ex.stream,
            retries: ex.retries,
            error_class: ex.error,
            model_requested: ex.model_requested,
            model_served: ex.model_served,
        }
    }
}

/// The access log's name for a metrics route (the log keeps finer routes
/// for the protocols still to come).
fn log_route(route: Route) -> LogRoute {
    match route {
        Route::ChatCompletions => LogRoute::ChatCompletions,
        Route::Responses => LogRoute::Responses,
        Route::Messages => LogRoute::Messages,
        Route::CountTokens => LogRoute::CountTokens,
        Route::GeminiGenerate => LogRoute::GenerateContent,
        Route::GeminiStream => LogRoute::StreamGenerateContent,
        Route::GeminiCountTokens => LogRoute::GeminiCountTokens,
        Route::Models => LogRoute::Models,
        Route::Health | Route::Ready => LogRoute::Health,
        Route::Metrics => LogRoute::Metrics,
        Route::Admin => LogRoute::Other,
        Route::Other => LogRoute::Unknown,
    }
}
