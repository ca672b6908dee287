//! CPU time and memory of a process tree, from /proc. nginx does its work in a child of the
//! process we start, so every figure covers the started process and all its descendants.

use std::collections::HashMap;
use std::fs;

/// One process's line of /proc/PID/stat, the fields we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// utime + stime, in clock ticks (all threads).
    cpu: u64,
    /// stime alone: the kernel's share of `cpu`.
    sys: u64,
    /// cutime + cstime: children that exited and were waited for.
    children_cpu: u64,
    /// cstime alone.
    children_sys: u64,
}

/// Parses /proc/PID/stat. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // rest: " state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ..."
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(num(1)?).ok()?,
        cpu: num(11)? + num(12)?,
        sys: num(12)?,
        children_cpu: num(13)? + num(14)?,
        children_sys: num(14)?,
    })
}

fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `root` and every live descendant of it.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            if let Some(s) = stat(pid) {
                children.entry(s.ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// CPU seconds used so far by a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    /// User + system.
    pub total: f64,
    /// System (kernel) alone.
    pub sys: f64,
}

/// The CPU time used so far by the tree under `root`, including descendants that already exited
/// (accounted in the root's cutime/cstime once reaped).
pub fn cpu_time(root: u32) -> CpuTime {
    let (mut total, mut sys) = (0u64, 0u64);
    for s in tree(root).iter().filter_map(|&pid| stat(pid)) {
        total += s.cpu;
        sys += s.sys;
    }
    if let Some(s) = stat(root) {
        total += s.children_cpu;
        sys += s.children_sys;
    }
    let hz = clock_ticks_per_second() as f64;
    CpuTime {
        total: total as f64 / hz,
        sys: sys as f64 / hz,
    }
}

/// A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory of the tree: the sum of each process's high-water mark (VmHWM), in KiB.
/// Pages shared between nginx's master and worker count twice, as `ps` would show them.
pub fn peak_rss_kib(root: u32) -> u64 {
    tree(root)
        .iter()
        .filter_map(|&pid| status_kib(pid, "VmHWM"))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 3 4 20 0 1 0 5 1000 200";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 7,
                cpu: 300,
                sys: 50,
                children_cpu: 7,
                children_sys: 4
            })
        );
        assert_eq!(parse_stat("42 (x) S"), None);
    }

    #[test]
    fn counts_a_busy_grandchild() -> anyhow::Result<()> {
        // sh -> sh (busy loop): the work happens one level down, as in nginx.
        let mut child = Command::new("sh")
            .args(["-c", "sh -c 'while :; do :; done' & wait"])
            .stdout(Stdio::null())
            .spawn()?;
        let root = child.id();
        let end = Instant::now() + Duration::from_secs(30);
        while cpu_time(root).total < 0.2 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let cpu = cpu_time(root).total;
        let procs = tree(root);
        let rss = peak_rss_kib(root);
        for pid in procs.iter().rev() {
            // SAFETY: kill has no memory effects; these are our own descendants.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        child.wait()?;
        assert!(procs.len() >= 2, "tree {procs:?}");
        assert!(cpu >= 0.2, "cpu {cpu}");
        assert!(rss > 0);
        Ok(())
    }
}
