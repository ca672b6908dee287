//! The time the worker's current request arrived, for checks that tolerate being off by that
//! request's age: whether a pooled upstream connection has been idle too long, when one went
//! back to the pool. Each read of the monotonic clock is a vDSO call (tens of instructions, more
//! under a hypervisor); the request path already reads it once when a request arrives, and these
//! checks reuse that reading instead of making their own.
//!
//! An earlier time only ever makes a pooled connection look older than it is (it is dropped a
//! little early, never reused late), as long as the time is never later than the real one:
//! [`set`] takes a fresh reading and [`get`] falls back to the clock when nothing was set.

use std::cell::Cell;

use tokio::time::Instant;

thread_local! {
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A request arrived on this thread at `at` (just read from the clock).
pub fn set(at: std::time::Instant) {
    NOW.with(|n| n.set(Some(Instant::from_std(at))));
}

/// When this thread's latest request arrived (the clock, if none did).
pub fn get() -> Instant {
    NOW.with(|n| n.get()).unwrap_or_else(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_arrival_or_the_clock() {
        // A thread of its own: the test harness may have set this thread's clock.
        let joined = std::thread::spawn(|| {
            let before = Instant::now();
            assert!(get() >= before, "no arrival yet: the clock");
            let at = std::time::Instant::now();
            set(at);
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert_eq!(get(), Instant::from_std(at));
        })
        .join();
        // A failed assertion in the thread is a panic payload here: fail with it.
        if let Err(panic) = joined {
            std::panic::resume_unwind(panic);
        }
    }
}
