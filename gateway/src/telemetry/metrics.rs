//! Gateway metrics, rendered as Prometheus text (exposition format 0.0.4) on the admin API.
//!
//! Hand-rolled on atomics rather than a metrics crate: the request path holds pre-resolved
//! handles ([`RouteMetrics`], [`ListenerMetrics`], [`ClusterMetrics`]) and records with relaxed
//! atomics only — no map lookup, no lock, no allocation. Per-route counters and plugin phase
//! histograms are sharded per worker (see [`bind_worker`]): a worker that owns its shard adds
//! with a plain load and store (no `lock`-prefixed instruction), and workers never share a
//! cache line. Registries (maps from
//! labels to series) are only touched when a snapshot is built and when `/metrics` renders.
//! Series are never removed, so a (listener, route, cluster) keeps counting across reloads.

#![warn(missing_docs)]

mod exposition;
mod histogram;
mod plugin;
mod plugin_figures;
mod route;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dashmap::DashMap;

use exposition::FamilyType;
use histogram::{Histogram, LATENCY_BOUNDS_NS};
use plugin::PluginMetrics;
use route::RouteSeries;

pub use exposition::CONTENT_TYPE;
pub use plugin::{MetricError, MetricKind, PluginMetric, MAX_PLUGIN_SERIES};
pub use plugin_figures::{PluginFigures, PluginPhase};
pub use route::bind_worker;

type RouteKey = (String, String, String);

/// All gateway metrics; rendered as Prometheus text on the admin API.
pub struct Metrics {
    shards: usize,
    routes: Mutex<BTreeMap<RouteKey, Arc<RouteSeries>>>,
    listeners: DashMap<String, Arc<ListenerSeries>>,
    clusters: DashMap<String, Arc<ClusterSeries>>,
    endpoints: Mutex<BTreeMap<(String, String), bool>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    config_version: Mutex<Option<String>>,
    access_log_dropped: Arc<AtomicU64>,
    plugins: Mutex<PluginMetrics>,
    plugin_figures: DashMap<String, Arc<PluginFigures>>,
    collectors: Mutex<Vec<Collector>>,
}

/// Renders extra families (XDP counters, wasm host figures) into the exposition text.
pub type Collector = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Pre-resolved per-route handle, created when a snapshot is built, so the request path records
/// with atomics only (no map lookup, no lock). The default handle records nothing.
#[derive(Clone, Default)]
pub struct RouteMetrics {
    series: Option<Arc<RouteSeries>>,
}

/// Pre-resolved per-listener handle for connection counts.
#[derive(Clone)]
pub struct ListenerMetrics {
    series: Arc<ListenerSeries>,
}

/// Pre-resolved per-cluster handle for upstream connects and retries.
#[derive(Clone)]
pub struct ClusterMetrics {
    series: Arc<ClusterSeries>,
}

#[derive(Default)]
struct ListenerSeries {
    active: AtomicI64,
    total: AtomicU64,
}

struct ClusterSeries {
    connect: Histogram<{ LATENCY_BOUNDS_NS.len() }>,
    retries: AtomicU64,
}

impl Default for ClusterSeries {
    fn default() -> Self {
        ClusterSeries {
            connect: Histogram::new(&LATENCY_BOUNDS_NS),
            retries: AtomicU64::new(0),
        }
    }
}

/// The registries hold plain data; a panic elsewhere while one was locked leaves it consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Looks `name` up without allocating; allocates its key only the first time.
fn series_of<T: Default>(map: &DashMap<String, Arc<T>>, name: &str) -> Arc<T> {
    if let Some(s) = map.get(name) {
        return s.clone();
    }
    map.entry(name.to_string()).or_default().clone()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry, with one shard of per-route counters per core (at most 16).
    pub fn new() -> Self {
        Metrics {
            shards: route::shard_count(),
            routes: Mutex::new(BTreeMap::new()),
            listeners: DashMap::new(),
            clusters: DashMap::new(),
            endpoints: Mutex::new(BTreeMap::new()),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            config_version: Mutex::new(None),
            access_log_dropped: Arc::new(AtomicU64::new(0)),
            plugins: Mutex::new(PluginMetrics::default()),
            plugin_figures: DashMap::new(),
            collectors: Mutex::new(Vec::new()),
        }
    }

    /// The handle for requests that matched `route` (or "" for none) of `listener` going to
    /// `cluster` (or "" for a local answer). The same labels always give the same series.
    pub fn route(&self, listener: &str, route: &str, cluster: &str) -> RouteMetrics {
        let key = (listener.to_string(), route.to_string(), cluster.to_string());
        let series = lock(&self.routes)
            .entry(key)
            .or_insert_with(|| Arc::new(RouteSeries::new(listener, route, cluster, self.shards)))
            .clone();
        RouteMetrics {
            series: Some(series),
        }
    }

    /// The handle for connections accepted by `listener`.
    pub fn listener(&self, listener: &str) -> ListenerMetrics {
        ListenerMetrics {
            series: series_of(&self.listeners, listener),
        }
    }

    /// The handle for connections to and retries against `cluster`.
    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        ClusterMetrics {
            series: series_of(&self.clusters, cluster),
        }
    }

    /// A client connection was accepted on `listener`.
    pub fn connection_opened(&self, listener: &str) {
        self.listener(listener).opened();
    }

    /// A client connection of `listener` closed.
    pub fn connection_closed(&self, listener: &str) {
        self.listener(listener).closed();
    }

    /// A new connection to an endpoint of `cluster` was established in `elapsed`.
    pub fn upstream_connect(&self, cluster: &str, elapsed: Duration) {
        self.cluster(cluster).connected(elapsed);
    }

    /// A request to `cluster` is being retried.
    pub fn upstream_retry(&self, cluster: &str) {
        self.cluster(cluster).retried();
    }

    /// The health check verdict for `endpoint` (address) of `cluster`.
    pub fn endpoint_health(&self, cluster: &str, endpoint: &str, healthy: bool) {
        lock(&self.endpoints).insert((cluster.to_string(), endpoint.to_string()), healthy);
    }

    /// Stops reporting an endpoint that left its cluster (after a reload or a DNS change).
    pub fn forget_endpoint(&self, cluster: &str, endpoint: &str) {
        lock(&self.endpoints).remove(&(cluster.to_string(), endpoint.to_string()));
    }

    /// A new configuration `version` is live.
    pub fn reload_succeeded(&self, version: &str) {
        self.reloads.fetch_add(1, Relaxed);
        *lock(&self.config_version) = Some(version.to_string());
    }

    /// A configuration was rejected; the previous one stays live.
    pub fn reload_failed(&self) {
        self.reload_failures.fetch_add(1, Relaxed);
    }

    /// The counter behind `sluice_access_log_dropped_total`, shared with the access log writer.
    pub fn access_log_dropped(&self) -> Arc<AtomicU64> {
        self.access_log_dropped.clone()
    }

    /// Defines (or finds) `plugin`'s metric `name`, rendered as `sluice_plugin_<name>` with
    /// every character outside `[A-Za-z0-9]` replaced by `_`, labelled `plugin="<plugin>"`.
    ///
    /// # Errors
    /// An empty name, a name already defined with another kind (by any plugin), or more than
    /// [`MAX_PLUGIN_SERIES`] series.
    pub fn plugin_metric(
        &self,
        plugin: &str,
        name: &str,
        kind: MetricKind,
    ) -> Result<Arc<PluginMetric>, MetricError> {
        lock(&self.plugins).define(plugin, name, kind)
    }

    /// The figures of the wasm plugin named `plugin` (phase times, VMs, VM memory): resolved
    /// when the plugin is built, so its streams record without a lookup.
    pub fn plugin_figures(&self, plugin: &str) -> Arc<PluginFigures> {
        if let Some(f) = self.plugin_figures.get(plugin) {
            return f.clone();
        }
        self.plugin_figures
            .entry(plugin.to_string())
            .or_insert_with(|| Arc::new(PluginFigures::new(self.shards)))
            .clone()
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_routes(&mut out);
        self.render_clusters(&mut out);
        self.render_listeners(&mut out);
        self.render_endpoints(&mut out);
        self.render_control(&mut out);
        lock(&self.plugins).render(&mut out);
        self.render_plugin_figures(&mut out);
        let collectors: Vec<Collector> = lock(&self.collectors).clone();
        for c in collectors {
            c(&mut out);
        }
        out
    }

    /// Add a collector whose families are appended to every rendering of `/metrics`.
    pub fn add_collector(&self, c: Collector) {
        lock(&self.collectors).push(c);
    }

    fn render_plugin_figures(&self, out: &mut String) {
        let mut plugins: Vec<(String, Arc<PluginFigures>)> = self
            .plugin_figures
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        plugins.sort_by(|a, b| a.0.cmp(&b.0));
        plugin_figures::render(out, &plugins);
    }

    fn render_routes(&self, out: &mut String) {
        let routes: Vec<Arc<RouteSeries>> = lock(&self.routes).values().cloned().collect();
        exposition::family(
            out,
            "sluice_requests_total",
            FamilyType::Counter,
            "Requests finished, by listener, route, cluster and response status code.",
        );
        for r in &routes {
            r.render_requests(out);
        }
        exposition::family(
            out,
            "sluice_request_duration_seconds",
            FamilyType::Histogram,
            "Time from the request's first byte to the response's last byte.",
        );
        for r in &routes {
            r.render_duration(out);
        }
        exposition::family(
            out,
            "sluice_request_ttfb_seconds",
            FamilyType::Histogram,
            "Time from the request's first byte to the response's first byte.",
        );
        for r in &routes {
            r.render_ttfb(out);
        }
    }

    fn render_clusters(&self, out: &mut String) {
        let mut clusters: Vec<(String, Arc<ClusterSeries>)> = self
            .clusters
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        clusters.sort_by(|a, b| a.0.cmp(&b.0));
        exposition::family(
            out,
            "sluice_upstream_connect_seconds",
            FamilyType::Histogram,
            "Time to establish a new upstream connection (TCP, and TLS when used).",
        );
        for (name, c) in &clusters {
            let labels = [("cluster", name.as_str())];
            c.connect
                .snapshot()
                .render(out, "sluice_upstream_connect_seconds", &labels, 1e9);
        }
        exposition::family(
            out,
            "sluice_upstream_retries_total",
            FamilyType::Counter,
            "Upstream request attempts beyond the first.",
        );
        for (name, c) in &clusters {
            let labels = [("cluster", name.as_str())];
            let n = c.retries.load(Relaxed);
            exposition::sample(out, "sluice_upstream_retries_total", &labels, None, n);
        }
    }

    fn render_listeners(&self, out: &mut String) {
        let mut listeners: Vec<(String, i64, u64)> = self
            .listeners
            .iter()
            .map(|e| {
                let s = e.value();
                (
                    e.key().clone(),
                    s.active.load(Relaxed),
                    s.total.load(Relaxed),
                )
            })
            .collect();
        listeners.sort();
        exposition::family(
            out,
            "sluice_downstream_connections_active",
            FamilyType::Gauge,
            "Client connections currently open.",
        );
        for (name, active, _) in &listeners {
            let labels = [("listener", name.as_str())];
            exposition::sample(
                out,
                "sluice_downstream_connections_active",
                &labels,
                None,
                active,
            );
        }
        exposition::family(
            out,
            "sluice_downstream_connections_total",
            FamilyType::Counter,
            "Client connections accepted.",
        );
        for (name, _, total) in &listeners {
            let labels = [("listener", name.as_str())];
            exposition::sample(
                out,
                "sluice_downstream_connections_total",
                &labels,
                None,
                total,
            );
        }
    }

    fn render_endpoints(&self, out: &mut String) {
        exposition::family(
            out,
            "sluice_endpoint_healthy",
            FamilyType::Gauge,
            "1 when the upstream endpoint passes health checks, else 0.",
        );
        for ((cluster, endpoint), healthy) in lock(&self.endpoints).iter() {
            let labels = [
                ("cluster", cluster.as_str()),
                ("endpoint", endpoint.as_str()),
            ];
            exposition::sample(
                out,
                "sluice_endpoint_healthy",
                &labels,
                None,
                u8::from(*healthy),
            );
        }
    }

    fn render_control(&self, out: &mut String) {
        let counters = [
            (
                "sluice_config_reload_total",
                "Configurations applied successfully (including the first).",
                self.reloads.load(Relaxed),
            ),
            (
                "sluice_config_reload_failures_total",
                "Configurations rejected; the previous one stayed live.",
                self.reload_failures.load(Relaxed),
            ),
            (
                "sluice_access_log_dropped_total",
                "Access log lines dropped because the writer could not keep up.",
                self.access_log_dropped.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            exposition::family(out, name, FamilyType::Counter, help);
            exposition::sample(out, name, &[], None, value);
        }
        exposition::family(
            out,
            "sluice_config_info",
            FamilyType::Gauge,
            "Always 1; the version label names the live configuration.",
        );
        if let Some(v) = lock(&self.config_version).as_deref() {
            exposition::sample(out, "sluice_config_info", &[("version", v)], None, 1);
        }
    }
}

impl RouteMetrics {
    /// One finished request: status, total latency, time to first response byte.
    #[inline]
    pub fn record(&self, status: u16, latency: Duration, ttfb: Duration) {
        if let Some(s) = &self.series {
            s.record(status, latency, ttfb);
        }
    }
}

impl ListenerMetrics {
    /// A connection was accepted.
    #[inline]
    pub fn opened(&self) {
        self.series.active.fetch_add(1, Relaxed);
        self.series.total.fetch_add(1, Relaxed);
    }

    /// A connection closed.
    #[inline]
    pub fn closed(&self) {
        self.series.active.fetch_sub(1, Relaxed);
    }
}

impl ClusterMetrics {
    /// A new upstream connection was established in `elapsed`.
    #[inline]
    pub fn connected(&self, elapsed: Duration) {
        self.series.connect.observe(nanos(elapsed), false);
    }

    /// A request is being retried.
    #[inline]
    pub fn retried(&self) {
        self.series.retries.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
