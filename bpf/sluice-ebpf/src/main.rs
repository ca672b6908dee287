//! The Sluice XDP program.
//!
//! For every packet: parse Ethernet (one 802.1Q/802.1ad tag), IPv4 (with options) or IPv6 (with up
//! to [`MAX_EXT_HEADERS`] extension headers), then TCP/UDP, and decide in this order: allow list →
//! pass; IPv4 /24 bitmap, exact address (deny, unexpired ban, or an address of a denied IPv4
//! /25-/31 prefix, one lookup), IPv6 prefix → drop; per-source packet and TCP SYN token buckets
//! → drop over budget; redirect rule → redirect or XDP_TX; otherwise pass. The cheap tables come
//! first: array bit tests, then one hash lookup; an IPv4 packet never walks a trie unless the
//! allow list has IPv4 entries longer than /24. Address rules apply as soon as the IP header
//! parsed, so a truncated L4 header cannot slip past a deny entry. Each verdict is counted per
//! CPU by reason.
#![no_std]
#![no_main]

mod parse;
mod rate;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, DevMap, HashMap, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use sluice_xdp_common::{
    addr_hash, deny_v4_word, exact_filter_bit, redirect_index, words_addr, words_v4, Addr,
    AddrWords, Counter, Exact, Reason, RedirectAction, Settings, ALLOW_LPM_MAX, DENY_HAS_EXACT,
    DENY_HAS_LPM6, DENY_HAS_V4, DENY_INDEX, DENY_LPM_MAX, DEVMAP_MAX, EXACT_DENY,
    EXACT_FILTER_WORDS, EXACT_MAX, EXACT_PREFIX, FLAG_ALLOW_LPM4, FLAG_ALLOW_LPM6, FLAG_ALLOW_V4,
    FLAG_BANS, FLAG_REDIRECT, FLAG_REDIRECT_ANY_TCP, FLAG_REDIRECT_ANY_UDP, REASON_COUNT,
    REDIRECT_DEVMAP, REDIRECT_MAX, REDIRECT_TX, V4_BITMAP_WORDS,
};

use parse::{parse, Packet, Parsed};

/// Hash maps that grow to a million entries allocate per element instead of up front.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
static DENY_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
/// Both deny buffers' /24 bitmaps in one array (see `sluice_xdp_common::DENY_V4`).
#[map]
static DENY_V4: Array<u64> = Array::with_max_entries(2 * V4_BITMAP_WORDS, 0);
#[map]
static DENY_LPM6_0: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(DENY_LPM_MAX, 0);
#[map]
static DENY_LPM6_1: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(DENY_LPM_MAX, 0);
/// Not an LRU: a full map refuses a new ban instead of evicting a deny entry or another ban.
/// Keyed by the address's 16 bytes (as words: same bytes, aligned).
#[map]
static EXACT: HashMap<AddrWords, Exact> = HashMap::with_max_entries(EXACT_MAX, BPF_F_NO_PREALLOC);
#[map]
static EXACT_FILTER: Array<u64> = Array::with_max_entries(EXACT_FILTER_WORDS, 0);
#[map]
static ALLOW_V4: Array<u64> = Array::with_max_entries(V4_BITMAP_WORDS, 0);
#[map]
static ALLOW_LPM4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(ALLOW_LPM_MAX, 0);
#[map]
static ALLOW_LPM6: LpmTrie<Addr, u8> = LpmTrie::with_max_entries(ALLOW_LPM_MAX, 0);
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

/// CLOCK_MONOTONIC, each flavour read at most once per packet and only by the rules that need
/// it.
pub struct Clock {
    coarse: u64,
    precise: u64,
}

impl Clock {
    /// Precise time (`bpf_ktime_get_ns`, a clocksource read: about 25 ns on a VM).
    #[inline(always)]
    pub fn precise(&mut self) -> u64 {
        if self.precise == 0 {
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            self.precise = unsafe { bpf_ktime_get_ns() };
        }
        self.precise
    }

    /// Time at tick resolution (`bpf_ktime_get_coarse_ns`, no clocksource read); it lags the
    /// precise clock by less than one tick.
    #[inline(always)]
    pub fn coarse(&mut self) -> u64 {
        if self.coarse == 0 {
            // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
            self.coarse = unsafe { bpf_ktime_get_coarse_ns() };
        }
        self.coarse
    }
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> (u32, Reason) {
    let pkt = match parse(ctx) {
        Parsed::NotIp => return (xdp_action::XDP_PASS, Reason::PassNotIp),
        Parsed::Malformed => return (xdp_action::XDP_PASS, Reason::PassMalformed),
        Parsed::Ip(pkt) => pkt,
    };
    let Some(settings) = SETTINGS.get(0) else {
        // Unreachable: index 0 of a one-element array.
        return (xdp_action::XDP_PASS, Reason::PassDefault);
    };
    let mut clock = Clock {
        coarse: 0,
        precise: 0,
    };
    // One keyed hash of the source serves the exact-table filter and the rate-limit sets.
    let h = addr_hash(&settings.seed, &pkt.src);
    if let Some(verdict) = address_rules(&pkt, h, settings, &mut clock) {
        return verdict;
    }
    if let Some(reason) = rate::rate_limits(&pkt, h, settings, &mut clock) {
        return (xdp_action::XDP_DROP, reason);
    }
    if !pkt.l4_ok {
        // The address rules passed; without a readable L4 header no port rule can apply.
        return (xdp_action::XDP_PASS, Reason::PassMalformed);
    }
    if pkt.has_ports && settings.flags & FLAG_REDIRECT != 0 {
        if let Some(verdict) = redirect(&pkt, settings.flags) {
            return verdict;
        }
    }
    (xdp_action::XDP_PASS, Reason::PassDefault)
}

/// Allow, deny and ban: the rules that need only the source address. Tables that userspace
/// marked empty are not looked up (a hash lookup costs 10-30 ns, a trie walk more).
#[inline(always)]
fn address_rules(
    pkt: &Packet,
    h: u64,
    settings: &Settings,
    clock: &mut Clock,
) -> Option<(u32, Reason)> {
    let flags = settings.flags;
    // The IPv4 address with its octets in memory order, and its /24 number.
    let v4 = words_v4(&pkt.src);
    let slash24 = u32::from_be(v4) >> 8;
    let allowed = if pkt.v4 {
        (flags & FLAG_ALLOW_V4 != 0 && bitmap_hit(&ALLOW_V4, slash24))
            || (flags & FLAG_ALLOW_LPM4 != 0
                && ALLOW_LPM4.get(&Key::new(32, v4.to_ne_bytes())).is_some())
    } else {
        flags & FLAG_ALLOW_LPM6 != 0
            && ALLOW_LPM6
                .get(&Key::new(128, words_addr(&pkt.src)))
                .is_some()
    };
    if allowed {
        return Some((xdp_action::XDP_PASS, Reason::PassAllow));
    }
    let deny = DENY_ACTIVE.get(0).copied().unwrap_or(0);
    let index = deny & DENY_INDEX;
    if pkt.v4 && deny & DENY_HAS_V4 != 0 {
        let word = deny_v4_word(index, slash24 >> 6);
        if DENY_V4
            .get(word)
            .is_some_and(|w| *w & (1u64 << (slash24 & 63)) != 0)
        {
            return Some((xdp_action::XDP_DROP, Reason::DropDenyPrefix));
        }
    }
    // A clear filter bit proves the source is not in the exact table (no hash lookup).
    if (deny & DENY_HAS_EXACT != 0 || flags & FLAG_BANS != 0)
        && bitmap_hit(&EXACT_FILTER, exact_filter_bit(h))
    {
        if let Some(verdict) = exact(pkt, index, clock) {
            return Some(verdict);
        }
    }
    if !pkt.v4 && deny & DENY_HAS_LPM6 != 0 {
        let key = Key::new(128, words_addr(&pkt.src));
        let hit = if index == 0 {
            DENY_LPM6_0.get(&key).is_some()
        } else {
            DENY_LPM6_1.get(&key).is_some()
        };
        if hit {
            return Some((xdp_action::XDP_DROP, Reason::DropDenyPrefix));
        }
    }
    None
}

/// Is bit `n` set in `bitmap` (for the /24 bitmaps, `n` is the /24 number)? An array lookup the
/// verifier inlines.
#[inline(always)]
fn bitmap_hit(bitmap: &Array<u64>, n: u32) -> bool {
    bitmap
        .get(n >> 6)
        .is_some_and(|w| *w & (1u64 << (n & 63)) != 0)
}

/// The exact-address entry, if any: denied by the active buffer as an address, banned and not
/// expired, or inside a denied IPv4 /25-/31 prefix (in that order, as the reasons were counted
/// when those prefixes lived in a trie looked up after this table). The clock is read only when
/// the source has a ban.
#[inline(always)]
fn exact(pkt: &Packet, index: u32, clock: &mut Clock) -> Option<(u32, Reason)> {
    let entry = EXACT.get_ptr(&pkt.src)?;
    // SAFETY: the pointer comes from a successful lookup and stays inside the map for this run;
    // an update racing this read can at worst give one packet the verdict of another value.
    let entry = unsafe { *entry };
    let bits = entry.deny >> index;
    if bits & EXACT_DENY != 0 {
        return Some((xdp_action::XDP_DROP, Reason::DropDenyExact));
    }
    if entry.ban_expiry_ns != 0 && clock.coarse() < entry.ban_expiry_ns {
        return Some((xdp_action::XDP_DROP, Reason::DropBan));
    }
    if bits & EXACT_PREFIX != 0 {
        return Some((xdp_action::XDP_DROP, Reason::DropDenyPrefix));
    }
    None
}

/// The rule for the exact port, else the protocol's any-port rule (slot of port 0), read only
/// when userspace flagged that one exists.
#[inline(always)]
fn redirect(pkt: &Packet, flags: u64) -> Option<(u32, Reason)> {
    let slot = redirect_index(pkt.protocol, pkt.dst_port)?;
    let any = redirect_index(pkt.protocol, 0)?;
    let any_flag = if pkt.protocol == parse::IPPROTO_TCP {
        FLAG_REDIRECT_ANY_TCP
    } else {
        FLAG_REDIRECT_ANY_UDP
    };
    let mut action = REDIRECT.get(slot).copied().unwrap_or_default();
    if action.kind == 0 && flags & any_flag != 0 {
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
