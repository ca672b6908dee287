//! Shared by the XDP tests: loading the program (or skipping loudly), and packet builders.
#![allow(dead_code)]

pub mod bare;
pub mod netns;

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use sluice::config::model::XdpConfig;
use sluice::xdp::Xdp;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// True when XDP tests must run: the object is embedded, or SLUICE_REQUIRE_BPF=1 (then its
/// absence fails the test instead of skipping it).
pub fn xdp_available(test: &str) -> bool {
    let required = std::env::var("SLUICE_REQUIRE_BPF").is_ok_and(|v| v == "1");
    if sluice::xdp::built_with_object() {
        return true;
    }
    assert!(
        !required,
        "{test}: SLUICE_REQUIRE_BPF=1 but the gateway was built without the eBPF object (run scripts/build-bpf.sh)"
    );
    // Written to the process's stderr directly: the test harness captures eprintln! output of
    // passing tests, and a skip must be visible.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: built without the eBPF object (run scripts/build-bpf.sh; SLUICE_REQUIRE_BPF=1 makes this a failure)"
    );
    false
}

pub fn config(yaml: &str) -> XdpConfig {
    serde_yaml::from_str(yaml).expect("test config parses")
}

/// Load the program with `yaml` (an `xdp:` section body), detached; None when skipped.
pub fn load(test: &str, yaml: &str) -> Option<Arc<Xdp>> {
    load_in(test, yaml, Path::new("."))
}

pub fn load_in(test: &str, yaml: &str, base: &Path) -> Option<Arc<Xdp>> {
    if !xdp_available(test) {
        return None;
    }
    match Xdp::load_detached(&config(yaml), base) {
        Ok(x) => Some(x),
        Err(e) => panic!("{test}: loading the XDP program failed (root needed): {e}"),
    }
}

pub fn run(xdp: &Xdp, pkt: &[u8]) -> u32 {
    xdp.test_run(pkt, 1).expect("test run").0
}

pub fn count(xdp: &Xdp, verdict: &str, reason: &str) -> u64 {
    xdp.counters()
        .iter()
        .find(|(v, r, _, _)| *v == verdict && *r == reason)
        .map(|c| c.2)
        .unwrap_or(0)
}

// ---- packet builders ----

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

pub fn eth(ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

pub fn vlan(inner: u16) -> Vec<u8> {
    let mut p = eth(0x8100);
    p.extend_from_slice(&[0x00, 0x0a]);
    p.extend_from_slice(&inner.to_be_bytes());
    p
}

pub fn l4(proto: u8, dport: u16, flags: u8) -> Vec<u8> {
    match proto {
        TCP => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&40000u16.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = flags;
            t
        }
        UDP => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&40000u16.to_be_bytes());
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&8u16.to_be_bytes());
            u
        }
        _ => vec![0u8; 8],
    }
}

/// IPv4 header with `options` (multiple of 4 bytes) and fragment offset (8-byte units).
pub fn ipv4_hdr(
    src: Ipv4Addr,
    proto: u8,
    options: &[u8],
    frag_offset: u16,
    payload: usize,
) -> Vec<u8> {
    let ihl = (20 + options.len()) / 4;
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | ihl as u8;
    h[2..4].copy_from_slice(&((ihl * 4 + payload) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&frag_offset.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&[198, 18, 0, 1]);
    h.extend_from_slice(options);
    h
}

pub fn v4(src: &str, proto: u8, dport: u16, flags: u8) -> Vec<u8> {
    let src: Ipv4Addr = src.parse().expect("v4 literal");
    let l4 = l4(proto, dport, flags);
    let mut p = eth(0x0800);
    p.extend(ipv4_hdr(src, proto, &[], 0, l4.len()));
    p.extend(l4);
    p
}

pub fn ipv6_hdr(src: Ipv6Addr, next: u8, payload: usize) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(
        &"2001:db8:ffff::1"
            .parse::<Ipv6Addr>()
            .expect("literal")
            .octets(),
    );
    h
}

/// An IPv6 packet with extension headers `exts` (each: (type, body incl. the 2-byte
/// next/len prefix filled in here)) then L4.
pub fn v6_with(src: &str, exts: &[(u8, usize)], proto: u8, dport: u16, flags: u8) -> Vec<u8> {
    let src: Ipv6Addr = src.parse().expect("v6 literal");
    let mut chain = Vec::new();
    for (i, (_kind, len)) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map(|e| e.0).unwrap_or(proto);
        let mut h = vec![0u8; *len];
        h[0] = next;
        h[1] = (len / 8 - 1) as u8;
        chain.extend(h);
    }
    let l4 = l4(proto, dport, flags);
    let first = exts.first().map(|e| e.0).unwrap_or(proto);
    let mut p = eth(0x86dd);
    p.extend(ipv6_hdr(src, first, chain.len() + l4.len()));
    p.extend(chain);
    p.extend(l4);
    p
}

pub fn v6(src: &str, proto: u8, dport: u16, flags: u8) -> Vec<u8> {
    v6_with(src, &[], proto, dport, flags)
}
