//! DNS names among endpoints.

use sluice::upstream::WorkerPools;

use super::support::*;

/// The first request waits for the first resolution instead of failing.
#[test]
fn localhost_resolves() {
    local(async {
        let a = named("a").await;
        let cl = cluster(&format!(
            "{{name: dns, endpoints: ['localhost:{}']}}",
            a.addr.port()
        ));
        let pools = WorkerPools::new();
        assert_eq!(get_ok(&pools, &cl, "/").await, "a");
        let status = cl.endpoints_status();
        assert_eq!(status.len(), 1, "IPv4 preferred: {status:?}");
        assert_eq!(status[0].0, a.addr.to_string());
    })
}

#[test]
fn names_and_literals_mix() {
    local(async {
        let (a, b) = (named("a").await, named("b").await);
        let cl = cluster(&format!(
            "{{name: dns, endpoints: ['localhost:{}', '{}'], dns_refresh: 100ms}}",
            a.addr.port(),
            b.addr
        ));
        let pools = WorkerPools::new();
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(get_ok(&pools, &cl, "/").await);
        }
        answers.sort();
        assert_eq!(answers, vec!["a", "a", "b", "b"]);
        // Re-resolution with the same answer keeps the endpoints (and their pooled connections).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        get_ok(&pools, &cl, "/").await;
        assert_eq!(cl.endpoints_status().len(), 2);
        assert_eq!(a.accepted() + b.accepted(), 2);
    })
}
