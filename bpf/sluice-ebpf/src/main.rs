//! The Sluice XDP program.
//!
//! For every packet: parse Ethernet (one 802.1Q/802.1ad tag), IPv4 (with options) or IPv6 (with up
//! to [`MAX_EXT_HEADERS`] extension headers), then TCP/UDP, and decide in this order: allow list →
//! pass; deny prefix, deny exact address, unexpired ban → drop; per-source packet and TCP SYN token
//! buckets → drop over budget; redirect rule → redirect or XDP_TX; otherwise pass. Address rules
//! apply as soon as the IP header parsed, so a truncated L4 header cannot slip past a deny entry.
//! Each verdict is counted per CPU by reason.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, DevMap, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use sluice_xdp_common::{
    Addr, Bucket, Counter, Reason, RedirectAction, RedirectKey, Settings, ALLOW_LPM_MAX, BANS_MAX,
    DENY_EXACT_MAX, DENY_HAS_EXACT, DENY_HAS_PREFIX, DENY_INDEX, DENY_LPM_MAX, DEVMAP_MAX,
    FLAG_ALLOW, FLAG_BANS, FLAG_REDIRECT, RATE_MAX, REASON_COUNT, REDIRECT_DEVMAP, REDIRECT_MAX,
    REDIRECT_TX, TOKEN,
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
static DENY_LPM_0: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(DENY_LPM_MAX, 0);
#[map]
static DENY_LPM_1: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(DENY_LPM_MAX, 0);
#[map]
static DENY_EXACT_0: HashMap<Addr, u8> =
    HashMap::with_max_entries(DENY_EXACT_MAX, BPF_F_NO_PREALLOC);
#[map]
static DENY_EXACT_1: HashMap<Addr, u8> =
    HashMap::with_max_entries(DENY_EXACT_MAX, BPF_F_NO_PREALLOC);
#[map]
static ALLOW_LPM: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(ALLOW_LPM_MAX, 0);
#[map]
static BANS: LruHashMap<Addr, u64> = LruHashMap::with_max_entries(BANS_MAX, 0);
#[map]
static RATE: LruHashMap<Addr, Bucket> = LruHashMap::with_max_entries(RATE_MAX, 0);
#[map]
static SYN_RATE: LruHashMap<Addr, Bucket> = LruHashMap::with_max_entries(RATE_MAX, 0);
#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
#[map]
static REDIRECT: HashMap<RedirectKey, RedirectAction> = HashMap::with_max_entries(REDIRECT_MAX, 0);
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

#[inline(always)]
fn decide(ctx: &XdpContext) -> (u32, Reason) {
    let pkt = match parse(ctx) {
        Parsed::NotIp => return (xdp_action::XDP_PASS, Reason::PassNotIp),
        Parsed::Malformed => return (xdp_action::XDP_PASS, Reason::PassMalformed),
        Parsed::Ip(pkt) => pkt,
    };
    let settings = SETTINGS.get(0).copied().unwrap_or_default();
    if let Some(verdict) = address_rules(&pkt, &settings) {
        return verdict;
    }
    if !pkt.l4_ok {
        // The address rules passed; without a readable L4 header no port rule can apply.
        return (xdp_action::XDP_PASS, Reason::PassMalformed);
    }
    if pkt.protocol == IPPROTO_TCP
        && pkt.syn
        && settings.syn_pps != 0
        && !take_token(&SYN_RATE, &pkt.src, settings.syn_pps, settings.syn_burst)
    {
        return (xdp_action::XDP_DROP, Reason::DropSynRateLimit);
    }
    if pkt.has_ports && settings.flags & FLAG_REDIRECT != 0 {
        if let Some(verdict) = redirect(&pkt) {
            return verdict;
        }
    }
    (xdp_action::XDP_PASS, Reason::PassDefault)
}

/// Allow, deny, ban and packet rate: the rules that need only the source address. Tables that
/// userspace marked empty are not looked up (each lookup costs 10-30 ns).
#[inline(always)]
fn address_rules(pkt: &Packet, settings: &Settings) -> Option<(u32, Reason)> {
    let key = Key::new(128, pkt.src);
    if settings.flags & FLAG_ALLOW != 0 && ALLOW_LPM.get(&key).is_some() {
        return Some((xdp_action::XDP_PASS, Reason::PassAllow));
    }
    let deny = DENY_ACTIVE.get(0).copied().unwrap_or(0);
    let (lpm, exact) = if deny & DENY_INDEX == 0 {
        (
            deny & DENY_HAS_PREFIX != 0 && DENY_LPM_0.get(&key).is_some(),
            deny & DENY_HAS_EXACT != 0 && DENY_EXACT_0.get_ptr(pkt.src).is_some(),
        )
    } else {
        (
            deny & DENY_HAS_PREFIX != 0 && DENY_LPM_1.get(&key).is_some(),
            deny & DENY_HAS_EXACT != 0 && DENY_EXACT_1.get_ptr(pkt.src).is_some(),
        )
    };
    if lpm {
        return Some((xdp_action::XDP_DROP, Reason::DropDenyPrefix));
    }
    if exact {
        return Some((xdp_action::XDP_DROP, Reason::DropDenyExact));
    }
    if settings.flags & FLAG_BANS != 0 {
        if let Some(expiry) = BANS.get_ptr(pkt.src) {
            // SAFETY: the pointer comes from a successful lookup; a concurrent delete may recycle
            // the element, in which case we read another ban's expiry — a harmless, bounded error.
            let expiry = unsafe { *expiry };
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            if now < expiry {
                return Some((xdp_action::XDP_DROP, Reason::DropBan));
            }
            let _ = BANS.remove(pkt.src);
        }
    }
    if settings.rate_pps != 0
        && !take_token(&RATE, &pkt.src, settings.rate_pps, settings.rate_burst)
    {
        return Some((xdp_action::XDP_DROP, Reason::DropRateLimit));
    }
    None
}

/// Take one token from `src`'s bucket (created full on first sight); false when empty.
/// Concurrent CPUs may race on one bucket; the result is a slightly looser limit, never a fault.
#[inline(always)]
fn take_token(map: &LruHashMap<Addr, Bucket>, src: &Addr, rate: u64, burst: u64) -> bool {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match map.get_ptr_mut(src) {
        Some(b) => {
            // SAFETY: the pointer comes from a successful lookup and stays valid for this run.
            let b = unsafe { &mut *b };
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
        None => {
            let fresh = Bucket {
                tokens: burst.saturating_sub(TOKEN),
                last_ns: now,
            };
            let _ = map.insert(src, fresh, 0);
            true
        }
    }
}

#[inline(always)]
fn redirect(pkt: &Packet) -> Option<(u32, Reason)> {
    let exact = RedirectKey {
        protocol: pkt.protocol,
        pad: 0,
        dst_port: pkt.dst_port,
    };
    let any = RedirectKey {
        dst_port: 0,
        ..exact
    };
    let action = REDIRECT.get_ptr(exact).or_else(|| REDIRECT.get_ptr(any))?;
    // SAFETY: the pointer comes from a successful lookup; rules are replaced whole by userspace.
    let action = unsafe { *action };
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
