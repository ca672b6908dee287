//! Merged entries: a stream's `proxy_on_context_create` and `proxy_on_request_headers`, its
//! `proxy_on_response_headers` and `proxy_on_response_body` for a response whose whole body came
//! with its head, and its `proxy_on_log`, `proxy_on_done` and `proxy_on_delete`, each group in
//! one entry into the VM.
//!
//! Every entry from the host into wasm costs about 200 instructions of wasmtime and host
//! bookkeeping (trap handler state, the deadline, the stream pointer) before the plugin's first
//! instruction; a plain request makes seven. A tiny helper module, instantiated in the plugin's
//! store next to the plugin and importing these callbacks from it, calls them in sequence from
//! wasm, where a call into another instance is an ordinary indirect call. The plugin is not
//! changed and sees the same callbacks, with the same arguments, in the same order.
//!
//! The helper is only used when the plugin exports every callback of a group with the shape of
//! ABI 0.2.x (instantiation checks the types); otherwise the callbacks are entered one by one.

use std::sync::OnceLock;

use wasmtime::{
    Engine, Extern, Global, GlobalType, Instance, Module, Mutability, Store, TypedFunc, Val,
    ValType,
};

use crate::state::HostState;

/// The helper for the start of a stream, as text (the test checks that `BEGIN_WASM` is this
/// module):
#[cfg(test)]
const BEGIN_WAT: &str = r#"(module
  (import "plugin" "proxy_on_context_create" (func $create (param i32 i32)))
  (import "plugin" "proxy_on_request_headers" (func $headers (param i32 i32 i32) (result i32)))
  (func (export "begin") (param $ctx i32) (param $root i32) (param $n i32) (param $eos i32)
    (result i32)
    (call $create (local.get $ctx) (local.get $root))
    (call $headers (local.get $ctx) (local.get $n) (local.get $eos))))"#;

/// The helper for the start of a stream (`BEGIN_WAT`, with the tests) in the binary format.
const BEGIN_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x15, 0x03, // type section: 3 types
    0x60, 0x02, 0x7f, 0x7f, 0x00, // (i32 i32) -> ()
    0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x01, 0x7f, // (i32 i32 i32) -> i32
    0x60, 0x04, 0x7f, 0x7f, 0x7f, 0x7f, 0x01, 0x7f, // (i32 i32 i32 i32) -> i32
    0x02, 0x44, 0x02, // import section: 2 imports
    0x06, b'p', b'l', b'u', b'g', b'i', b'n', 0x17, b'p', b'r', b'o', b'x', b'y', b'_', b'o', b'n',
    b'_', b'c', b'o', b'n', b't', b'e', b'x', b't', b'_', b'c', b'r', b'e', b'a', b't', b'e', 0x00,
    0x00, // func, type 0
    0x06, b'p', b'l', b'u', b'g', b'i', b'n', 0x18, b'p', b'r', b'o', b'x', b'y', b'_', b'o', b'n',
    b'_', b'r', b'e', b'q', b'u', b'e', b's', b't', b'_', b'h', b'e', b'a', b'd', b'e', b'r', b's',
    0x00, 0x01, // func, type 1
    0x03, 0x02, 0x01, 0x02, // function section: 1 function of type 2
    0x07, 0x09, 0x01, 0x05, b'b', b'e', b'g', b'i', b'n', 0x00,
    0x02, // export "begin" = func 2
    0x0a, 0x12, 0x01, 0x10, 0x00, // code section: 1 body of 16 bytes, no locals
    0x20, 0x00, 0x20, 0x01, 0x10, 0x00, // local.get 0, local.get 1, call 0
    0x20, 0x00, 0x20, 0x02, 0x20, 0x03, 0x10, 0x01, // local.get 0, 2, 3, call 1
    0x0b, // end
];

/// The helper for the end of a stream, as text: `proxy_on_log`, then `proxy_on_done`, then
/// `proxy_on_delete` when `proxy_on_done` returned true; returns what `proxy_on_done` returned.
#[cfg(test)]
const END_WAT: &str = r#"(module
  (import "plugin" "proxy_on_log" (func $log (param i32)))
  (import "plugin" "proxy_on_done" (func $done (param i32) (result i32)))
  (import "plugin" "proxy_on_delete" (func $delete (param i32)))
  (func (export "end") (param $ctx i32) (result i32)
    (call $log (local.get $ctx))
    (if (result i32) (call $done (local.get $ctx))
      (then (call $delete (local.get $ctx)) (i32.const 1))
      (else (i32.const 0)))))"#;

/// The helper for the end of a stream (`END_WAT`, with the tests) in the binary format.
const END_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x0a, 0x02, // type section: 2 types
    0x60, 0x01, 0x7f, 0x00, // (i32) -> ()
    0x60, 0x01, 0x7f, 0x01, 0x7f, // (i32) -> i32
    0x02, 0x47, 0x03, // import section: 3 imports
    0x06, b'p', b'l', b'u', b'g', b'i', b'n', 0x0c, b'p', b'r', b'o', b'x', b'y', b'_', b'o', b'n',
    b'_', b'l', b'o', b'g', 0x00, 0x00, // func, type 0
    0x06, b'p', b'l', b'u', b'g', b'i', b'n', 0x0d, b'p', b'r', b'o', b'x', b'y', b'_', b'o', b'n',
    b'_', b'd', b'o', b'n', b'e', 0x00, 0x01, // func, type 1
    0x06, b'p', b'l', b'u', b'g', b'i', b'n', 0x0f, b'p', b'r', b'o', b'x', b'y', b'_', b'o', b'n',
    b'_', b'd', b'e', b'l', b'e', b't', b'e', 0x00, 0x00, // func, type 0
    0x03, 0x02, 0x01, 0x01, // function section: 1 function of type 1
    0x07, 0x07, 0x01, 0x03, b'e', b'n', b'd', 0x00, 0x03, // export "end" = func 3
    0x0a, 0x18, 0x01, 0x16, 0x00, // code section: 1 body of 22 bytes, no locals
    0x20, 0x00, 0x10, 0x00, // local.get 0, call 0 (log)
    0x20, 0x00, 0x10, 0x01, // local.get 0, call 1 (done)
    0x04, 0x7f, // if (result i32)
    0x20, 0x00, 0x10, 0x02, 0x41, 0x01, // local.get 0, call 2 (delete), i32.const 1
    0x05, 0x41, 0x00, // else i32.const 0
    0x0b, 0x0b, // end if, end function
];

/// The helper for a whole response, as text: `proxy_on_response_headers` (not the end of the
/// stream), then, only when it returned Continue and asked nothing of the stream (the host sets
/// `stop` when a callback records a signal: a local response, a close, a continue), the body's
/// `proxy_on_response_body` with the end of the stream. `in_body` tells the host which callback
/// runs, so that the body is visible to the second only. Returns the headers' action, whether the
/// body callback ran, and its action.
#[cfg(test)]
const WHOLE_WAT: &str = r#"(module
  (import "plugin" "proxy_on_response_headers" (func $headers (param i32 i32 i32) (result i32)))
  (import "plugin" "proxy_on_response_body" (func $body (param i32 i32 i32) (result i32)))
  (import "sluice" "stop" (global $stop (mut i32)))
  (import "sluice" "in_body" (global $in_body (mut i32)))
  (func (export "whole") (param $ctx i32) (param $n i32) (param $size i32) (result i32 i32 i32)
    (local $a i32)
    (global.set $stop (i32.const 0))
    (global.set $in_body (i32.const 0))
    (local.set $a (call $headers (local.get $ctx) (local.get $n) (i32.const 0)))
    (if (i32.or (local.get $a) (global.get $stop))
      (then (return (local.get $a) (i32.const 0) (i32.const 0))))
    (global.set $in_body (i32.const 1))
    (local.get $a)
    (i32.const 1)
    (call $body (local.get $ctx) (local.get $size) (i32.const 1))))"#;

/// The helper for a whole response (`WHOLE_WAT`, with the tests) in the binary format.
const WHOLE_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x11, 0x02, // type section: 2 types
    0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x01, 0x7f, // (i32 i32 i32) -> i32
    0x60, 0x03, 0x7f, 0x7f, 0x7f, 0x03, 0x7f, 0x7f, 0x7f, // (i32 i32 i32) -> (i32 i32 i32)
    0x02, 0x65, 0x04, // import section: 4 imports
    0x06, b'p', b'l', b'u', b'g', b'i', b'n', 0x19, b'p', b'r', b'o', b'x', b'y', b'_', b'o', b'n',
    b'_', b'r', b'e', b's', b'p', b'o', b'n', b's', b'e', b'_', b'h', b'e', b'a', b'd', b'e', b'r',
    b's', 0x00, 0x00, // func, type 0
    0x06, b'p', b'l', b'u', b'g', b'i', b'n', 0x16, b'p', b'r', b'o', b'x', b'y', b'_', b'o', b'n',
    b'_', b'r', b'e', b's', b'p', b'o', b'n', b's', b'e', b'_', b'b', b'o', b'd', b'y', 0x00,
    0x00, // func, type 0
    0x06, b's', b'l', b'u', b'i', b'c', b'e', 0x04, b's', b't', b'o', b'p', 0x03, 0x7f,
    0x01, // global, mutable i32
    0x06, b's', b'l', b'u', b'i', b'c', b'e', 0x07, b'i', b'n', b'_', b'b', b'o', b'd', b'y', 0x03,
    0x7f, 0x01, // global, mutable i32
    0x03, 0x02, 0x01, 0x01, // function section: 1 function of type 1
    0x07, 0x09, 0x01, 0x05, b'w', b'h', b'o', b'l', b'e', 0x00,
    0x02, // export "whole" = func 2
    0x0a, 0x37, 0x01, 0x35, 0x01, 0x01, 0x7f, // code section: 1 body of 53 bytes, 1 local i32
    0x41, 0x00, 0x24, 0x00, // stop = 0
    0x41, 0x00, 0x24, 0x01, // in_body = 0
    0x20, 0x00, 0x20, 0x01, 0x41, 0x00, 0x10, 0x00, 0x21, 0x03, // a = headers(ctx, n, 0)
    0x20, 0x03, 0x23, 0x00, 0x72, 0x04, 0x40, // if a | stop
    0x20, 0x03, 0x41, 0x00, 0x41, 0x00, 0x0f, 0x0b, // return (a, 0, 0), end if
    0x41, 0x01, 0x24, 0x01, // in_body = 1
    0x20, 0x03, 0x41, 0x01, // a, 1
    0x20, 0x00, 0x20, 0x02, 0x41, 0x01, 0x10, 0x01, // body(ctx, size, 1)
    0x0b, // end function
];

/// The helpers compiled for one engine.
struct Helpers {
    begin: Module,
    whole: Module,
    end: Module,
}

/// The helpers for `engine` (the plain or the fuel engine), compiled on first use. `None` when
/// they cannot be compiled (never expected: the callbacks are then entered one by one).
fn helpers(engine: &Engine, fuel: bool) -> Option<&'static Helpers> {
    static PLAIN: OnceLock<Option<Helpers>> = OnceLock::new();
    static FUELED: OnceLock<Option<Helpers>> = OnceLock::new();
    let cell = if fuel { &FUELED } else { &PLAIN };
    cell.get_or_init(|| {
        let compile = |bytes: &[u8]| match Module::new(engine, bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "wasm: cannot compile the merged-entry helper; callbacks are entered one by one");
                None
            }
        };
        Some(Helpers {
            begin: compile(BEGIN_WASM)?,
            whole: compile(WHOLE_WASM)?,
            end: compile(END_WASM)?,
        })
    })
    .as_ref()
}

/// The whole-response helper's export: `(ctx, headers, body_size) -> (headers action, ran, body
/// action)`.
pub(crate) type WholeFn = TypedFunc<(i32, i32, i32), (i32, i32, i32)>;

/// The merged entries of one VM, each present when the plugin exports its callbacks with the
/// expected types.
#[derive(Default)]
pub(crate) struct Merged {
    /// `begin(ctx, root, headers, end_of_stream)`: create the stream context, then
    /// `proxy_on_request_headers`; returns its action.
    pub(crate) begin: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
    /// `whole(ctx, headers, body_size)`: `proxy_on_response_headers`, then
    /// `proxy_on_response_body` with the end of the stream if the first continued quietly;
    /// returns the first's action, whether the second ran (1) and its action.
    pub(crate) whole: Option<WholeFn>,
    /// `end(ctx)`: `proxy_on_log`, `proxy_on_done`, and `proxy_on_delete` if done returned
    /// true; returns what done returned.
    pub(crate) end: Option<TypedFunc<i32, i32>>,
}

impl Merged {
    /// Instantiate the helpers in `store`, linked to the plugin `instance`'s callbacks.
    pub(crate) fn link(store: &mut Store<HostState>, instance: &Instance, fuel: bool) -> Merged {
        let engine = store.engine().clone();
        let Some(h) = helpers(&engine, fuel) else {
            return Merged::default();
        };
        let mut get = |name: &str| instance.get_func(&mut *store, name).map(Extern::Func);
        let begin_imports = [
            get("proxy_on_context_create"),
            get("proxy_on_request_headers"),
        ];
        let mut whole_imports = vec![
            get("proxy_on_response_headers"),
            get("proxy_on_response_body"),
        ];
        let end_imports = [
            get("proxy_on_log"),
            get("proxy_on_done"),
            get("proxy_on_delete"),
        ];
        let flags = WholeFlags::new(store);
        if let Some(f) = flags {
            whole_imports.extend([
                Some(Extern::Global(f.stop)),
                Some(Extern::Global(f.in_body)),
            ]);
        }
        let whole = flags.and_then(|f| {
            let func = helper(store, &h.whole, &whole_imports, "whole")?;
            store.data_mut().whole_flags = Some(f);
            Some(func)
        });
        Merged {
            begin: helper(store, &h.begin, &begin_imports, "begin"),
            whole,
            end: helper(store, &h.end, &end_imports, "end"),
        }
    }
}

/// The two globals the whole-response helper shares with the host (see `WHOLE_WAT`).
#[derive(Clone, Copy)]
pub(crate) struct WholeFlags {
    /// Set by the host when a callback records a signal: the helper then stops before the body
    /// callback.
    pub(crate) stop: Global,
    /// Set by the helper before the body callback: the body is visible from then on.
    pub(crate) in_body: Global,
}

impl WholeFlags {
    fn new(store: &mut Store<HostState>) -> Option<WholeFlags> {
        let ty = GlobalType::new(ValType::I32, Mutability::Var);
        let mut global = || Global::new(&mut *store, ty.clone(), Val::I32(0)).ok();
        Some(WholeFlags {
            stop: global()?,
            in_body: global()?,
        })
    }
}

/// Instantiate one helper with `imports` and return its export `name`, typed; `None` when an
/// import is missing or has another type (instantiation checks them).
fn helper<P, R>(
    store: &mut Store<HostState>,
    module: &Module,
    imports: &[Option<Extern>],
    name: &str,
) -> Option<TypedFunc<P, R>>
where
    P: wasmtime::WasmParams,
    R: wasmtime::WasmResults,
{
    let imports: Vec<Extern> = imports.iter().cloned().collect::<Option<_>>()?;
    let instance = Instance::new(&mut *store, module, &imports).ok()?;
    instance.get_typed_func::<P, R>(&mut *store, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_helpers_are_their_text() {
        for (text, binary) in [
            (BEGIN_WAT, BEGIN_WASM),
            (WHOLE_WAT, WHOLE_WASM),
            (END_WAT, END_WASM),
        ] {
            let parsed = wat::parse_str(text).unwrap();
            // The same sections, then only the custom "name" section the text's identifiers make.
            assert_eq!(&parsed[..binary.len().min(parsed.len())], binary);
            let rest = &parsed[binary.len()..];
            assert_eq!(rest.first(), Some(&0), "a custom section follows");
            assert_eq!(&rest[3..7], b"name");
        }
    }
}
