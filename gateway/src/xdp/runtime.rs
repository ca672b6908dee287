//! The running fast path: the loaded program, its attachment and its maps, behind one mutex
//! that only the control path takes (config reloads, deny-file changes, bans, metrics scrapes).

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aya::programs::xdp::XdpLinkId;
use aya::programs::{TestRun, TestRunOptions};
use aya::Ebpf;

use super::maps::{BanEntry, Maps};
use super::plan::{load_deny, Plan};
use super::rules::addr_key;
use super::watch::DenyWatcher;
use super::{attach, object, XdpError};
use crate::config::model::XdpConfig;
use crate::services::BanSink;

struct Inner {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    maps: Maps,
    plan: Plan,
    deny_config: Vec<String>,
}

/// The XDP fast path, attached (see [`super::start`]) or loaded only (for tests and benches).
pub struct Xdp {
    inner: Mutex<Option<Inner>>,
    interface: Option<String>,
    mode: &'static str,
    watcher: Mutex<Option<DenyWatcher>>,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, so ban expiries compare.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn apply_plan(maps: &mut Maps, plan: &Plan) -> Result<(), XdpError> {
    maps.apply_allow(plan.allow.clone())?;
    maps.apply_deny(&plan.deny)?;
    maps.apply_settings(plan.settings)?;
    let mut targets = Vec::with_capacity(plan.targets.len());
    for name in &plan.targets {
        targets.push(ifindex(name)?);
    }
    maps.apply_redirects(&plan.redirects, &targets)
}

fn ifindex(name: &str) -> Result<u32, XdpError> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| XdpError::Config(format!("interface name `{name}` contains a NUL byte")))?;
    // SAFETY: if_nametoindex reads a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(XdpError::Config(format!(
            "xdp.redirect: interface `{name}` does not exist"
        )));
    }
    Ok(index)
}

fn load_with(object: &[u8], plan: &Plan) -> Result<(Ebpf, Maps), XdpError> {
    let mut ebpf = attach::load(object)?;
    let mut maps = Maps::take(&mut ebpf)?;
    apply_plan(&mut maps, plan)?;
    Ok((ebpf, maps))
}

impl Xdp {
    /// Load the embedded program, fill its maps from `plan` and attach it to `cfg.interface`;
    /// deny files are then watched and re-applied on change.
    ///
    /// # Errors
    /// Unavailable (no object, no privileges, attach refused) or a map write failed.
    pub fn start(cfg: &XdpConfig, plan: Plan) -> Result<Arc<Self>, XdpError> {
        let object = object::embedded().ok_or(XdpError::NoObject)?;
        let (mut ebpf, maps) = load_with(object, &plan)?;
        let (link, mode) = attach::attach(&mut ebpf, &cfg.interface, cfg.mode)?;
        tracing::info!(interface = %cfg.interface, mode, deny = plan.deny.len(), "XDP fast path attached");
        let xdp = Arc::new(Xdp {
            inner: Mutex::new(Some(Inner {
                ebpf,
                link: Some(link),
                maps,
                plan,
                deny_config: cfg.deny.clone(),
            })),
            interface: Some(cfg.interface.clone()),
            mode,
            watcher: Mutex::new(None),
        });
        xdp.rewatch();
        Ok(xdp)
    }

    /// Load the program and fill its maps from `cfg` without attaching it anywhere: for
    /// [`Xdp::test_run`] (tests, benchmarks).
    ///
    /// # Errors
    /// As [`Xdp::start`], minus attaching.
    pub fn load_detached(cfg: &XdpConfig, base: &Path) -> Result<Arc<Self>, XdpError> {
        let plan = Plan::build(cfg, base)?;
        let object = object::embedded().ok_or(XdpError::NoObject)?;
        let (ebpf, maps) = load_with(object, &plan)?;
        Ok(Arc::new(Xdp {
            inner: Mutex::new(Some(Inner {
                ebpf,
                link: None,
                maps,
                plan,
                deny_config: cfg.deny.clone(),
            })),
            interface: None,
            mode: "detached",
            watcher: Mutex::new(None),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Inner>> {
        // A panic while holding the lock leaves maps consistent (each write is one syscall).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T, XdpError>) -> Result<T, XdpError> {
        match self.lock().as_mut() {
            Some(inner) => f(inner),
            None => Err(XdpError::Stopped),
        }
    }

    /// The attachment mode in use (`driver`, `skb`, or `detached`).
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// The interface the program is attached to.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// Apply a new `xdp:` section (reload): allow list and settings as diffs, the deny set as one
    /// atomic switch, redirect rules; deny files are watched anew. The interface and mode are
    /// fixed for the life of the process.
    ///
    /// # Errors
    /// Invalid section or a failed map write; the program keeps the previous deny set.
    pub fn apply_config(self: &Arc<Self>, cfg: &XdpConfig, base: &Path) -> Result<(), XdpError> {
        let plan = Plan::build(cfg, base)?;
        self.with(|inner| {
            apply_plan(&mut inner.maps, &plan)?;
            inner.plan = plan;
            inner.deny_config = cfg.deny.clone();
            Ok(())
        })?;
        self.rewatch();
        Ok(())
    }

    /// Re-read the deny files and apply the resulting set atomically.
    ///
    /// # Errors
    /// A file is unreadable or has a bad line (the previous set stays in force).
    pub fn reload_deny(&self) -> Result<usize, XdpError> {
        self.with(|inner| {
            let set = load_deny(&inner.deny_config, &inner.plan.deny_files)?;
            inner.maps.apply_deny(&set)?;
            inner.plan.deny = set;
            Ok(inner.plan.deny.len())
        })
    }

    fn rewatch(self: &Arc<Self>) {
        let files = match self.lock().as_ref() {
            Some(inner) => inner.plan.deny_files.clone(),
            None => return,
        };
        let weak = Arc::downgrade(self);
        let watcher = DenyWatcher::spawn(&files, move || {
            if let Some(xdp) = weak.upgrade() {
                match xdp.reload_deny() {
                    Ok(n) => tracing::info!(entries = n, "XDP deny list reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "XDP deny list not reloaded; keeping the previous set")
                    }
                }
            }
        });
        let mut slot = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        *slot = watcher;
    }

    /// Ban `addr` for `ttl` (None: `ban_default_ttl`). Returns the ttl applied.
    ///
    /// # Errors
    /// The ban map write failed, or the fast path is stopped.
    pub fn add_ban(&self, addr: IpAddr, ttl: Option<Duration>) -> Result<Duration, XdpError> {
        self.with(|inner| {
            let ttl = ttl.unwrap_or(inner.plan.ban_ttl);
            let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
            let now = monotonic_ns();
            inner
                .maps
                .ban(addr_key(addr), now.saturating_add(ttl_ns), now)?;
            Ok(ttl)
        })
    }

    /// Lift the ban on `addr`; false when it was not banned.
    pub fn remove_ban(&self, addr: IpAddr) -> bool {
        self.with(|inner| Ok(inner.maps.unban(&addr_key(addr))))
            .unwrap_or(false)
    }

    /// Current (unexpired) bans.
    pub fn bans(&self) -> Vec<BanEntry> {
        let now = monotonic_ns();
        self.with(|inner| {
            Ok(inner
                .maps
                .bans()
                .filter_map(|(a, exp)| BanEntry::from_map(a, exp, now))
                .collect())
        })
        .unwrap_or_default()
    }

    /// The rate-limit set (index into the program's two-slot sets) that `addr` falls in with
    /// this load's hash key: sources with the same set share its two slots. For tests and
    /// diagnostics.
    pub fn rate_set_of(&self, addr: IpAddr) -> Option<u32> {
        self.with(|inner| {
            let seed = inner.maps.settings().seed;
            let words = sluice_xdp_common::addr_words(&addr_key(addr));
            Ok(sluice_xdp_common::rate_set(sluice_xdp_common::addr_hash(
                &seed, &words,
            )))
        })
        .ok()
    }

    /// True when the token buckets read the coarse clock (see docs/xdp.md, "Rate limits and
    /// the clock").
    pub fn coarse_clock(&self) -> bool {
        self.with(|inner| {
            Ok(inner.maps.settings().flags & sluice_xdp_common::FLAG_COARSE_CLOCK != 0)
        })
        .unwrap_or(false)
    }

    /// Keys the exact-table filter accounts for (it must equal the keys of the exact table:
    /// every deny address of either buffer and every ban). For tests.
    pub fn exact_filter_keys(&self) -> u64 {
        self.with(|inner| Ok(inner.maps.filter_key_count()))
            .unwrap_or(0)
    }

    /// Number of entries in the deny set in force.
    pub fn deny_len(&self) -> usize {
        self.with(|inner| Ok(inner.maps.active_deny_len()))
            .unwrap_or(0)
    }

    /// `(verdict, reason, packets, bytes)` per reason, summed over CPUs.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64, u64)> {
        self.with(|inner| {
            Ok(inner
                .maps
                .counters()
                .into_iter()
                .map(|(r, c)| (r.verdict(), r.label(), c.packets, c.bytes))
                .collect())
        })
        .unwrap_or_default()
    }

    /// The counters as Prometheus text (`sluice_xdp_packets_total`, `sluice_xdp_bytes_total`).
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let counters = self.counters();
        let mut out = String::new();
        for (metric, help, bytes) in [
            (
                "sluice_xdp_packets_total",
                "Packets handled by the XDP program.",
                false,
            ),
            (
                "sluice_xdp_bytes_total",
                "Bytes handled by the XDP program.",
                true,
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} counter");
            for (verdict, reason, packets, b) in &counters {
                let v = if bytes { b } else { packets };
                let _ = writeln!(
                    out,
                    "{metric}{{verdict=\"{verdict}\",reason=\"{reason}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP sluice_xdp_bans Active bans in the XDP ban map."
        );
        let _ = writeln!(out, "# TYPE sluice_xdp_bans gauge");
        let now = monotonic_ns();
        let live = self
            .with(|inner| Ok(inner.maps.live_bans(now)))
            .unwrap_or(0);
        let _ = writeln!(out, "sluice_xdp_bans {live}");
        let _ = writeln!(
            out,
            "# HELP sluice_xdp_deny_entries Entries in the XDP deny set in force."
        );
        let _ = writeln!(out, "# TYPE sluice_xdp_deny_entries gauge");
        let _ = writeln!(out, "sluice_xdp_deny_entries {}", self.deny_len());
        out
    }

    /// Run the program on `packet` through BPF_PROG_TEST_RUN `repeat` times; returns the XDP
    /// action and the mean time per run. Counters and rate buckets are updated as for real
    /// traffic.
    ///
    /// # Errors
    /// The kernel refused the test run.
    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<(u32, Duration), XdpError> {
        self.with(|inner| {
            let prog = attach::program(&mut inner.ebpf)?;
            let mut out = vec![0u8; packet.len() + 256];
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(packet);
            opts.data_out = Some(&mut out);
            opts.repeat = repeat.max(1);
            let r = prog
                .test_run(opts)
                .map_err(|e| XdpError::Load(format!("test run: {e:#}")))?;
            Ok((r.return_value, r.duration))
        })
    }

    /// Load `object` (a new build of the program), give it the current rules and bans, and swap
    /// it onto the interface in one step (the kernel replaces the program behind the link).
    ///
    /// # Errors
    /// The new object does not load or the swap was refused; the old program stays attached.
    pub fn upgrade(&self, object: &[u8]) -> Result<(), XdpError> {
        self.with(|inner| {
            let (mut ebpf, mut maps) = load_with(object, &inner.plan)?;
            let now = monotonic_ns();
            for (addr, expiry) in inner.maps.bans() {
                if expiry > now {
                    maps.ban(*addr, expiry, now)?;
                }
            }
            if let Some(id) = inner.link.take() {
                let link = attach::program(&mut inner.ebpf)?
                    .take_link(id)
                    .map_err(|e| XdpError::Load(format!("{e:#}")))?;
                let new_id = attach::program(&mut ebpf)?
                    .attach_to_link(link)
                    .map_err(|e| XdpError::Load(format!("swap: {e:#}")))?;
                inner.link = Some(new_id);
            }
            inner.ebpf = ebpf;
            inner.maps = maps;
            Ok(())
        })
    }

    /// Detach the program and release the maps; idempotent. Call on shutdown (SIGTERM) so that no
    /// program is left on the interface.
    pub fn shutdown(&self) {
        *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(mut inner) = self.lock().take() {
            if let Some(id) = inner.link.take() {
                match attach::program(&mut inner.ebpf).map(|p| p.detach(id)) {
                    Ok(Ok(())) => tracing::info!("XDP program detached"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "XDP detach failed"),
                    Err(e) => tracing::warn!(error = %e, "XDP detach failed"),
                }
            }
        }
    }
}

impl Drop for Xdp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl BanSink for Xdp {
    fn ban(&self, addr: IpAddr, ttl: Option<Duration>, reason: &str) -> bool {
        match self.add_ban(addr, ttl) {
            Ok(ttl) => {
                tracing::info!(%addr, ?ttl, reason, "banned in XDP");
                true
            }
            Err(e) => {
                tracing::warn!(%addr, reason, error = %e, "XDP ban failed");
                false
            }
        }
    }
}
