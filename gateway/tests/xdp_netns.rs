//! End to end: the XDP program attached to a veth inside network namespaces (198.18.0.0/15
//! only), real TCP/UDP clients and servers. Needs root; skipped with a message when the gateway
//! was built without the eBPF object (SLUICE_REQUIRE_BPF=1 makes that a failure).
//!
//! Layout per test: namespace S (server, XDP on veth `xa`, 198.18.N.1/24) and namespace C
//! (clients on veth `xb`, 198.18.N.2 allowed, 198.18.N.3 the one denied/flooding/banned).
//! Threads enter a namespace with setns(2); the namespaces are deleted by a Drop guard.

mod xdp_support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::services::BanSink;
use sluice::xdp::Xdp;
use xdp_support::netns::{in_ns, Netns};
use xdp_support::{config, xdp_available};

/// A TCP echo server in a namespace, stopped on drop.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(ns: &str, ip: IpAddr) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: as in in_ns.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let l = TcpListener::bind((ip, 0)).expect("bind echo");
            l.set_nonblocking(true).expect("nonblocking");
            tx.send(l.local_addr().expect("addr")).expect("send addr");
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 64];
                        if let Ok(n) = s.read(&mut buf) {
                            let _ = s.write_all(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            addr: rx
                .recv_timeout(Duration::from_secs(10))
                .expect("echo started"),
            stop,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// From namespace `ns`, connect from `src` to `dst`, send a line, read it back.
fn echo_from(ns: &str, src: IpAddr, dst: SocketAddr) -> bool {
    in_ns(ns, move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.bind(&SocketAddr::new(src, 0).into())
            .expect("bind client");
        if sock
            .connect_timeout(&dst.into(), Duration::from_secs(1))
            .is_err()
        {
            return false;
        }
        let mut s: TcpStream = sock.into();
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = [0u8; 5];
        s.write_all(b"hello").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"hello"
    })
}

fn start_xdp(ns: &str, yaml: String) -> Arc<Xdp> {
    in_ns(ns, move || {
        match sluice::xdp::start(&config(&yaml), std::path::Path::new(".")) {
            Ok(Some(x)) => x,
            Ok(None) => panic!("XDP did not start (see the warning above)"),
            Err(e) => panic!("XDP did not start: {e}"),
        }
    })
}

fn count(xdp: &Xdp, verdict: &str, reason: &str) -> u64 {
    xdp.counters()
        .iter()
        .find(|(v, r, _, _)| *v == verdict && *r == reason)
        .map(|c| c.2)
        .unwrap_or(0)
}

#[test]
fn denied_client_cannot_connect_while_allowed_one_can() {
    if !xdp_available("denied_client_cannot_connect") {
        return;
    }
    let ns = Netns::new();
    let bad = ns.addr(3);
    let xdp = start_xdp(
        &ns.s(),
        format!("interface: xa\nmode: driver\ndeny: [\"{bad}\"]\n"),
    );
    assert_eq!(xdp.mode(), "driver");
    let echo = Echo::start(&ns.s(), ns.addr(1));
    assert!(echo_from(&ns.c(), ns.addr(2), echo.addr));
    assert!(!echo_from(&ns.c(), bad, echo.addr));
    // Exactly 100 datagrams from the denied source: the counter moves by exactly 100.
    let before = count(&xdp, "drop", "deny_exact");
    let target = SocketAddr::new(ns.addr(1), 9);
    in_ns(&ns.c(), move || {
        let u = UdpSocket::bind((bad, 0)).expect("bind");
        for _ in 0..100 {
            u.send_to(b"x", target).expect("send");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&xdp, "drop", "deny_exact") < before + 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&xdp, "drop", "deny_exact"), before + 100);
    assert!(count(&xdp, "pass", "default") > 0);
    xdp.shutdown();
    // Detached: the denied client gets through now.
    assert!(echo_from(&ns.c(), bad, echo.addr));
}

#[test]
fn a_flood_is_rate_limited_while_another_source_is_served() {
    if !xdp_available("a_flood_is_rate_limited") {
        return;
    }
    let ns = Netns::new();
    let xdp = start_xdp(
        &ns.s(),
        "interface: xa\nrate_limit: { packets_per_second: 500, burst: 500 }\n".to_string(),
    );
    let echo = Echo::start(&ns.s(), ns.addr(1));
    let flooder = ns.addr(3);
    let target = SocketAddr::new(ns.addr(1), 9);
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let c = ns.c();
    let flood = std::thread::spawn(move || {
        in_ns(&c, move || {
            let u = UdpSocket::bind((flooder, 0)).expect("bind");
            for _ in 0..20_000 {
                if u.send_to(b"flood", target).is_ok() {
                    sent2.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    let mut served = 0;
    for _ in 0..10 {
        if echo_from(&ns.c(), ns.addr(2), echo.addr) {
            served += 1;
        }
    }
    flood.join().expect("flood thread");
    assert_eq!(served, 10, "the well-behaved source was not served");
    let dropped = count(&xdp, "drop", "rate_limit");
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 10_000, "only {sent} flood packets sent");
    assert!(dropped > sent / 2, "dropped {dropped} of {sent}");
}

#[test]
fn a_ban_from_l7_drops_until_it_expires() {
    if !xdp_available("a_ban_from_l7_drops_until_it_expires") {
        return;
    }
    let ns = Netns::new();
    let xdp = start_xdp(&ns.s(), "interface: xa\nmode: skb\n".to_string());
    assert_eq!(xdp.mode(), "skb");
    let echo = Echo::start(&ns.s(), ns.addr(1));
    let bad = ns.addr(3);
    assert!(echo_from(&ns.c(), bad, echo.addr));
    let sink: Arc<dyn BanSink> = xdp.clone();
    assert!(sink.ban(bad, Some(Duration::from_secs(3)), "test: too many 401s"));
    assert!(!echo_from(&ns.c(), bad, echo.addr));
    assert!(echo_from(&ns.c(), ns.addr(2), echo.addr));
    assert!(count(&xdp, "drop", "ban") >= 1);
    // Past the expiry the source is served again (poll; no timing assertion).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !echo_from(&ns.c(), bad, echo.addr) {
        assert!(Instant::now() < deadline, "the ban did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_redirect_rule_delivers_to_the_other_interface() {
    if !xdp_available("a_redirect_rule_delivers") {
        return;
    }
    let mut ns = Netns::new();
    let k = ns.add_sink();
    let xdp = start_xdp(
        &ns.s(),
        "interface: xa\nmode: skb\nredirect: [{ match: { protocol: udp, dst_port: 9999 }, to_interface: xc }]\n"
            .to_string(),
    );
    let dst = ns.addr(1);
    // Receivers on both sides: the sink namespace must get the datagrams, S must not.
    let recv = |ns_name: String| {
        std::thread::spawn(move || {
            in_ns(&ns_name, move || {
                let u = UdpSocket::bind((dst, 9999)).expect("bind receiver");
                u.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                let mut got = 0;
                let mut buf = [0u8; 64];
                while let Ok(n) = u.recv(&mut buf) {
                    if &buf[..n] == b"redirected" {
                        got += 1;
                    }
                }
                got
            })
        })
    };
    let in_sink = recv(k);
    let in_s = recv(ns.s());
    std::thread::sleep(Duration::from_millis(300));
    let src = ns.addr(2);
    in_ns(&ns.c(), move || {
        let u = UdpSocket::bind((src, 0)).expect("bind");
        for _ in 0..20 {
            u.send_to(b"redirected", (dst, 9999)).expect("send");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (sink_got, s_got) = (in_sink.join().expect("sink"), in_s.join().expect("s"));
    assert_eq!(s_got, 0);
    assert!(sink_got >= 19, "sink received {sink_got} of 20");
    assert_eq!(count(&xdp, "redirect", "redirect"), 20);
}

/// Not a test on its own: the child process of `a_crashed_gateway_leaves_no_program_behind`,
/// which attaches XDP in the namespace named by SLUICE_XDP_CHILD_NS and waits to be killed.
#[test]
#[ignore = "helper process for a_crashed_gateway_leaves_no_program_behind"]
fn child_attach_and_wait() {
    let ns = std::env::var("SLUICE_XDP_CHILD_NS").expect("run by the crash test only");
    let xdp = start_xdp(&ns, "interface: xa\n".to_string());
    println!("ATTACHED {}", xdp.mode());
    std::thread::sleep(Duration::from_secs(60));
}

fn xdp_shown(ns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "xa"])
        .output()
        .expect("ip link show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_crashed_gateway_leaves_no_program_behind() {
    if !xdp_available("a_crashed_gateway_leaves_no_program_behind") {
        return;
    }
    let ns = Netns::new();
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_attach_and_wait",
            "--ignored",
            "--nocapture",
        ])
        .env("SLUICE_XDP_CHILD_NS", ns.s())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("ATTACHED") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut lines, &mut line).expect("child output");
        assert!(n > 0, "the child exited before attaching");
    }
    // The program is visible by name: this is how a stale netlink attachment is recognised.
    let shown = xdp_shown(&ns.s());
    assert!(shown.contains("name sluice_xdp "), "{shown}");
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    // A bpf_link attachment goes with its process; a new gateway attaches cleanly.
    let deadline = Instant::now() + Duration::from_secs(20);
    while xdp_shown(&ns.s()).contains("prog/xdp") {
        assert!(
            Instant::now() < deadline,
            "the crashed process's program stayed attached"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let xdp = start_xdp(&ns.s(), "interface: xa\n".to_string());
    assert!(xdp_shown(&ns.s()).contains("name sluice_xdp "));
    xdp.shutdown();
    assert!(
        !xdp_shown(&ns.s()).contains("prog/xdp"),
        "{}",
        xdp_shown(&ns.s())
    );
}

fn prog_id(shown: &str) -> Option<String> {
    let mut words = shown.split_whitespace();
    words.find(|w| *w == "prog/xdp")?;
    words.find(|w| *w == "id")?;
    words.next().map(str::to_string)
}

#[test]
fn an_upgrade_swaps_the_program_and_keeps_rules_and_bans() {
    if !xdp_available("an_upgrade_swaps_the_program") {
        return;
    }
    let ns = Netns::new();
    let denied = ns.addr(3);
    let xdp = start_xdp(&ns.s(), format!("interface: xa\ndeny: [\"{denied}\"]\n"));
    let echo = Echo::start(&ns.s(), ns.addr(1));
    let banned: IpAddr = ns.addr(2);
    assert!(echo_from(&ns.c(), banned, echo.addr));
    xdp.add_ban(banned, Some(Duration::from_secs(600)))
        .expect("ban");
    let before = prog_id(&xdp_shown(&ns.s())).expect("program attached");
    let object = sluice::xdp::object::embedded().expect("object embedded");
    xdp.upgrade(object).expect("upgrade");
    let after = prog_id(&xdp_shown(&ns.s())).expect("program still attached");
    assert_ne!(before, after, "the program was not replaced");
    assert!(!echo_from(&ns.c(), denied, echo.addr));
    assert!(!echo_from(&ns.c(), banned, echo.addr));
    assert!(xdp.remove_ban(banned));
    assert!(echo_from(&ns.c(), banned, echo.addr));
    xdp.shutdown();
    assert!(prog_id(&xdp_shown(&ns.s())).is_none());
}
