//! proxy-wasm plugins in the gateway: building a plugin from its config (compile through the
//! module cache, check it on a throwaway VM) and using it as an [`HttpFilter`] whose streams are
//! contexts in one VM per worker. The host itself is the `sluice-wasm` crate.

mod callout;
mod filter;
mod foreign;
mod stream;
mod worker_vm;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_wasm::{ForeignFunctions, Limits, PluginInfo, PluginModule, Vm, VmEnv};

pub use filter::WasmFilter;

use crate::config::model::{FailurePolicy, PluginConfig};
use crate::filter::{resolve_path, HttpFilter};
use crate::services::Services;

/// A built plugin: compiled, linked and checked. Shared by every worker; each worker creates its
/// own VM on first use.
pub struct Plugin {
    id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) module: Arc<PluginModule>,
    pub(crate) policy: FailurePolicy,
    config: Bytes,
    pub(crate) foreign: Arc<dyn ForeignFunctions>,
    /// Phase times and VM gauges on /metrics.
    pub(crate) figures: Arc<crate::telemetry::metrics::PluginFigures>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Plugins built and not yet dropped (all snapshots, checks included): a leak shows here.
static LIVE_PLUGINS: AtomicU64 = AtomicU64::new(0);

impl Drop for Plugin {
    fn drop(&mut self) {
        LIVE_PLUGINS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Configuration bytes as the plugin sees them: a string as is, anything else as JSON.
fn config_bytes(v: Option<&serde_json::Value>) -> Bytes {
    match v {
        None | Some(serde_json::Value::Null) => Bytes::new(),
        Some(serde_json::Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    }
}

/// Load, compile (through the sha256 module cache) and check the plugin of `cfg`: the check runs
/// `_start`/`_initialize`, `on_vm_start` and `on_configure` on a throwaway VM, so a plugin that
/// traps or rejects its configuration fails the config load.
///
/// # Errors
/// A message naming the plugin and saying what is wrong (file, module, ABI, start, config).
pub fn build_plugin(
    cfg: &PluginConfig,
    base_dir: &Path,
    services: &Arc<Services>,
) -> Result<Arc<Plugin>, String> {
    let Some(wasm) = &cfg.wasm else {
        return Err(format!(
            "plugin {}: `url:` plugins are fetched by the loader; give `wasm:` (a file) or pass the bytes to build_plugin_bytes",
            cfg.name
        ));
    };
    let path = resolve_path(base_dir, wasm);
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("plugin {}: cannot read {}: {e}", cfg.name, path.display()))?;
    build_plugin_bytes(cfg, &bytes, services)
}

/// [`build_plugin`] for code already in memory (remote `url:` plugins, xDS).
///
/// # Errors
/// As [`build_plugin`]; also a sha256 mismatch when `cfg.sha256` is set.
pub fn build_plugin_bytes(
    cfg: &PluginConfig,
    wasm: &[u8],
    services: &Arc<Services>,
) -> Result<Arc<Plugin>, String> {
    let name = &cfg.name;
    if let Some(want) = &cfg.sha256 {
        let got = sluice_wasm::cache::sha256_hex(wasm);
        if !got.eq_ignore_ascii_case(want.trim()) {
            return Err(format!(
                "plugin {name}: sha256 mismatch: the code has {got}, the config says {want}"
            ));
        }
    }
    let env = cfg
        .allowed_env
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let limits = Limits {
        memory: cfg.limits.memory.bytes() as usize,
        callback_timeout: cfg.limits.callback_timeout.get(),
        fuel: cfg.limits.fuel,
        max_buffered_body: cfg
            .limits
            .max_buffered_body
            .map_or(sluice_wasm::limits::DEFAULT_MAX_BUFFERED_BODY, |s| {
                s.bytes() as usize
            }),
        pause_timeout: cfg
            .limits
            .pause_timeout
            .map_or(sluice_wasm::limits::DEFAULT_PAUSE_TIMEOUT, |d| d.get()),
    };
    let info = PluginInfo {
        name: name.as_str().into(),
        root_id: cfg.root_id.clone(),
        vm_id: String::new(),
        vm_config: config_bytes(cfg.vm_config.as_ref()),
        env,
        node_id: String::new(),
        node_cluster: String::new(),
        limits,
    };
    let module = PluginModule::new(info, wasm).map_err(|e| format!("plugin {name}: {e}"))?;
    let config = config_bytes(cfg.config.as_ref());
    check(&module, &config)?;
    LIVE_PLUGINS.fetch_add(1, Ordering::Relaxed);
    Ok(Arc::new(Plugin {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: name.as_str().into(),
        module,
        policy: cfg.failure_policy,
        config,
        foreign: Arc::new(foreign::GatewayForeign {
            services: services.clone(),
        }),
        figures: services.metrics.plugin_figures(name),
    }))
}

/// Start a throwaway VM and configure a root context with `config`.
fn check(module: &Arc<PluginModule>, config: &Bytes) -> Result<(), String> {
    let env = VmEnv {
        queue_notifier: None,
        foreign: Some(Arc::new(foreign::CheckOnlyForeign)),
        known_cluster: None,
    };
    let mut vm = Vm::new(module, env).map_err(|f| format!("{f}"))?;
    vm.create_root(config.clone()).map_err(|f| format!("{f}"))?;
    Ok(())
}

impl Plugin {
    /// A filter for one use of this plugin in a chain; `per_use_config` (the chain entry's
    /// `config:`) replaces the plugin's default config and is checked on a throwaway VM.
    ///
    /// # Errors
    /// The plugin rejected the configuration (or trapped on it).
    pub fn filter(
        self: &Arc<Self>,
        per_use_config: Option<&serde_json::Value>,
    ) -> Result<Arc<dyn HttpFilter>, String> {
        let config = match per_use_config {
            Some(v) => {
                let c = config_bytes(Some(v));
                check(&self.module, &c)?;
                c
            }
            None => self.config.clone(),
        };
        let use_id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(WasmFilter::new(self.clone(), use_id, config)))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What `/plugins` shows.
    pub fn info_json(&self) -> serde_json::Value {
        let info = &self.module.info;
        let failures: serde_json::Map<String, serde_json::Value> = sluice_wasm::failure_counts()
            .into_iter()
            .filter(|(p, _, _)| p.as_str() == &*self.name)
            .map(|(_, kind, n)| (kind.to_string(), serde_json::Value::from(n)))
            .collect();
        serde_json::json!({
            "name": &*self.name,
            "sha256": self.module.sha256,
            "abi": self.module.abi.as_str(),
            "root_id": info.root_id,
            "failure_policy": match self.policy {
                FailurePolicy::FailClosed => "fail_closed",
                FailurePolicy::FailOpen => "fail_open",
                FailurePolicy::FailReload => "fail_reload",
            },
            "limits": {
                "memory": info.limits.memory,
                "callback_timeout_ms": info.limits.callback_timeout.as_millis() as u64,
                "fuel": info.limits.fuel,
                "max_buffered_body": info.limits.max_buffered_body,
            },
            "failures": failures,
        })
    }
}

/// Prometheus text for plugin-defined metrics and plugin failure counters, for `/metrics`.
pub fn render_prometheus() -> String {
    use std::fmt::Write as _;
    let mut out = sluice_wasm::metrics::render_prometheus();
    out.push_str(&sluice_wasm::failure::render_prometheus());
    let _ = write!(
        out,
        "# HELP sluice_wasm_plugins_live Plugin versions held by a snapshot or an in-flight stream.\n\
         # TYPE sluice_wasm_plugins_live gauge\nsluice_wasm_plugins_live {}\n\
         # HELP sluice_wasm_worker_vms_live Plugin VMs alive across all workers.\n\
         # TYPE sluice_wasm_worker_vms_live gauge\nsluice_wasm_worker_vms_live {}\n",
        LIVE_PLUGINS.load(Ordering::Relaxed),
        worker_vm::live_worker_vms(),
    );
    out
}
