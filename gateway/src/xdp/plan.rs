//! The `xdp:` config section turned into what the maps must hold. Validation lives here, so
//! `sluice check` reports a bad CIDR or rate without touching the kernel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_xdp_common::{
    Addr, RedirectAction, RedirectKey, Settings, REDIRECT_DEVMAP, REDIRECT_TX, TOKEN,
};

use super::layout::check_limits;
use super::rules::{net_key, parse_net, DenySet, RuleError};
use super::XdpError;
use crate::config::model::XdpConfig;

/// Highest accepted rate (packets or SYNs per second): keeps the program's fixed-point refill
/// (`elapsed_ns * rate`, elapsed capped at 100 s) inside u64.
pub const MAX_RATE: u64 = 100_000_000;
/// Ban duration when neither the caller nor `ban_default_ttl` gives one.
pub const DEFAULT_BAN_TTL: Duration = Duration::from_secs(600);

/// Everything the program's maps should hold for one config.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Allow prefixes in key form.
    pub allow: BTreeSet<(Addr, u32)>,
    /// The deny set (config `deny` plus every deny file).
    pub deny: DenySet,
    /// Rate limits.
    pub settings: Settings,
    /// Redirect rules; DEVMAP indices refer to `targets`.
    pub redirects: Vec<(RedirectKey, RedirectAction)>,
    /// Interface names at each DEVMAP index.
    pub targets: Vec<String>,
    /// Deny files, resolved against the config directory.
    pub deny_files: Vec<PathBuf>,
    /// Default ban duration.
    pub ban_ttl: Duration,
}

fn rate(pps: u64, burst: Option<u64>, place: &str) -> Result<(u64, u64), XdpError> {
    let burst = burst.unwrap_or(pps);
    if pps == 0 || pps > MAX_RATE || burst == 0 || burst > MAX_RATE * 10 {
        return Err(XdpError::Config(format!(
            "{place}: rate {pps}/s with burst {burst} is out of range; use 1..={MAX_RATE} per second and a burst of at least 1"
        )));
    }
    Ok((pps, burst * TOKEN))
}

impl Plan {
    /// Validate and translate `cfg`; relative deny files are resolved against `base`.
    ///
    /// # Errors
    /// A bad CIDR, an unreadable deny file, a rate out of range or a redirect rule that names
    /// an unknown protocol or no target.
    pub fn build(cfg: &XdpConfig, base: &Path) -> Result<Self, XdpError> {
        let mut allow = BTreeSet::new();
        for (i, c) in cfg.allow.iter().enumerate() {
            allow.insert(net_key(parse_net(c, &format!("xdp.allow[{i}]"))?));
        }
        let deny_files: Vec<PathBuf> = cfg.deny_files.iter().map(|f| base.join(f)).collect();
        let deny = load_deny(&cfg.deny, &deny_files)?;
        check_limits(&deny)?;
        let mut settings = Settings::default();
        if let Some(r) = &cfg.rate_limit {
            (settings.rate_pps, settings.rate_burst) =
                rate(r.packets_per_second, r.burst, "xdp.rate_limit")?;
        }
        if let Some(r) = &cfg.syn_rate_limit {
            (settings.syn_pps, settings.syn_burst) =
                rate(r.per_second, r.burst, "xdp.syn_rate_limit")?;
        }
        let mut redirects = Vec::new();
        let mut targets: Vec<String> = Vec::new();
        for (i, r) in cfg.redirect.iter().enumerate() {
            let place = format!("xdp.redirect[{i}]");
            let protocol = match r.matcher.protocol.to_ascii_lowercase().as_str() {
                "tcp" => 6,
                "udp" => 17,
                other => {
                    return Err(XdpError::Config(format!(
                        "{place}.match.protocol: `{other}` is not supported; use tcp or udp"
                    )))
                }
            };
            let key = RedirectKey {
                protocol,
                pad: 0,
                dst_port: r.matcher.dst_port.unwrap_or(0),
            };
            let action = match (&r.to_interface, r.tx) {
                (Some(name), false) => {
                    let index = match targets.iter().position(|t| t == name) {
                        Some(i) => i,
                        None => {
                            targets.push(name.clone());
                            targets.len() - 1
                        }
                    };
                    if index >= sluice_xdp_common::DEVMAP_MAX as usize {
                        return Err(XdpError::Config(format!(
                            "{place}: too many redirect interfaces (at most {})",
                            sluice_xdp_common::DEVMAP_MAX
                        )));
                    }
                    RedirectAction {
                        kind: REDIRECT_DEVMAP,
                        devmap_index: index as u32,
                    }
                }
                (None, true) => RedirectAction {
                    kind: REDIRECT_TX,
                    devmap_index: 0,
                },
                _ => {
                    return Err(XdpError::Config(format!(
                        "{place}: give exactly one of `to_interface: NAME` or `tx: true`"
                    )))
                }
            };
            redirects.push((key, action));
        }
        Ok(Plan {
            allow,
            deny,
            settings,
            redirects,
            targets,
            deny_files,
            ban_ttl: cfg
                .ban_default_ttl
                .map(|d| d.get())
                .unwrap_or(DEFAULT_BAN_TTL),
        })
    }
}

/// Build the deny set from config entries and files (also used when a deny file changes).
///
/// # Errors
/// A bad entry or unreadable file.
pub fn load_deny(deny: &[String], files: &[PathBuf]) -> Result<DenySet, RuleError> {
    let mut set = DenySet::default();
    set.extend_from_config(deny, "xdp.deny")?;
    for f in files {
        set.extend_from_file(f)?;
    }
    Ok(set)
}
