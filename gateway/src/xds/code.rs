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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::config::model::{FilterRef, ListenerConfig, PluginConfig};
    use crate::xds::http_filters::MappedPlugin;
    use crate::xds::Overlay;

    fn built(policy: FailurePolicy) -> Built {
        // Nothing listens on port 1 of loopback: the fetch fails at once.
        let plugin = PluginConfig {
            name: "ecds/p".into(),
            wasm: None,
            url: None,
            sha256: None,
            root_id: String::new(),
            vm_config: None,
            config: None,
            failure_policy: policy,
            limits: Default::default(),
            allowed_env: Vec::new(),
        };
        let refs = |plugin: Option<&str>, name: Option<&str>| FilterRef {
            name: name.map(str::to_string),
            plugin: plugin.map(str::to_string),
            config: None,
        };
        Built {
            overlay: Overlay {
                listeners: vec![ListenerConfig {
                    name: "l".into(),
                    address: "127.0.0.1:0".into(),
                    protocols: Vec::new(),
                    tls: None,
                    limits: Default::default(),
                    filters: vec![refs(None, Some("request-id")), refs(Some("ecds/p"), None)],
                    routes: Vec::new(),
                }],
                clusters: Vec::new(),
                plugins: Vec::new(),
                status: serde_json::json!({}),
            },
            rds: BTreeSet::new(),
            eds: BTreeSet::new(),
            ecds: BTreeSet::new(),
            plugins: vec![MappedPlugin {
                plugin,
                code: Code::Remote {
                    url: "http://127.0.0.1:1/p.wasm".into(),
                    sha256: "ab".repeat(32),
                    timeout: Duration::from_secs(5),
                },
            }],
        }
    }

    #[tokio::test]
    async fn unfetchable_code_rejects_a_fail_closed_plugin() {
        let mut b = built(FailurePolicy::FailClosed);
        let e = resolve(&mut b).await.expect_err("fetch fails");
        assert!(e.contains("ecds/p") && e.contains("127.0.0.1:1"), "{e}");
    }

    #[tokio::test]
    async fn unfetchable_code_skips_a_fail_open_plugin_and_its_chain_entry() {
        let mut b = built(FailurePolicy::FailOpen);
        resolve(&mut b).await.expect("skipped, not rejected");
        assert!(b.overlay.plugins.is_empty());
        let chain = &b.overlay.listeners[0].filters;
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].name.as_deref(), Some("request-id"));
        assert_eq!(b.overlay.status["skipped_plugins"][0], "ecds/p");
    }
}
