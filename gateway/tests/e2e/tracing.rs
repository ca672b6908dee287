//! OpenTelemetry traces against a real OTLP/gRPC receiver (opentelemetry-proto's
//! `TraceService` served with tonic in this process): span names, attributes, parent links,
//! W3C propagation to the upstream, filter spans, a collector that is down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::support::*;

#[derive(Clone, Default)]
struct Collected {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        for rs in req.resource_spans {
            if let Some(r) = &rs.resource {
                for kv in &r.attributes {
                    if let Some(Value::StringValue(v)) =
                        kv.value.as_ref().and_then(|v| v.value.as_ref())
                    {
                        if kv.key == "service.name" {
                            self.services.lock().unwrap().push(v.clone());
                        }
                    }
                }
            }
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on 127.0.0.1 (its own runtime thread).
struct Receiver {
    addr: SocketAddr,
    got: Collected,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let got = Collected::default();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind receiver");
        let addr = l.local_addr().expect("addr");
        let svc = TraceServiceServer::new(got.clone());
        rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                });
            }
        });
        Receiver { addr, got, _rt: rt }
    }

    /// Wait (generously) until `n` spans arrived; returns them all.
    fn wait_spans(&self, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.got.spans.lock().unwrap().clone();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(s: &'a Span, key: &str) -> &'a str {
    match attr(s, key) {
        Some(Value::StringValue(v)) => v,
        _ => "",
    }
}

fn attr_int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Value::IntValue(v)) => *v,
        _ => -1,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config(endpoint: &str, up: &Upstream, extra: &str) -> String {
    format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - name: api
        match: {{ path_prefix: "/api" }}
        cluster: app
        filters:
          - name: headers
            config:
              request:
                add: [{{ name: x-traced, value: "yes" }}]
      - name: plain
        match: {{ path_prefix: "/plain" }}
        cluster: app
      - name: down
        match: {{ path_prefix: "/down" }}
        cluster: nowhere
        retries: {{ attempts: 2, on: [connect-failure] }}
clusters:
  - name: app
    endpoints: ["{up}"]
  - name: nowhere
    endpoints: ["127.0.0.1:1"]
telemetry:
  access_log: {{ path: "{{DIR}}/access.log" }}
  tracing: {{ otlp_endpoint: "{endpoint}", sample_ratio: 1.0, service_name: edge-test{extra} }}
"#,
        up = up.addr
    )
}

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const OTHER_PARENT_SPAN: &str = "b7ad6b7169203331";

#[test]
fn spans_reach_the_collector_and_traceparent_is_continued() {
    let rx = Receiver::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(
        &format!("http://{}", rx.addr),
        &up,
        ", filter_spans: true",
    ));
    let tp = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let r = get_with(
        &gw,
        "/api/items?x=1",
        &[("traceparent", &tp), ("tracestate", "vendor=abc")],
    );
    assert_eq!(r.status, 200);
    // The upstream received our upstream span as its parent, in the client's trace.
    let echoed = r.json();
    let up_tp = echoed["headers"]["traceparent"][0]
        .as_str()
        .expect("upstream saw a traceparent")
        .to_string();
    assert!(up_tp.starts_with(&format!("00-{PARENT_TRACE}-")), "{up_tp}");
    assert!(up_tp.ends_with("-01"), "{up_tp}");
    assert!(
        !up_tp.contains(PARENT_SPAN),
        "upstream parent must be our span: {up_tp}"
    );
    assert_eq!(echoed["headers"]["tracestate"][0], "vendor=abc");

    let spans = rx.wait_spans(3);
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(server.name, "GET api");
    assert_eq!(hex(&server.trace_id), PARENT_TRACE);
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN);
    assert_eq!(server.trace_state, "vendor=abc");
    assert_eq!(attr_str(server, "http.request.method"), "GET");
    assert_eq!(attr_str(server, "http.route"), "api");
    assert_eq!(attr_str(server, "url.path"), "/api/items");
    assert_eq!(attr_str(server, "url.query"), "x=1");
    assert_eq!(attr_int(server, "http.response.status_code"), 200);
    assert_eq!(attr_str(server, "network.protocol.version"), "1.1");
    assert_eq!(attr_str(server, "client.address"), "127.0.0.1");
    assert_eq!(attr_int(server, "server.port"), i64::from(gw.port));
    assert!(server.status.as_ref().is_none_or(|s| s.code == 0));
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);

    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("an upstream span");
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.trace_id, server.trace_id);
    // The upstream exchange lies inside the request and takes time (a real round trip).
    assert!(
        server.start_time_unix_nano <= client.start_time_unix_nano
            && client.start_time_unix_nano < client.end_time_unix_nano
            && client.end_time_unix_nano <= server.end_time_unix_nano,
        "server {}..{}, upstream {}..{}",
        server.start_time_unix_nano,
        server.end_time_unix_nano,
        client.start_time_unix_nano,
        client.end_time_unix_nano
    );
    assert_eq!(
        up_tp,
        format!("00-{PARENT_TRACE}-{}-01", hex(&client.span_id))
    );
    assert_eq!(attr_str(client, "sluice.cluster"), "app");
    assert_eq!(attr_int(client, "http.response.status_code"), 200);
    assert_eq!(attr_int(client, "server.port"), i64::from(up.addr.port()));
    assert_eq!(attr_str(client, "server.address"), "127.0.0.1");
    // One try: no per-try span under the upstream span.
    assert!(spans.iter().all(|s| !s.name.starts_with("attempt ")));

    let filter = spans
        .iter()
        .find(|s| !attr_str(s, "sluice.filter").is_empty())
        .expect("a filter span");
    assert_eq!(filter.name, "headers request_headers");
    assert_eq!(attr_str(filter, "sluice.filter"), "headers");
    assert_eq!(filter.parent_span_id, server.span_id);
    assert!(rx
        .got
        .services
        .lock()
        .unwrap()
        .iter()
        .all(|s| s == "edge-test"));

    // The access log names the same trace and server span.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = std::fs::read_to_string(gw.dir().join("access.log")).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains("/api/items")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no access-log line");
        std::thread::sleep(Duration::from_millis(50));
    };
    let entry: serde_json::Value = serde_json::from_str(&line).expect("json line");
    assert_eq!(entry["trace_id"], PARENT_TRACE);
    assert_eq!(
        entry["span_id"].as_str(),
        Some(hex(&server.span_id).as_str())
    );
}

#[test]
fn failed_upstream_is_an_error_span_and_roots_start_new_traces() {
    let rx = Receiver::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&format!("http://{}", rx.addr), &up, ""));
    let r = get(&gw, "/down");
    assert!(r.status >= 500, "{}", r.status);
    let spans = rx.wait_spans(2);
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert!(server.parent_span_id.is_empty(), "a root span");
    assert_eq!(server.trace_id.len(), 16);
    assert_eq!(
        server.status.as_ref().map(|s| s.code),
        Some(2),
        "error status"
    );
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("an upstream span");
    assert_eq!(client.status.as_ref().map(|s| s.code), Some(2));
    assert!(!attr_str(client, "error.type").is_empty());
    assert_eq!(attr_int(client, "http.request.resend_count"), 2);
    // Each try is a child of the upstream span, on the endpoint it tried.
    let spans = rx.wait_spans(5);
    let mut tries: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("attempt "))
        .collect();
    tries.sort_by_key(|s| attr_int(s, "sluice.attempt"));
    assert_eq!(tries.len(), 3, "one span per try");
    for (n, t) in tries.iter().enumerate() {
        assert_eq!(t.parent_span_id, client.span_id);
        assert_eq!(attr_int(t, "sluice.attempt"), n as i64 + 1);
        assert_eq!(attr_int(t, "server.port"), 1);
        assert_eq!(attr_str(t, "error.type"), "ConnectRefused");
    }
    // Without filter_spans, no filter span.
    assert!(spans
        .iter()
        .all(|s| attr_str(s, "sluice.filter").is_empty()));
}

#[test]
fn upstream_gets_exactly_one_traceparent_without_filters() {
    // Without filters, the upstream's `traceparent` is written as the request is encoded
    // (not inserted in the map) unless the client sent one: each case ends with one field,
    // naming the upstream span.
    let rx = Receiver::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&format!("http://{}", rx.addr), &up, ""));
    let tp = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("/plain/none", &[]),
        ("/plain/valid", &[("traceparent", &tp)]),
        ("/plain/junk", &[("traceparent", "junk")]),
    ];
    let mut seen = Vec::new();
    for (path, headers) in cases {
        let r = get_with(&gw, path, headers);
        assert_eq!(r.status, 200, "{path}");
        seen.push((path, r.json()["headers"]["traceparent"].clone()));
    }
    let spans = rx.wait_spans(6);
    for (path, got) in seen {
        let server = spans
            .iter()
            .find(|s| s.kind == SpanKind::Server as i32 && attr_str(s, "url.path") == path)
            .unwrap_or_else(|| panic!("no server span for {path}"));
        let client = spans
            .iter()
            .find(|s| s.kind == SpanKind::Client as i32 && s.parent_span_id == server.span_id)
            .unwrap_or_else(|| panic!("no upstream span for {path}"));
        let want = format!("00-{}-{}-01", hex(&client.trace_id), hex(&client.span_id));
        assert_eq!(got, serde_json::json!([want]), "{path}");
        // Only the valid parent is continued.
        assert_eq!(
            hex(&server.trace_id) == PARENT_TRACE,
            path == "/plain/valid",
            "{path}"
        );
    }
}

#[test]
fn unsampled_parent_is_passed_through_untouched() {
    let rx = Receiver::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&format!("http://{}", rx.addr), &up, ""));
    let tp = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    let r = get_with(&gw, "/api/x", &[("traceparent", &tp)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["traceparent"][0], tp.as_str());
    // A sampled request afterwards proves the exporter works; the unsampled one sent nothing.
    let r = get(&gw, "/api/y");
    assert_eq!(r.status, 200);
    let spans = rx.wait_spans(2);
    assert!(spans.iter().all(|s| hex(&s.trace_id) != PARENT_TRACE));
    // That root request's upstream got one traceparent: the upstream span, in its new trace.
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("an upstream span");
    let tp = format!("00-{}-{}-01", hex(&client.trace_id), hex(&client.span_id));
    assert_eq!(
        r.json()["headers"]["traceparent"],
        serde_json::json!([tp]),
        "{}",
        r.text()
    );
}

#[test]
fn collector_down_changes_no_response_and_drops_are_counted() {
    // A port with nothing listening: every export fails.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&dead, &up, ""));
    for i in 0..50 {
        let r = get(&gw, &format!("/api/{i}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), Some("app"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, m, _) = curl(&[&gw.admin_url("/metrics")]);
        let dropped = m
            .lines()
            .find_map(|l| l.strip_prefix("sluice_tracing_spans_dropped_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // Two spans per request (server, upstream).
        if dropped >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "drops not counted: {dropped}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An OTLP/HTTP receiver: decodes every `POST /v1/traces` body as protobuf.
fn start_http_receiver() -> (SocketAddr, Arc<Mutex<Vec<Span>>>, tokio::runtime::Runtime) {
    use http_body_util::BodyExt;
    use prost::Message;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let l = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let got = spans.clone();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let got = got.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let got = got.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req.headers()["content-type"] == "application/x-protobuf";
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let status = match (ok, body) {
                                (true, Ok(b)) => match ExportTraceServiceRequest::decode(b) {
                                    Ok(r) => {
                                        for rs in r.resource_spans {
                                            for ss in rs.scope_spans {
                                                got.lock().unwrap().extend(ss.spans);
                                            }
                                        }
                                        200
                                    }
                                    Err(_) => 400,
                                },
                                _ => 400,
                            };
                            let mut resp = http::Response::new(full(""));
                            *resp.status_mut() =
                                http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, spans, rt)
}

#[test]
fn http_protobuf_export_and_tracing_enabled_by_reload() {
    let (addr, spans, _rt) = start_http_receiver();
    let up = Upstream::start("app");
    // Start without tracing; a reload turns it on over OTLP/HTTP.
    let plain = config(&format!("http://{addr}"), &up, "").replace("  tracing:", "  # tracing:");
    let gw = Gateway::start(&plain);
    assert_eq!(get(&gw, "/api/before").status, 200);
    let traced = format!(
        "admin: {{ address: \"127.0.0.1:{}\" }}\n{}",
        gw.admin_port,
        config(&format!("http://{addr}"), &up, ", protocol: http/protobuf")
            .replace("{PORT}", &gw.port.to_string())
            .replace("{DIR}", &gw.dir().display().to_string())
    );
    std::fs::write(&gw.config_path, traced).expect("write config");
    let (ok, out, err) = curl(&["-X", "POST", &gw.admin_url("/reload")]);
    assert!(ok, "{out} {err}");
    let (_, cfg, _) = curl(&[&gw.admin_url("/config")]);
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("config json");
    assert_eq!(
        cfg["config"]["telemetry"]["tracing"]["protocol"], "http/protobuf",
        "{cfg}"
    );
    assert_eq!(get(&gw, "/api/after").status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let server = loop {
        let found = spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.kind == SpanKind::Server as i32)
            .cloned();
        if let Some(s) = found {
            break s;
        }
        assert!(Instant::now() < deadline, "no span over OTLP/HTTP");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(attr_str(&server, "url.path"), "/api/after");
    assert!(spans
        .lock()
        .unwrap()
        .iter()
        .all(|s| attr_str(s, "url.path") != "/api/before"));
}

mod metrics_push {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;

    use crate::support::*;

    #[derive(Clone, Default)]
    struct Got(Arc<Mutex<Vec<Pushed>>>);

    /// A pushed metric: its name and data.
    type Pushed = (String, Option<Data>);

    #[tonic::async_trait]
    impl MetricsService for Got {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            for rm in request.into_inner().resource_metrics {
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        self.0.lock().unwrap().push((m.name, m.data));
                    }
                }
            }
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    #[test]
    fn every_metrics_series_is_pushed_over_otlp_grpc() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let got = Got::default();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let svc = MetricsServiceServer::new(got.clone());
        rt.spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                });
            }
        });
        let gw = Gateway::start(&format!(
            r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    routes:
      - name: hello
        match: {{ path_prefix: "/" }}
        direct_response: {{ status: 200, body: "hi\n" }}
telemetry:
  metrics: {{ otlp_endpoint: "http://{addr}", otlp_interval: 200ms }}
"#
        ));
        assert_eq!(get(&gw, "/").status, 200);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let names: Vec<Pushed> = got.0.lock().unwrap().clone();
            let counter = names.iter().any(|(n, d)| {
                n == "sluice_tracing_spans_dropped_total" && matches!(d, Some(Data::Sum(_)))
            });
            let histogram = names
                .iter()
                .any(|(n, d)| n.starts_with("sluice_") && matches!(d, Some(Data::Histogram(_))));
            if counter && histogram {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "metrics not pushed: {:?}",
                names.iter().map(|n| &n.0).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The first-party `add-header` plugin, built by scripts/build-plugins.sh into target/plugins/.
fn add_header_wasm() -> std::path::PathBuf {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/add_header.wasm");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}

#[test]
fn plugin_phases_get_spans_named_after_the_plugin() {
    let rx = Receiver::start();
    let up = Upstream::start("app");
    let gw = Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{{PORT}}"
    filters:
      - plugin: stamp
    routes:
      - name: api
        match: {{ path_prefix: "/" }}
        cluster: app
clusters:
  - name: app
    endpoints: ["{up}"]
plugins:
  - name: stamp
    wasm: "{wasm}"
    config:
      response:
        - {{ name: x-stamped, value: "1" }}
telemetry:
  tracing: {{ otlp_endpoint: "http://{rx}", sample_ratio: 1.0, filter_spans: true }}
"#,
        up = up.addr,
        wasm = add_header_wasm().display(),
        rx = rx.addr,
    ));
    let r = get(&gw, "/p");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-stamped"), Some("1"));
    let spans = rx.wait_spans(4);
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    let phases: Vec<&str> = spans
        .iter()
        .filter(|s| attr_str(s, "sluice.filter") == "stamp")
        .map(|s| {
            assert_eq!(s.parent_span_id, server.span_id);
            attr_str(s, "sluice.phase")
        })
        .collect();
    assert!(phases.contains(&"request_headers"), "{phases:?}");
    assert!(phases.contains(&"response_headers"), "{phases:?}");
}

mod b3 {
    use super::*;

    const B3_TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const B3_SPAN: &str = "e457b5a2e4d86bd1";

    fn server_span(rx: &Receiver) -> Span {
        rx.wait_spans(2)
            .into_iter()
            .find(|s| s.kind == SpanKind::Server as i32)
            .expect("a server span")
    }

    fn client_span(rx: &Receiver) -> Span {
        rx.wait_spans(2)
            .into_iter()
            .find(|s| s.kind == SpanKind::Client as i32)
            .expect("an upstream span")
    }

    #[test]
    fn single_header_is_continued_and_written_as_w3c_and_multi_headers() {
        let rx = Receiver::start();
        let up = Upstream::start("app");
        // sample_ratio 0 proves the client's sampled flag decided.
        let gw = Gateway::start(
            &config(
                &format!("http://{}", rx.addr),
                &up,
                ", propagation: [w3c, b3multi]",
            )
            .replace("sample_ratio: 1.0", "sample_ratio: 0.0"),
        );
        let b3 = format!("{B3_TRACE}-{B3_SPAN}-1");
        let r = get_with(&gw, "/api/b3", &[("b3", &b3)]);
        assert_eq!(r.status, 200);
        let h = &r.json()["headers"];
        let server = server_span(&rx);
        let client = client_span(&rx);
        assert_eq!(hex(&server.trace_id), B3_TRACE);
        assert_eq!(hex(&server.parent_span_id), B3_SPAN, "the client's span");
        assert_eq!(client.parent_span_id, server.span_id);
        let ours = hex(&client.span_id);
        assert_eq!(h["x-b3-traceid"][0], B3_TRACE, "{h}");
        assert_eq!(h["x-b3-spanid"][0], ours.as_str(), "{h}");
        assert_eq!(h["x-b3-sampled"][0], "1", "{h}");
        assert_eq!(
            h["traceparent"][0],
            format!("00-{B3_TRACE}-{ours}-01").as_str(),
            "{h}"
        );
        assert!(h.get("b3").is_none(), "the client's stale b3 is gone: {h}");
    }

    #[test]
    fn multi_headers_are_continued_and_written_as_the_single_header() {
        let rx = Receiver::start();
        let up = Upstream::start("app");
        let gw = Gateway::start(
            &config(&format!("http://{}", rx.addr), &up, ", propagation: [b3]")
                .replace("sample_ratio: 1.0", "sample_ratio: 0.0"),
        );
        // A 64-bit trace id, as older Zipkin tracers send.
        let short = &B3_TRACE[16..];
        let r = get_with(
            &gw,
            "/api/multi",
            &[
                ("x-b3-traceid", short),
                ("x-b3-spanid", B3_SPAN),
                ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
                ("x-b3-sampled", "1"),
            ],
        );
        assert_eq!(r.status, 200);
        let h = &r.json()["headers"];
        let server = server_span(&rx);
        let client = client_span(&rx);
        let padded = format!("0000000000000000{short}");
        assert_eq!(hex(&server.trace_id), padded);
        assert_eq!(hex(&server.parent_span_id), B3_SPAN);
        assert_eq!(
            h["b3"][0],
            format!("{padded}-{}-1", hex(&client.span_id)).as_str(),
            "{h}"
        );
        for stale in [
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "traceparent",
        ] {
            assert!(
                h.get(stale).is_none(),
                "{stale} must not reach the upstream: {h}"
            );
        }
    }

    #[test]
    fn unsampled_b3_is_passed_through_and_w3c_is_not_read_when_not_configured() {
        let rx = Receiver::start();
        let up = Upstream::start("app");
        let gw = Gateway::start(&config(
            &format!("http://{}", rx.addr),
            &up,
            ", propagation: [b3]",
        ));
        let b3 = format!("{B3_TRACE}-{B3_SPAN}-0");
        let r = get_with(&gw, "/api/no", &[("b3", &b3)]);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["headers"]["b3"][0], b3.as_str());
        // A traceparent is not read under `[b3]`: ratio 1 samples a new root trace.
        let tp = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
        let r = get_with(&gw, "/api/root", &[("traceparent", &tp)]);
        assert_eq!(r.status, 200);
        let server = server_span(&rx);
        assert_eq!(attr_str(&server, "url.path"), "/api/root");
        assert!(server.parent_span_id.is_empty(), "a root span");
        assert_ne!(hex(&server.trace_id), PARENT_TRACE);
        assert!(rx
            .wait_spans(2)
            .iter()
            .all(|s| hex(&s.trace_id) != B3_TRACE));
    }
}

/// The conformance plugin `rs_log`, which logs one line per level on request headers.
fn rs_log_wasm() -> std::path::PathBuf {
    add_header_wasm().with_file_name("rs_log.wasm")
}

#[test]
fn log_lines_of_a_traced_request_carry_its_trace_and_span_ids() {
    let rx = Receiver::start();
    let up = Upstream::start("app");
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let config_path = dir.path().join("sluice.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"
admin: {{ address: "127.0.0.1:{admin_port}" }}
workers: 1
listeners:
  - name: public
    address: "127.0.0.1:{port}"
    filters:
      - plugin: logger
    routes:
      - name: api
        match: {{ path_prefix: "/" }}
        cluster: app
clusters:
  - name: app
    endpoints: ["{up}"]
plugins:
  - name: logger
    wasm: "{wasm}"
telemetry:
  tracing: {{ otlp_endpoint: "http://{rx}", sample_ratio: 0.0 }}
"#,
            up = up.addr,
            wasm = rs_log_wasm().display(),
            rx = rx.addr,
        ),
    )
    .expect("write config");
    // The support gateway logs in the human format; this one needs the JSON one.
    let log_path = dir.path().join("sluice.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "-c"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .env("SLUICE_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::from(log.try_clone().expect("clone")))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("spawn sluice");
    let gw = Gateway {
        child: Some(child),
        dir,
        port,
        admin_port,
        config_path,
        log_path,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !curl(&["-f", &gw.admin_url("/ready")]).0 {
        assert!(Instant::now() < deadline, "not ready: {}", gw.log());
        std::thread::sleep(Duration::from_millis(25));
    }

    let tp = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    assert_eq!(
        get_with(&gw, "/traced", &[("traceparent", &tp)]).status,
        200
    );
    // The same over HTTP/2 (streams share a connection: another way to carry the ids).
    let tp2 = format!("00-{PARENT_TRACE}-{OTHER_PARENT_SPAN}-01");
    let (ok, _, err) = curl(&[
        "-f",
        "--http2-prior-knowledge",
        "-H",
        &format!("traceparent: {tp2}"),
        &gw.url("/h2-traced"),
    ]);
    assert!(ok, "{err}");
    // ratio 0 and no parent: not traced.
    assert_eq!(get(&gw, "/untraced").status, 200);
    let spans = rx.wait_spans(4);
    let server_of = |parent: &str| {
        spans
            .iter()
            .find(|s| s.kind == SpanKind::Server as i32 && hex(&s.parent_span_id) == parent)
            .unwrap_or_else(|| panic!("no server span under {parent}"))
            .clone()
    };
    let server = server_of(PARENT_SPAN);
    let server_h2 = server_of(OTHER_PARENT_SPAN);

    let line_of = |path: &str| -> serde_json::Value {
        let needle = format!("sluice-conformance log info {path}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = gw.log();
            if let Some(l) = log.lines().find(|l| l.contains(&needle)) {
                return serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            }
            assert!(Instant::now() < deadline, "no `{needle}` in:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The line names the trace and the gateway's server span of its request (h1, then h2).
    for (path, span) in [("/traced", &server), ("/h2-traced", &server_h2)] {
        let line = line_of(path);
        assert_eq!(line["span"]["trace_id"], PARENT_TRACE, "{line}");
        let span_id = hex(&span.span_id);
        assert_eq!(
            line["span"]["span_id"].as_str(),
            Some(span_id.as_str()),
            "{line}"
        );
    }
    let untraced = line_of("/untraced");
    assert!(untraced.get("span").is_none(), "{untraced}");
}
