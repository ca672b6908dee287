//! Conformance plugin `rs_shared`: shared data with CAS, and shared queues.
//!
//! Every request increments the shared-data counter `sluice.conformance.counter` with a CAS retry
//! loop and reports `x-shared-counter` (value after this request) and `x-shared-cas-retries`.
//! The root context registers queue `sluice.conformance.queue`; every request resolves it and
//! enqueues its path (`x-shared-enqueue: Ok|<Status>`); on_queue_ready drains the queue and adds
//! the count to `sluice.conformance.dequeued`, reported as `x-shared-dequeued` (eventually
//! consistent: it counts what the root had drained before this request's response).
//! Directives: `x-shared-set: key=value` stores a value (`x-shared-set-result`),
//! `x-shared-get: key` reads one (`x-shared-value`, `<none>` when missing).

use std::cell::Cell;
use std::rc::Rc;

use conformance_common::{cas_add, read_counter, status_name};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

const COUNTER_KEY: &str = "sluice.conformance.counter";
const DEQUEUED_KEY: &str = "sluice.conformance.dequeued";
const QUEUE_NAME: &str = "sluice.conformance.queue";

#[derive(Default)]
struct Root {
    queue: Rc<Cell<Option<u32>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        match hostcalls::register_shared_queue(QUEUE_NAME) {
            Ok(id) => self.queue.set(Some(id)),
            Err(status) => {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    &format!("register_shared_queue failed: {}", status_name(status)),
                );
            }
        }
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let mut drained = 0;
        while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue_id) {
            drained += 1;
        }
        if drained > 0 {
            let _ = cas_add(DEQUEUED_KEY, drained);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Shared {
            queue: Rc::clone(&self.queue),
            report: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Shared {
    queue: Rc<Cell<Option<u32>>>,
    report: Vec<(&'static str, String)>,
}

impl Shared {
    fn enqueue(&self) -> String {
        let vm_id = hostcalls::get_property(vec!["plugin_vm_id"])
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let resolved = match hostcalls::resolve_shared_queue(&vm_id, QUEUE_NAME) {
            Ok(Some(id)) => Some(id),
            Ok(None) | Err(_) => self.queue.get(),
        };
        let Some(id) = resolved else {
            return "NotFound".to_owned();
        };
        let path = self.get_http_request_header(":path").unwrap_or_default();
        match hostcalls::enqueue_shared_queue(id, Some(path.as_bytes())) {
            Ok(()) => "Ok".to_owned(),
            Err(status) => status_name(status).to_owned(),
        }
    }
}

impl Context for Shared {}

impl HttpContext for Shared {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match cas_add(COUNTER_KEY, 1) {
            Ok(added) => {
                self.report
                    .push(("x-shared-counter", added.value.to_string()));
                self.report
                    .push(("x-shared-cas-retries", added.retries.to_string()));
            }
            Err(status) => self.report.push((
                "x-shared-counter",
                format!("<error:{}>", status_name(status)),
            )),
        }
        let enqueued = self.enqueue();
        self.report.push(("x-shared-enqueue", enqueued));
        if let Some(directive) = self.get_http_request_header("x-shared-set") {
            let result = match directive.split_once('=') {
                Some((key, value)) => {
                    match hostcalls::set_shared_data(key, Some(value.as_bytes()), None) {
                        Ok(()) => "Ok".to_owned(),
                        Err(status) => status_name(status).to_owned(),
                    }
                }
                None => "BadDirective".to_owned(),
            };
            self.report.push(("x-shared-set-result", result));
        }
        if let Some(key) = self.get_http_request_header("x-shared-get") {
            let value = match hostcalls::get_shared_data(&key) {
                Ok((Some(bytes), _)) => String::from_utf8_lossy(&bytes).into_owned(),
                Ok((None, _)) => "<none>".to_owned(),
                Err(status) => format!("<error:{}>", status_name(status)),
            };
            self.report.push(("x-shared-value", value));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let dequeued = read_counter(DEQUEUED_KEY).unwrap_or(0);
        self.report
            .push(("x-shared-dequeued", dequeued.to_string()));
        for (name, value) in &self.report {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}
