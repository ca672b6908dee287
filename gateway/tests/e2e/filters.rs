//! The built-in native filters, end to end through a real gateway.

use std::time::{Duration, Instant};

use crate::support::*;

fn gateway(listener_filters: &str, up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        r#"
workers: 2
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    filters:
{listener_filters}
    routes:
      - name: direct
        match: {{ path_prefix: "/direct" }}
        direct_response: {{ status: 200, body: "direct\n" }}
      - name: limited
        match: {{ path_prefix: "/limited" }}
        filters:
          - name: local-rate-limit
            config: {{ requests_per_second: 1, burst: 3 }}
        direct_response: {{ status: 200, body: "ok\n" }}
      - name: up
        match: {{ path_prefix: "/" }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{}"]
"#,
        up.addr
    ))
}

#[test]
fn request_id_and_headers_filters() {
    let up = Upstream::start("up");
    let gw = gateway(
        r#"      - name: request-id
      - name: headers
        config:
          request:
            add: [{ name: x-client, value: "%CLIENT_IP%" }]
            remove: [x-drop-me]
          response:
            set: [{ name: x-served-by, value: "%LISTENER%/%ROUTE%" }]
            remove: [x-upstream]"#,
        &up,
    );
    let r = get_with(&gw, "/echo", &[("x-drop-me", "1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r
        .header("x-request-id")
        .expect("request id echoed")
        .to_string();
    let echo = r.json();
    assert_eq!(
        echo["headers"]["x-request-id"][0],
        id.as_str(),
        "upstream sees the same id"
    );
    assert_eq!(echo["headers"]["x-client"][0], "127.0.0.1");
    assert!(echo["headers"].get("x-drop-me").is_none());
    assert_eq!(r.header("x-served-by"), Some("public/up"));
    assert!(r.header("x-upstream").is_none());
    // Local answers get the response headers too, and a client-sent id is kept.
    let r = get_with(&gw, "/direct", &[("x-request-id", "client-id-1")]);
    assert_eq!(r.header("x-request-id"), Some("client-id-1"));
    assert_eq!(r.header("x-served-by"), Some("public/direct"));
}

/// Without a native filter, the gateway's request id is not put among the request's fields up
/// front: a plugin's host lists it the first time the plugin reads or changes them, and
/// otherwise the upstream exchange writes it. Either way the plugin sees it in the count and
/// the pairs, and the upstream gets exactly one.
#[test]
fn plugins_see_the_gateways_request_id_and_the_upstream_gets_one() {
    let (up, up2) = (Upstream::start("up"), Upstream::start_h2("up2"));
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - name: blind-h2
        match: {{ path_prefix: "/blind-h2" }}
        filters: [{{ plugin: stamp }}]
        cluster: up2
      - name: reads
        match: {{ path_prefix: "/reads" }}
        filters: [{{ plugin: hdr }}]
        cluster: up
      - name: blind
        match: {{ path_prefix: "/blind" }}
        filters: [{{ plugin: stamp }}]
        cluster: up
clusters:
  - name: up
    endpoints: ["{up}"]
  - name: up2
    endpoints: ["{up2}"]
    protocol: http2
plugins:
  - name: hdr
    wasm: "{hdr}"
  - name: stamp
    wasm: "{stamp}"
    config: {{ response: [{{ name: x-stamp, value: "1", action: add }}] }}
"#,
        up = up.addr,
        up2 = up2.addr,
        hdr = wasm("rs_headers.wasm").display(),
        stamp = wasm("add_header.wasm").display(),
    ));
    let one_id = |r: &Resp, what: &str| -> String {
        let ids = &r.json()["headers"]["x-request-id"];
        assert_eq!(ids.as_array().map(Vec::len), Some(1), "{what}: {ids}");
        let id = ids[0].as_str().unwrap_or_default().to_string();
        assert_eq!(id.len(), 36, "{what}: {ids}");
        id
    };
    for _ in 0..2 {
        // The plugin reads the pairs: the id is among them, and the number of fields the
        // callback was given counts it too (Envoy's count and pairs agree).
        let r = get(&gw, "/reads/x");
        assert_eq!(r.status, 200, "{}", r.text());
        one_id(&r, "read");
        let pairs = r.json()["headers"]["x-conf-request-header-count"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(r.header("x-conf-request-num-headers"), Some(pairs.as_str()));
        // The plugin writes the whole map back (with the id it read): still one.
        let r = get_with(&gw, "/reads/x", &[("x-conf-set-map", "1")]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["headers"]["x-conf-map-replaced"][0], "1");
        one_id(&r, "set map");
        // A client's empty id is replaced, not joined.
        let r = get_with(&gw, "/reads/x", &[("x-request-id", "")]);
        one_id(&r, "empty id");
        // The plugin never looks at the request: the upstream exchange writes the id.
        let r = get(&gw, "/blind/x");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-stamp"), Some("1"));
        let a = one_id(&r, "blind");
        let b = one_id(&get(&gw, "/blind/x"), "blind again");
        assert_ne!(a, b, "a new id per request");
        // A client's id is kept as it is.
        let r = get_with(&gw, "/blind/x", &[("x-request-id", "client-7")]);
        assert_eq!(r.json()["headers"]["x-request-id"][0], "client-7");
        // An HTTP/2 upstream gets the id inserted into the request it is sent.
        let r = get(&gw, "/blind-h2/x");
        assert_eq!(r.status, 200, "{}", r.text());
        one_id(&r, "blind h2");
    }
}

#[test]
fn local_rate_limit_answers_429_with_retry_after() {
    let up = Upstream::start("up");
    let gw = gateway("      - name: request-id", &up);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let r = get(&gw, "/limited");
        if r.status == 429 {
            retry_after = r.header("retry-after").map(str::to_string);
            assert!(r.header("x-ratelimit-limit").is_some());
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let secs: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!(secs >= 1);
    // Other routes are not limited by this route's filter.
    assert_eq!(get(&gw, "/direct").status, 200);
}

#[test]
fn ip_access_denies_and_allows() {
    let up = Upstream::start("up");
    let gw = gateway(
        r#"      - name: ip-access
        config: { deny: ["127.0.0.0/8"] }"#,
        &up,
    );
    let r = get(&gw, "/direct");
    assert_eq!(r.status, 403);
    let gw2 = gateway(
        r#"      - name: ip-access
        config: { allow: ["127.0.0.1/32", "::1/128"] }"#,
        &up,
    );
    assert_eq!(get(&gw2, "/direct").status, 200);
}

#[test]
fn fault_filter_aborts_and_delays() {
    let up = Upstream::start("up");
    let gw = gateway(
        r#"      - name: fault
        config: { header_control: true }"#,
        &up,
    );
    let r = get_with(&gw, "/direct", &[("x-sluice-fault-abort", "503")]);
    assert_eq!(r.status, 503);
    let start = Instant::now();
    let r = get_with(&gw, "/direct", &[("x-sluice-fault-delay-ms", "300")]);
    assert_eq!(r.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(290), "not delayed");
    assert_eq!(get(&gw, "/direct").status, 200);
}

#[test]
fn cors_preflight_and_actual_requests() {
    let up = Upstream::start("up");
    let gw = gateway(
        r#"      - name: cors
        config:
          allow_origins: ["https://app.example"]
          allow_methods: [GET, PUT]
          allow_headers: [content-type]
          max_age: 10m"#,
        &up,
    );
    let r = request(
        &gw,
        "OPTIONS",
        "/echo",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
        ],
        "",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "preflight reached the upstream"
    );
    let r = get_with(&gw, "/echo", &[("origin", "https://app.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = get_with(&gw, "/echo", &[("origin", "https://evil.example")]);
    assert!(r.header("access-control-allow-origin").is_none());
}

/// The `filters` benchmark's raw-ABI plugin (`bench/plugins/raw-add-header`, no SDK) next to the
/// SDK's `add-header` on one route: every response gets both fields, request after request (each
/// stream's start and end are merged entries into both VMs).
#[test]
fn the_benchmarks_raw_abi_plugin_adds_its_field_beside_an_sdk_plugin() {
    let up = Upstream::start("up");
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/" }}
        filters: [{{ plugin: raw }}, {{ plugin: stamp }}]
        cluster: up
clusters:
  - name: up
    endpoints: ["{up}"]
plugins:
  - name: raw
    wasm: "{raw}"
  - name: stamp
    wasm: "{stamp}"
    config: {{ response: [{{ name: x-stamp, value: "1", action: add }}] }}
"#,
        up = up.addr,
        raw = wasm("raw_add_header.wasm").display(),
        stamp = wasm("add_header.wasm").display(),
    ));
    for i in 0..20 {
        let r = get(&gw, &format!("/n/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-bench"), Some("1"), "request {i}");
        assert_eq!(r.header("x-stamp"), Some("1"), "request {i}");
    }
}
