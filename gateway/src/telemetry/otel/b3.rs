//! Zipkin B3 propagation: the single `b3` header and the `X-B3-*` headers, read from the client
//! and written to the upstream. Parsed by hand into fixed arrays, like W3C in [`super::context`]:
//! the request path must not allocate for this (opentelemetry-zipkin's `B3Propagator` goes
//! through `opentelemetry::Context`, a heap object per request, and brings the Zipkin exporter).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::encode_into;

/// The single header: `{trace}-{span}[-{sampled}[-{parent}]]`, or a lone sampling flag.
pub static B3: HeaderName = HeaderName::from_static("b3");
/// 16 or 32 hex digits.
pub static TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// 16 hex digits.
pub static SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// The caller's parent (written by some tracers; never needed to continue a trace).
pub static PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `1` or `0` (`true`/`false` from old tracers); absent: the receiver decides.
pub static SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `1`: debug, which implies sampled.
pub static FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// What a B3 header set says: the caller's ids (absent for a lone sampling flag) and its
/// sampling decision (absent when deferred to us).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct B3Context {
    pub ids: Option<([u8; 16], [u8; 8])>,
    pub sampled: Option<bool>,
}

/// The B3 context of `headers`: the single header wins over the multi headers when both are
/// present and valid (as the B3 specification says).
pub fn extract(headers: &HeaderMap) -> Option<B3Context> {
    if let Some(c) = headers.get(&B3).and_then(|v| parse_single(v.as_bytes())) {
        return Some(c);
    }
    extract_multi(headers)
}

/// Parse one `b3` header value.
pub fn parse_single(v: &[u8]) -> Option<B3Context> {
    if v.len() == 1 {
        return Some(B3Context {
            ids: None,
            sampled: Some(sampling_flag(v)?),
        });
    }
    let mut parts = v.split(|&c| c == b'-');
    let trace_id = trace_id(parts.next()?)?;
    let span_id = span_id(parts.next()?)?;
    let sampled = match parts.next() {
        Some(f) => Some(sampling_flag(f)?),
        None => None,
    };
    // A parent span id may follow; it must be well formed, and nothing may follow it.
    if let Some(p) = parts.next() {
        span_id_any(p)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(B3Context {
        ids: Some((trace_id, span_id)),
        sampled,
    })
}

fn extract_multi(headers: &HeaderMap) -> Option<B3Context> {
    let debug = headers.get(&FLAGS).is_some_and(|v| v.as_bytes() == b"1");
    let sampled = match headers.get(&SAMPLED).map(HeaderValue::as_bytes) {
        _ if debug => Some(true),
        Some(b"1") | Some(b"true") => Some(true),
        Some(b"0") | Some(b"false") => Some(false),
        // A malformed flag is ignored: the decision falls back to us.
        _ => None,
    };
    let ids = match (headers.get(&TRACE_ID), headers.get(&SPAN_ID)) {
        (Some(t), Some(s)) => Some((trace_id(t.as_bytes())?, span_id(s.as_bytes())?)),
        _ => None,
    };
    if ids.is_none() && sampled.is_none() {
        return None;
    }
    Some(B3Context { ids, sampled })
}

/// `1` and `d` (debug) sample, `0` does not.
fn sampling_flag(f: &[u8]) -> Option<bool> {
    match f {
        b"1" | b"d" => Some(true),
        b"0" => Some(false),
        _ => None,
    }
}

/// A 64-bit trace id is the low half of the 128-bit one (left-padded with zeros).
fn trace_id(hex: &[u8]) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    match hex.len() {
        32 => decode_into(hex, &mut id)?,
        16 => decode_into(hex, &mut id[8..])?,
        _ => return None,
    }
    (id != [0; 16]).then_some(id)
}

fn span_id(hex: &[u8]) -> Option<[u8; 8]> {
    let id = span_id_any(hex)?;
    (id != [0; 8]).then_some(id)
}

fn span_id_any(hex: &[u8]) -> Option<[u8; 8]> {
    let mut id = [0u8; 8];
    if hex.len() != 16 {
        return None;
    }
    decode_into(hex, &mut id)?;
    Some(id)
}

/// Lowercase is what B3 writes; uppercase is accepted from lenient tracers.
fn decode_into(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (o, two) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = nibble(two[0])? << 4 | nibble(two[1])?;
    }
    Some(())
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Drop every B3 header the client sent, so that the upstream never sees a stale parent next to
/// ours (a receiver prefers the single header, so a stale one would win over fresh multi ones).
pub fn remove_all(headers: &mut HeaderMap) {
    for h in [&B3, &TRACE_ID, &SPAN_ID, &PARENT_SPAN_ID, &SAMPLED, &FLAGS] {
        headers.remove(h);
    }
}

/// The single header naming `span_id` of `trace_id` as the parent, sampled.
pub fn format_single(trace_id: &[u8; 16], span_id: &[u8; 8]) -> HeaderValue {
    let mut buf = [0u8; 51];
    encode_into(trace_id, &mut buf[..32]);
    buf[32] = b'-';
    encode_into(span_id, &mut buf[33..49]);
    buf[49] = b'-';
    buf[50] = b'1';
    hex_value(&buf)
}

/// The multi headers naming `span_id` of `trace_id` as the parent, sampled.
pub fn insert_multi(headers: &mut HeaderMap, trace_id: &[u8; 16], span_id: &[u8; 8]) {
    let mut t = [0u8; 32];
    encode_into(trace_id, &mut t);
    let mut s = [0u8; 16];
    encode_into(span_id, &mut s);
    headers.insert(&TRACE_ID, hex_value(&t));
    headers.insert(&SPAN_ID, hex_value(&s));
    headers.insert(&SAMPLED, HeaderValue::from_static("1"));
}

fn hex_value(b: &[u8]) -> HeaderValue {
    // Only hex digits and dashes were written, all valid header bytes.
    HeaderValue::from_bytes(b).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const S: &str = "e457b5a2e4d86bd1";

    fn ids(t: &str, s: &str) -> ([u8; 16], [u8; 8]) {
        let mut ti = [0u8; 16];
        let mut si = [0u8; 8];
        decode_into(t.as_bytes(), &mut ti).expect("hex");
        decode_into(s.as_bytes(), &mut si).expect("hex");
        (ti, si)
    }

    #[test]
    fn single_header_forms() {
        let full = format!("{T}-{S}-1-05e3ac9a4f6e3b90");
        let c = parse_single(full.as_bytes()).expect("valid");
        assert_eq!(c.ids, Some(ids(T, S)));
        assert_eq!(c.sampled, Some(true));
        let deferred = parse_single(format!("{T}-{S}").as_bytes()).expect("valid");
        assert_eq!(deferred.sampled, None);
        let debug = parse_single(format!("{T}-{S}-d").as_bytes()).expect("valid");
        assert_eq!(debug.sampled, Some(true));
        let short = parse_single(format!("64fe8b2a57d3eff7-{S}-0").as_bytes()).expect("valid");
        assert_eq!(short.ids.map(|i| i.0[..8] == [0; 8]), Some(true));
        assert_eq!(short.sampled, Some(false));
        assert_eq!(
            parse_single(b"0"),
            Some(B3Context {
                ids: None,
                sampled: Some(false)
            })
        );
    }

    #[test]
    fn single_header_rejects_bad_values() {
        let bad = [
            T.to_string(),
            format!("{T}-{S}-x"),
            format!("{T}-0000000000000000-1"),
            format!("00000000000000000000000000000000-{S}-1"),
            format!("{T}-{S}-1-abc"),
            format!("{T}-{S}-1-05e3ac9a4f6e3b90-extra"),
            format!("{T}1-{S}"),
            "2".to_string(),
        ];
        for v in bad {
            assert_eq!(parse_single(v.as_bytes()), None, "{v}");
        }
    }

    #[test]
    fn multi_headers_and_precedence() {
        let mut h = HeaderMap::new();
        h.insert(&TRACE_ID, HeaderValue::from_static(T));
        h.insert(&SPAN_ID, HeaderValue::from_static(S));
        h.insert(&SAMPLED, HeaderValue::from_static("true"));
        let c = extract(&h).expect("valid");
        assert_eq!(c.ids, Some(ids(T, S)));
        assert_eq!(c.sampled, Some(true));
        h.insert(&SAMPLED, HeaderValue::from_static("0"));
        h.insert(&FLAGS, HeaderValue::from_static("1"));
        assert_eq!(extract(&h).and_then(|c| c.sampled), Some(true), "debug");
        // The single header wins when both are there.
        let other = format!("{S}{S}-{S}-0");
        h.insert(&B3, HeaderValue::from_str(&other).expect("value"));
        assert_eq!(extract(&h).and_then(|c| c.sampled), Some(false));
    }

    #[test]
    fn formats_round_trip() {
        let (t, s) = ids(T, S);
        let v = format_single(&t, &s);
        assert_eq!(v.as_bytes(), format!("{T}-{S}-1").as_bytes());
        let mut h = HeaderMap::new();
        h.insert(&B3, v);
        insert_multi(&mut h, &t, &s);
        assert_eq!(h[&TRACE_ID], T);
        assert_eq!(h[&SPAN_ID], S);
        assert_eq!(h[&SAMPLED], "1");
        remove_all(&mut h);
        assert!(h.is_empty());
    }
}
