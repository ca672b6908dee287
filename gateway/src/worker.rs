//! Worker threads: each runs a single-threaded tokio runtime with a LocalSet, its own
//! SO_REUSEPORT listeners and its own upstream connection pools.
//! STUB for `dispatch` (the interface plugins' http callouts use); the lead implements it.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::upstream::{UpstreamError, UpstreamErrorKind};

/// Send a request to `cluster` of the current snapshot from the current worker (pooled
/// connections, the cluster's load balancer), waiting at most `timeout` for response headers.
/// Must be called on a worker thread (inside its LocalSet).
///
/// # Errors
/// Unknown cluster (kind `NoHealthyEndpoint`) or any upstream failure.
pub async fn dispatch(
    cluster: &str,
    _req: Request<ProxyBody>,
    _timeout: Duration,
) -> Result<Response<Incoming>, UpstreamError> {
    Err(UpstreamError {
        kind: UpstreamErrorKind::NoHealthyEndpoint,
        cluster: cluster.into(),
        detail: "worker dispatch not wired yet".into(),
    })
}
