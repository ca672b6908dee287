//! Load balancers over real upstreams.

use std::collections::HashMap;
use std::rc::Rc;

use sluice::upstream::WorkerPools;
use tokio::sync::Notify;

use super::support::*;

fn endpoints(ups: &[&Upstream]) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("'{}'", u.addr)).collect();
    list.join(", ")
}

#[test]
fn round_robin_spreads_evenly() {
    local(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let cl = cluster(&format!(
            "{{name: rr, endpoints: [{}]}}",
            endpoints(&[&a, &b, &c])
        ));
        let pools = WorkerPools::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..30 {
            *seen.entry(get_ok(&pools, &cl, "/").await).or_default() += 1;
        }
        assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
        assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
        assert_eq!(seen.get("c"), Some(&10), "{seen:?}");
    })
}

#[test]
fn random_reaches_every_endpoint() {
    local(async {
        let (a, b) = (named("a").await, named("b").await);
        let cl = cluster(&format!(
            "{{name: r, endpoints: [{}], load_balancing: random}}",
            endpoints(&[&a, &b])
        ));
        let pools = WorkerPools::new();
        for _ in 0..100 {
            get_ok(&pools, &cl, "/").await;
        }
        // Each has probability 2^-100 of never being picked.
        assert!(a.requests() > 0 && b.requests() > 0);
        assert_eq!(a.requests() + b.requests(), 100);
    })
}

/// One endpoint holds a slow request; every following request goes to the other one.
#[test]
fn least_request_prefers_the_less_busy_endpoint() {
    local(async {
        let release = Rc::new(Notify::new());
        let slow_handler = |name: &'static str, release: Rc<Notify>| {
            move |req: http::Request<hyper::body::Incoming>| {
                let release = release.clone();
                async move {
                    if req.uri().path() == "/slow" {
                        release.notified().await;
                    }
                    reply(200, name)
                }
            }
        };
        let a = server_with(false, slow_handler("a", release.clone())).await;
        let b = server_with(false, slow_handler("b", release.clone())).await;
        let cl = cluster(&format!(
            "{{name: lr, endpoints: [{}], load_balancing: least_request}}",
            endpoints(&[&a, &b])
        ));
        let pools = Rc::new(WorkerPools::new());
        let slow = {
            let (pools, cl) = (pools.clone(), cl.clone());
            tokio::task::spawn_local(async move {
                send(&pools, &cl, get("/slow"), &opts(None, None)).await
            })
        };
        eventually("the slow request reached an upstream", || {
            a.requests() + b.requests() == 1
        })
        .await;
        let busy = if a.requests() == 1 { "a" } else { "b" };
        let status = cl.endpoints_status();
        assert_eq!(status.iter().map(|s| s.2).sum::<u64>(), 1, "{status:?}");
        for _ in 0..10 {
            assert_ne!(get_ok(&pools, &cl, "/fast").await, busy);
        }
        release.notify_waiters();
        let (code, body) = slow.await.expect("join").expect("slow request");
        assert_eq!((code.as_u16(), body.as_str()), (200, busy));
    })
}

/// The same key always lands on the same endpoint, and removing an endpoint moves only the keys
/// it had.
#[test]
fn ring_hash_is_consistent() {
    local(async {
        let (a, b, c) = (named("a").await, named("b").await, named("c").await);
        let three = cluster(&format!(
            "{{name: h3, endpoints: [{}], load_balancing: ring_hash, hash_key: {{header: x-user}}}}",
            endpoints(&[&a, &b, &c])
        ));
        let two = cluster(&format!(
            "{{name: h2, endpoints: [{}], load_balancing: ring_hash, hash_key: {{header: x-user}}}}",
            endpoints(&[&a, &b])
        ));
        let pools = WorkerPools::new();
        let mut per_endpoint: HashMap<String, usize> = HashMap::new();
        for key in 0..100u64 {
            let hash = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let o = opts(None, Some(hash));
            let (_, first) = send(&pools, &three, get("/"), &o).await.expect("send");
            let (_, again) = send(&pools, &three, get("/"), &o).await.expect("send");
            assert_eq!(
                first, again,
                "key {key} moved between two identical requests"
            );
            let (_, without_c) = send(&pools, &two, get("/"), &o).await.expect("send");
            if first != "c" {
                assert_eq!(
                    first, without_c,
                    "key {key} moved although its endpoint stayed"
                );
            }
            *per_endpoint.entry(first).or_default() += 1;
        }
        for name in ["a", "b", "c"] {
            assert!(
                per_endpoint.get(name).copied().unwrap_or(0) >= 10,
                "uneven ring: {per_endpoint:?}"
            );
        }
    })
}
