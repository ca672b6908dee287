//! Which trace-context formats the gateway reads from clients and writes to upstreams
//! (`telemetry.tracing.propagation`): W3C trace context, B3 single header, B3 multi headers.

use http::{HeaderMap, HeaderValue};

use super::{b3, context};

/// One propagation format, as named in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `traceparent` / `tracestate` (`w3c`).
    W3c,
    /// The single `b3` header (`b3`).
    B3Single,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` (`b3multi`).
    B3Multi,
}

impl Format {
    /// The format a configuration name stands for.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "w3c" => Some(Format::W3c),
            "b3" => Some(Format::B3Single),
            "b3multi" => Some(Format::B3Multi),
            _ => None,
        }
    }
}

/// The names accepted in `telemetry.tracing.propagation`.
pub const NAMES: &str = "`w3c`, `b3` or `b3multi`";

/// A bad `telemetry.tracing.propagation`.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.tracing.propagation `{0}` is not {NAMES}")]
pub struct UnknownFormat(pub String);

/// What the client's headers say about the trace the request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's trace id and span id (our server span's parent).
    pub parent: Option<([u8; 16], [u8; 8])>,
    /// The caller's sampling decision; absent: ours (the ratio).
    pub sampled: Option<bool>,
    /// Whether it came from `traceparent` (then `tracestate` belongs to it).
    pub w3c: bool,
}

/// The configured formats, in the order they are tried on extraction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Propagation {
    formats: Vec<Format>,
}

impl Default for Propagation {
    fn default() -> Self {
        Propagation {
            formats: vec![Format::W3c],
        }
    }
}

impl Propagation {
    /// The formats named in `names`; W3C alone when absent or empty.
    ///
    /// # Errors
    /// A name that is not a known format.
    pub fn from_names(names: Option<&[String]>) -> Result<Self, UnknownFormat> {
        let mut formats = Vec::new();
        for n in names.unwrap_or_default() {
            let f = Format::parse(n).ok_or_else(|| UnknownFormat(n.clone()))?;
            if !formats.contains(&f) {
                formats.push(f);
            }
        }
        if formats.is_empty() {
            return Ok(Propagation::default());
        }
        Ok(Propagation { formats })
    }

    /// The first configured format that finds a valid context in `headers`. Either B3 format
    /// reads both B3 encodings: which one a client uses is its choice, not the operator's.
    /// `traceparent` is the first `traceparent` of `headers` (the request path finds it in its
    /// one pass over the fields, not by a lookup).
    pub fn extract(
        &self,
        headers: &HeaderMap,
        traceparent: Option<&HeaderValue>,
    ) -> Option<Incoming> {
        self.formats.iter().find_map(|f| match f {
            Format::W3c => context::parse_traceparent(traceparent?.as_bytes()).map(|p| Incoming {
                parent: Some((p.trace_id, p.span_id)),
                sampled: Some(p.sampled),
                w3c: true,
            }),
            Format::B3Single | Format::B3Multi => b3::extract(headers).map(|c| Incoming {
                parent: c.ids,
                sampled: c.sampled,
                w3c: false,
            }),
        })
    }

    /// Whether W3C trace context is the only format written.
    pub fn w3c_only(&self) -> bool {
        self.formats == [Format::W3c]
    }

    /// Write `span_id` of `trace_id` as the upstream's parent in every configured format.
    pub fn inject(&self, headers: &mut HeaderMap, trace_id: &[u8; 16], span_id: &[u8; 8]) {
        if self.formats.iter().any(|f| *f != Format::W3c) {
            b3::remove_all(headers);
        }
        for f in &self.formats {
            match f {
                Format::W3c => {
                    headers.insert(
                        &context::TRACEPARENT,
                        context::format_traceparent(trace_id, span_id),
                    );
                }
                Format::B3Single => {
                    headers.insert(&b3::B3, b3::format_single(trace_id, span_id));
                }
                Format::B3Multi => b3::insert_multi(headers, trace_id, span_id),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const B3: &str = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";

    fn both() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&context::TRACEPARENT, HeaderValue::from_static(TP));
        h.insert(&b3::B3, HeaderValue::from_static(B3));
        h
    }

    fn names(n: &[&str]) -> Propagation {
        let n: Vec<String> = n.iter().map(|s| s.to_string()).collect();
        Propagation::from_names(Some(&n)).expect("known formats")
    }

    #[test]
    fn extraction_follows_the_configured_order() {
        let h = both();
        let w3c_first = names(&["w3c", "b3"])
            .extract(&h, h.get(&context::TRACEPARENT))
            .expect("found");
        assert!(w3c_first.w3c);
        let b3_first = names(&["b3multi", "w3c"])
            .extract(&h, h.get(&context::TRACEPARENT))
            .expect("found");
        assert!(!b3_first.w3c);
        assert_eq!(
            b3_first.parent.map(|p| p.1),
            Some([0xe4, 0x57, 0xb5, 0xa2, 0xe4, 0xd8, 0x6b, 0xd1])
        );
        // The default reads only W3C.
        let mut only_b3 = HeaderMap::new();
        only_b3.insert(&b3::B3, HeaderValue::from_static(B3));
        assert_eq!(Propagation::default().extract(&only_b3, None), None);
    }

    #[test]
    fn injection_writes_each_format_and_drops_stale_b3() {
        let mut h = both();
        h.insert(
            &b3::PARENT_SPAN_ID,
            HeaderValue::from_static("00f067aa0ba902b7"),
        );
        let t = [0x11; 16];
        let s = [0x22; 8];
        names(&["b3multi"]).inject(&mut h, &t, &s);
        assert!(h.get(&b3::B3).is_none(), "stale single header removed");
        assert!(h.get(&b3::PARENT_SPAN_ID).is_none());
        assert_eq!(h[&b3::SPAN_ID], "2222222222222222");
        assert_eq!(h[&context::TRACEPARENT], TP, "not ours to touch");
        names(&["w3c", "b3"]).inject(&mut h, &t, &s);
        assert_eq!(
            h[&b3::B3],
            "11111111111111111111111111111111-2222222222222222-1"
        );
        assert!(h[&context::TRACEPARENT]
            .to_str()
            .is_ok_and(|v| v.contains("2222222222222222")));
    }

    #[test]
    fn unknown_names_are_refused() {
        let n = vec!["jaeger".to_string()];
        assert!(Propagation::from_names(Some(&n)).is_err());
    }
}
