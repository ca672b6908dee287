//! Typed handles on the program's maps and the operations the gateway performs on them.
//! Control path only: callers serialise access (the runtime holds these behind a mutex).

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::time::Duration;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, DevMap, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray};
use aya::Ebpf;
use sluice_xdp_common::{
    self as common, Addr, Counter, Exact, Reason, RedirectAction, RedirectKey, Settings, BANS_MAX,
    EXACT_DENY, EXACT_PREFIX, FLAG_ALLOW_LPM4, FLAG_ALLOW_LPM6, FLAG_ALLOW_V4, FLAG_BANS,
    FLAG_COARSE_CLOCK, FLAG_REDIRECT, FLAG_REDIRECT_ANY_TCP, FLAG_REDIRECT_ANY_UDP,
};

use super::clock;
use super::layout::{AllowLayout, Bitmap, DenyLayout};
use super::rules::{key_addr, DenySet};
use super::XdpError;

/// How often adding a ban also deletes the expired ones (the program ignores an expired ban, so
/// this only returns memory; a full map triggers a sweep at once).
const SWEEP_INTERVAL_NS: u64 = 60_000_000_000;

/// The program's maps, taken out of the loaded object.
pub struct Maps {
    deny_active: Array<MapData, u32>,
    /// Both buffers' /24 bitmaps (buffer `i` at words `i << 18 ..`).
    deny_v4: Array<MapData, u64>,
    deny_lpm6: [LpmTrie<MapData, Addr, u8>; 2],
    exact: HashMap<MapData, Addr, Exact>,
    exact_filter: Array<MapData, u64>,
    /// Keys in `exact` per filter bit (bits with none are absent), and the filter words as
    /// written: a bit is set before its first key goes in and cleared after its last key goes.
    filter_keys: StdHashMap<u32, u32>,
    filter_words: Vec<u64>,
    allow_v4: Array<MapData, u64>,
    allow_lpm4: LpmTrie<MapData, [u8; 4], u8>,
    allow_lpm6: LpmTrie<MapData, Addr, u8>,
    settings: Array<MapData, Settings>,
    redirect: Array<MapData, RedirectAction>,
    /// Redirect slots written (and so to clear when their rule goes).
    redirect_slots: std::collections::BTreeSet<u32>,
    devmap: DevMap<MapData>,
    counters: PerCpuArray<MapData, Counter>,
    /// Which deny buffer the program reads.
    active: u32,
    /// What each deny buffer holds, kept exact write by write (also after a failed write).
    contents: [DenyLayout; 2],
    /// Entries in the deny set each buffer was last completed with.
    entries: [usize; 2],
    /// Every ban in the map with its expiry: the map is written only from here, so this mirror
    /// lets bans be counted, listed and swept without walking a million kernel entries.
    bans: StdHashMap<Addr, u64>,
    /// Monotonic time of the last sweep of expired bans.
    last_sweep_ns: u64,
    /// The allow list as written, table by table (kept exact write by write).
    allowed: AllowLayout,
    /// The settings as last written (rates, `FLAG_*` bits, the rate-set seed).
    current: Settings,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, XdpError> {
    ebpf.take_map(name).ok_or(XdpError::MissingMap(name))
}

fn map_err(what: &'static str) -> impl Fn(MapError) -> XdpError {
    move |source| XdpError::Map { what, source }
}

impl Maps {
    /// Take every map out of a freshly loaded object.
    ///
    /// # Errors
    /// A map is missing or has unexpected key/value sizes (object and gateway disagree).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, XdpError> {
        let e = map_err("open");
        Ok(Maps {
            deny_active: Array::try_from(take(ebpf, common::DENY_ACTIVE)?).map_err(&e)?,
            deny_v4: Array::try_from(take(ebpf, common::DENY_V4)?).map_err(&e)?,
            deny_lpm6: [
                LpmTrie::try_from(take(ebpf, common::DENY_LPM6_0)?).map_err(&e)?,
                LpmTrie::try_from(take(ebpf, common::DENY_LPM6_1)?).map_err(&e)?,
            ],
            exact: HashMap::try_from(take(ebpf, common::EXACT)?).map_err(&e)?,
            exact_filter: Array::try_from(take(ebpf, common::EXACT_FILTER)?).map_err(&e)?,
            filter_keys: StdHashMap::new(),
            filter_words: vec![0; common::EXACT_FILTER_WORDS as usize],
            allow_v4: Array::try_from(take(ebpf, common::ALLOW_V4)?).map_err(&e)?,
            allow_lpm4: LpmTrie::try_from(take(ebpf, common::ALLOW_LPM4)?).map_err(&e)?,
            allow_lpm6: LpmTrie::try_from(take(ebpf, common::ALLOW_LPM6)?).map_err(&e)?,
            settings: Array::try_from(take(ebpf, common::SETTINGS)?).map_err(&e)?,
            redirect: Array::try_from(take(ebpf, common::REDIRECT)?).map_err(&e)?,
            redirect_slots: Default::default(),
            devmap: DevMap::try_from(take(ebpf, common::DEVMAP)?).map_err(&e)?,
            counters: PerCpuArray::try_from(take(ebpf, common::COUNTERS)?).map_err(&e)?,
            active: 0,
            contents: Default::default(),
            entries: [0; 2],
            bans: StdHashMap::new(),
            last_sweep_ns: 0,
            allowed: AllowLayout::default(),
            // A fresh key per load: nobody outside can aim sources at one rate set.
            current: Settings {
                seed: rand::random(),
                ..Settings::default()
            },
        })
    }

    /// Make `set` the deny set in one step: rewrite the buffer the program does not read, then
    /// flip the active index (a single 4-byte array store). Only the difference with what that
    /// buffer held is written, so re-applying a large set after a small edit is cheap.
    ///
    /// # Errors
    /// The set is larger than the tables, or a map write failed; the program keeps reading the
    /// previous set.
    pub fn apply_deny(&mut self, set: &DenySet) -> Result<(), XdpError> {
        let idx = (1 - self.active) as usize;
        let target = DenyLayout::of(set)?;
        let mut held = std::mem::take(&mut self.contents[idx]);
        let written = self.write_buffer(idx, &mut held, &target);
        self.contents[idx] = held;
        written?;
        self.entries[idx] = set.len();
        // One 4-byte store switches the buffer and its emptiness flags together.
        let word = idx as u32 | target.flags();
        self.deny_active
            .set(0, word, 0)
            .map_err(map_err("deny list"))?;
        self.active = idx as u32;
        Ok(())
    }

    /// Bring buffer `idx` from `held` to `target`, updating `held` after every kernel write so
    /// that it stays true if a write fails half way.
    fn write_buffer(
        &mut self,
        idx: usize,
        held: &mut DenyLayout,
        target: &DenyLayout,
    ) -> Result<(), XdpError> {
        let e = map_err("deny list");
        write_bitmap(
            &mut self.deny_v4,
            common::deny_v4_word(idx as u32, 0),
            &mut held.v4_words,
            &target.v4_words,
        )
        .map_err(&e)?;
        let stale: Vec<_> = held.lpm6.difference(&target.lpm6).copied().collect();
        for (addr, len) in stale {
            let _ = self.deny_lpm6[idx].remove(&Key::new(len, addr));
            held.lpm6.remove(&(addr, len));
        }
        let fresh: Vec<_> = target.lpm6.difference(&held.lpm6).copied().collect();
        for (addr, len) in fresh {
            self.deny_lpm6[idx]
                .insert(&Key::new(len, addr), 1, 0)
                .map_err(&e)?;
            held.lpm6.insert((addr, len));
        }
        for kind in [EXACT_DENY, EXACT_PREFIX] {
            let (have, want) = match kind {
                EXACT_DENY => (&held.exact, &target.exact),
                _ => (&held.prefix_hosts, &target.prefix_hosts),
            };
            let stale: Vec<Addr> = have.difference(want).copied().collect();
            let fresh: Vec<Addr> = want.difference(have).copied().collect();
            for (addrs, present) in [(stale, false), (fresh, true)] {
                for addr in addrs {
                    self.set_deny_bit(idx, held, &addr, kind, present)
                        .map_err(&e)?;
                }
            }
        }
        Ok(())
    }

    /// Set or clear `kind` ([`EXACT_DENY`] or [`EXACT_PREFIX`]) for buffer `idx` on `addr`'s
    /// exact entry, keeping its other bits and its ban; `held` (the buffer's contents, taken out
    /// of `self.contents` while it is written) is updated once the kernel has the entry.
    fn set_deny_bit(
        &mut self,
        idx: usize,
        held: &mut DenyLayout,
        addr: &Addr,
        kind: u32,
        present: bool,
    ) -> Result<(), MapError> {
        let other = 1 - idx;
        let mut bits =
            layout_bits(&self.contents[other], other, addr) | layout_bits(held, idx, addr);
        let was = bits != 0 || self.bans.contains_key(addr);
        if present {
            bits |= kind << idx;
        } else {
            bits &= !(kind << idx);
        }
        self.write_exact(addr, was, self.exact_entry(addr, bits))?;
        let set = if kind == EXACT_DENY {
            &mut held.exact
        } else {
            &mut held.prefix_hosts
        };
        if present {
            set.insert(*addr);
        } else {
            set.remove(addr);
        }
        Ok(())
    }

    /// The deny bits `addr` has in both buffers (outside a deny switch, both are in
    /// `self.contents`).
    fn deny_bits(&self, addr: &Addr) -> u32 {
        layout_bits(&self.contents[0], 0, addr) | layout_bits(&self.contents[1], 1, addr)
    }

    fn exact_entry(&self, addr: &Addr, deny: u32) -> Exact {
        Exact {
            ban_expiry_ns: self.bans.get(addr).copied().unwrap_or(0),
            deny,
            pad: 0,
        }
    }

    /// Store `entry`, or delete the key when the entry says nothing any more; `was` says
    /// whether the key is in the map now (from the mirrors, which follow the map write by
    /// write). The filter bit of a new key is set before the key goes in, and cleared only
    /// after the last key with that bit is gone, so the filter never misses a key.
    fn write_exact(&mut self, addr: &Addr, was: bool, entry: Exact) -> Result<(), MapError> {
        if entry.is_empty() {
            if !was {
                return Ok(());
            }
            match self.exact.remove(addr) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
            self.filter_release(addr)
        } else {
            if !was {
                self.filter_claim(addr)?;
            }
            let inserted = self.exact.insert(addr, entry, 0);
            if inserted.is_err() && !was {
                // Best effort: a bit left set only costs a hash lookup.
                let _ = self.filter_release(addr);
            }
            inserted
        }
    }

    fn filter_bit(&self, addr: &Addr) -> u32 {
        let h = common::addr_hash(&self.current.seed, &common::addr_words(addr));
        common::exact_filter_bit(h)
    }

    /// Count one more key on `addr`'s filter bit, setting the bit in the kernel first if it
    /// was clear.
    fn filter_claim(&mut self, addr: &Addr) -> Result<(), MapError> {
        let bit = self.filter_bit(addr);
        let keys = self.filter_keys.get(&bit).copied().unwrap_or(0);
        if keys == 0 {
            let word = (bit >> 6) as usize;
            let value = self.filter_words[word] | 1 << (bit & 63);
            self.exact_filter.set(word as u32, value, 0)?;
            self.filter_words[word] = value;
        }
        self.filter_keys.insert(bit, keys + 1);
        Ok(())
    }

    /// Count one key less on `addr`'s filter bit (the key is already gone from the map),
    /// clearing the bit when it was the last.
    fn filter_release(&mut self, addr: &Addr) -> Result<(), MapError> {
        let bit = self.filter_bit(addr);
        match self.filter_keys.get(&bit).copied() {
            Some(keys) if keys > 1 => {
                self.filter_keys.insert(bit, keys - 1);
                Ok(())
            }
            Some(_) => {
                let word = (bit >> 6) as usize;
                let value = self.filter_words[word] & !(1 << (bit & 63));
                self.exact_filter.set(word as u32, value, 0)?;
                self.filter_words[word] = value;
                self.filter_keys.remove(&bit);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Keys the exact-table filter counts (every key of the map); for tests.
    pub fn filter_key_count(&self) -> u64 {
        self.filter_keys.values().map(|n| u64::from(*n)).sum()
    }

    /// Entries in the deny set the program currently reads.
    pub fn active_deny_len(&self) -> usize {
        self.entries[self.active as usize]
    }

    /// Replace the allow list (small, config-only: applied as a diff, table by table). A table
    /// that becomes empty stops being looked up before its entries go; one that gains its
    /// first entries is looked up only once they are in.
    ///
    /// # Errors
    /// A map write failed.
    pub fn apply_allow(
        &mut self,
        allow: std::collections::BTreeSet<(Addr, u32)>,
    ) -> Result<(), XdpError> {
        let e = map_err("allow list");
        let target = AllowLayout::of(&allow);
        let mask = FLAG_ALLOW_V4 | FLAG_ALLOW_LPM4 | FLAG_ALLOW_LPM6;
        let kept = self.allowed.flags() & target.flags();
        self.set_flags(mask, kept)?;
        let mut held = std::mem::take(&mut self.allowed);
        let written = self.write_allow(&mut held, &target);
        self.allowed = held;
        written.map_err(&e)?;
        self.set_flags(mask, target.flags())
    }

    fn write_allow(
        &mut self,
        held: &mut AllowLayout,
        target: &AllowLayout,
    ) -> Result<(), MapError> {
        write_bitmap(&mut self.allow_v4, 0, &mut held.v4_words, &target.v4_words)?;
        let stale: Vec<_> = held.lpm4.difference(&target.lpm4).copied().collect();
        for (addr, len) in stale {
            let _ = self.allow_lpm4.remove(&Key::new(len, addr));
            held.lpm4.remove(&(addr, len));
        }
        let fresh: Vec<_> = target.lpm4.difference(&held.lpm4).copied().collect();
        for (addr, len) in fresh {
            self.allow_lpm4.insert(&Key::new(len, addr), 1, 0)?;
            held.lpm4.insert((addr, len));
        }
        let stale: Vec<_> = held.lpm6.difference(&target.lpm6).copied().collect();
        for (addr, len) in stale {
            let _ = self.allow_lpm6.remove(&Key::new(len, addr));
            held.lpm6.remove(&(addr, len));
        }
        let fresh: Vec<_> = target.lpm6.difference(&held.lpm6).copied().collect();
        for (addr, len) in fresh {
            self.allow_lpm6.insert(&Key::new(len, addr), 1, 0)?;
            held.lpm6.insert((addr, len));
        }
        Ok(())
    }

    /// Write the rate-limit settings, with the clock chosen for them (see `clock`).
    ///
    /// # Errors
    /// The map write failed.
    pub fn apply_settings(&mut self, settings: Settings) -> Result<(), XdpError> {
        let chosen = clock::choose(settings, clock::coarse_tick_ns());
        let next = Settings {
            flags: (self.current.flags & !FLAG_COARSE_CLOCK) | (chosen.flags & FLAG_COARSE_CLOCK),
            seed: self.current.seed,
            ..chosen
        };
        self.write_settings(next)
    }

    /// The settings the program reads.
    pub fn settings(&self) -> &Settings {
        &self.current
    }

    fn set_flags(&mut self, mask: u64, value: u64) -> Result<(), XdpError> {
        let mut next = self.current;
        next.flags = (next.flags & !mask) | (value & mask);
        if next == self.current {
            return Ok(());
        }
        self.write_settings(next)
    }

    fn set_flag(&mut self, flag: u64, on: bool) -> Result<(), XdpError> {
        self.set_flags(flag, if on { flag } else { 0 })
    }

    fn write_settings(&mut self, next: Settings) -> Result<(), XdpError> {
        self.settings.set(0, next, 0).map_err(map_err("settings"))?;
        self.current = next;
        Ok(())
    }

    /// Replace the redirect rules; `targets[i]` is the ifindex stored at DEVMAP index `i`.
    ///
    /// # Errors
    /// A map write failed (for example, the target interface cannot take redirected frames).
    pub fn apply_redirects(
        &mut self,
        rules: &[(RedirectKey, RedirectAction)],
        targets: &[u32],
    ) -> Result<(), XdpError> {
        for (i, ifindex) in targets.iter().enumerate() {
            self.devmap
                .set(i as u32, *ifindex, None, 0)
                .map_err(|e| XdpError::Redirect(e.to_string()))?;
        }
        let e = map_err("redirect rules");
        let mut slots = std::collections::BTreeSet::new();
        for (k, v) in rules {
            let slot = common::redirect_index(k.protocol, k.dst_port).ok_or_else(|| {
                XdpError::Config(format!(
                    "redirect protocol {} is not TCP or UDP",
                    k.protocol
                ))
            })?;
            self.redirect.set(slot, v, 0).map_err(&e)?;
            self.redirect_slots.insert(slot);
            slots.insert(slot);
        }
        let stale: Vec<u32> = self.redirect_slots.difference(&slots).copied().collect();
        for slot in stale {
            self.redirect
                .set(slot, RedirectAction::default(), 0)
                .map_err(&e)?;
            self.redirect_slots.remove(&slot);
        }
        let mut flags = 0;
        if !rules.is_empty() {
            flags |= FLAG_REDIRECT;
        }
        for (k, _) in rules.iter().filter(|(k, _)| k.dst_port == 0) {
            flags |= match k.protocol {
                6 => FLAG_REDIRECT_ANY_TCP,
                _ => FLAG_REDIRECT_ANY_UDP,
            };
        }
        self.set_flags(
            FLAG_REDIRECT | FLAG_REDIRECT_ANY_TCP | FLAG_REDIRECT_ANY_UDP,
            flags,
        )
    }

    /// Ban `addr` until `expiry_ns` (CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns); `now_ns`
    /// is the current time on that clock. A ban never evicts anything: when [`BANS_MAX`] bans
    /// are held, expired ones are swept, and if none has expired the new ban is refused.
    ///
    /// # Errors
    /// The ban table is full of unexpired bans, or the map write failed.
    pub fn ban(&mut self, addr: Addr, expiry_ns: u64, now_ns: u64) -> Result<(), XdpError> {
        let full = self.bans.len() >= BANS_MAX as usize;
        if now_ns.saturating_sub(self.last_sweep_ns) > SWEEP_INTERVAL_NS
            || (full && !self.bans.contains_key(&addr))
        {
            self.sweep(now_ns);
        }
        if self.bans.len() >= BANS_MAX as usize && !self.bans.contains_key(&addr) {
            return Err(XdpError::BansFull(BANS_MAX));
        }
        let deny = self.deny_bits(&addr);
        let entry = Exact {
            ban_expiry_ns: expiry_ns.max(1),
            deny,
            pad: 0,
        };
        let was = deny != 0 || self.bans.contains_key(&addr);
        self.write_exact(&addr, was, entry)
            .map_err(map_err("bans"))?;
        self.bans.insert(addr, entry.ban_expiry_ns);
        // Never cleared: a stale flag costs one lookup, a missing one would lose a ban.
        self.set_flag(FLAG_BANS, true)
    }

    /// Delete the bans that expired by `now_ns` (from the map and the mirror).
    fn sweep(&mut self, now_ns: u64) {
        self.last_sweep_ns = now_ns;
        let expired: Vec<Addr> = self
            .bans
            .iter()
            .filter(|(_, exp)| **exp <= now_ns)
            .map(|(a, _)| *a)
            .collect();
        for addr in expired {
            self.lift(&addr);
        }
    }

    /// Remove the ban on `addr` from the map (keeping its deny bits) and from the mirror.
    fn lift(&mut self, addr: &Addr) -> bool {
        if !self.bans.contains_key(addr) {
            return false;
        }
        let entry = Exact {
            ban_expiry_ns: 0,
            deny: self.deny_bits(addr),
            pad: 0,
        };
        match self.write_exact(addr, true, entry) {
            Ok(()) => {
                self.bans.remove(addr);
                true
            }
            Err(e) => {
                tracing::warn!(addr = %key_addr(addr), error = %e, "XDP ban not lifted");
                false
            }
        }
    }

    /// Lift a ban; false when there was none.
    pub fn unban(&mut self, addr: &Addr) -> bool {
        self.lift(addr)
    }

    /// Bans not yet expired at `now_ns`.
    pub fn live_bans(&self, now_ns: u64) -> usize {
        self.bans.values().filter(|exp| **exp > now_ns).count()
    }

    /// Every ban with its expiry (expired ones not yet swept included; the caller filters).
    pub fn bans(&self) -> impl Iterator<Item = (&Addr, u64)> + '_ {
        self.bans.iter().map(|(a, e)| (a, *e))
    }

    /// Packets and bytes per reason, summed over CPUs.
    pub fn counters(&self) -> Vec<(Reason, Counter)> {
        Reason::ALL
            .iter()
            .map(|r| {
                let sum = self
                    .counters
                    .get(&(*r as u32), 0)
                    .map(|per_cpu| {
                        per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                            packets: acc.packets + c.packets,
                            bytes: acc.bytes + c.bytes,
                        })
                    })
                    .unwrap_or_default();
                (*r, sum)
            })
            .collect()
    }
}

/// The deny bits a buffer's contents give `addr` in an exact entry.
fn layout_bits(layout: &DenyLayout, idx: usize, addr: &Addr) -> u32 {
    let mut bits = 0;
    if layout.exact.contains(addr) {
        bits |= EXACT_DENY << idx;
    }
    if layout.prefix_hosts.contains(addr) {
        bits |= EXACT_PREFIX << idx;
    }
    bits
}

/// Bring a bitmap map (its words from `base` on) from `held` to `target`, word by word, keeping
/// `held` true after every write.
fn write_bitmap(
    map: &mut Array<MapData, u64>,
    base: u32,
    held: &mut Bitmap,
    target: &Bitmap,
) -> Result<(), MapError> {
    let stale: Vec<u32> = held
        .keys()
        .filter(|w| !target.contains_key(w))
        .copied()
        .collect();
    for word in stale {
        map.set(base + word, 0, 0)?;
        held.remove(&word);
    }
    for (word, bits) in target {
        if held.get(word) != Some(bits) {
            map.set(base + *word, *bits, 0)?;
            held.insert(*word, *bits);
        }
    }
    Ok(())
}

/// A ban as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BanEntry {
    /// The banned source.
    pub addr: IpAddr,
    /// Time left, in whole seconds.
    pub expires_in_secs: u64,
}

impl BanEntry {
    /// Build from a map entry, or None when it has expired.
    pub fn from_map(addr: &Addr, expiry_ns: u64, now_ns: u64) -> Option<Self> {
        let left = expiry_ns.checked_sub(now_ns).filter(|l| *l > 0)?;
        Some(BanEntry {
            addr: key_addr(addr),
            expires_in_secs: Duration::from_nanos(left).as_secs(),
        })
    }
}
