//! Running one plugin against one request without a network: `sluice plugin test` and the Rust
//! plugin test kit (`sdk/rust`) both drive the production adapter ([`crate::wasm::WasmFilter`])
//! through the same chain functions and body filter the proxy uses, on a single-threaded tokio
//! runtime with a `LocalSet`, as a worker does. The upstream is a canned response, callouts are
//! answered by handlers registered per cluster, and what the plugin logged is captured.
//!
//! What is not the gateway: there is no listener, router or other filter, so headers the proxy
//! adds around the chain (`x-request-id`, `x-forwarded-*`, hop-by-hop removal) are not added.

mod capture;
pub mod cli;
mod types;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

pub use capture::{LogLine, LogSource, PluginFailure};
pub use types::{
    CalloutRecord, CalloutRequest, ClientResponse, LocalReply, MetricReading, Outcome, TestRequest,
    TestResponse, UpstreamRequest,
};

use crate::body::{self, ProxyBody};
use crate::config::model::{PluginConfig, DEFAULT_MAX_REQUEST_BODY_SIZE};
use crate::filter::chain::{Chain, ChainEntry, FilterList, SharedExchange};
use crate::filter::{Exchange, LocalResponse, RequestInfo};
use crate::proxy::body_filter::FilteredBody;
use crate::services::Services;
use crate::upstream::{UpstreamError, UpstreamErrorKind};
use crate::wasm::Plugin;
use crate::worker::{self, DispatchFuture, Dispatcher};

/// Local details the adapter gives the response of a failed plugin.
const PLUGIN_FAILED: &str = "wasm_plugin_failed";

/// Why a plugin could not be tested.
#[derive(Debug, thiserror::Error)]
pub enum PluginTestError {
    /// The wasm file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The plugin settings are not a valid plugin config.
    #[error("invalid plugin settings: {0}")]
    Settings(String),
    /// The module did not compile or link, its start functions failed, or it rejected (or
    /// trapped on) its configuration. `logs` holds what the plugin logged meanwhile (usually why).
    #[error("{message}{}", render_logs(logs))]
    Load { message: String, logs: Vec<LogLine> },
    /// The test request or response is malformed (bad header name, URI, method).
    #[error("invalid test input: {0}")]
    Input(String),
    /// The tokio runtime could not be created.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn render_logs(logs: &[LogLine]) -> String {
    logs.iter()
        .map(|l| format!("\n  plugin log [{}]: {}", l.level, l.message))
        .collect()
}

/// Answers an http callout made to one cluster.
pub type CallHandler = Box<dyn Fn(&CalloutRequest) -> TestResponse>;

/// One plugin (with one configuration) ready to handle test requests. Requests run one after the
/// other in the same VM, as requests on one worker do: state a plugin keeps in its root context
/// carries over, and after a VM failure later requests get the failure policy.
pub struct Harness {
    plugin: Arc<Plugin>,
    chain: Chain,
    /// Declared before `rt`: its tasks (plugin timers) are dropped while the runtime still exists.
    local: tokio::task::LocalSet,
    rt: tokio::runtime::Runtime,
    handlers: Rc<RefCell<HashMap<String, CallHandler>>>,
}

impl Harness {
    /// Build the plugin of `cfg` from `wasm` (compile, start, configure: the checks `sluice
    /// check` makes). `cfg.wasm` and `cfg.url` are ignored.
    ///
    /// # Errors
    /// [`PluginTestError::Load`] when the module or its configuration is rejected;
    /// [`PluginTestError::Runtime`] when no runtime can be created.
    pub fn new(cfg: &PluginConfig, wasm: &[u8]) -> Result<Self, PluginTestError> {
        let services = Services::new();
        let sink = Arc::new(Mutex::new(capture::Captured::default()));
        let built = {
            let _logs = tracing::subscriber::set_default(capture::subscriber(sink.clone()));
            crate::wasm::build_plugin_bytes(cfg, wasm, &services)
                .and_then(|p| p.filter(None).map(|f| (p, f)))
        };
        let (plugin, filter) = built.map_err(|message| PluginTestError::Load {
            message,
            logs: std::mem::take(&mut sink.lock().unwrap_or_else(|p| p.into_inner()).logs),
        })?;
        let chain = Chain {
            listener: Some(Arc::new(FilterList::new(vec![ChainEntry::new(filter)]))),
            route: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PluginTestError::Runtime)?;
        Ok(Harness {
            plugin,
            chain,
            local: tokio::task::LocalSet::new(),
            rt,
            handlers: Rc::new(RefCell::new(HashMap::new())),
        })
    }

    /// [`Harness::new`] with settings given as JSON (the keys of a `plugins:` entry in the config
    /// file: `name`, `root_id`, `config`, `vm_config`, `failure_policy`, `limits`, ...).
    ///
    /// # Errors
    /// As [`Harness::new`]; [`PluginTestError::Settings`] when `settings` is not a plugin entry.
    pub fn from_settings(
        settings: serde_json::Value,
        wasm: &[u8],
    ) -> Result<Self, PluginTestError> {
        let cfg: PluginConfig = serde_json::from_value(settings)
            .map_err(|e| PluginTestError::Settings(e.to_string()))?;
        Harness::new(&cfg, wasm)
    }

    /// The built plugin (its name, ABI and hash are in [`Plugin::info_json`]).
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Answer http callouts to `cluster` with `handler` (replacing an earlier one). A callout to a
    /// cluster without a handler fails, as one to an unknown cluster does in the gateway.
    pub fn on_http_call(&self, cluster: &str, handler: CallHandler) {
        self.handlers
            .borrow_mut()
            .insert(cluster.to_string(), handler);
    }

    /// Send `request` through the plugin; if it reaches the upstream, answer it with `response`.
    ///
    /// # Errors
    /// [`PluginTestError::Input`] for a malformed request or response. A plugin failure is not an
    /// error: it is in [`Outcome::failure`].
    pub fn run(
        &self,
        request: &TestRequest,
        response: &TestResponse,
    ) -> Result<Outcome, PluginTestError> {
        let (head, req_body) = request.to_http()?;
        let upstream = response.to_http()?;
        let sink = Arc::new(Mutex::new(capture::Captured::default()));
        let calls = Rc::new(RefCell::new(Vec::new()));
        let previous = worker::set_dispatch_override(Some(self.dispatcher(calls.clone())));
        let result = {
            let _logs = tracing::subscriber::set_default(capture::subscriber(sink.clone()));
            self.local
                .block_on(&self.rt, self.exchange(head, req_body, upstream))
        };
        worker::set_dispatch_override(previous);
        let mut out = result;
        out.callouts = calls.take();
        let captured = std::mem::take(&mut *sink.lock().unwrap_or_else(|p| p.into_inner()));
        out.logs = captured.logs;
        out.host_messages = captured.host;
        out.failure = captured.failure;
        let failed_before = out
            .local_response
            .as_ref()
            .is_some_and(|l| l.details == PLUGIN_FAILED);
        if out.failure.is_none() && failed_before {
            out.failure = Some(PluginFailure {
                kind: "unavailable".into(),
                message: "the plugin's VM failed on an earlier request".into(),
            });
        }
        out.metrics = sluice_wasm::metrics::plugin_metrics(self.plugin.name())
            .into_iter()
            .map(MetricReading::from)
            .collect();
        Ok(out)
    }

    /// The stand-in for the upstream pools: looks up the cluster's handler.
    fn dispatcher(&self, calls: Rc<RefCell<Vec<CalloutRecord>>>) -> Dispatcher {
        let handlers = self.handlers.clone();
        Rc::new(
            move |cluster: &str, req: Request<ProxyBody>, _timeout: Duration| -> DispatchFuture {
                let handlers = handlers.clone();
                let calls = calls.clone();
                let cluster: Arc<str> = cluster.into();
                Box::pin(async move {
                    let (parts, body) = req.into_parts();
                    let body = match body.collect().await {
                        Ok(c) => c.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    let request = CalloutRequest {
                        cluster: cluster.to_string(),
                        method: parts.method.to_string(),
                        path: parts.uri.to_string(),
                        headers: parts.headers,
                        body,
                    };
                    let answer = handlers.borrow().get(&*cluster).map(|h| h(&request));
                    let answered = match answer.as_ref() {
                        Some(a) => a.to_http(),
                        None => Err(PluginTestError::Input(format!(
                            "no test handler for cluster {cluster}"
                        ))),
                    };
                    calls.borrow_mut().push(CalloutRecord {
                        request,
                        status: answered.as_ref().ok().map(|r| r.status().as_u16()),
                    });
                    answered.map_err(|e| UpstreamError {
                        kind: UpstreamErrorKind::NoHealthyEndpoint,
                        cluster,
                        detail: e.to_string(),
                    })
                })
            },
        )
    }

    /// The request path of the proxy, with `upstream` as the upstream's answer.
    async fn exchange(
        &self,
        head: http::request::Parts,
        req_body: ProxyBody,
        upstream: Response<ProxyBody>,
    ) -> Outcome {
        let info = RequestInfo {
            client_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 40000)),
            local_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            listener: "plugin-test".into(),
            scheme: "http",
            start: Instant::now(),
            worker: 0,
            tls: None,
            headers_end_stream: req_body.is_end_stream(),
        };
        let ex: SharedExchange = Rc::new(RefCell::new(Exchange::new(info, head)));
        let chain = &self.chain;
        let limit = DEFAULT_MAX_REQUEST_BODY_SIZE.bytes() as usize;
        let mut out = Outcome::default();

        if let Some(r) = chain.request_headers(&ex).await {
            return self.answer_locally(&ex, *r, out).await;
        }
        let filtered = FilteredBody::wrap(req_body, chain, &ex, false, limit);
        let (body, trailers) = match collect(filtered).await {
            Ok(b) => b,
            Err(r) => return self.answer_locally(&ex, r(&ex), out).await,
        };
        {
            let e = ex.borrow();
            out.upstream_request = Some(UpstreamRequest {
                method: e.request.method.to_string(),
                path: e.request.uri.to_string(),
                headers: e.request.headers.clone(),
                body,
                trailers,
            });
        }

        let (parts, resp_body) = upstream.into_parts();
        ex.borrow_mut().response = Some(parts);
        if let Some(r) = chain.response_headers(&ex).await {
            // A response filter replaced the upstream's answer: no second pass (as the proxy).
            let local_body = set_local(&ex, &r, &mut out);
            return self.finish(&ex, local_body, HeaderMap::new(), out);
        }
        let filtered = FilteredBody::wrap(resp_body, chain, &ex, true, limit);
        match collect(filtered).await {
            Ok((body, trailers)) => self.finish(&ex, body, trailers, out),
            Err(r) => {
                let r = r(&ex);
                let local_body = set_local(&ex, &r, &mut out);
                self.finish(&ex, local_body, HeaderMap::new(), out)
            }
        }
    }

    /// A filter answered: run the response phases over the local response, as the proxy does.
    async fn answer_locally(
        &self,
        ex: &SharedExchange,
        r: LocalResponse,
        mut out: Outcome,
    ) -> Outcome {
        let mut local_body = set_local(ex, &r, &mut out);
        if let Some(r2) = self.chain.response_headers(ex).await {
            local_body = set_local(ex, &r2, &mut out);
        }
        self.finish(ex, local_body, HeaderMap::new(), out)
    }

    /// Record the response the client gets and run the log phase.
    fn finish(
        &self,
        ex: &SharedExchange,
        body: Bytes,
        trailers: HeaderMap,
        mut out: Outcome,
    ) -> Outcome {
        self.chain.log(&mut ex.borrow_mut());
        let e = ex.borrow();
        let (status, headers) = match &e.response {
            Some(p) => (p.status.as_u16(), p.headers.clone()),
            None => (StatusCode::BAD_GATEWAY.as_u16(), HeaderMap::new()),
        };
        out.response = ClientResponse {
            status,
            headers,
            body,
            trailers,
        };
        out
    }
}

/// What a filtered body stopped with, read from the exchange once the body is dropped.
type Stopped = Box<dyn FnOnce(&SharedExchange) -> LocalResponse>;

/// Read a filtered body to its end; a filter that answered locally is returned as `Err`.
async fn collect(body: ProxyBody) -> Result<(Bytes, HeaderMap), Stopped> {
    match body.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned().unwrap_or_default();
            Ok((c.to_bytes(), trailers))
        }
        Err(e) => {
            let reason = e.to_string();
            Err(Box::new(move |ex: &SharedExchange| {
                ex.borrow_mut().pending_local.take().unwrap_or_else(|| {
                    LocalResponse::new(StatusCode::BAD_GATEWAY, "body_error")
                        .with_body(format!("{reason}\n"))
                })
            }))
        }
    }
}

/// Make `r` the exchange's response (as the proxy's local answer does) and note it.
fn set_local(ex: &SharedExchange, r: &LocalResponse, out: &mut Outcome) -> Bytes {
    let mut e = ex.borrow_mut();
    e.local_details = Some(r.details);
    let mut resp = Response::new(());
    *resp.status_mut() = r.status;
    *resp.headers_mut() = r.headers.clone();
    if !r.body.is_empty() && !resp.headers().contains_key(header::CONTENT_TYPE) {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    e.response = Some(resp.into_parts().0);
    out.local_response = Some(LocalReply {
        status: r.status.as_u16(),
        headers: r.headers.clone(),
        body: r.body.clone(),
        details: r.details,
    });
    r.body.clone()
}

/// A body of `data` then `trailers`, as a client or upstream would stream it.
pub(crate) fn test_body(data: Bytes, trailers: Option<HeaderMap>) -> ProxyBody {
    match trailers {
        None => body::full(data),
        Some(t) => {
            let frames = [
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(data)),
                Ok(http_body::Frame::trailers(t)),
            ];
            body::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames,
            )))
        }
    }
}
