//! The [`StreamHost`] a plugin's host calls see during a phase: the exchange's request and
//! response heads, the body chunk or trailers of the phase, and Envoy's attributes.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use sluice_wasm::{BufferType, MapType, Prop, Status, StreamHost};

use crate::filter::Exchange;
use crate::h1::raw_fields;

/// The stream of one phase.
pub(crate) struct GatewayStream<'a> {
    pub ex: &'a mut Exchange,
    /// The body chunk of a body phase, and which direction it flows.
    pub body: Option<(BufferType, &'a mut Bytes)>,
    /// The trailers of a trailers phase.
    pub trailers: Option<(MapType, &'a mut HeaderMap)>,
}

impl<'a> GatewayStream<'a> {
    pub(crate) fn new(ex: &'a mut Exchange) -> Self {
        GatewayStream {
            ex,
            body: None,
            trailers: None,
        }
    }
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn headers_prop(h: &HeaderMap) -> Prop {
    Prop::Map(
        h.iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    )
}

fn content_length(h: &HeaderMap) -> i64 {
    header_str(h, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl GatewayStream<'_> {
    fn authority(&self) -> String {
        header_str(&self.ex.request.headers, "host")
            .or_else(|| self.ex.request.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default()
    }

    fn path_and_query(&self) -> String {
        self.ex
            .request
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
    }

    fn set_path(&mut self, value: &[u8]) -> Status {
        let Ok(pq) = http::uri::PathAndQuery::try_from(value) else {
            return Status::BadArgument;
        };
        let mut parts = self.ex.request.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        match Uri::from_parts(parts) {
            Ok(uri) => {
                self.ex.request.uri = uri;
                Status::Ok
            }
            Err(_) => Status::BadArgument,
        }
    }
}

impl StreamHost for GatewayStream<'_> {
    fn headers(&mut self, map: MapType) -> Option<&mut HeaderMap> {
        match map {
            MapType::RequestHeaders => {
                // The gateway's request id, when it is not yet among the fields (see
                // `WasmFilter::lists_request_id_on_read`).
                self.ex.list_request_id();
                Some(&mut self.ex.request.headers)
            }
            MapType::ResponseHeaders => self.ex.response.as_mut().map(|r| {
                // Needed whole: the upstream's raw lines become map entries (see `raw_fields`).
                raw_fields::materialize(r);
                &mut r.headers
            }),
            MapType::RequestTrailers | MapType::ResponseTrailers => match &mut self.trailers {
                Some((m, t)) if *m == map => Some(&mut **t),
                _ => None,
            },
            _ => None,
        }
    }

    fn has_headers(&mut self, map: MapType) -> bool {
        match map {
            MapType::ResponseHeaders => self.ex.response.is_some(),
            _ => self.headers(map).is_some(),
        }
    }

    fn edit_header(
        &mut self,
        map: MapType,
        name: &http::HeaderName,
        value: Option<&http::HeaderValue>,
        replace: bool,
    ) -> bool {
        if map == MapType::ResponseHeaders {
            // The response's raw lines stay raw when the change allows (see `raw_fields::edit`).
            let Some(r) = self.ex.response.as_mut() else {
                return false;
            };
            raw_fields::edit(r, name, value, replace);
            return true;
        }
        let Some(h) = self.headers(map) else {
            return false;
        };
        raw_fields::edit_map(h, name, value, replace);
        true
    }

    fn pseudo_headers(&self, map: MapType) -> Vec<(&'static str, String)> {
        match map {
            MapType::RequestHeaders => vec![
                (":authority", self.authority()),
                (":path", self.path_and_query()),
                (":method", self.ex.request.method.as_str().to_string()),
                (":scheme", self.ex.info.scheme.to_string()),
            ],
            MapType::ResponseHeaders => self
                .ex
                .response
                .as_ref()
                .map(|r| vec![(":status", r.status.as_u16().to_string())])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn set_pseudo_header(&mut self, map: MapType, name: &str, value: &[u8]) -> Status {
        match (map, name) {
            (MapType::RequestHeaders, ":path") => self.set_path(value),
            (MapType::RequestHeaders, ":method") => match Method::from_bytes(value) {
                Ok(m) => {
                    self.ex.request.method = m;
                    Status::Ok
                }
                Err(_) => Status::BadArgument,
            },
            (MapType::RequestHeaders, ":authority") => match http::HeaderValue::from_bytes(value) {
                Ok(v) => {
                    self.ex.request.headers.insert(http::header::HOST, v);
                    Status::Ok
                }
                Err(_) => Status::BadArgument,
            },
            (MapType::ResponseHeaders, ":status") => {
                let code = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok());
                match (
                    code.and_then(|c| StatusCode::from_u16(c).ok()),
                    self.ex.response.as_mut(),
                ) {
                    (Some(c), Some(r)) => {
                        r.status = c;
                        Status::Ok
                    }
                    (_, None) => Status::NotFound,
                    (None, _) => Status::BadArgument,
                }
            }
            _ => Status::BadArgument,
        }
    }

    fn body(&mut self, buffer: BufferType) -> Option<&mut Bytes> {
        match &mut self.body {
            Some((b, data)) if *b == buffer => Some(&mut **data),
            _ => None,
        }
    }

    fn property(&self, path: &[&str]) -> Option<Prop> {
        let ex = &*self.ex;
        let info = &ex.info;
        let elapsed = info.start.elapsed();
        let prop = match path {
            ["request", "path"] => Prop::Str(self.path_and_query()),
            ["request", "url_path"] => Prop::Str(ex.request.uri.path().to_string()),
            ["request", "host"] => Prop::Str(self.authority()),
            ["request", "scheme"] => Prop::Str(info.scheme.to_string()),
            ["request", "method"] => Prop::Str(ex.request.method.as_str().to_string()),
            ["request", "headers"] => {
                let mut all = headers_prop(&ex.request.headers);
                if let (true, Some(id), Prop::Map(m)) =
                    (ex.request_id_unlisted, &ex.request_id, &mut all)
                {
                    m.push((
                        "x-request-id".to_string(),
                        String::from_utf8_lossy(id.as_bytes()).into_owned(),
                    ));
                }
                all
            }
            ["request", "id"] => Prop::Str(
                ex.request_id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| header_str(&ex.request.headers, "x-request-id"))?,
            ),
            ["request", "protocol"] => Prop::Str(format!("{:?}", ex.request.version)),
            ["request", "time"] => {
                let start = SystemTime::now().checked_sub(elapsed)?;
                Prop::Int(start.duration_since(UNIX_EPOCH).ok()?.as_nanos() as i64)
            }
            ["request", "duration"] => Prop::Int(elapsed.as_nanos() as i64),
            ["request", "size"] => Prop::Int(content_length(&ex.request.headers)),
            ["request", "total_size"] => {
                let headers: usize = ex
                    .request
                    .headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len() + 4)
                    .sum();
                Prop::Int(content_length(&ex.request.headers) + headers as i64)
            }
            ["request", "useragent"] => Prop::Str(header_str(&ex.request.headers, "user-agent")?),
            ["request", "referer"] => Prop::Str(header_str(&ex.request.headers, "referer")?),
            ["response", "code"] => Prop::Int(i64::from(ex.response.as_ref()?.status.as_u16())),
            ["response", "code_details"] => Prop::Str(
                ex.local_details
                    .unwrap_or(if ex.response.is_some() {
                        "via_upstream"
                    } else {
                        ""
                    })
                    .to_string(),
            ),
            ["response", "headers"] => Prop::Map(
                raw_fields::all_fields(ex.response.as_ref()?)
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).to_ascii_lowercase(),
                            String::from_utf8_lossy(v).into_owned(),
                        )
                    })
                    .collect(),
            ),
            ["response", "size"] => Prop::Int(
                raw_fields::all_fields(ex.response.as_ref()?)
                    .find(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))
                    .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0),
            ),
            ["source", "address"] => Prop::Str(info.client_addr.to_string()),
            ["source", "port"] => Prop::Int(i64::from(info.client_addr.port())),
            ["destination", "address"] => Prop::Str(info.local_addr.to_string()),
            ["destination", "port"] => Prop::Int(i64::from(info.local_addr.port())),
            ["connection", "mtls"] => Prop::Bool(info.tls.as_ref().is_some_and(|t| t.mtls)),
            ["connection", rest] => tls_prop(info.tls.as_deref()?, rest)?,
            ["upstream", "address"] => Prop::Str(ex.upstream_addr?.to_string()),
            ["upstream", "port"] => Prop::Int(i64::from(ex.upstream_addr?.port())),
            ["route_name"] => Prop::Str(ex.route.as_deref()?.to_string()),
            ["cluster_name"] => Prop::Str(ex.cluster.as_deref()?.to_string()),
            ["listener_name"] => Prop::Str(info.listener.to_string()),
            ["worker_id"] => Prop::Int(info.worker as i64),
            _ => return None,
        };
        Some(prop)
    }

    fn clear_route_cache(&mut self) {
        self.ex.route_cache_cleared = true;
    }
}

/// Envoy's `connection.*` attributes of a TLS connection.
fn tls_prop(tls: &crate::listener::tls::TlsInfo, name: &str) -> Option<Prop> {
    Some(Prop::Str(match name {
        "requested_server_name" => tls.sni.clone()?,
        "tls_version" => tls.version.to_string(),
        "subject_peer_certificate" => tls.subject.clone()?,
        "uri_san_peer_certificate" => tls.uri_sans.first()?.clone(),
        "dns_san_peer_certificate" => tls.dns_sans.first()?.clone(),
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::GatewayStream;
    use http::HeaderValue;
    use sluice_wasm::{MapType, Prop, StreamHost};

    fn ids(p: Option<Prop>) -> Vec<String> {
        match p {
            Some(Prop::Map(m)) => m
                .into_iter()
                .filter(|(k, _)| k == "x-request-id")
                .map(|(_, v)| v)
                .collect(),
            other => panic!("request.headers is not a map: {other:?}"),
        }
    }

    #[test]
    fn an_unlisted_request_id_is_in_the_plugins_view_of_the_request() {
        let mut ex = crate::filter::test_support::get("127.0.0.1:1");
        ex.request_id = Some(HeaderValue::from_static("id-9"));
        ex.request_id_unlisted = true;
        let mut host = GatewayStream::new(&mut ex);
        // The property shows it without changing the fields.
        assert_eq!(ids(host.property(&["request", "headers"])), ["id-9"]);
        assert!(host.ex.request_id_unlisted);
        // Reaching the map lists it, once.
        let n = host.headers(MapType::RequestHeaders).map(|h| h.len());
        assert_eq!(n, Some(1));
        assert_eq!(ids(host.property(&["request", "headers"])), ["id-9"]);
    }
}
