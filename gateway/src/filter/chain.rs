//! Runs a chain of filters over an exchange: the listener chain, then the route chain.
//!
//! Request phases run forward, response phases backward (the route chain's last filter sees the
//! response first), as Envoy runs decoder and encoder filters. A filter is only called for the
//! phases it lists in [`HttpFilter::phases`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use http::HeaderMap;

use super::{Exchange, FilterCx, Flow, HttpFilter, LocalResponse, Phases};

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

    /// Run one header/trailer phase over the chain. Returns the local response a filter chose, if
    /// any (which stops the chain).
    pub async fn run<F>(
        &self,
        ex: &SharedExchange,
        phase: Phases,
        mut call: F,
    ) -> Option<LocalResponse>
    where
        F: FnMut(&dyn HttpFilter, &mut FilterCx<'_>) -> Flow,
    {
        if !self.phases().intersects(phase) {
            return None;
        }
        let reverse = phase.intersects(Phases::RESPONSE_HEADERS | Phases::RESPONSE_TRAILERS);
        for slot in self.slots(reverse) {
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
            let mut flow = {
                let mut e = ex.borrow_mut();
                call(entry.filter.as_ref(), &mut e.cx(slot))
            };
            loop {
                match flow {
                    Flow::Continue => {
                        phase_span(ex, span_start, entry, phase, "continue");
                        break;
                    }
                    Flow::Respond(r) => {
                        phase_span(ex, span_start, entry, phase, "respond");
                        return Some(r);
                    }
                    Flow::Pause(pending) => {
                        let resume = pending.await;
                        let mut e = ex.borrow_mut();
                        flow = resume(&mut e.cx(slot));
                    }
                }
            }
        }
        None
    }
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
    pub async fn request_headers(&self, ex: &SharedExchange) -> Option<LocalResponse> {
        self.run(ex, Phases::REQUEST_HEADERS, |f, cx| {
            f.on_request_headers(cx)
        })
        .await
    }

    pub async fn response_headers(&self, ex: &SharedExchange) -> Option<LocalResponse> {
        self.run(ex, Phases::RESPONSE_HEADERS, |f, cx| {
            f.on_response_headers(cx)
        })
        .await
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
}
