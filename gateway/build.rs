//! Embeds the XDP object when it has been built (scripts/build-bpf.sh, or the path in
//! SLUICE_BPF_OBJECT) and sets `cfg(sluice_bpf)`; without it the gateway builds on stable and its
//! XDP module reports itself unavailable. Never invokes the nightly toolchain.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sluice_bpf)");
    println!("cargo::rerun-if-env-changed=SLUICE_BPF_OBJECT");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let object = match std::env::var_os("SLUICE_BPF_OBJECT") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            println!("cargo::rerun-if-changed={}", path.display());
            path
        }
        _ => {
            let dir = manifest.join("../target/bpf");
            // The directory is watched rather than the file: cargo re-runs a build script on every
            // build while a watched path is missing, which would rebuild the crate each time.
            let _ = std::fs::create_dir_all(&dir);
            println!("cargo::rerun-if-changed={}", dir.display());
            dir.join("sluice-xdp.o")
        }
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let generated = out.join("bpf_object.rs");
    let body = if object.is_file() {
        println!("cargo::rustc-cfg=sluice_bpf");
        let path = object.canonicalize().unwrap_or(object);
        format!(
            "/// The compiled XDP program (ELF), embedded at build time.\n\
             pub static OBJECT: &[u8] = aya::include_bytes_aligned!({:?});\n",
            path.display().to_string()
        )
    } else {
        "/// Absent: built without the eBPF object.\npub static OBJECT: &[u8] = &[];\n".to_string()
    };
    if let Err(e) = std::fs::write(&generated, body) {
        println!("cargo::warning=cannot write {}: {e}", generated.display());
    }
}
