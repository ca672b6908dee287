//! A finished span as the request path records it: fixed fields, shared or static strings, no
//! attribute list. The exporter thread turns records into OTLP `Span` values, so the ~20
//! attribute keys and values of a request are allocated (and freed) there, not on the proxy's
//! worker, and never cross threads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// Where a span's attributes go: OTLP structs, or protobuf bytes directly.
pub trait AttributeSink {
    /// A string attribute.
    fn str(&mut self, key: &'static str, v: &str);
    /// An integer attribute.
    fn int(&mut self, key: &'static str, v: i64);
    /// An IP address as a string attribute, in its usual text form.
    fn ip(&mut self, key: &'static str, ip: IpAddr) {
        let mut b = [0u8; 48];
        self.str(key, ip_text(ip, &mut b));
    }
    /// The attributes made of `c` alone, which many spans share: a sink may encode them once
    /// per distinct `c` and copy them after.
    fn constant(&mut self, c: Constant<'_>)
    where
        Self: Sized,
    {
        c.attributes(self);
    }
}

/// The attributes of a span that do not change from request to request — per route for a
/// server span, per cluster endpoint for an upstream span — and everything they are made of.
#[derive(Clone, Copy, Debug)]
pub enum Constant<'a> {
    Server {
        method: &'a http::Method,
        scheme: &'static str,
        version: http::Version,
        local_port: u16,
        route: Option<&'a Arc<str>>,
        cluster: Option<&'a Arc<str>>,
    },
    Upstream {
        method: &'a http::Method,
        cluster: &'a Arc<str>,
        endpoint: Option<SocketAddr>,
    },
}

impl Constant<'_> {
    /// Hand the attributes to `a`, in a fixed order.
    pub fn attributes(&self, a: &mut impl AttributeSink) {
        match *self {
            Constant::Server {
                method,
                scheme,
                version,
                local_port,
                route,
                cluster,
            } => {
                a.str("http.request.method", method.as_str());
                a.str("url.scheme", scheme);
                a.str("network.protocol.name", "http");
                a.str("network.protocol.version", protocol_version(version));
                a.int("server.port", i64::from(local_port));
                if let Some(r) = route {
                    a.str("http.route", r);
                }
                if let Some(c) = cluster {
                    a.str("sluice.cluster", c);
                }
            }
            Constant::Upstream {
                method,
                cluster,
                endpoint,
            } => {
                a.str("http.request.method", method.as_str());
                a.str("sluice.cluster", cluster);
                // The endpoint of the last try is the one that answered (or failed last).
                if let Some(ep) = &endpoint {
                    addr_attrs(a, ep);
                }
            }
        }
    }
}

/// `v` in decimal, written at the end of `buf` (no allocation, no `core::fmt`).
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[at..]).unwrap_or("")
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

/// The dotted-decimal text of `ip` into `buf`; its length (7 to 15). Digits by arithmetic:
/// no `core::fmt`, no division loop per octet.
pub fn ipv4_text(ip: Ipv4Addr, buf: &mut [u8; 15]) -> usize {
    let mut at = 0;
    for (n, o) in ip.octets().into_iter().enumerate() {
        if n > 0 {
            buf[at] = b'.';
            at += 1;
        }
        if o >= 100 {
            buf[at] = b'0' + o / 100;
            at += 1;
        }
        if o >= 10 {
            buf[at] = b'0' + o / 10 % 10;
            at += 1;
        }
        buf[at] = b'0' + o % 10;
        at += 1;
    }
    at
}

/// The text of `ip` into `buf`, without `core::fmt` for IPv4 (the common case).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 15];
            let n = ipv4_text(v4, &mut b);
            buf[..n].copy_from_slice(&b[..n]);
            n
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes is the longest IPv6 text; the buffer holds 48.
            let _ = write!(cur, "{v6}");
            usize::try_from(cur.position()).unwrap_or(0)
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

fn addr_attrs(sink: &mut impl AttributeSink, ep: &SocketAddr) {
    sink.ip("server.address", ep.ip());
    sink.int("server.port", i64::from(ep.port()));
}

fn error_type(sink: &mut impl AttributeSink, code: u16) {
    let mut d = [0u8; 20];
    sink.str("error.type", decimal(u64::from(code), &mut d));
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

    fn attributes(&self, a: &mut impl AttributeSink) -> Option<&'static str> {
        a.constant(Constant::Server {
            method: &self.method,
            scheme: self.scheme,
            version: self.version,
            local_port: self.local_port,
            route: self.route.as_ref(),
            cluster: self.cluster.as_ref(),
        });
        a.str("url.path", self.path());
        a.str("server.address", self.host());
        a.ip("client.address", self.client.ip());
        a.int("client.port", i64::from(self.client.port()));
        a.int("http.response.status_code", i64::from(self.status));
        if let Some(q) = self.query() {
            a.str("url.query", q);
        }
        if let Some(ua) = self.user_agent() {
            a.str("user_agent.original", ua);
        }
        if let Some(d) = self.details {
            a.str("sluice.details", d);
        }
        // Server spans: only 5xx is an error (4xx is the client's).
        if self.status >= 500 {
            error_type(a, self.status);
            return Some("");
        }
        None
    }
}

impl UpstreamSpan {
    fn attributes<'s>(&'s self, a: &mut impl AttributeSink) -> Option<&'s str> {
        a.constant(Constant::Upstream {
            method: &self.method,
            cluster: &self.cluster,
            endpoint: self.endpoint,
        });
        let mut status = None;
        match &self.result {
            Ok(code) => {
                a.int("http.response.status_code", i64::from(*code));
                if *code >= 400 {
                    error_type(a, *code);
                    status = Some("");
                }
            }
            Err(kind) => {
                a.str("error.type", kind);
                status = Some(kind.as_str());
            }
        }
        if self.resends > 0 {
            a.int("http.request.resend_count", self.resends as i64);
        }
        status
    }
}

impl AttemptSpan {
    fn attributes<'s>(&'s self, a: &mut impl AttributeSink) -> Option<&'s str> {
        addr_attrs(a, &self.endpoint);
        a.int("sluice.attempt", self.number as i64);
        match &self.result {
            Ok(code) => {
                a.int("http.response.status_code", i64::from(*code));
                (*code >= 500).then_some("")
            }
            Err(kind) => {
                a.str("error.type", kind);
                Some(kind.as_str())
            }
        }
    }
}

impl FilterSpan {
    fn attributes(&self, a: &mut impl AttributeSink) -> Option<&'static str> {
        a.str("sluice.filter", &self.filter);
        a.str("sluice.phase", self.phase);
        a.str("sluice.outcome", self.outcome);
        (self.outcome == "error").then_some("filter failed")
    }
}

impl SpanRecord {
    /// The span's name, in up to three parts (`buf` holds a number's digits).
    pub fn name_parts<'s>(&'s self, buf: &'s mut [u8; 20]) -> [&'s str; 3] {
        match &self.detail {
            Detail::Server(sv) => match &sv.route {
                Some(r) => [sv.method.as_str(), " ", r],
                None => [sv.method.as_str(), "", ""],
            },
            Detail::Upstream(up) => [up.method.as_str(), "", ""],
            Detail::Attempt(at) => ["attempt ", decimal(at.number as u64, buf), ""],
            Detail::Filter(f) => [&f.filter, " ", f.phase],
        }
    }

    /// The span's name.
    pub fn name(&self) -> String {
        self.name_parts(&mut [0; 20]).concat()
    }

    /// The OTLP span kind.
    pub fn kind(&self) -> SpanKind {
        match self.detail {
            Detail::Server(_) => SpanKind::Server,
            Detail::Upstream(_) => SpanKind::Client,
            Detail::Attempt(_) | Detail::Filter(_) => SpanKind::Internal,
        }
    }

    /// Hand the attributes to `sink`, in a fixed order; the result is the message of an error
    /// status (`Some("")` for an error without message), none when the span is not an error.
    pub fn attributes<'s>(&'s self, sink: &mut impl AttributeSink) -> Option<&'s str> {
        match &self.detail {
            Detail::Server(sv) => sv.attributes(sink),
            Detail::Upstream(up) => up.attributes(sink),
            Detail::Attempt(at) => at.attributes(sink),
            Detail::Filter(f) => f.attributes(sink),
        }
    }

    /// The OTLP span this record stands for, as `opentelemetry-proto` structs.
    pub fn to_span(&self) -> Span {
        struct Kvs(Vec<KeyValue>);
        impl AttributeSink for Kvs {
            fn str(&mut self, key: &'static str, v: &str) {
                self.0
                    .push(kv(key, any_value::Value::StringValue(v.to_string())));
            }
            fn int(&mut self, key: &'static str, v: i64) {
                self.0.push(kv(key, any_value::Value::IntValue(v)));
            }
        }
        let mut kvs = Kvs(Vec::new());
        let status = self.attributes(&mut kvs).map(|m| Status {
            message: m.to_string(),
            code: StatusCode::Error as i32,
        });
        let name = self.name();
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
            kind: self.kind() as i32,
            start_time_unix_nano: self.start_unix_nanos,
            end_time_unix_nano: self.end_unix_nanos,
            attributes: kvs.0,
            status,
            ..Default::default()
        }
    }
}

fn kv(key: &'static str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

#[cfg(test)]
impl SpanRecord {
    /// A sampled root span with fixed ids and times, for tests.
    pub(crate) fn for_test(detail: Detail) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            flags: 0x101,
            trace_state: None,
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            detail,
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
            let addr: IpAddr = ip.parse().expect("address");
            assert_eq!(ip_text(addr, &mut [0; 48]), ip);
        }
        // Every octet value, in every position.
        for o in 0..=255u8 {
            let ip = Ipv4Addr::new(o, 255 - o, o / 7, o.wrapping_mul(3));
            assert_eq!(ip_text(IpAddr::V4(ip), &mut [0; 48]), ip.to_string());
        }
        for ip in [
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "2001:db8::1",
        ] {
            let addr: IpAddr = ip.parse().expect("address");
            assert_eq!(ip_text(addr, &mut [0; 48]), addr.to_string());
        }
        assert_eq!(decimal(0, &mut [0; 20]), "0");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), u64::MAX.to_string());
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
        let rec = SpanRecord::for_test(Detail::Server(sv));
        assert_eq!(rec.name(), "GET r");
    }
}
