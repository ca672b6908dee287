//! The body of an upstream HTTP/1.1 response: read from the connection as it is polled, and the
//! connection handed back to its pool the moment the body is complete.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::chunked::{self, Chunk};
use super::client::Conn;
use super::io::poll_read_buf;
use crate::body::BoxError;
use crate::upstream::pool::Recycle;

/// How the response body is delimited.
#[derive(Debug)]
pub enum Framing {
    /// This many bytes left.
    Length(u64),
    /// Chunked.
    Chunked(chunked::Decoder),
    /// Until the upstream closes the connection.
    Close,
}

/// A response body error: the connection is closed, and the downstream response is cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream closed the connection {0} bytes before the end of the body")]
    Truncated(u64),
    #[error("upstream closed the connection inside a chunked body")]
    TruncatedChunked,
    #[error("invalid chunked body: {0}")]
    Chunked(#[from] chunked::ChunkError),
    #[error("upstream connection error: {0}")]
    Io(#[from] io::Error),
}

/// The response body (see the module docs).
pub struct ClientBody {
    conn: Option<Conn>,
    framing: Framing,
    /// Where the connection goes when the body is complete; `None`: it is closed instead.
    recycle: Option<Recycle>,
    /// A 101 answer: the connection is taken whole for the upgraded protocol.
    upgrade: bool,
}

impl ClientBody {
    pub(crate) fn new(conn: Conn, framing: Framing, recycle: Option<Recycle>) -> Self {
        let mut b = ClientBody {
            conn: Some(conn),
            framing,
            recycle,
            upgrade: false,
        };
        if matches!(b.framing, Framing::Length(0)) {
            b.complete();
        }
        b
    }

    pub(crate) fn upgrade(conn: Conn) -> Self {
        ClientBody {
            conn: Some(conn),
            framing: Framing::Length(0),
            recycle: None,
            upgrade: true,
        }
    }

    /// After a 101 answer: the connection (and any bytes the upstream sent after the head),
    /// for the upgraded protocol.
    pub fn take_upgraded(&mut self) -> Option<Conn> {
        if self.upgrade {
            self.conn.take()
        } else {
            None
        }
    }

    /// The body ended as framed: the connection goes back to the pool if it may.
    fn complete(&mut self) {
        let conn = self.conn.take();
        if let (Some(conn), Some(r)) = (conn, self.recycle.take()) {
            // Bytes past the end of the response mean the upstream and we disagree on
            // framing: such a connection is not reused.
            if conn.buf.is_empty() {
                r.recycle(conn);
            }
        }
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.recycle = None;
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.upgrade {
            return Poll::Ready(None);
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Length(0) => {
                    this.complete();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            // Recycle now: the next request may take the connection before the
                            // downstream side polls this body again.
                            this.complete();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(dec) => match dec.decode(&mut conn.buf) {
                    Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Chunk::End(trailers)) => {
                        this.complete();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Chunk::More) => {}
                    Err(e) => return this.fail(e.into()),
                },
                Framing::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match poll_read_buf(&mut conn.io, cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return match this.framing {
                        Framing::Close => {
                            this.conn = None;
                            Poll::Ready(None)
                        }
                        Framing::Length(left) => this.fail(BodyError::Truncated(left)),
                        Framing::Chunked(_) => this.fail(BodyError::TruncatedChunked),
                    }
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.framing, Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            _ if self.conn.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
