//! Benchmark plugin: the first-party `add-header` (plugins/add-header, same configuration, same
//! module `config`) written with the `proxy-wasm` crate instead of Sluice's SDK, so that the
//! `filters` benchmark shows what the crate's dispatch costs per request.

#[path = "../../../../plugins/add-header/src/config.rs"]
mod config;

use std::rc::Rc;

use config::{Action, Config, Rule};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as Flow, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(Config::default()) })
    });
}}

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&raw) {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(err) => {
                let _ = proxy_wasm::hostcalls::log(LogLevel::Error, &err.to_string());
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: Rc::clone(&self.config),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    config: Rc<Config>,
}

/// Applies the rules to one header map through the host calls that map to each action.
fn apply(map: MapType, rules: &[Rule]) {
    use proxy_wasm::hostcalls::{add_map_value, get_map_value, set_map_value};
    for rule in rules {
        // A host error on one header must not take the request down: the plugin keeps going
        // and the host's log shows the failed call.
        let _ = match (rule.action, rule.value.as_deref()) {
            (Action::Remove, _) => set_map_value(map, &rule.name, None),
            (Action::Set, value) => set_map_value(map, &rule.name, value),
            (Action::Add, Some(value)) => add_map_value(map, &rule.name, value),
            (Action::Default, Some(value)) => match get_map_value(map, &rule.name) {
                Ok(Some(_)) => Ok(()),
                _ => set_map_value(map, &rule.name, Some(value)),
            },
            // Validation guarantees a value for add/default.
            (Action::Add | Action::Default, None) => Ok(()),
        };
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Flow {
        apply(MapType::HttpRequestHeaders, &self.config.request);
        Flow::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Flow {
        apply(MapType::HttpResponseHeaders, &self.config.response);
        Flow::Continue
    }
}
