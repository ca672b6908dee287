//! Conformance plugin `rs_headers`: header and trailer maps in both directions.
//!
//! Request headers: adds `x-conf-added: rs`, replaces `x-conf-replace` with `replaced`, removes
//! `x-conf-remove`, and adds `x-conf-request-header-count` (pairs seen by `get_headers`), all of
//! which the upstream sees. With `x-conf-set-map: 1` the whole map is written back with
//! `set_http_request_headers` plus `x-conf-map-replaced: 1`. Response headers report what the
//! plugin saw; see conformance/README.md for the exact list.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Headers::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct Headers {
    request_header_count: usize,
    request_header_callback_count: usize,
    request_path: Option<String>,
    request_trailers: Option<Vec<(String, String)>>,
    response_trailers_seen: Option<usize>,
}

impl Context for Headers {}

impl HttpContext for Headers {
    fn on_http_request_headers(&mut self, num_headers: usize, _end_of_stream: bool) -> Action {
        let pairs = self.get_http_request_headers();
        self.request_header_count = pairs.len();
        self.request_header_callback_count = num_headers;
        self.request_path = self.get_http_request_header(":path");

        if self.get_http_request_header("x-conf-set-map").as_deref() == Some("1") {
            let mut map: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            map.push(("x-conf-map-replaced", "1"));
            self.set_http_request_headers(map);
        }
        if self.get_http_request_header("x-conf-replace").is_some() {
            self.set_http_request_header("x-conf-replace", Some("replaced"));
        }
        self.set_http_request_header("x-conf-remove", None);
        self.add_http_request_header("x-conf-added", "rs");
        self.add_http_request_header(
            "x-conf-request-header-count",
            &self.request_header_count.to_string(),
        );
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.request_trailers = Some(self.get_http_request_trailers());
        self.add_http_request_trailer("x-conf-trailer-added", "rs");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, num_headers: usize, _end_of_stream: bool) -> Action {
        let count = self.get_http_response_headers().len();
        if self
            .get_http_response_header("x-conf-upstream-replace")
            .is_some()
        {
            self.set_http_response_header("x-conf-upstream-replace", Some("replaced"));
        }
        self.set_http_response_header("x-conf-upstream-remove", None);
        self.add_http_response_header("x-conf-response-added", "rs");
        self.set_http_response_header("x-conf-response-header-count", Some(&count.to_string()));
        self.set_http_response_header(
            "x-conf-response-num-headers",
            Some(&num_headers.to_string()),
        );
        self.set_http_response_header(
            "x-conf-request-header-count",
            Some(&self.request_header_count.to_string()),
        );
        self.set_http_response_header(
            "x-conf-request-num-headers",
            Some(&self.request_header_callback_count.to_string()),
        );
        let path = self.request_path.clone().unwrap_or_else(|| "<none>".into());
        self.set_http_response_header("x-conf-request-path", Some(&path));
        let trailers = match &self.request_trailers {
            None => "none".to_owned(),
            Some(list) => list
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
        };
        self.set_http_response_header("x-conf-request-trailers", Some(&trailers));
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.response_trailers_seen = Some(num_trailers);
        self.set_http_response_trailer("x-conf-upstream-trailer-remove", None);
        self.add_http_response_trailer("x-conf-response-trailer-added", "rs");
        self.add_http_response_trailer(
            "x-conf-response-trailer-count",
            &self.get_http_response_trailers().len().to_string(),
        );
        Action::Continue
    }
}
