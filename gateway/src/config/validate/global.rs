//! Top-level settings: workers, admin, the presence of listeners, xds and telemetry.

use std::net::SocketAddr;

use super::{http_url_problem, Checker};
use crate::config::diagnostics::Diagnostic;

/// More workers than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

impl Checker<'_> {
    pub(super) fn global(&mut self) {
        if let Some(w) = self.file.workers {
            if w == 0 || w > MAX_WORKERS {
                self.push(
                    Diagnostic::at(
                        "workers",
                        format!("workers is {w}; it must be between 1 and {MAX_WORKERS}"),
                    )
                    .fix(
                        "remove `workers` to use one per CPU core, or set a number from 1 to 1024",
                    ),
                );
            }
        }
        let admin = &self.file.admin.address;
        if let Some(d) = socket_addr_problem("admin.address", admin) {
            self.push(d);
        }
        if self.file.listeners.is_empty() && self.file.xds.is_none() {
            self.push(
                Diagnostic::at(
                    "listeners",
                    "no listeners are defined, so the gateway would serve nothing",
                )
                .fix("add one under `listeners:` with a `name`, an `address` and `routes`"),
            );
        }
    }

    pub(super) fn xds(&mut self) {
        let Some(xds) = &self.file.xds else { return };
        if let Some(p) = http_url_problem(&xds.server) {
            self.push(
                Diagnostic::at("xds.server", p)
                    .fix("write the ADS server as a URL, like `http://127.0.0.1:18000`"),
            );
        }
        if xds.node.id.trim().is_empty() {
            self.push(
                Diagnostic::at("xds.node.id", "xds node id is empty")
                    .fix("set a node id the control plane knows this gateway by, like `edge-1`"),
            );
        }
    }

    pub(super) fn telemetry(&mut self) {
        let t = &self.file.telemetry;
        if let Some(log) = &t.access_log {
            if log.format != "json" {
                self.push(
                    Diagnostic::at(
                        "telemetry.access_log.format",
                        format!("access log format `{}` is not supported", log.format),
                    )
                    .fix("use `json` (the only format for now)"),
                );
            }
            if log.path.trim().is_empty() {
                self.push(
                    Diagnostic::at("telemetry.access_log.path", "access log path is empty")
                        .fix("write `stdout`, `stderr` or a file path"),
                );
            }
        }
        if let Some(tr) = &t.tracing {
            if let Some(r) = tr.sample_ratio {
                if !(0.0..=1.0).contains(&r) {
                    self.push(
                        Diagnostic::at(
                            "telemetry.tracing.sample_ratio",
                            format!("sample ratio {r} is not between 0 and 1"),
                        )
                        .fix("write a fraction of requests to trace, like `0.01` for 1%"),
                    );
                }
            }
            if let Some(e) = &tr.otlp_endpoint {
                self.otlp_endpoint("telemetry.tracing.otlp_endpoint", e);
            }
            self.otlp_protocol("telemetry.tracing.protocol", tr.protocol.as_deref());
            for (i, n) in tr.propagation.iter().flatten().enumerate() {
                if crate::telemetry::otel::propagation::Format::parse(n).is_none() {
                    self.push(
                        Diagnostic::at(
                            format!("telemetry.tracing.propagation[{i}]"),
                            format!("propagation format `{n}` is not known"),
                        )
                        .fix(format!(
                            "write {}",
                            crate::telemetry::otel::propagation::NAMES
                        )),
                    );
                }
            }
        }
        if let Some(e) = &t.metrics.otlp_endpoint {
            self.otlp_endpoint("telemetry.metrics.otlp_endpoint", e);
        }
        self.otlp_protocol(
            "telemetry.metrics.otlp_protocol",
            t.metrics.otlp_protocol.as_deref(),
        );
    }

    fn otlp_protocol(&mut self, path: &str, p: Option<&str>) {
        if let Some(p) = p.filter(|p| !matches!(*p, "grpc" | "http/protobuf")) {
            self.push(
                Diagnostic::at(path, format!("OTLP protocol `{p}` is not known"))
                    .fix("write `grpc` (port 4317) or `http/protobuf` (port 4318)"),
            );
        }
    }

    fn otlp_endpoint(&mut self, path: &str, url: &str) {
        if url.starts_with("https://") {
            self.push(
                Diagnostic::at(path, "TLS to the OTLP collector is not supported yet").fix(
                    "send to a local collector agent over `http://`, like `http://127.0.0.1:4317`",
                ),
            );
            return;
        }
        if let Some(p) = http_url_problem(url) {
            self.push(
                Diagnostic::at(path, p)
                    .fix("write the OTLP/gRPC collector as a URL, like `http://127.0.0.1:4317`"),
            );
        }
    }
}

/// A problem at `path` if `value` is not an `ip:port` socket address.
pub(super) fn socket_addr_problem(path: &str, value: &str) -> Option<Diagnostic> {
    if value.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let fix = if value.starts_with("localhost") {
        "write an IP address, not a host name: `127.0.0.1:PORT` (or `[::1]:PORT`)".to_string()
    } else if value.matches(':').count() > 1 && !value.starts_with('[') {
        format!(
            "write an IPv6 address in brackets: `[{}]:PORT`",
            value.rsplit_once(':').map_or(value, |p| p.0)
        )
    } else if !value.contains(':') {
        format!("add a port: `{value}:8080`")
    } else {
        "write an IP address and a port, like `0.0.0.0:8080` or `[::]:8080`".to_string()
    };
    Some(Diagnostic::at(path, format!("`{value}` is not an address and port")).fix(fix))
}
