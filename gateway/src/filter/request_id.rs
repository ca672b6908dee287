//! `request-id`: give every request an id (kept from the client or generated as a UUID v4), pass it
//! upstream, record it for the access log and echo it to the client.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rand::Rng;
use serde::Deserialize;

use super::registry::{parse_config, BuildContext};
use super::{FilterCx, Flow, HttpFilter, Phases};

/// Registered name.
pub const NAME: &str = "request-id";
/// Header carrying the id unless `header:` says otherwise.
pub const DEFAULT_HEADER: &str = "x-request-id";
/// Longest incoming id kept; a longer one is replaced (ids end up in every log line).
pub const MAX_INCOMING_LEN: usize = 128;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "yes")]
    trust_incoming: bool,
    #[serde(default = "yes")]
    echo: bool,
}

fn default_header() -> String {
    DEFAULT_HEADER.to_string()
}

fn yes() -> bool {
    true
}

/// The built filter.
pub struct RequestId {
    header: HeaderName,
    trust_incoming: bool,
    echo: bool,
}

/// Factory registered as `request-id`.
///
/// # Errors
/// Unknown keys or a header name that is not a valid HTTP header name.
pub fn factory(
    config: Option<&serde_json::Value>,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn HttpFilter>, String> {
    let c: Config = parse_config(config)?;
    let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
        format!(
            "header: `{}` is not a valid header name; use letters, digits and `-`, e.g. `x-request-id`",
            c.header
        )
    })?;
    Ok(Arc::new(RequestId {
        header,
        trust_incoming: c.trust_incoming,
        echo: c.echo,
    }))
}

impl RequestId {
    fn incoming(&self, cx: &FilterCx<'_>) -> Option<HeaderValue> {
        if !self.trust_incoming {
            return None;
        }
        let v = cx.ex.request.headers.get(&self.header)?;
        let len = v.as_bytes().len();
        // Cloning a parsed header value shares its buffer: no allocation.
        (len > 0 && len <= MAX_INCOMING_LEN).then(|| v.clone())
    }
}

impl HttpFilter for RequestId {
    fn name(&self) -> &str {
        NAME
    }

    fn phases(&self) -> Phases {
        if self.echo {
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
        } else {
            Phases::REQUEST_HEADERS
        }
    }

    /// The echo reads the exchange's request id, not the request headers.
    fn reads_request_headers_later(&self) -> bool {
        false
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let id = self.incoming(cx).unwrap_or_else(uuid_v4);
        // `insert` also collapses repeated incoming ids into the one kept.
        cx.ex
            .request
            .headers
            .insert(self.header.clone(), id.clone());
        cx.ex.request_id = Some(id);
        Flow::Continue
    }

    fn on_response_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        if let (Some(id), Some(resp)) = (&cx.ex.request_id, cx.ex.response.as_mut()) {
            resp.headers.insert(self.header.clone(), id.clone());
        }
        Flow::Continue
    }
}

/// A random (version 4) UUID in its 36-character text form, from the thread-local CSPRNG.
pub fn uuid_v4() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits: u128 = rand::thread_rng().gen();
    // Version 4 in the high nibble of byte 6, variant 10xx in the high bits of byte 8.
    bits = (bits & !(0xf << 76)) | (0x4 << 76);
    bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut pos = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out[pos] = b'-';
            pos += 1;
        }
        let nibble = (bits >> (124 - 4 * i)) & 0xf;
        out[pos] = HEX[nibble as usize];
        pos += 1;
    }
    // Only hex digits and dashes were written: always a valid header value.
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::filter::test_support::{build, exchange, get, is_continue, respond};

    fn is_uuid_v4(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 36
            && s.chars().enumerate().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
                }
            })
            && b[14] == b'4'
            && matches!(b[19], b'8' | b'9' | b'a' | b'b')
    }

    #[test]
    fn generates_sets_records_and_echoes() {
        let f = build(factory, "").unwrap();
        let mut ex = get("10.0.0.1:5000");
        assert!(is_continue(&f.on_request_headers(&mut ex.cx(0))));
        let id = ex.request.headers.get("x-request-id").unwrap().clone();
        assert!(is_uuid_v4(id.to_str().unwrap()), "{id:?}");
        assert_eq!(ex.request_id.as_ref(), Some(&id));
        // The echo does not read the request headers, which have moved on by then.
        assert!(!f.reads_request_headers_later());
        ex.request.headers.clear();
        respond(&mut ex, 200);
        assert!(is_continue(&f.on_response_headers(&mut ex.cx(0))));
        assert_eq!(ex.response.unwrap().headers.get("x-request-id"), Some(&id));
    }

    #[test]
    fn keeps_incoming_id_when_trusted() {
        let f = build(factory, "").unwrap();
        let req = http::Request::builder()
            .header("x-request-id", "abc-123")
            .header("x-request-id", "repeated")
            .body(())
            .unwrap();
        let mut ex = exchange("10.0.0.1:5000", req);
        f.on_request_headers(&mut ex.cx(0));
        assert_eq!(ex.request.headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(ex.request.headers["x-request-id"], "abc-123");
        assert_eq!(ex.request_id.unwrap(), "abc-123");
    }

    #[test]
    fn replaces_incoming_id_when_untrusted_or_too_long() {
        let f = build(factory, "trust_incoming: false").unwrap();
        let req = http::Request::builder()
            .header("x-request-id", "abc-123")
            .body(())
            .unwrap();
        let mut ex = exchange("10.0.0.1:5000", req);
        f.on_request_headers(&mut ex.cx(0));
        let v = ex.request.headers["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(is_uuid_v4(&v));
        assert_eq!(ex.request.headers.get_all("x-request-id").iter().count(), 1);

        let f = build(factory, "").unwrap();
        let long = "a".repeat(MAX_INCOMING_LEN + 1);
        let req = http::Request::builder()
            .header("x-request-id", long)
            .body(())
            .unwrap();
        let mut ex = exchange("10.0.0.1:5000", req);
        f.on_request_headers(&mut ex.cx(0));
        assert!(is_uuid_v4(
            ex.request.headers["x-request-id"].to_str().unwrap()
        ));
    }

    #[test]
    fn custom_header_and_no_echo() {
        let f = build(factory, "{header: x-trace, echo: false}").unwrap();
        assert_eq!(f.phases(), Phases::REQUEST_HEADERS);
        let mut ex = get("10.0.0.1:5000");
        f.on_request_headers(&mut ex.cx(0));
        assert!(ex.request.headers.contains_key("x-trace"));
        assert!(!ex.request.headers.contains_key("x-request-id"));
    }

    #[test]
    fn ids_are_unique() {
        let ids: HashSet<HeaderValue> = (0..10_000).map(|_| uuid_v4()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn bad_configs_say_how_to_fix() {
        let e = build(factory, "header: 'bad header'").err().unwrap();
        assert!(e.contains("not a valid header name"), "{e}");
        let e = build(factory, "echoo: true").err().unwrap();
        assert!(e.contains("unknown field `echoo`"), "{e}");
    }
}
