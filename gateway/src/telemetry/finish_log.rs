//! Turns a finished exchange into an access-log line.

use std::time::Instant;

use crate::filter::Exchange;
use crate::proxy::finish::Finish;
use crate::telemetry::access_log::{AccessLog, AccessLogEntry};

/// A header value's bytes, empty when absent.
fn bytes(v: Option<&http::HeaderValue>) -> &[u8] {
    v.map_or(&[][..], |v| v.as_bytes())
}

/// Write the access-log line for `e`.
pub fn write(log: &AccessLog, f: &Finish, e: &Exchange) {
    // The time the exchange finished was just read; the wall clock comes from a per-thread
    // anchor (`wall_clock`), not a clock read per line.
    let now = f.end.unwrap_or_else(Instant::now);
    let elapsed = now.saturating_duration_since(e.info.start);
    let req = &e.request;
    // The values kept when the header map went upstream, else the map itself.
    let (host, user_agent, referer, x_forwarded_for) = match e.logged.as_deref() {
        Some(l) => (
            l.host.as_ref(),
            l.user_agent.as_ref(),
            l.referer.as_ref(),
            l.x_forwarded_for.as_ref(),
        ),
        None => (
            req.headers.get(http::header::HOST),
            req.headers.get(http::header::USER_AGENT),
            req.headers.get(http::header::REFERER),
            req.headers.get(&crate::proxy::headers::X_FORWARDED_FOR),
        ),
    };
    let authority = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| host.and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    let ids = e.trace.as_ref().map(|t| t.ids_hex());
    // Hex digits only: always valid UTF-8.
    let (trace_id, span_id) = ids.as_ref().map_or(("", ""), |(t, s)| {
        (
            std::str::from_utf8(t).unwrap_or(""),
            std::str::from_utf8(s).unwrap_or(""),
        )
    });
    let entry = AccessLogEntry {
        start_time: crate::wall_clock::system_time_at(e.info.start),
        duration: elapsed,
        ttfb: Some(f.ttfb.saturating_duration_since(e.info.start)),
        listener: &e.info.listener,
        route: e.route.as_deref().unwrap_or(""),
        cluster: e.cluster.as_deref().unwrap_or(""),
        upstream_addr: f.upstream_addr,
        client_addr: Some(e.info.client_addr),
        method: req.method.as_str(),
        authority,
        path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        protocol: req.version,
        status: f.status,
        bytes_received: f.bytes_received.get(),
        bytes_sent: f.bytes_sent,
        request_id: e.request_id.as_ref().map_or(&[][..], |v| v.as_bytes()),
        user_agent: bytes(user_agent),
        referer: bytes(referer),
        x_forwarded_for: bytes(x_forwarded_for),
        details: e.local_details.unwrap_or(""),
        trace_id,
        span_id,
    };
    log.log(&entry);
}
