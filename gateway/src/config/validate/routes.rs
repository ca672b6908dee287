//! Route matching: path, host, method and header conditions, and routes that can never match
//! because an earlier one takes every request they would get (first match wins).

use super::{header_name_problem, host_pattern_problem, regex_problem, Checker};
use crate::config::diagnostics::Diagnostic;
use crate::config::model::{RouteConfig, RouteMatchConfig};

impl Checker<'_> {
    pub(super) fn routes(&mut self, listener_path: &str, routes: &[RouteConfig]) {
        for (i, r) in routes.iter().enumerate() {
            let p = format!("{listener_path}.routes[{i}]");
            self.route_match(&format!("{p}.match"), &r.matcher);
            self.chain(&format!("{p}.filters"), &r.filters);
            self.route_action(&p, r);
        }
        self.unreachable_routes(listener_path, routes);
    }

    fn route_match(&mut self, path: &str, m: &RouteMatchConfig) {
        let kinds: Vec<&str> = [
            ("path", m.path.is_some()),
            ("path_prefix", m.path_prefix.is_some()),
            ("path_regex", m.path_regex.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        if kinds.len() > 1 {
            self.push(
                Diagnostic::at(
                    path,
                    format!("route matches on both `{}` and `{}`", kinds[0], kinds[1]),
                )
                .fix("keep one of `path` (exact), `path_prefix` or `path_regex`"),
            );
        }
        for (key, value) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
            if let Some(v) = value {
                if !v.starts_with('/') {
                    self.push(
                        Diagnostic::at(
                            format!("{path}.{key}"),
                            format!("{key} `{v}` does not start with `/`"),
                        )
                        .fix(format!("write `/{v}`")),
                    );
                }
            }
        }
        if let Some(p) = m.path_regex.as_deref().and_then(regex_problem) {
            self.push(
                Diagnostic::at(format!("{path}.path_regex"), p)
                    .fix("fix the pattern (Rust regex syntax)"),
            );
        }
        if let Some(p) = m.host.as_deref().and_then(host_pattern_problem) {
            self.push(Diagnostic::at(format!("{path}.host"), p).fix(
                "write an exact host like `api.example.com` or a suffix like `*.example.com`",
            ));
        }
        for (j, method) in m.methods.iter().enumerate() {
            self.method(&format!("{path}.methods[{j}]"), method);
        }
        for (j, h) in m.headers.iter().enumerate() {
            let hp = format!("{path}.headers[{j}]");
            if let Some(p) = header_name_problem(&h.name) {
                self.push(
                    Diagnostic::at(format!("{hp}.name"), p)
                        .fix("header names are tokens like `x-canary`"),
                );
            }
            let set = [h.value.is_some(), h.present.is_some(), h.regex.is_some()];
            if set.iter().filter(|s| **s).count() > 1 {
                self.push(
                    Diagnostic::at(
                        hp.clone(),
                        "header match has more than one of `value`, `present`, `regex`",
                    )
                    .fix("keep one: `value` (exact), `present: true|false`, or `regex`"),
                );
            }
            if let Some(p) = h.regex.as_deref().and_then(regex_problem) {
                self.push(
                    Diagnostic::at(format!("{hp}.regex"), p)
                        .fix("fix the pattern (Rust regex syntax)"),
                );
            }
        }
    }

    fn method(&mut self, path: &str, method: &str) {
        let upper = method.to_ascii_uppercase();
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            self.push(
                Diagnostic::at(path, format!("`{method}` is not an HTTP method"))
                    .fix("write a method like GET, POST, PUT, DELETE"),
            );
        } else if upper != method {
            self.push(
                Diagnostic::at(
                    path,
                    format!("method `{method}` is not upper case; methods are case-sensitive"),
                )
                .fix(format!("write `{upper}`")),
            );
        }
    }

    fn unreachable_routes(&mut self, listener_path: &str, routes: &[RouteConfig]) {
        for (i, r) in routes.iter().enumerate() {
            let key = MatchKey::of(&r.matcher);
            let shadow = routes[..i].iter().enumerate().find_map(|(j, earlier)| {
                let ek = MatchKey::of(&earlier.matcher);
                if ek == key {
                    Some((j, "has the same `match` and comes first"))
                } else if ek.is_catch_all() {
                    Some((j, "matches every request and comes first"))
                } else {
                    None
                }
            });
            if let Some((j, why)) = shadow {
                let fix = if key.is_catch_all() {
                    "remove one of the two catch-all routes".to_string()
                } else {
                    format!("move this route above routes[{j}], or change its `match` (the first matching route wins)")
                };
                self.push(
                    Diagnostic::at(
                        format!("{listener_path}.routes[{i}].match"),
                        format!("route can never match: routes[{j}] {why}"),
                    )
                    .fix(fix),
                );
            }
        }
    }
}

/// A header condition: lower-cased name, value, present, regex.
type HeaderKey<'a> = (String, Option<&'a str>, Option<bool>, Option<&'a str>);

/// The conditions of a route, normalized so that equal conditions compare equal.
#[derive(PartialEq, Eq)]
struct MatchKey<'a> {
    host: Option<&'a str>,
    path: Option<&'a str>,
    prefix: Option<&'a str>,
    regex: Option<&'a str>,
    methods: Vec<String>,
    headers: Vec<HeaderKey<'a>>,
}

impl<'a> MatchKey<'a> {
    fn of(m: &'a RouteMatchConfig) -> Self {
        let mut methods: Vec<String> = m.methods.iter().map(|s| s.to_ascii_uppercase()).collect();
        methods.sort();
        methods.dedup();
        let mut headers: Vec<_> = m
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    h.value.as_deref(),
                    h.present,
                    h.regex.as_deref(),
                )
            })
            .collect();
        headers.sort();
        MatchKey {
            host: m.host.as_deref(),
            path: m.path.as_deref(),
            // A prefix of `/` is every path: the same as no path condition.
            prefix: m.path_prefix.as_deref().filter(|p| *p != "/"),
            regex: m.path_regex.as_deref(),
            methods,
            headers,
        }
    }

    fn is_catch_all(&self) -> bool {
        self.host.is_none()
            && self.path.is_none()
            && self.prefix.is_none()
            && self.regex.is_none()
            && self.methods.is_empty()
            && self.headers.is_empty()
    }
}
