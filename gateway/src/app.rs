//! The `run` and `check` commands: load, build, bind, serve, drain.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context as _;

use crate::admin::{self, AdminServer, AdminState};
use crate::config::{self, Config, Diagnostic, Diagnostics};
use crate::filter::FilterRegistry;
use crate::reload::{self, Reloader};
use crate::server::{self, Gateway};
use crate::services::Services;
use crate::snapshot;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::FinishSinkFactory;
use std::sync::atomic::Ordering;

/// Options of `sluice run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Do not watch the config and the files it references.
    pub no_watch: bool,
    /// Unix socket for graceful binary upgrades: take the listening sockets over from the
    /// process serving it (if any), then serve it for the next upgrade.
    pub handover: Option<std::path::PathBuf>,
}

/// How long a process that took over waits for the old one to release the admin address.
const ADMIN_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the gateway stops.
enum Stop {
    Signal,
    HandedOver,
}

/// Load and fully validate a config file: parse, check, and build a snapshot (without binding
/// anything). Returns every problem, rendered with its line and a fix, on failure.
///
/// # Errors
/// Every problem found, rendered for a terminal.
pub fn check(
    path: &Path,
    registry: &FilterRegistry,
    services: &Arc<Services>,
) -> Result<(Arc<Config>, snapshot::Snapshot), String> {
    let label = path.display().to_string();
    // The version covers the referenced files too: a plugin rebuilt in place is a new version.
    let cfg = config::load(path, &registry.names()).map_err(|d| d.render(&label))?;
    if let Some(problem) = debug_problem(&cfg) {
        return Err(Diagnostics(vec![problem])
            .locate_all(&cfg.source)
            .render(&label));
    }
    let cfg = Arc::new(cfg);
    let snap = snapshot::build(cfg.clone(), registry, services).map_err(|e| {
        let diags = Diagnostics(
            e.0.into_iter()
                .map(|b| Diagnostic::at(b.path, b.message))
                .collect(),
        );
        diags.locate_all(&cfg.source).render(&label)
    })?;
    Ok((cfg, snap))
}

/// `debug.config_version_header` must be a valid header name.
fn debug_problem(cfg: &Config) -> Option<Diagnostic> {
    let name = cfg.file.debug.as_ref()?.config_version_header.as_ref()?;
    if http::HeaderName::from_bytes(name.as_bytes()).is_ok() {
        return None;
    }
    Some(
        Diagnostic::at(
            "debug.config_version_header",
            format!("`{name}` is not a valid HTTP header name"),
        )
        .fix("use lowercase letters, digits and dashes, e.g. x-sluice-config-version"),
    )
}

/// Run the gateway until SIGTERM/SIGINT, then drain and return.
///
/// # Errors
/// A config that does not load, a listener that cannot bind, a runtime that cannot start.
pub fn run(path: &Path, opts: RunOptions) -> anyhow::Result<()> {
    // Before the workers start and their heaps grow (see `huge_pages`).
    crate::huge_pages::disable_for_process();
    let services = Services::new();
    let registry = FilterRegistry::builtin();
    let (cfg, snap) = match check(path, &registry, &services) {
        Ok(v) => v,
        Err(rendered) => {
            eprint!("{rendered}");
            anyhow::bail!("configuration rejected");
        }
    };
    let workers = cfg
        .file
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    snap.start(control.handle());
    let mut inherited = reload::handover::Sockets::new();
    let takeover = match &opts.handover {
        Some(p) => match reload::handover::receive(p)? {
            Some((socks, t)) => {
                tracing::info!(socket = %p.display(), listeners = socks.len(), "took over the listening sockets of the running process");
                inherited = socks;
                Some(t)
            }
            None => None,
        },
        None => None,
    };
    let (sockets, bound) = server::bind_all_inheriting(&snap, workers, &mut inherited)?;
    // Inherited listeners the new config does not have close here; the old process drains them.
    drop(inherited);
    let handover_sockets = Arc::new(reload::handover::SocketRegistry::default());
    for (name, sock) in sockets.iter().flatten() {
        handover_sockets.add(name, sock);
    }
    for (name, addr) in &bound {
        tracing::info!(listener = %name, address = %addr, workers, "listening");
    }
    let drain = server::drain_timeout(&snap);
    let admin_addr: std::net::SocketAddr = cfg.file.admin.address.parse().with_context(|| {
        format!(
            "admin.address `{}` is not an address",
            cfg.file.admin.address
        )
    })?;
    let version = cfg.version.clone();
    let gw = Gateway::new(snap, services.clone(), registry);
    if let Some(x) = &cfg.file.xdp {
        // `start` warns once and returns None when XDP cannot run, unless `required: true`.
        if let Some(fast) = crate::xdp::start(x, &cfg.base_dir).context("xdp")? {
            install_xdp(&services, &fast);
            gw.xdp.store(Some(fast));
        }
    }
    services.metrics.reload_succeeded(&version);
    services.metrics.add_collector(Arc::new(|out: &mut String| {
        out.push_str(&crate::wasm::render_prometheus())
    }));
    if let Some(al) = &cfg.file.telemetry.access_log {
        let log = AccessLog::open_with_metrics(al, &services.metrics)
            .with_context(|| format!("cannot open the access log `{}`", al.path))?;
        let _guard = control.enter();
        if let Err(e) = log.reopen_on_sigusr1() {
            tracing::warn!(error = %e, "cannot install the SIGUSR1 handler for access-log reopening");
        }
        gw.access_log.store(Some(log));
    }
    if let Some(t) = &cfg.file.telemetry.tracing {
        let tracer = crate::telemetry::otel::Tracer::new(t, gw.trace_stats.clone())
            .context("telemetry.tracing")?;
        gw.tracer.store(tracer);
    }
    let pusher = crate::telemetry::otel::MetricsPusher::start(
        &cfg.file.telemetry.metrics,
        services.metrics.clone(),
        crate::telemetry::otel::service_name(&cfg.file.telemetry),
    )
    .context("telemetry.metrics")?;
    gw.metrics_push.store(pusher.map(Arc::new));
    let stats = gw.trace_stats.clone();
    services
        .metrics
        .add_collector(Arc::new(move |out: &mut String| {
            crate::telemetry::otel::render_prometheus(&stats, out)
        }));
    let sink_gw = gw.clone();
    let sink: FinishSinkFactory = Arc::new(move || {
        let log = crate::worker::cached(&sink_gw, |g| &g.access_log);
        Rc::new(
            move |f: &crate::proxy::finish::Finish, e: &crate::filter::Exchange| {
                if let Some(log) = log.borrow_mut().load().as_ref() {
                    crate::telemetry::finish_log::write(log, f, e);
                }
            },
        )
    });
    let running = server::start_workers(&gw, sockets, sink)?;
    let reloader = Reloader::new(
        gw.clone(),
        path.to_path_buf(),
        workers,
        running.cmds.clone(),
        control.handle().clone(),
        bound,
        handover_sockets.clone(),
    );
    if let Some(x) = &cfg.file.xds {
        crate::xds::start(x, reloader.clone(), control.handle());
    }
    // Armed before the admin API answers: once /ready says yes, file changes are seen.
    if !opts.no_watch {
        reload::watch::spawn(reloader.clone()).context("cannot start the file watcher")?;
    }
    let handed_over = Arc::new(tokio::sync::Notify::new());
    if let Some(p) = &opts.handover {
        let notify = handed_over.clone();
        reload::handover::serve(p, handover_sockets, move || notify.notify_one())?;
    }
    if let Some(t) = takeover {
        // This process serves now; the old one stops accepting and drains.
        t.finish()?;
    }
    let admin_state = Arc::new(admin_state(&services, &reloader));
    let admin = start_admin(admin_addr, &admin_state, &gw, opts.handover.is_some())?;
    tracing::info!(address = %admin.local_addr(), "admin API listening");
    admin_state.ready.store(true, Ordering::SeqCst);
    let stop = control.block_on(wait_for_shutdown_signal(reloader.clone(), handed_over))?;
    admin_state.draining.store(true, Ordering::SeqCst);
    let admin = match stop {
        // The new process needs the admin address now, not after the drain.
        Stop::HandedOver => {
            let _ = admin.stop();
            None
        }
        Stop::Signal => Some(admin),
    };
    tracing::info!(?drain, "shutting down: draining connections");
    running.drain(&gw, drain);
    if let Some(log) = gw.access_log.load_full() {
        log.flush_and_close();
    }
    if let Some(admin) = admin {
        let _ = admin.stop();
    }
    if let Some(x) = gw.xdp.load_full() {
        x.shutdown();
    }
    Ok(())
}

/// Point L7 bans and /metrics at a running XDP fast path.
pub fn install_xdp(services: &Arc<Services>, fast: &Arc<crate::xdp::Xdp>) {
    services.ban_switch.set(Some(fast.clone()));
    let weak = Arc::downgrade(fast);
    services
        .metrics
        .add_collector(Arc::new(move |out: &mut String| {
            if let Some(x) = weak.upgrade() {
                out.push_str(&x.render_prometheus());
            }
        }));
}

/// The admin API's routes: the built-in ones plus `/xdp/bans`.
fn admin_router(gw: &Arc<Gateway>) -> admin::Router {
    let mut router = admin::default_router();
    for method in [http::Method::GET, http::Method::POST, http::Method::DELETE] {
        let gw = gw.clone();
        router = router.route("/xdp/bans", method, move |_state, req| {
            let gw = gw.clone();
            async move {
                let xdp = gw.xdp.load_full();
                let resp = crate::xdp::admin::handle_admin(xdp.as_ref(), req).await;
                to_admin_response(resp)
            }
        });
    }
    router
}

/// The XDP handlers answer with small, complete bodies: collect them without awaiting.
fn to_admin_response(resp: http::Response<crate::body::ProxyBody>) -> admin::AdminResponse {
    use futures_util::FutureExt as _;
    use http_body_util::BodyExt as _;
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    http::Response::from_parts(parts, http_body_util::Full::new(bytes))
}

fn admin_state(services: &Arc<Services>, reloader: &Arc<Reloader>) -> AdminState {
    let (r1, r2, r3) = (reloader.clone(), reloader.clone(), reloader.clone());
    AdminState::new(services.clone())
        .with_config_json(move || {
            let snap = r1.current();
            let status = r1.status();
            serde_json::json!({
                "version": snap.version(),
                "path": snap.config.path,
                "last_error": status.last_error,
                "reloads": status.reloads,
                "reload_failures": status.failures,
                "xds": status.xds,
                "listeners": r1.bound(),
                "config": snap.config.file,
            })
        })
        .with_plugins_json(move || {
            let snap = r3.current();
            let mut names: Vec<&String> = snap.plugins.keys().collect();
            names.sort();
            let list: Vec<serde_json::Value> =
                names.iter().map(|n| snap.plugins[*n].info_json()).collect();
            serde_json::json!({ "config_version": snap.version(), "plugins": list })
        })
        .with_reload(move || r2.reload().map_err(|e| e.to_string()))
}

/// Start the admin API. After a handover the old process releases the address as it starts
/// draining: retry for a while.
fn start_admin(
    addr: std::net::SocketAddr,
    state: &Arc<AdminState>,
    gw: &Arc<Gateway>,
    took_over: bool,
) -> anyhow::Result<AdminServer> {
    let deadline = std::time::Instant::now() + ADMIN_RELEASE_WAIT;
    loop {
        match AdminServer::start(addr, state.clone(), admin_router(gw)) {
            Ok(a) => return Ok(a),
            Err(e)
                if took_over
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("admin API: cannot listen on {addr}")),
        }
    }
}

/// Wait for SIGTERM or SIGINT, or for a new process to have taken the sockets over; SIGHUP
/// reloads the config in the meantime.
async fn wait_for_shutdown_signal(
    reloader: Arc<Reloader>,
    handed_over: Arc<tokio::sync::Notify>,
) -> anyhow::Result<Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(Stop::Signal),
            _ = int.recv() => return Ok(Stop::Signal),
            _ = handed_over.notified() => return Ok(Stop::HandedOver),
            _ = hup.recv() => {
                let r = reloader.clone();
                // Building a snapshot compiles plugins: keep it off the signal task.
                let _ = tokio::task::spawn_blocking(move || r.reload()).await;
            }
        }
    }
}
