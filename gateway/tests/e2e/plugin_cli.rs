//! `sluice plugin test`: a real plugin run by the real binary against a request, no network.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// `target/plugins/<name>.wasm`, built by scripts/build-plugins.sh when missing.
fn plugin(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/plugins").join(format!("{name}.wasm"));
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if !path.exists() {
        let status = Command::new(root.join("scripts/build-plugins.sh"))
            .status()
            .expect("run scripts/build-plugins.sh");
        assert!(status.success(), "scripts/build-plugins.sh failed");
    }
    path.to_str().expect("utf-8 path").to_string()
}

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The value of header `name` in a `[[name, value], ...]` list.
fn header<'a>(list: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    list.as_array()?
        .iter()
        .find(|p| p[0] == name)
        .and_then(|p| p[1].as_str())
}

#[test]
fn plugin_test_shows_the_upstream_request_and_client_response() {
    let wasm = plugin("add_header");
    let config = r#"{"header":"x-hello","value":"world","request":[{"name":"x-internal-token","action":"remove"},{"name":"x-forwarded-by","value":"sluice"}]}"#;
    let (code, out, err) = sluice(&[
        "plugin",
        "test",
        &wasm,
        "--config",
        config,
        "--method",
        "POST",
        "--path",
        "/orders?id=7",
        "-H",
        "x-internal-token: secret",
        "-H",
        "accept: text/plain",
        "--body",
        "payload",
        "--response-status",
        "201",
        "--response-header",
        "x-up: 1",
        "--response-body",
        "made",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("request to upstream:\n  POST /orders?id=7\n"),
        "{out}"
    );
    assert!(out.contains("x-forwarded-by: sluice"), "{out}");
    assert!(!out.contains("x-internal-token"), "{out}");
    assert!(out.contains("response to client:\n  201\n"), "{out}");
    assert!(out.contains("x-hello: world"), "{out}");
    assert!(out.contains("  made\n"), "{out}");

    let (code, out, err) = sluice(&[
        "plugin",
        "test",
        &wasm,
        "--config",
        config,
        "-H",
        "x-internal-token: s",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(
        header(&v["upstream_request"]["headers"], "x-forwarded-by"),
        Some("sluice")
    );
    assert_eq!(
        header(&v["upstream_request"]["headers"], "x-internal-token"),
        None
    );
    assert_eq!(header(&v["response"]["headers"], "x-hello"), Some("world"));
    assert_eq!(v["response"]["status"], 200);
    assert!(v["failure"].is_null());
}

#[test]
fn plugin_test_shows_a_local_response_and_the_plugins_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("deny.json");
    std::fs::write(&cfg, r#"{"deny": ["/admin/"], "body": "no\n"}"#).expect("write config");
    let cfg_arg = format!("@{}", cfg.display());
    let wasm = plugin("deny_path");
    let (code, out, err) = sluice(&[
        "plugin", "test", &wasm, "--config", &cfg_arg, "--path", "/admin/x",
    ]);
    assert_eq!(
        code, 0,
        "a local response is the plugin working: {out}{err}"
    );
    assert!(
        out.contains(
            "request to upstream: none (the gateway answered: wasm_plugin_local_response)"
        ),
        "{out}"
    );
    assert!(out.contains("response to client:\n  403\n"), "{out}");
    assert!(out.contains("  no\n"), "{out}");
    assert!(out.contains("logs:\n"), "{out}");

    let log = plugin("rs_log");
    let (code, out, err) = sluice(&["plugin", "test", &log, "--path", "/p", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    let lines = v["logs"].as_array().expect("logs array");
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[2]["level"], "info");
    assert_eq!(lines[2]["message"], "sluice-conformance log info /p");
}

#[test]
fn plugin_test_exits_1_when_the_plugin_traps_or_rejects_its_config() {
    let trap = plugin("rs_hostile_trap");
    let (code, out, err) = sluice(&[
        "plugin",
        "test",
        &trap,
        "-H",
        "x-hostile-where: request_headers",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("plugin rs_hostile_trap failed (trap)"),
        "{err}"
    );
    assert!(out.contains("response to client:\n  503\n"), "{out}");
    assert!(out.contains("deliberate panic"), "{out}");

    let auth = plugin("api_key_auth");
    let (code, out, err) = sluice(&["plugin", "test", &auth, "--config", r#"{"keys": []}"#]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("rejected its configuration"), "{err}");
    assert!(
        err.contains("`keys` is empty"),
        "the plugin's reason is shown: {err}"
    );

    let (code, out, err) = sluice(&["plugin", "test", &auth, "--config", "{not json"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--config is not valid JSON"), "{err}");

    let (code, _, err) = sluice(&["plugin", "test", "/nonexistent/p.wasm"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/p.wasm"), "{err}");
}

#[test]
fn plugin_test_is_listed_in_help() {
    let (code, out, err) = sluice(&["plugin", "test", "--help"]);
    assert_eq!(code, 0, "{err}");
    for flag in [
        "--config",
        "--root-id",
        "--method",
        "--path",
        "--header",
        "--body",
        "--response-status",
        "--response-header",
        "--response-body",
        "--json",
    ] {
        assert!(out.contains(flag), "{flag} missing from help: {out}");
    }
}
