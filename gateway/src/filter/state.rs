//! Per-request filter state kept in the exchange, by chain slot. Most chains have at most one
//! filter with state (a wasm plugin's stream context): that one is kept inline, so setting it
//! costs the box of the value only, not a list besides.

use std::any::Any;

type Entry = (usize, Box<dyn Any>);

/// The states of one exchange's filters.
#[derive(Default)]
pub(crate) struct States {
    first: Option<Entry>,
    rest: Vec<Entry>,
}

impl States {
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    /// The state of `slot`, if it is a `T`.
    pub(crate) fn get<T: Any>(&mut self, slot: usize) -> Option<&mut T> {
        self.iter_mut()
            .find(|(s, _)| *s == slot)
            .and_then(|(_, b)| b.downcast_mut::<T>())
    }

    /// Set (or replace) the state of `slot`.
    pub(crate) fn set<T: Any>(&mut self, slot: usize, value: T) {
        let value: Box<dyn Any> = Box::new(value);
        if let Some(entry) = self.iter_mut().find(|(s, _)| *s == slot) {
            entry.1 = value;
            return;
        }
        if self.first.is_none() {
            self.first = Some((slot, value));
        } else {
            self.rest.push((slot, value));
        }
    }

    /// Remove and return the state of `slot`, if it is a `T`.
    pub(crate) fn take<T: Any>(&mut self, slot: usize) -> Option<T> {
        let entry = if self
            .first
            .as_ref()
            .is_some_and(|(s, b)| *s == slot && b.is::<T>())
        {
            let taken = self.first.take();
            self.first = self.rest.pop();
            taken
        } else {
            let pos = self
                .rest
                .iter()
                .position(|(s, b)| *s == slot && b.is::<T>())?;
            Some(self.rest.swap_remove(pos))
        };
        entry.and_then(|(_, b)| b.downcast::<T>().ok()).map(|b| *b)
    }
}

#[cfg(test)]
mod tests {
    use super::States;

    #[test]
    fn states_are_kept_by_slot_and_type() {
        let mut s = States::default();
        assert_eq!(s.get::<u32>(0), None);
        s.set(3, 30u32);
        s.set(1, "one");
        s.set(5, 50u32);
        assert_eq!(s.get::<u32>(3).copied(), Some(30));
        assert_eq!(s.get::<&str>(1).copied(), Some("one"));
        assert_eq!(s.get::<u32>(1), None, "slot 1 holds another type");
        s.set(3, 31u32);
        assert_eq!(s.get::<u32>(3).copied(), Some(31));
        // Taking the inline one moves another into its place; the rest stay reachable.
        assert_eq!(s.take::<u32>(3), Some(31));
        assert_eq!(s.get::<u32>(3), None);
        assert_eq!(s.get::<u32>(5).copied(), Some(50));
        assert_eq!(s.get::<&str>(1).copied(), Some("one"));
        assert_eq!(s.take::<u32>(1), None, "wrong type: left in place");
        assert_eq!(s.take::<&str>(1), Some("one"));
        assert_eq!(s.take::<u32>(5), Some(50));
        assert_eq!(s.take::<u32>(5), None);
    }
}
