//! Network namespaces for the XDP tests and benches (198.18.0.0/15 only), deleted on drop.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces created for one test; deleted on drop, also when the test fails.
pub struct Netns {
    names: Vec<String>,
    subnet: u8,
}

impl Netns {
    /// S and C joined by veth a/b, on 198.18.`subnet`.0/24.
    pub fn new() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", std::process::id());
        let subnet = 100 + (std::process::id() % 50) as u8 + ((n * 3) % 100) as u8;
        let ns = Netns {
            names: vec![format!("sluice-xdp-s-{id}"), format!("sluice-xdp-c-{id}")],
            subnet,
        };
        for name in &ns.names {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        let (s, c) = (ns.s(), ns.c());
        ip(&[
            "-n", &s, "link", "add", "xa", "type", "veth", "peer", "name", "xb", "netns", &c,
        ]);
        ip(&[
            "-n",
            &s,
            "addr",
            "add",
            &format!("198.18.{subnet}.1/24"),
            "dev",
            "xa",
        ]);
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("198.18.{subnet}.2/24"),
            "dev",
            "xb",
        ]);
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("198.18.{subnet}.3/24"),
            "dev",
            "xb",
        ]);
        ip(&[
            "-n",
            &s,
            "link",
            "set",
            "xa",
            "address",
            &format!("02:00:00:00:{subnet:02x}:01"),
        ]);
        ip(&["-n", &s, "link", "set", "xa", "up"]);
        ip(&["-n", &c, "link", "set", "xb", "up"]);
        ns
    }

    pub fn s(&self) -> String {
        self.names[0].clone()
    }
    pub fn c(&self) -> String {
        self.names[1].clone()
    }
    pub fn addr(&self, host: u8) -> IpAddr {
        IpAddr::from([198, 18, self.subnet, host])
    }

    /// Another namespace K joined to S by veth xc/xd, where xd has xa's MAC and address, so that a
    /// frame redirected from xa out of xc is accepted by K's stack.
    pub fn add_sink(&mut self) -> String {
        let k = self.names[0].replace("-s-", "-k-");
        ip(&["netns", "add", &k]);
        self.names.push(k.clone());
        let s = self.s();
        let subnet = self.subnet;
        ip(&[
            "-n", &s, "link", "add", "xc", "type", "veth", "peer", "name", "xd", "netns", &k,
        ]);
        ip(&[
            "-n",
            &k,
            "link",
            "set",
            "xd",
            "address",
            &format!("02:00:00:00:{subnet:02x}:01"),
        ]);
        ip(&[
            "-n",
            &k,
            "addr",
            "add",
            &format!("198.18.{subnet}.1/24"),
            "dev",
            "xd",
        ]);
        ip(&["-n", &k, "link", "set", "lo", "up"]);
        ip(&["-n", &k, "link", "set", "xd", "up"]);
        ip(&["-n", &s, "link", "set", "xc", "up"]);
        k
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Run `f` on a thread that has entered namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; it changes only this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}
