//! Clusters, load balancing, per-worker connection pools, health checks and retries.
//! STUB: the interface the proxy path calls; to be implemented.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::config::model::{ClusterConfig, RetryConfig};
use crate::services::Services;

/// Why an upstream exchange failed. `crate::error` maps each kind to a status code, in one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// No healthy endpoint (or none resolved).
    NoHealthyEndpoint,
    /// Connection refused.
    ConnectRefused,
    /// Connect did not finish within connect_timeout.
    ConnectTimeout,
    /// Other connect failure (unreachable, DNS).
    ConnectFailed,
    /// No response headers within the route timeout.
    Timeout,
    /// The connection was reset or closed before a response.
    Reset,
    /// The upstream sent something that is not a valid HTTP response.
    BadResponse,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream {cluster}: {kind:?}: {detail}")]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    pub cluster: Arc<str>,
    pub detail: String,
}

/// A built cluster: endpoints (resolved), health, load balancer. Shared by all workers.
pub struct Cluster {
    pub name: Arc<str>,
}

impl Cluster {
    /// Build from config; no I/O (DNS happens in `start`).
    ///
    /// # Errors
    /// A message for `sluice check`.
    pub fn build(cfg: &ClusterConfig, _services: &Arc<Services>) -> Result<Arc<Cluster>, String> {
        Ok(Arc::new(Cluster {
            name: cfg.name.as_str().into(),
        }))
    }

    /// Start DNS re-resolution and health checks on `rt`. They stop when the cluster is dropped.
    pub fn start(self: &Arc<Self>, _rt: &tokio::runtime::Handle) {}
}

/// All clusters of a snapshot.
#[derive(Default)]
pub struct Upstreams {
    pub clusters: HashMap<String, Arc<Cluster>>,
}

/// How to send one request.
pub struct SendOptions<'a> {
    /// Route timeout: until the response headers arrive.
    pub timeout: Duration,
    pub retries: Option<&'a RetryConfig>,
    /// Hash for ring_hash (from the cluster's hash_key header); None picks at random.
    pub hash: Option<u64>,
}

/// Per-worker connection pools (no locks: one worker, one pool set). Created once per worker.
#[derive(Default)]
pub struct WorkerPools {}

impl WorkerPools {
    pub fn new() -> Self {
        WorkerPools {}
    }

    /// Send `req` (absolute-form or origin-form URI; Host header already set) to `cluster`,
    /// with connect/request timeouts and retries per `opts`.
    ///
    /// # Errors
    /// An [`UpstreamError`] whose kind decides the status code.
    pub async fn send(
        &self,
        cluster: &Arc<Cluster>,
        _req: Request<ProxyBody>,
        _opts: &SendOptions<'_>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        Err(UpstreamError {
            kind: UpstreamErrorKind::ConnectFailed,
            cluster: cluster.name.clone(),
            detail: "not implemented".into(),
        })
    }
}
