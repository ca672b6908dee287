//! Conformance plugin `rs_config`: echoes its configurations and can reject them.
//!
//! on_vm_start keeps the VM configuration; on_configure keeps the plugin configuration and
//! returns false when it is JSON with `"fail": true`. Every response gets
//! `x-config-plugin` (configuration text, or `<none>`), `x-config-vm`, `x-config-plugin-json`
//! (`object`/`other`/`invalid`), `x-config-configure-count` (on_configure calls on this VM).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default, Clone)]
struct Seen {
    vm: Option<String>,
    plugin: Option<String>,
    json: &'static str,
    configure_count: u32,
}

#[derive(Default)]
struct Root {
    seen: Rc<Seen>,
}

/// Header values may not carry control characters; configurations are shown on one line.
fn printable(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| {
        String::from_utf8_lossy(&b)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    })
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let vm = printable(self.get_vm_configuration());
        Rc::make_mut(&mut self.seen).vm = vm;
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration();
        let parsed = raw
            .as_deref()
            .map(serde_json::from_slice::<serde_json::Value>);
        let json = match &parsed {
            Some(Ok(serde_json::Value::Object(_))) => "object",
            Some(Ok(_)) => "other",
            Some(Err(_)) => "invalid",
            None => "none",
        };
        let fail =
            matches!(&parsed, Some(Ok(v)) if v.get("fail") == Some(&serde_json::Value::Bool(true)));
        let seen = Rc::make_mut(&mut self.seen);
        seen.plugin = printable(raw);
        seen.json = json;
        seen.configure_count += 1;
        !fail
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Echo {
            seen: Rc::clone(&self.seen),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Echo {
    seen: Rc<Seen>,
}

impl Context for Echo {}

impl HttpContext for Echo {
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let none = "<none>".to_owned();
        let plugin = self.seen.plugin.clone().unwrap_or_else(|| none.clone());
        let vm = self.seen.vm.clone().unwrap_or(none);
        self.set_http_response_header("x-config-plugin", Some(&plugin));
        self.set_http_response_header("x-config-vm", Some(&vm));
        self.set_http_response_header("x-config-plugin-json", Some(self.seen.json));
        self.set_http_response_header(
            "x-config-configure-count",
            Some(&self.seen.configure_count.to_string()),
        );
        Action::Continue
    }
}
