//! The request path's metric recording allocates nothing once a series has seen its status class.
//! Its own test binary, because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use sluice::telemetry::metrics::Metrics;

thread_local! {
    /// Per-thread, so allocations by other test threads are not counted.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn record_does_not_allocate() {
    let metrics = Metrics::new();
    let route = metrics.route("public", "api", "backend");
    let listener = metrics.listener("public");
    let cluster = metrics.cluster("backend");
    // The first status of each class allocates that class's counters, once.
    route.record(200, Duration::from_millis(1), Duration::from_millis(1));
    route.record(503, Duration::from_millis(1), Duration::from_millis(1));

    let before = allocations();
    for i in 0..10_000u64 {
        let status = if i % 10 == 0 { 503 } else { 200 };
        route.record(
            status,
            Duration::from_micros(i),
            Duration::from_micros(i / 2),
        );
        listener.opened();
        listener.closed();
        cluster.connected(Duration::from_micros(i));
        cluster.retried();
        metrics.connection_opened("public");
        metrics.upstream_retry("backend");
    }
    assert_eq!(allocations() - before, 0);

    // The counting is real: creating a series does allocate.
    let before = allocations();
    let _other = metrics.route("public", "other", "backend");
    assert!(allocations() > before);
}
