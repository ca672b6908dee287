//! Plugin code for an overlay: every wasm plugin the chains use gets a local file before the
//! config is built. Remote code is fetched (or read from the digest-addressed cache), inline code
//! is stored in the same cache. A plugin whose code cannot be had rejects the update, unless it is
//! fail-open: then its filter is left out of the chains, with a warning and a `/config` note.

use crate::config::model::FailurePolicy;

use super::http_filters::Code;
use super::resources::Built;

/// Resolve the code of `built.plugins` into `built.overlay.plugins`.
///
/// # Errors
/// The first fail-closed plugin whose code could not be fetched, checked or stored.
pub async fn resolve(built: &mut Built) -> Result<(), String> {
    let mut plugins = Vec::new();
    let mut skipped = Vec::new();
    for mp in &built.plugins {
        let mut p = mp.plugin.clone();
        let got = match &mp.code {
            Code::File(f) => Ok(f.clone()),
            Code::Inline(bytes) => {
                let bytes = bytes.clone();
                match tokio::task::spawn_blocking(move || crate::plugin_fetch::store(&bytes)).await
                {
                    Ok(r) => r
                        .map(|path| path.display().to_string())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("storing inline code failed: {e}")),
                }
            }
            Code::Remote {
                url,
                sha256,
                timeout,
            } => {
                p.sha256 = Some(sha256.trim().to_ascii_lowercase());
                crate::plugin_fetch::fetch(url, sha256, *timeout)
                    .await
                    .map(|path| path.display().to_string())
                    .map_err(|e| e.to_string())
            }
        };
        match got {
            Ok(path) => {
                p.wasm = Some(path);
                plugins.push(p);
            }
            Err(e) if p.failure_policy == FailurePolicy::FailOpen => {
                tracing::warn!(plugin = %p.name, error = %e, "xDS wasm plugin code unavailable; the plugin is fail_open, so its filter is skipped");
                skipped.push(p.name.clone());
            }
            Err(e) => return Err(format!("wasm plugin {}: {e}", p.name)),
        }
    }
    for l in &mut built.overlay.listeners {
        l.filters
            .retain(|f| f.plugin.as_ref().is_none_or(|n| !skipped.contains(n)));
    }
    built.overlay.plugins = plugins;
    if let Some(o) = built.overlay.status.as_object_mut() {
        o.insert("skipped_plugins".into(), serde_json::json!(skipped));
    }
    Ok(())
}
