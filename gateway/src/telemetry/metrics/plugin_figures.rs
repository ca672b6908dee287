//! The gateway's own figures about each wasm plugin: time per phase (a histogram sharded per
//! worker, like the route series), and the number and linear-memory size of its VMs (gauges the
//! worker VM holders move only when a VM starts, grows or goes).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::exposition::{self, FamilyType};
use super::histogram::{Histogram, HistogramSnapshot};
use super::nanos;
use super::route::shard_slot;

/// Phase-time bucket bounds in nanoseconds: 1 µs to 1 s in a 1-2-5 series. A plugin phase
/// usually takes microseconds, far below the request-latency buckets' first bound (0.5 ms).
pub(crate) const PHASE_BOUNDS_NS: [u64; 19] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
];

/// A proxy-wasm callback phase of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginPhase {
    /// `proxy_on_request_headers`.
    RequestHeaders,
    /// `proxy_on_request_body`.
    RequestBody,
    /// `proxy_on_request_trailers`.
    RequestTrailers,
    /// `proxy_on_response_headers`.
    ResponseHeaders,
    /// `proxy_on_response_body`.
    ResponseBody,
    /// `proxy_on_response_trailers`.
    ResponseTrailers,
    /// `proxy_on_log` (with `proxy_on_done` and `proxy_on_delete`).
    Log,
}

const PHASES: [PluginPhase; 7] = [
    PluginPhase::RequestHeaders,
    PluginPhase::RequestBody,
    PluginPhase::RequestTrailers,
    PluginPhase::ResponseHeaders,
    PluginPhase::ResponseBody,
    PluginPhase::ResponseTrailers,
    PluginPhase::Log,
];

impl PluginPhase {
    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginPhase::RequestHeaders => "request_headers",
            PluginPhase::RequestBody => "request_body",
            PluginPhase::RequestTrailers => "request_trailers",
            PluginPhase::ResponseHeaders => "response_headers",
            PluginPhase::ResponseBody => "response_body",
            PluginPhase::ResponseTrailers => "response_trailers",
            PluginPhase::Log => "log",
        }
    }
}

/// One worker's phase histograms; aligned so neighbouring shards share no cache line.
#[repr(align(128))]
struct Shard {
    phases: [Histogram<{ PHASE_BOUNDS_NS.len() }>; PHASES.len()],
    /// The last time measured per phase on this shard ([`NO_SAMPLE`] before the first), which
    /// phases of untimed streams are counted with.
    held: [AtomicU64; PHASES.len()],
}

/// [`Shard::held`] before any phase of that kind was timed.
const NO_SAMPLE: u64 = u64::MAX;

/// One plugin's figures, shared by its VMs on every worker and across its versions (a reload
/// that keeps the plugin's name keeps counting).
pub struct PluginFigures {
    shards: Box<[Shard]>,
    vms: AtomicI64,
    memory_bytes: AtomicI64,
}

impl PluginFigures {
    pub(crate) fn new(shards: usize) -> Self {
        PluginFigures {
            shards: (0..shards.max(2))
                .map(|_| Shard {
                    phases: [const { Histogram::new(&PHASE_BOUNDS_NS) }; PHASES.len()],
                    held: [const { AtomicU64::new(NO_SAMPLE) }; PHASES.len()],
                })
                .collect(),
            vms: AtomicI64::new(0),
            memory_bytes: AtomicI64::new(0),
        }
    }

    /// This worker's shard, and whether the worker is its only writer.
    #[inline]
    fn shard(&self) -> (&Shard, bool) {
        let (i, owned) = shard_slot(self.shards.len());
        (&self.shards[i], owned)
    }

    /// A timed phase that began at `start` has ended: a clock read, a relaxed store (the value
    /// untimed phases are counted with) and three relaxed adds on this worker's shard.
    #[inline]
    pub fn phase_done(&self, phase: PluginPhase, start: Instant) {
        let (shard, owned) = self.shard();
        let ns = nanos(start.elapsed()).min(NO_SAMPLE - 1);
        shard.held[phase as usize].store(ns, Relaxed);
        shard.phases[phase as usize].observe(ns, owned);
    }

    /// A phase of an untimed stream has ended: it counts in the histogram with the last time
    /// measured for this phase on this worker (sample and hold), so `_count` stays exact and
    /// `_sum` and the buckets are estimates from the timed streams. No clock read.
    #[inline]
    pub fn phase_held(&self, phase: PluginPhase) {
        let (shard, owned) = self.shard();
        let ns = shard.held[phase as usize].load(Relaxed);
        if ns != NO_SAMPLE {
            shard.phases[phase as usize].observe(ns, owned);
        }
    }

    /// Whether no phase of this kind was timed on this worker yet: the caller then times it,
    /// whatever the stream's sampling says, so that [`PluginFigures::phase_held`] has a value.
    #[inline]
    pub fn unsampled(&self, phase: PluginPhase) -> bool {
        self.shard().0.held[phase as usize].load(Relaxed) == NO_SAMPLE
    }

    /// A VM of the plugin started with `memory_bytes` of linear memory.
    pub fn vm_started(&self, memory_bytes: usize) {
        self.vms.fetch_add(1, Relaxed);
        self.memory_moved(0, memory_bytes);
    }

    /// A VM of the plugin whose memory was last seen at `memory_bytes` is gone.
    pub fn vm_stopped(&self, memory_bytes: usize) {
        self.vms.fetch_sub(1, Relaxed);
        self.memory_moved(memory_bytes, 0);
    }

    /// A VM's linear memory went from `from` to `to` bytes.
    pub fn memory_moved(&self, from: usize, to: usize) {
        let delta = i64::try_from(to)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(from).unwrap_or(i64::MAX));
        if delta != 0 {
            self.memory_bytes.fetch_add(delta, Relaxed);
        }
    }

    fn phase_snapshot(&self, phase: usize) -> HistogramSnapshot {
        let mut merged = self.shards[0].phases[phase].snapshot();
        for s in &self.shards[1..] {
            merged.merge(&s.phases[phase].snapshot());
        }
        merged
    }
}

/// Prometheus text for every plugin's figures, `plugins` sorted by name.
pub(crate) fn render(out: &mut String, plugins: &[(String, std::sync::Arc<PluginFigures>)]) {
    exposition::family(
        out,
        "sluice_plugin_phase_seconds",
        FamilyType::Histogram,
        "Time a plugin spent in one phase callback of a stream (VM and context creation included; the clock is read for 1 stream in 16, other streams count the last value measured).",
    );
    for (name, f) in plugins {
        for (i, phase) in PHASES.iter().enumerate() {
            let snap = f.phase_snapshot(i);
            if snap.is_empty() {
                continue;
            }
            let labels = [("plugin", name.as_str()), ("phase", phase.as_str())];
            snap.render(out, "sluice_plugin_phase_seconds", &labels, 1e9);
        }
    }
    exposition::family(
        out,
        "sluice_plugin_vms",
        FamilyType::Gauge,
        "Plugin VMs running now, across all workers and plugin versions.",
    );
    for (name, f) in plugins {
        let labels = [("plugin", name.as_str())];
        exposition::sample(out, "sluice_plugin_vms", &labels, None, f.vms.load(Relaxed));
    }
    exposition::family(
        out,
        "sluice_plugin_vm_memory_bytes",
        FamilyType::Gauge,
        "Linear memory of the plugin's running VMs, summed over workers.",
    );
    for (name, f) in plugins {
        let labels = [("plugin", name.as_str())];
        let bytes = f.memory_bytes.load(Relaxed);
        exposition::sample(out, "sluice_plugin_vm_memory_bytes", &labels, None, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_vms_and_phases_render_by_label() {
        let f = std::sync::Arc::new(PluginFigures::new(2));
        f.vm_started(65536);
        f.vm_started(65536);
        f.memory_moved(65536, 131072);
        f.vm_stopped(65536);
        f.phase_done(PluginPhase::ResponseHeaders, Instant::now());
        let mut out = String::new();
        render(&mut out, &[("auth".to_string(), f)]);
        assert!(
            out.contains("sluice_plugin_vms{plugin=\"auth\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("sluice_plugin_vm_memory_bytes{plugin=\"auth\"} 131072\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "sluice_plugin_phase_seconds_count{plugin=\"auth\",phase=\"response_headers\"} 1\n"
            ),
            "{out}"
        );
        assert!(!out.contains("phase=\"request_headers\""), "{out}");
    }

    #[test]
    fn untimed_phases_count_with_the_last_timed_value() {
        let f = std::sync::Arc::new(PluginFigures::new(1));
        let render = |f: &PluginFigures| {
            let mut out = String::new();
            f.phase_snapshot(PluginPhase::Log as usize)
                .render(&mut out, "h", &[], 1e9);
            out
        };
        let sum = |out: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix("h_sum "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1.0)
        };
        assert!(f.unsampled(PluginPhase::Log));
        // Nothing to hold yet: an untimed phase is not counted (callers time it instead).
        f.phase_held(PluginPhase::Log);
        assert!(render(&f).contains("h_count 0\n"));
        f.phase_done(PluginPhase::Log, Instant::now());
        assert!(!f.unsampled(PluginPhase::Log));
        assert!(f.unsampled(PluginPhase::RequestHeaders));
        let one = sum(&render(&f));
        f.phase_held(PluginPhase::Log);
        f.phase_held(PluginPhase::Log);
        let out = render(&f);
        assert!(out.contains("h_count 3\n"), "{out}");
        // The held observations repeat the timed one: one bucket holds all three.
        for line in out.lines().filter(|l| l.starts_with("h_bucket")) {
            assert!(line.ends_with(" 0") || line.ends_with(" 3"), "{out}");
        }
        assert!((sum(&out) - 3.0 * one).abs() < 1e-12, "{out}");
    }
}
