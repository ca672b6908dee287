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
//! Run: `cargo bench -p sluice-wasm --bench host_call` (release profile). Prints a markdown table.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_wasm::{Limits, PluginInfo, PluginModule, Vm, VmEnv};

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
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/add_header.wasm");
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
    if let Err(e) = run() {
        eprintln!("host_call bench failed: {e}");
        std::process::exit(1);
    }
}
