//! XDP benchmarks, run only with SLUICE_XDP_BENCH=1 (a few minutes; root and nftables needed):
//!
//! ```text
//! scripts/build-bpf.sh && SLUICE_XDP_BENCH=1 cargo test -p sluice --test xdp_bench -- --nocapture --test-threads=1
//! ```
//!
//! 1. ns per packet through BPF_PROG_TEST_RUN with `repeat` (median of several runs), miss and
//!    hit: a bare `return XDP_PASS` program (the harness floor), the program with no rules, 100k
//!    IPv4 /24 prefixes, 100k IPv4 /28 prefixes, 100k IPv6 /48 prefixes, 1M exact deny entries
//!    plus 1M bans, and the full pipeline with every table filled; plus the kernel's memlock
//!    figure for the exact hash.
//! 2. A veth flood from one source dropped by the XDP deny list versus the same deny set in an
//!    nftables netdev-ingress set, in interleaved rounds: packets dropped per second and CPU
//!    per packet of the sending thread (which also runs the receive path on a veth).
//!
//! The tables are printed as markdown; docs/performance.md ("XDP fast path") records them.
//!
//! While iterating, `SLUICE_XDP_BENCH_CASES=floor,full` runs only the named rows of part 1
//! (`floor`, `empty`, `v4`, `v4long`, `v6`, `exact`, `full`), and `SLUICE_XDP_DUMP=DIR` writes
//! the full pipeline's translated and JITed program there (bpftool needed).

mod xdp_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::services::BanSink;
use sluice::xdp::Xdp;
use sluice_xdp_common::EXACT_MAX;
use xdp_support::bare::{map_memlock, Bare};
use xdp_support::netns::{in_ns, Netns};
use xdp_support::{config, v4, v6, xdp_available, SYN, TCP, UDP, XDP_DROP, XDP_PASS};

const REPEAT: u32 = 2_000_000;
const RUNS: usize = 5;
const FLOOD_SECS: u64 = 4;
const ROUNDS: usize = 3;

fn enabled() -> bool {
    if std::env::var("SLUICE_XDP_BENCH").is_ok_and(|v| v == "1") {
        return xdp_available("xdp_bench");
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED xdp_bench: set SLUICE_XDP_BENCH=1 to run the XDP benchmarks"
    );
    false
}

/// `n` consecutive IPv4 prefixes of length `len` (≥ 8) from 11.0.0.0.
fn v4_prefixes(n: u32, len: u32) -> Vec<String> {
    let base = u32::from(Ipv4Addr::new(11, 0, 0, 0));
    (0..n)
        .map(|i| format!("{}/{len}", Ipv4Addr::from(base + (i << (32 - len)))))
        .collect()
}

/// `n` IPv6 /48s under 2001:db8::/32 and beyond.
fn v6_prefixes(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("2001:{:x}:{:x}::/48", 0xdb8 + (i >> 16), i & 0xffff))
        .collect()
}

/// `n` host addresses from 20.0.0.0.
fn hosts(n: u32, first: u8) -> Vec<IpAddr> {
    let base = u32::from(Ipv4Addr::new(first, 0, 0, 0));
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(base + i)))
        .collect()
}

fn prefixes(n: u32) -> Vec<String> {
    v4_prefixes(n, 24)
}

fn deny_yaml(entries: &[String]) -> String {
    let mut y = String::from("interface: lo\ndeny:\n");
    for e in entries {
        y.push_str("  - \"");
        y.push_str(e);
        y.push_str("\"\n");
    }
    y
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median over RUNS runs of REPEAT; the kernel reports the mean time of one run. Also checks
/// the verdict, so a case that silently stopped matching cannot report a fast "hit".
fn ns_per_packet(xdp: &Xdp, pkt: &[u8], want: u32) -> u128 {
    median(
        (0..RUNS)
            .map(|_| {
                let (action, t) = xdp.test_run(pkt, REPEAT).expect("test run");
                assert_eq!(action, want, "unexpected verdict");
                t.as_nanos()
            })
            .collect(),
    )
}

fn load_timed(yaml: &str) -> (Arc<Xdp>, f64) {
    let t = Instant::now();
    let xdp = Xdp::load_detached(&config(yaml), std::path::Path::new(".")).expect("load");
    (xdp, t.elapsed().as_secs_f64())
}

fn ban_all(xdp: &Xdp, addrs: &[IpAddr]) -> f64 {
    let t = Instant::now();
    for a in addrs {
        assert!(xdp.ban(*a, Some(Duration::from_secs(3600)), "bench"));
    }
    t.elapsed().as_secs_f64()
}

/// Whether row `name` runs (all unless SLUICE_XDP_BENCH_CASES lists some).
fn case(name: &str) -> bool {
    match std::env::var("SLUICE_XDP_BENCH_CASES") {
        Ok(list) if !list.is_empty() => list.split(',').any(|c| c.trim() == name),
        _ => true,
    }
}

/// With SLUICE_XDP_DUMP=DIR, the loaded program as the kernel runs it (translated and JITed).
fn dump_program() {
    let Ok(dir) = std::env::var("SLUICE_XDP_DUMP") else {
        return;
    };
    for kind in ["xlated", "jited"] {
        let out = Command::new("bpftool")
            .args([
                "prog",
                "dump",
                kind,
                "name",
                sluice_xdp_common::PROGRAM_NAME,
            ])
            .output()
            .expect("bpftool");
        let path = std::path::Path::new(&dir).join(format!("sluice_xdp.{kind}"));
        std::fs::write(&path, &out.stdout).expect("write dump");
        println!("dumped {}", path.display());
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

#[test]
fn test_run_ns_per_packet() {
    if !enabled() {
        return;
    }
    let miss = v4("198.18.0.5", UDP, 53, 0);
    println!("\n| case | entries | miss → pass (ns) | hit → drop (ns) |");
    println!("|---|---|---|---|");
    if case("floor") {
        let bare = Bare::load().expect("load the bare program");
        let floor = median(
            (0..RUNS)
                .map(|_| bare.test_run(&miss, REPEAT).expect("test run").1.as_nanos())
                .collect(),
        );
        println!("| `return XDP_PASS` (harness floor) | – | {floor} | – |");
        drop(bare);
    }

    let mut empty_exact = 0;
    if case("empty") {
        let (empty, _) = load_timed("interface: lo\n");
        println!(
            "| Sluice, no rules | 0 | {} | – |",
            ns_per_packet(&empty, &miss, XDP_PASS)
        );
        empty_exact = map_memlock(EXACT_MAX).into_iter().max().unwrap_or(0);
        drop(empty);
    }

    if case("v4") {
        let (xdp, load) = load_timed(&deny_yaml(&prefixes(100_000)));
        println!(
            "| IPv4 /24 prefixes (bitmap) | 100 000 (loaded in {load:.1} s) | {} | {} |",
            ns_per_packet(&xdp, &miss, XDP_PASS),
            ns_per_packet(&xdp, &v4("11.1.134.9", UDP, 53, 0), XDP_DROP)
        );
        drop(xdp);
    }

    if case("v4long") {
        // 65 000 /28s are 1 040 000 addresses, expanded into the exact hash (its limit: 2^20).
        let (xdp, load) = load_timed(&deny_yaml(&v4_prefixes(65_000, 28)));
        println!(
            "| IPv4 /28 prefixes (expanded into the exact hash) | 65 000 (loaded in {load:.1} s) | {} | {} |",
            ns_per_packet(&xdp, &miss, XDP_PASS),
            ns_per_packet(&xdp, &v4("11.0.134.9", UDP, 53, 0), XDP_DROP)
        );
        drop(xdp);
    }

    if case("v6") {
        let (xdp, load) = load_timed(&deny_yaml(&v6_prefixes(100_000)));
        println!(
        "| IPv6 /48 prefixes (v6 LPM trie), IPv6 packets | 100 000 (loaded in {load:.1} s) | {} | {} |",
        ns_per_packet(&xdp, &v6("2001:db7::5", UDP, 53, 0), XDP_PASS),
        ns_per_packet(&xdp, &v6("2001:db9:1234::9", UDP, 53, 0), XDP_DROP)
    );
        drop(xdp);
    }

    // 1M exact deny entries and 1M bans share one hash: one lookup answers both.
    let deny: Vec<String> = hosts(1_000_000, 20).iter().map(|a| a.to_string()).collect();
    let banned = hosts(1_000_000, 30);
    let mut full_exact = 0;
    if case("exact") {
        let (xdp, load) = load_timed(&deny_yaml(&deny));
        let ban_secs = ban_all(&xdp, &banned);
        full_exact = map_memlock(EXACT_MAX).into_iter().max().unwrap_or(0);
        println!(
        "| exact deny + bans (one hash) | 1 000 000 + 1 000 000 (loaded in {load:.1} s + {ban_secs:.1} s) | {} | deny {} / ban {} |",
        ns_per_packet(&xdp, &miss, XDP_PASS),
        ns_per_packet(&xdp, &v4("20.9.8.7", UDP, 53, 0), XDP_DROP),
        ns_per_packet(&xdp, &v4("30.9.8.7", UDP, 53, 0), XDP_DROP)
    );
        drop(xdp);
    }

    if case("full") {
        // Everything at once: a TCP SYN that misses every table walks the whole program (allow
        // list, bitmap, exact hash, packet and SYN buckets, redirect lookups).
        let mut entries = prefixes(100_000);
        entries.extend(
            v4_prefixes(1_000, 28)
                .into_iter()
                .map(|p| p.replacen("11.", "13.", 1)),
        );
        entries.extend(v6_prefixes(1_000));
        entries.extend(deny);
        let yaml = format!(
        "{}allow: [\"10.1.0.0/16\", \"2001:db8:ffff::/48\"]\nrate_limit: {{ packets_per_second: 100000000, burst: 1000000000 }}\nsyn_rate_limit: {{ per_second: 100000000, burst: 1000000000 }}\nredirect:\n  - {{ match: {{ protocol: udp, dst_port: 5353 }}, tx: true }}\n  - {{ match: {{ protocol: tcp, dst_port: 7 }}, tx: true }}\n",
        deny_yaml(&entries)
    );
        let (xdp, load) = load_timed(&yaml);
        let ban_secs = ban_all(&xdp, &banned);
        let syn = v4("198.18.0.5", TCP, 80, SYN);
        dump_program();
        println!(
        "| full pipeline (all of the above + allow list, rate and SYN limits, redirect rules) | 1 102 000 deny + 1 000 000 bans (loaded in {load:.1} s + {ban_secs:.1} s) | {} (TCP SYN) | /24 {} / /28 {} / deny {} / ban {} |",
        ns_per_packet(&xdp, &syn, XDP_PASS),
        ns_per_packet(&xdp, &v4("11.1.134.9", TCP, 80, SYN), XDP_DROP),
        ns_per_packet(&xdp, &v4("13.0.3.9", TCP, 80, SYN), XDP_DROP),
        ns_per_packet(&xdp, &v4("20.9.8.7", TCP, 80, SYN), XDP_DROP),
        ns_per_packet(&xdp, &v4("30.9.8.7", TCP, 80, SYN), XDP_DROP)
    );
        drop(xdp);
    }
    println!(
        "\nEXACT map memlock: {} empty, {} with 1M deny + 1M bans",
        mib(empty_exact),
        mib(full_exact)
    );
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Flood from `src` in C for FLOOD_SECS; returns (packets sent, CPU seconds of the sending
/// thread). The veth hands each frame to the receiving side in the sender's context (softirq on
/// syscall exit), so the thread's CPU time includes the drop; other load on the machine does
/// not distort it, unlike machine-wide busy time.
fn flood(ns: &Netns, src: IpAddr) -> (u64, f64) {
    let target = SocketAddr::new(ns.addr(1), 9);
    in_ns(&ns.c(), move || {
        let u = UdpSocket::bind((src, 0)).expect("bind");
        let deadline = Instant::now() + Duration::from_secs(FLOOD_SECS);
        let start = thread_cpu_ns();
        let mut sent = 0u64;
        while Instant::now() < deadline {
            for _ in 0..256 {
                if u.send_to(&[0u8; 18], target).is_ok() {
                    sent += 1;
                }
            }
        }
        (sent, (thread_cpu_ns() - start) as f64 / 1e9)
    })
}

/// One flood round: (dropper, round, packets sent, dropped, sender CPU seconds).
type Row = (&'static str, usize, u64, u64, f64);

fn nft(ns: &str, script: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write nft");
    assert!(child.wait().expect("nft").success(), "nft failed");
}

fn nft_dropped(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "chain",
            "netdev",
            "sluicebench",
            "in",
        ])
        .output()
        .expect("nft list");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn veth_flood_xdp_versus_nftables() {
    if !enabled() {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        panic!("nft not installed (apt-get install nftables)");
    }
    let ns = Netns::new();
    let flooder = ns.addr(3);
    let mut set = prefixes(10_000);
    set.push(format!("{flooder}"));
    let mut rows: Vec<Row> = Vec::new();
    for round in 0..ROUNDS {
        // XDP
        let yaml = format!(
            "{}mode: driver\n",
            deny_yaml(&set).replace("interface: lo", "interface: xa")
        );
        let s = ns.s();
        let xdp: Arc<Xdp> = in_ns(&s, move || {
            sluice::xdp::start(&config(&yaml), std::path::Path::new("."))
                .expect("start")
                .expect("xdp available")
        });
        let (sent, cpu) = flood(&ns, flooder);
        let dropped: u64 = xdp
            .counters()
            .iter()
            .filter(|c| c.0 == "drop")
            .map(|c| c.2)
            .sum();
        xdp.shutdown();
        rows.push(("xdp", round, sent, dropped, cpu));
        // nftables, same set, earliest hook (netdev ingress)
        let elements = set.join(", ");
        nft(
            &ns.s(),
            &format!(
                "table netdev sluicebench {{\n set deny {{ type ipv4_addr; flags interval; elements = {{ {elements} }} }}\n chain in {{ type filter hook ingress device xa priority -500; ip saddr @deny counter drop; }}\n}}\n"
            ),
        );
        let (sent, cpu) = flood(&ns, flooder);
        let dropped = nft_dropped(&ns.s());
        nft(&ns.s(), "delete table netdev sluicebench\n");
        rows.push(("nftables", round, sent, dropped, cpu));
    }
    println!("\n| round | dropper | packets sent | dropped | dropped/s | sender CPU s | CPU ns/packet (send + drop) |");
    println!("|---|---|---|---|---|---|---|");
    for (who, round, sent, dropped, cpu) in &rows {
        println!(
            "| {round} | {who} | {sent} | {dropped} | {:.0} | {cpu:.2} | {:.0} |",
            *dropped as f64 / FLOOD_SECS as f64,
            cpu * 1e9 / (*sent).max(1) as f64
        );
    }
    let med = |who: &str, f: &dyn Fn(&Row) -> f64| {
        let mut v: Vec<f64> = rows.iter().filter(|r| r.0 == who).map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let rate = |r: &Row| r.3 as f64 / FLOOD_SECS as f64;
    let cpp = |r: &Row| r.4 * 1e9 / r.2.max(1) as f64;
    println!(
        "\nmedian dropped/s: xdp {:.0}, nftables {:.0} (ratio {:.2}); CPU ns/packet: xdp {:.0}, nftables {:.0} (ratio {:.2})",
        med("xdp", &rate),
        med("nftables", &rate),
        med("xdp", &rate) / med("nftables", &rate),
        med("xdp", &cpp),
        med("nftables", &cpp),
        med("xdp", &cpp) / med("nftables", &cpp)
    );
}
