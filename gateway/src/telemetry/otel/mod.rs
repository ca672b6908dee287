//! OpenTelemetry traces: sampling, W3C propagation, spans recorded as compact
//! fixed structs on the request path (only for sampled requests) and exported off it by [`export::Exporter`].
//!
//! The cost when a request is not sampled is one header lookup and one random number: no span
//! object exists, nothing is queued.

pub mod attempts;
pub mod b3;
pub mod blocks;
pub mod context;
pub mod encode;
pub mod export;
pub mod ids;
pub mod metrics_push;
pub mod prom_to_otlp;
pub mod propagation;
pub mod record;
pub mod request;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;

use crate::config::model::TracingConfig;

pub use self::export::{ExportError, ExportStats, Exporter, Protocol};
pub use self::metrics_push::MetricsPusher;
pub use self::propagation::Propagation;
pub use self::request::RequestTrace;

/// Default sampling ratio for requests without a sampled parent (CONFIG.md: 0.01).
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;
/// `service.name` of the exported resource unless configured.
pub const DEFAULT_SERVICE_NAME: &str = "sluice";

/// The tracing settings in force and the exporter they feed. Swapped whole on reload.
pub struct Tracer {
    /// Sample a root request when a random u64 is below this (ratio × 2⁶⁴).
    threshold: u64,
    /// Whether every ratio draw samples (ratio ≥ 1).
    always: bool,
    /// One child span per filter phase that runs.
    pub filter_spans: bool,
    /// Formats read from the client and written to the upstream.
    propagation: Propagation,
    exporter: Exporter,
    /// The settings this tracer was built from (reload compares them).
    pub config: TracingConfig,
}

impl Tracer {
    /// Build a tracer and start its exporter. None when `cfg` has no `otlp_endpoint`.
    ///
    /// # Errors
    /// A bad endpoint, protocol or propagation format, or the exporter thread cannot start.
    pub fn new(
        cfg: &TracingConfig,
        stats: Arc<ExportStats>,
    ) -> Result<Option<Arc<Self>>, ExportError> {
        let Some(endpoint) = cfg.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let protocol = export::parse_protocol(cfg.protocol.as_deref())?;
        let propagation = Propagation::from_names(cfg.propagation.as_deref())?;
        let ratio = cfg
            .sample_ratio
            .unwrap_or(DEFAULT_SAMPLE_RATIO)
            .clamp(0.0, 1.0);
        let service = cfg.service_name.as_deref().unwrap_or(DEFAULT_SERVICE_NAME);
        let exporter = Exporter::start(endpoint, protocol, service, stats)?;
        Ok(Some(Arc::new(Tracer {
            // The cast saturates; ratio 1 is handled by `always`.
            threshold: (ratio * u64::MAX as f64) as u64,
            always: ratio >= 1.0,
            filter_spans: cfg.filter_spans,
            propagation,
            exporter,
            config: cfg.clone(),
        })))
    }

    /// Decide sampling for a request with `headers` (parent-based, then ratio) and, when
    /// sampled, start its server span at `start` (when the request arrived). `found`: the
    /// first `traceparent`, `Host` and `User-Agent` of `headers`, found by the caller's pass
    /// over them.
    pub fn start(
        self: &Arc<Self>,
        headers: &HeaderMap,
        found: request::Found<'_>,
        start: Instant,
    ) -> Option<RequestTrace> {
        let traceparent = found.traceparent;
        let incoming = self.propagation.extract(headers, traceparent);
        let sampled = match incoming.and_then(|i| i.sampled) {
            Some(s) => s,
            None => self.always || ids::next_u64() < self.threshold,
        };
        if !sampled {
            return None;
        }
        Some(RequestTrace::new(
            self.clone(),
            incoming,
            headers,
            found,
            start,
        ))
    }

    fn send(&self, span: &record::SpanRecord) {
        self.exporter.send(span);
    }
}

/// The `service.name` for exported telemetry: `telemetry.tracing.service_name`, else `sluice`.
pub fn service_name(t: &crate::config::model::TelemetryConfig) -> &str {
    t.tracing
        .as_ref()
        .and_then(|t| t.service_name.as_deref())
        .unwrap_or(DEFAULT_SERVICE_NAME)
}

/// Prometheus text for the exporter counters.
pub fn render_prometheus(stats: &ExportStats, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP sluice_tracing_spans_exported_total Spans accepted by the OTLP collector.\n\
         # TYPE sluice_tracing_spans_exported_total counter\n\
         sluice_tracing_spans_exported_total {}\n\
         # HELP sluice_tracing_spans_dropped_total Spans lost: export queue full or export failed.\n\
         # TYPE sluice_tracing_spans_dropped_total counter\n\
         sluice_tracing_spans_dropped_total {}\n",
        stats.exported.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
    );
}
