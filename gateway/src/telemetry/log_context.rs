//! The trace ids of the traced request a worker thread is polling, so that the gateway's log
//! lines written meanwhile can name it (see [`super::logging`], which writes them as a
//! `request{trace_id=… span_id=…}` scope).
//!
//! Not a `tracing` span: creating one per request formatted both ids into the fmt layer's field
//! string, and entering and leaving it on every poll went through the registry and the env
//! filter — about 5,000 instructions per sampled request, for log lines that are rarely
//! written. Here a poll of the request's future sets a thread-local and restores it after; the
//! ids are formatted only when a line is actually written.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::otel::context::encode_into;

/// The ids a log line of a traced request carries: its trace and the gateway's server span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl LogIds {
    /// The trace id and the span id, lowercase hex.
    pub fn hex(&self) -> ([u8; 32], [u8; 16]) {
        let mut t = [0u8; 32];
        let mut s = [0u8; 16];
        encode_into(&self.trace_id, &mut t);
        encode_into(&self.span_id, &mut s);
        (t, s)
    }
}

thread_local! {
    static CURRENT: Cell<Option<LogIds>> = const { Cell::new(None) };
}

/// The ids of the traced request whose future this thread is polling, if any.
pub fn current() -> Option<LogIds> {
    CURRENT.with(Cell::get)
}

/// Makes `ids` this thread's current ones until dropped, then puts the previous ones back
/// (also when the poll unwinds).
struct Scope(Option<LogIds>);

impl Scope {
    fn enter(ids: LogIds) -> Scope {
        Scope(CURRENT.with(|c| c.replace(Some(ids))))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Run `f` with `ids` as this thread's current ones (tests, and code that is not a future).
pub fn with<R>(ids: LogIds, f: impl FnOnce() -> R) -> R {
    let _scope = Scope::enter(ids);
    f()
}

/// A future polled — and dropped — with `ids` as its thread's current ones; without ids, a
/// plain pass-through (an untraced request's lines carry no scope). The future stays where its
/// caller pinned it (e.g. with `std::pin::pin!` in an `async fn`): a traced request's future is
/// not moved into a box of its own, a copy of kilobytes.
pub struct WithLogIds<'a, F> {
    /// Emptied, inside the scope, when this is dropped before the future finished.
    inner: Pin<&'a mut Option<F>>,
    ids: Option<LogIds>,
}

impl<F> Drop for WithLogIds<'_, F> {
    fn drop(&mut self) {
        if let Some(ids) = self.ids {
            let _scope = Scope::enter(ids);
            self.inner.set(None);
        }
    }
}

impl<'a, F> WithLogIds<'a, F> {
    /// `inner`, polled with `ids` current.
    pub fn new(inner: Pin<&'a mut Option<F>>, ids: Option<LogIds>) -> Self {
        WithLogIds { inner, ids }
    }
}

impl<F: Future> Future for WithLogIds<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _scope = self.ids.map(Scope::enter);
        match self.inner.as_mut().as_pin_mut() {
            Some(f) => f.poll(cx),
            // Only the drop above empties it.
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: LogIds = LogIds {
        trace_id: [0x4b; 16],
        span_id: [0x0f; 8],
    };

    /// Notes the current ids when polled and when dropped.
    struct Probe<'a>(&'a Cell<Option<LogIds>>, &'a Cell<Option<LogIds>>);

    impl Future for Probe<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.0.set(current());
            Poll::Ready(())
        }
    }

    impl Drop for Probe<'_> {
        fn drop(&mut self) {
            self.1.set(current());
        }
    }

    fn run(ids: Option<LogIds>) -> (Option<LogIds>, Option<LogIds>) {
        let before = current();
        let (polled, dropped) = (Cell::new(None), Cell::new(None));
        let slot = std::pin::pin!(Some(Probe(&polled, &dropped)));
        let mut f = WithLogIds::new(slot, ids);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut f).poll(&mut cx).is_ready());
        assert_eq!(current(), before, "restored after the poll");
        drop(f);
        assert_eq!(current(), before, "restored after the drop");
        (polled.get(), dropped.get())
    }

    #[test]
    fn ids_are_current_while_polled_and_dropped_only() {
        assert_eq!(run(Some(IDS)), (Some(IDS), Some(IDS)));
        assert_eq!(run(None), (None, None));
        // Nested: the inner scope's ids win, the outer ones come back.
        let other = LogIds {
            trace_id: [1; 16],
            span_id: [2; 8],
        };
        with(other, || {
            assert_eq!(run(Some(IDS)).0, Some(IDS));
            assert_eq!(current(), Some(other));
        });
        assert_eq!(current(), None);
    }

    #[test]
    fn hex_is_lowercase() {
        let (t, s) = IDS.hex();
        assert_eq!(&t, b"4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b");
        assert_eq!(&s, b"0f0f0f0f0f0f0f0f");
    }
}
