//! The running gateway: the current snapshot, the workers, signals and draining.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use tokio::sync::{mpsc, watch};

use crate::config::model::DEFAULT_DRAIN_TIMEOUT;
use crate::filter::FilterRegistry;
use crate::listener::{self, bind};
use crate::services::Services;
use crate::snapshot::Snapshot;
use crate::telemetry::access_log::AccessLog;
use crate::upstream::WorkerPools;
use crate::worker::{self, WorkerCtx};

/// State shared by every worker and the control thread.
pub struct Gateway {
    pub snapshot: ArcSwap<Snapshot>,
    pub services: Arc<Services>,
    pub registry: FilterRegistry,
    /// The access log in force (None: off). Swapped by reloads that change it.
    pub access_log: ArcSwapOption<AccessLog>,
    /// The XDP fast path, when it runs.
    pub xdp: ArcSwapOption<crate::xdp::Xdp>,
    /// The tracer in force (None: tracing off). Swapped by reloads that change it.
    pub tracer: ArcSwapOption<crate::telemetry::otel::Tracer>,
    /// Span export counters, kept across tracer swaps.
    pub trace_stats: Arc<crate::telemetry::otel::ExportStats>,
    /// The OTLP metrics pusher, when `telemetry.metrics.otlp_endpoint` is set.
    pub metrics_push: ArcSwapOption<crate::telemetry::otel::MetricsPusher>,
    conn_counters: DashMap<String, Arc<AtomicUsize>>,
    open_connections: AtomicUsize,
}

impl Gateway {
    pub fn new(snapshot: Snapshot, services: Arc<Services>, registry: FilterRegistry) -> Arc<Self> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            services,
            registry,
            access_log: ArcSwapOption::empty(),
            xdp: ArcSwapOption::empty(),
            tracer: ArcSwapOption::empty(),
            trace_stats: Arc::default(),
            metrics_push: ArcSwapOption::empty(),
            conn_counters: DashMap::new(),
            open_connections: AtomicUsize::new(0),
        })
    }

    /// Connections open on `listener` across all workers (for max_connections).
    pub fn connection_counter(&self, listener: &str) -> Arc<AtomicUsize> {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.conn_counters.get(listener) {
            return c.clone();
        }
        self.conn_counters
            .entry(listener.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now, all listeners.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

/// Sockets bound for one worker: (listener name, socket).
pub type WorkerSockets = Vec<(Arc<str>, std::net::TcpListener)>;

/// Bind every listener of `snap` for `workers` workers. Fails on the first bind error.
///
/// # Errors
/// The listener name, address and OS error.
pub fn bind_all(
    snap: &Snapshot,
    workers: usize,
) -> anyhow::Result<(Vec<WorkerSockets>, HashMap<String, SocketAddr>)> {
    bind_all_inheriting(snap, workers, &mut HashMap::new())
}

/// [`bind_all`], taking a listener's sockets from `inherited` (a handover from the previous
/// process) when it has the same name and address. Inherited sockets are spread over the
/// workers (a worker may get several); workers left without one bind their own into the same
/// SO_REUSEPORT group. What is taken is removed from `inherited`.
///
/// # Errors
/// The listener name, address and OS error.
pub fn bind_all_inheriting(
    snap: &Snapshot,
    workers: usize,
    inherited: &mut crate::reload::handover::Sockets,
) -> anyhow::Result<(Vec<WorkerSockets>, HashMap<String, SocketAddr>)> {
    let workers = workers.max(1);
    let mut per_worker: Vec<WorkerSockets> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = HashMap::new();
    let mut names: Vec<&String> = snap.listeners.keys().collect();
    names.sort();
    for name in names {
        let l = &snap.listeners[name];
        let mut socks = take_inherited(inherited, name, l.address);
        if socks.len() < workers {
            let at = match socks.first() {
                Some(s) => s.local_addr()?,
                None => l.address,
            };
            let more = bind::bind_reuseport(at, workers - socks.len()).map_err(|e| {
                anyhow::anyhow!("listener `{name}`: cannot listen on {}: {e}", l.address)
            })?;
            socks.extend(more);
        }
        if let Some(first) = socks.first() {
            bound.insert(name.clone(), first.local_addr()?);
        }
        for (i, s) in socks.into_iter().enumerate() {
            per_worker[i % workers].push((l.name.clone(), s));
        }
    }
    Ok((per_worker, bound))
}

/// The inherited sockets of listener `name` if they are bound where it is configured.
fn take_inherited(
    inherited: &mut crate::reload::handover::Sockets,
    name: &str,
    configured: SocketAddr,
) -> Vec<std::net::TcpListener> {
    let Some(socks) = inherited.remove(name) else {
        return Vec::new();
    };
    let at = socks.first().and_then(|s| s.local_addr().ok());
    match at {
        Some(a) if a == configured || (configured.port() == 0 && a.ip() == configured.ip()) => {
            socks
        }
        _ => Vec::new(),
    }
}

/// What the control thread asks of a worker.
pub enum WorkerCmd {
    /// Start accepting on this socket for listener `name` (added or re-bound by a reload).
    Listen(Arc<str>, std::net::TcpListener),
    /// Stop accepting for listener `name`; its open connections drain.
    Close(Arc<str>),
}

/// Handle to the running workers.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    pub cmds: Vec<mpsc::UnboundedSender<WorkerCmd>>,
}

/// Start `sockets.len()` worker threads.
///
/// # Errors
/// A thread could not be created.
pub fn start_workers(
    gw: &Arc<Gateway>,
    sockets: Vec<WorkerSockets>,
    finish_sink: crate::telemetry::FinishSinkFactory,
) -> anyhow::Result<Workers> {
    let (tx, rx) = watch::channel(false);
    let mut threads = Vec::new();
    let mut cmds = Vec::new();
    for (index, socks) in sockets.into_iter().enumerate() {
        let gw = gw.clone();
        let rx = rx.clone();
        let sink = finish_sink.clone();
        let (ctx, crx) = mpsc::unbounded_channel();
        cmds.push(ctx);
        let t = std::thread::Builder::new()
            .name(format!("sluice-worker-{index}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "cannot start worker runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, run_worker(index, gw, socks, rx, crx, sink));
            })?;
        threads.push(t);
    }
    Ok(Workers {
        threads,
        shutdown: tx,
        cmds,
    })
}

async fn run_worker(
    index: usize,
    gw: Arc<Gateway>,
    socks: WorkerSockets,
    mut shutdown: watch::Receiver<bool>,
    mut cmds: mpsc::UnboundedReceiver<WorkerCmd>,
    sink: crate::telemetry::FinishSinkFactory,
) {
    crate::telemetry::metrics::bind_worker(index);
    let w = Rc::new(WorkerCtx::new(
        index,
        gw.clone(),
        WorkerPools::new(),
        sink(),
    ));
    worker::set_current(w.clone());
    // Hands this worker's partial span buffer to the exporter when traffic pauses.
    tokio::task::spawn_local(crate::telemetry::otel::export::flush_loop());
    // A worker may accept on several sockets of one listener (inherited from a process that
    // had more workers); all of them stop together.
    let mut stops: HashMap<Arc<str>, Vec<watch::Sender<bool>>> = HashMap::new();
    let listen = |stops: &mut HashMap<Arc<str>, Vec<watch::Sender<bool>>>,
                  name: Arc<str>,
                  sock: std::net::TcpListener| {
        match tokio::net::TcpListener::from_std(sock) {
            Ok(l) => {
                let (stx, srx) = watch::channel(false);
                stops.entry(name.clone()).or_default().push(stx);
                tokio::task::spawn_local(listener::accept_loop(w.clone(), name, l, srx));
            }
            Err(e) => {
                tracing::error!(worker = index, listener = %name, error = %e, "cannot register listener")
            }
        }
    };
    for (name, sock) in socks {
        listen(&mut stops, name, sock);
    }
    let stop_all = |stops: &mut HashMap<Arc<str>, Vec<watch::Sender<bool>>>, name: &Arc<str>| {
        for stop in stops.remove(name).unwrap_or_default() {
            let _ = stop.send(true);
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            cmd = cmds.recv() => match cmd {
                // A reload re-bound the listener: the new socket replaces the old ones.
                Some(WorkerCmd::Listen(name, sock)) => {
                    stop_all(&mut stops, &name);
                    listen(&mut stops, name, sock);
                }
                Some(WorkerCmd::Close(name)) => stop_all(&mut stops, &name),
                None => break,
            }
        }
    }
    for (_, list) in stops.drain() {
        for stop in list {
            let _ = stop.send(true);
        }
    }
    // Connections drain in their own tasks; the control thread decides when the drain is over.
    std::future::pending::<()>().await;
}

impl Workers {
    /// Stop accepting, ask every connection to finish, and wait up to `drain` for them.
    pub fn drain(self, gw: &Gateway, drain: Duration) {
        let _ = self.shutdown.send(true);
        let deadline = Instant::now() + drain;
        while gw.open_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = gw.open_connections();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain timeout reached; closing the remaining connections"
            );
        } else {
            tracing::info!("drained");
        }
        // Worker threads park once drained; the process exits when main returns.
        drop(self.threads);
    }
}

/// The configured drain timeout.
pub fn drain_timeout(snap: &Snapshot) -> Duration {
    snap.config
        .file
        .drain_timeout
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT)
        .get()
}
