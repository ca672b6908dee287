//! The spans of one sampled request: the server span, the upstream span and, when enabled, one
//! span per filter phase. Each is described as a [`SpanRecord`] borrowing from the exchange when
//! it ends, and encoded into the worker's export buffer right away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};

use crate::wall_clock::unix_nanos;

use super::attempts::Tries;
use super::propagation::Incoming;
use super::record::{
    AttemptSpan, Detail, FilterSpan, ServerSpan, SpanRecord, UpstreamSpan as UpstreamRecord,
};
use super::Tracer;
use super::{context, ids};
use crate::filter::Exchange;
use crate::telemetry::log_context::LogIds;
use crate::upstream::added::AddedFields;

/// A sampled request's trace state, carried by the exchange.
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span_id: Option<[u8; 8]>,
    /// Shared by every span of the request; none (no allocation) when the client sent none.
    trace_state: Option<Arc<str>>,
    start_unix_nanos: u64,
    start: Instant,
    /// The client's `Host` and `User-Agent` as received (the server span describes what the
    /// client sent, whatever filters do to the request): kept so that the request's headers
    /// can move to the upstream request instead of being copied.
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// The client sent a `traceparent` (valid or not): the request's map has one.
    client_traceparent: bool,
}

/// What the request path's pass over a request's fields found for its trace: the first
/// `traceparent`, `Host` and `User-Agent`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Found<'a> {
    pub traceparent: Option<&'a HeaderValue>,
    pub host: Option<&'a HeaderValue>,
    pub user_agent: Option<&'a HeaderValue>,
}

/// The Unix time of `at` (a recent instant) from this thread's anchor (see
/// [`crate::wall_clock`]).
fn unix_nanos_at(at: Instant) -> u64 {
    crate::wall_clock::unix_nanos_at(at)
}

impl RequestTrace {
    pub(super) fn new(
        tracer: Arc<Tracer>,
        incoming: Option<Incoming>,
        headers: &HeaderMap,
        found: Found<'_>,
        start: Instant,
    ) -> Self {
        let parent = incoming.and_then(|i| i.parent);
        let trace_id = match parent {
            Some((t, _)) => t,
            None => ids::trace_id(),
        };
        // tracestate belongs to a traceparent; with a B3 parent it describes another trace.
        // Only then is it looked up: a request without a W3C parent pays for no second lookup.
        let trace_state = incoming
            .filter(|i| i.w3c && i.parent.is_some())
            .and_then(|_| headers.get(&context::TRACESTATE))
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map(Arc::from);
        RequestTrace {
            tracer,
            trace_id,
            span_id: ids::span_id(),
            parent_span_id: parent.map(|(_, s)| s),
            trace_state,
            start_unix_nanos: unix_nanos_at(start),
            start,
            host: found.host.cloned(),
            user_agent: found.user_agent.cloned(),
            client_traceparent: found.traceparent.is_some(),
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

    /// The ids the gateway's own log lines carry while this request is handled: its trace and
    /// server span, so that a log line can be found from a trace and the other way round.
    pub fn log_ids(&self) -> LogIds {
        LogIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
        }
    }

    /// Start a child span for the upstream request and name it as the parent in `headers`, in
    /// every configured propagation format. `added`: when no filter ran on the request, and
    /// W3C is the only format, the `traceparent` goes there instead (the map has none unless
    /// the client sent one), written as the request is encoded rather than inserted.
    pub fn start_upstream(
        &self,
        headers: &mut HeaderMap,
        added: Option<&mut AddedFields>,
    ) -> UpstreamSpan {
        let span_id = ids::span_id();
        match added {
            Some(added) if self.tracer.propagation.w3c_only() && !self.client_traceparent => {
                added.traceparent = Some((self.trace_id, span_id));
            }
            _ => self
                .tracer
                .propagation
                .inject(headers, &self.trace_id, &span_id),
        }
        UpstreamSpan { span_id }
    }

    /// End the upstream span: `status` of the response, or the error that replaced it.
    pub fn end_upstream(
        &self,
        up: UpstreamSpan,
        method: &http::Method,
        cluster: &Arc<str>,
        result: Result<u16, &str>,
        tries: Tries,
    ) {
        let resends = tries.len().saturating_sub(1);
        // The last try is the one that answered (or failed last); the span ends with it.
        let last = tries.last();
        let end = last.map_or_else(Instant::now, |(_, end)| end);
        // The span starts with the first try (no clock reading of its own); without a try (no
        // endpoint to send to) it is an instant.
        let start = tries.first_start().unwrap_or(end);
        self.emit(
            up.span_id,
            Some(self.span_id),
            start,
            end,
            Detail::Upstream(UpstreamRecord {
                method,
                cluster,
                result,
                endpoint: last.map(|(ep, _)| ep),
                resends,
            }),
        );
        // A single try is the upstream span itself: a child span per try only shows retries.
        if resends == 0 {
            return;
        }
        for (n, t) in tries.into_vec().into_iter().enumerate() {
            self.emit(
                ids::span_id(),
                Some(up.span_id),
                t.start,
                t.end,
                Detail::Attempt(AttemptSpan {
                    number: n + 1,
                    endpoint: t.endpoint,
                    result: t.result.as_ref().copied().map_err(String::as_str),
                }),
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
        self.emit(
            ids::span_id(),
            Some(self.span_id),
            start,
            Instant::now(),
            Detail::Filter(FilterSpan {
                filter,
                phase,
                outcome,
            }),
        );
    }

    /// End the server span when the exchange finishes, at `end`.
    pub fn finish(self, e: &Exchange, status: u16, conn_local: SocketAddr, end: Instant) {
        let req = &e.request;
        let host = req
            .uri
            .host()
            .or_else(|| self.host.as_ref().and_then(host_name))
            .unwrap_or("");
        self.emit(
            self.span_id,
            self.parent_span_id,
            self.start,
            end,
            Detail::Server(ServerSpan {
                method: &req.method,
                path: req.uri.path(),
                query: req.uri.query(),
                host,
                user_agent: self.user_agent.as_ref().and_then(text),
                scheme: e.info.scheme,
                version: req.version,
                local_port: conn_local.port(),
                client: e.info.client_addr,
                status,
                route: e.route.as_ref(),
                cluster: e.cluster.as_ref(),
                details: e.local_details,
            }),
        );
    }

    fn emit(
        &self,
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        start: Instant,
        end: Instant,
        detail: Detail<'_>,
    ) {
        self.tracer.send(&SpanRecord {
            trace_id: self.trace_id,
            span_id,
            parent_span_id: parent,
            // Bit 0x100: whether the parent is remote is known (0x200: it is).
            flags: 1
                | 0x100
                | if parent.is_some() && parent == self.parent_span_id {
                    0x200
                } else {
                    0
                },
            trace_state: self.trace_state.as_deref(),
            start_unix_nanos: unix_nanos(self.start, self.start_unix_nanos, start),
            end_unix_nanos: unix_nanos(self.start, self.start_unix_nanos, end),
            detail,
        });
    }
}

/// A field's value as text, if it is UTF-8 (which a span's string attribute must be). Values
/// are nearly always ASCII, which is checked a word at a time (UTF-8 validation goes byte by
/// byte over short strings).
fn text(v: &HeaderValue) -> Option<&str> {
    let b = v.as_bytes();
    if b.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).ok()
}

/// A `Host` value without its port, if it is text.
fn host_name(v: &HeaderValue) -> Option<&str> {
    text(v).map(crate::router::strip_port)
}

/// An upstream span in progress.
pub struct UpstreamSpan {
    span_id: [u8; 8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port_only() {
        for (host, name) in [
            ("example.com", "example.com"),
            ("example.com:8080", "example.com"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]:8443", "[::1]"),
            ("[::1]", "[::1]"),
            ("[2001:db8::12]", "[2001:db8::12]"),
            ("example.com:", "example.com"),
            ("a1:b2", "a1:b2"),
            ("[::1]x:80", "[::1]x:80"),
            ("[::12", "[::12"),
            ("9", "9"),
            ("", ""),
        ] {
            let v = HeaderValue::from_static(host);
            assert_eq!(host_name(&v), Some(name), "{host}");
        }
        let value = |b: &[u8]| match HeaderValue::from_bytes(b) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        // obs-text: a valid field value, not UTF-8.
        let latin = value(b"caf\xe9");
        assert_eq!(host_name(&latin), None);
        assert_eq!(text(&latin), None);
        let utf8 = value("agent/1 (é)".as_bytes());
        assert_eq!(text(&utf8), Some("agent/1 (é)"));
    }
}
