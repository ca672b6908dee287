//! Metrics (Prometheus text), the JSON access log and `tracing` setup.

pub mod metrics;
