//! The frame shared by the hostile plugins: it calls the plugin's bad act in the one callback
//! the configuration names and behaves in every other callback.
//!
//! The place comes from the VM configuration for `vm_start` (the plugin configuration is not
//! known yet), otherwise from the plugin configuration (the VM configuration is the fallback),
//! and a request header `x-hostile-where` overrides it for that stream's HTTP callbacks. `tick`
//! makes the root set a 10 ms tick period. When the act returns (a non-fatal variant), its text
//! is reported as response header `x-hostile-report`.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::{hostile_config, Hostile};

/// The misbehaviour: called with the settings and the callback name; returns a report when it
/// did not trap or hang.
pub type Act = fn(&Hostile, &str) -> Option<String>;

/// Installs the hostile root context; call from `proxy_wasm::main!`.
pub fn install(act: Act) {
    proxy_wasm::set_log_level(LogLevel::Info);
    // The SDK takes a plain fn pointer, so the act travels through a thread-local: a wasm VM is
    // single threaded and installs exactly one act.
    ACT.with(|slot| slot.set(Some(act)));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        let act = ACT.with(|slot| slot.get()).unwrap_or(noop);
        Box::new(Root {
            act,
            vm: Hostile::default(),
            settings: Rc::new(Hostile::default()),
        })
    });
}

thread_local! {
    static ACT: std::cell::Cell<Option<Act>> = const { std::cell::Cell::new(None) };
}

fn noop(_: &Hostile, _: &str) -> Option<String> {
    None
}

const TICK: Duration = Duration::from_millis(10);

struct Root {
    act: Act,
    vm: Hostile,
    settings: Rc<Hostile>,
}

impl Root {
    fn at(&self, place: &str) {
        if self.settings.place.as_deref() == Some(place) {
            (self.act)(&self.settings, place);
        }
    }
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        self.at("done");
        true
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.vm = hostile_config(&self.get_vm_configuration().unwrap_or_default());
        if self.vm.place.as_deref() == Some("vm_start") {
            (self.act)(&self.vm, "vm_start");
        }
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let plugin = hostile_config(&self.get_plugin_configuration().unwrap_or_default());
        self.settings = Rc::new(if plugin == Hostile::default() {
            self.vm.clone()
        } else {
            plugin
        });
        if self.settings.place.as_deref() == Some("tick") {
            self.set_tick_period(TICK);
        }
        self.at("configure");
        true
    }

    fn on_tick(&mut self) {
        self.at("tick");
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            act: self.act,
            settings: Rc::clone(&self.settings),
            report: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    act: Act,
    settings: Rc<Hostile>,
    report: Option<String>,
}

impl Stream {
    fn at(&mut self, place: &str) {
        if self.settings.place.as_deref() == Some(place) {
            if let Some(report) = (self.act)(&self.settings, place) {
                self.report = Some(report);
            }
        }
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        self.at("done");
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(place) = self.get_http_request_header("x-hostile-where") {
            let mut settings = (*self.settings).clone();
            settings.place = Some(place);
            self.settings = Rc::new(settings);
        }
        self.at("request_headers");
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.at("request_body");
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.at("request_trailers");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.at("response_headers");
        if let Some(report) = &self.report {
            self.set_http_response_header("x-hostile-report", Some(report));
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.at("response_body");
        Action::Continue
    }

    fn on_log(&mut self) {
        self.at("log");
    }
}
