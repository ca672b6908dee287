//! Active health checks take a failing endpoint out and put it back when it recovers.

use std::cell::Cell;
use std::rc::Rc;

use sluice::upstream::{UpstreamErrorKind, WorkerPools};

use super::support::*;

const CHECKS: &str = "health_check: {path: /healthz, interval: 50ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2}";

fn healthy(cl: &sluice::upstream::Cluster, addr: std::net::SocketAddr) -> bool {
    let label = addr.to_string();
    cl.endpoints_status()
        .iter()
        .any(|(a, h, _)| *a == label && *h)
}

#[test]
fn a_failing_endpoint_is_removed_and_restored() {
    local(async {
        let failing = Rc::new(Cell::new(false));
        let flag = failing.clone();
        let a = server_with(false, move |req| {
            let fail = flag.get() && req.uri().path() == "/healthz";
            async move { reply(if fail { 500 } else { 200 }, "a") }
        })
        .await;
        let b = named("b").await;
        let cl = cluster(&format!(
            "{{name: hc, endpoints: ['{}', '{}'], {CHECKS}}}",
            a.addr, b.addr
        ));
        let pools = WorkerPools::new();
        assert!(healthy(&cl, a.addr) && healthy(&cl, b.addr));

        failing.set(true);
        eventually("a is unhealthy", || !healthy(&cl, a.addr)).await;
        assert!(healthy(&cl, b.addr));
        for _ in 0..6 {
            assert_eq!(get_ok(&pools, &cl, "/").await, "b");
        }

        failing.set(false);
        eventually("a is healthy again", || healthy(&cl, a.addr)).await;
        let mut answers: Vec<String> = Vec::new();
        for _ in 0..4 {
            answers.push(get_ok(&pools, &cl, "/").await);
        }
        assert!(
            answers.iter().any(|x| x == "a") && answers.iter().any(|x| x == "b"),
            "{answers:?}"
        );
    })
}

#[test]
fn no_healthy_endpoint_fails_fast() {
    local(async {
        let cl = cluster(&format!(
            "{{name: hc, endpoints: ['{}'], {CHECKS}}}",
            refused_addr()
        ));
        eventually("the endpoint is unhealthy", || {
            cl.endpoints_status().iter().all(|s| !s.1)
        })
        .await;
        let err = send(&WorkerPools::new(), &cl, get("/"), &opts(None, None))
            .await
            .expect_err("nothing healthy");
        assert_eq!(err.kind, UpstreamErrorKind::NoHealthyEndpoint);
    })
}

#[test]
fn checks_stop_when_the_cluster_is_dropped() {
    local(async {
        let a = named("a").await;
        let cl = cluster(&format!(
            "{{name: hc, endpoints: ['{}'], {CHECKS}}}",
            a.addr
        ));
        eventually("a first check ran", || a.requests() >= 1).await;
        drop(cl);
        // Let any check in flight finish, then no more may come.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let after_drop = a.requests();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(a.requests(), after_drop);
    })
}
