//! Micro-benchmarks of the proxy-wasm host (no criterion: plain timing loops, median of rounds):
//!
//! - the cost of one host call: a callback that makes 100 000 `proxy_get_current_time_nanoseconds`
//!   calls, minus the same loop without the call, divided by the count;
//! - the cost of one callback (host → guest → host), with an empty `proxy_on_tick`;
//! - VM instantiation from an already compiled (cached) module: `Vm::new` (instance, memory,
//!   `_initialize`), and `Vm::new` + the root context (`on_context_create`, `on_vm_start`,
//!   `on_configure`), for a minimal module and for a real Rust-SDK plugin when
//!   `target/plugins/add_header.wasm` exists (`scripts/build-plugins.sh`).
//!
//! - the callbacks of one proxied request, as the gateway makes them for a plugin that edits a
//!   response header (`add_header.wasm`): stream context create, request headers, response
//!   headers, one response body frame, and the end of the stream (log, done, delete), with a
//!   small stream host holding the heads, per request.
//!
//! Run: `cargo bench -p sluice-wasm --bench host_call` (release profile). Prints a markdown table.
//! `SLUICE_BENCH_SEQUENCE=N` runs only N request sequences (for `valgrind --tool=callgrind
//! --toggle-collect=host_call::request_sequence`); with `SLUICE_BENCH_SYMS=1` it first prints
//! `SYM <address> <length> <name>` for every compiled guest function, so the profile's anonymous
//! JIT addresses can be named.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_wasm::{
    BufferType, Limits, MapType, PluginInfo, PluginModule, Prop, Status, StreamHost, Vm, VmEnv,
};

const CALLS: u32 = 100_000;
const ROUNDS: usize = 15;

/// A module whose `proxy_on_tick` loops `CALLS` times, calling the host when `with_call`.
fn looping_module(with_call: bool) -> String {
    let body = if with_call {
        "(drop (call $now (i32.const 16)))"
    } else {
        "(global.set $sink (i32.add (global.get $sink) (local.get $i)))"
    };
    format!(
        r#"(module
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $sink (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_tick") (param $ctx i32)
    (local $i i32)
    (if (i32.eq (local.get $ctx) (i32.const 0)) (then (return)))
    (loop $l
      {body}
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const {CALLS}))))))"#
    )
}

const EMPTY_TICK: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_tick") (param i32)))"#;

fn module(name: &str, bytes: &[u8]) -> Result<Arc<PluginModule>, String> {
    let info = PluginInfo {
        name: name.into(),
        limits: Limits {
            callback_timeout: Duration::from_secs(10),
            ..Limits::default()
        },
        ..Default::default()
    };
    PluginModule::new(info, bytes).map_err(|e| format!("{name}: {e}"))
}

fn wat(name: &str, text: &str) -> Result<Arc<PluginModule>, String> {
    let bytes = wat::parse_str(text).map_err(|e| format!("{name}: {e}"))?;
    module(name, &bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn vm(m: &Arc<PluginModule>) -> Result<(Vm, u32), String> {
    let mut vm = Vm::new(m, VmEnv::default()).map_err(|f| f.to_string())?;
    let root = vm.create_root(Bytes::new()).map_err(|f| f.to_string())?;
    Ok((vm, root))
}

/// ns per `on_tick` of `m`'s root, median of rounds.
fn tick_ns(m: &Arc<PluginModule>, per_round: u32) -> Result<f64, String> {
    let (mut vm, root) = vm(m)?;
    vm.on_tick(root).map_err(|f| f.to_string())?; // warm-up
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..per_round {
            vm.on_tick(root).map_err(|f| f.to_string())?;
        }
        samples.push(t.elapsed().as_nanos() as f64 / f64::from(per_round));
    }
    Ok(median(samples))
}

/// µs per `f()`, median of rounds of `per_round` runs.
fn time_us(per_round: u32, mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    f()?;
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..per_round {
            f()?;
        }
        samples.push(t.elapsed().as_nanos() as f64 / 1000.0 / f64::from(per_round));
    }
    Ok(median(samples))
}

/// The heads and body frame of one request, as the gateway's stream host shows them.
struct BenchStream {
    request: HeaderMap,
    response: HeaderMap,
    body: Bytes,
}

impl BenchStream {
    fn new() -> Self {
        let mut request = HeaderMap::new();
        request.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        request.insert("user-agent", HeaderValue::from_static("wrk"));
        request.insert("x-request-id", HeaderValue::from_static("0123456789abcdef"));
        let mut response = HeaderMap::new();
        response.insert("content-type", HeaderValue::from_static("text/plain"));
        response.insert("content-length", HeaderValue::from_static("6"));
        BenchStream {
            request,
            response,
            body: Bytes::from_static(b"hello\n"),
        }
    }
}

impl StreamHost for BenchStream {
    fn headers(&mut self, map: MapType) -> Option<&mut HeaderMap> {
        match map {
            MapType::RequestHeaders => Some(&mut self.request),
            MapType::ResponseHeaders => Some(&mut self.response),
            _ => None,
        }
    }
    fn pseudo_headers(&self, map: MapType) -> Vec<(&'static str, String)> {
        match map {
            MapType::RequestHeaders => vec![
                (":authority", "127.0.0.1:8080".into()),
                (":path", "/".into()),
                (":method", "GET".into()),
                (":scheme", "http".into()),
            ],
            MapType::ResponseHeaders => vec![(":status", StatusCode::OK.as_str().into())],
            _ => Vec::new(),
        }
    }
    fn set_pseudo_header(&mut self, _map: MapType, _name: &str, _value: &[u8]) -> Status {
        Status::BadArgument
    }
    fn body(&mut self, buffer: BufferType) -> Option<&mut Bytes> {
        (buffer == BufferType::HttpResponseBody).then_some(&mut self.body)
    }
    fn property(&self, _path: &[&str]) -> Option<Prop> {
        None
    }
}

/// The callbacks of one proxied request (see the module docs).
fn request_sequence(vm: &mut Vm, root: u32, s: &mut BenchStream) -> Result<(), String> {
    let e = |f: sluice_wasm::Failure| f.to_string();
    s.response.remove("x-bench");
    let ctx = vm.create_stream(root).map_err(e)?;
    vm.on_request_headers(ctx, s.request.len() + 4, true, s)
        .map_err(e)?;
    vm.on_response_headers(ctx, s.response.len() + 1, false, s)
        .map_err(e)?;
    vm.on_response_body(ctx, s.body.len(), true, s).map_err(e)?;
    vm.on_log(ctx, s).map_err(e)?;
    vm.finish_context(ctx).map_err(e)?;
    if s.response.get("x-bench").is_none() {
        return Err("the plugin did not add x-bench".into());
    }
    Ok(())
}

/// `target/plugins/add_header.wasm`, or the module `SLUICE_BENCH_PLUGIN` names (the same plugin
/// built another way, say).
fn add_header_path() -> std::path::PathBuf {
    std::env::var_os("SLUICE_BENCH_PLUGIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/add_header.wasm"),
        std::path::PathBuf::from,
    )
}

/// A VM of `add_header.wasm` configured as the gateway's `filters` bench configures it.
fn add_header_vm(bytes: &[u8]) -> Result<(Vm, u32), String> {
    let info = PluginInfo {
        name: "add_header".into(),
        root_id: "add_header".into(),
        ..Default::default()
    };
    let m = PluginModule::new(info, bytes).map_err(|e| format!("add_header: {e}"))?;
    let mut vm = Vm::new(&m, VmEnv::default()).map_err(|f| f.to_string())?;
    let config = Bytes::from_static(br#"{"header":"x-bench","value":"1"}"#);
    let root = vm.create_root(config).map_err(|f| f.to_string())?;
    Ok((vm, root))
}

fn run() -> Result<(), String> {
    let with = wat("host-call", &looping_module(true))?;
    let without = wat("no-host-call", &looping_module(false))?;
    let empty = wat("empty-tick", EMPTY_TICK)?;
    let loop_with = tick_ns(&with, 3)?;
    let loop_without = tick_ns(&without, 3)?;
    let host_call = (loop_with - loop_without) / f64::from(CALLS);
    let callback = tick_ns(&empty, 20_000)?;
    println!("| figure | value |\n| --- | --- |");
    println!("| one host call (`proxy_get_current_time_nanoseconds`, guest → host → guest) | {host_call:.1} ns |");
    println!("| one callback (host → empty `proxy_on_tick` → host) | {callback:.0} ns |");
    let inst = time_us(200, || {
        Vm::new(&empty, VmEnv::default())
            .map(drop)
            .map_err(|f| f.to_string())
    })?;
    let inst_root = time_us(200, || vm(&empty).map(drop))?;
    println!("| VM from the cached module, minimal module: `Vm::new` | {inst:.1} µs |");
    println!("| … plus root context (`on_context_create`, `on_vm_start`, `on_configure`) | {inst_root:.1} µs |");
    let plugin = add_header_path();
    match std::fs::read(&plugin) {
        Ok(bytes) => {
            let m = module("add_header", &bytes)?;
            let inst = time_us(50, || {
                Vm::new(&m, VmEnv::default())
                    .map(drop)
                    .map_err(|f| f.to_string())
            })?;
            let inst_root = time_us(50, || vm(&m).map(drop))?;
            println!("| VM from the cached module, `add_header.wasm` (Rust SDK): `Vm::new` incl. `_initialize` | {inst:.1} µs |");
            println!("| … plus root context | {inst_root:.1} µs |");
            let (mut vm, root) = add_header_vm(&bytes)?;
            let mut stream = BenchStream::new();
            let seq = time_us(20_000, || request_sequence(&mut vm, root, &mut stream))?;
            println!("| the callbacks of one proxied request, `add_header.wasm` (7 callbacks) | {:.0} ns |", seq * 1000.0);
        }
        Err(_) => println!("| `add_header.wasm` | not built (scripts/build-plugins.sh) |"),
    }
    Ok(())
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; only measure for real
    // under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if let Some(n) = std::env::var("SLUICE_BENCH_SEQUENCE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        if let Err(e) = sequence_only(n) {
            eprintln!("host_call bench failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run() {
        eprintln!("host_call bench failed: {e}");
        std::process::exit(1);
    }
}

/// Only `n` request sequences of `add_header.wasm`, after a warm-up (for instruction counts).
fn sequence_only(n: u32) -> Result<(), String> {
    let plugin = add_header_path();
    let bytes = std::fs::read(&plugin).map_err(|e| format!("{}: {e}", plugin.display()))?;
    let (mut vm, root) = add_header_vm(&bytes)?;
    if std::env::var("SLUICE_BENCH_SYMS").is_ok() {
        let engine = sluice_wasm::engine::engine(false).map_err(|e| e.to_string())?;
        let (m, _) =
            sluice_wasm::cache::compile(engine, false, &bytes).map_err(|e| e.to_string())?;
        let base = m.text().as_ptr() as usize;
        for f in m.functions() {
            println!(
                "SYM {:x} {:x} {}",
                base + f.offset,
                f.len,
                f.name.as_deref().unwrap_or("?")
            );
        }
    }
    let mut stream = BenchStream::new();
    for _ in 0..100 {
        request_sequence(&mut vm, root, &mut stream)?;
    }
    let t = Instant::now();
    for _ in 0..n {
        request_sequence(&mut vm, root, &mut stream)?;
    }
    println!(
        "{n} request sequences: {:.0} ns each",
        t.elapsed().as_nanos() as f64 / f64::from(n)
    );
    Ok(())
}
