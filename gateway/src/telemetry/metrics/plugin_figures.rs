//! The gateway's own figures about each wasm plugin: time per phase (a histogram sharded per
//! worker, like the route series), and the number and linear-memory size of its VMs (gauges the
//! worker VM holders move only when a VM starts, grows or goes).

use std::sync::atomic::{
    fence, AtomicI64, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
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
    /// Per phase, one word: the last time measured on this shard (the low [`NS_BITS`] bits,
    /// [`NO_SAMPLE`] before the first), which phases of untimed streams are counted with, and
    /// above it how many such phases this shard's owner counted since (not yet in `phases`).
    held: [AtomicU64; PHASES.len()],
    /// Odd while the owner folds held counts into `phases` (a sequence lock: a scrape that
    /// sees it move reads again), even otherwise.
    folds: AtomicU64,
}

/// Bits of a [`Shard::held`] word that hold the time (ns); phases longer than that (1.07 s)
/// are held at its largest value (they fall in the `+Inf` bucket either way).
const NS_BITS: u32 = 30;
const NS_MASK: u64 = (1 << NS_BITS) - 1;
/// One untimed phase in a [`Shard::held`] word.
const ONE_HELD: u64 = 1 << NS_BITS;
/// The time field of a [`Shard::held`] word before any phase of that kind was timed.
const NO_SAMPLE: u64 = NS_MASK;

impl Shard {
    /// Phase `phase` took `ns` (`ns` < [`NO_SAMPLE`]); `owned`: the caller is the shard's
    /// only writer, who first folds the untimed phases it counted into the histogram.
    fn timed(&self, phase: usize, ns: u64, owned: bool) {
        let held = &self.held[phase];
        let histogram = &self.phases[phase];
        if !owned {
            held.store(ns, Relaxed);
            histogram.observe(ns, false);
            return;
        }
        // One writer: a plain sequence lock lets a scrape see the counts either all still in
        // the word or all in the histogram.
        let seq = self.folds.load(Relaxed);
        self.folds.store(seq.wrapping_add(1), Relaxed);
        fence(Release);
        let word = held.load(Relaxed);
        let count = word >> NS_BITS;
        if count > 0 {
            histogram.observe_n(word & NS_MASK, count, true);
        }
        held.store(ns, Relaxed);
        histogram.observe(ns, true);
        self.folds.store(seq.wrapping_add(2), Release);
    }

    /// An untimed phase `phase` ended: counted with the held time, in the word by the owner.
    #[inline]
    fn untimed(&self, phase: usize, owned: bool) {
        let held = &self.held[phase];
        let word = held.load(Relaxed);
        if word & NS_MASK == NO_SAMPLE {
            return;
        }
        if owned {
            held.store(word + ONE_HELD, Relaxed);
        } else {
            self.phases[phase].observe(word & NS_MASK, false);
        }
    }

    /// The histogram of `phase` with the untimed phases the owner counted and has not folded
    /// yet, read consistently with a fold in progress (see [`Shard::timed`]).
    fn snapshot(&self, phase: usize) -> HistogramSnapshot {
        loop {
            let seq = self.folds.load(Acquire);
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut snap = self.phases[phase].snapshot();
            let word = self.held[phase].load(Relaxed);
            fence(Acquire);
            if self.folds.load(Relaxed) != seq {
                continue;
            }
            let count = word >> NS_BITS;
            if count > 0 {
                snap.add_n(word & NS_MASK, count);
            }
            return snap;
        }
    }

    fn new() -> Self {
        Shard {
            phases: [const { Histogram::new(&PHASE_BOUNDS_NS) }; PHASES.len()],
            held: [const { AtomicU64::new(NO_SAMPLE) }; PHASES.len()],
            folds: AtomicU64::new(0),
        }
    }
}

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
            shards: (0..shards.max(2)).map(|_| Shard::new()).collect(),
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

    /// A timed phase that began at `start` has ended: a clock read, the time kept for untimed
    /// phases, and an observation on this worker's shard. The owner of the shard first folds
    /// the untimed phases it counted with the previous time into the histogram.
    #[inline]
    pub fn phase_done(&self, phase: PluginPhase, start: Instant) {
        let (shard, owned) = self.shard();
        let ns = nanos(start.elapsed()).min(NO_SAMPLE - 1);
        shard.timed(phase as usize, ns, owned);
    }

    /// A phase of an untimed stream has ended: it counts in the histogram with the last time
    /// measured for this phase on this worker (sample and hold), so `_count` stays exact and
    /// `_sum` and the buckets are estimates from the timed streams. No clock read; the shard's
    /// owner only counts it in the phase's word (folded into the histogram at the next timed
    /// phase, and added by a scrape meanwhile).
    #[inline]
    pub fn phase_held(&self, phase: PluginPhase) {
        let (shard, owned) = self.shard();
        shard.untimed(phase as usize, owned);
    }

    /// Whether no phase of this kind was timed on this worker yet: the caller then times it,
    /// whatever the stream's sampling says, so that [`PluginFigures::phase_held`] has a value.
    #[inline]
    pub fn unsampled(&self, phase: PluginPhase) -> bool {
        self.shard().0.held[phase as usize].load(Relaxed) & NS_MASK == NO_SAMPLE
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
        let mut merged = self.shards[0].snapshot(phase);
        for s in &self.shards[1..] {
            merged.merge(&s.snapshot(phase));
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

    /// `_count` and the cumulative buckets of `snap`.
    fn cumulative(snap: &HistogramSnapshot) -> (u64, Vec<u64>) {
        let mut out = String::new();
        snap.render(&mut out, "h", &[], 1.0);
        let mut buckets = Vec::new();
        let mut count = 0;
        for line in out.lines() {
            let n = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if line.starts_with("h_bucket") {
                buckets.push(n);
            } else if line.starts_with("h_count") {
                count = n;
            }
        }
        (count, buckets)
    }

    #[test]
    fn an_owner_counts_untimed_phases_in_the_word_and_folds_them_at_the_next_timed_one() {
        let shard = Shard::new();
        let log = PluginPhase::Log as usize;
        shard.untimed(log, true);
        assert_eq!(cumulative(&shard.snapshot(log)).0, 0, "nothing held yet");
        shard.timed(log, 1_500, true);
        for _ in 0..3 {
            shard.untimed(log, true);
        }
        // Not folded yet: the scrape adds the word's three to the timed one.
        assert_eq!(shard.held[log].load(Relaxed) >> NS_BITS, 3);
        let snap = shard.snapshot(log);
        let (count, buckets) = cumulative(&snap);
        assert_eq!(count, 4);
        assert_eq!(buckets[0], 0, "above 1 µs");
        assert_eq!(buckets[1], 4, "at most 2 µs");
        shard.timed(log, 30_000, true);
        assert_eq!(
            shard.held[log].load(Relaxed),
            30_000,
            "folded: the word holds the time only"
        );
        shard.untimed(log, true);
        shard.untimed(log, true);
        let snap = shard.snapshot(log);
        let (count, buckets) = cumulative(&snap);
        assert_eq!(count, 7);
        assert_eq!(
            buckets[1], 4,
            "the folded ones stay with the time they were held at"
        );
        assert_eq!(buckets[4], 4, "nothing between 2 µs and 20 µs");
        assert_eq!(
            buckets[5], 7,
            "the new time and the two held with it: at most 50 µs"
        );
        let mut out = String::new();
        snap.render(&mut out, "h", &[], 1.0);
        assert!(
            out.contains("h_sum 96000\n"),
            "4 × 1.5 µs + 3 × 30 µs: {out}"
        );
        // A phase longer than the word holds counts at its largest time, in +Inf.
        shard.timed(log, 5_000_000_000u64.min(NO_SAMPLE - 1), true);
        shard.untimed(log, true);
        let (count, buckets) = cumulative(&shard.snapshot(log));
        assert_eq!(count, 9);
        assert_eq!(buckets[buckets.len() - 2], 7, "both above 1 s");
    }

    #[test]
    fn a_scrape_during_folds_counts_every_phase_done_before_it_and_none_after() {
        let shard = std::sync::Arc::new(Shard::new());
        let done = std::sync::Arc::new(AtomicU64::new(0));
        let log = PluginPhase::Log as usize;
        let writer = {
            let (shard, done) = (shard.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..2_000_000u64 {
                    if i % 4 == 0 {
                        shard.timed(log, 1_000 + (i % 7) * 40_000, true);
                    } else {
                        shard.untimed(log, true);
                    }
                    done.store(i + 1, Release);
                }
            })
        };
        let mut scrapes = 0u64;
        while !writer.is_finished() || scrapes == 0 {
            let before = done.load(Acquire);
            let count = shard.snapshot(log).count();
            // The writer's phase in progress may show before it says it is done.
            let after = done.load(Acquire) + 1;
            assert!(
                (before..=after).contains(&count),
                "{count} phases seen, {before} done before the scrape, at most {after} after"
            );
            scrapes += 1;
        }
        assert!(writer.join().is_ok());
        assert_eq!(shard.snapshot(log).count(), 2_000_000);
    }
}
