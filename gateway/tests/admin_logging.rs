//! `logging::init` in a child process (a global subscriber can be installed once per process):
//! JSON output on stderr with SLUICE_LOG_FORMAT=json, RUST_LOG filtering, and idempotence.

use std::process::Command;

const CHILD: &str = "SLUICE_LOGGING_TEST_CHILD";

/// In the child: initialise twice and log at two levels. In the parent: a no-op.
#[test]
fn child_logs() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    sluice::telemetry::logging::init("info");
    sluice::telemetry::logging::init("info");
    tracing::info!(answer = 42, "visible line");
    tracing::debug!("hidden line");
}

fn run_child(format: &str, rust_log: Option<&str>) -> Result<String, Box<dyn std::error::Error>> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--exact", "child_logs", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SLUICE_LOG_FORMAT", format)
        .env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let out = cmd.output()?;
    assert!(out.status.success(), "child failed: {out:?}");
    Ok(String::from_utf8(out.stderr)?)
}

#[test]
fn json_format_on_stderr() -> Result<(), Box<dyn std::error::Error>> {
    let stderr = run_child("json", None)?;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert_eq!(lines[0]["level"], "INFO");
    assert_eq!(lines[0]["fields"]["message"], "visible line");
    assert_eq!(lines[0]["fields"]["answer"], 42);
    Ok(())
}

#[test]
fn rust_log_overrides_the_default() -> Result<(), Box<dyn std::error::Error>> {
    let stderr = run_child("text", Some("debug"))?;
    assert!(stderr.contains("visible line"), "stderr: {stderr}");
    assert!(stderr.contains("hidden line"), "stderr: {stderr}");
    let stderr = run_child("text", Some("warn"))?;
    assert!(!stderr.contains("visible line"), "stderr: {stderr}");
    Ok(())
}
