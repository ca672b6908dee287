//! Watching the config file and every file it references (plugins, certificates, deny lists) with
//! `notify`. Directories are watched rather than files, so that editors' atomic renames and
//! Kubernetes' symlink swaps (`..data` → new timestamped directory) are seen. Bursts are
//! debounced into one reload: briefly after a change known to be complete (a rename, a close
//! after writing), longer while a file may still be being written.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::Reloader;
use crate::config::Config;

/// Quiet period before reloading after a change that may still be in progress (data written,
/// file created, no close seen yet): long enough for a writer to finish or close the file.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Quiet period after a change known to be complete (a rename — atomic replace, Kubernetes'
/// `..data` swap — or a writer closing the file): only to gather the rest of the burst.
pub const SETTLE: Duration = Duration::from_millis(2);

/// After a rejected reload, how long the files must stay still before the rejection is reported.
/// A change made of several renames (a key, then its certificate) is inconsistent between them;
/// the next event of the same change retries instead.
pub const REJECT_GRACE: Duration = Duration::from_millis(250);

/// Whether `kind` leaves the file complete: renames are atomic, a close ends a write. (A removal
/// is often followed by a new copy: it waits the longer period.)
fn completes_a_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    matches!(
        kind,
        notify::EventKind::Modify(ModifyKind::Name(_))
            | notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Every file the config references, resolved against its directory, plus the config itself.
pub fn referenced_files(cfg: &Config) -> Vec<PathBuf> {
    let mut out = cfg.referenced_files();
    if let Some(p) = &cfg.path {
        out.push(p.clone());
    }
    out
}

/// Watch the files of the config in force; reload on change. Runs until the process ends.
/// The set of watched directories is refreshed after each reload. The first set is watched
/// before this returns, so a change made once it returned is seen.
///
/// # Errors
/// The OS watcher cannot start, or the thread cannot be created.
pub fn spawn(reloader: Arc<Reloader>) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Each relevant event, and whether it completes a change.
    let (tx, rx) = std::sync::mpsc::channel::<bool>();
    // The files that matter; other files in the same directories (logs...) are ignored.
    let interesting: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
    let filter = interesting.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let complete = completes_a_change(&ev.kind);
        if matches!(ev.kind, notify::EventKind::Access(_)) && !complete {
            return;
        }
        let set = match filter.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let relevant = ev.paths.iter().any(|p| {
            set.contains(p)
                // Kubernetes swaps the `..data` symlink (and writes `..<timestamp>` dirs).
                || p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".."))
        });
        if relevant {
            let _ = tx.send(complete);
        }
    })
    .map_err(std::io::Error::other)?;
    let mut watched = BTreeSet::new();
    refresh(&reloader, &mut watcher, &interesting, &mut watched);
    std::thread::Builder::new()
        .name("sluice-watch".into())
        .spawn(move || loop {
            // Wait for a change, then for quiet: short once the last event completed the
            // change, longer while a write may still be going on.
            let Ok(mut complete) = rx.recv() else {
                return;
            };
            loop {
                loop {
                    let quiet = if complete { SETTLE } else { DEBOUNCE };
                    match rx.recv_timeout(quiet) {
                        Ok(c) => complete = c,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                if reloader.reload_unreported().is_ok() {
                    break;
                }
                // Rejected: report it only if nothing else changes for a moment.
                match rx.recv_timeout(REJECT_GRACE) {
                    Ok(c) => complete = c,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let _ = reloader.reload();
                        break;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            refresh(&reloader, &mut watcher, &interesting, &mut watched);
        })
}

/// Watch the directories of the files of the config in force, and only those.
fn refresh(
    reloader: &Reloader,
    watcher: &mut notify::RecommendedWatcher,
    interesting: &Mutex<HashSet<PathBuf>>,
    watched: &mut BTreeSet<PathBuf>,
) {
    let files = referenced_files(&reloader.current().config);
    {
        let mut set = match interesting.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        set.clear();
        for f in &files {
            set.insert(absolute(f));
            if let Ok(c) = std::fs::canonicalize(f) {
                set.insert(c);
            }
        }
    }
    let wanted = dirs_of(&files);
    for d in watched.difference(&wanted) {
        let _ = watcher.unwatch(d);
    }
    for d in wanted.difference(watched) {
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory");
        }
    }
    *watched = wanted;
}

/// Directories to watch for `files`: each file's directory, and for a symlink also the
/// directory of its target (Kubernetes swaps `..data` in the parent).
fn dirs_of(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        if let Some(d) = f.parent() {
            out.insert(normalize(d));
        }
        if let Ok(target) = std::fs::canonicalize(f) {
            if let Some(d) = target.parent() {
                out.insert(d.to_path_buf());
            }
        }
    }
    out.retain(|d| d.is_dir());
    out
}

fn normalize(d: &Path) -> PathBuf {
    if d.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        d.to_path_buf()
    }
}

/// `p` made absolute against the current directory (notify reports absolute paths).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
