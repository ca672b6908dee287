//! File config + xDS overlay → one validated config and snapshot, through the same checks and
//! builder as a file reload: the overlay is merged into the file model and the result goes through
//! `config::load_str` and `snapshot::build`, so whatever the file path rejects, xDS is rejected too.

use std::path::Path;
use std::sync::Arc;

use crate::config::{self, Config, Diagnostic, Diagnostics};
use crate::filter::FilterRegistry;
use crate::services::Services;
use crate::snapshot::{self, Snapshot};

use super::Overlay;

/// Label that problems found in merged config are reported under.
const LABEL: &str = "config file + xDS";

/// Load the file at `path`, add the overlay's listeners and clusters, validate and build.
///
/// # Errors
/// Every problem found, rendered as text (it is sent to the control plane in a NACK when xDS
/// caused it). A name that the file and xDS both define is a problem.
pub fn check(
    path: &Path,
    overlay: &Overlay,
    registry: &FilterRegistry,
    services: &Arc<Services>,
) -> Result<(Arc<Config>, Snapshot), String> {
    let label = path.display().to_string();
    let names = registry.names();
    let file = config::load(path, &names).map_err(|d| d.render(&label))?;
    let mut merged = file.file.clone();
    for l in &overlay.listeners {
        if merged.listeners.iter().any(|s| s.name == l.name) {
            return Err(format!(
                "xDS listener `{}` has the name of a listener in the config file",
                l.name
            ));
        }
        merged.listeners.push(l.clone());
    }
    for c in &overlay.clusters {
        if merged.clusters.iter().any(|s| s.name == c.name) {
            return Err(format!(
                "xDS cluster `{}` has the name of a cluster in the config file",
                c.name
            ));
        }
        merged.clusters.push(c.clone());
    }
    for p in &overlay.plugins {
        if merged.plugins.iter().any(|s| s.name == p.name) {
            return Err(format!(
                "xDS plugin `{}` has the name of a plugin in the config file",
                p.name
            ));
        }
        merged.plugins.push(p.clone());
    }
    let text = serde_yaml::to_string(&merged)
        .map_err(|e| format!("cannot render the merged config: {e}"))?;
    let mut cfg = config::load_str(&text, &file.base_dir, &names).map_err(|d| d.render(LABEL))?;
    cfg.path = file.path.clone();
    let cfg = Arc::new(cfg);
    let snap = snapshot::build(cfg.clone(), registry, services).map_err(|e| {
        let diags = Diagnostics(
            e.0.into_iter()
                .map(|b| Diagnostic::at(b.path, b.message))
                .collect(),
        );
        diags.locate_all(&cfg.source).render(LABEL)
    })?;
    Ok((cfg, snap))
}
