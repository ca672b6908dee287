//! Conformance plugin `rs_body`: buffers whole request/response bodies and rewrites them.
//!
//! Directives (request headers): `x-body-op: replace|prepend|append` rewrites the request body the
//! upstream receives; `x-response-body-op: replace|prepend|append` rewrites the response body the
//! client receives; `x-body-text` is the text used (default `[rs]`). Each body is held with
//! `Action::Pause` (StopIterationAndBuffer) until end of stream, then edited with one
//! `set_buffer_bytes` call whose (start, size) selects the operation as in Envoy:
//! replace = (0, len), prepend = (0, 0), append = (len, 0).
//!
//! `x-response-body-hold: MS` also holds the response at its end of stream (after the edit):
//! the body callback returns `Action::Pause` on the last chunk, and the root context resumes the
//! stream from `proxy_on_tick` once MS milliseconds have passed, with
//! `proxy_set_effective_context` and `proxy_continue_stream`: the way a plugin that hands a whole
//! response to an outside check releases it later.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

const DEFAULT_TEXT: &str = "[rs]";

/// How often the root looks for held responses to release.
const TICK: Duration = Duration::from_millis(10);

thread_local! {
    /// Responses held at their end of stream: (context id, when to release it).
    static HELD: RefCell<Vec<(u32, SystemTime)>> = const { RefCell::new(Vec::new()) };
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let now = self.get_current_time();
        let due: Vec<u32> = HELD.with(|held| {
            let mut held = held.borrow_mut();
            let due = held
                .iter()
                .filter(|(_, at)| *at <= now)
                .map(|(id, _)| *id)
                .collect();
            held.retain(|(_, at)| *at > now);
            due
        });
        for id in due {
            // A stream that went away meanwhile answers NOT_FOUND: nothing to release.
            if hostcalls::set_effective_context(id).is_ok() {
                let _ = hostcalls::resume_http_response();
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Body {
            id: context_id,
            ..Body::default()
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Replace,
    Prepend,
    Append,
}

impl Op {
    fn parse(value: Option<String>) -> Option<Op> {
        match value?.trim() {
            "replace" => Some(Op::Replace),
            "prepend" => Some(Op::Prepend),
            "append" => Some(Op::Append),
            _ => None,
        }
    }

    /// The (start, size) of the `set_buffer_bytes` call that performs this operation.
    fn range(self, len: usize) -> (usize, usize) {
        match self {
            Op::Replace => (0, len),
            Op::Prepend => (0, 0),
            Op::Append => (len, 0),
        }
    }
}

#[derive(Default)]
struct Body {
    id: u32,
    /// `x-response-body-hold`: hold the whole response this long after its end of stream.
    hold: Option<Duration>,
    request_op: Option<Op>,
    response_op: Option<Op>,
    text: String,
    request_size: Option<usize>,
    request_body_calls: usize,
}

impl Context for Body {}

impl HttpContext for Body {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.request_op = Op::parse(self.get_http_request_header("x-body-op"));
        self.response_op = Op::parse(self.get_http_request_header("x-response-body-op"));
        self.text = self
            .get_http_request_header("x-body-text")
            .unwrap_or_else(|| DEFAULT_TEXT.to_owned());
        self.hold = self
            .get_http_request_header("x-response-body-hold")
            .and_then(|ms| ms.trim().parse().ok())
            .map(Duration::from_millis);
        if self.request_op.is_some() {
            // The body length changes, so a stale content-length must not reach the upstream.
            self.set_http_request_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request_body_calls += 1;
        if !end_of_stream {
            return Action::Pause;
        }
        self.request_size = Some(body_size);
        if let Some(op) = self.request_op {
            let (start, size) = op.range(body_size);
            self.set_http_request_body(start, size, self.text.as_bytes());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.response_op.is_some() {
            self.set_http_response_header("content-length", None);
        }
        let size = self
            .request_size
            .map_or_else(|| "none".to_owned(), |n| n.to_string());
        self.set_http_response_header("x-body-request-size", Some(&size));
        self.set_http_response_header(
            "x-body-request-calls",
            Some(&self.request_body_calls.to_string()),
        );
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(op) = self.response_op {
            let (start, size) = op.range(body_size);
            self.set_http_response_body(start, size, self.text.as_bytes());
        }
        if let Some(hold) = self.hold {
            let at = self.get_current_time() + hold;
            HELD.with(|held| held.borrow_mut().push((self.id, at)));
            return Action::Pause;
        }
        Action::Continue
    }
}
