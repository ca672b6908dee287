//! Hostile plugin `rs_hostile_trap`: traps in the configured callback.
//!
//! Config: `{"where": "<callback>", "mode": "panic|unreachable|memory"}` (mode default `panic`)
//! or the bare callback name. `panic` goes through the SDK's panic hook (a critical log, then a
//! wasm `unreachable`), `unreachable` executes the instruction directly, `memory` loads from an
//! address past the end of linear memory (an out-of-bounds memory trap).

use conformance_common::Hostile;

proxy_wasm::main! {{
    conformance_common::hostile::install(trap);
}}

/// Far beyond any linear memory a host would allow (4 GiB - 16).
const OUT_OF_BOUNDS: usize = 0xFFFF_FFF0;

fn trap(settings: &Hostile, place: &str) -> Option<String> {
    match settings.mode.as_deref() {
        Some("unreachable") => core::arch::wasm32::unreachable(),
        Some("memory") => {
            // SAFETY: deliberately not safe — this plugin exists to make the engine trap on an
            // out-of-bounds load; volatile keeps the load from being optimised away.
            let value = unsafe { std::ptr::read_volatile(OUT_OF_BOUNDS as *const u32) };
            Some(value.to_string())
        }
        _ => panic!("rs_hostile_trap: deliberate panic in {place}"),
    }
}
