//! Clusters, load balancing, per-worker connection pools, health checks and retries.
//!
//! A [`Cluster`] is built from config once per snapshot and shared by every worker. It owns the
//! endpoint set (resolved addresses, health, active-request counters) and runs its background
//! work — DNS re-resolution and active health checks — on the control runtime given to
//! [`Cluster::start`]; that work stops as soon as the cluster is dropped.
//!
//! A [`WorkerPools`] belongs to one worker thread and is never shared: it holds that worker's
//! keep-alive connections, keyed by endpoint address and protocol (not by cluster), so pooled
//! connections survive a reload that rebuilds the clusters. [`WorkerPools::send`] is the whole
//! request path: pick an endpoint, take or open a connection, send, retry per policy.
//!
//! Behaviour worth knowing (each is documented where it is implemented):
//! - DNS names are resolved asynchronously in `start`; a request that arrives before the first
//!   resolution finishes waits for it, at most the cluster's connect timeout (`dns.rs`).
//! - Only healthy endpoints are picked; when none is healthy the request fails with
//!   [`UpstreamErrorKind::NoHealthyEndpoint`] (no panic mode) (`lb.rs`).
//! - Retries apply only to idempotent methods whose request body is empty at send time
//!   (`retry.rs`); a stale keep-alive connection is retried once transparently (`send.rs`).
//! - "Active requests" count an exchange until its response headers arrive (`endpoint.rs`).

pub mod added;
mod body;
mod cluster;
mod dns;
mod endpoint;
mod health;
mod lb;
pub(crate) mod pool;
pub(crate) mod retry;
mod send;
pub(crate) mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::model::{ClusterConfig, RetryConfig};
use crate::services::Services;

pub use body::UpstreamBody;
pub use cluster::Cluster;
pub use pool::WorkerPools;
pub use tls::UpstreamTls;

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

impl UpstreamErrorKind {
    /// Whether this is a failure to establish a connection (the `connect-failure` retry case).
    pub fn is_connect_failure(self) -> bool {
        matches!(
            self,
            UpstreamErrorKind::ConnectRefused
                | UpstreamErrorKind::ConnectTimeout
                | UpstreamErrorKind::ConnectFailed
        )
    }
}

/// A failed upstream exchange: what went wrong, in which cluster, and a human-readable detail.
#[derive(Debug, thiserror::Error)]
#[error("upstream {cluster}: {kind:?}: {detail}")]
pub struct UpstreamError {
    /// The kind decides the status code returned downstream.
    pub kind: UpstreamErrorKind,
    /// The cluster the request was sent to.
    pub cluster: Arc<str>,
    /// What happened, for logs (endpoint address and cause).
    pub detail: String,
}

/// All clusters of a snapshot.
#[derive(Default)]
pub struct Upstreams {
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<Cluster>>,
}

impl Upstreams {
    /// Build every cluster of a config (no I/O). Every problem is reported, not just the first.
    ///
    /// # Errors
    /// One message per bad cluster (and per duplicate name), for `sluice check`.
    pub fn build(
        configs: &[ClusterConfig],
        services: &Arc<Services>,
    ) -> Result<Upstreams, Vec<String>> {
        let mut clusters = HashMap::with_capacity(configs.len());
        let mut errors = Vec::new();
        for cfg in configs {
            match Cluster::build(cfg, services) {
                Ok(cluster) => {
                    if clusters.insert(cfg.name.clone(), cluster).is_some() {
                        errors.push(format!(
                            "cluster name `{}` is used twice; give each cluster a unique name",
                            cfg.name
                        ));
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Upstreams { clusters })
        } else {
            Err(errors)
        }
    }

    /// Start every cluster's DNS re-resolution and health checks on `rt` (see [`Cluster::start`]).
    pub fn start(&self, rt: &tokio::runtime::Handle) {
        for cluster in self.clusters.values() {
            cluster.start(rt);
        }
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

/// How to send one request.
pub struct SendOptions<'a> {
    /// Route timeout: until the response headers arrive, across all tries. Zero disables it.
    pub timeout: Duration,
    /// The route's retry policy, if any.
    pub retries: Option<&'a RetryConfig>,
    /// Hash for ring_hash (from the cluster's hash_key header); None picks at random.
    pub hash: Option<u64>,
    /// Where each try is logged when the request is traced.
    pub tries: Option<&'a crate::telemetry::otel::attempts::Tries>,
    /// A timer to reuse for the route timeout (and to leave there afterwards), e.g. one per
    /// downstream connection: re-arming a registered timer for a later deadline does not touch
    /// the runtime's timer wheel, a new timer is inserted into it and removed again.
    pub timer: Option<&'a TimerSlot>,
    /// Where the address of each try's endpoint is written (the last one stays).
    pub endpoint: Option<&'a std::cell::Cell<Option<std::net::SocketAddr>>>,
    /// The time now, when the caller read the clock a moment ago (at most microseconds): the
    /// route timeout counts from it instead of a new reading. `None`: the clock is read.
    pub now: Option<tokio::time::Instant>,
    /// Nothing but an HTTP/1.1 server writing them out reads the response's fields: an
    /// HTTP/1.1 upstream's final response may carry them as received
    /// ([`crate::h1::raw_fields::RawFields`] in its extensions, its map empty).
    pub raw_fields: bool,
    /// Fields the proxy adds, written by the HTTP/1.1 client after the request's own (see
    /// [`added`]).
    pub added: Option<&'a added::AddedFields>,
    /// The request's own fields, when its map was left empty because they stay where the
    /// filters' later phases read them (the exchange): the function hands them to its argument.
    /// The HTTP/1.1 client encodes them from there; an HTTP/2 try copies them into the request.
    pub fields: Option<&'a RequestFieldsFn<'a>>,
}

/// See [`SendOptions::fields`].
pub type RequestFieldsFn<'a> = dyn Fn(&mut dyn FnMut(&http::HeaderMap)) + 'a;

/// A reusable route-timeout timer, see [`SendOptions::timer`].
pub type TimerSlot = std::cell::Cell<Option<crate::lazy_timer::LazyTimer>>;
