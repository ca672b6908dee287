//! Routing, actions and proxy semantics through a real gateway.

use std::time::Duration;

use crate::support::*;

fn two_upstreams_config(a: &Upstream, b: &Upstream) -> String {
    format!(
        r#"
workers: 2
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - name: api-host
        match: {{ host: "api.example.com", path_prefix: "/" }}
        cluster: a
      - name: wildcard
        match: {{ host: "*.example.net" }}
        cluster: b
      - name: exact
        match: {{ path: "/exact" }}
        direct_response: {{ status: 200, body: "exact\n" }}
      - name: regex
        match: {{ path_regex: "/users/[0-9]+" }}
        direct_response: {{ status: 200, body: "user\n" }}
      - name: methods
        match: {{ path_prefix: "/m/", methods: [POST] }}
        direct_response: {{ status: 201, body: "posted\n" }}
      - name: canary
        match: {{ path_prefix: "/svc/", headers: [{{ name: x-canary, value: "1" }}] }}
        cluster: b
      - name: svc
        match: {{ path_prefix: "/svc/" }}
        cluster: a
        rewrite: {{ path_prefix: "/internal/", host: internal.api }}
      - name: old
        match: {{ path_prefix: "/old/" }}
        redirect: {{ path_prefix: "/new/", status: 302 }}
      - name: secure
        match: {{ path_prefix: "/secure" }}
        redirect: {{ https_redirect: true }}
      - name: weighted
        match: {{ path_prefix: "/w" }}
        weighted_clusters: [{{ name: a, weight: 80 }}, {{ name: b, weight: 20 }}]
      - name: direct
        match: {{ path_prefix: "/d" }}
        direct_response: {{ status: 418, body: "teapot\n", headers: [{{ name: x-d, value: "1" }}] }}
clusters:
  - name: a
    endpoints: ["{a}"]
  - name: b
    endpoints: ["{b}"]
"#,
        a = a.addr,
        b = b.addr
    )
}

#[test]
fn routes_by_host_path_method_and_header() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let r = get_with(&gw, "/anything", &[("host", "API.example.com")]);
    assert_eq!(r.header("x-upstream"), Some("a"), "{}", r.text());
    let r = get_with(&gw, "/x", &[("host", "deep.sub.example.net:8080")]);
    assert_eq!(r.header("x-upstream"), Some("b"));
    assert_eq!(get(&gw, "/exact").text(), "exact\n");
    assert_eq!(get(&gw, "/exact/no").status, 404);
    assert_eq!(get(&gw, "/users/42").text(), "user\n");
    assert_eq!(get(&gw, "/users/x").status, 404);
    assert_eq!(request(&gw, "POST", "/m/x", &[], "").status, 201);
    assert_eq!(get(&gw, "/m/x").status, 404);
    assert_eq!(
        get_with(&gw, "/svc/q", &[("x-canary", "1")]).header("x-upstream"),
        Some("b")
    );
    let r = get(&gw, "/svc/q?z=1");
    assert_eq!(r.header("x-upstream"), Some("a"));
    let echo = r.json();
    assert_eq!(echo["uri"], "/internal/q?z=1");
    assert_eq!(echo["headers"]["host"][0], "internal.api");
    let d = get(&gw, "/d");
    assert_eq!(
        (d.status, d.text().as_str(), d.header("x-d")),
        (418, "teapot\n", Some("1"))
    );
}

#[test]
fn redirects() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let r = get_with(&gw, "/old/p/q?x=1", &[("host", "site.test")]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://site.test/new/p/q?x=1"));
    let r = get_with(&gw, "/secure/a", &[("host", "site.test:8080")]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://site.test/secure/a"));
}

#[test]
fn weighted_clusters_split_traffic() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let mut to_a = 0;
    for _ in 0..200 {
        if get(&gw, "/w").header("x-upstream") == Some("a") {
            to_a += 1;
        }
    }
    // 80/20 split: with 200 draws, a gets 160 ± a wide margin.
    assert!((120..=190).contains(&to_a), "a got {to_a} of 200");
}

#[test]
fn no_route_is_404_and_grpc_gets_grpc_status() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let r = get(&gw, "/nothing-here");
    assert_eq!(r.status, 404);
    let r = get_with(
        &gw,
        "/nothing-here",
        &[("content-type", "application/grpc")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("12"));
}

#[test]
fn proxy_headers_are_set_and_hop_by_hop_removed() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let r = get_with(
        &gw,
        "/svc/h",
        &[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-end", "kept"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert!(
        h.get("x-hop").is_none(),
        "connection-listed header forwarded: {h}"
    );
    assert!(h.get("keep-alive").is_none());
    assert!(h.get("proxy-authorization").is_none());
    assert_eq!(h["x-end"][0], "kept");
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    let id = h["x-request-id"][0].as_str().expect("request id set");
    assert_eq!(id.len(), 36);
    // An incoming request id is kept.
    let r = get_with(&gw, "/svc/h", &[("x-request-id", "abc-123")]);
    assert_eq!(r.json()["headers"]["x-request-id"][0], "abc-123");
}

#[test]
fn h2c_prior_knowledge_and_h1_both_reach_an_h1_upstream() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let req = hyper::Request::builder()
        .uri(format!("http://api.example.com:{}/h2", gw.port))
        .body(full(""))
        .expect("req");
    let r = send(gw.addr(), req, true).expect("h2c request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("a"));
    assert_eq!(r.json()["version"], "HTTP/1.1");
    assert_eq!(
        r.json()["headers"]["host"][0],
        format!("api.example.com:{}", gw.port)
    );
}

#[test]
fn large_bodies_stream_both_ways_without_buffering() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b).replace(
        "    routes:",
        "    limits: { max_request_body_size: 2GiB }\n    routes:",
    ));
    const GIB: u64 = 1 << 30;
    // Download 1 GiB (chunked from the upstream), counted by curl, never stored.
    let (ok, out, err) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "-H",
        "host: api.example.com",
        &gw.url(&format!("/bytes/{GIB}")),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), GIB.to_string());
    // Upload 1 GiB with chunked encoding from a generator; the upstream counts it.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {GIB} /dev/zero | curl -sS --max-time 120 -H 'host: api.example.com' -H 'transfer-encoding: chunked' -T - {}",
            gw.url("/upload")
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut out).expect("read");
    assert!(child.wait().expect("wait").success());
    assert_eq!(out.trim(), GIB.to_string());
    let rss = gw.peak_rss_kib();
    assert!(
        rss > 0 && rss < 200 * 1024,
        "peak RSS {rss} KiB: bodies were buffered"
    );
}

#[test]
fn expect_100_continue_is_honoured() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let body = "z".repeat(100_000);
    let path = gw.dir().join("body.txt");
    std::fs::write(&path, &body).expect("write");
    let (ok, out, err) = curl(&[
        "-H",
        "host: api.example.com",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", path.display()),
        &gw.url("/upload"),
        "-w",
        " %{http_code}",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out, "100000 200");
}

#[test]
fn websocket_upgrade_passes_through() {
    use std::io::{Read, Write};
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&two_upstreams_config(&a, &b));
    let mut s = std::net::TcpStream::connect(gw.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: api.example.com\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").expect("write");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).expect("read 101");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    s.write_all(b"ping-through-the-gateway").expect("write");
    let mut got = Vec::new();
    while got.len() < 24 {
        let n = s.read(&mut buf).expect("echo");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(&got, b"ping-through-the-gateway");
}

/// `sluice run` turns transparent huge pages off for its process: with them, every touched
/// 2 MiB piece of the allocator's heap region was a resident huge page (14 MiB of them, twice
/// the resident memory of nginx for the same job). Checked on the running gateway after some
/// load: the process says THP is off, and none of its memory is in huge pages.
#[test]
fn the_gateway_process_runs_without_transparent_huge_pages() {
    let up = Upstream::start("up");
    let gw = Gateway::proxying_to(&up, 2);
    let load = crate::load::Load::start(gw.addr(), "/", 8, 2000);
    std::thread::sleep(Duration::from_millis(700));
    let report = load.stop();
    assert!(report.ok > 100, "{report:?}");
    let pid = gw.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert!(line.ends_with('0'), "{line}");
    }
    let rollup =
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let huge = rollup
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .expect("AnonHugePages in smaps_rollup");
    assert_eq!(
        huge.split_whitespace().nth(1),
        Some("0"),
        "{huge}\n{rollup}"
    );
}
