//! proxy-wasm conformance runner: the test plugins of conformance/ run in a real gateway
//! (`sluice run`) in front of real upstreams; every check sends real HTTP requests and looks only at
//! what comes back. Each check names the host functions and callbacks it exercises; the results,
//! per ABI version, become docs/conformance.md when `SLUICE_WRITE_CONFORMANCE=1`.
//!
//! Run: `cargo test -p sluice --test conformance -- --nocapture`.

mod functional;
mod hostile;
mod record;
mod support;

use record::Recorder;

#[test]
fn proxy_wasm_conformance() {
    let plugins = support::plugins_dir();
    let mut rec = Recorder::default();
    functional::run(&plugins, &mut rec);
    if support::selected("hostile") {
        hostile::run(&plugins, &mut rec);
    }
    let filtered = std::env::var_os("SLUICE_CONFORMANCE_ONLY").is_some();
    if std::env::var("SLUICE_WRITE_CONFORMANCE").as_deref() == Ok("1") && !filtered {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/conformance.md");
        std::fs::write(&path, rec.markdown()).expect("write docs/conformance.md");
        eprintln!("wrote {}", path.display());
    }
    let failed = rec.failures();
    assert!(
        failed.is_empty(),
        "{} failing checks:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
