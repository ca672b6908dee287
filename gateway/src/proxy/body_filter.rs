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

pub struct FilteredBody {
    inner: ProxyBody,
    chain: Chain,
    ex: SharedExchange,
    response: bool,
    /// Slots taking part in the body phase, in the direction's order.
    order: Vec<usize>,
    buffers: Vec<Option<BytesMut>>,
    buffered: usize,
    limit: usize,
    pending: Option<(usize, Pending, bool)>,
    queued_trailers: Option<HeaderMap>,
    done: bool,
}

impl FilteredBody {
    /// Wrap `inner` if any filter of `chain` reads this direction's body or trailers; else return
    /// it as is (no cost for chains that only touch headers).
    pub fn wrap(
        inner: ProxyBody,
        chain: &Chain,
        ex: &SharedExchange,
        response: bool,
        limit: usize,
    ) -> ProxyBody {
        if !applies(chain, response) {
            return inner;
        }
        let (body_phase, _) = phases(response);
        let order: Vec<usize> = chain
            .slots(response)
            .filter(|s| chain.get(*s).is_some_and(|e| e.phases.contains(body_phase)))
            .collect();
        let n = chain.len();
        Box::pin(FilteredBody {
            inner,
            chain: chain.clone(),
            ex: ex.clone(),
            response,
            order,
            buffers: (0..n).map(|_| None).collect(),
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
        while pos < self.order.len() {
            let slot = self.order[pos];
            if let Some(mut buf) = self.buffers[slot].take() {
                self.buffered -= buf.len();
                buf.extend_from_slice(&data);
                data = buf.freeze();
            }
            let Some(entry) = self.chain.get(slot) else {
                pos += 1;
                continue;
            };
            let filter = entry.filter.clone();
            let flow = {
                let mut ex = self.ex.borrow_mut();
                let mut cx = ex.cx(slot);
                if self.response {
                    filter.on_response_body(&mut cx, &mut data, eos)
                } else {
                    filter.on_request_body(&mut cx, &mut data, eos)
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
                BodyFlow::Respond(r) => return Err(self.stop(r)),
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
        self.buffers[slot] = Some(BytesMut::from(&data[..]));
        Ok(())
    }

    fn resume(&mut self, pos: usize, flow: Flow, eos: bool) -> Result<Option<Bytes>, BoxError> {
        match flow {
            Flow::Continue => {
                let slot = self.order[pos];
                let data = match self.buffers[slot].take() {
                    Some(b) => {
                        self.buffered -= b.len();
                        b.freeze()
                    }
                    None => Bytes::new(),
                };
                self.run_from(pos + 1, data, eos)
            }
            Flow::Respond(r) => Err(self.stop(r)),
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
                    let slot = this.order[pos];
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
