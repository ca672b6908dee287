//! The XDP program on crafted packets through BPF_PROG_TEST_RUN (aya's `TestRun`): every rule,
//! and malformed input (truncated headers, IPv6 extension chains, VLAN, fragments, garbage).
//! Needs root. Skipped with a message when the gateway was built without the eBPF object;
//! SLUICE_REQUIRE_BPF=1 turns the skip into a failure.

mod xdp_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sluice::services::BanSink;
use xdp_support::*;

const BASE: &str = "interface: lo\n";

#[test]
fn plain_traffic_passes_and_is_counted() {
    let Some(xdp) = load("plain_traffic_passes_and_is_counted", BASE) else {
        return;
    };
    assert_eq!(run(&xdp, &v4("198.18.0.10", TCP, 80, SYN)), XDP_PASS);
    assert_eq!(run(&xdp, &v6("2001:db8::10", UDP, 53, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &eth(0x0806)), XDP_PASS);
    assert_eq!(count(&xdp, "pass", "default"), 2);
    assert_eq!(count(&xdp, "pass", "not_ip"), 1);
    let bytes: u64 = xdp.counters().iter().map(|c| c.3).sum();
    assert_eq!(bytes, (14 + 20 + 20) + (14 + 40 + 8) + 14);
    let text = xdp.render_prometheus();
    assert!(
        text.contains("sluice_xdp_packets_total{verdict=\"pass\",reason=\"default\"} 2"),
        "{text}"
    );
}

#[test]
fn allow_beats_deny_and_prefixes_and_exact_addresses_drop() {
    let yaml = "interface: lo
allow: [\"198.18.1.0/24\", \"2001:db8:1::/48\"]
deny: [\"198.18.0.0/15\", \"198.19.5.5\", \"2001:db8::/32\", \"2001:db9::7\"]
";
    let Some(xdp) = load("allow_beats_deny", yaml) else {
        return;
    };
    assert_eq!(run(&xdp, &v4("198.18.1.5", TCP, 80, SYN)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.2.5", TCP, 80, SYN)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.19.5.5", UDP, 53, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("203.0.113.1", UDP, 53, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v6("2001:db8:1::9", TCP, 443, SYN)), XDP_PASS);
    assert_eq!(run(&xdp, &v6("2001:db8:2::9", TCP, 443, SYN)), XDP_DROP);
    assert_eq!(run(&xdp, &v6("2001:db9::7", TCP, 443, SYN)), XDP_DROP);
    assert_eq!(run(&xdp, &v6("2001:db9::8", TCP, 443, SYN)), XDP_PASS);
    assert_eq!(count(&xdp, "pass", "allow"), 2);
    // 198.19.5.5 lies in 198.18.0.0/15 too: the prefix matches first.
    assert_eq!(count(&xdp, "drop", "deny_prefix"), 3);
    assert_eq!(count(&xdp, "drop", "deny_exact"), 1);
}

#[test]
fn bans_drop_until_they_expire_and_can_be_lifted() {
    let Some(xdp) = load("bans_drop_until_they_expire", BASE) else {
        return;
    };
    let a: IpAddr = "198.18.7.7".parse().unwrap();
    let b: IpAddr = "2001:db8::77".parse().unwrap();
    assert!(BanSink::ban(
        &*xdp,
        a,
        Some(Duration::from_millis(300)),
        "test"
    ));
    assert!(BanSink::ban(&*xdp, b, None, "test"));
    assert_eq!(run(&xdp, &v4("198.18.7.7", TCP, 80, ACK)), XDP_DROP);
    assert_eq!(run(&xdp, &v6("2001:db8::77", UDP, 53, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.7.8", TCP, 80, ACK)), XDP_PASS);
    let bans = xdp.bans();
    assert_eq!(bans.len(), 2, "{bans:?}");
    assert!(
        bans.iter().any(|e| e.addr == b && e.expires_in_secs > 500),
        "{bans:?}"
    );
    // Wait past the short ban's expiry (no timing assertion: we only wait long enough).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(run(&xdp, &v4("198.18.7.7", TCP, 80, ACK)), XDP_PASS);
    assert!(xdp.remove_ban(b));
    assert!(!xdp.remove_ban(b));
    assert_eq!(run(&xdp, &v6("2001:db8::77", UDP, 53, 0)), XDP_PASS);
    assert_eq!(count(&xdp, "drop", "ban"), 2);
}

#[test]
fn long_v4_prefixes_and_v6_prefixes_are_judged_by_family() {
    let yaml = "interface: lo
deny: [\"192.0.2.128/25\", \"198.18.40.0/24\", \"2001:db8::/32\", \"::/0\"]
";
    let Some(xdp) = load("long_v4_prefixes_and_v6_prefixes", yaml) else {
        return;
    };
    // /25 lives in the IPv4 trie, /24 in the bitmap.
    assert_eq!(run(&xdp, &v4("192.0.2.129", UDP, 53, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("192.0.2.127", UDP, 53, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.40.77", UDP, 53, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.41.77", UDP, 53, 0)), XDP_PASS);
    // `::/0` denies every IPv6 source but no IPv4 one.
    assert_eq!(run(&xdp, &v6("2001:db9::1", UDP, 53, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("203.0.113.9", UDP, 53, 0)), XDP_PASS);
    // An IPv4-mapped IPv6 source is judged by the IPv4 rules.
    assert_eq!(run(&xdp, &v6("::ffff:192.0.2.130", UDP, 53, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v6("::ffff:203.0.113.9", UDP, 53, 0)), XDP_PASS);
    assert_eq!(count(&xdp, "drop", "deny_prefix"), 4);
}

#[test]
fn bans_and_exact_deny_entries_share_one_hash_without_disturbing_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deny.txt");
    std::fs::write(&file, "198.18.30.1\n198.18.30.3\n").unwrap();
    let yaml = "interface: lo\ndeny_files: [deny.txt]\n";
    let Some(xdp) = load_in("bans_and_exact_deny_entries", yaml, dir.path()) else {
        return;
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let hour = Some(Duration::from_secs(3600));
    assert!(BanSink::ban(&*xdp, ip("198.18.30.1"), hour, "test"));
    assert!(BanSink::ban(&*xdp, ip("198.18.30.2"), hour, "test"));
    // Denied and banned: the deny entry answers first.
    assert_eq!(run(&xdp, &v4("198.18.30.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(count(&xdp, "drop", "deny_exact"), 1);
    // The deny entry goes (twice, so both buffers lose it); the ban stays.
    std::fs::write(&file, "198.18.30.3\n").unwrap();
    xdp.reload_deny().unwrap();
    xdp.reload_deny().unwrap();
    assert_eq!(run(&xdp, &v4("198.18.30.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(count(&xdp, "drop", "ban"), 1);
    assert!(xdp.remove_ban(ip("198.18.30.1")));
    assert_eq!(run(&xdp, &v4("198.18.30.1", UDP, 1, 0)), XDP_PASS);
    // Lifting a ban on a denied address keeps the deny entry.
    assert!(BanSink::ban(&*xdp, ip("198.18.30.3"), hour, "test"));
    assert!(xdp.remove_ban(ip("198.18.30.3")));
    assert_eq!(run(&xdp, &v4("198.18.30.3", UDP, 1, 0)), XDP_DROP);
    assert_eq!(count(&xdp, "drop", "deny_exact"), 2);
    assert_eq!(run(&xdp, &v4("198.18.30.2", UDP, 1, 0)), XDP_DROP);
    assert_eq!(xdp.bans().len(), 1);
}

#[test]
fn a_full_ban_table_refuses_new_bans_and_evicts_nothing() {
    let yaml = "interface: lo\ndeny: [\"198.18.50.1\"]\n";
    let Some(xdp) = load("a_full_ban_table", yaml) else {
        return;
    };
    let max = sluice_xdp_common::BANS_MAX;
    let addr = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x1e00_0000 + i));
    // One short ban, the rest long.
    assert!(BanSink::ban(
        &*xdp,
        addr(0),
        Some(Duration::from_millis(1)),
        "test"
    ));
    for i in 1..max {
        assert!(
            BanSink::ban(&*xdp, addr(i), Some(Duration::from_secs(3600)), "test"),
            "ban {i} of {max} refused"
        );
    }
    // Full: the expired one is swept to make room, then the table is full of live bans.
    std::thread::sleep(Duration::from_millis(20));
    assert!(BanSink::ban(&*xdp, addr(max), None, "test"));
    assert!(!BanSink::ban(&*xdp, addr(max + 1), None, "test"));
    assert!(matches!(
        xdp.add_ban(addr(max + 1), None),
        Err(sluice::xdp::XdpError::BansFull(_))
    ));
    // Re-banning a held address still works (it takes no new slot).
    assert!(BanSink::ban(&*xdp, addr(7), None, "test"));
    // No ban was evicted and the deny entry is intact.
    for i in [1, 7, max / 2, max - 1, max] {
        let a = std::net::Ipv4Addr::from(0x1e00_0000 + i).to_string();
        assert_eq!(run(&xdp, &v4(&a, UDP, 1, 0)), XDP_DROP, "{a}");
    }
    assert_eq!(run(&xdp, &v4("198.18.50.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(count(&xdp, "drop", "deny_exact"), 1);
    // Deny entries have their own room: a new exact deny set applies with the bans full.
    xdp.apply_config(
        &config("interface: lo\ndeny: [\"198.18.50.1\", \"198.18.50.2\"]\n"),
        std::path::Path::new("."),
    )
    .unwrap();
    assert_eq!(run(&xdp, &v4("198.18.50.2", UDP, 1, 0)), XDP_DROP);
    assert_eq!(xdp.bans().len(), max as usize);
}

#[test]
fn per_source_rate_limit_drops_over_budget_only_for_that_source() {
    let yaml = "interface: lo\nrate_limit: { packets_per_second: 1, burst: 5 }\n";
    let Some(xdp) = load("per_source_rate_limit", yaml) else {
        return;
    };
    let verdicts: Vec<u32> = (0..20)
        .map(|_| run(&xdp, &v4("198.18.9.9", UDP, 53, 0)))
        .collect();
    let passed = verdicts.iter().filter(|v| **v == XDP_PASS).count();
    // The burst admits 5; at 1/s, at most a few more can have refilled however slow the machine.
    assert!(passed >= 5, "{verdicts:?}");
    assert!(passed < 20, "{verdicts:?}");
    assert_eq!(verdicts[..5], [XDP_PASS; 5]);
    assert_eq!(run(&xdp, &v4("198.18.9.10", UDP, 53, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v6("2001:db8::9", UDP, 53, 0)), XDP_PASS);
    assert_eq!(count(&xdp, "drop", "rate_limit"), (20 - passed) as u64);
}

#[test]
fn syn_rate_limit_counts_only_syns() {
    let yaml = "interface: lo\nsyn_rate_limit: { per_second: 1, burst: 2 }\n";
    let Some(xdp) = load("syn_rate_limit", yaml) else {
        return;
    };
    let syns: Vec<u32> = (0..6)
        .map(|_| run(&xdp, &v4("198.18.4.4", TCP, 443, SYN)))
        .collect();
    assert_eq!(syns[..2], [XDP_PASS; 2]);
    assert!(syns.contains(&XDP_DROP), "{syns:?}");
    for _ in 0..10 {
        assert_eq!(run(&xdp, &v4("198.18.4.4", TCP, 443, ACK)), XDP_PASS);
        assert_eq!(run(&xdp, &v4("198.18.4.4", TCP, 443, SYN | ACK)), XDP_PASS);
    }
    assert_eq!(run(&xdp, &v4("198.18.4.5", TCP, 443, SYN)), XDP_PASS);
    assert!(count(&xdp, "drop", "syn_rate_limit") >= 1);
}

#[test]
fn redirect_rules_match_protocol_and_port() {
    let yaml = "interface: lo
redirect:
  - { match: { protocol: udp, dst_port: 53 }, tx: true }
  - { match: { protocol: tcp, dst_port: 8443 }, to_interface: lo }
  - { match: { protocol: udp }, to_interface: lo }
";
    let Some(xdp) = load("redirect_rules", yaml) else {
        return;
    };
    assert_eq!(run(&xdp, &v4("198.18.0.2", UDP, 53, 0)), XDP_TX);
    assert_eq!(run(&xdp, &v6("2001:db8::2", UDP, 53, 0)), XDP_TX);
    assert_eq!(run(&xdp, &v4("198.18.0.2", TCP, 8443, SYN)), XDP_REDIRECT);
    assert_eq!(run(&xdp, &v4("198.18.0.2", TCP, 8444, SYN)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.0.2", UDP, 5353, 0)), XDP_REDIRECT);
    assert_eq!(count(&xdp, "tx", "tx"), 2);
    assert_eq!(count(&xdp, "redirect", "redirect"), 2);
    // The any-port rules follow the config: UDP's goes, TCP gets one.
    let next = "interface: lo
redirect:
  - { match: { protocol: udp, dst_port: 53 }, tx: true }
  - { match: { protocol: tcp }, tx: true }
";
    xdp.apply_config(&config(next), std::path::Path::new("."))
        .unwrap();
    assert_eq!(run(&xdp, &v4("198.18.0.2", UDP, 5353, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.0.2", UDP, 53, 0)), XDP_TX);
    assert_eq!(run(&xdp, &v4("198.18.0.2", TCP, 8444, SYN)), XDP_TX);
}

#[test]
fn ipv4_options_vlan_and_fragments_are_parsed() {
    let yaml = "interface: lo
deny: [\"198.18.66.0/24\"]
redirect: [{ match: { protocol: tcp, dst_port: 7 }, tx: true }]
";
    let Some(xdp) = load("ipv4_options_vlan_fragments", yaml) else {
        return;
    };
    // IPv4 with 8 bytes of options (NOPs + end): the port behind them is still found.
    let src = "198.18.0.3".parse().unwrap();
    let tcp = l4(TCP, 7, SYN);
    let mut p = eth(0x0800);
    p.extend(ipv4_hdr(src, TCP, &[1, 1, 1, 1, 1, 1, 1, 0], 0, tcp.len()));
    p.extend(&tcp);
    assert_eq!(run(&xdp, &p), XDP_TX);
    // VLAN-tagged: parsed through the tag.
    let mut p = vlan(0x0800);
    p.extend(ipv4_hdr(
        "198.18.66.1".parse().unwrap(),
        TCP,
        &[],
        0,
        tcp.len(),
    ));
    p.extend(&tcp);
    assert_eq!(run(&xdp, &p), XDP_DROP);
    let mut p = vlan(0x0800);
    p.extend(ipv4_hdr(src, TCP, &[], 0, tcp.len()));
    p.extend(&tcp);
    assert_eq!(run(&xdp, &p), XDP_TX);
    // A non-first fragment has no ports: address rules only.
    let mut p = eth(0x0800);
    p.extend(ipv4_hdr(src, TCP, &[], 100, 64));
    p.extend([0u8; 64]);
    assert_eq!(run(&xdp, &p), XDP_PASS);
    let mut p = eth(0x0800);
    p.extend(ipv4_hdr("198.18.66.9".parse().unwrap(), TCP, &[], 100, 64));
    p.extend([0u8; 64]);
    assert_eq!(run(&xdp, &p), XDP_DROP);
}

#[test]
fn ipv6_extension_chains_are_walked_within_bounds() {
    let yaml = "interface: lo
deny: [\"2001:db8:66::/48\"]
redirect: [{ match: { protocol: udp, dst_port: 53 }, tx: true }]
";
    let Some(xdp) = load("ipv6_extension_chains", yaml) else {
        return;
    };
    // hop-by-hop, routing, destination options, fragment (first): UDP 53 still found.
    let chain = [(0u8, 8usize), (43, 16), (60, 8), (44, 8)];
    assert_eq!(
        run(&xdp, &v6_with("2001:db8::3", &chain, UDP, 53, 0)),
        XDP_TX
    );
    assert_eq!(
        run(&xdp, &v6_with("2001:db8:66::3", &chain, UDP, 53, 0)),
        XDP_DROP
    );
    // Longer than the walk bound: no ports, passed as malformed (address rules still apply).
    let long = [(0u8, 8usize); 8];
    assert_eq!(
        run(&xdp, &v6_with("2001:db8::3", &long, UDP, 53, 0)),
        XDP_PASS
    );
    assert_eq!(
        run(&xdp, &v6_with("2001:db8:66::4", &long, UDP, 53, 0)),
        XDP_DROP
    );
    assert!(count(&xdp, "pass", "malformed") >= 1);
    // Non-first fragment: no L4.
    let mut p = v6_with("2001:db8::3", &[(44, 8)], UDP, 53, 0);
    p[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&(100u16 << 3).to_be_bytes());
    assert_eq!(run(&xdp, &p), XDP_PASS);
    // An extension header whose length runs past the packet end.
    let mut p = v6_with("2001:db8::3", &[(0, 8)], UDP, 53, 0);
    p[14 + 40 + 1] = 200;
    assert_eq!(run(&xdp, &p), XDP_PASS);
}

#[test]
fn truncated_and_garbage_packets_are_handled() {
    let yaml = "interface: lo\ndeny: [\"198.18.66.0/24\"]\n";
    let Some(xdp) = load("truncated_and_garbage", yaml) else {
        return;
    };
    // Ethernet only, IPv4 ethertype: truncated IP header.
    assert_eq!(run(&xdp, &eth(0x0800)), XDP_PASS);
    assert_eq!(run(&xdp, &eth(0x86dd)), XDP_PASS);
    assert_eq!(run(&xdp, &eth(0x8100)), XDP_PASS);
    assert_eq!(count(&xdp, "pass", "malformed"), 3);
    // IHL below 5 and wrong version.
    let mut p = v4("198.18.0.1", TCP, 80, SYN);
    p[14] = 0x43;
    assert_eq!(run(&xdp, &p), XDP_PASS);
    p[14] = 0x65;
    assert_eq!(run(&xdp, &p), XDP_PASS);
    // IHL claims options past the end of the packet.
    let mut p = v4("198.18.0.1", TCP, 80, SYN);
    p[14] = 0x4f;
    p.truncate(14 + 24);
    assert_eq!(run(&xdp, &p), XDP_PASS);
    // Truncated TCP: a denied source is still dropped, others passed as malformed.
    let mut p = v4("198.18.66.2", TCP, 80, SYN);
    p.truncate(14 + 20 + 10);
    assert_eq!(run(&xdp, &p), XDP_DROP);
    let mut p = v4("198.18.0.2", TCP, 80, SYN);
    p.truncate(14 + 20 + 10);
    assert_eq!(run(&xdp, &p), XDP_PASS);
    // Garbage of every length from a fixed-seed generator: never an error, never aborted.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for len in 14..400usize {
        let mut p: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        if len % 3 == 0 {
            p[12..14].copy_from_slice(&[0x08, 0x00]);
        } else if len % 3 == 1 {
            p[12..14].copy_from_slice(&[0x86, 0xdd]);
        }
        let v = run(&xdp, &p);
        assert!(v == XDP_PASS || v == XDP_DROP, "len {len}: {v}");
    }
}

#[test]
fn deny_set_changes_switch_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deny.txt");
    std::fs::write(&file, "198.18.10.0/24\n198.18.11.1\n").unwrap();
    let yaml = "interface: lo\ndeny: [\"198.18.12.0/24\"]\ndeny_files: [deny.txt]\n";
    let Some(xdp) = load_in("deny_set_changes_switch_whole", yaml, dir.path()) else {
        return;
    };
    assert_eq!(run(&xdp, &v4("198.18.10.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.11.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.12.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(xdp.deny_len(), 3);
    std::fs::write(&file, "198.18.13.0/24\n").unwrap();
    assert_eq!(xdp.reload_deny().unwrap(), 2);
    assert_eq!(run(&xdp, &v4("198.18.10.1", UDP, 1, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.11.1", UDP, 1, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.13.1", UDP, 1, 0)), XDP_DROP);
    // Back to the first set: the buffer that held it is brought up to date by a diff.
    std::fs::write(&file, "198.18.10.0/24\n198.18.11.1\n").unwrap();
    xdp.reload_deny().unwrap();
    assert_eq!(run(&xdp, &v4("198.18.10.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.13.1", UDP, 1, 0)), XDP_PASS);
    // A bad line keeps the set in force.
    std::fs::write(&file, "198.18.14.0/24\nnonsense\n").unwrap();
    assert!(xdp.reload_deny().is_err());
    assert_eq!(run(&xdp, &v4("198.18.10.1", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.14.1", UDP, 1, 0)), XDP_PASS);
    // Config reload replaces the config part.
    let cfg = config("interface: lo\ndeny: [\"198.18.15.0/24\"]\n");
    xdp.apply_config(&cfg, dir.path()).unwrap();
    assert_eq!(run(&xdp, &v4("198.18.10.1", UDP, 1, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.15.1", UDP, 1, 0)), XDP_DROP);
}

#[test]
fn deny_files_are_watched() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deny.txt");
    std::fs::write(&file, "198.18.20.0/24\n").unwrap();
    let yaml = "interface: lo\ndeny_files: [deny.txt]\n";
    let Some(xdp) = load_in("deny_files_are_watched", yaml, dir.path()) else {
        return;
    };
    // load_detached does not watch; apply_config (as on reload) starts the watcher.
    xdp.apply_config(&config(yaml), dir.path()).unwrap();
    assert_eq!(run(&xdp, &v4("198.18.21.1", UDP, 1, 0)), XDP_PASS);
    std::fs::write(&file, "198.18.21.0/24\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while run(&xdp, &v4("198.18.21.1", UDP, 1, 0)) != XDP_DROP {
        assert!(
            Instant::now() < deadline,
            "the deny file change was not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(run(&xdp, &v4("198.18.20.1", UDP, 1, 0)), XDP_PASS);
}

#[test]
fn bad_config_is_rejected_with_its_place() {
    let base = std::path::Path::new(".");
    let err = sluice::xdp::validate(&config("interface: lo\ndeny: [\"198.18.0.0/33\"]\n"), base)
        .unwrap_err();
    assert!(err.to_string().contains("xdp.deny[0]"), "{err}");
    let err = sluice::xdp::validate(
        &config("interface: lo\nredirect: [{ match: { protocol: icmp }, tx: true }]\n"),
        base,
    )
    .unwrap_err();
    assert!(err.to_string().contains("xdp.redirect[0]"), "{err}");
    let err = sluice::xdp::validate(
        &config("interface: lo\nrate_limit: { packets_per_second: 0 }\n"),
        base,
    )
    .unwrap_err();
    assert!(err.to_string().contains("xdp.rate_limit"), "{err}");
}

#[test]
fn unavailable_fast_path_is_a_warning_unless_required() {
    if !xdp_available("unavailable_fast_path_is_a_warning_unless_required") {
        return;
    }
    let base = std::path::Path::new(".");
    let missing = config("interface: sluice-nonexistent0\n");
    assert!(sluice::xdp::start(&missing, base).unwrap().is_none());
    let required = config("interface: sluice-nonexistent0\nrequired: true\n");
    let err = sluice::xdp::start(&required, base)
        .err()
        .expect("required: an error");
    assert!(err.is_unavailable());
    assert!(err.to_string().contains("sluice-nonexistent0"), "{err}");
}

#[test]
fn allow_bitmap_and_per_family_tries() {
    let yaml = "interface: lo
allow: [\"198.18.1.0/24\", \"198.18.2.4/32\", \"::/0\"]
deny: [\"198.18.0.0/15\"]
";
    let Some(xdp) = load("allow_bitmap_and_per_family_tries", yaml) else {
        return;
    };
    // Bitmap hit and miss.
    assert_eq!(run(&xdp, &v4("198.18.1.200", TCP, 80, SYN)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.3.200", TCP, 80, SYN)), XDP_DROP);
    // A /32 lives in the IPv4 trie.
    assert_eq!(run(&xdp, &v4("198.18.2.4", TCP, 80, SYN)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.2.5", TCP, 80, SYN)), XDP_DROP);
    // `::/0` allows every IPv6 source and no IPv4 one (mapped sources are IPv4).
    assert_eq!(run(&xdp, &v6("2001:db8::1", UDP, 53, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v6("::ffff:198.18.3.1", UDP, 53, 0)), XDP_DROP);
    assert_eq!(count(&xdp, "pass", "allow"), 3);
    assert_eq!(count(&xdp, "drop", "deny_prefix"), 3);
    // A new allow list replaces the old one in every table.
    let next = "interface: lo\nallow: [\"198.18.3.0/24\"]\ndeny: [\"198.18.0.0/15\"]\n";
    xdp.apply_config(&config(next), std::path::Path::new("."))
        .unwrap();
    assert_eq!(run(&xdp, &v4("198.18.1.200", TCP, 80, SYN)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.2.4", TCP, 80, SYN)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.3.200", TCP, 80, SYN)), XDP_PASS);
    assert_eq!(run(&xdp, &v6("2001:db8::1", UDP, 53, 0)), XDP_PASS);
    xdp.apply_config(&config(BASE), std::path::Path::new("."))
        .unwrap();
    assert_eq!(run(&xdp, &v4("198.18.1.200", TCP, 80, SYN)), XDP_PASS);
    assert_eq!(count(&xdp, "pass", "allow"), 4);
}

#[test]
fn long_v4_prefixes_expand_into_the_exact_table_and_count_as_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deny.txt");
    std::fs::write(&file, "198.18.60.16/28\n198.18.60.17\n").unwrap();
    let yaml = "interface: lo\ndeny_files: [deny.txt]\n";
    let Some(xdp) = load_in("long_v4_prefixes_expand", yaml, dir.path()) else {
        return;
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(BanSink::ban(
        &*xdp,
        ip("198.18.60.18"),
        Some(Duration::from_secs(3600)),
        "test"
    ));
    // Inside the /28: the address entry first, then the ban, then the prefix.
    assert_eq!(run(&xdp, &v4("198.18.60.17", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.60.18", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.60.16", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.60.31", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.60.15", UDP, 1, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.60.32", UDP, 1, 0)), XDP_PASS);
    assert_eq!(count(&xdp, "drop", "deny_exact"), 1);
    assert_eq!(count(&xdp, "drop", "ban"), 1);
    assert_eq!(count(&xdp, "drop", "deny_prefix"), 2);
    // 16 addresses, the listed one among them: 16 keys, the ban shares one.
    assert_eq!(xdp.exact_filter_keys(), 16);
    // The prefix goes (twice, so both buffers lose it); the address and the ban stay.
    std::fs::write(&file, "198.18.60.17\n").unwrap();
    xdp.reload_deny().unwrap();
    xdp.reload_deny().unwrap();
    assert_eq!(run(&xdp, &v4("198.18.60.16", UDP, 1, 0)), XDP_PASS);
    assert_eq!(run(&xdp, &v4("198.18.60.17", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("198.18.60.18", UDP, 1, 0)), XDP_DROP);
    assert_eq!(xdp.exact_filter_keys(), 2);
    assert!(xdp.remove_ban(ip("198.18.60.18")));
    std::fs::write(&file, "").unwrap();
    xdp.reload_deny().unwrap();
    xdp.reload_deny().unwrap();
    assert_eq!(run(&xdp, &v4("198.18.60.17", UDP, 1, 0)), XDP_PASS);
    assert_eq!(xdp.exact_filter_keys(), 0);
}

#[test]
fn a_deny_set_whose_long_prefixes_do_not_fit_is_rejected_whole() {
    // 8192 /25s are 2^20 addresses, the most one deny set may put in the exact table.
    let fits: Vec<String> = (0..8192u32)
        .map(|i| {
            format!(
                "\"{}/25\"",
                std::net::Ipv4Addr::from(0x0b00_0000 + (i << 7))
            )
        })
        .collect();
    let yaml = format!("interface: lo\ndeny: [{}]\n", fits.join(", "));
    let over = yaml.replace("deny: [", "deny: [\"12.0.0.1\", ");
    let err = sluice::xdp::validate(&config(&over), std::path::Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("1048577 exact addresses"), "{err}");
    let Some(xdp) = load("a_deny_set_whose_long_prefixes_do_not_fit", &yaml) else {
        return;
    };
    assert_eq!(run(&xdp, &v4("11.0.255.255", UDP, 1, 0)), XDP_DROP);
    assert!(xdp
        .apply_config(&config(&over), std::path::Path::new("."))
        .is_err());
    assert_eq!(run(&xdp, &v4("11.0.255.255", UDP, 1, 0)), XDP_DROP);
    assert_eq!(run(&xdp, &v4("12.0.0.1", UDP, 1, 0)), XDP_PASS);
}

/// Three sources in one rate-limit set (two slots), found with this load's hash key.
fn colliding(xdp: &sluice::xdp::Xdp) -> [String; 3] {
    let mut by_set: std::collections::HashMap<u32, Vec<String>> = Default::default();
    for i in 0..(1u32 << 17) {
        let a = std::net::Ipv4Addr::from(0xc612_0000 + i);
        let set = xdp.rate_set_of(IpAddr::V4(a)).expect("running");
        let v = by_set.entry(set).or_default();
        v.push(a.to_string());
        if v.len() == 3 {
            return [v[0].clone(), v[1].clone(), v[2].clone()];
        }
    }
    panic!("no three sources share a set among 2^17");
}

#[test]
fn rate_slots_tell_colliding_sources_apart_and_replace_the_least_recent() {
    let yaml = "interface: lo\nrate_limit: { packets_per_second: 1, burst: 3 }\n";
    let Some(xdp) = load("rate_slots_collide", yaml) else {
        return;
    };
    let [a, b, c] = colliding(&xdp);
    let send = |src: &str| run(&xdp, &v4(src, UDP, 53, 0));
    assert_eq!(
        [send(&a), send(&a), send(&a), send(&a)],
        [XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP]
    );
    // B takes the set's other slot: a full bucket of its own, and A's stays empty.
    assert_eq!(send(&b), XDP_PASS);
    assert_eq!(send(&a), XDP_DROP);
    // C replaces the slot refilled least recently (B's): A is still limited.
    assert_eq!(send(&c), XDP_PASS);
    assert_eq!(send(&a), XDP_DROP);
    // B comes back without a slot: it takes C's (now the least recent) with a full bucket,
    // as a source evicted from an LRU did.
    assert_eq!(
        [send(&b), send(&b), send(&b), send(&b)],
        [XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP]
    );
    assert_eq!(send(&a), XDP_DROP);
    assert_eq!(count(&xdp, "drop", "rate_limit"), 5);
}

#[test]
fn the_bucket_clock_follows_the_burst_rule() {
    // 1/s with a burst of 5 holds two 4 ms ticks of refill many times over: coarse clock.
    let Some(coarse) = load(
        "bucket_clock_coarse",
        "interface: lo\nrate_limit: { packets_per_second: 1, burst: 5 }\n",
    ) else {
        return;
    };
    assert!(coarse.coarse_clock());
    // 1000/s with a burst of 1: a tick's refill (4 at HZ=250, 1 at HZ=1000) is at least the
    // burst, so the precise clock stays, and the limit still holds.
    let precise = load(
        "bucket_clock_precise",
        "interface: lo\nrate_limit: { packets_per_second: 1000, burst: 1 }\n",
    )
    .unwrap();
    assert!(!precise.coarse_clock());
    let verdicts: Vec<u32> = (0..20)
        .map(|_| run(&precise, &v4("198.18.9.9", UDP, 53, 0)))
        .collect();
    assert_eq!(verdicts[0], XDP_PASS);
    assert!(verdicts.contains(&XDP_DROP), "{verdicts:?}");
    // A config reload that shrinks the burst switches the clock back.
    coarse
        .apply_config(
            &config("interface: lo\nrate_limit: { packets_per_second: 1000, burst: 1 }\n"),
            std::path::Path::new("."),
        )
        .unwrap();
    assert!(!coarse.coarse_clock());
}
