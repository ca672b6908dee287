//! `headers`: add, set and remove request and response headers, with values that may name a few
//! per-request variables (`%CLIENT_IP%`, `%REQUEST_ID%`, `%LISTENER%`, `%ROUTE%`, and Envoy's TLS
//! ones: `%DOWNSTREAM_TLS_VERSION%`, `%REQUESTED_SERVER_NAME%`, `%DOWNSTREAM_PEER_SUBJECT%`,
//! `%DOWNSTREAM_PEER_URI_SAN%`, `%DOWNSTREAM_PEER_DNS_SAN%`).
//!
//! Values are parsed once when the filter is built: a plain value becomes a ready `HeaderValue`
//! (shared, so adding it allocates nothing), a template becomes a list of parts rendered per request.

use std::io::Write;
use std::sync::Arc;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::registry::{parse_config, BuildContext};
use super::{Exchange, FilterCx, Flow, HttpFilter, Phases};
use crate::h1::raw_fields;

/// Registered name.
pub const NAME: &str = "headers";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: OpsConfig,
    #[serde(default)]
    response: OpsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsConfig {
    #[serde(default)]
    add: Vec<HeaderConfig>,
    #[serde(default)]
    set: Vec<HeaderConfig>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderConfig {
    name: String,
    value: String,
}

/// A per-request value a template may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    ClientIp,
    RequestId,
    Listener,
    Route,
    /// Envoy's TLS variables: empty on cleartext connections or without a client certificate.
    TlsVersion,
    Sni,
    PeerSubject,
    PeerUriSan,
    PeerDnsSan,
}

impl Var {
    const ALL: [(&'static str, Var); 9] = [
        ("CLIENT_IP", Var::ClientIp),
        ("REQUEST_ID", Var::RequestId),
        ("LISTENER", Var::Listener),
        ("ROUTE", Var::Route),
        ("DOWNSTREAM_TLS_VERSION", Var::TlsVersion),
        ("REQUESTED_SERVER_NAME", Var::Sni),
        ("DOWNSTREAM_PEER_SUBJECT", Var::PeerSubject),
        ("DOWNSTREAM_PEER_URI_SAN", Var::PeerUriSan),
        ("DOWNSTREAM_PEER_DNS_SAN", Var::PeerDnsSan),
    ];

    fn write(self, ex: &Exchange, out: &mut Vec<u8>) {
        match self {
            // `write!` into a Vec cannot fail.
            Var::ClientIp => {
                let _ = write!(out, "{}", ex.info.client_addr.ip().to_canonical());
            }
            Var::RequestId => {
                if let Some(id) = &ex.request_id {
                    out.extend_from_slice(id.as_bytes());
                }
            }
            Var::Listener => out.extend_from_slice(ex.info.listener.as_bytes()),
            Var::Route => {
                if let Some(r) = &ex.route {
                    out.extend_from_slice(r.as_bytes());
                }
            }
            Var::TlsVersion | Var::Sni | Var::PeerSubject | Var::PeerUriSan | Var::PeerDnsSan => {
                if let Some(t) = &ex.info.tls {
                    let v = match self {
                        Var::TlsVersion => Some(t.version),
                        Var::Sni => t.sni.as_deref(),
                        Var::PeerSubject => t.subject.as_deref(),
                        Var::PeerUriSan => t.uri_sans.first().map(String::as_str),
                        _ => t.dns_sans.first().map(String::as_str),
                    };
                    out.extend_from_slice(v.unwrap_or("").as_bytes());
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A header value: ready, or rendered per request.
#[derive(Debug)]
enum Value {
    Fixed(HeaderValue),
    Template(Vec<Part>),
}

impl Value {
    fn parse(raw: &str) -> Result<Value, String> {
        let parts = parse_template(raw)?;
        match parts.as_slice() {
            [] => Ok(Value::Fixed(HeaderValue::from_static(""))),
            [Part::Text(t)] => HeaderValue::from_str(t).map(Value::Fixed).map_err(|_| {
                format!("value `{raw}` has characters not allowed in a header (control characters or newlines)")
            }),
            _ => {
                for p in &parts {
                    if let Part::Text(t) = p {
                        HeaderValue::from_str(t).map_err(|_| {
                            format!("value `{raw}` has characters not allowed in a header (control characters or newlines)")
                        })?;
                    }
                }
                Ok(Value::Template(parts))
            }
        }
    }

    /// The value for this exchange; `None` when a variable made it invalid (it is then skipped).
    fn render(&self, ex: &Exchange) -> Option<HeaderValue> {
        match self {
            Value::Fixed(v) => Some(v.clone()),
            Value::Template(parts) => {
                let mut out = Vec::with_capacity(64);
                for p in parts {
                    match p {
                        Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                        Part::Var(v) => v.write(ex, &mut out),
                    }
                }
                HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
            }
        }
    }
}

/// Split `%NAME%` variables out of `raw`; `%%` is a literal `%`.
fn parse_template(raw: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find('%') {
        text.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            text.push('%');
            rest = tail;
            continue;
        }
        let end = after.find('%').ok_or_else(|| {
            format!("value `{raw}` has an unclosed `%`; write `%%` for a literal percent sign")
        })?;
        let name = &after[..end];
        let var = Var::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                format!(
                    "value `{raw}` names unknown variable `%{name}%`; known: %CLIENT_IP%, %REQUEST_ID%, %LISTENER%, %ROUTE%, %DOWNSTREAM_TLS_VERSION%, %REQUESTED_SERVER_NAME%, %DOWNSTREAM_PEER_SUBJECT%, %DOWNSTREAM_PEER_URI_SAN%, %DOWNSTREAM_PEER_DNS_SAN% (write `%%` for a literal percent sign)"
                )
            })?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Var(var));
        rest = &after[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// The operations on one header map, in the order they run: remove, set, add.
#[derive(Debug, Default)]
struct Ops {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Value)>,
    add: Vec<(HeaderName, Value)>,
}

impl Ops {
    fn build(c: OpsConfig, side: &str) -> Result<Ops, String> {
        let name = |n: &str, what: &str| {
            let h = HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                format!(
                    "{side}.{what}: `{n}` is not a valid header name; use letters, digits and `-` (pseudo-headers like `:path` cannot be changed here)"
                )
            })?;
            if h == CONTENT_LENGTH || h == TRANSFER_ENCODING {
                return Err(format!(
                    "{side}.{what}: `{n}` frames the body and is managed by the gateway; remove it from the headers filter"
                ));
            }
            Ok(h)
        };
        let pairs = |list: Vec<HeaderConfig>,
                     what: &str|
         -> Result<Vec<(HeaderName, Value)>, String> {
            list.into_iter()
                .map(|h| {
                    let n = name(&h.name, what)?;
                    let v = Value::parse(&h.value).map_err(|e| format!("{side}.{what}: {e}"))?;
                    Ok((n, v))
                })
                .collect()
        };
        Ok(Ops {
            remove: c
                .remove
                .iter()
                .map(|n| name(n, "remove"))
                .collect::<Result<_, _>>()?,
            set: pairs(c.set, "set")?,
            add: pairs(c.add, "add")?,
        })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Render every value first (templates read the exchange), then apply to `headers`.
    fn apply(&self, ex: &Exchange, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            match v.render(ex) {
                Some(v) => {
                    headers.insert(n.clone(), v);
                }
                None => {
                    headers.remove(n);
                }
            }
        }
        for (n, v) in &self.add {
            if let Some(v) = v.render(ex) {
                headers.append(n.clone(), v);
            }
        }
    }
}

impl Ops {
    /// [`Ops::apply`] to a response head, whose fields may still be the upstream's raw lines:
    /// each change goes through [`raw_fields::edit`], which keeps them raw when it can.
    fn apply_response(&self, ex: &Exchange, parts: &mut http::response::Parts) {
        for n in &self.remove {
            raw_fields::edit(parts, n, None, true);
        }
        for (n, v) in &self.set {
            raw_fields::edit(parts, n, v.render(ex).as_ref(), true);
        }
        for (n, v) in &self.add {
            if let Some(v) = v.render(ex) {
                raw_fields::edit(parts, n, Some(&v), false);
            }
        }
    }
}

/// The built filter.
pub struct Headers {
    request: Ops,
    response: Ops,
}

/// Factory registered as `headers`.
///
/// # Errors
/// Unknown keys, invalid header names or values, unknown `%VARIABLES%`.
pub fn factory(
    config: Option<&serde_json::Value>,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn HttpFilter>, String> {
    let c: Config = parse_config(config)?;
    let f = Headers {
        request: Ops::build(c.request, "request")?,
        response: Ops::build(c.response, "response")?,
    };
    if f.request.is_empty() && f.response.is_empty() {
        return Err(
            "the headers filter has nothing to do; give it e.g. `request: { set: [{ name: x-env, value: prod }] }`"
                .to_string(),
        );
    }
    Ok(Arc::new(f))
}

impl HttpFilter for Headers {
    fn name(&self) -> &str {
        NAME
    }

    fn phases(&self) -> Phases {
        let mut p = Phases::NONE;
        if !self.request.is_empty() {
            p = p | Phases::REQUEST_HEADERS;
        }
        if !self.response.is_empty() {
            p = p | Phases::RESPONSE_HEADERS;
        }
        p
    }

    /// The response operations render fixed values and the connection's and route's
    /// variables: never the request headers.
    fn reads_request_headers_later(&self) -> bool {
        false
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        // Take the map out so templates can read the rest of the exchange while it is changed.
        let mut headers = std::mem::take(&mut cx.ex.request.headers);
        self.request.apply(cx.ex, &mut headers);
        cx.ex.request.headers = headers;
        Flow::Continue
    }

    /// The response operations go through `raw_fields::edit`.
    fn takes_raw_response(&self) -> bool {
        true
    }

    fn on_response_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        if let Some(mut resp) = cx.ex.response.take() {
            self.response.apply_response(cx.ex, &mut resp);
            cx.ex.response = Some(resp);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::{build, exchange, get, respond};

    #[test]
    fn templates_parse() {
        assert_eq!(
            parse_template("ip=%CLIENT_IP%;100%%").unwrap(),
            vec![
                Part::Text("ip=".into()),
                Part::Var(Var::ClientIp),
                Part::Text(";100%".into())
            ]
        );
        assert!(parse_template("%NOPE%")
            .unwrap_err()
            .contains("unknown variable `%NOPE%`"));
        assert!(parse_template("50%").unwrap_err().contains("write `%%`"));
    }

    #[test]
    fn request_remove_set_add_in_order() {
        let f = build(
            factory,
            r#"
request:
  remove: [x-drop]
  set: [{ name: x-env, value: prod }]
  add: [{ name: x-multi, value: two }, { name: x-drop, value: re-added }]
"#,
        )
        .unwrap();
        assert_eq!(f.phases(), Phases::REQUEST_HEADERS);
        let req = http::Request::builder()
            .header("x-drop", "old")
            .header("x-env", "dev")
            .header("x-env", "dev2")
            .header("x-multi", "one")
            .body(())
            .unwrap();
        let mut ex = exchange("10.0.0.1:5000", req);
        f.on_request_headers(&mut ex.cx(0));
        let h = &ex.request.headers;
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-env"), ["prod"]);
        assert_eq!(all("x-multi"), ["one", "two"]);
        assert_eq!(all("x-drop"), ["re-added"]);
    }

    #[test]
    fn variables_render_per_request() {
        let f = build(
            factory,
            r#"
request:
  set: [{ name: x-client, value: "%CLIENT_IP%" }]
response:
  set: [{ name: x-served, value: "%LISTENER%/%ROUTE%/%REQUEST_ID%" }]
"#,
        )
        .unwrap();
        assert_eq!(
            f.phases(),
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
        );
        let mut ex = get("[::ffff:192.0.2.7]:4000");
        ex.route = Some(Arc::from("api"));
        ex.request_id = Some(HeaderValue::from_static("rid-1"));
        f.on_request_headers(&mut ex.cx(0));
        assert_eq!(ex.request.headers["x-client"], "192.0.2.7");
        // The filter says its response phase does not read the request headers: the proxy
        // moves them to the upstream request, and the phase renders the same without them.
        assert!(!f.reads_request_headers_later());
        ex.request.headers.clear();
        respond(&mut ex, 200);
        f.on_response_headers(&mut ex.cx(0));
        assert_eq!(ex.response.unwrap().headers["x-served"], "public/api/rid-1");
    }

    #[test]
    fn missing_variables_render_empty() {
        let f = build(
            factory,
            "response: { add: [{ name: x-route, value: 'r=%ROUTE%' }] }",
        )
        .unwrap();
        let mut ex = get("10.0.0.1:5000");
        respond(&mut ex, 204);
        f.on_response_headers(&mut ex.cx(0));
        assert_eq!(ex.response.unwrap().headers["x-route"], "r=");
    }

    #[test]
    fn bad_configs_say_how_to_fix() {
        let e = build(factory, "request: { set: [{ name: 'a b', value: x }] }")
            .err()
            .unwrap();
        assert!(
            e.contains("request.set: `a b` is not a valid header name"),
            "{e}"
        );
        let e = build(
            factory,
            "response: { add: [{ name: x, value: \"a\\nb\" }] }",
        )
        .err()
        .unwrap();
        assert!(e.contains("response.add: value"), "{e}");
        let e = build(factory, "request: { set: [{ name: x, value: '%HOST%' }] }")
            .err()
            .unwrap();
        assert!(e.contains("unknown variable `%HOST%`"), "{e}");
        let e = build(factory, "response: { remove: [Content-Length] }")
            .err()
            .unwrap();
        assert!(
            e.contains("response.remove: `Content-Length` frames the body"),
            "{e}"
        );
        let e = build(factory, "request: { put: [] }").err().unwrap();
        assert!(e.contains("unknown field `put`"), "{e}");
        let e = build(factory, "").err().unwrap();
        assert!(e.contains("nothing to do"), "{e}");
    }
}
