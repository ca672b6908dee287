//! The version of a configuration as a whole: the config file's bytes *and* the bytes of every
//! file it references (plugin modules, certificates, deny lists). A plugin rebuilt in place with
//! an unchanged YAML is a new version, so a reload applies it and /config shows the change.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::Config;

/// Hex digits kept: enough to tell versions apart in logs, headers and /config.
const VERSION_HEX_LEN: usize = 12;

/// The version of `cfg` and the files it references, as they are on disk now.
///
/// A file that cannot be read contributes its error kind (the snapshot build reports the
/// problem itself; the version only has to differ from a readable file's).
pub fn of(cfg: &Config) -> String {
    let mut h = Sha256::new();
    h.update(cfg.version.as_bytes());
    for f in cfg.referenced_files() {
        h.update(b"\0");
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(file_digest(&f));
    }
    let mut hex = hex::encode(h.finalize());
    hex.truncate(VERSION_HEX_LEN);
    hex
}

fn file_digest(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => Sha256::digest(&bytes).to_vec(),
        Err(e) => format!("unreadable: {:?}", e.kind()).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        let yaml = "plugins:\n  - { name: p, wasm: p.wasm }\nlisteners:\n  - name: a\n    address: 127.0.0.1:0\n    routes: [{ match: { path_prefix: / }, direct_response: { status: 200 } }]\n";
        let mut cfg = crate::config::load_str(yaml, dir, &[]).expect("valid config");
        cfg.path = Some(dir.join("sluice.yaml"));
        cfg
    }

    #[test]
    fn a_referenced_file_changes_the_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("p.wasm"), b"one").expect("write");
        let cfg = config_in(dir.path());
        let first = of(&cfg);
        assert_eq!(first, of(&cfg), "same bytes, same version");
        std::fs::write(dir.path().join("p.wasm"), b"two").expect("write");
        let second = of(&cfg);
        assert_ne!(first, second);
        std::fs::remove_file(dir.path().join("p.wasm")).expect("remove");
        assert_ne!(second, of(&cfg), "a missing file is a version of its own");
        assert_eq!(first.len(), VERSION_HEX_LEN);
    }
}
