//! Functional checks: each test plugin's directives, sent through a real gateway, and the effects
//! conformance/README.md documents.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::record::Recorder;
use crate::support::*;

/// The servers every gateway of the run points at.
pub struct Env {
    pub echo: Server,
    /// The same reflecting upstream over h2c (trailers travel end to end on h2).
    pub echo_h2: Server,
    pub callout: Server,
    pub grpc: Server,
    /// A port nothing listens on (a cluster whose connections fail).
    pub dead_port: u16,
}

impl Env {
    pub fn start() -> Env {
        Env {
            echo: echo_upstream(),
            echo_h2: echo_upstream_h2(),
            callout: echo_upstream(),
            grpc: grpc_health_server(),
            dead_port: free_port(),
        }
    }

    /// A one-worker gateway with `routes` (YAML list items, indented 6) and `plugins` (YAML list
    /// items, indented 2).
    pub fn gateway(&self, routes: &str, plugins: &str) -> Result<Gateway, String> {
        Gateway::try_start(&self.yaml(routes, plugins))
    }

    pub fn yaml(&self, routes: &str, plugins: &str) -> String {
        format!(
            r#"workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
{routes}
clusters:
  - {{ name: echo, endpoints: ["{}"] }}
  - {{ name: echo2, endpoints: ["{}"], protocol: http2 }}
  - {{ name: callout, endpoints: ["{}"] }}
  - {{ name: dead, endpoints: ["127.0.0.1:{}"], connect_timeout: 300ms }}
  - {{ name: grpc, endpoints: ["{}"], protocol: http2 }}
plugins:
{plugins}
"#,
            self.echo.addr, self.echo_h2.addr, self.callout.addr, self.dead_port, self.grpc.addr
        )
    }

    /// One plugin (named after its file) on route `/` to the HTTP/1.1 upstream and on `/h2/` to
    /// the h2c one, with optional plugin and VM configs (JSON).
    pub fn single(
        &self,
        dir: &Path,
        plugin: &str,
        config: Option<&str>,
        vm_config: Option<&str>,
    ) -> Result<Gateway, String> {
        let routes = format!(
            "      - match: {{ path_prefix: \"/h2/\" }}\n        filters: [{{ plugin: {plugin} }}]\n        cluster: echo2\n      - match: {{ path_prefix: \"/\" }}\n        filters: [{{ plugin: {plugin} }}]\n        cluster: echo"
        );
        self.gateway(
            &routes,
            &plugin_def(dir, plugin, plugin, config, vm_config, ""),
        )
    }
}

/// A `plugins:` item; `extra` is more YAML keys (indented 4).
pub fn plugin_def(
    dir: &Path,
    name: &str,
    file: &str,
    config: Option<&str>,
    vm_config: Option<&str>,
    extra: &str,
) -> String {
    let mut s = format!(
        "  - name: {name}\n    wasm: \"{}\"\n",
        dir.join(format!("{file}.wasm")).display()
    );
    if file.starts_with("as_") {
        s.push_str(&format!("    root_id: {file}\n"));
    }
    if let Some(c) = config {
        s.push_str(&format!("    config: {c}\n"));
    }
    if let Some(c) = vm_config {
        s.push_str(&format!("    vm_config: {c}\n"));
    }
    s.push_str(extra);
    s
}

/// `Err` unless `got == want`.
pub fn eq(what: &str, got: Option<&str>, want: &str) -> Result<(), String> {
    if got == Some(want) {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

pub fn is(cond: bool, what: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// Runs every functional check.
pub fn run(dir: &Path, rec: &mut Recorder) {
    let env = Env::start();
    type Check = fn(&Env, &Path, &str, &mut Recorder);
    let all: &[(&str, Check)] = &[
        ("rs_headers", headers),
        ("as_headers", headers),
        ("rs_body", body),
        ("as_body", body),
        ("rs_local_response", local_response),
        ("as_local_response", local_response),
        ("rs_config", config),
        ("as_config", config),
        ("rs_http_call", http_call),
        ("as_http_call", http_call),
        ("rs_properties", properties),
        ("rs_grpc_call", grpc_call),
        ("rs_shared", shared),
        ("rs_timer", timer),
        ("rs_metrics", metrics),
        ("rs_foreign", foreign),
        ("rs_log", log),
        ("rs_lifecycle", lifecycle),
        ("rs_abi_010", abi_010),
    ];
    for (plugin, check) in all {
        if selected(plugin) {
            check(&env, dir, plugin, rec);
        }
    }
}

const LIFECYCLE: &[&str] = &[
    "_initialize / _start",
    "proxy_on_context_create",
    "proxy_on_vm_start",
    "proxy_on_configure",
];

/// Starts `plugin`, or records the start failure against the lifecycle callbacks.
fn start(
    env: &Env,
    dir: &Path,
    plugin: &str,
    config: Option<&str>,
    vm: Option<&str>,
    rec: &mut Recorder,
) -> Option<Gateway> {
    match env.single(dir, plugin, config, vm) {
        Ok(gw) => Some(gw),
        Err(e) => {
            rec.check(plugin, "gateway starts with the plugin", LIFECYCLE, Err(e));
            None
        }
    }
}

fn headers(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let marker = &p[..2];
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    let r = get(
        &gw,
        "/h",
        &[
            ("x-conf-replace", "original"),
            ("x-conf-remove", "gone"),
            ("x-up-resp-x-conf-upstream-replace", "original"),
            ("x-up-resp-x-conf-upstream-remove", "gone"),
        ],
    );
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            rec.check(
                p,
                "request through the plugin",
                &["proxy_on_request_headers"],
                Err(e),
            );
            return;
        }
    };
    let mut lifecycle = LIFECYCLE.to_vec();
    lifecycle.push("proxy_on_memory_allocate / malloc");
    rec.check(
        p,
        "request passes, upstream answers",
        &lifecycle,
        eq("status", Some(&r.status.to_string()), "200"),
    );
    rec.check(
        p,
        "add request header",
        &["proxy_on_request_headers", "proxy_add_header_map_value"],
        eq(
            "upstream x-conf-added",
            r.upstream_saw("x-conf-added").as_deref(),
            marker,
        ),
    );
    rec.check(
        p,
        "replace request header",
        &["proxy_replace_header_map_value"],
        eq(
            "upstream x-conf-replace",
            r.upstream_saw("x-conf-replace").as_deref(),
            "replaced",
        ),
    );
    rec.check(
        p,
        "remove request header",
        &["proxy_remove_header_map_value"],
        is(
            r.upstream_saw("x-conf-remove").is_none() && r.upstream_saw("x-conf-added").is_some(),
            "x-conf-remove still reached the upstream",
        ),
    );
    rec.check(
        p,
        "read one request header (:path)",
        &["proxy_get_header_map_value"],
        eq("x-conf-request-path", r.header("x-conf-request-path"), "/h"),
    );
    rec.check(p, "request pairs count = num_headers argument", &["proxy_get_header_map_pairs"], {
        let count = r.header("x-conf-request-header-count");
        let n = r.header("x-conf-request-num-headers");
        is(count.is_some() && count.and_then(|c| c.parse::<u32>().ok()).unwrap_or(0) >= 8 && count == n,
            format!("request pairs {count:?} vs num_headers {n:?} (want equal, >= 8 with the 4 pseudo-headers)"))
    });
    rec.check(
        p,
        "response header add/replace/remove",
        &[
            "proxy_on_response_headers",
            "proxy_add_header_map_value",
            "proxy_replace_header_map_value",
            "proxy_remove_header_map_value",
        ],
        eq(
            "x-conf-response-added",
            r.header("x-conf-response-added"),
            marker,
        )
        .and(eq(
            "x-conf-upstream-replace",
            r.header("x-conf-upstream-replace"),
            "replaced",
        ))
        .and(is(
            r.header("x-conf-upstream-remove").is_none(),
            "x-conf-upstream-remove still sent",
        )),
    );
    rec.check(
        p,
        "response pairs count = num_headers argument",
        &["proxy_get_header_map_pairs"],
        {
            let (c, n) = (
                r.header("x-conf-response-header-count"),
                r.header("x-conf-response-num-headers"),
            );
            is(
                c.is_some() && c == n,
                format!("response pairs {c:?} vs num_headers {n:?}"),
            )
        },
    );
    rec.check(
        p,
        "request without trailers reports none",
        &["proxy_on_request_trailers"],
        eq(
            "x-conf-request-trailers",
            r.header("x-conf-request-trailers"),
            "none",
        ),
    );

    let r = get(&gw, "/h", &[("x-conf-set-map", "1"), ("x-keep", "kept")]);
    rec.check(
        p,
        "replace the whole request map",
        &["proxy_set_header_map_pairs"],
        r.and_then(|r| {
            eq(
                "upstream x-conf-map-replaced",
                r.upstream_saw("x-conf-map-replaced").as_deref(),
                "1",
            )
            .and(eq(
                "upstream x-keep",
                r.upstream_saw("x-keep").as_deref(),
                "kept",
            ))
            .and(eq(
                "upstream path",
                r.json().get("path").and_then(|v| v.as_str()),
                "/h",
            ))
        }),
    );

    // Trailers need a protocol that carries them end to end: h2 to the gateway.
    let req = build("POST", "/h2/h", &[], with_trailers("data", &[("x-t", "1")]));
    let r = send(gw.addr(), req, true);
    rec.check(
        p,
        "request trailers read and added (h2 end to end)",
        &[
            "proxy_on_request_trailers",
            "proxy_get_header_map_pairs",
            "proxy_add_header_map_value",
        ],
        r.and_then(|r| {
            eq(
                "x-conf-request-trailers",
                r.header("x-conf-request-trailers"),
                "x-t=1",
            )
            .and_then(|_| {
                let t = r
                    .json()
                    .get("trailers")
                    .and_then(|t| t.get("x-conf-trailer-added"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                eq(
                    "upstream trailer x-conf-trailer-added",
                    t.as_deref(),
                    marker,
                )
            })
        }),
    );
    let req = build(
        "GET",
        "/h2/h",
        &[
            ("x-up-trailer-x-conf-upstream-trailer-remove", "1"),
            ("x-up-trailer-x-kept", "1"),
            ("te", "trailers"),
        ],
        full(""),
    );
    let r = send(gw.addr(), req, true);
    rec.check(
        p,
        "response trailers edited (h2 end to end)",
        &[
            "proxy_on_response_trailers",
            "proxy_remove_header_map_value",
            "proxy_add_header_map_value",
        ],
        r.and_then(|r| {
            eq(
                "trailer x-conf-response-trailer-added",
                r.trailer("x-conf-response-trailer-added"),
                marker,
            )
            .and(is(
                r.trailer("x-conf-upstream-trailer-remove").is_none(),
                "x-conf-upstream-trailer-remove still sent",
            ))
            .and(eq("trailer x-kept", r.trailer("x-kept"), "1"))
        }),
    );
}

fn body(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    for (op, want) in [("replace", "T"), ("prepend", "Tabc"), ("append", "abcT")] {
        let r = post(&gw, "/b", &[("x-body-op", op), ("x-body-text", "T")], "abc");
        rec.check(
            p,
            &format!("request body {op}"),
            &[
                "proxy_on_request_body",
                "proxy_get_buffer_bytes",
                "proxy_set_buffer_bytes",
            ],
            r.and_then(|r| {
                eq(
                    "upstream body",
                    r.json().get("body").and_then(|v| v.as_str()),
                    want,
                )
                .and(eq(
                    "x-body-request-size",
                    r.header("x-body-request-size"),
                    "3",
                ))
            }),
        );
    }
    for (op, want) in [("replace", "T"), ("prepend", "Tabc"), ("append", "abcT")] {
        let r = get(
            &gw,
            "/text/abc",
            &[("x-response-body-op", op), ("x-body-text", "T")],
        );
        rec.check(
            p,
            &format!("response body {op}"),
            &[
                "proxy_on_response_body",
                "proxy_get_buffer_bytes",
                "proxy_set_buffer_bytes",
            ],
            r.and_then(|r| eq("client body", Some(&r.text()), want)),
        );
    }
    if p == "rs_body" {
        body_held_at_end(&gw, p, rec);
    }
}

/// `rs_body` holds a response at its end of stream (Pause on the last body chunk, after
/// editing it) and its root context releases it from `proxy_on_tick`. The client must get the
/// edited body, and not before the plugin released it: a small body that comes with its head
/// (HTTP/1.1), one that comes after it (`/slow-text/`: the streamed path), and one from an h2c
/// upstream.
fn body_held_at_end(gw: &Gateway, p: &str, rec: &mut Recorder) {
    const HOLD: Duration = Duration::from_millis(300);
    const CALLS: &[&str] = &[
        "proxy_on_response_body",
        "proxy_set_buffer_bytes",
        "proxy_on_tick",
        "proxy_set_effective_context",
        "proxy_continue_stream",
    ];
    let hold = HOLD.as_millis().to_string();
    let directives = [
        ("x-response-body-op", "append"),
        ("x-body-text", "T"),
        ("x-response-body-hold", hold.as_str()),
    ];
    // The response, and whether it came no sooner than the plugin released it.
    let held = |path: &str| {
        let started = Instant::now();
        let r = get(gw, path, &directives);
        let waited = started.elapsed();
        let released = is(
            waited >= HOLD,
            format!("answered after {waited:?}, before the plugin released it ({HOLD:?})"),
        );
        r.and_then(|r| released.map(|()| r))
    };
    for (path, what) in [
        (
            "/text/abc",
            "response held at its end of stream, resumed from another context",
        ),
        (
            "/slow-text/abc",
            "streamed response held at its end of stream, resumed from another context",
        ),
    ] {
        let r = held(path);
        rec.check(
            p,
            what,
            CALLS,
            r.and_then(|r| {
                eq("status", Some(&r.status.to_string()), "200").and(eq(
                    "client body",
                    Some(&r.text()),
                    "abcT",
                ))
            }),
        );
    }
    let r = held("/h2/held");
    rec.check(
        p,
        "response from an h2c upstream held at its end of stream, resumed from another context",
        CALLS,
        r.and_then(|r| {
            let text = r.text();
            // The echo's JSON, then the appended text.
            let echoed = text
                .strip_suffix('T')
                .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok());
            // h2 requests carry their authority: the echo reports an absolute URI.
            let path = echoed.as_ref().and_then(|v| v.get("path")?.as_str());
            // The client's fields reached the h2c upstream (the plugin reads them later too).
            let text_field = echoed
                .as_ref()
                .and_then(|v| v.get("headers")?.get("x-body-text")?.as_str());
            eq("status", Some(&r.status.to_string()), "200")
                .and(is(
                    path.is_some_and(|p| p.ends_with("/h2/held")),
                    format!("path echoed before the appended text: got {path:?} in {text:?}"),
                ))
                .and(eq("x-body-text at the upstream", text_field, "T"))
        }),
    );
}

fn local_response(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let marker = &p[..2];
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    let r = get(
        &gw,
        "/l",
        &[("x-local-status", "418"), ("x-local-header", "x-extra=1")],
    );
    rec.check(
        p,
        "local response from request headers",
        &["proxy_send_local_response"],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "418")
                .and(eq("x-local", r.header("x-local"), marker))
                .and(eq("x-extra", r.header("x-extra"), "1"))
                .and(eq(
                    "body",
                    Some(&r.text()),
                    &format!("local response from {marker}\n"),
                ))
                .and(is(
                    r.header("x-upstream").is_none(),
                    "the upstream answered",
                ))
        }),
    );
    let r = get(
        &gw,
        "/l",
        &[
            ("x-local-grpc-status", "7"),
            ("x-local-grpc-message", "denied"),
            ("content-type", "application/grpc"),
        ],
    );
    rec.check(
        p,
        "gRPC local response",
        &["proxy_send_local_response"],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "200")
                .and(eq(
                    "grpc-status",
                    r.header("grpc-status").or(r.trailer("grpc-status")),
                    "7",
                ))
                .and(eq(
                    "grpc-message",
                    r.header("grpc-message").or(r.trailer("grpc-message")),
                    "denied",
                ))
                .and(eq(
                    "x-local",
                    r.header("x-local"),
                    &format!("{marker}-grpc"),
                ))
        }),
    );
    let r = get(&gw, "/l", &[("x-local-on-response", "403")]);
    rec.check(
        p,
        "local response from response headers",
        &["proxy_on_response_headers", "proxy_send_local_response"],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "403")
                .and(eq(
                    "x-local",
                    r.header("x-local"),
                    &format!("{marker}-response"),
                ))
                .and(eq(
                    "body",
                    Some(&r.text()),
                    &format!("replaced by {marker}\n"),
                ))
        }),
    );
    for side in ["request", "response"] {
        let r = get(&gw, "/l", &[("x-local-close", side)]);
        // Envoy resets the stream; Sluice documents a 502 for a closed stream. Either is a close;
        // an upstream answer is not.
        rec.check(
            p,
            &format!("close stream on {side}"),
            &["proxy_close_stream"],
            match r {
                Err(_) => Ok(()),
                Ok(r) => is(
                    r.status == 502 && r.header("x-upstream").is_none(),
                    format!("got {} {:?}", r.status, r.text()),
                ),
            },
        );
    }
    let r = get(&gw, "/l", &[]);
    rec.check(
        p,
        "no directive: upstream answers",
        &["proxy_on_request_headers"],
        r.and_then(|r| eq("x-upstream", r.header("x-upstream"), "echo")),
    );
}

fn config(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(
        env,
        dir,
        p,
        Some("{ greeting: hi }"),
        Some("\"vm-settings\""),
        rec,
    ) else {
        return;
    };
    let r = get(&gw, "/c", &[]);
    rec.check(
        p,
        "plugin and VM configuration delivered",
        &[
            "proxy_on_vm_start",
            "proxy_on_configure",
            "proxy_get_buffer_bytes",
        ],
        r.and_then(|r| {
            eq(
                "x-config-plugin",
                r.header("x-config-plugin"),
                "{\"greeting\":\"hi\"}",
            )
            .and(eq("x-config-vm", r.header("x-config-vm"), "vm-settings"))
            .and(eq(
                "x-config-plugin-json",
                r.header("x-config-plugin-json"),
                "object",
            ))
            .and(eq(
                "x-config-configure-count",
                r.header("x-config-configure-count"),
                "1",
            ))
        }),
    );
    drop(gw);
    let yaml = env
        .yaml(
            "      - match: { path_prefix: \"/\" }\n        direct_response: { status: 200 }",
            &plugin_def(dir, p, p, Some("{ fail: true }"), None, ""),
        )
        .replace("{PORT}", &free_port().to_string());
    let (ok, out) = sluice_check(&yaml);
    rec.check(
        p,
        "on_configure false rejects the config (sluice check)",
        &["proxy_on_configure"],
        is(!ok && out.contains(p), format!("check exit ok={ok}: {out}")),
    );
}

fn http_call(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let cfg = "{ cluster: callout, path: /callout, authority: callout, timeout_ms: 5000 }";
    let Some(gw) = start(env, dir, p, Some(cfg), None, rec) else {
        return;
    };
    let fns = [
        "proxy_http_call",
        "proxy_on_http_call_response",
        "proxy_get_header_map_pairs",
        "proxy_get_buffer_bytes",
        "proxy_set_effective_context",
        "proxy_continue_stream",
    ];
    let r = get(&gw, "/x", &[("x-callout", "resume")]);
    rec.check(
        p,
        "callout then resume the request",
        &fns,
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "200")
                .and(eq(
                    "upstream x-callout-status",
                    r.upstream_saw("x-callout-status").as_deref(),
                    "201",
                ))
                .and(eq(
                    "upstream x-callout-body-size",
                    r.upstream_saw("x-callout-body-size").as_deref(),
                    "12",
                ))
        }),
    );
    let r = get(&gw, "/x", &[("x-callout", "local")]);
    rec.check(
        p,
        "callout answer as a local response",
        &[
            "proxy_http_call",
            "proxy_on_http_call_response",
            "proxy_send_local_response",
        ],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "201")
                .and(eq("x-callout-echo", r.header("x-callout-echo"), "yes"))
                .and(eq("body", Some(&r.text()), "callout-body"))
        }),
    );
    let r = get(
        &gw,
        "/x",
        &[
            ("x-callout", "local"),
            ("x-callout-cluster", "no-such-cluster"),
        ],
    );
    rec.check(
        p,
        "unknown cluster refused at dispatch",
        &["proxy_http_call"],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "500").and(eq(
                "x-callout-dispatch-error",
                r.header("x-callout-dispatch-error"),
                "BadArgument",
            ))
        }),
    );
    let r = get(
        &gw,
        "/x",
        &[("x-callout", "local"), ("x-callout-cluster", "dead")],
    );
    rec.check(
        p,
        "failed callout calls back with no headers",
        &["proxy_http_call", "proxy_on_http_call_response"],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "502").and(eq(
                "x-callout-status",
                r.header("x-callout-status"),
                "failed",
            ))
        }),
    );
}

fn properties(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    let r = get(
        &gw,
        "/props/x?q=1",
        &[
            ("x-probe", "probe-value"),
            ("user-agent", "conf-agent"),
            ("x-prop-set", "v1"),
        ],
    );
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            rec.check(p, "request", &["proxy_get_property"], Err(e));
            return;
        }
    };
    let h = |n: &str| r.header(&format!("x-prop-{n}")).map(str::to_string);
    let num = |n: &str| {
        h(n).and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|v| v > 0)
    };
    rec.check(
        p,
        "request attributes (strings)",
        &["proxy_get_property"],
        eq("request.path", h("request-path").as_deref(), "/props/x?q=1")
            .and(eq(
                "request.url_path",
                h("request-url-path").as_deref(),
                "/props/x",
            ))
            .and(eq("request.method", h("request-method").as_deref(), "GET"))
            .and(eq(
                "request.host",
                h("request-host").as_deref(),
                "localhost",
            ))
            .and(eq(
                "request.useragent",
                h("request-useragent").as_deref(),
                "conf-agent",
            ))
            .and(eq("plugin_name", h("plugin-name").as_deref(), p)),
    );
    rec.check(
        p,
        "integer attributes (int64 LE)",
        &["proxy_get_property"],
        is(
            num("request-time") && num("source-port") && num("destination-port"),
            format!(
                "request.time {:?} source.port {:?} destination.port {:?}",
                h("request-time"),
                h("source-port"),
                h("destination-port")
            ),
        ),
    );
    rec.check(
        p,
        "address attributes",
        &["proxy_get_property"],
        is(
            h("source-address").is_some_and(|a| a.starts_with("127.0.0.1:")),
            format!("source.address {:?}", h("source-address")),
        )
        .and(eq(
            "destination.address",
            h("destination-address").as_deref(),
            &gw.addr().to_string(),
        )),
    );
    rec.check(
        p,
        "request.headers map encoding",
        &["proxy_get_property"],
        eq(
            "x-prop-request-headers-x-probe",
            h("request-headers-x-probe").as_deref(),
            "probe-value",
        ),
    );
    rec.check(
        p,
        "response attributes",
        &["proxy_get_property"],
        eq("response.code", h("response-code").as_deref(), "200"),
    );
    rec.check(
        p,
        "upstream attributes",
        &["proxy_get_property"],
        eq(
            "upstream.address",
            h("upstream-address").as_deref(),
            &env.echo.addr.to_string(),
        )
        .and(eq(
            "upstream.port",
            h("upstream-port").as_deref(),
            &env.echo.addr.port().to_string(),
        )),
    );
    rec.check(
        p,
        "set_property then get_property",
        &["proxy_set_property", "proxy_get_property"],
        eq("x-prop-set-roundtrip", h("set-roundtrip").as_deref(), "v1"),
    );
}

fn grpc_call(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let routes = "      - match: { path_prefix: \"/bad\" }\n        filters: [{ plugin: rs_grpc_call, config: { service: sluice.Nope } }]\n        cluster: echo\n      - match: { path_prefix: \"/\" }\n        filters: [{ plugin: rs_grpc_call }]\n        cluster: echo";
    let gw = match env.gateway(
        routes,
        &plugin_def(
            dir,
            p,
            p,
            Some("{ cluster: grpc, timeout_ms: 5000 }"),
            None,
            "",
        ),
    ) {
        Ok(gw) => gw,
        Err(e) => return rec.check(p, "gateway starts", LIFECYCLE, Err(e)),
    };
    let r = get(&gw, "/g", &[("x-grpc", "unary")]);
    rec.check(
        p,
        "unary call to grpc.health.v1.Health/Check",
        &[
            "proxy_grpc_call",
            "proxy_on_grpc_receive",
            "proxy_get_buffer_bytes",
            "proxy_continue_stream",
        ],
        r.and_then(|r| {
            eq(
                "upstream x-grpc-status",
                r.upstream_saw("x-grpc-status").as_deref(),
                "0",
            )
            .and(eq(
                "upstream x-grpc-response-hex",
                r.upstream_saw("x-grpc-response-hex").as_deref(),
                "0801",
            ))
        }),
    );
    let r = get(&gw, "/bad", &[("x-grpc", "unary")]);
    rec.check(
        p,
        "unary call answered UNIMPLEMENTED → on_grpc_close(12)",
        &["proxy_grpc_call", "proxy_on_grpc_close", "proxy_get_status"],
        r.and_then(|r| eq("x-grpc-status", r.header("x-grpc-status"), "12")),
    );
    let r = get(&gw, "/g", &[("x-grpc", "stream")]);
    rec.check(
        p,
        "stream to Health/Watch, first message, cancel",
        &[
            "proxy_grpc_stream",
            "proxy_grpc_send",
            "proxy_on_grpc_receive",
            "proxy_grpc_cancel",
        ],
        r.and_then(|r| {
            eq(
                "x-grpc-stream-messages",
                r.header("x-grpc-stream-messages"),
                "1",
            )
            .and(eq(
                "x-grpc-stream-first-hex",
                r.header("x-grpc-stream-first-hex"),
                "0801",
            ))
            .and(eq(
                "x-grpc-stream-cancel",
                r.header("x-grpc-stream-cancel"),
                "Ok",
            ))
        }),
    );
    let r = get(&gw, "/g", &[("x-grpc", "stream-close")]);
    rec.check(
        p,
        "stream to Health/Check half-closed: message, trailers, close(0)",
        &[
            "proxy_grpc_stream",
            "proxy_grpc_send",
            "proxy_grpc_close",
            "proxy_on_grpc_receive_initial_metadata",
            "proxy_on_grpc_receive",
            "proxy_on_grpc_receive_trailing_metadata",
            "proxy_on_grpc_close",
        ],
        r.and_then(|r| {
            eq("x-grpc-stream-close", r.header("x-grpc-stream-close"), "Ok")
                .and(eq(
                    "x-grpc-stream-first-hex",
                    r.header("x-grpc-stream-first-hex"),
                    "0801",
                ))
                .and(eq(
                    "x-grpc-stream-close-status",
                    r.header("x-grpc-stream-close-status"),
                    "0",
                ))
                .and(is(
                    r.header("x-grpc-stream-trailers")
                        .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 1)),
                    format!(
                        "x-grpc-stream-trailers {:?}",
                        r.header("x-grpc-stream-trailers")
                    ),
                ))
                .and(is(
                    r.upstream_saw("x-grpc-stream-close").as_deref() == Some("Ok"),
                    "the request did not wait for the stream to close",
                ))
        }),
    );
    let r = get(&gw, "/g", &[("x-grpc", "stream")]);
    rec.check(
        p,
        "stream initial metadata",
        &["proxy_on_grpc_receive_initial_metadata"],
        r.and_then(|r| {
            is(
                r.header("x-grpc-stream-initial-metadata")
                    .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 1)),
                format!(
                    "x-grpc-stream-initial-metadata {:?}",
                    r.header("x-grpc-stream-initial-metadata")
                ),
            )
        }),
    );
}

fn shared(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    let mut counters = Vec::new();
    let mut enq = Vec::new();
    for i in 0..5 {
        match get(&gw, &format!("/s/{i}"), &[]) {
            Ok(r) => {
                counters.push(r.header("x-shared-counter").unwrap_or("-").to_string());
                enq.push(r.header("x-shared-enqueue").unwrap_or("-").to_string());
            }
            Err(e) => counters.push(e),
        }
    }
    rec.check(
        p,
        "CAS counter 1..N",
        &["proxy_get_shared_data", "proxy_set_shared_data"],
        is(
            counters == ["1", "2", "3", "4", "5"],
            format!("counters {counters:?}"),
        ),
    );
    rec.check(
        p,
        "queue registered, resolved, enqueued",
        &[
            "proxy_register_shared_queue",
            "proxy_resolve_shared_queue",
            "proxy_enqueue_shared_queue",
        ],
        is(enq.iter().all(|e| e == "Ok"), format!("enqueue {enq:?}")),
    );
    let mut dequeued = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(r) = get(&gw, "/s/after", &[]) {
            let n = r
                .header("x-shared-dequeued")
                .and_then(|v| v.parse::<u32>().ok());
            dequeued = n;
            if n.is_some_and(|n| n >= 5) {
                break;
            }
        }
    }
    rec.check(
        p,
        "on_queue_ready drains the queue",
        &["proxy_on_queue_ready", "proxy_dequeue_shared_queue"],
        is(
            dequeued.is_some_and(|n| n >= 5),
            format!("x-shared-dequeued {dequeued:?}"),
        ),
    );
    let set = get(&gw, "/s/set", &[("x-shared-set", "color=blue")]);
    let got = get(&gw, "/s/get", &[("x-shared-get", "color")]);
    let missing = get(&gw, "/s/get", &[("x-shared-get", "no-such-key")]);
    rec.check(
        p,
        "set then get a key; missing key",
        &["proxy_set_shared_data", "proxy_get_shared_data"],
        set.and_then(|s| eq("x-shared-set-result", s.header("x-shared-set-result"), "Ok"))
            .and(got.and_then(|g| eq("x-shared-value", g.header("x-shared-value"), "blue")))
            .and(missing.and_then(|m| eq("x-shared-value", m.header("x-shared-value"), "<none>"))),
    );
}

fn timer(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(env, dir, p, Some("{ tick_ms: 20 }"), None, rec) else {
        return;
    };
    let ticks = |r: Result<Resp, String>| {
        r.ok().and_then(|r| {
            r.header("x-timer-ticks")
                .and_then(|v| v.parse::<u64>().ok())
        })
    };
    let first = ticks(get(&gw, "/t", &[]));
    let mut later = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        later = ticks(get(&gw, "/t", &[]));
        if later > first && first.is_some() {
            break;
        }
    }
    rec.check(
        p,
        "ticks keep coming",
        &[
            "proxy_set_tick_period_milliseconds",
            "proxy_on_tick",
            "proxy_get_shared_data",
            "proxy_set_shared_data",
        ],
        is(
            first.is_some() && later > first,
            format!("ticks {first:?} then {later:?}"),
        ),
    );
}

fn metrics(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    let a = get(&gw, "/m", &[]);
    let b = get(
        &gw,
        "/m",
        &[("x-metric-gauge", "10"), ("x-metric-gauge-delta", "-3")],
    );
    let (a, b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return rec.check(p, "requests", &["proxy_define_metric"], Err(e))
        }
    };
    rec.check(
        p,
        "define metrics in on_vm_start",
        &["proxy_define_metric"],
        eq("x-metric-define", a.header("x-metric-define"), "Ok"),
    );
    rec.check(
        p,
        "counter increments",
        &["proxy_increment_metric", "proxy_get_metric"],
        {
            let (x, y) = (a.header("x-metric-counter"), b.header("x-metric-counter"));
            let (x, y) = (
                x.and_then(|v| v.parse::<i64>().ok()),
                y.and_then(|v| v.parse::<i64>().ok()),
            );
            is(
                x.is_some() && y == x.map(|x| x + 1),
                format!("counter {x:?} then {y:?}"),
            )
        },
    );
    rec.check(
        p,
        "gauge record then increment by a negative delta",
        &[
            "proxy_record_metric",
            "proxy_increment_metric",
            "proxy_get_metric",
        ],
        eq("x-metric-gauge", b.header("x-metric-gauge"), "7"),
    );
    rec.check(
        p,
        "get_metric on a histogram is refused",
        &["proxy_get_metric"],
        eq(
            "x-metric-histogram-get",
            a.header("x-metric-histogram-get"),
            "<error:BadArgument>",
        ),
    );
    let text = gw.metrics();
    rec.check(
        p,
        "plugin metrics on /metrics",
        &[
            "proxy_define_metric",
            "proxy_increment_metric",
            "proxy_record_metric",
        ],
        {
            let line = text.lines().find(|l| {
                l.starts_with("sluice_plugin_sluice_conformance_requests{")
                    && l.contains("rs_metrics")
            });
            is(
                line.is_some_and(|l| l.trim_end().ends_with(" 2"))
                    && text.contains("sluice_plugin_sluice_conformance_latency"),
                format!(
                    "counter line {line:?} in /metrics starting {:?}",
                    text.chars().take(200).collect::<String>()
                ),
            )
        },
    );
}

fn foreign(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    let r = get(&gw, "/f", &[("x-ban-me", "1")]);
    rec.check(
        p,
        "sluice.ban_source with the client address",
        &["proxy_call_foreign_function"],
        r.and_then(|r| {
            is(
                r.header("x-foreign-result")
                    .is_some_and(|v| v.starts_with("ok:")),
                format!("x-foreign-result {:?}", r.header("x-foreign-result")),
            )
            .and(eq("x-foreign-arg", r.header("x-foreign-arg"), "127.0.0.1"))
        }),
    );
    let r = get(
        &gw,
        "/f",
        &[("x-ban-me", "1"), ("x-foreign-name", "no.such.function")],
    );
    rec.check(
        p,
        "unknown foreign function → NotFound",
        &["proxy_call_foreign_function"],
        r.and_then(|r| {
            eq(
                "x-foreign-result",
                r.header("x-foreign-result"),
                "error:NotFound",
            )
        }),
    );
    let r = get(
        &gw,
        "/f",
        &[("x-ban-me", "1"), ("x-foreign-arg", "not an ip")],
    );
    rec.check(
        p,
        "bad argument → BadArgument",
        &["proxy_call_foreign_function"],
        r.and_then(|r| {
            eq(
                "x-foreign-result",
                r.header("x-foreign-result"),
                "error:BadArgument",
            )
        }),
    );
}

fn log(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let Some(gw) = start(env, dir, p, None, None, rec) else {
        return;
    };
    let r = get(&gw, "/log-probe", &[]);
    rec.check(
        p,
        "log at every level, read the level",
        &["proxy_log", "proxy_get_log_level"],
        r.and_then(|r| {
            eq(
                "x-log-results",
                r.header("x-log-results"),
                "trace=Ok,debug=Ok,info=Ok,warn=Ok,error=Ok,critical=Ok",
            )
            .and(eq("x-log-level", r.header("x-log-level"), "info"))
        }),
    );
    std::thread::sleep(Duration::from_millis(200));
    let log = gw.log();
    rec.check(
        p,
        "messages at or above the level reach the gateway log",
        &["proxy_log"],
        {
            let has = |lvl: &str| log.contains(&format!("sluice-conformance log {lvl} /log-probe"));
            is(
                has("info")
                    && has("warn")
                    && has("error")
                    && has("critical")
                    && !has("debug")
                    && !has("trace"),
                "log lines missing or below-level lines present".to_string(),
            )
        },
    );
}

/// A stream paused and never resumed ends after `limits.pause_timeout` with the failure policy;
/// the VM stays in service.
fn pause_forever(gw: &Gateway, p: &str, rec: &mut Recorder) {
    let series = format!("sluice_plugin_failures_total{{plugin=\"{p}\",kind=\"pause_timeout\"}}");
    let before = gw.metric(&series);
    let result = get(gw, "/forever", &[("x-lc-pause-forever", "1")]).and_then(|r| {
        eq("status", Some(&r.status.to_string()), "503")?;
        let after = gw.metric(&series);
        is(after >= before + 1.0, format!("{series} {before} → {after}"))?;
        let next = get(gw, "/after", &[])?;
        eq("next request status", Some(&next.status.to_string()), "200")?;
        Ok(format!(
            "503 after the pause timeout; failures_total{{kind=pause_timeout}} {before} → {after}; the next request 200 (same VM)"
        ))
    });
    rec.hostile(
        "pause-forever",
        "paused, never resumed: fail_closed 503 after limits.pause_timeout, counted; the VM stays",
        result,
    );
}

/// The two probes both lifecycle plugins report on every response: their clock
/// (`<prefix>-time-ns`) and the request header map's size against its serialized pairs
/// (`<prefix>-map-size`).
fn clock_and_map_size(rec: &mut Recorder, p: &str, r: &Result<Resp, String>, prefix: &str) {
    rec.check(
        p,
        "current time agrees with the runner's clock",
        &["proxy_get_current_time_nanoseconds"],
        r.as_ref()
            .map_err(Clone::clone)
            .and_then(|r| clock_agrees(r, &format!("{prefix}-time-ns"))),
    );
    rec.check(
        p,
        "header map size = size of the serialized pairs",
        &["proxy_get_header_map_size", "proxy_get_header_map_pairs"],
        r.as_ref()
            .map_err(Clone::clone)
            .and_then(|r| sizes_match(r, &format!("{prefix}-map-size"))),
    );
}

/// `x-<name>: A=B` with A == B > 0 (a host-reported size against the plugin's own count).
fn sizes_match(r: &Resp, name: &str) -> Result<(), String> {
    let v = r.header(name).unwrap_or("none");
    let ok = v
        .split_once('=')
        .is_some_and(|(a, b)| a == b && a.parse::<u64>().is_ok_and(|n| n > 0));
    is(ok, format!("{name}: {v:?}, want N=N with N > 0"))
}

/// The plugin's clock (`x-<name>` ns since the epoch) agrees with the runner's, within a minute.
fn clock_agrees(r: &Resp, name: &str) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let got = r.header(name).and_then(|v| v.parse::<u128>().ok());
    is(
        got.is_some_and(|t| t.abs_diff(now) < 60_000_000_000),
        format!("{name}: {got:?}, runner clock {now}"),
    )
}

/// Sends requests until `done` holds for one (the lifecycle callbacks of a stream run after its
/// response went out, so a later request reports them); the last response either way.
fn until(
    gw: &Gateway,
    headers: &[(&str, &str)],
    done: impl Fn(&Resp) -> bool,
) -> Result<Resp, String> {
    let mut last = get(gw, "/later", headers)?;
    for _ in 0..100 {
        if done(&last) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        last = get(gw, "/later", headers)?;
    }
    Ok(last)
}

/// The counts of a `log=N,done=N,delete=N,released-deleted=N` report.
fn lifecycle_counts(r: &Resp, name: &str) -> [u32; 4] {
    let mut out = [0; 4];
    for (i, part) in r.header(name).unwrap_or("").split(',').enumerate().take(4) {
        out[i] = part
            .split_once('=')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
    }
    out
}

fn lifecycle(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    let routes = "      - match: { path_prefix: \"/\" }\n        filters: [{ plugin: rs_lifecycle }]\n        cluster: echo";
    let extra = "    limits: { pause_timeout: 300ms }\n";
    let gw = match env.gateway(
        routes,
        &plugin_def(dir, p, p, Some("lifecycle-config"), None, extra),
    ) {
        Ok(gw) => gw,
        Err(e) => return rec.check(p, "gateway starts", LIFECYCLE, Err(e)),
    };
    pause_forever(&gw, p, rec);
    let r = get(&gw, "/lc", &[]);
    clock_and_map_size(rec, p, &r, "x-lc");
    rec.check(
        p,
        "buffer status of the plugin configuration",
        &["proxy_get_buffer_status", "proxy_on_configure"],
        r.as_ref()
            .map_err(Clone::clone)
            .and_then(|r| eq("x-lc-config-size", r.header("x-lc-config-size"), "16=16")),
    );
    rec.check(
        p,
        "proxy_done from a live stream → NotFound",
        &["proxy_done"],
        r.as_ref().map_err(Clone::clone).and_then(|r| {
            eq(
                "x-lc-done-outside",
                r.header("x-lc-done-outside"),
                "NotFound",
            )
        }),
    );
    let r = until(&gw, &[], |r| {
        let [log, done, delete, _] = lifecycle_counts(r, "x-lc-lifecycle");
        log >= 1 && done >= 1 && delete >= 1
    });
    rec.check(
        p,
        "on_log, on_done, on_delete after each stream",
        &["proxy_on_log", "proxy_on_done", "proxy_on_delete"],
        r.and_then(|r| {
            let [log, done, delete, _] = lifecycle_counts(&r, "x-lc-lifecycle");
            is(
                log >= 1 && done >= 1 && delete >= 1,
                format!("x-lc-lifecycle {:?}", r.header("x-lc-lifecycle")),
            )
        }),
    );
    let deferred = get(&gw, "/defer", &[("x-lc-defer-done", "1")]);
    let r =
        deferred.and_then(|_| until(&gw, &[], |r| lifecycle_counts(r, "x-lc-lifecycle")[3] >= 1));
    rec.check(
        p,
        "on_done false, then proxy_done from on_tick, then on_delete",
        &[
            "proxy_on_done",
            "proxy_done",
            "proxy_set_effective_context",
            "proxy_on_delete",
        ],
        r.and_then(|r| {
            eq("x-lc-proxy-done", r.header("x-lc-proxy-done"), "Ok").and(is(
                lifecycle_counts(&r, "x-lc-lifecycle")[3] >= 1,
                format!("x-lc-lifecycle {:?}", r.header("x-lc-lifecycle")),
            ))
        }),
    );
}

fn abi_010(env: &Env, dir: &Path, p: &str, rec: &mut Recorder) {
    // The plugin is in the listener chain so that it runs before the route is chosen again.
    let routes = "      - match: { path_prefix: \"/h2/\" }\n        cluster: echo2\n      - name: rerouted\n        match: { path_prefix: \"/\", headers: [{ name: x-route, value: rerouted }] }\n        direct_response: { status: 200, body: \"rerouted\\n\" }\n      - match: { path_prefix: \"/\" }\n        cluster: echo";
    let extra = "    limits: { pause_timeout: 5s }\n";
    let yaml = env
        .yaml(
            routes,
            &plugin_def(dir, p, p, Some("abi010-config"), Some("abi010-vm"), extra),
        )
        .replacen(
            "    routes:\n",
            &format!("    filters: [{{ plugin: {p} }}]\n    routes:\n"),
            1,
        );
    let gw = match Gateway::try_start(&yaml) {
        Ok(gw) => gw,
        Err(e) => return rec.check(p, "gateway starts", LIFECYCLE, Err(e)),
    };
    let r = get(&gw, "/a", &[]);
    rec.check(
        p,
        "0.1.0 header callbacks add headers",
        &[
            "proxy_on_context_create",
            "proxy_on_configure",
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_add_header_map_value",
            "proxy_on_memory_allocate / malloc",
        ],
        r.as_ref().map_err(Clone::clone).and_then(|r| {
            eq(
                "upstream x-abi",
                r.upstream_saw("x-abi").as_deref(),
                "0.1.0",
            )
            .and(eq("x-abi", r.header("x-abi"), "0.1.0"))
        }),
    );
    rec.check(
        p,
        "proxy_get_configuration in on_configure",
        &["proxy_get_configuration", "proxy_on_configure"],
        r.as_ref().map_err(Clone::clone).and_then(|r| {
            eq(
                "x-abi010-config",
                r.header("x-abi010-config"),
                "abi010-config",
            )
        }),
    );
    clock_and_map_size(rec, p, &r, "x-abi010");
    std::thread::sleep(Duration::from_millis(200));
    rec.check(
        p,
        "proxy_log reaches the gateway log",
        &["proxy_log"],
        is(
            gw.log().contains("sluice-conformance abi010 context"),
            "no `sluice-conformance abi010` line in the gateway log",
        ),
    );
    let r = post(&gw, "/b", &[], "hello");
    rec.check(
        p,
        "buffer status of the request body",
        &["proxy_get_buffer_status", "proxy_on_request_body"],
        r.and_then(|r| {
            eq(
                "x-abi010-body-status",
                r.header("x-abi010-body-status"),
                "5",
            )
        }),
    );
    let r = get(&gw, "/a", &[("x-abi010-pause", "1")]);
    rec.check(
        p,
        "pause, then proxy_continue_request from on_tick",
        &[
            "proxy_set_tick_period_milliseconds",
            "proxy_on_tick",
            "proxy_set_effective_context",
            "proxy_continue_request",
        ],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "200").and(eq(
                "x-abi010-resumed",
                r.header("x-abi010-resumed"),
                "0",
            ))
        }),
    );
    let paused = get(&gw, "/a", &[("x-abi010-pause-response", "1")]);
    let r = paused.and_then(|first| {
        eq("status", Some(&first.status.to_string()), "200")?;
        eq(
            "x-abi010-paused-response",
            first.header("x-abi010-paused-response"),
            "1",
        )?;
        get(&gw, "/a", &[])
    });
    rec.check(
        p,
        "pause on response headers, then proxy_continue_response from on_tick",
        &[
            "proxy_on_tick",
            "proxy_set_effective_context",
            "proxy_continue_response",
        ],
        r.and_then(|r| {
            eq(
                "x-abi010-last-response-resume",
                r.header("x-abi010-last-response-resume"),
                "0",
            )
        }),
    );
    let r = get(&gw, "/a", &[("x-abi010-reroute", "1")]);
    rec.check(
        p,
        "proxy_clear_route_cache: the changed request is routed again",
        &["proxy_clear_route_cache"],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "200").and(eq(
                "body",
                Some(r.text().as_str()),
                "rerouted\n",
            ))
        }),
    );
    let r = until(&gw, &[], |r| {
        let [log, done, delete, _] = lifecycle_counts(r, "x-abi010-lifecycle");
        log >= 1 && done >= 1 && delete >= 1
    });
    rec.check(
        p,
        "on_log, on_done, on_delete after each stream",
        &["proxy_on_log", "proxy_on_done", "proxy_on_delete"],
        r.and_then(|r| {
            let [log, done, delete, _] = lifecycle_counts(&r, "x-abi010-lifecycle");
            is(
                log >= 1 && done >= 1 && delete >= 1,
                format!("x-abi010-lifecycle {:?}", r.header("x-abi010-lifecycle")),
            )
        }),
    );
    let deferred = get(&gw, "/defer", &[("x-abi010-defer-done", "1")]);
    let r = deferred.and_then(|_| {
        until(&gw, &[], |r| {
            lifecycle_counts(r, "x-abi010-lifecycle")[3] >= 1
        })
    });
    rec.check(
        p,
        "on_done false, then proxy_done from on_tick, then on_delete",
        &["proxy_on_done", "proxy_done", "proxy_on_delete"],
        r.and_then(|r| {
            eq("x-abi010-proxy-done", r.header("x-abi010-proxy-done"), "0").and(is(
                lifecycle_counts(&r, "x-abi010-lifecycle")[3] >= 1,
                format!("x-abi010-lifecycle {:?}", r.header("x-abi010-lifecycle")),
            ))
        }),
    );
    abi_010_probes(&gw, p, rec);
    abi_010_trailers(&gw, p, rec);
}

/// Trailers over h2 end to end (the listener chain holds the plugin on `/h2/` too).
fn abi_010_trailers(gw: &Gateway, p: &str, rec: &mut Recorder) {
    let req = build("POST", "/h2/t", &[], with_trailers("data", &[("x-t", "1")]));
    let r = send(gw.addr(), req, true);
    rec.check(
        p,
        "request trailers: one added (h2 end to end)",
        &["proxy_on_request_trailers", "proxy_add_header_map_value"],
        r.and_then(|r| {
            let t = r
                .json()
                .get("trailers")
                .and_then(|t| t.get("x-abi010-trailer"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            eq("upstream trailer x-abi010-trailer", t.as_deref(), "added")
        }),
    );
    let req = build(
        "GET",
        "/h2/t",
        &[("x-up-trailer-x-kept", "1"), ("te", "trailers")],
        full(""),
    );
    let r = send(gw.addr(), req, true);
    rec.check(
        p,
        "response trailers: one added (h2 end to end)",
        &["proxy_on_response_trailers", "proxy_add_header_map_value"],
        r.and_then(|r| {
            eq(
                "trailer x-abi010-response-trailer",
                r.trailer("x-abi010-response-trailer"),
                "added",
            )
            .and(eq("trailer x-kept", r.trailer("x-kept"), "1"))
        }),
    );
}

/// The rest of the 0.1.0 surface (rs_abi_010's `probes` module), on the same gateway.
fn abi_010_probes(gw: &Gateway, p: &str, rec: &mut Recorder) {
    let r = get(
        gw,
        "/p",
        &[
            ("x-abi010-probe", "1"),
            ("x-abi010-replace", "original"),
            ("x-abi010-remove", "gone"),
        ],
    );
    let with = |f: &dyn Fn(&Resp) -> Result<(), String>| match &r {
        Ok(r) => f(r),
        Err(e) => Err(e.clone()),
    };
    rec.check(
        p,
        "on_vm_start with the VM configuration size",
        &["_initialize / _start", "proxy_on_vm_start"],
        with(&|r| eq("x-abi010-vm-start", r.header("x-abi010-vm-start"), "9")),
    );
    rec.check(
        p,
        "get_property (request.path), set_property then get_property",
        &["proxy_get_property", "proxy_set_property"],
        with(&|r| {
            eq("x-abi010-prop-path", r.header("x-abi010-prop-path"), "/p").and(eq(
                "x-abi010-prop-set",
                r.header("x-abi010-prop-set"),
                "0:v1",
            ))
        }),
    );
    rec.check(
        p,
        "request header replace, remove, whole-map set",
        &[
            "proxy_get_header_map_value",
            "proxy_replace_header_map_value",
            "proxy_remove_header_map_value",
            "proxy_get_header_map_pairs",
            "proxy_set_header_map_pairs",
        ],
        with(&|r| {
            eq(
                "upstream x-abi010-replace",
                r.upstream_saw("x-abi010-replace").as_deref(),
                "replaced",
            )
            .and(is(
                r.upstream_saw("x-abi010-remove").is_none(),
                "x-abi010-remove reached the upstream",
            ))
            .and(eq(
                "upstream x-abi010-pairs",
                r.upstream_saw("x-abi010-pairs").as_deref(),
                "set",
            ))
        }),
    );
    rec.check(
        p,
        "shared data set then get (value and CAS)",
        &["proxy_set_shared_data", "proxy_get_shared_data"],
        with(&|r| {
            eq(
                "x-abi010-shared",
                r.header("x-abi010-shared"),
                "0:true:true",
            )
        }),
    );
    rec.check(
        p,
        "metrics: define, increment, record, get",
        &[
            "proxy_define_metric",
            "proxy_increment_metric",
            "proxy_record_metric",
            "proxy_get_metric",
        ],
        with(&|r| {
            let v = r.header("x-abi010-metrics").unwrap_or("");
            is(
                v.starts_with("[0, 0, 0, 0]:counter=")
                    && v.ends_with(":gauge=7")
                    && !v.contains("counter=0:"),
                format!("x-abi010-metrics {v:?}"),
            )
        }),
    );
    let enqueued = with(&|r| eq("x-abi010-enqueue", r.header("x-abi010-enqueue"), "0"));
    let r = enqueued.and_then(|()| {
        until(gw, &[("x-abi010-probe", "1")], |r| {
            r.header("x-abi010-dequeued")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 1)
        })
    });
    rec.check(
        p,
        "shared queue: register, resolve, enqueue, on_queue_ready dequeues",
        &[
            "proxy_register_shared_queue",
            "proxy_resolve_shared_queue",
            "proxy_enqueue_shared_queue",
            "proxy_dequeue_shared_queue",
            "proxy_on_queue_ready",
        ],
        r.and_then(|r| {
            is(
                r.header("x-abi010-dequeued")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n >= 1),
                format!("x-abi010-dequeued {:?}", r.header("x-abi010-dequeued")),
            )
        }),
    );
    let r = get(gw, "/l", &[("x-abi010-local", "1")]);
    rec.check(
        p,
        "local response from request headers",
        &["proxy_send_local_response"],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "418")
                .and(eq("x-abi010-local", r.header("x-abi010-local"), "1"))
                .and(eq("body", Some(r.text().as_str()), "abi010 local\n"))
        }),
    );
    let r = post(gw, "/b", &[("x-abi010-body", "1")], "abc");
    rec.check(
        p,
        "request body buffered, read and appended",
        &[
            "proxy_on_request_body",
            "proxy_get_buffer_bytes",
            "proxy_set_buffer_bytes",
        ],
        r.and_then(|r| {
            eq(
                "upstream body",
                r.json().get("body").and_then(|v| v.as_str()),
                "abc+abi010:3",
            )
        }),
    );
    let r = get(gw, "/text/abc", &[("x-abi010-response-body", "1")]);
    rec.check(
        p,
        "response body buffered, read and appended",
        &[
            "proxy_on_response_body",
            "proxy_get_buffer_bytes",
            "proxy_set_buffer_bytes",
            "proxy_remove_header_map_value",
        ],
        r.and_then(|r| eq("client body", Some(r.text().as_str()), "abc+abi010:3")),
    );
    let r = get(gw, "/c", &[("x-abi010-callout", "http")]);
    rec.check(
        p,
        "http callout, answer read, continue_request",
        &[
            "proxy_http_call",
            "proxy_on_http_call_response",
            "proxy_get_header_map_value",
            "proxy_get_buffer_bytes",
            "proxy_set_effective_context",
            "proxy_continue_request",
        ],
        r.and_then(|r| {
            eq("status", Some(&r.status.to_string()), "200")
                .and(eq(
                    "x-abi010-callout-status",
                    r.header("x-abi010-callout-status"),
                    "200",
                ))
                .and(is(
                    r.header("x-abi010-callout-body")
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_some_and(|n| n > 0),
                    format!(
                        "x-abi010-callout-body {:?}",
                        r.header("x-abi010-callout-body")
                    ),
                ))
        }),
    );
    let r = get(gw, "/c", &[("x-abi010-callout", "grpc")]);
    rec.check(
        p,
        "unary gRPC call to Health/Check",
        &[
            "proxy_grpc_call",
            "proxy_on_grpc_receive_initial_metadata",
            "proxy_on_grpc_receive",
            "proxy_get_buffer_bytes",
            "proxy_continue_request",
        ],
        r.and_then(|r| {
            eq(
                "x-abi010-grpc-message",
                r.header("x-abi010-grpc-message"),
                "0801",
            )
            .and(is(
                r.header("x-abi010-grpc-initial").is_some(),
                "no on_grpc_receive_initial_metadata",
            ))
        }),
    );
    let r = get(gw, "/c", &[("x-abi010-callout", "stream")]);
    rec.check(
        p,
        "gRPC stream: send, half-close, trailers, close; a second one cancelled",
        &[
            "proxy_grpc_stream",
            "proxy_grpc_send",
            "proxy_grpc_close",
            "proxy_grpc_cancel",
            "proxy_on_grpc_receive_initial_metadata",
            "proxy_on_grpc_receive",
            "proxy_on_grpc_receive_trailing_metadata",
            "proxy_on_grpc_close",
            "proxy_get_status",
        ],
        r.and_then(|r| {
            eq(
                "x-abi010-grpc-cancel",
                r.header("x-abi010-grpc-cancel"),
                "0",
            )
            .and(eq(
                "x-abi010-grpc-send-close",
                r.header("x-abi010-grpc-send-close"),
                "0:0",
            ))
            .and(eq(
                "x-abi010-grpc-message",
                r.header("x-abi010-grpc-message"),
                "0801",
            ))
            .and(is(
                r.header("x-abi010-grpc-trailers")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n >= 1),
                format!(
                    "x-abi010-grpc-trailers {:?}",
                    r.header("x-abi010-grpc-trailers")
                ),
            ))
            .and(eq(
                "x-abi010-grpc-close",
                r.header("x-abi010-grpc-close"),
                "0:0:",
            ))
        }),
    );
}
