//! Metrics (Prometheus text), the JSON access log and `tracing` setup.

pub mod access_log;
pub mod logging;
pub mod metrics;
