//! The live HTTP contexts of a VM, by context id. Hosts hand out ids in increasing order and a
//! VM holds few contexts at once, so the table is direct-mapped: the id's low bits pick the slot,
//! and finding a context is a mask and a compare. An id whose slot is taken by a context that
//! lives on (a long stream while ids wrapped around the table) goes to an ordinary map beside
//! it; the table doubles when it is half full, so that stays rare.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a context id (or callout token) with one multiplication: ids are unique integers, so
/// nothing needs mixing beyond spreading them over the map's buckets.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by context id or callout token. Its hash needs no random seed (std's default
/// asks WASI for one, which not every host provides).
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

// The map's code stays out of the callers: wasm compilers save registers for a function's whole
// body, so a rare path inlined would make the common one pay for it.
#[cold]
#[inline(never)]
fn overflow_get_mut<T>(overflow: &mut IdMap<T>, id: u32) -> Option<&mut T> {
    overflow.get_mut(&id)
}

/// Context id -> `T`.
pub struct Contexts<T> {
    slots: Vec<Option<(u32, T)>>,
    /// Ids whose slot was taken when they arrived.
    overflow: IdMap<T>,
    len: usize,
}

const FIRST_SIZE: usize = 16;

impl<T> Default for Contexts<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Contexts<T> {
    /// An empty table (it allocates on the first insert).
    pub const fn new() -> Self {
        Contexts {
            slots: Vec::new(),
            overflow: HashMap::with_hasher(BuildHasherDefault::new()),
            len: 0,
        }
    }

    #[inline(always)]
    fn slot(&self, id: u32) -> usize {
        id as usize & (self.slots.len().wrapping_sub(1))
    }

    /// How many contexts are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no context is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context `id`, if it is held.
    #[inline(always)]
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        let i = self.slot(id);
        match self.slots.get_mut(i) {
            Some(Some((held, value))) if *held == id => Some(value),
            _ if self.overflow.is_empty() => None,
            _ => overflow_get_mut(&mut self.overflow, id),
        }
    }

    /// Whether context `id` is held.
    pub fn contains(&mut self, id: u32) -> bool {
        self.get_mut(id).is_some()
    }

    /// Holds `value` as context `id`, replacing (and returning) what was held under that id.
    #[inline]
    pub fn insert(&mut self, id: u32, value: T) -> Option<T> {
        // The common case: room to spare, the id's slot free and nothing beside the table, so
        // the id is held nowhere.
        if (self.len + 1) * 2 <= self.slots.len() && self.overflow.is_empty() {
            let i = self.slot(id);
            if let Some(free @ None) = self.slots.get_mut(i) {
                *free = Some((id, value));
                self.len += 1;
                return None;
            }
        }
        self.insert_slow(id, value)
    }

    #[cold]
    #[inline(never)]
    fn insert_slow(&mut self, id: u32, value: T) -> Option<T> {
        let old = self.remove(id);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let i = self.slot(id);
        match &mut self.slots[i] {
            free @ None => *free = Some((id, value)),
            Some(_) => {
                self.overflow.insert(id, value);
            }
        }
        self.len += 1;
        old
    }

    /// Takes context `id` out.
    #[inline]
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let i = self.slot(id);
        let taken = match self.slots.get_mut(i) {
            Some(slot @ Some(_)) if slot.as_ref().is_some_and(|(held, _)| *held == id) => {
                slot.take().map(|(_, value)| value)
            }
            _ if self.overflow.is_empty() => None,
            _ => self.overflow_remove(id),
        };
        if taken.is_some() {
            self.len -= 1;
        }
        taken
    }

    #[cold]
    #[inline(never)]
    fn overflow_remove(&mut self, id: u32) -> Option<T> {
        self.overflow.remove(&id)
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(FIRST_SIZE);
        let old = std::mem::replace(&mut self.slots, (0..size).map(|_| None).collect());
        let overflow = std::mem::take(&mut self.overflow);
        let held = old.into_iter().flatten().chain(overflow);
        for (id, value) in held {
            let i = self.slot(id);
            match &mut self.slots[i] {
                free @ None => *free = Some((id, value)),
                Some(_) => {
                    self.overflow.insert(id, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_many_contexts_and_finds_each_by_id() {
        let mut c = Contexts::new();
        for id in 1..=1000u32 {
            assert!(c.insert(id, id * 10).is_none());
        }
        assert_eq!(c.len(), 1000);
        for id in 1..=1000u32 {
            assert_eq!(c.get_mut(id).copied(), Some(id * 10), "id {id}");
        }
        assert_eq!(c.get_mut(1001), None);
        for id in (1..=1000u32).step_by(2) {
            assert_eq!(c.remove(id), Some(id * 10));
        }
        assert_eq!(c.len(), 500);
        for id in 1..=1000u32 {
            let want = (id % 2 == 0).then_some(id * 10);
            assert_eq!(c.get_mut(id).copied(), want, "id {id}");
        }
        assert_eq!(c.remove(1), None);
    }

    #[test]
    fn a_long_lived_context_survives_ids_that_land_on_its_slot() {
        let mut c = Contexts::new();
        c.insert(3, "long");
        // Requests come and go, one at a time: their ids wrap the table many times over.
        for id in 4..10_000u32 {
            c.insert(id, "short");
            assert_eq!(c.get_mut(id).copied(), Some("short"));
            assert_eq!(c.get_mut(3).copied(), Some("long"), "after id {id}");
            assert_eq!(c.remove(id), Some("short"));
        }
        assert_eq!(c.len(), 1);
        assert_eq!(c.remove(3), Some("long"));
        assert!(c.is_empty());
    }

    #[test]
    fn growing_keeps_ids_that_still_collide_in_the_larger_table() {
        let mut c = Contexts::new();
        // 1 and 33 share a slot in tables of 16 and 32 slots, not in one of 64.
        c.insert(1, 1);
        c.insert(33, 33);
        for id in 2..=40u32 {
            if id != 33 {
                c.insert(id, id);
            }
            // Every growth on the way (to 32, 64, 128 slots) must keep both.
            assert_eq!(c.get_mut(1).copied(), Some(1), "after id {id}");
            assert_eq!(c.get_mut(33).copied(), Some(33), "after id {id}");
        }
        assert_eq!(c.len(), 40);
        for id in 1..=40u32 {
            assert_eq!(c.remove(id), Some(id), "id {id}");
        }
        assert!(c.is_empty());
    }

    #[test]
    fn inserting_an_id_again_replaces_its_context() {
        let mut c = Contexts::new();
        c.insert(7, 1);
        c.insert(7 + 16, 2); // same slot in a 16-slot table
        assert_eq!(c.insert(7, 3), Some(1));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get_mut(7).copied(), Some(3));
        assert_eq!(c.get_mut(23).copied(), Some(2));
    }
}
