//! Header fields between httparse and `http` types: a parsed head becomes a `HeaderMap` whose
//! values are slices of the one buffer the head was read into (no copy per value), and a
//! `HeaderMap` is written back as `name: value` lines.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The most header fields a head may have (as hyper's default).
pub const MAX_FIELDS: usize = 100;

/// The length of the head at the front of `buf` (through the empty line that ends it), if it
/// is complete. Accepts bare LF line ends, as httparse does.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            Some(_) => from = at + 1,
            None => return None,
        }
    }
    None
}

/// `value` (a slice of `head`) as a header value sharing `head`'s storage; `None` if it holds a
/// byte a header value may not (httparse already refuses CR, LF and NUL).
pub fn value_from(head: &Bytes, value: &[u8]) -> Option<HeaderValue> {
    if value.is_empty() {
        return Some(HeaderValue::from_static(""));
    }
    HeaderValue::from_maybe_shared(head.slice_ref(value)).ok()
}

/// A value httparse returned from a head it parsed, as a header value sharing `head`'s storage.
/// httparse (without the obsolete line folding we never enable) accepts only HTAB, SP, visible
/// ASCII and obs-text (0x80-0xFF) in a value: exactly what a `HeaderValue` may hold, so the
/// second validation `value_from` makes is skipped (a loop over every value byte).
pub(crate) fn parsed_value(head: &Bytes, value: &[u8]) -> HeaderValue {
    if value.is_empty() {
        return HeaderValue::from_static("");
    }
    debug_assert!(value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
    // SAFETY: see above; httparse refused the head if any byte of a value were outside HTAB,
    // 0x20-0x7E and 0x80-0xFF, the set `HeaderValue` requires.
    unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice_ref(value)) }
}

thread_local! {
    /// Emptied header maps of this thread's finished messages, ready for the next heads:
    /// building a map allocates and initialises its index and entry tables, clearing one keeps
    /// them.
    static SPARE_MAPS: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most maps kept per thread, and the largest capacity a kept map may have (a map grown
/// by an unusually large head is dropped, not kept).
const SPARE_MAPS_MAX: usize = 64;
const SPARE_MAP_CAPACITY_MAX: usize = 48;

/// An empty map with room for `capacity` fields, reusing a spare one when there is one.
#[inline(always)]
pub(crate) fn new_map(capacity: usize) -> HeaderMap {
    let spare = SPARE_MAPS.with(|s| s.borrow_mut().pop());
    match spare {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Give a map that is no longer needed back for the next heads of this thread.
pub(crate) fn recycle(mut map: HeaderMap) {
    // A map that never held a field (a response passed through as received) has no tables
    // worth keeping.
    if map.capacity() == 0 || map.capacity() > SPARE_MAP_CAPACITY_MAX {
        return;
    }
    map.clear();
    SPARE_MAPS.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_MAPS_MAX {
            s.push(map);
        }
    });
}

/// Why a head's fields could not become a `HeaderMap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadField;

/// What the fields of a head say about framing and the connection, gathered while the map is
/// built (no lookups afterwards).
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    /// `Content-Length`, when present and valid.
    pub content_length: Option<u64>,
    /// A `Content-Length` that does not parse, or several that disagree.
    pub bad_length: bool,
    /// `Transfer-Encoding` is present.
    pub transfer_encoding: bool,
    /// The last transfer coding is chunked.
    pub chunked: bool,
    /// `Connection` tokens.
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade_token: bool,
    /// `Connection` names other fields (they are hop-by-hop too).
    pub names_fields: bool,
    /// An `Upgrade` field.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `TE` includes `trailers`.
    pub te_trailers: bool,
}

/// The fields httparse found in `head`, as a `HeaderMap` (values share `head`), with room for
/// `extra` more fields (a proxy adds a few: growing a map rehashes it), and what they say about
/// framing. With `strip_hop_by_hop`, the connection's own fields (`Connection` unless it names
/// other fields, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`) are
/// left out of the map: what they say is in the [`Scan`].
///
/// `fields` must be what httparse returned for `head` (values are not validated again).
///
/// # Errors
/// A field name that `http` refuses.
pub(crate) fn fields_to_map(
    head: &Bytes,
    fields: &[httparse::Header<'_>],
    extra: usize,
    strip_hop_by_hop: bool,
) -> Result<(HeaderMap, Scan), BadField> {
    let mut map = new_map(fields.len() + extra);
    let mut scan = Scan::default();
    for f in fields {
        let name = match common_name(f.name.as_bytes()) {
            Some(n) => n,
            None => HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| BadField)?,
        };
        let hop = scan_field(&mut scan, &name, f.value);
        if strip_hop_by_hop && hop {
            continue;
        }
        map.append(name, parsed_value(head, f.value));
    }
    Ok((map, scan))
}

/// The fields the proxy acts on, told apart by name (every other name is `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    Te,
    Trailer,
    KeepAlive,
    ProxyConnection,
    ProxyAuthenticate,
    ProxyAuthorization,
    Date,
    Other,
}

impl Known {
    /// The kind of a parsed name: comparisons of standard names are small-integer comparisons.
    pub(crate) fn of(name: &HeaderName) -> Known {
        use http::header;
        if *name == header::CONTENT_LENGTH {
            Known::ContentLength
        } else if *name == header::TRANSFER_ENCODING {
            Known::TransferEncoding
        } else if *name == header::CONNECTION {
            Known::Connection
        } else if *name == header::UPGRADE {
            Known::Upgrade
        } else if *name == header::EXPECT {
            Known::Expect
        } else if *name == header::TE {
            Known::Te
        } else if *name == header::TRAILER {
            Known::Trailer
        } else if *name == header::DATE {
            Known::Date
        } else if *name == header::PROXY_AUTHENTICATE {
            Known::ProxyAuthenticate
        } else if *name == header::PROXY_AUTHORIZATION {
            Known::ProxyAuthorization
        } else if name.as_str() == "keep-alive" {
            Known::KeepAlive
        } else if name.as_str() == "proxy-connection" {
            Known::ProxyConnection
        } else {
            Known::Other
        }
    }

    /// The kind of a name as received (any case), without making a `HeaderName` of it: the
    /// length picks at most two candidates.
    pub(crate) fn of_raw(name: &[u8]) -> Known {
        let is = |k: &[u8]| token_eq(name, k);
        match name.len() {
            2 if is(b"te") => Known::Te,
            4 if is(b"date") => Known::Date,
            6 if is(b"expect") => Known::Expect,
            7 if is(b"upgrade") => Known::Upgrade,
            7 if is(b"trailer") => Known::Trailer,
            10 if is(b"connection") => Known::Connection,
            10 if is(b"keep-alive") => Known::KeepAlive,
            14 if is(b"content-length") => Known::ContentLength,
            16 if is(b"proxy-connection") => Known::ProxyConnection,
            17 if is(b"transfer-encoding") => Known::TransferEncoding,
            18 if is(b"proxy-authenticate") => Known::ProxyAuthenticate,
            19 if is(b"proxy-authorization") => Known::ProxyAuthorization,
            _ => Known::Other,
        }
    }
}

/// The most common standard field names, recognised as received (any case) without
/// `HeaderName::from_bytes`, which lowercases the name through a table into a buffer and then
/// matches it: about a hundred instructions a field, a fifth of that here. `name` must be a
/// token (httparse checked it).
fn common_name(name: &[u8]) -> Option<HeaderName> {
    use http::header::*;
    let is = |k: &[u8]| token_eq(name, k);
    Some(match name.len() {
        4 if is(b"host") => HOST,
        4 if is(b"date") => DATE,
        4 if is(b"etag") => ETAG,
        4 if is(b"vary") => VARY,
        6 if is(b"server") => SERVER,
        6 if is(b"accept") => ACCEPT,
        6 if is(b"cookie") => COOKIE,
        8 if is(b"location") => LOCATION,
        10 if is(b"user-agent") => USER_AGENT,
        10 if is(b"connection") => CONNECTION,
        10 if is(b"set-cookie") => SET_COOKIE,
        12 if is(b"content-type") => CONTENT_TYPE,
        13 if is(b"cache-control") => CACHE_CONTROL,
        13 if is(b"last-modified") => LAST_MODIFIED,
        13 if is(b"accept-ranges") => ACCEPT_RANGES,
        13 if is(b"authorization") => AUTHORIZATION,
        14 if is(b"content-length") => CONTENT_LENGTH,
        15 if is(b"accept-encoding") => ACCEPT_ENCODING,
        15 if is(b"accept-language") => ACCEPT_LANGUAGE,
        16 if is(b"content-encoding") => CONTENT_ENCODING,
        17 if is(b"transfer-encoding") => TRANSFER_ENCODING,
        _ => return None,
    })
}

/// Whether `name`, a token (httparse checked it), is `lower` (lowercase letters and `-`) in any
/// case. Setting bit 5 of a byte lowercases a letter and leaves `-` as it is, and turns no other
/// token byte into a letter or `-`: names compare eight bytes at a time.
fn token_eq(name: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_le_bytes)
    };
    let n = name.len();
    if n != lower.len() {
        return false;
    }
    if n < 8 {
        return name.iter().zip(lower).all(|(a, b)| a | 0x20 == *b);
    }
    let mut at = 0;
    loop {
        // The last word overlaps the one before when the length is not a multiple of 8.
        let at_now = at.min(n - 8);
        match (word(name, at_now), word(lower, at_now)) {
            (Some(a), Some(b)) if a | CASE == b => {}
            _ => return false,
        }
        if at_now == n - 8 {
            return true;
        }
        at += 8;
    }
}

/// Note what field `name: value` says; true if it is a hop-by-hop field that may be dropped
/// (a `Connection` naming other fields is kept, so that they can be removed by name later).
fn scan_field(scan: &mut Scan, name: &HeaderName, value: &[u8]) -> bool {
    scan_known(scan, Known::of(name), value)
}

/// [`scan_field`] for a field whose kind is known.
pub(crate) fn scan_known(scan: &mut Scan, kind: Known, value: &[u8]) -> bool {
    match kind {
        Known::ContentLength => {
            // One number, as nearly always: no list to split.
            if let Some(n) = parse_u64(trim(value)) {
                match scan.content_length {
                    Some(c) if c != n => scan.bad_length = true,
                    _ => scan.content_length = Some(n),
                }
                return false;
            }
            for part in value.split(|b| *b == b',') {
                match parse_u64(trim(part)) {
                    Some(n) if scan.content_length.is_none_or(|c| c == n) => {
                        scan.content_length = Some(n)
                    }
                    _ => scan.bad_length = true,
                }
            }
            false
        }
        Known::TransferEncoding => {
            scan.transfer_encoding = true;
            scan.chunked = value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|t| trim(t).eq_ignore_ascii_case(b"chunked"));
            true
        }
        Known::Connection => {
            // One token, as nearly always: no list to split.
            if value.eq_ignore_ascii_case(b"keep-alive") {
                scan.keep_alive = true;
                return true;
            }
            if value.eq_ignore_ascii_case(b"close") {
                scan.close = true;
                return true;
            }
            let mut other = false;
            for t in value
                .split(|b| *b == b',')
                .map(trim)
                .filter(|t| !t.is_empty())
            {
                if t.eq_ignore_ascii_case(b"close") {
                    scan.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    scan.keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    scan.upgrade_token = true;
                } else {
                    other = true;
                }
            }
            scan.names_fields |= other;
            !other
        }
        Known::Upgrade => {
            scan.upgrade = true;
            false
        }
        Known::Expect => {
            scan.expect_continue |= trim(value).eq_ignore_ascii_case(b"100-continue");
            false
        }
        Known::Te => {
            scan.te_trailers |= value
                .split(|b| *b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"trailers"));
            true
        }
        Known::Trailer | Known::KeepAlive | Known::ProxyConnection => true,
        Known::ProxyAuthenticate | Known::ProxyAuthorization | Known::Date | Known::Other => false,
    }
}

/// Append every field of `map` as `name: value\r\n`.
pub fn write_fields(map: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in map {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a comma-separated header value list contains `token` (case-insensitive), in any of
/// the field's lines.
pub fn has_token(map: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    map.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Whether the last transfer coding of the `Transfer-Encoding` field(s) is `chunked`.
pub fn chunked_last(map: &HeaderMap) -> bool {
    let Some(last) = map
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    else {
        return false;
    };
    last.as_bytes()
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|t| trim(t).eq_ignore_ascii_case(b"chunked"))
}

/// The `Content-Length` of `map`: `Ok(None)` when absent, an error when unparsable or when
/// several values disagree (RFC 9112 §6.3: the message is invalid).
pub fn content_length(map: &HeaderMap) -> Result<Option<u64>, BadField> {
    let mut found = None;
    // A pass of name comparisons (a head has few fields) instead of a hashed lookup.
    let values = map
        .iter()
        .filter(|(name, _)| *name == http::header::CONTENT_LENGTH)
        .map(|(_, v)| v);
    for v in values {
        for part in v.as_bytes().split(|b| *b == b',') {
            let n = parse_u64(trim(part)).ok_or(BadField)?;
            if found.is_some_and(|f| f != n) {
                return Err(BadField);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    let s = &s[start..];
    let end = s
        .iter()
        .rev()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    &s[..s.len() - end]
}

/// Append `n` in decimal.
pub fn write_u64(n: u64, out: &mut impl bytes::BufMut) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// A map of `pairs`, appended in order (for tests here and elsewhere in the crate).
#[cfg(test)]
pub(crate) fn map_of(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, HeaderValue::from_static(v));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::map_of as map;
    use super::*;

    #[test]
    fn content_length_rules() {
        assert_eq!(content_length(&map(&[])), Ok(None));
        assert_eq!(
            content_length(&map(&[("content-length", "42")])),
            Ok(Some(42))
        );
        assert_eq!(
            content_length(&map(&[("content-length", "42, 42")])),
            Ok(Some(42))
        );
        assert_eq!(
            content_length(&map(&[("content-length", "42"), ("content-length", "43")])),
            Err(BadField)
        );
        assert_eq!(
            content_length(&map(&[("content-length", "-1")])),
            Err(BadField)
        );
        assert_eq!(
            content_length(&map(&[("content-length", "+1")])),
            Err(BadField)
        );
        assert_eq!(
            content_length(&map(&[("content-length", "")])),
            Err(BadField)
        );
        assert_eq!(
            content_length(&map(&[("content-length", "99999999999999999999")])),
            Err(BadField)
        );
    }

    #[test]
    fn transfer_coding_and_tokens() {
        assert!(chunked_last(&map(&[(
            "transfer-encoding",
            "gzip, Chunked "
        )])));
        assert!(!chunked_last(&map(&[(
            "transfer-encoding",
            "chunked, gzip"
        )])));
        assert!(chunked_last(&map(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked")
        ])));
        assert!(has_token(
            &map(&[("connection", "keep-alive, Close")]),
            &http::header::CONNECTION,
            "close"
        ));
        assert!(!has_token(
            &map(&[("connection", "closed")]),
            &http::header::CONNECTION,
            "close"
        ));
    }

    #[test]
    fn token_names_compare_in_any_case() {
        for (name, lower, same) in [
            (&b"Content-Length"[..], &b"content-length"[..], true),
            (b"CONTENT-LENGTH", b"content-length", true),
            (b"content-lengtH", b"content-length", true),
            (b"content_length", b"content-length", false),
            (b"content-lengts", b"content-length", false),
            (b"Dontent-length", b"content-length", false),
            (b"Connection", b"connection", true),
            (b"Connectiom", b"connection", false),
            (b"KEEP-ALIVE", b"keep-alive", true),
            (b"Date", b"date", true),
            (b"Data", b"date", false),
            (b"TE", b"te", true),
            (b"te", b"ter", false),
            (b"Proxy-Authorization", b"proxy-authorization", true),
            (b"Proxy-Authorizatioz", b"proxy-authorization", false),
            (b"upgradE", b"upgrade", true),
        ] {
            assert_eq!(token_eq(name, lower), same, "{name:?}");
        }
        assert_eq!(Known::of_raw(b"Content-Length"), Known::ContentLength);
        assert_eq!(Known::of_raw(b"TRANSFER-ENCODING"), Known::TransferEncoding);
        assert_eq!(Known::of_raw(b"proxy-connection"), Known::ProxyConnection);
        assert_eq!(Known::of_raw(b"X-Content-Length"), Known::Other);
    }

    #[test]
    fn common_names_are_the_names_http_makes() {
        for name in [
            "host",
            "Date",
            "ETAG",
            "vary",
            "Server",
            "accept",
            "Cookie",
            "location",
            "User-Agent",
            "connection",
            "Set-Cookie",
            "content-type",
            "Cache-Control",
            "last-modified",
            "Accept-Ranges",
            "authorization",
            "Content-Length",
            "accept-encoding",
            "Accept-Language",
            "content-encoding",
            "Transfer-Encoding",
        ] {
            let fast = common_name(name.as_bytes());
            let slow = HeaderName::from_bytes(name.as_bytes()).ok();
            assert_eq!(fast, slow, "{name}");
        }
        for name in [
            "x-host",
            "hosts",
            "dat",
            "x-request-id",
            "content-lengt",
            "a",
        ] {
            assert_eq!(common_name(name.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn scans_of_lengths_and_connection_tokens() {
        let scan = |fields: &[(Known, &str)]| {
            let mut s = Scan::default();
            let hops: Vec<bool> = fields
                .iter()
                .map(|(k, v)| scan_known(&mut s, *k, v.as_bytes()))
                .collect();
            (s, hops)
        };
        let (s, _) = scan(&[(Known::ContentLength, " 42 ")]);
        assert_eq!((s.content_length, s.bad_length), (Some(42), false));
        let (s, _) = scan(&[(Known::ContentLength, "42, 42")]);
        assert_eq!((s.content_length, s.bad_length), (Some(42), false));
        let (s, _) = scan(&[(Known::ContentLength, "42"), (Known::ContentLength, "42")]);
        assert_eq!((s.content_length, s.bad_length), (Some(42), false));
        let (s, _) = scan(&[(Known::ContentLength, "42"), (Known::ContentLength, "43")]);
        assert!(s.bad_length);
        let (s, _) = scan(&[(Known::ContentLength, "42, 43")]);
        assert!(s.bad_length);
        let (s, _) = scan(&[(Known::ContentLength, "4 2")]);
        assert!(s.bad_length);
        let (s, hops) = scan(&[(Known::Connection, "Keep-Alive")]);
        assert!(s.keep_alive && !s.close && !s.names_fields && hops[0]);
        let (s, hops) = scan(&[(Known::Connection, "CLOSE")]);
        assert!(s.close && !s.keep_alive && hops[0]);
        let (s, hops) = scan(&[(Known::Connection, "close, X-A")]);
        assert!(s.close && s.names_fields && !hops[0]);
        let (s, hops) = scan(&[(Known::Connection, "upgrade")]);
        assert!(s.upgrade_token && hops[0]);
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
        assert_eq!(head_len(b"HTTP/1.1 200 OK\nA: b\n\nbody"), Some(22));
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\nA: b\r\n\r"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn values_share_the_head() {
        let head = Bytes::from_static(b"x-a: hello\r\n\r\n");
        let v = value_from(&head, &head[5..10]).unwrap();
        assert_eq!(v, "hello");
        let mut out = Vec::new();
        write_u64(0, &mut out);
        out.push(b' ');
        write_u64(1234567890, &mut out);
        assert_eq!(out, b"0 1234567890");
    }
}
