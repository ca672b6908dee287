//! Fields the proxy adds to an upstream request that nothing on the gateway reads afterwards
//! (`X-Forwarded-For` and `X-Forwarded-Proto` when the client sent neither; the request id the
//! gateway made when no filter runs on the request; the `traceparent` of a traced request
//! when nothing else could have put one in the map): an HTTP/1.1 upstream gets them written
//! after the request's own fields, an HTTP/2 one has them inserted into the request's map. A
//! map insert hashes the name and probes the table: the three cost about 1 k instructions per
//! request, writing the lines a few dozen.

use http::{HeaderMap, HeaderValue};

use crate::proxy::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID};
use crate::telemetry::otel::context;

/// See the module.
#[derive(Debug, Default, Clone)]
pub struct AddedFields {
    /// `X-Forwarded-For`: the client's address.
    pub forwarded_for: Option<HeaderValue>,
    /// `X-Forwarded-Proto`: the scheme the client used.
    pub forwarded_proto: Option<&'static str>,
    /// `X-Request-ID`.
    pub request_id: Option<HeaderValue>,
    /// `traceparent` naming the upstream span of a traced request, as trace and span id,
    /// when the request's map has none (W3C propagation alone, no filter on the request, and
    /// none from the client).
    pub traceparent: Option<([u8; 16], [u8; 8])>,
}

impl AddedFields {
    /// Append the fields as `name: value` lines (HTTP/1.1).
    pub fn write(&self, out: &mut Vec<u8>) {
        if let Some(v) = &self.forwarded_for {
            out.extend_from_slice(b"x-forwarded-for: ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(p) = self.forwarded_proto {
            out.extend_from_slice(b"x-forwarded-proto: ");
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(v) = &self.request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some((trace, span)) = &self.traceparent {
            out.extend_from_slice(b"traceparent: ");
            out.extend_from_slice(&context::traceparent_bytes(trace, span));
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Insert the fields into `h` (HTTP/2, where the map is what is sent).
    pub fn insert_into(&self, h: &mut HeaderMap) {
        if let Some(v) = &self.forwarded_for {
            h.insert(X_FORWARDED_FOR.clone(), v.clone());
        }
        if let Some(p) = self.forwarded_proto {
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(p));
        }
        if let Some(v) = &self.request_id {
            h.insert(X_REQUEST_ID.clone(), v.clone());
        }
        if let Some((trace, span)) = &self.traceparent {
            h.insert(
                &context::TRACEPARENT,
                context::format_traceparent(trace, span),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_lines_or_inserted() {
        let mut span = [0u8; 8];
        span[7] = 0xab;
        let added = AddedFields {
            forwarded_for: Some(HeaderValue::from_static("198.18.0.7")),
            forwarded_proto: Some("https"),
            request_id: Some(HeaderValue::from_static("id-1")),
            traceparent: Some(([0x11; 16], span)),
        };
        let tp = "00-11111111111111111111111111111111-00000000000000ab-01";
        let mut out = Vec::new();
        added.write(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!(
                "x-forwarded-for: 198.18.0.7\r\nx-forwarded-proto: https\r\n\
                 x-request-id: id-1\r\ntraceparent: {tp}\r\n"
            )
        );
        let mut h = HeaderMap::new();
        added.insert_into(&mut h);
        assert_eq!(h["x-forwarded-for"], "198.18.0.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-request-id"], "id-1");
        assert_eq!(h["traceparent"], tp);
        let mut out = Vec::new();
        AddedFields::default().write(&mut out);
        assert!(out.is_empty());
    }
}
