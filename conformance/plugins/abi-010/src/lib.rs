//! Conformance plugin `rs_abi_010`: the proxy-wasm ABI 0.1.0 path, written without an SDK
//! (the Rust SDK only emits 0.2.x).
//!
//! Exports `proxy_abi_version_0_1_0` and the 0.1.0 callback signatures (on_request_headers has
//! no end_of_stream argument). On request headers it adds `x-abi: 0.1.0` with
//! `proxy_add_header_map_value` (the upstream sees it). With request header `x-abi010-pause: 1`
//! it returns StopIteration and resumes the request from the root's next tick (10 ms period)
//! through `proxy_set_effective_context` + the 0.1.0-only `proxy_continue_request`. Responses get
//! `x-abi: 0.1.0` and `x-abi010-resumed: <status of proxy_continue_request, or "no">`.
//!
//! More 0.1.0 host functions, each reported on the response (see conformance/README.md):
//! `proxy_get_configuration` (in on_configure), `proxy_log`, `proxy_get_current_time_nanoseconds`,
//! `proxy_get_header_map_size` against `proxy_get_header_map_pairs`, `proxy_get_buffer_status`
//! on the request body, `proxy_continue_response` (directive `x-abi010-pause-response: 1`),
//! `proxy_clear_route_cache` (directive `x-abi010-reroute: 1`), and the lifecycle callbacks
//! `proxy_on_log`/`proxy_on_done`/`proxy_on_delete` with `proxy_done` (directive
//! `x-abi010-defer-done: 1`: on_done returns false and the next tick releases the context).
//! Request trailers get `x-abi010-trailer: added`, response trailers
//! `x-abi010-response-trailer: added`. The `probes` module covers the rest of the ABI.

mod probes;

use std::cell::RefCell;

pub(crate) const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_REQUEST_TRAILERS: u32 = 1;
const MAP_RESPONSE_HEADERS: u32 = 2;
const MAP_RESPONSE_TRAILERS: u32 = 3;
const TICK_MS: u32 = 10;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        ret: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_get_header_map_size(map: u32, ret_size: *mut usize) -> u32;
    fn proxy_get_buffer_status(buffer: u32, ret_size: *mut usize, ret_flags: *mut u32) -> u32;
    fn proxy_get_configuration(ret: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_continue_request() -> u32;
    fn proxy_continue_response() -> u32;
    fn proxy_clear_route_cache() -> u32;
    fn proxy_done() -> u32;
    fn proxy_set_effective_context(context: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

const BUFFER_REQUEST_BODY: u32 = 0;
const LOG_INFO: u32 = 2;

thread_local! {
    /// Streams paused on request headers, waiting for the next tick to resume them.
    static PAUSED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// (context, status of proxy_continue_request) for streams resumed by a tick.
    static RESUMED: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
    /// Streams paused on response headers, resumed by the next tick with continue_response.
    static PAUSED_RESPONSE: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Status of the last proxy_continue_response a tick made.
    static LAST_RESPONSE_RESUME: RefCell<Option<u32>> = const { RefCell::new(None) };
    /// The plugin configuration read with proxy_get_configuration in on_configure.
    static CONFIG: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// (context, request body size from proxy_get_buffer_status).
    static BODY_STATUS: RefCell<Vec<(u32, usize)>> = const { RefCell::new(Vec::new()) };
    /// Contexts whose on_done returned false, waiting for the next tick's proxy_done.
    static DEFERRED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Contexts released with proxy_done (with its status), until their on_delete.
    static RELEASED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Lifecycle counts: [on_log, on_done, on_delete, on_delete after proxy_done].
    static COUNTS: RefCell<[u32; 4]> = const { RefCell::new([0; 4]) };
    /// Contexts whose request asked on_done to defer.
    static DEFER_REQUESTED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// Status of the last proxy_done a tick made.
    static LAST_DONE: RefCell<Option<u32>> = const { RefCell::new(None) };
}

fn config_text() -> String {
    CONFIG.with(|c| String::from_utf8_lossy(&c.borrow()).into_owned())
}

fn log_info(message: &str) {
    // SAFETY: the slice is live for the call.
    unsafe { proxy_log(LOG_INFO, message.as_ptr(), message.len()) };
}

fn now_ns() -> Option<u64> {
    let mut t = 0u64;
    // SAFETY: a valid out-pointer.
    (unsafe { proxy_get_current_time_nanoseconds(&mut t) } == 0).then_some(t)
}

/// `proxy_get_header_map_size` and the length of what `proxy_get_header_map_pairs` returns.
fn map_sizes(map: u32) -> (Option<usize>, Option<usize>) {
    let mut size = 0usize;
    // SAFETY: a valid out-pointer.
    let size = (unsafe { proxy_get_header_map_size(map, &mut size) } == 0).then_some(size);
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: valid out-pointers; on success the buffer came from our allocator.
    let pairs = (unsafe { proxy_get_header_map_pairs(map, &mut ptr, &mut len) } == 0)
        .then(|| unsafe { take(ptr, len) }.len());
    (size, pairs)
}

fn opt(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_1_0() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    // Ownership passes to the host, which hands it back in a return pointer; see `take`.
    Box::into_raw(vec![0u8; size].into_boxed_slice()) as *mut u8
}

/// Reclaims a buffer the host filled through `proxy_on_memory_allocate`.
///
/// # Safety
/// `ptr`/`len` must be a buffer from `proxy_on_memory_allocate(len)` returned by a host call.
pub(crate) unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)).into_vec()
}

pub(crate) fn add_header(map: u32, key: &str, value: &str) -> u32 {
    // SAFETY: both slices are live for the call.
    unsafe { proxy_add_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

pub(crate) fn request_header(key: &str) -> Option<Vec<u8>> {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: valid key and out-pointers.
    let status = unsafe {
        proxy_get_header_map_value(
            MAP_REQUEST_HEADERS,
            key.as_ptr(),
            key.len(),
            &mut ptr,
            &mut len,
        )
    };
    // SAFETY: on success the buffer came from our allocator.
    (status == 0).then(|| unsafe { take(ptr, len) })
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, size: u32) -> u32 {
    probes::on_vm_start(size);
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: u32) -> u32 {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: valid out-pointers; on success the buffer came from our allocator.
    if unsafe { proxy_get_configuration(&mut ptr, &mut len) } == 0 {
        let config = unsafe { take(ptr, len) };
        CONFIG.with(|c| *c.borrow_mut() = config);
    }
    probes::on_configure();
    // SAFETY: plain integer argument.
    unsafe { proxy_set_tick_period_milliseconds(TICK_MS) };
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_root: u32, queue: u32) {
    probes::on_queue_ready(queue);
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    _root: u32,
    token: u32,
    _headers: u32,
    body_size: u32,
    _trailers: u32,
) {
    probes::on_http_call_response(token, body_size);
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_root: u32, token: u32, elements: u32) {
    probes::on_grpc_initial_metadata(token, elements);
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_root: u32, token: u32, size: u32) {
    probes::on_grpc_receive(token, size);
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(_root: u32, token: u32, elements: u32) {
    probes::on_grpc_trailing_metadata(token, elements);
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_root: u32, token: u32, code: u32) {
    probes::on_grpc_close(token, code);
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(_root: u32) {
    let paused: Vec<u32> = PAUSED.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for context in paused {
        // SAFETY: plain integer arguments.
        let status = unsafe {
            match proxy_set_effective_context(context) {
                0 => proxy_continue_request(),
                failed => failed,
            }
        };
        RESUMED.with(|r| r.borrow_mut().push((context, status)));
    }
    let paused: Vec<u32> = PAUSED_RESPONSE.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for context in paused {
        // SAFETY: plain integer arguments.
        let status = unsafe {
            match proxy_set_effective_context(context) {
                0 => proxy_continue_response(),
                failed => failed,
            }
        };
        LAST_RESPONSE_RESUME.with(|r| *r.borrow_mut() = Some(status));
    }
    let deferred: Vec<u32> = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    for context in deferred {
        // SAFETY: plain integer arguments.
        let status = unsafe {
            match proxy_set_effective_context(context) {
                0 => proxy_done(),
                failed => failed,
            }
        };
        if status == 0 {
            RELEASED.with(|r| r.borrow_mut().push(context));
        }
        LAST_DONE.with(|d| *d.borrow_mut() = Some(status));
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context: u32, _headers: u32) -> u32 {
    add_header(MAP_REQUEST_HEADERS, "x-abi", "0.1.0");
    log_info(&format!("sluice-conformance abi010 context {context}"));
    if request_header("x-abi010-reroute").as_deref() == Some(b"1") {
        add_header(MAP_REQUEST_HEADERS, "x-route", "rerouted");
        // SAFETY: no arguments.
        unsafe { proxy_clear_route_cache() };
    }
    if probes::on_request_headers(context) {
        return 1;
    }
    if request_header("x-abi010-pause").as_deref() == Some(b"1") {
        PAUSED.with(|p| p.borrow_mut().push(context));
        return 1;
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(context: u32, size: u32, eos: u32) -> u32 {
    let mut buffered = 0usize;
    let mut flags = 0u32;
    // SAFETY: valid out-pointers.
    if unsafe { proxy_get_buffer_status(BUFFER_REQUEST_BODY, &mut buffered, &mut flags) } == 0 {
        BODY_STATUS.with(|b| {
            let mut list = b.borrow_mut();
            match list.iter_mut().find(|(c, _)| *c == context) {
                Some(entry) => entry.1 = buffered,
                None => list.push((context, buffered)),
            }
        });
    }
    probes::on_request_body(context, size, eos != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_context: u32, _trailers: u32) -> u32 {
    add_header(MAP_REQUEST_TRAILERS, "x-abi010-trailer", "added");
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context: u32, _headers: u32) -> u32 {
    probes::on_response_headers(context);
    add_header(MAP_RESPONSE_HEADERS, "x-abi", "0.1.0");
    let resumed = RESUMED.with(|r| {
        let mut list = r.borrow_mut();
        let index = list.iter().position(|(c, _)| *c == context)?;
        Some(list.swap_remove(index).1)
    });
    let text = resumed.map_or_else(|| "no".to_owned(), |s| s.to_string());
    add_header(MAP_RESPONSE_HEADERS, "x-abi010-resumed", &text);
    add_header(MAP_RESPONSE_HEADERS, "x-abi010-config", &config_text());
    add_header(MAP_RESPONSE_HEADERS, "x-abi010-time-ns", &opt(now_ns()));
    let (size, pairs) = map_sizes(MAP_RESPONSE_HEADERS);
    add_header(
        MAP_RESPONSE_HEADERS,
        "x-abi010-map-size",
        &format!("{}={}", opt(size), opt(pairs)),
    );
    let body = BODY_STATUS.with(|b| {
        let mut list = b.borrow_mut();
        let index = list.iter().position(|(c, _)| *c == context)?;
        Some(list.swap_remove(index).1)
    });
    add_header(MAP_RESPONSE_HEADERS, "x-abi010-body-status", &opt(body));
    let [log, done, delete, released] = COUNTS.with(|c| *c.borrow());
    add_header(
        MAP_RESPONSE_HEADERS,
        "x-abi010-lifecycle",
        &format!("log={log},done={done},delete={delete},released-deleted={released}"),
    );
    add_header(
        MAP_RESPONSE_HEADERS,
        "x-abi010-proxy-done",
        &opt(LAST_DONE.with(|d| *d.borrow())),
    );
    add_header(
        MAP_RESPONSE_HEADERS,
        "x-abi010-last-response-resume",
        &opt(LAST_RESPONSE_RESUME.with(|r| *r.borrow())),
    );
    if request_header("x-abi010-defer-done").as_deref() == Some(b"1") {
        DEFER_REQUESTED.with(|d| d.borrow_mut().push(context));
    }
    if request_header("x-abi010-pause-response").as_deref() == Some(b"1") {
        add_header(MAP_RESPONSE_HEADERS, "x-abi010-paused-response", "1");
        PAUSED_RESPONSE.with(|p| p.borrow_mut().push(context));
        return 1;
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(context: u32, size: u32, eos: u32) -> u32 {
    probes::on_response_body(context, size, eos != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context: u32, _trailers: u32) -> u32 {
    add_header(MAP_RESPONSE_TRAILERS, "x-abi010-response-trailer", "added");
    0
}

fn count(index: usize) {
    COUNTS.with(|c| c.borrow_mut()[index] += 1);
}

#[no_mangle]
pub extern "C" fn proxy_on_done(context: u32) -> u32 {
    count(1);
    let defer = DEFER_REQUESTED.with(|d| {
        let mut list = d.borrow_mut();
        let before = list.len();
        list.retain(|c| *c != context);
        list.len() != before
    });
    if defer {
        DEFERRED.with(|d| d.borrow_mut().push(context));
        return 0;
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {
    count(0);
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context: u32) {
    count(2);
    let released = RELEASED.with(|r| {
        let mut list = r.borrow_mut();
        let before = list.len();
        list.retain(|c| *c != context);
        list.len() != before
    });
    if released {
        count(3);
    }
    PAUSED.with(|p| p.borrow_mut().retain(|c| *c != context));
    PAUSED_RESPONSE.with(|p| p.borrow_mut().retain(|c| *c != context));
    RESUMED.with(|r| r.borrow_mut().retain(|(c, _)| *c != context));
    BODY_STATUS.with(|b| b.borrow_mut().retain(|(c, _)| *c != context));
    probes::on_delete(context);
}
