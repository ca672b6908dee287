//! The access log's writer thread: drains the channel into a buffered sink, flushes at least every
//! 100 ms, and reopens a file when asked or when logrotate has moved it away.
//!
//! While lines flow, the thread does not wait on the channel: a receiver blocked on it is woken
//! by the sender of each line, a system call on the request path and, on a busy core, two
//! context switches per request, which cost more than the rest of the access log together. It
//! sleeps [`WRITE_TICK`] at a time instead and drains what arrived (the loggers also wake it
//! every [`super::WAKE_EVERY`] lines, so a burst never waits for the tick with a full channel).
//! After [`IDLE_TICKS`] ticks without a line it waits on the channel again, so that an idle
//! gateway's writer does not wake up at all.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines reach the destination at most this late.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// How long the writer sleeps between two drains of the channel while lines flow.
pub(crate) const WRITE_TICK: Duration = Duration::from_millis(10);
/// Ticks without a line after which the writer waits on the channel instead of ticking.
pub(crate) const IDLE_TICKS: u32 = 5;
/// Messages handled in one pass at most, so that the flush interval and the rotation check are
/// kept under a steady stream (4096 lines a tick is some 400,000 lines a second).
const DRAIN_MAX: usize = 4096;
/// How often the file's path is checked for a rename (logrotate's `create` mode).
const ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A failing disk must not flood the log with the same warning.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
const BUFFER_BYTES: usize = 64 * 1024;

/// What the request path and the control path send to the writer.
pub(crate) enum Msg {
    Line(Vec<u8>),
    /// Flush, then acknowledge.
    Flush(SyncSender<()>),
    /// Flush and exit.
    Close,
}

/// Where lines go.
pub(crate) enum Sink {
    Stdout(BufWriter<io::Stdout>),
    Stderr(BufWriter<io::Stderr>),
    File {
        path: PathBuf,
        out: BufWriter<File>,
        /// (device, inode) of the open file, to notice the path now names another file.
        id: (u64, u64),
    },
}

fn open_append(path: &PathBuf) -> io::Result<(BufWriter<File>, (u64, u64))> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let meta = file.metadata()?;
    Ok((
        BufWriter::with_capacity(BUFFER_BYTES, file),
        (meta.dev(), meta.ino()),
    ))
}

impl Sink {
    /// `stdout`, `stderr`, or a file opened for append (created if missing).
    pub(crate) fn open(path: &str) -> io::Result<Sink> {
        Ok(match path {
            "stdout" => Sink::Stdout(BufWriter::with_capacity(BUFFER_BYTES, io::stdout())),
            "stderr" => Sink::Stderr(BufWriter::with_capacity(BUFFER_BYTES, io::stderr())),
            p => {
                let path = PathBuf::from(p);
                let (out, id) = open_append(&path)?;
                Sink::File { path, out, id }
            }
        })
    }

    fn out(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::Stderr(w) => w,
            Sink::File { out, .. } => out,
        }
    }

    /// Whether the path no longer names the file we write to (renamed or deleted).
    fn moved(&self) -> bool {
        match self {
            Sink::File { path, id, .. } => match std::fs::metadata(path) {
                Ok(meta) => (meta.dev(), meta.ino()) != *id,
                Err(_) => true,
            },
            _ => false,
        }
    }

    /// Flushes the old file and opens the path afresh; on failure keeps the old handle.
    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { path, out, id } = self {
            out.flush()?;
            let (new_out, new_id) = open_append(path)?;
            *out = new_out;
            *id = new_id;
        }
        Ok(())
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) sink: Sink,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) reopen: Arc<AtomicBool>,
    last_error_log: Option<Instant>,
}

impl Writer {
    pub(crate) fn new(sink: Sink, rx: Receiver<Msg>, reopen: Arc<AtomicBool>) -> Self {
        Writer {
            sink,
            rx,
            reopen,
            last_error_log: None,
        }
    }

    pub(crate) fn run(mut self) {
        let mut last_flush = Instant::now();
        let mut last_check = Instant::now();
        let mut idle_ticks = IDLE_TICKS;
        // The last pass stopped at `DRAIN_MAX` with more queued: the next one does not sleep.
        let mut behind = false;
        loop {
            let first = if idle_ticks >= IDLE_TICKS {
                self.rx.recv_timeout(FLUSH_INTERVAL)
            } else {
                if !behind {
                    std::thread::park_timeout(WRITE_TICK);
                }
                self.try_recv()
            };
            if last_check.elapsed() >= ROTATION_CHECK_INTERVAL {
                last_check = Instant::now();
                if !self.reopen.load(Ordering::Acquire) && self.sink.moved() {
                    self.reopen_sink();
                }
            }
            let mut lines = false;
            let mut first = Some(first);
            behind = true;
            // What is queued, one message after the other (each taken only when it is handled).
            for _ in 0..DRAIN_MAX {
                let msg = match first.take() {
                    Some(m) => m,
                    None => self.try_recv(),
                };
                // Checked before each message, so a line logged after `reopen()` returned lands
                // in the new file.
                if self.reopen.load(Ordering::Acquire) && self.reopen.swap(false, Ordering::AcqRel)
                {
                    self.reopen_sink();
                }
                match msg {
                    Ok(Msg::Line(line)) => {
                        lines = true;
                        let r = self.sink.out().write_all(&line);
                        self.report(r, "writing the access log");
                    }
                    Ok(Msg::Flush(ack)) => {
                        self.flush();
                        last_flush = Instant::now();
                        // The caller may have given up waiting; nothing to do then.
                        let _ = ack.send(());
                    }
                    Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => {
                        self.flush();
                        return;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        behind = false;
                        break;
                    }
                }
            }
            idle_ticks = if lines {
                0
            } else {
                idle_ticks.saturating_add(1)
            };
            if last_flush.elapsed() >= FLUSH_INTERVAL {
                self.flush();
                last_flush = Instant::now();
            }
        }
    }

    /// The next message if one is queued (`Timeout`: none is).
    fn try_recv(&self) -> Result<Msg, RecvTimeoutError> {
        self.rx.try_recv().map_err(|e| match e {
            TryRecvError::Empty => RecvTimeoutError::Timeout,
            TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
        })
    }

    fn flush(&mut self) {
        let r = self.sink.out().flush();
        self.report(r, "flushing the access log");
    }

    fn reopen_sink(&mut self) {
        let r = self.sink.reopen();
        self.report(r, "reopening the access log");
    }

    fn report(&mut self, r: io::Result<()>, what: &str) {
        if let Err(error) = r {
            let quiet = self
                .last_error_log
                .is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL);
            if !quiet {
                self.last_error_log = Some(Instant::now());
                tracing::warn!(%error, "{what} failed");
            }
        }
    }
}
