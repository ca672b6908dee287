//! HTTP/2 upstreams: one multiplexed connection per endpoint per worker.

use std::sync::Arc;

use http::Version;
use sluice::upstream::WorkerPools;
use tokio::sync::Barrier;

use super::support::*;

#[test]
fn h2_upstream_works_and_multiplexes() {
    local(async {
        const CONCURRENT: usize = 5;
        let barrier = Arc::new(Barrier::new(CONCURRENT));
        let up = server_with(true, move |req| {
            let barrier = barrier.clone();
            async move {
                assert_eq!(req.version(), Version::HTTP_2);
                // Every request waits for all the others: they must be in flight together.
                if req.uri().path() == "/together" {
                    barrier.wait().await;
                }
                reply(200, "h2")
            }
        })
        .await;
        let cl = cluster(&format!(
            "{{name: h2, endpoints: ['{}'], protocol: http2}}",
            up.addr
        ));
        let pools = WorkerPools::new();
        assert_eq!(get_ok(&pools, &cl, "/").await, "h2");
        let together = (0..CONCURRENT).map(|_| get_ok(&pools, &cl, "/together"));
        let answers = futures_util::future::join_all(together).await;
        assert!(answers.iter().all(|a| a == "h2"));
        assert_eq!(up.accepted(), 1);
        assert_eq!(up.requests(), CONCURRENT + 1);
    })
}

#[test]
fn a_closed_h2_connection_is_replaced() {
    local(async {
        let up = server_with(true, |_req| async { reply(200, "h2") }).await;
        let cl = cluster(&format!(
            "{{name: h2, endpoints: ['{}'], protocol: http2, pool: {{idle_timeout: 100ms}}}}",
            up.addr
        ));
        let pools = WorkerPools::new();
        get_ok(&pools, &cl, "/").await;
        eventually("the idle h2 connection was closed", || up.closed() == 1).await;
        get_ok(&pools, &cl, "/").await;
        assert_eq!(up.accepted(), 2);
    })
}

/// Requests that arrive together before any connection exists share the one being opened.
#[test]
fn concurrent_first_requests_share_one_h2_connection() {
    local(async {
        let up = server_with(true, |_req| async { reply(200, "h2") }).await;
        let cl = cluster(&format!(
            "{{name: h2, endpoints: ['{}'], protocol: http2}}",
            up.addr
        ));
        let pools = WorkerPools::new();
        let burst = (0..8).map(|_| get_ok(&pools, &cl, "/"));
        let answers = futures_util::future::join_all(burst).await;
        assert!(answers.iter().all(|a| a == "h2"));
        assert_eq!(up.accepted(), 1);
    })
}

/// A failed connect lets the requests that waited for it try on their own.
#[test]
fn waiters_of_a_failed_h2_connect_fail_too() {
    local(async {
        let cl = cluster(&format!(
            "{{name: h2, endpoints: ['{}'], protocol: http2}}",
            refused_addr()
        ));
        let pools = WorkerPools::new();
        let o = opts(None, None);
        let burst = (0..3).map(|_| send(&pools, &cl, get("/"), &o));
        for result in futures_util::future::join_all(burst).await {
            let err = result.expect_err("nothing listens");
            assert_eq!(
                err.kind,
                sluice::upstream::UpstreamErrorKind::ConnectRefused
            );
        }
    })
}
