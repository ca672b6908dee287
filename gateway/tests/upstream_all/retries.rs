//! Retry policy: what is retried, where, how often, and within which budget.

use std::time::Duration;

use http::{Request, StatusCode};
use sluice::upstream::{UpstreamErrorKind, WorkerPools};

use super::support::*;

async fn failing(status: u16) -> Upstream {
    server_with(false, move |_req| async move { reply(status, "failing") }).await
}

/// An upstream that resets every connection after reading the request head.
async fn resetting() -> Upstream {
    raw_server(|mut s| async move {
        read_head(&mut s).await;
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        drop(s);
    })
    .await
}

#[test]
fn a_5xx_is_retried_on_another_endpoint() {
    local(async {
        let (bad, good) = (failing(503).await, named("good").await);
        let cl = cluster(&format!(
            "{{name: r, endpoints: ['{}', '{}']}}",
            bad.addr, good.addr
        ));
        let policy = retries("{attempts: 1, on: [5xx]}");
        let pools = WorkerPools::new();
        for _ in 0..6 {
            let (status, body) = send(&pools, &cl, get("/"), &opts(Some(&policy), None))
                .await
                .expect("send");
            assert_eq!((status, body.as_str()), (StatusCode::OK, "good"));
        }
        // Round robin sends every other first try to the failing endpoint.
        assert_eq!(bad.requests(), 3);
        assert_eq!(good.requests(), 6);
    })
}

#[test]
fn gateway_error_retries_only_502_to_504() {
    local(async {
        let (e500, good) = (failing(500).await, named("good").await);
        let cl = cluster(&format!(
            "{{name: r, endpoints: ['{}', '{}']}}",
            e500.addr, good.addr
        ));
        let policy = retries("{attempts: 1, on: [gateway-error]}");
        let pools = WorkerPools::new();
        let (status, _) = send(&pools, &cl, get("/"), &opts(Some(&policy), None))
            .await
            .expect("send");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(good.requests(), 0);
    })
}

#[test]
fn attempts_bound_the_tries_and_each_goes_elsewhere() {
    local(async {
        let ups = [failing(503).await, failing(503).await, failing(503).await];
        let list: Vec<String> = ups.iter().map(|u| format!("'{}'", u.addr)).collect();
        let cl = cluster(&format!("{{name: r, endpoints: [{}]}}", list.join(", ")));
        let pools = WorkerPools::new();

        let two = retries("{attempts: 2, on: [5xx]}");
        let (status, _) = send(&pools, &cl, get("/"), &opts(Some(&two), None))
            .await
            .expect("send");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let hits: Vec<usize> = ups.iter().map(Upstream::requests).collect();
        assert_eq!(
            hits,
            vec![1, 1, 1],
            "three tries on three different endpoints"
        );

        let one = retries("{attempts: 1, on: [5xx]}");
        send(&pools, &cl, get("/"), &opts(Some(&one), None))
            .await
            .expect("send");
        assert_eq!(ups.iter().map(Upstream::requests).sum::<usize>(), 5);
    })
}

#[test]
fn an_empty_budget_allows_no_retry() {
    local(async {
        let (bad, good) = (failing(503).await, named("good").await);
        let cl = cluster(&format!(
            "{{name: r, endpoints: ['{}', '{}']}}",
            bad.addr, good.addr
        ));
        let policy =
            retries("{attempts: 3, on: [5xx], budget_percent: 0, min_retries_per_second: 0}");
        let pools = WorkerPools::new();
        let (status, _) = send(&pools, &cl, get("/"), &opts(Some(&policy), None))
            .await
            .expect("send");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!((bad.requests(), good.requests()), (1, 0));
    })
}

#[test]
fn connect_failures_are_retried() {
    local(async {
        let good = named("good").await;
        let cl = cluster(&format!(
            "{{name: r, endpoints: ['{}', '{}']}}",
            refused_addr(),
            good.addr
        ));
        let policy = retries("{attempts: 1, on: [connect-failure]}");
        let pools = WorkerPools::new();
        for _ in 0..4 {
            let (status, _) = send(&pools, &cl, get("/"), &opts(Some(&policy), None))
                .await
                .expect("send");
            assert_eq!(status, StatusCode::OK);
        }
        // Without the policy, the refused endpoint's turn fails.
        let mut kinds = Vec::new();
        for _ in 0..2 {
            if let Err(e) = send(&pools, &cl, get("/"), &opts(None, None)).await {
                kinds.push(e.kind);
            }
        }
        assert_eq!(kinds, vec![UpstreamErrorKind::ConnectRefused]);
    })
}

#[test]
fn resets_are_retried() {
    local(async {
        let (bad, good) = (resetting().await, named("good").await);
        let cl = cluster(&format!(
            "{{name: r, endpoints: ['{}', '{}']}}",
            bad.addr, good.addr
        ));
        let policy = retries("{attempts: 1, on: [reset]}");
        let pools = WorkerPools::new();
        for _ in 0..4 {
            let (status, _) = send(&pools, &cl, get("/"), &opts(Some(&policy), None))
                .await
                .expect("send");
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(bad.accepted(), 2);
    })
}

#[test]
fn post_and_requests_with_a_body_are_not_retried() {
    local(async {
        let (bad, good) = (failing(503).await, named("good").await);
        let cl = cluster(&format!(
            "{{name: r, endpoints: ['{}', '{}']}}",
            bad.addr, good.addr
        ));
        let policy = retries("{attempts: 2, on: [5xx]}");
        let pools = WorkerPools::new();
        let post = || {
            Request::post("/")
                .header(http::header::HOST, "r.test")
                .body(sluice::body::empty())
                .expect("request")
        };
        let put_with_body = || {
            Request::put("/")
                .header(http::header::HOST, "r.test")
                .body(sluice::body::full("payload"))
                .expect("request")
        };
        let mut statuses = Vec::new();
        for req in [post(), post(), put_with_body(), put_with_body()] {
            let (status, _) = send(&pools, &cl, req, &opts(Some(&policy), None))
                .await
                .expect("send");
            statuses.push(status.as_u16());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, vec![200, 200, 503, 503]);
        assert_eq!(bad.requests(), 2);
    })
}
