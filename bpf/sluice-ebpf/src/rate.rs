//! Per-source token buckets without a helper call: an array of two-slot sets indexed by a keyed
//! hash of the source ([`rate_set`] of [`sluice_xdp_common::addr_hash`]), the full address
//! stored in each slot to tell colliding sources apart. A source not in its set takes the slot
//! refilled least recently (see `replace_first`) and starts with full buckets, exactly as a
//! source evicted from an LRU map did. The array lookup is inlined by the verifier; the set is
//! read and written in place.

use aya_ebpf::{macros::map, maps::Array};
use sluice_xdp_common::{
    rate_set, Bucket, RateSet, RateSlot, Reason, Settings, FLAG_COARSE_CLOCK, RATE_MAX, TOKEN,
};

use crate::parse::{Packet, IPPROTO_TCP};
use crate::Clock;

/// Longest refill interval considered (100 s): bounds `elapsed * rate` well inside u64 for the
/// rates userspace accepts (≤ 10^8 per second).
const MAX_REFILL_NS: u64 = 100_000_000_000;

#[map]
static RATE: Array<RateSet> = Array::with_max_entries(RATE_MAX / 2, 0);

/// The per-source packet budget, then (for a TCP SYN) the SYN budget. Concurrent CPUs may race
/// on one slot; the result is a slightly looser limit (or, for two colliding sources on two
/// CPUs in the same instant, one source briefly seeing the other's bucket), never a fault.
#[inline(always)]
pub fn rate_limits(pkt: &Packet, h: u64, s: &Settings, clock: &mut Clock) -> Option<Reason> {
    let syn = pkt.syn && pkt.protocol == IPPROTO_TCP && s.syn_pps != 0;
    if s.rate_pps == 0 && !syn {
        return None;
    }
    let set = RATE.get_ptr_mut(rate_set(h))?;
    // SAFETY: the pointer comes from a successful array lookup: it points at a RateSet inside
    // the map for the whole run. Other CPUs may write the same set concurrently (see above).
    let [a, b] = unsafe { &mut (*set).slots };
    // 0 marks a slot never used; a real clock reading is never 0 after the first tick.
    let now = if s.flags & FLAG_COARSE_CLOCK != 0 {
        clock.coarse()
    } else {
        clock.precise()
    }
    .max(1);
    let slot = if a.addr == pkt.src && a.last_used() != 0 {
        a
    } else if b.addr == pkt.src && b.last_used() != 0 {
        b
    } else {
        let victim = if replace_first(a, b) { a } else { b };
        fresh(victim, pkt, s, syn, now);
        return None;
    };
    if s.rate_pps != 0 && !take_token(&mut slot.packets, now, s.rate_pps, s.rate_burst) {
        return Some(Reason::DropRateLimit);
    }
    if syn && !take_token(&mut slot.syns, now, s.syn_pps, s.syn_burst) {
        return Some(Reason::DropSynRateLimit);
    }
    None
}

/// Which slot a new source takes: the one refilled least recently; on a tie (one tick of the
/// coarse clock), the one holding more tokens, whose reset to a full bucket gives away least.
/// A drained source is never reset in favour of a colliding one seen in the same instant.
#[inline(always)]
fn replace_first(a: &RateSlot, b: &RateSlot) -> bool {
    let (ta, tb) = (a.last_used(), b.last_used());
    ta < tb
        || (ta == tb
            && a.packets.tokens.saturating_add(a.syns.tokens)
                >= b.packets.tokens.saturating_add(b.syns.tokens))
}

/// Give `slot` to this packet's source: full buckets, minus this packet's token where a limiter
/// counted it.
#[inline(always)]
fn fresh(slot: &mut RateSlot, pkt: &Packet, s: &Settings, syn: bool, now: u64) {
    let first = |burst: u64, counted: bool| Bucket {
        tokens: if counted {
            burst.saturating_sub(TOKEN)
        } else {
            burst
        },
        last_ns: now,
    };
    slot.addr = pkt.src;
    slot.packets = first(s.rate_burst, s.rate_pps != 0);
    slot.syns = first(s.syn_burst, syn);
}

/// Refill `b` for the time elapsed, then take one token; false when empty.
#[inline(always)]
fn take_token(b: &mut Bucket, now: u64, rate: u64, burst: u64) -> bool {
    let elapsed = now.saturating_sub(b.last_ns).min(MAX_REFILL_NS);
    let tokens = b
        .tokens
        .saturating_add(elapsed.wrapping_mul(rate))
        .min(burst);
    b.last_ns = now;
    if tokens >= TOKEN {
        b.tokens = tokens - TOKEN;
        true
    } else {
        b.tokens = tokens;
        false
    }
}
