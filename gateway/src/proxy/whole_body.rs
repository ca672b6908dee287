//! The response body phase for a body that arrived whole with its head (the usual small
//! response): the body filters run once, with `end_of_stream`, in the request's own task before
//! the response is handed to the client. No body wrapper, no extra box, no per-frame poll.
//!
//! A body that is still arriving, ends with trailers, or is empty because the head ended the
//! stream is not handled here: the first goes through
//! [`FilteredBody`](super::body_filter::FilteredBody) (with the frame already
//! read put back in front), the last calls no body filter (as Envoy, whose encoder filters get
//! no data callback when the headers end the stream).
//!
//! Behaviour a filter sees is the same as through the wrapper for a one-frame body: one
//! call with all the data and `end_of_stream`; `Buffer` at the end of the stream lets the data
//! flow on; a pause holds the data until the filter resumes. One thing is better: a filter that
//! answers locally (or fails under `fail_closed`) replaces the response, since nothing has been
//! sent yet, where a streamed body can only be cut.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};

use crate::body::{self, BoxError, ProxyBody};
use crate::filter::chain::{Chain, SharedExchange};
use crate::filter::{BodyFlow, Flow, LocalResponse, Pending, Phases};

/// A response body, once its first frame was looked at.
pub enum Taken<B> {
    /// The head ended the stream: no body, and no body phase.
    Ended(B),
    /// The whole body, already received.
    Whole(Bytes),
    /// The rest is still to come: the body to stream through the body filter wrapper.
    Streaming(ProxyBody),
}

/// Look at `incoming`'s first frame without waiting: the whole body when that frame ends it.
pub async fn take<B>(mut incoming: B) -> Taken<B>
where
    B: Body<Data = Bytes> + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if incoming.is_end_stream() {
        return Taken::Ended(incoming);
    }
    // Polled with the request task's own context: if nothing is there yet, the task is woken
    // when it comes, and the wrapper polls again (a spurious wake at worst).
    let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut incoming).poll_frame(cx))).await;
    let first = match first {
        Poll::Pending => return Taken::Streaming(body::boxed(incoming)),
        Poll::Ready(None) => return Taken::Whole(Bytes::new()),
        Poll::Ready(Some(Err(e))) => Err(e.into()),
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            // Dropping `incoming` now returns its connection to the pool.
            Ok(data) if incoming.is_end_stream() => return Taken::Whole(data),
            Ok(data) => Ok(Frame::data(data)),
            Err(frame) => Ok(frame),
        },
    };
    Taken::Streaming(Box::pin(Prepended {
        first: Some(first),
        inner: incoming,
    }))
}

/// Where the body phase stands after running the filters it could run without waiting.
pub enum Ran {
    /// Every body filter continued: the body to send.
    Done(Bytes),
    /// A filter answered locally.
    Respond(Box<LocalResponse>),
    /// A filter paused: finish with [`finish_paused`].
    Paused(Paused),
}

/// A body phase waiting for a filter to resume.
pub struct Paused {
    /// Position (in response order) of the filter that paused.
    pos: usize,
    pending: Pending,
    data: Bytes,
}

/// The body filters in response order, from position `pos`.
fn body_slots(chain: &Chain, pos: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    chain
        .slots(true)
        .filter(|s| {
            chain
                .get(*s)
                .is_some_and(|e| e.phases.contains(Phases::RESPONSE_BODY))
        })
        .enumerate()
        .skip(pos)
}

/// Run the body filters from position `pos` over the whole body.
pub fn run(chain: &Chain, ex: &SharedExchange, pos: usize, mut data: Bytes, limit: usize) -> Ran {
    for (pos, slot) in body_slots(chain, pos) {
        let Some(entry) = chain.get(slot) else {
            continue;
        };
        let flow = {
            let mut e = ex.borrow_mut();
            entry
                .filter
                .on_response_body(&mut e.cx(slot), &mut data, true)
        };
        data = match outcome(flow, pos, data, limit) {
            Ok(ran) => return ran,
            Err(data) => data,
        };
    }
    Ran::Done(data)
}

/// Where the body phase stands after the filter at position `pos` gave `flow` for `data`:
/// `Err` with the data to go on with the next filter.
fn outcome(flow: BodyFlow, pos: usize, data: Bytes, limit: usize) -> Result<Ran, Bytes> {
    match flow {
        // At the end of the stream there is nothing more to wait for: buffered data flows on.
        BodyFlow::Continue | BodyFlow::Buffer => Err(data),
        BodyFlow::Respond(r) => Ok(Ran::Respond(r)),
        BodyFlow::Pause(pending) => {
            // The paused filter holds the data, within the same bound as a streamed body.
            if data.len() > limit {
                return Ok(Ran::Respond(Box::new(too_large())));
            }
            Ok(Ran::Paused(Paused { pos, pending, data }))
        }
    }
}

/// Where the body phase stands when its only filter gave `flow` for `data` already (see
/// [`Chain::response_whole`]).
pub fn ran_alone(flow: BodyFlow, data: Bytes, limit: usize) -> Ran {
    outcome(flow, 0, data, limit).unwrap_or_else(Ran::Done)
}

/// Wait for the paused filter, then run the rest of the body phase (which may pause again).
///
/// # Errors
/// The local response a filter chose.
pub async fn finish_paused(
    chain: Chain,
    ex: SharedExchange,
    mut paused: Paused,
    limit: usize,
) -> Result<Bytes, Box<LocalResponse>> {
    loop {
        let resume = paused.pending.await;
        let slot = body_slots(&chain, paused.pos).next().map(|(_, s)| s);
        let flow = {
            let mut e = ex.borrow_mut();
            resume(&mut e.cx(slot.unwrap_or(usize::MAX)))
        };
        match flow {
            Flow::Continue => match run(&chain, &ex, paused.pos + 1, paused.data, limit) {
                Ran::Done(data) => return Ok(data),
                Ran::Respond(r) => return Err(r),
                Ran::Paused(p) => paused = p,
            },
            Flow::Respond(r) => return Err(r),
            Flow::Pause(pending) => paused.pending = pending,
        }
    }
}

/// What a streamed response body gets past its buffer limit (see `FilteredBody`).
fn too_large() -> LocalResponse {
    let details = "response_body_buffer_limit";
    LocalResponse::new(StatusCode::INTERNAL_SERVER_ERROR, details).with_body(format!("{details}\n"))
}

/// A body whose first frame was already taken out: that frame, then the rest.
struct Prepended<B> {
    first: Option<Result<Frame<Bytes>, BoxError>>,
    inner: B,
}

impl<B> Body for Prepended<B>
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
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::filter::chain::{ChainEntry, FilterList};
    use crate::filter::{FilterCx, HttpFilter, Resume};

    /// What the recorder answers to its body call.
    #[derive(Clone, Copy)]
    enum Answer {
        Continue,
        Buffer,
        Respond,
        /// Pause, then continue when resumed.
        Pause,
    }

    /// Records every response-body call: (length, end_of_stream); answers as told.
    struct Recorder {
        calls: Mutex<Vec<(usize, bool)>>,
        answer: Answer,
    }

    impl HttpFilter for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn phases(&self) -> Phases {
            Phases::RESPONSE_BODY
        }
        fn on_response_body(
            &self,
            _cx: &mut FilterCx<'_>,
            data: &mut Bytes,
            eos: bool,
        ) -> BodyFlow {
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((data.len(), eos));
            match self.answer {
                Answer::Continue => BodyFlow::Continue,
                Answer::Buffer => BodyFlow::Buffer,
                Answer::Respond => {
                    BodyFlow::respond(LocalResponse::new(StatusCode::FORBIDDEN, "test"))
                }
                Answer::Pause => BodyFlow::Pause(Box::pin(async {
                    let resume: Resume = Box::new(|_cx: &mut FilterCx<'_>| Flow::Continue);
                    resume
                })),
            }
        }
    }

    fn setup(answers: &[Answer]) -> (Vec<Arc<Recorder>>, Chain, SharedExchange) {
        let recs: Vec<Arc<Recorder>> = answers
            .iter()
            .map(|a| {
                Arc::new(Recorder {
                    calls: Mutex::new(Vec::new()),
                    answer: *a,
                })
            })
            .collect();
        let entries = recs.iter().map(|r| ChainEntry::new(r.clone())).collect();
        let chain = Chain {
            listener: Some(Arc::new(FilterList::new(entries))),
            route: None,
        };
        let ex = Rc::new(RefCell::new(crate::filter::test_support::get(
            "127.0.0.1:1",
        )));
        (recs, chain, ex)
    }

    fn calls(rec: &Recorder) -> Vec<(usize, bool)> {
        rec.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_in_one_frame_is_taken_whole() {
        match take(http_body_util::Full::new(Bytes::from_static(b"hello"))).await {
            Taken::Whole(data) => assert_eq!(data, Bytes::from_static(b"hello")),
            _ => panic!("expected the whole body"),
        }
        assert!(matches!(
            take(http_body_util::Empty::<Bytes>::new()).await,
            Taken::Ended(_)
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_in_several_frames_streams_with_its_first_frame_put_back() {
        let frames = vec![
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"one,"))),
            Ok(Frame::data(Bytes::from_static(b"two"))),
        ];
        let body = StreamBody::new(stream::iter(frames));
        let Taken::Streaming(body) = take(body).await else {
            panic!("expected a streamed body");
        };
        let all = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(all.ok(), Some(Bytes::from_static(b"one,two")));
    }

    #[test]
    fn each_body_filter_runs_once_with_the_end_of_stream_in_response_order() {
        let (recs, chain, ex) = setup(&[Answer::Continue, Answer::Buffer]);
        let ran = run(&chain, &ex, 0, Bytes::from_static(b"hello"), 1024);
        assert!(matches!(ran, Ran::Done(d) if d == Bytes::from_static(b"hello")));
        // Response order: the last filter first; its Buffer at the end lets the data go on.
        assert_eq!(calls(&recs[1]), vec![(5, true)]);
        assert_eq!(calls(&recs[0]), vec![(5, true)]);
    }

    #[test]
    fn a_local_answer_stops_the_body_phase() {
        let (recs, chain, ex) = setup(&[Answer::Continue, Answer::Respond]);
        let ran = run(&chain, &ex, 0, Bytes::from_static(b"hello"), 1024);
        assert!(matches!(ran, Ran::Respond(r) if r.status == StatusCode::FORBIDDEN));
        assert_eq!(calls(&recs[0]), Vec::<(usize, bool)>::new());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_paused_filter_holds_the_body_until_it_resumes() {
        let (recs, chain, ex) = setup(&[Answer::Continue, Answer::Pause]);
        let Ran::Paused(p) = run(&chain, &ex, 0, Bytes::from_static(b"hello"), 1024) else {
            panic!("expected a pause");
        };
        assert_eq!(
            calls(&recs[0]),
            Vec::<(usize, bool)>::new(),
            "not before the resume"
        );
        let done = finish_paused(chain.clone(), ex.clone(), p, 1024).await;
        assert_eq!(done.ok(), Some(Bytes::from_static(b"hello")));
        assert_eq!(calls(&recs[0]), vec![(5, true)]);
        // Past the bound, a pause answers like a streamed body over its buffer limit.
        let (_, chain, ex) = setup(&[Answer::Pause]);
        let ran = run(&chain, &ex, 0, Bytes::from_static(b"hello"), 4);
        assert!(matches!(ran, Ran::Respond(r) if r.status == StatusCode::INTERNAL_SERVER_ERROR));
    }
}
