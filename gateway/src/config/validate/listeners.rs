//! Listeners: names, addresses (and clashes between them), protocols, limits and TLS. Their filter
//! chains and routes are checked in `filters.rs` and `routes.rs`.

use std::net::SocketAddr;

use super::global::socket_addr_problem;
use super::{host_pattern_problem, Checker};
use crate::config::diagnostics::Diagnostic;
use crate::config::model::{ListenerConfig, ListenerLimits, ListenerTlsConfig};

/// TLS versions a listener may require as its minimum.
const TLS_VERSIONS: [&str; 2] = ["1.2", "1.3"];

impl Checker<'_> {
    pub(super) fn listeners(&mut self) {
        let file = self.file;
        self.unique_names(
            "listeners",
            "listener",
            file.listeners.iter().map(|l| l.name.as_str()),
        );
        let mut bound: Vec<(usize, SocketAddr)> = Vec::new();
        for (i, l) in file.listeners.iter().enumerate() {
            let path = format!("listeners[{i}]");
            self.listener_address(&path, i, l, &mut bound);
            if l.protocols.is_empty() {
                self.push(
                    Diagnostic::at(format!("{path}.protocols"), "listener has no protocols").fix(
                        "list at least one of `http1`, `http2`, or remove `protocols` for both",
                    ),
                );
            }
            self.limits(&format!("{path}.limits"), &l.limits);
            if let Some(tls) = &l.tls {
                self.listener_tls(&format!("{path}.tls"), tls);
            }
            self.chain(&format!("{path}.filters"), &l.filters);
            self.routes(&path, &l.routes);
        }
    }

    fn listener_address(
        &mut self,
        path: &str,
        i: usize,
        l: &ListenerConfig,
        bound: &mut Vec<(usize, SocketAddr)>,
    ) {
        let apath = format!("{path}.address");
        if let Some(d) = socket_addr_problem(&apath, &l.address) {
            self.push(d);
            return;
        }
        let Ok(addr) = l.address.parse::<SocketAddr>() else {
            return;
        };
        // Port 0 asks the OS for a free port each time: two such listeners never clash.
        if addr.port() != 0 {
            if let Some((j, other)) = bound.iter().find(|(_, b)| clash(*b, addr)) {
                let name = &self.file.listeners[*j].name;
                self.push(
                    Diagnostic::at(apath, format!("address `{}` clashes with `{other}` of listener `{name}` (listeners[{j}])", l.address))
                        .fix("use a different port, or merge the two listeners"),
                );
            }
        }
        bound.push((i, addr));
    }

    fn limits(&mut self, path: &str, lim: &ListenerLimits) {
        let zero = |field: &str, what: &str| {
            Diagnostic::at(
                format!("{path}.{field}"),
                format!("{field} is 0, which would refuse every {what}"),
            )
            .fix(format!(
                "remove `{field}` for the default, or set a value above 0"
            ))
        };
        if lim.max_connections == 0 {
            self.push(zero("max_connections", "connection"));
        }
        if lim.header_read_timeout.get().is_zero() {
            self.push(zero("header_read_timeout", "request"));
        }
        if lim.idle_timeout.get().is_zero() {
            self.push(zero("idle_timeout", "keep-alive connection"));
        }
        if lim.max_request_headers_size.bytes() == 0 {
            self.push(zero("max_request_headers_size", "request"));
        }
        if lim.max_request_body_size.bytes() == 0 {
            self.push(zero("max_request_body_size", "request with a body"));
        }
    }

    fn listener_tls(&mut self, path: &str, tls: &ListenerTlsConfig) {
        if tls.certificates.is_empty() {
            self.push(
                Diagnostic::at(
                    format!("{path}.certificates"),
                    "TLS needs at least one certificate",
                )
                .fix("add `- { cert: server.crt, key: server.key }` under `certificates:`"),
            );
        }
        for (i, c) in tls.certificates.iter().enumerate() {
            let cpath = format!("{path}.certificates[{i}]");
            self.file_exists(format!("{cpath}.cert"), &c.cert, "certificate file");
            self.file_exists(format!("{cpath}.key"), &c.key, "private key file");
            if let Some(ocsp) = &c.ocsp {
                self.file_exists(format!("{cpath}.ocsp"), ocsp, "OCSP response file");
            }
            for (j, name) in c.server_names.iter().enumerate() {
                if let Some(p) = host_pattern_problem(name) {
                    self.push(
                        Diagnostic::at(format!("{cpath}.server_names[{j}]"), p)
                            .fix("write a host name like `example.com` or `*.example.com`"),
                    );
                }
            }
        }
        if let Some(ca) = &tls.client_ca {
            self.file_exists(format!("{path}.client_ca"), ca, "client CA file");
        }
        if let Some(v) = &tls.min_version {
            if !TLS_VERSIONS.contains(&v.as_str()) {
                self.push(
                    Diagnostic::at(
                        format!("{path}.min_version"),
                        format!("TLS version `{v}` is not supported"),
                    )
                    .fix("write \"1.2\" or \"1.3\" (quoted, so YAML keeps it a string)"),
                );
            }
        }
    }
}

/// Two listen addresses that cannot both be bound: the same address, or the same port where one
/// is the wildcard of the same family.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}
