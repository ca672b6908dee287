//! A two-instruction XDP program (`return XDP_PASS`) loaded with the raw bpf(2) syscall: its
//! BPF_PROG_TEST_RUN time is the harness's own cost per run, the floor under every figure the
//! Sluice program gets.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `union bpf_attr`, zeroed beyond the fields written (the kernel requires that).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn put(&mut self, off: usize, bytes: &[u8]) {
        self.0[off..off + bytes.len()].copy_from_slice(bytes);
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, writable bpf_attr of the size passed; the pointers inside it
    // point at buffers that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut Attr, 128u32) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// The loaded `return XDP_PASS` program.
pub struct Bare(OwnedFd);

impl Bare {
    pub fn load() -> std::io::Result<Bare> {
        // r0 = 2 (XDP_PASS); exit.
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut a = Attr([0; 128]);
        a.put(0, &BPF_PROG_TYPE_XDP.to_ne_bytes());
        a.put(4, &2u32.to_ne_bytes());
        a.put(8, &(insns.as_ptr() as u64).to_ne_bytes());
        a.put(16, &(license.as_ptr() as u64).to_ne_bytes());
        let fd = bpf(BPF_PROG_LOAD, &mut a)?;
        // SAFETY: the kernel returned a fresh file descriptor that nothing else owns.
        Ok(Bare(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Run on `packet` `repeat` times: (return value, mean time per run).
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> std::io::Result<(u32, Duration)> {
        use std::os::fd::AsRawFd;
        let mut out = vec![0u8; packet.len() + 256];
        let mut a = Attr([0; 128]);
        a.put(0, &(self.0.as_raw_fd() as u32).to_ne_bytes());
        a.put(8, &(packet.len() as u32).to_ne_bytes());
        a.put(12, &(out.len() as u32).to_ne_bytes());
        a.put(16, &(packet.as_ptr() as u64).to_ne_bytes());
        a.put(24, &(out.as_mut_ptr() as u64).to_ne_bytes());
        a.put(32, &repeat.to_ne_bytes());
        bpf(BPF_PROG_TEST_RUN, &mut a)?;
        let word =
            |off: usize| u32::from_ne_bytes([a.0[off], a.0[off + 1], a.0[off + 2], a.0[off + 3]]);
        Ok((word(4), Duration::from_nanos(u64::from(word(36)))))
    }
}

/// `memlock` of every live BPF map of this process with `max_entries`, from /proc/self/fdinfo:
/// the kernel's own account of the memory a map holds (elements included).
pub fn map_memlock(max_entries: u32) -> Vec<u64> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in dir.flatten() {
        let is_map = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if field("max_entries:") == Some(u64::from(max_entries)) {
            if let Some(m) = field("memlock:") {
                out.push(m);
            }
        }
    }
    out
}
