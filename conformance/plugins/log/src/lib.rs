//! Conformance plugin `rs_log`: proxy_log at every level and proxy_get_log_level.
//!
//! On request headers it logs `sluice-conformance log <level> <path>` at trace, debug, info,
//! warn, error and critical (each call's status goes to `x-log-results`, e.g.
//! `trace=Ok,debug=Ok,...`), then reports the host's level as `x-log-level` (`trace`..`critical`)
//! and `x-log-level-num` (0..5).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    // Trace, so the SDK's own filter never hides a call: the host decides what it keeps.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

const LEVELS: [(LogLevel, &str); 6] = [
    (LogLevel::Trace, "trace"),
    (LogLevel::Debug, "debug"),
    (LogLevel::Info, "info"),
    (LogLevel::Warn, "warn"),
    (LogLevel::Error, "error"),
    (LogLevel::Critical, "critical"),
];

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Log::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Default)]
struct Log {
    report: Vec<(&'static str, String)>,
}

impl Context for Log {}

impl HttpContext for Log {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let results: Vec<String> = LEVELS
            .iter()
            .map(|(level, name)| {
                let message = format!("sluice-conformance log {name} {path}");
                let status = match hostcalls::log(*level, &message) {
                    Ok(()) => "Ok",
                    Err(status) => conformance_common::status_name(status),
                };
                format!("{name}={status}")
            })
            .collect();
        self.report.push(("x-log-results", results.join(",")));
        // The SDK panics on a non-Ok status here, which a conformant host never returns.
        let level = hostcalls::get_log_level().unwrap_or(LogLevel::Trace);
        let name = LEVELS
            .iter()
            .find(|(l, _)| *l == level)
            .map_or("unknown", |(_, n)| n);
        self.report.push(("x-log-level", name.to_owned()));
        self.report
            .push(("x-log-level-num", (level as u32).to_string()));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.report {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}
