//! Resource limits of a plugin VM: a memory cap enforced by a wasmtime `ResourceLimiter`, a
//! deadline per callback (epoch interruption) and an optional instruction budget (fuel).

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Default cap on a VM's linear memory.
pub const DEFAULT_MEMORY: usize = 64 * 1024 * 1024;
/// Default deadline of one callback.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_millis(100);
/// Default bound on a body a plugin buffers.
pub const DEFAULT_MAX_BUFFERED_BODY: usize = 10 * 1024 * 1024;
/// Default bound on how long a stream stays paused by a plugin (waiting for
/// `proxy_continue_stream`, a local response or its callouts) before the failure policy applies.
pub const DEFAULT_PAUSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest table a plugin may grow (function pointers); generous for any real program.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The limits of one plugin.
#[derive(Clone, Debug)]
pub struct Limits {
    pub memory: usize,
    pub callback_timeout: Duration,
    pub fuel: Option<u64>,
    pub max_buffered_body: usize,
    /// How long one pause of a stream may last.
    pub pause_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY,
            callback_timeout: DEFAULT_CALLBACK_TIMEOUT,
            fuel: None,
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
            pause_timeout: DEFAULT_PAUSE_TIMEOUT,
        }
    }
}

/// Refuses memory growth past the cap and remembers that it did, so the trap that usually follows
/// (the guest's allocator aborts) is reported as a memory-limit failure.
pub struct MemoryLimiter {
    max: usize,
    pub(crate) hit: bool,
    /// Memory grew since the embedder last looked (so it need not ask the store every callback).
    pub(crate) grew: bool,
}

impl MemoryLimiter {
    pub fn new(max: usize) -> Self {
        MemoryLimiter {
            max,
            hit: false,
            grew: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        self.grew = true;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
