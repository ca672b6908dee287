//! Hostile plugin `rs_hostile_callouts`: a flood of http callouts per request.
//!
//! Config: `{"cluster": "echo", "count": 1000, "path": "/", "timeout_ms": 5000}` (all
//! optional). Each request dispatches `count` callouts (or `x-callouts-count`), pauses until
//! every accepted one has answered, then resumes; the response reports `x-callouts-dispatched`
//! (accepted), `x-callouts-refused` (dispatch errors, e.g. a host limit) and
//! `x-callouts-responses`. When none is accepted the request goes on at once.

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
    path: String,
    count: u64,
    timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: "echo".into(),
            path: "/".into(),
            count: 1000,
            timeout_ms: 5000,
        }
    }
}

#[derive(Default)]
struct Root {
    settings: Rc<Settings>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let mut settings = Settings::default();
        let raw = self.get_plugin_configuration().unwrap_or_default();
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&raw) {
            if let Some(v) = value.get("cluster").and_then(|v| v.as_str()) {
                settings.cluster = v.to_owned();
            }
            if let Some(v) = value.get("path").and_then(|v| v.as_str()) {
                settings.path = v.to_owned();
            }
            if let Some(v) = value.get("count").and_then(|v| v.as_u64()) {
                settings.count = v;
            }
            if let Some(v) = value.get("timeout_ms").and_then(|v| v.as_u64()) {
                settings.timeout_ms = v;
            }
        }
        self.settings = Rc::new(settings);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Flood {
            settings: Rc::clone(&self.settings),
            dispatched: 0,
            refused: 0,
            responses: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Flood {
    settings: Rc<Settings>,
    dispatched: u64,
    refused: u64,
    responses: u64,
}

impl Context for Flood {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        self.responses += 1;
        if self.responses == self.dispatched {
            self.resume_http_request();
        }
    }
}

impl HttpContext for Flood {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let count = self
            .get_http_request_header("x-callouts-count")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.settings.count);
        let settings = Rc::clone(&self.settings);
        for _ in 0..count {
            let headers = vec![
                (":method", "GET"),
                (":path", settings.path.as_str()),
                (":authority", "callouts"),
                (":scheme", "http"),
            ];
            let timeout = Duration::from_millis(settings.timeout_ms);
            match self.dispatch_http_call(&settings.cluster, headers, None, vec![], timeout) {
                Ok(_) => self.dispatched += 1,
                Err(_) => self.refused += 1,
            }
        }
        if self.dispatched == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-callouts-dispatched", Some(&self.dispatched.to_string()));
        self.set_http_response_header("x-callouts-refused", Some(&self.refused.to_string()));
        self.set_http_response_header("x-callouts-responses", Some(&self.responses.to_string()));
        Action::Continue
    }
}
