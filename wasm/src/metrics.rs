//! Plugin-defined metrics (`proxy_define_metric` and friends): one process-global registry, so the
//! same metric defined by the VM of every worker is one series. Rendered as Prometheus text with a
//! `plugin` label.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;

use crate::abi::{MetricType, Status};

/// One metric's value.
pub struct Metric {
    pub plugin: String,
    pub name: String,
    pub kind: MetricType,
    /// Counter or gauge value; histograms keep the sum here.
    value: AtomicI64,
    /// Histogram sample count.
    count: AtomicU64,
}

struct Registry {
    by_name: DashMap<(String, String, u8), u32>,
    metrics: RwLock<Vec<Arc<Metric>>>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        by_name: DashMap::new(),
        metrics: RwLock::new(Vec::new()),
    })
}

fn kind_tag(k: MetricType) -> u8 {
    match k {
        MetricType::Counter => 0,
        MetricType::Gauge => 1,
        MetricType::Histogram => 2,
    }
}

/// `proxy_define_metric`: the id of the metric (existing one when already defined).
pub fn define(plugin: &str, kind: MetricType, name: &str) -> u32 {
    let r = registry();
    *r.by_name
        .entry((plugin.to_string(), name.to_string(), kind_tag(kind)))
        .or_insert_with(|| {
            let Ok(mut all) = r.metrics.write() else {
                return u32::MAX;
            };
            all.push(Arc::new(Metric {
                plugin: plugin.to_string(),
                name: name.to_string(),
                kind,
                value: AtomicI64::new(0),
                count: AtomicU64::new(0),
            }));
            (all.len() - 1) as u32
        })
}

fn get(id: u32) -> Option<Arc<Metric>> {
    registry().metrics.read().ok()?.get(id as usize).cloned()
}

/// `proxy_increment_metric` (counters may not go down).
pub fn increment(id: u32, offset: i64) -> Status {
    let Some(m) = get(id) else {
        return Status::NotFound;
    };
    match m.kind {
        MetricType::Counter if offset < 0 => Status::BadArgument,
        MetricType::Counter | MetricType::Gauge => {
            m.value.fetch_add(offset, Ordering::Relaxed);
            Status::Ok
        }
        MetricType::Histogram => Status::BadArgument,
    }
}

/// `proxy_record_metric`: sets a counter or gauge, adds a histogram sample.
pub fn record(id: u32, value: u64) -> Status {
    let Some(m) = get(id) else {
        return Status::NotFound;
    };
    let v = i64::try_from(value).unwrap_or(i64::MAX);
    match m.kind {
        MetricType::Counter | MetricType::Gauge => m.value.store(v, Ordering::Relaxed),
        MetricType::Histogram => {
            m.value.fetch_add(v, Ordering::Relaxed);
            m.count.fetch_add(1, Ordering::Relaxed);
        }
    }
    Status::Ok
}

/// `proxy_get_metric`: the value of a counter or gauge; histograms have no single value
/// (`BadArgument`, as Envoy), unknown ids are `NotFound`.
pub fn value(id: u32) -> Result<u64, Status> {
    let m = get(id).ok_or(Status::NotFound)?;
    if m.kind == MetricType::Histogram {
        return Err(Status::BadArgument);
    }
    Ok(m.value.load(Ordering::Relaxed).max(0) as u64)
}

/// The current value of one metric, as [`plugin_metrics`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricValue {
    pub name: String,
    pub kind: MetricType,
    /// Counter or gauge value; for a histogram, the sum of its samples.
    pub value: i64,
    /// Histogram sample count (0 for counters and gauges).
    pub count: u64,
}

/// Every metric `plugin` defined, in definition order, with its value now. Metrics are
/// process-global: the values add up over every VM of the plugin (all workers, all VM restarts).
pub fn plugin_metrics(plugin: &str) -> Vec<MetricValue> {
    let Ok(all) = registry().metrics.read() else {
        return Vec::new();
    };
    all.iter()
        .filter(|m| m.plugin == plugin)
        .map(|m| MetricValue {
            name: m.name.clone(),
            kind: m.kind,
            value: m.value.load(Ordering::Relaxed),
            count: m.count.load(Ordering::Relaxed),
        })
        .collect()
}

/// Names the gateway itself renders under `sluice_plugin_` (its per-plugin figures): a plugin
/// metric with one of these names is rendered as `sluice_plugin_user_<name>` instead, so that a
/// plugin can never break the exposition of /metrics.
const RESERVED: &[&str] = &["failures_total", "phase_seconds", "vms", "vm_memory_bytes"];

/// Prometheus text for every plugin metric: `sluice_plugin_<name>{plugin="..."}`.
///
/// One `# TYPE` line per metric family, followed by every plugin's sample: several plugins (or
/// several uses of one plugin module) commonly define the same metric name. A name defined with
/// different kinds gets the later kinds' name suffixed (`_gauge`, `_counter`, `_histogram`), and
/// a name the gateway uses itself is prefixed with `user_`.
pub fn render_prometheus() -> String {
    let mut out = String::new();
    let Ok(all) = registry().metrics.read() else {
        return out;
    };
    // family name → (kind, samples), in name order for a stable exposition.
    let mut families: std::collections::BTreeMap<String, (MetricType, Vec<&Metric>)> =
        std::collections::BTreeMap::new();
    for m in all.iter() {
        let mut name = sanitize(&m.name);
        if RESERVED
            .iter()
            .any(|r| name == *r || name.strip_prefix(r).is_some_and(|s| s.starts_with('_')))
        {
            name = format!("user_{name}");
        }
        if let Some((kind, _)) = families.get(&name) {
            if *kind != m.kind {
                name = format!("{name}_{}", kind_name(m.kind));
            }
        }
        families
            .entry(name)
            .or_insert_with(|| (m.kind, Vec::new()))
            .1
            .push(m);
    }
    for (name, (kind, metrics)) in &families {
        let prom_type = match kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "summary",
        };
        let _ = writeln!(out, "# TYPE sluice_plugin_{name} {prom_type}");
        for m in metrics {
            let plugin = m.plugin.replace('\\', "\\\\").replace('"', "\\\"");
            let v = m.value.load(Ordering::Relaxed);
            match kind {
                MetricType::Counter | MetricType::Gauge => {
                    let _ = writeln!(out, "sluice_plugin_{name}{{plugin=\"{plugin}\"}} {v}");
                }
                MetricType::Histogram => {
                    let c = m.count.load(Ordering::Relaxed);
                    let _ = writeln!(out, "sluice_plugin_{name}_sum{{plugin=\"{plugin}\"}} {v}");
                    let _ = writeln!(out, "sluice_plugin_{name}_count{{plugin=\"{plugin}\"}} {c}");
                }
            }
        }
    }
    out
}

fn kind_name(k: MetricType) -> &'static str {
    match k {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_one_type_line_and_never_clash_with_the_gateways_names() {
        let a = define("t-a", MetricType::Counter, "t_hits");
        let b = define("t-b", MetricType::Counter, "t_hits");
        let _ = increment(a, 2);
        let _ = increment(b, 3);
        define("t-a", MetricType::Gauge, "vms");
        define("t-a", MetricType::Counter, "t_mixed");
        define("t-b", MetricType::Gauge, "t_mixed");
        let text = render_prometheus();
        let types = |family: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("# TYPE {family} ")))
                .count()
        };
        assert_eq!(types("sluice_plugin_t_hits"), 1, "{text}");
        assert!(
            text.contains("sluice_plugin_t_hits{plugin=\"t-a\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sluice_plugin_t_hits{plugin=\"t-b\"} 3"),
            "{text}"
        );
        assert_eq!(types("sluice_plugin_vms"), 0, "{text}");
        assert_eq!(types("sluice_plugin_user_vms"), 1, "{text}");
        assert_eq!(types("sluice_plugin_t_mixed"), 1, "{text}");
        assert_eq!(types("sluice_plugin_t_mixed_gauge"), 1, "{text}");
        // Every family's TYPE line comes before its samples, and each family appears once.
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(l.to_string()), "repeated: {l}");
        }
    }
}
