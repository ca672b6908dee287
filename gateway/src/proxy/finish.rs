//! The end of an exchange: when the response body completes (or the client goes away), record
//! metrics, run the log phase and write the access log — exactly once.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::filter::chain::{Chain, SharedExchange};
use crate::filter::Phases;
use crate::telemetry::metrics::RouteMetrics;

/// Called once per finished exchange (the access log).
pub type FinishSink = Rc<dyn Fn(&Finish, &crate::filter::Exchange)>;

/// Everything needed to finish one exchange.
pub struct Finish {
    pub ex: SharedExchange,
    pub chain: Option<Chain>,
    pub metrics: RouteMetrics,
    pub status: u16,
    pub ttfb: Instant,
    /// When the exchange finished (set just before the sink is called).
    pub end: Option<Instant>,
    pub upstream_addr: Option<std::net::SocketAddr>,
    pub bytes_received: Rc<Cell<u64>>,
    pub bytes_sent: u64,
    pub conn: Rc<super::ConnState>,
    pub sink: FinishSink,
}

impl Finish {
    fn complete(&mut self) {
        let now = Instant::now();
        self.end = Some(now);
        // The connection's wait for its next request starts from this reading.
        crate::request_clock::finished(now);
        let mut ex = self.ex.borrow_mut();
        let start = ex.info.start;
        self.metrics.record(
            self.status,
            now - start,
            self.ttfb.saturating_duration_since(start),
        );
        let mut handed_back = false;
        if let Some(chain) = &self.chain {
            if ex.response.is_none() && chain.phases().intersects(Phases::LOG) {
                // The head the server wrote, handed back (see `ConnState::head_written`).
                ex.response = self.conn.take_head();
                handed_back = ex.response.is_some();
            }
            chain.log(&mut ex);
        }
        (self.sink)(self, &ex);
        if let Some(t) = ex.trace.take() {
            t.finish(&ex, self.status, self.conn.local, now);
        }
        if handed_back {
            // Written, logged: the head's map goes back to the thread's spare maps, as a head
            // the log phase did not ask for does once written (the next head parsed reuses it
            // instead of allocating one).
            if let Some(parts) = ex.response.take() {
                crate::h1::head::recycle(parts.headers);
                crate::h1::raw_fields::recycle(parts.extensions);
            }
        }
        // The request's fields, when they stayed here for the later phases (see
        // `proxy::prepare`), go back too: the HTTP/1.1 client had none to give back.
        if ex.request.headers.capacity() != 0 {
            crate::h1::head::recycle(std::mem::take(&mut ex.request.headers));
        }
        self.conn.request_done(now);
    }
}

/// The response body as sent to the client: counts bytes and finishes the exchange when it ends
/// or is dropped. Generic so that an upstream body needing no filter is wrapped directly, in the
/// one box the response needs anyway.
pub struct FinishBody<B: Body = ProxyBody> {
    inner: B,
    finish: Option<Finish>,
    /// The body's length when known up front: hyper stops polling once it has sent that many
    /// bytes, so reaching it is the end even if the inner body never says so.
    expected: Option<u64>,
}

impl<B> FinishBody<B>
where
    B: Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// `content_length`: the response's Content-Length header, when it has one (asked only
    /// when the body does not know its exact size).
    pub fn wrap(
        inner: B,
        finish: Finish,
        content_length: impl FnOnce() -> Option<u64>,
    ) -> ProxyBody {
        let expected = inner.size_hint().exact().or_else(content_length);
        Box::pin(FinishBody {
            inner,
            finish: Some(finish),
            expected,
        })
    }
}

impl<B: Body> FinishBody<B> {
    fn complete(&self) -> bool {
        self.inner.is_end_stream()
            || self
                .finish
                .as_ref()
                .is_some_and(|f| self.expected == Some(f.bytes_sent))
    }
}

impl<B> Body for FinishBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(f)) = (frame.data_ref(), this.finish.as_mut()) {
                    f.bytes_sent += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(mut f) = this.finish.take() {
                    f.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut f) = this.finish.take() {
                    f.ex.borrow_mut()
                        .local_details
                        .get_or_insert("response_body_error");
                    f.complete();
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for FinishBody<B> {
    fn drop(&mut self) {
        let complete = self.complete();
        if let Some(mut f) = self.finish.take() {
            if !complete {
                f.ex.borrow_mut()
                    .local_details
                    .get_or_insert("downstream_disconnected");
            }
            f.complete();
        }
    }
}
