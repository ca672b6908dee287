//! OTLP protobuf encoding of a batch of [`SpanRecord`]s straight into bytes: the same bytes
//! prost writes for the equivalent `ExportTraceServiceRequest`, without building its ~25
//! strings and vectors per span first (the exporter shares the proxy's cores).

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use super::record::{AttributeSink, SpanRecord};

/// `Span` field numbers (opentelemetry/proto/trace/v1/trace.proto).
mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
}

/// `Status.message` and `Status.code`; `STATUS_CODE_ERROR` is 2.
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
const STATUS_CODE_ERROR: u64 = 2;

/// Encodes batches for one resource and scope; its buffers are reused from batch to batch.
pub struct BatchEncoder {
    /// `ResourceSpans.resource`, encoded once.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, encoded once.
    scope: Vec<u8>,
    spans: Vec<u8>,
    span: Vec<u8>,
    name: String,
}

fn bytes_field(tag: u32, v: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(v.len() as u64, out);
    out.extend_from_slice(v);
}

/// A length-delimited field's size on the wire, key included.
fn field_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Writes `KeyValue { key, value: AnyValue { string_value | int_value } }` entries.
struct Attrs<'a>(&'a mut Vec<u8>);

impl Attrs<'_> {
    fn key_value(&mut self, key: &str, any_len: usize) {
        let kv_len = field_len(1, key.len()) + field_len(2, any_len);
        encode_key(span::ATTRIBUTES, WireType::LengthDelimited, self.0);
        encode_varint(kv_len as u64, self.0);
        bytes_field(1, key.as_bytes(), self.0);
        encode_key(2, WireType::LengthDelimited, self.0);
        encode_varint(any_len as u64, self.0);
    }
}

impl AttributeSink for Attrs<'_> {
    fn str(&mut self, key: &'static str, v: &str) {
        // AnyValue.string_value (1) is in a oneof: written even when empty.
        self.key_value(key, field_len(1, v.len()));
        bytes_field(1, v.as_bytes(), self.0);
    }

    fn int(&mut self, key: &'static str, v: i64) {
        // AnyValue.int_value (3), varint of the two's complement.
        let n = v as u64;
        self.key_value(key, prost::encoding::key_len(3) + encoded_len_varint(n));
        encode_key(3, WireType::Varint, self.0);
        encode_varint(n, self.0);
    }
}

impl BatchEncoder {
    /// An encoder for spans of `resource`, in the `sluice` instrumentation scope.
    pub fn new(resource: &Resource) -> Self {
        let scope = InstrumentationScope {
            name: "sluice".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        BatchEncoder {
            resource: resource.encode_to_vec(),
            scope: scope.encode_to_vec(),
            spans: Vec::new(),
            span: Vec::new(),
            name: String::new(),
        }
    }

    /// The `ExportTraceServiceRequest` carrying `batch`, encoded.
    pub fn encode<'r>(&mut self, batch: impl IntoIterator<Item = &'r SpanRecord>) -> Vec<u8> {
        self.spans.clear();
        for r in batch {
            self.span.clear();
            encode_span(r, &mut self.span, &mut self.name);
            // ScopeSpans.spans (2)
            bytes_field(2, &self.span, &mut self.spans);
        }
        // ScopeSpans { scope (1), spans (2)... }
        let scope_spans_len = field_len(1, self.scope.len()) + self.spans.len();
        // ResourceSpans { resource (1), scope_spans (2) }
        let resource_spans_len = field_len(1, self.resource.len()) + field_len(2, scope_spans_len);
        let mut out = Vec::with_capacity(field_len(1, resource_spans_len));
        // ExportTraceServiceRequest.resource_spans (1)
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans_len as u64, &mut out);
        bytes_field(1, &self.resource, &mut out);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_spans_len as u64, &mut out);
        bytes_field(1, &self.scope, &mut out);
        out.extend_from_slice(&self.spans);
        out
    }
}

/// One `Span` message body, fields in prost's order (by field number).
fn encode_span(r: &SpanRecord, out: &mut Vec<u8>, name: &mut String) {
    bytes_field(span::TRACE_ID, &r.trace_id, out);
    bytes_field(span::SPAN_ID, &r.span_id, out);
    if let Some(ts) = r.trace_state.as_deref().filter(|t| !t.is_empty()) {
        bytes_field(span::TRACE_STATE, ts.as_bytes(), out);
    }
    if let Some(p) = &r.parent_span_id {
        bytes_field(span::PARENT_SPAN_ID, p, out);
    }
    r.name_into(name);
    if !name.is_empty() {
        bytes_field(span::NAME, name.as_bytes(), out);
    }
    let kind = r.kind() as i32;
    if kind != 0 {
        encode_key(span::KIND, WireType::Varint, out);
        encode_varint(kind as u64, out);
    }
    for (tag, t) in [
        (span::START, r.start_unix_nanos),
        (span::END, r.end_unix_nanos),
    ] {
        if t != 0 {
            encode_key(tag, WireType::SixtyFourBit, out);
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    let status = r.attributes(&mut Attrs(out));
    if let Some(message) = status {
        let len = if message.is_empty() {
            0
        } else {
            field_len(STATUS_MESSAGE, message.len())
        } + prost::encoding::key_len(STATUS_CODE)
            + encoded_len_varint(STATUS_CODE_ERROR);
        encode_key(span::STATUS, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        if !message.is_empty() {
            bytes_field(STATUS_MESSAGE, message.as_bytes(), out);
        }
        encode_key(STATUS_CODE, WireType::Varint, out);
        encode_varint(STATUS_CODE_ERROR, out);
    }
    if r.flags != 0 {
        encode_key(span::FLAGS, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&r.flags.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::otel::export::resource;
    use crate::telemetry::otel::record::UpstreamSpan;
    use crate::telemetry::otel::record::{AttemptSpan, Detail, FilterSpan, ServerSpan};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use std::sync::Arc;

    fn record(detail: Detail, parent: Option<[u8; 8]>, state: Option<&str>) -> SpanRecord {
        SpanRecord {
            trace_id: [0xab; 16],
            span_id: [7; 8],
            parent_span_id: parent,
            flags: 0x301,
            trace_state: state.map(Arc::from),
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_000_100_000,
            detail,
        }
    }

    fn server(status: u16, query: bool, route: Option<&str>, client: &str) -> Detail {
        let text = "/p/q?a=1example.orgcurl/8";
        Detail::Server(ServerSpan {
            method: http::Method::POST,
            text: text.into(),
            query_at: 4,
            host_at: 8,
            ua_at: 19,
            has_query: query,
            has_ua: true,
            scheme: "https",
            version: http::Version::HTTP_2,
            local_port: 8443,
            client: client.parse().expect("address"),
            status,
            route: route.map(Arc::from),
            cluster: Some(Arc::from("app")),
            details: status.eq(&503).then_some("no_healthy_endpoint"),
        })
    }

    /// Every kind of span, errors and not, encodes to exactly prost's bytes for the structs.
    #[test]
    fn same_bytes_as_prost() {
        let ep = "10.0.0.7:8080".parse().expect("address");
        let batch = vec![
            record(
                server(200, true, Some("api"), "127.0.0.1:40000"),
                None,
                None,
            ),
            record(
                server(503, false, None, "[2001:db8::2]:1"),
                Some([9; 8]),
                Some("k=v"),
            ),
            record(
                Detail::Upstream(UpstreamSpan {
                    method: http::Method::GET,
                    cluster: Arc::from("app"),
                    result: Ok(404),
                    endpoint: Some(ep),
                    resends: 0,
                }),
                Some([3; 8]),
                Some(""),
            ),
            record(
                Detail::Upstream(UpstreamSpan {
                    method: http::Method::GET,
                    cluster: Arc::from("app"),
                    result: Err("ConnectTimeout".into()),
                    endpoint: Some(ep),
                    resends: 2,
                }),
                Some([3; 8]),
                None,
            ),
            record(
                Detail::Attempt(AttemptSpan {
                    number: 12,
                    endpoint: ep,
                    result: Ok(502),
                }),
                Some([4; 8]),
                None,
            ),
            record(
                Detail::Attempt(AttemptSpan {
                    number: 1,
                    endpoint: ep,
                    result: Err("Reset".into()),
                }),
                Some([4; 8]),
                None,
            ),
            record(
                Detail::Filter(FilterSpan {
                    filter: Arc::from("auth"),
                    phase: "request_headers",
                    outcome: "error",
                }),
                Some([3; 8]),
                None,
            ),
        ];
        let res = resource("svc");
        let expected = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(res.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "sluice".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: batch.iter().map(SpanRecord::to_span).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let mut enc = BatchEncoder::new(&res);
        assert_eq!(enc.encode(&batch), expected.encode_to_vec());
        // The buffers are reused: a second, smaller batch is encoded alone.
        let one = &batch[4..5];
        let mut single = expected.clone();
        single.resource_spans[0].scope_spans[0].spans =
            one.iter().map(SpanRecord::to_span).collect();
        assert_eq!(enc.encode(one), single.encode_to_vec());
    }
}
