//! Each failure mode maps to its error kind.

use std::time::Duration;

use sluice::config::model::ClusterConfig;
use sluice::services::Services;
use sluice::upstream::{Cluster, SendOptions, UpstreamErrorKind, WorkerPools};
use tokio::io::AsyncWriteExt;

use super::support::*;

async fn kind_of(yaml: &str, timeout: Duration) -> UpstreamErrorKind {
    let c = cluster(yaml);
    let pools = WorkerPools::new();
    let o = SendOptions {
        timeout,
        retries: None,
        hash: None,
        tries: None,
        timer: None,
        endpoint: None,
        now: None,
        raw_fields: false,
        added: None,
        fields: None,
    };
    match send(&pools, &c, get("/"), &o).await {
        Ok(answer) => panic!("expected an error, got {answer:?}"),
        Err(e) => {
            assert_eq!(&*e.cluster, "c");
            e.kind
        }
    }
}

#[test]
fn connect_refused() {
    local(async {
        let yaml = format!("{{name: c, endpoints: ['{}']}}", refused_addr());
        assert_eq!(
            kind_of(&yaml, Duration::from_secs(10)).await,
            UpstreamErrorKind::ConnectRefused
        );
    })
}

/// A listener with a backlog of 0 whose accept queue we fill: further SYNs are dropped, so a
/// connect hangs until the connect timeout.
#[test]
fn connect_timeout() {
    local(async {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .expect("addr")
                    .into(),
            )
            .expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
        }
        let yaml = format!("{{name: c, endpoints: ['{addr}'], connect_timeout: 300ms}}");
        assert_eq!(
            kind_of(&yaml, Duration::from_secs(10)).await,
            UpstreamErrorKind::ConnectTimeout
        );
        drop(fillers);
    })
}

#[test]
fn no_response_headers_within_the_route_timeout() {
    local(async {
        let up = raw_server(|mut s| async move {
            read_head(&mut s).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let yaml = format!("{{name: c, endpoints: ['{}']}}", up.addr);
        assert_eq!(
            kind_of(&yaml, Duration::from_millis(300)).await,
            UpstreamErrorKind::Timeout
        );
    })
}

#[test]
fn reset_before_the_response() {
    local(async {
        let up = raw_server(|mut s| async move {
            read_head(&mut s).await;
            // SO_LINGER 0: close with RST instead of FIN.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        })
        .await;
        let yaml = format!("{{name: c, endpoints: ['{}']}}", up.addr);
        assert_eq!(
            kind_of(&yaml, Duration::from_secs(10)).await,
            UpstreamErrorKind::Reset
        );
    })
}

#[test]
fn closed_before_the_response() {
    local(async {
        let up = raw_server(|mut s| async move {
            read_head(&mut s).await;
            drop(s);
        })
        .await;
        let yaml = format!("{{name: c, endpoints: ['{}']}}", up.addr);
        assert_eq!(
            kind_of(&yaml, Duration::from_secs(10)).await,
            UpstreamErrorKind::Reset
        );
    })
}

#[test]
fn invalid_response_bytes() {
    local(async {
        let up = raw_server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(b"HELLO THERE\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        let yaml = format!("{{name: c, endpoints: ['{}']}}", up.addr);
        assert_eq!(
            kind_of(&yaml, Duration::from_secs(10)).await,
            UpstreamErrorKind::BadResponse
        );
    })
}

#[test]
fn unresolvable_name_has_no_endpoint() {
    local(async {
        let yaml = "{name: c, endpoints: ['no-such-host.invalid:80'], connect_timeout: 2s}";
        assert_eq!(
            kind_of(yaml, Duration::from_secs(10)).await,
            UpstreamErrorKind::NoHealthyEndpoint
        );
    })
}

#[test]
fn build_rejects_what_it_cannot_do() {
    let build = |yaml: &str| {
        let cfg: ClusterConfig = serde_yaml::from_str(yaml).expect("yaml");
        Cluster::build(&cfg, &Services::new())
            .err()
            .unwrap_or_default()
    };
    // Upstream TLS is supported; a CA file that cannot be read is a build error.
    assert_eq!(
        build("{name: c, endpoints: ['127.0.0.1:1'], tls: {server_name: x}}"),
        ""
    );
    let bad_ca = build("{name: c, endpoints: ['127.0.0.1:1'], tls: {ca: /nonexistent/ca.pem}}");
    assert!(!bad_ca.is_empty(), "a missing CA file must be rejected");
    assert!(build("{name: c, endpoints: []}").contains("no endpoints"));
    assert!(build("{name: c, endpoints: ['backend']}").contains("has no port"));
    assert!(build("{name: c, endpoints: ['back end:80']}").contains("not a valid host"));
    assert!(
        build("{name: c, endpoints: ['127.0.0.1:1'], load_balancing: ring_hash}")
            .contains("hash_key")
    );
    assert!(
        build("{name: c, endpoints: ['127.0.0.1:1'], health_check: {path: healthz}}")
            .contains("health_check path")
    );
    assert_eq!(
        build("{name: c, endpoints: ['127.0.0.1:1', 'localhost:80', '[::1]:80']}"),
        ""
    );
}

#[test]
fn upstreams_report_every_bad_cluster() {
    let cfgs: Vec<ClusterConfig> = serde_yaml::from_str(
        "[{name: a, endpoints: ['127.0.0.1:1']}, {name: a, endpoints: ['127.0.0.1:2']}, {name: b, endpoints: []}]",
    )
    .expect("yaml");
    let errors = sluice::upstream::Upstreams::build(&cfgs, &Services::new())
        .err()
        .unwrap_or_default();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("used twice") && errors[1].contains("no endpoints"),
        "{errors:?}"
    );
    let good =
        sluice::upstream::Upstreams::build(&cfgs[..1], &Services::new()).expect("one good cluster");
    assert!(good.get("a").is_some() && good.get("b").is_none());
}

#[test]
fn a_zero_route_timeout_means_none() {
    local(async {
        let up = named("a").await;
        let c = cluster(&format!("{{name: c, endpoints: ['{}']}}", up.addr));
        let o = SendOptions {
            timeout: Duration::ZERO,
            retries: None,
            hash: None,
            tries: None,
            timer: None,
            endpoint: None,
            now: None,
            raw_fields: false,
            added: None,
            fields: None,
        };
        let (status, body) = send(&WorkerPools::new(), &c, get("/"), &o)
            .await
            .expect("send");
        assert_eq!((status.as_u16(), body.as_str()), (200, "a"));
    })
}

/// The route timeout counts from `SendOptions::now` when the caller passes it (the request's
/// arrival, read a moment before): a slow upstream answering within the timeout of the send
/// but after the timeout of the given start is a timeout, and the time waited is what was left.
#[test]
fn the_route_timeout_counts_from_the_given_now() {
    local(async {
        let up = raw_server(|mut s| async move {
            read_head(&mut s).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        })
        .await;
        let c = cluster(&format!("{{name: c, endpoints: ['{}']}}", up.addr));
        let started = tokio::time::Instant::now();
        let o = SendOptions {
            timeout: Duration::from_millis(600),
            retries: None,
            hash: None,
            tries: None,
            timer: None,
            endpoint: None,
            // As if the request had arrived 400 ms ago: 200 ms are left.
            now: Some(started - Duration::from_millis(400)),
            raw_fields: false,
            added: None,
            fields: None,
        };
        match send(&WorkerPools::new(), &c, get("/"), &o).await {
            Ok(answer) => panic!("expected a timeout counted from `now`, got {answer:?}"),
            Err(e) => assert_eq!(e.kind, UpstreamErrorKind::Timeout),
        }
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(390),
            "waited {waited:?}: the deadline was not taken from `now`"
        );
    })
}
