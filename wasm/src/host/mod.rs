//! The linker: every host function of the proxy-wasm ABI and the WASI shims, defined once per
//! engine; per module, imports the host does not know (or knows with another signature) are bound
//! to stubs that answer UNIMPLEMENTED, so no SDK's import list fails to link.

mod calls;
mod core;
mod maps;
mod shared;
mod wasi;

use std::collections::HashMap;

use wasmtime::{Engine, ExternType, FuncType, Linker, Module, Val, ValType};

use crate::abi::{BufferType, Status};
use crate::state::{HostState, Signals};
use crate::Error;

/// Record a signal (continue, close, local response) for the effective context: the caller sets
/// a field of the returned slot. A merged entry that runs (see [`crate::merged`]) stops before
/// its next callback, so the host acts on the signal first, as when the callbacks are entered one
/// by one.
pub(crate) fn signal<'a>(c: &'a mut wasmtime::Caller<'_, HostState>) -> &'a mut Signals {
    if let Some(flags) = c.data().whole_flags {
        // A global of this store set to an i32: cannot fail.
        let _ = flags.stop.set(&mut *c, Val::I32(1));
    }
    c.data_mut().signal_slot()
}

/// Whether a stream body buffer is visible to the running callback. In a whole-response entry
/// the response headers callback runs with the body already at hand; it must not see it, as when
/// the two callbacks are entered one by one (and as in Envoy, whose headers callback has no body
/// yet).
pub(crate) fn body_visible(c: &mut wasmtime::Caller<'_, HostState>, kind: BufferType) -> bool {
    if kind != BufferType::HttpResponseBody || !c.data().in_whole {
        return true;
    }
    // Without the helper, the entry runs the headers callback alone.
    match c.data().whole_flags {
        Some(flags) => flags.in_body.get(&mut *c).i32() == Some(1),
        None => false,
    }
}

/// The host functions of one engine and their types (to spot imports declared differently).
pub(crate) struct HostLinker {
    linker: Linker<HostState>,
    types: HashMap<(String, String), FuncType>,
}

impl HostLinker {
    /// Define every host function.
    ///
    /// # Errors
    /// A definition failed (a bug: names are unique).
    pub(crate) fn new(engine: &Engine) -> Result<Self, Error> {
        let mut linker = Linker::new(engine);
        let def = |e: wasmtime::Error| Error::Engine(format!("defining host functions: {e}"));
        core::define(&mut linker).map_err(def)?;
        maps::define(&mut linker).map_err(def)?;
        shared::define(&mut linker).map_err(def)?;
        calls::define(&mut linker).map_err(def)?;
        for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
            wasi::define(&mut linker, module).map_err(def)?;
        }
        let mut types = HashMap::new();
        let mut store = wasmtime::Store::new(engine, HostState::placeholder());
        let defs: Vec<_> = linker
            .iter(&mut store)
            .map(|(m, n, e)| (m.to_string(), n.to_string(), e))
            .collect();
        for (module, name, ext) in defs {
            if let ExternType::Func(ft) = ext.ty(&store) {
                types.insert((module, name), ft);
            }
        }
        Ok(HostLinker { linker, types })
    }

    /// A linker for `module`: the host functions plus stubs for unknown or mismatched imports.
    ///
    /// # Errors
    /// A stub could not be defined.
    pub(crate) fn for_module(&self, module: &Module) -> Result<Linker<HostState>, Error> {
        let mut linker = self.linker.clone();
        linker.allow_shadowing(true);
        for import in module.imports() {
            let ExternType::Func(want) = import.ty() else {
                continue;
            };
            let key = (import.module().to_string(), import.name().to_string());
            if let Some(have) = self.types.get(&key) {
                if FuncType::eq(have, &want) {
                    continue;
                }
            }
            define_stub(&mut linker, import.module(), import.name(), want)?;
        }
        Ok(linker)
    }
}

/// A function the host does not implement: WASI names answer ENOSYS, `env.abort`
/// (AssemblyScript) traps, everything else answers UNIMPLEMENTED (zero for non-i32 results).
fn define_stub(
    linker: &mut Linker<HostState>,
    module: &str,
    name: &str,
    ty: FuncType,
) -> Result<(), Error> {
    let is_wasi = module.starts_with("wasi");
    let is_abort = name == "abort";
    let label = format!("{module}.{name}");
    let result_types: Vec<ValType> = ty.results().collect();
    let code = if is_wasi {
        wasi::ERRNO_NOSYS
    } else {
        Status::Unimplemented.code()
    };
    linker
        .func_new(module, name, ty, move |caller, _params, results| {
            if is_abort {
                return Err(wasmtime::Error::msg(format!(
                    "plugin {} called abort",
                    caller.data().info.name
                )));
            }
            tracing::debug!(plugin = %caller.data().info.name, import = %label, "unimplemented host function called");
            for (r, t) in results.iter_mut().zip(&result_types) {
                *r = match t {
                    ValType::I32 => Val::I32(code),
                    other => zero_of(other),
                };
            }
            Ok(())
        })
        .map_err(|e| Error::Engine(format!("stub for {module}.{name}: {e}")))?;
    Ok(())
}

/// Seed values for the results of a dynamic call, by type.
pub(crate) fn zero_of(t: &ValType) -> Val {
    match t {
        ValType::I64 => Val::I64(0),
        ValType::F32 => Val::F32(0),
        ValType::F64 => Val::F64(0),
        _ => Val::I32(0),
    }
}
