//! A fixed-bucket histogram of atomics: `observe` is a bounded scan and two relaxed adds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::exposition;

/// Latency bucket upper bounds in nanoseconds: 0.5 ms to 10 s in a 1-2-5 series (log-spaced),
/// fine enough below a millisecond for a proxy hop and wide enough for slow upstreams.
pub(crate) const LATENCY_BOUNDS_NS: [u64; 14] = [
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
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets for plugin-defined histograms, whose unit the plugin chooses: Envoy's default
/// histogram buckets (without its 0.5, since proxy-wasm records integers), so dashboards built
/// for Envoy read the same.
pub(crate) const PLUGIN_BOUNDS: [u64; 18] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000,
    1_800_000, 3_600_000,
];

/// A histogram with `B` finite buckets plus the implicit `+Inf` one.
pub(crate) struct Histogram<const B: usize> {
    bounds: &'static [u64; B],
    /// Non-cumulative counts: `counts[i]` holds observations in `(bounds[i-1], bounds[i]]`.
    counts: [AtomicU64; B],
    overflow: AtomicU64,
    sum: AtomicU64,
}

impl<const B: usize> Histogram<B> {
    pub(crate) const fn new(bounds: &'static [u64; B]) -> Self {
        Histogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; B],
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Count `value`; `owned`: the caller is this histogram's only writer (see
    /// `route::bind_worker`), so plain loads and stores add instead of atomic adds.
    #[inline]
    pub(crate) fn observe(&self, value: u64, owned: bool) {
        super::route::add(self.bucket(value), 1, owned);
        super::route::add(&self.sum, value, owned);
    }

    /// Count `value` `n` times (see [`Histogram::observe`]).
    #[inline]
    pub(crate) fn observe_n(&self, value: u64, n: u64, owned: bool) {
        super::route::add(self.bucket(value), n, owned);
        super::route::add(&self.sum, value.wrapping_mul(n), owned);
    }

    /// The bucket that counts `value`.
    #[inline]
    fn bucket(&self, value: u64) -> &AtomicU64 {
        match self.bounds.iter().position(|&b| value <= b) {
            Some(i) => &self.counts[i],
            None => &self.overflow,
        }
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        counts.push(self.overflow.load(Relaxed));
        HistogramSnapshot {
            bounds: self.bounds,
            counts,
            sum: self.sum.load(Relaxed),
        }
    }
}

/// A point-in-time copy of a histogram, mergeable across shards.
pub(crate) struct HistogramSnapshot {
    bounds: &'static [u64],
    counts: Vec<u64>,
    sum: u64,
}

impl HistogramSnapshot {
    /// Whether nothing was observed.
    pub(crate) fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }

    /// Observations counted.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Count `value` `n` more times.
    pub(crate) fn add_n(&mut self, value: u64, n: u64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.wrapping_add(n);
        }
        self.sum = self.sum.wrapping_add(value.wrapping_mul(n));
    }

    pub(crate) fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.wrapping_add(*b);
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Writes `_bucket`, `_sum` and `_count` lines; values are divided by `scale` (1e9 turns
    /// nanoseconds into the seconds Prometheus expects).
    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &[(&str, &str)], scale: f64) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative = cumulative.wrapping_add(*count);
            let le = match self.bounds.get(i) {
                Some(b) => (*b as f64 / scale).to_string(),
                None => "+Inf".to_string(),
            };
            exposition::sample(out, &bucket, labels, Some(("le", &le)), cumulative);
        }
        exposition::sample(
            out,
            &format!("{name}_sum"),
            labels,
            None,
            self.sum as f64 / scale,
        );
        exposition::sample(out, &format!("{name}_count"), labels, None, cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_cumulative() {
        static BOUNDS: [u64; 2] = [10, 20];
        let h = Histogram::new(&BOUNDS);
        for v in [0, 10, 11, 20, 21] {
            h.observe(v, false);
        }
        let mut out = String::new();
        h.snapshot().render(&mut out, "h", &[], 1.0);
        assert_eq!(
            out,
            "h_bucket{le=\"10\"} 2\nh_bucket{le=\"20\"} 4\nh_bucket{le=\"+Inf\"} 5\n\
             h_sum 62\nh_count 5\n"
        );
    }

    #[test]
    fn latency_bounds_render_as_short_decimals() {
        assert_eq!((LATENCY_BOUNDS_NS[0] as f64 / 1e9).to_string(), "0.0005");
        assert_eq!((LATENCY_BOUNDS_NS[13] as f64 / 1e9).to_string(), "10");
        assert!(LATENCY_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert!(PLUGIN_BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }
}
