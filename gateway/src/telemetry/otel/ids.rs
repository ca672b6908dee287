//! Trace and span ids, and the sampling draw: from one xorshift128+ generator per thread,
//! seeded from the OS once. No lock, no system call, no shared state: ids must be unique
//! enough to tell traces apart, not unpredictable (they are not secrets).

use std::cell::Cell;

thread_local! {
    static STATE: Cell<(u64, u64)> = Cell::new(seed());
}

fn seed() -> (u64, u64) {
    // Both halves non-zero: an all-zero state would stay zero.
    (rand::random::<u64>() | 1, rand::random::<u64>() | 1)
}

/// The next 64 random bits of this thread's generator.
pub fn next_u64() -> u64 {
    STATE.with(|c| {
        let (mut s1, s0) = c.get();
        let out = s0.wrapping_add(s1);
        s1 ^= s1 << 23;
        c.set((s0, s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26)));
        out
    })
}

/// A new span id (never all zero, which W3C reserves for "invalid").
pub fn span_id() -> [u8; 8] {
    next_u64().max(1).to_be_bytes()
}

/// A new trace id (never all zero).
pub fn trace_id() -> [u8; 16] {
    let hi = u128::from(next_u64()) << 64;
    (hi | u128::from(next_u64())).max(1).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_are_not_zero() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = span_id();
            assert_ne!(id, [0; 8]);
            assert!(seen.insert(id), "repeated span id");
        }
        assert_ne!(trace_id(), trace_id());
        // Each bit is set about half the time.
        let ones: u32 = (0..1000).map(|_| next_u64().count_ones()).sum();
        assert!((28_000..36_000).contains(&ones), "{ones}");
    }
}
