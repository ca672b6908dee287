//! A wasm plugin on an upstream response that the gateway passes through without building its
//! header map (the upstream's field lines stay raw until a plugin needs them whole): every kind
//! of header change gives the same response head as on a map, with no field lost or doubled.
//! The upstream is a plain socket writing a fixed head, so that the lines are known exactly.

use std::time::Duration;

use crate::support::*;

/// The upstream's answer to every request.
const HEAD: &str = "HTTP/1.1 200 OK\r\nServer: up\r\nX-Multi: a\r\nX-Gone: 1\r\n\
                    X-Keep: k\r\nContent-Length: 3\r\n\r\nok\n";

/// The field lines of the response to `GET path`, lowercased names, in order.
fn fields(gw: &Gateway, path: &str) -> Vec<(String, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    let text = raw(gw.addr(), req.as_bytes(), Duration::from_secs(10));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("");
    assert!(status.starts_with("HTTP/1.1 200"), "{path}: {text}");
    assert_eq!(body, "ok\n", "{path}: {text}");
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// The values of `name` among `fields`, in order.
fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn plugin_edits_of_a_passed_through_response_lose_and_double_nothing() {
    let up = ScriptedUpstream::start(|_| HEAD.as_bytes());
    let route = |path: &str, rules: &str| {
        format!(
            r#"
      - match: {{ path_prefix: "{path}" }}
        cluster: app
        filters: [{{ plugin: hdr, config: {{ response: [{rules}] }} }}]"#
        )
    };
    let routes = [
        route("/set-new", "{ name: x-new, value: n }"),
        route("/add", "{ name: x-multi, value: b, action: add }"),
        route("/set-existing", "{ name: server, value: sluice }"),
        route("/remove", "{ name: x-gone, action: remove }"),
        route("/absent", "{ name: x-absent, action: remove }"),
        route(
            "/then-read",
            "{ name: x-new, value: n }, { name: x-multi, value: c, action: add }, \
             { name: x-keep, value: d, action: default }, { name: x-other, value: o, action: default }",
        ),
        route(
            "/framing",
            "{ name: content-length, action: remove }, { name: x-new, value: n }",
        ),
    ]
    .concat();
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:{routes}
clusters:
  - name: app
    endpoints: ["{up}"]
    protocol: http1
plugins:
  - name: hdr
    wasm: "{wasm}"
    config: {{}}
"#,
        up = up.addr,
        wasm = wasm("add_header.wasm").display(),
    ));

    // Each check runs twice: the second request reuses the upstream connection.
    for _ in 0..2 {
        // A field the upstream did not send: the upstream's lines are forwarded as they came,
        // the new field after them.
        let f = fields(&gw, "/set-new");
        assert_eq!(values(&f, "server"), ["up"], "{f:?}");
        assert_eq!(values(&f, "x-multi"), ["a"], "{f:?}");
        assert_eq!(values(&f, "x-gone"), ["1"], "{f:?}");
        assert_eq!(values(&f, "x-new"), ["n"], "{f:?}");
        assert_eq!(values(&f, "content-length"), ["3"], "{f:?}");
        let at = |name: &str| f.iter().position(|(k, _)| k == name);
        assert!(at("x-keep") < at("x-new"), "{f:?}");

        // A value added to a field the upstream sent comes after the upstream's.
        let f = fields(&gw, "/add");
        assert_eq!(values(&f, "x-multi"), ["a", "b"], "{f:?}");
        assert_eq!(values(&f, "server"), ["up"], "{f:?}");

        // Setting a field the upstream sent replaces it: one value, the plugin's.
        let f = fields(&gw, "/set-existing");
        assert_eq!(values(&f, "server"), ["sluice"], "{f:?}");
        assert_eq!(values(&f, "x-multi"), ["a"], "{f:?}");
        assert_eq!(values(&f, "x-keep"), ["k"], "{f:?}");

        let f = fields(&gw, "/remove");
        assert_eq!(values(&f, "x-gone"), Vec::<&str>::new(), "{f:?}");
        assert_eq!(values(&f, "server"), ["up"], "{f:?}");

        // Nothing else: the upstream's fields, and the gateway's `date` and `connection`.
        let f = fields(&gw, "/absent");
        let mut names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "connection",
                "content-length",
                "date",
                "server",
                "x-gone",
                "x-keep",
                "x-multi"
            ],
            "{f:?}"
        );

        // Reading after changes (`default` looks the field up) sees the upstream's fields and
        // the plugin's, once each.
        let f = fields(&gw, "/then-read");
        assert_eq!(values(&f, "x-new"), ["n"], "{f:?}");
        assert_eq!(values(&f, "x-multi"), ["a", "c"], "{f:?}");
        assert_eq!(values(&f, "x-keep"), ["k"], "{f:?}");
        assert_eq!(values(&f, "x-other"), ["o"], "{f:?}");
        assert_eq!(values(&f, "server"), ["up"], "{f:?}");

        // A framing field: the gateway frames the body itself, once.
        let f = fields(&gw, "/framing");
        assert_eq!(values(&f, "content-length"), ["3"], "{f:?}");
        assert_eq!(values(&f, "x-new"), ["n"], "{f:?}");
        assert_eq!(values(&f, "server"), ["up"], "{f:?}");
    }
}
