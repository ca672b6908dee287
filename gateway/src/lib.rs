//! Sluice: a programmable edge gateway. Native Rust filters and proxy-wasm plugins on a hyper/tokio
//! thread-per-core proxy, configured from YAML or xDS, with an XDP fast path.

pub mod admin;
pub mod app;
pub mod body;
pub mod config;
pub mod error;
pub mod filter;
pub mod h1;
pub mod huge_pages;
pub mod lazy_timer;
pub mod listener;
pub mod plugin_fetch;
pub mod plugin_test;
pub mod proxy;
pub mod reload;
pub mod request_clock;
pub mod router;
pub mod server;
pub mod services;
pub mod snapshot;
pub mod telemetry;
pub mod upstream;
pub mod wall_clock;
pub mod wasm;
pub mod worker;
pub mod xdp;
pub mod xds;
