//! Clusters: names, endpoints and their weights, load balancing and hashing, upstream TLS, pools, health checks.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{header_name_problem, Checker};
use crate::config::diagnostics::Diagnostic;
use crate::config::model::{
    ClusterConfig, HealthCheckConfig, LoadBalancing, DEFAULT_ENDPOINT_WEIGHT, MAX_ENDPOINT_WEIGHT,
    MIN_ENDPOINT_WEIGHT,
};

/// More idle connections than this per endpoint is a typo (each holds a socket and buffers).
const MAX_POOL_IDLE: u32 = 100_000;

impl Checker<'_> {
    pub(super) fn clusters(&mut self) {
        let file = self.file;
        self.unique_names(
            "clusters",
            "cluster",
            file.clusters.iter().map(|c| c.name.as_str()),
        );
        for (i, c) in file.clusters.iter().enumerate() {
            self.cluster(&format!("clusters[{i}]"), c);
        }
    }

    fn cluster(&mut self, path: &str, c: &ClusterConfig) {
        if c.endpoints.is_empty() {
            self.push(
                Diagnostic::at(
                    format!("{path}.endpoints"),
                    format!("cluster `{}` has no endpoints", c.name),
                )
                .fix("list at least one `host:port`, like `127.0.0.1:9000`"),
            );
        }
        for (i, e) in c.endpoints.iter().enumerate() {
            let at = if e.weight == DEFAULT_ENDPOINT_WEIGHT {
                format!("{path}.endpoints[{i}]")
            } else {
                format!("{path}.endpoints[{i}].address")
            };
            if let Err((problem, fix)) = check_endpoint(&e.address) {
                self.push(Diagnostic::at(at, problem).fix(fix));
            }
            if !(MIN_ENDPOINT_WEIGHT..=MAX_ENDPOINT_WEIGHT).contains(&e.weight) {
                self.push(
                    Diagnostic::at(
                        format!("{path}.endpoints[{i}].weight"),
                        format!("endpoint weight {} is out of range", e.weight),
                    )
                    .fix(format!(
                        "use a weight from {MIN_ENDPOINT_WEIGHT} to {MAX_ENDPOINT_WEIGHT} (relative to the other endpoints; the default is {DEFAULT_ENDPOINT_WEIGHT}), or remove the endpoint"
                    )),
                );
            }
        }
        let ring = c.load_balancing == LoadBalancing::RingHash;
        // `hash_key` without ring_hash is allowed (CONFIG.md's own example writes it with the
        // default balancer): it is simply not used until the cluster switches to ring_hash.
        if c.hash_key.is_none() && ring {
            self.push(
                Diagnostic::at(format!("{path}.load_balancing"), "ring_hash needs a `hash_key`")
                    .fix("add `hash_key: { header: x-user }` (the header whose value picks the endpoint)"),
            );
        }
        if let Some(p) = c
            .hash_key
            .as_ref()
            .and_then(|h| header_name_problem(&h.header))
        {
            self.push(
                Diagnostic::at(format!("{path}.hash_key.header"), p)
                    .fix("header names are tokens like `x-user`"),
            );
        }
        if let Some(tls) = &c.tls {
            if let Some(ca) = &tls.ca {
                self.file_exists(format!("{path}.tls.ca"), ca, "CA file");
            }
            if tls
                .server_name
                .as_deref()
                .is_some_and(|s| s.trim().is_empty())
            {
                self.push(
                    Diagnostic::at(format!("{path}.tls.server_name"), "server_name is empty")
                        .fix("write the name the upstream's certificate is issued for, or remove `server_name`"),
                );
            }
        }
        for (key, value) in [
            ("connect_timeout", c.connect_timeout),
            ("dns_refresh", c.dns_refresh),
        ] {
            if value.is_some_and(|d| d.get().is_zero()) {
                self.push(
                    Diagnostic::at(format!("{path}.{key}"), format!("{key} is 0")).fix(format!(
                        "remove `{key}` for the default, or set a duration like `1s`"
                    )),
                );
            }
        }
        if c.pool.max_idle_per_endpoint > MAX_POOL_IDLE {
            self.push(
                Diagnostic::at(
                    format!("{path}.pool.max_idle_per_endpoint"),
                    format!(
                        "{} idle connections per endpoint is too many",
                        c.pool.max_idle_per_endpoint
                    ),
                )
                .fix(format!("use at most {MAX_POOL_IDLE} (the default is 64)")),
            );
        }
        if c.pool.max_idle_per_endpoint > 0 && c.pool.idle_timeout.get().is_zero() {
            self.push(
                Diagnostic::at(
                    format!("{path}.pool.idle_timeout"),
                    "pool idle_timeout is 0, so no connection is ever reused",
                )
                .fix("set a duration like `60s`, or `max_idle_per_endpoint: 0` to disable pooling"),
            );
        }
        if let Some(hc) = &c.health_check {
            self.health_check(&format!("{path}.health_check"), hc);
        }
    }

    fn health_check(&mut self, path: &str, hc: &HealthCheckConfig) {
        if !hc.path.starts_with('/') {
            self.push(
                Diagnostic::at(
                    format!("{path}.path"),
                    format!("health check path `{}` does not start with `/`", hc.path),
                )
                .fix(format!("write `/{}`", hc.path)),
            );
        }
        for (key, value) in [
            ("unhealthy_threshold", hc.unhealthy_threshold),
            ("healthy_threshold", hc.healthy_threshold),
        ] {
            if value == 0 {
                self.push(
                    Diagnostic::at(format!("{path}.{key}"), format!("{key} is 0"))
                        .fix("set a number of consecutive checks, at least 1"),
                );
            }
        }
        if hc.interval.get().is_zero() {
            self.push(
                Diagnostic::at(format!("{path}.interval"), "health check interval is 0")
                    .fix("set a duration like `2s`"),
            );
        }
        if hc.timeout.get().is_zero() {
            self.push(
                Diagnostic::at(format!("{path}.timeout"), "health check timeout is 0")
                    .fix("set a duration like `1s`"),
            );
        } else if hc.timeout > hc.interval {
            self.push(
                Diagnostic::at(
                    format!("{path}.timeout"),
                    format!(
                        "health check timeout {} is longer than its interval {}",
                        hc.timeout, hc.interval
                    ),
                )
                .fix("make the timeout at most the interval, so checks do not overlap"),
            );
        }
    }
}

/// `host:port` (host a name or IPv4) or `[ipv6]:port`; Err is (problem, fix).
fn check_endpoint(e: &str) -> Result<(), (String, String)> {
    if e.contains("://") {
        return Err((
            format!("endpoint `{e}` has a scheme"),
            "write only `host:port`; set `protocol:` and `tls:` on the cluster instead".to_string(),
        ));
    }
    let port = if let Some(rest) = e.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err((
                format!("endpoint `{e}` has no closing `]`"),
                "write `[ipv6]:port`".to_string(),
            ));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err((
                format!("`{ip}` in endpoint `{e}` is not an IPv6 address"),
                "write `[ipv6]:port`".to_string(),
            ));
        }
        after.strip_prefix(':').ok_or_else(|| {
            (
                format!("endpoint `{e}` has no port"),
                format!("write `{e}:PORT`"),
            )
        })?
    } else {
        let Some((host, port)) = e.rsplit_once(':') else {
            return Err((
                format!("endpoint `{e}` has no port"),
                format!("write `{e}:PORT`, like `{e}:80`"),
            ));
        };
        if host.contains(':') {
            return Err((
                format!("IPv6 endpoint `{e}` is not in brackets"),
                format!("write `[{host}]:{port}`"),
            ));
        }
        if let Some(p) = host_problem(host) {
            return Err((
                p,
                "write a host name or IPv4 address, then `:port`".to_string(),
            ));
        }
        port
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err((
            format!("`{port}` in endpoint `{e}` is not a port"),
            "write a port from 1 to 65535".to_string(),
        )),
    }
}

/// Why `host` is neither an IPv4 address nor a DNS name, if it is not.
fn host_problem(host: &str) -> Option<String> {
    if host.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let numeric = labels
        .iter()
        .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()));
    if host.is_empty() || host.len() > 253 || !labels.iter().all(label_ok) || numeric {
        return Some(format!("`{host}` is not a host name or IPv4 address"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for good in [
            "127.0.0.1:9000",
            "backend.internal:9001",
            "[::1]:80",
            "a_b-c:1",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for (bad, needle) in [
            ("127.0.0.1", "no port"),
            ("h:0", "not a port"),
            ("h:70000", "not a port"),
            ("::1:80", "not in brackets"),
            ("[::1]", "no port"),
            ("[zz]:80", "not an IPv6"),
            ("http://a:80", "scheme"),
            ("999.1.1.1:80", "not a host name"),
            ("-a:80", "not a host name"),
        ] {
            let err = check_endpoint(bad).unwrap_err().0;
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
