//! Route matching: host (exact or `*.suffix`), path (exact, prefix, regex), methods, headers.
//! First match wins, in the order of the config.

pub mod action;

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

pub use action::{Action, Redirect, WeightedTarget};

use crate::config::model::{HeaderMatchConfig, RouteMatchConfig};

#[derive(Debug)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug)]
enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum HeaderCond {
    Exact(http::HeaderValue),
    Present(bool),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatcher {
    name: HeaderName,
    cond: HeaderCond,
}

/// The compiled match conditions of one route.
#[derive(Debug)]
pub struct Matcher {
    host: HostMatch,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<HeaderMatcher>,
}

/// # Errors
/// A message naming the bad value (the config validator reports these with their place first).
pub fn compile(m: &RouteMatchConfig) -> Result<Matcher, String> {
    let host = match &m.host {
        None => HostMatch::Any,
        Some(h) if h == "*" => HostMatch::Any,
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
            None => HostMatch::Exact(h.to_ascii_lowercase()),
        },
    };
    let path = if let Some(p) = &m.path {
        PathMatch::Exact(p.clone())
    } else if let Some(p) = &m.path_prefix {
        if p == "/" {
            PathMatch::Any
        } else {
            PathMatch::Prefix(p.clone())
        }
    } else if let Some(r) = &m.path_regex {
        // Anchored: the regex must match the whole path, as Envoy's safe_regex does.
        let re = Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("bad path_regex: {e}"))?;
        PathMatch::Regex(re)
    } else {
        PathMatch::Any
    };
    let methods = m
        .methods
        .iter()
        .map(|s| Method::from_bytes(s.as_bytes()).map_err(|_| format!("bad method `{s}`")))
        .collect::<Result<Vec<_>, _>>()?;
    let headers = m
        .headers
        .iter()
        .map(compile_header)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Matcher {
        host,
        path,
        methods,
        headers,
    })
}

fn compile_header(h: &HeaderMatchConfig) -> Result<HeaderMatcher, String> {
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| format!("bad header name `{}`", h.name))?;
    let cond = if let Some(v) = &h.value {
        HeaderCond::Exact(
            http::HeaderValue::from_str(v).map_err(|_| format!("bad header value `{v}`"))?,
        )
    } else if let Some(r) = &h.regex {
        HeaderCond::Regex(
            Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("bad header regex: {e}"))?,
        )
    } else {
        HeaderCond::Present(h.present.unwrap_or(true))
    };
    Ok(HeaderMatcher { name, cond })
}

/// The request host without port, lower-cased only if needed (no allocation in the common case).
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> &'a str {
    let raw = uri
        .host()
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    strip_port(raw)
}

/// `h` without its port: the digits after its last `:`, unless that `:` is inside an IPv6
/// literal's brackets. Read from the end, without a search.
pub fn strip_port(h: &str) -> &str {
    let b = h.as_bytes();
    let digits = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    match b.len().checked_sub(digits + 1) {
        Some(colon)
            if b[colon] == b':'
                && (b.first() != Some(&b'[') || colon > 0 && b[colon - 1] == b']') =>
        {
            &h[..colon]
        }
        _ => h,
    }
}

impl Matcher {
    pub fn matches(&self, host: &str, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        let host_ok = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len() && {
                    let tail = &host.as_bytes()[host.len() - s.len()..];
                    tail.eq_ignore_ascii_case(s.as_bytes())
                }
            }
        };
        if !host_ok {
            return false;
        }
        let path_ok = match &self.path {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(r) => r.is_match(path),
        };
        if !path_ok {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return false;
        }
        self.headers.iter().all(|h| match &h.cond {
            HeaderCond::Exact(v) => headers.get_all(&h.name).iter().any(|x| x == v),
            HeaderCond::Present(p) => headers.contains_key(&h.name) == *p,
            HeaderCond::Regex(r) => headers
                .get_all(&h.name)
                .iter()
                .any(|x| x.to_str().is_ok_and(|s| r.is_match(s))),
        })
    }
}

/// A route ready to serve.
pub struct Route {
    pub name: Arc<str>,
    pub matcher: Matcher,
    pub action: Action,
    pub chain: std::sync::Arc<crate::filter::chain::FilterList>,
    pub timeout: std::time::Duration,
    pub retries: Option<crate::config::model::RetryConfig>,
    pub rewrite_prefix: Option<(String, String)>,
    pub rewrite_host: Option<http::HeaderValue>,
    pub metrics: crate::telemetry::metrics::RouteMetrics,
}

/// The routes of a listener, in order.
#[derive(Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    /// Some route matches on the host: only then is the request's host looked up.
    uses_host: bool,
}

impl Router {
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        let uses_host = routes
            .iter()
            .any(|r| !matches!(r.matcher.host, HostMatch::Any));
        Router { routes, uses_host }
    }

    /// The routes, in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn find(&self, req: &http::request::Parts) -> Option<&Arc<Route>> {
        let host = if self.uses_host {
            request_host(&req.uri, &req.headers)
        } else {
            ""
        };
        let path = req.uri.path();
        self.routes
            .iter()
            .find(|r| r.matcher.matches(host, &req.method, path, &req.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> Matcher {
        let cfg: RouteMatchConfig = serde_yaml::from_str(yaml).unwrap();
        compile(&cfg).unwrap()
    }

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn host_exact_and_wildcard() {
        let e = m("host: api.example.com");
        assert!(e.matches("API.example.com", &Method::GET, "/", &HeaderMap::new()));
        assert!(!e.matches("x.api.example.com", &Method::GET, "/", &HeaderMap::new()));
        let w = m("host: '*.example.com'");
        assert!(w.matches("a.example.com", &Method::GET, "/", &HeaderMap::new()));
        assert!(w.matches("a.b.example.com", &Method::GET, "/", &HeaderMap::new()));
        assert!(!w.matches("example.com", &Method::GET, "/", &HeaderMap::new()));
        assert!(!w.matches("badexample.com", &Method::GET, "/", &HeaderMap::new()));
    }

    #[test]
    fn paths() {
        assert!(m("path: /a").matches("", &Method::GET, "/a", &HeaderMap::new()));
        assert!(!m("path: /a").matches("", &Method::GET, "/a/", &HeaderMap::new()));
        assert!(m("path_prefix: /v1/").matches("", &Method::GET, "/v1/x", &HeaderMap::new()));
        assert!(!m("path_prefix: /v1/").matches("", &Method::GET, "/v2/x", &HeaderMap::new()));
        let r = m("path_regex: '/users/[0-9]+'");
        assert!(r.matches("", &Method::GET, "/users/42", &HeaderMap::new()));
        assert!(!r.matches("", &Method::GET, "/users/42/x", &HeaderMap::new()));
    }

    #[test]
    fn methods_and_headers() {
        let x = m("methods: [GET, POST]\nheaders:\n  - {name: x-canary, value: '1'}\n  - {name: x-a, present: true}\n  - {name: x-b, regex: 'v[0-9]'}\n  - {name: x-c, present: false}");
        let ok = hm(&[("x-canary", "1"), ("x-a", ""), ("x-b", "v2")]);
        assert!(x.matches("", &Method::POST, "/", &ok));
        assert!(!x.matches("", &Method::PUT, "/", &ok));
        let bad = hm(&[("x-canary", "1"), ("x-a", ""), ("x-b", "v2"), ("x-c", "1")]);
        assert!(!x.matches("", &Method::GET, "/", &bad));
        let bad = hm(&[("x-canary", "1"), ("x-a", ""), ("x-b", "vv")]);
        assert!(!x.matches("", &Method::GET, "/", &bad));
    }

    #[test]
    fn host_port_is_ignored() {
        let uri: http::Uri = "/x".parse().unwrap();
        let h = hm(&[("host", "example.com:8080")]);
        assert_eq!(request_host(&uri, &h), "example.com");
        let h = hm(&[("host", "[::1]:8080")]);
        assert_eq!(request_host(&uri, &h), "[::1]");
    }
}
