//! Reloads from the file: routes swapped under load with zero failed requests, bad reloads
//! rejected whole, listeners added and removed.

use std::time::Duration;

use crate::load::Load;
use crate::support::*;

fn config(port_b: u16, body: &str, with_b: bool) -> String {
    let b = if with_b {
        format!(
            r#"
  - name: b
    address: "127.0.0.1:{port_b}"
    routes: [{{ match: {{ path_prefix: "/" }}, direct_response: {{ status: 200, body: "listener-b" }} }}]"#
        )
    } else {
        String::new()
    };
    format!(
        r#"
workers: 2
listeners:
  - name: a
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "{body}" }}{b}
"#
    )
}

fn write_config(gw: &Gateway, yaml: &str) {
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:{}\" }}\n{}",
        gw.admin_port,
        yaml.replace("{PORT}", &gw.port.to_string())
    );
    // Atomic replace, as editors and deploy tools do.
    let tmp = gw.dir().join("sluice.yaml.tmp");
    std::fs::write(&tmp, yaml).expect("write");
    std::fs::rename(&tmp, &gw.config_path).expect("rename");
}

fn wait_for_body(gw: &Gateway, want: &str) {
    for _ in 0..1000 {
        if get(gw, "/").text() == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("never switched to {want}; log:\n{}", gw.log());
}

#[test]
fn routes_swap_under_load_with_zero_failures() {
    let port_b = free_port();
    let gw = Gateway::start(&config(port_b, "v0", false));
    let load = Load::start(gw.addr(), "/", 16, 2000);
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=20 {
        write_config(&gw, &config(port_b, &format!("v{i}"), i % 2 == 0));
        wait_for_body(&gw, &format!("v{i}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = load.stop();
    assert_eq!(report.failed, 0, "failures: {:?}", report.errors);
    assert!(report.ok > 2000, "too few requests: {}", report.ok);
    assert!(
        report.bodies.len() >= 15,
        "responses did not follow the swaps: {:?}",
        report.bodies
    );
}

#[test]
fn bad_reloads_change_nothing() {
    let port_b = free_port();
    let gw = Gateway::start(&config(port_b, "good", false));
    let bad = [
        "listeners: [ {name: a, address: ",                                   // YAML syntax
        "listeners: [{name: a, address: '127.0.0.1:1', bogus_key: 1}]",       // unknown key
        "listeners: [{name: a, address: '127.0.0.1:{PORT}', routes: [{match: {path_prefix: /}, cluster: nope}]}]", // dangling cluster
    ];
    for b in bad {
        write_config(&gw, b);
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(get(&gw, "/").text(), "good", "bad config `{b}` was applied");
    }
    let log = gw.log();
    assert!(log.contains("reload rejected"), "{log}");
    assert!(log.contains("nope"), "the error names the cause: {log}");
    // A good config after bad ones applies.
    write_config(&gw, &config(port_b, "better", false));
    wait_for_body(&gw, "better");
}

#[test]
fn listeners_are_added_and_removed_by_reload() {
    // Port 0: the gateway picks a free port when it opens listener b (no race with other tests);
    // /config says where it is.
    let gw = Gateway::start(&config(0, "a", false));
    write_config(&gw, &config(0, "a2", true));
    wait_for_body(&gw, "a2");
    let (_, cfg, _) = curl(&[&gw.admin_url("/config")]);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("config json");
    let b = cfg["listeners"]["b"]
        .as_str()
        .expect("listener b is bound")
        .to_string();
    let (ok, out, err) = curl(&[&format!("http://{b}/")]);
    assert!(ok, "{err}");
    assert_eq!(out, "listener-b");
    write_config(&gw, &config(0, "a3", false));
    wait_for_body(&gw, "a3");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::net::TcpStream::connect(b.as_str()).is_err(),
        "listener b still open"
    );
    let (_, cfg, _) = curl(&[&gw.admin_url("/config")]);
    assert!(!cfg.contains("\"b\""), "{cfg}");
}

#[test]
fn sighup_reloads() {
    let port_b = free_port();
    let mut gw = Gateway::start(&config(port_b, "one", false));
    // Write without triggering the watcher's interest: same content path, then SIGHUP.
    write_config(&gw, &config(port_b, "two", false));
    unsafe_kill(gw.pid(), libc::SIGHUP);
    wait_for_body(&gw, "two");
    assert!(gw.terminate().success());
}
