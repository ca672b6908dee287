//! The body of a downstream HTTP/1.1 request, read from the client connection as the request path
//! polls it. The connection's socket and read buffer are shared (on one worker, never across an
//! `.await`) between the connection loop and the current request's body.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;

use super::chunked::{self, Chunk};
use super::io::poll_read_buf;
use super::server::ServerIo;
use crate::body::BoxError;

/// The interim answer a client waiting on `Expect: 100-continue` gets when its body is wanted.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How much of the current request body is left to read.
#[derive(Debug)]
pub(crate) enum Reading {
    /// No body left: none was framed, or it was read to the end.
    Done,
    /// This many bytes left.
    Length(u64),
    /// Chunked.
    Chunked(chunked::Decoder),
    /// The body broke (client gone, bad framing): the connection cannot go on.
    Failed,
}

/// What the connection loop and the current request body share.
pub(crate) struct Shared {
    /// `None` once the connection was handed over (upgrade).
    pub io: Option<ServerIo>,
    pub rbuf: BytesMut,
    pub reading: Reading,
    /// Bytes of the `100 Continue` answer still to write (0: none owed).
    pub continue_left: usize,
    /// Which request of the connection `reading` belongs to: a body kept past its exchange
    /// must not read the next request's bytes.
    pub request: u64,
}

impl Shared {
    pub fn new(io: ServerIo, rbuf: BytesMut) -> Self {
        Shared {
            io: Some(io),
            rbuf,
            reading: Reading::Done,
            continue_left: 0,
            request: 0,
        }
    }

    /// Consume what is left of the body from bytes already buffered, without reading the
    /// socket; true if the body is now complete (the connection can serve another request).
    pub fn drain_buffered(&mut self) -> bool {
        loop {
            match &mut self.reading {
                Reading::Done => return true,
                Reading::Failed => return false,
                Reading::Length(left) => {
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(self.rbuf.len());
                    let _ = self.rbuf.split_to(n);
                    *left -= n as u64;
                    if *left > 0 {
                        return false;
                    }
                    self.reading = Reading::Done;
                }
                Reading::Chunked(dec) => match dec.decode(&mut self.rbuf) {
                    Ok(Chunk::Data(_)) => {}
                    Ok(Chunk::End(_)) => self.reading = Reading::Done,
                    Ok(Chunk::More) => return false,
                    Err(_) => self.reading = Reading::Failed,
                },
            }
        }
    }
}

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("client closed the connection {0} bytes before the end of the request body")]
    Truncated(u64),
    #[error("client closed the connection inside a chunked request body")]
    TruncatedChunked,
    #[error("invalid chunked request body: {0}")]
    Chunked(#[from] chunked::ChunkError),
    #[error("client connection error: {0}")]
    Io(#[from] io::Error),
    #[error("the request body can no longer be read")]
    Gone,
}

/// A downstream request body (see the module docs).
pub struct ServerBody {
    shared: Option<Rc<RefCell<Shared>>>,
    /// The request this body belongs to (see [`Shared::request`]).
    request: u64,
}

impl ServerBody {
    /// A body with nothing to read.
    pub fn empty() -> Self {
        ServerBody {
            shared: None,
            request: 0,
        }
    }

    /// The body of request number `request` of the connection (see [`Shared::request`]).
    pub(crate) fn new(shared: Rc<RefCell<Shared>>, request: u64) -> Self {
        ServerBody {
            shared: Some(shared),
            request,
        }
    }
}

fn fail(s: &mut Shared, e: RequestBodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    s.reading = Reading::Failed;
    Poll::Ready(Some(Err(Box::new(e))))
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut s = shared.borrow_mut();
        let s = &mut *s;
        if s.request != self.request {
            return Poll::Ready(Some(Err(Box::new(RequestBodyError::Gone))));
        }
        let Some(io) = s.io.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(RequestBodyError::Gone))));
        };
        // The client waits for permission before sending the body: give it on first demand.
        while s.continue_left > 0 {
            let from = CONTINUE.len() - s.continue_left;
            match Pin::new(&mut *io).poll_write(cx, &CONTINUE[from..]) {
                Poll::Ready(Ok(0)) => return fail(s, RequestBodyError::Gone),
                Poll::Ready(Ok(n)) => s.continue_left -= n.min(s.continue_left),
                Poll::Ready(Err(e)) => return fail(s, e.into()),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            match &mut s.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Failed => return Poll::Ready(Some(Err(Box::new(RequestBodyError::Gone)))),
                Reading::Length(left) => {
                    if !s.rbuf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(s.rbuf.len());
                        let data = s.rbuf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            s.reading = Reading::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Reading::Chunked(dec) => match dec.decode(&mut s.rbuf) {
                    Ok(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Chunk::End(trailers)) => {
                        s.reading = Reading::Done;
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Chunk::More) => {}
                    Err(e) => return fail(s, e.into()),
                },
            }
            match poll_read_buf(io, cx, &mut s.rbuf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    let e = match s.reading {
                        Reading::Length(left) => RequestBodyError::Truncated(left),
                        _ => RequestBodyError::TruncatedChunked,
                    };
                    return fail(s, e);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return fail(s, e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.shared {
            None => true,
            Some(s) => {
                let s = s.borrow();
                s.request == self.request && matches!(s.reading, Reading::Done | Reading::Length(0))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.shared {
            None => SizeHint::with_exact(0),
            Some(s) => match s.borrow().reading {
                Reading::Length(n) => SizeHint::with_exact(n),
                Reading::Done => SizeHint::with_exact(0),
                _ => SizeHint::default(),
            },
        }
    }
}
