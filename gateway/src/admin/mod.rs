//! The admin HTTP API (HTTP/1.1, 127.0.0.1:9901 by default): health, readiness, metrics, the live
//! configuration and plugins, and reload. It runs on its own runtime, away from the workers, so a
//! slow scrape or reload never competes with traffic, and an overloaded worker cannot hide
//! `/healthz`.
//!
//! Endpoints are registered in [`default_router`], one line each; other modules extend it with
//! [`Router::route`] and start it with [`serve_with`] or [`AdminServer::start`].

#![warn(missing_docs)]

mod handlers;
mod response;
mod router;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http::Method;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use crate::services::Services;

pub use response::{AdminRequest, AdminResponse};
pub use router::Router;

/// How long open admin connections may finish their request after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A client that does not send its headers in this time is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE...) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

type JsonFn = Box<dyn Fn() -> serde_json::Value + Send + Sync>;
type ReloadFn = Box<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What the admin endpoints read and drive.
pub struct AdminState {
    /// Metrics and other state shared with the workers.
    pub services: Arc<Services>,
    /// Set once the first snapshot serves traffic.
    pub ready: AtomicBool,
    /// Set when shutdown begins: `/ready` turns 503 while in-flight requests finish.
    pub draining: AtomicBool,
    /// The live configuration, for `GET /config`.
    pub config_json: JsonFn,
    /// Loaded plugins, for `GET /plugins`.
    pub plugins_json: JsonFn,
    /// Re-reads and applies the configuration, returning the new version or why it was rejected.
    /// It is expected to count the outcome (`Metrics::reload_succeeded`/`reload_failed`) itself,
    /// since SIGHUP and file watching reload through the same path.
    pub reload: Option<ReloadFn>,
    /// Guards against overlapping reloads through the API.
    reloading: AtomicBool,
}

impl AdminState {
    /// Not ready, not draining, `null` for config and plugins, no reload hook.
    pub fn new(services: Arc<Services>) -> Self {
        AdminState {
            services,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            config_json: Box::new(|| serde_json::Value::Null),
            plugins_json: Box::new(|| serde_json::Value::Null),
            reload: None,
            reloading: AtomicBool::new(false),
        }
    }

    /// Sets what `GET /config` returns.
    pub fn with_config_json(
        mut self,
        f: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.config_json = Box::new(f);
        self
    }

    /// Sets what `GET /plugins` returns.
    pub fn with_plugins_json(
        mut self,
        f: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.plugins_json = Box::new(f);
        self
    }

    /// Sets the hook `POST /reload` calls (on a blocking thread).
    pub fn with_reload(
        mut self,
        f: impl Fn() -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.reload = Some(Box::new(f));
        self
    }
}

/// The built-in endpoints. Add one with a single `.route(path, method, handler)` line.
pub fn default_router() -> Router {
    Router::new()
        .route("/healthz", Method::GET, handlers::healthz)
        .route("/ready", Method::GET, handlers::ready)
        .route("/metrics", Method::GET, handlers::metrics)
        .route("/config", Method::GET, handlers::config)
        .route("/plugins", Method::GET, handlers::plugins)
        .route("/reload", Method::POST, handlers::reload)
}

/// Serves the [`default_router`] on `listener` until `shutdown` completes.
///
/// # Errors
/// None today (accept errors are logged and retried); the signature leaves room for fatal ones.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_with(listener, state, default_router(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections finish
/// their current request for a few seconds.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<AdminState>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let router = Arc::new(router);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, state.clone(), router.clone(), stop_rx.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "admin API: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Every receiver is still alive inside `conns`, so the send reaches them.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            left = conns.len(),
            "admin API: closing connections still open"
        );
    }
    Ok(())
}

async fn serve_conn(
    stream: TcpStream,
    state: Arc<AdminState>,
    router: Arc<Router>,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req| {
        let (state, router) = (state.clone(), router.clone());
        async move { Ok::<_, Infallible>(router.dispatch(state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "admin API connection ended with an error");
    }
}

/// Completes when the server stops (or is gone). The guard `wait_for` returns is not `Send`, so
/// it must not live in the caller's future.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// The admin API on a dedicated thread with its own single-threaded runtime.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl AdminServer {
    /// Binds `addr` now (so a taken port is reported to the caller) and serves `router` on a
    /// new thread.
    ///
    /// # Errors
    /// The address cannot be bound, or the thread or runtime cannot be created.
    pub fn start(
        addr: SocketAddr,
        state: Arc<AdminState>,
        router: Router,
    ) -> io::Result<AdminServer> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("sluice-admin")
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-admin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener)?;
                    // A dropped sender also means stop.
                    serve_with(listener, state, router, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            })?;
        Ok(AdminServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish (a few seconds at most) and joins the thread.
    ///
    /// # Errors
    /// What the server loop returned, or an error if its thread panicked.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the admin thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "admin API stopped with an error");
        }
    }
}
