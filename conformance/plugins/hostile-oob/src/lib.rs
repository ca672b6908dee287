//! Hostile plugin `rs_hostile_oob`: host calls with pointers and lengths outside linear memory.
//!
//! On request headers it makes each raw call below (all of them, or only the one named by the
//! `x-oob` request header) and records the status the host returned. A conformant host answers
//! InvalidMemoryAccess (6) or traps the plugin (then the failure policy applies); it never reads
//! or writes outside the plugin's memory and never crashes. The response reports
//! `x-oob-results: name=status,...` (`x-oob-survived: 1` shows the plugin kept running).
//!
//! The imports are declared here rather than taken from the SDK so that arbitrary integers can
//! be passed where the SDK only ever passes valid pointers.
#![allow(clashing_extern_declarations)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

/// 4 GiB - 16: past the end of any memory a host would give a plugin.
const BAD: usize = 0xFFFF_FFF0;
const REQUEST_HEADERS: u32 = 0;
/// The request body buffer (empty during request headers; only written to here).
const REQUEST_BODY: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    #[link_name = "proxy_log"]
    fn raw_log(level: u32, message: usize, size: usize) -> u32;
    #[link_name = "proxy_get_header_map_value"]
    fn raw_get_header_map_value(
        map: u32,
        key: usize,
        key_size: usize,
        ret: usize,
        ret_size: usize,
    ) -> u32;
    #[link_name = "proxy_add_header_map_value"]
    fn raw_add_header_map_value(
        map: u32,
        key: usize,
        key_size: usize,
        value: usize,
        value_size: usize,
    ) -> u32;
    #[link_name = "proxy_get_header_map_pairs"]
    fn raw_get_header_map_pairs(map: u32, ret: usize, ret_size: usize) -> u32;
    #[link_name = "proxy_set_header_map_pairs"]
    fn raw_set_header_map_pairs(map: u32, data: usize, size: usize) -> u32;
    #[link_name = "proxy_set_buffer_bytes"]
    fn raw_set_buffer_bytes(
        buffer: u32,
        start: usize,
        size: usize,
        data: usize,
        data_size: usize,
    ) -> u32;
    #[link_name = "proxy_get_property"]
    fn raw_get_property(path: usize, path_size: usize, ret: usize, ret_size: usize) -> u32;
    #[link_name = "proxy_set_shared_data"]
    fn raw_set_shared_data(
        key: usize,
        key_size: usize,
        value: usize,
        value_size: usize,
        cas: u32,
    ) -> u32;
    #[link_name = "proxy_get_current_time_nanoseconds"]
    fn raw_get_current_time(ret: usize) -> u32;
    #[link_name = "proxy_send_local_response"]
    fn raw_send_local_response(
        status: u32,
        details: usize,
        details_size: usize,
        body: usize,
        body_size: usize,
        headers: usize,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

fn addr<T>(value: &T) -> usize {
    value as *const T as usize
}

/// The address of a local the host is meant to write through.
fn out<T>(value: &mut T) -> usize {
    value as *mut T as usize
}

/// A probe: its name and the raw call, returning the host's status.
type Probe = (&'static str, Box<dyn Fn() -> u32>);

fn probes() -> Vec<Probe> {
    let path = b":path";
    let key = b"x-oob";
    // `request.path` in the serialized property-path form (segments joined by NUL): a
    // non-empty value, so the host really has something to write through the bogus pointers.
    let property = b"request\0path";
    // SAFETY (all closures): the host must validate every pointer it is given; these calls are
    // the test, and the only memory the plugin itself touches is its own locals.
    vec![
        ("log_message", Box::new(|| unsafe { raw_log(2, BAD, 100) })),
        (
            "log_wrapping_size",
            Box::new(move || unsafe { raw_log(2, addr(key), usize::MAX) }),
        ),
        (
            "get_header_key",
            Box::new(|| {
                let (mut p, mut n) = (0usize, 0usize);
                unsafe {
                    raw_get_header_map_value(REQUEST_HEADERS, BAD, 10, out(&mut p), out(&mut n))
                }
            }),
        ),
        (
            "get_header_return",
            Box::new(move || unsafe {
                raw_get_header_map_value(REQUEST_HEADERS, addr(path), path.len(), BAD, BAD)
            }),
        ),
        (
            "add_header_value",
            Box::new(move || unsafe {
                raw_add_header_map_value(REQUEST_HEADERS, addr(key), key.len(), BAD, 10)
            }),
        ),
        (
            "get_pairs_return",
            Box::new(|| unsafe { raw_get_header_map_pairs(REQUEST_HEADERS, BAD, BAD) }),
        ),
        (
            "set_pairs_data",
            Box::new(|| unsafe { raw_set_header_map_pairs(REQUEST_HEADERS, BAD, 100) }),
        ),
        (
            "get_property_return",
            Box::new(move || unsafe { raw_get_property(addr(property), property.len(), BAD, BAD) }),
        ),
        (
            "set_buffer_huge",
            Box::new(move || unsafe {
                raw_set_buffer_bytes(REQUEST_BODY, 0, 0, addr(key), 1 << 30)
            }),
        ),
        (
            "get_property_path",
            Box::new(|| {
                let (mut p, mut n) = (0usize, 0usize);
                unsafe { raw_get_property(BAD, 10, out(&mut p), out(&mut n)) }
            }),
        ),
        (
            "set_shared_value",
            Box::new(move || unsafe { raw_set_shared_data(addr(key), key.len(), BAD, 1 << 20, 0) }),
        ),
        (
            "current_time_return",
            Box::new(|| unsafe { raw_get_current_time(BAD) }),
        ),
        (
            "local_response_body",
            Box::new(|| unsafe { raw_send_local_response(200, 0, 0, BAD, 100, 0, 0, -1) }),
        ),
    ]
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Oob {
            results: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Oob {
    results: String,
}

impl Context for Oob {}

impl HttpContext for Oob {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let only = self.get_http_request_header("x-oob");
        let results: Vec<String> = probes()
            .into_iter()
            .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
            .map(|(name, probe)| format!("{name}={}", probe()))
            .collect();
        self.results = results.join(",");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-oob-results", Some(&self.results));
        self.set_http_response_header("x-oob-survived", Some("1"));
        Action::Continue
    }
}
