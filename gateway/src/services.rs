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

/// The ban sink L7 uses: it forwards to the XDP fast path once that runs, and only logs before.
#[derive(Default)]
pub struct BanSwitch {
    target: std::sync::RwLock<Option<Arc<dyn BanSink>>>,
}

impl BanSwitch {
    /// Send bans to `sink` from now on (None: back to log-only).
    pub fn set(&self, sink: Option<Arc<dyn BanSink>>) {
        let mut t = match self.target.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *t = sink;
    }
}

impl BanSink for BanSwitch {
    fn ban(&self, addr: IpAddr, ttl: Option<Duration>, reason: &str) -> bool {
        let target = match self.target.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        match target {
            Some(t) => t.ban(addr, ttl, reason),
            None => LogOnlyBans.ban(addr, ttl, reason),
        }
    }
}

/// Everything shared across snapshots.
pub struct Services {
    pub metrics: Arc<Metrics>,
    pub bans: Arc<dyn BanSink>,
    /// Where `bans` forwards to; `app` points it at the XDP fast path when that starts.
    pub ban_switch: Arc<BanSwitch>,
    /// State of filters that must survive reloads (token buckets), keyed by filter use key.
    pub filter_state: dashmap::DashMap<String, Arc<dyn std::any::Any + Send + Sync>>,
}

impl Services {
    pub fn new() -> Arc<Self> {
        let ban_switch = Arc::new(BanSwitch::default());
        Arc::new(Services {
            metrics: Arc::new(Metrics::new()),
            bans: ban_switch.clone(),
            ban_switch,
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
