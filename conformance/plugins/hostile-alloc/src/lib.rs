//! Hostile plugin `rs_hostile_alloc` (ABI 0.2.1, no SDK): a `proxy_on_memory_allocate` that lies,
//! and requests for huge buffers.
//!
//! Mode from the plugin configuration (the bare word, or JSON containing it) or, per request,
//! the `x-alloc-mode` header:
//! - `oob`: while the plugin asks for the request headers, the allocator returns 0xFFFF_0000;
//! - `null`: the allocator returns 0;
//! - `edge`: the allocator returns a pointer 8 bytes before the end of memory, so the host's
//!   write of the headers runs past the end;
//! - `huge-read`: on the request body the plugin calls `proxy_get_buffer_bytes(body, 0,
//!   0xFFFF_FFFF)`; the host must clamp to the body it has (Ok) or refuse, never allocate 4 GiB.
//!
//! The status of the hostile call is reported as response header `x-alloc-result: <mode>=<code>`
//! (`none` when no mode is set). A conformant host returns an error status (or traps the
//! plugin); it never writes outside the plugin's memory.

use std::sync::atomic::{AtomicU32, Ordering};

const MODE_NONE: u32 = 0;
const MODE_OOB: u32 = 1;
const MODE_NULL: u32 = 2;
const MODE_EDGE: u32 = 3;
const MODE_HUGE_READ: u32 = 4;

const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_RESPONSE_HEADERS: u32 = 2;
const BUFFER_REQUEST_BODY: u32 = 0;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const WASM_PAGE: usize = 65536;

/// Configured mode (from on_configure).
static CONFIGURED: AtomicU32 = AtomicU32::new(MODE_NONE);
/// Mode of the stream being processed (config, or the stream's header).
static STREAM_MODE: AtomicU32 = AtomicU32::new(MODE_NONE);
/// Non-zero while the allocator must misbehave.
static ARMED: AtomicU32 = AtomicU32::new(MODE_NONE);
/// Status of the last hostile call, u32::MAX when none was made.
static RESULT: AtomicU32 = AtomicU32::new(u32::MAX);

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max: usize,
        ret: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        ret: *mut *mut u8,
        ret_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    match ARMED.load(Ordering::Relaxed) {
        MODE_OOB => 0xFFFF_0000usize as *mut u8,
        MODE_NULL => std::ptr::null_mut(),
        MODE_EDGE => (core::arch::wasm32::memory_size(0) * WASM_PAGE - 8) as *mut u8,
        _ => {
            // Leaked on purpose: the host owns the buffer and the SDK convention is that the
            // plugin frees what it receives; this plugin never frees (it is short-lived by design).
            let buffer = vec![0u8; size].into_boxed_slice();
            Box::into_raw(buffer) as *mut u8
        }
    }
}

fn parse_mode(text: &[u8]) -> u32 {
    let text = String::from_utf8_lossy(text);
    if text.contains("huge-read") {
        MODE_HUGE_READ
    } else if text.contains("oob") {
        MODE_OOB
    } else if text.contains("null") {
        MODE_NULL
    } else if text.contains("edge") {
        MODE_EDGE
    } else {
        MODE_NONE
    }
}

fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_OOB => "oob",
        MODE_NULL => "null",
        MODE_EDGE => "edge",
        MODE_HUGE_READ => "huge-read",
        _ => "none",
    }
}

/// Copies a host-returned buffer into an owned Vec (the allocator is not armed here).
///
/// # Safety
/// `ptr`/`len` must come from a successful host call that used our allocator unarmed.
unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        return Vec::new();
    }
    Vec::from(std::slice::from_raw_parts(ptr, len))
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: out-pointers are our locals; the allocator is unarmed during configure.
    let status =
        unsafe { proxy_get_buffer_bytes(BUFFER_PLUGIN_CONFIGURATION, 0, size, &mut ptr, &mut len) };
    if status == 0 {
        // SAFETY: the host just returned this buffer through our (unarmed) allocator.
        let config = unsafe { take(ptr, len) };
        CONFIGURED.store(parse_mode(&config), Ordering::Relaxed);
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _eos: u32) -> u32 {
    let key = b"x-alloc-mode";
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    // SAFETY: valid key and out-pointers; the allocator is unarmed.
    let status = unsafe {
        proxy_get_header_map_value(
            MAP_REQUEST_HEADERS,
            key.as_ptr(),
            key.len(),
            &mut ptr,
            &mut len,
        )
    };
    let mode = if status == 0 {
        // SAFETY: returned by the host through our unarmed allocator.
        parse_mode(&unsafe { take(ptr, len) })
    } else {
        CONFIGURED.load(Ordering::Relaxed)
    };
    STREAM_MODE.store(mode, Ordering::Relaxed);
    RESULT.store(u32::MAX, Ordering::Relaxed);
    if matches!(mode, MODE_OOB | MODE_NULL | MODE_EDGE) {
        ARMED.store(mode, Ordering::Relaxed);
        let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: the out-pointers are valid; what the host does with the bogus allocation is
        // the subject of the test, and the plugin never reads through the returned pointer.
        let status = unsafe { proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, &mut ptr, &mut len) };
        ARMED.store(MODE_NONE, Ordering::Relaxed);
        RESULT.store(status, Ordering::Relaxed);
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context: u32, _size: usize, _eos: u32) -> u32 {
    if STREAM_MODE.load(Ordering::Relaxed) == MODE_HUGE_READ {
        let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: valid out-pointers, unarmed allocator: only the requested size is hostile.
        let status = unsafe {
            proxy_get_buffer_bytes(BUFFER_REQUEST_BODY, 0, 0xFFFF_FFFF, &mut ptr, &mut len)
        };
        RESULT.store(status, Ordering::Relaxed);
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: usize, _eos: u32) -> u32 {
    let mode = STREAM_MODE.load(Ordering::Relaxed);
    let result = RESULT.load(Ordering::Relaxed);
    let value = if result == u32::MAX {
        format!("{}=not-called", mode_name(mode))
    } else {
        format!("{}={result}", mode_name(mode))
    };
    let key = b"x-alloc-result";
    // SAFETY: both buffers are live locals.
    unsafe {
        proxy_add_header_map_value(
            MAP_RESPONSE_HEADERS,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_context: u32) {}
