//! A plugin use as an [`HttpFilter`]: each stream is a context in this worker's VM of the plugin;
//! phases call the plugin's callbacks, act on what it asked (local response, callouts, body
//! buffering), and apply the failure policy when the VM fails.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sluice_wasm::{Action, BufferType, Failure, LocalReply, MapType, Signals, Vm};

use super::callout::{self, Answer};
use super::stream::GatewayStream;
use super::worker_vm::{Unavailable, WorkerVm};
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
        if action == Action::Pause && !calls.is_empty() {
            return Outcome::Pause(self.pause(worker, ctx, generation, calls));
        }
        for c in calls {
            tracing::debug!(plugin = %self.plugin.name, token = c.token, "callout dropped: the plugin did not pause for it");
        }
        match (action, body_kind) {
            (Action::Pause, Some(kind)) if !end_of_stream => {
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
            _ => Outcome::Continue,
        }
    }

    /// Wait for the stream's callouts, then deliver their answers in the resume step, with the
    /// stream's heads available to the plugin.
    fn pause(
        self: &Arc<Self>,
        worker: Rc<WorkerVm>,
        ctx: u32,
        generation: u64,
        calls: Vec<sluice_wasm::Callout>,
    ) -> crate::filter::Pending {
        let this = self.clone();
        Box::pin(async move {
            let answers =
                futures_util::future::join_all(calls.into_iter().map(callout::send)).await;
            let resume: Resume = Box::new(move |cx: &mut FilterCx<'_>| {
                this.resume(cx, worker, ctx, generation, answers)
            });
            resume
        })
    }

    fn resume(
        self: &Arc<Self>,
        cx: &mut FilterCx<'_>,
        worker: Rc<WorkerVm>,
        ctx: u32,
        generation: u64,
        answers: Vec<Answer>,
    ) -> Flow {
        let mut signals = Signals::default();
        for answer in answers {
            let mut host = GatewayStream::new(cx.ex);
            let r = worker.with_live_vm(generation, |vm| {
                answer.deliver(vm, Some(&mut host))?;
                Ok(vm.take_signals(ctx))
            });
            match r {
                Ok(s) => {
                    signals.continue_request |= s.continue_request;
                    signals.continue_response |= s.continue_response;
                    signals.close |= s.close;
                    if s.local_reply.is_some() {
                        signals.local_reply = s.local_reply;
                        break;
                    }
                }
                Err(Unavailable::Failed) => return self.policy_outcome(cx).flow(),
            }
        }
        let calls = worker.take_callouts(Some(ctx));
        if let Some(reply) = signals.local_reply {
            return Flow::Respond(local_response(reply));
        }
        if signals.close {
            return Flow::Respond(LocalResponse::new(
                StatusCode::BAD_GATEWAY,
                "wasm_plugin_closed_stream",
            ));
        }
        if !signals.continue_request && !signals.continue_response && !calls.is_empty() {
            return Flow::Pause(self.pause(worker, ctx, generation, calls));
        }
        if !signals.continue_request && !signals.continue_response {
            tracing::debug!(plugin = %self.plugin.name, "plugin neither resumed nor answered after its callouts; continuing");
        }
        Flow::Continue
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
