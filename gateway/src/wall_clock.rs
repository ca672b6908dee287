//! The wall-clock time of a recent `Instant`, for timestamps the request path writes (access-log
//! start times, span times): the request path reads the monotonic clock anyway, and the wall
//! clock is read about once a second per thread instead of once per request.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a thread's anchor is used before the wall clock is read again: long enough that
/// reading it costs nothing per request, short enough that a stepped wall clock (NTP) shows
/// within a second.
const ANCHOR_AGE: Duration = Duration::from_secs(1);

thread_local! {
    /// An `Instant` and the Unix time in nanoseconds read next to it.
    static ANCHOR: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the Unix epoch for `at`, given that `anchor` (Instant) is `anchor_unix`.
pub fn unix_nanos(anchor: Instant, anchor_unix: u64, at: Instant) -> u64 {
    // A span that starts with its request (the server span) is at the anchor itself.
    if at == anchor {
        return anchor_unix;
    }
    match at.checked_duration_since(anchor) {
        Some(d) => anchor_unix.saturating_add(nanos(d)),
        None => anchor_unix.saturating_sub(nanos(anchor - at)),
    }
}

/// The Unix time of `at` (a recent instant) in nanoseconds, from this thread's anchor.
pub fn unix_nanos_at(at: Instant) -> u64 {
    ANCHOR.with(|c| {
        let (anchor, unix) = match c.get() {
            Some((t, u)) => match at.checked_duration_since(t) {
                // One subtraction for the check and the time.
                Some(d) if d < ANCHOR_AGE => return u.saturating_add(nanos(d)),
                None if t - at < ANCHOR_AGE => return u.saturating_sub(nanos(t - at)),
                _ => refresh(c),
            },
            None => refresh(c),
        };
        unix_nanos(anchor, unix, at)
    })
}

/// Read the wall clock next to a fresh `Instant` as this thread's anchor.
#[cold]
fn refresh(c: &Cell<Option<(Instant, u64)>>) -> (Instant, u64) {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, nanos);
    let fresh = (Instant::now(), unix);
    c.set(Some(fresh));
    fresh
}

/// [`unix_nanos_at`] as a `SystemTime`.
pub fn system_time_at(at: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nanos_at(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_map_to_the_wall_clock_around_them() {
        let before = SystemTime::now();
        let at = Instant::now();
        let t = system_time_at(at);
        let after = SystemTime::now();
        // The anchor is read right after `at`: within a few milliseconds of the real time.
        let slack = Duration::from_millis(20);
        assert!(
            t + slack >= before && t <= after + slack,
            "{t:?} not in {before:?}..{after:?}"
        );
        // An earlier instant maps to an earlier time, by the same amount.
        let earlier = at - Duration::from_millis(250);
        let d = t
            .duration_since(system_time_at(earlier))
            .unwrap_or_default();
        assert_eq!(d, Duration::from_millis(250));
        // After the anchor (read by the first call, after `at`): offsets stay exact.
        let later = Instant::now() + Duration::from_millis(300);
        let d = system_time_at(later).duration_since(t).unwrap_or_default();
        assert_eq!(d, later - at);
        // Further back than an anchor is used for (a new anchor is read): still exact, within
        // the slack of two wall-clock readings.
        let long_ago = at - Duration::from_secs(2);
        let d = t
            .duration_since(system_time_at(long_ago))
            .unwrap_or_default();
        assert!(d.abs_diff(Duration::from_secs(2)) < slack, "{d:?}");
    }

    #[test]
    fn offsets_from_the_anchor_both_ways() {
        let anchor = Instant::now();
        let later = anchor + Duration::from_nanos(1_500);
        assert_eq!(unix_nanos(anchor, 10_000, later), 11_500);
        assert_eq!(unix_nanos(later, 10_000, anchor), 8_500);
    }
}
