//! `add-header`: a first-party Sluice plugin that adds, sets or removes request and response
//! headers as its configuration says. See README.md for the configuration.
//!
//! Written with Sluice's Rust SDK (`sdk/plugin`, crate `sluice-plugin`). The same plugin on the
//! `proxy-wasm` crate is `bench/plugins/pw-add-header`: the `filters` benchmark runs both.

pub mod config;

use std::rc::Rc;

use config::{Action, Config, Rule};
use sluice_plugin::{host, Action as Flow, Context, HttpContext, LogLevel, MapType, RootContext};

sluice_plugin::plugin!(Root, |_root_id| Root {
    config: Rc::new(Config::default()),
});

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    type Http = Stream;

    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = host::plugin_configuration()
            .ok()
            .flatten()
            .unwrap_or_default();
        match Config::parse(&raw) {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(err) => {
                host::log(LogLevel::Error, &err.to_string());
                false
            }
        }
    }

    fn create_http_context(&mut self, _context_id: u32) -> Stream {
        Stream {
            config: Rc::clone(&self.config),
        }
    }
}

struct Stream {
    config: Rc<Config>,
}

/// Applies the rules to one header map through the host calls that map to each action.
#[inline(always)]
fn apply(map: MapType, rules: &[Rule]) {
    for rule in rules {
        // A host error on one header must not take the request down: the plugin keeps going
        // and the host's log shows the failed call.
        let _ = match (rule.action, rule.value.as_deref()) {
            (Action::Remove, _) => host::remove_header(map, &rule.name),
            (Action::Set, Some(value)) => host::replace_header(map, &rule.name, value),
            (Action::Set, None) => host::remove_header(map, &rule.name),
            (Action::Add, Some(value)) => host::add_header(map, &rule.name, value),
            (Action::Default, Some(value)) => set_default(map, &rule.name, value),
            // Validation guarantees a value for add/default.
            (Action::Add | Action::Default, None) => Ok(()),
        };
    }
}

/// Sets `name` unless the map has it. Out of line: reading the value allocates, and inlined
/// that code would make every rule's loop save more registers.
#[inline(never)]
fn set_default(map: MapType, name: &str, value: &str) -> Result<(), sluice_plugin::Status> {
    match host::header_bytes(map, name) {
        Ok(Some(_)) => Ok(()),
        _ => host::replace_header(map, name, value),
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Flow {
        apply(MapType::RequestHeaders, &self.config.request);
        Flow::Continue
    }

    fn on_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Flow {
        apply(MapType::ResponseHeaders, &self.config.response);
        Flow::Continue
    }
}
