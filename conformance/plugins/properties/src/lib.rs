//! Conformance plugin `rs_properties`: Envoy attributes through `get_property`.
//!
//! Request-side attributes are read in on_request_headers and response-side ones in
//! on_response_headers; every one is reported as response header `x-prop-<name with '.' and '_'
//! turned into '-'>` (e.g. `x-prop-request-path`). Values are decoded by the attribute's Envoy
//! type: strings as is, int64/uint64 (little-endian, 8 bytes) and timestamps (int64 ns) in
//! decimal, bools as `true`/`false`, header maps as the pair count. A missing attribute is
//! `<none>`, a host error `<error:Status>`. `x-prop-request-headers-x-probe` is the value of
//! `x-probe` read from the serialized `request.headers` map. `set_property(["sluice_conformance"],
//! value of x-prop-set or "rs")` followed by a get is reported as `x-prop-set-roundtrip`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Map,
}

const REQUEST_ATTRIBUTES: &[(&str, Kind)] = &[
    ("request.path", Kind::Str),
    ("request.url_path", Kind::Str),
    ("request.host", Kind::Str),
    ("request.scheme", Kind::Str),
    ("request.method", Kind::Str),
    ("request.protocol", Kind::Str),
    ("request.id", Kind::Str),
    ("request.useragent", Kind::Str),
    ("request.referer", Kind::Str),
    ("request.query", Kind::Str),
    ("request.time", Kind::Int),
    ("request.headers", Kind::Map),
    ("source.address", Kind::Str),
    ("source.port", Kind::Int),
    ("destination.address", Kind::Str),
    ("destination.port", Kind::Int),
    ("connection.mtls", Kind::Bool),
    ("connection.requested_server_name", Kind::Str),
    ("connection.tls_version", Kind::Str),
    ("connection.id", Kind::Int),
    ("plugin_name", Kind::Str),
    ("plugin_root_id", Kind::Str),
    ("plugin_vm_id", Kind::Str),
    ("node.id", Kind::Str),
    ("node.cluster", Kind::Str),
    ("route_name", Kind::Str),
    ("cluster_name", Kind::Str),
    ("xds.route_name", Kind::Str),
    ("xds.cluster_name", Kind::Str),
];

const RESPONSE_ATTRIBUTES: &[(&str, Kind)] = &[
    ("response.code", Kind::Int),
    ("response.code_details", Kind::Str),
    ("response.flags", Kind::Int),
    ("response.headers", Kind::Map),
    ("upstream.address", Kind::Str),
    ("upstream.port", Kind::Int),
    ("request.size", Kind::Int),
    ("request.total_size", Kind::Int),
];

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Properties::default()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Decodes a proxy-wasm serialized map: u32 count, count × (u32 key len, u32 value len), then
/// each key and value followed by a NUL byte. Returns None when the bytes do not fit.
fn decode_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let key = bytes.get(data..data + key_len)?;
        data += key_len + 1;
        let value = bytes.get(data..data + value_len)?;
        data += value_len + 1;
        out.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(out)
}

fn render(kind: Kind, bytes: &[u8]) -> String {
    match kind {
        Kind::Str => String::from_utf8_lossy(bytes)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
        Kind::Int => match <[u8; 8]>::try_from(bytes) {
            Ok(raw) => i64::from_le_bytes(raw).to_string(),
            Err(_) => format!("<bad-int:{}-bytes>", bytes.len()),
        },
        Kind::Bool => match bytes {
            [0] => "false".to_owned(),
            [1] => "true".to_owned(),
            _ => format!("<bad-bool:{}-bytes>", bytes.len()),
        },
        Kind::Map => match decode_map(bytes) {
            Some(pairs) => pairs.len().to_string(),
            None => "<bad-map>".to_owned(),
        },
    }
}

fn header_name(attribute: &str) -> String {
    format!("x-prop-{}", attribute.replace(['.', '_'], "-"))
}

fn read(attribute: &str, kind: Kind) -> (String, Option<Vec<u8>>) {
    let path: Vec<&str> = attribute.split('.').collect();
    match hostcalls::get_property(path) {
        Ok(Some(bytes)) => (render(kind, &bytes), Some(bytes)),
        Ok(None) => ("<none>".to_owned(), None),
        Err(status) => (
            format!("<error:{}>", conformance_common::status_name(status)),
            None,
        ),
    }
}

#[derive(Default)]
struct Properties {
    report: Vec<(String, String)>,
}

impl Context for Properties {}

impl HttpContext for Properties {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (attribute, kind) in REQUEST_ATTRIBUTES {
            let (text, raw) = read(attribute, *kind);
            if *attribute == "request.headers" {
                let probe = raw
                    .as_deref()
                    .and_then(decode_map)
                    .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "x-probe"))
                    .map_or_else(|| "<none>".to_owned(), |(_, v)| v);
                self.report
                    .push(("x-prop-request-headers-x-probe".to_owned(), probe));
            }
            self.report.push((header_name(attribute), text));
        }
        let value = self
            .get_http_request_header("x-prop-set")
            .unwrap_or_else(|| "rs".to_owned());
        let roundtrip =
            match hostcalls::set_property(vec!["sluice_conformance"], Some(value.as_bytes())) {
                Err(status) => format!("<set-error:{}>", conformance_common::status_name(status)),
                Ok(()) => read("sluice_conformance", Kind::Str).0,
            };
        self.report
            .push(("x-prop-set-roundtrip".to_owned(), roundtrip));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (attribute, kind) in RESPONSE_ATTRIBUTES {
            let text = read(attribute, *kind).0;
            self.report.push((header_name(attribute), text));
        }
        for (name, value) in &self.report {
            self.set_http_response_header(name, Some(value));
        }
        Action::Continue
    }
}
