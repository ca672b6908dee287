//! Reading a config: bytes → serde model (with the place of any shape error) → every structural
//! check → a frozen [`Config`], or every problem at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::diagnostics::{Diagnostic, Diagnostics};
use super::model::FileConfig;
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
    /// First 12 hex characters of the sha256 of the file bytes.
    pub version: String,
    /// Key path → position, for locating problems found by later stages.
    pub source: Arc<SourceMap>,
}

impl Config {
    /// A path as written in the file, resolved against [`Config::base_dir`] when relative.
    pub fn resolve(&self, path: &str) -> PathBuf {
        resolve(&self.base_dir, path)
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

    Ok(Config {
        file,
        path: None,
        base_dir: base_dir.to_path_buf(),
        version: version_of(text.as_bytes()),
        source: Arc::new(source),
    })
}

/// First hex characters of the sha256 of `bytes`.
fn version_of(bytes: &[u8]) -> String {
    let mut hex = hex::encode(Sha256::digest(bytes));
    hex.truncate(VERSION_HEX_LEN);
    hex
}

/// Turn a YAML syntax error or a serde shape error into a problem with a place and a fix.
fn shape_problem(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
    map: &SourceMap,
) -> Diagnostic {
    let path = match err.path().to_string() {
        p if p == "." => String::new(),
        p => p,
    };
    let inner = err.inner();
    let loc = inner.location().map(|l| (l.line(), l.column()));
    let raw = bare_message(&inner.to_string(), loc);

    let (path, message, fix, key_pos) = explain(&path, &raw);
    let position = key_pos
        .and_then(|p| map.locate_key(p.as_str()))
        .or_else(|| map.locate_exact(&path))
        .or(loc)
        .or_else(|| map.locate(&path));
    let mut d = Diagnostic::at(path, message);
    if let Some((line, col)) = position {
        d = d.with_position(line, col);
    }
    match fix {
        Some(f) => d.fix(f),
        None => d,
    }
}

/// Every key written twice in one mapping, each at its second occurrence.
fn duplicate_problems(source: &SourceMap) -> Vec<Diagnostic> {
    source
        .duplicate_keys()
        .iter()
        .map(|d| {
            let key = d.path.rsplit('.').next().unwrap_or(&d.path);
            let fix = format!("remove one of them (the first is on line {})", d.first_line);
            Diagnostic::at(
                d.path.clone(),
                format!("key `{key}` is written twice in one mapping"),
            )
            .with_position(d.line, d.column)
            .fix(fix)
        })
        .collect()
}

/// A YAML syntax error (or several documents in one file), placed where serde_yaml found it.
fn syntax_problem(err: &serde_yaml::Error) -> Diagnostic {
    let loc = err.location().map(|l| (l.line(), l.column()));
    let raw = bare_message(&err.to_string(), loc);
    let (message, fix) = if raw.contains("more than one document") {
        (
            "the file holds more than one YAML document".to_string(),
            "keep one document: remove the extra `---` lines",
        )
    } else {
        (
            format!("YAML syntax error: {raw}"),
            "check the indentation, the `:` after each key and the quoting on this line",
        )
    };
    let d = Diagnostic::at("", message).fix(fix);
    match loc {
        Some((line, col)) => d.with_position(line, col),
        None => d,
    }
}

fn is_only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

/// serde_yaml's message without the `path: ` prefix and the ` at line L column C` it adds itself.
fn bare_message(display: &str, loc: Option<(usize, usize)>) -> String {
    let mut msg = display.to_string();
    if let Some((line, col)) = loc {
        let at = format!(" at line {line} column {col}");
        if let Some(i) = msg.find(&at) {
            msg.replace_range(i..i + at.len(), "");
        }
    }
    if let Some((prefix, rest)) = msg.split_once(": ") {
        let looks_like_path = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.[]".contains(c));
        if looks_like_path {
            return rest.to_string();
        }
    }
    msg
}

/// (key path, message, fix, path of an offending key) for a serde message.
fn explain(path: &str, raw: &str) -> (String, String, Option<String>, Option<String>) {
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (key, expected) = split_backticked(rest);
        let key_path = path_with_key(path, &key);
        let valid = backticked_list(&expected);
        let mut fix = if valid.is_empty() {
            "remove it: this mapping takes no keys".to_string()
        } else {
            format!("remove it; valid keys here are: {}", valid.join(", "))
        };
        if let Some(close) = closest(&key, &valid) {
            fix = format!("did you mean `{close}`? {fix}");
        }
        let msg = format!("unknown key `{key}`");
        return (key_path.clone(), msg, Some(fix), Some(key_path));
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, expected) = split_backticked(rest);
        let valid = backticked_list(&expected);
        let mut fix = format!("use one of: {}", valid.join(", "));
        if let Some(close) = closest(&value, &valid) {
            fix = format!("did you mean `{close}`? {fix}");
        }
        let msg = format!("unknown value `{value}`");
        return (path.to_string(), msg, Some(fix), None);
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let (key, _) = split_backticked(rest);
        let msg = format!("missing required key `{key}`");
        let fix = format!("add `{key}:` here");
        return (path.to_string(), msg, Some(fix), None);
    }
    if let Some(rest) = raw.strip_prefix("duplicate field `") {
        let (key, _) = split_backticked(rest);
        let msg = format!("key `{key}` is written twice in one mapping");
        let fix = Some("remove one of them".to_string());
        return (path_with_key(path, &key), msg, fix, None);
    }
    if let Some(rest) = raw
        .strip_prefix("invalid type: ")
        .or_else(|| raw.strip_prefix("invalid value: "))
    {
        let msg = match rest.split_once(", expected ") {
            Some((found, expected)) => format!(
                "wrong type: expected {}, found {}",
                plain_type(expected),
                plain_type(found)
            ),
            None => format!("wrong value: {rest}"),
        };
        return (path.to_string(), msg, None, None);
    }
    // Custom messages (units, ...) carry their own fix after a `; `.
    match raw.split_once("; ") {
        Some((m, f)) => (path.to_string(), m.to_string(), Some(f.to_string()), None),
        None => (path.to_string(), raw.to_string(), None, None),
    }
}

/// serde_path_to_error usually ends the path with the offending key already; add it if not.
fn path_with_key(path: &str, key: &str) -> String {
    if path == key || path.ends_with(&format!(".{key}")) {
        path.to_string()
    } else {
        join(path, key)
    }
}

/// serde's and Rust's type words as a YAML user knows them.
fn plain_type(t: &str) -> String {
    let plain = match t {
        "usize" | "u64" | "u32" | "u8" => "a whole number",
        "u16" => "a whole number from 0 to 65535",
        "f64" | "f32" => "a number",
        "a sequence" | "sequence" => "a list",
        "map" | "a map" => "a mapping",
        "unit value" => "nothing (null)",
        "a boolean" | "boolean" => "true or false",
        _ => {
            return match t.strip_prefix("struct ") {
                Some(name) => format!("a mapping ({name})"),
                None => t.to_string(),
            }
        }
    };
    plain.to_string()
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `foo`, rest` → ("foo", "rest"), given the text after an opening backtick.
fn split_backticked(after_open: &str) -> (String, String) {
    match after_open.split_once('`') {
        Some((name, rest)) => (name.to_string(), rest.to_string()),
        None => (after_open.to_string(), String::new()),
    }
}

/// Every `name` between backticks in `s`.
fn backticked_list(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The candidate closest to `word`, if close enough to be a plausible typo.
pub(crate) fn closest<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c.as_ref()), c.as_ref()))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_message_strips_path_and_position() {
        let m = bare_message(
            "listeners[0]: unknown field `adress`, expected one of `name` at line 3 column 5",
            Some((3, 5)),
        );
        assert_eq!(m, "unknown field `adress`, expected one of `name`");
        let m = bare_message("invalid type: string \"x\", expected usize", None);
        assert_eq!(m, "invalid type: string \"x\", expected usize");
    }

    #[test]
    fn closest_finds_typos_only() {
        let names = ["api", "web", "backend"];
        assert_eq!(closest("apx", &names).as_deref(), Some("api"));
        assert_eq!(closest("backedn", &names).as_deref(), Some("backend"));
        assert_eq!(closest("zzzzzz", &names), None);
    }

    #[test]
    fn version_is_twelve_hex_chars_of_sha256() {
        // sha256("") = e3b0c44298fc1c149afbf4c8996fb924...
        assert_eq!(version_of(b""), "e3b0c44298fc");
    }
}
