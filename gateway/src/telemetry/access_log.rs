//! The JSON access log: one object per line, written by a dedicated thread.
//!
//! The request path formats its line into a fresh buffer and hands it over with a non-blocking
//! `try_send` on a bounded channel; it never waits for I/O. When the writer falls behind the
//! channel fills up and further lines are dropped and counted (`sluice_access_log_dropped_total`)
//! rather than slowing traffic down. Field meanings are documented in docs/observability.md.

#![warn(missing_docs)]

mod json;
mod writer;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::config::model::AccessLogConfig;
use crate::telemetry::metrics::Metrics;
use writer::{Msg, Sink, Writer};

/// Lines queued between the workers and the writer; about 8 MB at a typical line size.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;
/// A logging thread wakes the writer after this many lines (see `writer`'s module docs): far
/// below [`CHANNEL_CAPACITY`], so a burst from every worker at once fits in the channel.
const WAKE_EVERY: u32 = 256;

thread_local! {
    /// Lines this thread logged since it last woke the writer.
    static SINCE_WAKE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
/// How long `flush` waits for the writer before giving up (a stuck disk must not hang shutdown).
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// One finished exchange, borrowed from the request's state: building it allocates nothing.
/// Header-derived fields are bytes because header values need not be UTF-8.
#[derive(Clone, Debug)]
pub struct AccessLogEntry<'a> {
    /// When the request's first byte arrived.
    pub start_time: SystemTime,
    /// Until the response's last byte was sent (or the exchange was aborted).
    pub duration: Duration,
    /// Until the response's first byte was sent; `None` when no response was sent.
    pub ttfb: Option<Duration>,
    /// Listener name.
    pub listener: &'a str,
    /// Route name; "" when no route matched.
    pub route: &'a str,
    /// Cluster name; "" when the gateway answered locally.
    pub cluster: &'a str,
    /// The upstream endpoint of the last attempt, if one was chosen.
    pub upstream_addr: Option<SocketAddr>,
    /// The client's address (the TCP peer), if known.
    pub client_addr: Option<SocketAddr>,
    /// Request method.
    pub method: &'a str,
    /// `:authority` or `Host`.
    pub authority: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    /// HTTP version of the client's request.
    pub protocol: http::Version,
    /// Response status sent to the client (0 when none was sent).
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_received: u64,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// `x-request-id`, as received or generated.
    pub request_id: &'a [u8],
    /// `user-agent` request header.
    pub user_agent: &'a [u8],
    /// `referer` request header.
    pub referer: &'a [u8],
    /// `x-forwarded-for` request header as received.
    pub x_forwarded_for: &'a [u8],
    /// Why the gateway answered locally or how the upstream failed; "" for a proxied response.
    pub details: &'a str,
    /// W3C trace id (hex) when tracing is on; else "".
    pub trace_id: &'a str,
    /// W3C span id (hex) of the gateway's span when tracing is on; else "".
    pub span_id: &'a str,
}

impl Default for AccessLogEntry<'_> {
    fn default() -> Self {
        AccessLogEntry {
            start_time: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            ttfb: None,
            listener: "",
            route: "",
            cluster: "",
            upstream_addr: None,
            client_addr: None,
            method: "",
            authority: "",
            path: "",
            protocol: http::Version::HTTP_11,
            status: 0,
            bytes_received: 0,
            bytes_sent: 0,
            request_id: b"",
            user_agent: b"",
            referer: b"",
            x_forwarded_for: b"",
            details: "",
            trace_id: "",
            span_id: "",
        }
    }
}

/// The error for a `format` other than `json`.
fn unsupported_format(format: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("access log format `{format}` is not supported; use `json`"),
    )
}

/// The guarded values are handles with no invariant a panic could break.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running access log; share it as `Arc<AccessLog>`.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    /// The writer thread, woken every [`WAKE_EVERY`] lines and for flushes.
    writer: std::thread::Thread,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Disconnects when the writer thread exits, however it exits.
    exited: Mutex<mpsc::Receiver<()>>,
}

impl AccessLog {
    /// Opens the destination and starts the writer thread; drops are counted privately.
    ///
    /// # Errors
    /// An unsupported format, a file that cannot be opened for append, or a thread that cannot
    /// be started.
    pub fn open(cfg: &AccessLogConfig) -> io::Result<Arc<AccessLog>> {
        Self::open_counting(cfg, Arc::new(AtomicU64::new(0)))
    }

    /// Like [`AccessLog::open`], counting dropped lines in `metrics`
    /// (`sluice_access_log_dropped_total`), so the count survives a reopen after a reload.
    ///
    /// # Errors
    /// As [`AccessLog::open`].
    pub fn open_with_metrics(
        cfg: &AccessLogConfig,
        metrics: &Metrics,
    ) -> io::Result<Arc<AccessLog>> {
        Self::open_counting(cfg, metrics.access_log_dropped())
    }

    fn open_counting(cfg: &AccessLogConfig, dropped: Arc<AtomicU64>) -> io::Result<Arc<AccessLog>> {
        if cfg.format != "json" {
            return Err(unsupported_format(&cfg.format));
        }
        let sink = Sink::open(&cfg.path)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer::new(sink, rx, reopen.clone());
        let (exit_guard, exited) = mpsc::sync_channel::<()>(0);
        let thread = std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || {
                // Dropped on return or unwind: `exited` then reports the thread gone.
                let _exit_guard = exit_guard;
                writer.run();
            })?;
        Ok(Arc::new(AccessLog {
            tx,
            writer: thread.thread().clone(),
            dropped,
            reopen,
            closed: AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            exited: Mutex::new(exited),
        }))
    }

    /// Queues one line; never blocks. Drops (and counts) it when the writer is behind or closed.
    pub fn log(&self, e: &AccessLogEntry<'_>) {
        if self.closed.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let line = json::format_line(e);
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {
                let n = SINCE_WAKE.with(|c| {
                    let n = c.get() + 1;
                    c.set(if n >= WAKE_EVERY { 0 } else { n });
                    n
                });
                if n >= WAKE_EVERY {
                    self.writer.unpark();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file by path before the next line (after logrotate moved it); no-op for
    /// stdout/stderr. A renamed or deleted file is also noticed on its own within about a second.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Calls [`AccessLog::reopen`] on every SIGUSR1, for as long as this log is alive.
    ///
    /// # Errors
    /// Outside a tokio runtime with I/O enabled, or when the signal cannot be registered.
    pub fn reopen_on_sigusr1(self: &Arc<Self>) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let handle = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let _guard = handle.enter();
        let mut sig = signal(SignalKind::user_defined1())?;
        let weak: Weak<AccessLog> = Arc::downgrade(self);
        handle.spawn(async move {
            while sig.recv().await.is_some() {
                match weak.upgrade() {
                    Some(log) => log.reopen(),
                    None => break,
                }
            }
        });
        Ok(())
    }

    /// Waits until every line queued so far is written out (at most a few seconds).
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            self.writer.unpark();
            // A timeout or a dead writer both mean there is nothing more to wait for.
            let _ = ack_rx.recv_timeout(FLUSH_WAIT);
        }
    }

    /// Writes out everything queued, stops the writer thread and drops later lines. Waits a few
    /// seconds at most: a destination that hangs (a stuck network disk) must not hang shutdown.
    pub fn flush_and_close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut msg = Msg::Close;
        loop {
            match self.tx.try_send(msg) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    self.writer.unpark();
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => break,
            }
        }
        self.writer.unpark();
        let left = deadline.saturating_duration_since(Instant::now());
        let exited = lock(&self.exited).recv_timeout(left);
        if matches!(exited, Err(RecvTimeoutError::Timeout)) {
            tracing::warn!("the access log writer did not finish in time; lines may be lost");
            return;
        }
        let thread = lock(&self.thread).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::error!("the access log writer thread panicked");
            }
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.flush_and_close();
    }
}
