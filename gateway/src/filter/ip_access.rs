//! `ip-access`: allow or deny requests by the client's address (the TCP peer) against CIDR lists.
//!
//! Deny is checked first, then allow: an address in `deny` is refused even if `allow` also covers
//! it, and when `allow` is not empty only addresses in it pass. IPv4-mapped IPv6 peers
//! (`::ffff:a.b.c.d`, as seen on dual-stack listeners) are matched as the IPv4 address they carry.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;

use super::registry::{parse_config, BuildContext};
use super::{FilterCx, Flow, HttpFilter, LocalResponse};

/// Registered name.
pub const NAME: &str = "ip-access";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default = "default_status")]
    status: u16,
}

fn default_status() -> u16 {
    403
}

/// A set of addresses: sorted, disjoint, merged inclusive ranges per family, searched by bisection.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Parse CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
    ///
    /// # Errors
    /// The first entry that is neither, with the fix.
    pub fn parse<S: AsRef<str>>(entries: &[S], what: &str) -> Result<IpSet, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let e = e.as_ref().trim();
            let net = e
                .parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{what}[{i}]: `{e}` is not a CIDR or address; write e.g. `10.0.0.0/8`, `192.0.2.1` or `2001:db8::/32`")
                })?;
            match net {
                IpNet::V4(n) => v4.push(v4_range(n)),
                IpNet::V6(n) => {
                    v6.push(v6_range(n));
                    // A rule inside ::ffff:0:0/96 is about IPv4 peers, which are matched as IPv4.
                    if let Some(r) = mapped_v4_range(n) {
                        v4.push(r);
                    }
                }
            }
        }
        Ok(IpSet {
            v4: merge(v4),
            v6: merge(v6),
        })
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Whether the set has no address.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

fn v4_range(n: Ipv4Net) -> (u32, u32) {
    (u32::from(n.network()), u32::from(n.broadcast()))
}

fn v6_range(n: Ipv6Net) -> (u128, u128) {
    (u128::from(n.network()), u128::from(n.broadcast()))
}

fn mapped_v4_range(n: Ipv6Net) -> Option<(u32, u32)> {
    const MAPPED: u128 = 0xffff_0000_0000;
    let (lo, hi) = v6_range(n);
    let lo = lo.max(MAPPED);
    let hi = hi.min(MAPPED | 0xffff_ffff);
    // Both ends fit in 32 bits once the ::ffff:0:0 prefix is taken off.
    (lo <= hi).then(|| ((lo - MAPPED) as u32, (hi - MAPPED) as u32))
}

/// Sort and merge overlapping or adjacent ranges.
fn merge<T: Ord + Copy + num::Successor>(mut v: Vec<(T, T)>) -> Vec<(T, T)> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if last.1.succ().is_none_or(|next| lo <= next) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && x <= ranges[i - 1].1
}

mod num {
    /// The next integer, if any.
    pub trait Successor: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn succ(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn succ(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

/// The built filter.
pub struct IpAccess {
    allow: IpSet,
    deny: IpSet,
    status: StatusCode,
}

/// Factory registered as `ip-access`.
///
/// # Errors
/// Unknown keys, an entry that is not a CIDR or address, empty lists, a status that is not 4xx/5xx.
pub fn factory(
    config: Option<&serde_json::Value>,
    _cx: &BuildContext<'_>,
) -> Result<Arc<dyn HttpFilter>, String> {
    let c: Config = parse_config(config)?;
    let allow = IpSet::parse(&c.allow, "allow")?;
    let deny = IpSet::parse(&c.deny, "deny")?;
    if allow.is_empty() && deny.is_empty() {
        return Err(
            "ip-access needs `allow` or `deny` (or both), e.g. `deny: [\"192.0.2.0/24\"]`"
                .to_string(),
        );
    }
    let status = StatusCode::from_u16(c.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| {
            format!(
                "status must be a 4xx or 5xx status (got {}); 403 is usual",
                c.status
            )
        })?;
    Ok(Arc::new(IpAccess {
        allow,
        deny,
        status,
    }))
}

impl IpAccess {
    /// Deny first, then allow (when an allow list is given).
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

impl HttpFilter for IpAccess {
    fn name(&self) -> &str {
        NAME
    }

    fn on_request_headers(&self, cx: &mut FilterCx<'_>) -> Flow {
        if self.permits(cx.ex.info.client_addr.ip()) {
            Flow::Continue
        } else {
            Flow::respond(
                LocalResponse::new(self.status, "ip_denied")
                    .with_body("forbidden\n")
                    .with_header(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain"),
                    ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::test_support::{build, get, is_continue, local};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_merge_and_match() {
        let s = IpSet::parse(
            &[
                "10.0.0.0/24",
                "10.0.1.0/24",
                "10.0.0.128/25",
                "192.0.2.7",
                "2001:db8::/32",
            ],
            "allow",
        )
        .unwrap();
        assert_eq!(
            s.v4,
            vec![(0x0a00_0000, 0x0a00_01ff), (0xc000_0207, 0xc000_0207)]
        );
        assert!(s.contains(ip("10.0.1.255")));
        assert!(!s.contains(ip("10.0.2.0")));
        assert!(!s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        // Mapped peers match IPv4 rules.
        assert!(s.contains(ip("::ffff:10.0.0.9")));
        assert!(!s.contains(ip("::ffff:11.0.0.9")));
    }

    #[test]
    fn whole_space_and_mapped_rules() {
        let s = IpSet::parse(&["0.0.0.0/0", "::/0"], "deny").unwrap();
        assert!(s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("ffff::1")));
        let s = IpSet::parse(&["::ffff:192.0.2.0/120"], "deny").unwrap();
        assert!(s.contains(ip("192.0.2.200")));
        assert!(s.contains(ip("::ffff:192.0.2.200")));
        assert!(!s.contains(ip("192.0.3.1")));
    }

    #[test]
    fn deny_wins_then_allow_restricts() {
        let f = build(
            factory,
            "{allow: [10.0.0.0/8, '2001:db8::/32'], deny: [10.1.0.0/16], status: 404}",
        )
        .unwrap();
        assert!(is_continue(
            &f.on_request_headers(&mut get("10.2.3.4:1").cx(0))
        ));
        assert!(is_continue(
            &f.on_request_headers(&mut get("[::ffff:10.2.3.4]:1").cx(0))
        ));
        assert!(is_continue(
            &f.on_request_headers(&mut get("[2001:db8::5]:1").cx(0))
        ));
        let r = local(f.on_request_headers(&mut get("10.1.2.3:1").cx(0)));
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.details, "ip_denied");
        local(f.on_request_headers(&mut get("[::ffff:10.1.2.3]:1").cx(0)));
        local(f.on_request_headers(&mut get("192.0.2.1:1").cx(0)));
        local(f.on_request_headers(&mut get("[2001:db9::5]:1").cx(0)));
    }

    #[test]
    fn deny_only_lets_the_rest_through() {
        let f = build(factory, "deny: [192.0.2.0/24]").unwrap();
        let r = local(f.on_request_headers(&mut get("192.0.2.1:1").cx(0)));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(is_continue(
            &f.on_request_headers(&mut get("198.51.100.1:1").cx(0))
        ));
        assert!(is_continue(
            &f.on_request_headers(&mut get("[::1]:1").cx(0))
        ));
    }

    #[test]
    fn bad_configs_say_how_to_fix() {
        let err = |y: &str| build(factory, y).err().unwrap();
        assert!(err("allow: [10.0.0.0/33]").contains("allow[0]: `10.0.0.0/33` is not a CIDR"));
        assert!(err("deny: [10.0.0.0/8, nope]").contains("deny[1]: `nope`"));
        assert!(err("{}").contains("needs `allow` or `deny`"));
        assert!(err("{deny: [10.0.0.0/8], status: 302}").contains("4xx or 5xx"));
        assert!(err("{denied: []}").contains("unknown field `denied`"));
    }
}
