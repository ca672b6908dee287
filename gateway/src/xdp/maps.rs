//! Typed handles on the program's maps and the operations the gateway performs on them.
//! Control path only: callers serialise access (the runtime holds these behind a mutex).

use std::net::IpAddr;
use std::time::Duration;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, DevMap, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray};
use aya::Ebpf;
use sluice_xdp_common::{
    self as common, Addr, Counter, Reason, RedirectAction, RedirectKey, Settings, DENY_HAS_EXACT,
    DENY_HAS_PREFIX, FLAG_ALLOW, FLAG_BANS, FLAG_REDIRECT,
};

use super::rules::{key_addr, DenySet};
use super::XdpError;

/// The program's maps, taken out of the loaded object.
pub struct Maps {
    deny_active: Array<MapData, u32>,
    deny_lpm: [LpmTrie<MapData, Addr, u8>; 2],
    deny_exact: [HashMap<MapData, Addr, u8>; 2],
    allow: LpmTrie<MapData, Addr, u8>,
    bans: HashMap<MapData, Addr, u64>,
    settings: Array<MapData, Settings>,
    redirect: HashMap<MapData, RedirectKey, RedirectAction>,
    devmap: DevMap<MapData>,
    counters: PerCpuArray<MapData, Counter>,
    /// Which deny buffer the program reads.
    active: u32,
    /// What each deny buffer holds; None after a failed write (then it is cleared in full).
    contents: [Option<DenySet>; 2],
    /// The allow list as written.
    allowed: std::collections::BTreeSet<(Addr, u32)>,
    /// The settings as last written (rates and `FLAG_*` bits).
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
            deny_lpm: [
                LpmTrie::try_from(take(ebpf, common::DENY_LPM_0)?).map_err(&e)?,
                LpmTrie::try_from(take(ebpf, common::DENY_LPM_1)?).map_err(&e)?,
            ],
            deny_exact: [
                HashMap::try_from(take(ebpf, common::DENY_EXACT_0)?).map_err(&e)?,
                HashMap::try_from(take(ebpf, common::DENY_EXACT_1)?).map_err(&e)?,
            ],
            allow: LpmTrie::try_from(take(ebpf, common::ALLOW_LPM)?).map_err(&e)?,
            bans: HashMap::try_from(take(ebpf, common::BANS)?).map_err(&e)?,
            settings: Array::try_from(take(ebpf, common::SETTINGS)?).map_err(&e)?,
            redirect: HashMap::try_from(take(ebpf, common::REDIRECT)?).map_err(&e)?,
            devmap: DevMap::try_from(take(ebpf, common::DEVMAP)?).map_err(&e)?,
            counters: PerCpuArray::try_from(take(ebpf, common::COUNTERS)?).map_err(&e)?,
            active: 0,
            contents: [Some(DenySet::default()), Some(DenySet::default())],
            allowed: Default::default(),
            current: Settings::default(),
        })
    }

    /// Make `set` the deny set in one step: rewrite the buffer the program does not read, then
    /// flip the active index (a single 4-byte array store). Only the difference with what that
    /// buffer held is written, so re-applying a large set after a small edit is cheap.
    ///
    /// # Errors
    /// A map write failed (full map); the program keeps reading the previous set.
    pub fn apply_deny(&mut self, set: &DenySet) -> Result<(), XdpError> {
        let idx = (1 - self.active) as usize;
        let old = match self.contents[idx].take() {
            Some(old) => old,
            None => self.clear_buffer(idx)?,
        };
        let e = map_err("deny list");
        for (addr, len) in old.prefixes.difference(&set.prefixes) {
            let _ = self.deny_lpm[idx].remove(&Key::new(*len, *addr));
        }
        for addr in old.exact.difference(&set.exact) {
            let _ = self.deny_exact[idx].remove(addr);
        }
        for (addr, len) in set.prefixes.difference(&old.prefixes) {
            self.deny_lpm[idx]
                .insert(&Key::new(*len, *addr), 1, 0)
                .map_err(&e)?;
        }
        for addr in set.exact.difference(&old.exact) {
            self.deny_exact[idx].insert(addr, 1, 0).map_err(&e)?;
        }
        self.contents[idx] = Some(set.clone());
        let mut word = idx as u32;
        if !set.prefixes.is_empty() {
            word |= DENY_HAS_PREFIX;
        }
        if !set.exact.is_empty() {
            word |= DENY_HAS_EXACT;
        }
        // One 4-byte store switches the buffer and its emptiness flags together.
        self.deny_active.set(0, word, 0).map_err(&e)?;
        self.active = idx as u32;
        Ok(())
    }

    /// Empty a buffer whose contents are unknown; returns the (now empty) set it holds.
    fn clear_buffer(&mut self, idx: usize) -> Result<DenySet, XdpError> {
        let e = map_err("deny list");
        let keys: Vec<_> = self.deny_lpm[idx]
            .keys()
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        for k in keys {
            let _ = self.deny_lpm[idx].remove(&k);
        }
        let keys: Vec<_> = self.deny_exact[idx]
            .keys()
            .collect::<Result<_, _>>()
            .map_err(&e)?;
        for k in keys {
            let _ = self.deny_exact[idx].remove(&k);
        }
        Ok(DenySet::default())
    }

    /// The deny set the program currently reads.
    pub fn active_deny(&self) -> Option<&DenySet> {
        self.contents[self.active as usize].as_ref()
    }

    /// Replace the allow list (small, config-only: applied as a diff).
    ///
    /// # Errors
    /// A map write failed.
    pub fn apply_allow(
        &mut self,
        allow: std::collections::BTreeSet<(Addr, u32)>,
    ) -> Result<(), XdpError> {
        let e = map_err("allow list");
        if allow.is_empty() {
            // Stop the lookups before the entries go, so no packet sees a half-emptied list.
            self.set_flag(FLAG_ALLOW, false)?;
        }
        for (addr, len) in self.allowed.difference(&allow) {
            let _ = self.allow.remove(&Key::new(*len, *addr));
        }
        for (addr, len) in allow.difference(&self.allowed) {
            self.allow
                .insert(&Key::new(*len, *addr), 1, 0)
                .map_err(&e)?;
        }
        if !allow.is_empty() {
            self.set_flag(FLAG_ALLOW, true)?;
        }
        self.allowed = allow;
        Ok(())
    }

    /// Write the rate-limit settings.
    ///
    /// # Errors
    /// The map write failed.
    pub fn apply_settings(&mut self, settings: Settings) -> Result<(), XdpError> {
        let next = Settings {
            flags: self.current.flags,
            ..settings
        };
        self.write_settings(next)
    }

    fn set_flag(&mut self, flag: u64, on: bool) -> Result<(), XdpError> {
        let mut next = self.current;
        if on {
            next.flags |= flag;
        } else {
            next.flags &= !flag;
        }
        if next == self.current {
            return Ok(());
        }
        self.write_settings(next)
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
        let old: Vec<RedirectKey> = self.redirect.keys().collect::<Result<_, _>>().map_err(&e)?;
        for k in old {
            if !rules.iter().any(|(r, _)| *r == k) {
                let _ = self.redirect.remove(&k);
            }
        }
        for (k, v) in rules {
            self.redirect.insert(k, v, 0).map_err(&e)?;
        }
        self.set_flag(FLAG_REDIRECT, !rules.is_empty())
    }

    /// Ban `addr` until `expiry_ns` (CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns).
    ///
    /// # Errors
    /// The map write failed.
    pub fn ban(&mut self, addr: Addr, expiry_ns: u64) -> Result<(), XdpError> {
        self.bans
            .insert(addr, expiry_ns, 0)
            .map_err(map_err("bans"))?;
        // Never cleared: a stale flag costs one lookup, a missing one would lose a ban.
        self.set_flag(FLAG_BANS, true)
    }

    /// Lift a ban; false when there was none.
    pub fn unban(&mut self, addr: &Addr) -> bool {
        self.bans.remove(addr).is_ok()
    }

    /// Every ban with its expiry (expired ones included; the caller filters).
    pub fn bans(&self) -> Vec<(Addr, u64)> {
        self.bans.iter().filter_map(Result::ok).collect()
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
