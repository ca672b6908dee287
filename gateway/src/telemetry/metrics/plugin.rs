//! Metrics that plugins define at run time (proxy-wasm `proxy_define_metric`), with Envoy's
//! semantics for increment/record/get, rendered as `sluice_plugin_<name>{plugin="..."}`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use super::exposition::{self, FamilyType};
use super::histogram::{Histogram, PLUGIN_BOUNDS};

/// Plugins are untrusted: a plugin defining metrics in a loop must not exhaust memory.
pub const MAX_PLUGIN_SERIES: usize = 4096;

/// The kind of a plugin metric, numbered as proxy-wasm's `MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down, or is set.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

impl MetricKind {
    /// Maps proxy-wasm's `MetricType` (0 counter, 1 gauge, 2 histogram).
    pub fn from_proxy_wasm(value: u32) -> Option<MetricKind> {
        match value {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }

    fn family_type(self) -> FamilyType {
        match self {
            MetricKind::Counter => FamilyType::Counter,
            MetricKind::Gauge => FamilyType::Gauge,
            MetricKind::Histogram => FamilyType::Histogram,
        }
    }
}

/// Why a plugin metric could not be defined or updated (proxy-wasm: `BAD_ARGUMENT`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricError {
    /// The name was empty.
    #[error("metric name is empty")]
    EmptyName,
    #[error("metric `{name}` is already defined as a {existing:?}, not a {requested:?}")]
    /// The (sanitized) name already names a family of another kind.
    KindConflict {
        /// The sanitized name.
        name: String,
        /// The kind it was first defined with.
        existing: MetricKind,
        /// The kind asked for now.
        requested: MetricKind,
    },
    /// [`MAX_PLUGIN_SERIES`] series exist already.
    #[error("too many plugin metrics (limit {MAX_PLUGIN_SERIES})")]
    TooMany,
    /// The operation does not apply to this kind (e.g. `get` on a histogram).
    #[error("this operation does not apply to a {0:?} metric")]
    Unsupported(MetricKind),
}

/// One plugin's series of a plugin metric family; shared by every VM of the plugin on every
/// worker, and across plugin reloads.
pub struct PluginMetric {
    kind: MetricKind,
    value: AtomicI64,
    histogram: Option<Box<Histogram<{ PLUGIN_BOUNDS.len() }>>>,
}

impl PluginMetric {
    fn new(kind: MetricKind) -> Self {
        PluginMetric {
            kind,
            value: AtomicI64::new(0),
            histogram: (kind == MetricKind::Histogram)
                .then(|| Box::new(Histogram::new(&PLUGIN_BOUNDS))),
        }
    }

    /// The kind the metric was defined with.
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// `proxy_increment_metric`: a counter only goes up; a gauge moves either way.
    ///
    /// # Errors
    /// [`MetricError::Unsupported`] for a non-positive counter offset or for a histogram.
    pub fn increment(&self, offset: i64) -> Result<(), MetricError> {
        match self.kind {
            MetricKind::Counter if offset > 0 => {
                self.value.fetch_add(offset, Relaxed);
                Ok(())
            }
            MetricKind::Gauge => {
                self.value.fetch_add(offset, Relaxed);
                Ok(())
            }
            kind => Err(MetricError::Unsupported(kind)),
        }
    }

    /// `proxy_record_metric`: adds to a counter, sets a gauge, observes into a histogram.
    pub fn record(&self, value: u64) {
        let signed = i64::try_from(value).unwrap_or(i64::MAX);
        match &self.histogram {
            Some(h) => h.observe(value, false),
            None if self.kind == MetricKind::Counter => {
                self.value.fetch_add(signed, Relaxed);
            }
            None => self.value.store(signed, Relaxed),
        }
    }

    /// `proxy_get_metric`: the current value of a counter or gauge (a negative gauge reads 0,
    /// since the ABI returns an unsigned value).
    ///
    /// # Errors
    /// [`MetricError::Unsupported`] for a histogram.
    pub fn get(&self) -> Result<u64, MetricError> {
        match self.kind {
            MetricKind::Histogram => Err(MetricError::Unsupported(self.kind)),
            _ => Ok(u64::try_from(self.value.load(Relaxed)).unwrap_or(0)),
        }
    }
}

struct Family {
    kind: MetricKind,
    /// Keyed by plugin name.
    series: BTreeMap<String, Arc<PluginMetric>>,
}

/// All plugin metric families, keyed by sanitized metric name.
#[derive(Default)]
pub(crate) struct PluginMetrics {
    families: BTreeMap<String, Family>,
    series: usize,
}

/// Prometheus metric names allow `[a-zA-Z0-9_:]`; the colon is reserved for recording rules, so
/// everything but ASCII alphanumerics becomes `_` (Envoy-style `a.b.c` becomes `a_b_c`).
pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl PluginMetrics {
    pub(crate) fn define(
        &mut self,
        plugin: &str,
        name: &str,
        kind: MetricKind,
    ) -> Result<Arc<PluginMetric>, MetricError> {
        if name.is_empty() {
            return Err(MetricError::EmptyName);
        }
        let key = sanitize(name);
        if let Some(family) = self.families.get(&key) {
            if family.kind != kind {
                return Err(MetricError::KindConflict {
                    name: key,
                    existing: family.kind,
                    requested: kind,
                });
            }
            if let Some(existing) = family.series.get(plugin) {
                return Ok(existing.clone());
            }
        }
        if self.series >= MAX_PLUGIN_SERIES {
            return Err(MetricError::TooMany);
        }
        let metric = Arc::new(PluginMetric::new(kind));
        self.families
            .entry(key)
            .or_insert_with(|| Family {
                kind,
                series: BTreeMap::new(),
            })
            .series
            .insert(plugin.to_string(), metric.clone());
        self.series += 1;
        Ok(metric)
    }

    pub(crate) fn render(&self, out: &mut String) {
        for (key, family) in &self.families {
            let name = format!("sluice_plugin_{key}");
            exposition::family(
                out,
                &name,
                family.kind.family_type(),
                "Metric defined by a plugin (proxy_define_metric).",
            );
            for (plugin, m) in &family.series {
                let labels = [("plugin", plugin.as_str())];
                match &m.histogram {
                    Some(h) => h.snapshot().render(out, &name, &labels, 1.0),
                    None => exposition::sample(out, &name, &labels, None, m.value.load(Relaxed)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_semantics() {
        let c = PluginMetric::new(MetricKind::Counter);
        assert_eq!(c.increment(3), Ok(()));
        assert!(c.increment(-1).is_err());
        c.record(2);
        assert_eq!(c.get(), Ok(5));

        let g = PluginMetric::new(MetricKind::Gauge);
        g.record(10);
        assert_eq!(g.increment(-4), Ok(()));
        assert_eq!(g.get(), Ok(6));

        let h = PluginMetric::new(MetricKind::Histogram);
        assert!(h.increment(1).is_err());
        assert!(h.get().is_err());
    }

    #[test]
    fn same_name_same_series_and_kind_conflicts_rejected() {
        let mut m = PluginMetrics::default();
        let a = m.define("p", "reqs.total", MetricKind::Counter).ok();
        let b = m.define("p", "reqs_total", MetricKind::Counter).ok();
        assert!(matches!((a, b), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b)));
        assert!(matches!(
            m.define("q", "reqs.total", MetricKind::Gauge),
            Err(MetricError::KindConflict { .. })
        ));
        assert_eq!(
            m.define("q", "", MetricKind::Gauge).err(),
            Some(MetricError::EmptyName)
        );
    }

    #[test]
    fn series_are_bounded() {
        let mut m = PluginMetrics::default();
        for i in 0..MAX_PLUGIN_SERIES {
            assert!(m.define("p", &format!("m{i}"), MetricKind::Gauge).is_ok());
        }
        assert_eq!(
            m.define("p", "one_more", MetricKind::Gauge).err(),
            Some(MetricError::TooMany)
        );
        // An existing series is still returned at the limit.
        assert!(m.define("p", "m0", MetricKind::Gauge).is_ok());
    }
}
