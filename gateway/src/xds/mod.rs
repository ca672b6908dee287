//! xDS: an ADS client that lets a control plane push listeners, routes, clusters and endpoints.
//!
//! Resources are mapped onto the file model ([`mapping`]), merged with the file's static parts and
//! applied through the same validation, snapshot build and swap as a file reload ([`merge`],
//! [`crate::reload::Reloader::apply_overlay`]). A resource that fails any of it is NACKed with
//! the reason and the last good config keeps serving. See docs/xds.md for the supported subset.

pub mod client;
pub mod code;
pub mod delta;
mod fields;
pub mod http_filters;
pub mod mapping;
pub mod merge;
pub mod resources;

use std::sync::Arc;

use crate::config::model::{ClusterConfig, ListenerConfig, PluginConfig, XdsConfig};
use crate::reload::Reloader;

/// Listeners and clusters that came from xDS, with what /config shows about them.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// Wasm plugins the listeners' chains use, their code a local file by now.
    pub plugins: Vec<PluginConfig>,
    /// Per resource type: the accepted version and resource names; and which listeners or
    /// clusters are still waiting for their RDS/EDS/CDS dependencies.
    pub status: serde_json::Value,
}

/// Start the ADS client (Delta when `xds.delta`, else state of the world) on `rt`. It runs until the process exits, reconnecting with jittered
/// backoff whenever the stream ends or fails.
pub fn start(cfg: &XdsConfig, reloader: Arc<Reloader>, rt: &tokio::runtime::Handle) {
    rt.spawn(client::run(cfg.clone(), reloader));
}
