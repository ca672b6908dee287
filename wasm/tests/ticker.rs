//! The epoch ticker parks when no callback ran for longer than any deadline, and a callback that
//! starts while it is parked still gets its deadline. Its own test binary, so that no other
//! test's VMs keep the ticker awake or change its tick.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_wasm::{FailureKind, Limits, PluginInfo, PluginModule, Vm, VmEnv};

const LOOPING_TICK: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_tick") (param i32) (loop $forever (br $forever))))"#;

#[test]
fn a_callback_after_an_idle_spell_wakes_the_ticker_and_meets_its_deadline() {
    let bytes = wat::parse_str(LOOPING_TICK).expect("valid wat");
    let info = PluginInfo {
        name: "looper".into(),
        limits: Limits {
            callback_timeout: Duration::from_millis(20),
            ..Limits::default()
        },
        ..Default::default()
    };
    let module = PluginModule::new(info, &bytes).expect("module loads");
    let mut vm = Vm::new(&module, VmEnv::default()).expect("vm starts");
    let root = vm.create_root(Bytes::new()).expect("root context");

    // No callback runs: the ticker parks once every deadline armed so far has passed.
    let waited = Instant::now();
    while !sluice_wasm::engine::ticker_parked(false) {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the ticker never parked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // An infinite loop started now must still be stopped by its deadline (a VM stays on its
    // thread: a watchdog fails the test process if the loop is never interrupted).
    let (done, watched) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watched.recv_timeout(Duration::from_secs(30)).is_err() {
            eprintln!("the looping callback was never interrupted");
            std::process::exit(101);
        }
    });
    let r = vm.on_tick(root).map_err(|f| f.kind);
    let _ = done.send(());
    assert_eq!(r, Err(FailureKind::Deadline));
}
