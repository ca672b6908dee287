//! Hostile plugin `rs_hostile_memory`: exhausts linear memory in the configured callback.
//!
//! Config: `{"where": "<callback>", "mode": "alloc|grow"}` (mode default `alloc`; request header
//! `x-hostile-where` picks the callback per stream). `alloc` keeps 1 MiB allocations alive and
//! touches every page until the allocator fails, which aborts (a trap). `grow` calls
//! `memory.grow` one page at a time until the host refuses, then reports
//! `x-hostile-report: grow-refused-at-pages=<pages>` and carries on, so a host that caps memory
//! gracefully lets the request succeed.

use conformance_common::Hostile;

proxy_wasm::main! {{
    conformance_common::hostile::install(exhaust);
}}

const CHUNK: usize = 1 << 20;
const PAGE: usize = 64 * 1024;
const RESERVE: usize = 256 * 1024;

fn exhaust(settings: &Hostile, _place: &str) -> Option<String> {
    if settings.mode.as_deref() == Some("grow") {
        // Pages taken with raw memory.grow never reach the allocator, so room for the report
        // (and the SDK's own buffers afterwards) is reserved first and freed once growth stops.
        let reserve: Vec<u8> = Vec::with_capacity(RESERVE);
        loop {
            if core::arch::wasm32::memory_grow(0, 1) == usize::MAX {
                drop(std::hint::black_box(reserve));
                let pages = core::arch::wasm32::memory_size(0);
                return Some(format!("grow-refused-at-pages={pages}"));
            }
        }
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Touch each page so a lazily committing host really pays for it.
        for i in (0..CHUNK).step_by(PAGE) {
            chunk[i] = std::hint::black_box(1);
        }
        hoard.push(std::hint::black_box(chunk));
    }
}
