//! Where the repository's built plugins are: `target/plugins/<name>.wasm`, built by
//! `scripts/build-plugins.sh` (once per test process) when one is missing.

use std::path::PathBuf;
use std::sync::Mutex;

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The path of built plugin `name` (e.g. `add_header`).
///
/// # Panics
/// When the plugin is missing and the build script fails: the test cannot run without it.
pub fn plugin(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("target/plugins").join(format!("{name}.wasm"));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if !path.exists() {
        let status = std::process::Command::new(root.join("scripts/build-plugins.sh"))
            .status()
            .unwrap_or_else(|e| panic!("cannot run scripts/build-plugins.sh: {e}"));
        assert!(status.success(), "scripts/build-plugins.sh failed");
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}
