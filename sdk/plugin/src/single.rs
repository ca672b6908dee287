//! State the module's callbacks share, without `thread_local!`'s cost in a proxy-wasm VM.
//!
//! A proxy-wasm VM runs one thread. On `wasm32` without the `atomics` target feature (every
//! proxy-wasm target: `wasm32-wasip1`, `wasm32-unknown-unknown`), `thread_local!` still reaches
//! its value through an accessor function called indirectly (`call_indirect`, with its table
//! and signature checks, then the accessor's own frame) at every `with`. The callbacks of a
//! request pass through such a value several times, so [`crate::single_thread_static!`] declares a
//! plain `static` there instead: the same `NAME.with(|v| ...)` is a direct load. Elsewhere
//! (the crate's native unit tests, a threaded wasm target) it stays a `thread_local!`.

/// Declares statics shared by the module's callbacks: a plain `static` of [`Single`] where the
/// module has one thread, a `thread_local!` elsewhere; read both as `NAME.with(|v| ...)`. The
/// initializer must be a constant expression.
#[doc(hidden)]
#[macro_export]
macro_rules! single_thread_static {
    ($($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr;)*) => {$(
        #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
        $(#[$attr])*
        $vis static $name: $crate::single::Single<$t> = $crate::single::Single::new($init);
        #[cfg(not(all(target_family = "wasm", not(target_feature = "atomics"))))]
        ::std::thread_local! {
            $(#[$attr])*
            $vis static $name: $t = const { $init };
        }
    )*};
}

/// A value for the only thread of a wasm module without threads (see [`crate::single_thread_static!`]).
pub struct Single<T>(T);

impl<T> Single<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Single(value)
    }

    /// Calls `f` with the value, as `LocalKey::with` does.
    #[inline(always)]
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.0)
    }
}

// SAFETY: without the `atomics` target feature a wasm module's memory cannot be shared, so the
// module runs on exactly one thread: no reference to the value ever crosses to another thread.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
unsafe impl<T> Sync for Single<T> {}
