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
    static FINISHED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// A request arrived on this thread at `at` (just read from the clock).
pub fn set(at: std::time::Instant) {
    NOW.with(|n| n.set(Some(Instant::from_std(at))));
}

/// When this thread's latest request arrived (the clock, if none did).
pub fn get() -> Instant {
    NOW.with(|n| n.get()).unwrap_or_else(Instant::now)
}

/// A request on this thread finished at `at` (just read from the clock, for its duration).
pub fn finished(at: std::time::Instant) {
    FINISHED.with(|f| f.set(Some(Instant::from_std(at))));
}

/// Where a keep-alive connection's wait for its next request starts, after its response was
/// written: the finish time noted by [`finished`] since the last call, or the latest arrival if
/// that is later (the clock, if neither was noted). Taken, so that one reading serves one
/// wait. The time is never later than the real one, so the wait's deadline only ever comes
/// early, by the little time between the noted reading and the wait (another connection of the
/// worker may take the reading first; a response that noted none leaves its request's arrival).
pub fn take_finished() -> Instant {
    let arrived = NOW.with(|n| n.get());
    match (FINISHED.with(|f| f.take()), arrived) {
        (Some(f), Some(a)) => f.max(a),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => Instant::now(),
    }
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

    #[test]
    fn a_finish_time_serves_one_wait() {
        let joined = std::thread::spawn(|| {
            let at = std::time::Instant::now();
            finished(at);
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert_eq!(
                take_finished(),
                Instant::from_std(at),
                "the noted time, once"
            );
            let before = Instant::now();
            assert!(take_finished() >= before, "taken: the clock afterwards");
            // A later arrival wins over an older finish time.
            let finish = std::time::Instant::now();
            finished(finish);
            std::thread::sleep(std::time::Duration::from_millis(2));
            let arrival = std::time::Instant::now();
            set(arrival);
            assert_eq!(take_finished(), Instant::from_std(arrival));
            // Nothing noted since: the latest arrival.
            assert_eq!(take_finished(), Instant::from_std(arrival));
        })
        .join();
        if let Err(panic) = joined {
            std::panic::resume_unwind(panic);
        }
    }
}
