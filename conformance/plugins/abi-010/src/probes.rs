//! The rest of the ABI 0.1.0 surface, driven by request directives (see conformance/README.md):
//! properties, header map edits, shared data and queues, metrics, local responses, bodies, and
//! http / gRPC callouts whose answers resume the request with `proxy_continue_request`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::{add_header, request_header, take, MAP_REQUEST_HEADERS};

const MAP_RESPONSE_HEADERS: u32 = 2;
const MAP_HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
const BUFFER_REQUEST_BODY: u32 = 0;
const BUFFER_RESPONSE_BODY: u32 = 1;
const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
const BUFFER_GRPC_RECEIVE: u32 = 5;
const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;
const NO_GRPC_STATUS: u32 = u32::MAX;
const QUEUE: &str = "abi010.queue";
const GRPC_CLUSTER: &str = "grpc";
const GRPC_SERVICE: &str = "grpc.health.v1.Health";

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_property(p: *const u8, pl: usize, ret: *mut *mut u8, rl: *mut usize) -> u32;
    fn proxy_set_property(p: *const u8, pl: usize, v: *const u8, vl: usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret: *mut *mut u8, ret_size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map: u32, data: *const u8, size: usize) -> u32;
    fn proxy_replace_header_map_value(m: u32, k: *const u8, kl: usize, v: *const u8, vl: usize)
        -> u32;
    fn proxy_remove_header_map_value(m: u32, k: *const u8, kl: usize) -> u32;
    fn proxy_get_header_map_value(
        m: u32,
        k: *const u8,
        kl: usize,
        ret: *mut *mut u8,
        rl: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(b: u32, start: usize, max: usize, ret: *mut *mut u8, rl: *mut usize)
        -> u32;
    fn proxy_set_buffer_bytes(b: u32, start: usize, size: usize, v: *const u8, vl: usize) -> u32;
    fn proxy_set_shared_data(k: *const u8, kl: usize, v: *const u8, vl: usize, cas: u32) -> u32;
    fn proxy_get_shared_data(
        k: *const u8,
        kl: usize,
        ret: *mut *mut u8,
        rl: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_register_shared_queue(n: *const u8, nl: usize, ret: *mut u32) -> u32;
    fn proxy_resolve_shared_queue(
        vm: *const u8,
        vl: usize,
        n: *const u8,
        nl: usize,
        ret: *mut u32,
    ) -> u32;
    fn proxy_enqueue_shared_queue(q: u32, v: *const u8, vl: usize) -> u32;
    fn proxy_dequeue_shared_queue(q: u32, ret: *mut *mut u8, rl: *mut usize) -> u32;
    fn proxy_define_metric(t: u32, n: *const u8, nl: usize, ret: *mut u32) -> u32;
    fn proxy_increment_metric(m: u32, delta: i64) -> u32;
    fn proxy_record_metric(m: u32, value: u64) -> u32;
    fn proxy_get_metric(m: u32, ret: *mut u64) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        code: u32,
        d: *const u8,
        dl: usize,
        b: *const u8,
        bl: usize,
        h: *const u8,
        hl: usize,
        grpc: u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        u: *const u8,
        ul: usize,
        h: *const u8,
        hl: usize,
        b: *const u8,
        bl: usize,
        t: *const u8,
        tl: usize,
        timeout: u32,
        ret: *mut u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_grpc_call(
        u: *const u8,
        ul: usize,
        s: *const u8,
        sl: usize,
        m: *const u8,
        ml: usize,
        h: *const u8,
        hl: usize,
        msg: *const u8,
        msgl: usize,
        timeout: u32,
        ret: *mut u32,
    ) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_grpc_stream(
        u: *const u8,
        ul: usize,
        s: *const u8,
        sl: usize,
        m: *const u8,
        ml: usize,
        h: *const u8,
        hl: usize,
        ret: *mut u32,
    ) -> u32;
    fn proxy_grpc_send(t: u32, msg: *const u8, ml: usize, end: u32) -> u32;
    fn proxy_grpc_close(t: u32) -> u32;
    fn proxy_grpc_cancel(t: u32) -> u32;
    fn proxy_get_status(code: *mut u32, ret: *mut *mut u8, rl: *mut usize) -> u32;
    fn proxy_set_effective_context(context: u32) -> u32;
    fn proxy_continue_request() -> u32;
}

#[derive(Default)]
struct Stream {
    report: Vec<(String, String)>,
    request_body: bool,
    response_body: bool,
    /// A unary gRPC call: its answer ends at on_grpc_receive (a stream's at on_grpc_close).
    unary: bool,
}

thread_local! {
    static STREAMS: RefCell<HashMap<u32, Stream>> = RefCell::new(HashMap::new());
    /// Callout token → the stream context that made it.
    static TOKENS: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
    static VM_CONFIG_SIZE: Cell<Option<u32>> = const { Cell::new(None) };
    static QUEUE_ID: Cell<u32> = const { Cell::new(0) };
    static COUNTER: Cell<u32> = const { Cell::new(0) };
    static GAUGE: Cell<u32> = const { Cell::new(0) };
    static DEQUEUED: Cell<u32> = const { Cell::new(0) };
}

fn report(context: u32, name: &str, value: impl ToString) {
    STREAMS.with(|s| {
        s.borrow_mut()
            .entry(context)
            .or_default()
            .report
            .push((name.to_owned(), value.to_string()))
    });
}

fn bytes_out(f: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Vec<u8>, u32> {
    let (mut ptr, mut len) = (std::ptr::null_mut(), 0usize);
    match f(&mut ptr, &mut len) {
        // SAFETY: on success the buffer came from our allocator.
        0 => Ok(unsafe { take(ptr, len) }),
        status => Err(status),
    }
}

fn text(r: Result<Vec<u8>, u32>) -> String {
    match r {
        Ok(v) => String::from_utf8_lossy(&v).into_owned(),
        Err(status) => format!("status-{status}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serialize pairs as the ABI does: count, sizes, then each key and value NUL-terminated.
pub fn serialize(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn deserialize(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let Some(n) = word(0) else { return Vec::new() };
    let mut at = 4 + n * 8;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (Some(kl), Some(vl)) = (word(4 + i * 8), word(8 + i * 8)) else {
            break;
        };
        let (Some(k), Some(v)) = (
            data.get(at..at + kl),
            data.get(at + kl + 1..at + kl + 1 + vl),
        ) else {
            break;
        };
        out.push((k.to_vec(), v.to_vec()));
        at += kl + vl + 2;
    }
    out
}

pub fn on_vm_start(size: u32) {
    VM_CONFIG_SIZE.with(|c| c.set(Some(size)));
}

/// Root setup: the shared queue and the metrics.
pub fn on_configure() {
    let mut id = 0u32;
    // SAFETY: valid pointers for the calls.
    unsafe {
        if proxy_register_shared_queue(QUEUE.as_ptr(), QUEUE.len(), &mut id) == 0 {
            QUEUE_ID.with(|q| q.set(id));
        }
        let name = "abi010_requests";
        if proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) == 0 {
            COUNTER.with(|c| c.set(id));
        }
        let name = "abi010_gauge";
        if proxy_define_metric(METRIC_GAUGE, name.as_ptr(), name.len(), &mut id) == 0 {
            GAUGE.with(|c| c.set(id));
        }
    }
}

pub fn on_queue_ready(queue: u32) {
    // SAFETY: valid out-pointers; the loop stops at the first non-Ok status (Empty).
    while bytes_out(|p, l| unsafe { proxy_dequeue_shared_queue(queue, p, l) }).is_ok() {
        DEQUEUED.with(|d| d.set(d.get() + 1));
    }
}

/// Directives of the request headers phase; true when the stream must pause.
pub fn on_request_headers(context: u32) -> bool {
    if request_header("x-abi010-probe").as_deref() == Some(b"1") {
        probe(context);
    }
    if request_header("x-abi010-body").as_deref() == Some(b"1") {
        STREAMS.with(|s| s.borrow_mut().entry(context).or_default().request_body = true);
        remove(MAP_REQUEST_HEADERS, "content-length");
    }
    if request_header("x-abi010-response-body").as_deref() == Some(b"1") {
        STREAMS.with(|s| s.borrow_mut().entry(context).or_default().response_body = true);
    }
    if request_header("x-abi010-local").as_deref() == Some(b"1") {
        let body = "abi010 local\n";
        let headers = serialize(&[(b"x-abi010-local".to_vec(), b"1".to_vec())]);
        // SAFETY: all slices live for the call.
        unsafe {
            proxy_send_local_response(
                418,
                "abi010".as_ptr(),
                6,
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                NO_GRPC_STATUS,
            )
        };
        return true;
    }
    match request_header("x-abi010-callout").as_deref() {
        Some(b"http") => http_call(context),
        Some(b"grpc") => grpc_call(context),
        Some(b"stream") => grpc_stream(context),
        _ => false,
    }
}

fn remove(map: u32, key: &str) {
    // SAFETY: the slice is live for the call.
    unsafe { proxy_remove_header_map_value(map, key.as_ptr(), key.len()) };
}

fn probe(context: u32) {
    let path = "request\0path";
    // SAFETY (all blocks below): slices and out-pointers are live for each call.
    let got = bytes_out(|p, l| unsafe { proxy_get_property(path.as_ptr(), path.len(), p, l) });
    report(context, "x-abi010-prop-path", text(got));
    let (own, value) = ("abi010_prop", "v1");
    let set = unsafe { proxy_set_property(own.as_ptr(), own.len(), value.as_ptr(), value.len()) };
    let got = bytes_out(|p, l| unsafe { proxy_get_property(own.as_ptr(), own.len(), p, l) });
    report(context, "x-abi010-prop-set", format!("{set}:{}", text(got)));
    let (k, v) = ("x-abi010-replace", "replaced");
    unsafe { proxy_replace_header_map_value(MAP_REQUEST_HEADERS, k.as_ptr(), k.len(), v.as_ptr(), v.len()) };
    remove(MAP_REQUEST_HEADERS, "x-abi010-remove");
    if let Ok(raw) = bytes_out(|p, l| unsafe { proxy_get_header_map_pairs(MAP_REQUEST_HEADERS, p, l) }) {
        let mut pairs = deserialize(&raw);
        pairs.push((b"x-abi010-pairs".to_vec(), b"set".to_vec()));
        let data = serialize(&pairs);
        let status = unsafe { proxy_set_header_map_pairs(MAP_REQUEST_HEADERS, data.as_ptr(), data.len()) };
        report(context, "x-abi010-set-pairs", status);
    }
    let key = "abi010.shared";
    let value = format!("ctx-{context}");
    let set = unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), 0) };
    let mut cas = 0u32;
    let got = bytes_out(|p, l| unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), p, l, &mut cas) });
    let same = got.as_deref() == Ok(value.as_bytes());
    report(context, "x-abi010-shared", format!("{set}:{same}:{}", cas != 0));
    let mut queue = 0u32;
    let resolved = unsafe { proxy_resolve_shared_queue("".as_ptr(), 0, QUEUE.as_ptr(), QUEUE.len(), &mut queue) };
    let enqueued = if resolved == 0 {
        unsafe { proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len()) }
    } else {
        resolved
    };
    report(context, "x-abi010-enqueue", enqueued);
    report(context, "x-abi010-dequeued", DEQUEUED.with(Cell::get));
    let (counter, gauge) = (COUNTER.with(Cell::get), GAUGE.with(Cell::get));
    let (mut c, mut g) = (0u64, 0u64);
    let statuses = unsafe {
        [
            proxy_increment_metric(counter, 1),
            proxy_get_metric(counter, &mut c),
            proxy_record_metric(gauge, 7),
            proxy_get_metric(gauge, &mut g),
        ]
    };
    report(context, "x-abi010-metrics", format!("{statuses:?}:counter={c}:gauge={g}"));
    report(context, "x-abi010-vm-start", VM_CONFIG_SIZE.with(|c| c.get().map_or(-1, i64::from)));
}

fn http_call(context: u32) -> bool {
    let cluster = "callout";
    let headers = serialize(&[
        (b":method".to_vec(), b"GET".to_vec()),
        (b":path".to_vec(), b"/abi010".to_vec()),
        (b":authority".to_vec(), b"callout".to_vec()),
    ]);
    let mut token = 0u32;
    // SAFETY: slices and the out-pointer are live for the call.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            5000,
            &mut token,
        )
    };
    dispatched(context, status, token)
}

fn dispatched(context: u32, status: u32, token: u32) -> bool {
    if status != 0 {
        report(context, "x-abi010-dispatch", status);
        return false;
    }
    TOKENS.with(|t| t.borrow_mut().insert(token, context));
    true
}

fn grpc_call(context: u32) -> bool {
    STREAMS.with(|s| s.borrow_mut().entry(context).or_default().unary = true);
    let mut token = 0u32;
    // SAFETY: slices and the out-pointer are live for the call.
    let status = unsafe {
        proxy_grpc_call(
            GRPC_CLUSTER.as_ptr(),
            GRPC_CLUSTER.len(),
            GRPC_SERVICE.as_ptr(),
            GRPC_SERVICE.len(),
            "Check".as_ptr(),
            5,
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            5000,
            &mut token,
        )
    };
    dispatched(context, status, token)
}

fn open_stream(token: &mut u32) -> u32 {
    // SAFETY: slices and the out-pointer are live for the call.
    unsafe {
        proxy_grpc_stream(
            GRPC_CLUSTER.as_ptr(),
            GRPC_CLUSTER.len(),
            GRPC_SERVICE.as_ptr(),
            GRPC_SERVICE.len(),
            "Check".as_ptr(),
            5,
            std::ptr::null(),
            0,
            token,
        )
    }
}

/// A stream to the unary Check: one empty message, half-closed with `proxy_grpc_close`; a
/// second stream is cancelled at once with `proxy_grpc_cancel`.
fn grpc_stream(context: u32) -> bool {
    let mut cancelled = 0u32;
    // SAFETY: plain integer argument.
    let cancel = match open_stream(&mut cancelled) {
        0 => unsafe { proxy_grpc_cancel(cancelled) },
        failed => failed,
    };
    report(context, "x-abi010-grpc-cancel", cancel);
    let mut token = 0u32;
    let status = open_stream(&mut token);
    if status == 0 {
        // SAFETY: plain integer arguments (an empty message).
        let sent = unsafe { proxy_grpc_send(token, std::ptr::null(), 0, 0) };
        let closed = unsafe { proxy_grpc_close(token) };
        report(context, "x-abi010-grpc-send-close", format!("{sent}:{closed}"));
    }
    dispatched(context, status, token)
}

/// The stream context of a callout, made the effective context.
fn stream_of(token: u32, done: bool) -> Option<u32> {
    let context = TOKENS.with(|t| {
        let mut t = t.borrow_mut();
        if done {
            t.remove(&token)
        } else {
            t.get(&token).copied()
        }
    })?;
    // SAFETY: plain integer argument.
    unsafe { proxy_set_effective_context(context) };
    Some(context)
}

fn resume() {
    // SAFETY: no arguments.
    unsafe { proxy_continue_request() };
}

pub fn on_http_call_response(token: u32, body_size: u32) {
    let Some(context) = stream_of(token, true) else {
        return;
    };
    let key = ":status";
    // SAFETY: slices and out-pointers are live for the calls.
    let status = bytes_out(|p, l| unsafe {
        proxy_get_header_map_value(MAP_HTTP_CALL_RESPONSE_HEADERS, key.as_ptr(), key.len(), p, l)
    });
    report(context, "x-abi010-callout-status", text(status));
    let body = bytes_out(|p, l| unsafe {
        proxy_get_buffer_bytes(BUFFER_HTTP_CALL_RESPONSE_BODY, 0, body_size as usize, p, l)
    });
    report(context, "x-abi010-callout-body", body.map_or(0, |b| b.len()));
    resume();
}

pub fn on_grpc_initial_metadata(token: u32, elements: u32) {
    if let Some(context) = stream_of(token, false) {
        report(context, "x-abi010-grpc-initial", elements);
    }
}

pub fn on_grpc_receive(token: u32, size: u32) {
    let Some(context) = stream_of(token, false) else {
        return;
    };
    // SAFETY: out-pointers are live for the call.
    let message = bytes_out(|p, l| unsafe {
        proxy_get_buffer_bytes(BUFFER_GRPC_RECEIVE, 0, size as usize, p, l)
    });
    report(context, "x-abi010-grpc-message", message.map_or_else(|s| format!("status-{s}"), |m| hex(&m)));
    if STREAMS.with(|s| s.borrow().get(&context).is_some_and(|st| st.unary)) {
        TOKENS.with(|t| t.borrow_mut().remove(&token));
        resume();
    }
}

pub fn on_grpc_trailing_metadata(token: u32, elements: u32) {
    if let Some(context) = stream_of(token, false) {
        report(context, "x-abi010-grpc-trailers", elements);
    }
}

pub fn on_grpc_close(token: u32, code: u32) {
    let Some(context) = stream_of(token, true) else {
        return;
    };
    let mut got = 0u32;
    // SAFETY: out-pointers are live for the call.
    let message = bytes_out(|p, l| unsafe { proxy_get_status(&mut got, p, l) });
    report(context, "x-abi010-grpc-close", format!("{code}:{got}:{}", text(message)));
    resume();
}

/// Request body: buffered until the end, then `+abi010` appended.
pub fn on_request_body(context: u32, size: u32, eos: bool) -> u32 {
    body(context, BUFFER_REQUEST_BODY, size, eos, |s| s.request_body)
}

pub fn on_response_body(context: u32, size: u32, eos: bool) -> u32 {
    body(context, BUFFER_RESPONSE_BODY, size, eos, |s| s.response_body)
}

fn body(context: u32, buffer: u32, size: u32, eos: bool, wants: fn(&Stream) -> bool) -> u32 {
    if !STREAMS.with(|s| s.borrow().get(&context).is_some_and(wants)) {
        return 0;
    }
    if !eos {
        return 1;
    }
    // SAFETY: out-pointers and the slice are live for the calls.
    let seen = bytes_out(|p, l| unsafe { proxy_get_buffer_bytes(buffer, 0, size as usize, p, l) });
    let suffix = format!("+abi010:{}", seen.map_or(0, |b| b.len()));
    unsafe { proxy_set_buffer_bytes(buffer, size as usize, 0, suffix.as_ptr(), suffix.len()) };
    0
}

/// Response headers: emit the stream's reports; drop content-length when the body changes.
pub fn on_response_headers(context: u32) {
    let (report, response_body) = STREAMS.with(|s| {
        let s = s.borrow();
        s.get(&context)
            .map(|st| (st.report.clone(), st.response_body))
            .unwrap_or_default()
    });
    for (name, value) in &report {
        add_header(MAP_RESPONSE_HEADERS, name, value);
    }
    if response_body {
        remove(MAP_RESPONSE_HEADERS, "content-length");
    }
}

pub fn on_delete(context: u32) {
    STREAMS.with(|s| s.borrow_mut().remove(&context));
    TOKENS.with(|t| t.borrow_mut().retain(|_, c| *c != context));
}
