//! Processes the harness starts: pinned to a core, in their own process group, stopped (the whole
//! group) when their guard drops — on success, on error and on Ctrl-C alike.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::signal;

/// How long a process gets to stop after SIGTERM before its group is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a server gets to answer its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// One probe's socket timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A running process, stopped with its whole process group on drop.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args` under `taskset -c CORE`, stdout and stderr to `log`.
    ///
    /// taskset execs the program, so the child's pid is the program's pid, and its children
    /// (nginx's worker) inherit both the pinning and the process group.
    pub fn spawn_pinned(
        name: &str,
        core: u32,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(core.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Logs go to a file, read by people: no colour escapes.
            .env("NO_COLOR", "1")
            // Own group: a terminal Ctrl-C reaches only the harness, which then stops the group.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                // If the harness is killed outright, its children still get SIGTERM.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {name}: taskset -c {core} {} {}",
                program.display(),
                args.join(" ")
            )
        })?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits for exit, polling for Ctrl-C; `None` if still running after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(status) = self.exited() {
                return Ok(Some(status));
            }
            signal::sleep(Duration::from_millis(20))?;
        }
        Ok(self.exited())
    }

    /// The last lines of its output, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 20)
    }

    /// Fails with the log tail unless the process is still running.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            None => Ok(()),
            Some(status) => {
                // The last line is usually the reason; it goes first, for one-line reports.
                let tail = self.log_tail();
                let last = tail.lines().last().unwrap_or("no output");
                anyhow::bail!("{} exited ({status}): {last}\n{tail}", self.name)
            }
        }
    }

    /// Polls `probe` until it succeeds, failing if the process exits or [`READY_TIMEOUT`] passes.
    pub fn wait_ready(
        &mut self,
        mut probe: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            let last = match probe() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= end {
                // The probe's complaint first: it is the one-line reason in reports.
                anyhow::bail!(
                    "{} not ready after {READY_TIMEOUT:?}: {last:#}; its output:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            signal::sleep(Duration::from_millis(100))?;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = self.child.id() as libc::pid_t;
        if self.exited().is_none() {
            // SAFETY: kill has no memory effects; a negative pid addresses our child's own group.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            let end = Instant::now() + STOP_GRACE;
            while self.exited().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left of the group (a worker whose master died) goes too; ESRCH is fine.
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An HTTP/1.1 response head: status and headers (names lowercased).
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The first line of the body, if it arrived with the head (at most 80 characters).
    pub body_start: String,
}

impl Head {
    /// Whether a header of that (lowercase) name is present.
    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

/// `GET path` over a fresh connection, returning the response head. Enough for readiness and
/// sanity probes; the load itself comes from wrk.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Head> {
    let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(PROBE_TIMEOUT))?;
    s.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    // Read until the end of the head (or EOF): the body does not matter.
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s
            .read(&mut chunk)
            .with_context(|| format!("reading from {addr}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        anyhow::ensure!(buf.len() < 65536, "response head from {addr} too large");
    }
    parse_head(&String::from_utf8_lossy(&buf)).with_context(|| format!("GET http://{addr}{path}"))
}

fn parse_head(text: &str) -> anyhow::Result<Head> {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {status_line:?}"))?;
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // Whatever of the body came with the head: an error page's first line says why.
    let body_start = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| body.lines().next())
        .map(|l| l.chars().take(80).collect())
        .unwrap_or_default();
    Ok(Head {
        status,
        headers,
        body_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;
    use std::net::TcpListener;

    #[test]
    fn parses_a_response_head() -> anyhow::Result<()> {
        let head = parse_head("HTTP/1.1 200 OK\r\nX-Bench: 1\r\nContent-Length: 6\r\n\r\nhello\n")?;
        assert_eq!(head.status, 200);
        assert!(head.has("x-bench"));
        assert!(!head.has("x-other"));
        assert_eq!(head.body_start, "hello");
        assert!(parse_head("garbage").is_err());
        Ok(())
    }

    #[test]
    fn http_get_talks_to_a_real_server() -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> std::io::Result<String> {
            let (s, _) = listener.accept()?;
            let mut reader = std::io::BufReader::new(s.try_clone()?);
            let mut first = String::new();
            reader.read_line(&mut first)?;
            // Read the whole head: closing with unread input would reset the connection.
            let mut line = String::new();
            while reader.read_line(&mut line)? > 2 {
                line.clear();
            }
            (&s).write_all(b"HTTP/1.1 503 Service Unavailable\r\nX-A: b\r\n\r\n")?;
            Ok(first)
        });
        let head = http_get(addr, "/ready")?;
        assert_eq!(head.status, 503);
        assert!(head.has("x-a"));
        let first = server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
        assert_eq!(first, "GET /ready HTTP/1.1\r\n");
        Ok(())
    }

    #[test]
    fn guard_stops_the_whole_group() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-proc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // A parent whose child would outlive it: the guard must take both.
        let pid_file = dir.join("child.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
        let mut p =
            Proc::spawn_pinned("sh", 0, Path::new("sh"), &["-c", &script], &dir.join("log"))?;
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&pid_file).map_or(true, |s| !s.ends_with('\n'))
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        p.check_running()?;
        let child: u32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
        drop(p);
        // A killed process may linger as a zombie until its new parent reaps it: that is dead.
        let running = || {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .map(|s| {
                    s.rsplit_once(") ")
                        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
                })
                .unwrap_or(false)
        };
        let end = Instant::now() + Duration::from_secs(10);
        while running() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::remove_dir_all(&dir)?;
        assert!(!running(), "grandchild {child} survived the guard");
        Ok(())
    }
}
