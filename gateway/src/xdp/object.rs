//! The XDP object embedded at build time by gateway/build.rs (absent when scripts/build-bpf.sh
//! was not run before building).

mod generated {
    include!(concat!(env!("OUT_DIR"), "/bpf_object.rs"));
}

/// Why there is no object to load.
pub const MISSING: &str = "built without the eBPF object (run scripts/build-bpf.sh, then rebuild)";

/// The embedded program, or None when the gateway was built without it.
pub fn embedded() -> Option<&'static [u8]> {
    if cfg!(sluice_bpf) && !generated::OBJECT.is_empty() {
        Some(generated::OBJECT)
    } else {
        None
    }
}
