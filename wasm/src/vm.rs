//! One plugin VM: a wasmtime store and instance, and the proxy-wasm callbacks into it. Every
//! callback runs under the plugin's deadline (and fuel); a trap of any kind marks the VM failed,
//! and a failed VM refuses every later callback.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::{Func, Store, Trap, TypedFunc, Val};

use crate::abi::{AbiVersion, Action};
use crate::engine::Ticker;
use crate::failure::{count, Failure, FailureKind};
use crate::host::zero_of;
use crate::merged::Merged;
use crate::plugin::PluginModule;
use crate::shared::QueueNotifier;
use crate::state::{
    Callout, CalloutResponse, ForeignFunctions, GrpcEvent, GrpcSend, HostState, IdMap, Signals,
    StreamHost, StreamPtr,
};

/// What the embedder provides to a VM.
#[derive(Clone, Default)]
pub struct VmEnv {
    /// Where enqueues on queues this VM registers are announced.
    pub queue_notifier: Option<QueueNotifier>,
    /// `proxy_call_foreign_function` targets.
    pub foreign: Option<Arc<dyn ForeignFunctions>>,
    /// Whether a callout cluster exists; a callout to an unknown one is refused at dispatch with
    /// BadArgument, as Envoy does. `None`: every cluster is accepted (and fails later).
    pub known_cluster: Option<KnownCluster>,
}

/// Answers whether a cluster name exists (see [`VmEnv::known_cluster`]).
pub type KnownCluster = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone, Copy)]
enum Cb {
    ContextCreate,
    VmStart,
    Configure,
    Tick,
    QueueReady,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    HttpCallResponse,
    GrpcInitialMetadata,
    GrpcReceive,
    GrpcTrailingMetadata,
    GrpcClose,
    Log,
    Done,
    Delete,
}

const CALLBACKS: [(Cb, &str); 19] = [
    (Cb::ContextCreate, "proxy_on_context_create"),
    (Cb::VmStart, "proxy_on_vm_start"),
    (Cb::Configure, "proxy_on_configure"),
    (Cb::Tick, "proxy_on_tick"),
    (Cb::QueueReady, "proxy_on_queue_ready"),
    (Cb::RequestHeaders, "proxy_on_request_headers"),
    (Cb::RequestBody, "proxy_on_request_body"),
    (Cb::RequestTrailers, "proxy_on_request_trailers"),
    (Cb::ResponseHeaders, "proxy_on_response_headers"),
    (Cb::ResponseBody, "proxy_on_response_body"),
    (Cb::ResponseTrailers, "proxy_on_response_trailers"),
    (Cb::HttpCallResponse, "proxy_on_http_call_response"),
    (
        Cb::GrpcInitialMetadata,
        "proxy_on_grpc_receive_initial_metadata",
    ),
    (Cb::GrpcReceive, "proxy_on_grpc_receive"),
    (
        Cb::GrpcTrailingMetadata,
        "proxy_on_grpc_receive_trailing_metadata",
    ),
    (Cb::GrpcClose, "proxy_on_grpc_close"),
    (Cb::Log, "proxy_on_log"),
    (Cb::Done, "proxy_on_done"),
    (Cb::Delete, "proxy_on_delete"),
];

/// An exported callback with its arity (ABI 0.1.0 callbacks take fewer arguments).
#[derive(Clone)]
struct Export {
    func: Func,
    params: usize,
    results: Vec<Val>,
    /// The same function with its signature checked once, when it is one of the shapes proxy-wasm
    /// callbacks have (1 to 5 `i32` parameters, no result or one `i32`): a dynamic
    /// [`Func::call`] checks every argument's type against the engine's registry on each call.
    typed: Option<Typed>,
}

/// A callback export with its signature checked once (see [`Export::typed`]).
#[derive(Clone)]
enum Typed {
    P1(TypedFunc<i32, ()>),
    P1R(TypedFunc<i32, i32>),
    P2(TypedFunc<(i32, i32), ()>),
    P2R(TypedFunc<(i32, i32), i32>),
    P3(TypedFunc<(i32, i32, i32), ()>),
    P3R(TypedFunc<(i32, i32, i32), i32>),
    P4(TypedFunc<(i32, i32, i32, i32), ()>),
    P4R(TypedFunc<(i32, i32, i32, i32), i32>),
    P5(TypedFunc<(i32, i32, i32, i32, i32), ()>),
    P5R(TypedFunc<(i32, i32, i32, i32, i32), i32>),
}

impl Typed {
    /// `func` as a typed function, when its signature is one of the callback shapes.
    fn of(func: &Func, store: &Store<HostState>) -> Option<Typed> {
        let t = |r: wasmtime::Result<Typed>| r.ok();
        let ty = func.ty(store);
        let has_result = match ty.results().len() {
            0 => false,
            1 => true,
            _ => return None,
        };
        let params = ty.params().len();
        match (params, has_result) {
            (1, false) => t(func.typed(store).map(Typed::P1)),
            (1, true) => t(func.typed(store).map(Typed::P1R)),
            (2, false) => t(func.typed(store).map(Typed::P2)),
            (2, true) => t(func.typed(store).map(Typed::P2R)),
            (3, false) => t(func.typed(store).map(Typed::P3)),
            (3, true) => t(func.typed(store).map(Typed::P3R)),
            (4, false) => t(func.typed(store).map(Typed::P4)),
            (4, true) => t(func.typed(store).map(Typed::P4R)),
            (5, false) => t(func.typed(store).map(Typed::P5)),
            (5, true) => t(func.typed(store).map(Typed::P5R)),
            _ => None,
        }
    }

    /// Call with `args` (missing ones are 0); the result, or 0 for a callback without one.
    fn call(&self, store: &mut Store<HostState>, args: &[i32]) -> wasmtime::Result<i32> {
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        match self {
            Typed::P1(f) => f.call(store, a(0)).map(|()| 0),
            Typed::P1R(f) => f.call(store, a(0)),
            Typed::P2(f) => f.call(store, (a(0), a(1))).map(|()| 0),
            Typed::P2R(f) => f.call(store, (a(0), a(1))),
            Typed::P3(f) => f.call(store, (a(0), a(1), a(2))).map(|()| 0),
            Typed::P3R(f) => f.call(store, (a(0), a(1), a(2))),
            Typed::P4(f) => f.call(store, (a(0), a(1), a(2), a(3))).map(|()| 0),
            Typed::P4R(f) => f.call(store, (a(0), a(1), a(2), a(3))),
            Typed::P5(f) => f.call(store, (a(0), a(1), a(2), a(3), a(4))).map(|()| 0),
            Typed::P5R(f) => f.call(store, (a(0), a(1), a(2), a(3), a(4))),
        }
    }
}

/// A running plugin VM.
pub struct Vm {
    store: Store<HostState>,
    exports: Vec<Option<Export>>,
    module: Arc<PluginModule>,
    failure: Option<Failure>,
    next_ctx: u32,
    /// The root context of each live stream context created while the VM had more than one
    /// root context: callout answers are delivered to the root, as Envoy does (the SDKs route
    /// them to the stream by token). With one root, the usual case, every stream belongs to it
    /// and nothing is recorded per stream (see [`Vm::root_of`]).
    roots: IdMap<u32>,
    /// The root contexts, in the order they were created.
    root_ids: Vec<u32>,
    /// What every callback is armed with: its deadline in epoch ticks and its fuel.
    arm: Arm,
    /// The merged entries this plugin allows (see [`crate::merged`]).
    merged: Merged,
    args: Vec<Val>,
    results: Vec<Val>,
}

/// The most callbacks one entry runs (see [`crate::merged`]).
const MAX_MERGED: usize = 3;

/// The per-callback budget: the deadline in epoch ticks (recomputed only when the engine's
/// tick changes) and the fuel.
struct Arm {
    ticker: &'static Ticker,
    timeout: std::time::Duration,
    tick_ns: u64,
    /// `deadlines[k - 1]`: the deadline in ticks of an entry that runs `k` callbacks (`k`
    /// times the timeout), each registered with the ticker so that it does not park before the
    /// longest of them has passed.
    deadlines: [u64; MAX_MERGED],
    fuel: Option<u64>,
}

/// The deadlines in ticks of entries running 1 to [`MAX_MERGED`] callbacks of `timeout` each.
fn deadlines(ticker: &Ticker, timeout: std::time::Duration) -> [u64; MAX_MERGED] {
    std::array::from_fn(|i| ticker.deadline_ticks(timeout.saturating_mul(i as u32 + 1)))
}

impl Arm {
    fn of(module: &PluginModule) -> Result<Arm, crate::Error> {
        let limits = &module.info.limits;
        let ticker = crate::engine::ticker(limits.fuel.is_some())?;
        Ok(Arm {
            ticker,
            timeout: limits.callback_timeout,
            tick_ns: ticker.tick_ns(),
            deadlines: deadlines(ticker, limits.callback_timeout),
            fuel: limits.fuel,
        })
    }

    /// Arm the deadline and fuel of the next call (and make sure the epoch ticker runs).
    #[inline]
    fn apply(&mut self, store: &mut Store<HostState>) {
        self.apply_for(store, 1);
    }

    /// Arm the next entry for `callbacks` (1 to [`MAX_MERGED`]) callbacks run in sequence (a
    /// merged entry, see [`crate::merged`]): the sum of their deadlines and of their fuel, so
    /// that callbacks that each stay within their own budget never fail together.
    #[inline(always)]
    fn apply_for(&mut self, store: &mut Store<HostState>, callbacks: usize) {
        let tick = self.ticker.tick_ns();
        if tick != self.tick_ns {
            // A plugin with a shorter timeout made the tick finer since this VM was armed.
            self.tick_ns = tick;
            self.deadlines = deadlines(self.ticker, self.timeout);
        }
        self.ticker.note_callback();
        let k = callbacks.clamp(1, MAX_MERGED);
        store.set_epoch_deadline(self.deadlines[k - 1]);
        if let Some(fuel) = self.fuel {
            // set_fuel only fails on an engine without fuel, and fuel limits use the fuel engine.
            let _ = store.set_fuel(fuel.saturating_mul(k as u64));
        }
    }
}

impl Vm {
    /// Instantiate `module` and run its WASI initializer (`_initialize`, or `_start`).
    ///
    /// # Errors
    /// A [`Failure`] of kind `Start` (or the trap's kind) when instantiation or start traps.
    pub fn new(module: &Arc<PluginModule>, env: VmEnv) -> Result<Vm, Failure> {
        let mut state = HostState::new(module.info.clone(), env.queue_notifier, env.foreign);
        state.known_cluster = env.known_cluster;
        let mut store = Store::new(&module.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        let fail = |kind: FailureKind, message: String| {
            let f = Failure {
                plugin: module.info.name.to_string(),
                kind,
                message,
            };
            count(&f.plugin, f.kind);
            f
        };
        let mut arm = Arm::of(module).map_err(|e| fail(FailureKind::Start, e.to_string()))?;
        arm.apply(&mut store);
        let instance = module.pre.instantiate(&mut store).map_err(|e| {
            fail(
                classify(&mut store, &e).unwrap_or(FailureKind::Start),
                short(&e),
            )
        })?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, module.allocator)
            .ok();
        if memory.is_none() || alloc.is_none() {
            return Err(fail(
                FailureKind::Start,
                "memory or allocator export has the wrong type".into(),
            ));
        }
        store.data_mut().memory = memory;
        store.data_mut().alloc = alloc;
        let mut exports = Vec::with_capacity(CALLBACKS.len());
        for (_, name) in CALLBACKS {
            let export = instance.get_func(&mut store, name).map(|func| {
                let ty = func.ty(&store);
                let params = ty.params().len();
                let results = ty.results().map(|t| zero_of(&t)).collect();
                let typed = Typed::of(&func, &store);
                Export {
                    func,
                    params,
                    results,
                    typed,
                }
            });
            exports.push(export);
        }
        for init in ["_initialize", "_start"] {
            if let Some(f) = instance.get_func(&mut store, init) {
                arm.apply(&mut store);
                if let Err(e) = f.call(&mut store, &[], &mut []) {
                    // A command module's _start may end with proc_exit(0): that is success.
                    if store.data_mut().exit_code.take() != Some(0) {
                        let kind = classify(&mut store, &e).unwrap_or(FailureKind::Start);
                        return Err(fail(kind, format!("{init}: {}", short(&e))));
                    }
                }
                break;
            }
        }
        let merged = Merged::link(&mut store, &instance, module.info.limits.fuel.is_some());
        Ok(Vm {
            store,
            exports,
            module: module.clone(),
            failure: None,
            next_ctx: 1,
            roots: IdMap::default(),
            root_ids: Vec::new(),
            arm,
            merged,
            args: Vec::with_capacity(5),
            results: Vec::with_capacity(1),
        })
    }

    /// Which merged entries this VM uses (see [`crate::merged`]): the start of a stream, its
    /// end. For tests and diagnostics.
    #[doc(hidden)]
    pub fn merged_entries(&self) -> (bool, bool) {
        (self.merged.begin.is_some(), self.merged.end.is_some())
    }

    /// Whether this VM runs a whole response's headers and body callbacks in one entry (see
    /// [`Vm::on_response_whole`]).
    pub fn merges_whole_response(&self) -> bool {
        self.merged.whole.is_some()
    }

    /// The module this VM runs.
    pub fn module(&self) -> &Arc<PluginModule> {
        &self.module
    }

    /// The ABI the plugin declares.
    pub fn abi(&self) -> AbiVersion {
        self.module.abi
    }

    /// The failure that ended this VM, if any.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Bytes of linear memory the VM has now (it only grows while the VM lives).
    pub fn memory_bytes(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }

    /// Contexts created and not yet deleted (streams in flight plus root contexts).
    pub fn live_contexts(&self) -> usize {
        self.store.data().live_contexts
    }

    fn call(
        &mut self,
        cb: Cb,
        args: &[i32],
        ctx: u32,
        stream: Option<&mut dyn StreamHost>,
    ) -> Result<i32, Failure> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        // Borrow the export's fields (no clone: this runs for every phase of every request).
        let Some(export) = &self.exports[cb as usize] else {
            return Ok(0);
        };
        let func = export.func;
        self.arm.apply(&mut self.store);
        let st = self.store.data_mut();
        st.current_ctx = ctx;
        st.effective_ctx = ctx;
        // Always overwrite: a stale pointer from an earlier call must never be seen.
        st.stream = stream.map(StreamPtr::new);
        let outcome = match &export.typed {
            Some(typed) => typed.call(&mut self.store, args),
            None => {
                self.args.clear();
                self.args.extend(
                    (0..export.params).map(|i| Val::I32(args.get(i).copied().unwrap_or(0))),
                );
                self.results.clear();
                self.results.extend(export.results.iter().cloned());
                func.call(&mut self.store, &self.args, &mut self.results)
                    .map(|()| self.results.first().and_then(Val::i32).unwrap_or(0))
            }
        };
        self.store.data_mut().stream = None;
        outcome.map_err(|e| self.failed(e))
    }

    /// One merged entry (see [`crate::merged`]) for `callbacks` callbacks of context `ctx`,
    /// with the stream's host for all of them.
    fn call_merged<P: wasmtime::WasmParams, R: wasmtime::WasmResults + Default>(
        &mut self,
        which: impl FnOnce(&Merged) -> &Option<TypedFunc<P, R>>,
        args: P,
        callbacks: usize,
        ctx: u32,
        stream: &mut dyn StreamHost,
    ) -> Result<R, Failure> {
        // Borrowed, not cloned: a clone of a typed function counts a reference to its type.
        let Some(func) = which(&self.merged) else {
            return Ok(R::default());
        };
        self.arm.apply_for(&mut self.store, callbacks);
        let st = self.store.data_mut();
        st.current_ctx = ctx;
        st.effective_ctx = ctx;
        st.stream = Some(StreamPtr::new(stream));
        let outcome = func.call(&mut self.store, args);
        self.store.data_mut().stream = None;
        outcome.map_err(|e| self.failed(e))
    }

    /// A callback trapped (or ran out of time, fuel or memory): the VM has failed for good.
    #[cold]
    fn failed(&mut self, e: wasmtime::Error) -> Failure {
        let kind = classify(&mut self.store, &e).unwrap_or(FailureKind::Trap);
        let failure = Failure {
            plugin: self.module.info.name.to_string(),
            kind,
            message: short(&e),
        };
        count(&failure.plugin, kind);
        // The embedder decides what happens next and logs the event once with its policy.
        tracing::debug!(plugin = %failure.plugin, kind = kind.as_str(), error = %failure.message, "plugin VM failed");
        self.failure = Some(failure.clone());
        failure
    }

    /// The root context `ctx` belongs to (`ctx` itself for a root context).
    fn root_of(&self, ctx: u32) -> u32 {
        if let Some(root) = self.roots.get(&ctx) {
            return *root;
        }
        match self.root_ids.first() {
            // A stream created while its root was the only one.
            Some(&first) if !self.root_ids.contains(&ctx) => first,
            _ => ctx,
        }
    }

    /// Record `root` as the root of the new stream context `ctx` when it is not the only root.
    fn note_root(&mut self, ctx: u32, root: u32) {
        if self.root_ids.len() > 1 {
            self.roots.insert(ctx, root);
        }
    }

    /// Forget the root of a stream context that is gone.
    fn forget_root(&mut self, ctx: u32) {
        if !self.roots.is_empty() {
            self.roots.remove(&ctx);
        }
    }

    fn new_context(&mut self, parent: u32) -> Result<u32, Failure> {
        let id = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1).max(1);
        self.call(Cb::ContextCreate, &[id as i32, parent as i32], id, None)?;
        self.store.data_mut().live_contexts += 1;
        if parent == 0 {
            self.root_ids.push(id);
        } else {
            self.note_root(id, parent);
        }
        Ok(id)
    }

    /// Create a root context: `on_context_create(id, 0)`, `on_vm_start`, `on_configure` with
    /// `plugin_config`.
    ///
    /// # Errors
    /// A trap, or `Start` when `on_vm_start` or `on_configure` returns false.
    pub fn create_root(&mut self, plugin_config: Bytes) -> Result<u32, Failure> {
        let id = self.new_context(0)?;
        let vm_config_len = self.module.info.vm_config.len() as i32;
        if self.call(Cb::VmStart, &[id as i32, vm_config_len], id, None)? == 0 {
            return Err(self.fail_start("proxy_on_vm_start returned false"));
        }
        let len = plugin_config.len() as i32;
        let st = self.store.data_mut();
        st.plugin_config = plugin_config;
        st.configuring = true;
        let ok = self.call(Cb::Configure, &[id as i32, len], id, None);
        let st = self.store.data_mut();
        st.plugin_config = Bytes::new();
        st.configuring = false;
        if ok? == 0 {
            return Err(self.fail_start(
                "proxy_on_configure returned false (the plugin rejected its configuration)",
            ));
        }
        Ok(id)
    }

    fn fail_start(&mut self, message: &str) -> Failure {
        let f = Failure {
            plugin: self.module.info.name.to_string(),
            kind: FailureKind::Start,
            message: message.into(),
        };
        count(&f.plugin, f.kind);
        self.failure = Some(f.clone());
        f
    }

    /// Create a stream context under `root`.
    ///
    /// # Errors
    /// A trap in `on_context_create`.
    pub fn create_stream(&mut self, root: u32) -> Result<u32, Failure> {
        self.new_context(root)
    }

    /// Create a stream context under `root` and call its `proxy_on_request_headers`: one
    /// entry into the VM when the plugin allows it (see [`crate::merged`]), else
    /// [`Vm::create_stream`] then [`Vm::on_request_headers`].
    ///
    /// Returns the new context and what `proxy_on_request_headers` did.
    ///
    /// # Errors
    /// The outer error: no context was created (the VM had failed before, or, entered one by
    /// one, `proxy_on_context_create` trapped). The inner one: the VM failed in this call (in
    /// a merged entry, a trap in either callback; the context id is then spent).
    pub fn begin_stream(
        &mut self,
        root: u32,
        headers: usize,
        end_of_stream: bool,
        host: &mut dyn StreamHost,
    ) -> Result<(u32, Result<Action, Failure>), Failure> {
        if self.merged.begin.is_none() || self.failure.is_some() {
            let ctx = self.create_stream(root)?;
            return Ok((
                ctx,
                self.on_request_headers(ctx, headers, end_of_stream, host),
            ));
        }
        let id = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1).max(1);
        self.store.data_mut().live_contexts += 1;
        self.note_root(id, root);
        let args = (
            id as i32,
            root as i32,
            headers as i32,
            i32::from(end_of_stream),
        );
        let action = self.call_merged(|m| &m.begin, args, 2, id, host);
        Ok((id, action.map(Action::from_i32)))
    }

    fn action(
        &mut self,
        cb: Cb,
        args: &[i32],
        ctx: u32,
        host: &mut dyn StreamHost,
    ) -> Result<Action, Failure> {
        self.call(cb, args, ctx, Some(host)).map(Action::from_i32)
    }

    /// `proxy_on_request_headers`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_request_headers(
        &mut self,
        ctx: u32,
        headers: usize,
        end_of_stream: bool,
        host: &mut dyn StreamHost,
    ) -> Result<Action, Failure> {
        self.action(
            Cb::RequestHeaders,
            &[ctx as i32, headers as i32, end_of_stream as i32],
            ctx,
            host,
        )
    }

    /// `proxy_on_request_body`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_request_body(
        &mut self,
        ctx: u32,
        size: usize,
        end_of_stream: bool,
        host: &mut dyn StreamHost,
    ) -> Result<Action, Failure> {
        self.action(
            Cb::RequestBody,
            &[ctx as i32, size as i32, end_of_stream as i32],
            ctx,
            host,
        )
    }

    /// `proxy_on_request_trailers`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_request_trailers(
        &mut self,
        ctx: u32,
        trailers: usize,
        host: &mut dyn StreamHost,
    ) -> Result<Action, Failure> {
        self.action(
            Cb::RequestTrailers,
            &[ctx as i32, trailers as i32],
            ctx,
            host,
        )
    }

    /// `proxy_on_response_headers`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_response_headers(
        &mut self,
        ctx: u32,
        headers: usize,
        end_of_stream: bool,
        host: &mut dyn StreamHost,
    ) -> Result<Action, Failure> {
        self.action(
            Cb::ResponseHeaders,
            &[ctx as i32, headers as i32, end_of_stream as i32],
            ctx,
            host,
        )
    }

    /// `proxy_on_response_body`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_response_body(
        &mut self,
        ctx: u32,
        size: usize,
        end_of_stream: bool,
        host: &mut dyn StreamHost,
    ) -> Result<Action, Failure> {
        self.action(
            Cb::ResponseBody,
            &[ctx as i32, size as i32, end_of_stream as i32],
            ctx,
            host,
        )
    }

    /// A response whose whole body came with its head: `proxy_on_response_headers` (not the
    /// end of the stream), then `proxy_on_response_body` with its `body_size` bytes and the end
    /// of the stream, in one entry into the VM when the plugin allows it (see
    /// [`crate::merged`]). The body callback runs only when the headers callback returned
    /// Continue and recorded no signal (continue, close, local response); its action is then
    /// the second value. `None`: the body callback did not run, and the embedder acts on the
    /// headers callback's outcome before it calls [`Vm::on_response_body`] itself. The headers
    /// callback does not see the body (`host.body` answers only the body callback), as when
    /// the two are entered one by one.
    ///
    /// # Errors
    /// The VM failed (now or before), in either callback.
    pub fn on_response_whole(
        &mut self,
        ctx: u32,
        headers: usize,
        body_size: usize,
        host: &mut dyn StreamHost,
    ) -> Result<(Action, Option<Action>), Failure> {
        self.store.data_mut().in_whole = true;
        let r = if self.merged.whole.is_some() && self.failure.is_none() {
            let args = (ctx as i32, headers as i32, body_size as i32);
            self.call_merged(|m| &m.whole, args, 2, ctx, host)
                .map(|(a, ran, b)| (Action::from_i32(a), (ran != 0).then(|| Action::from_i32(b))))
        } else {
            self.on_response_headers(ctx, headers, false, host)
                .map(|a| (a, None))
        };
        self.store.data_mut().in_whole = false;
        r
    }

    /// `proxy_on_response_trailers`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_response_trailers(
        &mut self,
        ctx: u32,
        trailers: usize,
        host: &mut dyn StreamHost,
    ) -> Result<Action, Failure> {
        self.action(
            Cb::ResponseTrailers,
            &[ctx as i32, trailers as i32],
            ctx,
            host,
        )
    }

    /// `proxy_on_log`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_log(&mut self, ctx: u32, host: &mut dyn StreamHost) -> Result<(), Failure> {
        self.call(Cb::Log, &[ctx as i32], ctx, Some(host)).map(drop)
    }

    /// The end of a stream that ran to completion: `proxy_on_log` (with the stream's heads
    /// readable through `host`), then `proxy_on_done` and `proxy_on_delete` as in
    /// [`Vm::finish_context`]. One entry into the VM when the plugin allows it (see
    /// [`crate::merged`]): the three callbacks then share the sum of their deadlines and fuel,
    /// and see the stream's heads. A trap in one of them stops the others (the VM has failed).
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn end_stream(&mut self, ctx: u32, host: &mut dyn StreamHost) -> Result<(), Failure> {
        if self.merged.end.is_none() || self.failure.is_some() {
            self.on_log(ctx, host)?;
            return self.finish_context(ctx);
        }
        // One entry (see `crate::merged`): the bookkeeping of `finish_context` around it.
        let st = self.store.data_mut();
        st.live_contexts = st.live_contexts.saturating_sub(1);
        let outer = st.done_running.replace((ctx, false));
        let done = self.call_merged(|m| &m.end, ctx as i32, 3, ctx, host);
        let st = self.store.data_mut();
        let released = std::mem::replace(&mut st.done_running, outer).is_some_and(|(_, r)| r);
        if !st.signals.is_empty() {
            // What the stream asked in its last callbacks has no stream left to act on.
            st.signals.remove(&ctx);
        }
        self.forget_root(ctx);
        if done? != 0 {
            // The helper called `proxy_on_delete` already.
            return Ok(());
        }
        if released {
            return self.call(Cb::Delete, &[ctx as i32], ctx, None).map(drop);
        }
        // Deferred: `proxy_done` from a later callback releases it (see `delete_released`).
        self.store.data_mut().finishing.insert(ctx);
        Ok(())
    }

    /// `proxy_on_done` then `proxy_on_delete`: the context is gone for the host afterwards. A
    /// plugin that returns false from `proxy_on_done` gets `proxy_on_delete` when it calls
    /// `proxy_done` for that context (in a later callback), or never if the VM goes first.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn finish_context(&mut self, ctx: u32) -> Result<(), Failure> {
        let st = self.store.data_mut();
        st.live_contexts = st.live_contexts.saturating_sub(1);
        if !st.signals.is_empty() {
            st.signals.remove(&ctx);
        }
        let outer = st.done_running.replace((ctx, false));
        let done = self.call(Cb::Done, &[ctx as i32], ctx, None);
        let st = self.store.data_mut();
        let released = std::mem::replace(&mut st.done_running, outer).is_some_and(|(_, r)| r);
        let completed = done? != 0;
        self.forget_root(ctx);
        if completed || released {
            return self.call(Cb::Delete, &[ctx as i32], ctx, None).map(drop);
        }
        // Deferred: `proxy_done` from a later callback releases it (see `delete_released`).
        self.store.data_mut().finishing.insert(ctx);
        Ok(())
    }

    /// `proxy_on_delete` for contexts released with `proxy_done` since the last call.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn delete_released(&mut self) -> Result<(), Failure> {
        let released = std::mem::take(&mut self.store.data_mut().done_released);
        for ctx in released {
            self.call(Cb::Delete, &[ctx as i32], ctx, None)?;
        }
        Ok(())
    }

    /// `proxy_on_tick` for a root context.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_tick(&mut self, root: u32) -> Result<(), Failure> {
        self.call(Cb::Tick, &[root as i32], root, None).map(drop)
    }

    /// `proxy_on_queue_ready` for the root context that registered the queue.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_queue_ready(&mut self, root: u32, queue: u32) -> Result<(), Failure> {
        self.call(Cb::QueueReady, &[root as i32, queue as i32], root, None)
            .map(drop)
    }

    /// Deliver the answer of an http callout (`None`: it failed; the plugin sees no headers).
    /// `host` is the stream of the calling context, when it is paused on this call.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_http_call_response(
        &mut self,
        ctx: u32,
        token: u32,
        response: Option<CalloutResponse>,
        host: Option<&mut dyn StreamHost>,
    ) -> Result<(), Failure> {
        if self.store.data_mut().cancelled.remove(&token) {
            return Ok(());
        }
        let resp = response.unwrap_or_default();
        let args = [
            self.root_of(ctx) as i32,
            token as i32,
            resp.headers.len() as i32,
            resp.body.len() as i32,
            resp.trailers.len() as i32,
        ];
        self.store.data_mut().callout_response = Some(resp);
        let r = self.call(Cb::HttpCallResponse, &args, ctx, host);
        self.store.data_mut().callout_response = None;
        r.map(drop)
    }

    /// Deliver the answer of a unary gRPC callout: `Ok(message)` calls `on_grpc_receive`,
    /// `Err((status, message))` calls `on_grpc_close`.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_grpc_response(
        &mut self,
        ctx: u32,
        token: u32,
        result: Result<CalloutResponse, (u32, String)>,
        mut host: Option<&mut dyn StreamHost>,
    ) -> Result<(), Failure> {
        if self.store.data_mut().cancelled.remove(&token) {
            return Ok(());
        }
        let root = self.root_of(ctx) as i32;
        let r = match result {
            Ok(resp) => {
                let (nh, size) = (resp.headers.len() as i32, resp.body.len() as i32);
                self.store.data_mut().callout_response = Some(resp);
                let r = self
                    .call(
                        Cb::GrpcInitialMetadata,
                        &[root, token as i32, nh],
                        ctx,
                        reborrow(&mut host),
                    )
                    .and_then(|_| {
                        self.call(Cb::GrpcReceive, &[root, token as i32, size], ctx, host)
                    });
                r.map(drop)
            }
            Err((code, message)) => {
                self.store.data_mut().grpc_status = Some((code, Bytes::from(message)));
                let r = self.call(Cb::GrpcClose, &[root, token as i32, code as i32], ctx, host);
                self.store.data_mut().grpc_status = None;
                r.map(drop)
            }
        };
        self.store.data_mut().callout_response = None;
        r
    }

    /// Deliver an event of an open gRPC stream (`proxy_grpc_stream`). `host` is the stream of
    /// the context that opened it, when that stream is paused waiting for the event.
    ///
    /// # Errors
    /// The VM failed (now or before).
    pub fn on_grpc_stream_event(
        &mut self,
        ctx: u32,
        token: u32,
        event: GrpcEvent,
        host: Option<&mut dyn StreamHost>,
    ) -> Result<(), Failure> {
        if self.store.data().cancelled.contains(&token) {
            if matches!(event, GrpcEvent::Close(..)) {
                self.store.data_mut().cancelled.remove(&token);
            }
            return Ok(());
        }
        let t = token as i32;
        let c = self.root_of(ctx) as i32;
        let r = match event {
            GrpcEvent::InitialMetadata(headers) => {
                let n = headers.len() as i32;
                self.store.data_mut().callout_response = Some(CalloutResponse {
                    headers,
                    ..Default::default()
                });
                self.call(Cb::GrpcInitialMetadata, &[c, t, n], ctx, host)
            }
            GrpcEvent::Message(body) => {
                let n = body.len() as i32;
                self.store.data_mut().callout_response = Some(CalloutResponse {
                    body,
                    ..Default::default()
                });
                self.call(Cb::GrpcReceive, &[c, t, n], ctx, host)
            }
            GrpcEvent::TrailingMetadata(trailers) => {
                let n = trailers.len() as i32;
                self.store.data_mut().callout_response = Some(CalloutResponse {
                    trailers,
                    ..Default::default()
                });
                self.call(Cb::GrpcTrailingMetadata, &[c, t, n], ctx, host)
            }
            GrpcEvent::Close(code, message) => {
                let st = self.store.data_mut();
                st.grpc_streams.remove(&token);
                st.grpc_status = Some((code, Bytes::from(message)));
                let r = self.call(Cb::GrpcClose, &[c, t, code as i32], ctx, host);
                self.store.data_mut().grpc_status = None;
                r
            }
        };
        self.store.data_mut().callout_response = None;
        r.map(drop)
    }

    /// Messages, half-closes and cancels for open gRPC streams since the last take.
    pub fn take_grpc_outbox(&mut self) -> Vec<GrpcSend> {
        std::mem::take(&mut self.store.data_mut().grpc_outbox)
    }

    /// Calls started by the last callbacks, to be sent by the embedder.
    pub fn take_callouts(&mut self) -> Vec<Callout> {
        std::mem::take(&mut self.store.data_mut().callouts)
    }

    /// Whether `ctx` has calls recorded but not yet taken.
    pub fn has_callouts(&self) -> bool {
        !self.store.data().callouts.is_empty()
    }

    /// What `ctx` asked of its stream (continue, local response, close) since the last take.
    pub fn take_signals(&mut self, ctx: u32) -> Signals {
        let signals = &mut self.store.data_mut().signals;
        if signals.is_empty() {
            // The common case: the callback only returned an action.
            return Signals::default();
        }
        signals.remove(&ctx).unwrap_or_default()
    }

    /// Whether the last callbacks left work for the embedder besides their stream's own
    /// signals and callouts: tick periods, gRPC stream messages, contexts released with
    /// `proxy_done`, signals for other contexts, or memory growth. When false, the embedder can
    /// skip every `take_*` and the memory check.
    #[inline]
    pub fn has_deferred_work(&self) -> bool {
        let st = self.store.data();
        st.limiter.grew
            || !st.tick_requests.is_empty()
            || !st.grpc_outbox.is_empty()
            || !st.done_released.is_empty()
            || !st.signals.is_empty()
    }

    /// Whether the last callbacks left nothing at all for the embedder: no signals for any
    /// context, no callouts, and no deferred work (see [`Vm::has_deferred_work`]). The common
    /// case after a stream callback that only returned an action: one check instead of a
    /// `take_*` call per kind.
    #[inline]
    pub fn is_quiet(&self) -> bool {
        self.store.data().callouts.is_empty() && !self.has_deferred_work()
    }

    /// The VM's linear memory size when it grew since the last call (see [`Vm::memory_bytes`]).
    pub fn take_memory_growth(&mut self) -> Option<usize> {
        let st = self.store.data_mut();
        if !std::mem::take(&mut st.limiter.grew) {
            return None;
        }
        Some(self.memory_bytes())
    }

    /// Whether `ctx` asked something of its stream (continue, local response, close) that was
    /// not taken yet: a callback of another context did it through `proxy_set_effective_context`.
    pub fn has_signals(&self, ctx: u32) -> bool {
        self.store.data().signals.contains_key(&ctx)
    }

    /// Tick periods set since the last take: `(root context, period)`.
    pub fn take_tick_requests(&mut self) -> Vec<(u32, std::time::Duration)> {
        std::mem::take(&mut self.store.data_mut().tick_requests)
    }
}

fn classify(store: &mut Store<HostState>, e: &wasmtime::Error) -> Option<FailureKind> {
    let st = store.data_mut();
    if st.exit_code.take().is_some() {
        return Some(FailureKind::ProcExit);
    }
    if st.limiter.hit {
        return Some(FailureKind::MemoryLimit);
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Some(FailureKind::Deadline),
        Some(Trap::OutOfFuel) => Some(FailureKind::Fuel),
        Some(_) => Some(FailureKind::Trap),
        None => None,
    }
}

/// The first lines of an error (wasm backtraces can be long).
fn short(e: &wasmtime::Error) -> String {
    let full = format!("{e:#}");
    full.lines().take(6).collect::<Vec<_>>().join(" | ")
}

/// Lend the stream host for one call and keep it for the next.
fn reborrow<'a>(host: &'a mut Option<&mut dyn StreamHost>) -> Option<&'a mut dyn StreamHost> {
    match host {
        Some(h) => Some(&mut **h),
        None => None,
    }
}
