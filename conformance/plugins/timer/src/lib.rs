//! Conformance plugin `rs_timer`: tick period and on_tick.
//!
//! on_vm_start sets a 100 ms tick period; on_configure sets the period from the config
//! (`{"tick_ms": N}` or a bare number of milliseconds; 0 stops the timer). Every tick adds 1 to
//! shared-data key `sluice.conformance.ticks` and to this VM's own count. Responses carry
//! `x-timer-ticks` (shared count, all workers) and `x-timer-local-ticks` (this VM's count).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use conformance_common::{cas_add, read_counter};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

const TICKS_KEY: &str = "sluice.conformance.ticks";
const DEFAULT_TICK_MS: u64 = 100;

#[derive(Default)]
struct Root {
    local_ticks: Rc<Cell<u64>>,
}

fn tick_ms(config: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(config).ok()?.trim();
    if let Ok(ms) = text.parse() {
        return Some(ms);
    }
    let start = text.find("\"tick_ms\"")? + "\"tick_ms\"".len();
    let rest = text
        .get(start..)?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.set_tick_period(Duration::from_millis(DEFAULT_TICK_MS));
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let ms = self
            .get_plugin_configuration()
            .and_then(|c| tick_ms(&c))
            .unwrap_or(DEFAULT_TICK_MS);
        self.set_tick_period(Duration::from_millis(ms));
        true
    }

    fn on_tick(&mut self) {
        self.local_ticks.set(self.local_ticks.get() + 1);
        let _ = cas_add(TICKS_KEY, 1);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Report {
            local_ticks: Rc::clone(&self.local_ticks),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Report {
    local_ticks: Rc<Cell<u64>>,
}

impl Context for Report {}

impl HttpContext for Report {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = read_counter(TICKS_KEY).unwrap_or(0);
        self.set_http_response_header("x-timer-ticks", Some(&shared.to_string()));
        self.set_http_response_header(
            "x-timer-local-ticks",
            Some(&self.local_ticks.get().to_string()),
        );
        Action::Continue
    }
}
