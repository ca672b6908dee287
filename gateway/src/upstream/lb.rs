//! Load balancing: pick one healthy endpoint of a set, avoiding endpoints this request already
//! tried when another healthy one exists.
//!
//! - `round_robin`: one atomic counter per cluster, shared by workers.
//! - `least_request`: power of two choices — two distinct random healthy endpoints, the one with
//!   fewer active exchanges wins (ties go to the first).
//! - `random`: uniform over healthy endpoints.
//! - `ring_hash`: a consistent-hash ring with [`VNODES_PER_ENDPOINT`] points per healthy
//!   endpoint, built once per endpoint set; a request without a hash picks at random.
//!
//! Only endpoints that were healthy when the set was built are candidates. When none is, the
//! pick fails (the caller answers `NoHealthyEndpoint`): we do not fall back to "panic mode"
//! (trying unhealthy endpoints), so a health check that fails everywhere fails fast and visibly.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::model::LoadBalancing;

use super::endpoint::{Endpoint, EndpointSet};

/// Points per endpoint on the hash ring: enough for an even spread over a handful of endpoints.
pub(crate) const VNODES_PER_ENDPOINT: u32 = 100;

/// How many tried endpoints a request remembers (more tries than this just may repeat one).
const TRIED_CAPACITY: usize = 4;

/// Endpoints a request has already tried, without allocating.
#[derive(Default)]
pub(crate) struct Tried {
    addrs: [Option<SocketAddr>; TRIED_CAPACITY],
    next: usize,
}

impl Tried {
    pub fn push(&mut self, addr: SocketAddr) {
        self.addrs[self.next % TRIED_CAPACITY] = Some(addr);
        self.next += 1;
    }

    fn is_empty(&self) -> bool {
        self.next == 0
    }

    fn contains(&self, addr: SocketAddr) -> bool {
        self.addrs.contains(&Some(addr))
    }
}

/// Pick an endpoint, or None when no endpoint is healthy.
pub(crate) fn pick<'s>(
    set: &'s EndpointSet,
    lb: LoadBalancing,
    rr: &AtomicUsize,
    hash: Option<u64>,
    tried: &Tried,
) -> Option<&'s Arc<Endpoint>> {
    let n = set.healthy.len();
    if n <= 1 {
        return set.healthy.first().map(|&i| &set.all[i as usize]);
    }
    let picked = match lb {
        LoadBalancing::RoundRobin => {
            // A retry does not take a turn: it would shift the rotation so that a failing
            // endpoint gets every first try.
            let turn = if tried.is_empty() {
                rr.fetch_add(1, Ordering::Relaxed)
            } else {
                rr.load(Ordering::Relaxed)
            };
            probe(set, turn % n, tried)
        }
        LoadBalancing::Random => probe(set, below(n), tried),
        LoadBalancing::LeastRequest => {
            let a = below(n);
            let mut b = below(n - 1);
            if b >= a {
                b += 1;
            }
            let (ea, eb) = (probe(set, a, tried), probe(set, b, tried));
            if eb.active() < ea.active() {
                eb
            } else {
                ea
            }
        }
        LoadBalancing::RingHash => match (hash, &set.ring) {
            (Some(h), Some(ring)) => ring.pick(set, h, tried),
            _ => probe(set, below(n), tried),
        },
    };
    Some(picked)
}

/// The healthy endpoint at `start`, or the next one not yet tried.
fn probe<'s>(set: &'s EndpointSet, start: usize, tried: &Tried) -> &'s Arc<Endpoint> {
    let n = set.healthy.len();
    let at = |k: usize| &set.all[set.healthy[(start + k) % n] as usize];
    if !tried.is_empty() {
        if let Some(k) = (0..n).find(|&k| !tried.contains(at(k).addr)) {
            return at(k);
        }
    }
    at(0)
}

/// A consistent-hash ring: sorted (point, endpoint index) pairs.
///
/// Points depend only on each endpoint's address, so removing an endpoint moves only the keys
/// that mapped to it, and two sets sharing addresses agree on those addresses' keys.
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn build(all: &[Arc<Endpoint>], healthy: &[u32]) -> Ring {
        let mut points = Vec::with_capacity(healthy.len() * VNODES_PER_ENDPOINT as usize);
        for &i in healthy {
            let base = fnv1a(all[i as usize].label.as_bytes(), FNV_OFFSET);
            for v in 0..VNODES_PER_ENDPOINT {
                points.push((fmix64(fnv1a(&v.to_le_bytes(), base)), i));
            }
        }
        points.sort_unstable_by_key(|p| p.0);
        Ring { points }
    }

    fn pick<'s>(&self, set: &'s EndpointSet, hash: u64, tried: &Tried) -> &'s Arc<Endpoint> {
        let len = self.points.len();
        let h = fmix64(hash);
        let start = self.points.partition_point(|p| p.0 < h) % len.max(1);
        let at = |k: usize| &set.all[self.points[(start + k) % len].1 as usize];
        if !tried.is_empty() {
            if let Some(k) = (0..len).find(|&k| !tried.contains(at(k).addr)) {
                return at(k);
            }
        }
        at(0)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's finalizer: spreads any input hash evenly over the ring.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

thread_local! {
    // Seeded per thread from the std's random keys; `| 1` keeps xorshift off its zero state.
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// A fast per-thread xorshift64* generator: balancing and jitter need speed, not secrecy.
pub(crate) fn next_u64() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A uniform index in `0..n` (n > 0).
pub(crate) fn below(n: usize) -> usize {
    ((u128::from(next_u64()) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u16, ring: bool) -> EndpointSet {
        let all = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([10, 0, 0, 1], 8000 + i));
                Endpoint::new(addr, addr.to_string().into())
            })
            .collect();
        EndpointSet::new(all, ring)
    }

    #[test]
    fn retries_avoid_tried_endpoints_while_others_exist() {
        let s = set(3, false);
        let rr = AtomicUsize::new(0);
        let mut tried = Tried::default();
        for _ in 0..3 {
            let ep = pick(&s, LoadBalancing::RoundRobin, &rr, None, &tried).expect("healthy");
            assert!(!tried.contains(ep.addr));
            tried.push(ep.addr);
        }
        // All tried: a fourth try may repeat one rather than fail.
        assert!(pick(&s, LoadBalancing::Random, &rr, None, &tried).is_some());
    }

    #[test]
    fn ring_spreads_keys_and_retries_walk_on() {
        let s = set(4, true);
        let rr = AtomicUsize::new(0);
        let mut counts = std::collections::HashMap::new();
        for key in 0..4000u64 {
            let ep = pick(
                &s,
                LoadBalancing::RingHash,
                &rr,
                Some(key),
                &Tried::default(),
            )
            .expect("healthy");
            *counts.entry(ep.addr).or_insert(0) += 1;
        }
        // 100 points per endpoint keep each share within a factor of two of the mean (1000).
        assert!(
            counts.values().all(|&c| (500..2000).contains(&c)),
            "{counts:?}"
        );
        let first =
            pick(&s, LoadBalancing::RingHash, &rr, Some(7), &Tried::default()).expect("healthy");
        let mut tried = Tried::default();
        tried.push(first.addr);
        let second = pick(&s, LoadBalancing::RingHash, &rr, Some(7), &tried).expect("healthy");
        assert_ne!(first.addr, second.addr);
    }

    #[test]
    fn below_stays_in_range() {
        assert!((0..10_000).all(|_| below(3) < 3));
    }
}
