//! Builds the test plugins under wasm/tests/plugins/ for wasm32-wasip1 on demand, once per test
//! process, and only when a source file is newer than the built module.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

static BUILD_LOCK: Mutex<()> = Mutex::new(());

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("wasm")
        .join("tests")
        .join("plugins")
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return newest;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(t);
    }
    newest
}

/// The bytes of plugin `name` (directory under wasm/tests/plugins), building it if needed.
///
/// # Panics
/// When the build fails: the test cannot run without its plugin.
pub fn plugin(name: &str) -> Vec<u8> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = plugins_dir().join(name);
    let manifest = dir.join("Cargo.toml");
    let crate_name = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("name = ")
                    .map(|v| v.trim_matches('"').replace('-', "_"))
            })
        })
        .unwrap_or_else(|| panic!("no package name in {}", manifest.display()));
    let out = dir
        .join("target/wasm32-wasip1/release")
        .join(format!("{crate_name}.wasm"));
    let built = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    if built.is_none_or(|t| t < newest_mtime(&dir)) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
                "--manifest-path",
            ])
            .arg(&manifest)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(status.success(), "building test plugin {name} failed");
    }
    std::fs::read(&out).unwrap_or_else(|e| panic!("cannot read {}: {e}", out.display()))
}
