//! The spans of one sampled request: the server span, the upstream span and, when enabled, one
//! span per filter phase. Built directly as OTLP `Span` values and queued when they end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

use super::context;
use super::propagation::Incoming;
use super::Tracer;
use crate::filter::Exchange;

/// A sampled request's trace state, carried by the exchange.
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    trace_state: String,
    start_unix_nanos: u64,
    start: Instant,
}

/// Nanoseconds since the Unix epoch for `at`, given that `anchor` (Instant) is `anchor_unix`.
fn unix_nanos(anchor: Instant, anchor_unix: u64, at: Instant) -> u64 {
    let d = at.saturating_duration_since(anchor);
    anchor_unix.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn new_span_id() -> [u8; 8] {
    // A zero id is invalid; the odds are 2⁻⁶⁴ but the fix is free.
    let id = rand::random::<u64>().max(1);
    id.to_be_bytes()
}

fn kv(key: &'static str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &'static str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &'static str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn error_status(message: impl Into<String>) -> Option<Status> {
    Some(Status {
        message: message.into(),
        code: StatusCode::Error as i32,
    })
}

impl RequestTrace {
    pub(super) fn new(
        tracer: Arc<Tracer>,
        incoming: Option<Incoming>,
        headers: &HeaderMap,
    ) -> Self {
        let parent = incoming.and_then(|i| i.parent);
        let trace_id = match parent {
            Some((t, _)) => t,
            None => rand::random::<u128>().max(1).to_be_bytes(),
        };
        // tracestate belongs to a traceparent; with a B3 parent it describes another trace.
        let trace_state = match (incoming, headers.get(&context::TRACESTATE)) {
            (Some(i), Some(v)) if i.w3c && i.parent.is_some() => {
                v.to_str().unwrap_or("").to_string()
            }
            _ => String::new(),
        };
        RequestTrace {
            tracer,
            trace_id,
            span_id: new_span_id(),
            parent_span_id: parent.map(|(_, s)| s),
            trace_state,
            start_unix_nanos: now_unix_nanos(),
            start: Instant::now(),
        }
    }

    /// Whether filter phases get spans of their own.
    pub fn filter_spans(&self) -> bool {
        self.tracer.filter_spans
    }

    /// The trace id and the server span id, lowercase hex (for the access log).
    pub fn ids_hex(&self) -> ([u8; 32], [u8; 16]) {
        let mut t = [0u8; 32];
        let mut sp = [0u8; 16];
        context::encode_into(&self.trace_id, &mut t);
        context::encode_into(&self.span_id, &mut sp);
        (t, sp)
    }

    /// The `tracing` span that the gateway's own log lines emitted while this request is
    /// handled run in: its `trace_id` and `span_id` fields (lowercase hex) name the server span,
    /// so a log line can be found from a trace and the other way round.
    pub fn log_span(&self) -> tracing::Span {
        let (t, sp) = self.ids_hex();
        // Hex digits are ASCII: both conversions succeed.
        let t = std::str::from_utf8(&t).unwrap_or("");
        let sp = std::str::from_utf8(&sp).unwrap_or("");
        tracing::info_span!("request", trace_id = t, span_id = sp)
    }

    /// Start a child span for the upstream request and name it as the parent in `headers`, in
    /// every configured propagation format.
    pub fn start_upstream(&self, headers: &mut HeaderMap) -> UpstreamSpan {
        let span_id = new_span_id();
        self.tracer
            .propagation
            .inject(headers, &self.trace_id, &span_id);
        UpstreamSpan {
            span_id,
            start: Instant::now(),
        }
    }

    /// End the upstream span: `status` of the response, or the error that replaced it.
    pub fn end_upstream(
        &self,
        up: UpstreamSpan,
        method: &http::Method,
        cluster: &str,
        result: Result<u16, String>,
        tries: Vec<super::attempts::Attempt>,
    ) {
        let mut attributes = vec![
            s("http.request.method", method.as_str()),
            s("sluice.cluster", cluster),
        ];
        let mut status = None;
        match result {
            Ok(code) => {
                attributes.push(i("http.response.status_code", i64::from(code)));
                if code >= 400 {
                    attributes.push(s("error.type", code.to_string()));
                    status = error_status("");
                }
            }
            Err(kind) => {
                status = error_status(kind.clone());
                attributes.push(s("error.type", kind));
            }
        }
        // The endpoint of the last try is the one that answered (or failed last).
        if let Some(last) = tries.last() {
            attributes.push(s("server.address", last.endpoint.ip().to_string()));
            attributes.push(i("server.port", i64::from(last.endpoint.port())));
        }
        let resends = tries.len().saturating_sub(1);
        if resends > 0 {
            attributes.push(i("http.request.resend_count", resends as i64));
        }
        self.emit(
            method.as_str().to_string(),
            SpanKind::Client,
            up.span_id,
            Some(self.span_id),
            up.start,
            Instant::now(),
            attributes,
            status,
        );
        // A single try is the upstream span itself: a child span per try only shows retries.
        if resends == 0 {
            return;
        }
        for (n, t) in tries.into_iter().enumerate() {
            let mut attributes = vec![
                s("server.address", t.endpoint.ip().to_string()),
                i("server.port", i64::from(t.endpoint.port())),
                i("sluice.attempt", n as i64 + 1),
            ];
            let status = match t.result {
                Ok(code) => {
                    attributes.push(i("http.response.status_code", i64::from(code)));
                    (code >= 500).then(|| error_status("")).flatten()
                }
                Err(kind) => {
                    let st = error_status(kind.clone());
                    attributes.push(s("error.type", kind));
                    st
                }
            };
            self.emit(
                format!("attempt {}", n + 1),
                SpanKind::Internal,
                new_span_id(),
                Some(up.span_id),
                t.start,
                t.end,
                attributes,
                status,
            );
        }
    }

    /// Record one filter phase that ran from `start` until now.
    pub fn filter_phase(
        &self,
        filter: &str,
        phase: &'static str,
        start: Instant,
        outcome: &'static str,
    ) {
        let attributes = vec![
            s("sluice.filter", filter),
            s("sluice.phase", phase),
            s("sluice.outcome", outcome),
        ];
        let status = (outcome == "error")
            .then(|| error_status("filter failed"))
            .flatten();
        self.emit(
            format!("{filter} {phase}"),
            SpanKind::Internal,
            new_span_id(),
            Some(self.span_id),
            start,
            Instant::now(),
            attributes,
            status,
        );
    }

    /// End the server span when the exchange finishes.
    pub fn finish(self, e: &Exchange, status: u16, conn_local: SocketAddr) {
        let req = &e.request;
        let route = e.route.as_deref();
        let name = match route {
            Some(r) => format!("{} {r}", req.method),
            None => req.method.to_string(),
        };
        let host = req
            .uri
            .host()
            .or_else(|| {
                req.headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h))
            })
            .unwrap_or("");
        let mut attributes = vec![
            s("http.request.method", req.method.as_str()),
            s("url.path", req.uri.path()),
            s("url.scheme", e.info.scheme),
            s("network.protocol.name", "http"),
            s("network.protocol.version", protocol_version(req.version)),
            s("server.address", host),
            i("server.port", i64::from(conn_local.port())),
            s("client.address", e.info.client_addr.ip().to_string()),
            i("client.port", i64::from(e.info.client_addr.port())),
            i("http.response.status_code", i64::from(status)),
        ];
        if let Some(q) = req.uri.query() {
            attributes.push(s("url.query", q));
        }
        if let Some(r) = route {
            attributes.push(s("http.route", r));
        }
        if let Some(ua) = req.headers.get(http::header::USER_AGENT).and_then(hv_str) {
            attributes.push(s("user_agent.original", ua));
        }
        if let Some(c) = e.cluster.as_deref() {
            attributes.push(s("sluice.cluster", c));
        }
        if let Some(d) = e.local_details {
            attributes.push(s("sluice.details", d));
        }
        // Server spans: only 5xx is an error (4xx is the client's).
        let st = if status >= 500 {
            attributes.push(s("error.type", status.to_string()));
            error_status("")
        } else {
            None
        };
        self.emit(
            name,
            SpanKind::Server,
            self.span_id,
            self.parent_span_id,
            self.start,
            Instant::now(),
            attributes,
            st,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        name: String,
        kind: SpanKind,
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        start: Instant,
        end: Instant,
        attributes: Vec<KeyValue>,
        status: Option<Status>,
    ) {
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            trace_state: self.trace_state.clone(),
            parent_span_id: parent.map_or_else(Vec::new, |p| p.to_vec()),
            // Bit 0x100: whether the parent is remote is known (0x200: it is).
            flags: 1
                | 0x100
                | if parent.is_some() && parent == self.parent_span_id {
                    0x200
                } else {
                    0
                },
            name,
            kind: kind as i32,
            start_time_unix_nano: unix_nanos(self.start, self.start_unix_nanos, start),
            end_time_unix_nano: unix_nanos(self.start, self.start_unix_nanos, end),
            attributes,
            status,
            ..Default::default()
        };
        self.tracer.send(span);
    }
}

fn hv_str(v: &HeaderValue) -> Option<&str> {
    v.to_str().ok()
}

/// An upstream span in progress.
pub struct UpstreamSpan {
    span_id: [u8; 8],
    start: Instant,
}
