//! Safe calls into the host. Each returns what the host answered; a call the host refuses comes
//! back as a [`Status`], never as a panic. Which callback a call is valid in follows the
//! proxy-wasm spec (request headers from the request-headers callback on, a body in its body
//! callback, the plugin configuration in `on_configure`...).

use std::time::{Duration, SystemTime};

use crate::abi;
use crate::pairs;
use crate::types::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};

/// Takes ownership of bytes the host wrote into memory it allocated through
/// `proxy_on_memory_allocate` (a `Vec<u8>` of exactly `size` bytes, see [`crate::allocate`]).
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host got `data` from `proxy_on_memory_allocate(size)`, which leaked a
    // `Vec<u8>` with capacity `size`, and wrote `size` bytes into it; nothing else owns it.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// A call that hands back host-allocated bytes: `Ok(None)` when the host says NotFound.
fn fetch(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    match Status::check(call(&mut data, &mut size)) {
        Ok(()) => Ok(Some(take(data, size))),
        Err(Status::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A duration in whole milliseconds, as the ABI takes it; longer than `u32::MAX` ms is clamped.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes `message` to the host's log at `level`, under the plugin's name.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length describe `message`.
    unsafe { abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The least severe level the host writes; skip building messages below it.
pub fn log_level() -> Result<LogLevel, Status> {
    let mut level = 0u32;
    // SAFETY: `level` outlives the call.
    Status::check(unsafe { abi::proxy_get_log_level(&mut level) })?;
    Ok(match level {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => LogLevel::Critical,
    })
}

/// The host's wall clock.
pub fn now() -> Result<SystemTime, Status> {
    let mut nanos = 0u64;
    // SAFETY: `nanos` outlives the call.
    Status::check(unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Calls the root context's `on_tick` every `period` (zero stops the timer). Valid from a root
/// context.
pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = millis(period);
    // SAFETY: plain integers.
    Status::check(unsafe { abi::proxy_set_tick_period_milliseconds(ms) })
}

/// Up to `max` bytes of a buffer from `start`; `None` when the buffer does not exist here.
pub fn buffer(kind: BufferType, start: usize, max: usize) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-pointers outlive the call; the host allocates what it returns.
    fetch(|data, size| unsafe { abi::proxy_get_buffer_bytes(kind as u32, start, max, data, size) })
}

/// Replaces `size` bytes of a buffer from `start` with `data`: `(0, 0)` prepends, `(len, 0)`
/// appends, `(0, len)` replaces the whole buffer.
pub fn set_buffer(kind: BufferType, start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length describe `data`.
    Status::check(unsafe {
        abi::proxy_set_buffer_bytes(kind as u32, start, size, data.as_ptr(), data.len())
    })
}

/// The plugin's configuration (`config:` in Sluice), in `on_configure`.
pub fn plugin_configuration() -> Result<Option<Vec<u8>>, Status> {
    buffer(BufferType::PluginConfiguration, 0, usize::MAX)
}

/// The VM's configuration (`vm_config:` in Sluice), in `on_vm_start`.
pub fn vm_configuration() -> Result<Option<Vec<u8>>, Status> {
    buffer(BufferType::VmConfiguration, 0, usize::MAX)
}

/// The first value of header `name` in `map` as bytes; `None` when it is absent.
pub fn header_bytes(map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: pointer and length describe `name`; the out-pointers outlive the call.
    fetch(|data, size| unsafe {
        abi::proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size)
    })
}

/// The first value of header `name` in `map` (invalid UTF-8 replaced); `None` when absent.
pub fn header(map: MapType, name: &str) -> Result<Option<String>, Status> {
    Ok(header_bytes(map, name)?.map(text))
}

/// Every header of `map`, in order, repeats kept.
pub fn headers(map: MapType) -> Result<Vec<(String, String)>, Status> {
    // SAFETY: the out-pointers outlive the call.
    let bytes =
        fetch(|data, size| unsafe { abi::proxy_get_header_map_pairs(map as u32, data, size) })?;
    let list = pairs::decode(&bytes.unwrap_or_default()).ok_or(Status::SerializationFailure)?;
    Ok(list.into_iter().map(|(k, v)| (text(k), text(v))).collect())
}

/// Replaces every header of `map` with `list`.
pub fn set_headers(map: MapType, list: &[(&str, &str)]) -> Result<(), Status> {
    let bytes = pairs::encode(list);
    // SAFETY: pointer and length describe `bytes`.
    Status::check(unsafe {
        abi::proxy_set_header_map_pairs(map as u32, bytes.as_ptr(), bytes.len())
    })
}

/// Adds a value to header `name`, keeping the values it has.
pub fn add_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe `name` and `value`.
    Status::check(unsafe {
        abi::proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Sets header `name` to `value` alone, replacing the values it had.
pub fn replace_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe `name` and `value`.
    Status::check(unsafe {
        abi::proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of header `name`.
pub fn remove_header(map: MapType, name: &str) -> Result<(), Status> {
    // SAFETY: pointer and length describe `name`.
    Status::check(unsafe {
        abi::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len())
    })
}

/// An attribute (Envoy's names: `["request", "path"]`, `["source", "address"]`, ...) as the host
/// encodes it; `None` when it has no value here.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = path.join("\0");
    // SAFETY: pointer and length describe `path`; the out-pointers outlive the call.
    fetch(|data, size| unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), data, size) })
}

/// Sets a writable attribute (or a plugin's own, for the rest of the stream).
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = path.join("\0");
    // SAFETY: pointers and lengths describe `path` and `value`.
    Status::check(unsafe {
        abi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len())
    })
}

/// Answers the stream from the plugin: `status`, `headers`, `body`; `details` shows in the
/// access log's response details; `grpc_status` makes it a gRPC error (`None` for plain HTTP).
/// The callback should then return [`crate::Action::Pause`].
pub fn send_local_response(
    status: u32,
    details: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    grpc_status: Option<i32>,
) -> Result<(), Status> {
    let headers = pairs::encode(headers);
    // SAFETY: pointers and lengths describe `details`, `body` and `headers`.
    Status::check(unsafe {
        abi::proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status.unwrap_or(-1),
        )
    })
}

/// [`send_local_response`] with no details and no gRPC status.
pub fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Status> {
    send_local_response(status, "", headers, body, None)
}

/// Resumes a direction of the current stream that a callback paused.
pub fn resume(stream: StreamType) -> Result<(), Status> {
    // SAFETY: a plain integer.
    Status::check(unsafe { abi::proxy_continue_stream(stream as u32) })
}

/// Resumes the request ([`resume`] of [`StreamType::Request`]).
pub fn resume_request() -> Result<(), Status> {
    resume(StreamType::Request)
}

/// Resumes the response ([`resume`] of [`StreamType::Response`]).
pub fn resume_response() -> Result<(), Status> {
    resume(StreamType::Response)
}

/// Resets a direction of the current stream (the client sees the stream end abruptly).
pub fn close(stream: StreamType) -> Result<(), Status> {
    // SAFETY: a plain integer.
    Status::check(unsafe { abi::proxy_close_stream(stream as u32) })
}

/// Makes context `id` the one later calls address (a root acting on one of its streams).
pub fn set_effective_context(id: u32) -> Result<(), Status> {
    // SAFETY: a plain integer.
    Status::check(unsafe { abi::proxy_set_effective_context(id) })
}

/// Tells the host that a root context which answered `false` from `on_done` has finished.
pub fn done() -> Result<(), Status> {
    // SAFETY: no arguments.
    Status::check(unsafe { abi::proxy_done() })
}

/// Sends an HTTP request to `cluster` (`:method`, `:path` and `:authority` among `headers`); the
/// answer comes to the calling context's `on_http_call_response` with the returned token.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    trailers: &[(&str, &str)],
    timeout: Duration,
) -> Result<u32, Status> {
    let headers = pairs::encode(headers);
    let trailers = pairs::encode(trailers);
    let body = body.unwrap_or_default();
    let timeout = millis(timeout);
    let mut token = 0u32;
    // SAFETY: pointers and lengths describe the encoded lists, `cluster` and `body`; `token`
    // outlives the call.
    Status::check(unsafe {
        abi::proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout,
            &mut token,
        )
    })?;
    crate::dispatch::callout_sent(token);
    Ok(token)
}

/// The headers of the callout response being delivered (in `on_http_call_response`).
pub fn http_call_response_headers() -> Result<Vec<(String, String)>, Status> {
    headers(MapType::HttpCallResponseHeaders)
}

/// Up to `max` bytes of the callout response's body from `start`.
pub fn http_call_response_body(start: usize, max: usize) -> Result<Option<Vec<u8>>, Status> {
    buffer(BufferType::HttpCallResponseBody, start, max)
}

/// The trailers of the callout response being delivered.
pub fn http_call_response_trailers() -> Result<Vec<(String, String)>, Status> {
    headers(MapType::HttpCallResponseTrailers)
}

/// Sends a unary gRPC request to `cluster` (an HTTP/2 cluster): `service` and `method` name the
/// RPC, `message` is the serialized request (unframed). The answer comes to the calling
/// context's `on_grpc_call_response` with the returned token.
pub fn grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: &[(&str, &str)],
    message: &[u8],
    timeout: Duration,
) -> Result<u32, Status> {
    let metadata = pairs::encode(metadata);
    let timeout = millis(timeout);
    let mut token = 0u32;
    // SAFETY: pointers and lengths describe the strings, `metadata` and `message`; `token`
    // outlives the call.
    Status::check(unsafe {
        abi::proxy_grpc_call(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            message.as_ptr(),
            message.len(),
            timeout,
            &mut token,
        )
    })?;
    crate::dispatch::grpc_sent(token, false);
    Ok(token)
}

/// Opens a gRPC stream to `cluster`; send on it with [`grpc_send`]. Its events come to the
/// calling context's `on_grpc_stream_*` callbacks with the returned token.
pub fn grpc_stream(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: &[(&str, &str)],
) -> Result<u32, Status> {
    let metadata = pairs::encode(metadata);
    let mut token = 0u32;
    // SAFETY: pointers and lengths describe the strings and `metadata`; `token` outlives the
    // call.
    Status::check(unsafe {
        abi::proxy_grpc_stream(
            cluster.as_ptr(),
            cluster.len(),
            service.as_ptr(),
            service.len(),
            method.as_ptr(),
            method.len(),
            metadata.as_ptr(),
            metadata.len(),
            &mut token,
        )
    })?;
    crate::dispatch::grpc_sent(token, true);
    Ok(token)
}

/// Sends a message (serialized, unframed) on a gRPC stream; `end_of_stream` half-closes it.
pub fn grpc_send(token: u32, message: &[u8], end_of_stream: bool) -> Result<(), Status> {
    // SAFETY: pointer and length describe `message`.
    Status::check(unsafe {
        abi::proxy_grpc_send(
            token,
            message.as_ptr(),
            message.len(),
            u32::from(end_of_stream),
        )
    })
}

/// Half-closes a gRPC stream (no more messages from the plugin).
pub fn grpc_close(token: u32) -> Result<(), Status> {
    // SAFETY: a plain integer.
    Status::check(unsafe { abi::proxy_grpc_close(token) })
}

/// Cancels a gRPC call or stream: no callback comes for it any more.
pub fn grpc_cancel(token: u32) -> Result<(), Status> {
    // SAFETY: a plain integer.
    Status::check(unsafe { abi::proxy_grpc_cancel(token) })?;
    crate::dispatch::grpc_forget(token);
    Ok(())
}

/// Up to `max` bytes of the gRPC message being delivered, from `start`.
pub fn grpc_message(start: usize, max: usize) -> Result<Option<Vec<u8>>, Status> {
    buffer(BufferType::GrpcReceiveBuffer, start, max)
}

/// The status code and message of the gRPC call or stream that just closed (in
/// `on_grpc_call_response` with a non-zero status, or `on_grpc_stream_close`).
pub fn grpc_status() -> Result<(u32, String), Status> {
    let mut code = 0u32;
    // SAFETY: the out-pointers outlive the call.
    let message = fetch(|data, size| unsafe { abi::proxy_get_status(&mut code, data, size) })?;
    Ok((code, text(message.unwrap_or_default())))
}

/// Defines (or finds) a metric; the id is valid in every context of this VM.
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: pointer and length describe `name`; `id` outlives the call.
    Status::check(unsafe {
        abi::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Adds `offset` (negative for a gauge going down) to a counter or gauge.
pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain integers.
    Status::check(unsafe { abi::proxy_increment_metric(id, offset) })
}

/// Sets a gauge, or records a value into a histogram.
pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain integers.
    Status::check(unsafe { abi::proxy_record_metric(id, value) })
}

/// A counter's or gauge's current value.
pub fn metric(id: u32) -> Result<u64, Status> {
    let mut value = 0u64;
    // SAFETY: `value` outlives the call.
    Status::check(unsafe { abi::proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

/// A shared-data value and its version (for [`set_shared_data`]'s compare-and-swap); `None`
/// when the key is absent. Shared by every VM of the plugin's `vm_id` on every worker.
pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut cas = 0u32;
    // SAFETY: pointer and length describe `key`; the out-pointers outlive the call.
    let value = fetch(|data, size| unsafe {
        abi::proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas)
    })?;
    Ok(value.map(|v| (v, cas)))
}

/// Stores a shared-data value. With `Some(cas)` the write happens only if the value is still at
/// that version ([`Status::CasMismatch`] otherwise); `None` writes unconditionally.
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: pointers and lengths describe `key` and `value`.
    Status::check(unsafe {
        abi::proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Registers a shared queue owned by this VM; its root context's `on_queue_ready` runs when an
/// item arrives.
pub fn register_queue(name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: pointer and length describe `name`; `id` outlives the call.
    Status::check(unsafe { abi::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Finds a queue another VM registered under `vm_id` and `name`.
pub fn resolve_queue(vm_id: &str, name: &str) -> Result<Option<u32>, Status> {
    let mut id = 0u32;
    // SAFETY: pointers and lengths describe `vm_id` and `name`; `id` outlives the call.
    match Status::check(unsafe {
        abi::proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    }) {
        Ok(()) => Ok(Some(id)),
        Err(Status::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Appends `value` to a queue.
pub fn enqueue(id: u32, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length describe `value`.
    Status::check(unsafe { abi::proxy_enqueue_shared_queue(id, value.as_ptr(), value.len()) })
}

/// Takes the oldest item of a queue; `None` when it is empty.
pub fn dequeue(id: u32) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-pointers outlive the call.
    match fetch(|data, size| unsafe { abi::proxy_dequeue_shared_queue(id, data, size) }) {
        Err(Status::Empty) => Ok(None),
        other => other,
    }
}

/// Calls a host extension by name (Sluice: `sluice.ban_source`, see docs/plugins.md).
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: pointers and lengths describe `name` and `args`; the out-pointers outlive the call.
    fetch(|data, size| unsafe {
        abi::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            data,
            size,
        )
    })
}
