//! `raw_add_header`: the `filters` benchmark's work (add `x-bench: 1` to every response) written
//! against the proxy-wasm ABI 0.2.1 directly, without an SDK: every callback returns at once.
//!
//! Run side by side with `add_header.wasm` (the Rust SDK), it splits a plugin's cost into the
//! host's share (the VM entries, the glue around each phase, the host call) and the SDK's
//! (context maps, boxes, dispatch), which no host can remove for an unmodified plugin. The
//! configuration is ignored. See docs/performance.md ("Filters").

#![no_std]

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
}

const MAP_RESPONSE_HEADERS: u32 = 2;
const CONTINUE: u32 = 0;
const NAME: &[u8] = b"x-bench";
const VALUE: &[u8] = b"1";

/// Scratch memory the host may write into (`proxy_on_memory_allocate`): this plugin reads
/// nothing from the host, so the host never asks for more than a configuration's bytes.
static mut SCRATCH: [u8; 4096] = [0; 4096];

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    if size > 4096 {
        return core::ptr::null_mut();
    }
    // SAFETY: single-threaded guest; the host copies into it and the plugin never reads it.
    unsafe { core::ptr::addr_of_mut!(SCRATCH).cast() }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context: u32, _root: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_root: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: usize, _eos: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: usize, _eos: u32) -> u32 {
    // SAFETY: the pointers and lengths are of static byte strings.
    unsafe {
        proxy_add_header_map_value(
            MAP_RESPONSE_HEADERS,
            NAME.as_ptr(),
            NAME.len(),
            VALUE.as_ptr(),
            VALUE.len(),
        );
    }
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_context: u32, _size: usize, _eos: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_context: u32) {}
