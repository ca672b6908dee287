//! Wasm plugins as gateway filters: built from config like `sluice run` does, driven through the
//! `HttpFilter` phases on a single-threaded runtime with a LocalSet, as on a worker.

#[path = "../../wasm/tests/support/build.rs"]
mod build;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use sluice::config::model::PluginConfig;
use sluice::filter::{BodyFlow, Exchange, Flow, HttpFilter, RequestInfo};
use sluice::services::{BanSink, Services};
use sluice::telemetry::metrics::Metrics;
use sluice::wasm::{build_plugin, Plugin};

/// Write the testkit plugin next to a config and build plugin `name` with the fields `extra`.
fn plugin(dir: &Path, name: &str, extra: serde_json::Value) -> Result<Arc<Plugin>, String> {
    plugin_with(dir, name, extra, &Services::new())
}

fn plugin_with(
    dir: &Path,
    name: &str,
    extra: serde_json::Value,
    services: &Arc<Services>,
) -> Result<Arc<Plugin>, String> {
    let wasm = dir.join("testkit.wasm");
    if !wasm.exists() {
        std::fs::write(&wasm, build::plugin("testkit")).map_err(|e| e.to_string())?;
    }
    let mut cfg = serde_json::json!({ "name": name, "wasm": "testkit.wasm" });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let cfg: PluginConfig = serde_json::from_value(cfg).map_err(|e| e.to_string())?;
    build_plugin(&cfg, dir, services)
}

fn filter(p: &Arc<Plugin>) -> Arc<dyn HttpFilter> {
    p.filter(None).unwrap_or_else(|e| panic!("filter: {e}"))
}

fn exchange(path: &str) -> Exchange {
    let addr = SocketAddr::from(([127, 0, 0, 1], 41000));
    let info = RequestInfo {
        client_addr: addr,
        local_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        listener: "test".into(),
        scheme: "http",
        tls: None,
        start: Instant::now(),
        worker: 0,
        // A GET without a body.
        headers_end_stream: true,
    };
    let req = Request::get(path).body(()).unwrap_or_default();
    let (parts, ()) = req.into_parts();
    Exchange::new(info, parts)
}

fn respond(ex: &mut Exchange) {
    let (parts, ()) = Response::new(()).into_parts();
    ex.response = Some(parts);
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Run a header phase to its end, waiting through pauses.
async fn settle(flow: Flow, ex: &mut Exchange) -> Flow {
    let mut flow = flow;
    loop {
        match flow {
            Flow::Pause(p) => {
                let resume = tokio::time::timeout(Duration::from_secs(30), p)
                    .await
                    .unwrap_or_else(|_| panic!("pause never ended"));
                flow = resume(&mut ex.cx(0));
            }
            other => return other,
        }
    }
}

fn status_of(flow: &Flow) -> Option<StatusCode> {
    match flow {
        Flow::Respond(r) => Some(r.status),
        _ => None,
    }
}

async fn local<F: std::future::Future<Output = ()>>(f: F) {
    tokio::task::LocalSet::new().run_until(f).await;
}

#[tokio::test(flavor = "current_thread")]
async fn edits_headers_and_sees_properties() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "edit",
            serde_json::json!({ "config": {
                "add_request_headers": [["x-added", "1"]],
                "set_response_headers": [["x-served-by", "sluice"]],
                "echo_properties": ["source.address", "destination.port", "request.url_path", "plugin_name"]
            }}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut ex = exchange("/a/b?c=d");
        let flow = f.on_request_headers(&mut ex.cx(0));
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(header(&ex.request.headers, "x-added").as_deref(), Some("1"));
        respond(&mut ex);
        assert!(matches!(f.on_response_headers(&mut ex.cx(0)), Flow::Continue));
        let r = ex.response.as_ref().map(|r| r.headers.clone()).unwrap_or_default();
        assert_eq!(header(&r, "x-served-by").as_deref(), Some("sluice"));
        assert_eq!(header(&r, "x-prop-source.address").as_deref(), Some("127.0.0.1:41000"));
        assert_eq!(header(&r, "x-prop-destination.port").as_deref(), Some("8080"));
        assert_eq!(header(&r, "x-prop-request.url_path").as_deref(), Some("/a/b"));
        assert_eq!(header(&r, "x-prop-plugin_name").as_deref(), Some("edit"));
        f.on_log(&mut ex.cx(0));
        let info = p.info_json();
        assert_eq!(info["abi"], "0.2.1");
        assert_eq!(info["sha256"].as_str().map(str::len), Some(64));
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn local_response_and_per_use_config() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(dir.path(), "deny", serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
        let cfg = serde_json::json!({"local_response": {"status": 429, "body": "slow down\n"}});
        let f = p.filter(Some(&cfg)).unwrap_or_else(|e| panic!("{e}"));
        let mut ex = exchange("/");
        match f.on_request_headers(&mut ex.cx(0)) {
            Flow::Respond(r) => {
                assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(&r.body[..], b"slow down\n");
            }
            _ => panic!("expected a local response"),
        }
        // A per-use config the plugin rejects fails at build time, with the plugin's name.
        let bad = serde_json::json!({"reject_config": true});
        let err = p.filter(Some(&bad)).err().unwrap_or_default();
        assert!(err.contains("deny"), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn bad_plugins_fail_the_config_load() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let err = plugin(
        dir.path(),
        "rejects",
        serde_json::json!({"config": {"reject_config": true}}),
    )
    .err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.contains("rejects") && e.contains("configuration")),
        "{err:?}"
    );
    let err = plugin(dir.path(), "sha", serde_json::json!({"sha256": "00"})).err();
    assert!(
        err.as_ref().is_some_and(|e| e.contains("sha256 mismatch")),
        "{err:?}"
    );
    let cfg: PluginConfig =
        serde_json::from_value(serde_json::json!({"name": "missing", "wasm": "nope.wasm"}))
            .unwrap_or_else(|e| panic!("{e}"));
    let err = build_plugin(&cfg, dir.path(), &Services::new()).err();
    assert!(
        err.as_ref().is_some_and(|e| e.contains("nope.wasm")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn fail_closed_answers_503_and_grpc_unavailable() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "closed",
            serde_json::json!({"config": {"fail": "panic", "fail_on_path": "/boom"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut ok = exchange("/ok");
        assert!(matches!(
            f.on_request_headers(&mut ok.cx(0)),
            Flow::Continue
        ));
        let mut boom = exchange("/boom");
        assert_eq!(
            status_of(&f.on_request_headers(&mut boom.cx(0))),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        // The stream that started before the failure loses its plugin too: its next phase fails.
        respond(&mut ok);
        assert_eq!(
            status_of(&f.on_response_headers(&mut ok.cx(0))),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        // The VM stays down on this worker: later requests get the same answer.
        let mut later = exchange("/ok");
        assert_eq!(
            status_of(&f.on_request_headers(&mut later.cx(0))),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
        let mut grpc = exchange("/pkg.Svc/Method");
        grpc.request.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        match f.on_request_headers(&mut grpc.cx(0)) {
            Flow::Respond(r) => {
                assert_eq!(r.status, StatusCode::OK);
                assert_eq!(header(&r.headers, "grpc-status").as_deref(), Some("14"));
            }
            _ => panic!("expected a gRPC UNAVAILABLE answer"),
        }
        let counts = sluice_wasm::failure_counts();
        assert!(
            counts
                .iter()
                .any(|(p, k, n)| p == "closed" && *k == "trap" && *n == 1),
            "{counts:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn fail_open_skips_the_plugin() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "open",
            serde_json::json!({"failure_policy": "fail_open",
                "config": {"fail": "loop", "fail_on_path": "/boom", "add_request_headers": [["x-added", "1"]]},
                "limits": {"callback_timeout": "50ms"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut boom = exchange("/boom");
        assert!(matches!(f.on_request_headers(&mut boom.cx(0)), Flow::Continue));
        let mut later = exchange("/ok");
        assert!(matches!(f.on_request_headers(&mut later.cx(0)), Flow::Continue));
        assert!(later.request.headers.get("x-added").is_none(), "the failed plugin still ran");
        let counts = sluice_wasm::failure_counts();
        assert!(counts.iter().any(|(p, k, _)| p == "open" && *k == "deadline"), "{counts:?}");
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn fail_reload_recreates_the_vm_after_a_backoff() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "reload",
            serde_json::json!({"failure_policy": "fail_reload",
                "config": {"fail": "bomb", "fail_on_path": "/boom", "add_request_headers": [["x-added", "1"]]},
                "limits": {"memory": "16MiB", "callback_timeout": "5s"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut boom = exchange("/boom");
        assert_eq!(status_of(&f.on_request_headers(&mut boom.cx(0))), Some(StatusCode::SERVICE_UNAVAILABLE));
        let counts = sluice_wasm::failure_counts();
        assert!(counts.iter().any(|(p, k, _)| p == "reload" && *k == "memory_limit"), "{counts:?}");
        // Poll until the backoff passes and a fresh VM serves requests again.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ex = exchange("/ok");
            let flow = f.on_request_headers(&mut ex.cx(0));
            if matches!(flow, Flow::Continue) {
                assert_eq!(header(&ex.request.headers, "x-added").as_deref(), Some("1"));
                break;
            }
            assert_eq!(status_of(&flow), Some(StatusCode::SERVICE_UNAVAILABLE), "backing off answers like fail_closed");
            assert!(Instant::now() < deadline, "the VM was never recreated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_callout_pauses_the_request_until_its_answer() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // No cluster answers here (dispatch fails), so the plugin sees a failed call and denies.
        let p = plugin(
            dir.path(),
            "callout",
            serde_json::json!({"config": {"http_call": {"cluster": "nowhere", "path": "/auth", "deny_on_failure": true}}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut ex = exchange("/");
        let flow = f.on_request_headers(&mut ex.cx(0));
        assert!(matches!(flow, Flow::Pause(_)), "the request must wait for the callout");
        match settle(flow, &mut ex).await {
            Flow::Respond(r) => {
                assert_eq!(r.status, StatusCode::FORBIDDEN);
                assert_eq!(header(&r.headers, "x-call-failed").as_deref(), Some("1"));
            }
            _ => panic!("expected the plugin's answer"),
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn body_is_buffered_then_replaced() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "body",
            serde_json::json!({"config": {"replace_response_body": "new body"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut ex = exchange("/");
        assert!(matches!(
            f.on_request_headers(&mut ex.cx(0)),
            Flow::Continue
        ));
        respond(&mut ex);
        assert!(matches!(
            f.on_response_headers(&mut ex.cx(0)),
            Flow::Continue
        ));
        let mut chunk = Bytes::from_static(b"old ");
        assert!(matches!(
            f.on_response_body(&mut ex.cx(0), &mut chunk, false),
            BodyFlow::Buffer
        ));
        let mut all = Bytes::from_static(b"old body");
        assert!(matches!(
            f.on_response_body(&mut ex.cx(0), &mut all, true),
            BodyFlow::Continue
        ));
        assert_eq!(&all[..], b"new body");
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn timers_tick_on_the_worker() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "ticker",
            serde_json::json!({"config": {"tick_ms": 5}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ex = exchange("/");
            assert!(matches!(
                f.on_request_headers(&mut ex.cx(0)),
                Flow::Continue
            ));
            respond(&mut ex);
            assert!(matches!(
                f.on_response_headers(&mut ex.cx(0)),
                Flow::Continue
            ));
            let ticks = ex
                .response
                .as_ref()
                .and_then(|r| header(&r.headers, "x-ticks"));
            if ticks.and_then(|t| t.parse::<u64>().ok()).unwrap_or(0) >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "on_tick never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Records bans instead of enforcing them.
#[derive(Default)]
struct RecordingBans(Mutex<Vec<(IpAddr, Option<Duration>, String)>>);

impl BanSink for RecordingBans {
    fn ban(&self, addr: IpAddr, ttl: Option<Duration>, reason: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((addr, ttl, reason.to_string()));
        false
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ban_source_reaches_the_ban_sink() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bans = Arc::new(RecordingBans::default());
        let services = Arc::new(Services {
            metrics: Arc::new(Metrics::new()),
            bans: bans.clone(),
            ban_switch: Default::default(),
            filter_state: Default::default(),
        });
        let p = plugin_with(
            dir.path(),
            "banner",
            serde_json::json!({"config": {"ban_source": true}}),
            &services,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Checking the plugin at load time runs no request, and bans nothing.
        assert!(bans.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        let f = filter(&p);
        let mut ex = exchange("/");
        assert!(matches!(
            f.on_request_headers(&mut ex.cx(0)),
            Flow::Continue
        ));
        assert_eq!(header(&ex.request.headers, "x-ban").as_deref(), Some("ok"));
        let seen = bans.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, IpAddr::from([127, 0, 0, 1]));
        assert!(seen[0].2.contains("banner"));
    })
    .await;
}

fn shared_count(key: &str) -> u64 {
    sluice_wasm::shared::get_data("", key.as_bytes())
        .and_then(|(v, _)| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "current_thread")]
async fn an_aborted_stream_still_gets_on_done() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "done",
            serde_json::json!({"config": {"count_done": true}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let before = shared_count("done");
        // Completed: on_log, then on_done and on_delete.
        let mut ex = exchange("/");
        assert!(matches!(
            f.on_request_headers(&mut ex.cx(0)),
            Flow::Continue
        ));
        f.on_log(&mut ex.cx(0));
        drop(ex);
        assert_eq!(shared_count("done"), before + 1);
        // Aborted after the request headers: dropping the exchange finishes the context.
        let mut ex = exchange("/");
        assert!(matches!(
            f.on_request_headers(&mut ex.cx(0)),
            Flow::Continue
        ));
        drop(ex);
        assert_eq!(shared_count("done"), before + 2);
    })
    .await;
}

fn shared_text(key: &str) -> String {
    sluice_wasm::shared::get_data("", key.as_bytes())
        .map(|(v, _)| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
}

/// Request headers, response headers, one response body frame, then the log phase: what a
/// proxied GET does to a plugin.
fn proxied_get(f: &Arc<dyn HttpFilter>, ex: &mut Exchange) -> (Flow, Flow, BodyFlow) {
    let req = f.on_request_headers(&mut ex.cx(0));
    respond(ex);
    let resp = f.on_response_headers(&mut ex.cx(0));
    let mut data = Bytes::from_static(b"hello\n");
    let body = f.on_response_body(&mut ex.cx(0), &mut data, true);
    f.on_log(&mut ex.cx(0));
    (req, resp, body)
}

#[tokio::test(flavor = "current_thread")]
async fn stream_callbacks_come_once_each_in_envoy_order() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(dir.path(), "order", serde_json::json!({"config": {"trace": "order"}}))
            .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        for round in 1..=2 {
            let mut ex = exchange("/");
            let (req, resp, body) = proxied_get(&f, &mut ex);
            assert!(matches!(req, Flow::Continue));
            assert!(matches!(resp, Flow::Continue));
            assert!(matches!(body, BodyFlow::Continue));
            drop(ex);
            // The context is created in the request headers phase, and the end of the stream is
            // on_log, on_done, on_delete (the SDK drops the context there), in that order.
            let want = "context_create;request_headers(eos);response_headers;response_body;log;done;delete;"
                .repeat(round);
            assert_eq!(shared_text("order"), want, "round {round}");
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_paused_stream_ends_in_order_whether_it_resumes_or_is_aborted() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // No cluster answers (dispatch fails): the plugin resumes the request from the answer.
        let p = plugin(
            dir.path(),
            "paused",
            serde_json::json!({"config": {"trace": "paused",
                "http_call": {"cluster": "nowhere", "path": "/auth"}}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut ex = exchange("/");
        let flow = f.on_request_headers(&mut ex.cx(0));
        assert!(matches!(flow, Flow::Pause(_)), "the request must wait for the callout");
        assert!(matches!(settle(flow, &mut ex).await, Flow::Continue));
        assert!(ex.request.headers.get("x-call-status").is_some());
        f.on_log(&mut ex.cx(0));
        drop(ex);
        assert_eq!(
            shared_text("paused"),
            "context_create;request_headers(eos);log;done;delete;"
        );
        // Aborted while paused (the client went away): no on_log, but on_done and on_delete.
        let mut ex = exchange("/");
        let flow = f.on_request_headers(&mut ex.cx(0));
        assert!(matches!(flow, Flow::Pause(_)));
        drop(flow);
        drop(ex);
        assert_eq!(
            shared_text("paused"),
            "context_create;request_headers(eos);log;done;delete;context_create;request_headers(eos);done;delete;"
        );
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_failure_in_any_callback_of_a_merged_entry_applies_the_policy() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // Where the plugin panics, and the callbacks that ran (the failing one included).
        let cases = [
            ("context_create", "context_create;"),
            ("request_headers", "context_create;request_headers(eos);"),
            ("log", "context_create;request_headers(eos);response_headers;response_body;log;"),
            ("done", "context_create;request_headers(eos);response_headers;response_body;log;done;"),
            ("delete", "context_create;request_headers(eos);response_headers;response_body;log;done;delete;"),
        ];
        for (at, ran) in cases {
            let name = format!("fail-in-{at}");
            let p = plugin(
                dir.path(),
                &name,
                serde_json::json!({"config": {"trace": name, "fail": "panic", "fail_in": at}}),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let f = filter(&p);
            let mut ex = exchange("/");
            let (req, _, _) = proxied_get(&f, &mut ex);
            drop(ex);
            if matches!(at, "context_create" | "request_headers") {
                assert_eq!(status_of(&req), Some(StatusCode::SERVICE_UNAVAILABLE), "{at}");
            } else {
                assert!(matches!(req, Flow::Continue), "{at}");
            }
            // Nothing ran after the trap: the VM failed in that callback.
            assert_eq!(shared_text(&name), ran, "{at}");
            let counts = sluice_wasm::failure_counts();
            assert!(
                counts.iter().any(|(p, k, n)| *p == name && *k == "trap" && *n == 1),
                "{at}: {counts:?}"
            );
            // fail_closed: the next stream on this worker is answered 503 without the plugin.
            let mut next = exchange("/");
            assert_eq!(
                status_of(&f.on_request_headers(&mut next.cx(0))),
                Some(StatusCode::SERVICE_UNAVAILABLE),
                "{at}"
            );
            drop(next);
            assert_eq!(shared_text(&name), ran, "{at}: the failed VM ran again");
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_chain_skips_the_phases_a_plugin_does_not_export() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let wasm = dir.path().join("headers-only.wasm");
        let module = wat::parse_str(HEADERS_ONLY).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&wasm, module).unwrap_or_else(|e| panic!("{e}"));
        let cfg: PluginConfig = serde_json::from_value(
            serde_json::json!({ "name": "headers-only", "wasm": "headers-only.wasm" }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let p = build_plugin(&cfg, dir.path(), &Services::new()).unwrap_or_else(|e| panic!("{e}"));
        use sluice::filter::Phases;
        let phases = filter(&p).phases();
        // Context creation (request headers) and the end of the stream are always taken part
        // in; the response headers because the module exports their callback; no body or
        // trailer phase (so no body wrapper), as Envoy skips callbacks a module lacks.
        assert!(phases.contains(Phases::REQUEST_HEADERS | Phases::LOG | Phases::RESPONSE_HEADERS));
        for p in [
            Phases::REQUEST_BODY,
            Phases::REQUEST_TRAILERS,
            Phases::RESPONSE_BODY,
            Phases::RESPONSE_TRAILERS,
        ] {
            assert!(!phases.intersects(p), "{p:?}");
        }
        // The Rust-SDK testkit exports every callback.
        let all = plugin(dir.path(), "exports-all", serde_json::json!({}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(filter(&all).phases(), Phases::ALL);
    })
    .await;
}

const HEADERS_ONLY: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#;

#[tokio::test(flavor = "current_thread")]
async fn a_grpc_stream_that_cannot_connect_is_closed_unavailable() {
    local(async {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = plugin(
            dir.path(),
            "grpc-stream",
            serde_json::json!({"config": {"grpc_stream": "nowhere"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let f = filter(&p);
        let mut ex = exchange("/");
        // The request does not wait for its gRPC stream.
        assert!(matches!(
            f.on_request_headers(&mut ex.cx(0)),
            Flow::Continue
        ));
        assert_eq!(
            header(&ex.request.headers, "x-grpc-stream").as_deref(),
            Some("ok")
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = sluice_wasm::shared::get_data("", b"grpc_close_status").map(|(v, _)| v);
            if status.as_deref() == Some(&b"14"[..]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "on_grpc_stream_close never ran: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
