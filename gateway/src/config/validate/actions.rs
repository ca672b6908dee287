//! What a route does once matched: forward to a cluster (or weighted clusters), redirect, or answer
//! directly; and its retry and rewrite settings.

use super::{header_name_problem, missing_ref_fix, Checker};
use crate::config::diagnostics::Diagnostic;
use crate::config::model::{DirectResponseConfig, RedirectConfig, RouteConfig, WeightedCluster};

/// Status codes a redirect may use.
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];
/// More retries than this only multiplies load on a failing upstream.
const MAX_RETRY_ATTEMPTS: u32 = 10;

impl Checker<'_> {
    pub(super) fn route_action(&mut self, path: &str, r: &RouteConfig) {
        let actions: Vec<&str> = [
            ("cluster", r.cluster.is_some()),
            ("weighted_clusters", r.weighted_clusters.is_some()),
            ("redirect", r.redirect.is_some()),
            ("direct_response", r.direct_response.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| *k)
        .collect();
        match actions.len() {
            0 => self.push(
                Diagnostic::at(path, "route has no action")
                    .fix("add one of `cluster`, `weighted_clusters`, `redirect`, `direct_response`"),
            ),
            1 => {}
            _ => self.push(
                Diagnostic::at(path, format!("route has more than one action: {}", actions.join(", ")))
                    .fix("keep exactly one of `cluster`, `weighted_clusters`, `redirect`, `direct_response`"),
            ),
        }
        if let Some(c) = &r.cluster {
            self.cluster_ref(&format!("{path}.cluster"), c);
        }
        if let Some(w) = &r.weighted_clusters {
            self.weighted(&format!("{path}.weighted_clusters"), w);
        }
        if let Some(rd) = &r.redirect {
            self.redirect(&format!("{path}.redirect"), rd);
        }
        if let Some(d) = &r.direct_response {
            self.direct_response(&format!("{path}.direct_response"), d);
        }
        if let Some(retries) = &r.retries {
            if retries.attempts > MAX_RETRY_ATTEMPTS {
                self.push(
                    Diagnostic::at(format!("{path}.retries.attempts"), format!("{} retry attempts is too many", retries.attempts))
                        .fix(format!("use at most {MAX_RETRY_ATTEMPTS}; retries multiply load on a failing upstream")),
                );
            }
            if let Some(b) = retries.budget_percent.filter(|b| *b > 100) {
                self.push(
                    Diagnostic::at(
                        format!("{path}.retries.budget_percent"),
                        format!("retry budget {b}% is over 100%"),
                    )
                    .fix("write a percentage from 0 to 100 of the cluster's active requests"),
                );
            }
        }
        if let Some(rw) = &r.rewrite {
            if let Some(p) = rw.path_prefix.as_deref().filter(|p| !p.starts_with('/')) {
                self.push(
                    Diagnostic::at(
                        format!("{path}.rewrite.path_prefix"),
                        format!("rewrite prefix `{p}` does not start with `/`"),
                    )
                    .fix(format!("write `/{p}`")),
                );
            }
            if let Some(h) = rw
                .host
                .as_deref()
                .filter(|h| h.is_empty() || h.contains(['/', ' ']))
            {
                self.push(
                    Diagnostic::at(
                        format!("{path}.rewrite.host"),
                        format!("rewrite host `{h}` is not a host name"),
                    )
                    .fix("write a host like `internal.api`, optionally with `:port`"),
                );
            }
        }
    }

    fn cluster_ref(&mut self, path: &str, name: &str) {
        if !self.cluster_names.contains(&name) {
            let fix = missing_ref_fix(name, &self.cluster_names, "clusters");
            self.push(Diagnostic::at(path, format!("cluster `{name}` is not defined")).fix(fix));
        }
    }

    fn weighted(&mut self, path: &str, list: &[WeightedCluster]) {
        if list.is_empty() {
            self.push(
                Diagnostic::at(path, "weighted_clusters is empty")
                    .fix("list clusters with weights, like `- { name: api, weight: 90 }`"),
            );
            return;
        }
        for (i, w) in list.iter().enumerate() {
            self.cluster_ref(&format!("{path}[{i}].name"), &w.name);
        }
        if list.iter().map(|w| u64::from(w.weight)).sum::<u64>() == 0 {
            self.push(
                Diagnostic::at(
                    path,
                    "weighted_clusters weights add up to 0, so no cluster can be picked",
                )
                .fix("give at least one cluster a weight above 0"),
            );
        }
    }

    fn redirect(&mut self, path: &str, rd: &RedirectConfig) {
        if let Some(s) = rd.status.filter(|s| !REDIRECT_STATUSES.contains(s)) {
            self.push(
                Diagnostic::at(
                    format!("{path}.status"),
                    format!("{s} is not a redirect status"),
                )
                .fix("use 301, 302, 303, 307 or 308"),
            );
        }
        if rd.path.is_some() && rd.path_prefix.is_some() {
            self.push(
                Diagnostic::at(path, "redirect has both `path` and `path_prefix`")
                    .fix("keep `path` to replace the whole path or `path_prefix` to replace the matched prefix"),
            );
        }
        for (key, value) in [("path", &rd.path), ("path_prefix", &rd.path_prefix)] {
            if let Some(v) = value.as_deref().filter(|v| !v.starts_with('/')) {
                self.push(
                    Diagnostic::at(
                        format!("{path}.{key}"),
                        format!("redirect {key} `{v}` does not start with `/`"),
                    )
                    .fix(format!("write `/{v}`")),
                );
            }
        }
        if let Some(s) = rd.scheme.as_deref() {
            if s != "http" && s != "https" {
                self.push(
                    Diagnostic::at(
                        format!("{path}.scheme"),
                        format!("redirect scheme `{s}` is not http or https"),
                    )
                    .fix("write `http` or `https`"),
                );
            } else if rd.https_redirect {
                self.push(
                    Diagnostic::at(path, "redirect sets both `scheme` and `https_redirect`")
                        .fix("keep `https_redirect: true` alone, or `scheme:` alone"),
                );
            }
        }
        if rd.port == Some(0) {
            self.push(
                Diagnostic::at(format!("{path}.port"), "redirect port is 0")
                    .fix("write a port from 1 to 65535"),
            );
        }
        let changes_something = rd.scheme.is_some()
            || rd.host.is_some()
            || rd.port.is_some()
            || rd.path.is_some()
            || rd.path_prefix.is_some()
            || rd.https_redirect;
        if !changes_something {
            self.push(
                Diagnostic::at(path, "redirect changes nothing, so it would send clients back to the same URL forever")
                    .fix("set at least one of `scheme`, `host`, `port`, `path`, `path_prefix`, `https_redirect`"),
            );
        }
    }

    fn direct_response(&mut self, path: &str, d: &DirectResponseConfig) {
        if !(100..=599).contains(&d.status) {
            self.push(
                Diagnostic::at(
                    format!("{path}.status"),
                    format!("{} is not an HTTP status code", d.status),
                )
                .fix("use a status from 100 to 599"),
            );
        }
        for (i, h) in d.headers.iter().enumerate() {
            let hp = format!("{path}.headers[{i}]");
            if let Some(p) = header_name_problem(&h.name) {
                self.push(
                    Diagnostic::at(format!("{hp}.name"), p)
                        .fix("header names are tokens like `content-type`"),
                );
            }
            if http::HeaderValue::from_str(&h.value).is_err() {
                self.push(
                    Diagnostic::at(
                        format!("{hp}.value"),
                        format!("`{}` is not a valid header value", h.value),
                    )
                    .fix("header values are visible ASCII and spaces, without line breaks"),
                );
            }
        }
    }
}
