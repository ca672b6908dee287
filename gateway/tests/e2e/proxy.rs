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

/// The upstream of the pass-through tests: each request gets the reply its path's last
/// segment names (see `scripted_reply`).
fn scripted_upstream() -> ScriptedUpstream {
    ScriptedUpstream::start(|path| scripted_reply(path.rsplit('/').next().unwrap_or("")))
}

fn scripted_reply(name: &str) -> &'static [u8] {
    match name {
        // Hop-by-hop fields of every kind among the end-to-end ones; names in any case.
        "fields" => {
            b"HTTP/1.1 200 OK\r\nServer: scripted\r\nConnection: keep-alive\r\n\
            Keep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSET-COOKIE: b=2\r\nX-Empty:\r\n\
            Proxy-Connection: keep-alive\r\nProxy-Authenticate: Basic\r\nTrailer: x-t\r\n\
            X-Spaced: one  two\r\nContent-Length: 5\r\n\r\nhello"
        }
        "chunked" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\
            Date: Sun, 06 Dec 2026 10:00:00 GMT\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        }
        // `Connection` naming a field: that field is hop-by-hop too.
        "named" => {
            b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n\
            Content-Length: 5\r\n\r\nhello"
        }
        "version" => {
            b"HTTP/1.1 200 OK\r\nX-Config-Version: upstream\r\nContent-Length: 5\r\n\r\nhello"
        }
        "not-modified" => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    }
}

/// The response of a raw `request` to the gateway: its status line, its fields (names
/// lowercased, sorted, without `date` and `name_to_skip`) and its body.
fn raw_exchange(gw: &Gateway, request: &str, name_to_skip: &str) -> (String, Vec<String>, String) {
    let text = raw(gw.addr(), request.as_bytes(), Duration::from_secs(10));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("").to_string();
    let mut fields: Vec<String> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            format!("{}:{}", n.to_ascii_lowercase(), v.trim())
        })
        .filter(|f| !f.starts_with("date:") && !f.starts_with(name_to_skip))
        .collect();
    fields.sort();
    (status, fields, body.to_string())
}

#[test]
fn upstream_response_fields_reach_the_client_with_and_without_filters() {
    // `/plain` has no filter: the fields pass through as the upstream sent them. `/filtered`
    // has a response-phase filter that sets `date` (a field the gateway writes itself, so the
    // change builds the header map): they go through a map. `/raw-filter` has one that sets
    // only a field the upstream did not send: the upstream's lines stay as they are. The client
    // sees the same.
    let up = scripted_upstream();
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    protocols: [http1, http2]
    routes:
      - match: {{ path_prefix: "/filtered" }}
        cluster: up
        filters:
          - name: headers
            config:
              response:
                set:
                  - {{ name: x-filtered, value: "yes" }}
                  - {{ name: date, value: "Sun, 06 Dec 2026 10:00:00 GMT" }}
      - match: {{ path_prefix: "/raw-filter" }}
        cluster: up
        filters:
          - name: headers
            config: {{ response: {{ set: [{{ name: x-filtered, value: "yes" }}] }} }}
      - match: {{ path_prefix: "/plain" }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{up}"]
"#,
        up = up.addr
    ));
    let ask = |method: &str, path: &str, version: &str| {
        let req = format!("{method} {path} {version}\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw_exchange(&gw, &req, "x-filtered:")
    };
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let (status, fields, body) = ask("GET", "/plain/fields", version);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "hello");
        assert_eq!(
            fields,
            [
                "connection:close",
                "content-length:5",
                "server:scripted",
                "set-cookie:a=1",
                "set-cookie:b=2",
                "x-empty:",
                "x-spaced:one  two"
            ],
            "{version}"
        );
        assert_eq!(
            ask("GET", "/filtered/fields", version),
            (status.clone(), fields.clone(), body.clone())
        );
        assert_eq!(
            ask("GET", "/raw-filter/fields", version),
            (status, fields, body)
        );
    }
    // Passed through as received without a filter or through one that leaves them raw (names
    // keep their case), through the map otherwise (names lowercased).
    let fields = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        raw(gw.addr(), req.as_bytes(), Duration::from_secs(10))
    };
    let plain = fields("/plain/fields");
    assert!(plain.contains("\r\nSET-COOKIE: b=2\r\n"), "{plain}");
    let raw_filter = fields("/raw-filter/fields");
    assert!(
        raw_filter.contains("\r\nSET-COOKIE: b=2\r\n")
            && raw_filter.contains("\r\nx-filtered: yes\r\n"),
        "{raw_filter}"
    );
    let filtered = fields("/filtered/fields");
    assert!(filtered.contains("\r\nset-cookie: b=2\r\n"), "{filtered}");
    // Chunked from the upstream: re-framed by the gateway, the upstream's Date kept.
    let (status, fields, body) = ask("GET", "/plain/chunked", "HTTP/1.1");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        fields,
        ["connection:close", "transfer-encoding:chunked", "x-a:1"]
    );
    assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(
        ask("GET", "/filtered/chunked", "HTTP/1.1"),
        (status, fields, body)
    );
    let text = raw(
        gw.addr(),
        b"GET /plain/chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(
        text.contains("Date: Sun, 06 Dec 2026 10:00:00 GMT\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("ate: ").count(), 1, "one Date: {text}");
    // A field named by Connection goes too (the map path takes such a head).
    let (_, fields, body) = ask("GET", "/plain/named", "HTTP/1.1");
    assert_eq!(fields, ["connection:close", "content-length:5", "x-kept:2"]);
    assert_eq!(body, "hello");
    // HEAD and 304 keep the length that describes the representation, and carry no body.
    for (method, path, status) in [
        ("HEAD", "/plain/fields", "HTTP/1.1 200 OK"),
        ("GET", "/plain/not-modified", "HTTP/1.1 304 Not Modified"),
    ] {
        let (s, fields, body) = ask(method, path, "HTTP/1.1");
        assert_eq!(s, status);
        assert!(
            fields.contains(&"content-length:5".to_string()),
            "{fields:?}"
        );
        assert_eq!(body, "");
        let filtered = ask(method, &path.replace("plain", "filtered"), "HTTP/1.1");
        assert_eq!(filtered, (s, fields, body));
    }
    // Over h2c the response goes through hyper, which needs the map: the fields are all there.
    let req = http::Request::get(format!("http://{}/plain/fields", gw.addr()))
        .body(full(""))
        .expect("request");
    let r = send(gw.addr(), req, true).expect("h2c");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("server"), Some("scripted"));
    assert_eq!(r.header("x-spaced"), Some("one  two"));
    assert_eq!(r.headers.get_all("set-cookie").iter().count(), 2);
    assert!(r.headers.get("keep-alive").is_none());
    assert!(r.headers.get("proxy-authenticate").is_none());
    assert_eq!(r.text(), "hello");
    // Keep-alive on both sides: many requests on one client connection, upstream reused.
    let many: String = (0..20)
        .map(|_| "GET /plain/fields HTTP/1.1\r\nHost: x\r\n\r\n")
        .collect::<String>()
        + "GET /plain/fields HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let text = raw(gw.addr(), many.as_bytes(), Duration::from_secs(10));
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 21, "{text}");
    assert_eq!(text.matches("\r\n\r\nhello").count(), 21);
    assert_eq!(text.matches("keep-alive").count(), 0, "{text}");
}

#[test]
fn forwarded_fields_reach_h1_and_h2_upstreams_once() {
    // Without the client's own X-Forwarded-* fields the gateway writes them as it sends the
    // request (HTTP/1.1) or inserts them into the request (HTTP/2); with them, it joins the
    // client's X-Forwarded-For and keeps its X-Forwarded-Proto.
    let (h1, h2) = (Upstream::start("h1"), Upstream::start_h2("h2"));
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/h2" }}
        cluster: h2
      - match: {{ path_prefix: "/" }}
        cluster: h1
clusters:
  - name: h1
    endpoints: ["{}"]
  - name: h2
    endpoints: ["{}"]
    protocol: http2
"#,
        h1.addr, h2.addr
    ));
    // What the client sends, and the X-Forwarded-For and -Proto the upstream must see.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 3] = [
        (&[], "127.0.0.1", "http"),
        (&[("x-forwarded-proto", "https")], "127.0.0.1", "https"),
        (
            &[("x-forwarded-for", "198.18.0.9")],
            "198.18.0.9, 127.0.0.1",
            "http",
        ),
    ];
    for path in ["/h1", "/h2"] {
        for (sent, xff, xfp) in cases {
            let r = get_with(&gw, path, sent);
            assert_eq!(r.status, 200, "{}", r.text());
            let h = &r.json()["headers"];
            let one = |v: &str| serde_json::json!([v]);
            assert_eq!(h["x-forwarded-for"], one(xff), "{path} {sent:?}: {h}");
            assert_eq!(h["x-forwarded-proto"], one(xfp), "{path} {sent:?}: {h}");
            let ids = &h["x-request-id"];
            assert_eq!(ids.as_array().map(Vec::len), Some(1), "{path}: {ids}");
        }
        // An empty request id is replaced, not joined by a second one.
        let r = get_with(&gw, path, &[("x-request-id", "")]);
        let ids = &r.json()["headers"]["x-request-id"];
        assert_eq!(ids.as_array().map(Vec::len), Some(1), "{path}: {ids}");
        assert_eq!(ids[0].as_str().map(str::len), Some(36), "{path}: {ids}");
    }
}

#[test]
fn the_config_version_header_replaces_the_upstreams() {
    let up = scripted_upstream();
    let gw = Gateway::start(&format!(
        r#"
workers: 1
debug: {{ config_version_header: x-config-version }}
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/" }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{up}"]
"#,
        up = up.addr
    ));
    let text = raw(
        gw.addr(),
        b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let versions: Vec<&str> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("x-config-version:"))
        .collect();
    assert_eq!(versions.len(), 1, "{text}");
    assert!(!versions[0].contains("upstream"), "{text}");
}
