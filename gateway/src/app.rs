//! The `run` and `check` commands: load, build, bind, serve, drain.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{self, Config};
use crate::filter::FilterRegistry;
use crate::server::{self, Gateway};
use crate::services::Services;
use crate::snapshot;
use crate::telemetry::FinishSinkFactory;

/// Options of `sluice run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Do not watch the config and the files it references.
    pub no_watch: bool,
}

/// Load and fully validate a config file: parse, check, and build a snapshot (without binding
/// anything). Returns the rendered problems on failure.
///
/// # Errors
/// Every problem found, rendered for a terminal.
pub fn check(
    path: &Path,
    registry: &FilterRegistry,
    services: &Arc<Services>,
) -> Result<(Arc<Config>, snapshot::Snapshot), String> {
    let cfg = Arc::new(load(path)?);
    let snap = snapshot::build(cfg.clone(), registry, services).map_err(|e| {
        let mut out = String::new();
        for err in &e.0 {
            out.push_str(&format!(
                "error: {}\n  --> {} ({})\n",
                err.message,
                path.display(),
                err.path
            ));
        }
        out.push_str(&format!(
            "{} problem(s) found in {}\n",
            e.0.len(),
            path.display()
        ));
        out
    })?;
    Ok((cfg, snap))
}

fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("error: cannot read {}: {e}\n", path.display()))?;
    let file: config::model::FileConfig =
        serde_yaml::from_str(&text).map_err(|e| format!("error: {e}\n"))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Config {
        file,
        path: Some(path.to_path_buf()),
        base_dir,
        version: String::new(),
        source: Arc::new(()),
    })
}

/// Run the gateway until SIGTERM/SIGINT, then drain and return.
///
/// # Errors
/// A config that does not load, a listener that cannot bind, a runtime that cannot start.
pub fn run(path: &Path, _opts: RunOptions) -> anyhow::Result<()> {
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
    let (sockets, bound) = server::bind_all(&snap, workers)?;
    for (name, addr) in &bound {
        tracing::info!(listener = %name, address = %addr, workers, "listening");
    }
    let drain = server::drain_timeout(&snap);
    let gw = Gateway::new(snap, services, registry);
    let sink: FinishSinkFactory =
        Arc::new(|| Rc::new(|_f: &crate::proxy::finish::Finish, _e: &crate::filter::Exchange| {}));
    let running = server::start_workers(&gw, sockets, sink)?;
    control.block_on(wait_for_shutdown_signal())?;
    tracing::info!(?drain, "shutting down: draining connections");
    running.drain(&gw, drain);
    Ok(())
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
