//! Reads and writes on a cleartext TCP socket with raw system calls, waiting on tokio's
//! readiness.
//!
//! tokio's own `TcpStream::poll_read`/`poll_write` go through std, which calls glibc's `recv`,
//! `send` and `writev`. In a process with more than one thread those are cancellation points:
//! glibc wraps each in two atomic read-modify-writes (enable and disable asynchronous
//! cancellation), about 40 cycles a call that buy nothing here — Rust never cancels threads.
//! A proxied HTTP/1.1 request makes four such calls (read the request, write it upstream, read
//! the response, write it back). `syscall(2)` is not a cancellation point, so the same system
//! calls are made through it; readiness is tracked exactly as tokio does (`try_io` clears it
//! on `EWOULDBLOCK`).

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::task::{ready, Context, Poll};

use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;

/// The result of a system call that returns a byte count or -1 with `errno`.
fn byte_count(r: libc::c_long) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// `recvfrom(fd, buf, len, 0, NULL, NULL)`.
fn recv(fd: i32, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call; the
    // kernel writes at most that many and reports how many.
    let r = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    byte_count(r)
}

/// `sendto(fd, buf, len, MSG_NOSIGNAL, NULL, 0)`: a reset peer is an `EPIPE` error, not a
/// signal.
fn send(fd: i32, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    byte_count(r)
}

/// `sendmsg(fd, {iov}, MSG_NOSIGNAL)`: a vectored write.
fn sendv(fd: i32, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // At most IOV_MAX (1024) slices: more would be EINVAL.
    let n = bufs.len().min(1024);
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec (std guarantees it on Unix); the kernel only reads
    // through this pointer.
    msg.msg_iov = bufs.as_ptr().cast::<libc::iovec>().cast_mut();
    msg.msg_iovlen = n as _;
    // SAFETY: `msg` points to `n` valid iovecs, each valid for reads for the whole call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd,
            &msg as *const libc::msghdr,
            libc::MSG_NOSIGNAL,
        )
    };
    byte_count(r)
}

/// For `try_io`: clears the readiness it was called with.
fn would_block() -> io::Result<()> {
    Err(io::ErrorKind::WouldBlock.into())
}

/// Read once into `buf`'s unfilled part, as `AsyncRead::poll_read` does.
pub fn poll_read(
    s: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let fd = s.as_raw_fd();
    loop {
        ready!(s.poll_read_ready(cx))?;
        // SAFETY: only written by the kernel, and only the reported count is marked filled.
        let spare = unsafe { buf.unfilled_mut() };
        let room = spare.len();
        match s.try_io(Interest::READABLE, || recv(fd, spare)) {
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` bytes of the unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                if n > 0 && n < room {
                    // A short read emptied the socket (a stream socket returns all it has):
                    // clear the readiness now, as tokio does, rather than learn it from one
                    // more system call that fails with EWOULDBLOCK.
                    let _ = s.try_io(Interest::READABLE, would_block);
                }
                return Poll::Ready(Ok(()));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

/// Wait until `s` is writable and write once with `write` (a system call on its descriptor).
fn poll_send(
    s: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut(i32) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    let fd = s.as_raw_fd();
    loop {
        ready!(s.poll_write_ready(cx))?;
        match s.try_io(Interest::WRITABLE, || write(fd)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return Poll::Ready(r),
        }
    }
}

/// Write once from `buf`, as `AsyncWrite::poll_write` does.
pub fn poll_write(s: &TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    poll_send(s, cx, |fd| send(fd, buf))
}

/// One vectored write, as `AsyncWrite::poll_write_vectored` does.
pub fn poll_write_vectored(
    s: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    poll_send(s, cx, |fd| sendv(fd, bufs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::net::TcpListener;

    async fn pair() -> io::Result<(TcpStream, TcpStream)> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        Ok((c?, s?.0))
    }

    async fn read_some(s: &TcpStream) -> io::Result<Vec<u8>> {
        let mut storage = [0u8; 64];
        let mut rb = ReadBuf::new(&mut storage);
        poll_fn(|cx| poll_read(s, cx, &mut rb)).await?;
        Ok(rb.filled().to_vec())
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_eof_and_reset_are_reported() -> io::Result<()> {
        let (a, b) = pair().await?;
        let n = poll_fn(|cx| poll_write(&a, cx, b"hello")).await?;
        assert_eq!(n, 5);
        let slices = [
            IoSlice::new(b" wor"),
            IoSlice::new(b""),
            IoSlice::new(b"ld"),
        ];
        let n = poll_fn(|cx| poll_write_vectored(&a, cx, &slices)).await?;
        assert_eq!(n, 6);
        let mut got = Vec::new();
        while got.len() < 11 {
            let more = read_some(&b).await?;
            assert!(!more.is_empty(), "end of stream after {got:?}");
            got.extend_from_slice(&more);
        }
        assert_eq!(got, b"hello world");

        // The reader waits (Pending) until data comes, then is woken.
        let writer = async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            poll_fn(|cx| poll_write(&a, cx, b"late")).await
        };
        let (read, wrote) = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::join!(read_some(&b), writer)
        })
        .await
        .map_err(|_| io::Error::other("the waiting reader was never woken"))?;
        assert_eq!(wrote?, 4);
        assert_eq!(read?, b"late");

        // End of stream: a zero-byte read.
        drop(a);
        assert!(read_some(&b).await?.is_empty());

        // Writing to a peer that closed fails (EPIPE or ECONNRESET) instead of succeeding.
        let mut failed = false;
        for _ in 0..50 {
            if poll_fn(|cx| poll_write(&b, cx, &[0u8; 4096]))
                .await
                .is_err()
            {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(failed, "writes to a closed socket kept succeeding");
        Ok(())
    }
}
