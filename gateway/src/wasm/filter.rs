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
    BodyFlow, Exchange, FilterCx, Flow, HttpFilter, LocalResponse, Phases, Resume,
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
}

/// The plugin's per-request state, kept in the exchange.
struct StreamState {
    worker: Rc<WorkerVm>,
    ctx: u32,
    generation: u64,
    finished: bool,
    /// The plugin no longer takes part in this stream (fail_open, or the failure answer went out).
    bypass: bool,
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
        WasmFilter {
            inner: Arc::new(Inner {
                plugin,
                use_id,
                config,
            }),
        }
    }
}

/// Where a stream stands with the plugin when a phase starts.
enum Entered {
    /// The stream's context in the worker's VM (worker, context id, VM generation).
    Stream(Rc<WorkerVm>, u32, u64),
    /// The plugin sits this stream out.
    Skip,
    /// The VM is down: the failure policy's outcome.
    Failed(Outcome),
}

/// What a phase decided, before it is shaped into the phase's return type.
enum Outcome {
    Continue,
    Buffer,
    Respond(LocalResponse),
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

/// Whether a request with these headers has no body.
fn request_ends_with_headers(ex: &Exchange) -> bool {
    let h = &ex.request.headers;
    !h.contains_key(http::header::TRANSFER_ENCODING)
        && h.get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

type Callback<'a> =
    dyn FnOnce(&mut Vm, u32, &mut GatewayStream<'_>) -> Result<Action, Failure> + 'a;

impl Inner {
    /// The stream's context, creating it on first use.
    fn enter(&self, cx: &mut FilterCx<'_>) -> Entered {
        if let Some(st) = cx.state::<StreamState>() {
            if st.bypass || st.finished {
                return Entered::Skip;
            }
            return Entered::Stream(st.worker.clone(), st.ctx, st.generation);
        }
        let worker = WorkerVm::get(&self.plugin);
        match worker.with_vm(self.use_id, &self.config, |vm, root| vm.create_stream(root)) {
            Ok(ctx) => {
                let generation = worker.generation();
                cx.set_state(StreamState {
                    worker: worker.clone(),
                    ctx,
                    generation,
                    finished: false,
                    bypass: false,
                });
                Entered::Stream(worker, ctx, generation)
            }
            Err(Unavailable::Failed) => {
                cx.set_state(StreamState {
                    worker,
                    ctx: 0,
                    generation: 0,
                    finished: true,
                    bypass: true,
                });
                Entered::Failed(self.policy_outcome(cx))
            }
        }
    }

    /// Apply the failure policy to this stream: the plugin leaves the stream in any case.
    fn policy_outcome(&self, cx: &mut FilterCx<'_>) -> Outcome {
        if let Some(st) = cx.state::<StreamState>() {
            st.bypass = true;
        }
        match self.plugin.policy {
            FailurePolicy::FailOpen => Outcome::Continue,
            FailurePolicy::FailClosed | FailurePolicy::FailReload => {
                Outcome::Respond(failure_response(cx.ex))
            }
        }
    }

    /// Run one phase callback and turn what the plugin did into an outcome.
    fn run(
        self: &Arc<Self>,
        cx: &mut FilterCx<'_>,
        phase: PluginPhase,
        body: Option<(BufferType, &mut Bytes, bool)>,
        trailers: Option<(MapType, &mut HeaderMap)>,
        callback: Box<Callback<'_>>,
    ) -> Outcome {
        let start = Instant::now();
        let (worker, ctx, generation) = match self.enter(cx) {
            Entered::Stream(w, c, g) => (w, c, g),
            Entered::Skip => return Outcome::Continue,
            Entered::Failed(o) => return o,
        };
        let (body_kind, end_of_stream) = match &body {
            Some((k, _, eos)) => (Some(*k), *eos),
            None => (None, true),
        };
        // Trailer phases run inside the body stream and cannot wait.
        let can_wait = trailers.is_none();
        let body_len;
        let result = {
            let mut host = GatewayStream::new(cx.ex);
            if let Some((kind, data, _)) = body {
                host.body = Some((kind, data));
            }
            host.trailers = trailers;
            let r = worker.with_live_vm(generation, |vm| {
                let action = callback(vm, ctx, &mut host)?;
                Ok((action, vm.take_signals(ctx)))
            });
            body_len = host.body.as_ref().map_or(0, |(_, b)| b.len());
            r
        };
        self.plugin.figures.phase_done(phase, start);
        let (action, signals) = match result {
            Ok(r) => r,
            Err(Unavailable::Failed) => return self.policy_outcome(cx),
        };
        let calls = worker.take_callouts(Some(ctx));
        if let Some(reply) = signals.local_reply {
            return Outcome::Respond(local_response(reply));
        }
        if signals.close {
            return Outcome::Respond(LocalResponse::new(
                StatusCode::BAD_GATEWAY,
                "wasm_plugin_closed_stream",
            ));
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
                    return Outcome::Respond(LocalResponse::new(status, details));
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
            return Flow::Respond(local_response(reply));
        }
        if signals.close {
            w.finish(cx);
            return Flow::Respond(LocalResponse::new(
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
    // Envoy counts the pseudo headers too.
    ex.request.headers.len() + 4
}

impl HttpFilter for WasmFilter {
    fn name(&self) -> &str {
        &self.inner.plugin.name
    }

    fn phases(&self) -> Phases {
        Phases::ALL
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let n = header_count(cx.ex);
        let eos = request_ends_with_headers(cx.ex);
        self.inner
            .run(
                cx,
                PluginPhase::RequestHeaders,
                None,
                None,
                Box::new(move |vm, ctx, host| vm.on_request_headers(ctx, n, eos, host)),
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
                Box::new(move |vm, ctx, host| vm.on_request_body(ctx, len, end_of_stream, host)),
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
                Box::new(move |vm, ctx, host| vm.on_request_trailers(ctx, n, host)),
            )
            .flow()
    }

    fn on_response_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let n = cx.ex.response.as_ref().map_or(0, |r| r.headers.len() + 1);
        self.inner
            .run(
                cx,
                PluginPhase::ResponseHeaders,
                None,
                None,
                Box::new(move |vm, ctx, host| vm.on_response_headers(ctx, n, false, host)),
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
                Box::new(move |vm, ctx, host| vm.on_response_body(ctx, len, end_of_stream, host)),
            )
            .body_flow()
    }

    fn on_response_trailers(&self, cx: &mut FilterCx<'_>, trailers: &mut HeaderMap) -> Flow {
        let n = trailers.len();
        self.inner
            .run(
                cx,
                PluginPhase::ResponseTrailers,
                None,
                Some((MapType::ResponseTrailers, trailers)),
                Box::new(move |vm, ctx, host| vm.on_response_trailers(ctx, n, host)),
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
        let start = Instant::now();
        let mut host = GatewayStream::new(cx.ex);
        let _ = worker.with_live_vm(generation, |vm| {
            vm.on_log(ctx, &mut host)?;
            vm.finish_context(ctx)
        });
        self.inner
            .plugin
            .figures
            .phase_done(PluginPhase::Log, start);
        worker.take_callouts(None);
    }
}
