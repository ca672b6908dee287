//! `tracing` setup for the gateway's own logs (not the access log): stderr, filtered by
//! `RUST_LOG`, human-readable by default or JSON with `SLUICE_LOG_FORMAT=json`. Colours only
//! when stderr is a terminal and `NO_COLOR` is unset: a log file or journal gets plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default_filter` (e.g. "info") applies when `RUST_LOG` is
/// unset or invalid. Calling it again, or after another subscriber was installed (tests), does
/// nothing.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // try_init fails only when a global subscriber already exists, which is what idempotent means.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
