//! A compiled plugin: its module (from the sha256 cache), its linker with every import resolved,
//! the ABI version it declares, and the facts host calls report about it.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use wasmtime::{Engine, InstancePre, Module};

use crate::abi::AbiVersion;
use crate::host::HostLinker;
use crate::limits::Limits;
use crate::state::HostState;
use crate::{cache, engine, Error};

/// What host calls report about a plugin (properties, configuration, environment).
#[derive(Clone, Debug, Default)]
pub struct PluginInfo {
    pub name: Arc<str>,
    pub root_id: String,
    /// Scope of shared data and queues (Envoy's vm_id); plugins with the same vm_id share.
    pub vm_id: String,
    /// Passed to `proxy_on_vm_start`.
    pub vm_config: Bytes,
    /// The environment WASI shows the plugin (only the allowed variables).
    pub env: Vec<(String, String)>,
    pub node_id: String,
    pub node_cluster: String,
    pub limits: Limits,
}

/// A compiled, linked plugin ready to be instantiated into any number of VMs.
pub struct PluginModule {
    pub info: Arc<PluginInfo>,
    pub sha256: String,
    pub abi: AbiVersion,
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    /// Name of the allocator export the host uses to hand data to the guest.
    pub(crate) allocator: &'static str,
}

fn linker(engine: &Engine, fuel: bool) -> Result<&'static HostLinker, Error> {
    static PLAIN: OnceLock<HostLinker> = OnceLock::new();
    static FUELED: OnceLock<HostLinker> = OnceLock::new();
    let cell = if fuel { &FUELED } else { &PLAIN };
    if let Some(l) = cell.get() {
        return Ok(l);
    }
    let built = HostLinker::new(engine)?;
    Ok(cell.get_or_init(|| built))
}

impl PluginModule {
    /// Compile (or take from the cache) and link `wasm`.
    ///
    /// # Errors
    /// Not a valid module, not a proxy-wasm module (no ABI version export, no memory, no
    /// allocator), or an import that cannot be satisfied (a non-function import).
    pub fn new(info: PluginInfo, wasm: &[u8]) -> Result<Arc<Self>, Error> {
        let fuel = info.limits.fuel.is_some();
        let engine = engine::engine(fuel)?;
        engine::ticker(fuel)?.require(info.limits.callback_timeout);
        let (module, sha256) = cache::compile(engine, fuel, wasm)?;
        let abi = detect_abi(&module)?;
        let allocator = ["proxy_on_memory_allocate", "malloc"]
            .into_iter()
            .find(|n| module.get_export(n).is_some())
            .ok_or_else(|| {
                Error::Abi("exports neither proxy_on_memory_allocate nor malloc".into())
            })?;
        if module.get_export("memory").is_none() {
            return Err(Error::Abi("exports no memory".into()));
        }
        let linker = linker(engine, fuel)?.for_module(&module)?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Link(format!("{e:#}")))?;
        Ok(Arc::new(PluginModule {
            info: Arc::new(info),
            sha256,
            abi,
            engine: engine.clone(),
            pre,
            allocator,
        }))
    }
}

impl PluginModule {
    /// Whether the module exports a function (a callback) named `name`. A host skips a stream
    /// callback the plugin does not export, as Envoy does (`if (!wasm_->on_response_body_)`).
    pub fn exports_function(&self, name: &str) -> bool {
        matches!(
            self.pre.module().get_export(name),
            Some(wasmtime::ExternType::Func(_))
        )
    }
}

fn detect_abi(module: &Module) -> Result<AbiVersion, Error> {
    AbiVersion::ALL
        .into_iter()
        .find(|v| module.get_export(v.export_name()).is_some())
        .ok_or_else(|| {
            Error::Abi(
                "exports none of proxy_abi_version_0_1_0, _0_2_0, _0_2_1: not a proxy-wasm plugin"
                    .into(),
            )
        })
}
