//! Endpoint targets as the user writes them (`10.0.0.1:80`, `[::1]:80`, `backend.internal:9001`)
//! and the background task that resolves DNS names and re-resolves them every `dns_refresh`.
//!
//! Address literals are known at build time, so a cluster of addresses only is usable at once.
//! Names are resolved asynchronously on the control runtime (`Cluster::start`); a request that
//! arrives before the first resolution finishes waits for it, at most the connect timeout, and
//! then fails with `NoHealthyEndpoint`. A name's IPv4 addresses are used when it has any, else its
//! IPv6 ones (Envoy's `V4_PREFERRED`), so `localhost` means 127.0.0.1 and not also `::1`.
//! A failed re-resolution keeps the name's previous addresses; a failed resolution is retried
//! sooner than `dns_refresh` (every [`FAILED_RETRY`] at most).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::cluster::Cluster;

/// Retry delay after a failed resolution (when shorter than `dns_refresh`).
const FAILED_RETRY: Duration = Duration::from_secs(2);

/// Upper bound for one name's resolution, so one stuck lookup cannot stall the refresh loop.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One entry of a cluster's `endpoints:` list.
pub(crate) enum Target {
    /// An address literal, the entry as written, and its weight.
    Addr(SocketAddr, Arc<str>, u32),
    /// A DNS name and port; `authority` is the entry as written. Every address of the name
    /// gets `weight`.
    Name {
        host: String,
        port: u16,
        authority: Arc<str>,
        weight: u32,
    },
}

/// One address to balance over: where to connect, the entry it came from, its weight.
pub(crate) type WeightedAddr = (SocketAddr, Arc<str>, u32);

impl Target {
    /// Parse `host:port` or an address literal.
    ///
    /// # Errors
    /// A message naming the entry and how to fix it.
    pub fn parse(cluster: &str, s: &str, weight: u32) -> Result<Target, String> {
        let authority: Arc<str> = s.into();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Target::Addr(addr, authority, weight));
        }
        let bad = |why: &str| {
            format!("cluster `{cluster}`: endpoint `{s}` {why}; write `host:port`, e.g. `backend.internal:8080` or `10.0.0.1:8080`")
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("has an invalid port"))?;
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid_host {
            return Err(bad("is not a valid host name or address"));
        }
        Ok(Target::Name {
            host: host.to_string(),
            port,
            authority,
            weight,
        })
    }
}

/// Resolve one name to its preferred-family addresses, sorted and deduplicated.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((host, port));
    let found: Vec<SocketAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
    };
    let any_v4 = found.iter().any(SocketAddr::is_ipv4);
    let mut addrs: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| a.is_ipv4() == any_v4)
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no addresses".to_string());
    }
    Ok(addrs)
}

/// Resolve every name of `targets` now and then every `refresh`, publishing each result to the
/// cluster. Ends when the cluster is dropped (`stop` closes, or the weak reference is dead).
pub(crate) async fn refresh_loop(
    cluster: Weak<Cluster>,
    mut stop: watch::Receiver<()>,
    targets: Arc<[Target]>,
    refresh: Duration,
) {
    // The last good addresses of each target (None: never resolved); literals are fixed.
    let mut last: Vec<Option<Vec<SocketAddr>>> = targets
        .iter()
        .map(|t| match t {
            Target::Addr(a, _, _) => Some(vec![*a]),
            Target::Name { .. } => None,
        })
        .collect();
    loop {
        let mut all_ok = true;
        for (i, target) in targets.iter().enumerate() {
            let Target::Name { host, port, .. } = target else {
                continue;
            };
            match resolve(host, *port).await {
                Ok(addrs) => last[i] = Some(addrs),
                Err(e) => {
                    all_ok = false;
                    let name = cluster.upgrade().map(|c| c.name.clone());
                    tracing::warn!(cluster = name.as_deref(), host = %host, error = %e,
                        "DNS resolution failed; keeping the previous addresses");
                }
            }
        }
        let Some(strong) = cluster.upgrade() else {
            return;
        };
        let resolved = targets.iter().zip(&last).flat_map(|(t, addrs)| {
            let (authority, weight) = match t {
                Target::Addr(_, a, w)
                | Target::Name {
                    authority: a,
                    weight: w,
                    ..
                } => (a, *w),
            };
            addrs
                .iter()
                .flatten()
                .map(move |a| (*a, Arc::clone(authority), weight))
        });
        strong.set_addresses(resolved.collect());
        drop(strong);
        let delay = if all_ok {
            refresh
        } else {
            refresh.min(FAILED_RETRY)
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
