//! Runs a chain of filters over an exchange: the listener chain, then the route chain.
//!
//! Request phases run forward, response phases backward (the route chain's last filter sees the
//! response first), as Envoy runs decoder and encoder filters. A filter is only called for the
//! phases it lists in [`HttpFilter::phases`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::{BodyFlow, Exchange, FilterCx, Flow, HttpFilter, LocalResponse, Phases, WholeFlow};

/// One filter in a chain, with its phases read once when the chain is built.
#[derive(Clone)]
pub struct ChainEntry {
    pub filter: Arc<dyn HttpFilter>,
    pub phases: Phases,
    /// [`HttpFilter::reads_request_headers_later`], read once.
    pub reads_request_later: bool,
    /// The filter has no response phase, or [`HttpFilter::takes_raw_response`].
    pub raw_response: bool,
    /// [`HttpFilter::lists_request_id_on_read`], read once.
    pub lists_request_id: bool,
}

/// The phases that see the response.
const RESPONSE_PHASES: Phases = Phases::RESPONSE_HEADERS
    .union(Phases::RESPONSE_BODY)
    .union(Phases::RESPONSE_TRAILERS)
    .union(Phases::LOG);

impl ChainEntry {
    pub fn new(filter: Arc<dyn HttpFilter>) -> Self {
        let phases = filter.phases();
        let reads_request_later = filter.reads_request_headers_later();
        let raw_response = !phases.intersects(RESPONSE_PHASES) || filter.takes_raw_response();
        let lists_request_id = filter.lists_request_id_on_read();
        ChainEntry {
            filter,
            phases,
            reads_request_later,
            raw_response,
            lists_request_id,
        }
    }
}

/// An ordered list of filters and the union of their phases.
#[derive(Clone, Default)]
pub struct FilterList {
    pub entries: Vec<ChainEntry>,
    pub phases: Phases,
    /// Some filter of the list reads the request headers after the request phase.
    pub reads_request_later: bool,
    /// Every filter of the list takes a response with raw fields ([`ChainEntry::raw_response`]).
    pub raw_response: bool,
    /// Some filter of the list may read the request's fields without listing the gateway's
    /// request id first ([`ChainEntry::lists_request_id`]): the id goes among them up front.
    pub needs_request_id_field: bool,
}

impl FilterList {
    pub fn new(entries: Vec<ChainEntry>) -> Self {
        let phases = entries.iter().fold(Phases::NONE, |acc, e| acc | e.phases);
        let reads_request_later = entries.iter().any(|e| e.reads_request_later);
        let raw_response = entries.iter().all(|e| e.raw_response);
        let needs_request_id_field = entries.iter().any(|e| !e.lists_request_id);
        FilterList {
            entries,
            phases,
            reads_request_later,
            raw_response,
            needs_request_id_field,
        }
    }
}

/// The exchange shared by the request path and the body streams of one request.
pub type SharedExchange = Rc<RefCell<Exchange>>;

/// The chain that applies to one request: its listener's filters, then its route's.
#[derive(Clone)]
pub struct Chain {
    /// The listener's filters (none: no filters).
    pub listener: Option<Arc<FilterList>>,
    /// The route's filters (none: no filters).
    pub route: Option<Arc<FilterList>>,
}

impl Chain {
    fn listener_entries(&self) -> &[ChainEntry] {
        self.listener.as_ref().map_or(&[], |l| &l.entries)
    }

    pub fn phases(&self) -> Phases {
        let l = self.listener.as_ref().map_or(Phases::NONE, |l| l.phases);
        match &self.route {
            Some(r) => l | r.phases,
            None => l,
        }
    }

    /// Whether a filter of the chain reads the request headers after the request phase (see
    /// [`HttpFilter::reads_request_headers_later`]).
    pub fn reads_request_later(&self) -> bool {
        self.listener
            .as_ref()
            .is_some_and(|l| l.reads_request_later)
            || self.route.as_ref().is_some_and(|r| r.reads_request_later)
    }

    /// Whether every filter of the chain takes a response whose upstream fields are still
    /// raw lines (see [`HttpFilter::takes_raw_response`]); true without filters.
    pub fn takes_raw_response(&self) -> bool {
        self.listener.as_ref().is_none_or(|l| l.raw_response)
            && self.route.as_ref().is_none_or(|r| r.raw_response)
    }

    pub fn len(&self) -> usize {
        self.listener_entries().len() + self.route.as_ref().map_or(0, |r| r.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The filter at `slot` (listener filters first).
    pub fn get(&self, slot: usize) -> Option<&ChainEntry> {
        let listener = self.listener_entries();
        let n = listener.len();
        if slot < n {
            listener.get(slot)
        } else {
            self.route.as_ref().and_then(|r| r.entries.get(slot - n))
        }
    }

    /// Slots in request order, or response order when `reverse`.
    pub fn slots(&self, reverse: bool) -> impl Iterator<Item = usize> {
        let n = self.len();
        (0..n).map(move |i| if reverse { n - 1 - i } else { i })
    }

    /// Run one header phase over the chain. Returns the local response a filter chose, if any
    /// (which stops the chain).
    ///
    /// The filters run without waiting (`Chain::run_now`) until one pauses; only then does
    /// the rest of the phase go into a future of its own (boxed), so that the request path's
    /// future does not carry the waiting part's state.
    pub async fn run<F>(
        &self,
        ex: &SharedExchange,
        phase: Phases,
        mut call: F,
    ) -> Option<Box<LocalResponse>>
    where
        F: FnMut(&dyn HttpFilter, &mut FilterCx<'_>) -> Flow,
    {
        match self.run_now(ex, phase, 0, &mut call) {
            Step::Done => None,
            Step::Respond(r) => Some(r),
            Step::Paused(p) => Box::pin(self.finish_paused(ex, p, call)).await,
        }
    }

    /// Run the filters of a header phase from position `from` (in the phase's order) until one
    /// pauses.
    fn run_now<F>(&self, ex: &SharedExchange, phase: Phases, from: usize, call: &mut F) -> Step
    where
        F: FnMut(&dyn HttpFilter, &mut FilterCx<'_>) -> Flow,
    {
        if !self.phases().intersects(phase) {
            return Step::Done;
        }
        let reverse = phase.intersects(Phases::RESPONSE_HEADERS | Phases::RESPONSE_TRAILERS);
        for (pos, slot) in self.slots(reverse).enumerate().skip(from) {
            let Some(entry) = self.get(slot) else {
                continue;
            };
            if !entry.phases.contains(phase) {
                continue;
            }
            let span_start = ex
                .borrow()
                .trace
                .as_ref()
                .is_some_and(|t| t.filter_spans())
                .then(std::time::Instant::now);
            let flow = {
                let mut e = ex.borrow_mut();
                call(entry.filter.as_ref(), &mut e.cx(slot))
            };
            match flow {
                Flow::Continue => phase_span(ex, span_start, entry, phase, "continue"),
                Flow::Respond(r) => {
                    phase_span(ex, span_start, entry, phase, "respond");
                    return Step::Respond(r);
                }
                Flow::Pause(pending) => {
                    return Step::Paused(Paused {
                        phase,
                        pos,
                        slot,
                        pending,
                        span_start,
                    })
                }
            }
        }
        Step::Done
    }

    /// Wait for the paused filter, then run the rest of the phase (which may pause again).
    async fn finish_paused<F>(
        &self,
        ex: &SharedExchange,
        mut paused: Paused,
        mut call: F,
    ) -> Option<Box<LocalResponse>>
    where
        F: FnMut(&dyn HttpFilter, &mut FilterCx<'_>) -> Flow,
    {
        loop {
            let resume = paused.pending.await;
            let flow = {
                let mut e = ex.borrow_mut();
                resume(&mut e.cx(paused.slot))
            };
            let outcome = match flow {
                Flow::Pause(pending) => {
                    paused.pending = pending;
                    continue;
                }
                Flow::Continue => "continue",
                Flow::Respond(_) => "respond",
            };
            if let Some(entry) = self.get(paused.slot) {
                phase_span(ex, paused.span_start, entry, paused.phase, outcome);
            }
            if let Flow::Respond(r) = flow {
                return Some(r);
            }
            match self.run_now(ex, paused.phase, paused.pos + 1, &mut call) {
                Step::Done => return None,
                Step::Respond(r) => return Some(r),
                Step::Paused(p) => paused = p,
            }
        }
    }
}

/// Where a header phase stands after the filters it could run without waiting.
enum Step {
    /// Every filter continued.
    Done,
    /// A filter answered locally.
    Respond(Box<LocalResponse>),
    /// A filter paused.
    Paused(Paused),
}

/// A header phase waiting for a filter to resume.
struct Paused {
    phase: Phases,
    /// Position of the paused filter in the phase's order, and its slot.
    pos: usize,
    slot: usize,
    pending: super::Pending,
    /// When its call started, for its span when filter spans are traced.
    span_start: Option<std::time::Instant>,
}

/// Record the span of one filter phase when the request is traced with filter spans.
fn phase_span(
    ex: &SharedExchange,
    start: Option<std::time::Instant>,
    entry: &ChainEntry,
    phase: Phases,
    outcome: &'static str,
) {
    let Some(start) = start else { return };
    if let Some(t) = ex.borrow().trace.as_ref() {
        let name = if phase.intersects(Phases::RESPONSE_HEADERS) {
            "response_headers"
        } else {
            "request_headers"
        };
        t.filter_phase(entry.filter.name(), name, start, outcome);
    }
}

impl Chain {
    pub async fn request_headers(&self, ex: &SharedExchange) -> Option<Box<LocalResponse>> {
        self.run(ex, Phases::REQUEST_HEADERS, |f, cx| {
            f.on_request_headers(cx)
        })
        .await
    }

    pub async fn response_headers(&self, ex: &SharedExchange) -> Option<Box<LocalResponse>> {
        self.run(ex, Phases::RESPONSE_HEADERS, |f, cx| {
            f.on_response_headers(cx)
        })
        .await
    }

    /// The filter that takes a whole response's headers and body phases in one call
    /// ([`HttpFilter::on_response_whole`]): the chain's only filter with a response body
    /// phase, when it is also the last filter of the response headers phase (in response
    /// order). Nothing else then runs between its two phases, so one call does what the two
    /// phases would. `None` for any other chain.
    pub fn whole_response_slot(&self) -> Option<usize> {
        let mut body = None;
        let mut last_headers = None;
        for slot in self.slots(true) {
            let entry = self.get(slot)?;
            if entry.phases.contains(Phases::RESPONSE_BODY) {
                if body.is_some() {
                    return None;
                }
                body = Some(slot);
            }
            if entry.phases.contains(Phases::RESPONSE_HEADERS) {
                last_headers = Some(slot);
            }
        }
        body.filter(|b| last_headers == Some(*b))
    }

    /// The response headers phase for a response whose whole body (`data`) came with its head,
    /// with the filter at `whole` ([`Chain::whole_response_slot`]) taking its body phase in the
    /// same call. Returns the local response a filter chose, if any, and the body phase's
    /// outcome when it ran (`None`: the body phase is still to run).
    pub async fn response_whole(
        &self,
        ex: &SharedExchange,
        whole: usize,
        data: &mut Bytes,
    ) -> (Option<Box<LocalResponse>>, Option<BodyFlow>) {
        let mut body = None;
        let local = self
            .run(ex, Phases::RESPONSE_HEADERS, |f, cx| {
                if cx.slot() != whole {
                    return f.on_response_headers(cx);
                }
                match f.on_response_whole(cx, data) {
                    WholeFlow::Headers(flow) => flow,
                    WholeFlow::Body(flow) => {
                        body = Some(flow);
                        Flow::Continue
                    }
                }
            })
            .await;
        (local, body)
    }

    /// Trailer phases run synchronously inside a body stream; a pause there is not supported and
    /// is treated as continue (documented in docs/filters.md).
    pub fn trailers_sync(&self, ex: &mut Exchange, response: bool, trailers: &mut HeaderMap) {
        let phase = if response {
            Phases::RESPONSE_TRAILERS
        } else {
            Phases::REQUEST_TRAILERS
        };
        if !self.phases().intersects(phase) {
            return;
        }
        for slot in self.slots(response) {
            let Some(entry) = self.get(slot) else {
                continue;
            };
            if !entry.phases.contains(phase) {
                continue;
            }
            let mut cx = ex.cx(slot);
            let _ = if response {
                entry.filter.on_response_trailers(&mut cx, trailers)
            } else {
                entry.filter.on_request_trailers(&mut cx, trailers)
            };
        }
    }

    /// The log phase, in request order.
    pub fn log(&self, ex: &mut Exchange) {
        if !self.phases().intersects(Phases::LOG) {
            return;
        }
        for slot in self.slots(false) {
            if let Some(entry) = self.get(slot) {
                if entry.phases.contains(Phases::LOG) {
                    entry.filter.on_log(&mut ex.cx(slot));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter with these phases that keeps the trait's answer to whether it reads the
    /// request headers later.
    struct Default(Phases);

    impl HttpFilter for Default {
        fn name(&self) -> &str {
            "default"
        }
        fn phases(&self) -> Phases {
            self.0
        }
    }

    /// A filter with request and response phases that says it does not read the request
    /// headers after the request phase.
    struct SaysNo;

    impl HttpFilter for SaysNo {
        fn name(&self) -> &str {
            "says-no"
        }
        fn phases(&self) -> Phases {
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
        }
        fn reads_request_headers_later(&self) -> bool {
            false
        }
    }

    fn list(filters: Vec<Arc<dyn HttpFilter>>) -> Option<Arc<FilterList>> {
        let entries = filters.into_iter().map(ChainEntry::new).collect();
        Some(Arc::new(FilterList::new(entries)))
    }

    #[test]
    fn the_request_headers_are_kept_only_for_a_filter_that_reads_them_later() {
        // The trait's default: any phase after the request headers may read them.
        assert!(!Default(Phases::REQUEST_HEADERS).reads_request_headers_later());
        for later in [
            Phases::REQUEST_BODY,
            Phases::REQUEST_TRAILERS,
            Phases::RESPONSE_HEADERS,
            Phases::RESPONSE_BODY,
            Phases::RESPONSE_TRAILERS,
            Phases::LOG,
        ] {
            assert!(Default(Phases::REQUEST_HEADERS | later).reads_request_headers_later());
        }

        let request_only = || -> Arc<dyn HttpFilter> { Arc::new(Default(Phases::REQUEST_HEADERS)) };
        let says_no = || -> Arc<dyn HttpFilter> { Arc::new(SaysNo) };
        let reads = || -> Arc<dyn HttpFilter> { Arc::new(Default(Phases::RESPONSE_HEADERS)) };
        let chain = |listener, route| Chain { listener, route };
        assert!(!chain(None, None).reads_request_later());
        assert!(!chain(list(vec![request_only(), says_no()]), None).reads_request_later());
        assert!(!chain(None, list(vec![says_no()])).reads_request_later());
        assert!(
            chain(list(vec![request_only()]), list(vec![says_no(), reads()])).reads_request_later()
        );
        assert!(chain(list(vec![reads()]), list(vec![says_no()])).reads_request_later());
    }

    #[test]
    fn a_filter_takes_both_response_phases_at_once_only_when_nothing_runs_between_them() {
        let f = |p: Phases| -> Arc<dyn HttpFilter> { Arc::new(Default(p)) };
        let both = Phases::RESPONSE_HEADERS | Phases::RESPONSE_BODY;
        let headers = Phases::RESPONSE_HEADERS;
        let chain = |listener, route| Chain { listener, route };
        assert_eq!(
            chain(None, list(vec![f(both)])).whole_response_slot(),
            Some(0)
        );
        // Response phases run backward: the route's filter (slot 1) has its headers phase
        // before the listener's (slot 0), whose two phases stay together.
        assert_eq!(
            chain(list(vec![f(both)]), list(vec![f(headers)])).whole_response_slot(),
            Some(0)
        );
        // The other way round, slot 0's headers phase would run between slot 1's two phases.
        assert_eq!(
            chain(list(vec![f(headers)]), list(vec![f(both)])).whole_response_slot(),
            None
        );
        // Two body filters, or a body filter without a headers phase: one by one.
        assert_eq!(
            chain(None, list(vec![f(both), f(Phases::RESPONSE_BODY)])).whole_response_slot(),
            None
        );
        assert_eq!(
            chain(None, list(vec![f(Phases::RESPONSE_BODY)])).whole_response_slot(),
            None
        );
        // Filters of other phases do not matter.
        let request = Phases::REQUEST_HEADERS | Phases::LOG;
        assert_eq!(
            chain(list(vec![f(request)]), list(vec![f(both), f(request)])).whole_response_slot(),
            Some(1)
        );
        assert_eq!(chain(None, None).whole_response_slot(), None);
    }
}
