//! Conformance plugin `rs_lifecycle`: the context lifecycle and the small host functions the SDK
//! does not wrap, on ABI 0.2.1.
//!
//! Every response reports (see conformance/README.md): `x-lc-time-ns`
//! (`proxy_get_current_time_nanoseconds`), `x-lc-map-size: <proxy_get_header_map_size>=<length
//! of the serialized response pairs>`, `x-lc-config-size: <proxy_get_buffer_status of the plugin
//! configuration in on_configure>=<its length>`, `x-lc-lifecycle: log=N,done=N,delete=N,
//! released-deleted=N` (callbacks this VM saw for earlier streams; `delete` counts contexts the
//! SDK dropped, which it does in `proxy_on_delete`), `x-lc-done-outside` (`proxy_done` from a live
//! stream: NotFound) and `x-lc-proxy-done` (the last `proxy_done` a tick made). Directive
//! `x-lc-defer-done: 1`: this stream's on_done returns false and the root's next tick (10 ms)
//! releases it with `proxy_set_effective_context` + `proxy_done`. Directive
//! `x-lc-pause-forever: 1`: request headers return Pause and nothing ever resumes the stream.

use std::cell::RefCell;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, Status};

const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const MAP_RESPONSE_HEADERS: u32 = 2;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_size(map: u32, ret_size: *mut usize) -> u32;
    fn proxy_get_buffer_status(buffer: u32, ret_size: *mut usize, ret_flags: *mut u32) -> u32;
}

/// `proxy_done` without the SDK's wrapper, which panics on anything but Ok (a live stream gets
/// NotFound, as in Envoy).
fn raw_done() -> u32 {
    #[link(wasm_import_module = "env")]
    extern "C" {
        #[link_name = "proxy_done"]
        fn proxy_done_raw() -> u32;
    }
    // SAFETY: no arguments.
    unsafe { proxy_done_raw() }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

#[derive(Default)]
struct State {
    /// on_log, on_done, contexts dropped (on_delete), dropped after proxy_done.
    counts: [u32; 4],
    /// Streams whose on_done returned false, for the next tick.
    deferred: Vec<u32>,
    /// Streams released with proxy_done, until they are dropped.
    released: Vec<u32>,
    last_done: Option<String>,
    config_size: String,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

fn status_text(r: Result<(), Status>) -> String {
    match r {
        Ok(()) => "Ok".to_owned(),
        Err(s) => conformance_common::status_name(s).to_owned(),
    }
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let mut size = 0usize;
        let mut flags = 0u32;
        // SAFETY: valid out-pointers.
        let status = unsafe {
            proxy_get_buffer_status(BUFFER_PLUGIN_CONFIGURATION, &mut size, &mut flags)
        };
        let len = self.get_plugin_configuration().map_or(0, |c| c.len());
        let text = if status == 0 {
            format!("{size}={len}")
        } else {
            format!("status-{status}={len}")
        };
        with(|s| s.config_size = text);
        self.set_tick_period(Duration::from_millis(10));
        true
    }

    fn on_tick(&mut self) {
        let deferred = with(|s| std::mem::take(&mut s.deferred));
        for context in deferred {
            let result = hostcalls::set_effective_context(context).and_then(|()| hostcalls::done());
            with(|s| {
                if result.is_ok() {
                    s.released.push(context);
                }
                s.last_done = Some(status_text(result));
            });
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            defer: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    id: u32,
    defer: bool,
}

/// `proxy_get_header_map_size` and the size of the same map serialized as the ABI does:
/// count, then per pair two sizes, then each key and value with a NUL after it.
fn map_sizes() -> String {
    let mut size = 0usize;
    // SAFETY: a valid out-pointer.
    let status = unsafe { proxy_get_header_map_size(MAP_RESPONSE_HEADERS, &mut size) };
    let serialized = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).map(|pairs| {
        4 + pairs
            .iter()
            .map(|(k, v)| 8 + k.len() + 1 + v.len() + 1)
            .sum::<usize>()
    });
    let serialized = serialized.map_or_else(|_| "error".to_owned(), |n| n.to_string());
    if status == 0 {
        format!("{size}={serialized}")
    } else {
        format!("status-{status}={serialized}")
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let id = self.id;
        with(|s| {
            s.counts[2] += 1;
            let before = s.released.len();
            s.released.retain(|c| *c != id);
            if s.released.len() != before {
                s.counts[3] += 1;
            }
        });
    }
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        with(|s| {
            s.counts[1] += 1;
            if self.defer {
                s.deferred.push(self.id);
            }
        });
        !self.defer
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.defer = self.get_http_request_header("x-lc-defer-done").as_deref() == Some("1");
        if self.get_http_request_header("x-lc-pause-forever").as_deref() == Some("1") {
            // Never resumed: the host's pause timeout must end it.
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let time = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.set_http_response_header("x-lc-time-ns", Some(&time.to_string()));
        self.set_http_response_header("x-lc-map-size", Some(&map_sizes()));
        let (config, counts, last_done) =
            with(|s| (s.config_size.clone(), s.counts, s.last_done.clone()));
        self.set_http_response_header("x-lc-config-size", Some(&config));
        let [log, done, delete, released] = counts;
        self.set_http_response_header(
            "x-lc-lifecycle",
            Some(&format!(
                "log={log},done={done},delete={delete},released-deleted={released}"
            )),
        );
        self.set_http_response_header(
            "x-lc-done-outside",
            Some(&match raw_done() {
                0 => "Ok".to_owned(),
                1 => "NotFound".to_owned(),
                other => other.to_string(),
            }),
        );
        self.set_http_response_header(
            "x-lc-proxy-done",
            Some(last_done.as_deref().unwrap_or("none")),
        );
        Action::Continue
    }

    fn on_log(&mut self) {
        with(|s| s.counts[0] += 1);
    }
}
