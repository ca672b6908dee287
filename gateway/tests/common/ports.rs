//! Ports for test servers and gateways, picked so that parallel tests do not take each other's.
//!
//! A port from `bind(":0")` comes from the kernel's ephemeral range, the same range the kernel
//! gives outgoing connections: between the test releasing it and the gateway binding it, another
//! test's client (a load test opens thousands of connections) can take it as its local port, and
//! the gateway fails with "Address already in use". Ports below that range are never handed out
//! for outgoing connections, so the tests take theirs there, at a random place per process.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port the tests use.
const FLOOR: u32 = 10_000;

/// A TCP port on 127.0.0.1 that nothing listens on now, outside the ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let top = ephemeral_start().unwrap_or(32_768);
    if top <= FLOOR + 1_000 {
        return kernel_port();
    }
    let span = top - FLOOR;
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for _ in 0..200 {
        // A stride co-prime with most spans walks the range without repeating early.
        let step = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(7_919);
        let port = FLOOR + seed.wrapping_add(step) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_and_below_the_ephemeral_range() {
        let top = ephemeral_start().expect("ephemeral range");
        for _ in 0..20 {
            let port = free_port();
            assert!(u32::from(port) >= FLOOR && u32::from(port) < top, "{port}");
            TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }
}
