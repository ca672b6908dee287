//! OTLP protobuf encoding of [`SpanRecord`]s straight into bytes: the same bytes prost writes
//! for the equivalent `ExportTraceServiceRequest`, without building its ~25 strings and
//! vectors per span first. A span is encoded on the worker when it ends ([`SpanEncoder`]); the
//! exporter thread only puts a request's head in front of the spans' bytes ([`BatchEncoder`]).

use std::net::IpAddr;

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use super::blocks::Blocks;
use super::record::{ip_text, ipv4_text, AttributeSink, Constant, SpanRecord};

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

/// Encodes each span as it ends, on the thread that recorded it, into that thread's buffer:
/// a `ScopeSpans.spans` field ready to be concatenated with others. Encoding right away costs
/// no more than encoding later, and saves keeping the record (its strings, its names' shared
/// counts) until the exporter thread gets to it and freeing it there.
#[derive(Default)]
pub struct SpanEncoder {
    blocks: Blocks,
}

impl SpanEncoder {
    /// Append `r` to `out` as one `ScopeSpans.spans` field (key, length, `Span` body).
    pub fn push(&mut self, r: &SpanRecord, out: &mut Vec<u8>) {
        out.push(SCOPE_SPANS_SPAN);
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        encode_span(r, out, &mut self.blocks);
        put_len(out, at);
    }

    /// How many constant blocks it keeps.
    #[cfg(test)]
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// Spans encoded by [`SpanEncoder::push`], one after the other, and how many.
#[derive(Debug, Default)]
pub struct EncodedSpans {
    pub bytes: Vec<u8>,
    pub count: usize,
}

/// Wraps encoded spans of one resource and scope into export requests.
pub struct BatchEncoder {
    /// `ResourceSpans.resource`, encoded once (key and length included).
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, encoded once (key and length included).
    scope: Vec<u8>,
    /// Bytes per span in the last batch (it sizes the next batch, see `batch_spans`).
    span_len: usize,
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

/// The key byte of `Span.attributes` (9, length-delimited); of `KeyValue.key` (1) and
/// `AnyValue.string_value` (1), both length-delimited; of `KeyValue.value` (2, the same); and
/// of `AnyValue.int_value` (3, varint). All fit in one byte.
const ATTRIBUTE_KEY: u8 = (span::ATTRIBUTES as u8) << 3 | 2;
const FIELD_1_BYTES: u8 = 1 << 3 | 2;
const FIELD_2_BYTES: u8 = 2 << 3 | 2;
const FIELD_3_VARINT: u8 = 3 << 3;
/// `ScopeSpans.spans` (2), length-delimited.
const SCOPE_SPANS_SPAN: u8 = FIELD_2_BYTES;
/// The longest varint.
const MAX_VARINT: usize = 10;

/// Writes `KeyValue { key, value: AnyValue { string_value | int_value } }` entries. Attributes
/// are most of a span's bytes: when every length fits in one byte (short keys and values,
/// nearly always), an entry is three copies and two four-byte stores; the constant ones are
/// copied whole from `blocks`.
struct Attrs<'a> {
    out: &'a mut Vec<u8>,
    blocks: &'a mut Blocks,
}

impl Attrs<'_> {
    /// The general case: up to the start of the `AnyValue` body, which is `any_len` long.
    fn key_value(&mut self, key: &str, any_len: usize) {
        let kv_len = field_len(1, key.len()) + field_len(2, any_len);
        let out = &mut *self.out;
        out.push(ATTRIBUTE_KEY);
        encode_varint(kv_len as u64, out);
        bytes_field(1, key.as_bytes(), out);
        out.push(FIELD_2_BYTES);
        encode_varint(any_len as u64, out);
    }

    /// A string attribute whose value is `v` (valid UTF-8). Inlined where the key is a literal:
    /// its copy is then a few fixed-size moves instead of a call to `memcpy`.
    #[inline(always)]
    fn string(&mut self, key: &str, v: &[u8]) {
        let (k, n) = (key.len(), v.len());
        // AnyValue.string_value (1) is in a oneof: written even when empty.
        let any_len = 2 + n;
        let kv_len = 2 + k + 2 + any_len;
        if kv_len < 0x80 {
            let out = &mut *self.out;
            out.reserve(2 + kv_len);
            out.extend_from_slice(&[ATTRIBUTE_KEY, kv_len as u8, FIELD_1_BYTES, k as u8]);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&[FIELD_2_BYTES, any_len as u8, FIELD_1_BYTES, n as u8]);
            out.extend_from_slice(v);
        } else {
            self.key_value(key, field_len(1, n));
            bytes_field(1, v, self.out);
        }
    }
}

impl AttributeSink for Attrs<'_> {
    #[inline(always)]
    fn str(&mut self, key: &'static str, v: &str) {
        self.string(key, v.as_bytes());
    }

    #[inline(always)]
    fn int(&mut self, key: &'static str, v: i64) {
        // AnyValue.int_value (3), varint of the two's complement.
        let mut var = [0u8; MAX_VARINT];
        let var_len = varint(v as u64, &mut var);
        let any_len = 1 + var_len;
        let kv_len = 2 + key.len() + 2 + any_len;
        let out = &mut *self.out;
        if kv_len < 0x80 {
            out.reserve(2 + kv_len + MAX_VARINT);
            out.extend_from_slice(&[ATTRIBUTE_KEY, kv_len as u8, FIELD_1_BYTES, key.len() as u8]);
            out.extend_from_slice(key.as_bytes());
            // The varint's whole buffer (a fixed-size copy, no call), then its unused end cut.
            let mut tail = [0u8; 3 + MAX_VARINT];
            tail[..3].copy_from_slice(&[FIELD_2_BYTES, any_len as u8, FIELD_3_VARINT]);
            tail[3..].copy_from_slice(&var);
            out.extend_from_slice(&tail);
            out.truncate(out.len() - (MAX_VARINT - var_len));
        } else {
            self.key_value(key, any_len);
            self.out.push(FIELD_3_VARINT);
            self.out.extend_from_slice(&var[..var_len]);
        }
    }

    fn ip(&mut self, key: &'static str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                let mut b = [0u8; 15];
                let n = ipv4_text(v4, &mut b);
                self.string(key, &b[..n]);
            }
            IpAddr::V6(_) => {
                let mut b = [0u8; 48];
                self.str(key, ip_text(ip, &mut b));
            }
        }
    }

    fn constant(&mut self, c: Constant<'_>) {
        if let Some(bytes) = self.blocks.get(&c) {
            self.out.extend_from_slice(bytes);
            return;
        }
        let start = self.out.len();
        c.attributes(self);
        self.blocks.insert(&c, &self.out[start..]);
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
        let (mut r, mut sc) = (Vec::new(), Vec::new());
        bytes_field(1, &resource.encode_to_vec(), &mut r);
        bytes_field(1, &scope.encode_to_vec(), &mut sc);
        BatchEncoder {
            resource: r,
            scope: sc,
            span_len: 0,
        }
    }

    /// Bytes per span in the last batch (0 before the first).
    pub fn span_len(&self) -> usize {
        self.span_len
    }

    /// The `ExportTraceServiceRequest` carrying the spans of `batch`, encoded: its head, then
    /// the spans' bytes as the workers wrote them (not copied: the request is sent as these
    /// pieces, one after the other).
    pub fn encode(&mut self, batch: Vec<EncodedSpans>) -> Vec<Bytes> {
        // ExportTraceServiceRequest.resource_spans (1) { resource (1), scope_spans (2) { scope
        // (1), spans (2)... } }
        let spans_len: usize = batch.iter().map(|c| c.bytes.len()).sum();
        let count: usize = batch.iter().map(|c| c.count).sum();
        if count > 0 {
            self.span_len = spans_len.div_ceil(count);
        }
        let scope_spans_len = self.scope.len() + spans_len;
        let resource_spans_len = self.resource.len() + field_len(2, scope_spans_len);
        let mut head = Vec::with_capacity(field_len(1, resource_spans_len) - spans_len);
        encode_key(1, WireType::LengthDelimited, &mut head);
        encode_varint(resource_spans_len as u64, &mut head);
        head.extend_from_slice(&self.resource);
        encode_key(2, WireType::LengthDelimited, &mut head);
        encode_varint(scope_spans_len as u64, &mut head);
        head.extend_from_slice(&self.scope);
        let mut parts = Vec::with_capacity(1 + batch.len());
        parts.push(Bytes::from(head));
        parts.extend(
            batch
                .into_iter()
                .filter(|c| !c.bytes.is_empty())
                .map(|c| Bytes::from(c.bytes)),
        );
        parts
    }
}

/// Write the length of the message that follows the two bytes at `at` (to the end of `out`)
/// into them. Two bytes is the varint of 128 to 16,383, the size of nearly every span; any
/// other length is written by moving the message (rare: a tiny span, or a huge one).
fn put_len(out: &mut Vec<u8>, at: usize) {
    let len = out.len() - at - 2;
    if (0x80..0x4000).contains(&len) {
        out[at] = (len & 0x7f) as u8 | 0x80;
        out[at + 1] = (len >> 7) as u8;
    } else {
        let mut v = Vec::with_capacity(MAX_VARINT);
        encode_varint(len as u64, &mut v);
        out.splice(at..at + 2, v);
    }
}

/// `v` as a protobuf varint at the start of `buf`; its length.
fn varint(mut v: u64, buf: &mut [u8; MAX_VARINT]) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        buf[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    buf[n] = v as u8;
    n + 1
}

/// The key byte of a field numbered below 16.
const fn key_byte(tag: u32, wire_type: WireType) -> u8 {
    (tag << 3 | wire_type as u32) as u8
}

/// One `Span` message body, fields in prost's order (by field number).
fn encode_span(r: &SpanRecord, out: &mut Vec<u8>, blocks: &mut Blocks) {
    // The ids: fixed sizes, written as one array (a few stores instead of six calls).
    let mut ids = [0u8; 28];
    ids[0] = key_byte(span::TRACE_ID, WireType::LengthDelimited);
    ids[1] = 16;
    ids[2..18].copy_from_slice(&r.trace_id);
    ids[18] = key_byte(span::SPAN_ID, WireType::LengthDelimited);
    ids[19] = 8;
    ids[20..].copy_from_slice(&r.span_id);
    out.extend_from_slice(&ids);
    if let Some(ts) = r.trace_state.filter(|t| !t.is_empty()) {
        bytes_field(span::TRACE_STATE, ts.as_bytes(), out);
    }
    if let Some(p) = &r.parent_span_id {
        out.extend_from_slice(&[key_byte(span::PARENT_SPAN_ID, WireType::LengthDelimited), 8]);
        out.extend_from_slice(p);
    }
    let mut digits = [0u8; 20];
    let parts = r.name_parts(&mut digits);
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > 0 {
        if len < 0x80 {
            out.extend_from_slice(&[key_byte(span::NAME, WireType::LengthDelimited), len as u8]);
        } else {
            encode_key(span::NAME, WireType::LengthDelimited, out);
            encode_varint(len as u64, out);
        }
        for p in parts.iter().filter(|p| !p.is_empty()) {
            out.extend_from_slice(p.as_bytes());
        }
    }
    // SpanKind values are 0 to 5: a one-byte varint.
    let kind = r.kind() as i32;
    if kind != 0 {
        out.extend_from_slice(&[key_byte(span::KIND, WireType::Varint), kind as u8]);
    }
    if r.start_unix_nanos != 0 && r.end_unix_nanos != 0 {
        let mut times = [0u8; 18];
        times[0] = key_byte(span::START, WireType::SixtyFourBit);
        times[1..9].copy_from_slice(&r.start_unix_nanos.to_le_bytes());
        times[9] = key_byte(span::END, WireType::SixtyFourBit);
        times[10..].copy_from_slice(&r.end_unix_nanos.to_le_bytes());
        out.extend_from_slice(&times);
    } else {
        for (tag, t) in [
            (span::START, r.start_unix_nanos),
            (span::END, r.end_unix_nanos),
        ] {
            if t != 0 {
                encode_key(tag, WireType::SixtyFourBit, out);
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
    }
    let status = r.attributes(&mut Attrs { out, blocks });
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
        // Field 16: a two-byte key (a varint).
        let f = r.flags.to_le_bytes();
        let key = span::FLAGS << 3 | WireType::ThirtyTwoBit as u32;
        let k = [(key & 0x7f) as u8 | 0x80, (key >> 7) as u8];
        out.extend_from_slice(&[k[0], k[1], f[0], f[1], f[2], f[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::otel::export::resource;
    use crate::telemetry::otel::record::UpstreamSpan;
    use crate::telemetry::otel::record::{AttemptSpan, Detail, FilterSpan, ServerSpan};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use std::sync::Arc;

    fn record<'a>(
        detail: Detail<'a>,
        parent: Option<[u8; 8]>,
        state: Option<&'a str>,
    ) -> SpanRecord<'a> {
        let mut r = SpanRecord::for_test(detail);
        (r.parent_span_id, r.trace_state, r.flags) = (parent, state, 0x301);
        (r.start_unix_nanos, r.end_unix_nanos) =
            (1_700_000_000_000_000_000, 1_700_000_000_000_100_000);
        r
    }

    fn server<'a>(
        status: u16,
        query: bool,
        route: Option<&'a Arc<str>>,
        client: &str,
        cluster: &'a Arc<str>,
    ) -> Detail<'a> {
        Detail::Server(ServerSpan {
            method: &http::Method::POST,
            path: "/p/q",
            query: query.then_some("a=1"),
            host: "example.org",
            user_agent: Some("curl/8"),
            scheme: "https",
            version: http::Version::HTTP_2,
            local_port: 8443,
            client: client.parse().expect("address"),
            status,
            route,
            cluster: Some(cluster),
            details: status.eq(&503).then_some("no_healthy_endpoint"),
        })
    }

    fn joined(parts: Vec<Bytes>) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn varints_match_prost() {
        for v in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            40_000,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut buf = [0u8; MAX_VARINT];
            let n = varint(v, &mut buf);
            let mut expected = Vec::new();
            encode_varint(v, &mut expected);
            assert_eq!(&buf[..n], expected.as_slice(), "{v}");
        }
        // An integer attribute whose entry is too long for one-byte lengths.
        let mut out = Vec::new();
        let mut blocks = Blocks::default();
        let key: &'static str = Box::leak("k".repeat(130).into_boxed_str());
        Attrs {
            out: &mut out,
            blocks: &mut blocks,
        }
        .int(key, -1);
        let kv = KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(-1)),
            }),
            ..Default::default()
        };
        let mut expected = Vec::new();
        prost::encoding::message::encode(span::ATTRIBUTES, &kv, &mut expected);
        assert_eq!(out, expected);
    }

    /// Every kind of span, errors and not, encodes to exactly prost's bytes for the structs.
    #[test]
    fn same_bytes_as_prost() {
        let ep = "10.0.0.7:8080".parse().expect("address");
        let (api, app): (Arc<str>, Arc<str>) = (Arc::from("api"), Arc::from("app"));
        let mut batch = vec![
            record(
                server(200, true, Some(&api), "127.0.0.1:40000", &app),
                None,
                None,
            ),
            record(
                server(503, false, None, "[2001:db8::2]:1", &app),
                Some([9; 8]),
                Some("k=v"),
            ),
            record(
                Detail::Upstream(UpstreamSpan {
                    method: &http::Method::GET,
                    cluster: &app,
                    result: Ok(404),
                    endpoint: Some(ep),
                    resends: 0,
                }),
                Some([3; 8]),
                Some(""),
            ),
            record(
                Detail::Upstream(UpstreamSpan {
                    method: &http::Method::GET,
                    cluster: &app,
                    result: Err("ConnectTimeout"),
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
                    result: Err("Reset"),
                }),
                Some([4; 8]),
                None,
            ),
            record(
                Detail::Filter(FilterSpan {
                    filter: "auth",
                    phase: "request_headers",
                    outcome: "error",
                }),
                Some([3; 8]),
                None,
            ),
        ];
        // A span under 128 bytes and one over 16 KiB (lengths of one and three bytes, the
        // others have two), and attribute values too long for one-byte lengths.
        let mut tiny = record(
            Detail::Filter(FilterSpan {
                filter: "a",
                phase: "log",
                outcome: "ok",
            }),
            None,
            None,
        );
        (tiny.start_unix_nanos, tiny.end_unix_nanos) = (0, 0);
        batch.push(tiny);
        let long_route: Arc<str> = Arc::from("r".repeat(150));
        let long_cluster: Arc<str> = Arc::from("c".repeat(120));
        let long_ua = "u".repeat(20_000);
        let mut huge = record(
            server(200, true, Some(&long_route), "10.1.2.3:5", &long_cluster),
            None,
            None,
        );
        if let Detail::Server(sv) = &mut huge.detail {
            sv.user_agent = Some(&long_ua);
        }
        batch.push(huge);
        let sizes: Vec<usize> = batch.iter().map(|r| r.to_span().encoded_len()).collect();
        assert!(sizes.iter().any(|&n| n < 0x80), "{sizes:?}");
        assert!(sizes.iter().any(|&n| n >= 0x4000), "{sizes:?}");
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
        let mut spans = SpanEncoder::default();
        let mut enc = BatchEncoder::new(&res);
        let encoded = |spans: &mut SpanEncoder, records: &[SpanRecord]| {
            let mut c = EncodedSpans::default();
            for r in records {
                spans.push(r, &mut c.bytes);
                c.count += 1;
            }
            c
        };
        let all = encoded(&mut spans, &batch);
        assert_eq!(joined(enc.encode(vec![all])), expected.encode_to_vec());
        assert_eq!(
            enc.span_len(),
            expected.resource_spans[0].scope_spans[0]
                .spans
                .iter()
                .map(|s| prost::encoding::message::encoded_len(2, s))
                .sum::<usize>()
                .div_ceil(batch.len())
        );
        // Again, in three pieces (as three workers would hand them over), the constant
        // attributes now copied from the encoder's blocks.
        assert!(spans.blocks() > 0);
        let pieces = vec![
            encoded(&mut spans, &batch[..2]),
            EncodedSpans::default(),
            encoded(&mut spans, &batch[2..]),
        ];
        let parts = enc.encode(pieces);
        assert_eq!(parts.len(), 3, "the head and two pieces with spans");
        assert_eq!(joined(parts), expected.encode_to_vec());
        // A second, smaller batch is encoded alone: nothing of the first carries over.
        let one = &batch[4..5];
        let mut single = expected.clone();
        single.resource_spans[0].scope_spans[0].spans =
            one.iter().map(SpanRecord::to_span).collect();
        assert_eq!(
            joined(enc.encode(vec![encoded(&mut spans, one)])),
            single.encode_to_vec()
        );
    }
}
