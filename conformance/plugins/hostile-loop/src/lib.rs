//! Hostile plugin `rs_hostile_loop`: never returns from the configured callback.
//!
//! Config: the callback name, bare or as `{"where": "..."}` (see common::hostile); for
//! `vm_start` put it in the VM configuration. The loop does observable work on every iteration so
//! the compiler cannot remove it; only the host's deadline (epoch interruption or fuel) ends it.

use conformance_common::Hostile;

proxy_wasm::main! {{
    conformance_common::hostile::install(spin);
}}

fn spin(_: &Hostile, _: &str) -> Option<String> {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
