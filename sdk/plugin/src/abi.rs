//! The host functions of the proxy-wasm ABI 0.2.1 this SDK calls, imported from `env`. Every one
//! returns a status (0 is success). Off wasm (a plugin crate's own native unit tests, `cargo doc`)
//! each is a stand-in that answers `Unimplemented`, so a crate using the SDK still builds and
//! links there.

macro_rules! imports {
    ($( fn $name:ident($($arg:ident: $ty:ty),* $(,)?); )*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "env")]
        extern "C" {
            $( pub(crate) fn $name($($arg: $ty),*) -> u32; )*
        }

        $(
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(clippy::too_many_arguments)]
            pub(crate) unsafe fn $name($($arg: $ty),*) -> u32 {
                let _ = ($($arg,)*);
                12
            }
        )*
    };
}

imports! {
    fn proxy_log(level: u32, message: *const u8, message_size: usize);
    fn proxy_get_log_level(level: *mut u32);
    fn proxy_get_current_time_nanoseconds(time: *mut u64);
    fn proxy_set_tick_period_milliseconds(period: u32);
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    );
    fn proxy_set_buffer_bytes(buffer: u32, start: usize, size: usize, data: *const u8, data_size: usize);
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize);
    fn proxy_set_header_map_pairs(map: u32, data: *const u8, size: usize);
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    );
    fn proxy_add_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    );
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    );
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize);
    fn proxy_get_property(path: *const u8, path_size: usize, value: *mut *mut u8, value_size: *mut usize);
    fn proxy_set_property(path: *const u8, path_size: usize, value: *const u8, value_size: usize);
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    );
    fn proxy_continue_stream(stream: u32);
    fn proxy_close_stream(stream: u32);
    fn proxy_set_effective_context(context: u32);
    fn proxy_done();
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    );
    fn proxy_grpc_call(
        upstream: *const u8,
        upstream_size: usize,
        service: *const u8,
        service_size: usize,
        method: *const u8,
        method_size: usize,
        metadata: *const u8,
        metadata_size: usize,
        message: *const u8,
        message_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    );
    fn proxy_grpc_stream(
        upstream: *const u8,
        upstream_size: usize,
        service: *const u8,
        service_size: usize,
        method: *const u8,
        method_size: usize,
        metadata: *const u8,
        metadata_size: usize,
        token: *mut u32,
    );
    fn proxy_grpc_send(token: u32, message: *const u8, message_size: usize, end_of_stream: u32);
    fn proxy_grpc_close(token: u32);
    fn proxy_grpc_cancel(token: u32);
    fn proxy_get_status(code: *mut u32, message: *mut *mut u8, message_size: *mut usize);
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32);
    fn proxy_increment_metric(id: u32, offset: i64);
    fn proxy_record_metric(id: u32, value: u64);
    fn proxy_get_metric(id: u32, value: *mut u64);
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    );
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32);
    fn proxy_register_shared_queue(name: *const u8, name_size: usize, id: *mut u32);
    fn proxy_resolve_shared_queue(
        vm_id: *const u8,
        vm_id_size: usize,
        name: *const u8,
        name_size: usize,
        id: *mut u32,
    );
    fn proxy_enqueue_shared_queue(id: u32, value: *const u8, value_size: usize);
    fn proxy_dequeue_shared_queue(id: u32, value: *mut *mut u8, value_size: *mut usize);
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        result: *mut *mut u8,
        result_size: *mut usize,
    );
}
