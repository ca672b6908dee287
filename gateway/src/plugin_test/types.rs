//! What goes into a plugin test (the client's request, the upstream's canned response) and what
//! comes out (the request the upstream saw, the response the client got, logs, callouts, metrics).

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{test_body, LogLine, PluginFailure, PluginTestError};
use crate::body::ProxyBody;

/// The request a client sends. Invalid names or values are reported when the test runs.
#[derive(Clone, Debug)]
pub struct TestRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    trailers: Option<Vec<(String, String)>>,
}

impl TestRequest {
    /// A request with `method` (`GET`, `POST`...) for `path` (origin form: `/a/b?c=d`).
    pub fn new(method: &str, path: &str) -> Self {
        TestRequest {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            trailers: None,
        }
    }

    /// A GET request for `path`.
    pub fn get(path: &str) -> Self {
        TestRequest::new("GET", path)
    }

    /// A POST request for `path`.
    pub fn post(path: &str) -> Self {
        TestRequest::new("POST", path)
    }

    /// Add a header (repeat the call for several values).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Set the body. `content-length` is added unless a length or transfer encoding is given.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Add a trailer (the body is then sent chunked).
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .get_or_insert_with(Vec::new)
            .push((name.to_string(), value.to_string()));
        self
    }

    /// The request head as hyper hands it to the proxy, and its body. Adds `host: localhost` when
    /// no Host is given (every HTTP/1.1 client sends one) and the framing header a client would.
    pub(crate) fn to_http(&self) -> Result<(http::request::Parts, ProxyBody), PluginTestError> {
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| PluginTestError::Input(format!("bad method {:?}", self.method)))?;
        let uri: http::Uri = self
            .path
            .parse()
            .map_err(|e| PluginTestError::Input(format!("bad path {:?}: {e}", self.path)))?;
        let mut headers = header_map(&self.headers)?;
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        let framed = headers.contains_key(header::CONTENT_LENGTH)
            || headers.contains_key(header::TRANSFER_ENCODING);
        if !framed && self.trailers.is_some() {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        } else if !framed && !self.body.is_empty() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        }
        let trailers = self.trailers.as_deref().map(header_map).transpose()?;
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        Ok((req.into_parts().0, test_body(self.body.clone(), trailers)))
    }
}

/// A response: the upstream's canned answer, or a callout's.
#[derive(Clone, Debug)]
pub struct TestResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    trailers: Option<Vec<(String, String)>>,
}

impl Default for TestResponse {
    fn default() -> Self {
        TestResponse::ok()
    }
}

impl TestResponse {
    /// `200 OK` with no headers and no body.
    pub fn ok() -> Self {
        TestResponse::status(200)
    }

    /// A response with `status`.
    pub fn status(status: u16) -> Self {
        TestResponse {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            trailers: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Set the body (headers are left as given: add `content-length` yourself if it matters).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Add a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .get_or_insert_with(Vec::new)
            .push((name.to_string(), value.to_string()));
        self
    }

    pub(crate) fn to_http(&self) -> Result<Response<ProxyBody>, PluginTestError> {
        let status = StatusCode::from_u16(self.status)
            .map_err(|_| PluginTestError::Input(format!("bad status {}", self.status)))?;
        let headers = header_map(&self.headers)?;
        let trailers = self.trailers.as_deref().map(header_map).transpose()?;
        let mut resp = Response::new(test_body(self.body.clone(), trailers));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }
}

fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap, PluginTestError> {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| PluginTestError::Input(format!("bad header name {k:?}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| PluginTestError::Input(format!("bad value for header {k}: {v:?}")))?;
        map.append(name, value);
    }
    Ok(map)
}

fn first<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
    map.get(name).and_then(|v| v.to_str().ok())
}

/// The request as the upstream receives it, after the plugin's request phases.
#[derive(Clone, Debug, Default)]
pub struct UpstreamRequest {
    pub method: String,
    /// Path and query (what `:path` ended as).
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: HeaderMap,
}

impl UpstreamRequest {
    /// The first value of header `name` (case-insensitive), if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The response as the client receives it, after the plugin's response phases.
#[derive(Clone, Debug, Default)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: HeaderMap,
}

impl ClientResponse {
    /// The first value of header `name` (case-insensitive), if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response the gateway made itself during the test: the plugin's `send_local_response`, or
/// the failure policy's answer (`details` says which).
#[derive(Clone, Debug)]
pub struct LocalReply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `wasm_plugin_local_response`, `wasm_plugin_failed`, `wasm_plugin_closed_stream`...
    pub details: &'static str,
}

/// A callout the plugin made (`proxy_http_call`, or a unary gRPC call as its HTTP/2 request).
#[derive(Clone, Debug)]
pub struct CalloutRequest {
    pub cluster: String,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl CalloutRequest {
    /// The first value of header `name` (case-insensitive), if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
}

/// A callout and what it was answered with (`None`: no handler, the plugin saw a failed call).
#[derive(Clone, Debug)]
pub struct CalloutRecord {
    pub request: CalloutRequest,
    pub status: Option<u16>,
}

/// A plugin metric after the run. Metrics are process-global per plugin name: they add up over
/// every run of plugins with that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricReading {
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Counter or gauge value, or the sum of a histogram's samples.
    pub value: i64,
    /// Histogram sample count.
    pub count: u64,
}

impl From<sluice_wasm::metrics::MetricValue> for MetricReading {
    fn from(m: sluice_wasm::metrics::MetricValue) -> Self {
        let kind = match m.kind {
            sluice_wasm::abi::MetricType::Counter => "counter",
            sluice_wasm::abi::MetricType::Gauge => "gauge",
            sluice_wasm::abi::MetricType::Histogram => "histogram",
        };
        MetricReading {
            name: m.name,
            kind,
            value: m.value,
            count: m.count,
        }
    }
}

/// Everything the plugin did with one request.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The request that reached the upstream; `None` when the plugin (or its failure) answered
    /// before the upstream was asked.
    pub upstream_request: Option<UpstreamRequest>,
    /// The response the client got.
    pub response: ClientResponse,
    /// Set when the gateway answered itself instead of (or in place of) the upstream.
    pub local_response: Option<LocalReply>,
    /// What the plugin logged (`proxy_log`, stdout, stderr), in order.
    pub logs: Vec<LogLine>,
    /// What the host noted about the plugin (unimplemented host calls, dropped callouts...).
    pub host_messages: Vec<String>,
    /// Set when the plugin's VM failed (trap, deadline, memory, fuel) during this request.
    pub failure: Option<PluginFailure>,
    /// Callouts the plugin made, in order.
    pub callouts: Vec<CalloutRecord>,
    /// The plugin's metrics after the request.
    pub metrics: Vec<MetricReading>,
}

impl Outcome {
    /// The request the upstream received.
    ///
    /// # Panics
    /// When no request reached the upstream (the plugin answered locally, or failed): a test
    /// that calls this expects the request to go through.
    pub fn upstream(&self) -> &UpstreamRequest {
        match &self.upstream_request {
            Some(r) => r,
            None => panic!(
                "no request reached the upstream: the client got {} ({})",
                self.response.status,
                self.local_response.as_ref().map_or("", |l| l.details)
            ),
        }
    }

    /// Whether the plugin's VM failed.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(needle))
    }

    /// The value of the plugin metric `name`, if the plugin defined it.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// The outcome as JSON (what `sluice plugin test --json` prints).
    pub fn to_json(&self) -> Value {
        json!({
            "upstream_request": self.upstream_request.as_ref().map(|r| json!({
                "method": r.method,
                "path": r.path,
                "headers": headers_json(&r.headers),
                "body": String::from_utf8_lossy(&r.body),
                "trailers": headers_json(&r.trailers),
            })),
            "response": {
                "status": self.response.status,
                "headers": headers_json(&self.response.headers),
                "body": String::from_utf8_lossy(&self.response.body),
                "trailers": headers_json(&self.response.trailers),
            },
            "local_response": self.local_response.as_ref().map(|l| json!({
                "status": l.status,
                "headers": headers_json(&l.headers),
                "body": String::from_utf8_lossy(&l.body),
                "details": l.details,
            })),
            "logs": self.logs,
            "host_messages": self.host_messages,
            "failure": self.failure,
            "callouts": self.callouts.iter().map(|c| json!({
                "cluster": c.request.cluster,
                "method": c.request.method,
                "path": c.request.path,
                "headers": headers_json(&c.request.headers),
                "body": String::from_utf8_lossy(&c.request.body),
                "answered_with": c.status,
            })).collect::<Vec<_>>(),
            "metrics": self.metrics.iter().map(|m| json!({
                "name": m.name, "kind": m.kind, "value": m.value, "count": m.count,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Headers as `[name, value]` pairs, in order, repeated names kept.
pub(crate) fn headers_json(h: &HeaderMap) -> Value {
    Value::Array(
        h.iter()
            .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
            .collect(),
    )
}
