//! The Sluice XDP program.
//!
//! For every packet: parse Ethernet (one 802.1Q/802.1ad tag), IPv4 (with options) or IPv6 (with up
//! to [`MAX_EXT_HEADERS`] extension headers), then TCP/UDP, and decide in this order: allow list →
//! pass; IPv4 /24 bitmap, exact address (deny or unexpired ban, one lookup), long IPv4 or IPv6
//! prefix → drop; per-source packet and TCP SYN token buckets → drop over budget; redirect rule
//! → redirect or XDP_TX; otherwise pass. The cheap tables come first: an array bit test, then one
//! hash lookup, and a trie walk only for the prefixes the bitmap cannot hold. Address rules
//! apply as soon as the IP header parsed, so a truncated L4 header cannot slip past a deny entry.
//! Each verdict is counted per CPU by reason.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, DevMap, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use sluice_xdp_common::{
    redirect_index, Addr, Bucket, Buckets, Counter, Exact, Reason, RedirectAction, Settings,
    ALLOW_LPM_MAX, DENY_HAS_EXACT, DENY_HAS_LPM4, DENY_HAS_LPM6, DENY_HAS_V4, DENY_INDEX,
    DENY_LPM4_MAX, DENY_LPM_MAX, DEVMAP_MAX, EXACT_MAX, FLAG_ALLOW, FLAG_BANS, FLAG_REDIRECT,
    RATE_MAX, REASON_COUNT, REDIRECT_DEVMAP, REDIRECT_MAX, REDIRECT_TX, TOKEN, V4_BITMAP_WORDS,
};

use parse::{parse, Packet, Parsed, IPPROTO_TCP};

/// Hash maps that grow to a million entries allocate per element instead of up front.
const BPF_F_NO_PREALLOC: u32 = 1;

/// Longest refill interval considered (100 s): bounds `elapsed * rate` well inside u64 for the
/// rates userspace accepts (≤ 10^8 per second).
const MAX_REFILL_NS: u64 = 100_000_000_000;

#[map]
static DENY_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static DENY_V4_0: Array<u64> = Array::with_max_entries(V4_BITMAP_WORDS, 0);
#[map]
static DENY_V4_1: Array<u64> = Array::with_max_entries(V4_BITMAP_WORDS, 0);
#[map]
static DENY_LPM4_0: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(DENY_LPM4_MAX, 0);
#[map]
static DENY_LPM4_1: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(DENY_LPM4_MAX, 0);
#[map]
static DENY_LPM6_0: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(DENY_LPM_MAX, 0);
#[map]
static DENY_LPM6_1: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(DENY_LPM_MAX, 0);
/// Not an LRU: a full map refuses a new ban instead of evicting a deny entry or another ban.
#[map]
static EXACT: HashMap<Addr, Exact> = HashMap::with_max_entries(EXACT_MAX, BPF_F_NO_PREALLOC);
#[map]
static ALLOW_LPM: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(ALLOW_LPM_MAX, 0);
#[map]
static RATE: LruHashMap<Addr, Buckets> = LruHashMap::with_max_entries(RATE_MAX, 0);
#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static REDIRECT: Array<RedirectAction> = Array::with_max_entries(REDIRECT_MAX, 0);
#[map]
static DEVMAP: DevMap = DevMap::with_max_entries(DEVMAP_MAX, 0);
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// The entry point: decide, count, return.
#[xdp]
pub fn sluice_xdp(ctx: XdpContext) -> u32 {
    let (action, reason) = decide(&ctx);
    count(reason, (ctx.data_end() - ctx.data()) as u64);
    action
}

#[inline(always)]
fn count(reason: Reason, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup, so it is valid and
        // only this CPU writes it while the program runs (XDP does not preempt itself).
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// CLOCK_MONOTONIC, read at most once per packet and only by the rules that need it.
struct Clock(u64);

impl Clock {
    /// Precise time (`bpf_ktime_get_ns`): token buckets need it, a refill at tick resolution
    /// would let a small burst through once per tick at a high rate.
    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }

    /// Time at tick resolution (`bpf_ktime_get_coarse_ns`, no clocksource read: about a
    /// third of a ban hit's cost on a VM otherwise). A ban may outlive its expiry by one tick.
    #[inline(always)]
    fn coarse(&mut self) -> u64 {
        if self.0 != 0 {
            return self.0;
        }
        // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
        unsafe { bpf_ktime_get_coarse_ns() }
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> (u32, Reason) {
    let pkt = match parse(ctx) {
        Parsed::NotIp => return (xdp_action::XDP_PASS, Reason::PassNotIp),
        Parsed::Malformed => return (xdp_action::XDP_PASS, Reason::PassMalformed),
        Parsed::Ip(pkt) => pkt,
    };
    let settings = SETTINGS.get(0).copied().unwrap_or_default();
    let mut clock = Clock(0);
    if let Some(verdict) = address_rules(&pkt, &settings, &mut clock) {
        return verdict;
    }
    if let Some(reason) = rate_limits(&pkt, &settings, &mut clock) {
        return (xdp_action::XDP_DROP, reason);
    }
    if !pkt.l4_ok {
        // The address rules passed; without a readable L4 header no port rule can apply.
        return (xdp_action::XDP_PASS, Reason::PassMalformed);
    }
    if pkt.has_ports && settings.flags & FLAG_REDIRECT != 0 {
        if let Some(verdict) = redirect(&pkt) {
            return verdict;
        }
    }
    (xdp_action::XDP_PASS, Reason::PassDefault)
}

/// Allow, deny and ban: the rules that need only the source address. Tables that userspace
/// marked empty are not looked up (each map lookup costs 10-30 ns, a trie walk more).
#[inline(always)]
fn address_rules(pkt: &Packet, settings: &Settings, clock: &mut Clock) -> Option<(u32, Reason)> {
    if settings.flags & FLAG_ALLOW != 0 && ALLOW_LPM.get(Key::new(128, pkt.src)).is_some() {
        return Some((xdp_action::XDP_PASS, Reason::PassAllow));
    }
    let deny = DENY_ACTIVE.get(0).copied().unwrap_or(0);
    let index = deny & DENY_INDEX;
    if pkt.v4 && deny & DENY_HAS_V4 != 0 && v4_bitmap_hit(index, &pkt.src) {
        return Some((xdp_action::XDP_DROP, Reason::DropDenyPrefix));
    }
    if deny & DENY_HAS_EXACT != 0 || settings.flags & FLAG_BANS != 0 {
        if let Some(verdict) = exact(pkt, index, clock) {
            return Some(verdict);
        }
    }
    let lpm = if pkt.v4 {
        deny & DENY_HAS_LPM4 != 0 && {
            let key = Key::new(32, [pkt.src[12], pkt.src[13], pkt.src[14], pkt.src[15]]);
            if index == 0 {
                DENY_LPM4_0.get(&key).is_some()
            } else {
                DENY_LPM4_1.get(&key).is_some()
            }
        }
    } else {
        deny & DENY_HAS_LPM6 != 0 && {
            let key = Key::new(128, pkt.src);
            if index == 0 {
                DENY_LPM6_0.get(&key).is_some()
            } else {
                DENY_LPM6_1.get(&key).is_some()
            }
        }
    };
    if lpm {
        return Some((xdp_action::XDP_DROP, Reason::DropDenyPrefix));
    }
    None
}

/// Is the source's /24 set in the active IPv4 bitmap? An array lookup the verifier inlines.
#[inline(always)]
fn v4_bitmap_hit(index: u32, src: &Addr) -> bool {
    let n = u32::from_be_bytes([0, src[12], src[13], src[14]]);
    let word = if index == 0 {
        DENY_V4_0.get(n >> 6)
    } else {
        DENY_V4_1.get(n >> 6)
    };
    word.is_some_and(|w| *w & (1u64 << (n & 63)) != 0)
}

/// The exact-address entry, if any: denied by the active buffer, or banned and not expired. The
/// clock is read only when the source has a ban.
#[inline(always)]
fn exact(pkt: &Packet, index: u32, clock: &mut Clock) -> Option<(u32, Reason)> {
    let entry = EXACT.get_ptr(pkt.src)?;
    // SAFETY: the pointer comes from a successful lookup and stays inside the map for this run;
    // an update racing this read can at worst give one packet the verdict of another value.
    let entry = unsafe { *entry };
    if entry.deny & (1 << index) != 0 {
        return Some((xdp_action::XDP_DROP, Reason::DropDenyExact));
    }
    if entry.ban_expiry_ns != 0 && clock.coarse() < entry.ban_expiry_ns {
        return Some((xdp_action::XDP_DROP, Reason::DropBan));
    }
    None
}

/// The per-source packet budget, then (for a TCP SYN) the SYN budget; both buckets live in one
/// LRU entry, so a packet pays at most one lookup. A source seen for the first time gets full
/// buckets minus this packet. Concurrent CPUs may race on one entry; the result is a slightly
/// looser limit, never a fault.
#[inline(always)]
fn rate_limits(pkt: &Packet, settings: &Settings, clock: &mut Clock) -> Option<Reason> {
    let syn = pkt.syn && pkt.protocol == IPPROTO_TCP && settings.syn_pps != 0;
    if settings.rate_pps == 0 && !syn {
        return None;
    }
    let now = clock.now();
    let Some(b) = RATE.get_ptr_mut(&pkt.src) else {
        // Full buckets, minus this packet's token where a limiter counted it.
        let first = |burst: u64, counted: bool| Bucket {
            tokens: if counted {
                burst.saturating_sub(TOKEN)
            } else {
                burst
            },
            last_ns: now,
        };
        let fresh = Buckets {
            packets: first(settings.rate_burst, settings.rate_pps != 0),
            syns: first(settings.syn_burst, syn),
        };
        let _ = RATE.insert(&pkt.src, &fresh, 0);
        return None;
    };
    // SAFETY: the pointer comes from a successful lookup and stays valid for this run.
    let b = unsafe { &mut *b };
    if settings.rate_pps != 0
        && !take_token(&mut b.packets, now, settings.rate_pps, settings.rate_burst)
    {
        return Some(Reason::DropRateLimit);
    }
    if syn && !take_token(&mut b.syns, now, settings.syn_pps, settings.syn_burst) {
        return Some(Reason::DropSynRateLimit);
    }
    None
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

/// The rule for the exact port, else the protocol's any-port rule (slot of port 0).
#[inline(always)]
fn redirect(pkt: &Packet) -> Option<(u32, Reason)> {
    let slot = redirect_index(pkt.protocol, pkt.dst_port)?;
    let any = redirect_index(pkt.protocol, 0)?;
    let mut action = REDIRECT.get(slot).copied().unwrap_or_default();
    if action.kind == 0 {
        action = REDIRECT.get(any).copied().unwrap_or_default();
    }
    match action.kind {
        REDIRECT_TX => Some((xdp_action::XDP_TX, Reason::Tx)),
        REDIRECT_DEVMAP => {
            match DEVMAP.redirect(action.devmap_index, xdp_action::XDP_PASS as u64) {
                Ok(act) => Some((act, Reason::Redirect)),
                Err(_) => Some((xdp_action::XDP_PASS, Reason::PassRedirectFailed)),
            }
        }
        _ => None,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program with a reachable infinite loop, so no panic path may
    // survive optimisation; this handler exists only to satisfy the compiler.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
