//! Per-(listener, route, cluster) request series, sharded by worker so that two workers never
//! write the same cache line: `record` is a thread-local read and a handful of relaxed adds.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use super::exposition;
use super::histogram::{Histogram, HistogramSnapshot, LATENCY_BOUNDS_NS};

/// Status codes 100..=999 (all that `http::StatusCode` admits) in nine lazily allocated classes.
const STATUS_CLASSES: usize = 9;
const CODES_PER_CLASS: usize = 100;

thread_local! {
    /// This thread's shard number; `usize::MAX` until first use or [`bind_worker`].
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// Pins the calling thread (a worker) to shard `index`, so that workers 0..N get distinct shards.
/// Threads that never call it are spread round-robin on first use.
pub fn bind_worker(index: usize) {
    SHARD.with(|s| s.set(index));
}

#[inline]
pub(super) fn shard_index() -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Relaxed);
            s.set(i);
        }
        i
    })
}

/// The number of shards: one per core (a power of two, so selection is a mask), at most 16.
pub(crate) fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .next_power_of_two()
        .min(16)
}

type StatusClass = [AtomicU64; CODES_PER_CLASS];

/// One worker's counters for a series; aligned so neighbouring shards share no cache line.
#[repr(align(128))]
struct Shard {
    /// Allocated on the first status of a class: a route that only answers 2xx carries one array.
    status: [OnceLock<Box<StatusClass>>; STATUS_CLASSES],
    /// Codes outside 100..=999 (a bug elsewhere, but counted rather than lost).
    invalid_status: AtomicU64,
    duration: Histogram<{ LATENCY_BOUNDS_NS.len() }>,
    ttfb: Histogram<{ LATENCY_BOUNDS_NS.len() }>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            status: [const { OnceLock::new() }; STATUS_CLASSES],
            invalid_status: AtomicU64::new(0),
            duration: Histogram::new(&LATENCY_BOUNDS_NS),
            ttfb: Histogram::new(&LATENCY_BOUNDS_NS),
        }
    }
}

/// The labels and sharded counters of one (listener, route, cluster).
pub(crate) struct RouteSeries {
    pub(crate) listener: String,
    pub(crate) route: String,
    pub(crate) cluster: String,
    shards: Box<[Shard]>,
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RouteSeries {
    pub(crate) fn new(listener: &str, route: &str, cluster: &str, shards: usize) -> Self {
        RouteSeries {
            listener: listener.to_string(),
            route: route.to_string(),
            cluster: cluster.to_string(),
            shards: (0..shards.max(1)).map(|_| Shard::new()).collect(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, status: u16, latency: Duration, ttfb: Duration) {
        // The shard count is a power of two (see `shard_count`), so the mask is a modulo.
        let shard = &self.shards[shard_index() & (self.shards.len() - 1)];
        let code = usize::from(status);
        if (100..1000).contains(&code) {
            let class = shard.status[code / 100 - 1]
                .get_or_init(|| Box::new([const { AtomicU64::new(0) }; CODES_PER_CLASS]));
            class[code % 100].fetch_add(1, Relaxed);
        } else {
            shard.invalid_status.fetch_add(1, Relaxed);
        }
        shard.duration.observe(saturating_nanos(latency));
        shard.ttfb.observe(saturating_nanos(ttfb));
    }

    fn labels(&self) -> [(&'static str, &str); 3] {
        [
            ("listener", &self.listener),
            ("route", &self.route),
            ("cluster", &self.cluster),
        ]
    }

    /// Non-zero request counts per status code, summed over shards, in code order
    /// (code 0 stands for an out-of-range status).
    pub(crate) fn status_counts(&self) -> Vec<(u16, u64)> {
        let mut totals = vec![0u64; STATUS_CLASSES * CODES_PER_CLASS];
        let mut invalid = 0u64;
        for shard in self.shards.iter() {
            invalid = invalid.wrapping_add(shard.invalid_status.load(Relaxed));
            for (ci, class) in shard.status.iter().enumerate() {
                if let Some(class) = class.get() {
                    for (i, c) in class.iter().enumerate() {
                        let slot = &mut totals[ci * CODES_PER_CLASS + i];
                        *slot = slot.wrapping_add(c.load(Relaxed));
                    }
                }
            }
        }
        let mut out: Vec<(u16, u64)> = Vec::new();
        if invalid > 0 {
            out.push((0, invalid));
        }
        for (i, &n) in totals.iter().enumerate() {
            if n > 0 {
                // i < 900, so the code fits in u16.
                out.push(((i + 100) as u16, n));
            }
        }
        out
    }

    fn merged(&self, pick: impl Fn(&Shard) -> HistogramSnapshot) -> Option<HistogramSnapshot> {
        let mut iter = self.shards.iter();
        let mut acc = pick(iter.next()?);
        for s in iter {
            acc.merge(&pick(s));
        }
        Some(acc)
    }

    pub(crate) fn render_requests(&self, out: &mut String) {
        let [l, r, c] = self.labels();
        for (code, n) in self.status_counts() {
            let code = code.to_string();
            exposition::sample(
                out,
                "sluice_requests_total",
                &[l, r, c, ("status", &code)],
                None,
                n,
            );
        }
    }

    pub(crate) fn render_duration(&self, out: &mut String) {
        if let Some(h) = self.merged(|s| s.duration.snapshot()) {
            h.render(out, "sluice_request_duration_seconds", &self.labels(), 1e9);
        }
    }

    pub(crate) fn render_ttfb(&self, out: &mut String) {
        if let Some(h) = self.merged(|s| s.ttfb.snapshot()) {
            h.render(out, "sluice_request_ttfb_seconds", &self.labels(), 1e9);
        }
    }
}
