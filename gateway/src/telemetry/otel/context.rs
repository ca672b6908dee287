//! W3C trace context (`traceparent`, `tracestate`): parsing what the client sent and formatting
//! what the upstream receives. Parsed by hand: the request path must not allocate for this.

use std::cell::RefCell;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue};

/// `traceparent` header name.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` header name.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A remote parent taken from the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's sampling decision (flag 0x01).
    pub sampled: bool,
}

/// The parent in one `traceparent` value, if it is valid (version 00 layout; later versions are
/// read by their first four fields, as the spec asks). All-zero ids are invalid.
pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_byte(&v[0..2])?;
    // Version ff is forbidden; version 00 has exactly 55 bytes.
    if version == 0xff
        || (version == 0 && v.len() != 55)
        || (version != 0 && v.len() > 55 && v[55] != b'-')
    {
        return None;
    }
    let mut trace_id = [0u8; 16];
    decode_into(&v[3..35], &mut trace_id)?;
    let mut span_id = [0u8; 8];
    decode_into(&v[36..52], &mut span_id)?;
    let flags = hex_byte(&v[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// The `traceparent` value naming `span_id` of `trace_id` as the parent, sampled.
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8]) -> HeaderValue {
    let buf = traceparent_bytes(trace_id, span_id);
    let value = slab_bytes(&buf);
    // SAFETY: only lowercase hex digits, `0`, `1` and dashes were written: visible ASCII, all
    // valid in a header value (checking them again was a third of this function).
    unsafe { HeaderValue::from_maybe_shared_unchecked(value) }
}

pub const TRACEPARENT_LEN: usize = 55;

/// The `traceparent` value naming `span_id` of `trace_id` as a sampled parent.
pub fn traceparent_bytes(trace_id: &[u8; 16], span_id: &[u8; 8]) -> [u8; TRACEPARENT_LEN] {
    let mut buf = [0u8; TRACEPARENT_LEN];
    buf[0] = b'0';
    buf[1] = b'0';
    buf[2] = b'-';
    encode_into(trace_id, &mut buf[3..35]);
    buf[35] = b'-';
    encode_into(span_id, &mut buf[36..52]);
    buf[52] = b'-';
    buf[53] = b'0';
    buf[54] = b'1';
    buf
}
const VALUES_PER_SLAB: usize = 64;

thread_local! {
    /// `traceparent` values are cut from one shared buffer per thread: one allocation per
    /// [`VALUES_PER_SLAB`] upstream requests instead of one per request.
    static SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

fn slab_bytes(v: &[u8; TRACEPARENT_LEN]) -> bytes::Bytes {
    SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() - slab.len() < v.len() {
            *slab = BytesMut::with_capacity(TRACEPARENT_LEN * VALUES_PER_SLAB);
        }
        slab.extend_from_slice(v);
        slab.split().freeze()
    })
}

/// The two lowercase hex digits of every byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [HEX[b >> 4], HEX[b & 0xf]];
        b += 1;
    }
    t
};

/// Lowercase hex of `bytes` into `out` (twice as long), a table lookup per byte.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

fn decode_into(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_byte(&hex[2 * i..2 * i + 2])?;
    }
    Some(())
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(nibble(two[0])? << 4 | nibble(two[1])?)
}

/// Only lowercase hex is valid in traceparent.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = parse_traceparent(v).expect("valid");
        assert!(p.sampled);
        assert_eq!(
            format_traceparent(&p.trace_id, &p.span_id).as_bytes(),
            &v[..]
        );
    }

    #[test]
    fn hex_of_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        encode_into(&all, &mut out);
        let expect: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(String::from_utf8(out).expect("ascii"), expect);
    }

    #[test]
    fn rejects_bad_values() {
        let bad: [&[u8]; 5] = [
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ];
        for v in bad {
            assert_eq!(parse_traceparent(v), None, "{}", String::from_utf8_lossy(v));
        }
        let unsampled =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
    }
}
