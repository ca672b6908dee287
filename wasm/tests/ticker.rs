//! The epoch ticker parks when no callback ran for longer than any deadline, and a callback that
//! starts while it is parked still gets its deadline. Its own test binary, so that no other
//! test's VMs keep the ticker awake or change its tick.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_wasm::{FailureKind, Limits, PluginInfo, PluginModule, Vm, VmEnv};

/// What every module here starts with: memory, the ABI, a root context that starts.
const PREAMBLE: &str = r#"
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))"#;

const LOOPING_TICK: &str =
    r#"(func (export "proxy_on_tick") (param i32) (loop $forever (br $forever)))"#;

/// A VM of the module `PREAMBLE` + `funcs` with a 20 ms callback deadline, and its root context.
fn vm_of(name: &str, funcs: &str) -> (Vm, u32) {
    let bytes = wat::parse_str(format!("(module {PREAMBLE} {funcs})")).expect("valid wat");
    let info = PluginInfo {
        name: name.into(),
        limits: Limits {
            callback_timeout: Duration::from_millis(20),
            ..Limits::default()
        },
        ..Default::default()
    };
    let module = PluginModule::new(info, &bytes).expect("module loads");
    let mut vm = Vm::new(&module, VmEnv::default()).expect("vm starts");
    let root = vm.create_root(Bytes::new()).expect("root context");
    (vm, root)
}

/// Fails the test process if `done` is not signalled within 30 s (a VM stays on its thread, so
/// a loop that is never interrupted cannot be waited on).
fn watchdog(what: &'static str) -> mpsc::Sender<()> {
    let (done, watched) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watched.recv_timeout(Duration::from_secs(30)).is_err() {
            eprintln!("{what} was never interrupted");
            std::process::exit(101);
        }
    });
    done
}

#[test]
fn a_callback_after_an_idle_spell_wakes_the_ticker_and_meets_its_deadline() {
    let (mut vm, root) = vm_of("looper", LOOPING_TICK);

    // No callback runs: the ticker parks once every deadline armed so far has passed.
    let waited = Instant::now();
    while !sluice_wasm::engine::ticker_parked(false) {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the ticker never parked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // An infinite loop started now must still be stopped by its deadline.
    let done = watchdog("the looping callback");
    let r = vm.on_tick(root).map_err(|f| f.kind);
    let _ = done.send(());
    assert_eq!(r, Err(FailureKind::Deadline));
}

const LOOPING_DELETE: &str = r#"
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32) (loop $forever (br $forever)))"#;

/// A stream's last three callbacks run in one entry with the sum of their deadlines: the ticker
/// must keep ticking until that longer deadline has passed, or a loop in the last callback would
/// never be stopped.
#[test]
fn a_loop_at_the_end_of_a_merged_entry_meets_the_groups_deadline() {
    let (mut vm, root) = vm_of("late-looper", LOOPING_DELETE);
    assert_eq!(vm.merged_entries(), (true, true));
    let mut stream = NoStream;
    let (ctx, action) = vm
        .begin_stream(root, 0, true, &mut stream)
        .expect("context created");
    assert!(action.is_ok());

    let done = watchdog("the looping on_delete");
    let started = Instant::now();
    let r = vm.end_stream(ctx, &mut stream).map_err(|f| f.kind);
    let _ = done.send(());
    assert_eq!(r, Err(FailureKind::Deadline));
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "stopped before a single callback's deadline: {:?}",
        started.elapsed()
    );
}

/// A stream with nothing in it (the callbacks above read nothing).
struct NoStream;

impl sluice_wasm::StreamHost for NoStream {
    fn headers(&mut self, _map: sluice_wasm::MapType) -> Option<&mut http::HeaderMap> {
        None
    }
    fn pseudo_headers(&self, _map: sluice_wasm::MapType) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    fn set_pseudo_header(
        &mut self,
        _map: sluice_wasm::MapType,
        _name: &str,
        _value: &[u8],
    ) -> sluice_wasm::Status {
        sluice_wasm::Status::NotFound
    }
    fn body(&mut self, _buffer: sluice_wasm::BufferType) -> Option<&mut Bytes> {
        None
    }
    fn property(&self, _path: &[&str]) -> Option<sluice_wasm::Prop> {
        None
    }
}
