//! Why a VM failed, and per-plugin failure counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use dashmap::DashMap;

/// The kind of a VM failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// A trap: `unreachable` (a panic in the guest), an out-of-bounds access, a bad call.
    Trap,
    /// The callback ran past its deadline (epoch interruption).
    Deadline,
    /// The callback used up its instruction budget.
    Fuel,
    /// The guest tried to grow memory past its cap (and then trapped).
    MemoryLimit,
    /// The guest called WASI `proc_exit`.
    ProcExit,
    /// Instantiation, `_start`, `on_vm_start` or `on_configure` failed.
    Start,
    /// A stream stayed paused longer than `limits.pause_timeout` (the VM itself lives on).
    PauseTimeout,
}

impl FailureKind {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Fuel => "fuel",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::ProcExit => "proc_exit",
            FailureKind::Start => "start",
            FailureKind::PauseTimeout => "pause_timeout",
        }
    }
}

/// A VM failure: the VM is not used again.
#[derive(Clone, Debug, thiserror::Error)]
#[error("plugin {plugin}: {} : {message}", kind.as_str())]
pub struct Failure {
    pub plugin: String,
    pub kind: FailureKind,
    pub message: String,
}

fn counters() -> &'static DashMap<(String, FailureKind), AtomicU64> {
    static C: OnceLock<DashMap<(String, FailureKind), AtomicU64>> = OnceLock::new();
    C.get_or_init(DashMap::new)
}

/// Count a failure (called once per failure event).
pub(crate) fn count(plugin: &str, kind: FailureKind) {
    counters()
        .entry((plugin.to_string(), kind))
        .or_insert_with(|| AtomicU64::new(0))
        .fetch_add(1, Ordering::Relaxed);
}

/// Count a failure the embedder detected itself (a pause timeout): it shows on `/metrics` with
/// the VM failures.
pub fn count_event(plugin: &str, kind: FailureKind) {
    count(plugin, kind);
}

/// Every `(plugin, kind, count)` seen since start, sorted.
pub fn failure_counts() -> Vec<(String, &'static str, u64)> {
    let mut v: Vec<_> = counters()
        .iter()
        .map(|e| {
            (
                e.key().0.clone(),
                e.key().1.as_str(),
                e.value().load(Ordering::Relaxed),
            )
        })
        .collect();
    v.sort();
    v
}

/// Prometheus text of the failure counters.
pub fn render_prometheus() -> String {
    let mut out = String::from("# TYPE sluice_plugin_failures_total counter\n");
    for (plugin, kind, n) in failure_counts() {
        let plugin = plugin.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!(
            "sluice_plugin_failures_total{{plugin=\"{plugin}\",kind=\"{kind}\"}} {n}\n"
        ));
    }
    out
}
