//! Exercises the Sluice Rust SDK through a real host. The request header `x-do` picks what the
//! plugin does with the request; every response gets `x-greeting` (the plugin configuration)
//! and a count of the requests this VM saw.

use std::rc::Rc;
use std::time::Duration;

use sluice_plugin::{
    host, Action, BufferType, Context, HttpContext, LogLevel, MapType, MetricType, RootContext,
};

sluice_plugin::plugin!(Root, |_| Root::default());

#[derive(Default)]
struct Root {
    greeting: Rc<str>,
    requests: u32,
    seen: u64,
}

impl Context for Root {}

impl RootContext for Root {
    type Http = Stream;

    fn on_vm_start(&mut self, _size: usize) -> bool {
        let vm = host::vm_configuration().ok().flatten().unwrap_or_default();
        host::log(
            LogLevel::Info,
            &format!("vm config: {}", String::from_utf8_lossy(&vm)),
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let config = host::plugin_configuration()
            .ok()
            .flatten()
            .unwrap_or_default();
        if config == b"reject" {
            host::log(LogLevel::Error, "configuration `reject` rejected");
            return false;
        }
        self.greeting = String::from_utf8_lossy(&config).into();
        self.requests = match host::define_metric(MetricType::Counter, "sdk_requests") {
            Ok(id) => id,
            Err(e) => {
                host::log(LogLevel::Error, &format!("define_metric: {e}"));
                return false;
            }
        };
        let _ = host::set_shared_data("greeting", config.as_slice(), None);
        true
    }

    fn create_http_context(&mut self, context_id: u32) -> Stream {
        self.seen += 1;
        Stream {
            id: context_id,
            greeting: Rc::clone(&self.greeting),
            requests: self.requests,
            seen: self.seen,
            doing: String::new(),
            events: Vec::new(),
        }
    }
}

struct Stream {
    id: u32,
    greeting: Rc<str>,
    requests: u32,
    seen: u64,
    doing: String,
    events: Vec<String>,
}

const REQ: MapType = MapType::RequestHeaders;

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if headers == 0 {
            let _ = host::send_response(503, &[], b"callout failed");
            return;
        }
        let answer = host::http_call_response_headers().unwrap_or_default();
        let user = answer
            .iter()
            .find(|(k, _)| k == "x-user")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let body = host::http_call_response_body(0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let _ = host::add_header(REQ, "x-user", user);
        let _ = host::add_header(REQ, "x-callout-body", &String::from_utf8_lossy(&body));
        let _ = host::resume_request();
    }

    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        if status != 0 {
            let (code, message) = host::grpc_status().unwrap_or_default();
            let body = format!("grpc status {code}: {message}");
            let _ = host::send_response(403, &[], body.as_bytes());
            return;
        }
        let message = host::grpc_message(0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let _ = host::add_header(REQ, "x-grpc-answer", &format!("{message:?}"));
        let _ = host::resume_request();
    }

    fn on_grpc_stream_initial_metadata(&mut self, _token: u32, _headers: usize) {
        let meta = host::headers(MapType::GrpcInitialMetadata).unwrap_or_default();
        let kind = meta
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        self.events
            .push(format!("meta:{}", kind.unwrap_or_default()));
    }

    fn on_grpc_stream_message(&mut self, _token: u32, size: usize) {
        let message = host::grpc_message(0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.events
            .push(format!("msg:{}", String::from_utf8_lossy(&message)));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token: u32, _trailers: usize) {
        let trailers = host::headers(MapType::GrpcTrailingMetadata).unwrap_or_default();
        let status = trailers
            .iter()
            .find(|(k, _)| k == "grpc-status")
            .map(|(_, v)| v.clone());
        self.events
            .push(format!("trailers:{}", status.unwrap_or_default()));
    }

    fn on_grpc_stream_close(&mut self, _token: u32, status: u32) {
        self.events.push(format!("close:{status}"));
        let _ = host::add_header(REQ, "x-grpc-events", &self.events.join(","));
        let _ = host::resume_request();
    }
}

impl HttpContext for Stream {
    fn on_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        self.doing = host::header(REQ, "x-do").ok().flatten().unwrap_or_default();
        match self.doing.as_str() {
            "headers" => {
                let all = host::headers(REQ).unwrap_or_default();
                let names: Vec<&str> = all
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| k.starts_with("x-"))
                    .collect();
                let names = names.join(",");
                let _ = host::add_header(REQ, "x-names", &names);
                let _ = host::replace_header(REQ, "x-replace", "new");
                let _ = host::remove_header(REQ, "x-remove");
                Action::Continue
            }
            "pairs" => {
                let _ = host::set_headers(
                    REQ,
                    &[
                        (":method", "GET"),
                        (":path", "/rewritten"),
                        (":authority", "up"),
                        ("x-only", "1"),
                    ],
                );
                Action::Continue
            }
            "reply" => {
                let _ = host::send_response(418, &[("x-reply", "yes")], b"teapot");
                Action::Pause
            }
            "callout" => {
                let headers = [
                    (":method", "GET"),
                    (":path", "/check"),
                    (":authority", "auth"),
                ];
                match host::http_call("auth", &headers, None, &[], Duration::from_secs(1)) {
                    Ok(_) => Action::Pause,
                    Err(e) => {
                        let _ = host::send_response(500, &[], format!("{e}").as_bytes());
                        Action::Pause
                    }
                }
            }
            "grpc" => {
                let metadata = [("x-caller", "check")];
                let sent = host::grpc_call(
                    "grpc",
                    "grpc.health.v1.Health",
                    "Check",
                    &metadata,
                    b"\x0a\x03web",
                    Duration::from_secs(1),
                );
                match sent {
                    Ok(_) => Action::Pause,
                    Err(e) => {
                        let _ = host::send_response(500, &[], format!("{e}").as_bytes());
                        Action::Pause
                    }
                }
            }
            "grpc-stream" => {
                let opened = host::grpc_stream("grpc", "test.Echo", "Chat", &[]);
                let sent = opened.and_then(|token| {
                    host::grpc_send(token, b"one", false)?;
                    host::grpc_send(token, b"two", true)
                });
                match sent {
                    Ok(()) => Action::Pause,
                    Err(e) => {
                        let _ = host::send_response(500, &[], format!("{e}").as_bytes());
                        Action::Pause
                    }
                }
            }
            "property" => {
                let path = host::property(&["request", "path"])
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let _ = host::add_header(REQ, "x-path", &String::from_utf8_lossy(&path));
                let missing = host::property(&["no", "such"]);
                let _ = host::add_header(REQ, "x-missing", &format!("{missing:?}"));
                Action::Continue
            }
            "shared" => {
                let value = host::shared_data("greeting").ok().flatten();
                let text = value.map(|(v, _)| String::from_utf8_lossy(&v).into_owned());
                let _ = host::add_header(REQ, "x-shared", text.as_deref().unwrap_or("none"));
                Action::Continue
            }
            "panic" => panic!("asked to panic"),
            _ => Action::Continue,
        }
    }

    fn on_request_body(&mut self, size: usize, eos: bool) -> Action {
        if self.doing != "body" {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        let body = host::buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let upper = body.to_ascii_uppercase();
        let _ = host::set_buffer(BufferType::HttpRequestBody, 0, body.len(), &upper);
        let _ = host::set_buffer(BufferType::HttpRequestBody, upper.len(), 0, b"!");
        Action::Continue
    }

    fn on_response_headers(&mut self, _headers: usize, _eos: bool) -> Action {
        let map = MapType::ResponseHeaders;
        let _ = host::add_header(map, "x-greeting", &self.greeting);
        let _ = host::add_header(map, "x-seen", &self.seen.to_string());
        let _ = host::increment_metric(self.requests, 1);
        Action::Continue
    }

    fn on_log(&mut self) {
        let code = host::property(&["response", "code"])
            .ok()
            .flatten()
            .unwrap_or_default();
        let code = match <[u8; 8]>::try_from(code.as_slice()) {
            Ok(b) => u64::from_le_bytes(b).to_string(),
            Err(_) => format!("{code:?}"),
        };
        host::log(
            LogLevel::Info,
            &format!("context {} logged with status {code}", self.id),
        );
    }
}
