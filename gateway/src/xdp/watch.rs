//! Watches the deny files and calls back (coalesced) when one changes. Directories are watched
//! rather than files so that editors that replace a file by renaming are seen too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// Changes closer together than this are applied once.
const SETTLE: Duration = Duration::from_millis(200);

/// A live watcher; dropping it stops watching (the worker thread then ends).
pub struct DenyWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl DenyWatcher {
    /// Watch `files`; `on_change` runs on a background thread after each burst of changes.
    /// Returns None (after a warning) when there is nothing to watch or watching failed.
    pub fn spawn(files: &[PathBuf], on_change: impl Fn() + Send + 'static) -> Option<Self> {
        if files.is_empty() {
            return None;
        }
        let names: BTreeSet<PathBuf> = files.iter().map(|f| normalize(f)).collect();
        let dirs: BTreeSet<PathBuf> = names
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        let (tx, rx) = mpsc::channel::<()>();
        let mut watcher =
            match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    if event.paths.iter().any(|p| names.contains(&normalize(p))) {
                        let _ = tx.send(());
                    }
                }
            }) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch XDP deny files; edits need a reload");
                    return None;
                }
            };
        for dir in &dirs {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch XDP deny file directory");
            }
        }
        std::thread::Builder::new()
            .name("xdp-deny-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.recv_timeout(SETTLE).is_ok() {}
                    on_change();
                }
            })
            .ok()?;
        Some(DenyWatcher { _watcher: watcher })
    }
}

fn normalize(p: &Path) -> PathBuf {
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(name),
        _ => p.to_path_buf(),
    }
}
