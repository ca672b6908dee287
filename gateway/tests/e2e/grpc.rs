//! gRPC end to end with a real tonic client and server (the standard health service): unary
//! and server-streaming calls through the gateway over h2 on both sides, grpc-status trailers
//! preserved, and errors produced by the gateway shaped as gRPC statuses.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Server};
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::support::*;

/// A tonic health server on 127.0.0.1:0, on its own runtime.
struct GrpcUpstream {
    addr: SocketAddr,
    reporter: HealthReporter,
    rt: tokio::runtime::Runtime,
}

fn grpc_upstream() -> GrpcUpstream {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let (addr, reporter) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("sluice.Test", ServingStatus::Serving)
            .await;
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            let next = l.accept().await.map(|(s, _)| s);
            Some((next, l))
        });
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        (addr, reporter)
    });
    GrpcUpstream { addr, reporter, rt }
}

fn gateway_for(upstream: SocketAddr) -> Gateway {
    let dead = free_port();
    Gateway::start(&format!(
        r#"
workers: 1
listeners:
  - name: grpc
    address: "127.0.0.1:{{PORT}}"
    routes:
      - match: {{ path_prefix: "/grpc.health.v1.Health/" , headers: [{{ name: x-dead, value: "1" }}] }}
        cluster: dead
      - match: {{ path_prefix: "/grpc.health.v1.Health/" }}
        cluster: health
clusters:
  - name: health
    protocol: http2
    endpoints: ["{upstream}"]
  - name: dead
    protocol: http2
    endpoints: ["127.0.0.1:{dead}"]
"#
    ))
}

async fn client(gw: &Gateway) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", gw.port))
        .expect("uri")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect to the gateway");
    HealthClient::new(channel)
}

fn check_req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[test]
fn unary_calls_and_their_statuses_pass_through() {
    let up = grpc_upstream();
    let gw = gateway_for(up.addr);
    up.rt.block_on(async {
        let mut c = client(&gw).await;
        let resp = c.check(check_req("sluice.Test")).await.expect("check");
        assert_eq!(resp.get_ref().status, PbStatus::Serving as i32);
        // A non-OK status from the upstream (trailers-only NOT_FOUND) reaches the client intact.
        let err = c
            .check(check_req("no.such.Service"))
            .await
            .expect_err("unknown service");
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
        // Many calls over the one h2 connection.
        for _ in 0..50 {
            let r = c.check(check_req("")).await.expect("check");
            assert_eq!(r.get_ref().status, PbStatus::Serving as i32);
        }
    });
}

#[test]
fn server_streaming_follows_status_changes() {
    let up = grpc_upstream();
    let gw = gateway_for(up.addr);
    let reporter = up.reporter.clone();
    up.rt.block_on(async move {
        let mut c = client(&gw).await;
        let mut stream = c
            .watch(check_req("sluice.Test"))
            .await
            .expect("watch")
            .into_inner();
        let first = next(&mut stream).await;
        assert_eq!(first.map(|m| m.status), Some(PbStatus::Serving as i32));
        // Each change is a new message on the open stream, relayed as it happens.
        for (status, want) in [
            (ServingStatus::NotServing, PbStatus::NotServing),
            (ServingStatus::Serving, PbStatus::Serving),
        ] {
            reporter.set_service_status("sluice.Test", status).await;
            let m = next(&mut stream).await;
            assert_eq!(m.map(|m| m.status), Some(want as i32));
        }
    });
}

/// The next message of a server stream (None at its end), waiting at most 20 s.
async fn next(s: &mut tonic::Streaming<HealthCheckResponse>) -> Option<HealthCheckResponse> {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("a message within 20s")
        .expect("a well-formed stream")
}

#[test]
fn gateway_errors_are_grpc_statuses() {
    let up = grpc_upstream();
    let gw = gateway_for(up.addr);
    up.rt.block_on(async {
        let mut c = client(&gw).await;
        let mut req = tonic::Request::new(check_req(""));
        req.metadata_mut()
            .insert("x-dead", tonic::metadata::MetadataValue::from_static("1"));
        let err = c.check(req).await.expect_err("dead upstream");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("upstream"), "{err:?}");
    });
    // Also seen by a plain HTTP/2 client: status 200, grpc-status in the headers.
    let req = http::Request::post("/grpc.health.v1.Health/Check")
        .header("host", "localhost")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-dead", "1")
        .body(full(vec![0u8, 0, 0, 0, 0]))
        .expect("req");
    let r = send(gw.addr(), req, true).expect("h2 request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
}
