//! Transparent huge pages (THP) are off for the gateway's process.
//!
//! The allocator (mimalloc) reserves its heap as one large region. With THP, every 2 MiB piece
//! of it that is touched at all becomes a whole resident huge page: one worker's few MiB of heap
//! showed as 14 MiB of huge pages, and the gateway's resident memory was twice nginx's (27
//! against 13 MiB) for the same job. Without THP it is 14 MiB, and the CPU per request measured
//! the same (docs/performance.md, session 8). So mimalloc is built without its huge-page advice
//! (feature `no_thp`), and `sluice run` also turns THP off for the whole process
//! (`PR_SET_THP_DISABLE`), which covers systems whose THP setting is `always` rather than
//! `madvise`. `SLUICE_ALLOW_THP=1` leaves the process's setting alone.

/// The environment variable that keeps transparent huge pages allowed.
pub const ALLOW_ENV: &str = "SLUICE_ALLOW_THP";

/// Turn transparent huge pages off for this process (and the processes it starts), unless
/// [`ALLOW_ENV`] is `1`. Whether they are off now.
pub fn disable_for_process() -> bool {
    if std::env::var_os(ALLOW_ENV).is_some_and(|v| v == "1") {
        return false;
    }
    disable()
}

#[cfg(target_os = "linux")]
fn disable() -> bool {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and changes no memory
    // of this process; it fails cleanly (-1) on kernels without it.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn disable() -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_process_reports_huge_pages_off() {
        // The test binary runs its tests as threads of one process; the flag is per process
        // and nothing else in it depends on huge pages.
        assert!(super::disable());
        // SAFETY: as above.
        let state = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(state, 1);
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert!(line.ends_with('0'), "{line}");
        }
    }
}
