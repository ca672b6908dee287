//! A built cluster: settings, the atomically swapped endpoint set, and its background work.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::PathAndQuery;
use tokio::sync::{watch, Notify};

use crate::config::model::{
    ClusterConfig, HealthCheckConfig, LoadBalancing, Protocol, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DNS_REFRESH,
};
use crate::services::Services;

use super::dns::{self, Target, WeightedAddr};
use super::endpoint::{ActiveGuard, Endpoint, EndpointSet};
use super::lb::{self, Tried};
use super::pool::PoolKey;
use super::tls::UpstreamTls;
use super::{health, UpstreamError, UpstreamErrorKind};

/// Pool settings a worker applies to this cluster's endpoints.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolSettings {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

/// A built cluster: endpoints (resolved), health, load balancer. Shared by all workers.
pub struct Cluster {
    /// The cluster's name, as in the config.
    pub name: Arc<str>,
    protocol: Protocol,
    lb: LoadBalancing,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool: PoolSettings,
    /// TLS to the endpoints (`tls:`), if any.
    pub(crate) tls: Option<Arc<UpstreamTls>>,
    health_check: Option<HealthCheckConfig>,
    dns_refresh: Duration,
    targets: Arc<[Target]>,
    endpoints: ArcSwap<EndpointSet>,
    /// Set once the endpoint list is complete (at build for literals, after the first DNS round).
    resolved: AtomicBool,
    resolved_notify: Notify,
    rr: AtomicUsize,
    /// Retries in flight (the retry budget's numerator).
    pub(crate) active_retries: AtomicU64,
    pub(crate) services: Arc<Services>,
    /// Background tasks watch this; dropping the cluster drops it and stops them.
    stop: watch::Sender<()>,
    started: AtomicBool,
}

impl Cluster {
    /// Build from config; no I/O (DNS happens in `start`).
    ///
    /// # Errors
    /// A message for `sluice check`.
    pub fn build(cfg: &ClusterConfig, services: &Arc<Services>) -> Result<Arc<Cluster>, String> {
        let name = cfg.name.as_str();
        let tls = match &cfg.tls {
            Some(t) => Some(Arc::new(
                UpstreamTls::build(t, cfg.protocol)
                    .map_err(|e| format!("cluster `{name}`: {e}"))?,
            )),
            None => None,
        };
        if cfg.endpoints.is_empty() {
            return Err(format!(
                "cluster `{name}` has no endpoints; add e.g. `endpoints: [\"127.0.0.1:9000\"]`"
            ));
        }
        if cfg.load_balancing == LoadBalancing::RingHash && cfg.hash_key.is_none() {
            return Err(format!(
                "cluster `{name}` uses ring_hash but has no hash_key; add e.g. `hash_key: {{ header: x-user }}`"
            ));
        }
        let connect_timeout = cfg
            .connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT.get(), |d| d.get());
        if connect_timeout.is_zero() {
            return Err(format!(
                "cluster `{name}`: connect_timeout must be more than 0, e.g. `1s`"
            ));
        }
        let dns_refresh = cfg
            .dns_refresh
            .map_or(DEFAULT_DNS_REFRESH.get(), |d| d.get());
        if dns_refresh.is_zero() {
            return Err(format!(
                "cluster `{name}`: dns_refresh must be more than 0, e.g. `30s`"
            ));
        }
        if let Some(hc) = &cfg.health_check {
            validate_health_check(name, hc)?;
        }
        let targets: Arc<[Target]> = cfg
            .endpoints
            .iter()
            .map(|e| Target::parse(name, &e.address, e.weight))
            .collect::<Result<Vec<_>, _>>()?
            .into();
        let literals: Vec<WeightedAddr> = targets
            .iter()
            .filter_map(|t| match t {
                Target::Addr(a, authority, w) => Some((*a, Arc::clone(authority), *w)),
                Target::Name { .. } => None,
            })
            .collect();
        let all_literal = literals.len() == targets.len();
        let with_ring = cfg.load_balancing == LoadBalancing::RingHash;
        let cluster = Cluster {
            name: name.into(),
            protocol: cfg.protocol,
            lb: cfg.load_balancing,
            connect_timeout,
            pool: PoolSettings {
                max_idle: cfg.pool.max_idle_per_endpoint as usize,
                idle_timeout: cfg.pool.idle_timeout.get(),
            },
            tls,
            health_check: cfg.health_check.clone(),
            dns_refresh,
            targets,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(Vec::new(), with_ring)),
            resolved: AtomicBool::new(false),
            resolved_notify: Notify::new(),
            rr: AtomicUsize::new(0),
            active_retries: AtomicU64::new(0),
            services: Arc::clone(services),
            stop: watch::channel(()).0,
            started: AtomicBool::new(false),
        };
        // Literals are usable now; names join them after the first DNS round.
        cluster.install(literals, all_literal, false);
        Ok(Arc::new(cluster))
    }

    /// Start DNS re-resolution and health checks on `rt`. They stop when the cluster is dropped.
    /// Calling it again does nothing.
    pub fn start(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        if self
            .targets
            .iter()
            .any(|t| matches!(t, Target::Name { .. }))
        {
            rt.spawn(dns::refresh_loop(
                Arc::downgrade(self),
                self.stop.subscribe(),
                Arc::clone(&self.targets),
                self.dns_refresh,
            ));
        }
        if let Some(hc) = &self.health_check {
            rt.spawn(health::check_loop(
                Arc::downgrade(self),
                self.stop.subscribe(),
                hc.clone(),
            ));
        }
    }

    /// The key of `ep`'s pooled connections for this cluster (address and TLS settings).
    pub(crate) fn pool_key(&self, ep: &Endpoint) -> PoolKey {
        PoolKey {
            addr: ep.addr,
            tls: self.tls.as_ref().map_or(0, |t| t.id),
        }
    }

    /// The protocol spoken to this cluster's endpoints.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// For the admin API: each endpoint's address, health and active exchanges.
    pub fn endpoints_status(&self) -> Vec<(String, bool, u64)> {
        self.endpoints
            .load()
            .all
            .iter()
            .map(|e| (e.label.to_string(), e.is_healthy(), e.active()))
            .collect()
    }

    /// Pick an endpoint for one try and count it active until the guard drops.
    pub(crate) fn pick(
        &self,
        hash: Option<u64>,
        tried: &Tried,
    ) -> Result<ActiveGuard, UpstreamError> {
        let set = self.endpoints.load();
        match lb::pick(&set, self.lb, &self.rr, hash, tried) {
            Some(ep) => Ok(ep.begin()),
            None if set.all.is_empty() && !self.resolved.load(Ordering::Acquire) => Err(self
                .error(
                    UpstreamErrorKind::NoHealthyEndpoint,
                    "endpoints not resolved yet".into(),
                )),
            None if set.all.is_empty() => Err(self.error(
                UpstreamErrorKind::NoHealthyEndpoint,
                "no endpoint resolved".into(),
            )),
            None => Err(self.error(
                UpstreamErrorKind::NoHealthyEndpoint,
                format!("none of {} endpoints is healthy", set.all.len()),
            )),
        }
    }

    /// Wait, at most the connect timeout, for the first DNS round (no-op once resolved).
    /// Whether the endpoints were resolved at least once (static addresses always are).
    pub(crate) fn is_resolved(&self) -> bool {
        self.resolved.load(Ordering::Acquire)
    }

    pub(crate) async fn wait_resolved(&self) {
        if self.resolved.load(Ordering::Acquire) {
            return;
        }
        let notified = self.resolved_notify.notified();
        tokio::pin!(notified);
        // Register before re-checking, so a resolution finishing in between is not missed.
        notified.as_mut().enable();
        if self.resolved.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(self.connect_timeout, notified).await;
    }

    /// The current endpoint set (for the health checker).
    pub(crate) fn endpoint_set(&self) -> Arc<EndpointSet> {
        self.endpoints.load_full()
    }

    /// Publish a DNS round's addresses (with the authority and weight each came from).
    pub(crate) fn set_addresses(&self, addrs: Vec<WeightedAddr>) {
        self.install(addrs, true, true);
    }

    /// Rebuild the balancer's views after health transitions.
    pub(crate) fn refresh_health(&self) {
        let with_ring = self.lb == LoadBalancing::RingHash;
        self.endpoints.rcu(|cur| {
            if cur.health_is_current() {
                Arc::clone(cur)
            } else {
                Arc::new(EndpointSet::new(cur.all.clone(), with_ring))
            }
        });
    }

    /// An error of this cluster.
    pub(crate) fn error(&self, kind: UpstreamErrorKind, detail: String) -> UpstreamError {
        UpstreamError {
            kind,
            cluster: Arc::clone(&self.name),
            detail,
        }
    }

    /// Swap in the endpoints for `addrs`, keeping the existing `Endpoint` (and its health and
    /// counters) of every address already present with the same weight. Unchanged lists are
    /// not swapped. An address listed twice (a literal and a name's answer) keeps its first entry.
    fn install(&self, mut addrs: Vec<WeightedAddr>, complete: bool, from_dns: bool) {
        let mut seen = std::collections::HashSet::with_capacity(addrs.len());
        addrs.retain(|(a, _, _)| seen.insert(*a));
        let same = |e: &Arc<Endpoint>, (a, _, w): &WeightedAddr| e.addr == *a && e.weight == *w;
        let with_ring = self.lb == LoadBalancing::RingHash;
        let previous = self.endpoints.rcu(|cur| {
            if cur.all.len() == addrs.len() && cur.all.iter().zip(&addrs).all(|(e, t)| same(e, t)) {
                return Arc::clone(cur);
            }
            let existing: HashMap<SocketAddr, &Arc<Endpoint>> =
                cur.all.iter().map(|e| (e.addr, e)).collect();
            let all = addrs
                .iter()
                .map(|(a, authority, w)| match existing.get(a) {
                    // A weight only changes when DNS moves an address to an entry of another
                    // weight: rare enough that starting that endpoint's state afresh is fine.
                    Some(e) if e.weight == *w => Arc::clone(e),
                    _ => Endpoint::new(*a, Arc::clone(authority), *w),
                })
                .collect();
            Arc::new(EndpointSet::new(all, with_ring))
        });
        let changed = previous.all.len() != addrs.len()
            || previous.all.iter().zip(&addrs).any(|(e, t)| !same(e, t));
        if changed && from_dns {
            let list: Vec<String> = addrs.iter().map(|(a, _, _)| a.to_string()).collect();
            tracing::info!(cluster = %self.name, endpoints = ?list, "DNS changed the cluster's endpoints");
        }
        if complete {
            self.resolved.store(true, Ordering::Release);
            self.resolved_notify.notify_waiters();
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("load_balancing", &self.lb)
            .field("endpoints", &self.endpoints_status())
            .finish_non_exhaustive()
    }
}

fn validate_health_check(name: &str, hc: &HealthCheckConfig) -> Result<(), String> {
    if !hc.path.starts_with('/') || hc.path.parse::<PathAndQuery>().is_err() {
        return Err(format!(
            "cluster `{name}`: health_check path `{}` is not a valid request path; write e.g. `/healthz`",
            hc.path
        ));
    }
    if hc.interval.get().is_zero() || hc.timeout.get().is_zero() {
        return Err(format!(
            "cluster `{name}`: health_check interval and timeout must be more than 0, e.g. `interval: 2s, timeout: 1s`"
        ));
    }
    Ok(())
}
