//! Per-(listener, route, cluster) request series, sharded by worker so that two workers never
//! write the same cache line: `record` is a thread-local read and a handful of adds — plain
//! loads and stores on the shard a worker owns alone (see [`bind_worker`]), atomic adds on the
//! shared shard otherwise.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use super::exposition;
use super::histogram::{Histogram, HistogramSnapshot, LATENCY_BOUNDS_NS};

/// Status codes 100..=999 (all that `http::StatusCode` admits) in nine lazily allocated classes.
const STATUS_CLASSES: usize = 9;
const CODES_PER_CLASS: usize = 100;

thread_local! {
    /// The shard this thread owns (is the only writer of), set by [`bind_worker`].
    static OWNED: Cell<Option<usize>> = const { Cell::new(None) };
    /// Releases the claim on [`OWNED`]'s shard when the thread ends.
    static CLAIM: RefCell<Option<Claim>> = const { RefCell::new(None) };
}

/// The shards owned by a live thread, one bit each.
static CLAIMED: AtomicU64 = AtomicU64::new(0);

/// A thread's claim on a shard, released when the thread ends (a restarted worker gets it back).
struct Claim(usize);

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.fetch_and(!(1 << self.0), Relaxed);
    }
}

/// Makes the calling thread (worker `index`) the only writer of shard `index`, when that shard
/// exists and no live thread owns it: its counters are then added with a plain load and store
/// instead of an atomic read-modify-write (a `lock`-prefixed instruction, some 20 cycles; a
/// proxied request records five). Threads without a shard of their own — more workers than
/// shards, a second thread bound to the same index, threads that never call this — all write
/// the last, shared shard with atomic adds.
pub fn bind_worker(index: usize) {
    if OWNED.with(Cell::get) == Some(index) {
        return;
    }
    CLAIM.with(|c| c.borrow_mut().take());
    OWNED.with(|o| o.set(None));
    if index >= owned_shards() {
        return;
    }
    let bit = 1u64 << index;
    if CLAIMED.fetch_or(bit, Relaxed) & bit == 0 {
        CLAIM.with(|c| *c.borrow_mut() = Some(Claim(index)));
        OWNED.with(|o| o.set(Some(index)));
    }
}

/// Which of `len` shards the calling thread writes, and whether it is their only writer.
#[inline]
pub(super) fn shard_slot(len: usize) -> (usize, bool) {
    let shared = len - 1;
    match OWNED.with(Cell::get) {
        Some(i) if i < shared => (i, true),
        _ => (shared, false),
    }
}

/// Adds `v` to `c`: a plain load and store for the shard's only writer, else an atomic add.
#[inline]
pub(super) fn add(c: &AtomicU64, v: u64, owned: bool) {
    if owned {
        c.store(c.load(Relaxed).wrapping_add(v), Relaxed);
    } else {
        c.fetch_add(v, Relaxed);
    }
}

/// Shards that a worker may own: one per core, at most 63.
fn owned_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(63)
}

/// The number of shards of a series: [`owned_shards`], plus the shared one.
pub(crate) fn shard_count() -> usize {
    owned_shards() + 1
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
            shards: (0..shards.max(2)).map(|_| Shard::new()).collect(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, status: u16, latency: Duration, ttfb: Duration) {
        let (i, owned) = shard_slot(self.shards.len());
        let shard = &self.shards[i];
        let code = usize::from(status);
        if (100..1000).contains(&code) {
            let class = shard.status[code / 100 - 1]
                .get_or_init(|| Box::new([const { AtomicU64::new(0) }; CODES_PER_CLASS]));
            add(&class[code % 100], 1, owned);
        } else {
            add(&shard.invalid_status, 1, owned);
        }
        shard.duration.observe(saturating_nanos(latency), owned);
        shard.ttfb.observe(saturating_nanos(ttfb), owned);
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
