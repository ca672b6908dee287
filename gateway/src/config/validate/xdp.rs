//! The XDP section: interface, allow/deny lists and their files, rate limits, redirect rules.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Checker;
use crate::config::diagnostics::Diagnostic;
use crate::config::model::{XdpConfig, XdpRedirect};

/// Linux interface names are at most 15 bytes (IFNAMSIZ 16 with its NUL).
const MAX_IFNAME: usize = 15;

impl Checker<'_> {
    pub(super) fn xdp(&mut self) {
        let Some(x) = &self.file.xdp else { return };
        self.interface("xdp.interface", &x.interface);
        self.address_list("xdp.allow", &x.allow);
        self.address_list("xdp.deny", &x.deny);
        for (i, f) in x.deny_files.iter().enumerate() {
            self.file_exists(format!("xdp.deny_files[{i}]"), f, "deny list file");
        }
        self.rates(x);
        for (i, r) in x.redirect.iter().enumerate() {
            self.xdp_redirect(&format!("xdp.redirect[{i}]"), r);
        }
        if x.ban_default_ttl.is_some_and(|d| d.get().is_zero()) {
            self.push(
                Diagnostic::at(
                    "xdp.ban_default_ttl",
                    "ban_default_ttl is 0, so bans would expire at once",
                )
                .fix("set a duration like `10m`"),
            );
        }
    }

    fn interface(&mut self, path: &str, name: &str) {
        if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ']) {
            self.push(
                Diagnostic::at(path, format!("`{name}` is not a network interface name")).fix(
                    "write an interface as `ip link` shows it, like `eth0` (at most 15 characters)",
                ),
            );
        }
    }

    fn address_list(&mut self, path: &str, list: &[String]) {
        for (i, entry) in list.iter().enumerate() {
            if entry.parse::<IpNet>().is_err() && entry.parse::<IpAddr>().is_err() {
                self.push(
                    Diagnostic::at(format!("{path}[{i}]"), format!("`{entry}` is not a CIDR or an IP address"))
                        .fix("write a network like `192.0.2.0/24` or `2001:db8::/32`, or one address like `192.0.2.7`"),
                );
            }
        }
    }

    fn rates(&mut self, x: &XdpConfig) {
        let limits = [
            (
                "xdp.rate_limit",
                x.rate_limit
                    .as_ref()
                    .map(|r| ("packets_per_second", r.packets_per_second, r.burst)),
            ),
            (
                "xdp.syn_rate_limit",
                x.syn_rate_limit
                    .as_ref()
                    .map(|r| ("per_second", r.per_second, r.burst)),
            ),
        ];
        for (path, limit) in limits {
            let Some((rate_key, rate, burst)) = limit else {
                continue;
            };
            if rate == 0 {
                self.push(
                    Diagnostic::at(
                        format!("{path}.{rate_key}"),
                        format!("{rate_key} is 0, so every packet would be dropped"),
                    )
                    .fix("set a rate above 0, or remove the rate limit"),
                );
            }
            if burst == Some(0) {
                self.push(
                    Diagnostic::at(
                        format!("{path}.burst"),
                        "burst is 0, so every packet would be dropped",
                    )
                    .fix("remove `burst` (it defaults to the rate) or set it above 0"),
                );
            }
        }
    }

    fn xdp_redirect(&mut self, path: &str, r: &XdpRedirect) {
        let proto = &r.matcher.protocol;
        if proto != "tcp" && proto != "udp" {
            self.push(
                Diagnostic::at(
                    format!("{path}.match.protocol"),
                    format!("protocol `{proto}` cannot be redirected"),
                )
                .fix("write `tcp` or `udp`"),
            );
        }
        if r.matcher.dst_port == Some(0) {
            self.push(
                Diagnostic::at(format!("{path}.match.dst_port"), "dst_port is 0")
                    .fix("write a port from 1 to 65535, or remove it to match every port"),
            );
        }
        match (&r.to_interface, r.tx) {
            (Some(_), true) => self.push(
                Diagnostic::at(path, "redirect has both `to_interface` and `tx: true`")
                    .fix("keep `to_interface` to send out of another interface, or `tx: true` to bounce back out"),
            ),
            (None, false) => self.push(
                Diagnostic::at(path, "redirect has no target")
                    .fix("add `to_interface: eth1`, or `tx: true` to send packets back out of the same interface"),
            ),
            (Some(ifname), false) => self.interface(&format!("{path}.to_interface"), ifname),
            (None, true) => {}
        }
    }
}
