//! The process's wasmtime engines (one without fuel metering, one with, created on first use) and
//! the epoch ticker thread of each, which gives every callback its deadline.
//!
//! The ticker advances the engine's epoch every tick; a store whose deadline passes traps at its
//! next loop header or function entry. Two things keep it cheap, since each wake-up is a context
//! switch on a core that may be serving requests:
//!
//! - **The tick follows the deadlines asked for**: a tenth of the smallest `callback_timeout` of
//!   the plugins loaded so far, between [`MIN_TICK`] and [`MAX_TICK`] (10 ms, 100 wake-ups a
//!   second, for the default 100 ms). A deadline is then met within one tick: a callback is
//!   stopped between `callback_timeout` and `callback_timeout` plus a tenth.
//! - **It parks when no callback ran for longer than any deadline**: an idle gateway does not
//!   wake up at all. A callback that starts while it is parked wakes it (see
//!   `Ticker::note_callback`, a relaxed load when the ticker is already running).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine};

/// The finest tick: deadlines of a few milliseconds are met within a millisecond.
pub const MIN_TICK: Duration = Duration::from_millis(1);
/// The coarsest tick (and the tick before any plugin asked for a deadline).
pub const MAX_TICK: Duration = Duration::from_millis(10);

/// One engine and its epoch ticker.
struct Slot {
    engine: Engine,
    ticker: &'static Ticker,
}

static PLAIN: OnceLock<Slot> = OnceLock::new();
static FUELED: OnceLock<Slot> = OnceLock::new();

/// The state an engine's ticker thread shares with the callbacks of its stores.
pub struct Ticker {
    /// Nanoseconds between two epochs; only ever lowered.
    tick_ns: AtomicU64,
    /// The largest deadline, in ticks, any store was armed with: how long the ticker keeps
    /// ticking after the last callback started, before it parks.
    max_deadline_ticks: AtomicU64,
    /// A callback started since the ticker last looked.
    active: AtomicBool,
    /// The ticker is parked (or about to): the next callback must unpark it.
    parked: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl Ticker {
    const fn new() -> Ticker {
        Ticker {
            tick_ns: AtomicU64::new(MAX_TICK.as_nanos() as u64),
            max_deadline_ticks: AtomicU64::new(1),
            active: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            thread: OnceLock::new(),
        }
    }

    /// The current tick in nanoseconds.
    #[inline]
    pub(crate) fn tick_ns(&self) -> u64 {
        self.tick_ns.load(Ordering::Relaxed)
    }

    /// A plugin with this callback timeout was loaded: make the tick fine enough for it.
    pub(crate) fn require(&self, timeout: Duration) {
        let want = (timeout / 10).clamp(MIN_TICK, MAX_TICK).as_nanos() as u64;
        self.tick_ns.fetch_min(want, Ordering::Relaxed);
    }

    /// Epoch ticks for a callback deadline of `timeout` at the current tick (at least one full
    /// tick beyond the current one); remembered so the ticker does not park before it passes.
    pub(crate) fn deadline_ticks(&self, timeout: Duration) -> u64 {
        let ticks = deadline_ticks_for(timeout, self.tick_ns());
        self.max_deadline_ticks.fetch_max(ticks, Ordering::Relaxed);
        ticks
    }

    /// A callback is about to run: make sure the ticker runs. One relaxed load while it does
    /// and it was told in this tick already; a store (and, after an idle spell, an unpark) the
    /// first time in a tick.
    #[inline]
    pub(crate) fn note_callback(&self) {
        if self.active.load(Ordering::Relaxed) {
            return;
        }
        self.active.store(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

/// Ticks (of `tick_ns`) for a callback deadline of `timeout`: at least one full tick beyond
/// the current one.
fn deadline_ticks_for(timeout: Duration, tick_ns: u64) -> u64 {
    (timeout.as_nanos() / u128::from(tick_ns.max(1))) as u64 + 1
}

static PLAIN_TICKER: Ticker = Ticker::new();
static FUELED_TICKER: Ticker = Ticker::new();

/// The engine for plugins without (`fuel == false`) or with an instruction budget. Fuel metering
/// slows every instruction, so plugins that do not ask for it run on an engine without it.
///
/// # Errors
/// The engine could not be configured (unsupported host).
pub fn engine(fuel: bool) -> Result<&'static Engine, crate::Error> {
    slot(fuel).map(|s| &s.engine)
}

/// The ticker of the engine for `fuel`.
pub(crate) fn ticker(fuel: bool) -> Result<&'static Ticker, crate::Error> {
    slot(fuel).map(|s| s.ticker)
}

/// `SLUICE_WASM_PROFILER=perfmap`: wasmtime writes the names and addresses of the plugins'
/// compiled functions to `/tmp/perf-PID.map`, where `perf report` finds them, so a profile of the
/// gateway shows time inside each plugin function instead of anonymous addresses. Off by
/// default; any other value is logged and ignored.
fn profiler_from_env() -> Option<wasmtime::ProfilingStrategy> {
    let v = std::env::var("SLUICE_WASM_PROFILER").ok()?;
    match v.as_str() {
        "perfmap" => Some(wasmtime::ProfilingStrategy::PerfMap),
        "" | "none" => None,
        other => {
            tracing::warn!(
                value = other,
                "SLUICE_WASM_PROFILER: expected perfmap or none; ignored"
            );
            None
        }
    }
}

fn slot(fuel: bool) -> Result<&'static Slot, crate::Error> {
    let (cell, ticker) = if fuel {
        (&FUELED, &FUELED_TICKER)
    } else {
        (&PLAIN, &PLAIN_TICKER)
    };
    if let Some(s) = cell.get() {
        return Ok(s);
    }
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.wasm_multi_memory(false);
    config.table_lazy_init(false);
    config.memory_may_move(false);
    if let Some(strategy) = profiler_from_env() {
        config.profiler(strategy);
    }
    let engine = Engine::new(&config).map_err(|e| crate::Error::Engine(e.to_string()))?;
    let mut started = false;
    let slot = cell.get_or_init(|| {
        started = true;
        Slot { engine, ticker }
    });
    if started {
        start_ticker(slot.engine.clone(), ticker);
    }
    Ok(slot)
}

/// Whether the ticker of the engine for `fuel` is parked (no callback ran for longer than any
/// deadline). For tests and diagnostics.
#[doc(hidden)]
pub fn ticker_parked(fuel: bool) -> bool {
    let ticker = if fuel { &FUELED_TICKER } else { &PLAIN_TICKER };
    ticker.parked.load(Ordering::SeqCst)
}

/// One thread per engine advances the epoch (see the module docs).
fn start_ticker(engine: Engine, ticker: &'static Ticker) {
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || run_ticker(&engine, ticker));
    match spawned {
        Ok(handle) => {
            let _ = ticker.thread.set(handle.thread().clone());
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the wasm epoch thread: plugin deadlines are not enforced");
        }
    }
}

fn run_ticker(engine: &Engine, ticker: &Ticker) {
    let mut idle = 0u64;
    loop {
        std::thread::sleep(Duration::from_nanos(ticker.tick_ns()));
        engine.increment_epoch();
        if ticker.active.swap(false, Ordering::SeqCst) {
            idle = 0;
            continue;
        }
        idle += 1;
        // Every callback that started before the last one noticed has passed its deadline (or
        // ended) after this many more ticks: nothing can need an epoch until the next callback.
        if idle <= ticker.max_deadline_ticks.load(Ordering::Relaxed) {
            continue;
        }
        ticker.parked.store(true, Ordering::SeqCst);
        // A callback that set `active` before seeing `parked` is seen here; one that sees
        // `parked` unparks (an unpark before the park makes the park return at once).
        if !ticker.active.load(Ordering::SeqCst) {
            std::thread::park();
        }
        ticker.parked.store(false, Ordering::SeqCst);
        idle = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_tenth_of_the_smallest_timeout_within_bounds() {
        let t = Ticker::new();
        assert_eq!(t.tick_ns(), MAX_TICK.as_nanos() as u64);
        t.require(Duration::from_secs(5));
        assert_eq!(t.tick_ns(), MAX_TICK.as_nanos() as u64);
        t.require(Duration::from_millis(50));
        assert_eq!(t.tick_ns(), 5_000_000);
        t.require(Duration::from_millis(100));
        assert_eq!(t.tick_ns(), 5_000_000, "the tick is only ever lowered");
        t.require(Duration::from_micros(10));
        assert_eq!(t.tick_ns(), MIN_TICK.as_nanos() as u64);
    }

    #[test]
    fn a_deadline_is_one_tick_past_the_timeout_and_keeps_the_ticker_up() {
        let t = Ticker::new();
        t.require(Duration::from_millis(100));
        assert_eq!(t.deadline_ticks(Duration::from_millis(100)), 11);
        assert_eq!(t.deadline_ticks(Duration::from_millis(5)), 1);
        assert_eq!(t.max_deadline_ticks.load(Ordering::Relaxed), 11);
        assert_eq!(t.deadline_ticks(Duration::from_secs(1)), 101);
        assert_eq!(t.max_deadline_ticks.load(Ordering::Relaxed), 101);
    }
}
