//! A test plugin for the Sluice proxy-wasm host. Its configuration (JSON) says what to do in each
//! phase, so one module covers header edits, bodies, local responses, properties, shared data,
//! timers, callouts and the failure modes the sandbox must contain.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
struct Config {
    /// Headers added to the request.
    add_request_headers: Vec<(String, String)>,
    /// Request headers removed.
    remove_request_headers: Vec<String>,
    /// Headers set on the response.
    set_response_headers: Vec<(String, String)>,
    /// Response headers removed.
    remove_response_headers: Vec<String>,
    /// Replace the request path (`:path`).
    set_path: Option<String>,
    /// Replace the whole response body (buffering it first).
    replace_response_body: Option<String>,
    /// Append to the request body (buffering it first).
    append_request_body: Option<String>,
    /// Answer locally from the request headers phase.
    local_response: Option<LocalResponse>,
    /// Copy these properties (dotted names) into response headers `x-prop-<name>`.
    echo_properties: Vec<String>,
    /// Copy these properties into request headers `x-prop-<name>` (seen by the upstream).
    echo_properties_request: Vec<String>,
    /// Increment the shared counter `hits` (CAS loop) and report it in `x-hits`.
    count_hits: bool,
    /// Tick period in ms: each tick increments shared key `ticks`; `x-ticks` reports it.
    tick_ms: u64,
    /// Failure injection: `panic`, `loop`, `bomb`, `oob`, `exit` in request headers (or in the
    /// callback `fail_in` names).
    fail: Option<String>,
    /// Where `fail` happens: `context_create`, `request_headers` (default), `response_headers`,
    /// `response_body`, `log`, `done` or `delete`.
    fail_in: Option<String>,
    /// Append the name of every stream callback, with `;`, to shared key `<trace>`.
    trace: Option<String>,
    /// Only fail for requests whose path contains this.
    fail_on_path: Option<String>,
    /// Fail in on_configure (returns false).
    reject_config: bool,
    /// Call this cluster from request headers and report `x-call-status`/`x-call-body`.
    http_call: Option<HttpCall>,
    /// Ban the client through the foreign function `sluice.ban_source`.
    ban_source: bool,
    /// Report `x-config` = the raw plugin configuration.
    echo_config: bool,
    /// Count finished stream contexts in shared key `done` (on_done).
    count_done: bool,
    /// Register this queue at configure time; on_queue_ready drains it into shared key `queued`.
    register_queue: Option<String>,
    /// Enqueue the request path on this queue (resolved by name) from the request headers.
    enqueue: Option<String>,
    /// Define this counter at configure time and increment it once per request.
    counter: Option<String>,
    /// Open a gRPC stream to this cluster from the request headers and send one message;
    /// received messages go to shared key `grpc_last`, the close status to `grpc_close_status`.
    grpc_stream: Option<String>,
}

#[derive(Clone, Deserialize)]
struct LocalResponse {
    status: u32,
    body: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

#[derive(Clone, Deserialize)]
struct HttpCall {
    cluster: String,
    path: String,
    #[serde(default)]
    deny_on_failure: bool,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    config: Config,
    raw: String,
    counter: Option<u32>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let config: Config = if raw.trim().is_empty() {
            Config::default()
        } else {
            match serde_json::from_str(&raw) {
                Ok(c) => c,
                Err(e) => {
                    proxy_wasm::hostcalls::log(LogLevel::Error, &format!("bad config: {e}")).ok();
                    return false;
                }
            }
        };
        if config.reject_config {
            return false;
        }
        if let Some(q) = &config.register_queue {
            if proxy_wasm::hostcalls::register_shared_queue(q).is_err() {
                return false;
            }
        }
        if let Some(name) = &config.counter {
            match proxy_wasm::hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, name) {
                Ok(id) => self.counter = Some(id),
                Err(_) => return false,
            }
        }
        if config.tick_ms > 0 {
            self.set_tick_period(Duration::from_millis(config.tick_ms));
        }
        self.config = config;
        self.raw = raw;
        true
    }

    fn on_tick(&mut self) {
        bump(self, "ticks");
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(_item)) = proxy_wasm::hostcalls::dequeue_shared_queue(queue_id) {
            bump(self, "queued");
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        let stream = Stream {
            config: self.config.clone(),
            raw: self.raw.clone(),
            counter: self.counter,
        };
        let _ = stream.at("context_create");
        Some(Box::new(stream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Increment shared key `key` with a CAS loop; the new value.
fn bump(cx: &dyn Context, key: &str) -> u64 {
    for _ in 0..100 {
        let (value, cas) = cx.get_shared_data(key);
        let n = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        if cx
            .set_shared_data(key, Some(n.to_string().as_bytes()), cas.or(Some(0)))
            .is_ok()
        {
            return n;
        }
    }
    0
}

/// Append `what` to shared key `key` with a CAS loop.
fn append(key: &str, what: &str) {
    use proxy_wasm::hostcalls::{get_shared_data, set_shared_data};
    for _ in 0..100 {
        let (value, cas) = get_shared_data(key).unwrap_or((None, None));
        let mut v = value.unwrap_or_default();
        v.extend_from_slice(what.as_bytes());
        v.push(b';');
        if set_shared_data(key, Some(&v), cas.or(Some(0))).is_ok() {
            return;
        }
    }
}

struct Stream {
    config: Config,
    raw: String,
    counter: Option<u32>,
}

impl Stream {
    /// Record callback `name` in the trace, and fail there when configured to.
    fn at(&self, name: &str) -> Option<u32> {
        if let Some(key) = &self.config.trace {
            append(key, name);
        }
        if self.config.fail_in.as_deref().unwrap_or("request_headers") == name {
            return self.inject_failure();
        }
        None
    }
}

impl Drop for Stream {
    /// The SDK drops the context in `proxy_on_delete`.
    fn drop(&mut self) {
        let _ = self.at("delete");
    }
}

extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
}

impl Stream {
    fn inject_failure(&self) -> Option<u32> {
        let what = self.config.fail.as_deref()?;
        if let Some(p) = &self.config.fail_on_path {
            let path = self.get_http_request_header(":path").unwrap_or_default();
            if !path.contains(p.as_str()) {
                return None;
            }
        }
        match what {
            "panic" => panic!("injected panic"),
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            // SAFETY: deliberately passes a pointer outside linear memory to the host, which must
            // refuse it; nothing is dereferenced on the guest side.
            "oob" => Some(unsafe { proxy_log(2, 0xFFFF_FF00usize as *const u8, 4096) }),
            "exit" => std::process::exit(3),
            _ => None,
        }
    }

    fn prop(&self, name: &str) -> String {
        let path: Vec<&str> = name.splitn(2, '.').collect();
        match self.get_property(path) {
            None => "<none>".into(),
            Some(v) if v.len() == 8 && is_int_property(name) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v);
                i64::from_le_bytes(b).to_string()
            }
            Some(v) if name == "request.headers" => format!("{}b", v.len()),
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
        }
    }
}

fn is_int_property(name: &str) -> bool {
    matches!(
        name,
        "source.port" | "destination.port" | "response.code" | "request.size" | "request.total_size"
            | "response.size" | "connection.id" | "request.time" | "request.duration" | "listener_direction"
    )
}

impl Context for Stream {
    fn on_grpc_stream_message(&mut self, _token: u32, size: usize) {
        let msg = self.get_grpc_stream_message(0, size).unwrap_or_default();
        let _ = self.set_shared_data("grpc_last", Some(&msg), None);
    }

    fn on_grpc_stream_close(&mut self, _token: u32, status: u32) {
        let _ = self.set_shared_data("grpc_close_status", Some(status.to_string().as_bytes()), None);
    }

    fn on_done(&mut self) -> bool {
        let _ = self.at("done");
        if self.config.count_done {
            bump(self, "done");
        }
        true
    }

    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let status = self.get_http_call_response_header(":status");
        let body = self
            .get_http_call_response_body(0, body_size)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let deny = self.config.http_call.as_ref().is_some_and(|c| c.deny_on_failure);
        match status {
            Some(s) if s == "200" => {
                self.set_http_request_header("x-call-status", Some(&s));
                self.set_http_request_header("x-call-body", Some(body.trim()));
                self.resume_http_request();
            }
            _ if deny => self.send_http_response(403, vec![("x-call-failed", "1")], Some(b"callout failed\n")),
            s => {
                self.set_http_request_header("x-call-status", Some(s.as_deref().unwrap_or("none")));
                self.resume_http_request();
            }
        }
    }
}

impl HttpContext for Stream {
    fn on_log(&mut self) {
        let _ = self.at("log");
    }

    fn on_http_request_headers(&mut self, _n: usize, eos: bool) -> Action {
        if let Some(key) = &self.config.trace {
            append(key, if eos { "request_headers(eos)" } else { "request_headers" });
        }
        let fail_here = self.config.fail_in.as_deref().unwrap_or("request_headers") == "request_headers";
        if let Some(status) = fail_here.then(|| self.inject_failure()).flatten() {
            self.set_http_request_header("x-oob-status", Some(&status.to_string()));
        }
        if let Some(id) = self.counter {
            let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
        }
        if let Some(q) = &self.config.enqueue {
            let path = self.get_http_request_header(":path").unwrap_or_default();
            let sent = match proxy_wasm::hostcalls::resolve_shared_queue("", q) {
                Ok(Some(id)) => proxy_wasm::hostcalls::enqueue_shared_queue(id, Some(path.as_bytes())).is_ok(),
                _ => false,
            };
            self.set_http_request_header("x-enqueued", Some(if sent { "1" } else { "0" }));
        }
        if let Some(r) = &self.config.local_response {
            let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.send_http_response(r.status, headers, Some(r.body.as_bytes()));
            return Action::Pause;
        }
        for (k, v) in &self.config.add_request_headers {
            self.add_http_request_header(k, v);
        }
        for k in &self.config.remove_request_headers {
            self.set_http_request_header(k, None);
        }
        if let Some(p) = &self.config.set_path {
            self.set_http_request_header(":path", Some(p));
        }
        for name in &self.config.echo_properties_request {
            let v = self.prop(name);
            self.set_http_request_header(&format!("x-prop-{name}"), Some(&v));
        }
        if self.config.echo_config {
            let raw = self.raw.clone();
            self.set_http_request_header("x-config", Some(&raw));
        }
        if self.config.ban_source {
            let ip = self.prop("source.address");
            let ip = ip.rsplit_once(':').map_or(ip.as_str(), |(h, _)| h).to_string();
            let r = proxy_wasm::hostcalls::call_foreign_function("sluice.ban_source", Some(ip.as_bytes()));
            self.set_http_request_header("x-ban", Some(if r.is_ok() { "ok" } else { "err" }));
        }
        if let Some(cluster) = self.config.grpc_stream.clone() {
            let opened = self.open_grpc_stream(&cluster, "test.Echo", "Chat", vec![("x-md", b"1".as_slice())]);
            let ok = match opened {
                Ok(token) => {
                    self.send_grpc_stream_message(token, Some(b"ping"), true);
                    "ok"
                }
                Err(_) => "err",
            };
            self.set_http_request_header("x-grpc-stream", Some(ok));
        }
        if let Some(call) = self.config.http_call.clone() {
            let r = self.dispatch_http_call(
                &call.cluster,
                vec![(":method", "GET"), (":path", &call.path), (":authority", "callout")],
                None,
                vec![],
                Duration::from_secs(5),
            );
            return match r {
                Ok(_) => Action::Pause,
                Err(_) => {
                    self.set_http_request_header("x-call-status", Some("dispatch-failed"));
                    Action::Continue
                }
            };
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        let _ = self.at("request_body");
        let Some(extra) = self.config.append_request_body.clone() else {
            return Action::Continue;
        };
        if !eos {
            return Action::Pause;
        }
        self.set_http_request_body(size, 0, extra.as_bytes());
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let _ = self.at("response_headers");
        for (k, v) in &self.config.set_response_headers {
            self.set_http_response_header(k, Some(v));
        }
        for k in &self.config.remove_response_headers {
            self.set_http_response_header(k, None);
        }
        for name in &self.config.echo_properties {
            let v = self.prop(name);
            self.set_http_response_header(&format!("x-prop-{name}"), Some(&v));
        }
        if self.config.count_hits {
            let n = bump(self, "hits");
            self.set_http_response_header("x-hits", Some(&n.to_string()));
        }
        if self.config.tick_ms > 0 {
            let (v, _) = self.get_shared_data("ticks");
            let v = v.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|| "0".into());
            self.set_http_response_header("x-ticks", Some(&v));
        }
        if self.config.replace_response_body.is_some() {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        let _ = self.at("response_body");
        let Some(body) = self.config.replace_response_body.clone() else {
            return Action::Continue;
        };
        if !eos {
            return Action::Pause;
        }
        self.set_http_response_body(0, size, body.as_bytes());
        Action::Continue
    }
}
