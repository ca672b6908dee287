//! Building the plugin under test for `wasm32-wasip1` from its own `cargo test`, so a test always
//! runs the code it sits next to.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the plugin could not be built.
#[derive(Debug)]
pub struct BuildError(String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "building the plugin for wasm32-wasip1 failed: {}",
            self.0
        )
    }
}

impl std::error::Error for BuildError {}

/// `cargo build --release --target wasm32-wasip1` the crate in `crate_dir` (usually
/// `env!("CARGO_MANIFEST_DIR")`) and return the path of its `.wasm` module. Cargo skips the work
/// when nothing changed. `target_dir` overrides where the build goes (default: cargo's, as for
/// `cargo build` in that directory).
///
/// # Errors
/// Cargo could not run, the build failed (cargo's messages are on stderr; a missing target is
/// fixed by `rustup target add wasm32-wasip1`), or it produced no `.wasm` (the crate needs
/// `crate-type = ["cdylib"]`).
pub fn build_wasm(crate_dir: &Path, target_dir: Option<&Path>) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip1"])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        // Flags meant for the test build (coverage, sanitizers) do not apply to wasm32.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stderr(std::process::Stdio::inherit());
    if let Some(dir) = target_dir {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let out = cmd
        .output()
        .map_err(|e| BuildError(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(BuildError(format!("cargo exited with {}", out.status)));
    }
    let manifest = crate_dir.join("Cargo.toml");
    let mut found = None;
    // Cargo prints one JSON message per line; the package's cdylib artifact names the module.
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let ours = msg["manifest_path"]
            .as_str()
            .is_some_and(|p| same_file(Path::new(p), &manifest));
        if !ours {
            continue;
        }
        let wasm = msg["filenames"].as_array().and_then(|files| {
            files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
        });
        if let Some(w) = wasm {
            found = Some(PathBuf::from(w));
        }
    }
    found.ok_or_else(|| {
        BuildError(format!(
            "{} produced no .wasm module (is crate-type [\"cdylib\"] set?)",
            manifest.display()
        ))
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
