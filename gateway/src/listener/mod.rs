//! Listening sockets (one SO_REUSEPORT socket per worker per listener), the accept loop, and
//! serving a connection: TLS first on TLS listeners (`tls.rs`), then HTTP/1.1 with Sluice's own
//! server (`crate::h1`), or HTTP/2 with hyper — by ALPN on TLS, by the client's preface (h2c
//! with prior knowledge) on plain listeners.

pub mod bind;
pub mod drain;
pub mod plain_io;
pub mod rewind;
pub mod tls;

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy::{self, ConnState, RequestBody};
use crate::worker::WorkerCtx;

use self::rewind::Rewind;
use self::tls::ConnIo;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

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
    // HTTP/1.1 connections read the drain signal from here (see `drain.rs`); it starts when
    // this loop ends, whatever ends it.
    let drain = drain::StartOnDrop(Rc::new(drain::Drain::default()));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let d = drain::Drain::watch(&drain.0);
                    tokio::task::spawn_local(serve(w.clone(), name.clone(), stream, peer, shutdown.clone(), d));
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
    shutdown: watch::Receiver<bool>,
    drain: drain::DrainWatch,
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
    let limits = &l.config.limits;
    let header_limit = limits
        .max_request_headers_size
        .bytes()
        .clamp(8192, u32::MAX as u64);
    let settings = crate::h1::Settings {
        header_read_timeout: limits.header_read_timeout.get(),
        idle_timeout: limits.idle_timeout.get(),
        max_head: header_limit as usize,
        drain_grace: DRAIN_IDLE_GRACE,
    };
    let (http1, http2) = (l.http1, l.http2);
    drop(l);
    let alpn = conn.tls.as_ref().and_then(|t| t.alpn.as_deref());
    let mut first = BytesMut::new();
    let mut io = io;
    let h2 = match (http1, http2, alpn) {
        (_, true, Some("h2")) | (false, true, _) => true,
        (true, _, Some("http/1.1")) | (true, false, _) => false,
        // Plain h2c by prior knowledge, or TLS without ALPN: the client's first bytes tell.
        _ => match sniff_h2(&mut io, &mut first, settings.header_read_timeout).await {
            Some(h2) => h2,
            None => return,
        },
    };
    if !h2 {
        conn.hands_back_head.set(true);
        let (w, c) = (w.clone(), conn.clone());
        let handle = move |req: http::Request<crate::h1::ServerBody>, upgrade: Option<_>| {
            proxy::handle(
                w.clone(),
                c.clone(),
                req.map(RequestBody::H1),
                upgrade.map(proxy::upgrade::Downstream::H1),
            )
        };
        let written = move |head| conn.head_written(head);
        crate::h1::server::serve(io, first, settings, drain, handle, written).await;
        return;
    }
    serve_h2(
        w,
        name,
        peer,
        Rewind::new(first.freeze(), io),
        conn,
        shutdown,
        &settings,
        header_limit as u32,
    )
    .await;
}

/// Whether the client speaks HTTP/2 with prior knowledge: read until its first bytes match the
/// preface or cannot. What was read stays in `buf`. `None`: the client left or said nothing in
/// time.
async fn sniff_h2(io: &mut ConnIo, buf: &mut BytesMut, timeout: Duration) -> Option<bool> {
    let read = async {
        loop {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            match std::future::poll_fn(|cx| crate::h1::io::poll_read_buf(io, cx, buf)).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Serve an HTTP/2 connection with hyper until it ends, drains, or stays idle too long.
#[allow(clippy::too_many_arguments)]
async fn serve_h2(
    w: Rc<WorkerCtx>,
    name: Arc<str>,
    peer: std::net::SocketAddr,
    io: Rewind<ConnIo>,
    conn: Rc<ConnState>,
    mut shutdown: watch::Receiver<bool>,
    settings: &crate::h1::Settings,
    header_limit: u32,
) {
    let svc = {
        let (w, conn) = (w.clone(), conn.clone());
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            // Boxed once here: hyper keeps the service future in its dispatcher and it is moved
            // a few times on the way there; a pointer moves cheaply, the request path's
            // future (kilobytes) does not.
            let (w, conn) = (w.clone(), conn.clone());
            Box::pin(async move {
                Ok::<_, std::convert::Infallible>(
                    proxy::handle(w, conn, req.map(RequestBody::H2), None).await,
                )
            })
        })
    };
    let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(header_limit)
        .max_concurrent_streams(DEFAULT_H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // Rapid reset (CVE-2023-44487): a client that opens and cancels streams faster than
        // they are served, or keeps provoking stream errors, gets a GOAWAY.
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    let idle = settings.idle_timeout;
    let served = builder.serve_connection(TokioIo::new(io), svc);
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
                // Streams in flight finish; a short grace lets a request already on its way
                // in still get its answer.
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
