//! Hostile plugins: each on its own route of one gateway (one worker), next to a healthy route.
//! Every scenario checks that the gateway stays up, that the healthy route keeps answering (also
//! while the hostile route is being hit), that the failure policy decides the hostile request, and
//! that `sluice_plugin_failures_total{plugin,kind}` counts the failure.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::functional::{eq, is, plugin_def, Env};
use crate::record::Recorder;
use crate::support::*;

/// (plugin name = route, file, config, vm_config, failure policy, limits)
const PLUGINS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "loop-request-headers",
        "rs_hostile_loop",
        "request_headers",
        "fail_closed",
        "callback_timeout: 50ms",
    ),
    (
        "loop-request-body",
        "rs_hostile_loop",
        "request_body",
        "fail_closed",
        "callback_timeout: 50ms",
    ),
    (
        "loop-response-headers",
        "rs_hostile_loop",
        "response_headers",
        "fail_closed",
        "callback_timeout: 50ms",
    ),
    (
        "loop-response-body",
        "rs_hostile_loop",
        "response_body",
        "fail_closed",
        "callback_timeout: 50ms",
    ),
    (
        "loop-tick",
        "rs_hostile_loop",
        "tick",
        "fail_closed",
        "callback_timeout: 50ms",
    ),
    (
        "loop-done",
        "rs_hostile_loop",
        "done",
        "fail_closed",
        "callback_timeout: 50ms",
    ),
    (
        "loop-grpc",
        "rs_hostile_loop",
        "request_headers",
        "fail_closed",
        "callback_timeout: 50ms",
    ),
    (
        "loop-open",
        "rs_hostile_loop",
        "request_headers",
        "fail_open",
        "callback_timeout: 50ms",
    ),
    (
        "loop-reload",
        "rs_hostile_loop",
        "request_headers",
        "fail_reload",
        "callback_timeout: 50ms",
    ),
    (
        "trap-panic",
        "rs_hostile_trap",
        "request_headers",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "trap-oob-load",
        "rs_hostile_trap",
        "{ where: request_headers, mode: memory }",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "memory-bomb",
        "rs_hostile_memory",
        "request_headers",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "memory-grow",
        "rs_hostile_memory",
        "{ where: request_headers, mode: grow }",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "oob",
        "rs_hostile_oob",
        "\"\"",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "alloc-oob",
        "rs_hostile_alloc",
        "oob",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "alloc-null",
        "rs_hostile_alloc",
        "\"null\"",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "alloc-edge",
        "rs_hostile_alloc",
        "edge",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "alloc-huge-read",
        "rs_hostile_alloc",
        "huge-read",
        "fail_closed",
        "memory: 16MiB",
    ),
    (
        "callouts",
        "rs_hostile_callouts",
        // Its own upstream server: the healthy route's checks the gateway, not whether the test
        // server behind `echo` accepts the thousand connections in time (on a busy CI machine
        // it once did not, and a healthy request hit the 1 s connect timeout).
        "{ cluster: callout, count: 1000, path: /, timeout_ms: 5000 }",
        "fail_closed",
        "memory: 64MiB",
    ),
];

fn yaml_parts(dir: &Path) -> (String, String) {
    let mut routes =
        String::from("      - match: { path_prefix: \"/healthy\" }\n        cluster: echo\n");
    let mut plugins = String::new();
    for (name, file, config, policy, limits) in PLUGINS {
        routes.push_str(&format!(
            "      - match: {{ path_prefix: \"/{name}\" }}\n        filters: [{{ plugin: {name} }}]\n        cluster: echo\n"
        ));
        let extra = format!("    failure_policy: {policy}\n    limits: {{ {limits} }}\n");
        plugins.push_str(&plugin_def(dir, name, file, Some(config), None, &extra));
    }
    (routes, plugins)
}

fn failures(gw: &Gateway, plugin: &str, kind: &str) -> f64 {
    gw.metric(&format!(
        "sluice_plugin_failures_total{{plugin=\"{plugin}\",kind=\"{kind}\"}}"
    ))
}

/// Hits `/healthy` from another thread until told to stop; returns the statuses it saw.
struct Healthy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Healthy {
    fn start(gw: &Gateway) -> Healthy {
        let addr = gw.addr();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            // At least a few requests, then until the scenario ends.
            while seen.len() < 3 || !s2.load(std::sync::atomic::Ordering::SeqCst) {
                let req = build("GET", "/healthy", &[], full(Bytes::new()));
                seen.push(match send(addr, req, false) {
                    Ok(r) => r.status.to_string(),
                    Err(e) => e,
                });
                if seen.len() > 2000 {
                    break;
                }
            }
            seen
        });
        Healthy { stop, thread }
    }

    fn finish(self) -> Result<usize, String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = self
            .thread
            .join()
            .map_err(|_| "healthy client panicked".to_string())?;
        let bad: Vec<&String> = seen.iter().filter(|s| *s != "200").collect();
        if bad.is_empty() {
            Ok(seen.len())
        } else {
            Err(format!(
                "healthy route answered {bad:?} (of {})",
                seen.len()
            ))
        }
    }
}

/// Runs `hit` against the hostile route while the healthy route is hit concurrently, then checks
/// liveness and (when `kind` is given) that the failure counter of `plugin` went up.
fn scenario(
    gw: &mut Gateway,
    rec: &mut Recorder,
    plugin: &str,
    expected: &str,
    kind: Option<&str>,
    hit: impl FnOnce(&Gateway) -> Result<String, String>,
) {
    let before = kind.map(|k| failures(gw, plugin, k)).unwrap_or(0.0);
    let healthy = Healthy::start(gw);
    let outcome = hit(gw);
    let concurrent = healthy.finish();
    let mut result = outcome
        .and_then(|d| concurrent.map(|n| format!("{d}; {n} concurrent healthy requests all 200")));
    if let Some(k) = kind {
        // The counter is updated when the failure is handled; tick failures happen in the
        // background, so allow a moment.
        let mut after = failures(gw, plugin, k);
        let deadline = Instant::now() + Duration::from_secs(10);
        while after <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            after = failures(gw, plugin, k);
        }
        result = result.and_then(|d| {
            if after > before {
                Ok(format!(
                    "{d}; failures_total{{kind={k}}} {before} → {after}"
                ))
            } else {
                Err(format!(
                    "{d}; failures_total{{plugin={plugin},kind={k}}} stayed {before}"
                ))
            }
        });
    }
    let alive = gw.alive();
    let after = get(gw, "/healthy", &[]).map(|r| r.status);
    result = result.and_then(|d| {
        is(
            alive && after == Ok(200),
            format!("after: alive={alive}, healthy={after:?}"),
        )
        .map(|_| d)
    });
    rec.hostile(plugin, expected, result);
}

fn status(r: &Result<Resp, String>) -> String {
    match r {
        Ok(r) => r.status.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

fn want_status(r: Result<Resp, String>, want: u16) -> Result<Resp, String> {
    match r {
        Ok(r) if r.status == want => Ok(r),
        other => Err(format!("status {} (want {want})", status(&other))),
    }
}

/// Runs every hostile scenario.
pub fn run(dir: &Path, rec: &mut Recorder) {
    let env = Env::start();
    load_time(&env, dir, rec);
    let (routes, plugins) = yaml_parts(dir);
    let mut gw = match env.gateway(&routes, &plugins) {
        Ok(gw) => gw,
        Err(e) => return rec.hostile("gateway with every hostile plugin", "starts", Err(e)),
    };
    let upstream = |r: &Resp| {
        is(
            r.header("x-upstream") == Some("echo"),
            "not from the upstream",
        )
    };

    for (route, method) in [
        ("loop-request-headers", "GET"),
        ("loop-request-body", "POST"),
        ("loop-response-headers", "GET"),
    ] {
        let path = format!("/{route}");
        scenario(
            &mut gw,
            rec,
            route,
            "fail_closed: 503, then 503 again (VM not reused)",
            Some("deadline"),
            |gw| {
                let first = want_status(
                    send(gw.addr(), build(method, &path, &[], full("body")), false),
                    503,
                )?;
                want_status(
                    send(gw.addr(), build(method, &path, &[], full("body")), false),
                    503,
                )?;
                Ok(format!("503 ({:?}), then 503 again", first.text().trim()))
            },
        );
    }
    scenario(
        &mut gw,
        rec,
        "loop-response-body",
        "fail_closed: 503 or the response cut (headers already sent)",
        Some("deadline"),
        |gw| match get(gw, "/loop-response-body", &[]) {
            Ok(r) if r.status == 503 => Ok("503".into()),
            Ok(r) => Err(format!("complete response {} {:?}", r.status, r.text())),
            Err(e) => Ok(format!("response cut: {e}")),
        },
    );
    scenario(
        &mut gw,
        rec,
        "loop-tick",
        "deadline in on_tick; later requests 503",
        Some("deadline"),
        |gw| {
            // The first request creates the VM (and its 10 ms tick); the tick then loops.
            let first = get(gw, "/loop-tick", &[]);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = get(gw, "/loop-tick", &[]);
                if matches!(&r, Ok(r) if r.status == 503) {
                    return Ok(format!(
                        "first {}, then 503 after the tick failed",
                        status(&first)
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!("still {} after 10 s", status(&r)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
    scenario(
        &mut gw,
        rec,
        "loop-done",
        "deadline in on_done after the response; counted",
        Some("deadline"),
        |gw| {
            let r = get(gw, "/loop-done", &[]);
            Ok(format!("response {}", status(&r)))
        },
    );
    scenario(
        &mut gw,
        rec,
        "loop-grpc",
        "fail_closed on a gRPC request: 200 + grpc-status 14",
        Some("deadline"),
        |gw| {
            let req = build(
                "POST",
                "/loop-grpc/svc/Method",
                &[("content-type", "application/grpc"), ("te", "trailers")],
                full(Bytes::from_static(&[0, 0, 0, 0, 0])),
            );
            let r = want_status(send(gw.addr(), req, true), 200)?;
            eq(
                "grpc-status",
                r.header("grpc-status").or(r.trailer("grpc-status")),
                "14",
            )?;
            Ok("200, grpc-status 14".into())
        },
    );
    scenario(
        &mut gw,
        rec,
        "loop-open",
        "fail_open: the request reaches the upstream",
        Some("deadline"),
        |gw| {
            let r = want_status(get(gw, "/loop-open", &[]), 200)?;
            upstream(&r)?;
            let r2 = want_status(get(gw, "/loop-open", &[]), 200)?;
            upstream(&r2)?;
            Ok("200 from the upstream, twice".into())
        },
    );
    scenario(
        &mut gw,
        rec,
        "loop-reload",
        "fail_reload: 503, then a fresh VM after the backoff",
        Some("deadline"),
        |gw| {
            want_status(get(gw, "/loop-reload", &[]), 503)?;
            // The new VM must be asked to loop nowhere: no request trailers will come.
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut during = Vec::new();
            loop {
                let r = get(
                    gw,
                    "/loop-reload",
                    &[("x-hostile-where", "request_trailers")],
                );
                match r {
                    Ok(r) if r.status == 200 => {
                        upstream(&r)?;
                        return Ok(format!(
                            "503, then {during:?} while backing off, then 200 from a new VM"
                        ));
                    }
                    other => during.push(status(&other)),
                }
                if Instant::now() > deadline {
                    return Err(format!("no fresh VM within 15 s: {during:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        },
    );
    scenario(
        &mut gw,
        rec,
        "trap-panic",
        "panic (unreachable) → fail_closed 503",
        Some("trap"),
        |gw| want_status(get(gw, "/trap-panic", &[]), 503).map(|_| "503".into()),
    );
    scenario(
        &mut gw,
        rec,
        "trap-oob-load",
        "load past linear memory → trap → 503",
        Some("trap"),
        |gw| want_status(get(gw, "/trap-oob-load", &[]), 503).map(|_| "503".into()),
    );
    scenario(
        &mut gw,
        rec,
        "memory-bomb",
        "1 MiB allocations until the 16 MiB cap → 503",
        Some("memory_limit"),
        |gw| want_status(get(gw, "/memory-bomb", &[]), 503).map(|_| "503".into()),
    );
    scenario(
        &mut gw,
        rec,
        "memory-grow",
        "memory.grow refused at the cap (≤ 256 pages); plugin carries on",
        None,
        |gw| {
            let r = want_status(get(gw, "/memory-grow", &[]), 200)?;
            let rep = r.header("x-hostile-report").unwrap_or("");
            let pages = rep
                .strip_prefix("grow-refused-at-pages=")
                .and_then(|p| p.parse::<u32>().ok());
            is(
                pages.is_some_and(|p| p <= 256),
                format!("x-hostile-report {rep:?}"),
            )?;
            Ok(format!("200, {rep}"))
        },
    );
    scenario(
        &mut gw,
        rec,
        "oob",
        "every out-of-bounds pointer → INVALID_MEMORY_ACCESS (6)",
        None,
        |gw| {
            let r = want_status(get(gw, "/oob", &[]), 200)?;
            let results = r.header("x-oob-results").unwrap_or("").to_string();
            let bad: Vec<&str> = results
                .split(',')
                .filter(|kv| !kv.ends_with("=6"))
                .collect();
            is(
                !results.is_empty() && bad.is_empty(),
                format!("x-oob-results {results:?}"),
            )?;
            eq("x-oob-survived", r.header("x-oob-survived"), "1")?;
            Ok(format!("200, {} probes all 6", results.split(',').count()))
        },
    );
    for mode in ["oob", "null", "edge"] {
        let route = format!("alloc-{mode}");
        scenario(&mut gw, rec, &route, "bad allocator result: the host call fails (or the plugin traps), no write outside memory", None, |gw| {
            let r = get(gw, &format!("/{route}"), &[])?;
            match (r.status, r.header("x-alloc-result")) {
                (200, Some(v)) if v.starts_with(&format!("{mode}=")) && !v.ends_with("=0") && !v.ends_with("not-called") => Ok(format!("200, {v}")),
                (503, _) => Ok("503 (plugin trapped)".into()),
                (s, v) => Err(format!("{s}, x-alloc-result {v:?}")),
            }
        });
    }
    scenario(
        &mut gw,
        rec,
        "alloc-huge-read",
        "get_buffer_bytes(body, 0, 4 GiB) is clamped to the body",
        None,
        |gw| {
            let r = want_status(post(gw, "/alloc-huge-read", &[], "some body"), 200)?;
            eq("x-alloc-result", r.header("x-alloc-result"), "huge-read=0")?;
            Ok("200, huge-read=0 (Ok)".into())
        },
    );
    scenario(
        &mut gw,
        rec,
        "callouts",
        "1000 http calls from one request: every accepted one answered",
        None,
        |gw| {
            let rss = |gw: &Gateway| -> u64 {
                std::fs::read_to_string(format!(
                    "/proc/{}/status",
                    gw.child.as_ref().map_or(0, |c| c.id())
                ))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
            };
            let before = rss(gw);
            let r = want_status(get(gw, "/callouts", &[]), 200)?;
            let d = r.header("x-callouts-dispatched").unwrap_or("?").to_string();
            let refused = r.header("x-callouts-refused").unwrap_or("?").to_string();
            let responses = r.header("x-callouts-responses").unwrap_or("?").to_string();
            is(
                d == responses && d != "?",
                format!("dispatched {d}, responses {responses}, refused {refused}"),
            )?;
            Ok(format!("200: dispatched {d}, refused {refused}, responses {responses}; RSS {before} → {} KiB", rss(gw)))
        },
    );
}

/// Loops in on_vm_start / on_configure: the configuration is rejected at load time, by
/// `sluice check`, at start and on reload (the old configuration stays).
fn load_time(env: &Env, dir: &Path, rec: &mut Recorder) {
    let routes = "      - match: { path_prefix: \"/\" }\n        filters: [{ plugin: hostile }]\n        cluster: echo";
    let limits = "    limits: { callback_timeout: 50ms }\n";
    let cases = [
        (
            "vm_start",
            plugin_def(
                dir,
                "hostile",
                "rs_hostile_loop",
                None,
                Some("vm_start"),
                limits,
            ),
        ),
        (
            "configure",
            plugin_def(
                dir,
                "hostile",
                "rs_hostile_loop",
                Some("configure"),
                None,
                limits,
            ),
        ),
        (
            "configure (trap)",
            plugin_def(
                dir,
                "hostile",
                "rs_hostile_trap",
                Some("configure"),
                None,
                limits,
            ),
        ),
    ];
    for (place, def) in &cases {
        let yaml = env
            .yaml(routes, def)
            .replace("{PORT}", &free_port().to_string());
        let (ok, out) = sluice_check(&yaml);
        rec.hostile(
            &format!("{place}: sluice check"),
            "exit 1, the plugin named",
            if !ok && out.contains("hostile") {
                Ok(format!(
                    "rejected: {}",
                    out.lines()
                        .find(|l| l.contains("hostile"))
                        .unwrap_or("")
                        .trim()
                ))
            } else {
                Err(format!("exit ok={ok}: {out}"))
            },
        );
        let started = env.gateway(routes, def);
        rec.hostile(
            &format!("{place}: sluice run"),
            "refuses to start, with the reason",
            match started {
                Ok(_) => Err("the gateway started with a plugin that cannot load".into()),
                Err(e) if e.contains("gateway exited") && e.contains("hostile") => {
                    Ok("exited with an error naming the plugin".into())
                }
                Err(e) => Err(e),
            },
        );
    }
    // Reload: a good config first, then a bad one through POST /reload.
    let good = "      - match: { path_prefix: \"/\" }\n        cluster: echo";
    let mut gw = match env.gateway(good, "  []") {
        Ok(gw) => gw,
        Err(e) => return rec.hostile("configure: reload", "rejected, old config stays", Err(e)),
    };
    let bad = env
        .yaml(routes, &cases[1].1)
        .replace("{PORT}", &gw.port.to_string());
    let bad = format!(
        "admin: {{ address: \"127.0.0.1:{}\" }}\n{bad}",
        gw.admin_port
    );
    let tmp = gw.dir().join("sluice.yaml.tmp");
    let result = std::fs::write(&tmp, bad)
        .and_then(|_| std::fs::rename(&tmp, &gw.config_path))
        .map_err(|e| e.to_string())
        .and_then(|_| {
            let req = build("POST", "/reload", &[], full(Bytes::new()));
            send(gw.admin_addr(), req, false)
        })
        .and_then(|r| {
            is(
                r.status != 200,
                format!("POST /reload answered {} {}", r.status, r.text()),
            )?;
            let after = get(&gw, "/still-old", &[])?;
            eq(
                "old route still served (x-upstream)",
                after.header("x-upstream"),
                "echo",
            )?;
            is(gw.alive(), "gateway died")?;
            Ok(format!(
                "POST /reload {}; old config still serves",
                r.status
            ))
        });
    rec.hostile("configure: reload", "rejected, old config stays", result);
}
