//! Conformance plugin `rs_abi_010`: the proxy-wasm ABI 0.1.0 path, written without an SDK
//! (the Rust SDK only emits 0.2.x).
//!
//! Exports `proxy_abi_version_0_1_0` and the 0.1.0 callback signatures (on_request_headers has
//! no end_of_stream argument). On request headers it adds `x-abi: 0.1.0` with
//! `proxy_add_header_map_value` (the upstream sees it). With request header `x-abi010-pause: 1`
//! it returns StopIteration and resumes the request from the root's next tick (10 ms period)
//! through `proxy_set_effective_context` + the 0.1.0-only `proxy_continue_request`. Responses get
//! `x-abi: 0.1.0` and `x-abi010-resumed: <status of proxy_continue_request, or "no">`.

use std::cell::RefCell;

const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_RESPONSE_HEADERS: u32 = 2;
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
    fn proxy_continue_request() -> u32;
    fn proxy_set_effective_context(context: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
}

thread_local! {
    /// Streams paused on request headers, waiting for the next tick to resume them.
    static PAUSED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// (context, status of proxy_continue_request) for streams resumed by a tick.
    static RESUMED: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
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
unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)).into_vec()
}

fn add_header(map: u32, key: &str, value: &str) -> u32 {
    // SAFETY: both slices are live for the call.
    unsafe { proxy_add_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

fn request_header(key: &str) -> Option<Vec<u8>> {
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
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: u32) -> u32 {
    // SAFETY: plain integer argument.
    unsafe { proxy_set_tick_period_milliseconds(TICK_MS) };
    1
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
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context: u32, _headers: u32) -> u32 {
    add_header(MAP_REQUEST_HEADERS, "x-abi", "0.1.0");
    if request_header("x-abi010-pause").as_deref() == Some(b"1") {
        PAUSED.with(|p| p.borrow_mut().push(context));
        return 1;
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context: u32, _size: u32, _eos: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_context: u32, _trailers: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context: u32, _headers: u32) -> u32 {
    add_header(MAP_RESPONSE_HEADERS, "x-abi", "0.1.0");
    let resumed = RESUMED.with(|r| {
        let mut list = r.borrow_mut();
        let index = list.iter().position(|(c, _)| *c == context)?;
        Some(list.swap_remove(index).1)
    });
    let text = resumed.map_or_else(|| "no".to_owned(), |s| s.to_string());
    add_header(MAP_RESPONSE_HEADERS, "x-abi010-resumed", &text);
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_context: u32, _size: u32, _eos: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context: u32, _trailers: u32) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context: u32) {
    PAUSED.with(|p| p.borrow_mut().retain(|c| *c != context));
    RESUMED.with(|r| r.borrow_mut().retain(|(c, _)| *c != context));
}
