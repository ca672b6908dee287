//! Every structural check of a parsed [`FileConfig`]: names, references, addresses, patterns,
//! ranges and referenced files. All checks run and every problem is returned, so that a user fixes
//! the file in one pass.
//!
//! Each area is one file with an `impl Checker` block; helpers shared by several areas live here.

mod actions;
mod clusters;
mod filters;
mod global;
mod listeners;
mod plugins;
mod routes;
mod xdp;

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::diagnostics::closest;
use super::diagnostics::Diagnostic;
use super::load::resolve;
use super::model::FileConfig;

/// Runs the checks; holds what they share (the file, its directory, the names defined in it).
pub(crate) struct Checker<'a> {
    file: &'a FileConfig,
    base_dir: &'a Path,
    native_filters: &'a [&'a str],
    cluster_names: Vec<&'a str>,
    plugin_names: Vec<&'a str>,
    out: Vec<Diagnostic>,
}

/// Check `file`; relative paths resolve against `base_dir`. Empty when the file is good.
pub(crate) fn check(
    file: &FileConfig,
    base_dir: &Path,
    native_filters: &[&str],
) -> Vec<Diagnostic> {
    let mut c = Checker {
        file,
        base_dir,
        native_filters,
        cluster_names: file.clusters.iter().map(|c| c.name.as_str()).collect(),
        plugin_names: file.plugins.iter().map(|p| p.name.as_str()).collect(),
        out: Vec::new(),
    };
    c.global();
    c.listeners();
    c.clusters();
    c.plugins();
    c.xdp();
    c.xds();
    c.telemetry();
    c.out
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    /// Names must be non-empty and unique within their section (`what` is e.g. "listener").
    fn unique_names<'n>(
        &mut self,
        section: &str,
        what: &str,
        names: impl Iterator<Item = &'n str>,
    ) {
        let mut seen: Vec<&str> = Vec::new();
        for (i, name) in names.enumerate() {
            let path = format!("{section}[{i}].name");
            if name.trim().is_empty() {
                self.push(
                    Diagnostic::at(path, format!("{what} name is empty"))
                        .fix(format!("give the {what} a unique, non-empty name")),
                );
            } else if let Some(first) = seen.iter().position(|n| *n == name) {
                self.push(
                    Diagnostic::at(
                        path,
                        format!("{what} name `{name}` is already used by {section}[{first}]"),
                    )
                    .fix(format!("give each {what} a unique name")),
                );
            }
            seen.push(name);
        }
    }

    /// A file named in the config must exist (relative to the config's directory) and be a file.
    fn file_exists(&mut self, path: String, value: &str, what: &str) {
        if value.trim().is_empty() {
            self.push(
                Diagnostic::at(path, format!("{what} path is empty"))
                    .fix("write the path of the file"),
            );
            return;
        }
        let full = resolve(self.base_dir, value);
        let problem = match fs::metadata(&full) {
            Ok(m) if m.is_file() => return,
            Ok(_) => format!("{what} `{value}` is not a file ({})", full.display()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                format!("{what} `{value}` not found (looked at {})", full.display())
            }
            Err(e) => format!("{what} `{value}` cannot be read ({}): {e}", full.display()),
        };
        let fix = format!(
            "check the path; relative paths are resolved against the config file's directory ({})",
            self.base_dir.display()
        );
        self.push(Diagnostic::at(path, problem).fix(fix));
    }
}

/// The fix for a reference to something not defined: the closest name, then every defined one.
fn missing_ref_fix(name: &str, defined: &[&str], section: &str) -> String {
    let guess = match closest(name, defined) {
        Some(c) => format!("did you mean `{c}`? "),
        None => String::new(),
    };
    if defined.is_empty() {
        format!("{guess}define it under `{section}:` (none are defined yet)")
    } else {
        format!(
            "{guess}define it under `{section}:`, or use one of: {}",
            defined.join(", ")
        )
    }
}

/// Why `s` is not an absolute `http://` or `https://` URL, if it is not.
fn http_url_problem(s: &str) -> Option<String> {
    let uri = match s.parse::<http::Uri>() {
        Ok(u) => u,
        Err(e) => return Some(format!("`{s}` is not a URL: {e}")),
    };
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(a)) if !a.host().is_empty() => None,
        (Some(other), _) if other != "http" && other != "https" => Some(format!(
            "`{s}` has scheme `{other}`; only http and https are supported"
        )),
        _ => Some(format!("`{s}` is not an absolute http(s) URL")),
    }
}

/// The one-line cause of a regex error (the crate's message spans several lines with a caret).
fn regex_problem(pattern: &str) -> Option<String> {
    let err = regex::Regex::new(pattern).err()?;
    let text = err.to_string();
    let cause = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(text.trim());
    Some(format!("regex `{pattern}` does not compile: {cause}"))
}

/// Why `s` is not a host pattern (`example.com` or `*.example.com`), if it is not.
fn host_pattern_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("host is empty".to_string());
    }
    if s.chars().any(|c| c.is_whitespace() || c == '/') {
        return Some(format!("`{s}` is not a host name"));
    }
    let rest = s.strip_prefix("*.").unwrap_or(s);
    if rest.contains('*') {
        return Some(format!(
            "host `{s}` has a `*` that is not a leading `*.` label"
        ));
    }
    if rest.is_empty() {
        return Some(format!("host `{s}` has nothing after `*.`"));
    }
    None
}

/// Why `name` is not a valid header name, if it is not.
fn header_name_problem(name: &str) -> Option<String> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(_) => None,
        Err(_) => Some(format!("`{name}` is not a valid header name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(http_url_problem("http://127.0.0.1:18000"), None);
        assert_eq!(http_url_problem("https://xds.example.com"), None);
        assert!(http_url_problem("grpc://x:1")
            .unwrap()
            .contains("scheme `grpc`"));
        assert!(http_url_problem("127.0.0.1:18000").is_some());
        assert!(http_url_problem("not a url").is_some());
    }

    #[test]
    fn regexes() {
        assert_eq!(regex_problem("^/v[0-9]+/"), None);
        let p = regex_problem("(abc").unwrap();
        assert!(p.contains("unclosed group"), "{p}");
    }

    #[test]
    fn hosts() {
        assert_eq!(host_pattern_problem("api.example.com"), None);
        assert_eq!(host_pattern_problem("*.example.com"), None);
        assert!(host_pattern_problem("api.*.com").is_some());
        assert!(host_pattern_problem("*.").is_some());
        assert!(host_pattern_problem("a b").is_some());
    }
}
