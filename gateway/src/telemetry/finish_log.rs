//! Turns a finished exchange into an access-log line.

use std::time::{Instant, SystemTime};

use crate::filter::Exchange;
use crate::proxy::finish::Finish;
use crate::telemetry::access_log::{AccessLog, AccessLogEntry};

/// Write the access-log line for `e`.
pub fn write(log: &AccessLog, f: &Finish, e: &Exchange) {
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(e.info.start);
    let req = &e.request;
    let header = |name: &http::HeaderName| req.headers.get(name).map_or(&[][..], |v| v.as_bytes());
    let authority = req
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
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
        start_time: SystemTime::now() - elapsed,
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
        user_agent: header(&http::header::USER_AGENT),
        referer: header(&http::header::REFERER),
        x_forwarded_for: header(&crate::proxy::headers::X_FORWARDED_FOR),
        details: e.local_details.unwrap_or(""),
        trace_id,
        span_id,
    };
    log.log(&entry);
}
