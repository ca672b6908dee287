//! The one filter abstraction shared by native Rust filters and proxy-wasm plugins.
//!
//! A filter implements [`HttpFilter`]: one method per phase, every phase optional. Request phases run
//! in chain order (listener chain, then route chain); response phases run in reverse order, as Envoy's
//! encoder filters do (see docs/architecture.md for the phase chart). A phase returns a [`Flow`]:
//! continue, answer locally (which stops the chain), or — only when the filter must really wait, for
//! an http callout — pause with a future that yields how to resume.
//!
//! Filters are shared by every worker and every request of a snapshot (`&self`); per-request state
//! lives in the [`Exchange`] through [`FilterCx::state`], so a stateless filter allocates nothing per
//! request.

pub mod builtin;
pub mod chain;
pub mod registry;

pub mod cors;
pub mod fault;
pub mod headers;
pub mod ip_access;
pub mod local_rate_limit;
pub mod request_id;
mod state;
#[cfg(test)]
pub(crate) mod test_support;

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

pub use chain::{Chain, ChainEntry};
pub use registry::{BuildContext, FilterFactory, FilterRegistry};

/// Which phases a filter takes part in. The chain skips a filter for the phases it does not list,
/// and does not wrap a body in a filtering stream when no filter of the chain reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Phases(u8);

impl Phases {
    pub const NONE: Phases = Phases(0);
    pub const REQUEST_HEADERS: Phases = Phases(1);
    pub const REQUEST_BODY: Phases = Phases(2);
    pub const REQUEST_TRAILERS: Phases = Phases(4);
    pub const RESPONSE_HEADERS: Phases = Phases(8);
    pub const RESPONSE_BODY: Phases = Phases(16);
    pub const RESPONSE_TRAILERS: Phases = Phases(32);
    pub const LOG: Phases = Phases(64);
    pub const ALL: Phases = Phases(127);
    /// Every phase that runs after the request headers were sent on (body, trailers,
    /// response, log).
    pub const AFTER_REQUEST_HEADERS: Phases = Phases(127 & !1);

    pub const fn union(self, other: Phases) -> Phases {
        Phases(self.0 | other.0)
    }
    pub const fn contains(self, other: Phases) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn intersects(self, other: Phases) -> bool {
        self.0 & other.0 != 0
    }
}

impl std::ops::BitOr for Phases {
    type Output = Phases;
    fn bitor(self, rhs: Phases) -> Phases {
        self.union(rhs)
    }
}

/// A response produced by the gateway itself (a filter, a plugin, a route's direct_response).
#[derive(Clone, Debug)]
pub struct LocalResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Why the gateway answered (`rate_limited`, `ip_denied`, plugin details...): access log field
    /// `response_flags`/`details`.
    pub details: &'static str,
}

impl LocalResponse {
    pub fn new(status: StatusCode, details: &'static str) -> Self {
        LocalResponse {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            details,
        }
    }
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

/// What a paused phase resumes with: called by the chain with the exchange, it returns the flow of
/// the phase (which may be another pause, e.g. a plugin that makes a second callout).
pub type Resume = Box<dyn FnOnce(&mut FilterCx<'_>) -> Flow>;
/// A pause: the future completes when the filter is ready to go on. Not `Send`: it lives on the
/// worker that owns the stream.
pub type Pending = Pin<Box<dyn Future<Output = Resume>>>;

/// The outcome of a header or trailer phase.
pub enum Flow {
    Continue,
    /// Stop the chain and answer with this response (response phases: replace the response).
    /// Boxed (see [`Flow::respond`]): a phase's outcome stays two words, cheap to return on
    /// every phase of every request.
    Respond(Box<LocalResponse>),
    /// Wait; the chain polls the future, then calls the resume function.
    Pause(Pending),
}

impl Flow {
    /// Stop the chain and answer with `r`.
    pub fn respond(r: LocalResponse) -> Flow {
        Flow::Respond(Box::new(r))
    }
}

/// The outcome of a body phase.
pub enum BodyFlow {
    /// Pass the (possibly modified) data on.
    Continue,
    /// Hold the data: the chain keeps it and calls the phase again with everything buffered so far
    /// appended by the next chunk (Envoy's StopIterationAndBuffer). Bounded by the body limit.
    Buffer,
    /// Stop and answer locally (only possible before the response headers left). Boxed, as in
    /// [`Flow::Respond`].
    Respond(Box<LocalResponse>),
    /// Wait like [`Flow::Pause`]; the data stays buffered.
    Pause(Pending),
}

impl BodyFlow {
    /// Stop and answer with `r`.
    pub fn respond(r: LocalResponse) -> BodyFlow {
        BodyFlow::Respond(Box::new(r))
    }
}

/// The outcome of [`HttpFilter::on_response_whole`].
pub enum WholeFlow {
    /// The headers phase's outcome; the body phase has not run (it runs next, through
    /// [`HttpFilter::on_response_body`], when this is `Continue` or once a pause resumes).
    Headers(Flow),
    /// The headers phase continued and the body phase ran: its outcome.
    Body(BodyFlow),
}

/// Facts about the connection and request that filters may read.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub client_addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub listener: std::rc::Rc<str>,
    /// `https` when the downstream connection is TLS, else `http`.
    pub scheme: &'static str,
    /// TLS version, SNI, ALPN and the verified client identity, on TLS listeners.
    pub tls: Option<Arc<crate::listener::tls::TlsInfo>>,
    pub start: Instant,
    /// Worker index (0-based).
    pub worker: usize,
    /// The request has no body: its headers end the stream (HTTP/1.1: no `Transfer-Encoding`
    /// and no or a zero `Content-Length`; HTTP/2: END_STREAM on its HEADERS).
    pub headers_end_stream: bool,
}

/// Per-request state carried through every phase: the request head, the response head once it
/// exists, and each filter's own state.
pub struct Exchange {
    pub info: RequestInfo,
    pub request: http::request::Parts,
    pub response: Option<http::response::Parts>,
    /// Name of the matched route, when one matched.
    pub route: Option<Arc<str>>,
    /// Name of the cluster the request went to.
    pub cluster: Option<Arc<str>>,
    /// The upstream endpoint of the request's last try, once one was picked (access log
    /// `upstream_addr`).
    pub upstream_addr: Option<std::net::SocketAddr>,
    /// The request id (x-request-id) once set.
    pub request_id: Option<HeaderValue>,
    /// The request id is the gateway's and not among the request's fields: no filter reads the
    /// map directly (none at all, or only plugins, whose host lists it on first use: see
    /// [`Exchange::list_request_id`]), so the upstream exchange adds it as it sends the
    /// request.
    pub request_id_unlisted: bool,
    /// Set when the gateway answered itself; access log `details`.
    pub local_details: Option<&'static str>,
    /// A local response chosen by a body filter while the body streamed: the request path answers
    /// with it instead of the upstream's result.
    pub pending_local: Option<LocalResponse>,
    /// The request's spans, when tracing sampled it.
    pub trace: Option<crate::telemetry::otel::RequestTrace>,
    /// A filter changed the request and asked for its route to be chosen again (proxy-wasm
    /// `proxy_clear_route_cache`); the proxy re-matches after the request-headers phase.
    pub route_cache_cleared: bool,
    /// The request header values the access log reports, kept when the request's header map
    /// itself moved to the upstream request (no filter reads it after that; see
    /// [`LoggedHeaders`]). `None`: read them from `request.headers`.
    pub logged: Option<Box<LoggedHeaders>>,
    states: state::States,
}

/// The request header values of an access-log line (`authority` when the URI has none,
/// `user_agent`, `referer`, `x_forwarded_for` as received). Without filters, a request's header
/// map moves to the upstream request instead of being copied for the log: these four values
/// stay behind (a reference count each, only for those present) and the log reads them here.
#[derive(Debug, Default)]
pub struct LoggedHeaders {
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub x_forwarded_for: Option<HeaderValue>,
}

impl LoggedHeaders {
    /// The four values of `h` (the first of each), before the proxy changes it
    /// (X-Forwarded-For as received). One pass of name comparisons over the few fields of a
    /// request head instead of four hashed lookups.
    pub fn of(h: &http::HeaderMap) -> Self {
        let mut l = LoggedHeaders::default();
        for (name, value) in h {
            let slot = if name == http::header::HOST {
                &mut l.host
            } else if name == http::header::USER_AGENT {
                &mut l.user_agent
            } else if name == http::header::REFERER {
                &mut l.referer
            } else if name == crate::proxy::headers::X_FORWARDED_FOR {
                &mut l.x_forwarded_for
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        l
    }
}

impl Exchange {
    pub fn new(info: RequestInfo, request: http::request::Parts) -> Self {
        Exchange {
            info,
            request,
            response: None,
            route: None,
            cluster: None,
            upstream_addr: None,
            request_id: None,
            request_id_unlisted: false,
            local_details: None,
            pending_local: None,
            trace: None,
            route_cache_cleared: false,
            logged: None,
            states: state::States::default(),
        }
    }

    /// Put the gateway's request id among the request's fields if it is not there yet (see
    /// [`Exchange::request_id_unlisted`]): for a filter about to read or change them, which
    /// then sees the same fields as when the id is listed up front.
    pub fn list_request_id(&mut self) {
        if std::mem::take(&mut self.request_id_unlisted) {
            if let Some(id) = &self.request_id {
                self.request
                    .headers
                    .insert(crate::proxy::headers::X_REQUEST_ID.clone(), id.clone());
            }
        }
    }

    /// A view of this exchange for the filter at `slot` of the chain.
    pub fn cx(&mut self, slot: usize) -> FilterCx<'_> {
        FilterCx { ex: self, slot }
    }
}

/// What a filter sees during a phase: the exchange plus its own state slot.
pub struct FilterCx<'a> {
    pub ex: &'a mut Exchange,
    slot: usize,
}

impl FilterCx<'_> {
    /// This filter's per-request state, if it set one.
    pub fn state<T: Any>(&mut self) -> Option<&mut T> {
        self.ex.states.get(self.slot)
    }

    /// Set (or replace) this filter's per-request state. Dropped when the exchange ends.
    pub fn set_state<T: Any>(&mut self, value: T) {
        self.ex.states.set(self.slot, value);
    }

    /// Remove and return this filter's per-request state.
    pub fn take_state<T: Any>(&mut self) -> Option<T> {
        self.ex.states.take(self.slot)
    }

    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// An HTTP filter. Implement the phases you need; the others continue.
///
/// `phases()` must list every phase the filter implements, or the chain will not call it.
pub trait HttpFilter: Send + Sync + 'static {
    /// The registered name (`headers`, `local-rate-limit`) or the plugin's name.
    fn name(&self) -> &str;

    fn phases(&self) -> Phases {
        Phases::REQUEST_HEADERS
    }

    /// Whether a phase after the request headers (body, trailers, response, log) reads
    /// `cx.ex.request.headers`. The request's header map moves to the upstream request when it
    /// is sent; the proxy keeps a copy for the later phases only when a filter of the chain
    /// says it reads it. The default assumes it does whenever the filter has such a phase:
    /// answer `false` only for a filter whose later phases never look at the request headers.
    fn reads_request_headers_later(&self) -> bool {
        self.phases().intersects(Phases::AFTER_REQUEST_HEADERS)
    }

    /// Whether the filter reads and changes the request's fields only after calling
    /// [`Exchange::list_request_id`], so the gateway's `x-request-id` need not be among them up
    /// front (a hashed insert per request, and the upstream exchange writes it otherwise). The
    /// default: no, the filter may read `cx.ex.request.headers` at any time.
    fn lists_request_id_on_read(&self) -> bool {
        false
    }

    /// Whether the response phases (headers, body, trailers, log) accept a response whose
    /// upstream fields are still the raw lines of its head, with `cx.ex.response`'s map holding
    /// only the fields set since (see [`crate::h1::raw_fields`]). Such a filter reads and
    /// changes the response's fields only through `raw_fields` (`all_fields`, `edit`,
    /// `materialize`). When every filter with such a phase does, an HTTP/1.1 response is passed
    /// through without building its map. The default: no.
    fn takes_raw_response(&self) -> bool {
        false
    }

    fn on_request_headers(&self, _cx: &mut FilterCx<'_>) -> Flow {
        Flow::Continue
    }

    /// `data` is this chunk, or everything buffered so far when an earlier call returned `Buffer`.
    fn on_request_body(
        &self,
        _cx: &mut FilterCx<'_>,
        _data: &mut Bytes,
        _end_of_stream: bool,
    ) -> BodyFlow {
        BodyFlow::Continue
    }

    fn on_request_trailers(&self, _cx: &mut FilterCx<'_>, _trailers: &mut HeaderMap) -> Flow {
        Flow::Continue
    }

    /// The response head is in `cx.ex.response`.
    fn on_response_headers(&self, _cx: &mut FilterCx<'_>) -> Flow {
        Flow::Continue
    }

    fn on_response_body(
        &self,
        _cx: &mut FilterCx<'_>,
        _data: &mut Bytes,
        _end_of_stream: bool,
    ) -> BodyFlow {
        BodyFlow::Continue
    }

    fn on_response_trailers(&self, _cx: &mut FilterCx<'_>, _trailers: &mut HeaderMap) -> Flow {
        Flow::Continue
    }

    /// The response headers phase, then the body phase with `data` (the whole body, which came
    /// with the head) and the end of the stream: what the chain calls instead of the two when
    /// this filter is the last of the response headers phase and the only one of the body
    /// phase, so that nothing else runs between them (see
    /// [`Chain::whole_response_slot`](chain::Chain::whole_response_slot)). The default makes
    /// the two calls; a filter overrides it to do both at once for less (a plugin: one entry
    /// into its VM instead of two). The body phase must not run when the headers phase did not
    /// continue.
    fn on_response_whole(&self, cx: &mut FilterCx<'_>, data: &mut Bytes) -> WholeFlow {
        match self.on_response_headers(cx) {
            Flow::Continue => WholeFlow::Body(self.on_response_body(cx, data, true)),
            other => WholeFlow::Headers(other),
        }
    }

    /// After the exchange ends (completed, failed or aborted by the client). Cannot change anything.
    fn on_log(&self, _cx: &mut FilterCx<'_>) {}
}

/// Where a filter's files live (relative paths in filter config are relative to the config file).
pub fn resolve_path(base_dir: &std::path::Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    #[test]
    fn an_unlisted_request_id_is_listed_once() {
        let mut ex = super::test_support::get("127.0.0.1:1");
        // Nothing to list: no id yet, or one already among the fields.
        ex.list_request_id();
        assert!(!ex.request.headers.contains_key("x-request-id"));
        let id = HeaderValue::from_static("id-1");
        ex.request_id = Some(id.clone());
        ex.list_request_id();
        assert!(!ex.request.headers.contains_key("x-request-id"));
        // The gateway's id, kept out of the fields: listed on first use, then left alone (a
        // filter may remove or replace it afterwards).
        ex.request_id_unlisted = true;
        ex.list_request_id();
        assert_eq!(ex.request.headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(ex.request.headers.get("x-request-id"), Some(&id));
        assert!(
            !ex.request_id_unlisted,
            "the upstream exchange must not add it again"
        );
        ex.request.headers.remove("x-request-id");
        ex.list_request_id();
        assert!(!ex.request.headers.contains_key("x-request-id"));
    }
}
