//! Listening sockets (one SO_REUSEPORT socket per worker per listener), the accept loop, and
//! serving a connection with hyper: HTTP/1.1 and h2c by prior knowledge on plain listeners,
//! TLS first (`tls.rs`) then HTTP/1.1 or h2 per ALPN on TLS listeners.

pub mod bind;
pub mod tls;

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy::{self, ConnState};
use crate::worker::WorkerCtx;

/// Spawns hyper's background tasks (h2 streams) on the worker's LocalSet.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Accept connections on `listener` until shutdown.
pub async fn accept_loop(
    w: Rc<WorkerCtx>,
    name: Arc<str>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    tokio::task::spawn_local(serve(w.clone(), name.clone(), stream, peer, shutdown.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

async fn serve(
    w: Rc<WorkerCtx>,
    name: Arc<str>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let snap = w.snapshot();
    let Some(l) = snap.listener(&name).cloned() else {
        return;
    };
    drop(snap);
    let limits = &l.config.limits;
    let counter = w.gateway.connection_counter(&name);
    if counter.fetch_add(1, Ordering::Relaxed) >= limits.max_connections as usize {
        counter.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(listener = %name, %peer, "max_connections reached; closing new connection");
        return;
    }
    let _guard = ConnGuard {
        counter,
        w: w.clone(),
        name: name.clone(),
    };
    w.services.metrics.connection_opened(&name);
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(l.address);
    let (io, tls) = match &l.tls {
        None => (tls::MaybeTls::Plain(stream), None),
        Some(t) => match t.accept(stream, limits.header_read_timeout.get()).await {
            Ok((io, info)) => (io, Some(info)),
            Err(e) => {
                tracing::debug!(listener = %name, %peer, error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    let mut conn = ConnState::new(name.clone(), peer, local, "http");
    if tls.is_some() {
        conn.scheme = "https";
        conn.tls = tls;
    }
    let conn = Rc::new(conn);

    // Set once the connection drains: HTTP/1 responses then say `Connection: close`, so a
    // keep-alive client learns it must reconnect from a response instead of racing a close.
    let closing = Rc::new(std::cell::Cell::new(false));
    let svc = {
        let (w, conn, closing) = (w.clone(), conn.clone(), closing.clone());
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let http1 = req.version() < http::Version::HTTP_2;
            let closing = closing.clone();
            // Boxed once here: hyper keeps the service future in its dispatcher and it is moved
            // a few times on the way there; a pointer moves cheaply, the request path's
            // future (kilobytes) does not.
            let fut = Box::pin(proxy::handle(w.clone(), conn.clone(), req));
            async move {
                let mut resp = fut.await;
                if let (true, true, Ok(r)) = (http1, closing.get(), resp.as_mut()) {
                    r.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                resp
            }
        })
    };
    let mut builder = auto::Builder::new(LocalExec);
    let header_limit = limits
        .max_request_headers_size
        .bytes()
        .clamp(8192, u32::MAX as u64);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size(header_limit as usize)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(header_limit as u32)
        .max_concurrent_streams(DEFAULT_H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // Rapid reset (CVE-2023-44487): a client that opens and cancels streams faster than
        // they are served, or keeps provoking stream errors, gets a GOAWAY.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    if !l.http2 {
        builder = builder.http1_only();
    } else if !l.http1 {
        builder = builder.http2_only();
    }
    let idle = limits.idle_timeout.get();
    drop(l);
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    let mut draining = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let idle_deadline = tokio::time::Instant::from_std(conn.idle_since.get() + idle);
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = %name, %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = shutdown.changed(), if !draining && drain_deadline.is_none() => {
                // Busy keep-alive connections close after their next response; idle ones after
                // a short grace (a request already on its way still gets its answer).
                closing.set(true);
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_IDLE_GRACE);
            }
            _ = sleep_opt(drain_deadline), if !draining && drain_deadline.is_some() => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_deadline), if !draining => {
                if conn.in_flight.get() == 0 && conn.idle_since.get().elapsed() >= idle {
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// How long a draining connection may stay open waiting for its next request, which is then
/// answered with `Connection: close`.
pub const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(500);

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// HTTP/2 streams per connection unless configured otherwise.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 256;
/// HTTP/2 flow-control window per stream, bytes: what one stream may have in flight.
pub const H2_STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 flow-control window per connection, bytes: shared by all its streams.
pub const H2_CONNECTION_WINDOW: u32 = 4 << 20;
/// Streams reset by the client before being served, at once, before the connection is closed.
pub const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server had to reset because of client errors, per connection, before GOAWAY.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

struct ConnGuard {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    w: Rc<WorkerCtx>,
    name: Arc<str>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
        self.w.services.metrics.connection_closed(&self.name);
        self.w.gateway.connection_closed();
    }
}
