//! Graceful binary upgrade: a new Sluice process takes over the listening sockets of a running
//! one over a unix socket (`sluice run --handover PATH`), with SCM_RIGHTS. The sockets are the
//! very same kernel objects, so their accept queues carry over and no connection is refused;
//! the old process then stops accepting, finishes its open requests and exits.
//!
//! Protocol (one connection per upgrade): the old process sends a 4-byte big-endian length and
//! a JSON list `[{"name": listener, "count": n}, ...]` with all sockets attached in that order;
//! the new process starts serving on them, binds PATH for the next upgrade, and writes `ready`.
//! The old process answers `draining` and drains.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most descriptors one message can carry (the kernel's SCM_MAX_FD).
const MAX_FDS: usize = 253;
/// Longest accepted listener list, in bytes.
const MAX_HEADER: usize = 1 << 20;
/// How long either side waits for the other before giving up on a handover.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a handover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("handover from {path}: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// Listening sockets by listener name (one per worker of the process that bound them).
pub type Sockets = HashMap<String, Vec<std::net::TcpListener>>;

/// The listening sockets of this process, kept (as duplicates) so they can be handed over.
/// Reloads update it when they add, move or remove listeners.
#[derive(Default)]
pub struct SocketRegistry {
    sockets: Mutex<Sockets>,
}

impl SocketRegistry {
    /// Keep duplicates of `socks` for listener `name`, replacing what it had.
    pub fn set(&self, name: &str, socks: &[std::net::TcpListener]) {
        let dups: Vec<_> = socks.iter().filter_map(|s| s.try_clone().ok()).collect();
        lock(&self.sockets).insert(name.to_string(), dups);
    }

    /// Keep a duplicate of one more socket of listener `name`.
    pub fn add(&self, name: &str, sock: &std::net::TcpListener) {
        if let Ok(dup) = sock.try_clone() {
            lock(&self.sockets)
                .entry(name.to_string())
                .or_default()
                .push(dup);
        }
    }

    /// Forget listener `name` (closed by a reload).
    pub fn remove(&self, name: &str) {
        lock(&self.sockets).remove(name);
    }

    fn snapshot(&self) -> Vec<(String, Vec<RawFd>)> {
        let s = lock(&self.sockets);
        let mut out: Vec<_> = s
            .iter()
            .map(|(n, v)| (n.clone(), v.iter().map(AsRawFd::as_raw_fd).collect()))
            .collect();
        out.sort();
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The new process's side, between receiving the sockets and telling the old one to drain.
pub struct Takeover {
    stream: UnixStream,
    path: PathBuf,
}

/// Connect to the process serving handovers at `path` and receive its listening sockets.
/// `Ok(None)`: nobody listens there (a first start), so bind as usual.
///
/// # Errors
/// Someone listens but the exchange failed.
pub fn receive(path: &Path) -> Result<Option<(Sockets, Takeover)>, HandoverError> {
    let io = |source| HandoverError::Io {
        path: path.to_path_buf(),
        source,
    };
    let proto = |message: String| HandoverError::Protocol {
        path: path.to_path_buf(),
        message,
    };
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(io(e)),
    };
    stream
        .set_read_timeout(Some(HANDOVER_TIMEOUT))
        .map_err(io)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = recv_with_fds(&stream, &mut buf).map_err(io)?;
    if n < 4 {
        return Err(proto("the old process closed the connection".into()));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_HEADER {
        return Err(proto(format!("listener list of {len} bytes")));
    }
    let mut header = buf[4..n].to_vec();
    if header.len() < len {
        let mut rest = vec![0u8; len - header.len()];
        stream.read_exact(&mut rest).map_err(io)?;
        header.extend_from_slice(&rest);
    }
    header.truncate(len);
    let list: Vec<(String, usize)> = serde_json::from_slice::<Vec<Entry>>(&header)
        .map_err(|e| proto(format!("bad listener list: {e}")))?
        .into_iter()
        .map(|e| (e.name, e.count))
        .collect();
    let want: usize = list.iter().map(|(_, c)| c).sum();
    if want != fds.len() {
        return Err(proto(format!(
            "{} sockets announced, {} received",
            want,
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut out = Sockets::new();
    for (name, count) in list {
        let socks: Vec<std::net::TcpListener> = fds.by_ref().take(count).map(Into::into).collect();
        for s in &socks {
            s.set_nonblocking(true).map_err(io)?;
        }
        out.insert(name, socks);
    }
    Ok(Some((
        out,
        Takeover {
            stream,
            path: path.to_path_buf(),
        },
    )))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    name: String,
    count: usize,
}

impl Takeover {
    /// This process serves now: tell the old one to stop accepting and drain, and wait until it
    /// acknowledges (so its admin port is being released).
    ///
    /// # Errors
    /// The old process went away before acknowledging.
    pub fn finish(mut self) -> Result<(), HandoverError> {
        let io = |source| HandoverError::Io {
            path: self.path.clone(),
            source,
        };
        self.stream.write_all(b"ready\n").map_err(io)?;
        let mut ack = [0u8; 9];
        self.stream.read_exact(&mut ack).map_err(io)?;
        if &ack != b"draining\n" {
            return Err(HandoverError::Protocol {
                path: self.path.clone(),
                message: "unexpected answer to ready".into(),
            });
        }
        Ok(())
    }
}

/// Serve handovers at `path` on a thread: hand `registry`'s sockets to the next process and call
/// `drain` once it serves. A stale socket file (from a process that died) is replaced.
///
/// # Errors
/// `path` cannot be bound.
pub fn serve(
    path: &Path,
    registry: Arc<SocketRegistry>,
    drain: impl Fn() + Send + 'static,
) -> Result<(), HandoverError> {
    let io = |source| HandoverError::Io {
        path: path.to_path_buf(),
        source,
    };
    // The previous owner (if any) has handed over already or is gone: take the name.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let label = path.display().to_string();
    std::thread::Builder::new()
        .name("sluice-handover".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                match hand_over(conn, &registry) {
                    Ok(()) => {
                        tracing::info!(socket = %label, "listening sockets handed over to a new process; draining");
                        drain();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(socket = %label, error = %e, "handover failed; this process keeps serving")
                    }
                }
            }
        })
        .map_err(io)?;
    Ok(())
}

fn hand_over(mut conn: UnixStream, registry: &SocketRegistry) -> std::io::Result<()> {
    conn.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    let list = registry.snapshot();
    let entries: Vec<Entry> = list
        .iter()
        .map(|(name, fds)| Entry {
            name: name.clone(),
            count: fds.len(),
        })
        .collect();
    let fds: Vec<RawFd> = list.into_iter().flat_map(|(_, f)| f).collect();
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other(format!(
            "{} listening sockets; at most {MAX_FDS} can be handed over",
            fds.len()
        )));
    }
    let header = serde_json::to_vec(&entries).map_err(std::io::Error::other)?;
    let mut msg = (header.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&header);
    let sent = send_with_fds(&conn, &msg, &fds)?;
    conn.write_all(&msg[sent..])?;
    let mut ready = [0u8; 6];
    conn.read_exact(&mut ready)?;
    if &ready != b"ready\n" {
        return Err(std::io::Error::other("the new process did not say ready"));
    }
    conn.write_all(b"draining\n")
}

/// `sendmsg` with the descriptors as SCM_RIGHTS; returns the bytes sent (at least one).
fn send_with_fds(s: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid value that the fields below complete.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(fd_bytes) long, so the first header and its
        // data (CMSG_LEN(fd_bytes) bytes) fit; `fds` is valid for fd_bytes bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    // SAFETY: msg points at live buffers (iov, control) for the duration of the call.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recvmsg` into `buf`, taking ownership of any SCM_RIGHTS descriptors received.
fn recv_with_fds(s: &UnixStream, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let fd_bytes = MAX_FDS * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid value that the fields below complete.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers (iov, control); MSG_CMSG_CLOEXEC keeps the received
    // descriptors from leaking into child processes.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_FIRSTHDR/NXTHDR walk only
    // within it, and each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 descriptors that
    // are now ours (read unaligned: the payload has no alignment guarantee for RawFd reads).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other("too many sockets in one handover"));
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_pass_to_a_receiver_and_keep_their_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("handover.sock");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let registry = Arc::new(SocketRegistry::default());
        registry.set("a", std::slice::from_ref(&l));
        let (tx, rx) = std::sync::mpsc::channel();
        serve(&path, registry, move || {
            let _ = tx.send(());
        })
        .expect("serve");
        // A connection waiting in the old socket's queue is accepted by the new owner.
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (mut socks, takeover) = receive(&path).expect("receive").expect("someone listens");
        drop(l);
        let mine = socks.remove("a").expect("listener a").remove(0);
        mine.set_nonblocking(false).expect("blocking");
        let (accepted, peer) = mine.accept().expect("accept");
        assert_eq!(peer, client.local_addr().expect("client addr"));
        drop(accepted);
        takeover.finish().expect("finish");
        rx.recv_timeout(Duration::from_secs(10))
            .expect("drain called");
    }

    #[test]
    fn nobody_listening_means_a_first_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(receive(&dir.path().join("none.sock"))
            .expect("ok")
            .is_none());
    }
}
