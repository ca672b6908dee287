//! State that outlives any one snapshot: shared by every worker and kept across reloads.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::telemetry::metrics::Metrics;

/// Where L7 decisions send an address to be banned (the XDP ban map when the fast path runs).
pub trait BanSink: Send + Sync {
    /// Ban `addr` for `ttl` (None: the configured default). Returns whether the kernel enforces it.
    fn ban(&self, addr: IpAddr, ttl: Option<Duration>, reason: &str) -> bool;
}

/// The ban sink used when the XDP fast path is not running: it records the decision in the log.
pub struct LogOnlyBans;

impl BanSink for LogOnlyBans {
    fn ban(&self, addr: IpAddr, ttl: Option<Duration>, reason: &str) -> bool {
        tracing::warn!(%addr, ?ttl, reason, "ban requested but the XDP fast path is not running; not enforced in the kernel");
        false
    }
}

/// Everything shared across snapshots.
pub struct Services {
    pub metrics: Arc<Metrics>,
    pub bans: Arc<dyn BanSink>,
    /// State of filters that must survive reloads (token buckets), keyed by filter use key.
    pub filter_state: dashmap::DashMap<String, Arc<dyn std::any::Any + Send + Sync>>,
}

impl Services {
    pub fn new() -> Arc<Self> {
        Arc::new(Services {
            metrics: Arc::new(Metrics::new()),
            bans: Arc::new(LogOnlyBans),
            filter_state: dashmap::DashMap::new(),
        })
    }

    /// Get or create the shared state stored under `key` (typed; a type change replaces it).
    pub fn shared_state<T, F>(&self, key: &str, make: F) -> Arc<T>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        if let Some(existing) = self.filter_state.get(key) {
            if let Ok(t) = Arc::clone(existing.value()).downcast::<T>() {
                return t;
            }
        }
        let value = Arc::new(make());
        self.filter_state.insert(key.to_string(), value.clone());
        value
    }
}
