//! Sluice: a programmable edge gateway. Native Rust filters and proxy-wasm plugins on a hyper/tokio
//! thread-per-core proxy, configured from YAML or xDS, with an XDP fast path.

pub mod body;
pub mod config;
pub mod filter;
pub mod services;
pub mod telemetry;
pub mod upstream;
pub mod wasm;
pub mod worker;
