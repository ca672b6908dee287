//! L7 → kernel, end to end: a real `sluice run` inside a network namespace with the XDP program
//! on its veth; a client namespace sends real HTTP. The local-rate-limit filter bans a source
//! after repeated rejections and the kernel then drops that source's packets until the ban
//! expires, while another source keeps being served. Addresses are in 198.18.0.0/15 only.

mod xdp_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xdp_support::netns::Netns;
use xdp_support::xdp_available;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// curl from namespace `ns`, bound to `src`, with optional extra headers; returns the HTTP
/// status, or None when no connection could be made within 1 s.
fn curl_from(ns: &str, src: &str, url: &str, headers: &[&str]) -> Option<u16> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null"])
        .args([
            "-w",
            "%{http_code}",
            "--connect-timeout",
            "1",
            "--max-time",
            "3",
        ])
        .args(["--interface", src]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|c| *c != 0)
}

/// A gateway running `config` inside the server namespace, answering the `good` source.
struct Gateway {
    _proc: Proc,
    _dir: tempfile::TempDir,
    url: String,
}

fn start_gateway(ns: &Netns, config: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sluice.yaml");
    std::fs::write(&cfg, config).expect("write config");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let proc = Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns.s(), env!("CARGO_BIN_EXE_sluice")])
            .args(["run", "--no-watch", "-c"])
            .arg(&cfg)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice"),
    );
    let url = format!("http://{}:8080/", ns.addr(1));
    let good = ns.addr(2).to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl_from(&ns.c(), &good, &url, &[]) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "gateway did not start: {}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Gateway {
        _proc: proc,
        _dir: dir,
        url,
    }
}

/// Waits (bounded) until `src` can connect again after its ban expires.
fn wait_for_ban_expiry(ns: &Netns, src: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl_from(&ns.c(), src, url, &[]).is_none() {
        assert!(Instant::now() < deadline, "the ban never expired");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn rate_limit_filter_bans_in_the_kernel_until_expiry() {
    if !xdp_available("rate_limit_filter_bans_in_the_kernel_until_expiry") {
        return;
    }
    let ns = Netns::new();
    let gw = start_gateway(
        &ns,
        &format!(
            r#"
workers: 1
admin: {{ address: "127.0.0.1:9901" }}
listeners:
  - name: edge
    address: "{}:8080"
    filters:
      - name: local-rate-limit
        config: {{ requests_per_second: 0.2, burst: 2, ban: {{ after: 3, window: 1m, ttl: 8s }} }}
    routes:
      - match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "ok\n" }}
xdp:
  interface: xa
  mode: skb
  required: true
"#,
            ns.addr(1)
        ),
    );
    let (bad, good) = (ns.addr(3).to_string(), ns.addr(2).to_string());
    // The bad source exhausts its burst, collects rejections, and is banned. Stop at the first
    // refused connection: each one costs a 1 s connect timeout, and the ban lasts 8 s.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let status = curl_from(&ns.c(), &bad, &gw.url, &[]);
        statuses.push(status);
        if status.is_none() {
            break;
        }
    }
    assert!(statuses.contains(&Some(429)), "{statuses:?}");
    assert_eq!(
        statuses.last(),
        Some(&None),
        "the banned source still connects: {statuses:?}"
    );
    // Another source is still served (its own bucket, not banned).
    assert_eq!(curl_from(&ns.c(), &good, &gw.url, &[]), Some(200));
    // The kernel counted ban drops.
    let metrics = Command::new("ip")
        .args(["netns", "exec", &ns.s(), "curl", "-s"])
        .arg("http://127.0.0.1:9901/metrics")
        .output()
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_xdp_packets_total")
                && l.contains("reason=\"ban\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    // After the ban expires the source connects again (it may still be rate limited: 429).
    wait_for_ban_expiry(&ns, &bad, &gw.url);
}

#[test]
fn a_plugin_bans_a_source_in_the_kernel() {
    if !xdp_available("a_plugin_bans_a_source_in_the_kernel") {
        return;
    }
    let plugin =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/rs_foreign.wasm");
    assert!(
        plugin.exists(),
        "{} is missing: run scripts/build-plugins.sh",
        plugin.display()
    );
    let ns = Netns::new();
    let gw = start_gateway(
        &ns,
        &format!(
            r#"
workers: 1
admin: {{ address: "127.0.0.1:9901" }}
listeners:
  - name: edge
    address: "{}:8080"
    filters:
      - plugin: banner
    routes:
      - match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "ok\n" }}
plugins:
  - name: banner
    wasm: "{}"
xdp:
  interface: xa
  mode: skb
  required: true
  ban_default_ttl: 5s
"#,
            ns.addr(1),
            plugin.display()
        ),
    );
    let (bad, good) = (ns.addr(3).to_string(), ns.addr(2).to_string());
    let url = &gw.url;
    assert_eq!(
        curl_from(&ns.c(), &bad, url, &[]),
        Some(200),
        "served before the ban"
    );
    // The plugin calls sluice.ban_source for this request's client.
    assert_eq!(curl_from(&ns.c(), &bad, url, &["x-ban-me: 1"]), Some(200));
    assert_eq!(
        curl_from(&ns.c(), &bad, url, &[]),
        None,
        "the banned source still connects"
    );
    assert_eq!(
        curl_from(&ns.c(), &good, url, &[]),
        Some(200),
        "another source is served"
    );
    wait_for_ban_expiry(&ns, &bad, url);
}
