//! Conformance plugin `rs_foreign`: the `sluice.ban_source` foreign function.
//!
//! When the request has `x-ban-me`, the plugin reads `source.address`, strips the port, and
//! calls foreign function `sluice.ban_source` with the bare IP as UTF-8 text (`x-foreign-name`
//! overrides the function name, `x-foreign-arg` the argument). The response gets
//! `x-foreign-result: ok:<result as UTF-8>` or `error:<Status>`, and `x-foreign-arg`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

const BAN_FUNCTION: &str = "sluice.ban_source";

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Foreign::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// `1.2.3.4:5678` → `1.2.3.4`, `[::1]:5678` → `::1`; anything else unchanged.
fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => ip,
        _ => address,
    }
}

#[derive(Default)]
struct Foreign {
    report: Vec<(&'static str, String)>,
}

impl Context for Foreign {}

impl HttpContext for Foreign {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header("x-ban-me").is_none() {
            return Action::Continue;
        }
        let argument = self
            .get_http_request_header("x-foreign-arg")
            .unwrap_or_else(|| {
                let address = self
                    .get_property(vec!["source", "address"])
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                strip_port(&address).to_owned()
            });
        let name = self
            .get_http_request_header("x-foreign-name")
            .unwrap_or_else(|| BAN_FUNCTION.to_owned());
        let result = match hostcalls::call_foreign_function(&name, Some(argument.as_bytes())) {
            Ok(Some(bytes)) => format!("ok:{}", String::from_utf8_lossy(&bytes)),
            Ok(None) => "ok:".to_owned(),
            Err(status) => format!("error:{}", conformance_common::status_name(status)),
        };
        self.report.push(("x-foreign-result", result));
        self.report.push(("x-foreign-arg", argument));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.report {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}
