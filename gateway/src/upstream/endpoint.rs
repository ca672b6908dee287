//! One upstream endpoint (a resolved address with its shared health and load counters) and the
//! immutable endpoint set a cluster swaps atomically when DNS or health changes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::lb::{Ring, Weighted};

/// A resolved upstream address. Shared by all workers; its counters are atomics.
///
/// An `Endpoint` outlives endpoint-set swaps: when DNS returns an address already in the set,
/// the same `Arc<Endpoint>` is kept, so health and load state carry over.
pub(crate) struct Endpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `addr` as text, for metrics, logs and the admin API (formatted once).
    pub label: Box<str>,
    /// The `host:port` the user wrote (a DNS name or an address): the Host of health checks.
    pub authority: Arc<str>,
    /// Relative share of the traffic (1..=128; 1 unless configured).
    pub weight: u32,
    healthy: AtomicBool,
    /// Exchanges in flight: counted from the pick until the response headers arrive (or the
    /// exchange fails). The response body is not counted: `send` hands it to the caller as is.
    active: AtomicU64,
    /// Consecutive health check results, in the direction opposite to the current state.
    hc_streak: AtomicU32,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, authority: Arc<str>, weight: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr,
            label: addr.to_string().into_boxed_str(),
            authority,
            weight: weight.max(1),
            healthy: AtomicBool::new(true),
            active: AtomicU64::new(0),
            hc_streak: AtomicU32::new(0),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Count one exchange in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }

    /// Record one active health check result. Returns the new health state when it flips:
    /// after `unhealthy_threshold` consecutive failures, or `healthy_threshold` successes.
    ///
    /// Only the cluster's single health-check task calls this, so plain load/store suffices.
    pub fn record_check(
        &self,
        ok: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        let healthy = self.is_healthy();
        if ok == healthy {
            self.hc_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.hc_streak.load(Ordering::Relaxed) + 1;
        let threshold = if healthy {
            unhealthy_threshold
        } else {
            healthy_threshold
        };
        if streak >= threshold.max(1) {
            self.hc_streak.store(0, Ordering::Relaxed);
            self.healthy.store(ok, Ordering::Relaxed);
            Some(ok)
        } else {
            self.hc_streak.store(streak, Ordering::Relaxed);
            None
        }
    }
}

/// Decrements the endpoint's active count when the exchange ends (or its future is dropped).
pub(crate) struct ActiveGuard(Arc<Endpoint>);

impl ActiveGuard {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of a cluster at one moment, with what the balancer derives from them.
/// Immutable: DNS changes and health transitions build a new set and swap it in.
pub(crate) struct EndpointSet {
    /// Every endpoint, healthy or not, in config order (addresses of one name sorted).
    pub all: Vec<Arc<Endpoint>>,
    /// Indexes into `all` of the endpoints that were healthy when the set was built.
    pub healthy: Vec<u32>,
    /// The consistent-hash ring over the healthy endpoints (ring_hash clusters only).
    pub ring: Option<Ring>,
    /// Tables for weighted picks, when the healthy endpoints' weights differ. None keeps the
    /// equal-weight paths, which need no table.
    pub weighted: Option<Weighted>,
}

impl EndpointSet {
    /// Build the derived views (healthy list, ring) from the endpoints' current health.
    pub fn new(all: Vec<Arc<Endpoint>>, with_ring: bool) -> EndpointSet {
        let healthy: Vec<u32> = (0..all.len() as u32)
            .filter(|&i| all[i as usize].is_healthy())
            .collect();
        let ring = with_ring.then(|| Ring::build(&all, &healthy));
        let weighted = Weighted::build(&all, &healthy);
        EndpointSet {
            all,
            healthy,
            ring,
            weighted,
        }
    }

    /// Whether the derived views still match the endpoints' health flags.
    pub fn health_is_current(&self) -> bool {
        let healthy_now = self.all.iter().filter(|e| e.is_healthy()).count();
        healthy_now == self.healthy.len()
            && self
                .healthy
                .iter()
                .all(|&i| self.all[i as usize].is_healthy())
    }

    /// Sum of active exchanges over all endpoints (the retry budget's base).
    pub fn active_requests(&self) -> u64 {
        self.all.iter().map(|e| e.active()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_flips_only_after_consecutive_results() {
        let ep = Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 1)), "x:1".into(), 1);
        assert_eq!(ep.record_check(false, 2, 3), None);
        assert_eq!(ep.record_check(false, 2, 3), None);
        assert_eq!(
            ep.record_check(true, 2, 3),
            None,
            "a success breaks the streak"
        );
        assert_eq!(ep.record_check(false, 2, 3), None);
        assert_eq!(ep.record_check(false, 2, 3), None);
        assert_eq!(ep.record_check(false, 2, 3), Some(false));
        assert_eq!(ep.record_check(true, 2, 3), None);
        assert_eq!(ep.record_check(true, 2, 3), Some(true));
        assert!(ep.is_healthy());
    }

    #[test]
    fn active_counts_until_the_guard_drops() {
        let ep = Endpoint::new(SocketAddr::from(([127, 0, 0, 1], 1)), "x:1".into(), 1);
        let guard = ep.begin();
        assert_eq!(ep.active(), 1);
        drop(guard);
        assert_eq!(ep.active(), 0);
    }
}
