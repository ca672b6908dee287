//! Worker threads: each runs a single-threaded tokio runtime with a LocalSet, its own
//! SO_REUSEPORT listeners and its own upstream connection pools. A connection lives on one
//! worker for its whole life, so nothing on the request path takes a lock.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use crate::body::ProxyBody;
use crate::proxy::finish::FinishSink;
use arc_swap::cache::Cache;
use arc_swap::{ArcSwapAny, RefCnt};

use crate::server::Gateway;
use crate::services::Services;
use crate::snapshot::Snapshot;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::otel::Tracer;
use crate::upstream::{SendOptions, UpstreamBody, UpstreamError, UpstreamErrorKind, WorkerPools};

/// What a worker owns.
pub struct WorkerCtx {
    pub index: usize,
    pub gateway: Arc<Gateway>,
    pub services: Arc<Services>,
    pub pools: WorkerPools,
    /// Called once per finished exchange (access log).
    pub finish_sink: FinishSink,
    snapshot: Cached<Arc<Snapshot>>,
    tracer: Cached<Option<Arc<Tracer>>>,
    access_log: Cached<Option<Arc<AccessLog>>>,
}

/// One swappable field of the [`Gateway`], as `arc_swap::Cache` wants it.
pub struct GatewayField<T: RefCnt + 'static> {
    gateway: Arc<Gateway>,
    field: fn(&Gateway) -> &ArcSwapAny<T>,
}

impl<T: RefCnt> std::ops::Deref for GatewayField<T> {
    type Target = ArcSwapAny<T>;
    fn deref(&self) -> &ArcSwapAny<T> {
        (self.field)(&self.gateway)
    }
}

/// A worker's copy of a swappable field of the [`Gateway`]: reading it is one relaxed load that
/// finds the field unchanged, and the shared value is fetched again only after a swap. A plain
/// `ArcSwap::load` takes and returns a debt slot — two or three atomic read-modify-writes, about
/// 20 cycles each — and the request path read three such fields per request.
pub type Cached<T> = RefCell<Cache<GatewayField<T>, T>>;

/// A [`Cached`] view of `field` of `gateway`.
pub fn cached<T: RefCnt>(
    gateway: &Arc<Gateway>,
    field: fn(&Gateway) -> &ArcSwapAny<T>,
) -> Cached<T> {
    RefCell::new(Cache::new(GatewayField {
        gateway: gateway.clone(),
        field,
    }))
}

impl WorkerCtx {
    pub fn new(
        index: usize,
        gateway: Arc<Gateway>,
        pools: WorkerPools,
        finish_sink: FinishSink,
    ) -> Self {
        WorkerCtx {
            index,
            services: gateway.services.clone(),
            snapshot: cached(&gateway, |g| &g.snapshot),
            tracer: cached(&gateway, |g| &g.tracer),
            access_log: cached(&gateway, |g| &g.access_log),
            gateway,
            pools,
            finish_sink,
        }
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow_mut().load().clone()
    }

    /// The tracer, when tracing is configured.
    pub fn tracer(&self) -> Option<Arc<Tracer>> {
        self.tracer.borrow_mut().load().clone()
    }

    /// Whether finished exchanges are written to an access log.
    pub fn access_log_on(&self) -> bool {
        self.access_log.borrow_mut().load().is_some()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<WorkerCtx>>> = const { RefCell::new(None) };
    static DISPATCH_OVERRIDE: RefCell<Option<Dispatcher>> = const { RefCell::new(None) };
}

/// What a [`Dispatcher`] returns.
pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, UpstreamError>>>>;

/// A stand-in for the upstream pools: given the cluster, the request and the timeout, answers.
pub type Dispatcher = Rc<dyn Fn(&str, Request<ProxyBody>, Duration) -> DispatchFuture>;

/// Whether a test double answers [`dispatch`] on this thread.
pub fn has_dispatch_override() -> bool {
    DISPATCH_OVERRIDE.with(|o| o.borrow().is_some())
}

/// Replace [`dispatch`] on this thread with `d` (or restore the real pools with `None`); returns
/// the previous override. Used by `sluice plugin test` and the plugin test kit, which run a plugin
/// without a network and answer its callouts with canned responses.
pub fn set_dispatch_override(d: Option<Dispatcher>) -> Option<Dispatcher> {
    DISPATCH_OVERRIDE.with(|o| std::mem::replace(&mut *o.borrow_mut(), d))
}

/// Make `w` the worker of this thread (for [`dispatch`]).
pub fn set_current(w: Rc<WorkerCtx>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(w));
}

/// The worker of this thread, if any.
pub fn current() -> Option<Rc<WorkerCtx>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Send a request to `cluster` of the current snapshot from the current worker (pooled
/// connections, the cluster's load balancer), waiting at most `timeout` for response headers.
/// Must be called on a worker thread (inside its LocalSet), unless a test double is set with
/// [`set_dispatch_override`].
///
/// # Errors
/// Unknown cluster (kind `NoHealthyEndpoint`) or any upstream failure.
pub async fn dispatch(
    cluster: &str,
    req: Request<ProxyBody>,
    timeout: Duration,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let test_double = DISPATCH_OVERRIDE.with(|o| o.borrow().clone());
    if let Some(d) = test_double {
        return d(cluster, req, timeout).await;
    }
    let unknown = |detail: &str| UpstreamError {
        kind: UpstreamErrorKind::NoHealthyEndpoint,
        cluster: cluster.into(),
        detail: detail.to_string(),
    };
    let Some(w) = current() else {
        return Err(unknown("dispatch called outside a worker"));
    };
    let snap = w.snapshot();
    let Some(c) = snap.upstreams.clusters.get(cluster).cloned() else {
        return Err(unknown("no such cluster"));
    };
    let opts = SendOptions {
        timeout,
        retries: None,
        hash: None,
        tries: None,
        timer: None,
        endpoint: None,
        now: None,
        raw_fields: false,
        added: None,
        fields: None,
    };
    let resp: Response<UpstreamBody> = *w.pools.send(&c, Box::new(req), &opts).await?;
    Ok(resp.map(crate::body::boxed))
}
