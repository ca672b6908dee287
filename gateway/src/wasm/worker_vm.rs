//! One VM per plugin per worker, created on first use and kept in a thread-local map keyed by the
//! plugin's unique id. Applies the failure policy when the VM fails, runs the plugin's timers and
//! queue notifications on the worker, and sends callouts made outside a paused stream.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak as RcWeak};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_wasm::{
    CalloutKind, Failure, FailureKind, GrpcEvent, GrpcSend, IdMap, NumMap, Vm, VmEnv,
};

use super::callout;
use super::Plugin;
use crate::config::model::FailurePolicy;

/// First wait before recreating a failed VM under `fail_reload`; doubles per failure.
const RELOAD_BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between recreations.
const RELOAD_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A VM that lived this long before failing resets the backoff.
const RELOAD_BACKOFF_RESET: Duration = Duration::from_secs(60);
/// `sluice_plugin_phase_seconds` reads the clock for the phases of one stream in this many
/// (per worker VM, the first one included, and any stream whose first phase creates the VM);
/// the phases of the other streams are counted with the last time measured for the same phase
/// on the worker. Two clock reads per phase were a measurable part of a small plugin's cost.
pub(crate) const TIME_ONE_STREAM_IN: u32 = 16;

/// VM holders alive on all workers (see /metrics `sluice_wasm_worker_vms_live`).
static LIVE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// VM holders alive on all workers: at most workers × plugins in force, plus those still
/// finishing streams of an older plugin version.
pub(crate) fn live_worker_vms() -> u64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

thread_local! {
    static VMS: RefCell<NumMap<u64, Rc<WorkerVm>>> = RefCell::new(NumMap::default());
}

/// Something for a stream its plugin paused: it asked to be resumed (or answered) from another
/// context's callback, or an event arrived on a gRPC stream it opened.
pub(crate) enum Wake {
    Signals,
    Grpc(u32, GrpcEvent),
}

/// Why a stream cannot use the plugin right now.
pub(crate) enum Unavailable {
    /// The VM failed (now or before); apply the failure policy.
    Failed,
}

/// The VM of one plugin on this worker.
pub(crate) struct WorkerVm {
    pub(crate) plugin: Weak<Plugin>,
    pub(crate) name: Arc<str>,
    pub(crate) policy: FailurePolicy,
    vm: RefCell<Option<Vm>>,
    /// Bumped each time the VM is replaced: contexts of an older generation are gone.
    generation: Cell<u64>,
    /// Root context per plugin use (a plugin used twice with two configs has two roots).
    roots: RefCell<NumMap<u64, u32>>,
    /// Streams started on this VM holder: which ones are timed (see [`TIME_ONE_STREAM_IN`]).
    streams: Cell<u32>,
    /// Set once the VM failed for good (fail_closed / fail_open), or until when to wait before
    /// recreating it (fail_reload).
    dead: Cell<Option<FailureKind>>,
    retry_at: Cell<Option<Instant>>,
    backoff: Cell<Duration>,
    created: Cell<Instant>,
    /// The plugin's figures, and this VM's memory size as they last counted it.
    figures: Arc<crate::telemetry::metrics::PluginFigures>,
    memory_seen: Cell<usize>,
    tickers: RefCell<HashMap<u32, Duration>>,
    queue_tx: RefCell<Option<tokio::sync::mpsc::UnboundedSender<(u32, u32)>>>,
    /// Open gRPC streams of this VM: where their outgoing messages go.
    grpc_streams: RefCell<HashMap<u32, tokio::sync::mpsc::UnboundedSender<GrpcSend>>>,
    /// Messages sent before their stream's task started.
    grpc_pending: RefCell<HashMap<u32, Vec<GrpcSend>>>,
    /// Streams their plugin holds paused, by context: where to wake them.
    paused: RefCell<IdMap<tokio::sync::mpsc::UnboundedSender<Wake>>>,
}

/// Work a callback left for the worker after the VM borrow ends.
struct Deferred {
    ticks: Vec<(u32, Duration)>,
    outbox: Vec<GrpcSend>,
}

impl WorkerVm {
    /// This worker's VM holder for `plugin` (created on first use, without a VM yet).
    pub(crate) fn get(plugin: &Arc<Plugin>) -> Rc<WorkerVm> {
        let mut gone = Vec::new();
        let w = VMS.with(|m| {
            let mut m = m.borrow_mut();
            if let Some(w) = m.get(&plugin.id) {
                return w.clone();
            }
            // A new plugin version arrived: forget VMs of plugins that no longer exist (their
            // streams in flight keep them alive through their own Rc until they end). They are
            // dropped below, outside the map's borrow, since dropping runs plugin code.
            let dead: Vec<u64> = m
                .iter()
                .filter(|(_, w)| w.plugin.strong_count() == 0)
                .map(|(id, _)| *id)
                .collect();
            gone.extend(dead.iter().filter_map(|id| m.remove(id)));
            let w = Rc::new(WorkerVm {
                plugin: Arc::downgrade(plugin),
                name: plugin.name.clone(),
                policy: plugin.policy,
                vm: RefCell::new(None),
                generation: Cell::new(0),
                roots: RefCell::new(NumMap::default()),
                streams: Cell::new(0),
                dead: Cell::new(None),
                retry_at: Cell::new(None),
                backoff: Cell::new(RELOAD_BACKOFF_START),
                created: Cell::new(Instant::now()),
                figures: plugin.figures.clone(),
                memory_seen: Cell::new(0),
                tickers: RefCell::new(HashMap::new()),
                queue_tx: RefCell::new(None),
                grpc_streams: RefCell::new(HashMap::new()),
                grpc_pending: RefCell::new(HashMap::new()),
                paused: RefCell::new(IdMap::default()),
            });
            LIVE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            m.insert(plugin.id, w.clone());
            w
        });
        drop(gone);
        w
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Whether the stream about to start gets its phases timed: one in [`TIME_ONE_STREAM_IN`],
    /// and always when there is no VM yet (that phase includes creating it).
    pub(crate) fn time_next_stream(&self) -> bool {
        let n = self.streams.get();
        self.streams.set(n.wrapping_add(1));
        n % TIME_ONE_STREAM_IN == 0 || self.vm.borrow().is_none()
    }

    /// After a callback, with the VM still borrowed: collect what it left for the worker. Most
    /// callbacks leave nothing, and then this is one check (inlined in the caller).
    #[inline]
    fn after_callback(&self, vm: &mut Vm) -> Option<Deferred> {
        if !vm.has_deferred_work() {
            return None;
        }
        self.collect_deferred(vm)
    }

    #[cold]
    #[inline(never)]
    fn collect_deferred(&self, vm: &mut Vm) -> Option<Deferred> {
        if let Some(now) = vm.take_memory_growth() {
            let seen = self.memory_seen.replace(now);
            if now != seen {
                self.figures.memory_moved(seen, now);
            }
        }
        let ticks = vm.take_tick_requests();
        let outbox = vm.take_grpc_outbox();
        self.wake_signalled(vm);
        // A failure here marks the VM failed; the next callback reports it.
        let _ = vm.delete_released();
        Some(Deferred { ticks, outbox })
    }

    /// After the VM borrow ended: start the timers and route the gRPC messages a callback asked
    /// for.
    #[inline]
    fn run_deferred(self: &Rc<Self>, deferred: Option<Deferred>) {
        if let Some(d) = deferred {
            self.start_deferred(d);
        }
    }

    #[cold]
    #[inline(never)]
    fn start_deferred(self: &Rc<Self>, d: Deferred) {
        self.start_tickers(d.ticks);
        self.route_grpc(d.outbox);
    }

    /// Run `f` with a live VM and the root context of plugin use `use_id` (created with `config`
    /// on first use). Callouts and timers the callback starts are taken care of afterwards.
    pub(crate) fn with_vm<R>(
        self: &Rc<Self>,
        use_id: u64,
        config: &Bytes,
        f: impl FnOnce(&mut Vm, u32) -> Result<R, Failure>,
    ) -> Result<R, Unavailable> {
        self.ensure_vm()?;
        let mut guard = self.vm.borrow_mut();
        let Some(vm) = guard.as_mut() else {
            return Err(Unavailable::Failed);
        };
        let root = match self.roots.borrow().get(&use_id) {
            Some(r) => Ok(*r),
            None => Err(()),
        };
        let root = match root {
            Ok(r) => r,
            Err(()) => match vm.create_root(config.clone()) {
                Ok(r) => {
                    self.roots.borrow_mut().insert(use_id, r);
                    r
                }
                Err(f) => {
                    drop(guard);
                    return Err(self.fail(f));
                }
            },
        };
        let out = f(vm, root);
        let deferred = self.after_callback(vm);
        drop(guard);
        self.run_deferred(deferred);
        out.map_err(|f| self.fail(f))
    }

    /// Run `f` on the VM if it is alive and of `generation` (a stream's own context).
    pub(crate) fn with_live_vm<R>(
        self: &Rc<Self>,
        generation: u64,
        f: impl FnOnce(&mut Vm) -> Result<R, Failure>,
    ) -> Result<R, Unavailable> {
        let mut guard = self.vm.borrow_mut();
        let vm = match guard.as_mut() {
            Some(vm) if self.generation.get() == generation => vm,
            _ => return Err(Unavailable::Failed),
        };
        let out = f(vm);
        let deferred = self.after_callback(vm);
        drop(guard);
        self.run_deferred(deferred);
        out.map_err(|f| self.fail(f))
    }

    /// Register `ctx` as paused; its wakes arrive on the returned receiver until
    /// [`WorkerVm::unpause`].
    pub(crate) fn pause(&self, ctx: u32) -> tokio::sync::mpsc::UnboundedReceiver<Wake> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.paused.borrow_mut().insert(ctx, tx);
        rx
    }

    /// `ctx` is no longer paused: its gRPC stream events go back to background delivery.
    pub(crate) fn unpause(&self, ctx: u32) {
        if let Ok(mut paused) = self.paused.try_borrow_mut() {
            paused.remove(&ctx);
        }
    }

    /// Wake paused streams that a callback of another context resumed or answered (a tick that
    /// called `proxy_set_effective_context` then `proxy_continue_stream`, for instance).
    fn wake_signalled(&self, vm: &Vm) {
        let Ok(paused) = self.paused.try_borrow() else {
            return;
        };
        for (ctx, tx) in paused.iter() {
            if vm.has_signals(*ctx) {
                let _ = tx.send(Wake::Signals);
            }
        }
    }

    /// Hand a gRPC stream event to the paused stream that opened it; gives the event back when
    /// that stream is not paused.
    fn wake_with_grpc(&self, ctx: u32, token: u32, event: GrpcEvent) -> Option<GrpcEvent> {
        let paused = self.paused.borrow();
        let Some(tx) = paused.get(&ctx) else {
            return Some(event);
        };
        match tx.send(Wake::Grpc(token, event)) {
            Ok(()) => None,
            Err(e) => match e.0 {
                Wake::Grpc(_, event) => Some(event),
                Wake::Signals => None,
            },
        }
    }

    /// Take the VM's recorded callouts (those of `keep_ctx` are returned; others are sent now).
    pub(crate) fn take_callouts(
        self: &Rc<Self>,
        keep_ctx: Option<u32>,
    ) -> Vec<sluice_wasm::Callout> {
        let all = match self.vm.borrow_mut().as_mut() {
            // The common case: the callback made no call (no allocation, no partition).
            Some(vm) if !vm.has_callouts() => return Vec::new(),
            Some(vm) => vm.take_callouts(),
            None => return Vec::new(),
        };
        // A stream never waits on a gRPC stream it opens: those always run in the background.
        let (mine, others): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| {
            Some(c.context_id) == keep_ctx && !matches!(c.kind, CalloutKind::GrpcStream { .. })
        });
        for c in others {
            if matches!(c.kind, CalloutKind::GrpcStream { .. }) {
                self.spawn_grpc_stream(c);
            } else {
                self.spawn_detached_callout(c);
            }
        }
        mine
    }

    /// `on_done`/`on_delete` for a stream that ended without `on_log` (aborted). Never panics:
    /// when the VM is busy (the drop happens inside a callback) the context is left to the VM.
    pub(crate) fn finish_detached(&self, generation: u64, ctx: u32) {
        if self.generation.get() != generation {
            return;
        }
        let Ok(mut guard) = self.vm.try_borrow_mut() else {
            return;
        };
        let Some(vm) = guard.as_mut() else { return };
        if let Err(f) = vm.finish_context(ctx) {
            drop(guard);
            let _ = self.fail(f);
        }
    }

    fn ensure_vm(self: &Rc<Self>) -> Result<(), Unavailable> {
        if self.vm.borrow().is_some() {
            return Ok(());
        }
        if self.dead.get().is_some() {
            match (self.policy, self.retry_at.get()) {
                (FailurePolicy::FailReload, Some(at)) if Instant::now() >= at => {}
                _ => return Err(Unavailable::Failed),
            }
        }
        let Some(plugin) = self.plugin.upgrade() else {
            return Err(Unavailable::Failed);
        };
        let env = VmEnv {
            queue_notifier: Some(self.queue_notifier()),
            foreign: Some(plugin.foreign.clone()),
            // Outside a gateway worker (the plugin test kit, unit tests) or with a test double
            // for dispatch, every name is let through and the dispatcher decides.
            known_cluster: Some(Arc::new(|name: &str| {
                if crate::worker::has_dispatch_override() {
                    return true;
                }
                crate::worker::current()
                    .is_none_or(|w| w.snapshot().upstreams.clusters.contains_key(name))
            })),
        };
        match Vm::new(&plugin.module, env) {
            Ok(vm) => {
                self.memory_seen.set(vm.memory_bytes());
                self.figures.vm_started(vm.memory_bytes());
                *self.vm.borrow_mut() = Some(vm);
                self.roots.borrow_mut().clear();
                self.tickers.borrow_mut().clear();
                self.grpc_streams.borrow_mut().clear();
                self.grpc_pending.borrow_mut().clear();
                self.generation.set(self.generation.get() + 1);
                self.created.set(Instant::now());
                self.dead.set(None);
                Ok(())
            }
            Err(f) => Err(self.fail(f)),
        }
    }

    /// The VM failed: drop it, log once, and decide when (if ever) to recreate it.
    fn fail(&self, f: Failure) -> Unavailable {
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            if vm.take().is_some() {
                self.figures.vm_stopped(self.memory_seen.replace(0));
            }
        }
        self.generation.set(self.generation.get() + 1);
        self.dead.set(Some(f.kind));
        // Streams paused by this VM stop waiting and get the failure policy.
        if let Ok(mut paused) = self.paused.try_borrow_mut() {
            paused.clear();
        }
        if self.policy == FailurePolicy::FailReload {
            let backoff = if self.created.get().elapsed() >= RELOAD_BACKOFF_RESET {
                RELOAD_BACKOFF_START
            } else {
                self.backoff.get()
            };
            self.retry_at.set(Some(Instant::now() + backoff));
            self.backoff.set((backoff * 2).min(RELOAD_BACKOFF_MAX));
            tracing::error!(plugin = %self.name, kind = f.kind.as_str(), error = %f.message, retry_in = ?backoff, "plugin VM failed; recreating it after a backoff (fail_reload)");
        } else {
            tracing::error!(plugin = %self.name, kind = f.kind.as_str(), error = %f.message, policy = ?self.policy, "plugin VM failed on this worker; it stays down until the plugin is reloaded");
        }
        Unavailable::Failed
    }

    fn queue_notifier(self: &Rc<Self>) -> sluice_wasm::shared::QueueNotifier {
        let mut slot = self.queue_tx.borrow_mut();
        let tx = match &*slot {
            Some(tx) => tx.clone(),
            None => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u32, u32)>();
                let weak = Rc::downgrade(self);
                if tokio::runtime::Handle::try_current().is_ok() {
                    tokio::task::spawn_local(async move {
                        while let Some((queue, root)) = rx.recv().await {
                            let Some(w) = weak.upgrade() else { break };
                            let generation = w.generation();
                            let _ = w.with_live_vm(generation, |vm| vm.on_queue_ready(root, queue));
                            w.take_callouts(None);
                        }
                    });
                }
                *slot = Some(tx.clone());
                tx
            }
        };
        Arc::new(move |queue, root| {
            let _ = tx.send((queue, root));
        })
    }

    fn start_tickers(self: &Rc<Self>, requests: Vec<(u32, Duration)>) {
        for (root, period) in requests {
            let mut tickers = self.tickers.borrow_mut();
            let had = tickers.insert(root, period).is_some();
            if period.is_zero() {
                tickers.remove(&root);
            }
            if had || period.is_zero() || tokio::runtime::Handle::try_current().is_err() {
                continue;
            }
            let weak: RcWeak<WorkerVm> = Rc::downgrade(self);
            let generation = self.generation();
            tokio::task::spawn_local(ticker(weak, root, generation));
        }
    }

    /// Hand messages to their open gRPC streams (held until the stream task starts).
    fn route_grpc(&self, outbox: Vec<GrpcSend>) {
        if outbox.is_empty() {
            return;
        }
        let streams = self.grpc_streams.borrow();
        let mut pending = self.grpc_pending.borrow_mut();
        for send in outbox {
            match streams.get(&send.token) {
                Some(tx) => {
                    let _ = tx.send(send);
                }
                None => pending.entry(send.token).or_default().push(send),
            }
        }
    }

    fn spawn_grpc_stream(self: &Rc<Self>, call: sluice_wasm::Callout) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let token = call.token;
        let ctx = call.context_id;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<GrpcSend>();
        for send in self
            .grpc_pending
            .borrow_mut()
            .remove(&token)
            .unwrap_or_default()
        {
            let _ = tx.send(send);
        }
        self.grpc_streams.borrow_mut().insert(token, tx);
        let weak = Rc::downgrade(self);
        let generation = self.generation();
        tokio::task::spawn_local(async move {
            let deliver_to = weak.clone();
            callout::grpc_stream(call, rx, move |event| {
                let Some(w) = deliver_to.upgrade() else {
                    return false;
                };
                if w.generation() != generation {
                    return false;
                }
                // A stream paused on this gRPC stream gets the event with its headers editable.
                let Some(event) = w.wake_with_grpc(ctx, token, event) else {
                    return true;
                };
                let ok = w
                    .with_live_vm(generation, |vm| {
                        vm.on_grpc_stream_event(ctx, token, event, None)
                    })
                    .is_ok();
                w.take_callouts(None);
                ok
            })
            .await;
            if let Some(w) = weak.upgrade() {
                w.grpc_streams.borrow_mut().remove(&token);
            }
        });
    }

    pub(crate) fn spawn_detached_callout(self: &Rc<Self>, call: sluice_wasm::Callout) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let weak = Rc::downgrade(self);
        let generation = self.generation();
        tokio::task::spawn_local(async move {
            let answer = callout::send(call).await;
            let Some(w) = weak.upgrade() else { return };
            let _ = w.with_live_vm(generation, |vm| answer.deliver(vm, None));
            w.take_callouts(None);
        });
    }
}

impl Drop for WorkerVm {
    /// The plugin version is gone and its last stream ended: root contexts get `on_done` and
    /// `on_delete` before the VM (and its memory) is freed.
    fn drop(&mut self) {
        LIVE.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let Some(vm) = self.vm.get_mut().as_mut() else {
            return;
        };
        self.figures.vm_stopped(self.memory_seen.get());
        for (_, root) in self.roots.get_mut().drain() {
            if vm.finish_context(root).is_err() {
                // A trap here only means the plugin's cleanup failed; the VM is freed anyway.
                break;
            }
        }
    }
}

/// Calls `on_tick` every period until the VM is replaced, the plugin is gone, or the period is
/// set to zero. Each tick runs on this worker, between streams' callbacks.
async fn ticker(weak: RcWeak<WorkerVm>, root: u32, generation: u64) {
    loop {
        let period = match weak.upgrade() {
            Some(w) if w.generation() == generation && w.plugin.strong_count() > 0 => {
                match w.tickers.borrow().get(&root) {
                    Some(p) => *p,
                    None => return,
                }
            }
            _ => return,
        };
        tokio::time::sleep(period).await;
        let Some(w) = weak.upgrade() else { return };
        if w.with_live_vm(generation, |vm| vm.on_tick(root)).is_err() {
            return;
        }
        w.take_callouts(None);
    }
}
