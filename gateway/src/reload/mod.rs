//! Reloads: build a whole new snapshot off the request path and swap it in atomically, opening and
//! closing listeners that the new config adds, removes or moves. A reload that fails any check
//! changes nothing; the error is logged once, counted and shown at /config.

pub mod handover;
pub mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::listener::bind;
use crate::server::{Gateway, WorkerCmd};
use crate::snapshot::Snapshot;
use crate::telemetry::access_log::AccessLog;

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(String),
    #[error("listener `{name}`: cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What /config shows about reloads.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub version: String,
    pub last_error: Option<String>,
    pub reloads: u64,
    pub failures: u64,
    /// The xDS resources in force (types, versions, names), when xDS is configured.
    pub xds: Option<serde_json::Value>,
}

pub struct Reloader {
    gw: Arc<Gateway>,
    path: PathBuf,
    workers: usize,
    cmds: Vec<UnboundedSender<WorkerCmd>>,
    rt: tokio::runtime::Handle,
    /// Duplicates of the listening sockets, for a handover to a new process.
    sockets: Arc<handover::SocketRegistry>,
    state: Mutex<State>,
}

struct State {
    status: ReloadStatus,
    /// Address each listener is bound to now.
    bound: HashMap<String, SocketAddr>,
    /// Listeners and clusters from xDS, merged into the file's on every reload.
    overlay: Option<Arc<crate::xds::Overlay>>,
}

impl Reloader {
    pub fn new(
        gw: Arc<Gateway>,
        path: PathBuf,
        workers: usize,
        cmds: Vec<UnboundedSender<WorkerCmd>>,
        rt: tokio::runtime::Handle,
        bound: HashMap<String, SocketAddr>,
        sockets: Arc<handover::SocketRegistry>,
    ) -> Arc<Self> {
        let version = gw.snapshot.load().version().to_string();
        Arc::new(Reloader {
            gw,
            path,
            workers,
            cmds,
            rt,
            sockets,
            state: Mutex::new(State {
                status: ReloadStatus {
                    version,
                    ..Default::default()
                },
                bound,
                overlay: None,
            }),
        })
    }

    pub fn status(&self) -> ReloadStatus {
        self.state
            .lock()
            .map(|s| s.status.clone())
            .unwrap_or_default()
    }

    /// Reload from the config file. Returns the new version.
    ///
    /// # Errors
    /// Why the new config was rejected; the old one keeps serving.
    pub fn reload(&self) -> Result<String, ReloadError> {
        self.reload_with(None, true)
    }

    /// As [`Reloader::reload`], but a rejection is only logged at debug level: not counted, not
    /// shown in /config. For the file watcher, which retries when the same change goes on (a
    /// key renamed a moment before its certificate) and reports with [`Reloader::reload`] once
    /// the files stay still.
    ///
    /// # Errors
    /// Why the new config was rejected; the old one keeps serving.
    pub fn reload_unreported(&self) -> Result<String, ReloadError> {
        self.reload_with(None, false)
    }

    /// Put new xDS resources in force (merged with the file) and reload. On failure the previous
    /// overlay stays in force, for this and later file reloads.
    ///
    /// # Errors
    /// Why the merged config was rejected; the old one keeps serving.
    pub fn apply_overlay(&self, overlay: Arc<crate::xds::Overlay>) -> Result<String, ReloadError> {
        self.reload_with(Some(overlay), true)
    }

    fn reload_with(
        &self,
        overlay: Option<Arc<crate::xds::Overlay>>,
        report_failure: bool,
    ) -> Result<String, ReloadError> {
        let started = Instant::now();
        // One reload at a time; a poisoned lock only means an earlier reload panicked.
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let previous = st.overlay.clone();
        if let Some(o) = &overlay {
            st.overlay = Some(o.clone());
        }
        let result = self.reload_locked(&mut st);
        if result.is_err() {
            st.overlay = previous;
        }
        match &result {
            Ok(version) => {
                st.status.xds = st.overlay.as_ref().map(|o| o.status.clone());
                st.status.version = version.clone();
                st.status.last_error = None;
                st.status.reloads += 1;
                self.gw.services.metrics.reload_succeeded(version);
                tracing::info!(version = %version, elapsed = ?started.elapsed(), "configuration reloaded");
            }
            Err(e) if !report_failure => {
                tracing::debug!(error = %e, "configuration rejected while its files are changing; waiting for the change to finish");
            }
            Err(e) => {
                st.status.last_error = Some(e.to_string());
                st.status.failures += 1;
                self.gw.services.metrics.reload_failed();
                tracing::error!(error = %e, "configuration reload rejected; the previous configuration keeps serving");
            }
        }
        result
    }

    fn reload_locked(&self, st: &mut State) -> Result<String, ReloadError> {
        let (_cfg, snap) = match &st.overlay {
            None => crate::app::check(&self.path, &self.gw.registry, &self.gw.services),
            Some(o) => {
                crate::xds::merge::check(&self.path, o, &self.gw.registry, &self.gw.services)
            }
        }
        .map_err(ReloadError::Config)?;
        let old = self.gw.snapshot.load_full();
        // The version covers referenced files (see `version`): equal means nothing changed.
        if old.version() == snap.version() && !old.version().is_empty() {
            return Ok(snap.version().to_string());
        }
        // Bind what is new or moved before anything changes, so a bind error rejects the reload.
        let mut to_bind = Vec::new();
        for (name, l) in &snap.listeners {
            let moved = match st.bound.get(name) {
                Some(addr) => !same_address(*addr, l.address),
                None => true,
            };
            if moved {
                let socks = bind::bind_reuseport(l.address, self.workers).map_err(|source| {
                    ReloadError::Bind {
                        name: name.clone(),
                        addr: l.address,
                        source,
                    }
                })?;
                to_bind.push((l.name.clone(), socks));
            }
        }
        let removed: Vec<String> = st
            .bound
            .keys()
            .filter(|n| !snap.listeners.contains_key(*n))
            .cloned()
            .collect();
        let new_log = &snap.config.file.telemetry.access_log;
        let log_changed = serde_json::to_value(new_log).ok()
            != serde_json::to_value(&old.config.file.telemetry.access_log).ok();
        let access_log = match (log_changed, new_log) {
            (false, _) => None,
            (true, None) => Some(None),
            (true, Some(cfg)) => Some(Some(
                AccessLog::open_with_metrics(cfg, &self.gw.services.metrics).map_err(|e| {
                    ReloadError::Config(format!("cannot open the access log `{}`: {e}", cfg.path))
                })?,
            )),
        };
        let new_tracing = &snap.config.file.telemetry.tracing;
        let tracer = if serde_json::to_value(new_tracing).ok()
            != serde_json::to_value(&old.config.file.telemetry.tracing).ok()
        {
            let t = match new_tracing {
                Some(t) => crate::telemetry::otel::Tracer::new(t, self.gw.trace_stats.clone())
                    .map_err(|e| ReloadError::Config(format!("telemetry.tracing: {e}")))?,
                None => None,
            };
            Some(t)
        } else {
            None
        };
        let new_metrics = &snap.config.file.telemetry.metrics;
        let pusher = if serde_json::to_value(new_metrics).ok()
            != serde_json::to_value(&old.config.file.telemetry.metrics).ok()
        {
            let service = crate::telemetry::otel::service_name(&snap.config.file.telemetry);
            let p = crate::telemetry::otel::MetricsPusher::start(
                new_metrics,
                self.gw.services.metrics.clone(),
                service,
            )
            .map_err(|e| ReloadError::Config(format!("telemetry.metrics: {e}")))?;
            Some(p)
        } else {
            None
        };
        snap.start(&self.rt);
        if let Some(p) = pusher {
            self.gw.metrics_push.store(p.map(Arc::new));
        }
        if let Some(t) = tracer {
            self.gw.tracer.store(t);
        }
        let version = snap.version().to_string();
        // Deny lists are files: a changed list with an unchanged `xdp:` section is also a change,
        // so any reload of a config that has (or had) `xdp:` re-applies the whole rule set.
        let xdp_involved = snap.config.file.xdp.is_some() || old.config.file.xdp.is_some();
        if let Some(log) = access_log {
            if let Some(old_log) = self.gw.access_log.swap(log) {
                old_log.flush();
            }
        }
        self.gw.snapshot.store(Arc::new(snap));
        // The old snapshot (and through it the old plugins) goes when its last request ends.
        drop(old);
        if xdp_involved {
            self.apply_xdp();
        }
        for (name, socks) in to_bind {
            if let Some(first) = socks.first() {
                if let Ok(a) = first.local_addr() {
                    st.bound.insert(name.to_string(), a);
                    tracing::info!(listener = %name, address = %a, "listening");
                }
            }
            self.sockets.set(&name, &socks);
            for (sock, tx) in socks.into_iter().zip(&self.cmds) {
                let _ = tx.send(WorkerCmd::Listen(name.clone(), sock));
            }
        }
        for name in removed {
            st.bound.remove(&name);
            self.sockets.remove(&name);
            tracing::info!(listener = %name, "listener removed; its connections drain");
            let name: Arc<str> = name.into();
            for tx in &self.cmds {
                let _ = tx.send(WorkerCmd::Close(name.clone()));
            }
        }
        Ok(version)
    }

    /// Bring the XDP fast path in line with the snapshot in force (start, reconfigure, stop).
    fn apply_xdp(&self) {
        let snap = self.gw.snapshot.load_full();
        let cfg = &snap.config;
        match (self.gw.xdp.load_full(), &cfg.file.xdp) {
            (Some(fast), Some(x)) => {
                if fast.interface().is_some_and(|i| i != x.interface) {
                    tracing::warn!(old = ?fast.interface(), new = %x.interface, "xdp.interface changed: restart Sluice to move the program");
                }
                if let Err(e) = fast.apply_config(x, &cfg.base_dir) {
                    tracing::error!(error = %e, "XDP rules could not be applied; the previous rules stay");
                }
            }
            (Some(fast), None) => {
                fast.shutdown();
                self.gw.xdp.store(None);
                self.gw.services.ban_switch.set(None);
                tracing::info!("XDP fast path removed by reload");
            }
            (None, Some(x)) => match crate::xdp::start(x, &cfg.base_dir) {
                Ok(Some(fast)) => {
                    crate::app::install_xdp(&self.gw.services, &fast);
                    self.gw.xdp.store(Some(fast));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "XDP fast path could not start"),
            },
            (None, None) => {}
        }
    }

    /// Where each listener is bound now.
    pub fn bound(&self) -> HashMap<String, SocketAddr> {
        self.state
            .lock()
            .map(|s| s.bound.clone())
            .unwrap_or_default()
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Snapshot> {
        self.gw.snapshot.load_full()
    }
}

/// A listener configured on port 0 stays where it was bound.
fn same_address(bound: SocketAddr, configured: SocketAddr) -> bool {
    bound == configured || (configured.port() == 0 && bound.ip() == configured.ip())
}
