//! The admin API and the access log of a running gateway.

use std::time::Duration;

use crate::support::*;

fn config() -> &'static str {
    r#"
workers: 2
listeners:
  - name: public
    address: "127.0.0.1:{PORT}"
    routes:
      - name: hello
        match: { path_prefix: "/hello" }
        direct_response: { status: 200, body: "hi\n" }
telemetry:
  access_log: { path: "{DIR}/access.log", format: json }
"#
}

#[test]
fn health_ready_metrics_config_and_reload() {
    let gw = Gateway::start(config());
    let (ok, out, _) = curl(&[&gw.admin_url("/healthz")]);
    assert!(ok);
    assert!(out.contains("ok"), "{out}");
    let (_, code, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &gw.admin_url("/ready"),
    ]);
    assert_eq!(code, "200");
    for _ in 0..5 {
        assert_eq!(get(&gw, "/hello").status, 200);
    }
    assert_eq!(get(&gw, "/missing").status, 404);
    let (_, metrics, _) = curl(&[&gw.admin_url("/metrics")]);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("sluice_requests_total{")
                && l.contains("route=\"hello\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for route hello:\n{metrics}"));
    assert!(line.trim_end().ends_with(" 5"), "{line}");
    assert!(
        metrics.contains("sluice_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("status=\"404\""), "{metrics}");
    let (_, config, _) = curl(&[&gw.admin_url("/config")]);
    let config: serde_json::Value = serde_json::from_str(&config).expect("json");
    let v1 = config["version"].as_str().expect("version").to_string();
    assert_eq!(v1.len(), 12);
    assert!(config["last_error"].is_null());
    // POST /reload with a changed file gives the new version; a broken file is reported.
    let text = std::fs::read_to_string(&gw.config_path)
        .expect("read")
        .replace("hi\\n", "hey\\n");
    std::fs::write(&gw.config_path, text).expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = curl(&["-X", "POST", &gw.admin_url("/reload")]);
    assert!(out.contains("version"), "{out}");
    assert_eq!(get(&gw, "/hello").text(), "hey\n");
    std::fs::write(&gw.config_path, "listeners: [").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    let (_, out, _) = curl(&[
        "-X",
        "POST",
        "-w",
        " %{http_code}",
        &gw.admin_url("/reload"),
    ]);
    assert!(out.ends_with(" 500"), "{out}");
    let (_, config, _) = curl(&[&gw.admin_url("/config")]);
    let config: serde_json::Value = serde_json::from_str(&config).expect("json");
    assert!(
        config["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{config}"
    );
    assert_ne!(
        config["version"],
        v1.as_str(),
        "version is the last good one after the first reload"
    );
    let (_, metrics, _) = curl(&[&gw.admin_url("/metrics")]);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_config_reload_failures_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn access_log_is_json_per_request() {
    let gw = Gateway::start(config());
    let r = get_with(
        &gw,
        "/hello?x=1",
        &[("user-agent", "test-agent/1"), ("x-request-id", "rid-7")],
    );
    assert_eq!(r.status, 200);
    let path = gw.dir().join("access.log");
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&path).unwrap_or_default();
        if !line.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let entry: serde_json::Value =
        serde_json::from_str(line.lines().next().expect("a line")).expect("json line");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/hello?x=1");
    assert_eq!(entry["route"], "hello");
    assert_eq!(entry["listener"], "public");
    assert_eq!(entry["user_agent"], "test-agent/1");
    assert_eq!(entry["request_id"], "rid-7");
    assert_eq!(entry["client_ip"], "127.0.0.1");
    assert_eq!(entry["bytes_sent"], 3);
    assert_eq!(entry["details"], "direct_response");
}

/// Reads the access log until it has `n` lines (the log is written after each response ends).
fn access_lines(gw: &Gateway, n: usize) -> Vec<serde_json::Value> {
    let path = gw.dir().join("access.log");
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= n {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("fewer than {n} access log lines in {}", path.display());
}

/// A gateway with an access log, a route `up` to a live upstream and a route `down` (paths
/// under `/down`) to a refused port: the upstream and that port come back with it.
fn logged_up_and_down() -> (Gateway, Upstream, u16) {
    let up = Upstream::start("up");
    let refused = free_port();
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - name: down
        match: {{ path_prefix: "/down" }}
        cluster: down
      - name: moved
        match: {{ path_prefix: "/moved" }}
        cluster: up
        filters:
          - name: headers
            config: {{ response: {{ set: [{{ name: x-route, value: "%ROUTE%" }}] }} }}
      - name: copied
        match: {{ path_prefix: "/copied" }}
        cluster: up
        filters:
          - name: cors
            config: {{ allow_origins: ["https://app.example"] }}
      - name: up
        match: {{ path_prefix: "/" }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
  - name: down
    endpoints: ["127.0.0.1:{refused}"]
telemetry:
  access_log: {{ path: "{{DIR}}/access.log", format: json }}
"#,
        up.addr
    ));
    (gw, up, refused)
}

/// The line of `route` among `lines`.
fn line_of<'a>(lines: &'a [serde_json::Value], route: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["route"] == route)
        .unwrap_or_else(|| panic!("no line for route {route}: {lines:?}"))
}

#[test]
fn access_log_names_the_upstream_endpoint_of_proxied_and_failed_requests() {
    let (gw, up, refused) = logged_up_and_down();
    assert_eq!(get(&gw, "/hello").status, 200);
    assert_eq!(get(&gw, "/down").status, 503);
    let lines = access_lines(&gw, 2);
    let ok = line_of(&lines, "up");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["cluster"], "up");
    assert_eq!(ok["upstream_addr"], up.addr.to_string());
    let failed = line_of(&lines, "down");
    assert_eq!(failed["status"], 503);
    assert_eq!(failed["upstream_addr"], format!("127.0.0.1:{refused}"));
}

/// Without filters, or with filters that do not read the request headers once it is sent
/// (`headers`), the request's header map moves to the upstream request (no copy); with one that
/// does (`cors` reads Origin in the response phase) a copy stays behind. Either way the access
/// log reports the headers as the client sent them, for proxied requests and for one whose
/// upstream refused the connection, and the filters see what they need.
#[test]
fn access_log_reports_the_client_headers_of_proxied_requests() {
    let (gw, _up, _refused) = logged_up_and_down();
    let sent = [
        ("host", "site.example"),
        ("user-agent", "agent/2"),
        ("referer", "https://from.example/page"),
        ("x-forwarded-for", "203.0.113.9"),
        ("origin", "https://app.example"),
    ];
    let r = get_with(&gw, "/hello", &sent);
    assert_eq!(r.status, 200);
    // The upstream got the forwarded value, the log keeps the received one.
    assert_eq!(
        r.json()["headers"]["x-forwarded-for"][0],
        "203.0.113.9, 127.0.0.1"
    );
    assert_eq!(get_with(&gw, "/down", &sent).status, 503);
    let moved = get_with(&gw, "/moved", &sent);
    assert_eq!(moved.status, 200);
    assert_eq!(moved.header("x-route"), Some("moved"));
    assert_eq!(
        moved.json()["headers"]["x-forwarded-for"][0],
        "203.0.113.9, 127.0.0.1"
    );
    let copied = get_with(&gw, "/copied", &sent);
    assert_eq!(copied.status, 200);
    assert_eq!(
        copied.header("access-control-allow-origin"),
        Some("https://app.example"),
        "the response phase read the request's Origin"
    );
    assert_eq!(
        copied.json()["headers"]["x-forwarded-for"][0],
        "203.0.113.9, 127.0.0.1"
    );
    let lines = access_lines(&gw, 4);
    for route in ["up", "down", "moved", "copied"] {
        let line = line_of(&lines, route);
        assert_eq!(line["authority"], "site.example", "{line}");
        assert_eq!(line["user_agent"], "agent/2", "{line}");
        assert_eq!(line["referer"], "https://from.example/page", "{line}");
        assert_eq!(line["x_forwarded_for"], "203.0.113.9", "{line}");
    }
}
