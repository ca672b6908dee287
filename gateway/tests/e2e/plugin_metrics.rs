//! The gateway's figures about wasm plugins on /metrics, with real plugins through a real
//! gateway: time per phase, VMs and their memory, failures by kind.

use std::time::{Duration, Instant};

use crate::support::*;

/// The value of the sample `series` (name and labels exactly as rendered).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn phase_times_vms_memory_and_failures_per_plugin() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - name: stamp
        match: {{ path_prefix: "/stamp" }}
        cluster: app
        filters: [{{ plugin: stamp }}]
      - name: trap
        match: {{ path_prefix: "/trap" }}
        cluster: app
        filters: [{{ plugin: trap }}]
      - name: grow
        match: {{ path_prefix: "/grow" }}
        cluster: app
        filters: [{{ plugin: grow }}]
clusters:
  - name: app
    endpoints: ["{up}"]
plugins:
  - name: stamp
    wasm: "{stamp}"
    config:
      response:
        - {{ name: x-stamped, value: "1" }}
  - name: trap
    wasm: "{trap}"
    config: request_headers
  - name: grow
    wasm: "{grow}"
    config: {{ where: request_headers, mode: grow }}
    limits: {{ memory: 4MiB }}
"#,
        up = up.addr,
        stamp = wasm("add_header.wasm").display(),
        trap = wasm("rs_hostile_trap.wasm").display(),
        grow = wasm("rs_hostile_memory.wasm").display(),
    ));
    for _ in 0..3 {
        let r = get(&gw, "/stamp");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-stamped"), Some("1"));
    }
    assert_eq!(get(&gw, "/trap").status, 503);
    let r = get(&gw, "/grow");
    assert_eq!(r.status, 200, "{}", r.text());

    let count = |phase: &str| {
        format!("sluice_plugin_phase_seconds_count{{plugin=\"stamp\",phase=\"{phase}\"}}")
    };
    // The log phase runs after the response went out: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let (_, m, _) = curl(&[&gw.admin_url("/metrics")]);
        if value(&m, &count("log")) == Some(3.0) {
            break m;
        }
        assert!(Instant::now() < deadline, "log phases not counted:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for phase in ["request_headers", "response_headers"] {
        assert_eq!(value(&m, &count(phase)), Some(3.0), "{phase}:\n{m}");
        let inf = format!(
            "sluice_plugin_phase_seconds_bucket{{plugin=\"stamp\",phase=\"{phase}\",le=\"+Inf\"}}"
        );
        assert_eq!(value(&m, &inf), Some(3.0), "{m}");
    }
    let sum = value(
        &m,
        "sluice_plugin_phase_seconds_sum{plugin=\"stamp\",phase=\"request_headers\"}",
    )
    .expect("a sum");
    assert!(sum > 0.0, "{m}");

    // One worker: one VM per plugin that runs; the trapped one is gone.
    assert_eq!(
        value(&m, "sluice_plugin_vms{plugin=\"stamp\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "sluice_plugin_vms{plugin=\"grow\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "sluice_plugin_vms{plugin=\"trap\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "sluice_plugin_vm_memory_bytes{plugin=\"trap\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "sluice_plugin_failures_total{plugin=\"trap\",kind=\"trap\"}"
        ),
        Some(1.0),
        "{m}"
    );

    // Linear memory is whole 64 KiB pages; the grower stopped at its 4 MiB cap.
    let page = 65536.0;
    let stamp = value(&m, "sluice_plugin_vm_memory_bytes{plugin=\"stamp\"}").expect("stamp");
    let grow = value(&m, "sluice_plugin_vm_memory_bytes{plugin=\"grow\"}").expect("grow");
    assert!(stamp >= page && stamp % page == 0.0, "{stamp}");
    assert!(
        grow > 4.0 * 1024.0 * 1024.0 - page && grow <= 4.0 * 1024.0 * 1024.0,
        "{grow}"
    );
    assert!(grow > stamp, "{grow} {stamp}");
}
