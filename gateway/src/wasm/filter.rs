//! A plugin use as an [`HttpFilter`]: each stream is a context in this worker's VM of the plugin;
//! phases call the plugin's callbacks, act on what it asked (local response, callouts, body
//! buffering), and apply the failure policy when the VM fails.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sluice_wasm::{Action, BufferType, Failure, FailureKind, LocalReply, MapType, Vm};

use super::callout::{self, Answer};
use super::stream::GatewayStream;
use super::worker_vm::{Unavailable, Wake, WorkerVm};
use super::Plugin;
use crate::config::model::FailurePolicy;
use crate::filter::{
    BodyFlow, Exchange, FilterCx, Flow, HttpFilter, LocalResponse, Phases, Resume, WholeFlow,
};
use crate::telemetry::metrics::PluginPhase;

/// One use of a plugin in a chain (its own root context and configuration).
pub struct WasmFilter {
    inner: Arc<Inner>,
}

struct Inner {
    plugin: Arc<Plugin>,
    use_id: u64,
    config: Bytes,
    /// The phases the chain calls this filter for (see [`plugin_phases`]).
    phases: Phases,
}

/// The phases a plugin takes part in: request headers (its stream context is created there)
/// and the log phase (`on_log`/`on_done`/`on_delete`) always, every other phase only when the
/// plugin exports its callback. Envoy skips a callback the module does not export in the same
/// way, so a plugin without `proxy_on_response_body` costs no body wrapper.
fn plugin_phases(plugin: &Plugin) -> Phases {
    let m = &plugin.module;
    [
        ("proxy_on_request_body", Phases::REQUEST_BODY),
        ("proxy_on_request_trailers", Phases::REQUEST_TRAILERS),
        ("proxy_on_response_headers", Phases::RESPONSE_HEADERS),
        ("proxy_on_response_body", Phases::RESPONSE_BODY),
        ("proxy_on_response_trailers", Phases::RESPONSE_TRAILERS),
    ]
    .into_iter()
    .filter(|(name, _)| m.exports_function(name))
    .fold(Phases::REQUEST_HEADERS | Phases::LOG, |acc, (_, p)| acc | p)
}

/// The plugin's per-request state, kept in the exchange.
struct StreamState {
    worker: Rc<WorkerVm>,
    ctx: u32,
    generation: u64,
    finished: bool,
    /// The plugin no longer takes part in this stream (fail_open, or the failure answer went out).
    bypass: bool,
    /// This stream's phases are timed for `sluice_plugin_phase_seconds` (1 stream in
    /// [`super::worker_vm::TIME_ONE_STREAM_IN`]; the others count the last timed value).
    timed: bool,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // An aborted stream never reached on_log: its context still needs on_done/on_delete.
        if !self.finished && !self.bypass {
            self.worker.finish_detached(self.generation, self.ctx);
        }
    }
}

impl WasmFilter {
    pub(crate) fn new(plugin: Arc<Plugin>, use_id: u64, config: Bytes) -> Self {
        let phases = plugin_phases(&plugin);
        WasmFilter {
            inner: Arc::new(Inner {
                plugin,
                use_id,
                config,
                phases,
            }),
        }
    }
}

/// What a phase decided, before it is shaped into the phase's return type.
enum Outcome {
    Continue,
    Buffer,
    Respond(Box<LocalResponse>),
    Pause(crate::filter::Pending),
}

impl Outcome {
    fn flow(self) -> Flow {
        match self {
            Outcome::Continue | Outcome::Buffer => Flow::Continue,
            Outcome::Respond(r) => Flow::Respond(r),
            Outcome::Pause(p) => Flow::Pause(p),
        }
    }
    fn body_flow(self) -> BodyFlow {
        match self {
            Outcome::Continue => BodyFlow::Continue,
            Outcome::Buffer => BodyFlow::Buffer,
            Outcome::Respond(r) => BodyFlow::Respond(r),
            Outcome::Pause(p) => BodyFlow::Pause(p),
        }
    }
}

fn is_grpc(ex: &Exchange) -> bool {
    ex.request
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The answer of a failed plugin under fail_closed (and fail_reload while backing off).
fn failure_response(ex: &Exchange) -> LocalResponse {
    if is_grpc(ex) {
        return LocalResponse::new(StatusCode::OK, "wasm_plugin_failed")
            .with_header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            )
            .with_header(
                HeaderName::from_static("grpc-status"),
                HeaderValue::from_static("14"),
            )
            .with_header(
                HeaderName::from_static("grpc-message"),
                HeaderValue::from_static("plugin unavailable"),
            );
    }
    LocalResponse::new(StatusCode::SERVICE_UNAVAILABLE, "wasm_plugin_failed")
        .with_body("plugin unavailable\n")
}

fn local_response(reply: LocalReply) -> LocalResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = LocalResponse::new(status, "wasm_plugin_local_response").with_body(reply.body);
    let mut headers = HeaderMap::with_capacity(reply.headers.len());
    for (k, v) in &reply.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
            headers.append(k, v);
        }
    }
    if let Some(g) = reply.grpc_status {
        // As Envoy: a gRPC local reply is trailers-only, HTTP 200, and its body becomes
        // `grpc-message` (gRPC clients ignore a body without framing).
        headers.insert(HeaderName::from_static("grpc-status"), HeaderValue::from(g));
        if !r.body.is_empty() {
            if let Ok(m) = HeaderValue::from_bytes(&grpc_message(&r.body)) {
                headers.insert(HeaderName::from_static("grpc-message"), m);
            }
        }
        headers
            .entry(http::header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/grpc"));
        r.status = StatusCode::OK;
        r.body = Default::default();
    }
    r.headers = headers;
    r
}

/// Percent-encodes a `grpc-message` value as the gRPC spec asks (bytes outside 0x20..=0x7E, and %).
fn grpc_message(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// The callback of one stream phase with its arguments: passed by value, no closure or box.
#[derive(Clone, Copy)]
enum Call {
    RequestHeaders { headers: usize, eos: bool },
    RequestBody { size: usize, eos: bool },
    RequestTrailers { trailers: usize },
    ResponseHeaders { headers: usize, eos: bool },
    ResponseBody { size: usize, eos: bool },
    ResponseTrailers { trailers: usize },
}

impl Call {
    fn run(self, vm: &mut Vm, ctx: u32, host: &mut GatewayStream<'_>) -> Result<Action, Failure> {
        match self {
            Call::RequestHeaders { headers, eos } => vm.on_request_headers(ctx, headers, eos, host),
            Call::RequestBody { size, eos } => vm.on_request_body(ctx, size, eos, host),
            Call::RequestTrailers { trailers } => vm.on_request_trailers(ctx, trailers, host),
            Call::ResponseHeaders { headers, eos } => {
                vm.on_response_headers(ctx, headers, eos, host)
            }
            Call::ResponseBody { size, eos } => vm.on_response_body(ctx, size, eos, host),
            Call::ResponseTrailers { trailers } => vm.on_response_trailers(ctx, trailers, host),
        }
    }
}

/// The number of fields of the response head for `proxy_on_response_headers`: the fields (raw
/// lines and map entries) and `:status`.
fn response_fields(cx: &FilterCx<'_>) -> usize {
    cx.ex.response.as_ref().map_or(0, |r| {
        let raw = r
            .extensions
            .get::<crate::h1::raw_fields::RawFields>()
            .map_or(0, |f| f.len());
        raw + r.headers.len() + 1
    })
}

/// What the entry of a whole response ran (see [`Inner::run_whole`]).
enum Whole {
    /// The headers callback only (it did not continue quietly, or the VM has no helper).
    Headers(CallResult),
    /// Both: the headers callback continued and left nothing; the body callback's result.
    Both(CallResult),
}

/// What a phase callback returned: the context, the action and the signals it left; `None`
/// when it continued and left nothing for the worker (see [`sluice_wasm::Vm::is_quiet`]).
type CallResult = Option<(u32, Action, sluice_wasm::Signals)>;

/// After a phase callback, with the VM borrowed: what it returned.
fn call_result(vm: &mut Vm, ctx: u32, action: Action) -> CallResult {
    if action == Action::Continue && vm.is_quiet() {
        return None;
    }
    Some((ctx, action, vm.take_signals(ctx)))
}

/// Facts about a phase that [`Inner::finish_phase`] needs after the callback.
struct Step {
    phase: PluginPhase,
    /// When the phase started, if it is timed.
    start: Option<Instant>,
    body_kind: Option<BufferType>,
    end_of_stream: bool,
    can_wait: bool,
    body_len: usize,
}

/// The facts of an untimed response headers phase, for [`Inner::finish_phase`].
fn headers_step() -> Step {
    Step {
        phase: PluginPhase::ResponseHeaders,
        start: None,
        body_kind: None,
        end_of_stream: true,
        can_wait: true,
        body_len: 0,
    }
}

/// The stream's context as a phase finds it.
enum Context {
    /// Created by an earlier phase: worker, context id, VM generation, timed.
    Live(Rc<WorkerVm>, u32, u64, bool),
    /// Not yet: this phase creates it, in the same VM borrow as its callback.
    New(Rc<WorkerVm>, bool),
}

impl Inner {
    /// Apply the failure policy to this stream: the plugin leaves the stream in any case.
    fn policy_outcome(&self, cx: &mut FilterCx<'_>) -> Outcome {
        if let Some(st) = cx.state::<StreamState>() {
            st.bypass = true;
        }
        match self.plugin.policy {
            FailurePolicy::FailOpen => Outcome::Continue,
            FailurePolicy::FailClosed | FailurePolicy::FailReload => {
                Outcome::Respond(Box::new(failure_response(cx.ex)))
            }
        }
    }

    /// Run one phase callback and turn what the plugin did into an outcome. The first phase of
    /// a stream also creates its context (`proxy_on_context_create`), in the same VM borrow and
    /// host set-up as the callback.
    fn run(
        self: &Arc<Self>,
        cx: &mut FilterCx<'_>,
        phase: PluginPhase,
        body: Option<(BufferType, &mut Bytes, bool)>,
        trailers: Option<(MapType, &mut HeaderMap)>,
        call: Call,
    ) -> Outcome {
        let context = match cx.state::<StreamState>() {
            Some(st) if st.bypass || st.finished => return Outcome::Continue,
            Some(st) => Context::Live(st.worker.clone(), st.ctx, st.generation, st.timed),
            None => {
                let worker = WorkerVm::get(&self.plugin);
                let timed = worker.time_next_stream();
                Context::New(worker, timed)
            }
        };
        let timed = match &context {
            Context::Live(_, _, _, t) | Context::New(_, t) => *t,
        };
        let start = (timed || self.plugin.figures.unsampled(phase)).then(Instant::now);
        let (body_kind, end_of_stream) = match &body {
            Some((k, _, eos)) => (Some(*k), *eos),
            None => (None, true),
        };
        let mut host = GatewayStream::new(cx.ex);
        if let Some((kind, data, _)) = body {
            host.body = Some((kind, data));
        }
        // Trailer phases run inside the body stream and cannot wait.
        let can_wait = trailers.is_none();
        host.trailers = trailers;
        let (worker, result, new_state) = match context {
            Context::Live(worker, ctx, generation, _) => {
                let r = worker.with_live_vm(generation, |vm| {
                    let action = call.run(vm, ctx, &mut host)?;
                    Ok(call_result(vm, ctx, action))
                });
                (worker, r.map(|r| (r, generation)), None)
            }
            Context::New(worker, _) => {
                let mut created = None;
                let r = worker.with_vm(self.use_id, &self.config, |vm, root| {
                    let (ctx, action) = match call {
                        // The usual first phase: created and called in one entry.
                        Call::RequestHeaders { headers, eos } => {
                            vm.begin_stream(root, headers, eos, &mut host)?
                        }
                        _ => {
                            let ctx = vm.create_stream(root)?;
                            (ctx, call.run(vm, ctx, &mut host))
                        }
                    };
                    created = Some(ctx);
                    Ok(call_result(vm, ctx, action?))
                });
                let generation = worker.generation();
                let state = StreamState {
                    worker: worker.clone(),
                    ctx: created.unwrap_or(0),
                    generation,
                    // A context that was never created needs no on_done/on_delete.
                    finished: created.is_none(),
                    bypass: created.is_none(),
                    timed,
                };
                (worker, r.map(|r| (r, generation)), Some(state))
            }
        };
        // The host's borrow of the exchange ends here (its last use).
        let body_len = host.body.as_ref().map_or(0, |(_, b)| b.len());
        if let Some(state) = new_state {
            cx.set_state(state);
        }
        let step = Step {
            phase,
            start,
            body_kind,
            end_of_stream,
            can_wait,
            body_len,
        };
        self.finish_phase(cx, step, worker, result)
    }

    /// A whole response's headers and body phases in one entry into the VM
    /// ([`sluice_wasm::Vm::on_response_whole`]): the body callback runs in the same entry when
    /// the headers callback continued and asked nothing of the stream. `None` when this stream
    /// takes the phases one by one: it has no context yet, or its phases are timed (each phase
    /// is timed on its own). A `WholeFlow::Headers(Flow::Continue)` leaves the body phase to the
    /// caller.
    fn run_whole(
        self: &Arc<Self>,
        cx: &mut FilterCx<'_>,
        headers: usize,
        data: &mut Bytes,
    ) -> Option<WholeFlow> {
        let figures = &self.plugin.figures;
        let (worker, ctx, generation) = match cx.state::<StreamState>() {
            Some(st) if st.bypass || st.finished => {
                return Some(WholeFlow::Body(BodyFlow::Continue))
            }
            Some(st) if !st.timed => (st.worker.clone(), st.ctx, st.generation),
            _ => return None,
        };
        if figures.unsampled(PluginPhase::ResponseHeaders)
            || figures.unsampled(PluginPhase::ResponseBody)
        {
            return None;
        }
        let size = data.len();
        let mut host = GatewayStream::new(cx.ex);
        host.body = Some((BufferType::HttpResponseBody, data));
        let r = worker.with_live_vm(generation, |vm| {
            Ok(match vm.on_response_whole(ctx, headers, size, &mut host)? {
                (_, Some(action)) => Whole::Both(call_result(vm, ctx, action)),
                (action, None) => Whole::Headers(call_result(vm, ctx, action)),
            })
        });
        // The host's borrow of the exchange ends here (its last use).
        let body_len = host.body.as_ref().map_or(0, |(_, b)| b.len());
        let (step, result) = match r {
            Ok(Whole::Both(result)) => {
                figures.phase_held(PluginPhase::ResponseHeaders);
                let step = Step {
                    phase: PluginPhase::ResponseBody,
                    start: None,
                    body_kind: Some(BufferType::HttpResponseBody),
                    end_of_stream: true,
                    can_wait: true,
                    body_len,
                };
                let outcome = self.finish_phase(cx, step, worker, Ok((result, generation)));
                return Some(WholeFlow::Body(outcome.body_flow()));
            }
            Ok(Whole::Headers(result)) => (headers_step(), Ok((result, generation))),
            Err(e) => (headers_step(), Err(e)),
        };
        let outcome = self.finish_phase(cx, step, worker, result);
        Some(WholeFlow::Headers(outcome.flow()))
    }

    /// The second half of [`Inner::run`]: record the phase's time, then act on what the plugin
    /// did (failure policy, local response, close, callouts, buffering, pause).
    fn finish_phase(
        self: &Arc<Self>,
        cx: &mut FilterCx<'_>,
        step: Step,
        worker: Rc<WorkerVm>,
        result: Result<(CallResult, u64), Unavailable>,
    ) -> Outcome {
        let Step {
            phase,
            start,
            body_kind,
            end_of_stream,
            can_wait,
            body_len,
        } = step;
        let figures = &self.plugin.figures;
        match start {
            Some(start) => figures.phase_done(phase, start),
            None => figures.phase_held(phase),
        }
        let ((ctx, action, signals), generation) = match result {
            // The common case: the plugin continued and asked for nothing else.
            Ok((None, _)) => return Outcome::Continue,
            Ok((Some(r), generation)) => (r, generation),
            Err(Unavailable::Failed) => return self.policy_outcome(cx),
        };
        let calls = worker.take_callouts(Some(ctx));
        if let Some(reply) = signals.local_reply {
            return Outcome::Respond(Box::new(local_response(*reply)));
        }
        if signals.close {
            return Outcome::Respond(Box::new(LocalResponse::new(
                StatusCode::BAD_GATEWAY,
                "wasm_plugin_closed_stream",
            )));
        }
        if action == Action::Continue || !can_wait {
            // Envoy still sends a callout the stream did not wait for; its answer comes later.
            for c in calls {
                worker.spawn_detached_callout(c);
            }
            return Outcome::Continue;
        }
        match body_kind {
            // StopIterationAndBuffer on a chunk: keep it and call again with the next one.
            Some(kind) if !end_of_stream && calls.is_empty() => {
                if body_len > self.plugin.module.info.limits.max_buffered_body {
                    let (status, details) = if kind == BufferType::HttpRequestBody {
                        (
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "wasm_plugin_request_body_too_large",
                        )
                    } else {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "wasm_plugin_response_body_too_large",
                        )
                    };
                    return Outcome::Respond(Box::new(LocalResponse::new(status, details)));
                }
                Outcome::Buffer
            }
            // Paused: the stream waits for the plugin to resume it (from a callout answer, a
            // gRPC stream event, a tick or another context), answer, or for the pause timeout.
            _ => {
                let waiting = Waiting::new(&self.plugin, worker, ctx, generation, calls);
                Outcome::Pause(self.wait(waiting))
            }
        }
    }

    /// Wait for the next thing that may resume the stream, then handle it in the resume step,
    /// with the stream's heads available to the plugin.
    fn wait(self: &Arc<Self>, mut waiting: Waiting) -> crate::filter::Pending {
        let this = self.clone();
        Box::pin(async move {
            let event = waiting.next().await;
            let resume: Resume =
                Box::new(move |cx: &mut FilterCx<'_>| this.resume(cx, waiting, event));
            resume
        })
    }

    fn resume(self: &Arc<Self>, cx: &mut FilterCx<'_>, mut w: Waiting, event: Event) -> Flow {
        let (worker, ctx, generation) = (w.worker.clone(), w.ctx, w.generation);
        match event {
            Event::Timeout => return self.pause_timed_out(cx, w),
            // Only a failed VM releases its paused streams.
            Event::Closed => return self.policy_outcome(cx).flow(),
            Event::Answer(_) | Event::Wake(_) => {}
        }
        let signals = {
            let mut host = GatewayStream::new(cx.ex);
            worker.with_live_vm(generation, |vm| {
                match event {
                    Event::Answer(answer) => answer.deliver(vm, Some(&mut host))?,
                    Event::Wake(Wake::Grpc(token, e)) => {
                        vm.on_grpc_stream_event(ctx, token, e, Some(&mut host))?
                    }
                    Event::Wake(Wake::Signals) | Event::Timeout | Event::Closed => {}
                }
                Ok(vm.take_signals(ctx))
            })
        };
        let signals = match signals {
            Ok(s) => s,
            Err(Unavailable::Failed) => return self.policy_outcome(cx).flow(),
        };
        w.add_calls(worker.take_callouts(Some(ctx)));
        if let Some(reply) = signals.local_reply {
            w.finish(cx);
            return Flow::respond(local_response(*reply));
        }
        if signals.close {
            w.finish(cx);
            return Flow::respond(LocalResponse::new(
                StatusCode::BAD_GATEWAY,
                "wasm_plugin_closed_stream",
            ));
        }
        if signals.continue_request || signals.continue_response {
            w.finish(cx);
            return Flow::Continue;
        }
        Flow::Pause(self.wait(w))
    }

    /// The plugin held the stream past `limits.pause_timeout`: its context ends, the event is
    /// counted, and the failure policy answers (the VM itself is fine and stays).
    fn pause_timed_out(self: &Arc<Self>, cx: &mut FilterCx<'_>, mut w: Waiting) -> Flow {
        let (worker, ctx, generation) = (w.worker.clone(), w.ctx, w.generation);
        // The context ends now: answers still in flight have nobody to go to.
        w.calls = FuturesUnordered::new();
        drop(w);
        sluice_wasm::failure::count_event(&self.plugin.name, FailureKind::PauseTimeout);
        tracing::warn!(plugin = %self.plugin.name, timeout = ?self.plugin.module.info.limits.pause_timeout, policy = ?self.plugin.policy, "plugin kept the stream paused past its pause_timeout; applying the failure policy");
        if let Some(st) = cx.state::<StreamState>() {
            st.finished = true;
        }
        let _ = worker.with_live_vm(generation, |vm| vm.finish_context(ctx));
        self.policy_outcome(cx).flow()
    }
}

/// What woke a paused stream.
enum Event {
    Answer(Answer),
    Wake(Wake),
    Timeout,
    /// The VM went away (its paused streams are released).
    Closed,
}

type CalloutFuture = Pin<Box<dyn Future<Output = Answer>>>;

/// A stream its plugin paused: the callouts it waits for, its wake-up channel, its deadline.
struct Waiting {
    worker: Rc<WorkerVm>,
    ctx: u32,
    generation: u64,
    wakes: tokio::sync::mpsc::UnboundedReceiver<Wake>,
    calls: FuturesUnordered<CalloutFuture>,
    deadline: tokio::time::Instant,
}

impl Waiting {
    fn new(
        plugin: &Plugin,
        worker: Rc<WorkerVm>,
        ctx: u32,
        generation: u64,
        calls: Vec<sluice_wasm::Callout>,
    ) -> Self {
        let wakes = worker.pause(ctx);
        let mut w = Waiting {
            worker,
            ctx,
            generation,
            wakes,
            calls: FuturesUnordered::new(),
            deadline: tokio::time::Instant::now() + plugin.module.info.limits.pause_timeout,
        };
        w.add_calls(calls);
        w
    }

    fn add_calls(&mut self, calls: Vec<sluice_wasm::Callout>) {
        for c in calls {
            self.calls.push(Box::pin(callout::send(c)));
        }
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            Some(answer) = self.calls.next(), if !self.calls.is_empty() => Event::Answer(answer),
            wake = self.wakes.recv() => wake.map_or(Event::Closed, Event::Wake),
            () = tokio::time::sleep_until(self.deadline) => Event::Timeout,
        }
    }

    /// The stream goes on: gRPC events already queued for it are delivered with its heads, and
    /// callouts still in flight are answered in the background.
    fn finish(mut self, cx: &mut FilterCx<'_>) {
        self.worker.unpause(self.ctx);
        while let Ok(wake) = self.wakes.try_recv() {
            if let Wake::Grpc(token, e) = wake {
                let mut host = GatewayStream::new(cx.ex);
                let _ = self.worker.with_live_vm(self.generation, |vm| {
                    vm.on_grpc_stream_event(self.ctx, token, e, Some(&mut host))?;
                    vm.take_signals(self.ctx);
                    Ok(())
                });
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.worker.unpause(self.ctx);
        let calls = std::mem::take(&mut self.calls);
        if calls.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (worker, generation) = (Rc::downgrade(&self.worker), self.generation);
        tokio::task::spawn_local(async move {
            let mut calls = calls;
            while let Some(answer) = calls.next().await {
                let Some(w) = worker.upgrade() else { return };
                let _ = w.with_live_vm(generation, |vm| answer.deliver(vm, None));
                w.take_callouts(None);
            }
        });
    }
}

fn header_count(ex: &Exchange) -> usize {
    // Envoy counts the pseudo headers too, and the request id the host lists on first read.
    ex.request.headers.len() + 4 + usize::from(ex.request_id_unlisted)
}

impl HttpFilter for WasmFilter {
    fn name(&self) -> &str {
        &self.inner.plugin.name
    }

    fn phases(&self) -> Phases {
        self.inner.phases
    }

    /// The host calls reach the response's fields through `raw_fields` (see `GatewayStream`):
    /// a plugin that sets a field the upstream did not send leaves the upstream's lines raw.
    fn takes_raw_response(&self) -> bool {
        true
    }

    /// The host's request-header calls go through `GatewayStream::headers`, which lists the
    /// gateway's request id first; the properties add it too.
    fn lists_request_id_on_read(&self) -> bool {
        true
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let n = header_count(cx.ex);
        let eos = cx.ex.info.headers_end_stream;
        self.inner
            .run(
                cx,
                PluginPhase::RequestHeaders,
                None,
                None,
                Call::RequestHeaders { headers: n, eos },
            )
            .flow()
    }

    fn on_request_body(
        &self,
        cx: &mut FilterCx<'_>,
        data: &mut Bytes,
        end_of_stream: bool,
    ) -> BodyFlow {
        let len = data.len();
        self.inner
            .run(
                cx,
                PluginPhase::RequestBody,
                Some((BufferType::HttpRequestBody, data, end_of_stream)),
                None,
                Call::RequestBody {
                    size: len,
                    eos: end_of_stream,
                },
            )
            .body_flow()
    }

    fn on_request_trailers(&self, cx: &mut FilterCx<'_>, trailers: &mut HeaderMap) -> Flow {
        let n = trailers.len();
        self.inner
            .run(
                cx,
                PluginPhase::RequestTrailers,
                None,
                Some((MapType::RequestTrailers, trailers)),
                Call::RequestTrailers { trailers: n },
            )
            .flow()
    }

    fn on_response_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let n = response_fields(cx);
        self.inner
            .run(
                cx,
                PluginPhase::ResponseHeaders,
                None,
                None,
                Call::ResponseHeaders {
                    headers: n,
                    eos: false,
                },
            )
            .flow()
    }

    fn on_response_body(
        &self,
        cx: &mut FilterCx<'_>,
        data: &mut Bytes,
        end_of_stream: bool,
    ) -> BodyFlow {
        let len = data.len();
        self.inner
            .run(
                cx,
                PluginPhase::ResponseBody,
                Some((BufferType::HttpResponseBody, data, end_of_stream)),
                None,
                Call::ResponseBody {
                    size: len,
                    eos: end_of_stream,
                },
            )
            .body_flow()
    }

    fn on_response_whole(&self, cx: &mut FilterCx<'_>, data: &mut Bytes) -> WholeFlow {
        let n = response_fields(cx);
        let flow = match self.inner.run_whole(cx, n, data) {
            Some(flow) => flow,
            None => WholeFlow::Headers(self.on_response_headers(cx)),
        };
        match flow {
            // The body callback did not run in the same entry: the stream goes on to it.
            WholeFlow::Headers(Flow::Continue) => {
                WholeFlow::Body(self.on_response_body(cx, data, true))
            }
            other => other,
        }
    }

    fn on_response_trailers(&self, cx: &mut FilterCx<'_>, trailers: &mut HeaderMap) -> Flow {
        let n = trailers.len();
        self.inner
            .run(
                cx,
                PluginPhase::ResponseTrailers,
                None,
                Some((MapType::ResponseTrailers, trailers)),
                Call::ResponseTrailers { trailers: n },
            )
            .flow()
    }

    fn on_log(&self, cx: &mut FilterCx<'_>) {
        let Some(st) = cx.state::<StreamState>() else {
            return;
        };
        if st.bypass || st.finished {
            return;
        }
        st.finished = true;
        let (worker, ctx, generation) = (st.worker.clone(), st.ctx, st.generation);
        let figures = &self.inner.plugin.figures;
        let start = (st.timed || figures.unsampled(PluginPhase::Log)).then(Instant::now);
        let mut host = GatewayStream::new(cx.ex);
        // on_log, on_done and on_delete: one VM borrow, one host set-up, one timing.
        let called_out = worker.with_live_vm(generation, |vm| {
            vm.end_stream(ctx, &mut host)?;
            Ok(vm.has_callouts())
        });
        match start {
            Some(start) => figures.phase_done(PluginPhase::Log, start),
            None => figures.phase_held(PluginPhase::Log),
        }
        if matches!(called_out, Ok(true)) {
            // Calls made in these last callbacks go out detached.
            worker.take_callouts(None);
        }
    }
}
