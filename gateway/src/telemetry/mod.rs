//! Metrics (Prometheus text), the JSON access log and `tracing` setup.

pub mod access_log;
pub mod finish_log;
pub mod log_context;
pub mod logging;
pub mod metrics;
pub mod otel;

use std::sync::Arc;

use crate::proxy::finish::FinishSink;

/// Makes, on each worker, the function called once per finished exchange.
pub type FinishSinkFactory = Arc<dyn Fn() -> FinishSink + Send + Sync>;
