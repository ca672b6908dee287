//! Per-worker connection pools and connection establishment.
//!
//! One [`WorkerPools`] per worker thread, never shared, so it takes no lock: `RefCell`s that are
//! never borrowed across an `.await`. Pools are keyed by endpoint address (one map per
//! protocol), not by cluster, so connections survive a reload that rebuilds the clusters.
//!
//! HTTP/1.1: a stack of idle keep-alive connections per endpoint ([`crate::h1::Conn`]). A
//! connection is taken for one exchange and comes back when its response body has been read to
//! the end ([`Recycle`]), so every pooled connection is ready. The most recently returned one
//! is handed out first: under load a few connections stay hot, and the ones left over age out
//! by `idle_timeout`. `take` drops connections the upstream closed meanwhile (seen without a
//! system call unless the socket became readable). At most `max_idle_per_endpoint`
//! connections are kept per endpoint; one returned to a full pool is closed.
//!
//! HTTP/2: one multiplexed connection per endpoint per worker, replaced when it closes. While it
//! is being opened, other requests to that endpoint wait for it rather than open their own.
//!
//! Idle connections older than the cluster's `pool.idle_timeout` are dropped when met in `take`,
//! and by a sweeper task that runs on the worker while the pools exist.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::body::ProxyBody;

use super::cluster::{Cluster, PoolSettings};
use super::endpoint::Endpoint;
use super::tls::UpstreamIo;
use super::{UpstreamError, UpstreamErrorKind};
use crate::listener::tls::MaybeTls;

/// How often the sweeper looks for expired idle connections, at most and at least.
const SWEEP_MAX: Duration = Duration::from_secs(1);
const SWEEP_MIN: Duration = Duration::from_millis(50);

/// Per-worker connection pools (no locks: one worker, one pool set). Created once per worker.
///
/// [`WorkerPools::send`] must run inside a `tokio::task::LocalSet` (connection tasks are
/// spawned with `spawn_local`).
pub struct WorkerPools {
    pub(crate) inner: Rc<Pools>,
}

impl Default for WorkerPools {
    fn default() -> Self {
        WorkerPools::new()
    }
}

impl WorkerPools {
    /// Empty pools; connections are opened on demand.
    pub fn new() -> Self {
        WorkerPools {
            inner: Rc::new(Pools {
                h1: RefCell::new(HashMap::default()),
                h2: RefCell::new(HashMap::default()),
                h2_connecting: RefCell::new(HashMap::default()),
                sweeper_started: Cell::new(false),
            }),
        }
    }

    /// Connections held in this worker's pools (HTTP/1.1 pooled plus HTTP/2 shared), for
    /// metrics and tests.
    pub fn pooled_connections(&self) -> usize {
        let h1: usize = self.inner.h1.borrow().values().map(|p| p.conns.len()).sum();
        h1 + self.inner.h2.borrow().len()
    }
}

/// Endpoint addresses are ours, not attacker-chosen, so a fast non-keyed hash is safe here.
#[derive(Default, Clone, Copy)]
pub(crate) struct AddrHasher(u64);

impl AddrHasher {
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.add(u64::from(v));
    }
    fn write_u16(&mut self, v: u16) {
        self.add(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.add(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
}

type AddrMap<V> = HashMap<PoolKey, V, BuildHasherDefault<AddrHasher>>;

/// What a pooled connection may be reused for: the endpoint address and, for TLS, the identity
/// of the cluster's TLS settings (server name, CA), so that clusters reaching one address with
/// different TLS settings (or none) never share a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub addr: SocketAddr,
    /// 0 for plain TCP.
    pub tls: u64,
}

pub(crate) struct Pools {
    h1: RefCell<AddrMap<H1Pool>>,
    h2: RefCell<AddrMap<H2Conn>>,
    /// Endpoints an HTTP/2 connection is being opened to; other requests wait for it.
    h2_connecting: RefCell<AddrMap<Rc<Notify>>>,
    sweeper_started: Cell<bool>,
}

struct H1Pool {
    conns: Vec<H1Idle>,
    idle_timeout: Duration,
}

struct H1Idle {
    conn: crate::h1::Conn,
    since: Instant,
}

struct H2Conn {
    sender: http2::SendRequest<ProxyBody>,
    last_used: Instant,
    idle_timeout: Duration,
}

/// What a request finds when it looks for the shared HTTP/2 connection of an endpoint.
pub(crate) enum H2Slot {
    Open(http2::SendRequest<ProxyBody>),
    Connecting(Rc<Notify>),
    Vacant(ConnectingGuard),
}

/// Held by the request that opens an endpoint's HTTP/2 connection, so that concurrent requests
/// wait for it instead of each opening their own. Dropping it (connected, failed or cancelled)
/// wakes them.
pub(crate) struct ConnectingGuard {
    pools: Rc<Pools>,
    addr: PoolKey,
    notify: Rc<Notify>,
}

impl ConnectingGuard {
    /// Share the new connection, then let the waiters use it.
    pub fn publish(self, sender: &http2::SendRequest<ProxyBody>, settings: PoolSettings) {
        self.pools.put_h2(self.addr, sender, settings);
    }
}

impl Drop for ConnectingGuard {
    fn drop(&mut self) {
        let mut connecting = self.pools.h2_connecting.borrow_mut();
        if connecting
            .get(&self.addr)
            .is_some_and(|n| Rc::ptr_eq(n, &self.notify))
        {
            connecting.remove(&self.addr);
        }
        drop(connecting);
        self.notify.notify_waiters();
    }
}

/// A pooled HTTP/1.1 connection taken for one exchange.
pub(crate) struct TakenH1 {
    pub conn: crate::h1::Conn,
}

/// Takes an HTTP/1.1 connection back into its worker's pool when its response body is complete
/// (held by the body; dropped unused when the connection may not be reused).
pub(crate) struct Recycle {
    pools: Weak<Pools>,
    key: PoolKey,
    settings: PoolSettings,
}

impl Recycle {
    pub(crate) fn recycle(self, conn: crate::h1::Conn) {
        if let Some(pools) = self.pools.upgrade() {
            pools.put_h1(self.key, conn, self.settings);
        }
    }
}

impl Pools {
    /// A usable idle HTTP/1.1 connection to `addr`, if one is pooled (newest first).
    pub fn take_h1(&self, addr: PoolKey, now: Instant) -> Option<TakenH1> {
        let mut map = self.h1.borrow_mut();
        let pool = map.get_mut(&addr)?;
        while let Some(mut idle) = pool.conns.pop() {
            if now.saturating_duration_since(idle.since) >= pool.idle_timeout {
                // Older ones sit below: all expired.
                pool.conns.clear();
                return None;
            }
            if idle.conn.is_idle_usable() {
                return Some(TakenH1 { conn: idle.conn });
            }
        }
        None
    }

    /// What takes a connection to `addr` back after its exchange.
    pub(crate) fn recycler(self: &Rc<Self>, addr: PoolKey, settings: PoolSettings) -> Recycle {
        Recycle {
            pools: Rc::downgrade(self),
            key: addr,
            settings,
        }
    }

    /// Return an HTTP/1.1 connection whose exchange is complete.
    fn put_h1(self: &Rc<Self>, addr: PoolKey, conn: crate::h1::Conn, settings: PoolSettings) {
        if settings.max_idle == 0 {
            return;
        }
        self.ensure_sweeper();
        let mut map = self.h1.borrow_mut();
        let pool = map.entry(addr).or_insert_with(|| H1Pool {
            conns: Vec::new(),
            idle_timeout: settings.idle_timeout,
        });
        pool.idle_timeout = settings.idle_timeout;
        if pool.conns.len() >= settings.max_idle {
            return;
        }
        pool.conns.push(H1Idle {
            conn,
            // The request's arrival, not now: the connection looks idle for a little longer
            // than it is, which only ever retires it early (see `request_clock`).
            since: crate::request_clock::get(),
        });
    }

    /// The shared HTTP/2 connection to `addr`; or a connect in progress to wait for; or the
    /// duty to connect (the guard lets waiters go when it drops, connected or not).
    pub fn h2(self: &Rc<Self>, addr: PoolKey, now: Instant) -> H2Slot {
        {
            let mut map = self.h2.borrow_mut();
            if let Some(conn) = map.get_mut(&addr) {
                if !conn.sender.is_closed() {
                    conn.last_used = now;
                    return H2Slot::Open(conn.sender.clone());
                }
                map.remove(&addr);
            }
        }
        let mut connecting = self.h2_connecting.borrow_mut();
        if let Some(notify) = connecting.get(&addr) {
            return H2Slot::Connecting(Rc::clone(notify));
        }
        let notify = Rc::new(Notify::new());
        connecting.insert(addr, Rc::clone(&notify));
        H2Slot::Vacant(ConnectingGuard {
            pools: Rc::clone(self),
            addr,
            notify,
        })
    }

    /// Share a new HTTP/2 connection, unless another open one got there first.
    pub fn put_h2(
        self: &Rc<Self>,
        addr: PoolKey,
        sender: &http2::SendRequest<ProxyBody>,
        settings: PoolSettings,
    ) {
        self.ensure_sweeper();
        let mut map = self.h2.borrow_mut();
        if map.get(&addr).is_some_and(|c| !c.sender.is_closed()) {
            return;
        }
        map.insert(
            addr,
            H2Conn {
                sender: sender.clone(),
                last_used: Instant::now(),
                idle_timeout: settings.idle_timeout,
            },
        );
    }

    fn ensure_sweeper(self: &Rc<Self>) {
        if !self.sweeper_started.replace(true) {
            tokio::task::spawn_local(sweep_loop(Rc::downgrade(self)));
        }
    }

    /// Drop closed and expired connections; returns the next sweep delay.
    fn sweep(&self, now: Instant) -> Duration {
        let mut shortest = SWEEP_MAX * 2;
        self.h1.borrow_mut().retain(|_, pool| {
            let timeout = pool.idle_timeout;
            pool.conns.retain_mut(|c| {
                now.saturating_duration_since(c.since) < timeout && c.conn.is_idle_usable()
            });
            shortest = shortest.min(timeout);
            !pool.conns.is_empty()
        });
        self.h2.borrow_mut().retain(|_, conn| {
            shortest = shortest.min(conn.idle_timeout);
            !conn.sender.is_closed()
                && now.saturating_duration_since(conn.last_used) < conn.idle_timeout
        });
        (shortest / 2).clamp(SWEEP_MIN, SWEEP_MAX)
    }
}

/// Runs on the worker until its pools are dropped.
async fn sweep_loop(pools: Weak<Pools>) {
    let mut delay = SWEEP_MAX;
    loop {
        tokio::time::sleep(delay).await;
        let Some(pools) = pools.upgrade() else {
            return;
        };
        delay = pools.sweep(Instant::now());
    }
}

/// Spawns HTTP/2 connection tasks on the worker's `LocalSet` (they are not `Send`).
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Open a TCP connection to `ep` within the cluster's connect timeout, with TCP_NODELAY.
async fn connect_tcp(cluster: &Cluster, ep: &Endpoint) -> Result<TcpStream, UpstreamError> {
    let start = Instant::now();
    let stream =
        match tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(ep.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    UpstreamErrorKind::ConnectRefused
                } else {
                    UpstreamErrorKind::ConnectFailed
                };
                return Err(cluster.error(kind, format!("connect to {}: {e}", ep.label)));
            }
            Err(_) => {
                return Err(cluster.error(
                    UpstreamErrorKind::ConnectTimeout,
                    format!(
                        "connect to {} did not finish within {:?}",
                        ep.label, cluster.connect_timeout
                    ),
                ))
            }
        };
    cluster
        .services
        .metrics
        .upstream_connect(&cluster.name, start.elapsed());
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(endpoint = %ep.label, error = %e, "could not set TCP_NODELAY");
    }
    Ok(stream)
}

/// TCP, then TLS when the cluster has `tls:`.
async fn connect_io(cluster: &Cluster, ep: &Endpoint) -> Result<UpstreamIo, UpstreamError> {
    let stream = connect_tcp(cluster, ep).await?;
    let Some(tls) = &cluster.tls else {
        return Ok(MaybeTls::Plain(stream));
    };
    let handshake = tls.connect(stream, &ep.authority);
    match tokio::time::timeout(cluster.connect_timeout, handshake).await {
        Ok(Ok(io)) => Ok(io),
        Ok(Err(e)) => Err(cluster.error(
            UpstreamErrorKind::ConnectFailed,
            format!("TLS handshake with {}: {e}", ep.label),
        )),
        Err(_) => Err(cluster.error(
            UpstreamErrorKind::ConnectTimeout,
            format!(
                "TLS handshake with {} did not finish within {:?}",
                ep.label, cluster.connect_timeout
            ),
        )),
    }
}

fn handshake_error(cluster: &Cluster, ep: &Endpoint, e: hyper::Error) -> UpstreamError {
    cluster.error(
        UpstreamErrorKind::ConnectFailed,
        format!("HTTP handshake with {}: {e}", ep.label),
    )
}

/// A new HTTP/1.1 connection to `ep` (TCP, then TLS when the cluster has `tls:`).
pub(crate) async fn connect_h1(
    cluster: &Cluster,
    ep: &Endpoint,
) -> Result<crate::h1::Conn, UpstreamError> {
    Ok(crate::h1::Conn::new(connect_io(cluster, ep).await?))
}

/// A new HTTP/2 connection (prior knowledge, h2c) to `ep`; its tasks run on the worker.
pub(crate) async fn connect_h2(
    cluster: &Cluster,
    ep: &Endpoint,
) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
    let stream = connect_io(cluster, ep).await?;
    let (sender, conn) = http2::Builder::new(LocalExec)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| handshake_error(cluster, ep, e))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}
