//! Proxy header semantics: hop-by-hop headers, X-Forwarded-*, x-request-id.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::telemetry::otel::request::Found;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including any named by `Connection`.
/// `keep_upgrade` keeps `Connection: upgrade` + `Upgrade` for a WebSocket handshake.
pub fn remove_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass of cheap name comparisons first: most heads carry at most `Connection`, and a
    // removal hashes the name and shifts the map, several times per request otherwise.
    let present = h.keys().any(|n| is_hop_by_hop(n, keep_upgrade));
    remove_hop_by_hop_found(h, keep_upgrade, present);
}

/// [`remove_hop_by_hop`] when whether any hop-by-hop field is present is already known (see
/// [`RequestFields`]).
pub fn remove_hop_by_hop_found(h: &mut HeaderMap, keep_upgrade: bool, present: bool) {
    if present {
        remove_listed(h, keep_upgrade);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The fields of a request head the proxy acts on when it builds the upstream request, found
/// in one pass of name comparisons. A standard name compares as a small integer, and a request
/// head has few fields, so the pass costs less than the five hashed lookups it replaces.
#[derive(Debug, Default)]
pub struct RequestFields {
    /// The first `Content-Length` value, when it is a number.
    pub content_length: Option<u64>,
    /// The first `TE` value.
    pub te: Option<HeaderValue>,
    pub host: bool,
    pub expect: bool,
    /// A field [`remove_hop_by_hop`] removes whatever `Connection` says, or `Connection`.
    pub hop_by_hop: bool,
    /// The client sent `X-Forwarded-For` or `X-Forwarded-Proto`.
    pub forwarded: bool,
}

impl RequestFields {
    /// One pass over `h`; `keep_upgrade` as for [`remove_hop_by_hop`].
    pub fn of(h: &HeaderMap, keep_upgrade: bool) -> Self {
        let mut f = RequestFields::default();
        let mut length_seen = false;
        for (name, value) in h {
            if *name == header::HOST {
                f.host = true;
            } else if *name == header::CONTENT_LENGTH {
                if !length_seen {
                    length_seen = true;
                    f.content_length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
                }
            } else if *name == header::EXPECT {
                f.expect = true;
            } else if is_hop_by_hop(name, keep_upgrade) {
                f.hop_by_hop = true;
                if *name == header::TE && f.te.is_none() {
                    f.te = Some(value.clone());
                }
            } else if *name == X_FORWARDED_FOR || *name == X_FORWARDED_PROTO {
                f.forwarded = true;
            }
        }
        f
    }
}

/// What the request path reads of a request head before its filters run, found in one pass
/// over its fields (the first value of each, as a lookup would find it).
#[derive(Debug, Default)]
pub struct Arrival<'a> {
    /// A gRPC request (`Content-Type: application/grpc…`).
    pub grpc: bool,
    pub request_id: Option<&'a HeaderValue>,
    /// What a trace reads: the W3C trace context the client sent, `Host` and `User-Agent`
    /// (looked for only when tracing is on, `TRACED`).
    pub trace: Found<'a>,
}

impl Arrival<'_> {
    pub fn of<const TRACED: bool>(h: &HeaderMap) -> Arrival<'_> {
        let (mut grpc, mut a) = (None, Arrival::default());
        for (name, value) in h {
            if *name == header::CONTENT_TYPE {
                grpc.get_or_insert(value);
            } else if *name == X_REQUEST_ID {
                a.request_id.get_or_insert(value);
            } else if TRACED {
                if *name == header::HOST {
                    a.trace.host.get_or_insert(value);
                } else if *name == header::USER_AGENT {
                    a.trace.user_agent.get_or_insert(value);
                } else if *name == crate::telemetry::otel::context::TRACEPARENT {
                    a.trace.traceparent.get_or_insert(value);
                }
            }
        }
        a.grpc = grpc.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        a
    }
}

/// Whether `name` is removed by [`remove_hop_by_hop`] whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName, keep_upgrade: bool) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
        || (!keep_upgrade
            && (*name == header::UPGRADE
                || *name == header::PROXY_AUTHENTICATE
                || *name == header::PROXY_AUTHORIZATION))
}

fn remove_listed(h: &mut HeaderMap, keep_upgrade: bool) {
    // Only the names present are removed: a removal hashes and shifts the map.
    let mut present: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_hop_by_hop(n, keep_upgrade))
        .cloned()
        .collect();
    for conn in h.get_all(header::CONNECTION) {
        let Ok(list) = conn.to_str() else { continue };
        present.extend(
            list.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
                .filter(|t| {
                    !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close")
                })
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
        );
    }
    for n in present {
        h.remove(n);
    }
}

/// gRPC and other h2 clients send `te: trailers`; it is the one TE value allowed over h2 and the
/// upstream needs it.
pub fn keep_te_trailers(original: Option<&HeaderValue>, h: &mut HeaderMap) {
    if let Some(v) = original {
        if v.as_bytes().eq_ignore_ascii_case(b"trailers") {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Append the client address to X-Forwarded-For and set X-Forwarded-Proto.
pub fn set_forwarded(h: &mut HeaderMap, client: IpAddr, scheme: &'static str) {
    if let Some(client) = client_value(client) {
        set_forwarded_value(h, &client, scheme);
    }
}

/// The client address as an X-Forwarded-For element, made once per connection so that the
/// request path only clones it (a reference count) when the client sent no X-Forwarded-For.
pub fn client_value(client: IpAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&itoa_ip(client)).ok()
}

/// [`set_forwarded`] with the client address already rendered by [`client_value`].
pub fn set_forwarded_value(h: &mut HeaderMap, client: &HeaderValue, scheme: &'static str) {
    // One hash per header (entry), not a lookup and then an insert.
    match h.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(v) => {
            v.insert(client.clone());
        }
        header::Entry::Occupied(mut o) => {
            // A previous value that is not visible ASCII is replaced, not joined (as before).
            let joined = match o.get().to_str() {
                Ok(prev) => {
                    let mut joined = Vec::with_capacity(prev.len() + 2 + client.len());
                    joined.extend_from_slice(prev.as_bytes());
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(client.as_bytes());
                    // Both parts are visible ASCII, so this does not fail; if it did, the header
                    // would stay as it was.
                    HeaderValue::from_maybe_shared(Bytes::from(joined)).ok()
                }
                Err(_) => Some(client.clone()),
            };
            if let Some(v) = joined {
                o.insert(v);
            }
        }
    }
    h.entry(&X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static(scheme));
}

fn itoa_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

thread_local! {
    static RNG: Cell<(u64, u64)> = Cell::new(seed());
    /// Request ids are cut from one shared buffer: one allocation per [`IDS_PER_SLAB`] ids
    /// instead of two per id (the copy into a header value, and the shared-state promotion when
    /// that value is first cloned into the exchange).
    static ID_SLAB: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

const ID_LEN: usize = 36;
const IDS_PER_SLAB: usize = 64;

fn slab_bytes(id: &[u8; ID_LEN]) -> Bytes {
    ID_SLAB.with(|slab| {
        let mut slab = slab.borrow_mut();
        if slab.capacity() - slab.len() < ID_LEN {
            *slab = BytesMut::with_capacity(ID_LEN * IDS_PER_SLAB);
        }
        slab.extend_from_slice(id);
        slab.split().freeze()
    })
}

fn seed() -> (u64, u64) {
    let a: u64 = rand::random();
    let b: u64 = rand::random();
    (a | 1, b | 1)
}

/// A fresh request id in UUID v4 form, from a per-thread xorshift128+ seeded from the OS
/// (unique enough for correlation, not for secrets; no lock, no syscall).
pub fn new_request_id() -> HeaderValue {
    let (hi, lo) = RNG.with(|c| {
        let (mut s1, s0) = c.get();
        let out1 = s0.wrapping_add(s1);
        s1 ^= s1 << 23;
        let next = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
        let (mut t1, t0) = (s0, next);
        let out2 = t0.wrapping_add(t1);
        t1 ^= t1 << 23;
        c.set((t0, t1 ^ t0 ^ (t1 >> 17) ^ (t0 >> 26)));
        (out1, out2)
    });
    // Version 4 (the high nibble of the third group) and the RFC 4122 variant (the top two
    // bits of the fourth group).
    let hi = (hi & !0xF000) | 0x4000;
    let lo = (lo & !(0xC000 << 48)) | (0x8000 << 48);
    let mut digits = [0u8; 32];
    for (i, pair) in digits.chunks_exact_mut(2).enumerate() {
        let word = if i < 8 { hi } else { lo };
        let byte = (word >> (56 - (i % 8) * 8)) as u8;
        pair.copy_from_slice(&HEX_PAIRS[byte as usize]);
    }
    let mut buf = [b'-'; ID_LEN];
    buf[..8].copy_from_slice(&digits[..8]);
    buf[9..13].copy_from_slice(&digits[8..12]);
    buf[14..18].copy_from_slice(&digits[12..16]);
    buf[19..23].copy_from_slice(&digits[16..20]);
    buf[24..].copy_from_slice(&digits[20..]);
    // SAFETY: the bytes are lower-case hex digits and dashes, all valid in a header value, so
    // the check `from_maybe_shared` would make (a loop over 36 bytes per request) cannot fail.
    unsafe { HeaderValue::from_maybe_shared_unchecked(slab_bytes(&buf)) }
}

/// The two lower-case hex digits of every byte value.
static HEX_PAIRS: [[u8; 2]; 256] = {
    let hex = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [hex[i >> 4], hex[i & 0xF]];
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::head::map_of as head;

    #[test]
    fn hop_by_hop_removed_including_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn request_fields_agree_with_the_lookups_they_replace() {
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("host", "a"), ("user-agent", "u")],
            &[
                ("content-length", "12"),
                ("content-length", "13"),
                ("expect", "100-continue"),
            ],
            &[("content-length", "x12")],
            &[("te", "trailers"), ("te", "gzip"), ("x-a", "1")],
            &[("connection", "x-a"), ("x-a", "1"), ("host", "h")],
            &[("upgrade", "websocket"), ("connection", "upgrade")],
            &[("proxy-authorization", "Basic a"), ("keep-alive", "5")],
        ];
        for fields in cases {
            let h = head(fields);
            for upgrade in [false, true] {
                let f = RequestFields::of(&h, upgrade);
                let length = h
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                assert_eq!(f.content_length, length, "{fields:?}");
                assert_eq!(f.te.as_ref(), h.get(header::TE), "{fields:?}");
                assert_eq!(f.host, h.contains_key(header::HOST), "{fields:?}");
                assert_eq!(f.expect, h.contains_key(header::EXPECT), "{fields:?}");
                let hop = h.keys().any(|n| is_hop_by_hop(n, upgrade));
                assert_eq!(f.hop_by_hop, hop, "{fields:?} upgrade={upgrade}");
                // And removing with the known answer leaves what the lookup version leaves.
                let (mut a, mut b) = (h.clone(), h.clone());
                remove_hop_by_hop(&mut a, upgrade);
                remove_hop_by_hop_found(&mut b, upgrade, f.hop_by_hop);
                assert_eq!(a, b, "{fields:?}");
            }
        }
    }

    #[test]
    fn grpc_the_first_request_id_and_trace_fields_are_found_in_one_pass() {
        let h = head(&[
            ("x-request-id", "first"),
            ("traceparent", "tp-1"),
            ("user-agent", "ua-1"),
            ("content-type", "application/grpc+proto"),
            ("host", "h-1"),
            ("x-request-id", "second"),
            ("traceparent", "tp-2"),
            ("host", "h-2"),
            ("user-agent", "ua-2"),
        ]);
        let a = Arrival::of::<true>(&h);
        assert!(a.grpc);
        assert_eq!(a.request_id.map(HeaderValue::as_bytes), Some(&b"first"[..]));
        // The first of each, as a lookup finds it.
        assert_eq!(a.request_id, h.get("x-request-id"));
        for (found, name) in [
            (a.trace.traceparent, "traceparent"),
            (a.trace.host, "host"),
            (a.trace.user_agent, "user-agent"),
        ] {
            assert!(found.is_some(), "{name}");
            assert_eq!(found, h.get(name), "{name}");
        }
        assert_eq!(
            a.trace.traceparent.map(HeaderValue::as_bytes),
            Some(&b"tp-1"[..])
        );
        // Untraced, the trace's fields are not looked for.
        let a = Arrival::of::<false>(&h);
        assert!(a.grpc);
        assert_eq!(a.request_id, h.get("x-request-id"));
        assert!(a.trace.traceparent.is_none() && a.trace.host.is_none());
        assert!(a.trace.user_agent.is_none());
        let json = head(&[("content-type", "application/json")]);
        let a = Arrival::of::<true>(&json);
        assert!(!a.grpc);
        assert!(a.request_id.is_none());
        assert!(a.trace.traceparent.is_none());
        // Only the first content type counts, as a lookup would find it.
        let h = head(&[
            ("content-type", "text/plain"),
            ("content-type", "application/grpc"),
        ]);
        assert!(!Arrival::of::<true>(&h).grpc);
    }

    #[test]
    fn hop_by_hop_fast_path_and_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("h"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, x-a"));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(!h.contains_key("x-a"), "named by Connection");
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        remove_hop_by_hop(&mut h, false);
        assert!(!h.contains_key(header::UPGRADE));
        assert!(!h.contains_key(header::CONNECTION));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.1.1.1"));
        set_forwarded(&mut h, "10.0.0.1".parse().unwrap(), "http");
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "::ffff:10.0.0.2".parse().unwrap(), "https");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.2");
    }

    #[test]
    fn forwarded_value_joins_and_keeps_unjoinable() {
        let client = client_value("10.0.0.3".parse().unwrap()).unwrap();
        let mut h = HeaderMap::new();
        set_forwarded_value(&mut h, &client, "http");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.3");
        set_forwarded_value(&mut h, &client, "http");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.3, 10.0.0.3");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        set_forwarded_value(&mut h, &client, "http");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn request_ids_from_many_slabs_stay_distinct() {
        let ids: Vec<HeaderValue> = (0..IDS_PER_SLAB * 3).map(|_| new_request_id()).collect();
        let set: std::collections::HashSet<&[u8]> = ids.iter().map(|v| v.as_bytes()).collect();
        assert_eq!(set.len(), ids.len());
        assert!(ids.iter().all(|v| v.len() == ID_LEN));
    }

    #[test]
    fn request_ids_look_like_uuid_v4_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
    }
}
