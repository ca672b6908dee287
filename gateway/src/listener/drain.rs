//! A listener's drain signal on one worker, as its HTTP/1.1 connections read it: once per
//! request (is the gateway draining?) and while waiting for the next request (wake me when it
//! starts).
//!
//! A `tokio::sync::watch` receiver answers both, but with atomics every time: each read takes
//! its lock, and each wait adds and removes a waiter under the notifier's mutex — about ten
//! atomic read-modify-writes per keep-alive request. Here the flag is a `Cell` (the worker is
//! one thread) and a connection registers its task's waker once, on its first wait, and stays
//! registered until it closes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// The drain state of one listener on one worker.
#[derive(Default)]
pub struct Drain {
    on: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl Drain {
    /// Start draining: every registered connection is woken. Idempotent.
    pub fn start(&self) {
        if self.on.replace(true) {
            return;
        }
        // Taken out first: a woken task may not run before this returns, but a waker's `wake`
        // must not find the slab borrowed if it runs inline.
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// One connection's view of `drain`.
    pub fn watch(drain: &Rc<Drain>) -> DrainWatch {
        DrainWatch {
            drain: drain.clone(),
            key: None,
        }
    }
}

/// One connection's view of its listener's [`Drain`].
pub struct DrainWatch {
    drain: Rc<Drain>,
    /// Where this connection's waker is registered.
    key: Option<usize>,
}

impl DrainWatch {
    /// A watch that never drains (a connection served outside a listener).
    pub fn never() -> DrainWatch {
        Drain::watch(&Rc::new(Drain::default()))
    }

    /// Whether the gateway is draining this listener.
    pub fn is_draining(&self) -> bool {
        self.drain.on.get()
    }

    /// `Ready` once draining has started; otherwise the task is woken when it starts. The first
    /// call registers the task's waker; later calls from the same task cost a comparison.
    pub fn poll_draining(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.on.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.drain.waiters.borrow_mut();
        match self.key.and_then(|k| waiters.get_mut(k)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    w.clone_from(cx.waker());
                }
            }
            None => self.key = Some(waiters.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for DrainWatch {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut waiters = self.drain.waiters.borrow_mut();
            // After `start` the slab is empty and the key is gone.
            if waiters.contains(k) {
                waiters.remove(k);
            }
        }
    }
}

/// Starts `drain` when dropped: the accept loop holds one, so that its connections drain
/// whenever it ends.
pub struct StartOnDrop(pub Rc<Drain>);

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        self.0.start();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    #[tokio::test]
    async fn waiting_connections_wake_when_draining_starts_and_closed_ones_leave_no_waker() {
        let drain = Rc::new(Drain::default());
        let mut a = Drain::watch(&drain);
        let b = Drain::watch(&drain);
        assert!(!a.is_draining() && !b.is_draining());
        // `a` registers once; polling again from the same task does not add a waker.
        assert!(poll_fn(|cx| Poll::Ready(a.poll_draining(cx)))
            .await
            .is_pending());
        assert!(poll_fn(|cx| Poll::Ready(a.poll_draining(cx)))
            .await
            .is_pending());
        assert_eq!(drain.waiters.borrow().len(), 1);
        let mut c = Drain::watch(&drain);
        assert!(poll_fn(|cx| Poll::Ready(c.poll_draining(cx)))
            .await
            .is_pending());
        drop(c);
        assert_eq!(
            drain.waiters.borrow().len(),
            1,
            "a closed connection's waker stays"
        );

        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let d = drain.clone();
                let waiter = tokio::task::spawn_local(async move {
                    poll_fn(|cx| a.poll_draining(cx)).await;
                    a.is_draining()
                });
                tokio::task::yield_now().await;
                drop(StartOnDrop(d));
                let woken = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await;
                assert!(
                    matches!(woken, Ok(Ok(true))),
                    "not woken by drain: {woken:?}"
                );
            })
            .await;
        assert!(b.is_draining());
        drain.start();
        assert!(drain.waiters.borrow().is_empty());
    }
}
