//! A finished span as the request path records it: fixed fields, shared or static strings, no
//! attribute list. The exporter thread turns records into OTLP `Span` values, so the ~20
//! attribute keys and values of a request are allocated (and freed) there, not on the proxy's
//! worker, and never cross threads.

use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

/// One finished span.
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// OTLP span flags (sampled, whether the parent is remote).
    pub flags: u32,
    /// The client's `tracestate`, shared by every span of the request.
    pub trace_state: Option<Arc<str>>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub detail: Detail,
}

/// What kind of span it is, with the fields its name and attributes are made of.
pub enum Detail {
    Server(ServerSpan),
    Upstream(UpstreamSpan),
    Attempt(AttemptSpan),
    Filter(FilterSpan),
}

/// The server span of a request.
pub struct ServerSpan {
    pub method: http::Method,
    /// Path, query, host and user agent, one after the other (one allocation for the four).
    pub text: String,
    /// Where the query, the host and the user agent start in `text` (each ends where the next
    /// starts; the user agent at the end).
    pub query_at: usize,
    pub host_at: usize,
    pub ua_at: usize,
    pub has_query: bool,
    pub has_ua: bool,
    pub scheme: &'static str,
    pub version: http::Version,
    pub local_port: u16,
    pub client: SocketAddr,
    pub status: u16,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub details: Option<&'static str>,
}

/// The client span around the upstream request (all its tries).
pub struct UpstreamSpan {
    pub method: http::Method,
    pub cluster: Arc<str>,
    /// The response status, or the failure kind.
    pub result: Result<u16, String>,
    /// The endpoint of the last try.
    pub endpoint: Option<SocketAddr>,
    pub resends: usize,
}

/// One try of a retried upstream request.
pub struct AttemptSpan {
    /// 1 for the first try.
    pub number: usize,
    pub endpoint: SocketAddr,
    pub result: Result<u16, String>,
}

/// One filter phase.
pub struct FilterSpan {
    pub filter: Arc<str>,
    pub phase: &'static str,
    pub outcome: &'static str,
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

fn error_status(message: impl Into<String>) -> Option<Status> {
    Some(Status {
        message: message.into(),
        code: StatusCode::Error as i32,
    })
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

/// The IP of `addr` as text, without going through `core::fmt` for IPv4 (the common case).
fn ip_string(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => {
            let mut out = String::with_capacity(15);
            for (n, octet) in a.ip().octets().iter().enumerate() {
                if n > 0 {
                    out.push('.');
                }
                push_decimal(&mut out, *octet);
            }
            out
        }
        SocketAddr::V6(a) => a.ip().to_string(),
    }
}

fn push_decimal(out: &mut String, v: u8) {
    if v >= 100 {
        out.push(char::from(b'0' + v / 100));
    }
    if v >= 10 {
        out.push(char::from(b'0' + v / 10 % 10));
    }
    out.push(char::from(b'0' + v % 10));
}

impl ServerSpan {
    fn path(&self) -> &str {
        self.text.get(..self.query_at).unwrap_or("")
    }
    fn query(&self) -> Option<&str> {
        let q = self.query_at..self.host_at;
        self.has_query.then(|| self.text.get(q).unwrap_or(""))
    }
    fn host(&self) -> &str {
        let h = self.host_at..self.ua_at;
        self.text.get(h).unwrap_or("")
    }
    fn user_agent(&self) -> Option<&str> {
        let ua = self.ua_at..;
        self.has_ua.then(|| self.text.get(ua).unwrap_or(""))
    }

    fn name(&self) -> String {
        match &self.route {
            Some(r) => format!("{} {r}", self.method),
            None => self.method.to_string(),
        }
    }

    fn attributes(&self) -> (Vec<KeyValue>, Option<Status>) {
        let mut attributes = Vec::with_capacity(16);
        attributes.extend([
            s("http.request.method", self.method.as_str()),
            s("url.path", self.path()),
            s("url.scheme", self.scheme),
            s("network.protocol.name", "http"),
            s("network.protocol.version", protocol_version(self.version)),
            s("server.address", self.host()),
            i("server.port", i64::from(self.local_port)),
            s("client.address", ip_string(&self.client)),
            i("client.port", i64::from(self.client.port())),
            i("http.response.status_code", i64::from(self.status)),
        ]);
        if let Some(q) = self.query() {
            attributes.push(s("url.query", q));
        }
        if let Some(r) = self.route.as_deref() {
            attributes.push(s("http.route", r));
        }
        if let Some(ua) = self.user_agent() {
            attributes.push(s("user_agent.original", ua));
        }
        if let Some(c) = self.cluster.as_deref() {
            attributes.push(s("sluice.cluster", c));
        }
        if let Some(d) = self.details {
            attributes.push(s("sluice.details", d));
        }
        // Server spans: only 5xx is an error (4xx is the client's).
        let status = if self.status >= 500 {
            attributes.push(s("error.type", self.status.to_string()));
            error_status("")
        } else {
            None
        };
        (attributes, status)
    }
}

impl UpstreamSpan {
    fn attributes(self) -> (Vec<KeyValue>, Option<Status>) {
        let mut attributes = Vec::with_capacity(7);
        attributes.extend([
            s("http.request.method", self.method.as_str()),
            s("sluice.cluster", &*self.cluster),
        ]);
        let mut status = None;
        match self.result {
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
        if let Some(ep) = self.endpoint {
            attributes.push(s("server.address", ip_string(&ep)));
            attributes.push(i("server.port", i64::from(ep.port())));
        }
        if self.resends > 0 {
            attributes.push(i("http.request.resend_count", self.resends as i64));
        }
        (attributes, status)
    }
}

impl AttemptSpan {
    fn attributes(self) -> (Vec<KeyValue>, Option<Status>) {
        let mut attributes = vec![
            s("server.address", ip_string(&self.endpoint)),
            i("server.port", i64::from(self.endpoint.port())),
            i("sluice.attempt", self.number as i64),
        ];
        let status = match self.result {
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
        (attributes, status)
    }
}

impl FilterSpan {
    fn attributes(&self) -> (Vec<KeyValue>, Option<Status>) {
        let attributes = vec![
            s("sluice.filter", &*self.filter),
            s("sluice.phase", self.phase),
            s("sluice.outcome", self.outcome),
        ];
        let status = (self.outcome == "error")
            .then(|| error_status("filter failed"))
            .flatten();
        (attributes, status)
    }
}

impl SpanRecord {
    /// The OTLP span this record stands for.
    pub fn into_span(self) -> Span {
        let (name, kind, (attributes, status)) = match self.detail {
            Detail::Server(sv) => (sv.name(), SpanKind::Server, sv.attributes()),
            Detail::Upstream(up) => (
                up.method.as_str().to_string(),
                SpanKind::Client,
                up.attributes(),
            ),
            Detail::Attempt(a) => (
                format!("attempt {}", a.number),
                SpanKind::Internal,
                a.attributes(),
            ),
            Detail::Filter(f) => (
                format!("{} {}", f.filter, f.phase),
                SpanKind::Internal,
                f.attributes(),
            ),
        };
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self
                .trace_state
                .as_deref()
                .map_or_else(String::new, str::to_string),
            parent_span_id: self.parent_span_id.map_or_else(Vec::new, |p| p.to_vec()),
            flags: self.flags,
            name,
            kind: kind as i32,
            start_time_unix_nano: self.start_unix_nanos,
            end_time_unix_nano: self.end_unix_nanos,
            attributes,
            status,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.99.100.9",
        ] {
            let addr: SocketAddr = format!("{ip}:80").parse().expect("address");
            assert_eq!(ip_string(&addr), ip);
        }
        let v6: SocketAddr = "[::1]:80".parse().expect("address");
        assert_eq!(ip_string(&v6), "::1");
    }

    #[test]
    fn server_text_ranges() {
        let sv = ServerSpan {
            method: http::Method::GET,
            text: "/a/bx=1example.comcurl".into(),
            query_at: 4,
            host_at: 7,
            ua_at: 18,
            has_query: true,
            has_ua: true,
            scheme: "http",
            version: http::Version::HTTP_11,
            local_port: 8080,
            client: "127.0.0.1:5000".parse().expect("address"),
            status: 200,
            route: Some("r".into()),
            cluster: None,
            details: None,
        };
        assert_eq!(sv.path(), "/a/b");
        assert_eq!(sv.query(), Some("x=1"));
        assert_eq!(sv.host(), "example.com");
        assert_eq!(sv.user_agent(), Some("curl"));
        assert_eq!(sv.name(), "GET r");
    }
}
