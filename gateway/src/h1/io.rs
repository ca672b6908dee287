//! Reading into a `BytesMut` and writing queued buffers, for the HTTP/1.1 codec's hand-written
//! poll loops.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Room made in a read buffer before each read, bytes.
pub const READ_CHUNK: usize = 8 * 1024;

/// Read once into the spare capacity of `buf` (made at least [`READ_CHUNK`] bytes);
/// `Ready(Ok(0))` is the end of the stream.
pub fn poll_read_buf<T: AsyncRead + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    let spare = buf.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    match Pin::new(io).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            // SAFETY: `poll_read` initialised and filled the first `n` bytes of the spare
            // capacity (ReadBuf tracks exactly that), so they may become part of the buffer.
            unsafe { buf.set_len(buf.len() + n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Buffers waiting to be written, in order, written with vectored writes.
#[derive(Default)]
pub struct WriteQueue {
    bufs: std::collections::VecDeque<Bytes>,
    written: u64,
}

/// At most this many buffers go into one vectored write.
const MAX_IOVECS: usize = 16;

impl WriteQueue {
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bufs.push_back(b);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Write until the queue is empty (`Ready(Ok)`) or the socket is full (`Pending`).
    pub fn poll_write<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.bufs.is_empty() {
            let n = if self.bufs.len() == 1 || !io.is_write_vectored() {
                match Pin::new(&mut *io).poll_write(cx, &self.bufs[0]) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                // On the stack: no allocation per write.
                let mut slices = [io::IoSlice::new(&[]); MAX_IOVECS];
                let mut n = 0;
                for (slot, b) in slices.iter_mut().zip(self.bufs.iter()) {
                    *slot = io::IoSlice::new(b);
                    n += 1;
                }
                match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => return Poll::Pending,
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        self.written += n as u64;
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}
