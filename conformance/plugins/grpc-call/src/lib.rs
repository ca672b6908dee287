//! Conformance plugin `rs_grpc_call`: unary and streaming gRPC callouts.
//!
//! Config (JSON, all optional): `{"cluster": "grpc", "service": "grpc.health.v1.Health",
//! "method": "Check", "stream_method": "Watch", "message_hex": "", "timeout_ms": 5000}`; the
//! defaults target the standard gRPC health service, whose empty request means "the server".
//! Directive `x-grpc: unary|stream|stream-close` (absent: nothing happens). The request is paused until the
//! result is known, then resumed; the results are added to the request (the upstream sees them)
//! and to the response. See conformance/README.md for the headers.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Clone)]
struct Settings {
    cluster: String,
    service: String,
    method: String,
    stream_method: String,
    message: Vec<u8>,
    timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: "grpc".into(),
            service: "grpc.health.v1.Health".into(),
            method: "Check".into(),
            stream_method: "Watch".into(),
            message: Vec::new(),
            timeout_ms: 5000,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Default)]
struct Root {
    settings: Rc<Settings>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let mut settings = Settings::default();
        if let Some(raw) = self.get_plugin_configuration() {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&raw) else {
                return false;
            };
            let text = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            if let Some(v) = text("cluster") {
                settings.cluster = v;
            }
            if let Some(v) = text("service") {
                settings.service = v;
            }
            if let Some(v) = text("method") {
                settings.method = v;
            }
            if let Some(v) = text("stream_method") {
                settings.stream_method = v;
            }
            if let Some(v) = text("message_hex") {
                let Some(bytes) = unhex(&v) else {
                    return false;
                };
                settings.message = bytes;
            }
            if let Some(v) = value.get("timeout_ms").and_then(|v| v.as_u64()) {
                settings.timeout_ms = v;
            }
        }
        self.settings = Rc::new(settings);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Grpc {
            settings: Rc::clone(&self.settings),
            report: Vec::new(),
            stream_messages: 0,
            resumed: false,
            half_close: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Grpc {
    settings: Rc<Settings>,
    report: Vec<(&'static str, String)>,
    stream_messages: u32,
    resumed: bool,
    /// `stream-close`: the unary method over a stream, half-closed with `proxy_grpc_close`; the
    /// request resumes when the stream closes (after its trailing metadata).
    half_close: bool,
}

impl Grpc {
    fn finish(&mut self) {
        if self.resumed {
            return;
        }
        self.resumed = true;
        for (name, value) in &self.report {
            self.add_http_request_header(name, value);
        }
        self.resume_http_request();
    }

    fn status_message(&self) -> String {
        match proxy_wasm::hostcalls::get_grpc_status() {
            Ok((_, Some(message))) => message,
            Ok((_, None)) => String::new(),
            Err(status) => format!("<error:{}>", conformance_common::status_name(status)),
        }
    }
}

impl Context for Grpc {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        let body = self
            .get_grpc_call_response_body(0, response_size)
            .unwrap_or_default();
        self.report.push(("x-grpc-status", status_code.to_string()));
        self.report.push(("x-grpc-message", self.status_message()));
        self.report.push(("x-grpc-response-hex", hex(&body)));
        self.finish();
    }

    fn on_grpc_stream_initial_metadata(&mut self, _token: u32, num_elements: u32) {
        self.report
            .push(("x-grpc-stream-initial-metadata", num_elements.to_string()));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token: u32, num_elements: u32) {
        self.report
            .push(("x-grpc-stream-trailers", num_elements.to_string()));
    }

    fn on_grpc_stream_message(&mut self, token: u32, message_size: usize) {
        self.stream_messages += 1;
        if self.half_close {
            let body = self
                .get_grpc_stream_message(0, message_size)
                .unwrap_or_default();
            self.report.push(("x-grpc-stream-first-hex", hex(&body)));
            return;
        }
        if self.stream_messages > 1 || self.resumed {
            return;
        }
        let body = self
            .get_grpc_stream_message(0, message_size)
            .unwrap_or_default();
        self.report.push(("x-grpc-stream-messages", "1".to_owned()));
        self.report.push(("x-grpc-stream-first-hex", hex(&body)));
        // A watch stream never ends by itself: the first message is all the test needs.
        let cancel = match proxy_wasm::hostcalls::cancel_grpc_stream(token) {
            Ok(()) => "Ok",
            Err(status) => conformance_common::status_name(status),
        };
        self.report
            .push(("x-grpc-stream-cancel", cancel.to_owned()));
        self.finish();
    }

    fn on_grpc_stream_close(&mut self, _token: u32, status_code: u32) {
        if self.resumed {
            return;
        }
        self.report
            .push(("x-grpc-stream-messages", self.stream_messages.to_string()));
        self.report
            .push(("x-grpc-stream-close-status", status_code.to_string()));
        self.report.push(("x-grpc-message", self.status_message()));
        self.finish();
    }
}

impl HttpContext for Grpc {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let settings = Rc::clone(&self.settings);
        let result = match self.get_http_request_header("x-grpc").as_deref() {
            Some("unary") => self.dispatch_grpc_call(
                &settings.cluster,
                &settings.service,
                &settings.method,
                vec![("x-grpc-from", b"rs")],
                Some(&settings.message),
                Duration::from_millis(settings.timeout_ms),
            ),
            Some("stream") => self
                .open_grpc_stream(
                    &settings.cluster,
                    &settings.service,
                    &settings.stream_method,
                    vec![("x-grpc-from", b"rs")],
                )
                .inspect(|token| {
                    self.send_grpc_stream_message(*token, Some(&settings.message), true);
                }),
            Some("stream-close") => self
                .open_grpc_stream(
                    &settings.cluster,
                    &settings.service,
                    &settings.method,
                    vec![("x-grpc-from", b"rs")],
                )
                .inspect(|token| {
                    self.half_close = true;
                    self.send_grpc_stream_message(*token, Some(&settings.message), false);
                    let closed = match proxy_wasm::hostcalls::close_grpc_stream(*token) {
                        Ok(()) => "Ok",
                        Err(status) => conformance_common::status_name(status),
                    };
                    self.report.push(("x-grpc-stream-close", closed.to_owned()));
                }),
            _ => return Action::Continue,
        };
        match result {
            Ok(_) => Action::Pause,
            Err(status) => {
                let name = conformance_common::status_name(status);
                self.send_http_response(500, vec![("x-grpc-dispatch-error", name)], None);
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.report {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}
