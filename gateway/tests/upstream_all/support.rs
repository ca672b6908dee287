//! Test upstreams (real hyper servers and misbehaving raw TCP servers on 127.0.0.1:0) and
//! helpers to build clusters and send requests from inside a worker-like `LocalSet`.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice::config::model::{ClusterConfig, RetryConfig};
use sluice::services::Services;
use sluice::upstream::{Cluster, SendOptions, UpstreamError, WorkerPools};
use tokio::net::{TcpListener, TcpStream};

/// Run `f` the way a worker runs: a current-thread runtime with a `LocalSet`.
pub fn local<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime");
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Counters of one test upstream, shared with its connection tasks (single thread: `Rc<Cell>`).
#[derive(Clone, Default)]
pub struct Counters {
    pub accepted: Rc<Cell<usize>>,
    pub closed: Rc<Cell<usize>>,
    pub requests: Rc<Cell<usize>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub counters: Counters,
}

impl Upstream {
    pub fn accepted(&self) -> usize {
        self.counters.accepted.get()
    }
    pub fn closed(&self) -> usize {
        self.counters.closed.get()
    }
    pub fn requests(&self) -> usize {
        self.counters.requests.get()
    }
}

pub type Reply = Response<Full<Bytes>>;

pub fn reply(status: u16, body: &str) -> Reply {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid test response")
}

#[derive(Clone, Copy)]
pub struct LocalExec;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// A hyper upstream (HTTP/1.1, or HTTP/2 only when `h2`) answering with `handler`.
pub async fn server_with<H, Fut>(h2: bool, handler: H) -> Upstream
where
    H: Fn(Request<Incoming>) -> Fut + Clone + 'static,
    Fut: Future<Output = Reply> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let counters = Counters::default();
    let c = counters.clone();
    tokio::task::spawn_local(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.accepted.set(c.accepted.get() + 1);
            let (c, handler) = (c.clone(), handler.clone());
            tokio::task::spawn_local(async move {
                let requests = c.requests.clone();
                let svc = service_fn(move |req| {
                    requests.set(requests.get() + 1);
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(LocalExec)
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
                c.closed.set(c.closed.get() + 1);
            });
        }
    });
    Upstream { addr, counters }
}

/// An HTTP/1.1 upstream answering 200 with `name` as the body.
pub async fn named(name: &'static str) -> Upstream {
    server_with(false, move |_req| async move { reply(200, name) }).await
}

/// A raw TCP upstream: `behave` gets each accepted connection.
pub async fn raw_server<B, Fut>(behave: B) -> Upstream
where
    B: Fn(TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let counters = Counters::default();
    let c = counters.clone();
    tokio::task::spawn_local(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.accepted.set(c.accepted.get() + 1);
            tokio::task::spawn_local(behave(stream));
        }
    });
    Upstream { addr, counters }
}

/// Read one request head (up to the blank line) from a raw connection.
pub async fn read_head(stream: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// An address where nothing listens (bound, then closed).
pub fn refused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// Build a cluster from YAML (the user's syntax) and start it on the current runtime.
pub fn cluster(yaml: &str) -> Arc<Cluster> {
    let cfg: ClusterConfig = serde_yaml::from_str(yaml).expect("test cluster yaml");
    let cluster = Cluster::build(&cfg, &Services::new()).expect("cluster builds");
    cluster.start(&tokio::runtime::Handle::current());
    cluster
}

pub fn retries(yaml: &str) -> RetryConfig {
    serde_yaml::from_str(yaml).expect("test retry yaml")
}

pub fn opts(retries: Option<&RetryConfig>, hash: Option<u64>) -> SendOptions<'_> {
    SendOptions {
        timeout: Duration::from_secs(10),
        retries,
        hash,
        tries: None,
        timer: None,
        endpoint: None,
        now: None,
        raw_fields: false,
        added: None,
        fields: None,
    }
}

pub fn get(path: &str) -> Request<sluice::body::ProxyBody> {
    Request::get(path)
        .header(http::header::HOST, "upstream.test")
        .body(sluice::body::empty())
        .expect("valid test request")
}

/// Send and read the whole answer.
pub async fn send(
    pools: &WorkerPools,
    cluster: &Arc<Cluster>,
    req: Request<sluice::body::ProxyBody>,
    opts: &SendOptions<'_>,
) -> Result<(StatusCode, String), UpstreamError> {
    let resp = pools.send(cluster, Box::new(req), opts).await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_else(|e| format!("<body error: {e}>"));
    Ok((status, body))
}

/// GET `path` and expect a 200, returning the body.
pub async fn get_ok(pools: &WorkerPools, cluster: &Arc<Cluster>, path: &str) -> String {
    match send(pools, cluster, get(path), &opts(None, None)).await {
        Ok((StatusCode::OK, body)) => body,
        other => panic!("expected 200 from {path}, got {other:?}"),
    }
}

/// Wait (generously) until `cond` holds, yielding to the runtime meanwhile.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}
