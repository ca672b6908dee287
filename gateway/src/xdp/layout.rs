//! A deny set laid out the way the program reads it. IPv4 prefixes up to /24 become bits in a
//! bitmap of every /24 (one array lookup per packet instead of a trie walk); longer IPv4 prefixes
//! and IPv6 prefixes go to tries that v4 and v6 packets consult separately; single addresses go
//! to the exact hash. Pure data: the kernel writes are in `maps`.

use std::collections::{BTreeMap, BTreeSet};

use sluice_xdp_common::{
    v4_mapped, Addr, DENY_EXACT_MAX, DENY_HAS_EXACT, DENY_HAS_LPM4, DENY_HAS_LPM6, DENY_HAS_V4,
    DENY_LPM4_MAX, DENY_LPM_MAX, V4_MAPPED_PREFIX,
};

use super::rules::DenySet;
use super::XdpError;

/// Longest IPv4 prefix held by the bitmap.
const BITMAP_PREFIX: u32 = 24;

/// What one deny buffer holds (or must hold), table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyLayout {
    /// Non-zero words of the /24 bitmap: word index → bits.
    pub v4_words: BTreeMap<u32, u64>,
    /// IPv4 prefixes /25 to /31: (address, prefix length).
    pub lpm4: BTreeSet<([u8; 4], u32)>,
    /// IPv6 prefixes: (address, prefix length).
    pub lpm6: BTreeSet<(Addr, u32)>,
    /// Exact addresses (IPv4 mapped).
    pub exact: BTreeSet<Addr>,
}

/// The IPv4 address inside a mapped key, if it is one.
fn mapped_v4(key: &Addr) -> Option<[u8; 4]> {
    let v4 = [key[12], key[13], key[14], key[15]];
    (v4_mapped(v4) == *key).then_some(v4)
}

/// Refuse a set larger than the tables: for exact addresses this is what guarantees that bans
/// and deny entries never crowd each other out of the shared hash.
///
/// # Errors
/// Which table is over its size, and by how much.
pub fn check_limits(set: &DenySet) -> Result<(), XdpError> {
    let (mut lpm4, mut lpm6) = (0, 0);
    for (key, len) in &set.prefixes {
        match mapped_v4(key) {
            Some(_) if *len > V4_MAPPED_PREFIX + BITMAP_PREFIX => lpm4 += 1,
            Some(_) if *len >= V4_MAPPED_PREFIX => {}
            _ => lpm6 += 1,
        }
    }
    for (what, n, max) in [
        ("exact addresses", set.exact.len(), DENY_EXACT_MAX),
        ("IPv4 prefixes longer than /24", lpm4, DENY_LPM4_MAX),
        ("IPv6 prefixes", lpm6, DENY_LPM_MAX),
    ] {
        if n > max as usize {
            return Err(XdpError::Config(format!(
                "xdp deny set: {n} {what}, at most {max} fit; shorten the list or merge entries into prefixes"
            )));
        }
    }
    Ok(())
}

impl DenyLayout {
    /// Lay out `set`.
    pub fn of(set: &DenySet) -> Self {
        let mut layout = DenyLayout {
            exact: set.exact.clone(),
            ..Default::default()
        };
        for (key, len) in &set.prefixes {
            match mapped_v4(key) {
                Some(v4) if *len >= V4_MAPPED_PREFIX => {
                    let len = len - V4_MAPPED_PREFIX;
                    if len <= BITMAP_PREFIX {
                        layout.set_slash24s(u32::from_be_bytes(v4), len);
                    } else {
                        layout.lpm4.insert((v4, len));
                    }
                }
                // Prefixes of /96 or shorter are IPv6 rules, even where they cover the mapped
                // range: an IPv4 source is judged by IPv4 rules only.
                _ => {
                    layout.lpm6.insert((*key, *len));
                }
            }
        }
        layout
    }

    /// Set the bits of every /24 inside `addr/len` (`len` ≤ 24, `addr` truncated).
    fn set_slash24s(&mut self, addr: u32, len: u32) {
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
            *self.v4_words.entry(word).or_insert(0) |= mask;
            n += span;
        }
    }

    /// The [`sluice_xdp_common::DENY_ACTIVE`] flag bits for this buffer.
    pub fn flags(&self) -> u32 {
        let mut word = 0;
        if !self.v4_words.is_empty() {
            word |= DENY_HAS_V4;
        }
        if !self.exact.is_empty() {
            word |= DENY_HAS_EXACT;
        }
        if !self.lpm4.is_empty() {
            word |= DENY_HAS_LPM4;
        }
        if !self.lpm6.is_empty() {
            word |= DENY_HAS_LPM6;
        }
        word
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
        let n = u32::from_be_bytes(a) >> 8;
        l.v4_words
            .get(&(n >> 6))
            .is_some_and(|w| w & (1 << (n & 63)) != 0)
    }

    #[test]
    fn short_v4_prefixes_fill_the_bitmap_long_ones_and_v6_go_to_tries() {
        let l = DenyLayout::of(&set(&[
            "198.18.0.0/15",
            "203.0.113.0/24",
            "192.0.2.128/25",
            "2001:db8::/32",
            "198.51.100.7/32",
        ]));
        assert!(bit(&l, [198, 18, 0, 1]) && bit(&l, [198, 19, 255, 1]));
        assert!(!bit(&l, [198, 20, 0, 1]) && !bit(&l, [198, 17, 255, 1]));
        assert!(bit(&l, [203, 0, 113, 9]) && !bit(&l, [203, 0, 114, 9]));
        // A /15 is 512 /24s: 8 full words.
        assert_eq!(l.v4_words.values().filter(|w| **w == u64::MAX).count(), 8);
        assert_eq!(l.lpm4.iter().next(), Some(&([192, 0, 2, 128], 25)));
        assert_eq!(l.lpm6.len(), 1);
        assert_eq!(l.exact.len(), 1);
        assert_eq!(
            l.flags(),
            DENY_HAS_V4 | DENY_HAS_LPM4 | DENY_HAS_LPM6 | DENY_HAS_EXACT
        );
    }

    #[test]
    fn a_slash_zero_sets_every_word_and_partial_words_are_masked() {
        let l = DenyLayout::of(&set(&["0.0.0.0/0"]));
        assert_eq!(l.v4_words.len(), 1 << 18);
        let l = DenyLayout::of(&set(&["10.0.1.0/24", "10.0.2.0/23"]));
        // /24 numbers 0x0a0001, 0x0a0002, 0x0a0003: bits 1..=3 of one word.
        assert_eq!(l.v4_words.len(), 1);
        assert_eq!(l.v4_words.values().next(), Some(&0b1110));
    }
}
