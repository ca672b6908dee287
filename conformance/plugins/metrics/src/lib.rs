//! Conformance plugin `rs_metrics`: counter, gauge and histogram.
//!
//! The root defines `sluice_conformance_requests` (counter), `sluice_conformance_gauge` (gauge)
//! and `sluice_conformance_latency` (histogram). Per request: counter += 1; gauge is recorded to
//! the value of `x-metric-gauge` (default 42) then incremented by `x-metric-gauge-delta`
//! (default 0, may be negative); histogram records `x-metric-histogram` (default 7). Response
//! headers: `x-metric-counter` and `x-metric-gauge` (get_metric after the update),
//! `x-metric-histogram-get` (get_metric on the histogram: a value or `<error:Status>`),
//! `x-metric-define` (`Ok` or the first define error).

use std::rc::Rc;

use conformance_common::status_name;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Clone, Copy)]
struct Ids {
    counter: u32,
    gauge: u32,
    histogram: u32,
}

#[derive(Default)]
struct Root {
    ids: Rc<Option<Result<Ids, Status>>>,
}

fn define() -> Result<Ids, Status> {
    Ok(Ids {
        counter: hostcalls::define_metric(MetricType::Counter, "sluice_conformance_requests")?,
        gauge: hostcalls::define_metric(MetricType::Gauge, "sluice_conformance_gauge")?,
        histogram: hostcalls::define_metric(MetricType::Histogram, "sluice_conformance_latency")?,
    })
}

fn show(result: Result<u64, Status>) -> String {
    match result {
        Ok(v) => v.to_string(),
        Err(status) => format!("<error:{}>", status_name(status)),
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.ids = Rc::new(Some(define()));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Metrics {
            ids: Rc::clone(&self.ids),
            report: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Metrics {
    ids: Rc<Option<Result<Ids, Status>>>,
    report: Vec<(&'static str, String)>,
}

impl Metrics {
    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.get_http_request_header(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }

    fn update(&self, ids: Ids) -> Result<(), Status> {
        hostcalls::increment_metric(ids.counter, 1)?;
        hostcalls::record_metric(ids.gauge, self.number("x-metric-gauge", 42u64))?;
        hostcalls::increment_metric(ids.gauge, self.number("x-metric-gauge-delta", 0i64))?;
        hostcalls::record_metric(ids.histogram, self.number("x-metric-histogram", 7u64))
    }
}

impl Context for Metrics {}

impl HttpContext for Metrics {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let ids = match self.ids.as_ref() {
            Some(Ok(ids)) => *ids,
            Some(Err(status)) => {
                self.report
                    .push(("x-metric-define", status_name(*status).to_owned()));
                return Action::Continue;
            }
            None => {
                self.report.push(("x-metric-define", "not-run".to_owned()));
                return Action::Continue;
            }
        };
        self.report.push(("x-metric-define", "Ok".to_owned()));
        let update = match self.update(ids) {
            Ok(()) => "Ok",
            Err(status) => status_name(status),
        };
        self.report.push(("x-metric-update", update.to_owned()));
        self.report
            .push(("x-metric-counter", show(hostcalls::get_metric(ids.counter))));
        self.report
            .push(("x-metric-gauge", show(hostcalls::get_metric(ids.gauge))));
        self.report.push((
            "x-metric-histogram-get",
            show(hostcalls::get_metric(ids.histogram)),
        ));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.report {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}
