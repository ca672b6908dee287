//! The request body size cap (`limits.max_request_body_size`): a body that grows past it ends
//! with an error, and the request path answers 413.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(pub u64);

pub struct LimitedBody {
    inner: ProxyBody,
    remaining: u64,
    limit: u64,
    /// Set when the limit was hit, so the request path can answer 413 rather than 502.
    tripped: Rc<Cell<bool>>,
    /// Bytes received so far (access log `bytes_received`).
    received: Rc<Cell<u64>>,
}

impl LimitedBody {
    pub fn wrap(
        inner: ProxyBody,
        limit: u64,
        tripped: Rc<Cell<bool>>,
        received: Rc<Cell<u64>>,
    ) -> ProxyBody {
        Box::pin(LimitedBody {
            inner,
            remaining: limit,
            limit,
            tripped,
            received,
        })
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.received.set(this.received.get() + n);
                    if n > this.remaining {
                        this.tripped.set(true);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
