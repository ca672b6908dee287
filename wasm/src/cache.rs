//! Compiled modules cached by the sha256 of their bytes: in memory for the whole process, and on
//! disk when `SLUICE_WASM_CACHE_DIR` is set, so a re-swap, a new worker or a restart does not
//! recompile.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::OnceLock;

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::Error;

/// Environment variable naming the on-disk cache directory.
pub const CACHE_DIR_ENV: &str = "SLUICE_WASM_CACHE_DIR";

static MEMORY: OnceLock<DashMap<(String, bool), Module>> = OnceLock::new();

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Compile `bytes` for `engine` (fuel or not), or return the cached module.
///
/// # Errors
/// [`Error::Compile`] when the bytes are not a valid module.
#[allow(unsafe_code)]
pub fn compile(engine: &Engine, fuel: bool, bytes: &[u8]) -> Result<(Module, String), Error> {
    let sha = sha256_hex(bytes);
    let mem = MEMORY.get_or_init(DashMap::new);
    if let Some(m) = mem.get(&(sha.clone(), fuel)) {
        return Ok((m.clone(), sha));
    }
    let disk = disk_path(engine, &sha, fuel);
    if let Some(path) = &disk {
        if path.exists() {
            // SAFETY: the file was written by `Module::serialize` of this same wasmtime build
            // (the name includes the engine's compatibility hash) into a directory the operator
            // configured for this purpose; wasmtime still checks the header and version.
            let loaded = unsafe { Module::deserialize_file(engine, path) };
            match loaded {
                Ok(m) => {
                    mem.insert((sha.clone(), fuel), m.clone());
                    return Ok((m, sha));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable cached module")
                }
            }
        }
    }
    let module = Module::new(engine, bytes).map_err(|e| Error::Compile(format!("{e:#}")))?;
    if let Some(path) = disk {
        store_on_disk(&module, &path);
    }
    mem.insert((sha.clone(), fuel), module.clone());
    Ok((module, sha))
}

fn disk_path(engine: &Engine, sha: &str, fuel: bool) -> Option<PathBuf> {
    let dir = std::env::var_os(CACHE_DIR_ENV)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let compat = h.finish();
    let fuel = if fuel { "-fuel" } else { "" };
    Some(PathBuf::from(dir).join(format!("{sha}-{compat:016x}{fuel}.cwasm")))
}

fn store_on_disk(module: &Module, path: &PathBuf) {
    let result = module
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
            }
            // Write then rename, so a concurrent reader never sees half a file.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, path).map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the wasm module cache");
    }
}

/// Drop the in-memory entries of `sha256` (the disk cache, if any, is kept): the next compile
/// of the same bytes loads from disk or recompiles.
pub fn evict(sha256: &str) {
    if let Some(mem) = MEMORY.get() {
        mem.retain(|(sha, _), _| sha != sha256);
    }
}

/// Number of modules in the in-memory cache (for `/plugins` and tests).
pub fn cached_modules() -> usize {
    MEMORY.get().map_or(0, DashMap::len)
}
