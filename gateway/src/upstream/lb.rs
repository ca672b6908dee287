//! Load balancing: pick one healthy endpoint of a set, avoiding endpoints this request already
//! tried when another healthy one exists.
//!
//! - `round_robin`: one atomic counter per cluster, shared by workers. With different weights,
//!   interleaved weighted round robin: turn after turn, round r serves (in order) every endpoint
//!   of weight above r, so weights 3 and 1 give `A B A A` and a heavy endpoint's turns are spread
//!   over the cycle instead of bunched.
//! - `least_request`: power of two choices — two distinct healthy endpoints drawn by weight, the
//!   one with fewer active exchanges per unit of weight wins (ties go to the first), as Envoy.
//! - `random`: over healthy endpoints, in proportion to their weights.
//! - `ring_hash`: a consistent-hash ring with [`VNODES_PER_ENDPOINT`] points per healthy
//!   endpoint and unit of weight, built once per endpoint set; a request without a hash picks at
//!   random (by weight).
//!
//! Weights cost nothing when the healthy endpoints' weights are all equal: the set then has no
//! [`Weighted`] tables and every policy takes its unweighted path. Otherwise the tables are built
//! with the set, so a pick stays a few comparisons and allocates nothing.
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

/// Most points on a weighted ring (4 MiB of points). Weights that would need more (many
/// endpoints with unrelated weights) scale every endpoint's points down together, each keeping at
/// least one. An equal-weight ring always has [`VNODES_PER_ENDPOINT`] per endpoint.
const MAX_RING_POINTS: u64 = 1 << 18;

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
    let weighted = set.weighted.as_ref();
    let random = || weighted.map_or_else(|| below(n), Weighted::draw);
    let picked = match lb {
        LoadBalancing::RoundRobin => {
            // A retry does not take a turn: it would shift the rotation so that a failing
            // endpoint gets every first try.
            let turn = if tried.is_empty() {
                rr.fetch_add(1, Ordering::Relaxed)
            } else {
                rr.load(Ordering::Relaxed)
            };
            let start = match weighted {
                None => turn % n,
                Some(w) => w.at_turn(turn),
            };
            probe(set, start, tried)
        }
        LoadBalancing::Random => probe(set, random(), tried),
        LoadBalancing::LeastRequest => {
            let (a, b) = match weighted {
                None => {
                    let a = below(n);
                    let mut b = below(n - 1);
                    if b >= a {
                        b += 1;
                    }
                    (a, b)
                }
                Some(w) => {
                    let a = w.draw();
                    (a, w.draw_other(a))
                }
            };
            let (ea, eb) = (probe(set, a, tried), probe(set, b, tried));
            // active/weight compared without dividing; equal weights compare plain counts.
            let load = |e: &Arc<Endpoint>, other: &Arc<Endpoint>| {
                e.active().saturating_mul(other.weight.into())
            };
            if load(eb, ea) < load(ea, eb) {
                eb
            } else {
                ea
            }
        }
        LoadBalancing::RingHash => match (hash, &set.ring) {
            (Some(h), Some(ring)) => ring.pick(set, h, tried),
            _ => probe(set, random(), tried),
        },
    };
    Some(picked)
}

/// Tables for weighted picks over the healthy endpoints, built with the endpoint set when their
/// weights differ. Positions are indexes into [`EndpointSet::healthy`].
pub(crate) struct Weighted {
    /// Running sums of the weights, position by position (random and least_request draws).
    cum: Vec<u64>,
    /// Positions, heaviest first (stable, so equal weights keep config order): round r of the
    /// interleaved round robin serves the endpoints of weight above r, a prefix of this list.
    by_weight: Vec<u32>,
    /// The turn (within one cycle of `total` turns) at which each round starts.
    round_start: Vec<u64>,
}

impl Weighted {
    /// None when the healthy endpoints all have the same weight (or there are fewer than two).
    pub fn build(all: &[Arc<Endpoint>], healthy: &[u32]) -> Option<Weighted> {
        let weight = |p: u32| u64::from(all[healthy[p as usize] as usize].weight);
        let first = healthy.first().map(|&i| all[i as usize].weight)?;
        if healthy.iter().all(|&i| all[i as usize].weight == first) {
            return None;
        }
        let n = healthy.len() as u32;
        let cum = (0..n)
            .scan(0u64, |sum, p| {
                *sum += weight(p);
                Some(*sum)
            })
            .collect();
        let mut by_weight: Vec<u32> = (0..n).collect();
        by_weight.sort_by_key(|&p| std::cmp::Reverse(weight(p)));
        let max = weight(by_weight[0]);
        let mut round_start = Vec::with_capacity(max as usize);
        let (mut turn, mut served) = (0u64, by_weight.len());
        for round in 0..max {
            while served > 0 && weight(by_weight[served - 1]) <= round {
                served -= 1;
            }
            round_start.push(turn);
            turn += served as u64;
        }
        Some(Weighted {
            cum,
            by_weight,
            round_start,
        })
    }

    fn total(&self) -> u64 {
        self.cum.last().copied().unwrap_or(0)
    }

    /// The position serving round-robin turn `turn`.
    fn at_turn(&self, turn: usize) -> usize {
        let t = turn as u64 % self.total().max(1);
        // round_start[0] is 0, so the round is the last one starting at or before t.
        let round = self
            .round_start
            .partition_point(|&s| s <= t)
            .saturating_sub(1);
        let j = t - self.round_start.get(round).copied().unwrap_or(0);
        self.by_weight.get(j as usize).map_or(0, |&p| p as usize)
    }

    /// The position whose weight interval holds `x` (0 <= x < total).
    fn at_weight(&self, x: u64) -> usize {
        self.cum.partition_point(|&c| c <= x)
    }

    /// A position drawn in proportion to the weights.
    fn draw(&self) -> usize {
        self.at_weight(below_u64(self.total()))
    }

    /// A position other than `a`, drawn in proportion to the other positions' weights.
    fn draw_other(&self, a: usize) -> usize {
        let end = self.cum[a];
        let start = if a == 0 { 0 } else { self.cum[a - 1] };
        let mut x = below_u64(self.total() - (end - start));
        if x >= start {
            x += end - start;
        }
        self.at_weight(x)
    }
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
        let vnodes = ring_vnodes(all, healthy);
        let mut points = Vec::with_capacity(healthy.iter().map(|&i| vnodes(i) as usize).sum());
        for &i in healthy {
            let base = fnv1a(all[i as usize].label.as_bytes(), FNV_OFFSET);
            // Points 0..k of an address are the same whatever k is: a weight change only adds
            // or removes that endpoint's last points.
            for v in 0..vnodes(i) {
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

/// Points of each healthy endpoint: [`VNODES_PER_ENDPOINT`] per unit of weight (weights divided
/// by their common divisor, so equal weights give exactly [`VNODES_PER_ENDPOINT`]), scaled down
/// together when the ring would pass [`MAX_RING_POINTS`].
fn ring_vnodes<'a>(all: &'a [Arc<Endpoint>], healthy: &[u32]) -> impl Fn(u32) -> u32 + 'a {
    let weight = |i: u32| u64::from(all[i as usize].weight);
    let g = healthy.iter().fold(0, |g, &i| gcd(g, weight(i))).max(1);
    let units: u64 = healthy.iter().map(|&i| weight(i) / g).sum::<u64>().max(1);
    let per_unit = u64::from(VNODES_PER_ENDPOINT);
    let budget = MAX_RING_POINTS.max(healthy.len() as u64 * per_unit);
    let fits = units * per_unit <= budget;
    move |i| {
        let u = weight(i) / g;
        let points = if fits {
            u * per_unit
        } else {
            (u * budget / units).max(1)
        };
        u32::try_from(points).unwrap_or(u32::MAX)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
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
    below_u64(n as u64) as usize
}

/// A uniform number in `0..n` (n > 0).
fn below_u64(n: u64) -> u64 {
    ((u128::from(next_u64()) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u16, ring: bool) -> EndpointSet {
        weighted_set(&vec![1; usize::from(n)], ring)
    }

    fn weighted_set(weights: &[u32], ring: bool) -> EndpointSet {
        let all = (0u16..)
            .zip(weights)
            .map(|(i, &w)| {
                let addr = SocketAddr::from(([10, 0, 0, 1], 8000 + i));
                Endpoint::new(addr, addr.to_string().into(), w)
            })
            .collect();
        EndpointSet::new(all, ring)
    }

    /// How many of `picks` picks each endpoint (by index in the set) gets.
    fn counts(s: &EndpointSet, lb: LoadBalancing, picks: u64) -> Vec<u64> {
        let rr = AtomicUsize::new(0);
        let mut counts = vec![0; s.all.len()];
        for key in 0..picks {
            let ep = pick(s, lb, &rr, Some(key), &Tried::default()).expect("healthy");
            let i = s
                .all
                .iter()
                .position(|e| e.addr == ep.addr)
                .expect("member");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_take_the_unweighted_paths() {
        let s = weighted_set(&[3, 3, 3], true);
        assert!(s.weighted.is_none());
        assert_eq!(s.ring.as_ref().map(|r| r.points.len()), Some(300));
        let rr = AtomicUsize::new(0);
        let order: Vec<u16> = (0..6)
            .map(|_| {
                let ep = pick(&s, LoadBalancing::RoundRobin, &rr, None, &Tried::default());
                ep.expect("healthy").addr.port() - 8000
            })
            .collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_round_robin_is_exact_and_interleaved() {
        let s = weighted_set(&[3, 1], false);
        let rr = AtomicUsize::new(0);
        let order: Vec<u16> = (0..8)
            .map(|_| {
                let ep = pick(&s, LoadBalancing::RoundRobin, &rr, None, &Tried::default());
                ep.expect("healthy").addr.port() - 8000
            })
            .collect();
        assert_eq!(order, [0, 1, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            counts(
                &weighted_set(&[5, 1, 2], false),
                LoadBalancing::RoundRobin,
                8000
            ),
            [5000, 1000, 2000]
        );
    }

    #[test]
    fn weighted_random_and_least_request_follow_the_weights() {
        let s = weighted_set(&[3, 1], false);
        for lb in [LoadBalancing::Random, LoadBalancing::LeastRequest] {
            // Expected 30000 of 40000 with a standard deviation under 100.
            let c = counts(&s, lb, 40_000);
            assert!((28_000..32_000).contains(&c[0]), "{lb:?}: {c:?}");
        }
        let c = counts(
            &weighted_set(&[1, 2, 5], false),
            LoadBalancing::Random,
            80_000,
        );
        for (got, want) in c.iter().zip([10_000, 20_000, 50_000]) {
            assert!(got.abs_diff(want) < 2_000, "{c:?}");
        }
    }

    #[test]
    fn least_request_compares_active_per_weight() {
        let s = weighted_set(&[4, 1], false);
        let busy = |k: usize| (0..k).map(|_| s.all[0].begin()).collect::<Vec<_>>();
        // 3 active on weight 4 is less loaded than 1 on weight 1: the heavy one always wins.
        let guards = busy(3);
        let one = s.all[1].begin();
        assert_eq!(counts(&s, LoadBalancing::LeastRequest, 1000), [1000, 0]);
        drop(guards);
        // 5 active on weight 4 is more loaded than 1 on weight 1.
        let guards = busy(5);
        assert_eq!(counts(&s, LoadBalancing::LeastRequest, 1000), [0, 1000]);
        drop((guards, one));
    }

    #[test]
    fn weighted_ring_gives_points_and_keys_by_weight() {
        let s = weighted_set(&[3, 1], true);
        assert_eq!(s.ring.as_ref().map(|r| r.points.len()), Some(400));
        let c = counts(&s, LoadBalancing::RingHash, 8000);
        // Expected 6000; 400 points spread the share by a few percent.
        assert!((4_800..7_200).contains(&c[0]), "{c:?}");
        // Many endpoints with unrelated weights stay under the ring's bound.
        let weights: Vec<u32> = (0..2000).map(|i| 127 + i % 2).collect();
        let big = weighted_set(&weights, true);
        let points = big.ring.as_ref().map_or(0, |r| r.points.len()) as u64;
        assert!((200_000..=MAX_RING_POINTS).contains(&points), "{points}");
    }

    #[test]
    fn only_healthy_endpoints_count() {
        let s = weighted_set(&[5, 1, 1], false);
        assert_eq!(s.all[0].record_check(false, 1, 1), Some(false));
        let s = EndpointSet::new(s.all.clone(), false);
        assert!(s.weighted.is_none(), "the healthy ones have equal weights");
        for lb in [
            LoadBalancing::RoundRobin,
            LoadBalancing::Random,
            LoadBalancing::LeastRequest,
        ] {
            let c = counts(&s, lb, 1000);
            assert_eq!(c[0], 0, "{lb:?}");
        }
        let s = weighted_set(&[5, 2, 1], false);
        assert_eq!(s.all[1].record_check(false, 1, 1), Some(false));
        let s = EndpointSet::new(s.all.clone(), false);
        assert_eq!(counts(&s, LoadBalancing::RoundRobin, 600), [500, 0, 100]);
    }

    #[test]
    fn weighted_retries_avoid_tried_endpoints() {
        let s = weighted_set(&[100, 1, 1], false);
        let rr = AtomicUsize::new(0);
        for lb in [
            LoadBalancing::RoundRobin,
            LoadBalancing::Random,
            LoadBalancing::LeastRequest,
        ] {
            let mut tried = Tried::default();
            for _ in 0..3 {
                let ep = pick(&s, lb, &rr, None, &tried).expect("healthy");
                assert!(!tried.contains(ep.addr), "{lb:?}");
                tried.push(ep.addr);
            }
        }
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
