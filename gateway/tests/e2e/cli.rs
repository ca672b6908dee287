//! The `sluice` command line: `check` exit codes and messages, `--help`.

use std::process::Command;

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

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("ok.yaml");
    std::fs::write(&p, "listeners:\n  - name: a\n    address: \"127.0.0.1:8080\"\n    routes:\n      - match: { path_prefix: / }\n        direct_response: { status: 200 }\n").expect("write");
    let (code, out, err) = sluice(&["check", "-c", p.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration is valid"), "{out}");
}

#[test]
fn check_reports_every_problem_with_line_and_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.yaml");
    std::fs::write(
        &p,
        "listeners:\n  - name: a\n    address: \"127.0.0.1:8080\"\n    filters:\n      - name: no-such-filter\n    routes:\n      - match: { path_regex: \"(\" }\n        cluster: apx\nclusters:\n  - name: api\n    endpoints: [\"127.0.0.1:9000\"]\n    connect_timeout: 1s\n",
    )
    .expect("write");
    let (code, _out, err) = sluice(&["check", "-c", p.to_str().expect("utf8")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-filter"), "{err}");
    assert!(
        err.contains("bad.yaml:5:"),
        "line of the unknown filter: {err}"
    );
    assert!(err.contains("cluster `apx` is not defined"), "{err}");
    assert!(
        err.contains("bad.yaml:8:"),
        "line of the dangling cluster: {err}"
    );
    assert!(err.contains("did you mean `api`"), "{err}");
    assert!(err.contains("path_regex"), "{err}");
    assert!(err.contains("fix:"), "{err}");
}

#[test]
fn check_reports_unknown_keys_and_bad_durations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.yaml");
    std::fs::write(
        &p,
        "listeners:\n  - name: a\n    adress: \"127.0.0.1:8080\"\n",
    )
    .expect("write");
    let (code, _, err) = sluice(&["check", "-c", p.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains("adress"), "{err}");
    assert!(err.contains(":3:"), "{err}");
    std::fs::write(&p, "drain_timeout: 5\nlisteners: []\n").expect("write");
    let (code, _, err) = sluice(&["check", "-c", p.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains("no unit"), "{err}");
}

#[test]
fn help_documents_every_command() {
    let (code, out, _) = sluice(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["run", "check"] {
        assert!(out.contains(cmd), "{out}");
    }
}

#[test]
fn run_refuses_a_bad_config_and_a_busy_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "listeners:\n  - name: a\n    address: \"127.0.0.1:8080\"\n    routes:\n      - match: { path_prefix: / }\n        cluster: nope\n").expect("write");
    let (code, _, err) = sluice(&["run", "-c", p.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    // A plain (non-SO_REUSEPORT) socket holds the port.
    std::fs::write(&p, format!("listeners:\n  - name: a\n    address: \"127.0.0.1:{port}\"\n    routes:\n      - match: {{ path_prefix: / }}\n        direct_response: {{ status: 200 }}\n")).expect("write");
    let (code, _, err) = sluice(&["run", "-c", p.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot listen"), "{err}");
}
