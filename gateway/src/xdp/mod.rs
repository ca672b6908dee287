//! The XDP fast path: loads the eBPF program from bpf/ (embedded at build time), attaches it to
//! the configured interface and drives its maps from config (allow/deny lists, deny files,
//! rate limits, redirects) and from L7 (bans through [`crate::services::BanSink`]).
//!
//! The program is an accelerator, not a dependency: without root, without kernel support or
//! without the embedded object, [`start`] logs one warning and returns `Ok(None)`, unless
//! `xdp.required: true`, which turns that into an error. See docs/xdp.md.

pub mod admin;
mod attach;
pub mod cli;
mod clock;
mod layout;
mod maps;
pub mod object;
mod plan;
pub mod rules;
mod runtime;
mod watch;

use std::path::Path;
use std::sync::Arc;

pub use maps::BanEntry;
pub use plan::{Plan, DEFAULT_BAN_TTL, MAX_RATE};
pub use runtime::Xdp;
pub use sluice_xdp_common::Reason;

use crate::config::model::XdpConfig;

/// Why the fast path could not start or a change could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The gateway was built without the eBPF object.
    #[error("XDP unavailable: {}", object::MISSING)]
    NoObject,
    /// The kernel refused to load the program (no CAP_BPF/root, no BPF support, verifier).
    #[error("XDP unavailable: cannot load the program: {0}")]
    Load(String),
    /// The program loaded but could not be attached to the interface.
    #[error("XDP unavailable: cannot attach to interface `{interface}` ({mode} mode): {reason}")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode that was tried last.
        mode: &'static str,
        /// Why.
        reason: String,
    },
    /// The object lacks a map the gateway expects (object and gateway built from different
    /// sources).
    #[error("XDP object has no map `{0}`; rebuild it with scripts/build-bpf.sh")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("XDP {what}: {source}")]
    Map {
        /// Which table.
        what: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// A redirect target could not be set.
    #[error("XDP redirect: {0}")]
    Redirect(String),
    /// The `xdp:` section is invalid.
    #[error("{0}")]
    Config(String),
    /// A deny list entry or file is invalid.
    #[error(transparent)]
    Rule(#[from] rules::RuleError),
    /// Every ban slot holds an unexpired ban; the new ban is refused rather than evicting one.
    #[error("XDP ban table full ({0} unexpired bans); the ban is not enforced in the kernel")]
    BansFull(u32),
    /// The fast path is not running (it was shut down).
    #[error("XDP is not running")]
    Stopped,
}

impl XdpError {
    /// True for the errors that mean "this machine cannot run XDP" (as opposed to a bad config):
    /// these become a warning unless `xdp.required` is set.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            XdpError::NoObject | XdpError::Load(_) | XdpError::Attach { .. }
        )
    }
}

/// Validate the `xdp:` section without touching the kernel (for `sluice check`).
///
/// # Errors
/// The first problem found, with its place in the file.
pub fn validate(cfg: &XdpConfig, base: &Path) -> Result<(), XdpError> {
    Plan::build(cfg, base).map(|_| ())
}

/// Start the fast path for `cfg` (relative paths resolved against `base`).
///
/// Returns `Ok(None)` after one warning when XDP cannot run here and `required` is false.
///
/// # Errors
/// A bad config always; an unavailable fast path only when `cfg.required`.
pub fn start(cfg: &XdpConfig, base: &Path) -> Result<Option<Arc<Xdp>>, XdpError> {
    let plan = Plan::build(cfg, base)?;
    match Xdp::start(cfg, plan) {
        Ok(xdp) => Ok(Some(xdp)),
        Err(e) if e.is_unavailable() && !cfg.required => {
            tracing::warn!(
                error = %e,
                "the XDP fast path is off; the gateway runs without it (set xdp.required: true to make this an error)"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether this build carries the eBPF object.
pub fn built_with_object() -> bool {
    object::embedded().is_some()
}
