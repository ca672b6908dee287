//! `cargo xtask build-plugins`: builds every proxy-wasm plugin (conformance test plugins,
//! first-party plugins, the AssemblyScript template) from source into `target/plugins/`.
//!
//! The logic lives in `scripts/build-plugins.sh` so that the README's test command, CI and this
//! subcommand run exactly the same steps; this module finds the script and runs it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The script, relative to the repository root.
const SCRIPT: &str = "scripts/build-plugins.sh";

/// The repository root: xtask's manifest lives one level below it.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Builds every plugin (Rust and AssemblyScript) into `target/plugins/<name>.wasm`.
///
/// # Errors
/// When bash cannot be started or the script fails (missing toolchain, compile error); the
/// script has already printed the reason.
pub fn run() -> Result<()> {
    run_with(&[])
}

/// Runs the script with its arguments (`--rust` or `--as` build one kind only).
fn run_with(args: &[&str]) -> Result<()> {
    let root = repo_root();
    let script = root.join(SCRIPT);
    if !script.is_file() {
        bail!(
            "{} not found; run xtask from a Sluice checkout",
            script.display()
        );
    }
    let status = Command::new("bash")
        .arg(&script)
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("cannot start bash to run {SCRIPT}"))?;
    if !status.success() {
        bail!("{SCRIPT} failed ({status})");
    }
    Ok(())
}
