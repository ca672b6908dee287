//! Metrics (Prometheus text), the JSON access log and `tracing` setup.

pub mod access_log;
pub mod finish_log;
pub mod logging;
pub mod metrics;

use std::rc::Rc;
use std::sync::Arc;

use crate::filter::Exchange;
use crate::proxy::finish::Finish;

/// Makes, on each worker, the function called once per finished exchange.
pub type FinishSinkFactory = Arc<dyn Fn() -> Rc<dyn Fn(&Finish, &Exchange)> + Send + Sync>;
