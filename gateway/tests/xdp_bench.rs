//! XDP benchmarks, run only with SLUICE_XDP_BENCH=1 (they take about a minute and need root):
//!
//! ```text
//! scripts/build-bpf.sh && SLUICE_XDP_BENCH=1 cargo test --release -p sluice --test xdp_bench -- --nocapture --test-threads=1
//! ```
//!
//! 1. ns per packet through BPF_PROG_TEST_RUN with `repeat`, for the program with no rules, with
//!    a 100k-prefix deny list, with 1M exact deny entries and with 200k bans (hit and miss).
//! 2. A veth flood from one source dropped by the XDP deny list versus the same deny set in an
//!    nftables netdev-ingress set, in interleaved rounds: packets dropped per second and CPU
//!    per packet of the sending thread (which also runs the receive path on a veth). Results go to docs/xdp.md "Performance".

mod xdp_support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::services::BanSink;
use sluice::xdp::Xdp;
use xdp_support::netns::{in_ns, Netns};
use xdp_support::{config, v4, xdp_available, UDP};

const REPEAT: u32 = 2_000_000;
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

fn prefixes(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| format!("{}.{}.{}.0/24", 11 + i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

fn hosts(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{}.{}.{}.{}",
                20 + i / 16_777_216,
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect()
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

fn ns_per_packet(xdp: &Xdp, pkt: &[u8]) -> u128 {
    // Median of three runs of REPEAT; the kernel reports the mean time of one run.
    let mut v: Vec<u128> = (0..3)
        .map(|_| xdp.test_run(pkt, REPEAT).expect("test run").1.as_nanos())
        .collect();
    v.sort();
    v[1]
}

#[test]
fn test_run_ns_per_packet() {
    if !enabled() {
        return;
    }
    let miss = v4("198.18.0.5", UDP, 53, 0);
    println!("\n| case | entries | ns/packet (miss → pass) | ns/packet (hit → drop) |");
    println!("|---|---|---|---|");
    let empty =
        Xdp::load_detached(&config("interface: lo\n"), std::path::Path::new(".")).expect("load");
    println!("| no rules | 0 | {} | – |", ns_per_packet(&empty, &miss));
    drop(empty);

    let list = prefixes(100_000);
    let t = Instant::now();
    let xdp =
        Xdp::load_detached(&config(&deny_yaml(&list)), std::path::Path::new(".")).expect("load");
    let load = t.elapsed();
    let hit = v4("11.1.134.9", UDP, 53, 0);
    println!(
        "| deny prefixes (LPM) | 100 000 (loaded in {:.1} s) | {} | {} |",
        load.as_secs_f64(),
        ns_per_packet(&xdp, &miss),
        ns_per_packet(&xdp, &hit)
    );
    drop(xdp);

    let list = hosts(1_000_000);
    let t = Instant::now();
    let xdp =
        Xdp::load_detached(&config(&deny_yaml(&list)), std::path::Path::new(".")).expect("load");
    let load = t.elapsed();
    let hit = v4("20.9.8.7", UDP, 53, 0);
    println!(
        "| deny exact (hash) | 1 000 000 (loaded in {:.1} s) | {} | {} |",
        load.as_secs_f64(),
        ns_per_packet(&xdp, &miss),
        ns_per_packet(&xdp, &hit)
    );
    drop(xdp);

    let xdp =
        Xdp::load_detached(&config("interface: lo\n"), std::path::Path::new(".")).expect("load");
    let t = Instant::now();
    for i in 0..200_000u32 {
        let a = IpAddr::from([30, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        xdp.ban(a, Some(Duration::from_secs(3600)), "bench");
    }
    let load = t.elapsed();
    let hit = v4("30.1.2.3", UDP, 53, 0);
    println!(
        "| bans (LRU hash) | 200 000 (added in {:.1} s) | {} | {} |",
        load.as_secs_f64(),
        ns_per_packet(&xdp, &miss),
        ns_per_packet(&xdp, &hit)
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
