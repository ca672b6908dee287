//! Per-worker keep-alive pools: reuse, idle eviction, caps, and the keep-alive race.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use http::{Request, StatusCode};
use sluice::upstream::{UpstreamErrorKind, WorkerPools};

use super::support::*;

#[test]
fn connections_are_reused() {
    local(async {
        let up = named("a").await;
        let cl = cluster(&format!("{{name: p, endpoints: ['{}']}}", up.addr));
        let pools = WorkerPools::new();
        for _ in 0..20 {
            get_ok(&pools, &cl, "/").await;
        }
        assert_eq!(up.accepted(), 1);
        assert_eq!(up.requests(), 20);
        assert_eq!(pools.pooled_connections(), 1);
    })
}

/// Concurrent requests open one connection each; afterwards those connections serve later
/// requests instead of new ones.
#[test]
fn concurrent_requests_then_reuse() {
    local(async {
        let up = server_with(false, |_req| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reply(200, "slow")
        })
        .await;
        let cl = cluster(&format!("{{name: p, endpoints: ['{}']}}", up.addr));
        let pools = WorkerPools::new();
        let burst = (0..5).map(|_| get_ok(&pools, &cl, "/"));
        futures_util::future::join_all(burst).await;
        assert_eq!(up.accepted(), 5);
        for _ in 0..10 {
            get_ok(&pools, &cl, "/").await;
        }
        assert_eq!(up.accepted(), 5);
    })
}

#[test]
fn zero_max_idle_disables_pooling() {
    local(async {
        let up = named("a").await;
        let cl = cluster(&format!(
            "{{name: p, endpoints: ['{}'], pool: {{max_idle_per_endpoint: 0}}}}",
            up.addr
        ));
        let pools = WorkerPools::new();
        for _ in 0..3 {
            get_ok(&pools, &cl, "/").await;
        }
        assert_eq!(up.accepted(), 3);
        assert_eq!(pools.pooled_connections(), 0);
    })
}

#[test]
fn idle_connections_expire() {
    local(async {
        let up = named("a").await;
        let cl = cluster(&format!(
            "{{name: p, endpoints: ['{}'], pool: {{idle_timeout: 200ms}}}}",
            up.addr
        ));
        let pools = WorkerPools::new();
        get_ok(&pools, &cl, "/").await;
        assert_eq!(pools.pooled_connections(), 1);
        // Without any further request, the worker's sweeper closes the idle connection.
        eventually("the idle connection was closed", || up.closed() == 1).await;
        assert_eq!(pools.pooled_connections(), 0);
        get_ok(&pools, &cl, "/").await;
        assert_eq!(up.accepted(), 2);
    })
}

/// The upstream closes a keep-alive connection while it sits in the pool, and we reuse it before
/// the worker noticed: written, then closed under the request (the keep-alive race).
struct RacingUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    close_now: mpsc::Sender<()>,
    closed: mpsc::Receiver<()>,
}

/// A blocking upstream on its own thread: answers on its first connection, closes that
/// connection when told, then answers one request per new connection.
fn racing_upstream() -> RacingUpstream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let (close_now, close_rx) = mpsc::channel();
    let (closed_tx, closed) = mpsc::channel();
    let count = accepted.clone();
    std::thread::spawn(move || {
        let answer = |s: &mut std::net::TcpStream| {
            let mut buf = [0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        };
        let Ok((mut first, _)) = listener.accept() else {
            return;
        };
        count.fetch_add(1, Ordering::SeqCst);
        answer(&mut first);
        if close_rx.recv().is_err() {
            return;
        }
        drop(first);
        let _ = closed_tx.send(());
        while let Ok((mut s, _)) = listener.accept() {
            count.fetch_add(1, Ordering::SeqCst);
            answer(&mut s);
        }
    });
    RacingUpstream {
        addr,
        accepted,
        close_now,
        closed,
    }
}

/// Reuse the pooled connection right after the upstream closed it, before this (blocked)
/// worker thread could see the close.
async fn race(
    method: &str,
) -> (
    Result<(StatusCode, String), sluice::upstream::UpstreamError>,
    usize,
) {
    let up = racing_upstream();
    let cl = cluster(&format!("{{name: race, endpoints: ['{}']}}", up.addr));
    let pools = WorkerPools::new();
    get_ok(&pools, &cl, "/").await;
    // Idle long enough to count as at risk of a close by the upstream.
    tokio::time::sleep(Duration::from_millis(700)).await;
    up.close_now.send(()).expect("upstream thread alive");
    up.closed.recv().expect("upstream closed the connection");
    // Blocking on purpose: the FIN reaches our kernel, not yet our event loop.
    std::thread::sleep(Duration::from_millis(50));
    let req = Request::builder()
        .method(method)
        .uri("/")
        .header(http::header::HOST, "race.test")
        .body(sluice::body::empty())
        .expect("request");
    let result = send(&pools, &cl, req, &opts(None, None)).await;
    (result, up.accepted.load(Ordering::SeqCst))
}

#[test]
fn stale_pooled_connection_is_resent_for_idempotent_requests() {
    local(async {
        let (result, accepted) = race("GET").await;
        let (status, body) = result.expect("GET resent on a new connection");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        assert_eq!(accepted, 2);
    })
}

#[test]
fn stale_pooled_connection_fails_a_post() {
    local(async {
        let (result, _) = race("POST").await;
        let err = result.expect_err("a written POST is never resent");
        assert_eq!(err.kind, UpstreamErrorKind::Reset);
    })
}
