//! Metrics (Prometheus text), the JSON access log and `tracing` setup.

pub mod metrics;

use std::rc::Rc;
use std::sync::Arc;

use crate::filter::Exchange;
use crate::proxy::finish::Finish;

/// Makes, on each worker, the function called once per finished exchange.
pub type FinishSinkFactory = Arc<dyn Fn() -> Rc<dyn Fn(&Finish, &Exchange)> + Send + Sync>;

/// Install the `tracing` subscriber: `RUST_LOG` filter (default `info`), to stderr.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
