//! Conformance plugin `rs_local_response`: answers from the plugin instead of the upstream.
//!
//! Request directives, checked in this order:
//! - `x-local-status: N` → `send_http_response(N)` with header `x-local: rs`, optional extra
//!   header from `x-local-header: name=value`, body `x-local-body` (default `local response from rs\n`).
//! - `x-local-grpc-status: N` → `send_grpc_response(N, message x-local-grpc-message)`.
//! - `x-local-close: request|response` → `proxy_close_stream` on that side during request headers.
//! - `x-local-on-response: N` → the upstream is called, then its response is replaced by a local
//!   response with status N (header `x-local: rs-response`) from on_response_headers.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

const DEFAULT_BODY: &str = "local response from rs\n";

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Local::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct Local {
    on_response: Option<u32>,
}

impl Local {
    fn status(&self, name: &str) -> Option<u32> {
        self.get_http_request_header(name)?.trim().parse().ok()
    }
}

fn grpc_code(code: u32) -> GrpcStatusCode {
    match code {
        0 => GrpcStatusCode::Ok,
        1 => GrpcStatusCode::Cancelled,
        3 => GrpcStatusCode::InvalidArgument,
        4 => GrpcStatusCode::DeadlineExceeded,
        5 => GrpcStatusCode::NotFound,
        6 => GrpcStatusCode::AlreadyExists,
        7 => GrpcStatusCode::PermissionDenied,
        8 => GrpcStatusCode::ResourceExhausted,
        9 => GrpcStatusCode::FailedPrecondition,
        10 => GrpcStatusCode::Aborted,
        11 => GrpcStatusCode::OutOfRange,
        12 => GrpcStatusCode::Unimplemented,
        13 => GrpcStatusCode::Internal,
        14 => GrpcStatusCode::Unavailable,
        15 => GrpcStatusCode::DataLoss,
        16 => GrpcStatusCode::Unauthenticated,
        _ => GrpcStatusCode::Unknown,
    }
}

impl Context for Local {}

impl HttpContext for Local {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(status) = self.status("x-local-status") {
            let body = self
                .get_http_request_header("x-local-body")
                .unwrap_or_else(|| DEFAULT_BODY.to_owned());
            let extra = self.get_http_request_header("x-local-header");
            let mut headers = vec![("x-local", "rs")];
            if let Some((name, value)) = extra.as_deref().and_then(|h| h.split_once('=')) {
                headers.push((name, value));
            }
            self.send_http_response(status, headers, Some(body.as_bytes()));
            return Action::Pause;
        }
        if let Some(code) = self.status("x-local-grpc-status") {
            let message = self.get_http_request_header("x-local-grpc-message");
            self.send_grpc_response(
                grpc_code(code),
                message.as_deref(),
                vec![("x-local", b"rs-grpc")],
            );
            return Action::Pause;
        }
        match self.get_http_request_header("x-local-close").as_deref() {
            Some("request") => {
                self.reset_http_request();
                return Action::Pause;
            }
            Some("response") => {
                self.reset_http_response();
                return Action::Pause;
            }
            _ => {}
        }
        self.on_response = self.status("x-local-on-response");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(status) = self.on_response else {
            return Action::Continue;
        };
        self.send_http_response(
            status,
            vec![("x-local", "rs-response")],
            Some(b"replaced by rs\n"),
        );
        Action::Pause
    }
}
