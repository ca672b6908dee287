//! Loading the object into the kernel and attaching it to an interface: driver mode first
//! (`auto`), skb as fallback, and removal of a stale Sluice program left by a crashed process.

use aya::programs::{Xdp as XdpProgram, XdpMode as AyaMode};
use aya::Ebpf;
use sluice_xdp_common::PROGRAM_NAME;

use super::XdpError;
use crate::config::model::XdpMode;

/// Load `object` and its XDP program into the kernel (not attached yet).
///
/// # Errors
/// [`XdpError::Load`] when the kernel refuses (no privileges, no BPF, verifier).
pub fn load(object: &[u8]) -> Result<Ebpf, XdpError> {
    raise_memlock();
    let mut ebpf = Ebpf::load(object).map_err(|e| XdpError::Load(e.to_string()))?;
    program(&mut ebpf)?
        .load()
        .map_err(|e| XdpError::Load(format!("{e:#}")))?;
    Ok(ebpf)
}

/// The XDP program inside a loaded object.
///
/// # Errors
/// The object has no program by that name, or it is not XDP.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut XdpProgram, XdpError> {
    let prog = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| XdpError::Load(format!("the object has no program `{PROGRAM_NAME}`")))?;
    prog.try_into()
        .map_err(|e: aya::programs::ProgramError| XdpError::Load(e.to_string()))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so large deny lists load.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit; failure only leaves the old limit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; large XDP maps may fail to load");
    }
}

fn mode_name(mode: AyaMode) -> &'static str {
    match mode {
        AyaMode::Driver => "driver",
        AyaMode::Skb => "skb",
        AyaMode::Hardware => "hardware",
        AyaMode::Default => "default",
    }
}

/// Attach the program to `interface`; returns the link and the mode used.
///
/// # Errors
/// [`XdpError::Attach`] when no requested mode works.
pub fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
    mode: XdpMode,
) -> Result<(aya::programs::xdp::XdpLinkId, &'static str), XdpError> {
    let modes: &[AyaMode] = match mode {
        XdpMode::Auto => &[AyaMode::Driver, AyaMode::Skb],
        XdpMode::Driver => &[AyaMode::Driver],
        XdpMode::Skb => &[AyaMode::Skb],
    };
    let mut removed_stale = false;
    let mut last = String::new();
    let mut last_mode = "driver";
    let mut i = 0;
    while i < modes.len() {
        let m = modes[i];
        last_mode = mode_name(m);
        match program(ebpf)?.attach(interface, m) {
            Ok(link) => return Ok((link, mode_name(m))),
            Err(e) => {
                last = format!("{e:#}");
                if let aya::programs::ProgramError::UnknownInterface { .. } = e {
                    break;
                }
                if !removed_stale && remove_stale(interface) {
                    removed_stale = true;
                    continue;
                }
            }
        }
        i += 1;
    }
    Err(XdpError::Attach {
        interface: interface.to_string(),
        mode: last_mode,
        reason: last,
    })
}

/// Remove an XDP program named like ours that a crashed gateway left attached through the
/// legacy netlink path (a bpf_link attachment dies with its process, a netlink one does not).
/// A foreign program is never touched. Returns true when one was removed.
fn remove_stale(interface: &str) -> bool {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", interface])
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&format!("name {PROGRAM_NAME} ")) {
        return false;
    }
    tracing::warn!(
        interface,
        "replacing a stale Sluice XDP program left by a previous run"
    );
    let mut removed = false;
    for kind in ["xdp", "xdpgeneric", "xdpdrv"] {
        removed |= std::process::Command::new("ip")
            .args(["link", "set", "dev", interface, kind, "off"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    }
    removed
}
