//! Reading a config: bytes → serde model (with the place of any shape error) → every structural
//! check → a frozen [`Config`], or every problem at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::diagnostics::{Diagnostic, Diagnostics};
use super::model::FileConfig;
use super::serde_errors::{duplicate_problems, shape_problem, syntax_problem};
use super::source_map::SourceMap;
use super::validate;

/// Hex digits of the file's sha256 kept as its version (enough to tell reloads apart in logs).
const VERSION_HEX_LEN: usize = 12;

/// A parsed and validated config file, ready for the snapshot builder.
#[derive(Clone, Debug)]
pub struct Config {
    /// The parsed, validated file.
    pub file: FileConfig,
    /// The file it came from (None when loaded from a string).
    pub path: Option<PathBuf>,
    /// Relative paths (certificates, wasm, deny_files) resolve against this directory.
    pub base_dir: PathBuf,
    /// First 12 hex characters of the sha256 of the file bytes and of the files it references.
    pub version: String,
    /// Key path → position, for locating problems found by later stages.
    pub source: Arc<SourceMap>,
}

impl Config {
    /// A path as written in the file, resolved against [`Config::base_dir`] when relative.
    pub fn resolve(&self, path: &str) -> PathBuf {
        resolve(&self.base_dir, path)
    }

    /// Every file the config refers to (certificates, keys, CAs, local wasm, deny lists),
    /// resolved, sorted and without repeats: what a reload watcher must watch besides the config.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let f = &self.file;
        let listener_tls = f.listeners.iter().filter_map(|l| l.tls.as_ref());
        let certs = listener_tls.clone().flat_map(|t| {
            t.certificates
                .iter()
                .flat_map(|c| {
                    [
                        Some(c.cert.as_str()),
                        Some(c.key.as_str()),
                        c.ocsp.as_deref(),
                    ]
                })
                .flatten()
        });
        let client_cas = listener_tls.filter_map(|t| t.client_ca.as_deref());
        let upstream_cas = f
            .clusters
            .iter()
            .filter_map(|c| c.tls.as_ref().and_then(|t| t.ca.as_deref()));
        let wasm = f.plugins.iter().filter_map(|p| p.wasm.as_deref());
        let deny = f
            .xdp
            .iter()
            .flat_map(|x| x.deny_files.iter().map(String::as_str));
        let mut files: Vec<PathBuf> = certs
            .chain(client_cas)
            .chain(upstream_cas)
            .chain(wasm)
            .chain(deny)
            .map(|p| self.resolve(p))
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

/// `path` as is when absolute, else joined to `base_dir`.
pub(crate) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Read, parse and check the config file at `path`. Relative paths inside it resolve against the
/// file's directory. `native_filters` are the registered native filter names (for `name:` in chains).
///
/// # Errors
/// Every problem found, each with its key path, line and a fix; also an unreadable or non-UTF-8 file.
pub fn load(path: &Path, native_filters: &[&str]) -> Result<Config, Diagnostics> {
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostic::at(
            "",
            format!("cannot read config file {}: {e}", path.display()),
        )
        .fix("check the path given with `-c` and that the file is readable")
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Diagnostic::at(
            "",
            format!(
                "config file is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
        .fix("save the file as UTF-8")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Absolute, so that paths still resolve if the process changes directory later; if the
    // current directory is gone, the relative form is the best we have.
    let base_dir = std::path::absolute(&dir).unwrap_or(dir);
    let mut config = load_str(&text, &base_dir, native_filters)?;
    config.path = Some(path.to_path_buf());
    Ok(config)
}

/// Parse and check config text; relative paths resolve against `base_dir`.
///
/// # Errors
/// Every problem found, each with its key path, line and a fix.
pub fn load_str(
    text: &str,
    base_dir: &Path,
    native_filters: &[&str],
) -> Result<Config, Diagnostics> {
    if is_only_comments(text) {
        let d = Diagnostic::at("", "the config file is empty")
            .fix("add at least one listener; see docs/configuration.md");
        return Err(d.into());
    }
    let source = SourceMap::new(text);
    // Syntax first: serde stops at the first shape error, which may come before a syntax error
    // further down, and a syntax error explains everything after it.
    if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        let duplicates = duplicate_problems(&source);
        if e.to_string().contains("duplicate entry") && !duplicates.is_empty() {
            return Err(Diagnostics(duplicates));
        }
        return Err(syntax_problem(&e).into());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    let file: FileConfig = match serde_path_to_error::deserialize(de) {
        Ok(f) => f,
        Err(e) => return Err(shape_problem(&e, &source).into()),
    };

    let problems = validate::check(&file, base_dir, native_filters);
    if !problems.is_empty() {
        return Err(Diagnostics(problems).locate_all(&source));
    }

    let mut cfg = Config {
        file,
        path: None,
        base_dir: base_dir.to_path_buf(),
        version: String::new(),
        source: Arc::new(source),
    };
    cfg.version = version_with_files(text.as_bytes(), &cfg.referenced_files());
    Ok(cfg)
}

/// The version of the config and the contents of the files it references (plugin modules,
/// certificates, deny lists), so that rotating a certificate or rebuilding a plugin in place with
/// an unchanged YAML is a new version that a reload applies and /config shows. A file that cannot
/// be read contributes its error kind (the snapshot build reports the problem itself; the version
/// only has to differ from a readable file's).
///
/// Files enter as their length and CRC-32 (SIMD, ~10× faster than SHA-256 here): this is change
/// detection, not integrity — plugin code is still identified by its SHA-256 in the module cache
/// and checked against `sha256:` — and hashing a 2 MB plugin three times per reload was most of a
/// cached plugin's reload time.
fn version_with_files(text: &[u8], files: &[PathBuf]) -> String {
    if files.is_empty() {
        return version_of(text);
    }
    let mut all = Sha256::new();
    all.update(text);
    for f in files {
        all.update(b"\0");
        all.update(f.as_os_str().as_encoded_bytes());
        all.update(b"\0");
        match std::fs::read(f) {
            Ok(bytes) => {
                all.update((bytes.len() as u64).to_le_bytes());
                all.update(crc32fast::hash(&bytes).to_le_bytes());
            }
            Err(e) => all.update(format!("unreadable: {:?}", e.kind()).as_bytes()),
        }
    }
    let mut hex = hex::encode(all.finalize());
    hex.truncate(VERSION_HEX_LEN);
    hex
}

/// First hex characters of the sha256 of `bytes`.
fn version_of(bytes: &[u8]) -> String {
    let mut hex = hex::encode(Sha256::digest(bytes));
    hex.truncate(VERSION_HEX_LEN);
    hex
}

fn is_only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_twelve_hex_chars_of_sha256() {
        // sha256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(version_of(b""), "e3b0c44298fc");
    }

    #[test]
    fn a_referenced_file_changes_the_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = "plugins:\n  - { name: p, wasm: p.wasm }\nlisteners:\n  - name: a\n    address: 127.0.0.1:0\n    routes: [{ match: { path_prefix: / }, direct_response: { status: 200 } }]\n";
        let wasm = dir.path().join("p.wasm");
        std::fs::write(&wasm, b"one").expect("write");
        let files = load_str(yaml, dir.path(), &[])
            .expect("valid config")
            .referenced_files();
        let version = || version_with_files(yaml.as_bytes(), &files);
        let first = version();
        assert_eq!(first, version(), "same bytes, same version");
        assert_eq!(
            first,
            load_str(yaml, dir.path(), &[]).expect("valid").version
        );
        std::fs::write(&wasm, b"two").expect("write");
        let second = version();
        assert_ne!(first, second);
        std::fs::remove_file(&wasm).expect("remove");
        assert_ne!(second, version(), "a missing file is a version of its own");
        assert_eq!(first.len(), VERSION_HEX_LEN);
    }

    #[test]
    fn comments_only_is_empty() {
        assert!(is_only_comments("# a\n\n---\n"));
        assert!(!is_only_comments("# a\nworkers: 1\n"));
    }
}
