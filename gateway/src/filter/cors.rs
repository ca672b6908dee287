//! `cors`: answer CORS preflights at the edge and mark responses for allowed origins.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) never reaches the
//! upstream: an allowed origin gets 204 with the CORS headers, any other origin gets 204 without
//! them, which the browser treats as a refusal (answering 403 would tell the page nothing more, and
//! keeping the status uniform does not reveal the allow list). Actual requests from an allowed
//! origin get `Access-Control-Allow-Origin` and friends on the response.

use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;

use super::registry::{parse_config, BuildContext};
use super::{FilterCx, Flow, HttpFilter, LocalResponse, Phases};
use crate::config::units::Dur;

/// Registered name.
pub const NAME: &str = "cors";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    allow_origins: Vec<String>,
    #[serde(default = "default_methods")]
    allow_methods: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    max_age: Option<Dur>,
    #[serde(default)]
    allow_credentials: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

/// One entry of `allow_origins`.
#[derive(Debug, PartialEq, Eq)]
enum OriginRule {
    /// `*`
    Any,
    /// `https://a.example` (compared without case).
    Exact(String),
    /// `*.example.com` (any scheme) or `https://*.example.com`: `suffix` is `.example.com`.
    Subdomain {
        scheme: Option<String>,
        suffix: String,
    },
}

impl OriginRule {
    fn parse(raw: &str, i: usize) -> Result<OriginRule, String> {
        let bad = |why: &str| {
            format!("allow_origins[{i}]: `{raw}` {why}; write `https://a.example`, `*.example.com`, `https://*.example.com` or `*`")
        };
        let t = raw.trim().to_ascii_lowercase();
        if t == "*" {
            return Ok(OriginRule::Any);
        }
        let (scheme, host) = match t.split_once("://") {
            Some((s, h)) => (Some(s), h),
            None => (None, t.as_str()),
        };
        if let Some(s) = scheme {
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            {
                return Err(bad("has an invalid scheme"));
            }
        }
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(bad(
                "is not an origin (an origin has no path, not even a trailing `/`)",
            ));
        }
        match host.strip_prefix('*') {
            Some(suffix)
                if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') =>
            {
                Ok(OriginRule::Subdomain {
                    scheme: scheme.map(str::to_string),
                    suffix: suffix.to_string(),
                })
            }
            _ if host.contains('*') => Err(bad("has `*` somewhere else than a leading `*.`")),
            _ if scheme.is_none() => Err(bad("has no scheme")),
            _ => Ok(OriginRule::Exact(t)),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginRule::Subdomain { scheme, suffix } => {
                let Some((s, host_port)) = origin.split_once("://") else {
                    return false;
                };
                if scheme
                    .as_deref()
                    .is_some_and(|want| !want.eq_ignore_ascii_case(s))
                {
                    return false;
                }
                let host = match host_port.rsplit_once(':') {
                    Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                    _ => host_port,
                };
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|end| end.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// The built filter.
pub struct Cors {
    origins: Vec<OriginRule>,
    /// Every origin is allowed and no credentials: answer `*`, the response does not vary.
    wildcard: bool,
    credentials: bool,
    /// `allow_methods`/`allow_headers` was `*` with credentials: echo what the preflight asks.
    echo_methods: bool,
    echo_headers: bool,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

static STAR: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// Factory registered as `cors`.
///
/// # Errors
/// Unknown keys, a malformed origin, method or header name, `*` origins with credentials.
pub fn factory(
    config: Option<&serde_json::Value>,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn HttpFilter>, String> {
    let c: Config = parse_config(config)?;
    if c.allow_origins.is_empty() {
        return Err("allow_origins is empty: list the origins allowed, e.g. `allow_origins: [\"https://app.example\"]`".to_string());
    }
    let origins = c
        .allow_origins
        .iter()
        .enumerate()
        .map(|(i, o)| OriginRule::parse(o, i))
        .collect::<Result<Vec<_>, _>>()?;
    let any_origin = origins.contains(&OriginRule::Any);
    if any_origin && c.allow_credentials {
        return Err("allow_origins `*` cannot be used with allow_credentials: true (browsers refuse it); list the origins instead".to_string());
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if m != "*" && Method::from_bytes(m.as_bytes()).is_err() {
            return Err(format!(
                "allow_methods[{i}]: `{m}` is not an HTTP method; e.g. `GET`, `PUT`"
            ));
        }
    }
    let names = |list: &[String], what: &str| -> Result<(), String> {
        for (i, h) in list.iter().enumerate() {
            if h != "*" && HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!(
                    "{what}[{i}]: `{h}` is not a valid header name; e.g. `content-type`"
                ));
            }
        }
        Ok(())
    };
    names(&c.allow_headers, "allow_headers")?;
    names(&c.expose_headers, "expose_headers")?;
    if c.allow_credentials && c.expose_headers.iter().any(|h| h == "*") {
        return Err("expose_headers `*` is not a wildcard when allow_credentials is true (browsers read it as a header named `*`); list the headers".to_string());
    }
    let has_star = |l: &[String]| l.iter().any(|x| x == "*");
    let echo_methods = c.allow_credentials && has_star(&c.allow_methods);
    let echo_headers = c.allow_credentials && has_star(&c.allow_headers);
    let join = |l: &[String]| -> Option<HeaderValue> {
        if l.is_empty() {
            return None;
        }
        // Names and methods were checked above: only token characters and `*`.
        HeaderValue::from_str(&l.join(", ")).ok()
    };
    Ok(Arc::new(Cors {
        wildcard: any_origin,
        credentials: c.allow_credentials,
        echo_methods,
        echo_headers,
        allow_methods: join(&c.allow_methods).unwrap_or_else(|| HeaderValue::from_static("")),
        allow_headers: join(&c.allow_headers),
        expose_headers: join(&c.expose_headers),
        max_age: c.max_age.map(|d| HeaderValue::from(d.get().as_secs())),
        origins,
    }))
}

fn is_preflight(req: &http::request::Parts) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Whether a `Vary` already names `origin` (or `*`).
fn varies_by_origin(headers: &HeaderMap) -> bool {
    headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    })
}

impl Cors {
    fn allowed(&self, origin: &HeaderValue) -> bool {
        origin
            .to_str()
            .is_ok_and(|o| self.origins.iter().any(|r| r.matches(o)))
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.wildcard {
            STAR.clone()
        } else {
            origin.clone()
        }
    }

    fn preflight(&self, req: &http::request::Parts) -> LocalResponse {
        let mut r = LocalResponse::new(StatusCode::NO_CONTENT, "cors_preflight");
        let Some(origin) = req.headers.get(ORIGIN) else {
            return r;
        };
        if !self.wildcard {
            r.headers.append(VARY, VARY_ORIGIN.clone());
        }
        if !self.allowed(origin) {
            r.details = "cors_preflight_denied";
            return r;
        }
        let h = &mut r.headers;
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        let methods = if self.echo_methods {
            req.headers.get(ACCESS_CONTROL_REQUEST_METHOD).cloned()
        } else {
            Some(self.allow_methods.clone())
        };
        if let Some(m) = methods {
            h.insert(ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        let headers = if self.echo_headers {
            req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned()
        } else {
            self.allow_headers.clone()
        };
        if let Some(v) = headers {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = &self.max_age {
            h.insert(ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        r
    }
}

impl HttpFilter for Cors {
    fn name(&self) -> &str {
        NAME
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        if is_preflight(&cx.ex.request) {
            Flow::respond(self.preflight(&cx.ex.request))
        } else {
            Flow::Continue
        }
    }

    fn on_response_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        let ex = &mut *cx.ex;
        // A preflight was answered (headers and all) by the request phase.
        if is_preflight(&ex.request) {
            return Flow::Continue;
        }
        let Some(resp) = ex.response.as_mut() else {
            return Flow::Continue;
        };
        // The answer depends on Origin unless every origin gets `*`: caches must know, even for
        // requests without Origin or from origins not allowed.
        if !self.wildcard && !varies_by_origin(&resp.headers) {
            resp.headers.append(VARY, VARY_ORIGIN.clone());
        }
        let Some(origin) = ex.request.headers.get(ORIGIN) else {
            return Flow::Continue;
        };
        if !self.allowed(origin) {
            return Flow::Continue;
        }
        let h = &mut resp.headers;
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        if let Some(v) = &self.expose_headers {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        if self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::{build, exchange, is_continue, local, respond};
    use crate::filter::Exchange;

    fn req(method: &str, h: &[(&str, &str)]) -> Exchange {
        let mut b = http::Request::builder().method(method).uri("/x");
        for (n, v) in h {
            b = b.header(*n, *v);
        }
        exchange("192.0.2.1:1", b.body(()).unwrap())
    }

    fn preflight(origin: &str) -> Exchange {
        req(
            "OPTIONS",
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-a, x-b"),
            ],
        )
    }

    const CONFIG: &str = r#"
allow_origins: ["https://app.example", "*.example.com"]
allow_methods: [GET, PUT]
allow_headers: [content-type, x-a]
expose_headers: [x-total]
max_age: 10m
allow_credentials: true
"#;

    #[test]
    fn origin_rules() {
        let r = OriginRule::parse("*.Example.com", 0).unwrap();
        assert!(r.matches("https://a.example.com"));
        assert!(r.matches("http://a.b.example.com:8443"));
        assert!(!r.matches("https://example.com"));
        assert!(!r.matches("https://evilexample.com"));
        assert!(!r.matches("https://a.example.com.evil"));
        let r = OriginRule::parse("https://*.example.com", 0).unwrap();
        assert!(r.matches("https://a.example.com"));
        assert!(!r.matches("http://a.example.com"));
        let r = OriginRule::parse("https://App.example", 0).unwrap();
        assert!(r.matches("https://app.example"));
        assert!(!r.matches("https://app.example:444"));
        assert!(!r.matches("http://app.example"));
    }

    #[test]
    fn preflight_from_allowed_origin() {
        let f = build(factory, CONFIG).unwrap();
        let mut ex = preflight("https://a.example.com");
        let r = local(f.on_request_headers(&mut ex.cx(0)));
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(r.details, "cors_preflight");
        let h = &r.headers;
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "content-type, x-a");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[VARY], "Origin");
        // The response phase leaves the preflight answer alone.
        ex.response = Some({
            let mut b = http::Response::builder().status(204);
            for (n, v) in &r.headers {
                b = b.header(n, v);
            }
            b.body(()).unwrap().into_parts().0
        });
        f.on_response_headers(&mut ex.cx(0));
        assert_eq!(ex.response.unwrap().headers.get_all(VARY).iter().count(), 1);
    }

    #[test]
    fn preflight_from_other_origin_gets_no_cors_headers() {
        let f = build(factory, CONFIG).unwrap();
        let r = local(f.on_request_headers(&mut preflight("https://evil.example").cx(0)));
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(r.details, "cors_preflight_denied");
        assert!(r.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(r.headers.get(ACCESS_CONTROL_ALLOW_METHODS).is_none());
    }

    #[test]
    fn plain_options_and_other_requests_pass() {
        let f = build(factory, CONFIG).unwrap();
        assert!(is_continue(&f.on_request_headers(
            &mut req("OPTIONS", &[("origin", "https://app.example")]).cx(0)
        )));
        assert!(is_continue(&f.on_request_headers(
            &mut req("GET", &[("origin", "https://app.example")]).cx(0)
        )));
    }

    #[test]
    fn actual_request_from_allowed_origin() {
        let f = build(factory, CONFIG).unwrap();
        let mut ex = req("GET", &[("origin", "https://app.example")]);
        respond(&mut ex, 200);
        f.on_response_headers(&mut ex.cx(0));
        let h = ex.response.unwrap().headers;
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[VARY], "Origin");
    }

    #[test]
    fn other_origins_and_no_origin_only_get_vary() {
        let f = build(factory, CONFIG).unwrap();
        for mut ex in [
            req("GET", &[("origin", "https://evil.example")]),
            req("GET", &[]),
        ] {
            respond(&mut ex, 200);
            ex.response
                .as_mut()
                .unwrap()
                .headers
                .insert(VARY, HeaderValue::from_static("Accept-Encoding, Origin"));
            f.on_response_headers(&mut ex.cx(0));
            let h = ex.response.unwrap().headers;
            assert!(h.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            // Vary already named Origin: not repeated.
            assert_eq!(h.get_all(VARY).iter().count(), 1);
        }
    }

    #[test]
    fn wildcard_without_credentials() {
        let f = build(factory, "{allow_origins: ['*'], allow_headers: ['*']}").unwrap();
        let r = local(f.on_request_headers(&mut preflight("https://any.example").cx(0)));
        assert_eq!(r.headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(r.headers[ACCESS_CONTROL_ALLOW_HEADERS], "*");
        assert_eq!(r.headers[ACCESS_CONTROL_ALLOW_METHODS], "GET, HEAD, POST");
        assert!(r.headers.get(VARY).is_none());
        assert!(r.headers.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        let mut ex = req("GET", &[("origin", "https://any.example")]);
        respond(&mut ex, 200);
        f.on_response_headers(&mut ex.cx(0));
        let h = ex.response.unwrap().headers;
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(VARY).is_none());
    }

    #[test]
    fn star_methods_and_headers_echo_with_credentials() {
        let f = build(
            factory,
            "{allow_origins: ['https://app.example'], allow_methods: ['*'], allow_headers: ['*'], allow_credentials: true}",
        )
        .unwrap();
        let r = local(f.on_request_headers(&mut preflight("https://app.example").cx(0)));
        assert_eq!(r.headers[ACCESS_CONTROL_ALLOW_METHODS], "PUT");
        assert_eq!(r.headers[ACCESS_CONTROL_ALLOW_HEADERS], "x-a, x-b");
    }

    #[test]
    fn bad_configs_say_how_to_fix() {
        let err = |y: &str| build(factory, y).err().unwrap();
        assert!(err("{}").contains("missing field `allow_origins`"));
        assert!(err("allow_origins: []").contains("allow_origins is empty"));
        assert!(err("{allow_origins: ['*'], allow_credentials: true}")
            .contains("cannot be used with allow_credentials"));
        assert!(err("allow_origins: ['https://a.example/']").contains("allow_origins[0]"));
        assert!(err("allow_origins: ['a.example']").contains("has no scheme"));
        assert!(err("allow_origins: ['https://a.*.example']").contains("leading `*.`"));
        assert!(err("{allow_origins: ['*'], allow_methods: ['GE T']}").contains("allow_methods[0]"));
        assert!(err("{allow_origins: ['*'], allow_headers: ['a b']}").contains("allow_headers[0]"));
        assert!(err("{allow_origins: ['https://a.example'], expose_headers: ['*'], allow_credentials: true}").contains("expose_headers `*`"));
        assert!(err("{allow_origins: ['*'], max_age: 600}").contains("no unit"));
        assert!(err("{allow_origins: ['*'], origins: []}").contains("unknown field `origins`"));
    }
}
