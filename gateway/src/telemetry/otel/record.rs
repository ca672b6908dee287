//! A finished span as the request path describes it: fixed fields and strings borrowed from the
//! exchange, no attribute list. It lives only while it is encoded into the worker's export
//! buffer (see `encode`), so it copies, allocates and shares nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

/// One finished span.
pub struct SpanRecord<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// OTLP span flags (sampled, whether the parent is remote).
    pub flags: u32,
    /// The client's `tracestate`, shared by every span of the request.
    pub trace_state: Option<&'a str>,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub detail: Detail<'a>,
}

/// What kind of span it is, with the fields its name and attributes are made of.
pub enum Detail<'a> {
    Server(ServerSpan<'a>),
    Upstream(UpstreamSpan<'a>),
    Attempt(AttemptSpan<'a>),
    Filter(FilterSpan<'a>),
}

/// The server span of a request.
pub struct ServerSpan<'a> {
    pub method: &'a http::Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The host the client asked for, without a port.
    pub host: &'a str,
    pub user_agent: Option<&'a str>,
    pub scheme: &'static str,
    pub version: http::Version,
    pub local_port: u16,
    pub client: SocketAddr,
    pub status: u16,
    pub route: Option<&'a Arc<str>>,
    pub cluster: Option<&'a Arc<str>>,
    pub details: Option<&'static str>,
}

/// The client span around the upstream request (all its tries).
pub struct UpstreamSpan<'a> {
    pub method: &'a http::Method,
    pub cluster: &'a Arc<str>,
    /// The response status, or the failure kind.
    pub result: Result<u16, &'a str>,
    /// The endpoint of the last try.
    pub endpoint: Option<SocketAddr>,
    pub resends: usize,
}

/// One try of a retried upstream request.
pub struct AttemptSpan<'a> {
    /// 1 for the first try.
    pub number: usize,
    pub endpoint: SocketAddr,
    pub result: Result<u16, &'a str>,
}

/// One filter phase.
pub struct FilterSpan<'a> {
    pub filter: &'a str,
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
                // `network.protocol.name` is left out: the conventions ask for it only when
                // it is not `http`.
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

/// Each byte value's decimal digits, left-aligned, and how many there are.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut t = [([0u8; 3], 0u8); 256];
    let mut o = 0;
    while o < 256 {
        let v = o as u8;
        t[o] = if v >= 100 {
            ([b'0' + v / 100, b'0' + v / 10 % 10, b'0' + v % 10], 3)
        } else if v >= 10 {
            ([b'0' + v / 10, b'0' + v % 10, 0], 2)
        } else {
            ([b'0' + v, 0, 0], 1)
        };
        o += 1;
    }
    t
};

/// The dotted-decimal text of `ip` into `buf`; its length (7 to 15). Digits from a table: no
/// `core::fmt`, no division.
pub fn ipv4_text(ip: Ipv4Addr, buf: &mut [u8; 15]) -> usize {
    // Written in a buffer with room for a whole entry after the last digit.
    let mut out = [0u8; 16];
    let mut at = 0;
    for o in ip.octets() {
        let (digits, n) = OCTETS[usize::from(o)];
        out[at..at + 3].copy_from_slice(&digits);
        at += usize::from(n);
        out[at] = b'.';
        at += 1;
    }
    // Without the last dot.
    buf.copy_from_slice(&out[..15]);
    at - 1
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

impl ServerSpan<'_> {
    fn attributes(&self, a: &mut impl AttributeSink) -> Option<&'static str> {
        a.constant(Constant::Server {
            method: self.method,
            scheme: self.scheme,
            version: self.version,
            local_port: self.local_port,
            route: self.route,
            cluster: self.cluster,
        });
        a.str("url.path", self.path);
        a.str("server.address", self.host);
        a.ip("client.address", self.client.ip());
        // `client.port` is opt-in for HTTP server spans in the conventions: left out (the
        // access log has the client's port).
        a.int("http.response.status_code", i64::from(self.status));
        if let Some(q) = self.query {
            a.str("url.query", q);
        }
        if let Some(ua) = self.user_agent {
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

impl<'a> UpstreamSpan<'a> {
    fn attributes(&self, a: &mut impl AttributeSink) -> Option<&'a str> {
        a.constant(Constant::Upstream {
            method: self.method,
            cluster: self.cluster,
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
                status = Some(kind);
            }
        }
        if self.resends > 0 {
            a.int("http.request.resend_count", self.resends as i64);
        }
        status
    }
}

impl<'a> AttemptSpan<'a> {
    fn attributes(&self, a: &mut impl AttributeSink) -> Option<&'a str> {
        addr_attrs(a, &self.endpoint);
        a.int("sluice.attempt", self.number as i64);
        match &self.result {
            Ok(code) => {
                a.int("http.response.status_code", i64::from(*code));
                (*code >= 500).then_some("")
            }
            Err(kind) => {
                a.str("error.type", kind);
                Some(kind)
            }
        }
    }
}

impl FilterSpan<'_> {
    fn attributes(&self, a: &mut impl AttributeSink) -> Option<&'static str> {
        a.str("sluice.filter", self.filter);
        a.str("sluice.phase", self.phase);
        a.str("sluice.outcome", self.outcome);
        (self.outcome == "error").then_some("filter failed")
    }
}

impl<'a> SpanRecord<'a> {
    /// The span's name, in up to three parts (`buf` holds a number's digits).
    pub fn name_parts<'s>(&'s self, buf: &'s mut [u8; 20]) -> [&'s str; 3] {
        match &self.detail {
            Detail::Server(sv) => match &sv.route {
                Some(r) => [sv.method.as_str(), " ", r],
                None => [sv.method.as_str(), "", ""],
            },
            Detail::Upstream(up) => [up.method.as_str(), "", ""],
            Detail::Attempt(at) => ["attempt ", decimal(at.number as u64, buf), ""],
            Detail::Filter(f) => [f.filter, " ", f.phase],
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
    pub fn attributes(&self, sink: &mut impl AttributeSink) -> Option<&'a str> {
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
            trace_state: self.trace_state.map_or_else(String::new, str::to_string),
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
impl<'a> SpanRecord<'a> {
    /// A sampled root span with fixed ids and times, for tests.
    pub(crate) fn for_test(detail: Detail<'a>) -> SpanRecord<'a> {
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
    fn span_names() {
        let route: Arc<str> = Arc::from("r");
        let sv = ServerSpan {
            method: &http::Method::GET,
            path: "/a/b",
            query: Some("x=1"),
            host: "example.com",
            user_agent: Some("curl"),
            scheme: "http",
            version: http::Version::HTTP_11,
            local_port: 8080,
            client: "127.0.0.1:5000".parse().expect("address"),
            status: 200,
            route: Some(&route),
            cluster: None,
            details: None,
        };
        assert_eq!(SpanRecord::for_test(Detail::Server(sv)).name(), "GET r");
        let at = AttemptSpan {
            number: 12,
            endpoint: SocketAddr::from(([127, 0, 0, 1], 1)),
            result: Ok(200),
        };
        assert_eq!(
            SpanRecord::for_test(Detail::Attempt(at)).name(),
            "attempt 12"
        );
        let f = FilterSpan {
            filter: "auth",
            phase: "request_headers",
            outcome: "ok",
        };
        assert_eq!(
            SpanRecord::for_test(Detail::Filter(f)).name(),
            "auth request_headers"
        );
    }
}
