//! Deny and allow sets laid out the way the program reads them. IPv4 prefixes up to /24 become
//! bits in a bitmap of every /24 (one array read per packet instead of a trie walk). Denied IPv4
//! /25-/31 prefixes are expanded into the exact hash (at most 128 addresses each), so an IPv4
//! packet never walks a deny trie; IPv6 prefixes go to a trie; single addresses to the exact
//! hash. Allowed IPv4 prefixes longer than /24 and IPv6 prefixes go to one small trie per family.
//! Pure data: the kernel writes are in `maps`.

use std::collections::{BTreeMap, BTreeSet};

use sluice_xdp_common::{
    v4_mapped, Addr, DENY_EXACT_MAX, DENY_HAS_EXACT, DENY_HAS_LPM6, DENY_HAS_V4, DENY_LPM_MAX,
    FLAG_ALLOW_LPM4, FLAG_ALLOW_LPM6, FLAG_ALLOW_V4, V4_MAPPED_PREFIX,
};

use super::rules::DenySet;
use super::XdpError;

/// Longest IPv4 prefix held by a bitmap.
const BITMAP_PREFIX: u32 = 24;

/// Non-zero words of a /24 bitmap: word index → bits.
pub type Bitmap = BTreeMap<u32, u64>;

/// What one deny buffer holds (or must hold), table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyLayout {
    /// Non-zero words of the /24 bitmap.
    pub v4_words: Bitmap,
    /// IPv6 prefixes: (address, prefix length).
    pub lpm6: BTreeSet<(Addr, u32)>,
    /// Exact addresses (IPv4 mapped).
    pub exact: BTreeSet<Addr>,
    /// Every address of the denied IPv4 /25-/31 prefixes that the bitmap does not cover.
    pub prefix_hosts: BTreeSet<Addr>,
}

/// The IPv4 address inside a mapped key, if it is one.
fn mapped_v4(key: &Addr) -> Option<[u8; 4]> {
    let v4 = [key[12], key[13], key[14], key[15]];
    (v4_mapped(v4) == *key).then_some(v4)
}

/// Where a prefix in key form goes: an IPv4 prefix (host-order address, length 0..=32), or an
/// IPv6 one. Prefixes of /96 or shorter are IPv6 rules, even where they cover the mapped range:
/// an IPv4 source is judged by IPv4 rules only.
fn family(key: &Addr, len: u32) -> Option<(u32, u32)> {
    match mapped_v4(key) {
        Some(v4) if len >= V4_MAPPED_PREFIX => {
            Some((u32::from_be_bytes(v4), len - V4_MAPPED_PREFIX))
        }
        _ => None,
    }
}

/// Set the bits of every /24 inside `addr/len` (`len` ≤ 24, `addr` truncated).
fn set_slash24s(words: &mut Bitmap, addr: u32, len: u32) {
    let first = addr >> 8;
    let count = 1u32 << (BITMAP_PREFIX - len);
    let mut n = first;
    let end = first + count;
    while n < end {
        let word = n >> 6;
        let bit = n & 63;
        // A whole word at once when the remaining run covers it.
        let span = (64 - bit).min(end - n);
        let mask = if span == 64 {
            u64::MAX
        } else {
            ((1u64 << span) - 1) << bit
        };
        *words.entry(word).or_insert(0) |= mask;
        n += span;
    }
}

fn bitmap_has(words: &Bitmap, addr: u32) -> bool {
    let n = addr >> 8;
    words
        .get(&(n >> 6))
        .is_some_and(|w| w & (1 << (n & 63)) != 0)
}

/// The deny set split by table, before the long IPv4 prefixes are expanded.
struct Split {
    v4_words: Bitmap,
    /// Denied IPv4 /25-/31 prefixes that neither the bitmap nor a shorter one of them covers:
    /// disjoint, first address → last address.
    long_v4: BTreeMap<u32, u32>,
    lpm6: BTreeSet<(Addr, u32)>,
}

impl Split {
    fn of(set: &DenySet) -> Self {
        let mut v4_words = Bitmap::new();
        let mut long = Vec::new();
        let mut lpm6 = BTreeSet::new();
        for (key, len) in &set.prefixes {
            match family(key, *len) {
                Some((addr, len)) if len <= BITMAP_PREFIX => set_slash24s(&mut v4_words, addr, len),
                Some((addr, len)) => long.push((addr, len)),
                None => {
                    lpm6.insert((*key, *len));
                }
            }
        }
        // Sorted by first address, the shorter (containing) prefix first: CIDR prefixes are
        // nested or disjoint, so one pass drops every prefix inside an earlier one.
        long.sort_unstable();
        let mut long_v4 = BTreeMap::new();
        let mut covered_to: Option<u32> = None;
        for (addr, len) in long {
            let last = addr | (u32::MAX >> len);
            if covered_to.is_some_and(|end| addr <= end) || bitmap_has(&v4_words, addr) {
                continue;
            }
            long_v4.insert(addr, last);
            covered_to = Some(last);
        }
        Split {
            v4_words,
            long_v4,
            lpm6,
        }
    }

    /// Is the IPv4 address (host order) inside one of the long prefixes?
    fn in_long(&self, addr: u32) -> bool {
        self.long_v4
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, last)| addr <= *last)
    }

    /// Addresses this set puts in the exact hash: the listed ones plus every address of the
    /// long prefixes, each counted once. Computed without expanding anything.
    fn exact_count(&self, set: &DenySet) -> (usize, u64) {
        let hosts: u64 = self
            .long_v4
            .iter()
            .map(|(first, last)| u64::from(last - first) + 1)
            .sum();
        let listed = if self.long_v4.is_empty() {
            set.exact.len()
        } else {
            set.exact
                .iter()
                .filter(|a| !mapped_v4(a).is_some_and(|v4| self.in_long(u32::from_be_bytes(v4))))
                .count()
        };
        (listed, hosts)
    }
}

/// Refuse a set larger than the tables: for exact addresses this is what guarantees that bans
/// and deny entries never crowd each other out of the shared hash.
///
/// # Errors
/// Which table is over its size, and by how much.
pub fn check_limits(set: &DenySet) -> Result<(), XdpError> {
    check_split(set, &Split::of(set))
}

fn check_split(set: &DenySet, split: &Split) -> Result<(), XdpError> {
    let (listed, hosts) = split.exact_count(set);
    let exact = listed as u64 + hosts;
    if exact > u64::from(DENY_EXACT_MAX) {
        return Err(XdpError::Config(format!(
            "xdp deny set: {exact} exact addresses ({listed} listed, {hosts} inside IPv4 prefixes /25 to /31, which are stored address by address), at most {DENY_EXACT_MAX} fit; shorten the list, or merge entries into prefixes of /24 or shorter"
        )));
    }
    if split.lpm6.len() > DENY_LPM_MAX as usize {
        return Err(XdpError::Config(format!(
            "xdp deny set: {} IPv6 prefixes, at most {DENY_LPM_MAX} fit; shorten the list or merge entries into shorter prefixes",
            split.lpm6.len()
        )));
    }
    Ok(())
}

impl DenyLayout {
    /// Lay out `set`.
    ///
    /// # Errors
    /// The set does not fit its tables (checked before anything is expanded).
    pub fn of(set: &DenySet) -> Result<Self, XdpError> {
        let split = Split::of(set);
        check_split(set, &split)?;
        let mut prefix_hosts = BTreeSet::new();
        for (first, last) in &split.long_v4 {
            for a in *first..=*last {
                prefix_hosts.insert(v4_mapped(a.to_be_bytes()));
            }
        }
        Ok(DenyLayout {
            v4_words: split.v4_words,
            lpm6: split.lpm6,
            exact: set.exact.clone(),
            prefix_hosts,
        })
    }

    /// The [`sluice_xdp_common::DENY_ACTIVE`] flag bits for this buffer.
    pub fn flags(&self) -> u32 {
        let mut word = 0;
        if !self.v4_words.is_empty() {
            word |= DENY_HAS_V4;
        }
        if !self.exact.is_empty() || !self.prefix_hosts.is_empty() {
            word |= DENY_HAS_EXACT;
        }
        if !self.lpm6.is_empty() {
            word |= DENY_HAS_LPM6;
        }
        word
    }
}

/// The allow list, table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowLayout {
    /// Non-zero words of the IPv4 /24 allow bitmap.
    pub v4_words: Bitmap,
    /// IPv4 prefixes /25 to /32: (octets, prefix length).
    pub lpm4: BTreeSet<([u8; 4], u32)>,
    /// IPv6 prefixes: (address, prefix length).
    pub lpm6: BTreeSet<(Addr, u32)>,
}

impl AllowLayout {
    /// Lay out allow prefixes in key form.
    pub fn of(allow: &BTreeSet<(Addr, u32)>) -> Self {
        let mut layout = AllowLayout::default();
        for (key, len) in allow {
            match family(key, *len) {
                Some((addr, len)) if len <= BITMAP_PREFIX => {
                    set_slash24s(&mut layout.v4_words, addr, len)
                }
                Some((addr, len)) => {
                    layout.lpm4.insert((addr.to_be_bytes(), len));
                }
                None => {
                    layout.lpm6.insert((*key, *len));
                }
            }
        }
        layout
    }

    /// The [`sluice_xdp_common::Settings::flags`] bits of the tables that hold entries.
    pub fn flags(&self) -> u64 {
        let mut flags = 0;
        if !self.v4_words.is_empty() {
            flags |= FLAG_ALLOW_V4;
        }
        if !self.lpm4.is_empty() {
            flags |= FLAG_ALLOW_LPM4;
        }
        if !self.lpm6.is_empty() {
            flags |= FLAG_ALLOW_LPM6;
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> DenySet {
        let mut s = DenySet::default();
        for e in entries {
            s.insert(e.parse().unwrap());
        }
        s
    }

    fn bit(l: &DenyLayout, a: [u8; 4]) -> bool {
        bitmap_has(&l.v4_words, u32::from_be_bytes(a))
    }

    fn host(a: [u8; 4]) -> Addr {
        v4_mapped(a)
    }

    #[test]
    fn short_v4_prefixes_fill_the_bitmap_long_ones_expand_and_v6_go_to_a_trie() {
        let l = DenyLayout::of(&set(&[
            "198.18.0.0/15",
            "203.0.113.0/24",
            "192.0.2.128/25",
            "2001:db8::/32",
            "198.51.100.7/32",
        ]))
        .unwrap();
        assert!(bit(&l, [198, 18, 0, 1]) && bit(&l, [198, 19, 255, 1]));
        assert!(!bit(&l, [198, 20, 0, 1]) && !bit(&l, [198, 17, 255, 1]));
        assert!(bit(&l, [203, 0, 113, 9]) && !bit(&l, [203, 0, 114, 9]));
        // A /15 is 512 /24s: 8 full words.
        assert_eq!(l.v4_words.values().filter(|w| **w == u64::MAX).count(), 8);
        // A /25 is 128 addresses: .128 to .255.
        assert_eq!(l.prefix_hosts.len(), 128);
        assert!(l.prefix_hosts.contains(&host([192, 0, 2, 128])));
        assert!(l.prefix_hosts.contains(&host([192, 0, 2, 255])));
        assert!(!l.prefix_hosts.contains(&host([192, 0, 2, 127])));
        assert_eq!(l.lpm6.len(), 1);
        assert_eq!(l.exact.len(), 1);
        assert_eq!(l.flags(), DENY_HAS_V4 | DENY_HAS_LPM6 | DENY_HAS_EXACT);
    }

    #[test]
    fn long_prefixes_covered_by_the_bitmap_or_by_each_other_are_not_expanded() {
        let l = DenyLayout::of(&set(&[
            "10.0.0.0/24",
            "10.0.0.128/25",
            "10.0.1.0/25",
            "10.0.1.64/26",
            "10.0.1.2/31",
        ]))
        .unwrap();
        assert_eq!(l.prefix_hosts.len(), 128);
        assert!(l.prefix_hosts.contains(&host([10, 0, 1, 0])));
        assert!(l.prefix_hosts.contains(&host([10, 0, 1, 127])));
        assert!(!l.prefix_hosts.contains(&host([10, 0, 0, 200])));
    }

    #[test]
    fn the_exact_limit_counts_expanded_addresses_once() {
        // 8192 /25s are exactly 2^20 addresses: they fit, with the listed hosts inside them.
        let mut s = DenySet::default();
        for i in 0..8192u32 {
            let a = std::net::Ipv4Addr::from(0x0b00_0000 + (i << 7));
            s.insert(format!("{a}/25").parse().unwrap());
        }
        s.insert("11.0.0.1/32".parse().unwrap());
        assert!(check_limits(&s).is_ok());
        // One more address outside them does not.
        s.insert("12.0.0.1/32".parse().unwrap());
        let err = check_limits(&s).unwrap_err().to_string();
        assert!(err.contains("1048577 exact addresses"), "{err}");
        assert!(err.contains("/25 to /31"), "{err}");
        assert!(DenyLayout::of(&s).is_err());
    }

    #[test]
    fn a_slash_zero_sets_every_word_and_partial_words_are_masked() {
        let l = DenyLayout::of(&set(&["0.0.0.0/0"])).unwrap();
        assert_eq!(l.v4_words.len(), 1 << 18);
        let l = DenyLayout::of(&set(&["10.0.1.0/24", "10.0.2.0/23"])).unwrap();
        // /24 numbers 0x0a0001, 0x0a0002, 0x0a0003: bits 1..=3 of one word.
        assert_eq!(l.v4_words.len(), 1);
        assert_eq!(l.v4_words.values().next(), Some(&0b1110));
    }

    #[test]
    fn allow_prefixes_split_by_family_and_length() {
        let keys: BTreeSet<(Addr, u32)> = [
            "198.18.1.0/24",
            "10.0.0.0/8",
            "192.0.2.9/32",
            "192.0.2.64/27",
            "2001:db8::/32",
            "::/0",
        ]
        .iter()
        .map(|c| super::super::rules::net_key(c.parse().unwrap()))
        .collect();
        let l = AllowLayout::of(&keys);
        assert!(bitmap_has(
            &l.v4_words,
            u32::from_be_bytes([198, 18, 1, 77])
        ));
        assert!(bitmap_has(&l.v4_words, u32::from_be_bytes([10, 200, 1, 1])));
        assert!(!bitmap_has(&l.v4_words, u32::from_be_bytes([192, 0, 2, 9])));
        assert_eq!(
            l.lpm4,
            [([192, 0, 2, 9], 32), ([192, 0, 2, 64], 27)]
                .into_iter()
                .collect()
        );
        assert_eq!(l.lpm6.len(), 2);
        assert_eq!(l.flags(), FLAG_ALLOW_V4 | FLAG_ALLOW_LPM4 | FLAG_ALLOW_LPM6);
        assert_eq!(AllowLayout::of(&BTreeSet::new()).flags(), 0);
    }
}
