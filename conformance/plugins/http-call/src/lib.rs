//! Conformance plugin `rs_http_call`: `dispatch_http_call` from on_request_headers.
//!
//! Config (JSON): `{"cluster": "echo", "path": "/callout", "authority": "callout", "timeout_ms":
//! 5000}` (all optional, these are the defaults). Directive `x-callout: local|resume` (absent:
//! the plugin does nothing); `x-callout-cluster`, `x-callout-path`, `x-callout-timeout-ms`
//! override the config per request. The callout is `GET` with header `x-callout-from: rs`.
//! `local`: the client gets a local response with the callout's status and body, the callout's
//! `x-*` headers, plus `x-callout-status` and `x-callout-body-size`. `resume`: the request goes on
//! to its upstream with `x-callout-status`/`x-callout-body-size` added, and the same two headers
//! are added to the response. A failed callout (no headers: reset or timeout) reports
//! `x-callout-status: failed`; in `local` mode the status is 502. A dispatch the host refuses
//! gives a local 500 with `x-callout-dispatch-error: <Status>`.

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
    authority: String,
    timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: "echo".into(),
            path: "/callout".into(),
            authority: "callout".into(),
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
        if let Some(raw) = self.get_plugin_configuration() {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&raw) else {
                return false;
            };
            let text = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
            if let Some(v) = text("cluster") {
                settings.cluster = v;
            }
            if let Some(v) = text("path") {
                settings.path = v;
            }
            if let Some(v) = text("authority") {
                settings.authority = v;
            }
            if let Some(v) = value.get("timeout_ms").and_then(|v| v.as_u64()) {
                settings.timeout_ms = v;
            }
        }
        self.settings = Rc::new(settings);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Callout {
            settings: Rc::clone(&self.settings),
            mode: Mode::None,
            report: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Local,
    Resume,
}

struct Callout {
    settings: Rc<Settings>,
    mode: Mode,
    report: Vec<(String, String)>,
}

impl Context for Callout {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            self.get_http_call_response_headers()
        };
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .map(|(_, v)| v.clone());
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        let status_text = status.clone().unwrap_or_else(|| "failed".to_owned());
        let size = body.len().to_string();
        match self.mode {
            Mode::Local => {
                let code = status.and_then(|s| s.parse().ok()).unwrap_or(502);
                let mut out: Vec<(&str, &str)> = headers
                    .iter()
                    .filter(|(k, _)| k.starts_with("x-"))
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                out.push(("x-callout-status", &status_text));
                out.push(("x-callout-body-size", &size));
                self.send_http_response(code, out, Some(&body));
            }
            Mode::Resume | Mode::None => {
                self.add_http_request_header("x-callout-status", &status_text);
                self.add_http_request_header("x-callout-body-size", &size);
                self.report.push(("x-callout-status".into(), status_text));
                self.report.push(("x-callout-body-size".into(), size));
                self.resume_http_request();
            }
        }
    }
}

impl HttpContext for Callout {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.mode = match self.get_http_request_header("x-callout").as_deref() {
            Some("local") => Mode::Local,
            Some("resume") => Mode::Resume,
            _ => return Action::Continue,
        };
        let cluster = self
            .get_http_request_header("x-callout-cluster")
            .unwrap_or_else(|| self.settings.cluster.clone());
        let path = self
            .get_http_request_header("x-callout-path")
            .unwrap_or_else(|| self.settings.path.clone());
        let timeout_ms = self
            .get_http_request_header("x-callout-timeout-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.settings.timeout_ms);
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", self.settings.authority.as_str()),
            (":scheme", "http"),
            ("x-callout-from", "rs"),
        ];
        match self.dispatch_http_call(
            &cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(timeout_ms),
        ) {
            Ok(_) => Action::Pause,
            Err(status) => {
                let name = conformance_common::status_name(status);
                self.send_http_response(500, vec![("x-callout-dispatch-error", name)], None);
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
