//! A body stream that runs the body (and trailer) phases of a chain on each frame.
//!
//! Buffering follows Envoy: a filter that returns `Buffer` keeps the data; the next chunk is
//! appended and the filter is called again with everything so far; when it continues, the whole
//! buffer flows on to the next filter. Buffered bytes are bounded by `limit`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};
use crate::filter::chain::{Chain, SharedExchange};
use crate::filter::{BodyFlow, Flow, LocalResponse, Pending, Phases};

/// Why a filtered body stopped early.
#[derive(Debug, thiserror::Error)]
#[error("body stopped by filter: {0}")]
pub struct StoppedByFilter(pub &'static str);

/// Whether any filter of `chain` reads the body or trailers of this direction (else
/// [`FilteredBody::wrap`] returns its body as is).
pub fn applies(chain: &Chain, response: bool) -> bool {
    let (body_phase, trailer_phase) = phases(response);
    chain.phases().intersects(body_phase | trailer_phase)
}

/// Slots taking part in a body phase, in the direction's order: inline for the usual short
/// chains (no allocation per body), on the heap beyond.
enum Order {
    Inline { slots: [u16; INLINE_SLOTS], len: u8 },
    Heap(Vec<usize>),
}

/// Body filters a chain may have before [`Order`] goes to the heap.
const INLINE_SLOTS: usize = 8;

impl Order {
    fn new(mut slots: impl Iterator<Item = usize>) -> Order {
        let mut inline = [0u16; INLINE_SLOTS];
        let mut len = 0;
        while let Some(s) = slots.next() {
            match (inline.get_mut(len), u16::try_from(s)) {
                (Some(place), Ok(short)) => *place = short,
                _ => {
                    let mut all: Vec<usize> =
                        inline[..len].iter().map(|s| usize::from(*s)).collect();
                    all.push(s);
                    all.extend(slots);
                    return Order::Heap(all);
                }
            }
            len += 1;
        }
        Order::Inline {
            slots: inline,
            len: len as u8,
        }
    }

    fn get(&self, pos: usize) -> Option<usize> {
        match self {
            Order::Inline { slots, len } => {
                slots[..usize::from(*len)].get(pos).map(|s| usize::from(*s))
            }
            Order::Heap(v) => v.get(pos).copied(),
        }
    }
}

pub struct FilteredBody {
    inner: ProxyBody,
    chain: Chain,
    ex: SharedExchange,
    response: bool,
    /// Slots taking part in the body phase, in the direction's order.
    order: Order,
    /// Data a filter holds (by slot), allocated when a filter first buffers.
    buffers: Vec<Option<BytesMut>>,
    buffered: usize,
    limit: usize,
    pending: Option<(usize, Pending, bool)>,
    queued_trailers: Option<HeaderMap>,
    done: bool,
}

impl FilteredBody {
    /// Wrap `inner` if any filter of `chain` reads this direction's body or trailers; else return
    /// it as is (no cost for chains that only touch headers). A request body that has already
    /// ended (a request without a body) is returned as is too: there is no frame to filter, and
    /// Envoy calls no request-body filter for a request whose headers end the stream.
    pub fn wrap(
        inner: ProxyBody,
        chain: &Chain,
        ex: &SharedExchange,
        response: bool,
        limit: usize,
    ) -> ProxyBody {
        if !applies(chain, response) || (!response && inner.is_end_stream()) {
            return inner;
        }
        let (body_phase, _) = phases(response);
        let order = Order::new(
            chain
                .slots(response)
                .filter(|s| chain.get(*s).is_some_and(|e| e.phases.contains(body_phase))),
        );
        Box::pin(FilteredBody {
            inner,
            chain: chain.clone(),
            ex: ex.clone(),
            response,
            order,
            buffers: Vec::new(),
            buffered: 0,
            limit,
            pending: None,
            queued_trailers: None,
            done: false,
        })
    }

    fn stop(&mut self, local: LocalResponse) -> BoxError {
        let details = local.details;
        self.ex.borrow_mut().pending_local = Some(local);
        self.done = true;
        Box::new(StoppedByFilter(details))
    }

    fn too_large(&mut self) -> BoxError {
        let status = if self.response {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::PAYLOAD_TOO_LARGE
        };
        let details = if self.response {
            "response_body_buffer_limit"
        } else {
            "request_body_buffer_limit"
        };
        self.stop(LocalResponse::new(status, details).with_body(format!("{details}\n")))
    }

    /// Run the body phase from position `pos` of `order`. Ok(Some(data)) = emit, Ok(None) = held
    /// (buffered or paused).
    fn run_from(
        &mut self,
        mut pos: usize,
        mut data: Bytes,
        eos: bool,
    ) -> Result<Option<Bytes>, BoxError> {
        while let Some(slot) = self.order.get(pos) {
            if let Some(mut buf) = self.buffers.get_mut(slot).and_then(Option::take) {
                self.buffered -= buf.len();
                buf.extend_from_slice(&data);
                data = buf.freeze();
            }
            let Some(entry) = self.chain.get(slot) else {
                pos += 1;
                continue;
            };
            // The frame is handed over by reference: no copy unless a filter buffers it.
            let flow = {
                let mut ex = self.ex.borrow_mut();
                let mut cx = ex.cx(slot);
                if self.response {
                    entry.filter.on_response_body(&mut cx, &mut data, eos)
                } else {
                    entry.filter.on_request_body(&mut cx, &mut data, eos)
                }
            };
            match flow {
                BodyFlow::Continue => pos += 1,
                // At end of stream there is nothing more to wait for: buffered data flows on.
                BodyFlow::Buffer if eos => pos += 1,
                BodyFlow::Buffer => {
                    self.hold(slot, data)?;
                    return Ok(None);
                }
                BodyFlow::Respond(r) => return Err(self.stop(*r)),
                BodyFlow::Pause(p) => {
                    self.hold(slot, data)?;
                    self.pending = Some((pos, p, eos));
                    return Ok(None);
                }
            }
        }
        Ok(Some(data))
    }

    fn hold(&mut self, slot: usize, data: Bytes) -> Result<(), BoxError> {
        self.buffered += data.len();
        if self.buffered > self.limit {
            return Err(self.too_large());
        }
        if self.buffers.len() <= slot {
            self.buffers
                .resize_with(self.chain.len().max(slot + 1), || None);
        }
        self.buffers[slot] = Some(BytesMut::from(&data[..]));
        Ok(())
    }

    fn resume(&mut self, pos: usize, flow: Flow, eos: bool) -> Result<Option<Bytes>, BoxError> {
        match flow {
            Flow::Continue => {
                let held = self
                    .order
                    .get(pos)
                    .and_then(|slot| self.buffers.get_mut(slot))
                    .and_then(Option::take);
                let data = match held {
                    Some(b) => {
                        self.buffered -= b.len();
                        b.freeze()
                    }
                    None => Bytes::new(),
                };
                self.run_from(pos + 1, data, eos)
            }
            Flow::Respond(r) => Err(self.stop(*r)),
            Flow::Pause(p) => {
                self.pending = Some((pos, p, eos));
                Ok(None)
            }
        }
    }
}

fn phases(response: bool) -> (Phases, Phases) {
    if response {
        (Phases::RESPONSE_BODY, Phases::RESPONSE_TRAILERS)
    } else {
        (Phases::REQUEST_BODY, Phases::REQUEST_TRAILERS)
    }
}

impl Body for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some((pos, fut, eos)) = this.pending.as_mut() {
                let (pos, eos) = (*pos, *eos);
                let resume = match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                this.pending = None;
                let flow = {
                    let slot = this.order.get(pos).unwrap_or(usize::MAX);
                    let mut ex = this.ex.borrow_mut();
                    resume(&mut ex.cx(slot))
                };
                let result = this.resume(pos, flow, eos);
                if eos && this.pending.is_none() {
                    this.done = true;
                }
                match result {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Some(data)) if !data.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(_) => continue,
                }
            }
            if let Some(t) = this.queued_trailers.take() {
                this.done = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(f) => f,
            };
            match frame {
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        // The last chunk of a body of known length carries end_of_stream itself
                        // (hyper stops polling once it has sent that length).
                        let eos = this.inner.is_end_stream();
                        let result = this.run_from(0, data, eos);
                        if eos && this.pending.is_none() {
                            this.done = true;
                        }
                        match result {
                            Err(e) => return Poll::Ready(Some(Err(e))),
                            Ok(Some(out)) if !out.is_empty() => {
                                return Poll::Ready(Some(Ok(Frame::data(out))))
                            }
                            Ok(_) => continue,
                        }
                    }
                    Err(frame) => {
                        let Ok(mut trailers) = frame.into_trailers() else {
                            continue;
                        };
                        {
                            let mut ex = this.ex.borrow_mut();
                            this.chain
                                .trailers_sync(&mut ex, this.response, &mut trailers);
                        }
                        this.queued_trailers = Some(trailers);
                        match this.run_from(0, Bytes::new(), true) {
                            Err(e) => return Poll::Ready(Some(Err(e))),
                            Ok(Some(out)) if !out.is_empty() => {
                                return Poll::Ready(Some(Ok(Frame::data(out))))
                            }
                            Ok(_) => continue,
                        }
                    }
                },
                None => match this.run_from(0, Bytes::new(), true) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Some(out)) => {
                        if this.pending.is_none() {
                            this.done = true;
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Ok(None) => {
                        if this.pending.is_none() {
                            this.done = true;
                        }
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none() && self.queued_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Filters may change the length.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;
    use crate::filter::chain::{ChainEntry, FilterList};
    use crate::filter::{FilterCx, HttpFilter};

    /// Records every request-body call: (length, end_of_stream).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(usize, bool)>>);

    impl HttpFilter for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn phases(&self) -> Phases {
            Phases::REQUEST_BODY
        }
        fn on_request_body(&self, _cx: &mut FilterCx<'_>, data: &mut Bytes, eos: bool) -> BodyFlow {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((data.len(), eos));
            BodyFlow::Continue
        }
    }

    fn setup() -> (Arc<Recorder>, Chain, SharedExchange) {
        let rec = Arc::new(Recorder::default());
        let chain = Chain {
            listener: Some(Arc::new(FilterList::new(vec![ChainEntry::new(
                rec.clone(),
            )]))),
            route: None,
        };
        let ex = Rc::new(RefCell::new(crate::filter::test_support::get(
            "127.0.0.1:1",
        )));
        (rec, chain, ex)
    }

    fn calls(rec: &Recorder) -> Vec<(usize, bool)> {
        rec.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_without_a_body_calls_no_body_filter() {
        let (rec, chain, ex) = setup();
        let body = FilteredBody::wrap(crate::body::empty(), &chain, &ex, false, 1024);
        // Returned as is: nothing to filter, and no wrapper for the request path to carry.
        assert!(body.is_end_stream());
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert!(collected.is_ok_and(|b| b.is_empty()));
        assert_eq!(calls(&rec), Vec::<(usize, bool)>::new());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_body_is_filtered_frame_by_frame_with_its_end() {
        let (rec, chain, ex) = setup();
        let body = FilteredBody::wrap(crate::body::full("hello"), &chain, &ex, false, 1024);
        assert!(!body.is_end_stream());
        let collected = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(collected.ok(), Some(Bytes::from_static(b"hello")));
        assert_eq!(calls(&rec), vec![(5, true)]);
    }
}
