//! Gateway metrics. STUB: the interface the rest of the gateway calls; to be implemented.

use std::time::Duration;

/// All gateway metrics; rendered as Prometheus text on the admin API.
#[derive(Default)]
pub struct Metrics {}

/// Pre-resolved per-route handle, created when a snapshot is built, so the request path records
/// with atomics only (no map lookup, no lock).
#[derive(Clone, Default)]
pub struct RouteMetrics {}

impl Metrics {
    pub fn new() -> Self {
        Metrics {}
    }

    /// The handle for requests that matched `route` (or "" for none) of `listener` going to
    /// `cluster` (or "" for a local answer).
    pub fn route(&self, _listener: &str, _route: &str, _cluster: &str) -> RouteMetrics {
        RouteMetrics {}
    }

    pub fn connection_opened(&self, _listener: &str) {}
    pub fn connection_closed(&self, _listener: &str) {}
    pub fn upstream_connect(&self, _cluster: &str, _elapsed: Duration) {}
    pub fn endpoint_health(&self, _cluster: &str, _endpoint: &str, _healthy: bool) {}
    pub fn upstream_retry(&self, _cluster: &str) {}
    pub fn reload_succeeded(&self, _version: &str) {}
    pub fn reload_failed(&self) {}

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        String::new()
    }
}

impl RouteMetrics {
    /// One finished request: status, total latency, time to first response byte.
    pub fn record(&self, _status: u16, _latency: Duration, _ttfb: Duration) {}
}
