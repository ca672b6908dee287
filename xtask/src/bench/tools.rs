//! The external programs the harness drives: found, versioned, never installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// The install line printed when something is missing (Debian/Ubuntu package names).
pub const INSTALL_HINT: &str = "apt-get install -y nginx-light wrk haproxy";

/// The programs found on this machine.
#[derive(Debug)]
pub struct Tools {
    pub nginx: PathBuf,
    pub wrk: PathBuf,
    pub haproxy: Option<PathBuf>,
}

/// Finds `name` in PATH, then in the sbin directories a non-root PATH often lacks.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks for nginx, wrk and taskset (required) and HAProxy (optional).
pub fn check() -> anyhow::Result<Tools> {
    let nginx = find("nginx");
    let wrk = find("wrk");
    let missing: Vec<&str> = [
        ("nginx", nginx.is_none()),
        ("wrk", wrk.is_none()),
        ("taskset", find("taskset").is_none()),
    ]
    .into_iter()
    .filter_map(|(n, m)| m.then_some(n))
    .collect();
    match (nginx, wrk) {
        (Some(nginx), Some(wrk)) if missing.is_empty() => Ok(Tools {
            nginx,
            wrk,
            haproxy: find("haproxy"),
        }),
        _ => anyhow::bail!(
            "missing: {}. Install with `{INSTALL_HINT}` (taskset is in util-linux)",
            missing.join(", ")
        ),
    }
}

/// The first line a program prints for `args` (on stdout or stderr), for the report.
pub fn version(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output();
    out.ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(|l| short_version(l.trim()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `nginx version: nginx/1.22.1` → `nginx/1.22.1`; `wrk debian/4.1.0-3 [epoll] Copyright …` →
/// `wrk debian/4.1.0-3`; `HAProxy version 2.6.12 2026/10/17 - https://…` → `HAProxy 2.6.12`.
fn short_version(line: &str) -> String {
    let line = line.strip_prefix("nginx version: ").unwrap_or(line);
    let line = line.split(" [").next().unwrap_or(line);
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| *w != "version")
        .take(2)
        .collect();
    words.join(" ")
}

/// `cargo build --release -p sluice` in the workspace, output shown.
pub fn build_sluice(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p sluice");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "sluice"])
        .current_dir(root)
        .status()
        .context("running cargo")?;
    anyhow::ensure!(
        status.success(),
        "cargo build --release -p sluice failed ({status})"
    );
    Ok(release_binary(root))
}

/// Where `cargo build --release -p sluice` puts the binary: under `CARGO_TARGET_DIR` when it is
/// set (CI and `.ci/run` keep the target directory outside the clone), else `target/`.
pub fn release_binary(root: &Path) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(PathBuf::from(dir)),
        _ => root.join("target"),
    };
    target.join("release/sluice")
}

/// `git describe`-like identification of the tree being measured.
pub fn git_revision(root: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = run(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

/// The 1-minute load average (first field of /proc/loadavg).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The CPU model and kernel, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_shortened() {
        assert_eq!(short_version("nginx version: nginx/1.22.1"), "nginx/1.22.1");
        assert_eq!(
            short_version("wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer"),
            "wrk debian/4.1.0-3+b2"
        );
        assert_eq!(
            short_version("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"),
            "HAProxy 2.6.12-1+deb12u4"
        );
    }

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find("sh").is_some());
        assert!(find("definitely-not-a-program-xtask").is_none());
    }
}
