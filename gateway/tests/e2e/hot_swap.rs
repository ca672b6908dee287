//! Hot swap of plugins: two different modules swapped in place under keep-alive load, bad
//! plugin reloads rejected whole, the config version covering plugin files (and shown per
//! request), and no memory kept across a thousand plugin reloads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::load::Load;
use crate::support::*;

/// Response header naming the config version (set by `debug.config_version_header`).
const VERSION_HEADER: &str = "x-sluice-config-version";

/// The first-party plugins built by `scripts/build-plugins.sh`.
fn plugin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh",
        p.display()
    );
    p
}

/// Module A (`add_header`) sets `x-hello: world`; module B (`rs_config`) accepts the same
/// configuration but only echoes it (`x-config-plugin`), so `x-hello` tells which one ran.
const MODULE_A: &str = "add_header.wasm";
const MODULE_B: &str = "rs_config.wasm";

fn config(body: &str, plugin_config: &str) -> String {
    format!(
        r#"
workers: 2
debug: {{ config_version_header: {VERSION_HEADER} }}
plugins:
  - name: swap
    wasm: plugin.wasm
    config: {plugin_config}
listeners:
  - name: a
    address: "127.0.0.1:{{PORT}}"
    filters: [{{ plugin: swap }}]
    routes:
      - match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "{body}" }}
"#
    )
}

const HELLO: &str = "{ header: x-hello, value: world }";

/// Replace `dest` atomically (write aside, rename), as deploy tools do.
fn install(dest: &Path, bytes: &[u8]) {
    let tmp = dest.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, dest).expect("rename");
}

fn install_module(gw: &Gateway, module: &str) {
    let bytes = std::fs::read(plugin(module)).expect("read plugin");
    install(&gw.dir().join("plugin.wasm"), &bytes);
}

fn write_config(gw: &Gateway, yaml: &str) {
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:{}\" }}\n{}",
        gw.admin_port,
        yaml.replace("{PORT}", &gw.port.to_string())
    );
    install(&gw.config_path, yaml.as_bytes());
}

/// Start a gateway whose `plugin.wasm` is `module`, placed before the config is read.
fn start(module: &str, yaml: &str) -> Gateway {
    // The gateway reads plugin.wasm from its config directory, which `Gateway::start` creates:
    // point the config at an absolute path first, then switch to the in-directory file.
    let first = yaml.replace(
        "wasm: plugin.wasm",
        &format!("wasm: {}", plugin(module).display()),
    );
    let gw = Gateway::start(&first);
    // The watcher is armed before the admin API answers.
    wait_for(&gw, "/ready", |g| curl(&["-f", &g.admin_url("/ready")]).0);
    install_module(&gw, module);
    write_config(&gw, yaml);
    wait_for(&gw, "the in-directory plugin to load", |_| {
        admin_json(&gw, "/config")["config"]["plugins"][0]["wasm"] == "plugin.wasm"
    });
    gw
}

fn admin_json(gw: &Gateway, path: &str) -> serde_json::Value {
    let (ok, out, err) = curl(&[&gw.admin_url(path)]);
    assert!(ok, "{path}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {out}"))
}

fn admin_post(gw: &Gateway, path: &str) -> (bool, String) {
    let (_, out, _) = curl(&["-X", "POST", "-w", "\n%{http_code}", &gw.admin_url(path)]);
    let code = out.lines().last().unwrap_or_default().to_string();
    (code == "200", out)
}

/// Poll `cond` until it holds (generous timeout only to avoid hanging).
fn wait_for(gw: &Gateway, what: &str, mut cond: impl FnMut(&Gateway) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond(gw) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}; log:\n{}", gw.log());
}

fn hello(gw: &Gateway) -> Option<String> {
    get(gw, "/").header("x-hello").map(str::to_string)
}

fn failures(gw: &Gateway) -> u64 {
    admin_json(gw, "/config")["reload_failures"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn plugins_and_routes_swap_under_load_with_zero_failures() {
    let gw = start(MODULE_A, &config("r0", HELLO));
    let load = Load::start_watching(gw.addr(), "/", 16, 2000, Some("x-hello"));
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let mut versions = vec![admin_json(&gw, "/config")["version"].to_string()];
    let (mut plugin_swaps, mut route_edits) = (0, 0);
    while plugin_swaps < 20 || route_edits < 20 || started.elapsed() < Duration::from_secs(10) {
        if plugin_swaps <= route_edits {
            plugin_swaps += 1;
            // Only the module changes; the YAML stays byte for byte the same.
            let (module, want) = if plugin_swaps % 2 == 1 {
                (MODULE_B, None)
            } else {
                (MODULE_A, Some("world".to_string()))
            };
            install_module(&gw, module);
            wait_for(&gw, &format!("{module} to serve"), |g| hello(g) == want);
        } else {
            route_edits += 1;
            let body = format!("r{route_edits}");
            write_config(&gw, &config(&body, HELLO));
            wait_for(&gw, &body, |g| get(g, "/").text() == body);
        }
        // Each change is a new config version, and the version header names the one in force.
        let version = admin_json(&gw, "/config")["version"].to_string();
        assert!(!versions.contains(&version), "version {version} reused");
        let served = get(&gw, "/");
        assert_eq!(
            served.header(VERSION_HEADER).map(|v| format!("\"{v}\"")),
            Some(version.clone())
        );
        versions.push(version);
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed();
    let report = load.stop();
    eprintln!(
        "{} ok, {} failed in {elapsed:?} ({:.0} req/s); {plugin_swaps} plugin swaps, {route_edits} route edits",
        report.ok,
        report.failed,
        report.ok as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(report.failed, 0, "failures: {:?}", report.errors);
    assert!(report.ok > 5000, "too few requests: {}", report.ok);
    assert!(
        report.bodies.len() >= 15,
        "responses did not follow the route edits: {:?}",
        report.bodies
    );
    assert!(
        report.header_values.contains(&"world".to_string())
            && report.header_values.contains(&"<none>".to_string()),
        "responses did not follow the plugin swaps: {:?}",
        report.header_values
    );
}

#[test]
fn bad_plugin_reloads_keep_the_old_plugin_serving() {
    let gw = start(MODULE_A, &config("ok", HELLO));
    let good = admin_json(&gw, "/config")["version"].clone();
    let wasm = gw.dir().join("plugin.wasm");
    let module_a = std::fs::read(plugin(MODULE_A)).expect("read");
    type Break = Box<dyn Fn(&Gateway)>;
    let cases: Vec<(&str, &str, Break)> = vec![
        (
            "bytes that are not wasm",
            "plugin swap",
            Box::new(move |_: &Gateway| install(&wasm, b"\0asm but not really")),
        ),
        (
            "a module whose on_configure returns false",
            "on_configure returned false",
            Box::new(|g: &Gateway| {
                // One file changes: the config now names module B and a config it rejects.
                let b = plugin(MODULE_B).display().to_string();
                let yaml = config("ok", "{ fail: true }").replace("plugin.wasm", &b);
                write_config(g, &yaml);
            }),
        ),
        (
            "a missing plugin file",
            "missing.wasm",
            Box::new(|g: &Gateway| {
                let yaml = config("ok", HELLO).replace("plugin.wasm", "missing.wasm");
                write_config(g, &yaml);
            }),
        ),
    ];
    for (what, cause, break_it) in cases {
        let before = failures(&gw);
        break_it(&gw);
        wait_for(&gw, &format!("{what} to be rejected"), |g| {
            failures(g) > before
        });
        let cfg = admin_json(&gw, "/config");
        let err = cfg["last_error"].as_str().unwrap_or_default().to_string();
        assert!(
            err.contains(cause),
            "{what}: last_error does not say why: {err}"
        );
        assert_eq!(cfg["version"], good, "{what}: the version in force changed");
        assert_eq!(hello(&gw).as_deref(), Some("world"), "{what} was applied");
        // Put the good files back (a no-op reload: same version as the one serving).
        install(&gw.dir().join("plugin.wasm"), &module_a);
        write_config(&gw, &config("ok", HELLO));
        wait_for(&gw, "the good config to be back", |g| {
            admin_json(g, "/config")["last_error"].is_null()
        });
    }
    let (_, metrics, _) = curl(&[&gw.admin_url("/metrics")]);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("sluice_config_reload_failures_total"))
        .unwrap_or_else(|| panic!("no failure counter in /metrics:\n{metrics}"));
    let counted: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(counted >= 3.0, "{line}");
    let log = gw.log();
    assert!(log.contains("reload rejected"), "{log}");
}

#[test]
fn plugins_show_the_version_of_each_module() {
    let gw = start(MODULE_A, &config("ok", HELLO));
    let sha_a = admin_json(&gw, "/plugins")["plugins"][0]["sha256"].clone();
    let version_a = admin_json(&gw, "/config")["version"].clone();
    install_module(&gw, MODULE_B);
    wait_for(&gw, "module B", |g| hello(g).is_none());
    let plugins = admin_json(&gw, "/plugins");
    assert_ne!(plugins["plugins"][0]["sha256"], sha_a);
    assert_ne!(plugins["config_version"], version_a);
    assert_eq!(
        plugins["config_version"],
        admin_json(&gw, "/config")["version"]
    );
}

/// Resident memory of the gateway now, in KiB.
fn rss_kib(gw: &Gateway) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn gauge(gw: &Gateway, name: &str) -> u64 {
    let (_, metrics, _) = curl(&[&gw.admin_url("/metrics")]);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// A leaked VM holds at least its linear memory (add_header starts with 17 pages, 1.1 MiB) and
/// its instance; a thousand leaked versions would add hundreds of MiB. 64 MiB leaves room for
/// allocator arenas and caches settling, and the gauges below catch a leak of any size.
const RSS_BOUND_KIB: u64 = 64 * 1024;
const RELOADS: usize = 1000;

#[test]
fn a_thousand_plugin_reloads_keep_memory_bounded() {
    let gw = start(MODULE_A, &config("ok", HELLO));
    // Streams on both workers, so VMs are created for each version and retired.
    let load = Load::start(gw.addr(), "/", 4, 200);
    let modules = [
        std::fs::read(plugin(MODULE_A)).expect("read"),
        std::fs::read(plugin(MODULE_B)).expect("read"),
    ];
    let wasm = gw.dir().join("plugin.wasm");
    let reload = |i: usize| {
        install(&wasm, &modules[i % 2]);
        let (ok, out) = admin_post(&gw, "/reload");
        assert!(ok, "reload {i} failed: {out}");
    };
    // Warm up: module cache entries, allocator arenas, metric series.
    for i in 0..50 {
        reload(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(&gw);
    for i in 50..50 + RELOADS {
        reload(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(&gw);
    let report = load.stop();
    // Retired versions go once their last stream is done: on a busy machine that can take a
    // moment after the last reload, so the gauges get a few seconds to settle (a leak never
    // does).
    let settle = Instant::now() + Duration::from_secs(10);
    let (plugins, vms) = loop {
        let plugins = gauge(&gw, "sluice_wasm_plugins_live");
        let vms = gauge(&gw, "sluice_wasm_worker_vms_live");
        if (plugins <= 2 && vms <= 4) || Instant::now() > settle {
            break (plugins, vms);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "RSS {before} KiB -> {after} KiB after {RELOADS} plugin reloads; live plugins {plugins}, worker VMs {vms}; {} requests",
        report.ok
    );
    assert_eq!(report.failed, 0, "failures: {:?}", report.errors);
    assert!(plugins <= 2, "plugin versions leaked: {plugins} alive");
    // Two workers, one plugin: the VM in force and at most one retired per worker.
    assert!(vms <= 4, "worker VMs leaked: {vms} alive");
    assert!(
        after <= before + RSS_BOUND_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// A `sluice run --handover` process, killed if the test ends early.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        unsafe_kill(self.0.id(), libc::SIGKILL);
        let _ = self.0.wait();
    }
}

fn spawn_with_handover(config: &Path, handover: &Path, log: &Path) -> Process {
    let log = std::fs::File::create(log).expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg("-c")
        .arg(config)
        .arg("--handover")
        .arg(handover)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::from(log.try_clone().expect("clone")))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("spawn sluice");
    Process(child)
}

fn wait_ready(admin: &str, logs: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if curl(&["-f", &format!("{admin}/ready")]).0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not ready; log:\n{}", read_logs(logs));
}

fn read_logs(dir: &Path) -> String {
    ["old.log", "new.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            format!("--- {f}\n{text}")
        })
        .collect()
}

#[test]
fn binary_upgrade_under_load_with_zero_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let admin = format!("http://127.0.0.1:{admin_port}");
    let write = |name: &str, body: &str| {
        let yaml = format!(
            r#"
admin: {{ address: "127.0.0.1:{admin_port}" }}
workers: 2
listeners:
  - name: a
    address: "127.0.0.1:{port}"
    routes: [{{ match: {{ path_prefix: "/" }}, direct_response: {{ status: 200, body: "{body}" }} }}]
"#
        );
        let p = dir.path().join(name);
        std::fs::write(&p, yaml).expect("write config");
        p
    };
    // The new binary comes with its own config, so responses say which process served them.
    let (old_cfg, new_cfg) = (write("old.yaml", "old"), write("new.yaml", "new"));
    let sock = dir.path().join("handover.sock");
    let mut old = spawn_with_handover(&old_cfg, &sock, &dir.path().join("old.log"));
    wait_ready(&admin, dir.path());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let load = Load::start(addr, "/", 16, 2000);
    std::thread::sleep(Duration::from_secs(2));
    let _new = spawn_with_handover(&new_cfg, &sock, &dir.path().join("new.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = old.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the old process did not drain; logs:\n{}",
            read_logs(dir.path())
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_ready(&admin, dir.path());
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
    let logs = read_logs(dir.path());
    eprintln!(
        "{} ok, {} failed across the upgrade",
        report.ok, report.failed
    );
    assert!(status.success(), "old process exit: {status:?}\n{logs}");
    assert_eq!(report.failed, 0, "failures: {:?}\n{logs}", report.errors);
    assert_eq!(report.bodies, vec!["old", "new"], "{logs}");
    assert!(report.ok > 2000, "too few requests: {}", report.ok);
    assert!(logs.contains("took over the listening sockets"), "{logs}");
}

// ---------------------------------------------------------------------------------------------
// Reload latency benchmark (not a test): `SLUICE_RELOAD_BENCH=1 cargo test --release -p sluice
// --test e2e reload_latency -- --nocapture`. Set SLUICE_BIN to measure another build.

/// Swaps measured per case.
const BENCH_SWAPS: usize = 100;
/// Plugin size for the plugin cases: a real module padded with a custom section.
const BENCH_PLUGIN_BYTES: usize = 2 * 1024 * 1024;

/// `module` with a custom section appended so that the file is `total` bytes; `salt` makes the
/// bytes (and so the sha256, the module cache key) unique.
fn padded(module: &[u8], total: usize, salt: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = format!("sluice-bench-pad-{salt}");
    let payload = total.saturating_sub(module.len() + name.len() + 8);
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.resize(content.len() + payload, 0);
    let mut out = module.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

/// A keep-alive HTTP/1.1 client on a std socket: the least overhead between polls.
struct Poller {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Poller {
    fn connect(addr: SocketAddr) -> Poller {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Poller {
            stream,
            buf: Vec::new(),
        }
    }

    /// GET / and return (x-hello header or "", body).
    fn get(&mut self) -> (String, String) {
        use std::io::{Read, Write};
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
            .expect("write");
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_lowercase();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        let len: usize = field("content-length:").parse().expect("content-length");
        while self.buf.len() < head_end + len {
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + len]).into_owned();
        (field("x-hello:"), body)
    }
}

/// Milliseconds from `change()` to the first response for which `switched` holds.
fn time_swap(
    poller: &mut Poller,
    change: impl FnOnce(),
    switched: impl Fn(&(String, String)) -> bool,
) -> f64 {
    let t0 = Instant::now();
    change();
    let deadline = t0 + Duration::from_secs(30);
    loop {
        let r = poller.get();
        if switched(&r) {
            return t0.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(Instant::now() < deadline, "the change was never served");
    }
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.50), rank(0.99))
}

fn bench_gateway(dir: &Path, yaml: &str) -> (Process, SocketAddr) {
    let (port, admin_port) = (free_port(), free_port());
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:{admin_port}\" }}\n{}",
        yaml.replace("{PORT}", &port.to_string())
    );
    let cfg = dir.join("sluice.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let bin = std::env::var("SLUICE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").into());
    let log = std::fs::File::create(dir.join("sluice.log")).expect("log");
    let child = std::process::Command::new(bin)
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::from(log.try_clone().expect("clone")))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("spawn sluice");
    let p = Process(child);
    wait_ready(&format!("http://127.0.0.1:{admin_port}"), dir);
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn reload_latency() {
    if std::env::var("SLUICE_RELOAD_BENCH").as_deref() != Ok("1") {
        eprintln!("reload_latency: a benchmark; set SLUICE_RELOAD_BENCH=1 to run it");
        return;
    }
    let mut rows = Vec::new();

    // Config only: a route's body changes.
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = |body: &str| {
        format!(
            "workers: 1\nlisteners:\n  - name: a\n    address: \"127.0.0.1:{{PORT}}\"\n    routes: [{{ match: {{ path_prefix: \"/\" }}, direct_response: {{ status: 200, body: \"{body}\" }} }}]\n"
        )
    };
    let (_gw, addr) = bench_gateway(dir.path(), &routes("b0"));
    let cfg_text = std::fs::read_to_string(dir.path().join("sluice.yaml")).expect("read");
    let mut poller = Poller::connect(addr);
    let mut samples = Vec::new();
    for i in 1..=BENCH_SWAPS {
        let body = format!("b{i}");
        let text = cfg_text.replace("\"b0\"", &format!("\"{body}\""));
        let ms = time_swap(
            &mut poller,
            || install(&dir.path().join("sluice.yaml"), text.as_bytes()),
            |(_, b)| *b == body,
        );
        samples.push(ms);
        std::thread::sleep(Duration::from_millis(100));
    }
    rows.push(("config only (route edit)", percentiles(samples)));

    // Plugins: a ~2 MB module swapped in place, alternating two modules.
    let a = std::fs::read(plugin(MODULE_A)).expect("read");
    let b = std::fs::read(plugin(MODULE_B)).expect("read");
    for (case, cold) in [
        ("2 MB plugin, module cache hit", false),
        ("2 MB plugin, cold compile", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let wasm = dir.path().join("plugin.wasm");
        std::fs::write(&wasm, padded(&a, BENCH_PLUGIN_BYTES, "a")).expect("write");
        let yaml = format!(
            "workers: 1\nplugins:\n  - {{ name: swap, wasm: plugin.wasm, config: {HELLO} }}\nlisteners:\n  - name: a\n    address: \"127.0.0.1:{{PORT}}\"\n    filters: [{{ plugin: swap }}]\n    routes: [{{ match: {{ path_prefix: \"/\" }}, direct_response: {{ status: 200, body: ok }} }}]\n"
        );
        let (_gw, addr) = bench_gateway(dir.path(), &yaml);
        let mut poller = Poller::connect(addr);
        let mut samples = Vec::new();
        // Warm-up swaps (not measured) put both modules in the cache for the cache-hit case.
        for i in 0..BENCH_SWAPS + 2 {
            let to_b = i % 2 == 0;
            let salt = match (cold, to_b) {
                (true, _) => format!("cold-{i}"),
                (false, true) => "b".to_string(),
                (false, false) => "a".to_string(),
            };
            let bytes = padded(if to_b { &b } else { &a }, BENCH_PLUGIN_BYTES, &salt);
            let ms = time_swap(
                &mut poller,
                || install(&wasm, &bytes),
                |(hello, _)| hello.is_empty() == to_b,
            );
            if i >= 2 {
                samples.push(ms);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        rows.push((case, percentiles(samples)));
    }
    println!("| case | swaps | p50 (ms) | p99 (ms) |\n| --- | --- | --- | --- |");
    for (case, (p50, p99)) in rows {
        println!("| {case} | {BENCH_SWAPS} | {p50:.1} | {p99:.1} |");
    }
}
