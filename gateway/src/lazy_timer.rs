//! A reusable timeout whose deadline mostly moves later — a connection's idle timeout, a
//! route's timeout — without touching tokio's timer wheel on every request.
//!
//! Re-arming a `tokio::time::Sleep` takes the time driver's lock and updates the entry's
//! atomic state (six atomic read-modify-writes per request for the two timers of a proxied
//! request), and every poll of a pending `Sleep` re-registers the task's waker (two more). A
//! [`LazyTimer`] only remembers a later deadline: the armed `Sleep` fires at the old one, finds
//! the deadline not reached, and re-arms itself for it — once per timeout period instead of
//! once per request. A pending timer polled again by the task it already wakes is not
//! re-registered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// A timeout that fires at [`LazyTimer::deadline`] (never before, and as promptly as a
/// `Sleep`).
pub struct LazyTimer {
    /// Armed at or before `deadline`.
    sleep: Pin<Box<Sleep>>,
    deadline: Instant,
    /// The waker `sleep` will wake, when it is registered and armed for the current deadline or
    /// earlier.
    registered: Option<Waker>,
}

impl LazyTimer {
    /// A timer that fires at `deadline`.
    pub fn new(deadline: Instant) -> Self {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
            registered: None,
        }
    }

    /// When the timer fires.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Fire at `deadline` instead. A later deadline is only remembered; an earlier one re-arms
    /// the timer now.
    pub fn set(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if deadline < self.sleep.deadline() {
            self.sleep.as_mut().reset(deadline);
            self.registered = None;
        }
    }

    /// `Ready` once the deadline has passed; otherwise the task is woken when it does.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(w) = &self.registered {
            if w.will_wake(cx.waker()) && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
        }
        loop {
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => {
                    if !self
                        .registered
                        .as_ref()
                        .is_some_and(|w| w.will_wake(cx.waker()))
                    {
                        self.registered = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(()) => {
                    if self.sleep.deadline() >= self.deadline {
                        self.registered = None;
                        return Poll::Ready(());
                    }
                    // Armed for an earlier deadline than the current one: wait the rest.
                    self.sleep.as_mut().reset(self.deadline);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    /// Fired no earlier than `deadline`, and not absurdly late (a loaded machine is slow, not
    /// seconds slow).
    fn fired_at(deadline: Instant) {
        let now = Instant::now();
        assert!(now >= deadline, "fired {:?} early", deadline - now);
        assert!(
            now - deadline < Duration::from_secs(5),
            "fired {:?} late",
            now - deadline
        );
    }

    #[tokio::test]
    async fn fires_at_the_latest_deadline_not_the_first_armed_one() {
        let start = Instant::now();
        let mut t = LazyTimer::new(start + 20 * MS);
        // Pending, registered.
        assert!(poll_fn(|cx| Poll::Ready(t.poll_expired(cx)))
            .await
            .is_pending());
        t.set(start + 80 * MS);
        poll_fn(|cx| t.poll_expired(cx)).await;
        fired_at(start + 80 * MS);
    }

    #[tokio::test]
    async fn an_earlier_deadline_rearms_at_once() {
        let start = Instant::now();
        let mut t = LazyTimer::new(start + Duration::from_secs(60));
        assert!(poll_fn(|cx| Poll::Ready(t.poll_expired(cx)))
            .await
            .is_pending());
        t.set(start + 30 * MS);
        let armed =
            tokio::time::timeout(Duration::from_secs(10), poll_fn(|cx| t.poll_expired(cx))).await;
        assert!(armed.is_ok(), "the earlier deadline was not armed");
        fired_at(start + 30 * MS);
    }

    #[tokio::test]
    async fn wakes_the_task_that_polled_it_and_is_reusable() {
        let start = Instant::now();
        let mut t = LazyTimer::new(start + 10 * MS);
        poll_fn(|cx| t.poll_expired(cx)).await;
        fired_at(start + 10 * MS);
        // Reused after firing, with a later deadline, and polled from another task (another
        // waker): it still fires, on time.
        let again = Instant::now() + 40 * MS;
        t.set(again);
        assert_eq!(t.deadline(), again);
        let handle = tokio::spawn(async move {
            poll_fn(|cx| t.poll_expired(cx)).await;
        });
        let done = tokio::time::timeout(Duration::from_secs(10), handle).await;
        assert!(
            matches!(done, Ok(Ok(()))),
            "the other task was not woken: {done:?}"
        );
        fired_at(again);
    }
}
