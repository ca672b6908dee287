//! The process's wasmtime engines (one without fuel metering, one with, created on first use) and
//! the single epoch ticker thread that gives every callback its deadline.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often the engine epoch advances: the granularity of callback deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

static PLAIN: OnceLock<Engine> = OnceLock::new();
static FUELED: OnceLock<Engine> = OnceLock::new();

/// The engine for plugins without (`fuel == false`) or with an instruction budget. Fuel metering
/// slows every instruction, so plugins that do not ask for it run on an engine without it.
///
/// # Errors
/// The engine could not be configured (unsupported host).
pub fn engine(fuel: bool) -> Result<&'static Engine, crate::Error> {
    let cell = if fuel { &FUELED } else { &PLAIN };
    if let Some(e) = cell.get() {
        return Ok(e);
    }
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.wasm_multi_memory(false);
    let engine = Engine::new(&config).map_err(|e| crate::Error::Engine(e.to_string()))?;
    let engine = cell.get_or_init(|| engine);
    start_ticker(engine.clone());
    Ok(engine)
}

/// One thread per engine advances the epoch; a store whose deadline passes traps at its next
/// loop header or function entry, so an infinite loop in a plugin ends within a tick or two.
fn start_ticker(engine: Engine) {
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the wasm epoch thread: plugin deadlines are not enforced");
    }
}

/// Epoch ticks for a callback deadline (at least one full tick beyond the current one).
pub fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    (timeout.as_nanos() / tick) as u64 + 1
}
