//! The request path: [`WorkerPools::send`] picks an endpoint, sends on a pooled or new
//! connection, and retries per the route's policy, all within the route timeout.
//!
//! The keep-alive race: an upstream may close an idle keep-alive connection just as we reuse it.
//! Two cases are resent once on a new connection to the same endpoint, with or without a retry
//! policy and without counting as a retry:
//! - the request never left (the pooled connection failed on the first write, or hyper's HTTP/2
//!   client handed it back unsent): any request, since the upstream never saw it;
//! - the request was written but the connection closed or reset before any response byte, and
//!   the request is idempotent without a body (retry-safe by definition). The HTTP/1.1 client
//!   consumes nothing of such a request before the response arrives, so it comes back whole:
//!   nothing is copied on the hot path.

use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http::{header, Request, Response, Uri, Version};
use http_body::Body as _;
use tokio::time::Instant;

use crate::body::{self, ProxyBody};
use crate::config::model::{Protocol, RetryConfig};

use super::cluster::Cluster;
use super::endpoint::Endpoint;
use super::lb::Tried;
use super::pool::{connect_h1, connect_h2, H2Slot, WorkerPools};
use super::{retry, SendOptions, UpstreamBody, UpstreamError, UpstreamErrorKind};
use crate::h1::SendError;

/// The response is boxed: it moves through every level of the send path (retries, the route
/// timeout) as one pointer.
type Outcome = Result<Box<Response<UpstreamBody>>, UpstreamError>;

impl WorkerPools {
    /// Send `req` (absolute-form or origin-form URI; Host header already set) to `cluster`,
    /// with connect/request timeouts and retries per `opts`.
    ///
    /// `opts.timeout` bounds everything until the response headers arrive: waiting for DNS,
    /// connecting, every try and the backoff between tries (zero: no bound). Must run inside a
    /// `LocalSet`.
    ///
    /// # Errors
    /// An [`UpstreamError`] whose kind decides the status code.
    pub async fn send(
        &self,
        cluster: &Arc<Cluster>,
        req: Box<Request<ProxyBody>>,
        opts: &SendOptions<'_>,
    ) -> Result<Box<Response<UpstreamBody>>, UpstreamError> {
        // Zero means no route timeout (Envoy's convention); so does one beyond the clock's range.
        let now = opts.now.unwrap_or_else(Instant::now);
        let deadline = match now.checked_add(opts.timeout) {
            Some(deadline) if !opts.timeout.is_zero() => Some(deadline),
            _ => None,
        };
        let mut timer = deadline.map(|d| match opts.timer.and_then(|slot| slot.take()) {
            Some(mut t) => {
                t.set(d);
                t
            }
            None => crate::lazy_timer::LazyTimer::new(d),
        });
        // One await for both cases: each await point of a future is a slot of its state, and
        // this state is moved on every request.
        let sleep = timer.as_mut();
        // The request comes boxed: the tries below move a pointer, not the request head, through
        // their states (and a request the keep-alive race hands back keeps its box).
        let outcome = Bounded::new(self.send_with_retries(cluster, req, opts), sleep).await;
        if let (Some(slot), Some(t)) = (opts.timer, timer) {
            slot.set(Some(t));
        }
        match outcome {
            Some(outcome) => outcome,
            None => Err(cluster.error(
                UpstreamErrorKind::Timeout,
                format!("no response headers within {:?}", opts.timeout),
            )),
        }
    }

    async fn send_with_retries(
        &self,
        cluster: &Cluster,
        req: Box<Request<ProxyBody>>,
        opts: &SendOptions<'_>,
    ) -> Outcome {
        // Waiting for the first DNS answer is rare (a name not resolved yet): out of line, so
        // that its timer and notification do not size every request's future.
        if !cluster.is_resolved() {
            Box::pin(cluster.wait_resolved()).await;
        }
        let body_empty = req.body().is_end_stream();
        match retry::applicable(opts.retries, req.method(), body_empty) {
            // One try, the request moved straight into it.
            None => {
                self.try_once(cluster, opts, &mut Tried::default(), req)
                    .await
            }
            // Retrying keeps a copy of the head and sleeps between tries: boxed, so that only
            // routes with a retry policy pay for that state.
            Some(policy) => Box::pin(self.retrying(cluster, req, opts, policy)).await,
        }
    }

    /// Tries under a retry policy: every try but the last sends a copy of the head (the body
    /// is empty by policy).
    async fn retrying(
        &self,
        cluster: &Cluster,
        req: Box<Request<ProxyBody>>,
        opts: &SendOptions<'_>,
        policy: &RetryConfig,
    ) -> Outcome {
        let mut tried = Tried::default();
        let attempts = policy.attempts;
        let mut last = Some(req);
        let mut budget = None;
        let mut retry_no = 0;
        loop {
            let this = match last.take() {
                Some(req) if retry_no < attempts => {
                    let copy = request_copy(&req);
                    last = Some(req);
                    copy
                }
                Some(req) => req,
                // Unreachable: `last` is only taken for the final try.
                None => return Err(cluster.error(UpstreamErrorKind::Reset, "no request".into())),
            };
            let outcome = self.try_once(cluster, opts, &mut tried, this).await;
            if retry_no == attempts || !should_retry(policy, &outcome) {
                return outcome;
            }
            // Our previous retry (if any) is over: it no longer counts against the budget.
            drop(budget.take());
            budget = retry::begin(cluster, policy);
            if budget.is_none() {
                tracing::debug!(cluster = %cluster.name, "retry budget spent; not retrying");
                return outcome;
            }
            drop(outcome);
            retry_no += 1;
            cluster.services.metrics.upstream_retry(&cluster.name);
            tokio::time::sleep(retry::backoff(retry_no)).await;
        }
    }

    /// One try: pick an endpoint (not one already tried, when possible) and exchange.
    async fn try_once(
        &self,
        cluster: &Cluster,
        opts: &SendOptions<'_>,
        tried: &mut Tried,
        req: Box<Request<ProxyBody>>,
    ) -> Outcome {
        let active = cluster.pick(opts.hash, tried)?;
        let ep = active.endpoint();
        tried.push(ep.addr);
        if let Some(slot) = opts.endpoint {
            slot.set(Some(ep.addr));
        }
        let traced = opts.tries.map(|t| (t, std::time::Instant::now()));
        let outcome = match cluster.protocol() {
            Protocol::Http1 => self.exchange_h1(cluster, ep, req, opts).await,
            // Boxed: hyper's HTTP/2 send future is large, and would size every request's future.
            Protocol::Http2 => {
                let mut req = *req;
                if let Some(fields) = opts.fields.filter(|_| req.headers().is_empty()) {
                    fields(&mut |h| *req.headers_mut() = h.clone());
                }
                if let Some(added) = opts.added {
                    added.insert_into(req.headers_mut());
                }
                Box::pin(self.exchange_h2(cluster, ep, req)).await
            }
        };
        if let Some((tries, start)) = traced {
            tries.record(start, ep.addr, &outcome);
        }
        outcome
    }

    async fn exchange_h1(
        &self,
        cluster: &Cluster,
        ep: &Endpoint,
        mut req: Box<Request<ProxyBody>>,
        opts: &SendOptions<'_>,
    ) -> Outcome {
        let key = cluster.pool_key(ep);
        let (mut conn, mut reused) = match self.inner.take_h1(key, crate::request_clock::get()) {
            Some(taken) => (taken.conn, true),
            None => (connect_boxed(cluster, ep).await?, false),
        };
        loop {
            let recycle = self.inner.recycler(key, cluster.pool);
            let back = match conn
                .send(
                    req,
                    reused,
                    recycle,
                    UpstreamBody::H1,
                    opts.raw_fields,
                    opts.added,
                    opts.fields,
                )
                .await
            {
                Ok(resp) => return Ok(resp),
                Err(SendError::Unsent(unsent, e)) => (unsent, e),
                Err(SendError::Stale(Some(back), e)) if resendable(&back) => (back, e),
                Err(e) => return Err(classify_h1(cluster, ep, e)),
            };
            // Only a reused connection reports Unsent or Stale: once, on a new one.
            tracing::debug!(cluster = %cluster.name, endpoint = %ep.label, error = %back.1,
                "pooled connection closed by the upstream; sending on a new connection");
            req = back.0;
            conn = connect_boxed(cluster, ep).await?;
            reused = false;
        }
    }

    async fn exchange_h2(
        &self,
        cluster: &Cluster,
        ep: &Endpoint,
        mut req: Request<ProxyBody>,
    ) -> Outcome {
        *req.version_mut() = Version::HTTP_2;
        absolute_uri(&mut req, ep, cluster.tls.is_some());
        let mut connecting = None;
        // Look twice at most: once more after waiting for a connect in progress.
        for _ in 0..2 {
            match self.inner.h2(cluster.pool_key(ep), Instant::now()) {
                H2Slot::Open(mut sender) => match sender.try_send_request(req).await {
                    Ok(resp) => return Ok(Box::new(resp.map(UpstreamBody::H2))),
                    Err(mut e) => match e.take_message() {
                        // The connection is going away and never saw the request.
                        Some(unsent) => {
                            req = unsent;
                            break;
                        }
                        None => return Err(classify(cluster, ep, e.error())),
                    },
                },
                H2Slot::Connecting(notify) => notify.notified().await,
                H2Slot::Vacant(guard) => {
                    connecting = Some(guard);
                    break;
                }
            }
        }
        let mut sender = Box::pin(connect_h2(cluster, ep)).await?;
        match connecting {
            Some(guard) => guard.publish(&sender, cluster.pool),
            None => self
                .inner
                .put_h2(cluster.pool_key(ep), &sender, cluster.pool),
        }
        sender
            .try_send_request(req)
            .await
            .map(|r| Box::new(r.map(UpstreamBody::H2)))
            .map_err(|e| classify(cluster, ep, e.error()))
    }
}

fn should_retry(policy: &RetryConfig, outcome: &Outcome) -> bool {
    match outcome {
        Ok(resp) => retry::on_status(policy, resp.status()),
        Err(e) => retry::on_error(policy, e.kind),
    }
}

/// Whether a request may be sent again after a connection failed under it.
fn resendable(req: &Request<ProxyBody>) -> bool {
    req.body().is_end_stream() && retry::is_idempotent(req.method())
}

/// Connecting (TCP, TLS) is a large future needed only on a pool miss: boxed, so that it does not
/// size (and get moved with) every request's future.
async fn connect_boxed(cluster: &Cluster, ep: &Endpoint) -> Result<crate::h1::Conn, UpstreamError> {
    Box::pin(connect_h1(cluster, ep)).await
}

/// A copy of `req`'s head with an empty body (for a try that may be retried).
fn request_copy(req: &Request<ProxyBody>) -> Box<Request<ProxyBody>> {
    let mut copy = Request::new(body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Box::new(copy)
}

/// HTTP/2 needs `:scheme` and `:authority`: complete an origin-form URI from the Host header
/// (or the endpoint address when there is none); `https` to a TLS cluster.
fn absolute_uri(req: &mut Request<ProxyBody>, ep: &Endpoint, tls: bool) {
    if req.uri().scheme().is_some() {
        return;
    }
    let authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| Authority::try_from(&*ep.label).ok());
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Only fails without an authority; the request then goes as is and hyper reports why.
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// Map a failed exchange to its kind: unparsable answers are `BadResponse`, everything else
/// (closed, reset, aborted, protocol errors) is `Reset`.
fn classify(cluster: &Cluster, ep: &Endpoint, e: &hyper::Error) -> UpstreamError {
    let kind = if e.is_parse() || e.is_parse_status() || e.is_parse_version_h2() {
        UpstreamErrorKind::BadResponse
    } else if e.is_timeout() {
        UpstreamErrorKind::Timeout
    } else {
        UpstreamErrorKind::Reset
    };
    let detail = match std::error::Error::source(e) {
        Some(cause) => format!("{}: {e}: {cause}", ep.label),
        None => format!("{}: {e}", ep.label),
    };
    cluster.error(kind, detail)
}

/// Map a failed HTTP/1.1 exchange to its kind: unparsable answers are `BadResponse`, everything
/// else (closed, reset, a failed request body) is `Reset`.
fn classify_h1(cluster: &Cluster, ep: &Endpoint, e: SendError) -> UpstreamError {
    let kind = match e {
        SendError::BadResponse(_) => UpstreamErrorKind::BadResponse,
        _ => UpstreamErrorKind::Reset,
    };
    cluster.error(kind, format!("{}: {e}", ep.label))
}

pin_project_lite::pin_project! {
    /// `fut`, bounded by the timer when there is one: `None` once it fired.
    struct Bounded<'t, F> {
        #[pin]
        fut: F,
        sleep: Option<&'t mut crate::lazy_timer::LazyTimer>,
    }
}

impl<'t, F> Bounded<'t, F> {
    fn new(fut: F, sleep: Option<&'t mut crate::lazy_timer::LazyTimer>) -> Self {
        Bounded { fut, sleep }
    }
}

impl<F: std::future::Future> std::future::Future for Bounded<'_, F> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(v) = this.fut.poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        match this.sleep.as_mut() {
            Some(s) => s.poll_expired(cx).map(|()| None),
            None => std::task::Poll::Pending,
        }
    }
}
