//! The request path: route, run the filter chain, proxy to the cluster (or answer locally), and
//! stream the response back through the chain.

pub mod body_filter;
pub mod finish;
pub mod headers;
pub mod limits;
pub mod request_body;
pub mod upgrade;
pub mod whole_body;

use std::cell::{Cell, RefCell};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;

use crate::body::{self, ProxyBody};
use crate::error::ProxyError;
use crate::filter::chain::{Chain, SharedExchange};
use crate::filter::{Exchange, LocalResponse, LoggedHeaders, Phases, RequestInfo};
use crate::router::{Action, Route};
use crate::snapshot::{ListenerRuntime, Snapshot};
use crate::telemetry::log_context::WithLogIds;
use crate::telemetry::otel::attempts::Tries;
use crate::upstream::added::AddedFields;
use crate::upstream::SendOptions;
use crate::worker::WorkerCtx;

use self::body_filter::FilteredBody;
use self::finish::{Finish, FinishBody};
use self::limits::LimitedBody;
pub use self::request_body::RequestBody;
use self::upgrade::Downstream;
use self::whole_body::{Ran, Taken};

/// Per-connection state shared by its requests.
pub struct ConnState {
    pub listener: Rc<str>,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub scheme: &'static str,
    /// Requests in flight on this connection (for the idle timeout).
    pub in_flight: Cell<usize>,
    /// When the connection last became idle.
    pub idle_since: Cell<Instant>,
    /// `client`'s address as an X-Forwarded-For element, rendered once per connection.
    pub forwarded_for: Option<HeaderValue>,
    /// The TLS handshake's outcome (peer identity) on a TLS listener.
    pub tls: Option<Arc<crate::listener::tls::TlsInfo>>,
    /// The route-timeout timer, reused by the connection's requests one after the other.
    pub route_timer: crate::upstream::TimerSlot,
    /// The connection's server hands each response head back once it has written it (our
    /// HTTP/1.1 server does, hyper's HTTP/2 server does not); see [`ConnState::head_written`].
    pub hands_back_head: Cell<bool>,
    /// The request being answered wants its response head back for its log phase.
    wants_head: Cell<bool>,
    /// The head handed back, until the log phase takes it.
    head: RefCell<Option<http::response::Parts>>,
}

impl ConnState {
    pub fn new(
        listener: Arc<str>,
        client: SocketAddr,
        local: SocketAddr,
        scheme: &'static str,
    ) -> Self {
        ConnState {
            // Copied once per connection: each request's `RequestInfo` then takes a
            // thread-local reference instead of an atomic one.
            listener: Rc::from(&*listener),
            client,
            local,
            scheme,
            in_flight: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            forwarded_for: headers::client_value(client.ip()),
            tls: None,
            route_timer: Default::default(),
            hands_back_head: Cell::new(false),
            wants_head: Cell::new(false),
            head: RefCell::new(None),
        }
    }

    /// The server wrote this response head and no longer needs it: kept for the log phase of
    /// the request that asked for it (see `respond`), so that request's response head need not
    /// be copied up front. Requests on one HTTP/1.1 connection are answered one after the other,
    /// so the head written is the one of the request being answered.
    pub fn head_written(&self, parts: http::response::Parts) {
        if self.wants_head.replace(false) {
            *self.head.borrow_mut() = Some(parts);
        } else {
            crate::h1::head::recycle(parts.headers);
            crate::h1::raw_fields::recycle(parts.extensions);
        }
    }

    /// The request being answered will take its response head back after the server wrote
    /// it, if this connection's server hands heads back. Forgets any head of an earlier request.
    fn expect_head(&self) -> bool {
        if !self.hands_back_head.get() {
            return false;
        }
        self.head.borrow_mut().take();
        self.wants_head.set(true);
        true
    }

    /// The response head handed back for the request being finished, if it asked for it.
    pub(crate) fn take_head(&self) -> Option<http::response::Parts> {
        self.wants_head.set(false);
        self.head.borrow_mut().take()
    }

    fn request_started(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// A request of this connection finished at `now`.
    pub fn request_done(&self, now: Instant) {
        let n = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(n);
        if n == 0 {
            self.idle_since.set(now);
        }
    }
}

/// Serve one request. Never fails: every problem becomes a response. `upgrade`: where the
/// downstream connection goes if the request asks for an upgrade and the upstream agrees.
///
/// One `async fn` from the connection's loop down to `dispatch`: each level of `async fn` is
/// a future that its caller moves — copies whole, kilobytes — into its own state on every
/// request, so the levels above the route's action are kept to this one.
pub async fn handle(
    worker: Rc<WorkerCtx>,
    conn: Rc<ConnState>,
    req: Request<RequestBody>,
    on_upgrade: Option<Downstream>,
) -> Response<ProxyBody> {
    let snap = worker.snapshot();
    // `debug.config_version_header`: name the snapshot this request runs on, whatever answers.
    let tag = snap.config.file.debug.as_ref().and_then(|d| {
        let name = http::HeaderName::from_bytes(d.config_version_header.as_ref()?.as_bytes());
        Some((name.ok()?, HeaderValue::from_str(snap.version()).ok()?))
    });
    conn.request_started();
    let start = Instant::now();
    crate::request_clock::set(start);
    let info = RequestInfo {
        client_addr: conn.client,
        local_addr: conn.local,
        listener: conn.listener.clone(),
        scheme: conn.scheme,
        tls: conn.tls.clone(),
        start,
        worker: worker.index,
        headers_end_stream: req.body().is_end_stream(),
    };
    let (parts, incoming) = req.into_parts();
    let tracer = worker.tracer();
    let arrival = if tracer.is_some() {
        headers::Arrival::of::<true>(&parts.headers)
    } else {
        headers::Arrival::of::<false>(&parts.headers)
    };
    let grpc = arrival.grpc;
    // An empty `x-request-id` is replaced (in the map, where it is).
    let request_id_field = arrival.request_id.is_some();
    let request_id = arrival.request_id.filter(|v| !v.is_empty()).cloned();
    // Sampling is decided, and a sampled request's server span starts, from the head as the
    // client sent it, with the `traceparent` the pass above found.
    let trace = tracer.and_then(|t| t.start(&parts.headers, arrival.trace, start));
    let ex: SharedExchange = Rc::new(RefCell::new(Exchange::new(info, parts)));
    if trace.is_some() {
        ex.borrow_mut().trace = trace;
    }

    let mut resp = 'serve: {
        // The listener and the route are borrowed from the snapshot this request holds: no
        // reference counts to take and drop per request.
        let Some(listener) = snap.listener(&conn.listener) else {
            // The listener was removed by a reload while this connection was open.
            let metrics = worker.services.metrics.route(&conn.listener, "", "");
            let r = LocalResponse::new(StatusCode::SERVICE_UNAVAILABLE, "listener_removed")
                .with_body("listener removed\n");
            break 'serve Box::pin(local(&worker, &conn, ex, None, metrics, r)).await;
        };
        let route = listener.router.find(&ex.borrow().request);
        // Native filters may read the id among the request's fields; plugins list it when they
        // first look (`Exchange::list_request_id`); without filters, nothing does.
        let in_map = request_id_field
            || listener.chain.needs_request_id_field
            || route.is_some_and(|r| r.chain.needs_request_id_field);
        ensure_request_id(&ex, request_id, in_map);
        // A traced request's log lines carry its trace and span ids (set while its future is
        // polled); an untraced one's future is polled as is, without the wrapper's move.
        let ids = ex.borrow().trace.as_ref().map(|t| t.log_ids());
        if ids.is_some() {
            // The dispatch future is pinned in this future's state (where the untraced one
            // is awaited too, in a different branch: they share the space), not boxed.
            let slot = std::pin::pin!(Some(dispatch(
                &worker, &conn, &snap, listener, route, ex, incoming, on_upgrade, grpc,
            )));
            break 'serve WithLogIds::new(slot, ids).await;
        }
        dispatch(
            &worker, &conn, &snap, listener, route, ex, incoming, on_upgrade, grpc,
        )
        .await
    };
    if let Some((name, value)) = tag {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// Run the chains and the route's action for a request whose route is known.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    snap: &Arc<Snapshot>,
    listener: &Arc<ListenerRuntime>,
    route: Option<&Arc<Route>>,
    ex: SharedExchange,
    incoming: RequestBody,
    on_upgrade: Option<Downstream>,
    grpc: bool,
) -> Response<ProxyBody> {
    // Empty lists are left out: a request without filters takes no reference on them (each is
    // an atomic increment and decrement).
    let chain = Chain {
        listener: Some(&listener.chain)
            .filter(|l| !l.entries.is_empty())
            .cloned(),
        route: route
            .as_ref()
            .map(|r| &r.chain)
            .filter(|l| !l.entries.is_empty())
            .cloned(),
    };
    let metrics = match &route {
        Some(r) => {
            ex.borrow_mut().route = Some(r.name.clone());
            r.metrics.clone()
        }
        None => listener.no_route.clone(),
    };

    if let Some(r) = chain.request_headers(&ex).await {
        return Box::pin(local(worker, conn, ex, Some(chain), metrics, *r)).await;
    }
    // As Envoy: a cleared route cache makes the router match the changed request again; the
    // filter chain that already ran stays the request's chain.
    let rematch = std::mem::take(&mut ex.borrow_mut().route_cache_cleared);
    let route = if rematch {
        let again = listener.router.find(&ex.borrow().request);
        ex.borrow_mut().route = again.as_ref().map(|r| r.name.clone());
        again
    } else {
        route
    };
    let Some(route) = route else {
        let r = ProxyError::NoRoute.response(grpc);
        return Box::pin(local(worker, conn, ex, Some(chain), metrics, r)).await;
    };
    match &route.action {
        Action::Direct(resp) => {
            let r = resp.clone();
            Box::pin(local(worker, conn, ex, Some(chain), metrics, r)).await
        }
        Action::Redirect(rd) => {
            let r = rd.respond(&ex.borrow().request, conn.scheme);
            Box::pin(local(worker, conn, ex, Some(chain), metrics, r)).await
        }
        Action::Cluster(_) | Action::Weighted { .. } => {
            forward(
                worker, conn, snap, listener, route, ex, chain, metrics, incoming, on_upgrade, grpc,
            )
            .await
        }
    }
}

/// The request's id: `found`, the client's non-empty `x-request-id`, or a new one, which is
/// then set on the request: among its fields when filters may read them or an empty one is
/// there (`in_map`), else only when it is sent upstream (see
/// [`Exchange::request_id_unlisted`]).
fn ensure_request_id(ex: &SharedExchange, found: Option<HeaderValue>, in_map: bool) {
    let mut e = ex.borrow_mut();
    let id = match found {
        Some(v) => v,
        None if in_map => {
            let v = headers::new_request_id();
            e.request
                .headers
                .insert(headers::X_REQUEST_ID.clone(), v.clone());
            v
        }
        None => {
            e.request_id_unlisted = true;
            headers::new_request_id()
        }
    };
    e.request_id = Some(id);
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    snap: &Arc<Snapshot>,
    listener: &Arc<ListenerRuntime>,
    route: &Arc<Route>,
    ex: SharedExchange,
    chain: Chain,
    metrics: crate::telemetry::metrics::RouteMetrics,
    incoming: RequestBody,
    on_upgrade: Option<Downstream>,
    grpc: bool,
) -> Response<ProxyBody> {
    let Some(cluster) = route.action.pick_cluster() else {
        return Box::pin(local(
            worker,
            conn,
            ex,
            Some(chain),
            metrics,
            ProxyError::UnknownCluster.response(grpc),
        ))
        .await;
    };
    let max_body = listener.config.limits.max_request_body_size.bytes();
    let prepared = prepare(
        worker,
        conn,
        snap,
        route,
        &ex,
        &chain,
        cluster,
        incoming,
        on_upgrade.is_some(),
        max_body,
    );
    let Some(out) = prepared else {
        return Box::pin(local(
            worker,
            conn,
            ex,
            Some(chain),
            metrics,
            ProxyError::RequestBodyTooLarge.response(grpc),
        ))
        .await;
    };
    let Outgoing {
        req,
        hash,
        received,
        tripped,
        traced,
        added,
        fields_stay,
    } = out;
    let endpoint = Cell::new(None);
    let stayed = |f: &mut dyn FnMut(&http::HeaderMap)| {
        if let Ok(e) = ex.try_borrow() {
            f(&e.request.headers);
        }
    };
    let opts = SendOptions {
        timeout: route.timeout,
        retries: route.retries.as_ref(),
        hash,
        tries: traced.as_ref().map(|t| &t.tries),
        timer: Some(&conn.route_timer),
        endpoint: Some(&endpoint),
        // Without filters nothing waited since the request arrived (its head was just parsed,
        // its route matched): the route timeout counts from the arrival's clock reading. A
        // filter may have paused the request (a callout), so with one the clock is read again.
        now: chain.is_empty().then(crate::request_clock::get),
        // Only the HTTP/1.1 server reads the response's fields when no filter has a phase after
        // the request's, or every such filter takes them raw (nothing else on this path does:
        // logs and traces take the status), and no `debug.config_version_header` replaces one
        // of them.
        raw_fields: on_upgrade.is_none()
            && conn.hands_back_head.get()
            && snap
                .config
                .file
                .debug
                .as_ref()
                .is_none_or(|d| d.config_version_header.is_none())
            && chain.takes_raw_response(),
        added: Some(&added),
        fields: fields_stay.then_some(&stayed as &crate::upstream::RequestFieldsFn),
    };
    let result = worker.pools.send(cluster, req, &opts).await;
    ex.borrow_mut().upstream_addr = endpoint.get();
    if let Some(traced) = traced {
        if let Some(t) = ex.borrow().trace.as_ref() {
            let r = match &result {
                Ok(r) => Ok(r.status().as_u16()),
                Err(e) => Err(format!("{:?}", e.kind)),
            };
            let TracedSend {
                span,
                method,
                tries,
            } = traced;
            let r = r.as_ref().copied().map_err(String::as_str);
            t.end_upstream(span, &method, &cluster.name, r, tries);
        }
    }
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            let pending = ex.borrow_mut().pending_local.take();
            let r = if tripped.is_some_and(|t| t.get()) {
                ProxyError::RequestBodyTooLarge.response(grpc)
            } else if let Some(r) = pending {
                r
            } else {
                tracing::debug!(error = %e, "upstream request failed");
                ProxyError::from(&e).response(grpc)
            };
            return Box::pin(local(worker, conn, ex, Some(chain), metrics, r)).await;
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(down), Some(up)) = (on_upgrade, resp.body_mut().take_upgraded()) {
            upgrade::splice(down, up);
        }
    }
    let (mut parts, incoming) = (*resp).into_parts();
    let upgrading = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::remove_hop_by_hop(&mut parts.headers, upgrading);
    parts.version = Version::HTTP_11;
    ex.borrow_mut().response = Some(parts);
    let body_phase = body_filter::applies(&chain, true);
    // A filter that takes both response phases at once (see `Chain::whole_response_slot`)
    // needs to know whether the whole body came with the head before the headers phase runs.
    let whole = body_phase.then(|| chain.whole_response_slot()).flatten();
    if whole.is_none() {
        if let Some(r) = chain.response_headers(&ex).await {
            return local_response_only(worker, conn, ex, chain, metrics, *r, received);
        }
        if !body_phase {
            // No filter reads the response body: hand hyper's body to the finishing wrapper as
            // is (one box per response instead of two).
            return respond(worker, conn, ex, Some(chain), metrics, incoming, received);
        }
    }
    let limit = max_body as usize;
    // The usual small response: its whole body came with the head, and the body filters run on
    // it here, without waiting (see `whole_body`). A filter that pauses on it is waited for in a
    // box, so that the request path's future does not carry that part's state.
    let taken = whole_body::take(incoming).await;
    if whole.is_some() && !matches!(taken, Taken::Whole(_)) {
        // No whole body: the phases run one by one after all.
        if let Some(r) = chain.response_headers(&ex).await {
            return local_response_only(worker, conn, ex, chain, metrics, *r, received);
        }
    }
    let mut data = match taken {
        Taken::Whole(data) => data,
        // The head ended the stream: no body phase.
        Taken::Ended(incoming) => {
            return respond(worker, conn, ex, Some(chain), metrics, incoming, received)
        }
        Taken::Streaming(body) => {
            return respond_streamed(worker, conn, ex, chain, metrics, body, received, limit)
        }
    };
    let ran = match whole {
        Some(slot) => match chain.response_whole(&ex, slot, &mut data).await {
            (Some(r), _) => {
                return local_response_only(worker, conn, ex, chain, metrics, *r, received)
            }
            (None, Some(flow)) => whole_body::ran_alone(flow, data, limit),
            // The headers phase paused (or the filter left the body phase to run after it).
            (None, None) => whole_body::run(&chain, &ex, 0, data, limit),
        },
        None => whole_body::run(&chain, &ex, 0, data, limit),
    };
    match ran {
        Ran::Done(data) => {
            let body = http_body_util::Full::new(data);
            respond(worker, conn, ex, Some(chain), metrics, body, received)
        }
        Ran::Respond(r) => local_response_only(worker, conn, ex, chain, metrics, *r, received),
        Ran::Paused(p) => {
            let ran = Box::pin(whole_body::finish_paused(
                chain.clone(),
                ex.clone(),
                p,
                limit,
            ))
            .await;
            match ran {
                Ok(data) => {
                    let body = http_body_util::Full::new(data);
                    respond(worker, conn, ex, Some(chain), metrics, body, received)
                }
                Err(r) => local_response_only(worker, conn, ex, chain, metrics, *r, received),
            }
        }
    }
}

/// The upstream request of [`forward`] and what it watches while it is sent. Built by
/// [`prepare`], a plain function, so that its locals are not part of the request's future (each
/// byte of which is copied when the future moves).
struct Outgoing {
    req: Box<Request<ProxyBody>>,
    hash: Option<u64>,
    /// Request body bytes received from the client.
    received: Rc<Cell<u64>>,
    /// Set when the request body went over the listener's limit while it streamed.
    tripped: Option<Rc<Cell<bool>>>,
    traced: Option<TracedSend>,
    /// Fields added on the way out instead of in the request's map.
    added: AddedFields,
    /// `req`'s map is empty: its fields stayed in the exchange (see [`fields_stay`]).
    fields_stay: bool,
}

/// The upstream span of a traced request, open while the request is sent.
struct TracedSend {
    span: crate::telemetry::otel::request::UpstreamSpan,
    method: http::Method,
    tries: Tries,
}

/// Build the upstream request (`None`: the declared body is over the listener's limit).
#[allow(clippy::too_many_arguments)]
fn prepare(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    snap: &Arc<Snapshot>,
    route: &Arc<Route>,
    ex: &SharedExchange,
    chain: &Chain,
    cluster: &Arc<crate::upstream::Cluster>,
    incoming: RequestBody,
    upgrading: bool,
    max_body: u64,
) -> Option<Outgoing> {
    let mut added = AddedFields::default();
    let mut stay = false;
    let (mut req, hash) = {
        let mut e = ex.borrow_mut();
        e.cluster = Some(cluster.name.clone());
        let fields = headers::RequestFields::of(&e.request.headers, upgrading);
        let too_large = fields.content_length.is_some_and(|n| n > max_body);
        if too_large {
            return None;
        }
        let hash = snap_hash(snap, &cluster.name, &e.request.headers);
        // The request's own fields are read again after the upstream answers only by the
        // filters' later phases and the access log (the trace keeps the two headers it reports
        // when it starts). A filter that reads them then may read any of them: a copy, which
        // stays behind. The map itself moves on: it has the room the parser left for the
        // fields the proxy adds (a clone has none, and X-Forwarded-For would grow it). The
        // access log reads four: without such a filter, those stay behind, and the fields move
        // to the upstream request.
        let headers = if chain.reads_request_later() {
            if fields_stay(&e, &fields, route, conn, upgrading) {
                stay = true;
                http::HeaderMap::new()
            } else {
                let copy = e.request.headers.clone();
                std::mem::replace(&mut e.request.headers, copy)
            }
        } else {
            if worker.access_log_on() {
                e.logged = Some(Box::new(LoggedHeaders::of(&e.request.headers)));
            }
            std::mem::take(&mut e.request.headers)
        };
        (
            upstream_request(&e, headers, &fields, route, conn, upgrading, &mut added),
            hash,
        )
    };
    let received = Rc::new(Cell::new(0u64));
    // Most requests have no body: send an empty one (a zero-sized box, no allocation), with no
    // size cap to enforce on it.
    let body = if incoming.is_end_stream() {
        body::empty()
    } else {
        body::boxed(incoming)
    };
    let body = FilteredBody::wrap(body, chain, ex, false, max_body as usize);
    let (body, tripped) = if body.is_end_stream() {
        (body, None)
    } else {
        let tripped = Rc::new(Cell::new(false));
        let limited = LimitedBody::wrap(body, max_body, tripped.clone(), received.clone());
        (limited, Some(tripped))
    };
    *req.body_mut() = body;
    // Without filters nothing but the client could have put a `traceparent` in the map.
    let quiet = chain.is_empty();
    let traced = ex.borrow().trace.as_ref().map(|t| TracedSend {
        span: t.start_upstream(req.headers_mut(), quiet.then_some(&mut added)),
        method: req.method().clone(),
        tries: Tries::default(),
    });
    Some(Outgoing {
        req,
        hash,
        received,
        tripped,
        traced,
        added,
        fields_stay: stay,
    })
}

/// Whether the request's fields can stay in the exchange, for the filters' later phases, while
/// the HTTP/1.1 client encodes them from there ([`SendOptions::fields`]) instead of from a copy
/// of them: when the proxy changes none of them on the way out. It adds `X-Forwarded-For`,
/// `X-Forwarded-Proto` and the request id after them ([`AddedFields`]); anything else (a
/// hop-by-hop field, `Expect`, a missing `Host`, a rewritten host, the client's own
/// forwarding fields, an upgrade, a trace's `traceparent`) needs a map of its own.
fn fields_stay(
    e: &Exchange,
    fields: &headers::RequestFields,
    route: &Route,
    conn: &ConnState,
    upgrading: bool,
) -> bool {
    !upgrading
        && !fields.hop_by_hop
        && !fields.expect
        && fields.host
        && !fields.forwarded
        && conn.forwarded_for.is_some()
        && route.rewrite_host.is_none()
        && e.trace.is_none()
}

/// The response with a body still arriving: streamed through [`FilteredBody`], whose body
/// phases run frame by frame.
#[allow(clippy::too_many_arguments)]
fn respond_streamed(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    ex: SharedExchange,
    chain: Chain,
    metrics: crate::telemetry::metrics::RouteMetrics,
    body: ProxyBody,
    received: Rc<Cell<u64>>,
    limit: usize,
) -> Response<ProxyBody> {
    let body = FilteredBody::wrap(body, &chain, &ex, true, limit);
    let later = Phases::LOG | Phases::RESPONSE_BODY | Phases::RESPONSE_TRAILERS;
    respond_then(
        worker,
        conn,
        ex,
        Some(chain),
        metrics,
        body,
        received,
        later,
    )
}

/// The upstream request head: origin-form URI (with prefix rewrite), Host, proxy headers.
/// `headers`: the request's fields (a copy, or the fields themselves moved out of `e`). Boxed
/// from the start, with an empty body for now: its fields are written in place, and the send
/// path moves the box, not the head.
fn upstream_request(
    e: &Exchange,
    mut headers: http::HeaderMap,
    fields: &headers::RequestFields,
    route: &Route,
    conn: &ConnState,
    upgrade: bool,
    added: &mut AddedFields,
) -> Box<Request<ProxyBody>> {
    let src = &e.request;
    if e.request_id_unlisted {
        added.request_id = e.request_id.clone();
    }
    headers::remove_hop_by_hop_found(&mut headers, upgrade, fields.hop_by_hop);
    headers::keep_te_trailers(fields.te.as_ref(), &mut headers);
    if fields.expect {
        headers.remove(header::EXPECT);
    }
    match &conn.forwarded_for {
        // Neither field from the client: the upstream exchange writes both (see `added`).
        Some(client) if !fields.forwarded => {
            added.forwarded_for = Some(client.clone());
            added.forwarded_proto = Some(conn.scheme);
        }
        Some(client) => headers::set_forwarded_value(&mut headers, client, conn.scheme),
        None => headers::set_forwarded(&mut headers, conn.client.ip(), conn.scheme),
    }
    if let Some(h) = &route.rewrite_host {
        headers.insert(header::HOST, h.clone());
    } else if !fields.host {
        if let Some(a) = src.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                headers.insert(header::HOST, v);
            }
        }
    }
    let pq = src.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = match &route.rewrite_prefix {
        Some((from, to)) => match pq.strip_prefix(from.as_str()) {
            Some(rest) => {
                let mut s = String::with_capacity(to.len() + rest.len());
                s.push_str(to);
                s.push_str(rest);
                s.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"))
            }
            None => pq.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/")),
        },
        None => match src.uri.path_and_query() {
            Some(p) => Uri::from(p.clone()),
            None => Uri::from_static("/"),
        },
    };
    let mut req = Box::new(Request::new(body::empty()));
    *req.method_mut() = src.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req
}

fn snap_hash(snap: &Snapshot, cluster: &str, h: &http::HeaderMap) -> Option<u64> {
    let cfg = snap
        .config
        .file
        .clusters
        .iter()
        .find(|c| c.name == cluster)?;
    let key = cfg.hash_key.as_ref()?;
    let v = h.get(key.header.as_str())?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    v.as_bytes().hash(&mut hasher);
    Some(hasher.finish())
}

/// Answer with a local response, after running the response phases over it.
async fn local(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    ex: SharedExchange,
    chain: Option<Chain>,
    metrics: crate::telemetry::metrics::RouteMetrics,
    r: LocalResponse,
) -> Response<ProxyBody> {
    let body = set_local(&ex, r);
    if let Some(c) = &chain {
        if let Some(r2) = c.response_headers(&ex).await {
            let body = set_local(&ex, *r2);
            return respond(
                worker,
                conn,
                ex,
                chain,
                metrics,
                body,
                Rc::new(Cell::new(0)),
            );
        }
    }
    respond(
        worker,
        conn,
        ex,
        chain,
        metrics,
        body,
        Rc::new(Cell::new(0)),
    )
}

/// A response filter replaced the upstream response: no second pass through the chain.
fn local_response_only(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    ex: SharedExchange,
    chain: Chain,
    metrics: crate::telemetry::metrics::RouteMetrics,
    r: LocalResponse,
    received: Rc<Cell<u64>>,
) -> Response<ProxyBody> {
    let body = set_local(&ex, r);
    respond(worker, conn, ex, Some(chain), metrics, body, received)
}

fn set_local(ex: &SharedExchange, r: LocalResponse) -> ProxyBody {
    let mut e = ex.borrow_mut();
    e.local_details = Some(r.details);
    let mut resp = Response::new(());
    *resp.status_mut() = r.status;
    *resp.headers_mut() = r.headers;
    if !r.body.is_empty() && !resp.headers().contains_key(header::CONTENT_TYPE) {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    e.response = Some(resp.into_parts().0);
    body::full(r.body)
}

/// Build the downstream response from the exchange's response head and `body`; no filter
/// phase but the log phase runs after this.
fn respond<B>(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    ex: SharedExchange,
    chain: Option<Chain>,
    metrics: crate::telemetry::metrics::RouteMetrics,
    body: B,
    received: Rc<Cell<u64>>,
) -> Response<ProxyBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + 'static,
    B::Error: Into<body::BoxError>,
{
    respond_then(
        worker,
        conn,
        ex,
        chain,
        metrics,
        body,
        received,
        Phases::LOG,
    )
}

/// [`respond`], with the filter phases that may still run (and read the response head) while
/// or after the body streams out: `later`.
#[allow(clippy::too_many_arguments)]
fn respond_then<B>(
    worker: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    ex: SharedExchange,
    chain: Option<Chain>,
    metrics: crate::telemetry::metrics::RouteMetrics,
    body: B,
    received: Rc<Cell<u64>>,
    later: Phases,
) -> Response<ProxyBody>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + 'static,
    B::Error: Into<body::BoxError>,
{
    let (parts, status, upstream_addr) = {
        let mut e = ex.borrow_mut();
        let parts = e
            .response
            .take()
            .unwrap_or_else(|| Response::new(()).into_parts().0);
        let status = parts.status.as_u16();
        // Filters may read the response head in the phases that run later. Only the log phase
        // left: an HTTP/1.1 connection hands the head back once written (no copy); body and
        // trailer phases run while the head is being sent, and need a copy.
        let needed = chain.as_ref().is_some_and(|c| c.phases().intersects(later));
        let log_only = !later.intersects(Phases::RESPONSE_BODY | Phases::RESPONSE_TRAILERS);
        if needed && !(log_only && conn.expect_head()) {
            e.response = Some(clone_head(&parts));
        }
        (parts, status, e.upstream_addr)
    };
    let finish = Finish {
        ex,
        chain,
        metrics,
        status,
        ttfb: Instant::now(),
        end: None,
        upstream_addr,
        bytes_received: received,
        bytes_sent: 0,
        conn: conn.clone(),
        sink: worker.finish_sink.clone(),
    };
    let headers = &parts.headers;
    let content_length = || {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let body = FinishBody::wrap(body, finish, content_length);
    Response::from_parts(parts, body)
}

fn clone_head(p: &http::response::Parts) -> http::response::Parts {
    let mut r = Response::new(());
    *r.status_mut() = p.status;
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    // Raw fields (see `raw_fields`) are part of the head: a reference count on the upstream's.
    if crate::h1::raw_fields::is_raw(p) {
        *r.extensions_mut() = p.extensions.clone();
    }
    r.into_parts().0
}
