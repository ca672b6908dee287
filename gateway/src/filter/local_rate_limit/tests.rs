use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use super::*;
use crate::filter::test_support::{build, build_with, exchange, get, is_continue, local, respond};
use crate::telemetry::metrics::Metrics;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn policy(rps: f64, burst: u32, max_keys: usize) -> Policy {
    Policy {
        rate: Rate::new(rps, burst).unwrap(),
        max_keys,
        ban: None,
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

#[test]
fn bucket_refills_at_the_configured_rate() {
    let b = Buckets::default();
    let p = policy(10.0, 5, 100);
    let t0 = 10 * SEC;
    for left in (0..5).rev() {
        assert_eq!(
            b.check_ip(ip(1), t0, &p).decision,
            Decision::Allowed { remaining: left }
        );
    }
    // Empty: the next token comes one interval (100ms) later.
    assert_eq!(
        b.check_ip(ip(1), t0, &p).decision,
        Decision::Rejected { wait: 100 * MS }
    );
    assert_eq!(
        b.check_ip(ip(1), t0 + 40 * MS, &p).decision,
        Decision::Rejected { wait: 60 * MS }
    );
    assert_eq!(
        b.check_ip(ip(1), t0 + 100 * MS, &p).decision,
        Decision::Allowed { remaining: 0 }
    );
    // A long pause refills to the burst, no further.
    assert_eq!(
        b.check_ip(ip(1), t0 + 60 * SEC, &p).decision,
        Decision::Allowed { remaining: 4 }
    );
}

#[test]
fn slow_rates_work() {
    let b = Buckets::default();
    let p = policy(0.5, 1, 100);
    assert!(matches!(
        b.check_ip(ip(1), SEC, &p).decision,
        Decision::Allowed { .. }
    ));
    assert_eq!(
        b.check_ip(ip(1), SEC, &p).decision,
        Decision::Rejected { wait: 2 * SEC }
    );
    assert!(matches!(
        b.check_ip(ip(1), 3 * SEC, &p).decision,
        Decision::Allowed { .. }
    ));
}

#[test]
fn concurrent_takers_get_exactly_the_burst() {
    let b = Arc::new(Buckets::default());
    let p = policy(0.001, 1000, 100);
    let allowed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..500 {
                    if let Decision::Allowed { .. } = b.check_ip(ip(1), SEC, &p).decision {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.into_inner(), 1000);
}

#[test]
fn memory_stays_bounded_under_random_keys() {
    let b = Buckets::default();
    let p = policy(10.0, 10, 100);
    let t0 = 5 * SEC;
    for n in 0..10_000 {
        b.check_ip(ip(n), t0, &p);
    }
    assert_eq!(b.len(), 100);
    assert_eq!(b.by_ip.len(), 100);
    // Keys without a bucket shared the overflow bucket: its burst is spent.
    assert!(matches!(
        b.check_ip(ip(20_000), t0, &p).decision,
        Decision::Rejected { .. }
    ));
    // Known keys kept their own budget.
    assert_eq!(
        b.check_ip(ip(5), t0, &p).decision,
        Decision::Allowed { remaining: 8 }
    );
    // Once the buckets refilled, a new key sweeps the idle ones and gets its own bucket.
    let later = t0 + 2 * SEC;
    assert_eq!(
        b.check_ip(ip(30_000), later, &p).decision,
        Decision::Allowed { remaining: 9 }
    );
    assert_eq!(b.len(), 1);
    assert_eq!(b.by_ip.len(), 1);
}

#[test]
fn sweep_keeps_active_buckets() {
    let b = Buckets::default();
    let p = policy(1.0, 2, 100);
    b.check_ip(ip(1), SEC, &p);
    b.check_bytes(b"k", SEC, &p);
    b.sweep(SEC + 10 * MS, 0);
    assert_eq!(b.len(), 2);
    b.sweep(3 * SEC, 0);
    assert_eq!(b.len(), 0);
    assert!(b.is_empty());
}

#[test]
fn filter_rejects_with_retry_after_and_counts_headers() {
    let f = build(factory, "{requests_per_second: 1, burst: 2}").unwrap();
    assert_eq!(
        f.phases(),
        Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
    );
    for left in ["1", "0"] {
        let mut ex = get("192.0.2.1:1000");
        assert!(is_continue(&f.on_request_headers(&mut ex.cx(0))));
        // The response phase reads its state, not the request headers (moved on by then).
        assert!(!f.reads_request_headers_later());
        ex.request.headers.clear();
        respond(&mut ex, 200);
        f.on_response_headers(&mut ex.cx(0));
        let h = ex.response.unwrap().headers;
        assert_eq!(h["x-ratelimit-limit"], "2");
        assert_eq!(h["x-ratelimit-remaining"], left);
    }
    // The same address as IPv4-mapped IPv6 shares the bucket.
    let mut ex = get("[::ffff:192.0.2.1]:1000");
    let r = local(f.on_request_headers(&mut ex.cx(0)));
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.details, "rate_limited");
    assert_eq!(r.headers[RETRY_AFTER], "1");
    assert_eq!(r.headers["x-ratelimit-limit"], "2");
    assert_eq!(r.headers["x-ratelimit-remaining"], "0");
    // A response phase after a local answer adds nothing twice.
    respond(&mut ex, 429);
    f.on_response_headers(&mut ex.cx(0));
    assert!(ex
        .response
        .unwrap()
        .headers
        .get("x-ratelimit-limit")
        .is_none());
    // Another address has its own bucket.
    let mut ex = get("192.0.2.2:1000");
    assert!(is_continue(&f.on_request_headers(&mut ex.cx(0))));
}

#[test]
fn retry_after_rounds_up_and_custom_status_without_headers() {
    let f = build(
        factory,
        "{requests_per_second: 0.1, burst: 1, status: 503, headers: false}",
    )
    .unwrap();
    assert_eq!(f.phases(), Phases::REQUEST_HEADERS);
    let mut ex = get("192.0.2.1:1000");
    assert!(is_continue(&f.on_request_headers(&mut ex.cx(0))));
    let r = local(f.on_request_headers(&mut get("192.0.2.1:1000").cx(0)));
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let secs: u64 = r.headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((9..=10).contains(&secs), "{secs}");
    assert!(r.headers.get("x-ratelimit-limit").is_none());
}

#[test]
fn header_key_with_client_ip_fallback() {
    let f = build(
        factory,
        "{requests_per_second: 1, burst: 1, key: 'header:x-api-key'}",
    )
    .unwrap();
    let with_key = |k: &str| {
        let req = http::Request::builder()
            .header("x-api-key", k)
            .body(())
            .unwrap();
        exchange("192.0.2.1:1000", req)
    };
    assert!(is_continue(&f.on_request_headers(&mut with_key("a").cx(0))));
    local(f.on_request_headers(&mut with_key("a").cx(0)));
    assert!(is_continue(&f.on_request_headers(&mut with_key("b").cx(0))));
    // Without the header, the address is the key (its own bucket, not key "a"'s).
    assert!(is_continue(
        &f.on_request_headers(&mut get("192.0.2.1:1000").cx(0))
    ));
    local(f.on_request_headers(&mut get("192.0.2.1:1000").cx(0)));
}

#[derive(Default)]
struct RecordingBans(Mutex<Vec<(IpAddr, Option<Duration>, String)>>);

impl crate::services::BanSink for RecordingBans {
    fn ban(&self, addr: IpAddr, ttl: Option<Duration>, reason: &str) -> bool {
        self.0.lock().unwrap().push((addr, ttl, reason.to_string()));
        true
    }
}

#[test]
fn bans_after_repeated_rejections() {
    let bans = Arc::new(RecordingBans::default());
    let services = Arc::new(Services {
        metrics: Arc::new(Metrics::new()),
        bans: bans.clone(),
        ban_switch: Default::default(),
        filter_state: DashMap::new(),
    });
    let f = build_with(
        factory,
        "{requests_per_second: 0.01, burst: 1, ban: {after: 3, ttl: 5m}}",
        &services,
        "l/0",
    )
    .unwrap();
    assert!(is_continue(
        &f.on_request_headers(&mut get("[::ffff:198.51.100.9]:1").cx(0))
    ));
    for _ in 0..2 {
        local(f.on_request_headers(&mut get("198.51.100.9:1").cx(0)));
    }
    assert!(bans.0.lock().unwrap().is_empty());
    local(f.on_request_headers(&mut get("198.51.100.9:1").cx(0)));
    let expected = (
        "198.51.100.9".parse().unwrap(),
        Some(Duration::from_secs(300)),
        NAME.to_string(),
    );
    assert_eq!(*bans.0.lock().unwrap(), std::slice::from_ref(&expected));
    // Further rejections in the same window do not ban again.
    for _ in 0..5 {
        local(f.on_request_headers(&mut get("198.51.100.9:1").cx(0)));
    }
    assert_eq!(*bans.0.lock().unwrap(), [expected]);
}

#[test]
fn ban_window_restarts_the_count() {
    let ban = BanPolicy {
        after: 2,
        window: SEC,
        ttl: Duration::from_secs(1),
    };
    let b = Bucket::default();
    assert!(!b.note_rejection(SEC, &ban));
    // The window ran out: this rejection starts a new count.
    assert!(!b.note_rejection(3 * SEC, &ban));
    assert!(b.note_rejection(3 * SEC + MS, &ban));
}

#[test]
fn buckets_survive_a_rebuild_with_the_same_key() {
    let services = Services::new();
    let yaml = "{requests_per_second: 0.01, burst: 1}";
    let f1 = build_with(factory, yaml, &services, "listener/public/filters/1").unwrap();
    assert!(is_continue(
        &f1.on_request_headers(&mut get("192.0.2.1:1").cx(0))
    ));
    let f2 = build_with(factory, yaml, &services, "listener/public/filters/1").unwrap();
    local(f2.on_request_headers(&mut get("192.0.2.1:1").cx(0)));
    let f3 = build_with(factory, yaml, &services, "listener/other/filters/1").unwrap();
    assert!(is_continue(
        &f3.on_request_headers(&mut get("192.0.2.1:1").cx(0))
    ));
}

#[test]
fn default_burst_is_the_rate_rounded_up() {
    let f = build(factory, "requests_per_second: 2.5").unwrap();
    for _ in 0..3 {
        assert!(is_continue(
            &f.on_request_headers(&mut get("192.0.2.1:1").cx(0))
        ));
    }
    local(f.on_request_headers(&mut get("192.0.2.1:1").cx(0)));
}

#[test]
fn bad_configs_say_how_to_fix() {
    let err = |y: &str| build(factory, y).err().unwrap();
    assert!(err("{}").contains("missing field `requests_per_second`"));
    assert!(err("requests_per_second: 0").contains("greater than 0"));
    assert!(err("requests_per_second: -3").contains("greater than 0"));
    assert!(err("{requests_per_second: 1, burst: 0}").contains("burst must be between 1"));
    assert!(err("{requests_per_second: 1, key: ip}").contains("use `client_ip` or `header:NAME`"));
    assert!(err("{requests_per_second: 1, key: 'header:a b'}").contains("not a valid header name"));
    assert!(err("{requests_per_second: 1, status: 200}").contains("4xx or 5xx"));
    assert!(err("{requests_per_second: 1, max_keys: 0}").contains("max_keys must be at least 1"));
    assert!(
        err("{requests_per_second: 1, key: 'header:x-k', ban: {after: 3}}")
            .contains("ban needs `key: client_ip`")
    );
    assert!(
        err("{requests_per_second: 1, ban: {after: 0}}").contains("ban.after must be at least 1")
    );
    assert!(err("{requests_per_second: 1, ban: {after: 2, ttl: 0}}").contains("longer than 0"));
    assert!(err("{requests_per_second: 1, burts: 3}").contains("unknown field `burts`"));
}
