//! Exercises the Sluice Rust SDK through a real host. The request header `x-do` picks what the
//! plugin does with the request; every response gets `x-greeting` (the plugin configuration)
//! and a count of the requests this VM saw.

use std::rc::Rc;
use std::time::Duration;

use sluice_plugin::{
    host, Action, BufferType, HttpContext, LogLevel, MapType, MetricType, RootContext,
};

sluice_plugin::plugin!(Root, |_| Root::default());

#[derive(Default)]
struct Root {
    greeting: Rc<str>,
    requests: u32,
    seen: u64,
}

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
        }
    }
}

struct Stream {
    id: u32,
    greeting: Rc<str>,
    requests: u32,
    seen: u64,
    doing: String,
}

const REQ: MapType = MapType::RequestHeaders;

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
