//! Which clock the token buckets read. The precise clock (`bpf_ktime_get_ns`) reads the
//! clocksource, about 25 ns a packet on a VM; the coarse one (`bpf_ktime_get_coarse_ns`, the
//! time of the last tick) costs a few. A bucket refilled from the coarse clock sees time move in
//! steps of one tick `τ` and lag real time by less than `τ`. The coarse clock is chosen only
//! when every limiter's burst holds at least two ticks of refill (`burst ≥ 2 × rate × τ`), and
//! each bucket is then made `rate × τ` deeper. With that:
//!
//! - a source that the precise bucket would pass in full (it stays within rate and burst) is
//!   never dropped: over any interval, coarse time advances at least the real interval minus
//!   one tick, and the extra depth holds exactly that tick's refill;
//! - over any interval, a source gets at most `2 × rate × τ` more than the precise bucket would
//!   give (one tick of lag plus the extra depth), which the rule bounds by the burst itself;
//! - when a burst is too small for the rule (a high rate with a burst below two ticks of
//!   refill), tick-sized refills would shape the traffic, so the precise clock stays.
//!
//! See docs/xdp.md ("Rate limits and the clock").

use sluice_xdp_common::{Settings, FLAG_COARSE_CLOCK};

/// Ticks longer than this (a misreported resolution) never select the coarse clock.
const MAX_TICK_NS: u64 = 100_000_000;

/// The resolution of CLOCK_MONOTONIC_COARSE (the clock of `bpf_ktime_get_coarse_ns`): one tick,
/// 4 ms at HZ=250. None when the kernel does not report it.
pub fn coarse_tick_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes into a valid timespec.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Does a limiter of `rate` per second and `burst` (in [`sluice_xdp_common::TOKEN`] units; the
/// refill of `t` ns is `t × rate` units) hold two ticks of refill? A limiter that is off
/// (rate 0) does not object.
fn holds_two_ticks(rate: u64, burst: u64, tick_ns: u64) -> bool {
    rate == 0
        || rate
            .checked_mul(tick_ns)
            .and_then(|r| r.checked_mul(2))
            .is_some_and(|two_ticks| burst >= two_ticks)
}

/// `settings` with the clock chosen: [`FLAG_COARSE_CLOCK`] set and each enabled bucket one
/// tick of refill deeper when the coarse clock is safe for every limiter, else the precise
/// clock and the bursts as configured.
pub fn choose(settings: Settings, tick_ns: Option<u64>) -> Settings {
    let mut s = Settings {
        flags: settings.flags & !FLAG_COARSE_CLOCK,
        ..settings
    };
    let Some(tick) = tick_ns.filter(|t| *t > 0 && *t <= MAX_TICK_NS) else {
        return s;
    };
    let any = s.rate_pps != 0 || s.syn_pps != 0;
    if !any
        || !holds_two_ticks(s.rate_pps, s.rate_burst, tick)
        || !holds_two_ticks(s.syn_pps, s.syn_burst, tick)
    {
        return s;
    }
    // rate ≤ 10^8 and tick ≤ 10^8 ns: the products fit (checked above through holds_two_ticks).
    s.rate_burst = s.rate_burst.saturating_add(s.rate_pps.saturating_mul(tick));
    s.syn_burst = s.syn_burst.saturating_add(s.syn_pps.saturating_mul(tick));
    s.flags |= FLAG_COARSE_CLOCK;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_xdp_common::TOKEN;

    const TICK: u64 = 4_000_000; // HZ=250

    fn limits(rate: u64, burst: u64, syn: u64, syn_burst: u64) -> Settings {
        Settings {
            rate_pps: rate,
            rate_burst: burst * TOKEN,
            syn_pps: syn,
            syn_burst: syn_burst * TOKEN,
            flags: 0,
            seed: [0; 5],
        }
    }

    fn coarse(s: &Settings) -> bool {
        s.flags & FLAG_COARSE_CLOCK != 0
    }

    #[test]
    fn coarse_only_when_every_burst_holds_two_ticks() {
        // 10 000/s over a 4 ms tick: 40 packets a tick, so the rule needs a burst of 80.
        let s = choose(limits(10_000, 80, 0, 0), Some(TICK));
        assert!(coarse(&s));
        assert_eq!(s.rate_burst, 80 * TOKEN + 10_000 * TICK, "one tick deeper");
        assert_eq!(s.rate_burst, 120 * TOKEN);
        assert!(!coarse(&choose(limits(10_000, 79, 0, 0), Some(TICK))));
        // Either limiter can veto; a limiter that is off cannot.
        assert!(!coarse(&choose(limits(10_000, 20_000, 200, 1), Some(TICK))));
        let both = choose(limits(10_000, 20_000, 200, 2), Some(TICK));
        assert!(coarse(&both));
        assert_eq!(both.syn_burst, 2 * TOKEN + 200 * TICK);
        assert!(coarse(&choose(limits(0, 0, 200, 400), Some(TICK))));
    }

    #[test]
    fn precise_bursts_stay_as_configured_and_flags_are_kept() {
        let mut s = limits(100_000_000, 100_000, 0, 0);
        s.flags = 1 | FLAG_COARSE_CLOCK;
        let chosen = choose(s, Some(TICK));
        assert!(!coarse(&chosen), "a stale coarse flag is cleared");
        assert_eq!(chosen.flags, 1);
        assert_eq!(chosen.rate_burst, s.rate_burst);
    }

    #[test]
    fn no_tick_no_limiter_or_an_absurd_tick_means_precise() {
        assert!(!coarse(&choose(limits(10, 1000, 0, 0), None)));
        assert!(!coarse(&choose(limits(10, 1000, 0, 0), Some(0))));
        assert!(!coarse(&choose(
            limits(10, 1000, 0, 0),
            Some(10_000_000_000)
        )));
        assert!(!coarse(&choose(limits(0, 0, 0, 0), Some(TICK))));
    }

    #[test]
    fn the_kernel_reports_a_tick() {
        let tick = coarse_tick_ns().expect("CLOCK_MONOTONIC_COARSE resolution");
        assert!(tick > 0 && tick <= MAX_TICK_NS, "{tick}");
    }
}
